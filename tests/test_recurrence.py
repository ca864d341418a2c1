"""Recurrences ([model.recur], the scan op): BPTT against torch, float64.

Elman RNNs (tanh and relu), LSTM and GRU cells written as formulas, with torch.nn.RNN,
LSTM and GRU's layouts and gate orders, so that the weights are copied across as they
are: the loss and every gradient at random points and sequence lengths (1e-10
relative), 3 epochs of train() against torch.optim with and without clip_grad_norm_,
finite differences, the spec's errors and the derivation document.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import generate

from symbp.check import central_difference, check_module
from symbp.derive import derive
from symbp.documents.graph import render_graph_document
from symbp.errors import SpecError
from symbp.language.model import initial_values
from symbp.program.statements import Loop
from symbp.spec import parse_spec
from symbp.strategies import recurrent_models

torch = pytest.importorskip("torch")
F = torch.nn.functional

H, D, K = 4, 3, 2  # hidden size, input size, outputs
LSTM_INPUT = f"sigmoid(z[0:{H}]) * tanh(z[{2 * H}:{3 * H}])"  # the input gate times g

HEAD = f"""name = "{{name}}"
[model]
inputs = {{{{ x = ["T", {D}] }}}}
targets = {{{{ y = [{K}] }}}}
output = "yhat"
loss = "mse(yhat, y)"
[model.let]
yhat = "Wy @ h[T] + by"
"""

PARAMS = f"""[model.params]
Wih = [{{gates}}, {D}]
Whh = [{{gates}}, {H}]
bih = [{{gates}}]
bhh = [{{gates}}]
Wy = [{K}, {H}]
by = [{K}]
"""

CELLS = {
    "rnn_tanh": (
        1,
        f'h = {{ shape = [{H}], step = "tanh(Wih @ x[t] + bih + Whh @ h[t-1] + bhh)" }}',
    ),
    "rnn_relu": (
        1,
        f'h = {{ shape = [{H}], step = "relu(Wih @ x[t] + bih + Whh @ h[t-1] + bhh)" }}',
    ),
    "lstm": (
        4,
        f"""z = "Wih @ x[t] + bih + Whh @ h[t-1] + bhh"
c = {{ shape = [{H}], step = "sigmoid(z[{H}:{2 * H}]) * c[t-1] + {LSTM_INPUT}" }}
h = {{ shape = [{H}], step = "sigmoid(z[{3 * H}:{4 * H}]) * tanh(c[t])" }}""",
    ),
    "gru": (
        3,
        f"""gi = "Wih @ x[t] + bih"
