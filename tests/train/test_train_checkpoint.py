import errno
import os
import pickle

import numpy as np
import pytest

from cnnc.errors import CheckpointError
from cnnc.train import checkpoint as ck
from cnnc.train.checkpoint import (Checkpoint, assign_arrays, ensure_folder, read_checkpoint,
                                   save_checkpoint)


def _ckpt(seed):
    rng = np.random.default_rng(seed)
    return Checkpoint({"conv_1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
                       "conv_1.bias": rng.normal(size=4).astype(np.float32)},
                      {"conv_1.weight.m": rng.normal(size=(4, 3, 3, 3)),
                       "step": np.array([17], dtype=np.int64)},
                      {"early_stopping": {"conv_1.bias": rng.normal(size=4)}},
                      {"epoch": 3, "history": {"loss": [0.5, 0.25]}, "classes": ["a", "b"]})


def _same(a: Checkpoint, b: Checkpoint):
    assert a.meta.items() <= b.meta.items()
    for part in ("weights", "optimizer"):
        x, y = getattr(a, part), getattr(b, part)
        assert x.keys() == y.keys()
        assert all(np.array_equal(x[k], y[k]) and x[k].dtype == y[k].dtype for k in x)
    assert np.array_equal(a.callbacks["early_stopping"]["conv_1.bias"],
                          b.callbacks["early_stopping"]["conv_1.bias"])


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "last.npz", _ckpt(0))
    _same(_ckpt(0), read_checkpoint(tmp_path / "last.npz"))
    # a checkpoint is also a plain weights file: the weights sit under their own names
    with np.load(tmp_path / "last.npz") as z:
        assert np.array_equal(z["conv_1.bias"], _ckpt(0).weights["conv_1.bias"])


@pytest.mark.parametrize("when", ["during the write", "at fsync"])
def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch, when):
    path = tmp_path / "last.npz"
    save_checkpoint(path, _ckpt(0))
    before = path.read_bytes()

    def savez_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    def fsync_fails(fd):
        raise OSError(errno.EIO, "Input/output error")

    if when == "during the write":
        monkeypatch.setattr(ck.np, "savez", savez_then_fail)
    else:
        monkeypatch.setattr(ck.os, "fsync", fsync_fails)
    with pytest.raises(CheckpointError, match="could not write .*last.npz.*unchanged"):
        save_checkpoint(path, _ckpt(1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    _same(_ckpt(0), read_checkpoint(path))
    assert os.listdir(tmp_path) == ["last.npz"]      # no temporary file left behind


def test_interrupt_during_write_leaves_no_trace(tmp_path, monkeypatch):
    path = tmp_path / "best.npz"
    save_checkpoint(path, _ckpt(0))

    def interrupted(f, **arrays):
        f.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _ckpt(1))
    monkeypatch.undo()
    _same(_ckpt(0), read_checkpoint(path))
    assert os.listdir(tmp_path) == ["best.npz"]


def test_bad_files_name_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.npz"
    save_checkpoint(good, _ckpt(0))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"conv_1.weight": [1, 2]}))
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(50)))
    objects = tmp_path / "objects.npz"
    np.savez(objects, w=np.array([{"a": 1}], dtype=object))
    for path, pattern in [(tmp_path / "missing.npz", "missing.npz: no such file"),
                          (truncated, "truncated.npz: not a readable weights file"),
                          (pickled, "pickled.npz: not an .npz weights file"),
                          (image, "image.png: not an .npz weights file"),
                          (objects, "objects.npz: .*pickled objects")]:
        with pytest.raises(CheckpointError, match=pattern):
            read_checkpoint(path)


def test_assign_checks_everything_before_writing_anything(tmp_path):
    target = {k: np.zeros_like(v) for k, v in _ckpt(0).weights.items()}
    other = _ckpt(1).weights
    wrong_shape = {**other, "conv_1.bias": np.zeros(5, np.float32)}
    with pytest.raises(CheckpointError, match=r"'conv_1.bias' has shape \[5\] in the file but "
                                              r"\[4\]"):
        assign_arrays(target, wrong_shape, "w.npz")
    with pytest.raises(CheckpointError, match="lacks 'conv_1.bias'.*holds 'dense.bias'"):
        assign_arrays(target, {"conv_1.weight": other["conv_1.weight"],
                               "dense.bias": np.zeros(3)}, "w.npz", network="LeNet5")
    assert all(not v.any() for v in target.values())
    assign_arrays(target, other, "w.npz")
    assert all(np.array_equal(target[k], other[k]) for k in target)


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="cannot write into the output folder .*file/run"):
        ensure_folder(blocker / "run")


def test_plain_weights_file_with_the_network_name(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **_ckpt(0).weights, __cnnc_network__=np.array("LeNet5"))
    ckpt = read_checkpoint(path)
    assert ckpt.meta == {"network": "LeNet5"} and ckpt.weights.keys() == _ckpt(0).weights.keys()
    save_checkpoint(path, Checkpoint(ckpt.weights, meta={"network": "LeNet5"}))
    with np.load(path) as z:
        assert str(z["__cnnc_network__"]) == "LeNet5"
