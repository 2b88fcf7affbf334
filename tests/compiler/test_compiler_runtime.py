"""The executor: plans, the memory planner on and off, steady-state allocation, partial
batches, training vs inference mode, plan inspection."""
import gc
import tracemalloc
from functools import partial

import numpy as np
import pytest

import cnnc
from cnnc.memory import verify_plan

from compiler_nets import NETS, SEED, batch_for


def _train(model, batches):
    return [model.train_step(x, y) for x, y in batches]


@pytest.mark.parametrize("name", ["seed", "inception", "unet"])
def test_planner_on_and_off_are_bitwise_equal(name):
    source, loss = NETS[name]
    rng = np.random.default_rng(0)
    on = cnnc.compile(source, seed=3, loss=loss)
    off = cnnc.compile(source, seed=3, loss=loss, plan_memory=False)
    batches = [batch_for(on, n, rng) for n in (4, 4, 3)]  # the last batch is partial
    assert _train(on, batches) == _train(off, batches)
    for k, v in on.parameters.items():
        assert np.array_equal(v, off.parameters[k]), k
    x = batches[0][0]
    assert np.array_equal(on.forward(x), off.forward(x))
    assert np.array_equal(on.gradients(*batches[1])[1]["conv_1.weight"],
                          off.gradients(*batches[1])[1]["conv_1.weight"])
    planned, naive = on.plan.report(), off.plan.report()
    assert planned["arena_bytes"] < naive["arena_bytes"] == naive["naive_bytes"]


def _step_bytes(model, x, y, steps=30):
    # Build the plan, then run until Python's free lists (up to 2000 tuples of each
    # size: memory tracemalloc counts as in use; a full gc empties them) are full.
    gc.collect()
    for _ in range(120):
        model.train_step(x, y)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    for _ in range(steps):
        model.train_step(x, y)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return current - base, peak - base


def test_steady_state_training_step_allocates_no_arrays():
    rng = np.random.default_rng(1)
    small = cnnc.compile(NETS["resnet_basic"][0], seed=1)
    big = cnnc.compile(NETS["resnet_basic"][0].replace("[3, 6, 6]", "[3, 16, 16]"), seed=1)
    results = []
    for model in (small, big):
        x, y = batch_for(model, 8, rng)
        results.append(_step_bytes(model, x, y))
    for kept, peak in results:
        assert kept < 16384         # nothing accumulates step after step
        assert peak < 32768         # only small temporaries (Python floats, views)
    # bytes per step do not grow with the model: 16x the activations, same overhead
    assert results[1][1] < results[0][1] + 8192


def test_partial_batch_gets_its_own_cached_plan():
    model = cnnc.compile(NETS["lenet"][0], seed=2, dtype="float64")
    rng = np.random.default_rng(2)
    x, _ = batch_for(model, 7, rng)
    whole = model.forward(x)
    assert np.allclose(model.predict(x, batch_size=3), whole, rtol=1e-12, atol=1e-14)
    assert sorted(plan.batch for plan in model._plans.values()) == [1, 3, 7]
    assert model.plan.batch == 1


def test_plan_is_inspectable_and_valid():
    model = cnnc.compile(NETS["unet"][0], seed=2)
    report = model.memory_report("train", batch=4)
    for key in ("arena_bytes", "naive_bytes", "lower_bound_bytes", "param_bytes",
                "optimizer_bytes"):
        assert report[key] > 0, key
    assert report["lower_bound_bytes"] <= report["arena_bytes"] <= report["naive_bytes"]
    assert report["optimizer_bytes"] == 2 * sum(
        v.nbytes for k, v in model.parameters.items() if "running" not in k)
    plan = model.plan
    verify_plan(plan.records, plan.memory)
    steps = plan.steps()
    assert [s.node for s in steps] == [n.name for n in plan.order]
    assert steps[0].node == "conv_1" and steps[-1].op.endswith("_update")
    for step in steps:
        for name, where, offset, nbytes in step.outputs:
            assert nbytes > 0
            if where == "arena":
                assert 0 <= offset and offset + nbytes <= report["arena_bytes"]
    infer = model.memory_report("infer", batch=4)
    assert infer["optimizer_bytes"] == 0
    assert infer["arena_bytes"] < report["arena_bytes"]
    assert "arena" in model.summary()


