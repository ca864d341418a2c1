"""How the NumPy printer writes the model language's tensor ops (program.Call).

A contraction is printed as ``@`` wherever its subscripts are a matrix product of the
operands or their transposes (``W @ a`` of a batch is ``A @ W.T``; dL/dW = Delta^T A
is ``d_h.T @ x``), and as ``np.einsum`` otherwise; axes are those of the stored
arrays (the batch first). Shapes print with the batch size ``N`` of the function.
"""

from __future__ import annotations

import sympy as sp

from ...ad.tensor_rules import summed_axes


def shape_literal(shape) -> str:
    """A shape as a Python tuple: (4,), (N, 16), (T, N, 4)."""
    items = [str(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _axes(axes) -> str:
    return str(axes[0]) if len(axes) == 1 else shape_literal(axes)


def _matrix_product(subscripts: str, a: str, b: str) -> str | None:
    """``a @ b`` with transposes when ``subscripts`` is a product of two matrices (or a
    matrix and a vector) over one shared letter; None otherwise."""
    (left, right), result = subscripts.split("->")[0].split(","), subscripts.split("->")[1]
    shared = set(left) & set(right)
    if len(shared) != 1 or shared & set(result) or len(set(left + right)) != len(left + right) - 1:
        return None
    (k,) = shared
    if len(left) > 2 or len(right) > 2:
        return None
    free_left = left.replace(k, "")
    free_right = right.replace(k, "")
    if result == free_left + free_right:
        first, second = (a, left), (b, right)
    elif result == free_right + free_left:
        first, second = (b, right), (a, left)
    else:
        return None
    (x, xs), (y, ys) = first, second
    x_text = f"{x}.T" if len(xs) == 2 and xs[0] == k else x
    y_text = f"{y}.T" if len(ys) == 2 and ys[1] == k else y
    return f"{x_text} @ {y_text}"


def _stacked_product(subscripts: str, a: str, b: str, columns=None) -> str | None:
    """A product with stacked axes (a recurrence's (T, N, ...) steps): ``A @ W.T`` where
    ``A``'s leading axes lead the result too (NumPy's matmul broadcasts over them), and
    the two stacks flattened to rows, ``A.reshape(-1, j).T @ B.reshape(-1, k)``, where
    both lead with the same axes, summed (``columns``: the sizes j and k)."""
    (left, right), result = subscripts.split("->")[0].split(","), subscripts.split("->")[1]
    for (x, xs), (w, ws) in (((a, left), (b, right)), ((b, right), (a, left))):
        lead = xs[:-1]
        if len(xs) > 2 and len(ws) == 2 and xs[-1] in ws and not set(lead) & set(ws):
            if result == lead + ws.replace(xs[-1], ""):
                return f"{x} @ {w}.T" if ws[1] == xs[-1] else f"{x} @ {w}"
    lead = left[:-1]
    if len(left) > 1 and right[:-1] == lead and not set(lead) & set(result):
        j, k = columns or (f"{a}.shape[-1]", f"{b}.shape[-1]")
        rows = f"{a}.reshape(-1, {j})", f"{b}.reshape(-1, {k})"
        if result == left[-1] + right[-1]:
            return f"{rows[0]}.T @ {rows[1]}"
        if result == right[-1] + left[-1]:
            return f"{rows[1]}.T @ {rows[0]}"
    return None


class TensorCalls:
    """A mixin of :class:`symbp.targets.numpy.printer.NumpyPrinter` (which has ``helpers``)."""

    helpers: set[str]

    def _call_contract(self, *args, subscripts, columns=None):
        inputs, result = subscripts.split("->")
        if len(args) == 1:
            (a,) = args
            perm = [inputs.index(c) for c in result]
            if len(perm) == 2:
                return f"{a}.T"
            return f"{a}.transpose{shape_literal(perm)}"
        product = _matrix_product(subscripts, *args) or _stacked_product(subscripts, *args, columns)
        if product is not None:
            return product
        return f"np.einsum({subscripts!r}, {', '.join(args)})"

    def _call_time_major(self, x):
        return f"np.ascontiguousarray(np.swapaxes({x}, 0, 1))"

    def _call_from_steps(self, stack):
        return f"np.swapaxes({stack}, 0, 1)"

    def _call_sum(self, a, axes):
        return f"{a}.sum(axis={_axes(axes)})"

    def _call_max(self, a, axes):
        return f"{a}.max(axis={_axes(axes)})"

    def _call_expand(self, a, axes):
        return f"np.expand_dims({a}, {_axes(axes)})"

    def _call_squeeze(self, g, axes):
        return f"np.squeeze({g}, {_axes(axes)})"

    def _call_broadcast(self, g, axes, shape):
        return f"np.broadcast_to(np.expand_dims({g}, {_axes(axes)}), {shape_literal(shape)})"

    def _call_broadcast_to(self, g, shape):
        """An adjoint the same for every element (1/N) spread to a shape: as an array of
        the module's dtype, or a float32 module would compute its backward in float64."""
        return f"np.broadcast_to(np.asarray({g}, DTYPE), {shape_literal(shape)})"

    def _call_sum_to(self, g, shape, source):
        """The sum of ``g`` (of shape ``source``) over the axes it was broadcast along."""
        axes, ones = summed_axes(shape, source)
        if not ones:
            return f"{g}.sum(axis={_axes(tuple(axes))})"
        if not axes:
            return f"{g}.sum(axis={_axes(tuple(ones))}, keepdims=True)"
        summed = f"{g}.sum(axis={_axes(tuple(axes + ones))}, keepdims=True)"
        return f"{summed}.reshape({shape_literal(shape)})"

    def _call_logsumexp(self, z, keepdims):
        self.helpers.add("logsumexp")
        return f"_logsumexp({z}, keepdims={keepdims})"

    def _call_index(self, a, start, stop, squeeze):
        part = str(start) if squeeze else f"{start}:{stop}"
        return f"{a}[..., {part}]"

    def _call_pad(self, g, start, stop, squeeze, size):
        g = f"{g}[..., None]" if squeeze else g
        self.helpers.add("pad_last")
        return f"_pad_last({g}, {start}, {size - stop})"

    def _call_full(self, value, shape):
        return f"np.full({shape_literal(shape)}, {self._print(sp.sympify(value))}, dtype=DTYPE)"

    def _call_concat(self, *parts):
        return f"np.concatenate(({', '.join(parts)}), axis=-1)"

    def _call_batch_mean(self, a):
        return f"{a}.mean(axis=0)"
