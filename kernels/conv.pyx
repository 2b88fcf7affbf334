"""Convolution kernels: conv2d, conv_transpose2d and nearest upsampling, forward and backward.

Layout: activations NCHW, conv weights OIHW = [out, in/groups, kh, kw]; conv_transpose
weights are PyTorch's [in, out/groups, kh, kw]. float32 or float64 (the dtype of x).
Padding is (top, bottom, left, right), an int or (ph, pw); asymmetric padding covers TF
"same" with stride 2 (extra row at the bottom/right).

Conv as a GEMM, per image and group (P = OH*OW, K = C/groups * kh * kw):

    y_g[M/groups, P] = W_g[M/groups, K] @ col(x_g)[K, P]      (+ bias, activation)
    dcol[K, P]       = W_g^T @ dy_g;  dx_g = col2im(dcol)     (the adjoint of im2col)
    dW_g[., K]      += dy_g @ col(x_g)^T, summed over the batch in image order

Paths, chosen from the shapes: 1x1 / stride 1 / no padding uses x itself as col (no
workspace); depthwise (groups == C_in > 1) is a direct loop; other ungrouped stride-1
layers take the direct path (conv_direct.pxi: a zero-padded copy of x read in place by
register-tiled micro-kernels, no im2col) unless Winograd applies; so do strided layers
with dilation 1 and more than one tap (conv_strided.pxi: x copied into its stride phase
planes, on which the taps read consecutive pixels again), whose backward-data is one
direct convolution of dy per phase of dx (ResNet-20's stride-2 3x3 layers: 1.1-1.4x
im2col forward and backward-data); 1x1 layers with a stride or padding copy the pixels
they sample and run the 1x1 path's GEMMs on the copy (conv_pointwise.pxi: ResNet-20's
shortcuts 1.2-3x im2col); the rest is im2col + GEMM. With stride 1 and >= 16
input channels per group (>= 4 when the direct path takes it), backward-data is instead
the forward conv of dy with the flipped, transposed weights (padding d*(k-1) - p): a
GEMM as wide as the forward's and no col2im scatter. The weight gradient is direct for
stride-1 layers with <= 32 input channels (measured: 1.1-2x im2col there), except where
Winograd F(4x4) takes it (3x3 with 32 channels or more). Images whose output has few
pixels (P < 512) share
a chunk: their columns sit side by side so that one GEMM is wide enough to run well.
A forward chunk of at most 4 output pixels in all (VGG's last layers at batch 1) skips the
GEMM: each weight row is dotted with the few columns as it streams from memory
(conv_dot.h), where the GEMM would pack all of W to fill 4 of its 16-32 columns.

The weight gradient with kw * C/groups >= 16 and a small dW (<= 2**18 elements: the
thin layers, where this GEMM was slowest) builds the columns transposed,
colT[P, (kh, kw, C/groups)], from a channels-last copy of the chunk's x: runs of kw*C/groups
contiguous values, and a GEMM dW'[M, K] += dy[M, P] @ colT that reads colT in place (its
fast orientation) instead of transposing every im2col element while packing; dW' is
reordered to OIHW when the partial sums are added. ResNet-20's 16-64 channel layers:
1.2-1.5x faster than im2col + the transposed-B GEMM, LeNet-5's conv2 (6 channels, 5x5)
1.5x; slower with 1-3 channel 3x3 or 5x5 inputs (runs of 3-15 values) and for VGG's
0.6-2.4M-element dW (the reorder pass), so those keep im2col.

Winograd F(2x2, 3x3) or F(4x4, 3x3) (conv_winograd.pxi) replaces im2col for 3x3 stride-1
ungrouped layers with >= 64 input and output channels and enough output tiles in the call
to pay for transforming the weights, forward and flipped backward-data (F(2x2): 1.3-1.7x
faster there; slower at 16-32 channels, where its GEMMs are thin), and for the weight
gradient of such layers (1.2-1.6x im2col at 64-512 channels; at 32 only F(4x4) pays).
F(4x4) is taken where it saves a quarter of F(2x2)'s products (8x8 and larger outputs;
4x4 from 64 images): 1.3-1.7x F(2x2) on ResNet-20's stage 3 and VGG's 8x8-32x32 layers,
in all three passes. Thinner 3x3 stride-1 ungrouped layers (16-64 channels, not
both >= 64: ResNet-20's stages 1-2, the seed CNN's conv2 and its flipped backward-data)
take a vector Winograd F(2x2, 3x3) instead (conv_winograd.h): tiles in vector lanes over
a polyphase copy of x, transformed weights packed once per call, a micro-kernel per 4x4
position that feeds the output transform (bias, relu) directly; 1.2-1.5x the direct path.

conv2d_maxpool_forward (inference's fused conv -> 2x2 max-pool) runs 3x3 stride-1 layers
by Winograd F(4x4) with the tiles in lanes over 16 polyphase planes, each 4x4 output tile
pooled to 2x2 in registers (conv_winograd.pxi, "pooled" path): against the conv then the
pool, 1.6-2.0x on the seed CNN's two layers and 2.4x on VGG-11's first at batch 1
(benchmarks/bench_conv_pool.py); at 64 input channels 1.2x at batch 1 but 0.7x at 64,
where the batch-lanes path takes the conv, so the fusion pass leaves those.
Its chunk scratch has the vector Winograd's bound (a chunk's transformed input at most
WINO_V_ELEMS, 16 planes instead of 4), and it keeps its transformed weights as the
forward does.

Thin layers on small images (4-32 input channels, C*kh*kw >= 100, at most 24 output
columns, from 16 images: LeNet-5's conv2 and its flipped backward-data, ResNet-20's
stride-2 entries) take the direct path with a lane per image instead (conv_lanes.pxi): chunks
of 16 images transposed so that a vector holds one pixel of each, the direct path's sums
over whole vectors at any width and stride, no padding columns computed; the weight
gradient too for layers of up to 16 channels (1.2-1.5x the direct path or im2col).

Layers with at most 16 output pixels per image and >= 64 channels in and out (VGG's last
stages on CIFAR), ungrouped with horizontal stride 1, take per-tap GEMMs instead
(conv_taps.pxi): x channels-last and the weights tap-major, one GEMM over the channels per
(tap, output row) that reads inside x, padding taps skipped; backward-data always, forward
and weight gradient from 4 images (at batch 1 the weights' layout passes cost more). At
batch 64 on 2x2 images with 512 channels: forward 2x, backward-data 2.4x, weight gradient
3.7x Winograd's time; on 4x4 even to 1.3x.

Workspace bound. The im2col buffer is tiled over output pixels: a tile holds at most
COL_TILE_ELEMS = 2**19 elements (2 MiB in float32), or one column of K elements when K
alone is larger; a multi-image chunk holds at most 2**20 elements, a Winograd chunk 2**20 +
2**19; the transposed weight gradient adds a channels-last copy of the chunk's x, used only
when it holds at most 2**19 elements; the direct path's padded copy of x (and, for its
weight gradient, of dy) holds at most 2**20 + 2**19 elements per thread, as do the strided
path's phase planes of x or its padded dy, and the lane-per-image path's transposed band
of x and stage row (its weight gradient: x and dy); the sampled 1x1 path's samples at
most 2**19 elements (C*OW <= 2**19, else not taken); a vector Winograd
chunk at most 2**20 (else that path is not taken); the per-tap path M*K elements of rearranged
weights (or their gradient) and a chunk of channels-last x (or dx) and y (or dy) of at
most 2**20 (else not taken). So ``conv2d_workspace_size`` <=
n_threads * (max(2**20, K) + 2**19) + 4*M*K elements (the last term: transformed or flipped
weights, or up to 4 partial weight gradients). VGG-16's conv1_2 (K = 576, P = 50176: 115 MB
of columns per image un-tiled) needs 4 MiB per thread and 0.4 MiB of weights.

conv_transpose2d is the adjoint of conv2d: its forward is conv2d's backward-data, its
backward-data is conv2d's forward, its weight gradient conv2d's with the roles of x and dy
swapped; all three reuse the conv2d code on the "conv view" (input = the transpose's
output).

Determinism: chunks depend on the shapes only. Forward and backward-data give each chunk
one owner (its GEMMs on one thread) or, with a single worker, run the threads inside the
GEMM, which is bitwise identical for any thread count; the weight gradient sums chunks
in a fixed order, either into fixed partial sums (a run of chunks, one thread each) added
in order, or with the threads inside the GEMM; each bias-gradient channel and each
depthwise plane has one owner. Results are bitwise identical for any n_threads.

Chunks (and partial sums) go to the threads through a work queue (work_share.h): each
thread starts on an even, contiguous share, as a static schedule would give it, and a
thread that finishes first takes the remaining chunks of the slowest share from its end.
On this project's 2-vCPU VM one vCPU often runs 1.15-1.5x slower than the other for
seconds at a time (the host's doing: an FMA loop timed on each thread shows it), and a
static split then waits for the slow one: ResNet-20's two-thread training step ran 3-5%
faster with the queue (VGG-11's: the same). Its granularity is the chunk count: 8-12
chunks per layer in ResNet-20's first two stages at batch 64, only 4 in the third;
weight-gradient partials 12 in the first stage (one per chunk where Z is small) and 2 in
the others (stealing needs about 3 or more per thread to help).

Worker stride: a caller that runs many convs with one workspace (the executor) may pass
``worker_stride`` (from conv2d_worker_scratch); the batch-lanes Winograd paths then put
worker t's scratch at t * worker_stride from the workspace's start and what the workers
share after all n_threads of them, so each thread's scratch stays in its own caches from
call to call (see _affine). The bound above holds for worker_stride = 0.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

cimport numpy as cnp
import numbers

import numpy as np

cnp.import_array()

include "gemm_core.pxi"
include "conv_args.pxi"

cdef extern from "conv_dot.h" nogil:
    void cnnc_dot_rows_s(const float* w, Py_ssize_t K, Py_ssize_t rows, const float* ct,
                         int nq, float* out, Py_ssize_t ldo)
    void cnnc_dot_rows_d(const double* w, Py_ssize_t K, Py_ssize_t rows, const double* ct,
                         int nq, double* out, Py_ssize_t ldo)

cdef extern from "work_share.h" nogil:
    ctypedef struct cnnc_queue:
        pass
    void cnnc_queue_init(cnnc_queue* q, long long items, int threads)
    long long cnnc_queue_take(cnnc_queue* q, int tid)


cdef enum:
    COL_TILE = 524288  # elements of one im2col tile (2 MiB of float32), see above
    FLIP_MIN_CHANNELS = 16
    CHUNK_COLS = 512  # images share a chunk until their output pixels reach this
    WINO_COLS = 512  # Winograd tiles per chunk, at most ...
    WINO_CHUNK_ROUND = 4  # ... in a number of chunks rounded up to a multiple of this ...
    WINO_MIN_COLS = 64  # ... while that leaves at least this many tiles per chunk
    PARALLEL_MIN_ELEMS = 65536  # smaller im2col / col2im copies run on one thread
    WGRAD_SLOTS = 4  # partial weight gradients (see _gemm_bwd_weight)
    WGRAD_SLOT_MAX_ELEMS = 262144  # ... for weights up to this size
    WGRAD_T_ELEMS = 65536  # transposed columns built at once (see _bwd_weight_chunk_t) ...
    WGRAD_T_ROWS = 256  # ... but at least this many pixels, for the GEMM's depth
    WGRAD_T_MIN_RUN = 16  # kw * C/groups: shorter runs copy too slowly to beat im2col
    DOT_MAX_COLS = 4  # forward chunks with at most this many output pixels: _dot_fwd
    DOT_BLOCK = 64  # ... weight rows per block (one owner each)
    WINO_MIN_CHANNELS = 64  # below this the 16 GEMMs are too thin to beat im2col
    WINO_MIN_TILES = 64  # fewer tiles (per call) do not pay for the weight transform ...
    WINO_TILE_CHANNELS = 16384  # ... nor fewer than this / min(C, M) tiles
    WINO_W_LANES = 128  # kernels per block of the Winograd weight transform
    WINO_COL_UNIT = 16  # ... forward chunks are whole multiples of this many tiles
    WINO_NR = 32  # ... and V's columns (the largest float NR)
    WINO_PAD = 16  # ... elements between V's positions beyond the NR-rounded size
    WINO_LANES = 16  # ... tiles transformed at once, in vector lanes
    WINO_MB = 48  # ... output channels per block of the forward's GEMMs (every MR divides)
    WINO_MAX_COLS = 1024  # ... a bound on any chunk's tiles (WINO_COLS, WINO_WG_COLS)
    WINO_WG_MIN_CHANNELS = 32  # Winograd weight gradient: below, the transforms dominate
    WINO_WG_COLS = 256  # ... tiles per chunk (the GEMMs' depth) where the workspace allows
    WINO_WG_SLOTS = 2  # ... partial Z summed separately (one thread each) ...
    WINO_WG_SLOT_MAX = 262144  # ... when Z (16 * M * C elements) is at most this
    WINO_WG_SMALL_Z = 16384  # ... one per chunk (at most WINO_WG_CHUNK_SLOTS) when Z is
    WINO_WG_CHUNK_SLOTS = 16  # this small (batch lanes): what the work queue can balance
    WINO_VEC_MIN = 16  # vector Winograd: channels from this (see _wvec_ok) ...
    WINO_VEC_MIN_TILES = 16  # ... and output tiles in the call
    WINO_VL = 16  # ... its chunks' tiles are whole vectors of this many
    WINO_V_ELEMS = 131072  # ... and their transformed input at most this (~L2)
    WINO_BAT_ELEMS = 262144  # ... and with a lane per image (see _wbat_ok) ...
    WINO_BAT_WG_TILES = 32  # ... whose weight gradient sums chunks of this many tiles ...
    WINO_BAT_WG_ELEMS = 1179648  # ... or as many as keep their V and P within this
    WINO_BAT_DOT_ELEMS = 458752  # ... or this with the lane-summing kernel (see there) ...
    WINO_BAT_WG_MIN = 16  # ... but at least this many tiles, else that kernel is not taken
    WINO_BAT_DOT_MAX = 1024  # ... summing lanes itself up to this M*C, else by GEMMs
    WPOOL_MAX_CHANNELS = 32  # conv -> max-pool in one pass pays up to this C (see below)
    SUM_LANES = 16  # partial sums of the bias gradient (see _channel_sum)
    KEEP_WEIGHTS_MAX = 1048576  # transformed weights a bound forward keeps (elements)

COL_TILE_ELEMS = COL_TILE
ACTIVATIONS = {None: ACT_NONE, "none": ACT_NONE, "relu": ACT_RELU, "leaky_relu": ACT_LEAKY,
               "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH}

cdef enum:
    PATH_IM2COL = 0
    PATH_1X1 = 1
    PATH_DEPTHWISE = 2


cdef struct Geom:
    # conv view: x [n, c, h, w] -> y [n, m, oh, ow]; weight [m, cg, kh, kw]
    Py_ssize_t n, c, h, w, m, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw
    Py_ssize_t groups, cg, mg, kdim, tile, workers
    Py_ssize_t ipt  # images per chunk (> 1 only when one image's columns are few)
    Py_ssize_t ws1  # workspace elements per worker
    Py_ssize_t xt  # weight gradient: channels-last copy of a chunk's x (0: not used)
    Py_ssize_t threads  # as requested
    Py_ssize_t wstride  # the caller's fixed distance between workers' scratch (0: none)
    Py_ssize_t wcols, wworkers  # Winograd: tiles per chunk, workers
    Py_ssize_t wtile  # ... output tile: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3))
    Py_ssize_t wnb, wna  # vector Winograd: images per chunk, tile rows per chunk
    int path, wino, wvec, wbat, direct, lanes
    int taps  # the passes that take the per-tap path (TAPS_FWD | TAPS_DATA | TAPS_WG)


include "conv_winograd.pxi"
include "conv_direct.pxi"
include "conv_lanes.pxi"
include "conv_strided.pxi"
include "conv_taps.pxi"
include "conv_pointwise.pxi"


# ---------------------------------------------------------------------------------------
# geometry and argument checks (Python level, before any nogil work)

def conv2d_output_size(in_size, kernel, stride=1, padding=0, dilation=1) -> tuple:
    """Output (height, width) of a convolution over an input of ``in_size`` = (H, W)."""
    h, w = _pair("in_size", in_size, 1)
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    dh, dw = _pair("dilation", dilation, 1)
    pt, pb, pl, pr = _padding(padding)
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: kernel {(kh, kw)} with dilation {(dh, dw)} does not fit the "
                         f"padded input {(h + pt + pb, w + pl + pr)}")
    return oh, ow


def conv_transpose2d_output_size(in_size, kernel, stride=1, padding=0, output_padding=0,
                                 dilation=1) -> tuple:
    """Output (height, width) of a transposed convolution (PyTorch ConvTranspose2d)."""
    h, w = _pair("in_size", in_size, 1)
    kh, kw = _pair("kernel", kernel, 1)
    sh, sw = _pair("stride", stride, 1)
    dh, dw = _pair("dilation", dilation, 1)
    oph, opw = _pair("output_padding", output_padding, 0)
    pt, pb, pl, pr = _padding(padding)
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(f"conv_transpose2d: output_padding {(oph, opw)} must be smaller than "
                         f"the stride or the dilation")
    oh = (h - 1) * sh - pt - pb + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - pl - pr + dw * (kw - 1) + opw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv_transpose2d: padding {(pt, pb, pl, pr)} leaves no output")
    return oh, ow


cdef Geom _geom(tuple x_shape, tuple w_shape, tuple y_shape, stride, padding, dilation,
                Py_ssize_t groups, int n_threads):
    """Conv-view geometry; the caller has checked that the shapes agree."""
    cdef Geom g
    g.n, g.c, g.h, g.w = x_shape
    g.m, g.cg, g.kh, g.kw = w_shape
    g.oh, g.ow = y_shape[2], y_shape[3]
    g.sh, g.sw = _pair("stride", stride, 1)
    g.dh, g.dw = _pair("dilation", dilation, 1)
    g.pt, _, g.pl, _ = _padding(padding)
    g.groups = groups
    g.threads = n_threads
    g.wstride = 0
    _finish(&g)
    return g


cdef inline bint _affine(const Geom* g, Py_ssize_t per) noexcept nogil:
    """Whether a call whose workers need `per` elements of scratch each puts worker t's at
    t * g.wstride from the workspace's start (and what the workers share after all
    g.threads of them): the executor gives every op of a plan the same workspace and the
    same stride, so a thread's scratch is where it left it in the op before (in its own
    caches), not bytes another thread wrote last. Paths that take it: the batch-lanes
    Winograd forward, flipped backward-data and weight gradient."""
    return g.wstride > 0 and g.wstride >= per


cdef void _finish(Geom* g) noexcept nogil:
    """Derived sizes, chunking and the path of a geometry whose basic fields are set."""
    cdef Py_ssize_t P = g.oh * g.ow
    g.mg = g.m // g.groups
    g.kdim = g.cg * g.kh * g.kw
    if (g.kh == 1 and g.kw == 1 and g.sh == 1 and g.sw == 1 and g.pt == 0 and g.pl == 0
            and g.oh == g.h and g.ow == g.w):
        g.path = PATH_1X1
    elif g.groups > 1 and g.cg == 1 and g.groups == g.c:
        g.path = PATH_DEPTHWISE
    else:
        g.path = PATH_IM2COL
    g.tile = min(P, max(1, COL_TILE // g.kdim))
    g.ipt = max(1, min(g.n, CHUNK_COLS // P, COL_TILE // (g.kdim * P), COL_TILE // (g.mg * P)))
    if g.path == PATH_1X1:
        g.ipt = 1
    g.workers = max(1, min(g.threads, (g.n + g.ipt - 1) // g.ipt))
    # im2col columns, plus gathered dy / GEMM output when images share a chunk
    g.ws1 = g.kdim * g.tile if g.ipt == 1 else (g.kdim + g.mg) * g.ipt * P
    g.xt = g.ipt * g.cg * g.h * g.w
    if (g.path != PATH_IM2COL or g.xt > COL_TILE or g.kw * g.cg < WGRAD_T_MIN_RUN
            or g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS):
        g.xt = 0
    g.wbat = _wbat_ok(g)
    g.wvec = not g.wbat and _wvec_ok(g)
    g.wino = _wino_ok(g) and not g.wvec and not g.wbat
    g.wtile = _wino_tile(g)
    _wino_chunking(g)
    g.lanes = _lanes_ok(g) and not g.wino and not g.wvec and not g.wbat
    g.direct = _direct_ok(g) and not g.wino and not g.wvec and not g.wbat and not g.lanes
    g.taps = _taps_passes(g)


cdef inline bint _flips(const Geom* g) noexcept nogil:
    """Backward-data runs as a forward conv of dy with flipped weights: stride 1 only, and
    only with enough input channels per group to make that GEMM's M worthwhile."""
    if g.path != PATH_IM2COL or g.sh != 1 or g.sw != 1:
        return False
    cdef Geom f
    if g.cg >= FLIP_MIN_CHANNELS:
        return True
    f = _flipped(g)
    return g.cg >= 4 and (f.direct or f.lanes)


