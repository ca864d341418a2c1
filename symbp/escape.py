"""One escaper per output language and position, for the free text a user writes.

A spec's description and its file name are the only free text that reaches generated
files (formulas are screened by the parser and reach them printed from SymPy, names are
identifiers). Every template writes such text through one of these, registered as Jinja
filters by :func:`symbp.templating.environment`:

========== ======================================================================
filter     position
========== ======================================================================
``pydoc``  inside a Python ``\"\"\"`` docstring (line breaks kept, for descriptions)
``pyline`` inside a Python docstring or ``#`` comment, on one line
``ccomment`` after ``//`` in C, C++ and CUDA, on one line
``tex``    LaTeX running text (and ``%`` comments), on one line
``md``     literal text in a Markdown line or table cell
``mddoc``  a description in Markdown (the user's Markdown kept, HTML made text)
``mdcode`` inside a Markdown code span
``text``   plain text printed to a terminal (line breaks kept)
========== ======================================================================

Each keeps the text readable (a Windows path stays a Windows path) and makes it inert:
it can end neither its comment, docstring or line nor start a directive, and control
characters (a NUL, ANSI escapes, a right-to-left override) become visible escapes.
"""

from __future__ import annotations

import re
import unicodedata


def _is_control(ch: str) -> bool:
    """Control, format, surrogate and unassigned characters, and line separators."""
    return unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")


def _visible(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _inert(text: object, *, keep_newlines: bool, newline: str | None = None) -> str:
    """Control characters as visible escapes; a line break kept (``keep_newlines``),
    written as ``newline``, or else escaped; a tab as a space."""
    out = []
    for ch in str(text).replace("\r\n", "\n"):
        if ch == "\n" and (keep_newlines or newline is not None):
            out.append("\n" if keep_newlines else newline)
        elif ch == "\t":
            out.append(" ")
        elif _is_control(ch):  # line breaks not kept above are control characters too
            out.append(_visible(ch))
        else:
            out.append(ch)
    return "".join(out)


def text(value: object) -> str:
    """Plain text for a terminal or a .txt document: no escape sequences reach it."""
    return _inert(value, keep_newlines=True)


def terminal_line(value: object) -> str:
    """One line for a terminal (an error message): line breaks and escapes made visible."""
    return _inert(value, keep_newlines=False)


def pydoc(value: object) -> str:
    """Text inside a (non-raw) triple-quoted Python docstring, line breaks kept.

    Backslashes are doubled (``C:\\Users`` would be a syntax error, ``\\N`` too) and
    quotes escaped, so that the docstring shows exactly the text and never ends early.
    """
    escaped = _inert(value, keep_newlines=True).replace("\\", "\\\\").replace('"', '\\"')
    return "\n".join(line.rstrip() for line in escaped.split("\n"))


def pyline(value: object) -> str:
    """Text on one line of a Python docstring or ``#`` comment."""
    return pydoc(terminal_line(value))


def ccomment(value: object) -> str:
    """Text after ``//`` on one line of C, C++ or CUDA.

    A line break would end the comment, and so would a backslash at the end of the line
    (the preprocessor splices the next line in) or a ``??/`` trigraph: the first becomes
    a visible escape, the others are broken up.
    """
    line = _inert(value, keep_newlines=False).replace("??", "?\\?").rstrip()
    if line.endswith("\\"):
        line = line[:-1] + "\\x5c"
    return line


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"$\$$",  # a text \$ needs the TS1 fonts
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": "$<$",  # OT1 text fonts have no < > |: take them from math
    ">": "$>$",
    "|": "$|$",
    "-": "-{}",  # no en or em dash ligature: --data stays two hyphens
}


def tex(value: object) -> str:
    """Plain text safe in LaTeX running text and after ``%``: specials escaped, one line
    (a line break would end a ``%`` comment and start live LaTeX)."""
    line = _inert(value, keep_newlines=False, newline=" ")  # TeX reads a line break as a space
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in line)


def tex_name(value: object) -> str:
    """An identifier inside math, as in ``\\operatorname{unpool\\_max}``: an unescaped
    ``_`` there is a subscript, and breaks pdflatex and pandoc."""
    return "".join(_TEX_SPECIALS.get(ch, ch) if ch in "_&%#" else ch for ch in str(value))


_MD_INLINE = re.compile(r"([\\`*_\[\]<>|])")


def md(value: object) -> str:
    """Literal text in a Markdown line or table cell (an activation's formula): no
    emphasis, link, HTML or cell break that the text did not mean; one line."""
    line = _inert(value, keep_newlines=False).replace("&", "&amp;")
    return _MD_INLINE.sub(r"\\\1", line)


def mddoc(value: object) -> str:
    """A description in a Markdown document: the user's Markdown kept (code spans,
    emphasis), HTML made text so that a page shows it rather than runs it."""
    return _inert(value, keep_newlines=True).replace("&", "&amp;").replace("<", "&lt;")


def mdcode(value: object) -> str:
    """Text inside a Markdown code span: a span cannot hold a backtick, so any becomes '."""
    return _inert(value, keep_newlines=False).replace("`", "'")


def count(value: object) -> str:
    """An integer with its thousands separated (28,901,376): plain text and table cells
    only, not math, where TeX would space the comma as punctuation."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


FILTERS = {
    "count": count,
    "text": text,
    "pydoc": pydoc,
    "pyline": pyline,
    "ccomment": ccomment,
    "tex": tex,
    "md": md,
    "mddoc": mddoc,
    "mdcode": mdcode,
}
