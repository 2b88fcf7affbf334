"""Golden error messages: broken specs, each with the exact location the error must point
at and the phrases a person needs to fix it."""
import pytest

from cnnc.dsl import load_text
from cnnc.errors import CnncError, SpecSyntaxError

H = "network T\ninput image: [3, 32, 32]\n"   # lines 1-2 of most cases

CASES = [
    # (id, text, line, column, phrases)
    ("missing-rparen", H + "layers {\n  conv(32, kernel=3 relu\n}\n", 4, 21,
     ["missing `)`", "`(` at line 4 column 7 is still open"]),
    ("missing-rbrace-eof", H + "layers {\n  relu\n", 4, 3,
     ["missing `}`", "`{` at line 3 column 8"]),
    ("missing-rbrace-before-item", H + "block b() {\n  relu\nlayers { b() }\n", 5, 1,
     ["missing `}` before `layers`", "`{` at line 3 column 11 is still open"]),
    ("equals-for-colon", "network T\ninput image = [3, 32, 32]\nlayers { relu }\n", 2, 13,
     ["expected `:` here, not `=`"]),
    ("colon-for-equals", H + "layers { relu }\ntrain {\n  batch: 32\n}\n", 5, 8,
     ["expected `=` here, not `:`"]),
    ("colon-in-kwarg", H + "layers { conv(8, kernel: 3) }\n", 3, 24,
     ["expected `=` here, not `:`"]),
    ("trailing-comma-call", H + "layers { conv(8, kernel=3,) }\n", 3, 27,
     ["trailing comma before `)`"]),
    ("trailing-comma-list", "network T\ninput image: [3, 32, 32,]\nlayers { relu }\n", 2, 25,
     ["trailing comma before `]`"]),
    ("mismatched-bracket", H + "layers { conv(8, kernel=3] }\n", 3, 26,
     ["missing `)`", "closed by `]`"]),
    ("stray-closer", H + "layers { relu }\n}\n", 4, 1, ["`}` has no matching `{`"]),
    ("single-quotes", H + "layers { conv(8, kernel=3, padding='same') }\n", 3, 36,
     ["double quotes"]),
    ("bad-character", H + "layers { relu @ }\n", 3, 15, ["unexpected character `@`"]),
    ("reserved-word", H + "block if() { relu }\nlayers { relu }\n", 3, 7,
     ["`if` is a reserved word"]),
    ("unknown-layer", H + "layers {\n  cnov(8, kernel=3)\n}\n", 4, 3,
     ["unknown layer or block 'cnov'", "did you mean 'conv'"]),
    ("unknown-bare-layer", H + "layers {\n  conv(8, kernel=3) rleu\n}\n", 4, 21,
     ["unknown layer or block 'rleu'", "did you mean 'relu'"]),
    ("unknown-argument", H + "layers {\n  conv(8, kernl=3)\n}\n", 4, 11,
     ["unknown argument 'kernl'", "did you mean 'kernel'"]),
    ("missing-argument", H + "layers {\n  conv(8)\n}\n", 4, 3,
     ["missing required argument 'kernel'"]),
    ("ill-typed-argument", H + "layers {\n  conv(8, kernel=3, bias=1)\n}\n", 4, 21,
     ["argument 'bias' expects true or false", "got 1"]),
    ("unknown-name", H + "block b(width) { conv(widht, kernel=1) }\nlayers { b(4) }\n",
     3, 23, ["unknown name 'widht'", "did you mean 'width'"]),
    ("dense-needs-flat", H + "layers {\n  conv(8, kernel=3) relu\n  maxpool(2)\n  dense(10)\n}\n",
     6, 3, ["dense at line 6 expects a flat input", "[N, 8, 15, 15]",
            "maxpool at line 5", "add flatten"]),
    ("add-shape-mismatch", H + "layers {\n  a = conv(8, kernel=1)\n  b = image conv(4, kernel=1)\n"
     "  add(a, b)\n}\n", 6, 3, ["add at line 6"]),
    ("self-instantiation", H + "block loop(c) { conv(c, kernel=1) loop(c) }\n"
     "layers { loop(4) }\n", 3, 35, ["block 'loop' instantiates itself (loop -> loop)"]),
    ("huge-repeat", H + "layers { repeat 99999999 { relu } }\n", 3, 17,
     ["repeat 99999999 is more than the 10000 layers"]),
    ("unknown-train-key", H + "layers { relu }\ntrain {\n  data = mnist(\"d\")\n"
     "  loss = mse\n  epoch = 3\n}\n", 7, 3,
     ["unknown train setting 'epoch'", "did you mean 'epochs'"]),
    ("wrong-train-type", H + "layers { relu }\ntrain {\n  data = mnist(\"d\")\n"
     "  loss = mse\n  batch = 3.5\n}\n", 7, 11, ["'batch' expects an int >= 1; got 3.5"]),
    ("unknown-optimizer", H + "layers { relu }\ntrain {\n  data = mnist(\"d\")\n"
     "  loss = mse\n  optimizer = adma(lr=1e-3)\n}\n", 7, 15,
     ["unknown optimizer 'adma'", "did you mean 'adam'"]),
    ("unknown-loss", H + "layers { relu }\ntrain {\n  data = mnist(\"d\")\n"
     "  loss = binary_crossentropyy\n}\n", 6, 10,
     ["'loss' expects one of", "did you mean 'binary_crossentropy'"]),
    ("unknown-augment", H + "layers { relu }\ntrain {\n  data = mnist(\"d\")\n  loss = mse\n"
     "  augment { rotaton = 10 }\n}\n", 7, 13,
     ["unknown augment setting 'rotaton'", "did you mean 'rotation'"]),
    ("missing-data-path", H + "layers { relu }\ntrain {\n  data = mnist()\n  loss = mse\n}\n",
     5, 10, ["mnist needs argument 'path'"]),
    ("zero-division", H + "layers { conv(8 // 0, kernel=1) }\n", 3, 17, ["division by zero"]),
    ("tensor-mid-chain", H + "layers {\n  a = relu\n  tanh a\n}\n", 5, 8,
     ["the tensor name 'a' can only start a chain"]),
    ("input-shape", "network T\ninput image: [3, 0, 32]\nlayers { relu }\n", 2, 14,
     ["input 'image' needs a shape of positive integers"]),
    ("number-too-long", H + "layers { conv(" + "9" * 30 + ", kernel=1) }\n", 3, 15,
     ["is too large"]),
]