cdef inline bint _wino_flip(const Geom* f) noexcept nogil:
    """The flipped conv f runs GEMM Winograd, whose weight transform reads the original
    weights flipped in place (a flipped copy besides its U would break the 4*M*K term of
    the workspace bound under F(4x4))."""
    return f.wino and not (f.taps & TAPS_FWD)


cdef Geom _flipped(const Geom* g) noexcept nogil:
    """Geometry of dx = conv(dy, flip(W)^T): stride 1, padding d*(k-1) - p (may be < 0)."""
    cdef Geom f = g[0]
    f.c, f.h, f.w, f.m, f.oh, f.ow = g.m, g.oh, g.ow, g.c, g.h, g.w
    f.cg = g.mg
    f.pt = g.dh * (g.kh - 1) - g.pt
    f.pl = g.dw * (g.kw - 1) - g.pl
    _finish(&f)
    return f


cdef Py_ssize_t _fwd_elems(const Geom* g) noexcept nogil:
    if g.taps & TAPS_FWD:
        return _taps_workspace(g)
    if g.lanes:
        return _lanes_fwd_ws(g)
    if g.direct and (g.sh > 1 or g.sw > 1):
        return _strided_fwd_ws(g)
    if g.direct:
        return _direct_fwd_ws(g)
    if g.wvec:
        return _wvec_workspace(g)
    if g.wbat:
        return _wbat_workspace(g)
    return _wino_workspace(g) if g.wino else g.workers * g.ws1


