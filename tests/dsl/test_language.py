"""Each construct of the .cnn language: what it builds, and what it refuses."""
from pathlib import Path

import pytest

from cnnc.dsl import ast, load, load_file, load_text
from cnnc.dsl.parser import parse
from cnnc.errors import CnncError, SpecError, SpecSyntaxError

HEAD = "network T\ninput image: [3, 16, 16]\n"


def net(layers: str, head: str = HEAD, extra: str = "", **kw):
    return load_text(head + extra + "layers {\n" + layers + "\n}\n", file="t.cnn", **kw)


def ops(spec) -> list[str]:
    return [n.op for n in spec.graph.nodes]


def out_shape(spec) -> tuple:
    return spec.graph.outputs[0].type.shape


# ---- parsing: every node carries its location

def test_ast_nodes_carry_file_line_column():
    m = parse(HEAD + "layers {\n  conv(8, kernel=3) relu\n}\n", "x.cnn")
    layers = m.items[2]
    chain = layers.body.stmts[0]
    call, relu = chain.elements
    assert isinstance(call, ast.Call) and call.name == "conv"
    assert (call.span.file, call.span.line, call.span.column) == ("x.cnn", 4, 3)
    assert (relu.span.line, relu.span.column) == (4, 21)
    assert call.args[1].name == "kernel" and call.args[1].value.value == 3


def test_comments_blank_lines_and_crlf():
    text = "# top\r\nnetwork T  # name\r\n\r\ninput image: [3, 8, 8] # in\r\n" \
           "layers {  # open\r\n  # nothing\r\n  relu # act\r\n}\r\n"
    spec = load_text(text)
    assert spec.graph.name == "T" and ops(spec) == ["relu"]


def test_network_name_defaults_and_missing_sections():
    assert load_text("input x: [1, 4, 4]\nlayers { relu }").graph.name == "network"
    with pytest.raises(SpecError, match="no `layers"):
        load_text("network T\ninput x: [1, 4, 4]\n")
    with pytest.raises(SpecError, match="declares no input"):
        load_text("network T\nlayers { relu }\n")
    with pytest.raises(SpecError, match="`network` appears twice"):
        load_text("network T\nnetwork U\ninput x: [1, 4, 4]\nlayers { relu }")


# ---- chains

def test_chain_with_activation_shorthand_and_bare_names():
    spec = net("conv(8, kernel=3) relu maxpool(2)\nflatten\ndense(4) softmax")
    assert ops(spec) == ["conv", "relu", "maxpool", "flatten", "dense", "softmax"]
    assert out_shape(spec) == ("N", 4)


def test_arguments_span_lines_inside_parentheses():
    spec = net("conv(8,\n     kernel=3,\n     padding=1)")
    assert out_shape(spec) == ("N", 8, 16, 16)


def test_symbols_as_argument_values():
    assert out_shape(net("conv(8, kernel=3, padding=same, stride=2)")) == ("N", 8, 8, 8)
    assert out_shape(net('conv(8, kernel=3, padding="same")')) == ("N", 8, 16, 16)


def test_list_arguments_become_pairs():
    assert out_shape(net("conv(4, kernel=[3, 1])")) == ("N", 4, 14, 16)


# ---- named tensors, branches and joins

def test_named_tensors_branch_and_join():
    spec = net("a = conv(4, kernel=1)\nb = image conv(4, kernel=1)\nc = image conv(8, kernel=1)"
               "\nadd(a, b)\nconcat(a, b, c) relu")
    assert ops(spec) == ["conv", "conv", "conv", "add", "concat", "relu"]
    assert out_shape(spec) == ("N", 16, 16, 16)
    add = spec.graph.nodes[3]
    assert [v.name for v in add.data_inputs] == ["conv_1", "conv_2"]


def test_each_line_continues_from_the_previous_one():
    spec = net("x = conv(4, kernel=1)\nrelu")
    relu = spec.graph.nodes[1]
    assert relu.data_inputs[0].name == "conv_1"


def test_tensor_name_only_starts_a_chain():
    with pytest.raises(SpecError, match="can only start a chain"):
        net("a = relu\nrelu a")


def test_names_bound_in_braces_stay_inside():
    with pytest.raises(SpecError, match="unknown name 'inner'"):
        net("{ inner = relu }\nadd(inner, image)")


def test_two_inputs_need_an_explicit_start():
    head = "network T\ninput a: [3, 8, 8]\ninput b: [3, 8, 8]\n"
    spec = net("x = a relu\ny = b relu\nconcat(x, y)", head=head)
    assert out_shape(spec) == ("N", 6, 8, 8)
    with pytest.raises(SpecError, match="relu has no input"):
        net("relu", head=head)


# ---- blocks

BLOCKS = """
block unit(c, stride=1) {
    conv(c, kernel=3, stride=stride, padding=1) relu
}
block twice(c) { unit(c) unit(c * 2) }
"""


