"""The profiler behind ``cnnc bench``: its report's structure and its FLOP counts (never its
timings, which belong to benchmarks/)."""
import argparse
import json

import numpy as np
import pytest

import cnnc
from cnnc import bench
from cnnc.ir.summary import summarize

TINY = """
network Tiny
input image: [2, 9, 9]
layers {
    conv(4, kernel=3) batchnorm relu
    maxpool(2)
    conv(5, kernel=3, padding=1) relu
    flatten
    dense(3) softmax
}
train {
    data = shapes(classes=3, size=9, count=30)
    loss = sparse_categorical_crossentropy
    optimizer = sgd(lr=0.01, momentum=0.9)
    batch = 4
    epochs = 1
}
"""

BINARY = """
network TinyBinary
input image: [1, 6, 6]
layers {
    conv(2, kernel=3) relu
    flatten
    dense(1) sigmoid
}
"""


@pytest.fixture(scope="module")
def train_report():
    return bench.measure(cnnc.compile(TINY), "train", batch=4, steps=2, warmup=1)


def test_report_has_every_field_and_one_row_per_call(train_report):
    r = train_report
    for key in ("network", "mode", "batch", "threads", "steps", "step_ms", "img_s",
                "kernel_ms", "overhead_ms", "overhead_per_call_us", "calls", "gflop",
                "gflop_s", "ops", "nodes", "clock"):
        assert key in r, key
    assert (r["network"], r["mode"], r["batch"], r["steps"]) == ("Tiny", "train", 4, 2)
    assert len(r["nodes"]) == r["calls"]
    assert sum(o["calls"] for o in r["ops"]) == r["calls"]
    assert r["kernel_ms"] == pytest.approx(sum(n["ms"] for n in r["nodes"]))
    assert r["overhead_ms"] == pytest.approx(r["step_ms"] - r["kernel_ms"])
    assert all(n["ms"] >= 0 and n["share"] >= 0 for n in r["nodes"])
    assert [o["ms"] for o in r["ops"]] == sorted((o["ms"] for o in r["ops"]), reverse=True)
    json.dumps(r)  # JSON-ready


def test_training_profile_names_forward_backward_and_update_ops(train_report):
    kinds = {o["op"]: o["calls"] for o in train_report["ops"]}
    assert kinds["conv"] == 2 and kinds["conv_backward_weight"] == 2
    assert kinds["conv_backward_data"] == 1  # the first conv's input needs no gradient
    assert kinds["sgd_update"] == 8  # weight and bias of 2 convs and dense, gamma, beta
    assert "batchnorm_train" in kinds and "dense_backward_weight" in kinds


def test_backward_of_a_layer_counts_twice_its_forward_flops(train_report):
    rows = {n["node"]: n for n in train_report["nodes"]}
    fwd = rows["conv_2"]["gflop"]
    # conv_2: 4 -> 5 channels, 3x3 kernel, 3x3 output (padding 1), batch 4
    assert fwd == pytest.approx(2 * 4 * 9 * 5 * 4 * 9 / 1e9)
    assert rows["conv_2/dx"]["gflop"] == pytest.approx(fwd)
    assert rows["conv_2/dweight"]["gflop"] == pytest.approx(fwd)
    dense = rows["dense_1"]["gflop"]
    assert dense == pytest.approx(2 * 4 * 45 * 3 / 1e9)
    assert rows["dense_1/dweight"]["gflop"] == pytest.approx(dense)
    assert rows["relu_2/dx"]["gflop"] == 0 and rows["relu_2/dx"]["gb_s"] >= 0


def test_inference_flops_match_the_summary_and_folds_are_not_steps():
    model = cnnc.compile(TINY)
    r = bench.measure(model, "infer", batch=3, steps=1, warmup=0)
    macs = summarize(model.graph)["macs"]
    assert r["gflop"] == pytest.approx(2 * macs * 3 / 1e9)
    nodes = bench.call_nodes(model.plan)
    assert len(nodes) == len(model.plan.calls)
    assert "flatten" not in [n.op for n in nodes]  # shares its input's buffer
    # batchnorm folded into conv_1 and its kept Winograd weights, redone on a change; the
    # profile's own binding added none
    assert len(model.plan.folds) == 2


def test_random_batches_fit_each_loss():
    model = cnnc.compile(BINARY, loss="binary_crossentropy")
    x, y = bench.random_batch(model, 5, seed=1)
    assert x.shape == (5, 1, 6, 6) and x.dtype == np.float32 and x.std() > 0
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert np.isfinite(model.train_step(x, y))
    x, y = bench.random_batch(cnnc.compile(TINY), 6, seed=1)
    assert y.shape == (6,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < 3


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--debug", action="store_true")
    bench.add_arguments(p)
    return p


def test_command_prints_json_and_text(tmp_path, capsys):
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    args = _parser().parse_args([str(spec), "--mode", "infer", "--batch", "2", "--steps",
                                 "1", "--warmup", "0", "--json", "--clock", "cpu"])
    assert bench.run(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["mode"], r["batch"], r["clock"]) == ("infer", 2, "cpu")
    args = _parser().parse_args([str(spec), "--steps", "1", "--top", "3"])
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    assert "images/s" in out and "slowest calls" in out and "conv_backward_weight" in out


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--warmup", "-1"], ["--mode", "fast"],
                                  ["--batch", "x"]])
def test_command_refuses_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as err:
        _parser().parse_args(["spec.cnn", *argv])
    assert err.value.code == 2


def test_placement_files_round_trips():
    assert [bench.placement(ns) for ns in (60.0, 249.0, 250.0, 420.0, float("inf"))] == \
        ["one_l3", "one_l3", "split", "split", "busy"]


def test_core_balance_files_speeds():
    inf = float("inf")
    got = [bench.core_balance(*t) for t in ((1.0, 1.0, 1.1), (1.0, 1.0, 1.2), (1.0, 1.3, 1.0),
                                            (1.0, 1.5, 1.6), (1.0, 1.0, inf))]
    assert got == ["even", "uneven", "uneven", "shared", "busy"]


def test_multi_threaded_report_says_where_the_cores_were(train_report):
    from cnnc._kernels.threads import openmp_enabled
    before = cnnc.get_num_threads()
    cnnc.set_num_threads(2)
    try:
        r = bench.measure(cnnc.compile(TINY), "train", batch=4, steps=1, warmup=0)
    finally:
        cnnc.set_num_threads(before)
    if openmp_enabled():
        assert len(r["core_round_trip_ns"]) == 2
        assert all(ns > 0 for ns in r["core_round_trip_ns"])
        assert set(r["core_balance"]) <= {"even", "uneven", "shared", "busy"}
        assert "cores: a cache line's round trip" in bench.format_report(r)
    one = {k: v for k, v in train_report.items()
           if k not in ("core_round_trip_ns", "core_balance")}
    assert "cores:" not in bench.format_report(one)
    text = bench.format_report({**one, "core_round_trip_ns": [420.0, 70.0]})
    assert "share no L3" in text
    text = bench.format_report({**one, "core_round_trip_ns": [70.0, float("inf")]})
    assert "no second core free" in text and "share no L3" not in text
    text = bench.format_report({**one, "core_round_trip_ns": [70.0, 70.0],
                                "core_balance": ["even", "uneven"]})
    assert "one core slower" in text and "share no L3" not in text
