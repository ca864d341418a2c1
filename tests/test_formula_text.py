"""The parser's screen and the meaning of ``^``: a formula is one line of printable
ASCII without comments, and ``^`` is exactly ``**`` (power: right-associative, tighter
than unary minus), checked against ``**`` on random formulas."""

from __future__ import annotations

import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from symbp.errors import SpecError
from symbp.spec.formula import parse_expression


def parse(text: str) -> sp.Expr:
    return parse_expression(text, {}, source="s.toml", field="model.output", allow_new_names=True)[
        0
    ]


x, w, b, c = sp.symbols("x w b c", real=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("w*x^2 + b*x + c", w * x**2 + b * x + c),
        ("x^2 + w", x**2 + w),
        ("-x^2*w", -(x**2) * w),
        ("2^3^2", sp.Integer(512)),  # right-associative: 2^(3^2)
        ("x^-2", x**-2),
        ("(x + w)^2/b", (x + w) ** 2 / b),
    ],
)
def test_caret_is_power(text, expected):
    assert sp.simplify(parse(text) - expected) == 0


def test_caret_errors_name_the_users_column():
    with pytest.raises(SpecError, match="unknown function 'foo' at column 13"):
        parse_expression("x^2 + w^3 + foo(x)", {}, source="s", field="f", allow_new_names=True)


ATOMS = st.sampled_from(["x", "w", "b", "2", "3", "0.5", "(x + w)", "sin(x)"])


@st.composite
def power_formulas(draw, depth=3):
    """A formula written with '**', built from + - * / unary minus and powers."""
    if depth == 0 or draw(st.booleans()):
        return draw(ATOMS)
    left = draw(power_formulas(depth=depth - 1))
    right = draw(power_formulas(depth=depth - 1))
    form = draw(st.sampled_from(["{} + {}", "{} - {}", "{}*{}", "{}/{}", "{}**{}", "-{}", "({})"]))
    return form.format(left, right) if form.count("{}") == 2 else form.format(left)


@given(power_formulas())
def test_caret_parses_as_double_star(text):
    try:
        expected = parse(text)
    except SpecError:
        return  # a constant overflow or a division by zero: the same either way
    assert parse(text.replace("**", "^")) == expected


@pytest.mark.parametrize(
    "text, problem",
    [
        ("z\n# define main symbp_unused(int, char**)", "a formula is one line: line break"),
        ('z\n#include "/etc/passwd"', "line break at column 2"),
        ("z # comment", "'#' (a comment) is not allowed in a formula at column 3"),
        ("z\r+1", "line break"),
        ("z\x00", "control character U+0000 at column 2"),
        ("z + \x1b[31m1", "control character U+001B"),
        ("z\u202e", "non-ASCII character U+202E"),
        ("\uff57*x", "non-ASCII character U+FF57 at column 1"),
        ("z\u2028+1", "non-ASCII character U+2028"),
    ],
)
def test_formula_text_is_screened(text, problem):
    with pytest.raises(SpecError, match="s.toml: model.output: ") as err:
        parse(text)
    assert problem in str(err.value)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


@given(
    st.text(min_size=1, max_size=12).filter(
        lambda t: any(
            not ch.isascii() or not ch.isprintable() or ch == "#" for ch in t.replace("\t", "")
        )
    )
)
def test_no_control_comment_or_non_ascii_character_passes(text):
    with pytest.raises(SpecError):
        parse("x + " + text)


@pytest.mark.parametrize(
    "name, other, typo",
    [
        ("xx", "x", True),
        ("X1", "x1", True),
        ("hiden", "hidden", True),
        ("hidden", "hiddne", True),
        ("weigth", "weight", True),
        ("wieght", "weight", True),
        ("b", "x", False),  # short names are different names
        ("w2", "w1", False),
        ("x3", "x1", False),
        ("layer2", "layer1", False),  # a numbered family
        ("bias", "beta", False),
        ("alpha", "alpha2", False),
        ("a100", "h100", False),  # letter families of numbered units
        ("unit12", "unix12", True),
    ],
)
def test_what_counts_as_a_typo(name, other, typo):
    from symbp.spec.expression import looks_like_typo

    assert looks_like_typo(name, other) is typo
    assert looks_like_typo(other, name) is typo


def test_a_typo_declared_in_params_is_a_parameter():
    from symbp.spec import parse_spec

    text = """name = "q"
[model]
inputs = ["x"]
targets = ["y"]
output = "w*x + xx"
loss = "mse"
[params]
xx = 0.5
"""
    assert parse_spec(text, "q.toml").params == ["w", "xx"]
