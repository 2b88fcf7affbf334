"""How hard is the built-in shapes set? A logistic regression on raw pixels.

    python benchmarks/shapes_baseline.py [--classes 4] [--size 32] [--count 6000]

Multinomial logistic regression (softmax over standardised pixels, full-batch Adam, L2
chosen on a held-out part of the training split) on the same data `specs/shapes.cnn`
trains on. A small CNN reaches ~99.9% there (README); this baseline shows the task cannot
be solved from pixel statistics alone.
"""
from __future__ import annotations

import argparse

import numpy as np

from cnnc.data import shapes


def softmax_regression(x: np.ndarray, y: np.ndarray, k: int, l2: float,
                       iters: int = 300, lr: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias fitted by full-batch Adam on the mean cross-entropy + l2/2 |W|^2."""
    n, d = x.shape
    w, b = np.zeros((d, k)), np.zeros(k)
    onehot = np.eye(k)[y]
    moments = [[np.zeros_like(w), np.zeros_like(w)], [np.zeros_like(b), np.zeros_like(b)]]
    for t in range(1, iters + 1):
        z = x @ w + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / n
        for param, grad, (m, v) in ((w, x.T @ g + l2 * w, moments[0]),
                                    (b, g.sum(0), moments[1])):
            m[...] = 0.9 * m + 0.1 * grad
            v[...] = 0.999 * v + 0.001 * grad * grad
            param -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--count", type=int, default=6000)
    args = ap.parse_args()
    data = shapes(classes=args.classes, size=args.size, count=args.count)
    flat = lambda s: s.x.reshape(len(s.x), -1).astype(np.float64)
    x, y, x_test = flat(data.train), data.train.y, flat(data.test)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, x_test = (x - mean) / std, (x_test - mean) / std
    cut = len(x) * 4 // 5
    accuracy = lambda wb, a, t: float(((a @ wb[0] + wb[1]).argmax(1) == t).mean())
    best = max((accuracy(softmax_regression(x[:cut], y[:cut], args.classes, l2),
                         x[cut:], y[cut:]), l2) for l2 in (1e-3, 1e-2, 1e-1))
    wb = softmax_regression(x, y, args.classes, best[1])
    print(f"shapes(classes={args.classes}, size={args.size}, count={args.count}): logistic "
          f"regression on raw pixels: train {accuracy(wb, x, y):.3f}, test "
          f"{accuracy(wb, x_test, data.test.y):.3f} (chance {1 / args.classes:.3f}; "
          f"l2={best[1]})")


if __name__ == "__main__":
    main()
