"""End to end: the run / evaluate / predict commands on a real compiled network."""
import io
import json

import numpy as np
import pytest

import cnnc
from cnnc.cli import build_parser
from cnnc.errors import CheckpointError, CnncError, DataError
from cnnc.train import commands, read_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(cnnc, "compile"), reason="cnnc.compile missing")

SPEC = """network Tiny
input image: [3, 12, 12]
layers {
    conv(4, kernel=3) relu
    maxpool(2)
    flatten
    dropout(0.25)
    dense(3) softmax
}
train {
    data      = shapes(classes=3, size=12, count=192)
    loss      = sparse_categorical_crossentropy
    optimizer = adam(lr=3e-3)
    metrics   = [accuracy, precision]
    batch     = 32
    epochs    = 2
    validation_split = 0.25
    seed      = 3
    augment {
        flip = horizontal
        shift = 0.1
    }
}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.cnn"
    path.write_text(SPEC)
    return path


def _weights(path):
    return read_checkpoint(path).weights


def test_run_json_files_and_resume_bitwise(spec, tmp_path):
    out = io.StringIO()
    result = commands.run(spec, out=tmp_path / "a", json=True, stream=out)
    lines = out.getvalue().splitlines()
    epochs = [json.loads(s) for s in lines[:-1]]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert {"loss", "accuracy", "precision", "val_loss", "val_accuracy"} <= set(epochs[0])
    last = json.loads(lines[-1])
    assert last == json.loads(json.dumps(result))
    for key in ("epochs", "seconds", "train_loss", "test_loss", "test_accuracy",
                "test_precision", "val_loss", "val_accuracy"):
        assert key in last
    assert last["epochs"] == 2 and 0.0 <= last["test_accuracy"] <= 1.0
    for name in ("last.npz", "best.npz", "history.json", "history.csv"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "history.json").read_text())["epoch"] == [1, 2]

    commands.run(spec, out=tmp_path / "b", epochs=1, quiet=True)
    commands.run(spec, out=tmp_path / "b", epochs=2, quiet=True, resume=True)
    full, resumed = _weights(tmp_path / "a" / "last.npz"), _weights(tmp_path / "b" / "last.npz")
    assert full.keys() == resumed.keys()
    for k in full:
        assert np.array_equal(full[k], resumed[k]), k
    again = commands.run(spec, out=tmp_path / "c", epochs=2, quiet=True)
    assert again["train_loss"] == result["train_loss"]      # the same seed, the same run


def test_evaluate_and_predict(spec, tmp_path):
    from PIL import Image
    commands.run(spec, out=tmp_path / "r", epochs=1, quiet=True)
    best = tmp_path / "r" / "best.npz"
    scores = commands.evaluate(spec, best)
    assert scores["split"] == "test" and scores["images"] == 48
    assert {"loss", "accuracy", "precision"} <= set(scores)
    model = cnnc.compile(spec)  # a run's checkpoint is also a weights file for the API
    model.load_weights(best)
    assert np.array_equal(model.parameters[next(iter(model.parameters))],
                          read_checkpoint(best).weights[next(iter(model.parameters))])

    rng = np.random.default_rng(0)
    rgb, grey = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(rgb)
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(grey)
    results = commands.predict(spec, best, [rgb, grey], top=2)
    assert [r["image"] for r in results] == [str(rgb), str(grey)]
    for r in results:
        assert len(r["top"]) == 2
        assert {t["class"] for t in r["top"]} <= {"circle", "square", "triangle"}
        assert r["top"][0]["probability"] >= r["top"][1]["probability"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        commands.predict(spec, best, [broken])


def test_bad_input_is_named(spec, tmp_path):
    other = tmp_path / "other.cnn"
    other.write_text(SPEC.replace("conv(4,", "conv(5,").replace("network Tiny", "network Tiny"))
    commands.run(other, out=tmp_path / "o", epochs=1, quiet=True)
    with pytest.raises(CheckpointError, match="o/best.npz: .*'conv_1.weight' has shape "
                                              r"\[5, 3, 3, 3\] in the file"):
        commands.evaluate(spec, tmp_path / "o" / "best.npz")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CnncError, match="cannot write into the output folder .*file/out"):
        commands.run(spec, out=blocker / "out", quiet=True)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((8, 3, 10, 10), np.float32), y=np.zeros(8, np.int64))
    with pytest.raises(DataError, match=r"shape \[C, H, W\] = \[3, 10, 10\].*\[3, 12, 12\]"):
        commands.run(spec, out=tmp_path / "w", data=wrong, quiet=True)
    five = tmp_path / "five.cnn"
    five.write_text(SPEC.replace("classes=3", "classes=5"))
    with pytest.raises(DataError, match=r"has 5 classes \(circle, .*'softmax_1' has 3 units"):
        commands.run(five, out=tmp_path / "f", quiet=True)
    with pytest.raises(CheckpointError, match="last.npz: no such file"):
        commands.run(spec, out=tmp_path / "fresh", resume=True, quiet=True)


def test_cli_parses_the_flags():
    parser = build_parser()
    a = parser.parse_args(["run", "x.cnn", "--epochs", "3", "--batch", "8", "--lr", "0.1",
                           "--threads", "2", "--seed", "5", "--data", "d", "--out", "o",
                           "--resume", "--set", "width=16", "--json"])
    assert (a.epochs, a.batch, a.lr, a.threads, a.seed, a.data, a.out) == \
        (3, 8, 0.1, 2, 5, "d", "o")
    assert a.resume and a.json and not a.quiet and a.sets == [("width", 16)]
    assert a.run is commands._run
    e = parser.parse_args(["evaluate", "x.cnn", "--weights", "w.npz", "--json"])
    assert e.weights == "w.npz" and e.run is commands._evaluate
    p = parser.parse_args(["predict", "x.cnn", "--weights", "w.npz", "a.png", "b.png",
                           "--top", "3"])
    assert p.images == ["a.png", "b.png"] and p.top == 3 and p.run is commands._predict
