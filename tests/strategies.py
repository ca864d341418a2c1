"""Hypothesis strategies for random expression models written in the spec's grammar.

A model has 1-3 inputs, 1-4 parameters, 0-3 let-names (each over the inputs, the
parameters and earlier let-names), an output that reuses one sub-formula twice
(a shared subexpression), and a loss: ``mse``, a custom per-sample formula, several
outputs, or no targets at all (the output is the objective). Every formula is defined
for all real inputs: logarithms and square roots only see positive arguments, and
divisions divide by something at least 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

INPUTS = ("x1", "x2", "x3")
PARAMS = ("w1", "w2", "w3", "w4")
LETS = ("h1", "h2", "h3")
CONSTANTS = ("0.5", "2", "1.5", "0.25", "3")

SMOOTH = (
    "sin({})",
    "cos({})",
    "tanh({})",
    "sigmoid({})",
    "softplus({})",
    "atan({})",
    "asinh({})",
    "erf({})",
    "exp({})",
    "log(1 + ({})**2)",
    "log(exp({}))",
    "sqrt(1 + ({})**2)",
    "sqrt(({})**2 + 0.5)",
    "({})**2",
    "({})**3",
)
KINKED = ("relu({})", "leaky_relu({}, 0.1)", "leaky_relu({}, 0.25)", "Abs({})")
BINARY = (
    "({}) + ({})",
    "({}) - ({})",
    "({})*({})",
    "({})/(1 + ({})**2)",
    "Max({}, {})",
    "Min({}, {})",
)
LOSSES = (
    "(yhat - y)**2",
    "log(1 + (yhat - y)**2)",
    "softplus(yhat - y) + softplus(y - yhat)",
    "Abs(yhat - y) + 0.5*(yhat - y)**2",
    "(yhat - y)**2 + 0.01*{p}**2",
)


@dataclass(frozen=True)
class RandomModel:
    toml: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]

    def __str__(self) -> str:  # shown by hypothesis on failure
        return self.toml


@st.composite
def formulas(draw, leaves: tuple[str, ...], depth: int) -> str:
    """A formula over ``leaves`` with at most ``depth`` levels of operations."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(leaves))
    kind = draw(st.sampled_from(("smooth", "smooth", "kinked", "binary", "binary")))
    if kind == "binary":
        template = draw(st.sampled_from(BINARY))
        left = draw(formulas(leaves, depth - 1))
        right = draw(formulas(leaves, depth - 1))
        return template.format(left, right)
    template = draw(st.sampled_from(SMOOTH if kind == "smooth" else KINKED))
    return template.format(draw(formulas(leaves, depth - 1)))


def _uses(text: str, name: str) -> bool:
    import re

    return re.search(rf"\b{name}\b", text) is not None


@st.composite
def models(draw, *, max_depth: int = 3) -> RandomModel:
    inputs = INPUTS[: draw(st.integers(1, 3))]
    params = PARAMS[: draw(st.integers(1, 4))]
    leaves = (*inputs, *params, *draw(st.sets(st.sampled_from(CONSTANTS), max_size=2)))
    lets: list[tuple[str, str]] = []
    for name in LETS[: draw(st.integers(0, 3))]:
        formula = draw(formulas(leaves, draw(st.integers(1, max_depth - 1))))
        # a let-name uses a parameter and, when there is one, the previous let-name
        if not any(_uses(formula, p) for p in params):
            formula = f"{draw(st.sampled_from(params))}*({formula})"
        if lets and not _uses(formula, lets[-1][0]):
            formula = f"({formula}) + {draw(st.sampled_from(params))}*{lets[-1][0]}"
        lets.append((name, formula))
        leaves = (*leaves, name)

    # one sub-formula written twice in the output: a shared subexpression
    shared = draw(formulas(leaves, 2))
    outer = draw(st.sampled_from(SMOOTH + KINKED))
    rest = draw(formulas((*leaves, f"({shared})"), max_depth))
    output = f"{outer.format(shared)} + {params[0]}*({rest}) + ({shared})*{params[-1]}"
    if lets:
        output += f" + {lets[-1][0]}"

    loss_kind = draw(st.sampled_from(("mse", "formula", "formula", "two outputs", "objective")))
    outputs: list[str] = [output]
    targets: tuple[str, ...] = ("y",)
    loss: str | None
    if loss_kind == "mse":
        loss = "mse"
    elif loss_kind == "formula":
        loss = draw(st.sampled_from(LOSSES)).format(p=params[0])
    elif loss_kind == "two outputs":
        second = draw(formulas(leaves, 2))
        outputs.append(f"{params[-1]}*({second})")
        targets = ("y1", "y2")
        loss = draw(st.sampled_from(("mse", "(yhat1 - y1)**2 + Abs(yhat2 - y2)")))
    else:
        targets = ()
        loss = draw(st.sampled_from((None, "log(1 + yhat**2)")))
    return RandomModel(_toml(inputs, targets, lets, outputs, loss), inputs, targets)


def _quote(values) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _toml(inputs, targets, lets, outputs, loss) -> str:
    lines = ['name = "random_model"', "[model]", f"inputs = {_quote(inputs)}"]
    lines.append(f"targets = {_quote(targets)}")
    lines.append(f'output = "{outputs[0]}"' if len(outputs) == 1 else f"output = {_quote(outputs)}")
    if loss is not None:
        lines.append(f'loss = "{loss}"')
    if lets:
        lines.append("[model.let]")
        lines += [f'{name} = "{formula}"' for name, formula in lets]
    return "\n".join(lines) + "\n"
