"""A small numpy model satisfying cnnc.train's protocol, with real gradients: multinomial
logistic regression trained by SGD with momentum, with dropout on its input whose mask is
drawn from (seed, step) as the compiled network's dropout is."""
from __future__ import annotations

import numpy as np


class SoftmaxRegression:
    def __init__(self, input_shape, classes, lr=0.1, momentum=0.9, dropout=0.0, init_seed=0):
        d = int(np.prod(input_shape))
        rng = np.random.default_rng(init_seed)
        self.input_shape = tuple(input_shape)
        self.learning_rate = lr
        self.momentum, self.dropout = momentum, dropout
        self.seed = 0
        self.last_output = None
        self._w = rng.normal(0.0, 0.01, (d, classes))
        self._b = np.zeros(classes)
        self._vw, self._vb = np.zeros_like(self._w), np.zeros_like(self._b)
        self._step = np.zeros(1, dtype=np.int64)

    @property
    def parameters(self):
        return {"dense.weight": self._w, "dense.bias": self._b}

    def optimizer_state(self):
        return {"dense.weight.velocity": self._vw, "dense.bias.velocity": self._vb,
                "step": self._step}

    def _probs(self, x):
        z = x.reshape(len(x), -1).astype(np.float64) @ self._w + self._b
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x, batch_size=None):
        return self._probs(x)

    def loss(self, x, y):
        p = self._probs(x)
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    def gradients(self, x, y):
        """(loss, dW, db) of the mean cross-entropy on x (after any dropout)."""
        n = len(x)
        x = x.reshape(n, -1).astype(np.float64)
        p = self._probs(x)
        loss = float(-np.mean(np.log(p[np.arange(n), y])))
        g = p.copy()
        g[np.arange(n), y] -= 1.0
        g /= n
        return loss, x.T @ g, g.sum(axis=0), p

    def train_step(self, x, y):
        x = x.reshape(len(x), -1).astype(np.float64)
        if self.dropout:
            keep = np.random.default_rng([self.seed, int(self._step[0])]).random(x.shape)
            x = x * (keep >= self.dropout) / (1.0 - self.dropout)
        loss, gw, gb, p = self.gradients(x, y)
        self._vw *= self.momentum
        self._vw -= self.learning_rate * gw
        self._vb *= self.momentum
        self._vb -= self.learning_rate * gb
        self._w += self._vw
        self._b += self._vb
        self._step += 1
        self.last_output = p
        return loss


def separable(n, shape=(1, 4, 4), classes=3, seed=0):
    """Images whose class is the argmax of a fixed linear map, with a margin."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    centres = rng.normal(0.0, 1.0, (classes, d))
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(0.0, 0.3, (n, d))
    return x.reshape(n, *shape).astype(np.float32), y.astype(np.int64)

