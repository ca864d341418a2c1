"""Bad tensor-model specs: each is one line naming the file, the field and the problem
(both shapes for a shape mismatch, a did-you-mean where there is one), exit status 2,
no traceback, nothing written."""

from __future__ import annotations

import pytest

from symbp.cli import main
from symbp.errors import SpecError
from symbp.spec import parse_spec

BASE = {
    "inputs": "{ x = [4] }",
    "targets": "{ y = [3] }",
    "output": '"yhat"',
    "loss": '"mse(yhat, y)"',
}


def spec_text(let: dict[str, str], params: dict[str, str], **model) -> str:
    fields = {**BASE, **model}
    lines = ['name = "m"', "[model]"]
    lines += [f"{k} = {v}" for k, v in fields.items()]
    lines.append("[model.params]")
    lines += [f"{k} = {v}" for k, v in params.items()]
    lines.append("[model.let]")
    lines += [f'{k} = "{v}"' for k, v in let.items()]
    return "\n".join(lines) + "\n"


def error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "m.toml")
    message = str(info.value)
    assert "\n" not in message
    return message


CASES = [
    (
        {"yhat": "W @ x"},
        {"W": "[3, 5]"},
        {},
        "m.toml: model.let.yhat: shapes (3, 5) and (4,) do not match for @ (5 != 4) at column 1",
    ),
    (
        {"yhat": "W @ x + b"},
        {"W": "[3, 4]", "b": "[4]"},
        {},
        "m.toml: model.let.yhat: shapes (3,) and (4,) do not broadcast in '+' at column 1",
    ),
    (
        {"yhat": "W @ xx"},
        {"W": "[3, 4]"},
        {},
        "m.toml: model.let.yhat: unknown name 'xx' (did you mean 'x'? known: x, y, W) at column 5",
    ),
    (
        {"yhat": "W @ tanhh(x)"},
        {"W": "[3, 4]"},
        {},
        "did you mean 'tanh'?",
    ),
    (
        {"yhat": "W @ x + sum(x, axes=0)"},
        {"W": "[3, 4]"},
        {},
        "m.toml: model.let.yhat: 'sum' takes no keyword 'axes' (did you mean 'axis'? known: axis)",
    ),
    (
        {"yhat": "W @ x + sum(x, axis=1)"},
        {"W": "[3, 4]"},
        {},
        "axis 1 is out of range for shape (4,)",
    ),
    (
        {"yhat": "W @ x + x[4]"},
        {"W": "[3, 4]"},
        {},
        "index 4 is out of range for a vector of 4",
    ),
    (
        {"yhat": "W.U @ x"},
        {"W": "[3, 4]"},
        {},
        "attribute '.U' is not allowed (only .T, the transpose)",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 4]"},
        {"loss": '"(yhat - y)**2"'},
        "m.toml: model.loss: the loss is one number per sample, got shape (3,): reduce it"
        " with sum(...) or mean(...)",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 4]", "V": "[2]"},
        {},
        "m.toml: model.params.V: declared but not used by any formula",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 0]"},
        {},
        "m.toml: model.params.W: sizes are positive integers, got 0",
    ),
    (
        {"yhat": "W @ x"},
        {"W": '{ shape = [3, 4], init = "zero" }'},
        {},
        "m.toml: model.params.W.init: unknown init 'zero' (did you mean 'zeros'? known:"
        " uniform, normal, zeros, ones)",
    ),
    (
        {"yhat": "W @ x + y"},
        {"W": "[3, 4]"},
        {"targets": "{ y = [] }", "loss": '"cross_entropy(yhat, y)"'},
        "m.toml: model.targets.y: 'y' holds class labels (a loss reads it so); it cannot"
        " also be a number in a formula",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 4]"},
        {"reduction": '"total"'},
        "m.toml: model.reduction: unknown reduction 'total' (known: mean, sum)",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 4]"},
        {"loss": '"huber(yhat, y, delta=-1)"'},
        "delta must be positive, got -1",
    ),
    (
        {"yhat": "W @ x"},
        {"W": "[3, 4]"},
        {"loss": '"cross_entropy(yhat, y, smoothing=0.1)"'},
        "'cross_entropy' takes no keyword 'smoothing' (did you mean 'label_smoothing'?",
    ),
    (
        {"data": "W @ x"},
        {"W": "[3, 4]"},
        {"output": '"data"', "loss": '"mse(data, y)"'},
        "m.toml: model.let.data: 'data' is reserved by the generated code; rename it",
    ),
]


@pytest.mark.parametrize(("let", "params", "model", "expected"), CASES)
def test_each_bad_model_is_one_line_naming_the_field(let, params, model, expected):
    assert expected in error(spec_text(let, params, **model))


def test_the_cli_exits_2_without_a_traceback_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "m.toml"
    spec.write_text(spec_text({"yhat": "W @ x"}, {"W": "[3, 5]"}), encoding="utf-8")
    out = tmp_path / "m.py"
    assert main(["generate", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "do not match for @" in err
    assert not out.exists()


def test_a_formula_is_never_evaluated():
    message = error(spec_text({"yhat": "__import__('os').system('true')"}, {"W": "[3, 4]"}))
    assert "model.let.yhat" in message


def test_a_scalar_params_table_in_a_tensor_model_says_where_parameters_go():
    text = spec_text({"yhat": "W @ x"}, {"W": "[3, 4]"}) + "[params]\nW = 1.0\n"
    assert error(text) == (
        "m.toml: params: a model with shapes declares each parameter's shape and init in"
        " [model.params] (W = { shape = [3, 4], init = 0.5 }); [params] is for scalar models"
    )


@pytest.mark.parametrize(
    ("formula", "problem"),
    [
        ("W @ x / 0", "division by zero"),
        ("W @ x + mse(1, 1e300)", "number too large (beyond float64)"),
        ("W @ x + log(0)", "undefined (division by zero or infinity)"),
        ("W @ x + sqrt(-1)", "not real"),
    ],
)
def test_constants_the_generated_code_could_not_hold_are_refused(formula, problem):
    assert problem in error(spec_text({"yhat": formula}, {"W": "[3, 4]"}))
