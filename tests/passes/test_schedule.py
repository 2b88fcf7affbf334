"""The scheduler: RAW and WAR edges, cycles, and the peak of live bytes."""
import pytest
from hypothesis import given, settings, strategies as st

from cnnc.autodiff import build_training_graph
from cnnc.dsl.train import Option
from cnnc.ir import Graph
from cnnc.passes import ScheduleError, optimize, peak_bytes, plain_order, schedule
from cnnc.passes.schedule import dependencies, value_bytes, written_inputs

from pass_nets import INCEPTION, SPECS, UNET, load, snapshot, spec_graph


def no_writes(node):
    return []


def check_order(graph, order, writes):
    """Every node once; producers before readers; other readers of a written value before
    its writers, and writers of one value in graph order."""
    assert sorted(map(id, order)) == sorted(map(id, graph.nodes))
    pos = {id(n): i for i, n in enumerate(order)}
    for node in graph.nodes:
        for v in node.inputs:
            if v.producer is not None:
                assert pos[id(v.producer)] < pos[id(node)]
    for v, ws, rs in written_values(graph, writes):
        for r in rs:
            if all(r is not w for w in ws):
                assert pos[id(r)] < min(pos[id(w)] for w in ws)
        assert [pos[id(w)] for w in ws] == sorted(pos[id(w)] for w in ws)


def written_values(graph, writes):
    found = {}
    for node in graph.nodes:
        for v in writes(node):
            found.setdefault(id(v), (v, []))[1].append(node)
    return [(v, ws, [n for n in graph.nodes if any(u is v for u in n.inputs)])
            for v, ws in found.values()]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_schedule_validly_without_raising_the_peak(path):
    graph = spec_graph(path)
    before = snapshot(graph)
    order = schedule(graph)
    check_order(graph, order, no_writes)
    assert peak_bytes(graph, order) <= peak_bytes(graph, plain_order(graph))
    infer = optimize(graph, "infer")
    assert peak_bytes(infer, schedule(infer)) <= peak_bytes(infer, plain_order(infer))
    assert snapshot(graph) == before


def test_plain_order_is_the_graph_order_when_valid():
    graph = load(INCEPTION)
    assert plain_order(graph) == graph.nodes


def test_peak_bytes_of_a_chain_by_hand():
    # x -> conv a [N,4,8,8] -> relu b -> maxpool c [N,4,4,4]: a (256 floats) at a's step,
    # a and b at b's step, b and c (64 floats) at c's step. (Kernel workspaces live in a
    # scratch buffer of their own, not in the arena.)
    graph = load("conv(4, kernel=3, padding=1) relu maxpool(2)")
    for batch in (1, 3):
        assert peak_bytes(graph, graph.nodes, batch) == batch * 4 * (256 + 256)


def test_war_edge_puts_the_writer_after_every_other_reader():
    graph = load("""
        a = relu
        b = x sigmoid
        add(a, b)
    """)
    a, b = graph.node("relu_1"), graph.node("sigmoid_1")
    x = graph.inputs[0]

    def writes(node):  # pretend relu overwrote x
        return [x] if node is a else []

    assert plain_order(graph, no_writes).index(a) < plain_order(graph, no_writes).index(b)
    for order in (plain_order(graph, writes), schedule(graph, writes)):
        assert order.index(b) < order.index(a)
        check_order(graph, order, writes)


def test_writers_of_one_value_keep_their_graph_order():
    graph = load("""
        a = relu
        b = x tanh
        c = x sigmoid
        concat(a, b, c)
    """)
    a, b, c = (graph.node(n) for n in ("relu_1", "tanh_1", "sigmoid_1"))
    x = graph.inputs[0]
    writes = lambda node: [x] if node in (c, b) else []  # noqa: E731
    preds = dependencies(graph, writes)
    assert a in preds[b] and b in preds[c]
    order = schedule(graph, writes)
    assert order.index(a) < order.index(b) < order.index(c)


def test_cycle_is_reported_with_its_nodes():
    graph = load("""
        a = relu
        add(x, a)
    """)
    relu, add = graph.node("relu_1"), graph.node("add_1")
    x = graph.inputs[0]
    # relu overwriting x must wait for add, which needs relu's output: impossible.
    with pytest.raises(ScheduleError, match="cycle") as err:
        schedule(graph, lambda n: [x] if n is relu else [])
    assert "'relu_1'" in str(err.value) and "'add_1'" in str(err.value)
    with pytest.raises(ScheduleError):
        plain_order(graph, lambda n: [x] if n is relu else [])
    assert add in dependencies(graph, lambda n: [x] if n is relu else [])[relu]