@pytest.mark.parametrize("text,line,column,phrases",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_golden_error(text, line, column, phrases):
    with pytest.raises(CnncError) as info:
        load_text(text, file="broken.cnn")
    err = info.value
    assert err.span is not None, str(err)
    assert (err.span.file, err.span.line, err.span.column) == ("broken.cnn", line, column), \
        str(err)
    rendered = str(err)
    for phrase in phrases:
        assert phrase in rendered, rendered
    # the rendering: file:line:col, the source line, a caret under the column
    head, source, caret = rendered.split("\n")[:3]
    assert head.startswith(f"broken.cnn:{line}:{column}: ")
    assert source.strip() == text.split("\n")[line - 1].strip()
    assert caret.index("^") == 4 + column - 1


def test_syntax_errors_use_no_lark_terminal_names():
    texts = [H + "layers { conv(8, kernel=3 }", H + "layers { relu relu = }",
             H + "layers { repeat { relu } }", "network\n", H + "layers { [ }",
             H + "train { data = }", H + "layers { conv(8,, 3) }"]
    for text in texts:
        with pytest.raises(SpecSyntaxError) as info:
            load_text(text)
        message = info.value.message
        for lark_word in ("RPAR", "LPAR", "RBRACE", "_NL", "NAME", "$END", "Token("):
            assert lark_word not in message, message


@pytest.mark.parametrize("data,phrase", [
    (b"", "the spec is empty"),
    (b"  \n# only a comment\n", "the spec is empty"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
    (b"network \xff\xfe", "not UTF-8 text"),
    (b"#" * 10_000_001, "too large"),
], ids=["empty", "comment-only", "binary", "not-utf8", "10MB"])
def test_input_that_is_not_a_spec(tmp_path, data, phrase):
    from cnnc.dsl import load_file
    path = tmp_path / "x.cnn"
    path.write_bytes(data)
    with pytest.raises(CnncError, match=phrase):
        load_file(path)


@pytest.mark.parametrize("text", [
    H + "layers { relu(" + "(" * 10_000 + "1" + ")" * 10_000 + ") }",
    H + "layers { " + "{" * 10_000 + "}" * 10_000 + " }",
    H + "layers { dropout(" + "1 - " * 10_000 + "0) }",
    H + "layers { dropout(" + "-" * 10_000 + "1) }",
    H + "layers { dropout(" + "not " * 10_000 + "true) }",
])
def test_deep_nesting_is_refused_cleanly(text):
    with pytest.raises(CnncError, match="nest"):
        load_text(text)