cdef Py_ssize_t _workspace_elems(const Geom* g):
    """Elements of scratch the largest of forward, backward-data, backward-weight needs."""
    cdef Geom f
    cdef Py_ssize_t need
    if g.path != PATH_IM2COL:
        return 0
    if _pointwise(g):
        return _pw_workspace(g)
    need = max(_fwd_elems(g), g.workers * g.ws1)
    if _wgrad_slots(g) > 1 or g.xt:
        need = max(need, g.workers * (g.ws1 + g.xt) + _wgrad_slots(g) * g.m * g.kdim)
    if _flips(g):
        f = _flipped(g)
        need = max(need, _fwd_elems(&f) + (0 if _wino_flip(&f) else g.m * g.kdim))
    if _strided_data_ok(g):
        need = max(need, _strided_data_ws(g))
    if g.taps & TAPS_WG:  # counted below
        pass
    elif _lanes_wg_ok(g):
        need = max(need, _lanes_wg_ws(g))
    elif _wbat_wg_ok(g):
        need = max(need, _wbat_wg_workspace(g))
    elif _wino_wg_ok(g):
        need = max(need, _wino_wg_workspace(g))
    elif _direct_wg_ok(g):
        need = max(need, _direct_wg_ws(g))
    if g.taps:
        need = max(need, _taps_workspace(g))
    return need


