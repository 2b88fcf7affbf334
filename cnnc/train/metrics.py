"""Metrics computed from numpy outputs, accumulated over batches.

Each :class:`Metric` is updated batch by batch (``update(outputs, targets)``) and read with
``result()``; its running counts are JSON-able (``state``/``load_state``) so an interrupted
epoch resumes with the same figures. Outputs are [N, K] class scores or [N, K, H, W]
per-pixel scores (K == 1: a binary output), as probabilities or logits (``from_logits``).
Targets are integer class indices ([N] or [N, H, W]), one-hot rows, or 0/1 values for a
binary output.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnc._kernels.metrics import count_correct_binary, count_correct_topk
from cnnc.errors import CnncError
from cnnc.threads import get_num_threads

def _is_binary(outputs: np.ndarray) -> bool:
    return outputs.ndim == 1 or outputs.shape[1] == 1


def _float(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=a.dtype if a.dtype in (np.float32, np.float64)
                                else np.float64)


def class_labels(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Targets as int64 class indices shaped like the outputs without their class axis."""
    targets = np.asarray(targets)
    want = (outputs.shape[0], *outputs.shape[2:])
    if targets.shape == outputs.shape and not _is_binary(outputs):  # one-hot rows
        return np.ascontiguousarray(np.argmax(targets, axis=1), dtype=np.int64)
    return np.ascontiguousarray(targets.reshape(want)).astype(np.int64, copy=False)


def predicted_classes(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """The predicted class per sample (or pixel): argmax over axis 1, or the threshold of
    a binary output (0.5 for probabilities, 0 for logits)."""
    if _is_binary(outputs):
        threshold = 0.0 if from_logits else 0.5
        return (outputs.reshape(outputs.shape[0], *outputs.shape[2:]) > threshold).astype(
            np.int64)
    return np.argmax(outputs, axis=1)


class Metric:
    """Base of the accumulated metrics."""

    name = "metric"

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError


class Mean(Metric):
    """A weighted mean, e.g. of per-batch losses weighted by batch size."""

    def __init__(self, name: str = "loss"):
        self.name = name
        self.reset()

    def add(self, value: float, weight: int = 1) -> None:
        self.total += float(value) * weight
        self.count += int(weight)

    def result(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def state(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state(self, state: dict[str, Any]) -> None:
        self.total, self.count = float(state["total"]), int(state["count"])


class _Counted(Metric):
    """correct / total over all positions seen."""

    def __init__(self):
        self.reset()

    def result(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def reset(self) -> None:
        self.correct, self.total = 0, 0

    def state(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total}

    def load_state(self, state: dict[str, Any]) -> None:
        self.correct, self.total = int(state["correct"]), int(state["total"])


class Accuracy(_Counted):
    """Binary accuracy for a one-unit output, categorical (argmax) accuracy otherwise."""

    name = "accuracy"

    def __init__(self, from_logits: bool = False):
        self.from_logits = from_logits
        super().__init__()

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        outputs = _float(outputs)
        if _is_binary(outputs):
            t = np.ascontiguousarray(np.asarray(targets).reshape(outputs.shape),
                                     dtype=outputs.dtype)
            self.correct += count_correct_binary(outputs, t, 0.0 if self.from_logits else 0.5,
                                                 get_num_threads())
            self.total += outputs.size
        else:
            labels = class_labels(outputs, targets)
            self.correct += count_correct_topk(outputs, labels, 1, get_num_threads())
            self.total += labels.size


class TopK(_Counted):
    """The label is among the k highest scores."""

    def __init__(self, k: int):
        self.k = int(k)
        self.name = f"top{self.k}_accuracy"
        super().__init__()

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        outputs = _float(outputs)
        if _is_binary(outputs):
            raise CnncError(f"{self.name} needs an output with several classes; "
                            "this network has one output unit")
        labels = class_labels(outputs, targets)
        self.correct += count_correct_topk(outputs, labels, self.k, get_num_threads())
        self.total += labels.size


class _Confusion(Metric):
    """Metrics read off a confusion matrix (rows: true class, columns: predicted)."""

    def __init__(self, from_logits: bool = False):
        self.from_logits = from_logits
        self.reset()

    def update(self, outputs: np.ndarray, targets: np.ndarray) -> None:
        k = 2 if _is_binary(outputs) else outputs.shape[1]
        pred = predicted_classes(outputs, self.from_logits).reshape(-1)
        true = class_labels(outputs, targets).reshape(-1)
        if true.size and (true.min() < 0 or true.max() >= k):
            raise CnncError(f"{self.name}: labels must lie in 0..{k - 1}")
        counts = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
        if self.matrix.shape != counts.shape:
            self.matrix = np.zeros_like(counts)
        self.matrix += counts

    def reset(self) -> None:
        self.matrix = np.zeros((0, 0), dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {"matrix": self.matrix.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.matrix = np.array(state["matrix"], dtype=np.int64).reshape(
            len(state["matrix"]), -1)

    def _per_class(self, denominator: np.ndarray) -> np.ndarray:
        """Diagonal / denominator for classes where the denominator is > 0."""
        tp = np.diag(self.matrix).astype(np.float64)
        seen = denominator > 0
        return tp[seen] / denominator[seen]


class MeanIoU(_Confusion):
    """Mean over classes of |pred ∩ true| / |pred ∪ true|, over the classes that occur in
    the targets or the predictions."""

    name = "mean_iou"

    def result(self) -> float:
        if not self.matrix.size:
            return float("nan")
        union = self.matrix.sum(0) + self.matrix.sum(1) - np.diag(self.matrix)
        iou = self._per_class(union)
        return float(iou.mean()) if iou.size else float("nan")


class Precision(_Confusion):
    """Two classes (one output unit or two): precision of class 1. More: the mean over
    the predicted classes (macro average)."""

    name = "precision"

    def result(self) -> float:
        return _binary_or_macro(self, self.matrix.sum(0))


class Recall(_Confusion):
    """Two classes: recall of class 1. More: the mean over the true classes."""

    name = "recall"

    def result(self) -> float:
        return _binary_or_macro(self, self.matrix.sum(1))


def _binary_or_macro(metric: _Confusion, denominator: np.ndarray) -> float:
    if not metric.matrix.size:
        return float("nan")
    if metric.matrix.shape == (2, 2):
        return float(metric.matrix[1, 1] / denominator[1]) if denominator[1] else float("nan")
    per_class = metric._per_class(denominator)
    return float(per_class.mean()) if per_class.size else float("nan")


def make_metrics(names: Sequence[str], from_logits: bool = False) -> list[Metric]:
    """Metric objects for names as a spec gives them: accuracy, top5_accuracy (any k),
    precision, recall, mean_iou. "loss" is always computed and is skipped here."""
    out: list[Metric] = []
    for name in names:
        top = re.fullmatch(r"top_?(\d+)(_accuracy)?", name)
        if name == "loss":
            continue
        if name == "accuracy":
            out.append(Accuracy(from_logits))
        elif top:
            out.append(TopK(int(top.group(1))))
        elif name == "precision":
            out.append(Precision(from_logits))
        elif name == "recall":
            out.append(Recall(from_logits))
        elif name == "mean_iou":
            out.append(MeanIoU(from_logits))
        else:
            raise CnncError(f"unknown metric '{name}'",
                            hint="metrics: accuracy, top5_accuracy, precision, recall, "
                                 "mean_iou")
    return out
