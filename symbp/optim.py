"""Optimizer update rules, written once as SymPy assignments and printed by every target.

Each rule follows ``torch.optim`` to the letter (same defaults, same order of
operations) so that a user can compare against PyTorch step by step. A rule is a list
of per-element assignments over the parameter ``p``, its gradient ``g``, the
optimizer's state buffers and per-step scalars computed once per step from ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import sympy as sp

p, g = sp.symbols("p g", real=True)
t = sp.Symbol("step", real=True)  # the step counter, 1 on the first step
# the Euclidean norm of the whole gradient, every parameter's together, at this step: a
# target computes it before the step scalars where a rule reads it (clip_grad_norm)
grad_norm = sp.Symbol("grad_norm", real=True)

# options of [train] that every optimizer takes: torch.nn.utils' gradient clipping,
# applied to the gradient before the optimizer's step (as a torch loop calls it)
CLIPPING = ("clip_grad_norm", "clip_grad_value")


@dataclass(frozen=True)
class UpdateRule:
    """What a target needs to emit one optimizer step."""

    name: str
    options: dict[str, object]  # resolved hyper-parameters
    state: tuple[str, ...]  # per-parameter buffers, same shape as p
    step_scalars: tuple[tuple[sp.Symbol, sp.Expr], ...]  # computed once per step from t
    updates: tuple[tuple[sp.Symbol, sp.Expr], ...]  # in order; targets are g, state or p
    formulas: tuple[str, ...] = field(default=())  # the rule in words, for comments and docs
    state_init: tuple[float, ...] = field(default=())  # initial value of each buffer
    # step scalars that read their own previous value (NAdam's mu_product), with their
    # value before the first step: a target keeps them between steps
    carried: tuple[tuple[str, float], ...] = field(default=())

    def initial(self, buffer: str) -> float:
        return self.state_init[self.state.index(buffer)] if self.state_init else 0.0

    @property
    def reads_grad_norm(self) -> bool:
        """Whether a target must compute grad_norm before the step scalars."""
        return any(grad_norm in e.free_symbols for _, e in self.step_scalars)

    @property
    def counts_steps(self) -> bool:
        """Whether the rule reads the step counter t (Adam's bias corrections, Adagrad's
        lr decay): documents explain t only then."""
        exprs = [e for _, e in (*self.step_scalars, *self.updates)]
        return any(t in e.free_symbols for e in exprs)


BOOLEAN_OPTIONS = {"nesterov", "centered", "amsgrad", "maximize"}


def _num(value) -> sp.Expr:
    return sp.Float(value) if not isinstance(value, bool) else sp.Integer(int(value))


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


# --- the registry: one entry per optimizer --------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: its torch.optim class, its options with torch's defaults, and its
    update rule. ``build(opts, lr, updates, scalars, words)`` appends the rule's
    assignments (after weight decay, which every optimizer shares) and returns the
    names of its state buffers."""

    name: str
    torch_class: str  # the torch.optim class it equals step for step
    described: str  # how documents name it
    defaults: dict[str, object]
    build: Callable[..., tuple[str, ...]]
    # weight decay as torch.optim.AdamW's, p <- p (1 - lr wd), not as a term of g
    decoupled: bool = False
    carried: tuple[tuple[str, float], ...] = ()  # see UpdateRule.carried


OPTIMIZERS: dict[str, Optimizer] = {}


def optimizer(
    name: str,
    torch_class: str,
    defaults: dict[str, object],
    described: str = "",
    decoupled: bool = False,
    carried: dict[str, float] | None = None,
):
    """Register the decorated rule builder as optimizer ``name``. Every torch.optim
    optimizer takes ``maximize`` (ascend instead of descend), so every entry does."""

    def register(build):
        text = described or f"torch.optim.{torch_class}"
        options = {**defaults, "maximize": False}
        kept = tuple((carried or {}).items())
        OPTIMIZERS[name] = Optimizer(name, torch_class, text, options, build, decoupled, kept)
        return build

    return register


_SGD_DEFAULTS = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False}


