import io
import json
import signal

import numpy as np
import pytest
from train_double import SoftmaxRegression, separable

from cnnc.data import Augmentation, Split
from cnnc.errors import CheckpointError
from cnnc.train import (Callback, Checkpoints, Cosine, EarlyStopping, HistoryFiles, Schedule,
                        TrainableModel, TrainingDiverged, TrainingInterrupted, evaluate, fit,
                        read_checkpoint)


def test_double_satisfies_protocol_and_its_gradient_is_right():
    model = SoftmaxRegression((1, 2, 3), 4)
    assert isinstance(model, TrainableModel)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 1, 2, 3)), rng.integers(0, 4, 5)
    model._w[...] = rng.normal(size=model._w.shape)
    _, gw, _, _ = model.gradients(x, y)
    eps, (i, j) = 1e-6, (4, 2)
    model._w[i, j] += eps
    up = model.loss(x, y)
    model._w[i, j] -= 2 * eps
    down = model.loss(x, y)
    assert gw[i, j] == pytest.approx((up - down) / (2 * eps), rel=1e-6)


def test_fit_learns_a_separable_task():
    x, y = separable(600)
    model = SoftmaxRegression((1, 4, 4), 3, lr=0.05)
    before = evaluate(model, (x, y), 64)["loss"]
    hist = fit(model, (x, y), epochs=4, batch_size=32, validation_split=0.25, seed=3,
               progress="quiet")
    h = hist.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert hist.epoch == [1, 2, 3, 4] and hist.stop_reason is None
    assert before > 1.0 and h["val_loss"][-1] < 0.05      # from chance (ln 3) to near 0
    assert h["val_accuracy"][-1] > 0.95 and h["accuracy"][-1] > 0.9
    assert h["loss"][-1] < h["loss"][0]
    assert evaluate(model, (x, y), 50)["loss"] == pytest.approx(model.loss(x, y))


def _run(tmp, epochs=2, resume=None, callbacks=(), init_seed=0, **kw):
    x, y = separable(200, shape=(1, 6, 6), seed=1)
    model = SoftmaxRegression((1, 6, 6), 3, lr=0.05, dropout=0.2, init_seed=init_seed)
    aug = Augmentation(horizontal_flip=True, width_shift_range=0.2, fill_mode="reflect")
    sched = Cosine(0.05, epochs=2, steps_per_epoch=10)
    hist = fit(model, (x, y), epochs=epochs, batch_size=16, validation_split=0.2, seed=7,
               augment=aug, schedule=sched, progress="quiet", resume=resume,
               callbacks=[Checkpoints(tmp), *callbacks], **kw)
    return model, hist


def _same_state(a, b):
    for part in ("parameters", "optimizer_state"):
        sa = a.parameters if part == "parameters" else a.optimizer_state()
        sb = b.parameters if part == "parameters" else b.optimizer_state()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), f"{part} {k} differs"


class _CtrlC(Callback):
    """Presses Ctrl-C (a real SIGINT) after a given step, ``times`` times."""

    def __init__(self, epoch, step, times=1):
        self.at, self.times = (epoch, step), times

    def on_batch_end(self, state, logs):
        if (state.epoch, state.step) == self.at:
            for _ in range(self.times):
                signal.raise_signal(signal.SIGINT)


def test_resume_after_an_epoch_equals_uninterrupted(tmp_path):
    # early stopping that never sees an improvement after epoch 1 restores epoch 1's
    # weights at the end: the resumed run must get them from the checkpoint
    def stopper():
        return [EarlyStopping("val_accuracy", patience=5, min_delta=1.0)]
    full, full_hist = _run(tmp_path / "a", callbacks=stopper())
    _run(tmp_path / "b", epochs=1, callbacks=stopper())
    resumed, hist = _run(tmp_path / "b", resume=tmp_path / "b" / "last.npz", init_seed=5,
                         callbacks=stopper())
    _same_state(full, resumed)
    assert hist.notes == full_hist.notes and "restored the weights of epoch 1" in hist.notes[0]
    for k in ("loss", "accuracy", "val_loss", "lr"):
        assert hist.history[k] == full_hist.history[k]