gh = "Whh @ h[t-1] + bhh"
r = "sigmoid(gi[0:{H}] + gh[0:{H}])"
u = "sigmoid(gi[{H}:{2 * H}] + gh[{H}:{2 * H}])"
n = "tanh(gi[{2 * H}:{3 * H}] + r * gh[{2 * H}:{3 * H}])"
h = {{ shape = [{H}], step = "(1 - u) * n + u * h[t-1]" }}""",
    ),
}


def cell_spec(case: str, train: str = ""):
    gates, recur = CELLS[case]
    text = HEAD.format(name=case) + PARAMS.format(gates=gates * H)
    return parse_spec(text + "[model.recur]\n" + recur + "\n" + train, f"{case}.toml")


def torch_net(case: str, params: dict):
    """torch's layer for ``case`` with ``params``' weights, and its head."""
    if case.startswith("rnn"):
        net = torch.nn.RNN(D, H, batch_first=True, nonlinearity=case.split("_")[1])
    else:
        net = getattr(torch.nn, case.upper())(D, H, batch_first=True)
    net = net.double()
    with torch.no_grad():
        for ours, theirs in [("Wih", "weight_ih_l0"), ("Whh", "weight_hh_l0")]:
            getattr(net, theirs).copy_(torch.tensor(params[ours]))
        net.bias_ih_l0.copy_(torch.tensor(params["bih"]))
        net.bias_hh_l0.copy_(torch.tensor(params["bhh"]))
    head = {k: torch.tensor(params[k], requires_grad=True) for k in ("Wy", "by")}
    return net, head


def torch_loss(case, net, head, X, Y):
    _, last = net(torch.tensor(X))
    h = last[0] if case == "lstm" else last
    return F.mse_loss(h[0] @ head["Wy"].T + head["by"], torch.tensor(Y))


def torch_grads(case, net, head) -> dict[str, np.ndarray]:
    names = {"Wih": "weight_ih_l0", "Whh": "weight_hh_l0", "bih": "bias_ih_l0"}
    names["bhh"] = "bias_hh_l0"
    grads = {k: getattr(net, v).grad.numpy() for k, v in names.items()}
    grads.update({k: v.grad.numpy() for k, v in head.items()})
    return grads


@pytest.mark.parametrize("case", list(CELLS))
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_gradients_equal_torch_layers(tmp_path, case, steps):
    """A formula-written cell is torch's layer: same loss and gradients, float64."""
    module = generate(cell_spec(case), tmp_path)
    rng = np.random.default_rng(steps)
    for seed in range(2):
        params = {k: v + rng.normal(0, 0.1, v.shape) for k, v in module.init_params(seed).items()}
        X, Y = rng.normal(size=(5, steps, D)), rng.normal(size=(5, K))
        value, grads = module.loss_and_grads(params, X, Y)
        net, head = torch_net(case, params)
        expected = torch_loss(case, net, head, X, Y)
        expected.backward()
        assert value == pytest.approx(expected.item(), rel=1e-12)
        for k, theirs in torch_grads(case, net, head).items():
            err = np.max(np.abs(grads[k] - theirs)) / max(1e-300, np.max(np.abs(theirs)))
            assert err < 1e-10, f"{k}: {err:.2e}"


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
def test_gradients_match_finite_differences(tmp_path, case):
    module = generate(cell_spec(case), tmp_path)
    result = check_module(module, points=2, seed=3)
    assert result.ok, result


@pytest.mark.parametrize("clip", [None, 0.05])
@pytest.mark.parametrize("case", ["rnn_tanh", "lstm"])
def test_training_follows_torch_optim(tmp_path, case, clip):
    """3 epochs of Adam on batches of 4 over 10 sequences (the last batch short), with
    and without torch.nn.utils.clip_grad_norm_: parameters and per-epoch losses."""
    train = '[train]\noptimizer = "adam"\n' + (f"clip_grad_norm = {clip}\n" if clip else "")
    module = generate(cell_spec(case, train), tmp_path)
    rng = np.random.default_rng(4)
    params = module.init_params(1)
    X, Y = rng.normal(size=(10, 6, D)), rng.normal(size=(10, K))
    trained, losses = module.train(params, X, Y, epochs=3, batch_size=4, lr=0.05, shuffle=False)
    net, head = torch_net(case, params)
    leaves = [*net.parameters(), *head.values()]
    optimizer = torch.optim.Adam(leaves, lr=0.05)
    expected, clipped = [], 0
    for _ in range(3):
        total = 0.0
        for start in range(0, 10, 4):
            optimizer.zero_grad()
            value = torch_loss(case, net, head, X[start : start + 4], Y[start : start + 4])
            value.backward()
            if clip:
                norm = torch.nn.utils.clip_grad_norm_(leaves, clip)
                clipped += bool(norm > clip)
            optimizer.step()
            total += value.item() * len(X[start : start + 4])
        expected.append(total / 10)
    assert clipped > 0 or not clip
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    net.zero_grad()
    ours = dict(trained)
    for k, theirs in [("Wih", net.weight_ih_l0), ("Whh", net.weight_hh_l0)]:
        np.testing.assert_allclose(ours[k], theirs.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["Wy"], head["Wy"].detach().numpy(), rtol=1e-9, atol=1e-12)


