"""Readable, collision-free names for the values a derivation creates.

User names (inputs, parameters, let-names, yhat) are kept as they are. Temporaries
are named after what computes them (``tanh1``, ``exp1``, ``t1``), adjoints after the
value they belong to (``d_yhat`` is dl/dyhat), and shared subexpressions found by CSE
are ``c1, c2, ...``. Numbers are made consecutive once the program is final.
"""

from __future__ import annotations

import sympy as sp

from .statements import Loop, Program, flatten, substitute


class Names:
    def __init__(self, taken: set[str], cse_prefix: str = "c"):
        self.taken = set(taken)
        self.cse_prefix = cse_prefix
        self.temps: dict[sp.Symbol, str] = {}  # temporary -> prefix, for renumbering
        self.counters: dict[str, int] = {}
        # a loop's stack of a step's value (T, N, ...) -> that value, so that the stack
        # is named after it once the value has its final name
        self.stacks: dict[sp.Symbol, sp.Symbol] = {}

    def fresh(self, prefix: str) -> sp.Symbol:
        while True:
            self.counters[prefix] = self.counters.get(prefix, 0) + 1
            name = f"_{prefix}{self.counters[prefix]}"
            if name not in self.taken:
                self.taken.add(name)
                symbol = sp.Symbol(name, real=True)
                self.temps[symbol] = prefix
                return symbol

    def adjoint(self, tensor: str, *, per_sample: bool = False) -> sp.Symbol:
        name = f"d_{tensor}" + ("_n" if per_sample else "")
        if name in self.taken:  # only internal temporaries can collide
            name = "_" + name
        self.taken.add(name)
        return sp.Symbol(name, real=True)

    def pick(self, *candidates: str) -> str:
        """The first free name among ``candidates`` (reserved from now on)."""
        for name in candidates:
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise ValueError(f"no free name among {candidates}")

    def stack(self, value: sp.Symbol) -> sp.Symbol:
        """The stack of ``value`` at every step of a loop (renamed with it by
        :func:`finalize`: ``tanh1_steps``)."""
        symbol = sp.Symbol(self.pick(f"_{value.name}_steps"), real=True)
        self.stacks[symbol] = value
        return symbol

    def cse_symbol(self) -> sp.Symbol:
        """A shared subexpression: c1, c2, ... (``cse_prefix``)."""
        return self.fresh(self.cse_prefix)


def finalize(program: Program, names: Names) -> Program:
    """Rename temporaries to consecutive, underscore-free names in program order (a
    loop's body after the loop); a loop's stack of a step's value is named after it
    (``tanh1_steps``)."""
    counters: dict[str, int] = {}
    mapping: dict[sp.Symbol, sp.Symbol] = {}
    kinds: dict[sp.Symbol, str] = {}  # becomes program.temporaries
    final_taken = {n for n in names.taken if not n.startswith("_")}
    statements = flatten(program.statements)
    targets = []  # what each statement defines; a loop: also what its steps load
    stacks = []  # a recurrence's stacks of a step's value (T, N, ...), named _v_steps
    for stmt in statements:
        if isinstance(stmt, Loop):
            targets += [inner for _, inner, _ in stmt.loads]
            stacks += [stack for stack, _, _ in [*stmt.stores, *stmt.loads]]
        if stmt.target in names.stacks:  # a stack computed before a loop, for every step
            targets.append(names.stacks[stmt.target])
            stacks.append(stmt.target)
        targets.append(stmt.target)
    for target in dict.fromkeys(targets):
        prefix = names.temps.get(target)
        if prefix is None:
            continue
        while True:
            counters[prefix] = counters.get(prefix, 0) + 1
            candidate = f"{prefix}{counters[prefix]}"
            if candidate not in final_taken:
                break
        final_taken.add(candidate)
        mapping[target] = sp.Symbol(candidate, real=True)
        kinds[mapping[target]] = "shared" if prefix == names.cse_prefix else prefix
    # adjoints of temporaries follow their value's new name (d__t3 -> d_t1); those of
    # values that were inlined away are g1, g2, ...
    for stmt in statements:
        value, each = program.adjoint_of.get(stmt.target, (None, False))
        if value in names.temps:
            new = f"d_{mapping[value].name}{'_n' if each else ''}" if value in mapping else ""
            orphan = False
            while not new or new in final_taken:
                counters["g"] = counters.get("g", 0) + 1
                new, orphan = f"g{counters['g']}", True
            final_taken.add(new)
            mapping[stmt.target] = sp.Symbol(new, real=True)
            if orphan:
                kinds[mapping[stmt.target]] = "adjoint"
    for stack in dict.fromkeys(stacks):  # named after the value: tanh1_steps
        if stack in mapping or stack not in names.stacks:
            continue
        inner = names.stacks[stack]
        base = f"{mapping.get(inner, inner).name.lstrip('_')}_steps"
        new, k = base, 1
        while new in final_taken:
            k += 1
            new = f"{base}{k}"
        final_taken.add(new)
        mapping[stack] = sp.Symbol(new, real=True)
    program.temporaries = kinds
    if not mapping:
        return program
    program.statements = [substitute(s, mapping) for s in program.statements]
    program.grads = {p: mapping.get(g, g) for p, g in program.grads.items()}
    program.masked = {mapping.get(m, m): mapping.get(g, g) for m, g in program.masked.items()}
    # an adjoint whose value was inlined away (now g1, g2, ...) belongs to no value left
    program.adjoint_of = {
        mapping.get(s, s): (mapping.get(value, value), each)
        for s, (value, each) in program.adjoint_of.items()
        if value in mapping or value not in names.temps
    }
    return program
