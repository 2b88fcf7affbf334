"""Batched affine warp: the one kernel behind every geometric augmentation.

Layout: images NCHW ([n, c, h, w]); segmentation masks [n, h, w]. Pixel centres sit at
integer coordinates, x along the width and y along the height. For each image i the 2x3
matrix ``mats[i]`` maps an *output* pixel (x, y) to the *source* point
``(a00*x + a01*y + a02, a10*x + a11*y + a12)``, which is sampled from the source image:

* nearest: the pixel at ``floor(x + 0.5), floor(y + 0.5)``;
* bilinear: the four pixels around the point, weighted by the fractional parts.

A tap outside the image is resolved by the fill mode, per axis: ``constant`` reads
``cval``, ``nearest`` clamps to the edge (aaa|abcd|ddd), ``reflect`` mirrors about the
edge (dcba|abcd|dcba), ``wrap`` repeats (abcd|abcd|abcd). Each output element is written
by one thread from the same arithmetic, so results do not depend on the thread count.
"""
from cython.parallel cimport prange
from libc.math cimport floor, isfinite
from libc.stdint cimport int64_t

from omp_shim cimport cnnc_openmp_enabled

ctypedef fused pixel_t:
    float
    double
    int64_t

# Fill modes, in the order of FILL_MODES.
FILL_MODES = ("constant", "nearest", "reflect", "wrap")
cdef enum:
    CONSTANT = 0
    NEAREST = 1
    REFLECT = 2
    WRAP = 3
# Source coordinates are clamped to this magnitude before the cast to an integer index, so
# absurd matrices stay defined behaviour; at this size a pixel's fraction is already lost.
cdef double COORD_LIMIT = 1e15


cdef inline Py_ssize_t _fold(int64_t i, int64_t n, int mode) noexcept nogil:
    """Index i on an axis of length n under the fill mode; -1 means 'use cval'."""
    cdef int64_t p
    if 0 <= i < n:
        return i
    if mode == CONSTANT:
        return -1
    if mode == NEAREST:
        return 0 if i < 0 else n - 1
    if mode == REFLECT:
        p = i % (2 * n)
        if p < 0:
            p += 2 * n
        return p if p < n else 2 * n - 1 - p
    p = i % n  # WRAP
    if p < 0:
        p += n
    return p


cdef inline double _clamp(double v) noexcept nogil:
    if v > COORD_LIMIT:
        return COORD_LIMIT
    if v < -COORD_LIMIT:
        return -COORD_LIMIT
    return v


cdef void _warp_image(const pixel_t[:, :, ::1] src, pixel_t[:, :, ::1] dst,
                      const double[:, ::1] m, int mode, double cval,
                      bint bilinear) noexcept nogil:
    """dst[c, y, x] = src sampled at m @ (x, y, 1), for every channel c."""
    cdef Py_ssize_t n_c = src.shape[0], h = src.shape[1], w = src.shape[2]
    cdef Py_ssize_t c, y, x, x0, x1, y0, y1
    cdef double sx, sy, fx, fy, fx0, fy0, v00, v01, v10, v11
    for y in range(dst.shape[1]):
        for x in range(dst.shape[2]):
            sx = _clamp(m[0, 0] * x + m[0, 1] * y + m[0, 2])
            sy = _clamp(m[1, 0] * x + m[1, 1] * y + m[1, 2])
            if not bilinear:
                x0 = _fold(<int64_t>floor(sx + 0.5), w, mode)
                y0 = _fold(<int64_t>floor(sy + 0.5), h, mode)
                for c in range(n_c):
                    if x0 < 0 or y0 < 0:
                        dst[c, y, x] = <pixel_t>cval
                    else:
                        dst[c, y, x] = src[c, y0, x0]
                continue
            fx0 = floor(sx)
            fy0 = floor(sy)
            fx = sx - fx0
            fy = sy - fy0
            x0 = _fold(<int64_t>fx0, w, mode)
            x1 = _fold(<int64_t>fx0 + 1, w, mode)
            y0 = _fold(<int64_t>fy0, h, mode)
            y1 = _fold(<int64_t>fy0 + 1, h, mode)
            for c in range(n_c):
                v00 = src[c, y0, x0] if (y0 >= 0 and x0 >= 0) else cval
                v01 = src[c, y0, x1] if (y0 >= 0 and x1 >= 0) else cval
                v10 = src[c, y1, x0] if (y1 >= 0 and x0 >= 0) else cval
                v11 = src[c, y1, x1] if (y1 >= 0 and x1 >= 0) else cval
                dst[c, y, x] = <pixel_t>((1.0 - fy) * ((1.0 - fx) * v00 + fx * v01)
                                         + fy * ((1.0 - fx) * v10 + fx * v11))


