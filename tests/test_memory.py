import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnc.memory import METHODS, UsageRecord, lower_bound, plan_memory, verify_plan

# Pisarchyk & Lee 2020, Fig. 1: (first op, last op, size); greedy by size packs it in 124.
PAPER = [(0, 1, 32), (1, 4, 28), (2, 5, 36), (3, 5, 16), (4, 5, 8), (5, 7, 64), (6, 8, 10),
         (7, 8, 40)]


def records(triples):
    return [UsageRecord(f, l, s, f"t{i}") for i, (f, l, s) in enumerate(triples)]


def fits_in(recs, arena):
    """Exhaustive check: can ``recs`` be packed (alignment 1) into ``arena`` bytes?"""
    recs = sorted(recs, key=lambda r: -r.size)
    offsets = []

    def place(i):
        if i == len(recs):
            return True
        r = recs[i]
        for off in range(arena - r.size + 1):
            if all(not (q.first <= r.last and q.last >= r.first and o < off + r.size
                        and off < o + q.size) for q, o in zip(recs, offsets)):
                offsets.append(off)
                if place(i + 1):
                    return True
                offsets.pop()
        return False

    return place(0)


def training_schedule(layers, batch):
    """Usage records of one training step over a forward DAG, as an executor would plan it.

    ``layers`` holds (channels, height=width, kernel, inputs) with inputs as earlier layer
    indices (-1: the pinned network input). Layer i runs forward at step i, the loss at step
    L, and layer i's backward at step 2L - i. An activation lives until the last forward
    consumer or the backward of any consumer (which needs its input); its gradient from the
    first consumer's backward (later ones accumulate into it) to its own backward. Every
    step gets an im2col-sized workspace; a weight gradient lives until the optimizer update
    one step later.
    """
    n = len(layers)
    bwd = [2 * n - i for i in range(n)]
    users = [[j for j in range(n) if i in layers[j][3]] for i in range(n)]
    out = []
    for i, (c, hw, k, inputs) in enumerate(layers):
        nbytes = 4 * batch * c * hw * hw
        last = max([n] + [bwd[j] for j in users[i]])
        out.append(UsageRecord(i, last, nbytes, f"act{i}"))
        out.append(UsageRecord(min([n] + [bwd[j] for j in users[i]]), bwd[i], nbytes, f"grad{i}"))
        c_in = sum(layers[j][0] if j >= 0 else 3 for j in inputs)
        workspace = 4 * batch * c_in * k * k * hw * hw if k > 1 else 0
        out.append(UsageRecord(i, i, workspace, f"ws{i}"))
        out.append(UsageRecord(bwd[i], bwd[i], workspace, f"ws_bwd{i}"))
        out.append(UsageRecord(bwd[i], bwd[i] + 1, 4 * c_in * c * k * k, f"dw{i}"))
    return out


def chain(cfg):
    return [(c, hw, k, [i - 1]) for i, (c, hw, k) in enumerate(cfg)]


def lenet():
    return chain([(6, 28, 5), (6, 14, 1), (16, 10, 5), (16, 5, 1), (120, 1, 5), (84, 1, 1),
                  (10, 1, 1)])