@optimizer("sgd", "SGD", {**_SGD_DEFAULTS, "weight_decay": 0.0})
def _sgd(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    mu = opts["momentum"]
    if mu:
        buf = _sym("momentum_buffer")
        damp = _sym("damp")  # 1 on the first step (torch copies g), 1 - dampening after
        scalars.append((damp, sp.Piecewise((1, sp.Eq(t, 1)), (1 - _num(opts["dampening"]), True))))
        updates.append((buf, _num(mu) * buf + damp * g))
        words.append(f"b <- {mu} b + (1 - dampening) g  (b = g on the first step)")
        if opts["nesterov"]:
            updates.append((g, g + _num(mu) * buf))
            words.append(f"g <- g + {mu} b  (Nesterov)")
        else:
            updates.append((g, buf))
            words.append("g <- b")
    updates.append((p, p - lr * g))
    words.append("p <- p - lr g")
    return ("momentum_buffer",) if mu else ()


optimizer(
    "momentum",
    "SGD",
    {**_SGD_DEFAULTS, "momentum": 0.9, "weight_decay": 0.0},
    described="torch.optim.SGD (with momentum)",
)(_sgd)


@optimizer(
    "adagrad",
    "Adagrad",
    {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    },
)
def _adagrad(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    clr = _sym("clr")
    scalars.append((clr, lr / (1 + (t - 1) * _num(opts["lr_decay"]))))
    acc = _sym("sum")
    updates.append((acc, acc + g * g))
    updates.append((p, p - clr * g / (sp.sqrt(acc) + _num(opts["eps"]))))
    words += ["s <- s + g^2", "p <- p - lr g / (sqrt(s) + eps)"]
    return ("sum",)


@optimizer(
    "rmsprop",
    "RMSprop",
    {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
    },
)
def _rmsprop(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    alpha, eps = _num(opts["alpha"]), _num(opts["eps"])
    sq = _sym("square_avg")
    updates.append((sq, alpha * sq + (1 - alpha) * g * g))
    words.append(f"v <- {opts['alpha']} v + (1 - {opts['alpha']}) g^2")
    state = ["square_avg"]
    if opts["centered"]:
        ga = _sym("grad_avg")
        updates.append((ga, alpha * ga + (1 - alpha) * g))
        avg = sp.sqrt(sq - ga * ga) + eps
        state.append("grad_avg")
        words.append("m <- alpha m + (1 - alpha) g;  avg = sqrt(v - m^2) + eps")
    else:
        avg = sp.sqrt(sq) + eps
        words.append("avg = sqrt(v) + eps")
    if opts["momentum"]:
        buf = _sym("momentum_buffer")
        updates.append((buf, _num(opts["momentum"]) * buf + g / avg))
        updates.append((p, p - lr * buf))
        state.append("momentum_buffer")
        words += [f"b <- {opts['momentum']} b + g / avg", "p <- p - lr b"]
    else:
        updates.append((p, p - lr * g / avg))
        words.append("p <- p - lr g / avg")
    return tuple(state)


_ADAM_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}


@optimizer("adam", "Adam", {**_ADAM_DEFAULTS, "weight_decay": 0.0})
def _adam(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    beta1, beta2 = (_num(b) for b in opts["betas"])
    m, v = _sym("exp_avg"), _sym("exp_avg_sq")
    step_size, bc2_sqrt = _sym("step_size"), _sym("bias_correction2_sqrt")
    scalars.append((step_size, lr / (1 - beta1**t)))
    scalars.append((bc2_sqrt, sp.sqrt(1 - beta2**t)))
    updates.append((m, beta1 * m + (1 - beta1) * g))
    updates.append((v, beta2 * v + (1 - beta2) * g * g))
    b1, b2 = opts["betas"]
    words += [f"m <- {b1} m + (1 - {b1}) g", f"v <- {b2} v + (1 - {b2}) g^2"]
    state = ["exp_avg", "exp_avg_sq"]
    if opts["amsgrad"]:
        vmax = _sym("max_exp_avg_sq")
        updates.append((vmax, sp.Max(vmax, v)))
        words.append("v_max <- max(v_max, v)  (amsgrad)")
        state.append("max_exp_avg_sq")
        v = vmax
    updates.append((p, p - step_size * m / (sp.sqrt(v) / bc2_sqrt + _num(opts["eps"]))))
    which = "v_max" if opts["amsgrad"] else "v"
    words.append(f"p <- p - lr / (1 - {b1}^t) * m / (sqrt({which}) / sqrt(1 - {b2}^t) + eps)")
    return tuple(state)


optimizer("adamw", "AdamW", {**_ADAM_DEFAULTS, "weight_decay": 1e-2}, decoupled=True)(_adam)


_ADAMAX_DEFAULTS = {"lr": 2e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}


@optimizer("adamax", "Adamax", _ADAMAX_DEFAULTS)
def _adamax(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    beta1, beta2 = (_num(b) for b in opts["betas"])
    m, u = _sym("exp_avg"), _sym("exp_inf")
    clr = _sym("clr")
    scalars.append((clr, lr / (1 - beta1**t)))
    updates.append((m, beta1 * m + (1 - beta1) * g))
    updates.append((u, sp.Max(beta2 * u, sp.Abs(g) + _num(opts["eps"]))))
    updates.append((p, p - clr * m / u))
    b1, b2 = opts["betas"]
    words += [
        f"m <- {b1} m + (1 - {b1}) g",
        f"u <- max({b2} u, |g| + eps)",
        f"p <- p - lr / (1 - {b1}^t) * m / u",
    ]
    return ("exp_avg", "exp_inf")


@optimizer("adadelta", "Adadelta", {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0})
def _adadelta(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    rho, eps = _num(opts["rho"]), _num(opts["eps"])
    sq, acc = _sym("square_avg"), _sym("acc_delta")
    updates.append((sq, rho * sq + (1 - rho) * g * g))
    # g now holds the step delta, which the accumulator and the parameter both read
    updates.append((g, sp.sqrt(acc + eps) / sp.sqrt(sq + eps) * g))
    updates.append((acc, rho * acc + (1 - rho) * g * g))
    updates.append((p, p - lr * g))
    r = opts["rho"]
    words += [
        f"v <- {r} v + (1 - {r}) g^2",
        "delta = sqrt(u + eps) / sqrt(v + eps) * g",
        f"u <- {r} u + (1 - {r}) delta^2",
        "p <- p - lr delta",
    ]
    return ("square_avg", "acc_delta")


@optimizer("radam", "RAdam", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0})
def _radam(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    """torch.optim.RAdam: Adam's step rectified by the variance of its adaptive rate
    where that variance is tractable (rho_t > 5), plain momentum SGD before."""
    beta1, beta2 = (_num(b) for b in opts["betas"])
    m, v = _sym("exp_avg"), _sym("exp_avg_sq")
    rho_inf = 2 / (1 - beta2) - 1
    rho_t, rect = _sym("rho_t"), _sym("rect")
    adaptive, plain = _sym("adaptive_lr"), _sym("plain_lr")
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    scalars.append((rho_t, rho_inf - 2 * t * beta2**t / bc2))
    on = rho_t > 5
    tractable = (rho_t - 4) * (rho_t - 2) * rho_inf
    rectifier = sp.sqrt(tractable / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    scalars.append((rect, sp.Piecewise((rectifier, on), (0, True))))
    scalars.append((adaptive, sp.Piecewise((lr / bc1 * rect * sp.sqrt(bc2), on), (0, True))))
    scalars.append((plain, sp.Piecewise((0, on), (lr / bc1, True))))
    updates.append((m, beta1 * m + (1 - beta1) * g))
    updates.append((v, beta2 * v + (1 - beta2) * g * g))
    updates.append((p, p - m * (adaptive / (sp.sqrt(v) + _num(opts["eps"])) + plain)))
    b1, b2 = opts["betas"]
    words += [
        f"m <- {b1} m + (1 - {b1}) g",
        f"v <- {b2} v + (1 - {b2}) g^2",
        f"rho_t = rho_inf - 2 t {b2}^t / (1 - {b2}^t), rho_inf = 2 / (1 - {b2}) - 1",
        f"p <- p - lr / (1 - {b1}^t) * m * r_t sqrt(1 - {b2}^t) / (sqrt(v) + eps) if rho_t > 5",
        f"p <- p - lr / (1 - {b1}^t) * m otherwise",
        "   with r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))",
    ]
    return ("exp_avg", "exp_avg_sq")


_NADAM_DEFAULTS = {
    "lr": 2e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "momentum_decay": 4e-3,
}


@optimizer("nadam", "NAdam", _NADAM_DEFAULTS, carried={"mu_product": 1.0})
def _nadam(opts, lr, updates, scalars, words) -> tuple[str, ...]:
    """torch.optim.NAdam: Adam with Nesterov momentum, its momentum warming up by the
    schedule mu_t; the product of the mu's so far is carried from step to step."""
    beta1, beta2 = (_num(b) for b in opts["betas"])
    psi = _num(opts["momentum_decay"])
    m, v = _sym("exp_avg"), _sym("exp_avg_sq")
    # distinctive names: a model's own names may not be these (mu is a common one)
    mu, mu_next, product = _sym("nesterov_mu"), _sym("nesterov_mu_next"), _sym("mu_product")
    grad_step, avg_step = _sym("grad_step_size"), _sym("avg_step_size")
    bc2 = _sym("bias_correction2")
    scalars.append((bc2, 1 - beta2**t))
    scalars.append((mu, beta1 * (1 - sp.Rational(1, 2) * sp.Float(0.96) ** (t * psi))))
    scalars.append((mu_next, beta1 * (1 - sp.Rational(1, 2) * sp.Float(0.96) ** ((t + 1) * psi))))
    scalars.append((product, product * mu))
    scalars.append((grad_step, lr * (1 - mu) / (1 - product)))
    scalars.append((avg_step, lr * mu_next / (1 - product * mu_next)))
    updates.append((m, beta1 * m + (1 - beta1) * g))
    updates.append((v, beta2 * v + (1 - beta2) * g * g))
    denominator = sp.sqrt(v / bc2) + _num(opts["eps"])
    updates.append((p, p - grad_step * g / denominator - avg_step * m / denominator))
    b1, b2, d = opts["betas"][0], opts["betas"][1], opts["momentum_decay"]
    words += [
        f"mu_t = {b1} (1 - 0.96^(t {d}) / 2);  mu_prod <- mu_prod mu_t  (mu_prod = 1 at first)",
        f"m <- {b1} m + (1 - {b1}) g",
        f"v <- {b2} v + (1 - {b2}) g^2",
        f"p <- p - lr (1 - mu_t) / (1 - mu_prod) g / (sqrt(v / (1 - {b2}^t)) + eps)",
        "       - lr mu_(t+1) / (1 - mu_prod mu_(t+1)) m / (sqrt(v / (1 - b2^t)) + eps)",
    ]
    return ("exp_avg", "exp_avg_sq")


# optimizer -> option defaults, as torch.optim (what a spec's [train] may set)
DEFAULTS: dict[str, dict[str, object]] = {n: o.defaults for n, o in OPTIMIZERS.items()}


def reserved_names() -> tuple[set[str], set[str]]:
    """(per-step scalar names, state buffer names) of every optimizer with every option
    that adds one switched on: the names a generated module binds for its optimizer, so
    a model may not take them (the spec checks; the buffers also as prefixes, exp_avg_w1).
    """
    scalars, buffers = {"step", grad_norm.name}, set()
    for name, entry in OPTIMIZERS.items():
        richest = {k: True for k, v in entry.defaults.items() if isinstance(v, bool)}
        richest |= {k: 0.5 for k in ("momentum", "weight_decay") if k in entry.defaults}
        for options in ({}, richest, {"clip_grad_norm": 1.0}):
            rule = update_rule(name, options)
            scalars |= {s.name for s, _ in rule.step_scalars}
            buffers |= set(rule.state)
    return scalars, buffers


def update_rule(name: str, options: dict[str, object]) -> UpdateRule:
    """Resolve ``options`` against torch.optim's defaults and build the rule."""
    entry = OPTIMIZERS[name]
    opts = {**entry.defaults, **options}
    lr = _sym("lr")  # the learning rate stays a runtime argument of train()
    wd = opts["weight_decay"]
    updates: list[tuple[sp.Symbol, sp.Expr]] = []
    scalars: list[tuple[sp.Symbol, sp.Expr]] = []
    words: list[str] = []
    if "clip_grad_value" in opts:
        c = _num(opts["clip_grad_value"])
        updates.append((g, sp.Min(sp.Max(g, -c), c)))
        bound = opts["clip_grad_value"]
        words.append(f"g <- clamp(g, -{bound}, {bound})  (clip_grad_value_)")
    if "clip_grad_norm" in opts:
        coef = _sym("clip_coef")
        # torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped at 1
        bound = opts["clip_grad_norm"]
        scalars.append((coef, sp.Min(_num(bound) / (grad_norm + _num(1e-6)), 1)))
        updates.append((g, coef * g))
        words.append(f"g <- g min(1, {bound} / (||g|| + 1e-6))  (clip_grad_norm_, all of g)")
    if opts["maximize"]:
        updates.append((g, -g))
        words.append("g <- -g  (maximize)")
    if wd and entry.decoupled:
        updates.append((p, p * (1 - lr * _num(wd))))
        words.append(f"p <- p (1 - lr {wd})  (decoupled weight decay)")
    elif wd:
        updates.append((g, g + _num(wd) * p))
        words.append(f"g <- g + {wd} p  (weight decay)")
    state = entry.build(opts, lr, updates, scalars, words)
    init = tuple(float(opts["initial_accumulator_value"]) if b == "sum" else 0.0 for b in state)
    return UpdateRule(
        name, opts, tuple(state), tuple(scalars), tuple(updates), tuple(words), init, entry.carried
    )


def memory_lean(rule: UpdateRule) -> UpdateRule:
    """The same update with fewer passes over memory, for targets where each array
    operation is one pass (the NumPy in-place step); equal to ``rule`` up to rounding.

    Adam keeps its moments scaled, m' = m / (1 - beta1) and v' = v / (1 - beta2), so that
    they update as m' <- beta1 m' + g and v' <- beta2 v' + g^2 (three passes fewer), and
    the factors move into two per-step scalars: with k = sqrt(1 - beta2) / sqrt(1 - beta2^t),
        p <- p - (lr (1 - beta1) / (1 - beta1^t) / k) m' / (sqrt(v') + eps / k).
    Other rules are already one pass per term and come back unchanged.
    """
    if rule.name not in ("adam", "adamw"):
        return rule
    beta1, beta2 = (_num(b) for b in rule.options["betas"])
    m, v, vmax = _sym("exp_avg"), _sym("exp_avg_sq"), _sym("max_exp_avg_sq")
    lr, k = _sym("lr"), _sym("k")
    step_size, eps = _sym("step_size"), _sym("eps_k")
    adams = {_sym("step_size"), _sym("bias_correction2_sqrt")}
    scalars = (
        *((s, e) for s, e in rule.step_scalars if s not in adams),  # clipping's, if any
        (k, sp.sqrt(1 - beta2) / sp.sqrt(1 - beta2**t)),
        (step_size, lr * (1 - beta1) / (1 - beta1**t) / k),
        (eps, _num(rule.options["eps"]) / k),
    )
    first = [target for target, _ in rule.updates].index(m)
    decay = rule.updates[:first]  # maximize and weight decay, if any, stay first
    amsgrad = [(vmax, sp.Max(vmax, v))] if rule.options["amsgrad"] else []
    denominator = vmax if amsgrad else v
    updates = (
        *decay,
        (m, beta1 * m + g),
        (v, beta2 * v + g * g),
        *amsgrad,
        (p, p - step_size * m / (sp.sqrt(denominator) + eps)),
    )
    b1, b2 = rule.options["betas"]
    which = "v_max'" if amsgrad else "v'"
    words = (
        *rule.formulas[: len(decay)],
        f"m' <- {b1} m' + g  (m' = m / (1 - {b1}))",
        f"v' <- {b2} v' + g^2  (v' = v / (1 - {b2}))",
        *(["v_max' <- max(v_max', v')  (amsgrad)"] if amsgrad else []),
        f"p <- p - lr (1 - {b1}) / (1 - {b1}^t) / k * m' / (sqrt({which}) + eps / k)",
        f"   with k = sqrt(1 - {b2}) / sqrt(1 - {b2}^t)",
    )
    return replace(rule, step_scalars=scalars, updates=updates, formulas=words)


def first_step(rule: UpdateRule) -> UpdateRule:
    """The rule on a run's first step, where every state buffer still holds its initial
    value: a read of a buffer before the step writes it becomes that value (Adam's
    m' <- beta1 m' + g becomes m' <- g), so that a target need not fill the buffers
    before training, nor read them on that step. Equal to ``rule`` at that step bit for
    bit: beta1 * 0 + g is g exactly, in any floating-point type."""
    fresh: dict[sp.Expr, sp.Expr] = {
        _sym(b): _num(rule.initial(b)) if rule.initial(b) else sp.Integer(0) for b in rule.state
    }
    updates = []
    for target, expr in rule.updates:
        updates.append((target, expr.xreplace(fresh)))
        fresh.pop(target, None)
    if fresh:  # a buffer the rule never writes would be read unset on the next step
        raise ValueError(f"{rule.name}: state {sorted(s.name for s in fresh)} is never written")
    return replace(rule, updates=tuple(updates))


def last_step(rule: UpdateRule) -> UpdateRule:
    """The rule on a step after which its state is never read (the last step of a
    training run that hands back only the parameters): a buffer whose new value is a
    copy of another array (Adam's m' <- g on the first step) is not written, and the
    expressions after it read that array instead, one pass over memory fewer. Other
    buffers are still written: each is the one array that value needs anyway."""
    updates = list(rule.updates)
    for index, (target, value) in reversed(list(enumerate(updates))):
        later = updates[index + 1 :]
        if target.name not in rule.state or not value.is_Symbol:
            continue
        if any(t in (target, value) for t, _ in later):
            continue  # the buffer or the array it copies is written again after
        updates[index + 1 :] = [(t, e.xreplace({target: value})) for t, e in later]
        del updates[index]
    return replace(rule, updates=tuple(updates))
