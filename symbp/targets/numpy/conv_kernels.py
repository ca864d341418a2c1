"""How the NumPy printer writes the image ops' statements (program.Call): as calls of
the helpers defined in templates/numpy/_conv.j2, with their constant settings (kernel,
stride, padding) as keyword arguments, or, for the slicing of a gradient, inline."""

from __future__ import annotations


def _tuple(value) -> str:
    items = [str(v) for v in value]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


class ConvCalls:
    """A mixin of :class:`symbp.targets.numpy.printer.NumpyPrinter` (which has ``helpers``)."""

    helpers: set[str]

    def _conv_helper(self, name: str, args: tuple[str, ...], **settings) -> str:
        self.helpers.add(name)
        if name in ("maxpool2d", "maxpool2d_vjp", "avgpool2d", "avgpool2d_vjp"):
            self.helpers.add("windows")
        words = [
            f"{key}={_tuple(value) if isinstance(value, tuple) else value}"
            for key, value in settings.items()
        ]
        return f"_{name}({', '.join([*args, *words])})"

    def _call_channels_last(self, a):
        return f"{a}.transpose(0, 2, 3, 1)"

    def _call_channels_first(self, g):
        return f"{g}.transpose(0, 3, 1, 2)"

    def _call_unfold(self, a, kernel, stride, padding, ones):
        return self._conv_helper(
            "unfold", (a,), kernel=kernel, stride=stride, padding=padding, ones=ones
        )

    def _call_fold(self, g, size, kernel, stride, padding):
        return self._conv_helper(
            "fold", (g,), size=size, kernel=kernel, stride=stride, padding=padding
        )

    def _call_conv2d(self, u, w, b=None):
        return self._conv_helper("conv2d", (u, w) if b is None else (u, w, b))

    def _call_conv2d_weight_grad(self, g, u):
        return self._conv_helper("conv2d_weight_grad", (g, u))

    def _call_conv2d_input_grad(self, g, w):
        return self._conv_helper("conv2d_input_grad", (g, w))

    def _call_kernel_part(self, both, shape):
        """dL/dW: the columns of (dL/dZ)^T U that multiply the kernel, in its shape."""
        columns = 1
        for size in shape[1:]:
            columns *= size
        return f"{both}[:, :{columns}].reshape{_tuple(shape)}"

    def _call_bias_part(self, both):
        """dL/db: the last column of (dL/dZ)^T U, the one that multiplies U's ones."""
        return f"{both}[:, -1]"

    def _call_maxpool2d(self, a, kernel, stride):
        return self._conv_helper("maxpool2d", (a,), kernel=kernel, stride=stride)

    def _call_maxpool2d_vjp(self, a, p, g, kernel, stride):
        return self._conv_helper("maxpool2d_vjp", (a, p, g), kernel=kernel, stride=stride)

    def _call_avgpool2d(self, a, kernel, stride):
        return self._conv_helper("avgpool2d", (a,), kernel=kernel, stride=stride)

    def _call_avgpool2d_vjp(self, g, size, kernel, stride):
        return self._conv_helper("avgpool2d_vjp", (g,), size=size, kernel=kernel, stride=stride)

    def _call_flatten(self, a):
        return self._conv_helper("flatten", (a,))

    def _call_unflatten(self, g, shape):
        return self._conv_helper("unflatten", (g,), shape=shape)


# the image ops; the gradient slices and the unflatten view are copied into ``out``
CONV_OPS = {
    "channels_last",
    "channels_first",
    "unfold",
    "fold",
    "conv2d",
    "conv2d_weight_grad",
    "conv2d_input_grad",
    "kernel_part",
    "bias_part",
    "maxpool2d",
    "maxpool2d_vjp",
    "avgpool2d",
    "avgpool2d_vjp",
    "flatten",
    "unflatten",
}
_VIEWS = {"kernel_part", "bias_part", "unflatten", "channels_last", "channels_first"}


def conv_into(printer, op: str, out: str, args: tuple[str, ...], attrs: tuple) -> str:
    """The statement ``out = op(*args)`` written into the existing array ``out``: the
    helper's ``out=`` argument, or a copy of a view. ``printer`` is a NumpyPrinter (it
    records the helpers called)."""
    text = printer.call(op, args, attrs)
    if op in _VIEWS:
        return f"np.copyto({out}, {text})"
    return f"{text[:-1]}, out={out})"