def test_dropout_differs_between_modes_exactly_by_its_mask():
    source = """
network Drop
input x: [6]
layers { dense(200) dropout(0.25) }
"""
    model = cnnc.compile(source, seed=5, dtype="float64", loss="mse")
    x = np.random.default_rng(3).standard_normal((4, 6))
    infer = model.forward(x)
    train = model.forward(x, training=True)
    kept = train != 0
    assert np.allclose(train[kept], infer[kept] / 0.75, rtol=1e-14)
    assert 0.15 < 1 - kept.mean() < 0.35
    # the mask is fixed within a step and changes with the step counter
    assert np.array_equal(model.forward(x, training=True), train)
    model.train_step(x, np.zeros((4, 200)))
    assert not np.array_equal(model.forward(x, training=True) != 0, kept)


def test_batchnorm_differs_between_modes_as_its_statistics_say():
    source = """
network Norm
input x: [3, 4, 4]
layers { conv(5, kernel=3) batchnorm(momentum=0.9, epsilon=0.01) }
"""
    model = cnnc.compile(source, seed=5, dtype="float64", loss="mse")
    p = model.parameters
    rng = np.random.default_rng(4)
    p["batchnorm_1.gamma"][...] = rng.uniform(0.5, 2, 5)
    p["batchnorm_1.beta"][...] = rng.standard_normal(5)
    x = rng.standard_normal((6, 3, 4, 4))
    infer = model.forward(x)
    z = infer.copy()  # running stats start at mean 0, var 1: undo to get the conv output
    z = (z - p["batchnorm_1.beta"][:, None, None]) / p["batchnorm_1.gamma"][:, None, None]
    z *= np.sqrt(1 + 0.01)
    train = model.forward(x, training=True)
    mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
    want = (z - mean[:, None, None]) / np.sqrt(var[:, None, None] + 0.01)
    want = want * p["batchnorm_1.gamma"][:, None, None] + p["batchnorm_1.beta"][:, None, None]
    assert np.allclose(train, want, rtol=1e-10, atol=1e-12)
    m = z[:, 0].size
    assert np.allclose(p["batchnorm_1.running_mean"], 0.1 * mean, rtol=1e-10, atol=1e-14)
    assert np.allclose(p["batchnorm_1.running_var"], 0.9 + 0.1 * var * m / (m - 1),
                       rtol=1e-10)


def test_modes_agree_without_batchnorm_or_dropout():
    model = cnnc.compile(NETS["zoo"][0], seed=5, dtype="float64", loss="mse")
    x = np.random.default_rng(6).standard_normal((2,) + model.input_shape)
    assert np.allclose(model.forward(x, training=True), model.forward(x), rtol=1e-13)


def test_batchnorm_folding_keeps_following_the_parameters():
    model = cnnc.compile(NETS["resnet_basic"][0], seed=5, dtype="float64")
    x = np.random.default_rng(7).standard_normal((2,) + model.input_shape)
    before = model.forward(x)
    model.parameters["batchnorm_1.running_var"][...] *= 4.0
    after = model.forward(x)
    assert not np.allclose(before, after)
    model.parameters["batchnorm_1.running_var"][...] /= 4.0
    assert np.allclose(model.forward(x), before, rtol=1e-13)


def _agree_with_views_reference(model, ref, x) -> np.ndarray:
    """model.forward(x), asserted bitwise equal to that of `ref` given model's parameters
    through `ref.parameters` (so `ref` remakes everything derived from them every step)."""
    for k, v in model._param_arrays().items():
        ref.parameters[k][...] = v
    got = model.forward(x)
    np.testing.assert_array_equal(got, ref.forward(x))
    return got