@st.composite
def random_dag(draw):
    """A random graph of relu and add nodes over one input, and a random set of
    (writer node index, input position) in-place writes."""
    n = draw(st.integers(1, 12))
    g = Graph("random")
    values = [g.add_input("x", (4,))]
    for i in range(n):
        k = draw(st.integers(1, min(3, len(values))))
        picks = draw(st.lists(st.integers(0, len(values) - 1), min_size=k, max_size=k,
                              unique=True))
        ins = [values[j] for j in picks]
        values.append(g.add_layer("relu" if k == 1 else "add", ins))
    g.set_outputs([values[-1]])
    chosen = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2)),
                           max_size=4))
    marks = {}
    for i, j in chosen:
        node = g.nodes[i]
        marks.setdefault(id(node), []).append(node.inputs[j % len(node.inputs)])
    return g, marks


def has_cycle(graph, writes):
    """Depth-first search for a cycle over RAW and WAR edges, built independently."""
    succ = {id(n): set() for n in graph.nodes}
    for node in graph.nodes:
        for v in node.inputs:
            if v.producer is not None:
                succ[id(v.producer)].add(id(node))
    for v, ws, rs in written_values(graph, writes):
        for r in rs:
            if all(r is not w for w in ws):
                succ[id(r)].update(id(w) for w in ws)
        for before, after in zip(ws, ws[1:]):
            succ[id(before)].add(id(after))
    state = {}

    def visit(u):
        state[u] = "open"
        for w in succ[u]:
            if state.get(w) == "open" or (w not in state and visit(w)):
                return True
        state[u] = "done"
        return False

    return any(u not in state and visit(u) for u in succ)


@settings(max_examples=150, deadline=None)
@given(random_dag())
def test_random_dags_schedule_respecting_edges_or_report_a_real_cycle(case):
    graph, marks = case
    writes = lambda node: marks.get(id(node), [])  # noqa: E731
    if has_cycle(graph, writes):
        with pytest.raises(ScheduleError):
            schedule(graph, writes)
        return
    for order in (schedule(graph, writes), plain_order(graph, writes)):
        check_order(graph, order, writes)
    assert peak_bytes(graph, schedule(graph, writes)) <= \
        peak_bytes(graph, plain_order(graph, writes))


def interleaved_branches():
    """Four independent conv -> maxpool branches from one input, the graph listing the
    four convs first: the plain order keeps all four large conv outputs alive at once,
    a better order only one."""
    g = Graph("interleaved")
    x = g.add_input("x", (3, 32, 32))
    wide = [g.add_layer("conv", [x], (16, 3), {"padding": 1}) for _ in range(4)]
    small = [g.add_layer("maxpool", [w], (4,)) for w in wide]
    g.set_outputs([g.add_layer("concat", small)])
    return g


def test_greedy_order_lowers_the_peak_of_interleaved_branches():
    graph = interleaved_branches()
    plain, best = peak_bytes(graph, plain_order(graph)), peak_bytes(graph, schedule(graph))
    conv, pool = graph.nodes[0], graph.nodes[4]
    # the first pool runs beside all four conv outputs
    assert plain == 4 * value_bytes(conv.output) + value_bytes(pool.output)
    # the last pool runs beside its conv's output and the pooled outputs before it
    assert best == value_bytes(conv.output) + 4 * value_bytes(pool.output)
    check_order(graph, schedule(graph), no_writes)


@pytest.mark.parametrize("body,shape", [(INCEPTION, "[3, 8, 8]"), (UNET, "[3, 16, 16]")],
                         ids=["inception", "unet"])
def test_branching_graphs_keep_or_lower_the_peak(body, shape):
    graph = load(body, shape)
    for g in (graph, optimize(graph, "infer")):
        order = schedule(g)
        check_order(g, order, no_writes)
        assert peak_bytes(g, order) <= peak_bytes(g, plain_order(g))


def test_optimizer_updates_run_as_soon_as_their_gradient_is_final():
    graph = load("conv(4, kernel=3) relu conv(4, kernel=3) relu flatten dense(3)")
    step = build_training_graph(optimize(graph, "train"),
                                optimizer=Option("adam", {"lr": 1e-3}))
    order = schedule(step)
    check_order(step, order, written_inputs)
    preds = dependencies(step)
    pos = {id(n): i for i, n in enumerate(order)}
    updates = [n for n in order if not n.outputs]
    assert len(updates) == len(step.params)
    for u in updates:
        ready_at = max(pos[id(p)] for p in preds[u])
        # between becoming ready and running, only other updates may run
        assert all(not n.outputs for n in order[ready_at + 1:pos[id(u)]])
    # ...which lowers the peak: the plain order keeps every weight gradient to the end
    assert peak_bytes(step, order) < peak_bytes(step, plain_order(step))