LEARNED_H0 = f"""name = "h0_rnn"
[model]
inputs = {{ x = ["T", {D}] }}
targets = {{ y = [] }}
output = "yhat"
loss = "bce_with_logits(yhat, y)"
[model.params]
Wx = [{H}, {D}]
Wh = [{H}, {H}]
h0 = [{H}]
w = [{H}]
[model.recur]
h = {{ shape = [{H}], init = "h0", step = "tanh(Wx @ x[t] + Wh @ h[t-1])" }}
[model.let]
yhat = "dot(w, h[T])"
"""


def test_a_learned_initial_state_gets_its_gradient(tmp_path):
    """init = "h0" (a parameter): its gradient is the adjoint the backward loop carries
    out of step 1, summed over the batch; torch.nn.RNN with h0 given and no biases."""
    module = generate(parse_spec(LEARNED_H0, "h0.toml"), tmp_path)
    rng = np.random.default_rng(2)
    params = module.init_params(0)
    X, Y = rng.normal(size=(6, 5, D)), rng.uniform(0, 1, 6)
    value, grads = module.loss_and_grads(params, X, Y)
    net = torch.nn.RNN(D, H, batch_first=True, bias=False).double()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    with torch.no_grad():
        net.weight_ih_l0.copy_(t["Wx"])
        net.weight_hh_l0.copy_(t["Wh"])
    _, last = net(torch.tensor(X), t["h0"].expand(1, 6, H))
    expected = F.binary_cross_entropy_with_logits(last[0] @ t["w"], torch.tensor(Y))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grads["h0"], t["h0"].grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads["Wh"], net.weight_hh_l0.grad.numpy(), rtol=1e-10)


def test_the_program_loops_over_time_and_does_not_grow_with_t(tmp_path):
    """One forward and one backward loop over time, whatever T: the module takes any
    number of steps, and the sequences of a batch must agree on it."""
    derivation = derive(cell_spec("lstm"))
    loops = [s for s in derivation.program.statements if isinstance(s, Loop)]
    assert [loop.reverse for loop in loops] == [False, True]
    module = generate(cell_spec("lstm"), tmp_path)
    params = module.init_params(0)
    for steps in (1, 3, 40):
        value, _ = module.loss_and_grads(params, np.zeros((2, steps, D)), np.zeros((2, K)))
        assert np.isfinite(value)
    with pytest.raises(ValueError, match=r"\(N, T, 3\)"):
        module.loss_and_grads(params, np.zeros((2, D)), np.zeros((2, K)))


def test_the_document_derives_backpropagation_through_time():
    derivation = derive(cell_spec("rnn_tanh"))
    spec = derivation.spec
    norm = np.linalg.norm(initial_values(spec, spec.seed)["Whh"], 2)
    for fmt in ("text", "markdown", "latex"):
        text = render_graph_document(derivation, fmt)
        assert "Backpropagation through time" in text
        assert f"{norm:.3f}" in text
    markdown = render_graph_document(derivation, "markdown")
    assert r"{h_{t-1}}" in markdown and r"\bar{{h_{t}}}^{(t+1)}" in markdown


def test_initial_values_are_what_init_params_draws(tmp_path):
    module = generate(cell_spec("gru"), tmp_path)
    spec = cell_spec("gru")
    for seed in (0, 5):
        ours = initial_values(spec, seed)
        for k, v in module.init_params(seed).items():
            np.testing.assert_array_equal(ours[k], v)


def _recur(body: str, inputs: str = f'{{ x = ["T", {D}] }}', let: str = "h[T]") -> str:
    return f"""name = "bad"
[model]
inputs = {inputs}
targets = {{ y = [] }}
output = "yhat"
loss = "mse(yhat, y)"
[model.params]
W = [1, {D}]
U = [1, 1]
[model.recur]
{body}
[model.let]
yhat = "sum({let})"
"""


