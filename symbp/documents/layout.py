"""The last pass over a rendered document, shared by both kinds of derivation document:
blank lines left over by template conditions collapse, and Markdown prose is wrapped.

Templates write prose as flowing sentences, and a description or a long list item can
make a Markdown line of several hundred characters: hard to read in a terminal or a diff.
Prose lines and list items are wrapped at WIDTH columns at spaces (Markdown joins the
lines again) when longer than LONG; display math, code blocks, tables and headings are
left as they are.
"""

from __future__ import annotations

import re
import textwrap

WIDTH = 88
LONG = 100  # the templates' own lines run to about 95 columns: only longer ones wrap


def finish(text: str, fmt: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text)
    return wrap_markdown(text) if fmt == "markdown" else text


def wrap_markdown(text: str, width: int = WIDTH) -> str:
    out: list[str] = []
    fence = None  # "$$" or "```" while inside a display block
    for line in text.split("\n"):
        stripped = line.strip()
        if fence is not None:
            out.append(line)
            if stripped.startswith(fence):
                fence = None
            continue
        if stripped.startswith(("$$", "```")):
            marker = stripped[:2] if stripped.startswith("$$") else "```"
            # a block opens here unless it also closes on this line ($$ x $$)
            if not (marker == "$$" and len(stripped) > 2 and stripped.endswith("$$")):
                fence = marker
            out.append(line)
            continue
        if len(line) <= LONG or stripped.startswith(("|", "#", ">")) or line.startswith("    "):
            out.append(line)
            continue
        item = re.match(r"(\s*(?:[-*+]|\d+\.)\s+)", line)
        indent = " " * len(item.group(1)) if item else re.match(r"\s*", line).group(0)
        out.extend(
            textwrap.wrap(
                line,
                width,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)
