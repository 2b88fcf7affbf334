"""Accuracy counting: top-k over classes against integer labels, and binary accuracy.

Scores are (N, K) or (N, K, H, W) with classes on axis 1 (a prediction per pixel for
segmentation). Each function returns the number of correct positions (an int); the caller
divides by the count it wants. Counts are integer sums, so any thread count gives the same.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t

include "elementwise_common.pxi"


def count_correct_topk(scores, labels, k: int = 1, n_threads=None) -> int:
    """Positions whose label is among the k highest scores (k=1: argmax accuracy).

    Ties go to the lowest class index, as in ``argmax``: the label's rank is the number of
    classes with a higher score plus those with an equal score and a lower index, and the
    position counts when that rank is < k.

    scores : (N, K) or (N, K, H, W) float32/float64, IN
    labels : (N,) or (N, H, W) int64, IN; labels outside [0, K) are a ValueError
    """
    _float_arg("scores", scores, ndim=(2, 3, 4))
    _labels_arg("labels", labels, (scores.shape[0], *scores.shape[2:]))
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    nt = _threads(n_threads, scores.size)
    if labels.size == 0:
        return 0
    lab = labels.reshape(labels.shape[0], -1)
    if scores.dtype == np.float32:
        return _topk[float](_nck(scores), lab, k, nt)
    return _topk[double](_nck(scores), lab, k, nt)


def count_correct_binary(outputs, targets, threshold: float = 0.5, n_threads=None) -> int:
    """Elements where (output > threshold) == (target > 0.5).

    Use threshold 0.5 for probabilities (a sigmoid output) and 0.0 for logits.
    outputs, targets : same shape, float32/float64, IN
    """
    _float_arg("outputs", outputs)
    _like("targets", targets, "outputs", outputs)
    nt = _threads(n_threads, outputs.size)
    if outputs.dtype == np.float32:
        return _binary[float](outputs.reshape(-1), targets.reshape(-1), threshold, nt)
    return _binary[double](outputs.reshape(-1), targets.reshape(-1), threshold, nt)


cdef Py_ssize_t _topk(const floating[:, :, ::1] z, const int64_t[:, ::1] lab, Py_ssize_t k,
                      int nt) noexcept nogil:
    cdef Py_ssize_t S = z.shape[2], p, n, s, j, y, rank, correct = 0
    cdef floating v
    for p in prange(z.shape[0] * S, schedule="static", num_threads=nt):
        n = p // S
        s = p % S
        y = lab[n, s]
        v = z[n, y, s]
        rank = 0
        for j in range(z.shape[1]):
            if z[n, j, s] > v or (z[n, j, s] == v and j < y):
                rank = rank + 1
        if rank < k:
            correct += 1
    return correct


cdef Py_ssize_t _binary(const floating[::1] x, const floating[::1] t, double threshold,
                        int nt) noexcept nogil:
    cdef Py_ssize_t i, correct = 0
    for i in prange(x.shape[0], schedule="static", num_threads=nt):
        if (x[i] > threshold) == (t[i] > 0.5):
            correct += 1
    return correct
