"""Eval mode: each batch statistic's running average, updated by train() as torch's
BatchNorm1d updates running_mean and running_var, and read by forward(..., buffers)
as torch's model.eval() reads them. float64, against torch.nn.BatchNorm1d."""

from __future__ import annotations

import numpy as np
import pytest
from support import generate

from symbp.derive import derive
from symbp.spec import parse_spec

torch = pytest.importorskip("torch")

HEAD = """
name = "{name}"
[model]
inputs = {{ x = [4] }}
targets = {{ y = [] }}
output = "yhat"
loss = "cross_entropy(yhat, y)"
[model.params]
W1 = [5, 4]
gamma = {{ shape = [5], init = "ones" }}
beta = {{ shape = [5], init = "zeros" }}
W2 = [3, 5]
[model.let]
z = "W1 @ x"
"""
TAIL = """a = "relu(gamma * zn + beta)"
yhat = "W2 @ a"
[train]
optimizer = "sgd"
lr = 0.1
"""
# batch_var(v) inline, and the variance written out as cs231n's staged form
INLINE = 'zn = "(z - batch_mean(z)) / sqrt(batch_var(z) + 1e-5)"\n'
STAGED = (
    'mu = "batch_mean(z)"\nvar = "batch_mean((z - mu)**2)"\nzn = "(z - mu) / sqrt(var + 1e-5)"\n'
)
FORMS = {
    "inline": (INLINE, ("running_mean1", "running_var1")),
    "staged": (STAGED, ("running_mu", "running_var")),
}


def module_of(tmp_path, form: str):
    name = f"bn_{form}"
    spec = parse_spec(HEAD.format(name=name) + FORMS[form][0] + TAIL, f"{name}.toml")
    return generate(spec, tmp_path)


def data(n=10, seed=3):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(2.0, 3.0, size=(n, 4))}, {"y": rng.integers(0, 3, size=n)}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_running_statistics_and_eval_mode_match_torch(tmp_path, form):
    module = module_of(tmp_path, form)
    mean_name, var_name = FORMS[form][1]
    assert list(module.BUFFER_SHAPES) == [mean_name, var_name]
    X, Y = data()
    params, buffers = module.init_params(0), module.init_buffers()
    assert np.all(buffers[mean_name] == 0) and np.all(buffers[var_name] == 1)

    torch.manual_seed(0)
    lin1 = torch.nn.Linear(4, 5, bias=False).double()
    bn = torch.nn.BatchNorm1d(5, eps=1e-5, momentum=0.1).double()
    lin2 = torch.nn.Linear(5, 3, bias=False).double()
    net = torch.nn.Sequential(lin1, bn, torch.nn.ReLU(), lin2)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor(params["W1"]))
        lin2.weight.copy_(torch.tensor(params["W2"]))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.tensor(X["x"]), torch.tensor(Y["y"])
    for _ in range(3):  # batches of 4, 4, 2: the last one's N / (N - 1) is 2
        for start in range(0, 10, 4):
            optimizer.zero_grad()
            out = net(x[start : start + 4])
            torch.nn.functional.cross_entropy(out, y[start : start + 4]).backward()
            optimizer.step()

    trained, _ = module.train(
        params, X, Y, epochs=3, batch_size=4, lr=0.1, shuffle=False, buffers=buffers
    )
    np.testing.assert_allclose(buffers[mean_name], bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(buffers[var_name], bn.running_var.numpy(), rtol=1e-12)
    np.testing.assert_allclose(trained["gamma"], bn.weight.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(trained["W1"], lin1.weight.detach().numpy(), rtol=1e-10)

    net.eval()
    X_new, _ = data(7, seed=11)
    expected = net(torch.tensor(X_new["x"])).detach().numpy()
    np.testing.assert_allclose(module.forward(trained, X_new, buffers), expected, rtol=1e-10)
    # one sample at a time gives the same: eval mode reads no batch statistic
    single = np.concatenate(
        [module.forward(trained, {"x": X_new["x"][k : k + 1]}, buffers) for k in range(7)]
    )
    np.testing.assert_allclose(single, expected, rtol=1e-10)
    # without buffers: training mode, the batch's own statistics, as before
    net.train()
    batch = net(torch.tensor(X_new["x"])).detach().numpy()
    np.testing.assert_allclose(module.forward(trained, X_new), batch, rtol=1e-10)
    eval_loss = torch.nn.functional.cross_entropy(torch.tensor(expected), torch.tensor(Y["y"][:7]))
    assert module.loss(trained, X_new, {"y": Y["y"][:7]}, buffers) == pytest.approx(
        eval_loss.item(), rel=1e-12
    )


def test_a_batch_of_one_sample_leaves_the_running_statistics(tmp_path):
    module = module_of(tmp_path, "staged")
    X, Y = data(1)
    buffers = module.init_buffers()
    module.train(module.init_params(0), X, Y, epochs=2, batch_size=1, buffers=buffers)
    assert np.all(buffers["running_mu"] == 0) and np.all(buffers["running_var"] == 1)


def test_bad_buffers_are_refused(tmp_path):
    module = module_of(tmp_path, "staged")
    X, _ = data()
    params = module.init_params(0)
    with pytest.raises(
        ValueError, match=r"buffers must be a dict of \['running_mu', 'running_var'\]"
    ):
        module.forward(params, X, {"running_mean": np.zeros(5), "running_var": np.ones(5)})
    with pytest.raises(ValueError, match=r"buffers\['running_var'\] must have shape \(5,\)"):
        module.forward(params, X, {"running_mu": np.zeros(5), "running_var": np.ones(4)})


def test_eval_mode_computes_no_batch_statistic():
    spec = parse_spec(HEAD.format(name="bn") + STAGED + TAIL, "bn.toml")
    derivation = derive(spec)
    from symbp.program.statistics import eval_statements

    program = derivation.program
    wanted = eval_statements(program, derivation.statistics, program.outputs)
    calls = [getattr(s, "op", None) for s in wanted]
    assert "batch_mean" not in calls and len(calls) < len(program.needed_for(program.outputs))


def test_a_model_without_batch_statistics_has_no_buffers(tmp_path):
    spec = parse_spec(HEAD.format(name="plain") + 'zn = "tanh(z)"\n' + TAIL, "plain.toml")
    assert derive(spec).statistics == []
    module = generate(spec, tmp_path)
    assert not hasattr(module, "BUFFER_SHAPES") and not hasattr(module, "init_buffers")
