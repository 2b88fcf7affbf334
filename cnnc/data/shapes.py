"""The built-in synthetic image set: coloured shapes on noisy backgrounds.

Every image holds ``objects`` shapes of the first ``classes`` kinds in SHAPE_KINDS, each at
a random position, size and rotation. A shape's brightness differs from the background's
by CONTRAST (lighter or darker at random) before both get a random per-channel tint; the
background has a linear brightness ramp, and Gaussian noise covers every pixel. Shapes are drawn
from signed distance functions; anti-aliased edges cover each pixel by the fraction
``clip(0.5 - distance, 0, 1)``. Everything follows from ``seed``: the training split from
the stream ``[seed, 0]``, the test split from ``[seed, 1]``.

Because polarity, colour, position, size and rotation all vary, no single pixel says much
about the class: a linear model on raw pixels stays far below a small CNN.
"""
from __future__ import annotations

import numpy as np

from cnnc.data.source import TASKS, DataSource, Split
from cnnc.errors import DataError

# Most distinct first: the 2-class default (circle vs cross) is the quickest to learn.
SHAPE_KINDS = ("circle", "cross", "triangle", "square", "ring", "star", "crescent")
CONTRAST = (0.3, 0.6)   # range of |foreground - background| brightness
RADIUS = (0.18, 0.34)   # range of a shape's outer radius, as a fraction of the image size
CHUNK = 64              # images rendered at once (fixed: the noise stream depends on it)


def shapes(classes: int = 2, size: int = 64, count: int = 4000, channels: int = 3,
           seed: int = 0, test_count: int | None = None, task: str = "classify",
           objects: int = 1, noise: float = 0.05, antialias: bool = True) -> DataSource:
    """The synthetic shapes data set.

    classes: number of shape kinds (the first ``classes`` of SHAPE_KINDS), 1..7.
    size: image height and width; channels: 1 (grey), 3 (RGB) or any other count.
    count: training images; test_count: test images (default count // 4).
    task: "classify" (y = kind index [N], balanced: count // classes of each, remainder to
        the first kinds; needs objects=1), "segment" (y = per-pixel class [N, H, W],
        0 background, kind k as k + 1) or "detect" (y = boxes [N, objects, 5] as
        (kind, x0, y0, x1, y1) in pixels, x1/y1 exclusive).
    objects: shapes per image (later ones are drawn over earlier ones).
    noise: standard deviation of the Gaussian pixel noise.
    """
    _check_args(classes, size, count, channels, task, objects, noise)
    test_count = count // 4 if test_count is None else test_count
    if test_count < 0:
        raise DataError(f"shapes: test_count must be >= 0; got {test_count}")
    train = _render_split(np.random.default_rng([seed, 0]), count, classes, size, channels,
                          task, objects, noise, antialias)
    test = None
    if test_count:
        test = _render_split(np.random.default_rng([seed, 1]), test_count, classes, size,
                             channels, task, objects, noise, antialias)
    names = SHAPE_KINDS[:classes]
    if task == "segment":
        names = ("background",) + names
    origin = f"shapes(classes={classes}, size={size}, count={count}, seed={seed})"
    return DataSource(train, test, names, task, origin)


def _check_args(classes, size, count, channels, task, objects, noise) -> None:
    counts = dict(classes=classes, size=size, count=count, channels=channels, objects=objects)
    for name, value in counts.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise DataError(f"shapes: {name} must be a whole number; got {value!r}")
    if not 1 <= classes <= len(SHAPE_KINDS):
        raise DataError(f"shapes: classes must be 1..{len(SHAPE_KINDS)} "
                        f"({', '.join(SHAPE_KINDS)}); got {classes}")
    if size < 8:
        raise DataError(f"shapes: size must be at least 8 pixels; got {size}")
    if count < 1 or channels < 1 or objects < 1:
        raise DataError(f"shapes: count, channels and objects must be >= 1; got count={count}, "
                        f"channels={channels}, objects={objects}")
    if task not in TASKS:
        raise DataError(f"shapes: task must be one of {', '.join(TASKS)}; got {task!r}")
    if task == "classify" and objects != 1:
        raise DataError("shapes: a classification image holds one shape; use objects=1, or "
                        "task=\"segment\" / \"detect\" for several shapes per image")
    if not 0.0 <= noise <= 1.0:
        raise DataError(f"shapes: noise must lie in [0, 1]; got {noise}")


