"""Bad input through the command line: one line on stderr naming the file, the field and
the problem, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import import_file

from symbp.cli import main

QUADRATIC = """name = "quadratic"
[model]
inputs = ["x"]
targets = ["y"]
output = "w1*x**2 + w2*x + b"
loss = "(yhat - y)**2"
"""


def quadratic(**replace: str) -> str:
    """The quadratic spec with some lines replaced (key: the start of the line)."""
    lines = []
    for line in QUADRATIC.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {replace.pop(key)}" if key in replace else line)
    assert not replace, replace
    return "\n".join(lines) + "\n"


def with_output(formula: str) -> str:
    return quadratic(output=f'"{formula}"')


# id, spec text, the field, a piece of the problem (the exact text where it is fixed)
CASES = [
    ("syntax-error", with_output("w1*x +"), "model.output", "syntax error"),
    ("unbalanced", with_output("w1*(x + b"), "model.output", "syntax error"),
    (
        "unknown-function",
        with_output("w*x + foo(x)"),
        "model.output",
        "unknown function 'foo' at column 7",
    ),
    ("attribute", with_output("x.real"), "model.output", "attribute access is not allowed"),
    ("method-call", with_output("np.exp(x)"), "model.output", "attribute access is not allowed"),
    (
        "dunder-import",
        with_output("__import__('os').system('id')"),
        "model.output",
        "is not allowed",
    ),
    ("dunder-name", with_output("__import__"), "model.output", "name '__import__' is not allowed"),
    ("eval", with_output("eval('1')"), "model.output", "unknown function 'eval'"),
    ("lambda", with_output("lambda x: x"), "model.output", "'Lambda' is not allowed"),
    (
        "lambda-call",
        with_output("(lambda: 1)()"),
        "model.output",
        "only named functions can be called",
    ),
    ("subscript", with_output("x[0]"), "model.output", "'Subscript' is not allowed"),
    ("comparison", with_output("w*x > 1"), "model.output", "'Compare' is not allowed"),
    ("string-constant", with_output("w*'x'"), "model.output", "unsupported constant 'x'"),
    ("boolean-constant", with_output("w*x + True"), "model.output", "unsupported constant True"),
    (
        "keyword-argument",
        with_output("exp(x=w)"),
        "model.output",
        "'exp' takes no keyword arguments",
    ),
    (
        "function-without-call",
        with_output("w*tanh"),
        "model.output",
        "function 'tanh' used without a call",
    ),
    (
        "wrong-arity",
        with_output("leaky_relu(w*x)"),
        "model.output",
        "'leaky_relu' takes 2 argument(s), got 1 at column 1",
    ),
    (
        "max-one-argument",
        with_output("Max(w*x)"),
        "model.output",
        "'Max' needs at least 2 arguments, got 1",
    ),
    ("division-by-zero", with_output("w*x/0"), "model.output", "division by zero"),
    (
        "infinite-literal",
        with_output("w*x*1e400"),
        "model.output",
        "number too large (beyond float64) at column 5",
    ),
    ("exp-beyond-float64", with_output("w*x*exp(1000)"), "model.output", "number too large"),
    ("cosh-beyond-float64", with_output("w*x + cosh(800)"), "model.output", "number too large"),
    ("integer-beyond-float64", with_output("w*x + 2**1024 - 1"), "model.output", "too large"),
    (
        "number-beyond-float64",
        with_output("w*x*10**400"),
        "model.output",
        "number too large (beyond float64) at column 5",
    ),
    (
        "float-beyond-float64",
        with_output("w*x*1e300*1e300"),
        "model.output",
        "number too large (beyond float64)",
    ),
    (
        "tower-of-powers",
        with_output("w*x*9**9**9**9"),
        "model.output",
        "number too large (beyond float64) at column 8",
    ),
    (
        "complex-sqrt",
        with_output("w*x*sqrt(-2)"),
        "model.output",
        "formula is not real (a constant is a complex number)",
    ),
    ("complex-log", with_output("w*x + log(-1)"), "model.output", "formula is not real"),
    ("complex-power", with_output("w*x*(-8)**(1/3)"), "model.output", "formula is not real"),
    ("empty-formula", with_output(" "), "model.output", "empty formula"),
    (
        "formula-not-a-string",
        quadratic(output="3"),
        "model.output",
        "expected a formula or a non-empty list of formulas",
    ),
    (
        "empty-output-list",
        quadratic(output="[]"),
        "model.output",
        "expected a formula or a non-empty list of formulas",
    ),
    (
        "output-list-item",
        quadratic(output='["w*x", 3]', loss='"(yhat1 - y)**2"'),
        "model.output[2]",
        "expected a formula string, got int",
    ),
    (
        "input-not-identifier",
        quadratic(inputs='["x-1"]'),
        "model.inputs",
        "'x-1' is not a valid name",
    ),
    (
        "input-starts-with-digit",
        quadratic(inputs='["1x"]'),
        "model.inputs",
        "'1x' is not a valid name",
    ),
    (
        "input-keyword",
        quadratic(inputs='["lambda"]'),
        "model.inputs",
        "'lambda' is not a valid name (an identifier, not a keyword)",
    ),
    (
        "target-keyword",
        quadratic(targets='["class"]'),
        "model.targets",
        "'class' is not a valid name",
    ),
    (
        "let-keyword",
        QUADRATIC + '[model.let]\nimport = "2*x"\n',
        "model.let.import",
        "'import' is not a valid name",
    ),
    (
        "let-not-identifier",
        QUADRATIC + '[model.let]\n"h 1" = "2*x"\n',
        "model.let.h 1",
        "'h 1' is not a valid name",
    ),
    (
        "reserved-name",
        with_output("sum*x"),
        "model.output",
        "'sum' is reserved by the generated code",
    ),
    (
        "yhat-as-parameter",
        with_output("yhat*x"),
        "model.output",
        "'yhat' is reserved for the model's output",
    ),
    (
        "input-as-parameter",
        QUADRATIC + "[params]\nx = 1.0\n",
        "params.x",
        "'x' is one of model.inputs, not a parameter",
    ),
    (
        "input-as-target",
        quadratic(targets='["x"]'),
        "model.targets",
        "'x' is already one of model.inputs",
    ),
    (
        "input-as-let",
        QUADRATIC + '[model.let]\nx = "2"\n',
        "model.let.x",
        "'x' is already one of model.inputs",
    ),
    (
        "unknown-parameter",
        QUADRATIC + "[params]\nw9 = 1.0\n",
        "params.w9",
        "unknown parameter (not used by the model)",
    ),
    (
        "parameter-not-a-number",
        QUADRATIC + '[params]\nw1 = "one"\n',
        "params.w1",
        "expected a number, got 'one'",
    ),
    ("parameter-nan", QUADRATIC + "[params]\nw1 = nan\n", "params.w1", "must be a finite number"),
    ("parameter-huge-int", QUADRATIC + f"[params]\nw1 = {10**309}\n", "params.w1", "too large"),
    ("data-nan", QUADRATIC + "[data]\nx = [1.0, nan]\ny = [1.0, 2.0]\n", "data.x[1]", "finite"),
    ("data-inf", QUADRATIC + "[data]\nx = [1.0, 2.0]\ny = [1.0, -inf]\n", "data.y[1]", "finite"),
    ("data-huge-int", QUADRATIC + f"[data]\nx = [{10**309}]\ny = [1]\n", "data.x[0]", "too large"),
    ("predict-nan", QUADRATIC + "[predict]\nx = [nan]\n", "predict.x[0]", "finite"),
    ("lr-huge-int", QUADRATIC + f"[train]\nlr = {10**309}\n", "train.lr", "too large"),
    (
        "betas-huge-int",
        QUADRATIC + f'[train]\noptimizer = "adam"\nbetas = [0.9, {10**309}]\n',
        "train.betas",
        "too large",
    ),
    (
        "optimizer-list",
        QUADRATIC + '[train]\noptimizer = ["adam"]\n',
        "train.optimizer",
        "expected a name, got ['adam'] (known: sgd,",
    ),
    (
        "optimizer-table",
        QUADRATIC + "[train]\noptimizer = { a = 1 }\n",
        "train.optimizer",
        "expected a name, got {'a': 1}",
    ),
    (
        "optimizer-typo",
        QUADRATIC + "[train]\noptimiser = 'sgd'\n",
        "train.optimiser",
        "unknown option for optimizer 'sgd' (did you mean 'optimizer'? known: batch_size,",
    ),
    (
        "params-key-typo",
        with_output("weight*x + b") + "[params]\nwieght = 1.0\n",
        "params.wieght",
        "unknown parameter (not used by the model) (did you mean 'weight'? known: weight, b)",
    ),
    (
        "params-key-fullwidth",
        with_output("weight*x + b") + '[params]\n"\uff57eight" = 1.0\n',
        "params.\uff57eight",
        "not a valid name (an ASCII identifier)",
    ),
    (
        "adam-eps-zero",
        QUADRATIC + '[train]\noptimizer = "adam"\neps = 0\n',
        "train.eps",
        "positive",
    ),
    (
        "data-lengths",
        QUADRATIC + "[data]\nx = [1.0, 2.0, 3.0]\ny = [1.0, 2.0]\n",
        "data.y",
        "has 2 values but data.x has 3",
    ),
    ("data-missing-column", QUADRATIC + "[data]\nx = [1.0, 2.0]\n", "data.y", "missing column"),
    (
        "data-not-numeric",
        QUADRATIC + '[data]\nx = [1.0, "two"]\ny = [1.0, 2.0]\n',
        "data.x[1]",
        "expected a number, got 'two'",
    ),
    (
        "data-boolean",
        QUADRATIC + "[data]\nx = [1.0, 2.0]\ny = [true, 2.0]\n",
        "data.y[0]",
        "expected a number, got True",
    ),
    (
        "data-unknown-column",
        QUADRATIC + "[data]\nx = [1.0]\ny = [1.0]\nz = [1.0]\n",
        "data.z",
        "not an input or target of the model",
    ),
    (
        "data-empty",
        QUADRATIC + "[data]\nx = []\ny = []\n",
        "data.x",
        "expected a non-empty list of numbers",
    ),
    (
        "predict-target",
        QUADRATIC + "[predict]\nx = [1.0]\ny = [2.0]\n",
        "predict.y",
        "not an input of the model",
    ),
    (
        "unknown-optimizer",
        QUADRATIC + '[train]\noptimizer = "lbfgs"\n',
        "train.optimizer",
        "unknown optimizer 'lbfgs' (known: sgd, momentum, adagrad, rmsprop, adam, adamw, adamax,"
        " adadelta, radam, nadam)",
    ),
    (
        "adadelta-rho",
        QUADRATIC + '[train]\noptimizer = "adadelta"\nrho = 1.5\n',
        "train.rho",
        "must be in [0, 1] (as torch.optim.Adadelta)",
    ),
    (
        "amsgrad-not-bool",
        QUADRATIC + '[train]\noptimizer = "adamw"\namsgrad = 1\n',
        "train.amsgrad",
        "expected true or false, got 1",
    ),
    (
        "clip-both",
        QUADRATIC + "[train]\nclip_grad_norm = 1.0\nclip_grad_value = 0.5\n",
        "train.clip_grad_value",
        "choose one of clip_grad_norm and clip_grad_value",
    ),
    (
        "clip-zero",
        QUADRATIC + "[train]\nclip_grad_norm = 0\n",
        "train.clip_grad_norm",
        "must be positive (as torch.nn.utils)",
    ),
    (
        "clip-misspelt",
        QUADRATIC + "[train]\nclip_grad = 1.0\n",
        "train.clip_grad",
        "unknown option for optimizer 'sgd' (did you mean 'clip_grad_norm'",
    ),
    (
        "schedule-unknown",
        QUADRATIC + '[train]\nlr_schedule = { name = "cosin", T_max = 3 }\n',
        "train.lr_schedule.name",
        "unknown schedule 'cosin' (did you mean 'cosine'?",
    ),
    (
        "schedule-required-option",
        QUADRATIC + '[train]\nlr_schedule = { name = "step" }\n',
        "train.lr_schedule.step_size",
        "missing (schedule 'step' needs it)",
    ),
    (
        "schedule-option-typo",
        QUADRATIC + '[train]\nlr_schedule = { name = "step", step_size = 2, gama = 0.5 }\n',
        "train.lr_schedule.gama",
        "unknown option for schedule 'step' (did you mean 'gamma'?",
    ),
    (
        "schedule-integer",
        QUADRATIC + '[train]\nlr_schedule = { name = "cosine", T_max = 2.5 }\n',
        "train.lr_schedule.T_max",
        "expected a positive integer, got 2.5",
    ),
    (
        "schedule-first-milestone",
        QUADRATIC
        + '[train]\nlr_schedule = [{ name = "exponential", gamma = 0.9, milestone = 2 }]\n',
        "train.lr_schedule[0].milestone",
        "the first schedule starts at epoch 0: no milestone",
    ),
    (
        "schedule-missing-milestone",
        QUADRATIC + '[train]\nlr_schedule = [{ name = "exponential", gamma = 0.9 },'
        ' { name = "exponential", gamma = 0.5 }]\n',
        "train.lr_schedule[1].milestone",
        "missing: the epoch this schedule starts at",
    ),
    (
        "schedule-milestones-in-order",
        QUADRATIC + '[train]\nlr_schedule = [{ name = "exponential", gamma = 0.9 },'
        ' { name = "exponential", gamma = 0.5, milestone = 4 },'
        ' { name = "exponential", gamma = 0.7, milestone = 3 }]\n',
        "train.lr_schedule[2].milestone",
        "must come after the previous one (4)",
    ),
    (
        "schedule-factor",
        QUADRATIC + '[train]\nlr_schedule = { name = "linear", start_factor = 2.0 }\n',
        "train.lr_schedule.start_factor",
        "must be at most 1 (as torch)",
    ),
    (
        "amsgrad-on-sgd",
        QUADRATIC + '[train]\noptimizer = "sgd"\namsgrad = true\n',
        "train.amsgrad",
        "unknown option for optimizer 'sgd'",
    ),
    (
        "unknown-optimizer-option",
        QUADRATIC + '[train]\noptimizer = "sgd"\nbetas = [0.9, 0.99]\n',
        "train.betas",
        "unknown option for optimizer 'sgd'",
    ),
    (
        "misspelt-option",
        QUADRATIC + '[train]\noptimizer = "adam"\nmomentun = 0.9\n',
        "train.momentun",
        "unknown option for optimizer 'adam'",
    ),
    (
        "lr-string",
        QUADRATIC + '[train]\nlr = "fast"\n',
        "train.lr",
        "expected a number, got 'fast'",
    ),
    ("lr-zero", QUADRATIC + "[train]\nlr = 0\n", "train.lr", "must be positive"),
    (
        "epochs-float",
        QUADRATIC + "[train]\nepochs = 2.5\n",
        "train.epochs",
        "expected a positive integer, got 2.5",
    ),
    (
        "shuffle-string",
        QUADRATIC + '[train]\nshuffle = "yes"\n',
        "train.shuffle",
        "expected true or false, got 'yes'",
    ),
    (
        "betas-out-of-range",
        QUADRATIC + '[train]\noptimizer = "adam"\nbetas = [0.9, 1.0]\n',
        "train.betas",
        "each beta must be in [0, 1)",
    ),
    (
        "nesterov-without-momentum",
        QUADRATIC + "[train]\nnesterov = true\n",
        "train.nesterov",
        "needs momentum > 0 and dampening = 0",
    ),
    ("empty-file", "", None, "empty file"),
    ("whitespace-file", "  \n\n", None, "empty file"),
    ("not-toml", "this is not = = toml [\n", None, "not valid TOML"),
    ("python-not-toml", "import os\nos.system('id')\n", None, "not valid TOML"),
    ("unknown-top-level-field", 'colour = "blue"\n' + QUADRATIC, "colour", "unknown field"),
    ("unknown-model-field", QUADRATIC + "activation = 1\n", "model.activation", "unknown field"),
    ("missing-name", QUADRATIC.replace('name = "quadratic"\n', ""), "name", "missing"),
    (
        "name-not-identifier",
        QUADRATIC.replace('"quadratic"', '"my model"'),
        "name",
        "'my model' is not a valid identifier",
    ),
    ("missing-model", 'name = "quadratic"\n', "model", "missing table"),
    ("model-not-a-table", 'name = "quadratic"\nmodel = 3\n', "model", "expected a table, got int"),
    (
        "missing-output",
        "\n".join(QUADRATIC.splitlines()[:-2] + ['loss = "mse"']) + "\n",
        "model.output",
        "missing",
    ),
    (
        "missing-loss-with-targets",
        "\n".join(QUADRATIC.splitlines()[:-1]) + "\n",
        "model.loss",
        "missing (the model has targets)",
    ),
    ("unknown-name-in-loss", quadratic(loss='"(yhat - z)**2"'), "model.loss", "unknown name 'z'"),
    ("constant-loss", quadratic(loss='"3"'), "model.loss", "the loss is a constant"),
    (
        "mse-without-targets",
        quadratic(targets="[]", loss='"mse"'),
        "model.loss",
        "'mse' needs one target per output (1 outputs, 0 targets)",
    ),
]


@pytest.fixture
def spec_file(tmp_path):
    def write(text: str, name: str = "quadratic.toml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def one_error_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in err
    return err[:-1]


def assert_names(line: str, source: str, field: str | None, problem: str) -> None:
    prefix = f"{source}: {field}: " if field else f"{source}: "
    assert line.startswith(prefix), line
    assert problem in line[len(prefix) :], line


@pytest.mark.parametrize(
    ("text", "field", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_generate_reports_one_line_and_writes_nothing(
    spec_file, tmp_path, capsys, text, field, problem
):
    path = spec_file(text)
    out = tmp_path / "out" / "module.py"
    out.parent.mkdir()
    assert main(["generate", str(path), "-o", str(out), "--tests"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_names(one_error_line(captured.err), "quadratic.toml", field, problem)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["derive", "{spec}", "-o", "{out}"],
        ["derive", "{spec}", "--format", "latex", "-o", "{out}"],
        ["derive", "{spec}", "--stats", "-o", "{out}"],
        ["generate", "{spec}", "-o", "{out}", "--dtype", "float32"],
        ["check", "{spec}"],
        ["run", "{spec}", "-o", "{folder}"],
    ],
    ids=lambda c: " ".join(c[:3]),
)
@pytest.mark.parametrize("case", ["unknown-function", "data-lengths", "not-toml"])
def test_every_command_reports_the_same_line(spec_file, tmp_path, capsys, command, case):
    _, text, field, problem = next(c for c in CASES if c[0] == case)
    path = spec_file(text)
    out, folder = tmp_path / "out.txt", tmp_path / "run"
    args = [a.format(spec=path, out=out, folder=folder) for a in command]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_names(one_error_line(captured.err), "quadratic.toml", field, problem)
    assert not out.exists()
    assert not folder.exists()


def test_an_existing_output_file_is_left_unchanged(spec_file, tmp_path, capsys):
    path = spec_file(with_output("w*x + foo(x)"))
    module, tests = tmp_path / "quadratic.py", tmp_path / "test_quadratic.py"
    module.write_text("# my own module\n", encoding="utf-8")
    tests.write_text("# my own tests\n", encoding="utf-8")
    assert main(["generate", str(path), "-o", str(module), "--tests"]) == 2
    one_error_line(capsys.readouterr().err)
    assert module.read_text(encoding="utf-8") == "# my own module\n"
    assert tests.read_text(encoding="utf-8") == "# my own tests\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "quadratic.py",
        "quadratic.toml",
        "test_quadratic.py",
    ]


def test_a_formula_is_never_executed(spec_file, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.chdir(tmp_path)
    for formula in [
        f"__import__('os').system('touch {marker}')",
        "__builtins__",
        "exp(__import__('os').getpid())",
        "[c for c in ().__class__.__base__.__subclasses__()]",
    ]:
        path = spec_file(with_output(formula.replace('"', "'")))
        assert main(["generate", str(path), "-o", str(tmp_path / "m.py")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith("quadratic.toml: model.output: "), line
    assert not marker.exists()
    assert not (tmp_path / "m.py").exists()


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    assert main(["generate", str(missing), "-o", str(tmp_path / "m.py")]) == 2
    assert one_error_line(capsys.readouterr().err) == f"{missing}: no such file"
    assert list(tmp_path.iterdir()) == []


def test_unknown_builtin_name(capsys):
    assert main(["check", "no_such_example"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("no_such_example: no such file or built-in example (built-ins: ")
    assert "quadratic" in line


def test_a_folder_is_not_a_spec(tmp_path, capsys):
    folder = tmp_path / "spec.toml"
    folder.mkdir()
    assert main(["check", str(folder)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"{folder}: is a directory, not a spec file"


def test_binary_file(tmp_path, capsys):
    path = tmp_path / "quadratic.toml"
    path.write_bytes(b"\xff\xfe\x00name = 1")
    assert main(["check", str(path)]) == 2
    assert one_error_line(capsys.readouterr().err) == f"{path}: not a UTF-8 text file"


def test_bad_module_path(spec_file, tmp_path, capsys):
    path = spec_file(QUADRATIC)
    for out in ["module.txt", "my-module.py"]:
        assert main(["generate", str(path), "-o", str(tmp_path / out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line == f"{tmp_path / out}: the module path must end in .py and name a valid module"
    assert main(["generate", str(path), "-o", str(tmp_path / "nowhere" / "m.py")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"{tmp_path / 'nowhere' / 'm.py'}: output folder does not exist"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quadratic.toml"]


# --- extreme formulas: one line and exit 2, or a clean success ---------------------------

EXTREME = [
    ("huge-exponent", "w*x**(10**5000)"),
    ("huge-constant", "w*x*10**5000"),
    ("tower-of-powers", "w*x*2**2**2**2**2"),
    ("float-overflow", "w*x*1e308*10"),
    ("float-power-overflow", "w*x*2.0**100000"),
    ("huge-integer-literal", "w*x*" + "9" * 4000),
    ("tiny-rational", "w*x/10**5000"),
    ("big-symbolic-exponent", "w**99999999999*x"),
    ("deep-parentheses", "(" * 300 + "w*x" + ")" * 300),
    ("very-deep-parentheses", "(" * 5000 + "w*x" + ")" * 5000),
    ("parentheses-within-python-limit", "(" * 150 + "w*x" + ")" * 150),
    ("sixty-nested-calls", "sin(" * 60 + "w*x" + ")" * 60),
    ("deep-calls", "sin(" * 500 + "w*x" + ")" * 500),
    ("long-sum", "+".join(["w*x"] * 20000)),
    ("many-minus-signs", "-" * 50000 + "w*x"),
    ("nested-unary", "-(" * 3000 + "w*x" + ")" * 3000),
]


@pytest.mark.parametrize("formula", [c[1] for c in EXTREME], ids=[c[0] for c in EXTREME])
def test_extreme_formulas_fail_cleanly_or_generate_working_code(tmp_path, capsys, formula):
    spec = tmp_path / "quadratic.toml"
    spec.write_text(with_output(formula), encoding="utf-8")
    out = tmp_path / "extreme.py"
    status = main(["generate", str(spec), "-o", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if status == 2:
        assert_names(one_error_line(captured.err), "quadratic.toml", "model.output", "")
        assert not out.exists()
        return
    assert status == 0, captured
    assert captured.err.count("\n") <= 1  # at most the size warning
    module = import_file(out)
    params = {name: module.np.asarray(0.5) for name in module.PARAM_SHAPES}
    module.loss_and_grads(params, [[0.25]], [[1.0]])  # runs (the values may overflow)


def test_tower_of_powers_does_not_hang(tmp_path):
    spec = tmp_path / "quadratic.toml"
    spec.write_text(with_output("w*x*9**9**9**9"), encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "symbp", "check", str(spec)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("symbp did not finish within 20 s")
    assert result.returncode == 2
    one_error_line(result.stderr)


# --- the real entry point, in a subprocess ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            with_output("w*x + foo(x)"),
            "quadratic.toml: model.output: unknown function 'foo' at column 7",
        ),
        ("= not toml", "quadratic.toml: not valid TOML: Invalid statement (at line 1, column 1)"),
        (
            QUADRATIC + '[train]\nlr = "fast"\n',
            "quadratic.toml: train.lr: expected a number, got 'fast'",
        ),
    ],
    ids=["unknown-function", "not-toml", "lr-string"],
)
def test_console_script_exits_2_with_one_line(tmp_path, text, line):
    spec = tmp_path / "quadratic.toml"
    spec.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "symbp", "generate", "quadratic.toml", "-o", "q.py", "--tests"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == line + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quadratic.toml"]


# --- specs the generator must either reject cleanly or handle ---------------------------


def test_a_model_without_inputs_is_rejected_or_works(tmp_path, capsys):
    spec = tmp_path / "objective.toml"
    spec.write_text('name = "objective"\n[model]\noutput = "(a - 3)**2"\n', encoding="utf-8")
    status = main(["check", str(spec)])
    captured = capsys.readouterr()
    if status == 2:
        assert_names(one_error_line(captured.err), "objective.toml", "model.inputs", "")
    else:
        assert status == 0, captured


NAME_MODEL = """name = "names"
[model]
inputs = ["x"]
targets = ["y"]
output = "a*sigmoid(x*{name}) + {name}*x + erf(a)"
loss = "mse"
[params]
a = 0.5
{name} = -0.3
[train]
optimizer = "adam"
lr = 0.1
[data]
x = [0.5, 1.0, 1.5]
y = [1.0, 2.0, 2.5]
"""


@pytest.mark.parametrize(
    "name",
    ["n", "t", "samples", "epochs", "seed", "step", "DTYPE", "INPUTS", "_sigmoid", "exp_avg_a"],
)
def test_a_parameter_named_like_generated_code_is_rejected_or_works(tmp_path, capsys, name):
    """Either one line and exit 2, or the module trains exactly as with a plain name."""
    results = {}
    for param in (name, "q"):
        spec = tmp_path / "names.toml"
        spec.write_text(NAME_MODEL.format(name=param), encoding="utf-8")
        module = tmp_path / f"names_{len(results)}.py"
        status = main(["generate", str(spec), "-o", str(module)])
        captured = capsys.readouterr()
        if status == 2:
            assert_names(one_error_line(captured.err), "names.toml", "model.output", name)
            return
        model = import_file(module)
        X, Y = model._load_data(None)
        for batch_size in (1, 3):
            trained, losses = model.train(
                model.init_params(), X, Y, epochs=3, batch_size=batch_size
            )
            results.setdefault(param, []).append(
                (float(trained["a"]), float(trained[param]), losses)
            )
    assert results[name] == results["q"]
