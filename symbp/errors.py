"""One kind of error for bad input: it renders as a single line ``file: field: problem``."""

from __future__ import annotations


class SpecError(Exception):
    """Bad user input. The CLI prints ``str(err)`` and exits with status 2."""

    def __init__(self, source: str, field: str, problem: str):
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")
