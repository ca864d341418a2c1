"""Free text (a description, a spec's file name) reaches every generated file only
through the escaper of that file's language and position, so it can neither run nor
break what it lands in: the Python outputs parse and show the text in their docstring,
the CUDA source equals a benign one once its comments are stripped (by the compiler's
own preprocessor), LaTeX has nothing live before \\documentclass and no command the
text spelled, Markdown no HTML, and terminal output no escape sequence."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from symbp import escape
from symbp.derive import derive
from symbp.documents import render_document
from symbp.errors import SpecError
from symbp.spec import parse_spec
from symbp.targets.c.target import render_c, render_c_loader
from symbp.targets.cuda.target import render_cuda, render_loader
from symbp.targets.numpy.module import render_module, render_tests

HOSTILE = [
    "Data from C:\\Users\\me\\data.csv",
    "Noise $\\xi$ and \\N and \\u and \\x",
    'a """ b',
    'quote at the end"',
    "a NUL \x00 here",
    "ends in a backslash\\",
    'two lines\n#include "/etc/passwd"',
    'z\n# define main symbp_unused(int, char**); static int x = std::system("touch pwned");',
    "\\input{passwd}\n\\documentclass{evil}",
    "<script>alert(1)</script> & <b>",
    "\x1b[31mred\x1b[0m \u202e reversed \u2028 separated \r carriage",
    "trigraph ??/\nsplice",
    "*/ /* */ // \\\n\\",
]

QUADRATIC = """name = "q"
description = {description}
[model]
inputs = ["x"]
targets = ["y"]
output = "w*x^2 + b"
loss = "mse"
"""

LAYERS = """name = "m"
description = {description}
[model]
input = 2
layers = [{{ dense = 3, activation = "tanh" }}, {{ dense = 1 }}]
loss = "mse"
"""


def toml_string(text: str) -> str:
    """A TOML basic string holding ``text`` exactly."""
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def derivation(template: str, description: str, source: str):
    return derive(parse_spec(template.format(description=toml_string(description)), source))


def python_outputs(d) -> list[str]:
    return [
        render_module(d),
        render_tests(d, "q"),
        render_loader(d, "q.cu"),
        render_c_loader(d, "q.c"),
    ]


@pytest.mark.parametrize("template", [QUADRATIC, LAYERS], ids=["expression", "layers"])
@pytest.mark.parametrize("text", HOSTILE)
def test_python_outputs_parse_and_show_the_text(template, text):
    d = derivation(template, text, source=f"{text}.toml")
    for source in python_outputs(d):
        tree = ast.parse(source)  # a SyntaxError or IndentationError fails here
        docstring = ast.get_docstring(tree, clean=False)
        assert docstring is not None
    module_doc = ast.get_docstring(ast.parse(render_module(d)), clean=False)
    # the description's words come back exactly (control characters as escapes)
    for word in escape.text(text).split():
        assert word in module_doc


def stripped_cuda(source: str, folder, language: tuple[str, ...] = ("c++", "-std=c++20")) -> str:
    """The CUDA (or C) source with its comments removed by g++'s own preprocessor
    (directives kept, nothing expanded): what the compiler sees of it."""
    path = folder / "m.cu"
    path.write_text(source, encoding="utf-8")
    result = subprocess.run(
        ["g++", "-x", *language, "-fpreprocessed", "-dD", "-E", "-P", "-w", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to strip comments")
@pytest.mark.parametrize("template", [QUADRATIC, LAYERS], ids=["expression", "layers"])
@pytest.mark.parametrize("text", HOSTILE)
def test_cuda_source_holds_the_text_only_in_comments(template, text, tmp_path):
    benign = render_cuda(derivation(template, "plain words", source="q.toml"))
    hostile = render_cuda(derivation(template, text, source=f"{text}.toml"))
    assert stripped_cuda(hostile, tmp_path) == stripped_cuda(benign, tmp_path)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to strip comments")
@pytest.mark.parametrize("template", [QUADRATIC, LAYERS], ids=["expression", "layers"])
@pytest.mark.parametrize("text", HOSTILE)
def test_c_source_holds_the_text_only_in_comments(template, text, tmp_path):
    benign = render_c(derivation(template, "plain words", source="q.toml"))
    hostile = render_c(derivation(template, text, source=f"{text}.toml"))
    c99 = ("c", "-std=c99")
    assert stripped_cuda(hostile, tmp_path, c99) == stripped_cuda(benign, tmp_path, c99)


@pytest.mark.parametrize("template", [QUADRATIC, LAYERS], ids=["expression", "layers"])
@pytest.mark.parametrize("text", HOSTILE)
def test_documents_keep_the_text_inert(template, text):
    d = derivation(template, text, source=f"{text}.toml")
    latex = render_document(d, "latex")
    preamble = latex[: latex.index("\\documentclass")]
    assert all(line.startswith("%") for line in preamble.splitlines())
    for command in ("\\input{", "\\documentclass{evil"):
        assert command not in latex
    markdown = re.sub(r"`[^`\n]*`", "", render_document(d, "markdown"))  # code spans are literal
    assert "<script" not in markdown and "<b>" not in markdown
    for fmt in ("text", "markdown", "latex"):
        rendered = render_document(d, fmt)
        assert "\x1b" not in rendered and "\x00" not in rendered and "\r" not in rendered
        assert "\u202e" not in rendered and "\u2028" not in rendered


@settings(max_examples=60)
@given(st.text(max_size=30))
def test_any_description_keeps_the_module_importable(text):
    d = derivation(QUADRATIC, text, source="q.toml")
    tree = ast.parse(render_module(d))
    assert ast.get_docstring(tree) is not None


@given(st.text(max_size=30))
def test_escapers_leave_one_line(text):
    for name in ("ccomment", "tex", "md", "mdcode", "pyline"):
        line = escape.FILTERS[name](text)
        assert "\n" not in line and "\r" not in line, name
        # no control, format or unassigned character and no line or paragraph separator
        # (other spaces, such as a no-break space, are text)
        assert not any(unicodedata.category(ch)[0] == "C" for ch in line), name
        assert not any(unicodedata.category(ch) in ("Zl", "Zp") for ch in line), name
    assert not escape.ccomment(text).endswith("\\")
    assert "??" not in escape.ccomment(text).replace("?\\?", "")


def test_error_lines_are_one_line_without_escape_sequences():
    err = SpecError("a\nb\x1b[31m.toml", "model.output", "bad")
    assert str(err) == "a\\x0ab\\x1b[31m.toml: model.output: bad"
