"""The built-in layer stacks train to what their specs promise."""

import numpy as np
import pytest
from support import import_file

from symbp import cli
from symbp.derive import derive
from symbp.spec import load
from symbp.targets.numpy.module import render_module


def module_for(name, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(render_module(derive(load(name))), encoding="utf-8")
    return import_file(path)


@pytest.mark.parametrize("name", ["xor_mlp", "xor_sigmoid"])
def test_xor_networks_reach_full_accuracy(name, tmp_path):
    model = module_for(name, tmp_path)
    assert model.DTYPE == np.float32  # layer stacks default to float32
    X, Y = model._load_data(None)
    params, losses = model.train(model.init_params(load(name).seed), X, Y)
    assert losses[-1] < losses[0]
    assert model.accuracy(params, X, Y) == 1.0


def test_digits_classifier_reaches_95_percent_held_out(tmp_path, capsys):
    pytest.importorskip("sklearn")
    status = cli.main(["run", "digits_mlp", "-o", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0
    line = next(x for x in out.splitlines() if x.startswith("held-out accuracy:"))
    accuracy = float(line.split(":")[1].strip().rstrip("%")) / 100
    assert accuracy >= 0.95, line