def _render_split(rng: np.random.Generator, n: int, classes: int, size: int, channels: int,
                  task: str, objects: int, noise: float, antialias: bool) -> Split:
    """Draw every random parameter up front, then render in chunks of CHUNK images."""
    if task == "classify":
        kinds = rng.permutation(np.arange(n) % classes)[:, None]
    else:
        kinds = rng.integers(0, classes, size=(n, objects))
    scale = 1.0 / np.sqrt(objects)  # several objects per image: smaller ones
    radius = rng.uniform(*RADIUS, size=(n, objects)) * size * scale
    centre = rng.uniform(0.0, 1.0, size=(n, objects, 2)) * (size - 1 - 2 * radius[..., None]) \
        + radius[..., None]
    angle = rng.uniform(0.0, 2 * np.pi, size=(n, objects))
    bg_level = rng.uniform(0.0, 1.0, size=n)
    ramp = rng.uniform(-0.25, 0.25, size=(n, 2))
    delta = rng.uniform(*CONTRAST, size=(n, objects)) * rng.choice([-1.0, 1.0], size=(n, objects))
    # keep the foreground inside [0, 1]: flip the polarity where it would leave the range
    fg_level = bg_level[:, None] + delta
    fg_level = np.where((fg_level < 0) | (fg_level > 1), bg_level[:, None] - delta, fg_level)
    # per-channel tints make colours; one channel stays grey
    tint = rng.uniform(-0.2, 0.2, (n, objects + 1, channels)) if channels > 1 else 0.0
    levels = np.concatenate([bg_level[:, None], fg_level], axis=1)
    colours = np.clip(levels[..., None] + tint, 0.0, 1.0)  # [n, 1 + objects, channels]

    x = np.empty((n, channels, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int64) if task == "segment" else None
    boxes = np.zeros((n, objects, 5), np.float32)
    for lo in range(0, n, CHUNK):
        sl = slice(lo, min(n, lo + CHUNK))
        _render_chunk(rng, kinds[sl], radius[sl], centre[sl], angle[sl], colours[sl], ramp[sl],
                      noise, antialias, x[sl], None if masks is None else masks[sl], boxes[sl])
    if task == "classify":
        return Split(x, kinds[:, 0].astype(np.int64))
    return Split(x, masks if task == "segment" else boxes)


def _render_chunk(rng, kinds, radius, centre, angle, colours, ramp, noise, antialias,
                  out, masks, boxes) -> None:
    """Render into out [n, C, S, S], masks [n, S, S] (unless None) and boxes [n, M, 5]."""
    n, objects = kinds.shape
    size = out.shape[-1]
    f32 = np.float32
    grid = np.arange(size, dtype=f32)
    py, px = grid[None, :, None], grid[None, None, :]
    # background: its colour times (1 + a linear ramp across the image)
    rel = (grid - f32((size - 1) / 2)) / f32(size)
    ramp = ramp.astype(f32)
    shade = 1 + ramp[:, 0, None, None] * rel[None, None, :] + ramp[:, 1, None, None] * rel[:, None]
    img = colours[:, 0, :, None, None].astype(f32) * shade[:, None]
    for j in range(objects):
        c, s = np.cos(angle[:, j]).astype(f32), np.sin(angle[:, j]).astype(f32)
        r = radius[:, j].astype(f32)[:, None, None]
        dx = px - centre[:, j, 0, None, None].astype(f32)
        dy = py - centre[:, j, 1, None, None].astype(f32)
        u = (c[:, None, None] * dx + s[:, None, None] * dy) / r
        v = (c[:, None, None] * dy - s[:, None, None] * dx) / r
        dist = np.empty_like(u)
        for k in np.unique(kinds[:, j]):
            sel = kinds[:, j] == k
            dist[sel] = _SDF[SHAPE_KINDS[k]](u[sel], v[sel]) * r[sel]  # in pixels
        cover = np.clip(0.5 - dist, 0, 1, out=dist) if antialias else (dist <= 0).astype(f32)
        inside = cover >= 0.5
        if masks is not None:
            np.copyto(masks, kinds[:, j, None, None] + 1, where=inside)
        boxes[:, j] = _boxes(inside, kinds[:, j])
        diff = colours[:, j + 1, :, None, None].astype(f32) - img
        diff *= cover[:, None]
        img += diff
    if noise:
        img += f32(noise) * rng.standard_normal(img.shape, dtype=f32)
    np.clip(img, 0, 1, out=out)


def _boxes(inside: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """(kind, x0, y0, x1, y1) of each image's covered pixels; x1/y1 exclusive."""
    cols, rows = inside.any(axis=1), inside.any(axis=2)
    size = inside.shape[1]
    x0, x1 = cols.argmax(axis=1), size - cols[:, ::-1].argmax(axis=1)
    y0, y1 = rows.argmax(axis=1), size - rows[:, ::-1].argmax(axis=1)
    return np.stack([kinds, x0, y0, x1, y1], axis=1).astype(np.float32)


# Signed distance (negative inside) of each kind in unit coordinates: the shape fits in the
# unit disc. Polygon distances are exact along edges and approximate near corners, which is
# all the anti-aliasing needs.
def _circle(u, v):
    return np.hypot(u, v) - 0.85


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) - 0.65


def _triangle(u, v):
    # equilateral, circumradius 1: the inradius is 0.5; edge normals 120 degrees apart
    a = np.array([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3])
    return np.max([u * np.cos(t) + v * np.sin(t) for t in a], axis=0) - 0.5


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - 0.95, av - 0.28), np.maximum(au - 0.28, av - 0.95))


def _ring(u, v):
    return np.abs(np.hypot(u, v) - 0.7) - 0.2


def _star(u, v):
    # five points: the radius runs linearly between 0.45 (valleys) and 1.0 (tips) in angle
    phase = (np.arctan2(v, u) / (2 * np.pi / 5)) % 1.0
    edge = 0.45 + 0.55 * np.abs(1.0 - 2.0 * phase)
    return (np.hypot(u, v) - edge) * 0.6


def _crescent(u, v):
    return np.maximum(np.hypot(u, v) - 0.9, 0.72 - np.hypot(u - 0.45, v))


_SDF = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross,
        "ring": _ring, "star": _star, "crescent": _crescent}