def test_folded_weights_are_remade_only_when_the_parameters_change(tmp_path):
    # the tested model never hands out its views, so its inference plans refold only
    # after a change; a reference that did refolds at every step: same outputs throughout
    source = NETS["resnet_basic"][0]
    model = cnnc.compile(source, seed=5, dtype="float64")
    ref = cnnc.compile(source, seed=5, dtype="float64")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2,) + model.input_shape)
    agree = partial(_agree_with_views_reference, model, ref, x)

    first = agree()
    refolds = []
    plan = model.plan
    plan.folds[:] = [lambda f=f: (refolds.append(f), f()) for f in plan.folds]
    np.testing.assert_array_equal(model.forward(x), first)
    assert not refolds  # nothing changed: the folded weights were kept
    model.train_step(*batch_for(model, 3, rng))
    assert not np.allclose(agree(), first) and refolds
    refolds.clear()
    model.forward(x, training=True)  # moves the running statistics
    agree()
    assert refolds
    other = cnnc.compile(source, seed=9, dtype="float64")
    other.save_weights(tmp_path / "w.npz")
    model.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(agree(), other.forward(x))


WINOGRAD_NET = """
network Wino
input image: [16, 12, 12]
layers {
    conv(16, kernel=3, padding=1) batchnorm relu
    conv(16, kernel=3, padding=1) relu
    global_avgpool
    dense(2) softmax
}
"""


# the same convs, each followed by a max-pool: inference's conv_maxpool keeps them too
POOLED_NET = WINOGRAD_NET.replace("relu\n", "relu maxpool(2)\n")


@pytest.mark.parametrize("source", [WINOGRAD_NET, POOLED_NET], ids=["conv", "conv_maxpool"])
@pytest.mark.parametrize("batch", [1, 16])  # vector Winograd; a lane per image
def test_kept_winograd_weights_follow_the_parameters(tmp_path, batch, source):
    # inference keeps the 3x3 convs' transformed weights from step to step; a reference
    # that hands out its views transforms them at every step: same outputs throughout
    model = cnnc.compile(source, seed=5, dtype="float64", batch=batch)
    ref = cnnc.compile(source, seed=5, dtype="float64", batch=batch)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((batch,) + model.input_shape)
    agree = partial(_agree_with_views_reference, model, ref, x)

    first = agree()
    assert sum(getattr(c, "keeps_weights", False) for c in model.plan.calls) == 2
    np.testing.assert_array_equal(model.forward(x), first)
    model.train_step(*batch_for(model, batch, rng))
    assert not np.allclose(agree(), first)
    other = cnnc.compile(source, seed=11, dtype="float64", batch=batch)
    other.save_weights(tmp_path / "w.npz")
    model.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(agree(), other.forward(x))


def test_seed_cnn_learns_on_a_separable_problem():
    model = cnnc.compile(SEED.replace("dropout(0.3)", ""), seed=0)
    model.set_optimizer("adam", lr=0.01)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 32)
    x = rng.standard_normal((32, 3, 14, 14)).astype(np.float32) * 0.1
    x[:, 0] += (2 * y - 1)[:, None, None]  # the class is the mean of channel 0
    losses = [model.train_step(x, y) for _ in range(40)]
    assert losses[-1] < 0.2 * losses[0]
    assert ((model.predict(x)[:, 0] > 0.5) == y).mean() == 1.0


@pytest.mark.parametrize("name", ["seed", "inception"])
def test_results_do_not_depend_on_the_thread_count(name):
    source, loss = NETS[name]
    runs = []
    for threads in (1, 2):
        cnnc.set_num_threads(threads)
        model = cnnc.compile(source, seed=1, loss=loss)
        rng = np.random.default_rng(0)
        losses = [model.train_step(*batch_for(model, 4, rng)) for _ in range(2)]
        runs.append((losses, model.parameters, model.forward(batch_for(model, 3, rng)[0])))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][2], runs[1][2])
    for k, v in runs[0][1].items():
        assert np.array_equal(v, runs[1][1][k]), k