GOOD = 'h = { shape = [1], step = "tanh(W @ x[t] + U @ h[t-1])" }'


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (_recur(GOOD, let="h"), "model.let.yhat", "h[T]"),
        (_recur(GOOD.replace("x[t]", "x")), "model.recur.h.step", "x[t]"),
        (_recur(GOOD.replace("h[t-1]", "h[t]")), "model.recur.h.step", "h[t-1]"),
        (_recur(GOOD.replace("h[t-1]", "h[t+1]")), "model.recur.h.step", "h[t-1]"),
        (_recur(GOOD.replace("shape = [1], ", "")), "model.recur.h.shape", "missing"),
        (_recur(GOOD.replace("[1]", "[2]")), "model.recur.h.step", "do not match"),
        (_recur(GOOD.replace("[1]", "[]")), "model.recur.h.shape", "vector"),
        (_recur(GOOD, inputs=f"{{ x = [{D}] }}"), "model.recur", "sequence input"),
        (_recur(GOOD.replace("step", "stpe")), "model.recur.h.stpe", "step"),
        (_recur(GOOD, let="x"), "model.let.yhat", "[model.recur]"),
        (_recur(GOOD.replace("x[t]", "x[0]")), "model.recur.h.step", "x[t]"),
        (_recur('h_prev = "U"\n' + GOOD), "model.recur.h_prev", "generated"),
        (_recur(GOOD.replace("init", "").replace("shape", 'init = "W", shape')), "init", "shape"),
        (_recur('h = { shape = [1], step = "tanh(U @ h[t-1])" }'), "model.recur", "sequence"),
    ],
)
def test_bad_recurrences_are_one_line_errors(text, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "bad.toml")
    message = str(err.value)
    assert "\n" not in message and field in message and words in message, message


def test_sequence_data_in_the_spec_is_checked():
    data = "[data]\nx = [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3]]]\ny = [1, 2]\n"
    with pytest.raises(SpecError, match="data.x"):
        parse_spec(_recur(GOOD) + data, "bad.toml")
    good = "[data]\nx = [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [0, 0, 0]]]\ny = [1, 2]\n"
    assert parse_spec(_recur(GOOD) + good, "ok.toml").data["x"].shape == (2, 2, 3)


STACK = """name = "{name}"
[model]
input = ["T", 3]
layers = [{layers}]
loss = "{loss}"
"""


@pytest.mark.parametrize(
    ("layers", "torch_layers"),
    [
        ("{ rnn = 5, nonlinearity = 'relu' }, { dense = 2 }", [("RNN", 5, "relu")]),
        ("{ lstm = 6 }, { dense = 4, activation = 'tanh' }, { dense = 2 }", [("LSTM", 6, None)]),
        ("{ gru = 4, bias = false }, { dense = 2 }", [("GRU", 4, None)]),
        ("{ lstm = 6 }, { lstm = 3 }, { dense = 2 }", [("LSTM", 6, None), ("LSTM", 3, None)]),
    ],
)
def test_recurrent_layer_sugar_is_torch_nn_with_its_parameter_names(tmp_path, layers, torch_layers):
    """{ rnn = 16 }, { lstm = 16 }, { gru = 16 }: torch's layers with torch's names, layouts
    and init bound, so a torch module's named_parameters() are the params as they are;
    loss and gradients against torch.nn with the weights copied, cross-entropy."""
    spec = parse_spec(STACK.format(name="stack", layers=layers, loss="cross_entropy"), "s.toml")
    module = generate(spec, tmp_path)
    torch.manual_seed(0)
    below, nets = 3, []
    for kind, size, nonlinearity in torch_layers:
        options = {"nonlinearity": nonlinearity} if nonlinearity else {}
        bias = "bias = false" not in layers
        nets.append(getattr(torch.nn, kind)(below, size, batch_first=True, bias=bias, **options))
        below = size
    nets = [net.double() for net in nets]
    params = {}
    for j, net in enumerate(nets):  # layer l{j} of a multi-layer module: weight_ih_l{j}
        params.update(
            {k.replace("l0", f"l{j}"): v.detach().numpy().copy() for k, v in net.named_parameters()}
        )
    dense = {k: v for k, v in module.init_params(1).items() if k[0] in "Wb" and k[1:].isdigit()}
    assert {k: v.shape for k, v in params.items()} == {
        k: v.shape for k, v in module.init_params(0).items() if k not in dense
    }
    params.update(dense)
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(5, 4, 3)), rng.integers(0, 2, 5)
    value, grads = module.loss_and_grads(params, X, Y)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in dense.items()}
    h = torch.tensor(X)
    for net in nets:
        h, _ = net(h)
    a = h[:, -1]
    names = sorted({k[1:] for k in dense}, key=int)
    for k in names:
        a = a @ t[f"W{k}"].T + t[f"b{k}"]
        if k != names[-1] and "tanh" in layers:
            a = torch.tanh(a)
    expected = F.cross_entropy(a, torch.tensor(Y))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    theirs = {}
    for j, net in enumerate(nets):
        theirs.update({k.replace("l0", f"l{j}"): v.grad.numpy() for k, v in net.named_parameters()})
    theirs.update({k: v.grad.numpy() for k, v in t.items()})
    assert theirs.keys() == grads.keys()
    for k, g in theirs.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-10, atol=1e-13, err_msg=k)