def test_block_with_defaults_and_keyword_arguments():
    spec = net("unit(8)\nunit(c=4, stride=2)", extra=BLOCKS)
    assert ops(spec) == ["conv", "relu", "conv", "relu"]
    assert out_shape(spec) == ("N", 4, 8, 8)


def test_blocks_call_blocks_and_do_arithmetic():
    spec = net("twice(3 + 2 * (4 - 1) // 3)", extra=BLOCKS)  # c = 5
    assert out_shape(spec) == ("N", 10, 16, 16)


def test_block_errors_name_the_argument():
    with pytest.raises(SpecError, match="block unit needs argument 'c'"):
        net("unit()", extra=BLOCKS)
    with pytest.raises(SpecError, match="has no argument 'strde' \\(did you mean 'stride'"):
        net("unit(4, strde=2)", extra=BLOCKS)
    with pytest.raises(SpecError, match="takes 2 arguments"):
        net("unit(4, 1, 1)", extra=BLOCKS)
    with pytest.raises(SpecError, match="is defined twice"):
        net("relu", extra=BLOCKS + BLOCKS)


def test_block_input_and_channels():
    extra = """
block proj(c) {
    skip = if channels(in) != c { in conv(c, kernel=1) } else { in }
    add(in conv(c, kernel=1), skip)
}
"""
    # a chain is not an argument: bind it to a name first
    with pytest.raises(SpecSyntaxError, match="missing `\\)` or `,` before `conv`"):
        net("proj(3)", extra=extra)
    extra = extra.replace("add(in conv(c, kernel=1), skip)", "main = in conv(c, kernel=1)\n"
                          "    add(main, skip)")
    assert ops(net("proj(3)", extra=extra)) == ["conv", "add"]
    assert ops(net("proj(8)", extra=extra)) == ["conv", "conv", "add"]


def test_block_takes_tensor_arguments():
    extra = "block join(other) { concat(in, other) }\n"
    spec = net("a = relu\nconv(5, kernel=1)\njoin(a)", extra=extra)
    assert out_shape(spec) == ("N", 8, 16, 16)


def test_block_that_instantiates_itself_is_refused():
    with pytest.raises(SpecError, match=r"instantiates itself \(a -> b -> a\)"):
        net("a()", extra="block a() { relu b() }\nblock b() { a() }\n")


# ---- conditionals and repeats

def test_if_else_if_else_and_comparisons():
    extra = """
block pick(n) {
    if n < 0 { tanh } else if n == 0 or n >= 10 { sigmoid } else if not (n % 2 == 0) { relu }
    else { identity }
}
"""
    got = [ops(net(f"pick({n})", extra=extra)) for n in (-1, 0, 10, 3, 4)]
    assert got == [["tanh"], ["sigmoid"], ["sigmoid"], ["relu"], ["identity"]]


def test_if_needs_a_boolean():
    with pytest.raises(SpecError, match="`if` needs true or false; got 3"):
        net("if 3 { relu }")


def test_repeat_unrolls_its_body():
    spec = net("repeat 3 { conv(4, kernel=3, padding=1) relu }\nrepeat 0 { tanh }")
    assert ops(spec) == ["conv", "relu"] * 3


def test_repeat_count_is_checked():
    with pytest.raises(SpecError, match="repeat needs a count >= 0; got -1"):
        net("repeat 0 - 1 { relu }")
    with pytest.raises(SpecError, match="more than the 10000 layers"):
        net("repeat 1000000000 { relu }")
    with pytest.raises(SpecError, match="more than 10000 layers"):
        net("repeat 200 { repeat 200 { relu } }")


def test_arithmetic_errors():
    with pytest.raises(SpecError, match="division by zero"):
        net("conv(4 // 0, kernel=1)")
    with pytest.raises(SpecError, match="too large a number"):
        net("conv(100000000 * 100000000 * 100000000, kernel=1)")
    with pytest.raises(SpecError, match="needs two numbers"):
        net('conv(4 + "a", kernel=1)')


# ---- trainable, names

def test_trainable_false_on_a_layer_and_a_block():
    spec = net("conv(4, kernel=3, trainable=false)\nunit(4, trainable=false)\nconv(4, kernel=1)",
               extra=BLOCKS)
    assert [n.trainable for n in spec.graph.nodes if n.op == "conv"] == [False, False, True]


def test_user_names_are_prefixed_inside_blocks():
    extra = 'block b() { conv(4, kernel=1, name="proj") }\n'
    spec = net('conv(4, kernel=1, name="stem")\nb()\nb()', extra=extra)
    assert [n.name for n in spec.graph.nodes] == ["stem", "b_1/proj", "b_2/proj"]


# ---- includes

