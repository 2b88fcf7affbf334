"""cnnc._kernels.metrics (accuracy counts) against numpy."""
import numpy as np
import pytest

from cnnc._kernels import metrics as M


def topk_reference(scores, labels, k):
    """Rank of the label with ties to the lowest index, via a stable sort on -score."""
    z = np.moveaxis(scores, 1, -1).reshape(-1, scores.shape[1])
    order = np.argsort(-z, axis=1, kind="stable")
    rank = np.argmax(order == labels.reshape(-1, 1), axis=1)
    return int((rank < k).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (65, 10), (127, 2), (2, 5, 3, 7), (1, 17, 1, 1)])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_matches_numpy(shape, k, dtype):
    rng = np.random.default_rng(1)
    # few distinct values, so ties are common
    scores = rng.integers(0, 4, shape).astype(dtype)
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    assert M.count_correct_topk(scores, labels, k) == topk_reference(scores, labels, k)
    if k == 1:
        assert M.count_correct_topk(scores, labels) == int(
            (scores.argmax(axis=1) == labels).sum())


def test_ties_go_to_the_lowest_index():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert M.count_correct_topk(scores, np.array([0, 1])) == 2
    assert M.count_correct_topk(scores, np.array([1, 2])) == 0
    assert M.count_correct_topk(scores, np.array([1, 2]), k=2) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_accuracy(dtype):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((33, 1)).astype(dtype)
    targets = rng.integers(0, 2, (33, 1)).astype(dtype)
    want = int(((logits > 0) == (targets > 0.5)).sum())
    assert M.count_correct_binary(logits, targets, threshold=0.0) == want
    probs = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(dtype)
    assert M.count_correct_binary(probs, targets) == int(((probs > 0.5) == (targets > 0.5)).sum())


def test_threads_agree_and_bad_inputs_raise():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((5000, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 5000)
    assert (M.count_correct_topk(scores, labels, 3, n_threads=1)
            == M.count_correct_topk(scores, labels, 3, n_threads=2))
    for call in [lambda: M.count_correct_topk(scores, labels + 1),
                 lambda: M.count_correct_topk(scores, labels.astype(np.int32)),
                 lambda: M.count_correct_topk(scores, labels, k=0),
                 lambda: M.count_correct_binary(scores, scores[:, :3].copy())]:
        with pytest.raises(ValueError):
            call()