def test_ctrl_c_saves_mid_epoch_and_resume_is_bitwise(tmp_path):
    full, full_hist = _run(tmp_path / "a")
    with pytest.raises(TrainingInterrupted, match=r"epoch 2, step 4 of 10.*last\.npz"):
        _run(tmp_path / "b", callbacks=[_CtrlC(1, 4)])
    meta = read_checkpoint(tmp_path / "b" / "last.npz").meta
    assert (meta["epoch"], meta["step"]) == (1, 4)
    resumed, hist = _run(tmp_path / "b", resume=tmp_path / "b" / "last.npz", init_seed=5)
    _same_state(full, resumed)
    assert hist.history["loss"] == full_hist.history["loss"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_aborts_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(KeyboardInterrupt) as info:
        _run(tmp_path, callbacks=[_CtrlC(1, 4, times=2)])
    assert not isinstance(info.value, TrainingInterrupted)
    meta = read_checkpoint(tmp_path / "last.npz").meta
    assert (meta["epoch"], meta["step"]) == (1, 0)


def test_resume_refuses_another_run(tmp_path):
    _run(tmp_path, epochs=1)
    x, y = separable(200, shape=(1, 6, 6), seed=1)
    model = SoftmaxRegression((1, 6, 6), 3)
    with pytest.raises(CheckpointError, match="batch_size 16.*batch_size 20"):
        fit(model, (x, y), epochs=2, batch_size=20, validation_split=0.2, seed=7,
            progress="quiet", resume=tmp_path / "last.npz")


def test_early_stopping_restores_the_best_weights(tmp_path):
    x, y = separable(300, seed=2)
    wrong = Split(x[:100], (y[:100] + 1) % 3)   # validation gets worse as training improves
    kw = dict(batch_size=32, validation_data=wrong, seed=1, progress="quiet")
    one = SoftmaxRegression((1, 4, 4), 3)
    fit(one, (x, y), epochs=1, **kw)
    model = SoftmaxRegression((1, 4, 4), 3)
    stop = EarlyStopping(monitor="val_loss", patience=2)
    hist = fit(model, (x, y), epochs=10, callbacks=[stop, Checkpoints(tmp_path)], **kw)
    assert hist.epoch == [1, 2, 3]
    assert "val_loss has not improved for 2 epochs" in hist.stop_reason
    assert np.array_equal(model.parameters["dense.weight"], one.parameters["dense.weight"])
    best = read_checkpoint(tmp_path / "best.npz")
    assert best.meta["epoch"] == 1
    assert np.array_equal(best.weights["dense.weight"], one.parameters["dense.weight"])


class _Explode(Schedule):
    def lr_at(self, epoch, step):
        return 0.05 if epoch == 0 else 1e300


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_guard_names_the_step_and_keeps_the_checkpoint(tmp_path):
    x, y = separable(160, seed=4)
    model = SoftmaxRegression((1, 4, 4), 3)
    with pytest.raises(TrainingDiverged) as info:
        fit(model, (x, y), epochs=3, batch_size=16, schedule=_Explode(), seed=0,
            progress="quiet", callbacks=[Checkpoints(tmp_path)])
    text = str(info.value)
    assert "at epoch 2, step" in text and "last.npz (after epoch 1)" in text
    assert "is unchanged" in text
    last = read_checkpoint(tmp_path / "last.npz")
    assert last.meta["epoch"] == 1
    assert all(np.isfinite(a).all() for a in last.weights.values())


def test_history_files_and_json_lines(tmp_path):
    x, y = separable(120)
    out = io.StringIO()
    fit(SoftmaxRegression((1, 4, 4), 3), (x, y), epochs=3, batch_size=32,
        validation_split=0.25, progress="json", stream=out, callbacks=[HistoryFiles(tmp_path)])
    lines = [json.loads(s) for s in out.getvalue().splitlines()]
    assert [d["epoch"] for d in lines] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(lines[0])
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["epoch"] == [1, 2, 3] and saved["val_loss"] == [d["val_loss"] for d in lines]
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "loss", "accuracy"] and len(rows) == 4


def test_progress_bar_prints_epoch_summaries(capsys):
    x, y = separable(64)
    fit(SoftmaxRegression((1, 4, 4), 3), (x, y), epochs=2, batch_size=16, progress="bar")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("epoch 1/2  loss ") and "accuracy" in out[0]
    assert out[1].startswith("epoch 2/2")


def test_curves_without_matplotlib_give_one_notice(tmp_path, monkeypatch):
    import sys
    from cnnc.train import CurvesPlot
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    notices = []
    x, y = separable(64)
    fit(SoftmaxRegression((1, 4, 4), 3), (x, y), epochs=2, batch_size=16, progress="quiet",
        callbacks=[CurvesPlot(tmp_path / "curves.png", notices.append)])
    assert notices == ["note: matplotlib is not installed, so no curves.png was drawn "
                       "(pip install matplotlib)"]
    assert not (tmp_path / "curves.png").exists()


def test_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image
    from cnnc.train import CurvesPlot
    x, y = separable(64)
    fit(SoftmaxRegression((1, 4, 4), 3), (x, y), epochs=2, batch_size=16, progress="quiet",
        validation_split=0.25, callbacks=[CurvesPlot(tmp_path / "curves.png")])
    with Image.open(tmp_path / "curves.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100


class _Poison(Callback):
    """Puts a NaN into a weight at the end of epoch 2, before the checkpoints are saved."""

    priority = 5

    def on_epoch_end(self, state, logs):
        if state.epoch == 2:
            state.model.parameters["dense.bias"][1] = np.nan


def test_nan_weights_are_never_checkpointed(tmp_path):
    x, y = separable(64)
    with pytest.raises(TrainingDiverged, match=r"(?s)after epoch 2 \('dense.bias'\).*best.npz "
                                               r"was not written.*last.npz \(after epoch 1\)"):
        fit(SoftmaxRegression((1, 4, 4), 3), (x, y), epochs=3, batch_size=16, seed=0,
            progress="quiet", callbacks=[_Poison(), Checkpoints(tmp_path)])
    assert read_checkpoint(tmp_path / "last.npz").meta["epoch"] == 1
