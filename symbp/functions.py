"""The functions a spec may call, and the one place where kink conventions are chosen.

The custom activations are SymPy functions like ``tanh``: each knows its definition
(``rewrite("exp")``-style, used by the tests to check its derivative against
``sympy.diff``) and returns its derivative in terms of its own value, so reverse mode
reuses the cached forward value (sigmoid' = s (1 - s)).
"""

from __future__ import annotations

import sympy as sp


class sigmoid(sp.Function):  # noqa: N801 - named as users write it
    """Logistic function 1 / (1 + exp(-z))."""

    nargs = 1

    def _eval_is_real(self):
        return self.args[0].is_real

    @classmethod
    def eval(cls, z):
        if z.is_Number:
            return 1 / (1 + sp.exp(-z))
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _eval_evalf(self, prec):
        # a constant argument that is not a plain number (relu(tanh(2))): its value
        return self.definition().evalf(prec)

    def definition(self):
        return 1 / (1 + sp.exp(-self.args[0]))


class relu(sp.Function):  # noqa: N801
    """max(z, 0); relu'(0) = 0 as in PyTorch."""

    nargs = 1

    def _eval_is_real(self):
        return self.args[0].is_real

    @classmethod
    def eval(cls, z):
        if z.is_Number:
            return sp.Max(z, 0)
        return None

    def fdiff(self, argindex=1):
        return sp.Heaviside(self.args[0], 0)

    def _eval_evalf(self, prec):
        # a constant argument that is not a plain number (relu(tanh(2))): its value
        return self.definition().evalf(prec)

    def definition(self):
        return sp.Max(self.args[0], 0)


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(z)), printed in its overflow-free form."""

    nargs = 1

    def _eval_is_real(self):
        return self.args[0].is_real

    @classmethod
    def eval(cls, z):
        if z.is_Number:
            return sp.log(1 + sp.exp(z))
        return None

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_evalf(self, prec):
        # a constant argument that is not a plain number (relu(tanh(2))): its value
        return self.definition().evalf(prec)

    def definition(self):
        return sp.log(1 + sp.exp(self.args[0]))


class leaky_relu(sp.Function):  # noqa: N801
    """z for z > 0, slope * z otherwise; the derivative at 0 is the slope, as in PyTorch."""

    nargs = 2

    def _eval_is_real(self):
        return self.args[0].is_real and self.args[1].is_real

    @classmethod
    def eval(cls, z, slope):
        if z.is_Number and slope.is_Number:
            return z if z > 0 else slope * z
        return None

    def fdiff(self, argindex=1):
        z, slope = self.args
        if argindex == 1:
            return sp.Piecewise((1, z > 0), (slope, True))
        return sp.Piecewise((0, z > 0), (z, True))

    def _eval_evalf(self, prec):
        # a constant argument that is not a plain number (relu(tanh(2))): its value
        return self.definition().evalf(prec)

    def definition(self):
        z, slope = self.args
        return sp.Piecewise((z, z > 0), (slope * z, True))


class clamped_log(sp.Function):  # noqa: N801
    """max(log(x), -100), torch.nn.BCELoss's clamp, evaluated as log(max(x, e^-100)) so
    that x = 0 neither warns nor gives a NaN gradient (the derivative is 0 there)."""

    nargs = 1
    FLOOR = sp.exp(-100)

    def _eval_is_real(self):
        return self.args[0].is_real

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sp.Heaviside(x - self.FLOOR, 0) / sp.Max(x, self.FLOOR)

    def _eval_evalf(self, prec):
        # a constant argument that is not a plain number (relu(tanh(2))): its value
        return self.definition().evalf(prec)

    def definition(self):
        return sp.Max(sp.log(self.args[0]), -100)


# name in a spec -> (SymPy constructor, allowed argument counts; None = two or more)
FUNCTIONS: dict[str, tuple[object, tuple[int, ...] | None]] = {
    "exp": (sp.exp, (1,)),
    "log": (sp.log, (1,)),
    "sqrt": (sp.sqrt, (1,)),
    "sin": (sp.sin, (1,)),
    "cos": (sp.cos, (1,)),
    "tan": (sp.tan, (1,)),
    "tanh": (sp.tanh, (1,)),
    "sinh": (sp.sinh, (1,)),
    "cosh": (sp.cosh, (1,)),
    "asinh": (sp.asinh, (1,)),
    "atan": (sp.atan, (1,)),
    "erf": (sp.erf, (1,)),
    "Abs": (sp.Abs, (1,)),
    "abs": (sp.Abs, (1,)),
    "sign": (sp.sign, (1,)),
    "Max": (sp.Max, None),
    "Min": (sp.Min, None),
    "max": (sp.Max, None),
    "min": (sp.Min, None),
    "sigmoid": (sigmoid, (1,)),
    "relu": (relu, (1,)),
    "softplus": (softplus, (1,)),
    "leaky_relu": (leaky_relu, (2,)),
}

CONSTANTS = {"pi": sp.pi}

CUSTOM_FUNCTIONS = (sigmoid, relu, softplus, leaky_relu, clamped_log)


def apply_kink_conventions(expr: sp.Expr) -> sp.Expr:
    """Fix the derivative at kinks, once for every target, to match PyTorch.

    - the derivative of sign (a DiracDelta) is 0, as ``torch.sign``'s gradient;
    - abs'(0) = sign(0) = 0, as ``torch.abs``;
    - max/min split the gradient evenly on ties (SymPy's Heaviside(0) = 1/2),
      as ``torch.maximum``/``torch.minimum``;
    - relu'(0) = 0 and leaky_relu'(0) = slope are built into those functions.
    """
    if expr.has(sp.DiracDelta):
        expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    return expr