def _conv_shapes(x_shape, w_shape, groups) -> int:
    """Check that x [N, C, H, W] and weight [M, C/groups, kh, kw] agree; returns groups."""
    groups = int(groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d needs 4-D x and weight, got {x_shape} and {w_shape}")
    if min(x_shape[1:]) < 1 or min(w_shape) < 1:
        raise ValueError(f"conv2d: empty dimension in x {x_shape} or weight {w_shape}")
    if x_shape[1] != w_shape[1] * groups:
        raise ValueError(f"conv2d: x has {x_shape[1]} channels but weight {w_shape} with "
                         f"groups={groups} expects {w_shape[1] * groups}")
    if w_shape[0] % groups:
        raise ValueError(f"conv2d: {w_shape[0]} output channels are not divisible by "
                         f"groups={groups}")
    return groups


def conv2d_workspace_size(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
                          n_threads=1, worker_stride=0) -> int:
    """Elements of workspace (dtype of x) that conv2d_forward/backward_* need for these shapes.

    At most ``n_threads * (max(2**20, K) + 2**19) + 4*M*K`` with K = C/groups*kh*kw (see
    the module docstring); 0 for the 1x1 and depthwise paths. The same size serves
    forward, backward_data and backward_weight. With a ``worker_stride`` (see
    conv2d_worker_scratch), the size for calls given that stride.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    groups = _conv_shapes(x_shape, w_shape, groups)
    oh, ow = conv2d_output_size(x_shape[2:], w_shape[2:], stride, padding, dilation)
    cdef Geom g = _geom(x_shape, w_shape, (x_shape[0], w_shape[0], oh, ow), stride, padding,
                        dilation, groups, _check_threads(n_threads))
    g.wstride = _check_stride(worker_stride)
    return _workspace_elems(&g)


def conv2d_worker_scratch(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
                          n_threads=1) -> int:
    """Elements of scratch each worker thread of conv2d_forward/backward_* needs for these
    shapes on the paths that take a ``worker_stride`` (0: none do). A caller running
    several convs with one workspace passes them all the largest of these as
    ``worker_stride`` (and sizes the workspace by conv2d_workspace_size with it): each
    thread then finds its scratch in the same place in every call."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    groups = _conv_shapes(x_shape, w_shape, groups)
    oh, ow = conv2d_output_size(x_shape[2:], w_shape[2:], stride, padding, dilation)
    cdef Geom g = _geom(x_shape, w_shape, (x_shape[0], w_shape[0], oh, ow), stride, padding,
                        dilation, groups, _check_threads(n_threads))
    cdef Geom f
    cdef Py_ssize_t need = 0
    if g.path != PATH_IM2COL or _pointwise(&g):
        return 0
    if g.wbat:
        need = _wbat_per_worker(&g)
    if _flips(&g):
        f = _flipped(&g)
        if f.wbat:
            need = max(need, _wbat_per_worker(&f))
    if _wbat_wg_ok(&g):
        need = max(need, _wbat_wg_per_worker(&g))
    return need


cdef Py_ssize_t _check_stride(worker_stride) except -1:
    if not isinstance(worker_stride, numbers.Integral) or worker_stride < 0:
        raise ValueError(f"worker_stride must be an int >= 0, got {worker_stride!r}")
    return worker_stride


def conv_transpose2d_workspace_size(x_shape, w_shape, stride=1, padding=0, output_padding=0,
                                    dilation=1, groups=1, n_threads=1) -> int:
    """Elements of workspace the conv_transpose2d kernels need (see conv2d_workspace_size)."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    y_shape = _transpose_out_shape(x_shape, w_shape, stride, padding, output_padding,
                                   dilation, groups)
    cdef Geom g = _geom(y_shape, w_shape, x_shape, stride, padding, dilation, groups,
                        _check_threads(n_threads))
    return _workspace_elems(&g)


def _transpose_out_shape(x_shape, w_shape, stride, padding, output_padding, dilation,
                         groups) -> tuple:
    """y shape of conv_transpose2d: x [N, Cin, H, W], weight [Cin, Cout/groups, kh, kw]."""
    groups = int(groups)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv_transpose2d needs 4-D x and weight, got {x_shape} and "
                         f"{w_shape}")
    if groups < 1 or x_shape[1] != w_shape[0] or w_shape[0] % groups:
        raise ValueError(f"conv_transpose2d: x has {x_shape[1]} channels; weight {w_shape} "
                         f"needs {w_shape[0]}, divisible by groups={groups}")
    oh, ow = conv_transpose2d_output_size(x_shape[2:], w_shape[2:], stride, padding,
                                          output_padding, dilation)
    y_shape = (x_shape[0], w_shape[1] * groups, oh, ow)
    _conv_shapes(y_shape, w_shape, groups)
    return y_shape


def _act_code(act) -> int:
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of "
                         f"{sorted(k for k in ACTIVATIONS if k)}")
    return ACTIVATIONS[act]


def _workspace(workspace, dtype, Py_ssize_t need):
    """The workspace as a 1-D C-contiguous array of dtype with at least `need` elements."""
    if need == 0 and workspace is None:
        return None
    if workspace is None:
        raise ValueError(f"this convolution needs a workspace of {need} elements")
    _float_array("workspace", workspace, 1)
    if workspace.dtype != dtype or workspace.shape[0] < need:
        raise ValueError(f"workspace is {workspace.dtype}[{workspace.shape[0]}]; need "
                         f"{dtype}[{need}] (see conv2d_workspace_size)")
    return workspace


cdef inline void* _ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ---------------------------------------------------------------------------------------
# im2col / col2im over a tile of output pixels [p0, p0 + np_)

cdef inline void _tap_range(Py_ssize_t start, Py_ssize_t step, Py_ssize_t count,
                            Py_ssize_t limit, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the t in [0, count) with 0 <= start + t*step < limit."""
    cdef Py_ssize_t a = 0, b
    if start < 0:
        a = (-start + step - 1) // step
    b = 0 if start >= limit else (limit - start + step - 1) // step
    a = min(a, count)
    b = min(max(b, a), count)
    lo[0] = a
    hi[0] = b


cdef void _im2col_row(const floating* x, floating* row, const Geom* g, Py_ssize_t r,
                      Py_ssize_t p0, Py_ssize_t np_) noexcept nogil:
    """row[q] = x[c, ih, iw] (0 outside) for col row r = (c, ki, kj), pixel p0 + q."""
    cdef Py_ssize_t c = r // (g.kh * g.kw), ki = (r // g.kw) % g.kh, kj = r % g.kw
    cdef Py_ssize_t i = p0 // g.ow, j0 = p0 - i * g.ow, q = 0, cnt, ih, lo, hi, jlo, jhi, t
    cdef const floating* src
    # output columns whose tap (ki, kj) lands inside the input: the same on every row
    _tap_range(kj * g.dw - g.pl, g.sw, g.ow, g.w, &jlo, &jhi)
    while q < np_:  # one output row (or the part of it in the tile) at a time
        cnt = min(g.ow - j0, np_ - q)
        ih = i * g.sh - g.pt + ki * g.dh
        lo, hi = cnt, cnt
        if 0 <= ih < g.h:
            lo = min(max(jlo - j0, 0), cnt)
            hi = min(max(jhi - j0, lo), cnt)
            src = x + (c * g.h + ih) * g.w + j0 * g.sw - g.pl + kj * g.dw
            if g.sw == 1:
                for t in range(lo, hi):
                    row[q + t] = src[t]
            else:
                for t in range(lo, hi):
                    row[q + t] = src[t * g.sw]
        for t in range(lo):
            row[q + t] = 0
        for t in range(hi, cnt):
            row[q + t] = 0
        q += cnt
        i += 1
        j0 = 0


cdef void _col2im_channel(const floating* col, Py_ssize_t ldcol, floating* x, const Geom* g,
                          Py_ssize_t c, Py_ssize_t p0, Py_ssize_t np_) noexcept nogil:
    """x[c] += the col rows of channel c scattered back (adjoint of _im2col_row)."""
    cdef Py_ssize_t r, ki, kj, q, i, j0, cnt, ih, lo, hi, jlo, jhi, t
    cdef const floating* row
    cdef floating* dst
    for r in range(c * g.kh * g.kw, (c + 1) * g.kh * g.kw):
        ki = (r // g.kw) % g.kh
        kj = r % g.kw
        _tap_range(kj * g.dw - g.pl, g.sw, g.ow, g.w, &jlo, &jhi)
        row = col + r * ldcol
        q = 0
        i = p0 // g.ow
        j0 = p0 - i * g.ow
        while q < np_:
            cnt = min(g.ow - j0, np_ - q)
            ih = i * g.sh - g.pt + ki * g.dh
            if 0 <= ih < g.h:
                lo = min(max(jlo - j0, 0), cnt)
                hi = min(max(jhi - j0, lo), cnt)
                dst = x + (c * g.h + ih) * g.w + j0 * g.sw - g.pl + kj * g.dw
                for t in range(lo, hi):
                    dst[t * g.sw] += row[q + t]
            q += cnt
            i += 1
            j0 = 0


cdef void _im2col(const floating* x, floating* col, Py_ssize_t ldcol, const Geom* g,
                  Py_ssize_t nb, Py_ssize_t gi, Py_ssize_t p0, Py_ssize_t np_,
                  int n_threads) noexcept nogil:
    """Columns of group gi for pixels p0 .. p0 + np_ of nb images, side by side: image b's
    at col[:, b*np_ : (b+1)*np_], rows ldcol apart. Threads only for large copies: under
    load every parallel region costs a barrier that may wait a whole time slice."""
    cdef Py_ssize_t rb, b, r, hw = g.h * g.w
    if n_threads > 1 and nb * g.kdim * np_ >= PARALLEL_MIN_ELEMS:
        for rb in prange(nb * g.kdim, num_threads=n_threads, schedule="static"):
            b = rb // g.kdim
            r = rb - b * g.kdim
            _im2col_row(x + (b * g.c + gi * g.cg) * hw, col + r * ldcol + b * np_, g, r, p0, np_)
    else:
        for b in range(nb):
            for r in range(g.kdim):
                _im2col_row(x + (b * g.c + gi * g.cg) * hw, col + r * ldcol + b * np_, g, r,
                            p0, np_)


cdef void _col2im(const floating* col, Py_ssize_t ldcol, floating* x, const Geom* g,
                  Py_ssize_t nb, Py_ssize_t gi, Py_ssize_t p0, Py_ssize_t np_,
                  int n_threads) noexcept nogil:
    """x[b, group gi] += col2im of the layout _im2col writes (one owner per channel plane)."""
    cdef Py_ssize_t bc, b, c, hw = g.h * g.w
    if n_threads > 1 and nb * g.kdim * np_ >= PARALLEL_MIN_ELEMS:
        for bc in prange(nb * g.cg, num_threads=n_threads, schedule="static"):
            b = bc // g.cg
            c = bc - b * g.cg
            _col2im_channel(col + b * np_, ldcol, x + (b * g.c + gi * g.cg) * hw, g, c, p0, np_)
    else:
        for b in range(nb):
            for c in range(g.cg):
                _col2im_channel(col + b * np_, ldcol, x + (b * g.c + gi * g.cg) * hw, g, c,
                                p0, np_)


cdef void _flip_weights(const floating* w, floating* wf, const Geom* g) noexcept nogil:
    """wf[group c, m, ki, kj] = w[group m, c, kh-1-ki, kw-1-kj]: the weights of dx = conv(dy)."""
    cdef Py_ssize_t gi, m, c, t, taps = g.kh * g.kw
    for gi in range(g.groups):
        for m in range(g.mg):
            for c in range(g.cg):
                for t in range(taps):
                    wf[((gi * g.cg + c) * g.mg + m) * taps + taps - 1 - t] = \
                        w[((gi * g.mg + m) * g.cg + c) * taps + t]


# ---------------------------------------------------------------------------------------
# the GEMM paths, one chunk of images at a time
#
# A chunk is g.ipt whole images when an image's output is small (their columns side by
# side make one wider GEMM, whose result is then copied out per image), else one image
# cut into tiles of g.tile pixels. Chunks depend on the shapes only, never on n_threads.

cdef void _gather(const floating* src, floating* dst, const Geom* g, Py_ssize_t nb,
                  Py_ssize_t gi) noexcept nogil:
    """dst[m, b*P + p] = src[b, gi*mg + m, p]: group gi of nb images side by side."""
    cdef Py_ssize_t b, m, P = g.oh * g.ow
    for b in range(nb):
        for m in range(g.mg):
            memcpy(dst + m * nb * P + b * P, src + (b * g.m + gi * g.mg + m) * P,
                   P * sizeof(floating))


cdef void _scatter(const floating* src, floating* dst, const Geom* g, Py_ssize_t nb,
                   Py_ssize_t gi) noexcept nogil:
    """The inverse of _gather."""
    cdef Py_ssize_t b, m, P = g.oh * g.ow
    for b in range(nb):
        for m in range(g.mg):
            memcpy(dst + (b * g.m + gi * g.mg + m) * P, src + m * nb * P + b * P,
                   P * sizeof(floating))


cdef void _dot_block(const floating* wg, const floating* bg, const floating* ct, floating* y,
                     const Geom* g, Py_ssize_t o0, Py_ssize_t cols, Py_ssize_t gi, int act,
                     floating act_param) noexcept nogil:
    """Rows o0 .. o0 + DOT_BLOCK of group gi's output by _dot_fwd (one owner)."""
    cdef floating out[DOT_BLOCK * DOT_MAX_COLS]
    cdef Py_ssize_t o, q, b, P = g.oh * g.ow, rows = min(<Py_ssize_t> DOT_BLOCK, g.mg - o0)
    if floating is float:
        cnnc_dot_rows_s(wg + o0 * g.kdim, g.kdim, rows, ct, <int> cols, out, cols)
    else:
        cnnc_dot_rows_d(wg + o0 * g.kdim, g.kdim, rows, ct, <int> cols, out, cols)
    for o in range(rows):
        for q in range(cols):
            b = q // P
            y[(b * g.m + gi * g.mg + o0 + o) * P + q - b * P] = _gemm_act(
                out[o * cols + q] + (0 if bg == NULL else bg[o0 + o]), act, act_param)


cdef void _dot_fwd(const floating* x, const floating* wg, const floating* bg, floating* y,
                   floating* ct, const Geom* g, Py_ssize_t nb, Py_ssize_t gi, int act,
                   floating act_param, int n_threads) noexcept nogil:
    """y[b, group gi] = act(W_g @ col(x[b]) + bias) when the nb images have at most
    DOT_MAX_COLS output pixels in all: the columns, transposed into ct, are dotted with
    the weight rows as they stream (conv_dot.h) instead of packing W for a GEMM."""
    cdef Py_ssize_t P = g.oh * g.ow, cols = nb * P, taps = g.kh * g.kw
    cdef Py_ssize_t q, r, b, i, j, ih, iw, blk
    cdef Py_ssize_t blocks = (g.mg + DOT_BLOCK - 1) // DOT_BLOCK
    for q in range(cols):
        b = q // P
        i = (q - b * P) // g.ow
        j = q - b * P - i * g.ow
        for r in range(g.kdim):
            ih = i * g.sh - g.pt + (r // g.kw) % g.kh * g.dh
            iw = j * g.sw - g.pl + r % g.kw * g.dw
            ct[q * g.kdim + r] = 0
            if 0 <= ih < g.h and 0 <= iw < g.w:
                ct[q * g.kdim + r] = x[((b * g.c + gi * g.cg + r // taps) * g.h + ih) * g.w + iw]
    if 2.0 * g.mg * g.kdim * cols < GEMM_MIN_PARALLEL_FLOPS:
        n_threads = 1
    for blk in prange(blocks, num_threads=n_threads, schedule="static"):
        _dot_block(wg, bg, ct, y, g, blk * DOT_BLOCK, cols, gi, act, act_param)


cdef void _fwd_chunk(const floating* x, const floating* w, const floating* bias, floating* y,
                     floating* ws, const Geom* g, Py_ssize_t nb, int act, floating act_param,
                     int n_threads) noexcept nogil:
    """y[b, M, P] = act(W @ col(x[b]) + bias) for nb images, group by group."""
    cdef Py_ssize_t gi, b, t, p0, np_, hw = g.h * g.w, P = g.oh * g.ow, cols = nb * P
    cdef const floating* wg
    cdef const floating* bg
    cdef floating* out = ws + g.kdim * g.ipt * P
    cdef int bias_mode = BIAS_NONE if bias == NULL else BIAS_ROW
    for gi in range(g.groups):
        wg = w + gi * g.mg * g.kdim
        bg = bias
        if bias != NULL:
            bg = bias + gi * g.mg
        if g.path == PATH_1X1:  # col(x) is x itself
            gemm(False, False, g.mg, P, g.cg, 1, wg, g.cg, x + gi * g.cg * hw, hw, 0,
                 y + gi * g.mg * P, P, bg, bias_mode, act, act_param, n_threads)
        elif cols <= DOT_MAX_COLS and g.tile == P:
            _dot_fwd(x, wg, bg, y, ws, g, nb, gi, act, act_param, n_threads)
        elif g.ipt > 1:
            _im2col(x, ws, cols, g, nb, gi, 0, P, n_threads)
            gemm(False, False, g.mg, cols, g.kdim, 1, wg, g.kdim, ws, cols, 0, out, cols,
                 bg, bias_mode, act, act_param, n_threads)
            _scatter(out, y, g, nb, gi)
        else:
            for t in range((P + g.tile - 1) // g.tile):
                p0 = t * g.tile
                np_ = min(g.tile, P - p0)
                _im2col(x, ws, np_, g, 1, gi, p0, np_, n_threads)
                gemm(False, False, g.mg, np_, g.kdim, 1, wg, g.kdim, ws, np_, 0,
                     y + gi * g.mg * P + p0, P, bg, bias_mode, act, act_param, n_threads)


cdef void _bwd_data_chunk(const floating* dy, const floating* w, floating* dx, floating* ws,
                          const Geom* g, Py_ssize_t nb, int n_threads) noexcept nogil:
    """dx[b] = col2im(W^T @ dy[b]) for nb images (dx fully overwritten)."""
    cdef Py_ssize_t gi, b, t, p0, np_, hw = g.h * g.w, P = g.oh * g.ow, cols = nb * P
    cdef const floating* wg
    cdef floating* dyc = ws + g.kdim * g.ipt * P
    if g.path != PATH_1X1:
        memset(dx, 0, nb * g.c * hw * sizeof(floating))
    for gi in range(g.groups):
        wg = w + gi * g.mg * g.kdim
        if g.path == PATH_1X1:
            gemm(True, False, g.cg, hw, g.mg, 1, wg, g.cg, dy + gi * g.mg * P, P, 0,
                 dx + gi * g.cg * hw, hw, NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
        elif g.ipt > 1:
            _gather(dy, dyc, g, nb, gi)
            gemm(True, False, g.kdim, cols, g.mg, 1, wg, g.kdim, dyc, cols, 0, ws, cols,
                 NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
            _col2im(ws, cols, dx, g, nb, gi, 0, P, n_threads)
        else:
            for t in range((P + g.tile - 1) // g.tile):
                p0 = t * g.tile
                np_ = min(g.tile, P - p0)
                gemm(True, False, g.kdim, np_, g.mg, 1, wg, g.kdim, dy + gi * g.mg * P + p0, P,
                     0, ws, np_, NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
                _col2im(ws, np_, dx, g, 1, gi, p0, np_, n_threads)


cdef void _bwd_weight_chunk(const floating* x, const floating* dy, floating* dw, floating* ws,
                            const Geom* g, Py_ssize_t nb, bint overwrite,
                            int n_threads) noexcept nogil:
    """dW (+)= dy[b] @ col(x[b])^T summed over the nb images of a chunk, in order."""
    cdef Py_ssize_t gi, b, t, p0, np_, hw = g.h * g.w, P = g.oh * g.ow, cols = nb * P
    cdef floating* dwg
    cdef floating* dyc = ws + g.kdim * g.ipt * P
    cdef floating beta
    for gi in range(g.groups):
        dwg = dw + gi * g.mg * g.kdim
        beta = 0 if overwrite else 1
        if g.path == PATH_1X1:
            for b in range(nb):
                gemm(False, True, g.mg, g.cg, hw, 1, dy + (b * g.m + gi * g.mg) * P, P,
                     x + (b * g.c + gi * g.cg) * hw, hw, beta, dwg, g.cg, NULL, BIAS_NONE,
                     ACT_NONE, 0, n_threads)
                beta = 1
        elif g.ipt > 1:
            _im2col(x, ws, cols, g, nb, gi, 0, P, n_threads)
            _gather(dy, dyc, g, nb, gi)
            gemm(False, True, g.mg, g.kdim, cols, 1, dyc, cols, ws, cols, beta, dwg, g.kdim,
                 NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
        else:
            for t in range((P + g.tile - 1) // g.tile):
                p0 = t * g.tile
                np_ = min(g.tile, P - p0)
                _im2col(x, ws, np_, g, 1, gi, p0, np_, n_threads)
                gemm(False, True, g.mg, g.kdim, np_, 1, dy + gi * g.mg * P + p0, P, ws, np_,
                     beta, dwg, g.kdim, NULL, BIAS_NONE, ACT_NONE, 0, n_threads)
                beta = 1


cdef void _im2col_t_row(const floating* xt, floating* row, const Geom* g,
                        Py_ssize_t r) noexcept nogil:
    """row[(ki, kj, c)] = x[b, c, ih, iw] (0 outside) for row r = b * P + p of the chunk
    (image b, pixel p), from the channels-last copy xt[b, ih, iw, c]: runs of cg values
    (kw * cg with dilation 1)."""
    cdef Py_ssize_t P = g.oh * g.ow, cg = g.cg, run = g.kw * g.cg
    cdef Py_ssize_t b = r // P, i = (r - b * P) // g.ow, j = r - b * P - i * g.ow
    cdef Py_ssize_t ki, kj, ih, lo, hi, iw0 = j * g.sw - g.pl
    cdef floating* dst
    cdef const floating* src
    _tap_range(iw0, g.dw, g.kw, g.w, &lo, &hi)
    for ki in range(g.kh):
        dst = row + ki * run
        ih = i * g.sh - g.pt + ki * g.dh
        if ih < 0 or ih >= g.h or lo == hi:
            memset(dst, 0, run * sizeof(floating))
            continue
        if lo > 0:
            memset(dst, 0, lo * cg * sizeof(floating))
        if hi < g.kw:
            memset(dst + hi * cg, 0, (g.kw - hi) * cg * sizeof(floating))
        src = xt + ((b * g.h + ih) * g.w + iw0) * cg
        if g.dw == 1:
            memcpy(dst + lo * cg, src + lo * cg, (hi - lo) * cg * sizeof(floating))
        else:
            for kj in range(lo, hi):
                memcpy(dst + kj * cg, src + kj * g.dw * cg, cg * sizeof(floating))


cdef void _im2col_t(const floating* xt, floating* colt, const Geom* g, Py_ssize_t r0,
                    Py_ssize_t rows, int n_threads) noexcept nogil:
    """Rows r0 .. r0 + rows of the chunk's transposed columns (see _im2col_t_row)."""
    cdef Py_ssize_t q
    for q in prange(rows, num_threads=n_threads if rows * g.kdim >= PARALLEL_MIN_ELEMS else 1,
                    schedule="static"):
        _im2col_t_row(xt, colt + q * g.kdim, g, r0 + q)


cdef void _bwd_weight_chunk_t(const floating* x, const floating* dy, floating* dwt,
                              floating* ws, const Geom* g, Py_ssize_t nb, bint overwrite,
                              int n_threads) noexcept nogil:
    """dWt (+)= dy[b] @ colt(x[b]) summed over the nb images of a chunk, in order, with dWt
    in [M, kh, kw, C/groups] order. Building the columns transposed, from a channels-last
    copy of x, lets the GEMM read them in place (its fast orientation) instead of
    transposing every element of an im2col matrix while packing. The columns are built
    WGRAD_T_ELEMS at a time, so that they are still in L2 when the GEMM reads them."""
    cdef Py_ssize_t gi, b, t, r0, rows, hw = g.h * g.w, P = g.oh * g.ow, total = nb * P
    cdef Py_ssize_t step = min(g.tile if g.ipt == 1 else total,
                               max(<Py_ssize_t> WGRAD_T_ROWS, WGRAD_T_ELEMS // g.kdim))
    cdef floating* dwg
    cdef floating* xt = ws + g.ws1
    cdef floating* dyc = ws + g.kdim * g.ipt * P
    cdef const floating* a
    cdef Py_ssize_t lda = total if g.ipt > 1 else P
    for gi in range(g.groups):
        dwg = dwt + gi * g.mg * g.kdim
        for b in range(nb):
            _pack_rows(x + (b * g.c + gi * g.cg) * hw, hw, g.cg, g.cg, hw, xt + b * g.cg * hw)
        if g.ipt > 1:
            _gather(dy, dyc, g, nb, gi)
            a = dyc
        else:
            a = dy + gi * g.mg * P
        for t in range((total + step - 1) // step):
            r0 = t * step
            rows = min(step, total - r0)
            _im2col_t(xt, ws, g, r0, rows, n_threads)
            gemm(False, False, g.mg, g.kdim, rows, 1, a + r0, lda, ws, g.kdim,
                 0 if overwrite and r0 == 0 else 1, dwg, g.kdim, NULL, BIAS_NONE, ACT_NONE,
                 0, n_threads)


cdef void _gemm_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads) noexcept nogil:
    """Forward over the batch: one chunk per thread, or all threads inside each chunk."""
    cdef Py_ssize_t k = 0, tid = 0, xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t chunks = (g.n + g.ipt - 1) // g.ipt
    cdef cnnc_queue queue
    if g.workers > 1:
        cnnc_queue_init(&queue, chunks, g.workers)
        with parallel(num_threads=g.workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _fwd_chunk(x + k * g.ipt * xs, w, bias, y + k * g.ipt * ys, ws + tid * g.ws1,
                           g, min(g.ipt, g.n - k * g.ipt), act, act_param, 1)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(chunks):
            _fwd_chunk(x + k * g.ipt * xs, w, bias, y + k * g.ipt * ys, ws, g,
                       min(g.ipt, g.n - k * g.ipt), act, act_param, n_threads)


cdef void _gemm_bwd_data(const floating* dy, const floating* w, floating* dx, floating* ws,
                         const Geom* g, int n_threads) noexcept nogil:
    cdef Py_ssize_t k = 0, tid = 0, xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t chunks = (g.n + g.ipt - 1) // g.ipt
    cdef cnnc_queue queue
    if g.workers > 1:
        cnnc_queue_init(&queue, chunks, g.workers)
        with parallel(num_threads=g.workers):
            tid = threadid()
            k = cnnc_queue_take(&queue, tid)
            while k >= 0:
                _bwd_data_chunk(dy + k * g.ipt * ys, w, dx + k * g.ipt * xs, ws + tid * g.ws1,
                                g, min(g.ipt, g.n - k * g.ipt), 1)
                k = cnnc_queue_take(&queue, tid)
    else:
        for k in range(chunks):
            _bwd_data_chunk(dy + k * g.ipt * ys, w, dx + k * g.ipt * xs, ws, g,
                            min(g.ipt, g.n - k * g.ipt), n_threads)


cdef inline Py_ssize_t _wgrad_slots(const Geom* g) noexcept nogil:
    """Partial weight gradients summed separately (a fixed number, whatever n_threads)."""
    cdef Py_ssize_t chunks = (g.n + g.ipt - 1) // g.ipt
    if g.path != PATH_IM2COL or g.m * g.kdim > WGRAD_SLOT_MAX_ELEMS:
        return 1
    return max(1, min(WGRAD_SLOTS, chunks))


cdef void _gemm_bwd_weight(const floating* x, const floating* dy, floating* dw, floating* ws,
                           const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    """dW (+)= the sum over chunks of their dy @ col(x)^T, in a fixed order.

    Small dW (most layers with small GEMMs): chunks fall into WGRAD_SLOTS fixed runs, each
    summed by one thread into its own partial, then the partials are added in slot order.
    Large dW: chunks in order, with the threads inside each (large) GEMM. With g.xt the
    chunks sum dW in [M, kh, kw, C/groups] order (see _bwd_weight_chunk_t) into the
    partials, or the one buffer after the workers' scratch, which are then reordered.
    """
    cdef Py_ssize_t k = 0, s = 0, e, o, r, tid = 0, xs = g.c * g.h * g.w, ys = g.m * g.oh * g.ow
    cdef Py_ssize_t chunks = (g.n + g.ipt - 1) // g.ipt, slots = _wgrad_slots(g)
    cdef Py_ssize_t size = g.m * g.kdim, stride = g.ws1 + g.xt, taps = g.kh * g.kw
    cdef floating* parts = ws + g.workers * stride
    cdef floating v
    if slots == 1 and not g.xt:
        for k in range(chunks):
            _bwd_weight_chunk(x + k * g.ipt * xs, dy + k * g.ipt * ys, dw, ws, g,
                              min(g.ipt, g.n - k * g.ipt), k == 0 and not accumulate,
                              n_threads)
        return
    cdef cnnc_queue queue
    if slots == 1:
        for k in range(chunks):
            _bwd_weight_chunk_t(x + k * g.ipt * xs, dy + k * g.ipt * ys, parts, ws, g,
                                min(g.ipt, g.n - k * g.ipt), k == 0, n_threads)
    else:
        cnnc_queue_init(&queue, slots, min(g.workers, slots))
        with parallel(num_threads=min(g.workers, slots)):
            tid = threadid()
            s = cnnc_queue_take(&queue, tid)
            while s >= 0:
                for k in range(s * chunks // slots, (s + 1) * chunks // slots):
                    if g.xt:
                        _bwd_weight_chunk_t(x + k * g.ipt * xs, dy + k * g.ipt * ys,
                                            parts + s * size, ws + tid * stride, g,
                                            min(g.ipt, g.n - k * g.ipt),
                                            k == s * chunks // slots, 1)
                    else:
                        _bwd_weight_chunk(x + k * g.ipt * xs, dy + k * g.ipt * ys,
                                          parts + s * size, ws + tid * stride, g,
                                          min(g.ipt, g.n - k * g.ipt),
                                          k == s * chunks // slots, 1)
                s = cnnc_queue_take(&queue, tid)
    for e in prange(size, num_threads=n_threads if size >= PARALLEL_MIN_ELEMS else 1,
                    schedule="static"):
        r = e
        if g.xt:  # dw[o, c, tap] sits at parts[o, tap, c]
            o = e // g.kdim
            r = o * g.kdim + (e % taps) * g.cg + (e - o * g.kdim) // taps
        v = dw[e] if accumulate else 0
        for s in range(slots):
            v = v + parts[s * size + r]
        dw[e] = v


# ---------------------------------------------------------------------------------------
# depthwise: direct loops, one (image, channel) plane per owner

cdef void _dw_fwd_plane(const floating* x, const floating* w, floating b, floating* y,
                        const Geom* g) noexcept nogil:
    """y = b + sum_taps w[ki, kj] * x[i*sh - pt + ki*dh, j*sw - pl + kj*dw] on one plane."""
    cdef Py_ssize_t i, j, ki, kj, ih, iw0, lo, hi
    cdef floating wv
    cdef floating* yrow
    cdef const floating* src
    for i in range(g.oh):
        yrow = y + i * g.ow
        for j in range(g.ow):
            yrow[j] = b
        for ki in range(g.kh):
            ih = i * g.sh - g.pt + ki * g.dh
            if ih < 0 or ih >= g.h:
                continue
            for kj in range(g.kw):
                wv = w[ki * g.kw + kj]
                iw0 = kj * g.dw - g.pl
                _tap_range(iw0, g.sw, g.ow, g.w, &lo, &hi)
                src = x + ih * g.w + iw0
                for j in range(lo, hi):
                    yrow[j] += wv * src[j * g.sw]


cdef void _dw_bwd_data_plane(const floating* dy, const floating* w, floating* dx,
                             const Geom* g) noexcept nogil:
    """dx += the adjoint of _dw_fwd_plane applied to dy (one output channel)."""
    cdef Py_ssize_t i, j, ki, kj, ih, iw0, lo, hi
    cdef floating wv
    cdef const floating* dyrow
    cdef floating* dst
    for i in range(g.oh):
        dyrow = dy + i * g.ow
        for ki in range(g.kh):
            ih = i * g.sh - g.pt + ki * g.dh
            if ih < 0 or ih >= g.h:
                continue
            for kj in range(g.kw):
                wv = w[ki * g.kw + kj]
                iw0 = kj * g.dw - g.pl
                _tap_range(iw0, g.sw, g.ow, g.w, &lo, &hi)
                dst = dx + ih * g.w + iw0
                for j in range(lo, hi):
                    dst[j * g.sw] += wv * dyrow[j]


cdef void _dw_bwd_weight_plane(const floating* x, const floating* dy, floating* dw,
                               const Geom* g) noexcept nogil:
    """dw[ki, kj] += sum over the plane of dy * shifted x (one image, one channel)."""
    cdef Py_ssize_t i, j, ki, kj, ih, iw0, lo, hi
    cdef floating s
    cdef const floating* dyrow
    cdef const floating* src
    for ki in range(g.kh):
        for kj in range(g.kw):
            s = 0
            for i in range(g.oh):
                ih = i * g.sh - g.pt + ki * g.dh
                if ih < 0 or ih >= g.h:
                    continue
                dyrow = dy + i * g.ow
                iw0 = kj * g.dw - g.pl
                _tap_range(iw0, g.sw, g.ow, g.w, &lo, &hi)
                src = x + ih * g.w + iw0
                for j in range(lo, hi):
                    s = s + dyrow[j] * src[j * g.sw]
            dw[ki * g.kw + kj] += s


cdef void _dw_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                  const Geom* g, int act, floating act_param, int n_threads) noexcept nogil:
    cdef Py_ssize_t p, q, o, hw = g.h * g.w, P = g.oh * g.ow, taps = g.kh * g.kw
    for p in prange(g.n * g.m, num_threads=n_threads, schedule="static"):
        o = p % g.m
        _dw_fwd_plane(x + (p // g.m * g.c + o // g.mg) * hw, w + o * taps,
                      0 if bias == NULL else bias[o], y + p * P, g)
        if act != ACT_NONE:
            for q in range(P):
                y[p * P + q] = _gemm_act(y[p * P + q], act, act_param)


cdef void _dw_bwd_data(const floating* dy, const floating* w, floating* dx, const Geom* g,
                       int n_threads) noexcept nogil:
    cdef Py_ssize_t p, o, hw = g.h * g.w, P = g.oh * g.ow, taps = g.kh * g.kw
    for p in prange(g.n * g.c, num_threads=n_threads, schedule="static"):
        memset(dx + p * hw, 0, hw * sizeof(floating))
        for o in range(p % g.c * g.mg, (p % g.c + 1) * g.mg):  # output channels of channel c
            _dw_bwd_data_plane(dy + (p // g.c * g.m + o) * P, w + o * taps, dx + p * hw, g)


cdef void _dw_bwd_weight(const floating* x, const floating* dy, floating* dw, const Geom* g,
                         bint accumulate, int n_threads) noexcept nogil:
    cdef Py_ssize_t o, n, hw = g.h * g.w, P = g.oh * g.ow, taps = g.kh * g.kw
    for o in prange(g.m, num_threads=n_threads, schedule="static"):
        if not accumulate:
            memset(dw + o * taps, 0, taps * sizeof(floating))
        for n in range(g.n):
            _dw_bwd_weight_plane(x + (n * g.c + o // g.mg) * hw, dy + (n * g.m + o) * P,
                                 dw + o * taps, g)


# ---------------------------------------------------------------------------------------
# small per-channel passes

cdef double _channel_sum(const floating* dy, Py_ssize_t n, Py_ssize_t stride,
                         Py_ssize_t P) noexcept nogil:
    """The sum of dy[i * stride + q] (i < n, q < P) in double: SUM_LANES partial sums
    over whole runs of SUM_LANES pixels (vectorised, where one chain of dependent adds ran
    at 1 element per add latency), the rest in a scalar sum; a fixed order."""
    cdef double lanes[SUM_LANES]
    cdef double s = 0
    cdef Py_ssize_t i, q, l, body = P - P % SUM_LANES
    cdef const floating* v
    for l in range(SUM_LANES):
        lanes[l] = 0
    for i in range(n):
        v = dy + i * stride
        for q in range(body // SUM_LANES):
            for l in range(SUM_LANES):
                lanes[l] += v[q * SUM_LANES + l]
        for q in range(body, P):
            s += v[q]
    for l in range(SUM_LANES):
        s += lanes[l]
    return s


cdef void _channel_sums(const floating* dy, floating* db, Py_ssize_t n, Py_ssize_t m,
                        Py_ssize_t P, bint accumulate, int n_threads) noexcept nogil:
    """db[o] (+)= sum over images and pixels of dy[:, o] (one owner per channel)."""
    cdef Py_ssize_t o
    cdef double s
    for o in prange(m, num_threads=n_threads, schedule="static"):
        s = _channel_sum(dy + o * P, n, m * P, P)
        db[o] = <floating>(s + db[o]) if accumulate else <floating>s


cdef void _bias_act(floating* y, const floating* bias, Py_ssize_t planes, Py_ssize_t m,
                    Py_ssize_t P, int act, floating act_param, int n_threads) noexcept nogil:
    """y[:, o] = act(y[:, o] + bias[o]) in place."""
    cdef Py_ssize_t p, q
    cdef floating b
    for p in prange(planes, num_threads=n_threads, schedule="static"):
        b = 0 if bias == NULL else bias[p % m]
        for q in range(P):
            y[p * P + q] = _gemm_act(y[p * P + q] + b, act, act_param)


# ---------------------------------------------------------------------------------------
# dispatch over paths (conv view)

cdef void _conv_fwd(const floating* x, const floating* w, const floating* bias, floating* y,
                    floating* ws, const Geom* g, int act, floating act_param,
                    int n_threads, floating* uc=NULL, bint fill=True) noexcept nogil:
    """uc: where the Winograd paths keep their transformed weights across calls (refilled
    when `fill`), or NULL: in the workspace, made at every call."""
    if g.path == PATH_DEPTHWISE:
        _dw_fwd(x, w, bias, y, g, act, act_param, n_threads)
    elif _pointwise(g):
        _pw_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)
    elif g.taps & TAPS_FWD:
        _taps_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)
    elif g.lanes:
        _lanes_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)
    elif g.direct and (g.sh > 1 or g.sw > 1):
        _strided_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)
    elif g.direct:
        _direct_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)
    elif g.wvec:
        _wvec_fwd(x, w, bias, y, ws, g, act, act_param, n_threads, uc, fill)
    elif g.wbat:
        _wbat_fwd(x, w, bias, y, ws, g, act, act_param, n_threads, uc, fill)
    elif g.wino:
        _wino_fwd(x, w, bias, y, ws, g, act, act_param, n_threads, False, uc, fill)
    else:
        _gemm_fwd(x, w, bias, y, ws, g, act, act_param, n_threads)


cdef void _conv_bwd_data(const floating* dy, const floating* w, floating* dx, floating* ws,
                         const Geom* g, int n_threads) noexcept nogil:
    cdef Geom f
    if g.path == PATH_DEPTHWISE:
        _dw_bwd_data(dy, w, dx, g, n_threads)
    elif _pointwise(g):
        _pw_bwd_data(dy, w, dx, ws, g, n_threads)
    elif g.taps & TAPS_DATA:
        _taps_bwd_data(dy, w, dx, ws, g, n_threads)
    elif _strided_data_ok(g):
        _strided_bwd_data(dy, w, dx, ws, g, n_threads)
    elif _flips(g):  # a forward conv: no col2im scatter, and a GEMM with K = M*kh*kw
        f = _flipped(g)
        if _wino_flip(&f):
            _wino_fwd(dy, w, NULL, dx, ws, &f, ACT_NONE, 0, n_threads, True)
        elif f.wbat and _affine(&f, _wbat_per_worker(&f)):  # the flipped weights last
            _flip_weights(w, ws + _fwd_elems(&f), g)
            _conv_fwd(dy, ws + _fwd_elems(&f), NULL, dx, ws, &f, ACT_NONE, 0, n_threads)
        else:
            _flip_weights(w, ws, g)
            _conv_fwd(dy, ws, NULL, dx, ws + g.m * g.kdim, &f, ACT_NONE, 0, n_threads)
    else:
        _gemm_bwd_data(dy, w, dx, ws, g, n_threads)


cdef void _conv_bwd_weight(const floating* x, const floating* dy, floating* dw, floating* ws,
                           const Geom* g, bint accumulate, int n_threads) noexcept nogil:
    if g.path == PATH_DEPTHWISE:
        _dw_bwd_weight(x, dy, dw, g, accumulate, n_threads)
    elif g.n == 0:
        if not accumulate:
            memset(dw, 0, g.m * g.kdim * sizeof(floating))
    elif _pointwise(g):
        _pw_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    elif g.taps & TAPS_WG:
        _taps_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    elif _lanes_wg_ok(g):
        _lanes_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    elif _wbat_wg_ok(g):
        _wbat_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    elif _wino_wg_ok(g):
        _wino_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    elif _direct_wg_ok(g):
        _direct_wgrad(x, dy, dw, ws, g, accumulate, n_threads)
    else:
        _gemm_bwd_weight(x, dy, dw, ws, g, accumulate, n_threads)


# ---------------------------------------------------------------------------------------
# bound calls: an entry point validates its arguments, then runs (or returns) a _Call

cdef enum:
    CALL_FWD = 0  # conv2d forward: x, w, bias, y
    CALL_DATA = 1  # conv2d backward-data: dy, w, -, dx
    CALL_WEIGHT = 2  # conv2d backward-weight: x, dy, db, dw (db: channel sums of dy)
    CALL_T_FWD = 3  # conv_transpose2d forward: x, w, bias, y (bias and act after)
    CALL_T_DATA = 4  # conv_transpose2d backward-data: dy, w, -, dx
    CALL_T_WEIGHT = 5  # conv_transpose2d backward-weight: dy, x, db, dw (db: sums of dy)
    CALL_UP_FWD = 6  # upsample_nearest2d forward: x, -, -, y
    CALL_UP_BWD = 7  # upsample_nearest2d backward: dy, -, -, dx
    CALL_POOL_FWD = 8  # conv2d -> 2x2 max-pool forward: x, w, bias, y (pooled)


cdef class _Call:
    """One validated kernel call on fixed arrays: calling it runs the kernel again, with
    no argument checks (the executor binds each op once per plan)."""
    cdef Geom g
    cdef int kind, act, nt
    cdef bint dbl, accumulate
    cdef double act_param
    cdef void* p[5]
    cdef Py_ssize_t n, m, plane  # channel sums of dy, or the transpose's bias/act pass
    cdef Py_ssize_t h, w, fh, fw  # upsampling: input plane and factors (n: planes)
    cdef tuple keep
    cdef object ucache  # forward: the kept transformed weights (see conv2d_forward) ...
    cdef void* uc
    cdef int u_kernel  # ... the GEMM kernel they were made for, -1: to be made

    def __call__(self) -> None:
        with nogil:
            if self.dbl:
                _run_call[double](self, NULL)
            else:
                _run_call[float](self, NULL)

    def weights_changed(self) -> None:
        """The weights may have changed: the next call transforms them again."""
        self.u_kernel = -1

    @property
    def keeps_weights(self) -> bool:
        """Whether the call keeps its transformed weights between calls."""
        return self.uc != NULL


cdef void _run_call(_Call call, floating* _dtype) noexcept nogil:
    cdef const floating* a = <const floating*> call.p[0]
    cdef const floating* b = <const floating*> call.p[1]
    cdef floating* c = <floating*> call.p[2]
    cdef floating* out = <floating*> call.p[3]
    cdef floating* ws = <floating*> call.p[4]
    cdef int kernel
    if call.kind == CALL_POOL_FWD:
        kernel = cnnc_gemm_kernel()
        _wpool_fwd(a, b, c, out, ws, &call.g, call.act, <floating> call.act_param, call.nt,
                   <floating*> call.uc, call.u_kernel != kernel)
        call.u_kernel = kernel
    elif call.kind == CALL_FWD and call.uc != NULL:
        kernel = cnnc_gemm_kernel()
        _conv_fwd(a, b, c, out, ws, &call.g, call.act, <floating> call.act_param, call.nt,
                  <floating*> call.uc, call.u_kernel != kernel)
        call.u_kernel = kernel
    elif call.kind == CALL_FWD:
        _conv_fwd(a, b, c, out, ws, &call.g, call.act, <floating> call.act_param, call.nt)
    elif call.kind == CALL_DATA:
        _conv_bwd_data(a, b, out, ws, &call.g, call.nt)
    elif call.kind == CALL_T_DATA:
        _conv_fwd(a, b, NULL, out, ws, &call.g, ACT_NONE, 0, call.nt)
    elif call.kind == CALL_UP_FWD:
        _upsample_fwd(a, out, call.n, call.h, call.w, call.fh, call.fw, call.nt)
    elif call.kind == CALL_UP_BWD:
        _upsample_bwd(a, out, call.n, call.h, call.w, call.fh, call.fw, call.nt)
    elif call.kind == CALL_T_FWD:
        _conv_bwd_data(a, b, out, ws, &call.g, call.nt)
        if c != NULL or call.act != ACT_NONE:
            _bias_act(out, c, call.n, call.m, call.plane, call.act, <floating> call.act_param,
                      call.nt)
    else:
        _conv_bwd_weight(a, b, out, ws, &call.g, call.accumulate, call.nt)
        if c != NULL:
            _channel_sums(b if call.kind == CALL_WEIGHT else a, c, call.n, call.m, call.plane,
                          call.accumulate, call.nt)


cdef _Call _bound(int kind, Geom g, arrays, int act=ACT_NONE, double act_param=0,
                  bint accumulate=False, Py_ssize_t n=0, Py_ssize_t m=0, Py_ssize_t plane=0):
    """A _Call on `arrays` = (a, b, c, out, workspace), any of them None."""
    cdef _Call call = _Call.__new__(_Call)
    cdef int i
    call.g = g
    call.kind = kind
    call.nt = <int> g.threads
    call.act = act
    call.act_param = act_param
    call.accumulate = accumulate
    call.n, call.m, call.plane = n, m, plane
    call.keep = tuple(arrays)
    call.dbl = arrays[0].dtype == np.float64
    for i in range(5):
        call.p[i] = _ptr(arrays[i])
    return call


# ---------------------------------------------------------------------------------------
# Python entry points

cdef Py_ssize_t _fwd_weights_elems(const Geom* g) noexcept nogil:
    """Elements of the transformed weights the forward makes at every call (0: none),
    with room for any GEMM kernel's row panels (GEMM Winograd's U is M rounded up to the
    kernel's MR, 4, 6 or 8: at most M rounded up to 24)."""
    if (g.path == PATH_DEPTHWISE or _pointwise(g) or g.taps & TAPS_FWD or g.lanes
            or g.direct):
        return 0
    if g.wvec:
        return _wvec_packed(g, 2)
    if g.wbat:
        return _wvec_packed(g, 4)
    if g.wino:
        return _wino_e(g) * _wino_round(g.m, 24) * g.c
    return 0


def _check_conv(x, w, y_name, y, stride, padding, dilation, groups, n_threads):
    """Validate x, weight and the y-shaped array of a conv2d call; returns (groups, nt)."""
    x = _float_array("x", x, 4)
    _float_array("weight", w, 4)
    groups = _conv_shapes(x.shape, w.shape, groups)
    _check("weight", w, x.dtype, w.shape)
    oh, ow = conv2d_output_size(x.shape[2:], w.shape[2:], stride, padding, dilation)
    _check(y_name, y, x.dtype, (x.shape[0], w.shape[0], oh, ow))
    return groups, _check_threads(n_threads)


def _check_transpose(x, w, y_name, y, stride, padding, output_padding, dilation, groups,
                     n_threads):
    """Validate a conv_transpose2d call; returns (groups, nt)."""
    x = _float_array("x", x, 4)
    _float_array("weight", w, 4)
    _check("weight", w, x.dtype, w.shape)
    y_shape = _transpose_out_shape(x.shape, w.shape, stride, padding, output_padding,
                                   dilation, groups)
    _check(y_name, y, x.dtype, y_shape)
    return int(groups), _check_threads(n_threads)


def _check_bias(name, b, dtype, m):
    if b is not None:
        _check(name, b, dtype, (m,))


def conv2d_forward(x, w, bias, y, stride=1, padding=0, dilation=1, groups=1, act=None,
                   act_param=0.0, workspace=None, n_threads=1, bind=False,
                   keep_weights=False, worker_stride=0):
    """y = act(conv2d(x, w) + bias).

    Parameters
    ----------
    x : (N, C, H, W) float32 or float64, IN
    w : (M, C/groups, kh, kw), dtype of x, IN
    bias : (M,) or None, IN
    y : (N, M, OH, OW), OUT; OH, OW from ``conv2d_output_size``
    stride, dilation : int or (h, w)
    padding : int, (ph, pw) or (top, bottom, left, right)
    groups : C and M divisible by it; groups == C (> 1) takes the direct depthwise path
    act : None/"none", "relu", "leaky_relu" (slope act_param), "sigmoid", "tanh"
    workspace : 1-D, dtype of x, >= conv2d_workspace_size(...) elements, or None when that
        is 0; its contents are scratch
    n_threads : threads to use; results do not depend on it
    worker_stride : 0, or elements between the workers' scratch in the workspace (see
        conv2d_worker_scratch); the workspace is then sized with it
    bind : instead of running, return the validated call: calling it runs the kernel on
        these arrays again without checking them (they must stay alive and unchanged in
        shape; the executor binds each op once per plan). Every entry point takes it.
    keep_weights : with bind, a path that transforms the weights (Winograd) keeps them
        transformed in a buffer of its own, up to KEEP_WEIGHTS_MAX elements, and
        transforms them again only after ``call.weights_changed()`` (inference, where
        the weights change only between steps).
    """
    groups, nt = _check_conv(x, w, "y", y, stride, padding, dilation, groups, n_threads)
    _check_bias("bias", bias, x.dtype, w.shape[0])
    cdef int act_code = _act_code(act)
    cdef Geom g = _geom(x.shape, w.shape, y.shape, stride, padding, dilation, groups, nt)
    g.wstride = _check_stride(worker_stride)
    workspace = _workspace(workspace, x.dtype, _workspace_elems(&g))
    _check_outputs({"y": y, "workspace": workspace}, {"x": x, "w": w, "bias": bias})
    cdef _Call call = _bound(CALL_FWD, g, (x, w, bias, y, workspace), act_code, act_param)
    if bind and keep_weights:
        _keep_weights(call, _fwd_weights_elems(&g), x.dtype)
    return call if bind else call()


cdef void _keep_weights(_Call call, Py_ssize_t keep, dtype):
    """Give a bound forward a buffer of its own for `keep` elements of transformed weights
    (none for 0 or over KEEP_WEIGHTS_MAX)."""
    if not 0 < keep <= KEEP_WEIGHTS_MAX:
        return
    itemsize = np.dtype(dtype).itemsize
    buf = np.empty(keep + 64 // itemsize, dtype)
    start = (-buf.ctypes.data) % 64 // itemsize  # cache-line aligned, as ws is
    call.ucache = buf[start:start + keep]
    call.uc = _ptr(call.ucache)
    call.u_kernel = -1


cdef Geom _pool_geom(tuple x_shape, tuple w_shape, padding, int n_threads) except *:
    """Geometry of conv2d -> 2x2 max-pool: the conv's, with oh, ow the pooled output's
    (the pooled path's view, see conv_winograd.pxi); ValueError where that path does not
    take the layer."""
    _conv_shapes(x_shape, w_shape, 1)
    if tuple(w_shape[2:]) != (3, 3):
        raise ValueError(f"conv2d_maxpool: takes 3x3 kernels, got weight {w_shape}")
    oh, ow = conv2d_output_size(x_shape[2:], (3, 3), 1, padding)
    if oh < 2 or ow < 2:
        raise ValueError(f"conv2d_maxpool: the conv's output {(oh, ow)} of x {x_shape} with "
                         f"padding {padding!r} holds no 2x2 window")
    cdef Geom g = _geom(x_shape, w_shape, (x_shape[0], w_shape[0], oh // 2, ow // 2), 1,
                        padding, 1, 1, n_threads)
    if not _wpool_ok(&g):
        raise ValueError(f"conv2d_maxpool: x {x_shape} with weight {w_shape} and padding "
                         f"{padding!r} needs more scratch than the pooled path's bound")
    return g


def conv2d_maxpool_supported(x_shape, w_shape, padding=0) -> bool:
    """Whether conv2d_maxpool_forward takes these shapes: 3x3 kernels, stride 1, no
    groups, a conv output of at least 2x2, and a chunk's scratch within the bound."""
    try:
        _pool_geom(tuple(x_shape), tuple(w_shape), padding, 1)
    except ValueError:
        return False
    return True


def conv2d_maxpool_pays(x_shape, w_shape, padding=0) -> bool:
    """Whether conv2d_maxpool_forward takes these shapes and is expected to beat
    conv2d_forward then maxpool2d_forward: up to WPOOL_MAX_CHANNELS input channels.
    Measured, forward with relu and pool together, 1 thread: the seed CNN's 3 -> 32 (64x64)
    and 32 -> 64 (31x31) layers 2.0x and 1.6x at batch 1, 1.7x and 1.2x at 32; VGG-11's
    3 -> 64 (32x32) 2.4x and 2.2x at 64; its 64 -> 128 (16x16) 1.2x at batch 1 but 0.7x at
    64, where the batch-lanes path has no wasted lanes (benchmarks/bench_conv_pool.py)."""
    return conv2d_maxpool_supported(x_shape, w_shape, padding) and \
        w_shape[1] <= WPOOL_MAX_CHANNELS


def conv2d_maxpool_workspace_size(x_shape, w_shape, padding=0, n_threads=1) -> int:
    """Elements of workspace (dtype of x) conv2d_maxpool_forward needs for these shapes."""
    cdef Geom g = _pool_geom(tuple(x_shape), tuple(w_shape), padding,
                             _check_threads(n_threads))
    return _wpool_workspace(&g)


def conv2d_maxpool_forward(x, w, bias, y, padding=0, act=None, act_param=0.0, workspace=None,
                           n_threads=1, bind=False, keep_weights=False):
    """y = maxpool2d(act(conv2d(x, w) + bias), 2) in one pass, for 3x3 stride-1 kernels.

    The max-pool's windows are 2x2 with stride 2 and no padding, rounded down (an odd
    last row or column of the conv's output is dropped, and not computed); each window's
    maximum is the one pool.maxpool2d_forward takes (NaN wins). By Winograd F(4x4, 3x3):
    the conv's sums round differently from conv2d_forward's.

    x : (N, C, H, W) float32 or float64, IN; w : (M, C, 3, 3), IN; bias : (M,) or None, IN
    y : (N, M, OH // 2, OW // 2), OUT, with OH, OW the conv's output size
    padding, act, act_param, workspace (>= conv2d_maxpool_workspace_size(...)), n_threads,
    bind, keep_weights : as conv2d_forward's.
    """
    x = _float_array("x", x, 4)
    _float_array("weight", w, 4)
    _check("weight", w, x.dtype, w.shape)
    nt = _check_threads(n_threads)
    cdef Geom g = _pool_geom(x.shape, w.shape, padding, nt)
    _check("y", y, x.dtype, (g.n, g.m, g.oh, g.ow))
    _check_bias("bias", bias, x.dtype, g.m)
    cdef int act_code = _act_code(act)
    workspace = _workspace(workspace, x.dtype, _wpool_workspace(&g))
    _check_outputs({"y": y, "workspace": workspace}, {"x": x, "w": w, "bias": bias})
    cdef _Call call = _bound(CALL_POOL_FWD, g, (x, w, bias, y, workspace), act_code,
                             act_param)
    if bind and keep_weights:
        _keep_weights(call, _wvec_packed(&g, 4), x.dtype)
    return call if bind else call()


def conv2d_backward_data(dy, w, dx, stride=1, padding=0, dilation=1, groups=1,
                         workspace=None, n_threads=1, bind=False, worker_stride=0):
    """dx = the gradient of conv2d with respect to x, given dy (dx is overwritten).

    dy : (N, M, OH, OW), IN; w : (M, C/groups, kh, kw), IN; dx : (N, C, H, W), OUT;
    the other arguments as in ``conv2d_forward`` (which says how to size the workspace).
    """
    dx = _float_array("dx", dx, 4)
    groups, nt = _check_conv(dx, w, "dy", dy, stride, padding, dilation, groups, n_threads)
    cdef Geom g = _geom(dx.shape, w.shape, dy.shape, stride, padding, dilation, groups, nt)
    g.wstride = _check_stride(worker_stride)
    workspace = _workspace(workspace, dx.dtype, _workspace_elems(&g))
    _check_outputs({"dx": dx, "workspace": workspace}, {"dy": dy, "w": w})
    call = _bound(CALL_DATA, g, (dy, w, None, dx, workspace))
    return call if bind else call()


def conv2d_backward_weight(x, dy, dw, db=None, stride=1, padding=0, dilation=1, groups=1,
                           accumulate=False, workspace=None, n_threads=1, bind=False,
                           worker_stride=0):
    """dw = sum over the batch of dy (x) col(x); db = sum of dy over N, OH, OW.

    x : (N, C, H, W), IN; dy : (N, M, OH, OW), IN; dw : (M, C/groups, kh, kw), OUT;
    db : (M,) or None, OUT. With ``accumulate`` the gradients are added to dw and db
    instead of overwriting them. Other arguments as in ``conv2d_forward``.
    """
    dw = _float_array("dw", dw, 4)
    groups, nt = _check_conv(x, dw, "dy", dy, stride, padding, dilation, groups, n_threads)
    _check_bias("db", db, x.dtype, dw.shape[0])
    cdef Geom g = _geom(x.shape, dw.shape, dy.shape, stride, padding, dilation, groups, nt)
    g.wstride = _check_stride(worker_stride)
    workspace = _workspace(workspace, x.dtype, _workspace_elems(&g))
    _check_outputs({"dw": dw, "db": db, "workspace": workspace}, {"x": x, "dy": dy})
    call = _bound(CALL_WEIGHT, g, (x, dy, db, dw, workspace), ACT_NONE, 0, accumulate,
                  dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3])
    return call if bind else call()


def conv_transpose2d_forward(x, w, bias, y, stride=1, padding=0, output_padding=0,
                             dilation=1, groups=1, act=None, act_param=0.0, workspace=None,
                             n_threads=1, bind=False):
    """y = act(conv_transpose2d(x, w) + bias), PyTorch ConvTranspose2d semantics.

    x : (N, Cin, H, W) float32 or float64, IN; w : (Cin, Cout/groups, kh, kw), IN;
    bias : (Cout,) or None, IN; y : (N, Cout, OH, OW), OUT with OH, OW from
    ``conv_transpose2d_output_size``; padding trims (top, bottom, left, right) of the full
    output; output_padding (< stride or dilation) adds rows/columns at the bottom/right.
    workspace: ``conv_transpose2d_workspace_size(...)`` elements. Other arguments as in
    ``conv2d_forward``.
    """
    groups, nt = _check_transpose(x, w, "y", y, stride, padding, output_padding, dilation,
                                  groups, n_threads)
    _check_bias("bias", bias, x.dtype, y.shape[1])
    cdef int act_code = _act_code(act)
    cdef Geom g = _geom(y.shape, w.shape, x.shape, stride, padding, dilation, groups, nt)
    workspace = _workspace(workspace, x.dtype, _workspace_elems(&g))
    _check_outputs({"y": y, "workspace": workspace}, {"x": x, "w": w, "bias": bias})
    call = _bound(CALL_T_FWD, g, (x, w, bias, y, workspace), act_code, act_param, False,
                  y.shape[0] * y.shape[1], y.shape[1], g.h * g.w)
    return call if bind else call()


def conv_transpose2d_backward_data(dy, w, dx, stride=1, padding=0, output_padding=0,
                                   dilation=1, groups=1, workspace=None, n_threads=1,
                                   bind=False):
    """dx = the gradient of conv_transpose2d with respect to x (a conv2d of dy by w).

    dy : (N, Cout, OH, OW), IN; w : (Cin, Cout/groups, kh, kw), IN; dx : (N, Cin, H, W), OUT.
    """
    dx = _float_array("dx", dx, 4)
    groups, nt = _check_transpose(dx, w, "dy", dy, stride, padding, output_padding, dilation,
                                  groups, n_threads)
    cdef Geom g = _geom(dy.shape, w.shape, dx.shape, stride, padding, dilation, groups, nt)
    workspace = _workspace(workspace, dx.dtype, _workspace_elems(&g))
    _check_outputs({"dx": dx, "workspace": workspace}, {"dy": dy, "w": w})
    call = _bound(CALL_T_DATA, g, (dy, w, None, dx, workspace))
    return call if bind else call()


def conv_transpose2d_backward_weight(x, dy, dw, db=None, stride=1, padding=0,
                                     output_padding=0, dilation=1, groups=1, accumulate=False,
                                     workspace=None, n_threads=1, bind=False):
    """dw, db = gradients of conv_transpose2d's weight and bias.

    x : (N, Cin, H, W), IN; dy : (N, Cout, OH, OW), IN; dw : (Cin, Cout/groups, kh, kw), OUT;
    db : (Cout,) or None, OUT; ``accumulate`` adds instead of overwriting.
    """
    dw = _float_array("dw", dw, 4)
    groups, nt = _check_transpose(x, dw, "dy", dy, stride, padding, output_padding, dilation,
                                  groups, n_threads)
    _check_bias("db", db, x.dtype, dy.shape[1])
    cdef Geom g = _geom(dy.shape, dw.shape, x.shape, stride, padding, dilation, groups, nt)
    workspace = _workspace(workspace, x.dtype, _workspace_elems(&g))
    _check_outputs({"dw": dw, "db": db, "workspace": workspace}, {"x": x, "dy": dy})
    # conv view: the transpose's output gradient is the conv's input, x the conv's dy
    call = _bound(CALL_T_WEIGHT, g, (dy, x, db, dw, workspace), ACT_NONE, 0, accumulate,
                  dy.shape[0], dy.shape[1], dy.shape[2] * dy.shape[3])
    return call if bind else call()


# ---------------------------------------------------------------------------------------
# nearest upsampling by integer factors

cdef void _upsample_fwd(const floating* x, floating* y, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t fh, Py_ssize_t fw, int n_threads) noexcept nogil:
    """y[i, j] = x[i // fh, j // fw] on every plane."""
    cdef Py_ssize_t p, i, j, ow = w * fw, oh = h * fh
    for p in prange(planes, num_threads=n_threads, schedule="static"):
        for i in range(oh):
            for j in range(ow):
                y[(p * oh + i) * ow + j] = x[(p * h + i // fh) * w + j // fw]


cdef void _upsample_bwd(const floating* dy, floating* dx, Py_ssize_t planes, Py_ssize_t h,
                        Py_ssize_t w, Py_ssize_t fh, Py_ssize_t fw, int n_threads) noexcept nogil:
    """dx[a, b] = sum of the fh x fw block of dy it was copied to."""
    cdef Py_ssize_t p, i, j, ow = w * fw, oh = h * fh
    for p in prange(planes, num_threads=n_threads, schedule="static"):
        memset(dx + p * h * w, 0, h * w * sizeof(floating))
        for i in range(oh):
            for j in range(ow):
                dx[(p * h + i // fh) * w + j // fw] += dy[(p * oh + i) * ow + j]


def _check_upsample(x, y_name, y, scale, n_threads):
    x = _float_array("x", x, 4)
    fh, fw = _pair("scale", scale, 1)
    n, c, h, w = x.shape
    _check(y_name, y, x.dtype, (n, c, h * fh, w * fw))
    return n * c, h, w, fh, fw, _check_threads(n_threads)


cdef _Call _bound_upsample(int kind, src, dst, Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w,
                           Py_ssize_t fh, Py_ssize_t fw, int nt):
    cdef Geom g
    g.threads = nt
    g.wstride = 0
    cdef _Call call = _bound(kind, g, (src, None, None, dst, None), ACT_NONE, 0, False, planes,
                             0, 0)
    call.h, call.w, call.fh, call.fw = h, w, fh, fw
    return call


def upsample_nearest2d_forward(x, y, scale, n_threads=1, bind=False):
    """y[n, c, i, j] = x[n, c, i // sh, j // sw]; scale = int or (sh, sw).

    x : (N, C, H, W) float32 or float64, IN; y : (N, C, H*sh, W*sw), OUT.
    """
    planes, h, w, fh, fw, nt = _check_upsample(x, "y", y, scale, n_threads)
    _check_outputs({"y": y}, {"x": x})
    call = _bound_upsample(CALL_UP_FWD, x, y, planes, h, w, fh, fw, nt)
    return call if bind else call()


def upsample_nearest2d_backward(dy, dx, scale, n_threads=1, bind=False):
    """dx = block sums of dy (the adjoint of upsample_nearest2d_forward).

    dy : (N, C, H*sh, W*sw), IN; dx : (N, C, H, W), OUT.
    """
    planes, h, w, fh, fw, nt = _check_upsample(dx, "dy", dy, scale, n_threads)
    _check_outputs({"dx": dx}, {"dy": dy})
    call = _bound_upsample(CALL_UP_BWD, dy, dx, planes, h, w, fh, fw, nt)
    return call if bind else call()