def warp_affine(const pixel_t[:, :, :, ::1] src,  # IN  [n, c, h, w]
                pixel_t[:, :, :, ::1] dst,        # OUT [n, c, h_out, w_out]
                const double[:, :, ::1] mats,     # IN  [n, 2, 3] output -> source
                str fill_mode="constant",
                double cval=0.0,
                bint bilinear=True,
                int n_threads=1):
    """Warp a batch of images by one affine matrix per image (see the module docstring).

    ``src`` and ``dst`` are C-contiguous float32, float64 or int64 (masks; nearest only)
    arrays of the same dtype; ``dst`` may have another height and width than ``src``.
    Raises ValueError on mismatched shapes, aliasing, non-finite matrices, an unknown fill
    mode, or bilinear sampling of an integer array.
    """
    cdef Py_ssize_t n = src.shape[0], i, r, k, src_bytes, dst_bytes
    cdef const char* src_lo
    cdef const char* dst_lo
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}; got {fill_mode!r}")
    cdef int mode = FILL_MODES.index(fill_mode)
    if dst.shape[0] != n or dst.shape[1] != src.shape[1]:
        raise ValueError(f"warp_affine: dst has shape {tuple(dst.shape[i] for i in range(4))}"
                         f" but src has {src.shape[0]} images of {src.shape[1]} channels")
    if mats.shape[0] != n or mats.shape[1] != 2 or mats.shape[2] != 3:
        raise ValueError(f"warp_affine: mats must have shape ({n}, 2, 3); "
                         f"got {tuple(mats.shape[i] for i in range(3))}")
    if n == 0 or dst.shape[1] == 0 or dst.shape[2] == 0 or dst.shape[3] == 0:
        return
    if src.shape[2] == 0 or src.shape[3] == 0:
        raise ValueError("warp_affine: the source images are empty (height or width 0)")
    if pixel_t is int64_t and bilinear:
        raise ValueError("warp_affine: integer arrays (masks) can only be sampled nearest")
    if not isfinite(cval) or (pixel_t is int64_t and abs(cval) > 2.0 ** 62):
        raise ValueError(f"warp_affine: cval must be a finite value of the array's type; "
                         f"got {cval}")
    for i in range(n):
        for r in range(2):
            for k in range(3):
                if not isfinite(mats[i, r, k]):
                    raise ValueError(f"warp_affine: matrix {i} is not finite: "
                                     f"{[[mats[i, a, b] for b in range(3)] for a in range(2)]}")
    src_lo = <const char*>&src[0, 0, 0, 0]
    dst_lo = <const char*>&dst[0, 0, 0, 0]
    src_bytes = src.shape[0] * src.shape[1] * src.shape[2] * src.shape[3] * sizeof(pixel_t)
    dst_bytes = dst.shape[0] * dst.shape[1] * dst.shape[2] * dst.shape[3] * sizeof(pixel_t)
    if src_lo < dst_lo + dst_bytes and dst_lo < src_lo + src_bytes:
        raise ValueError("warp_affine: src and dst must not overlap in memory")
    if not cnnc_openmp_enabled() or n_threads < 1:
        n_threads = 1
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads):
        _warp_image(src[i], dst[i], mats[i], mode, cval, bilinear)
