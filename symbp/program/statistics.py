"""Batch statistics and their running averages: what eval mode reads in their place.

Batch normalization in training mode standardizes with the batch's own mean and
variance (``batch_mean``, ``batch_var``). A trained model is used on one sample, or on a
batch whose statistics are not the training data's, so torch keeps for each statistic a
running average, updated after every training step, and reads it in eval mode. Here the
same holds for every ``batch_mean`` of a model: its running value starts at 0 (1 for a
variance), and after a step of a batch of N samples becomes

    running <- (1 - momentum) running + momentum statistic

with the variance made unbiased first (times N / (N - 1)), as torch's
``running_var``; momentum is torch's default, 0.1. The eval-mode program is the forward
program with each statistic's statement replaced by its running value, then pruned:
what only the statistics read is not computed. Nothing here knows a target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy as sp

from .statements import Assign, Program, Statement

MOMENTUM = 0.1  # torch.nn.BatchNorm1d's default


@dataclass(frozen=True)
class RunningStatistic:
    value: sp.Symbol  # the batch statistic, as the program names it (mu)
    buffer: sp.Symbol  # its running average (running_mu)
    shape: tuple
    variance: bool  # a biased batch variance: its running value is the unbiased one

    @property
    def init(self) -> float:
        """Where the running average starts: torch's running_mean 0, running_var 1."""
        return 1.0 if self.variance else 0.0


def running_statistics(program: Program, graph, values: dict[str, sp.Symbol], taken: set[str]):
    """The model's batch statistics that eval mode reads, in program order, each with
    its buffer's name: ``running_<name>`` for a named value, ``running_mean1``,
    ``running_var1``, ... for one written inside a formula (a name already taken gets a
    trailing ``_``). A statistic only other statistics read (the mean inside
    ``batch_var(v)``) needs none: eval mode reads the variance's running value."""
    found = {}
    for name, tensor in graph.tensors.items():
        if tensor.statistic and values.get(name) is not None:
            found.setdefault(values[name], tensor)
    placeholders = [
        RunningStatistic(value, sp.Dummy(value.name), t.shape, t.statistic == "variance")
        for value, t in found.items()
    ]
    wanted = [*program.outputs, program.loss]
    read = set().union(*(stmt.reads for stmt in eval_statements(program, placeholders, wanted)))
    statistics, counts, taken = [], {False: 0, True: 0}, set(taken)
    for stat in placeholders:
        if stat.buffer not in read:
            continue
        tensor = found[stat.value]
        if tensor.named:
            buffer = f"running_{tensor.name}"
        else:
            counts[stat.variance] += 1
            buffer = f"running_{'var' if stat.variance else 'mean'}{counts[stat.variance]}"
        while buffer in taken:
            buffer += "_"
        taken.add(buffer)
        statistics.append(replace(stat, buffer=sp.Symbol(buffer, real=True)))
    return statistics


def eval_statements(program: Program, statistics, wanted) -> list[Statement]:
    """The statements that ``wanted`` needs in eval mode: each statistic is its running
    average (``mu = running_mu``), and what only the statistics read is dropped."""
    buffers = {s.value: s for s in statistics}
    statements = [
        Assign(stmt.target, buffers[stmt.target].buffer, stmt.shape, "forward")
        if stmt.target in buffers
        else stmt
        for stmt in program.statements
    ]
    return replace(program, statements=statements).needed_for(wanted)