def test_recurrent_layers_take_torch_init():
    """Every recurrent weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden)), as torch."""
    spec = parse_spec(
        STACK.format(name="s", layers="{ gru = 9 }, { dense = 2 }", loss="mse"), "s.toml"
    )
    for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
        assert spec.init[name].kind == "uniform" and spec.init[name].value == pytest.approx(1 / 3)
    assert spec.init["W2"].value == pytest.approx(1 / 3)  # torch.nn.Linear: 1/sqrt(fan_in = 9)


@pytest.mark.parametrize(
    ("layers", "field", "words"),
    [
        ("{ rnn = 4, nonlinearity = 'sigmoid' }, { dense = 1 }", "nonlinearity", "tanh"),
        ("{ dense = 4 }, { lstm = 4 }", "model.layers[2]", "come first"),
        ("{ lstm = 4 }", "model.layers", "dense"),
        ("{ lstm = 4, gru = 3 }, { dense = 1 }", "model.layers[1]", "one layer kind"),
        ("{ lstm = 0 }, { dense = 1 }", "model.layers[1].lstm", "positive"),
        ("{ lstm = 4, nonlinearity = 'relu' }, { dense = 1 }", "nonlinearity", "unknown field"),
        ("{ gru = 4 }, { dense = 1, activation = 'elu' }", "activation", "elu"),
    ],
)
def test_bad_recurrent_stacks_are_one_line_errors(layers, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(STACK.format(name="s", layers=layers, loss="mse"), "s.toml")
    message = str(err.value)
    assert "\n" not in message and field in message and words in message, message


# --- random recurrent models ---------------------------------------------------------


@settings(max_examples=20)
@given(model=recurrent_models(), steps=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_recurrent_models_match_finite_differences(model, steps, seed):
    """Every gradient of a random recurrent model (a cell, or layer sugar) at a random
    point and sequence length equals the central difference of its loss (float64, 1e-6
    relative to the gradient's scale)."""
    module = model.module
    params, X, Y = model.random_point(seed, batch=3, steps=steps)
    _, grads = module.loss_and_grads(params, X, Y)
    for name, value in grads.items():
        numeric = central_difference(module, params, X, Y, name).reshape(value.shape)
        scale = max(1e-3, float(np.max(np.abs(value))))
        assert np.max(np.abs(numeric - value)) / scale < 1e-6, (name, model.spec_text)


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("steps", [2, 3, 7])
def test_truncated_bptt_equals_torch_with_the_state_detached(tmp_path, case, steps):
    """bptt = 3: the backward pass runs the last 3 steps; torch runs the sequence in two
    parts with the state between them detached. The same loss and gradients (for T <= 3
    the full ones)."""
    module = generate(cell_spec(case, "[train]\nbptt = 3\n"), tmp_path)
    rng = np.random.default_rng(9)
    params = module.init_params(4)
    X, Y = rng.normal(size=(5, steps, D)), rng.normal(size=(5, K))
    value, grads = module.loss_and_grads(params, X, Y)
    net, head = torch_net(case, params)
    cut = max(steps - 3, 0)
    x = torch.tensor(X)
    state = None
    if cut:
        _, state = net(x[:, :cut])
        state = tuple(s.detach() for s in state) if case == "lstm" else state.detach()
    _, last = net(x[:, cut:], state)
    h = last[0] if case == "lstm" else last
    expected = F.mse_loss(h[0] @ head["Wy"].T + head["by"], torch.tensor(Y))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    for k, theirs in torch_grads(case, net, head).items():
        np.testing.assert_allclose(grads[k], theirs, rtol=1e-10, atol=1e-14, err_msg=k)


def test_bptt_is_refused_without_a_recurrence():
    text = STACK.format(name="s", layers="{ lstm = 4 }, { dense = 1 }", loss="mse")
    assert parse_spec(text + "[train]\nbptt = 5\n", "s.toml").train.bptt == 5
    for bad, words in [("bptt = 0", "positive integer"), ("bptt = 2.5", "positive integer")]:
        with pytest.raises(SpecError, match=words):
            parse_spec(text + f"[train]\n{bad}\n", "s.toml")
    dense = 'name = "d"\n[model]\ninput = 2\nlayers = [{ dense = 1 }]\nloss = "mse"\n'
    with pytest.raises(SpecError, match="train.bptt: unknown option"):
        parse_spec(dense + "[train]\nbptt = 5\n", "d.toml")


EVERY_STEP = f"""name = "every_step"
[model]
inputs = {{ x = ["T", {D}] }}
targets = {{ y = ["T", {K}] }}
output = "yhat"
loss = "sum(se[T]) / (sum(n[T]) * {K})"
[model.params]
Wih = [{H}, {D}]
Whh = [{H}, {H}]
bih = [{H}]
Wy = [{K}, {H}]
by = [{K}]
[model.recur]
h = {{ shape = [{H}], step = "tanh(Wih @ x[t] + bih + Whh @ h[t-1])" }}
yhat = "Wy @ h[t] + by"
se = {{ shape = [1], step = "se[t-1] + sum((yhat - y[t])**2)" }}
n = {{ shape = [1], step = "n[t-1] + 1" }}
"""


def test_the_output_may_be_a_value_of_every_step(tmp_path):
    """A target with a time axis is read at each step as y[t], and output = a value of the
    step: forward() gives it at every step, (N, T, k), equal to torch's per-step outputs,
    reading no target; a state that sums each step's squared error and one that counts
    the steps give the mean over them, torch's F.mse_loss over every step (loss and
    gradients)."""
    spec = parse_spec(EVERY_STEP, "every_step.toml")
    module = generate(spec, tmp_path)
    rng = np.random.default_rng(8)
    params = module.init_params(1)
    X, Y = rng.normal(size=(3, 5, D)), rng.normal(size=(3, 5, K))
    net = torch.nn.RNN(D, H, batch_first=True).double()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    with torch.no_grad():
        net.weight_ih_l0.copy_(t["Wih"])
        net.weight_hh_l0.copy_(t["Whh"])
        net.bias_ih_l0.copy_(t["bih"])
        net.bias_hh_l0.zero_()
    out, _ = net(torch.tensor(X))
    steps = out @ t["Wy"].T + t["by"]
    ours = module.forward(params, X)
    assert ours.shape == (3, 5, K)
    np.testing.assert_allclose(ours, steps.detach().numpy(), rtol=1e-12, atol=1e-14)
    expected = F.mse_loss(steps, torch.tensor(Y))
    expected.backward()
    value, grads = module.loss_and_grads(params, X, Y)
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grads["Whh"], net.weight_hh_l0.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads["Wy"], t["Wy"].grad.numpy(), rtol=1e-10)
    for fmt in ("text", "markdown", "latex"):
        assert "Backpropagation through time" in render_graph_document(derive(spec), fmt)
    with pytest.raises(ValueError, match="differ in their number of steps"):
        module.loss_and_grads(params, X, Y[:, :4])
