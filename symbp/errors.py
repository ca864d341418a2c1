"""One kind of error for bad input: it renders as a single line ``file: field: problem``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .escape import terminal_line


class SpecError(Exception):
    """Bad user input. The CLI prints ``str(err)`` and exits with status 2."""

    def __init__(self, source: str, field: str, problem: str):
        self.source = source
        self.field = field
        self.problem = problem
        # one line, whatever the file name or a quoted value holds (no escape sequences)
        line = f"{source}: {field}: {problem}" if field else f"{source}: {problem}"
        super().__init__(terminal_line(line))


def way_out(word: object, choices: Iterable[str], *, list_them: bool = True) -> str:
    """The way out of an unknown name, to append to a problem: a did-you-mean for a
    close match (``kernel_size`` -> ``kernel``, ``rlu`` -> ``relu``) and the valid
    choices, as " (did you mean 'relu'? known: identity, relu, ...)"."""
    options = list(choices)
    parts = []
    if isinstance(word, str):
        lowered = {option.lower(): option for option in options}
        close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        if close:
            parts.append(f"did you mean '{lowered[close[0]]}'?")
    if list_them and options:
        parts.append("known: " + ", ".join(options))
    return f" ({' '.join(parts)})" if parts else ""
