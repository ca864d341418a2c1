"""TOML structure and values at random: any value of any type in any field of an
expression spec or a layer stack (numbers out of range, nan, huge integers, lists,
tables, strings with control characters) is either accepted or one SpecError line;
never a traceback of another kind."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from symbp.errors import SpecError
from symbp.spec import parse_spec

EXPRESSION = {
    "name": "q",
    "description": "d",
    "model": {
        "inputs": ["x"],
        "targets": ["y"],
        "output": "w1*x^2 + w2*x + b",
        "loss": "mse",
        "let": {"h": "w1*x"},
    },
    "params": {"w1": 1.0},
    "train": {"optimizer": "adam", "lr": 0.1, "epochs": 3, "batch_size": 2, "betas": [0.9, 0.99]},
    "data": {"x": [1.0, 2.0], "y": [3.0, 4.0]},
    "predict": {"x": [5.0]},
}
LAYERS = {
    "name": "m",
    "model": {
        "input": 2,
        "layers": [{"dense": 3, "activation": "leaky_relu", "negative_slope": 0.1}, {"dense": 1}],
        "loss": "bce_with_logits",
    },
    "train": {"optimizer": "sgd", "momentum": 0.5},
    "data": {"X": [[1.0, 2.0]], "Y": [[1.0]]},
}


def toml_value(value) -> str:
    """A TOML literal for a Python value (strings escaped, floats with nan and inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return (
            '"'
            + "".join(
                f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 32 or ord(c) == 127 else c
                for c in value
            )
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_key(key: str) -> str:
    return toml_value(key)


def toml_document(doc: dict) -> str:
    return "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items()) + "\n"


SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["x", "w1*x", "relu", "mse", "cross_entropy", "adam", "z", "yhat"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(doc, prefix=()):
    """Every place in a document that holds a value: (path, value)."""
    for key, value in doc.items() if isinstance(doc, dict) else enumerate(doc):
        yield (*prefix, key)
        if isinstance(value, (dict, list)):
            yield from paths(value, (*prefix, key))


def replaced(doc, path, value):
    if not path:
        return value
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = replaced(doc[path[0]], path[1:], value)
    return copy


@settings(max_examples=300)
@given(st.sampled_from([EXPRESSION, LAYERS]), st.data(), VALUES)
def test_any_value_in_any_field_is_accepted_or_one_line(base, data, value):
    path = data.draw(st.sampled_from(list(paths(base))))
    text = toml_document(replaced(base, path, value))
    tomllib.loads(text)  # the document itself is valid TOML
    try:
        parse_spec(text, "fuzz.toml")
    except SpecError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.toml: ")


@settings(max_examples=200)
@given(st.sampled_from([EXPRESSION, LAYERS]), st.text(min_size=1, max_size=10), VALUES)
def test_any_extra_key_is_refused_or_accepted_in_one_line(base, key, value):
    text = toml_document({**base, key: value}) if key not in base else toml_document(base)
    try:
        parse_spec(text, "fuzz.toml")
    except SpecError as err:
        assert "\n" not in str(err)