def vgg16():
    cfg = []
    for c, hw, n in [(64, 224, 2), (128, 112, 2), (256, 56, 3), (512, 28, 3), (512, 14, 3)]:
        cfg += [(c, hw, 3)] * n + [(c, hw // 2, 1)]
    return chain(cfg + [(4096, 1, 7), (4096, 1, 1), (1000, 1, 1)])


def resnet50():
    layers = [(64, 112, 7, [-1]), (64, 56, 1, [0])]
    for c, hw, blocks in [(64, 56, 3), (128, 28, 4), (256, 14, 6), (512, 7, 3)]:
        for _ in range(blocks):
            start = len(layers) - 1
            layers += [(c, hw, 1, [start]), (c, hw, 3, [start + 1]), (4 * c, hw, 1, [start + 2])]
            layers.append((4 * c, hw, 1, [start + 3, start]))  # residual add (1x1 projection)
    return layers + [(2048, 1, 1, [len(layers) - 1]), (1000, 1, 1, [len(layers)])]


def unet():
    layers, skips, hw, c = [], [], 128, 32
    for _ in range(4):
        layers += [(c, hw, 3, [len(layers) - 1]), (c, hw, 3, [len(layers)])]
        skips.append(len(layers) - 1)
        hw, c = hw // 2, c * 2
        layers.append((c // 2, hw, 1, [len(layers) - 1]))  # pool
    for skip in reversed(skips):
        hw, c = hw * 2, c // 2
        layers.append((c, hw, 1, [len(layers) - 1]))  # upsample
        layers.append((c, hw, 3, [len(layers) - 1, skip]))  # concat + conv
    return layers + [(2, hw, 1, [len(layers) - 1])]


@pytest.mark.parametrize("method", ["size", "best"])
def test_paper_example_packs_in_124(method):
    recs = records(PAPER)
    plan = plan_memory(recs, alignment=1, method=method)
    verify_plan(recs, plan)
    assert plan.arena_bytes == 124
    assert plan.lower_bound_bytes == 124  # step 5: 36 + 16 + 8 + 64
    assert plan.naive_bytes == 234


def test_paper_example_aligned():
    recs = records(PAPER)
    plan = plan_memory(recs, alignment=64)
    verify_plan(recs, plan)
    assert plan.lower_bound_bytes == 4 * 64 == lower_bound(recs, 64)
    assert plan.naive_bytes == 8 * 64
    assert all(o % 64 == 0 for o in plan.offsets)


def test_greedy_by_size_takes_the_smallest_gap_that_fits():
    # When t3 (step 3 only) is placed, step 3 has free gaps [0, 30) and [40, 50) (exact).
    recs = records([(2, 3, 10), (4, 5, 30), (2, 2, 50), (3, 3, 10), (3, 4, 10)])
    plan = plan_memory(recs, alignment=1, method="size")
    assert plan.offsets == [50, 0, 0, 40, 30]
    # An exactly fitting gap below a placed buffer is used.
    recs = records([(0, 1, 10), (1, 2, 10), (2, 3, 10)])
    assert plan_memory(recs, alignment=1, method="size").offsets == [0, 10, 0]


def test_known_optimum_above_lower_bound():
    # The peak live total is 5 at steps 0, 1, 3, 4, but no packing into 5 exists: the
    # optimum is 6, and the planner finds it.
    recs = records([(1, 2, 1), (1, 3, 2), (2, 3, 1), (3, 4, 2), (4, 5, 3), (0, 1, 2),
                    (0, 0, 3)])
    assert lower_bound(recs, 1) == 5
    assert not fits_in(recs, 5) and fits_in(recs, 6)
    plan = plan_memory(recs, alignment=1)
    verify_plan(recs, plan)
    assert plan.arena_bytes == 6


def test_disjoint_lifetimes_reuse_one_buffer():
    recs = records([(0, 1, 100), (2, 3, 300), (4, 4, 200), (5, 9, 50)])
    plan = plan_memory(recs, alignment=1)
    assert plan.offsets == [0, 0, 0, 0]
    assert plan.arena_bytes == 300


def test_nested_lifetimes_stack_to_the_lower_bound():
    # Forward activations kept for backward: [i, 9 - i] are nested; sizes shrink.
    recs = records([(i, 9 - i, 1000 - 100 * i) for i in range(5)])
    plan = plan_memory(recs, alignment=8)
    verify_plan(recs, plan)
    assert plan.arena_bytes == plan.lower_bound_bytes == plan.naive_bytes


def test_sparse_steps_and_empty_input():
    recs = records([(0, 10**9, 64), (10**9, 10**9 + 5, 64), (5, 5, 64)])
    plan = plan_memory(recs)
    verify_plan(recs, plan)
    assert plan.arena_bytes == plan.lower_bound_bytes == 128
    empty = plan_memory([])
    assert (empty.arena_bytes, empty.naive_bytes, empty.lower_bound_bytes) == (0, 0, 0)
    assert empty.offsets == []


def test_zero_size_records_take_no_space():
    recs = records([(0, 5, 0), (0, 5, 100), (2, 3, 0)])
    plan = plan_memory(recs, alignment=64)
    verify_plan(recs, plan)
    assert plan.offsets[0] == plan.offsets[2] == 0
    assert plan.arena_bytes == plan.lower_bound_bytes == 128


@pytest.mark.parametrize("name, layers", [("lenet", lenet()), ("vgg16", vgg16()),
                                          ("resnet50", resnet50()), ("unet", unet())])
@pytest.mark.parametrize("batch", [1, 64])
def test_training_schedules_near_lower_bound(name, layers, batch):
    recs = training_schedule(layers, batch)
    plan = plan_memory(recs)
    verify_plan(recs, plan)
    assert plan.arena_bytes <= 1.05 * plan.lower_bound_bytes, plan.report()
    assert plan.arena_bytes < plan.naive_bytes


def test_report():
    recs = records(PAPER)
    report = plan_memory(recs, alignment=1, method="size").report()
    assert report["arena_bytes"] == 124 and report["naive_bytes"] == 234
    assert report["lower_bound_bytes"] == 124 and report["arena_over_lower_bound"] == 1.0
    assert report["buffers"] == 8 and report["method"] == "size"


@pytest.mark.parametrize("args, match", [
    ((0, 1, -5), "size -5 is negative"),
    ((3, 2, 5), "last step 2 is before first step 3"),
    ((-1, 2, 5), "first step -1 is negative"),
    ((0, 1, 2.0), "size must be an int"),
    ((0, "1", 2), "last must be an int"),
    ((True, 1, 2), "first must be an int"),
    ((0, 1, None), "size must be an int"),
])
def test_bad_records_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        UsageRecord(*args, name="x")


def test_bad_arguments_rejected():
    recs = records(PAPER)
    with pytest.raises(ValueError, match="alignment must be positive"):
        plan_memory(recs, alignment=0)
    with pytest.raises(ValueError, match="alignment must be an int"):
        plan_memory(recs, alignment=8.0)
    with pytest.raises(ValueError, match="unknown memory planning method 'fast'"):
        plan_memory(recs, method="fast")
    with pytest.raises(ValueError, match="expected UsageRecord, got tuple"):
        plan_memory(PAPER)


def test_verify_plan_catches_broken_plans():
    recs = records(PAPER)
    plan = plan_memory(recs, alignment=4)
    verify_plan(recs, plan)
    clash = list(plan.offsets)
    clash[2] = clash[1]  # t1 and t2 are both live at steps 2..4
    lifted = list(plan.offsets)
    lifted[5] += plan.arena_bytes
    broken = [
        (dataclasses.replace(plan, offsets=clash), "overlap in memory"),
        (dataclasses.replace(plan, offsets=[o + 2 for o in plan.offsets]), "not a multiple"),
        (dataclasses.replace(plan, offsets=lifted), "past the arena"),
        (dataclasses.replace(plan, offsets=plan.offsets[:-1]), "7 offsets for 8 records"),
        (dataclasses.replace(plan, lower_bound_bytes=100), "lower_bound_bytes 100 != 124"),
        (dataclasses.replace(plan, naive_bytes=1), "naive_bytes 1 != 236"),
    ]
    for bad, match in broken:
        with pytest.raises(AssertionError, match=match):
            verify_plan(recs, bad)


def test_verify_plan_catches_arena_below_bound():
    recs = records([(0, 0, 10), (0, 0, 10)])
    plan = plan_memory(recs, alignment=1)
    squeezed = dataclasses.replace(plan, offsets=[0, 0], arena_bytes=10)
    with pytest.raises(AssertionError, match="arena 10 is below the lower bound 20"):
        verify_plan(recs, squeezed)
    stacked = dataclasses.replace(plan, offsets=[0, 0], arena_bytes=20)
    with pytest.raises(AssertionError, match="overlap in memory"):
        verify_plan(recs, stacked)


intervals = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 12), st.integers(0, 5000)),
    min_size=1, max_size=40,
).map(lambda ts: [UsageRecord(f, f + d, s, f"r{i}") for i, (f, d, s) in enumerate(ts)])


@settings(max_examples=100, deadline=None)
@given(recs=intervals, alignment=st.sampled_from([1, 8, 64]))
def test_every_method_keeps_the_invariants(recs, alignment):
    arenas = {}
    for method in METHODS:
        plan = plan_memory(recs, alignment=alignment, method=method)
        verify_plan(recs, plan)  # no live overlap, inside the arena, aligned, >= bound
        assert plan.arena_bytes >= plan.lower_bound_bytes
        assert plan.arena_bytes <= plan.naive_bytes
        arenas[method] = plan.arena_bytes
    assert arenas["best"] == min(arenas.values())


@settings(max_examples=40, deadline=None)
@given(recs=intervals)
def test_lower_bound_is_the_peak_live_total(recs):
    # Brute force over every step against the sweep.
    steps = range(max(r.last for r in recs) + 1)
    peak = max(sum(r.size for r in recs if r.first <= t <= r.last) for t in steps)
    assert lower_bound(recs, alignment=1) == peak
    # Planning is deterministic: the executor's cached plans must not depend on the run.
    assert plan_memory(recs, alignment=1).offsets == plan_memory(recs, alignment=1).offsets
