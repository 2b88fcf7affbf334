"""In-place rewrites: legal cases marked with alias_of, kept safe by the scheduler."""
import pytest

from cnnc.ir.verify import verify
from cnnc.passes import inplace, optimize, peak_bytes, plain_order, schedule
from cnnc.passes.schedule import dependencies

from pass_nets import SPECS, load, snapshot, spec_graph


def aliased(graph):
    """{output name: name of the value it overwrites}."""
    return {v.name: v.alias_of.name for n in graph.nodes for v in n.outputs
            if v.alias_of is not None}


def test_relu_over_a_conv_output_runs_in_place():
    graph = load("conv(4, kernel=1) relu maxpool(2) sigmoid flatten")  # 1x1: no workspace
    before = snapshot(graph)
    out = inplace(graph)
    verify(out)
    assert snapshot(graph) == before
    assert aliased(out) == {"relu_1": "conv_1", "sigmoid_1": "maxpool_1"}
    assert out.value("relu_1").alias_of is out.value("conv_1")
    # conv and relu outputs (256 floats each) were live together; now one buffer
    assert peak_bytes(graph, schedule(graph)) == 4 * 512
    assert peak_bytes(out, schedule(out)) == 4 * (256 + 64)


def test_chains_of_in_place_nodes_share_one_buffer():
    graph = load("conv(4, kernel=3) relu sigmoid tanh maxpool(2)")
    out = inplace(graph)
    assert aliased(out) == {"relu_1": "conv_1", "sigmoid_1": "relu_1", "tanh_1": "sigmoid_1"}
    # one activation buffer: the conv output, at the conv's step beside its workspace
    assert peak_bytes(out, out.nodes[:4]) == peak_bytes(out, out.nodes[:1])


@pytest.mark.parametrize("body,kept", [
    ("relu conv(4, kernel=3)", "relu_1"),                       # input is a graph input
    ("c = conv(4, kernel=3)\n r = c relu\n add(r, c)", "relu_1"),  # c read after relu
    ("conv(4, kernel=3) flatten dense(3) softmax", None),        # nothing to refuse
])
def test_illegal_cases_stay_out_of_place(body, kept):
    graph = load(body)
    out = inplace(graph)
    verify(out)
    if kept is not None:
        assert out.value(kept).alias_of is None


def test_graph_outputs_keep_buffers_of_their_own():
    graph = load("c = conv(4, kernel=3)\n c relu")
    graph.set_outputs([graph.value("conv_1"), graph.value("relu_1")])
    assert aliased(inplace(graph)) == {}
    assert aliased(inplace(load("conv(4, kernel=3) relu"))) == {}


def test_legality_follows_the_order_and_later_schedules_keep_it():
    graph = load("""
        c = conv(4, kernel=3)
        s = c sigmoid
        r = c relu
        add(s, r) flatten
    """)
    conv, sig, relu, add, flatten = graph.nodes
    # relu is the last reader of c in this order: it may overwrite c, sigmoid may not
    out = inplace(graph, [conv, sig, relu, add, flatten])
    assert aliased(out) == {"relu_1": "conv_1", "add_1": "sigmoid_1"}
    new_sig, new_relu = out.node("sigmoid_1"), out.node("relu_1")
    assert new_sig in dependencies(out)[new_relu]  # WAR: sigmoid reads c before relu
    for order in (schedule(out), plain_order(out)):
        assert order.index(new_sig) < order.index(new_relu)
    # in the other order it is the sigmoid's turn
    out = inplace(graph, [conv, relu, sig, add, flatten])
    assert aliased(out)["sigmoid_1"] == "conv_1" and "relu_1" not in aliased(out)
    with pytest.raises(ValueError, match="order"):
        inplace(graph, [conv, relu, add])


def test_flatten_may_alias_a_buffer_of_the_same_size():
    out = inplace(load("conv(4, kernel=3) relu flatten dense(2)"))
    assert aliased(out) == {"relu_1": "conv_1", "flatten_1": "relu_1"}


def test_only_allowed_nodes_run_in_place():
    graph = load("conv(4, kernel=3) relu sigmoid maxpool(2)")
    out = inplace(graph, allowed=lambda n: n.op == "sigmoid")
    assert aliased(out) == {"sigmoid_1": "relu_1"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_run_in_place_where_legal(path):
    graph = optimize(spec_graph(path), "infer")   # ends with the in-place pass
    verify(graph)
    plain = spec_graph(path)
    out = inplace(plain)
    verify(out)
    assert aliased(out)  # every spec has an activation over a layer output
    assert peak_bytes(out, schedule(out)) <= peak_bytes(plain, schedule(plain))
    order = schedule(out)
    pos = {id(n): i for i, n in enumerate(order)}
    for node in out.nodes:
        for v in node.outputs:
            if v.alias_of is not None:  # nothing reads the overwritten value afterwards
                assert all(pos[id(r)] <= pos[id(node)] for r in out.consumers(v.alias_of))
