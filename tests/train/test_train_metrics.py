import numpy as np
import pytest

from cnnc.errors import CnncError
from cnnc.train.metrics import (Accuracy, Mean, MeanIoU, Precision, Recall, TopK,
                                make_metrics)


def _feed(metric, outputs, targets, chunk=7):
    """Update in uneven batches: the accumulated result must equal the whole-set one."""
    for lo in range(0, len(outputs), chunk):
        metric.update(outputs[lo:lo + chunk], targets[lo:lo + chunk])
    return metric.result()


def test_categorical_accuracy_and_topk_match_numpy():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(53, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 53)
    assert _feed(Accuracy(), scores, labels) == pytest.approx(
        np.mean(scores.argmax(1) == labels))
    rank = (scores > scores[np.arange(53), labels][:, None]).sum(1)
    for k in (1, 3, 5):
        assert _feed(TopK(k), scores, labels) == pytest.approx(np.mean(rank < k))
    onehot = np.eye(6)[labels]
    assert _feed(Accuracy(), scores, onehot) == pytest.approx(
        np.mean(scores.argmax(1) == labels))


def test_binary_accuracy_probabilities_and_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(41, 1))
    probs = 1 / (1 + np.exp(-logits))
    y = rng.integers(0, 2, 41)
    want = np.mean((logits[:, 0] > 0) == (y == 1))
    assert _feed(Accuracy(), probs, y) == pytest.approx(want)
    assert _feed(Accuracy(from_logits=True), logits, y.reshape(-1, 1)) == pytest.approx(want)


def _numpy_iou(pred, true, k):
    ious = []
    for c in range(k):
        union = np.sum((pred == c) | (true == c))
        if union:
            ious.append(np.sum((pred == c) & (true == c)) / union)
    return np.mean(ious)


def test_segmentation_accuracy_and_mean_iou():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(9, 4, 5, 7))
    masks = rng.integers(0, 3, (9, 5, 7))    # class 3 never occurs in the targets
    pred = scores.argmax(1)
    assert _feed(Accuracy(), scores, masks, chunk=4) == pytest.approx(np.mean(pred == masks))
    assert _feed(MeanIoU(), scores, masks, chunk=4) == pytest.approx(_numpy_iou(pred, masks, 4))


def test_precision_recall_binary_and_macro():
    rng = np.random.default_rng(4)
    probs = rng.random((60, 1))
    y = rng.integers(0, 2, 60)
    pred = probs[:, 0] > 0.5
    tp = np.sum(pred & (y == 1))
    assert _feed(Precision(), probs, y) == pytest.approx(tp / pred.sum())
    assert _feed(Recall(), probs, y) == pytest.approx(tp / (y == 1).sum())
    scores = rng.normal(size=(60, 4))
    labels = rng.integers(0, 4, 60)
    p = scores.argmax(1)
    prec = [np.mean(labels[p == c] == c) for c in range(4) if np.any(p == c)]
    rec = [np.mean(p[labels == c] == c) for c in range(4) if np.any(labels == c)]
    assert _feed(Precision(), scores, labels) == pytest.approx(np.mean(prec))
    assert _feed(Recall(), scores, labels) == pytest.approx(np.mean(rec))


def test_state_round_trip_and_mean():
    rng = np.random.default_rng(5)
    scores, labels = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    for metric in (Accuracy(), TopK(2), MeanIoU(), Precision()):
        metric.update(scores[:10], labels[:10])
        copy = type(metric)(2) if isinstance(metric, TopK) else type(metric)()
        copy.load_state(metric.state())
        for m in (metric, copy):
            m.update(scores[10:], labels[10:])
        assert copy.result() == metric.result()
    mean = Mean()
    mean.add(2.0, 3)
    mean.add(4.0, 1)
    assert mean.result() == pytest.approx(2.5)


def test_make_metrics_names():
    names = [m.name for m in make_metrics(["accuracy", "loss", "top5_accuracy", "mean_iou"])]
    assert names == ["accuracy", "top5_accuracy", "mean_iou"]
    with pytest.raises(CnncError, match="unknown metric 'acuracy'"):
        make_metrics(["acuracy"])
    with pytest.raises(CnncError, match="several classes"):
        TopK(5).update(np.zeros((2, 1)) + 0.3, np.array([0, 1]))
