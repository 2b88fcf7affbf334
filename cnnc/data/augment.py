"""Random geometric augmentation (Keras ImageDataGenerator's set) as one batched affine warp.

Per image, the parameters are drawn in Python from the caller's numpy Generator, composed
into one 2x3 matrix that maps an output pixel to its source point, and the whole batch is
warped by ``cnnc._kernels.augment.warp_affine`` (OpenMP over images, GIL released). The
same Generator state gives the same batch bit for bit, whatever the thread count.

Composition, in coordinates centred on the image (output point q -> source point):
``source = R(rotation) @ S(shear) @ Z(zoom) @ F(flips) @ q - shift``. So a positive shift
moves the content right/down, a zoom factor above 1 shows more of the image (content
shrinks), and a flip mirrors the output. Segmentation masks get the same matrices with
nearest sampling; outside the image they read 0 (background) in "constant" mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnc._kernels.augment import FILL_MODES, warp_affine
from cnnc.errors import DataError
from cnnc.threads import effective_n_threads


@dataclass(frozen=True)
class Augmentation:
    """What to vary, with Keras ImageDataGenerator's names and meanings.

    rescale: factor multiplied into the pixels first (e.g. 1/255 for 0..255 data; the
        built-in loaders already give [0, 1]).
    rotation_range: degrees; the angle is uniform in [-r, r].
    width_shift_range, height_shift_range: fractions of the width/height; uniform in [-f, f].
    shear_range: degrees; the shear angle is uniform in [-s, s].
    zoom_range: z gives independent x and y factors uniform in [1 - z, 1 + z]; a pair
        (lo, hi) gives the interval itself.
    horizontal_flip, vertical_flip: mirror half of the images, at random.
    fill_mode: "constant" (cval), "nearest", "reflect" or "wrap": what lies outside.
    interpolation: "bilinear" or "nearest" for images (masks are always nearest).
    brightness_range: b adds one value uniform in [-b, b] to every pixel of an image.
    contrast_range: c scales an image's deviation from its mean by a factor uniform in
        [1 - c, 1 + c] (c < 1).
    noise_std: standard deviation of Gaussian noise added to every pixel.
    Colour changes follow the warp; masks are never changed by them.
    """

    rescale: float | None = None
    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    interpolation: str = "bilinear"
    brightness_range: float = 0.0
    contrast_range: float = 0.0
    noise_std: float = 0.0

    def __post_init__(self):
        if self.fill_mode not in FILL_MODES:
            raise DataError(f"augmentation: fill_mode must be one of {', '.join(FILL_MODES)}; "
                            f"got {self.fill_mode!r}")
        if self.interpolation not in ("bilinear", "nearest"):
            raise DataError("augmentation: interpolation must be \"bilinear\" or \"nearest\"; "
                            f"got {self.interpolation!r}")
        for name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range",
                     "brightness_range", "contrast_range", "noise_std"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise DataError(f"augmentation: {name} must be a finite number >= 0; "
                                f"got {value}")
        if self.contrast_range >= 1:
            raise DataError(f"augmentation: contrast_range must be below 1; got "
                            f"{self.contrast_range}")
        lo, hi = self.zoom_bounds
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
            raise DataError(f"augmentation: zoom_range must give 0 < low <= high; got "
                            f"{self.zoom_range!r}")
        if not np.isfinite(self.cval) or not np.isfinite(self.rescale or 1.0):
            raise DataError("augmentation: cval and rescale must be finite numbers")

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        z = self.zoom_range
        if isinstance(z, (tuple, list)):
            return float(z[0]), float(z[1])
        return 1.0 - z, 1.0 + z

    @property
    def is_geometric(self) -> bool:
        """True when some image is moved (a warp is needed), not just rescaled."""
        return (self.rotation_range > 0 or self.width_shift_range > 0
                or self.height_shift_range > 0 or self.shear_range > 0
                or self.zoom_bounds != (1.0, 1.0) or self.horizontal_flip or self.vertical_flip)

    def matrices(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        """Draw n random transforms: [n, 2, 3] float64, output pixel -> source point."""
        def uniform(half: float) -> np.ndarray:
            return rng.uniform(-half, half, n) if half else np.zeros(n)

        rotation = np.deg2rad(uniform(self.rotation_range))
        shift_x = uniform(self.width_shift_range) * width
        shift_y = uniform(self.height_shift_range) * height
        shear = np.deg2rad(uniform(self.shear_range))
        lo, hi = self.zoom_bounds
        zoom_x, zoom_y = rng.uniform(lo, hi, (2, n)) if (lo, hi) != (1.0, 1.0) else (1.0, 1.0)
        flip_x = rng.random(n) < 0.5 if self.horizontal_flip else False
        flip_y = rng.random(n) < 0.5 if self.vertical_flip else False
        return affine_matrices(n, height, width, rotation, shear, zoom_x, zoom_y, shift_x,
                               shift_y, flip_x, flip_y)

    def apply(self, rng: np.random.Generator, x: np.ndarray, masks: np.ndarray | None = None,
              n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment a batch: x [N, C, H, W] float32 and optional masks [N, H, W] int64.

        Returns new arrays (x', masks' or None); the inputs are not modified. ``n_threads``:
        kernel threads (None: cnnc.get_num_threads()).
        """
        if x.ndim != 4:
            raise DataError(f"augmentation expects images [N, C, H, W]; got {list(x.shape)}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.rescale is not None:
            x = x * np.float32(self.rescale)
        if self.is_geometric:
            x, masks = self._warp(rng, x, masks, effective_n_threads(n_threads))
        else:
            x = x if self.rescale is not None else x.copy()
            masks = None if masks is None else masks.copy()
        return self._recolour(rng, x), masks

    def _warp(self, rng: np.random.Generator, x: np.ndarray, masks: np.ndarray | None,
              threads: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Move the images (and masks) by one random affine transform each."""
        n, _, h, w = x.shape
        if masks is not None and masks.shape != (n, h, w):
            raise DataError(f"augmentation: masks must be [N, H, W] = {[n, h, w]}; "
                            f"got {list(masks.shape)}")
        mats = self.matrices(rng, n, h, w)
        out = np.empty_like(x)
        warp_affine(x, out, mats, self.fill_mode, self.cval, self.interpolation == "bilinear",
                    threads)
        if masks is None:
            return out, None
        m = np.ascontiguousarray(masks, dtype=np.int64)[:, None]
        m_out = np.empty_like(m)
        warp_affine(m, m_out, mats, self.fill_mode, 0.0, False, threads)
        return out, m_out[:, 0]

    def _recolour(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """Contrast, brightness and noise, in place on ``x`` (a fresh array); no draws
        are made for settings that are off, so other settings' streams stay the same."""
        per_image = (len(x), 1, 1, 1)
        if self.contrast_range:
            factor = rng.uniform(1 - self.contrast_range, 1 + self.contrast_range, per_image)
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x -= mean
            x *= factor.astype(np.float32)
            x += mean
        if self.brightness_range:
            x += rng.uniform(-self.brightness_range, self.brightness_range,
                             per_image).astype(np.float32)
        if self.noise_std:
            x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(self.noise_std)
        return x


def affine_matrices(n: int, height: int, width: int, rotation=0.0, shear=0.0, zoom_x=1.0,
                    zoom_y=1.0, shift_x=0.0, shift_y=0.0, flip_x=False,
                    flip_y=False) -> np.ndarray:
    """[n, 2, 3] output-pixel -> source-point matrices for per-image parameters.

    Angles in radians, shifts in pixels; each argument is a scalar or an array of n.
    ``source = R(rotation) @ S(shear) @ diag(zoom_x, zoom_y) @ F(flips) @ (p - centre)
    + centre - shift``, with R = [[c, -s], [s, c]] and S = [[1, -sin(shear)],
    [0, cos(shear)]]. Identity, flips and whole-pixel shifts give exact integer matrices.
    """
    rotation, shear, zoom_x, zoom_y, shift_x, shift_y, flip_x, flip_y = (
        np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
        for v in (rotation, shear, zoom_x, zoom_y, shift_x, shift_y, flip_x, flip_y))
    c, s = np.cos(rotation), np.sin(rotation)
    sin_sh, cos_sh = np.sin(shear), np.cos(shear)
    col_x = zoom_x * np.where(flip_x > 0, -1.0, 1.0)
    col_y = zoom_y * np.where(flip_y > 0, -1.0, 1.0)
    mats = np.empty((n, 2, 3))
    mats[:, 0, 0] = c * col_x
    mats[:, 1, 0] = s * col_x
    mats[:, 0, 1] = (-c * sin_sh - s * cos_sh) * col_y
    mats[:, 1, 1] = (-s * sin_sh + c * cos_sh) * col_y
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    mats[:, 0, 2] = centre_x - (mats[:, 0, 0] * centre_x + mats[:, 0, 1] * centre_y) - shift_x
    mats[:, 1, 2] = centre_y - (mats[:, 1, 0] * centre_x + mats[:, 1, 1] * centre_y) - shift_y
    return mats
