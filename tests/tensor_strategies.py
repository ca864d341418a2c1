"""Hypothesis strategies for random tensor models written in the model language.

A model has one or two vector inputs and builds 2-6 named values, each from earlier
ones (inputs, parameters, values: reuse gives fan-out) by a random operation: a matrix
parameter times a vector (``W @ v``), the transpose of an earlier matrix (``W.T @ v``:
a tied weight), a smooth elementwise function, a sum or product with a value of the
same shape or a scalar, ``dot``, ``outer`` then a matrix product, a slice, ``concat``,
``softmax``, ``logsumexp``, ``sum``, ``mean``, ``norm`` of a shifted vector. The loss is
a squared error against a vector target, a cross-entropy against class labels, or a
sum. Products are squashed by tanh, so that values stay moderate and every formula is
smooth at the scale of a central difference's step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

SMOOTH = ("tanh({})", "sigmoid({})", "softplus({})", "sin({})", "atan({})", "({})**2")


@dataclass
class TensorModelCase:
    inputs: dict[str, int]
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lets: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)
    loss: str = ""
    target: tuple[int, ...] | None = None  # None: no target; (): class labels

    def toml(self, name: str = "random_tensor") -> str:
        inputs = ", ".join(f"{k} = [{n}]" for k, n in self.inputs.items())
        lines = [f'name = "{name}"', "[model]", f"inputs = {{ {inputs} }}"]
        if self.target is not None:
            lines.append(f"targets = {{ y = {list(self.target)} }}")
        lines += [f'output = "{self.lets[-1][0]}"', f'loss = "{self.loss}"', "[model.params]"]
        lines += [f"{p} = {list(s)}" for p, s in self.params.items()]
        lines.append("[model.let]")
        lines += [f'{n} = "{formula}"' for n, formula, _ in self.lets]
        return "\n".join(lines) + "\n"


@st.composite
def tensor_models(draw) -> TensorModelCase:
    case = TensorModelCase({"x": draw(st.integers(2, 4))})
    if draw(st.booleans()):
        case.inputs["u"] = draw(st.integers(1, 3))
    vectors: dict[str, int] = dict(case.inputs)  # name -> length
    matrices: dict[str, tuple[int, int]] = {}

    def param(shape: tuple[int, ...]) -> str:
        name = f"P{len(case.params) + 1}"
        case.params[name] = shape
        if len(shape) == 2:
            matrices[name] = shape
        return name

    for k in range(draw(st.integers(2, 6))):
        names = sorted(vectors)
        v = draw(st.sampled_from(names))
        n = vectors[v]
        kind = draw(
            st.sampled_from(
                [
                    "matvec",
                    "tied",
                    "smooth",
                    "add",
                    "scale",
                    "dot",
                    "outer",
                    "slice",
                    "concat",
                    "softmax",
                    "reduce",
                ]
            )
        )
        if kind == "matvec" or (kind == "tied" and not matrices):
            m = draw(st.integers(1, 4))
            formula, size = f"{param((m, n))} @ {v}", m
            if draw(st.booleans()):
                formula += f" + {param((m,))}"
        elif kind == "tied":
            tied = [w for w, (rows, _) in matrices.items() if rows == n]
            if tied:
                w = draw(st.sampled_from(tied))
                formula, size = f"{w}.T @ {v}", matrices[w][1]
            else:
                w = draw(st.sampled_from(sorted(matrices)))
                formula, size = f"{w} @ {param((matrices[w][1],))} * sum({v})", matrices[w][0]
        elif kind == "smooth":
            formula, size = draw(st.sampled_from(SMOOTH)).format(v), n
        elif kind == "add":
            same = [w for w in names if vectors[w] == n]
            w = draw(st.sampled_from(same))
            op = draw(st.sampled_from(["+", "-", "*"]))
            formula, size = f"{v} {op} {w}", n
        elif kind == "scale":
            s = param(())
            formula, size = f"{s} * {v} + tanh({s})", n
        elif kind == "dot":
            same = [w for w in names if vectors[w] == n]
            w = draw(st.sampled_from(same))
            formula, size = f"tanh(dot({v}, {w})) * {v}", n
        elif kind == "outer":
            w = draw(st.sampled_from(names))
            c = param((vectors[w],))
            formula, size = f"tanh(outer({v}, {w})) @ {c}", n
        elif kind == "slice" and n >= 2:
            start = draw(st.integers(0, n - 2))
            formula, size = f"{v}[{start}:] * {v}[{start}]", n - start
        elif kind == "concat":
            w = draw(st.sampled_from(names))
            formula, size = f"concat({v}, tanh({w}))", n + vectors[w]
        elif kind == "softmax":
            formula, size = draw(st.sampled_from([f"softmax({v})", f"log_softmax({v})"])), n
        else:
            reduce = draw(
                st.sampled_from(
                    [
                        f"sum({v})",
                        f"mean({v})",
                        f"logsumexp({v})",
                        f"norm({v} + 2)",
                        f"var({v})",
                        f"max({v})",
                    ]
                )
            )
            formula, size = f"{v} * tanh({reduce})", n
        name = f"h{k + 1}"
        case.lets.append((name, formula, (size,)))
        vectors[name] = size
    # the output, scaled by a parameter: the loss depends on one whatever was drawn
    last, size = case.lets[-1][0], case.lets[-1][2][0]
    out = f"h{len(case.lets) + 1}"
    case.lets.append((out, f"{param(())} * {last}", (size,)))
    kind = draw(st.sampled_from(["mse", "labels", "sum"]))
    if kind == "mse":
        case.target, case.loss = (size,), f"sum(({out} - y)**2)"
    elif kind == "labels" and size >= 2:
        case.target, case.loss = (), f"cross_entropy({out}, y)"
    else:
        case.target, case.loss = None, f"sum(tanh({out}))"
    return case
