"""Random and mutated specs: loading them may fail, but only ever with a CnncError."""
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnc.dsl import load_text
from cnnc.errors import CnncError

SPECS = Path(__file__).resolve().parents[2] / "specs"
SOURCES = sorted(p.read_text() for p in SPECS.glob("*.cnn"))

# Pieces of the language, so random text often gets past the lexer.
TOKENS = ["network", "input", "layers", "block", "train", "repeat", "if", "else", "param",
          "include", "in", "conv", "dense", "relu", "add", "concat", "flatten", "maxpool",
          "channels", "choice", "range", "x", "a", "(", ")", "{", "}", "[", "]", ",", "=",
          ":", "==", "!=", "<", "+", "-", "*", "//", "/", "%", "and", "or", "not", "true",
          "false", "0", "1", "3", "64", "1e-3", '"s.cnn"', "\n", " ", "#", "'", "@", "\t"]

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def load_or_fail_cleanly(text: str) -> None:
    try:
        load_text(text, file="fuzz.cnn", base_dir=SPECS)
    except CnncError as err:
        str(err)  # rendering the message must not fail either


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_random_token_soup(text):
    load_or_fail_cleanly(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text):
    load_or_fail_cleanly(text)


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "swap"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            k = draw(st.integers(0, len(text)))
            a, b = sorted((i, k))
            text = text[:a] + text[b:j] + text[a:b] + text[max(b, j):] if j > b else text
    return text


@FUZZ
@given(mutated_spec())
def test_mutated_specs(text):
    load_or_fail_cleanly(text)