def test_include_is_relative_to_the_including_file(tmp_path: Path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.cnn").write_text('include "b.cnn"\nblock a(c) { b(c) relu }\n')
    (tmp_path / "lib" / "b.cnn").write_text("param width = 6\nblock b(c) { conv(c, kernel=1) }\n")
    main = tmp_path / "main.cnn"
    main.write_text('include "lib/a.cnn"\ninclude "lib/b.cnn"\n' + HEAD + "layers { a(width) }")
    spec = load_file(main)
    assert ops(spec) == ["conv", "relu"] and out_shape(spec) == ("N", 6, 16, 16)
    assert load(str(main)).graph.name == "T"


def test_include_cycle_is_reported(tmp_path: Path):
    (tmp_path / "a.cnn").write_text('include "b.cnn"\n')
    (tmp_path / "b.cnn").write_text('block x() { relu }\ninclude "a.cnn"\n')
    main = tmp_path / "main.cnn"
    main.write_text('include "a.cnn"\n' + HEAD + "layers { x() }")
    with pytest.raises(SpecError, match=r"include cycle: a.cnn -> b.cnn -> a.cnn") as e:
        load_file(main)
    assert e.value.span.line == 2 and e.value.span.file.endswith("b.cnn")


def test_include_missing_file_and_library_contents(tmp_path: Path):
    main = tmp_path / "main.cnn"
    main.write_text('include "nope.cnn"\n' + HEAD + "layers { relu }")
    with pytest.raises(SpecError, match='cannot include "nope.cnn"'):
        load_file(main)
    (tmp_path / "lib.cnn").write_text("input x: [1, 2, 2]\n")
    main.write_text('include "lib.cnn"\n' + HEAD + "layers { relu }")
    with pytest.raises(SpecError, match="may only hold block, param and include"):
        load_file(main)


# ---- parameters and search spaces

def test_params_and_search_spaces_take_their_first_value():
    extra = ("param width = choice(8, 16)\nparam depth = range(1, 4)\n"
             "param drop = uniform(0.1, 0.5)\n")
    spec = net("repeat depth { conv(width, kernel=1) }\ndropout(drop)", extra=extra)
    assert out_shape(spec) == ("N", 8, 16, 16) and ops(spec) == ["conv", "dropout"]
    assert spec.graph.nodes[1].attrs.rate == pytest.approx(0.1)
    assert [n.split(" from ")[0] for n in spec.notes] == ["width = 8", "depth = 1",
                                                          "drop = 0.1"]
    assert all("(its first value)" in n for n in spec.notes)


def test_overrides_replace_spaces_and_params():
    extra = "param width = choice(8, 16)\nparam top = true\n"
    spec = net("conv(width, kernel=1)\nif top { relu }", extra=extra,
               overrides={"width": 16, "top": False})
    assert ops(spec) == ["conv"] and out_shape(spec) == ("N", 16, 16, 16)
    assert any("set by --set" in n for n in spec.notes)


def test_overrides_are_checked():
    extra = "param width = choice(8, 16)\nparam depth = range(1, 9, step=2)\n"
    with pytest.raises(SpecError, match="is not one of choice\\(8, 16\\)"):
        net("conv(width, kernel=1)", extra=extra, overrides={"width": 12})
    with pytest.raises(SpecError, match="lies outside range\\(1, 9, step=2\\)"):
        net("repeat depth { relu }", extra=extra, overrides={"depth": 4})
    with pytest.raises(SpecError, match="no param or search space called 'widht' "
                                        "\\(did you mean 'width'"):
        net("conv(width, kernel=1)", extra=extra, overrides={"widht": 8})


def test_inline_spaces_are_named_by_position():
    spec = net("conv(choice(4, 8), kernel=1)")
    assert spec.notes == ["4:6 = 4 from choice(4, 8) (its first value)"]
    spec = net("conv(choice(4, 8), kernel=1)", overrides={"4:6": 8})
    assert out_shape(spec) == ("N", 8, 16, 16)


def test_bad_spaces():
    with pytest.raises(SpecError, match="loguniform needs 0 < low"):
        net("dropout(loguniform(0, 0.5))")
    with pytest.raises(SpecError, match="range takes integers"):
        net("conv(range(1.5, 4), kernel=1)")
    with pytest.raises(SpecError, match="needs low < high"):
        net("dropout(uniform(0.5, 0.1))")


def test_a_spec_never_executes_python():
    for text in ('conv(__import__("os").system("true"), kernel=1)',
                 "conv(eval, kernel=1)", "conv(kernel=exec)"):
        with pytest.raises(CnncError):
            net(text)


def test_parse_error_is_a_spec_syntax_error():
    with pytest.raises(SpecSyntaxError):
        net("conv(")


def test_load_takes_a_path_or_source(tmp_path: Path):
    path = tmp_path / "n.cnn"
    path.write_text(HEAD + "layers { relu }\n")
    assert load(path).graph.name == "T"                 # a PathLike
    assert load(str(path)).graph.name == "T"            # a one-line str ending in .cnn
    assert load(HEAD + "layers { tanh }").graph.nodes[0].op == "tanh"   # source text
    with pytest.raises(SpecError, match="no such file"):
        load(str(tmp_path / "missing.cnn"))


def test_positional_after_keyword_is_refused():
    with pytest.raises(SpecError, match="positional argument cannot follow"):
        net("conv(trainable=false, 8)")
