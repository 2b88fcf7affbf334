/* Micro-kernels of the direct stride-1 convolution (conv_direct.pxi).
 *
 * The input is copied once, zero-padded, into xp[c][b][Hp][Wp] (Wp: its row length). A
 * "virtual" output index q = b*Hp*Wp + oy*Wp + ox then reads tap (c, ki, kj) at
 * xp[off[k] + q] with off[k] = c*nb*Hp*Wp + ki*dh*Wp + kj*dw: for every k, consecutive q
 * are consecutive floats. So the convolution is a GEMM whose B rows are shifted windows of
 * xp, read in place (no im2col matrix, no packing of B); q with ox >= OW or oy >= OH are
 * computed or summed but never stored (their dy is zero in the weight gradient).
 *
 * Forward tile: out[MR][NV*VL] = sum_k a[k][0..MR) x xp[off[k] + 0..NV*VL), with the weights
 * packed k-major, MR rows at a time (zero rows past M); stored into a tile, or into y.
 * Weight-gradient tile: dw[i][j] += sum over q of dy[i][q] * xp[off[j] + q] for MR rows of
 * dy and KR taps, VL lanes of partial sums per pair, added lane by lane in a fixed order.
 * q runs over `rows` runs of len lanes: run r reads dy at drow[r] and xp at xrow[r], x's
 * vectors xstep apart (VL here; a stride's with a lane per image, conv_lanes.h) (one
 * run over the whole flattened chunk of a zero-padded copy of dy, or one per output row of
 * dy itself, its last vector masked). Rows and taps past the real ones repeat a real one
 * (reads stay in bounds) and are not stored. Written with GCC vector extensions (the
 * build's -march picks the instructions), AVX-512 masked loads and stores where built. */
#ifndef CNNC_CONV_DIRECT_H
#define CNNC_CONV_DIRECT_H
#include <stddef.h>
#include <string.h>

/* Masked store of the lanes set in `mask` (fault-suppressed: lanes off the mask touch no
 * memory); without AVX-512 one lane at a time. */
#ifdef __AVX512F__
#include <immintrin.h>
#define CNNC_DIRECT_MSTORE_s(p, mask, v) _mm512_mask_storeu_ps(p, (__mmask16)(mask), (__m512)(v))
#define CNNC_DIRECT_MSTORE_d(p, mask, v) _mm512_mask_storeu_pd(p, (__mmask8)(mask), (__m512d)(v))
#else
#define CNNC_DIRECT_MSTORE_LANES(T, VL, p, mask, v)                                        \
    do {                                                                                   \
        T lanes_[VL];                                                                      \
        memcpy(lanes_, &(v), sizeof(lanes_));                                              \
        for (int l_ = 0; l_ < VL; l_++)                                                    \
            if ((mask) >> l_ & 1) (p)[l_] = lanes_[l_];                                    \
    } while (0)
#define CNNC_DIRECT_MSTORE_s(p, mask, v) CNNC_DIRECT_MSTORE_LANES(float, 16, p, mask, v)
#define CNNC_DIRECT_MSTORE_d(p, mask, v) CNNC_DIRECT_MSTORE_LANES(double, 8, p, mask, v)
#endif

/* acc = the forward tile's sums over its K taps (see the top), its NV vectors VS
 * elements apart. */
#define CNNC_DIRECT_SUM_TAPS(T, VT, VS, MR, NV)                                            \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < NV; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                    \
        const T *b = xp + off[k];                                                          \
        VT bv[NV];                                                                         \
        for (int j = 0; j < NV; j++) memcpy(&bv[j], b + j * (VS), sizeof(VT));             \
        for (int i = 0; i < MR; i++)                                                       \
            for (int j = 0; j < NV; j++) acc[i][j] += a[k * MR + i] * bv[j];               \
    }

#define CNNC_DIRECT_TILE(NAME, T, VT, VL, MR, NV)                                          \
static void NAME(ptrdiff_t K, const T *a, const T *xp, const int *off, T *out) {           \
    VT acc[MR][NV];                                                                        \
    CNNC_DIRECT_SUM_TAPS(T, VT, VL, MR, NV)                                                \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < NV; j++) memcpy(out + (i * NV + j) * VL, &acc[i][j], sizeof(VT)); \
}

/* The stride-1 forward tile stores straight from its accumulators: y[i][oy*OW + ox] =
 * act(acc + bias[i]) for the q = q0 + lane with ox = q % Wp < OW, q < q0 + nq. A vector's
 * lanes in one padded row go to one contiguous run of y, at q - oy*(Wp - OW): one masked
 * store per (row, vector), none for lanes in padding columns. relu is v > 0 ? v : 0
 * (NaN gives 0, as elsewhere). */
#define CNNC_DIRECT_YTILE(NAME, T, VT, IT, VL, MR, NV, MSTORE)                              \
static void NAME(ptrdiff_t K, const T *a, const T *xp, const int *off, const T *bias,      \
                 int relu, T *y, ptrdiff_t plane, int rows, ptrdiff_t q0, ptrdiff_t nq,    \
                 ptrdiff_t wp, ptrdiff_t ow) {                                             \
    VT acc[MR][NV];                                                                        \
    CNNC_DIRECT_SUM_TAPS(T, VT, VL, MR, NV)                                                \
    ptrdiff_t oy0 = q0 / wp, ox0 = q0 - oy0 * wp; /* where vector j starts */            \
    for (int j = 0; j < NV && j * VL < nq; j++) {                                          \
        ptrdiff_t q = q0 + j * VL, oy = oy0, ox = ox0;                                     \
        int l = 0;                                                                         \
        VT v[MR];                                                                          \
        for (int i = 0; i < MR; i++) {                                                     \
            v[i] = acc[i][j] + bias[i];                                                    \
            if (relu) v[i] = (VT)((IT)(v[i] > 0) & (IT)v[i]);                              \
        }                                                                                  \
        while (l < VL && j * VL + l < nq) { /* one padded row's lanes at a time */         \
            ptrdiff_t run = wp - ox < VL - l ? wp - ox : VL - l;                           \
            ptrdiff_t real = ox < ow ? (ow - ox < run ? ow - ox : run) : 0;                \
            if (real > nq - j * VL - l) real = nq - j * VL - l;                            \
            if (real > 0) {                                                                \
                unsigned mask = ((1u << real) - 1) << l;                                   \
                T *dst = y + q - oy * (wp - ow);                                           \
                for (int i = 0; i < rows; i++) MSTORE(dst + i * plane, mask, v[i]);        \
            }                                                                              \
            l += (int)run;                                                                 \
            ox = 0;                                                                        \
            oy++;                                                                          \
        }                                                                                  \
        for (ox0 += VL; ox0 >= wp; ox0 -= wp) oy0++; /* no division per vector */         \
    }                                                                                      \
}

/* Load of lanes 0 .. n-1 (1 <= n <= VL), the rest zero: rows of dy read in
 * place, whose last vector is partial (fault-suppressed: nothing past lane n is read). In
 * asm that names no memory: as an intrinsic (or an asm "m" operand) it reads "any memory"
 * for gcc, which then stores the accumulators every step; nothing writes dy meanwhile. */
#ifdef __AVX512F__
#define CNNC_DIRECT_MLOAD_s(VT, p, n) ({                                                   \
    VT r_;                                                                                 \
    __asm__("vmovups (%1), %0%{%2%}%{z%}" : "=v"(r_)                                       \
            : "r"(p), "Yk"((__mmask16)((2u << ((n) - 1)) - 1)));                           \
    r_; })
#define CNNC_DIRECT_MLOAD_d(VT, p, n) ({                                                   \
    VT r_;                                                                                 \
    __asm__("vmovupd (%1), %0%{%2%}%{z%}" : "=v"(r_)                                       \
            : "r"(p), "Yk"((__mmask8)((2u << ((n) - 1)) - 1)));                            \
    r_; })
#else
#define CNNC_DIRECT_MLOAD_LANES(VT, p, n)                                                  \
    ({ VT t_ = {0}; memcpy(&t_, p, (n) * sizeof(t_[0])); t_; })
#define CNNC_DIRECT_MLOAD_s(VT, p, n) CNNC_DIRECT_MLOAD_LANES(VT, p, n)
#define CNNC_DIRECT_MLOAD_d(VT, p, n) CNNC_DIRECT_MLOAD_LANES(VT, p, n)
#endif

/* Keeps a vector in a register (not re-read as each FMA's memory operand); a 64-byte
 * vector fits one register only with AVX-512, elsewhere nothing. */
#ifdef __AVX512F__
#define CNNC_DIRECT_IN_REG(v) __asm__("" : "+v"(v))
#else
#define CNNC_DIRECT_IN_REG(v) ((void)0)
#endif

/* One vector step of the weight gradient: MR x KR FMAs on lanes v of run r, dy's n lanes
 * there (the rest 0) read by LOAD, and x's vector u (v / VL vectors of xstep on). The
 * smaller of the two operand sets stays in registers while the other streams (MR*KR
 * accumulators + min(MR, KR) + 1 vectors fit the 32). */
#define CNNC_DIRECT_WG_STEP(VT, MR, KR, LOAD)                                              \
    if (MR <= KR) {                                                                        \
        VT dv[MR];                                                                         \
        for (int i = 0; i < MR; i++) dv[i] = LOAD(VT, d[i] + dq + v, n);             \
        for (int j = 0; j < KR; j++) {                                                     \
            VT xv;                                                                         \
            memcpy(&xv, x[j] + xq + u, sizeof(VT));                                        \
            CNNC_DIRECT_IN_REG(xv); /* one load, not one per FMA operand */               \
            for (int i = 0; i < MR; i++) acc[i][j] += dv[i] * xv;                          \
        }                                                                                  \
    } else {                                                                               \
        VT xv[KR];                                                                         \
        for (int j = 0; j < KR; j++) memcpy(&xv[j], x[j] + xq + u, sizeof(VT));        \
        for (int i = 0; i < MR; i++) {                                                     \
            VT dv = LOAD(VT, d[i] + dq + v, n);                                      \
            CNNC_DIRECT_IN_REG(dv);                                                        \
            for (int j = 0; j < KR; j++) acc[i][j] += dv * xv[j];                          \
        }                                                                                  \
    }

#define CNNC_DIRECT_WGRAD(NAME, T, VT, VL, MR, KR, MLOAD)                                  \
static void NAME(ptrdiff_t rows, const int *xrow, const int *drow, ptrdiff_t len,          \
                 ptrdiff_t xstep, const T *dy, ptrdiff_t ldd, int mr, const T *xp,         \
                 const int *off, int kr, T *dw, ptrdiff_t ldw) {                           \
    const T *d[MR];                                                                        \
    const T *x[KR];                                                                        \
    VT acc[MR][KR];                                                                        \
    for (int i = 0; i < MR; i++) d[i] = dy + (i < mr ? i : mr - 1) * ldd;                  \
    for (int j = 0; j < KR; j++) x[j] = xp + off[j < kr ? j : kr - 1];                     \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < KR; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                 \
        ptrdiff_t dq = drow[r], xq = xrow[r];                                              \
        ptrdiff_t u = 0;                                                                   \
        for (ptrdiff_t v = 0; v < len; v += VL, u += xstep) { /* one body: no spills */    \
            ptrdiff_t n = len - v < VL ? len - v : VL;                                     \
            CNNC_DIRECT_WG_STEP(VT, MR, KR, MLOAD)                                         \
        }                                                                                  \
    }                                                                                      \
    for (int i = 0; i < mr; i++)                                                           \
        for (int j = 0; j < kr; j++) {                                                     \
            T s = 0;                                                                       \
            for (int l = 0; l < VL; l++) s += acc[i][j][l];                                \
            dw[i * ldw + j] += s;                                                          \
        }                                                                                  \
}

typedef float cnnc_direct_f16 __attribute__((vector_size(64)));
typedef double cnnc_direct_d8 __attribute__((vector_size(64)));
typedef int cnnc_direct_i16 __attribute__((vector_size(64)));
typedef long long cnnc_direct_l8 __attribute__((vector_size(64)));

/* Forward: 8 weight rows x 48 floats (24 accumulators), or 6 x 64 / 4 x 96 for layers
 * whose output channels are not a multiple of 8 (LeNet-5's 6): into a tile (the strided
 * paths, conv_strided.pxi), or into y (stride 1). */
CNNC_DIRECT_TILE(cnnc_direct_tile8_s, float, cnnc_direct_f16, 16, 8, 3)
CNNC_DIRECT_TILE(cnnc_direct_tile6_s, float, cnnc_direct_f16, 16, 6, 4)
CNNC_DIRECT_TILE(cnnc_direct_tile4_s, float, cnnc_direct_f16, 16, 4, 6)
CNNC_DIRECT_TILE(cnnc_direct_tile8_d, double, cnnc_direct_d8, 8, 8, 3)
CNNC_DIRECT_TILE(cnnc_direct_tile6_d, double, cnnc_direct_d8, 8, 6, 4)
CNNC_DIRECT_TILE(cnnc_direct_tile4_d, double, cnnc_direct_d8, 8, 4, 6)
CNNC_DIRECT_YTILE(cnnc_direct_ytile8_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 8, 3,
                 CNNC_DIRECT_MSTORE_s)
CNNC_DIRECT_YTILE(cnnc_direct_ytile6_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 4,
                 CNNC_DIRECT_MSTORE_s)
CNNC_DIRECT_YTILE(cnnc_direct_ytile4_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 6,
                 CNNC_DIRECT_MSTORE_s)
CNNC_DIRECT_YTILE(cnnc_direct_ytile8_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 8, 3,
                 CNNC_DIRECT_MSTORE_d)
CNNC_DIRECT_YTILE(cnnc_direct_ytile6_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 4,
                 CNNC_DIRECT_MSTORE_d)
CNNC_DIRECT_YTILE(cnnc_direct_ytile4_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 6,
                 CNNC_DIRECT_MSTORE_d)
/* Weight gradient: MR rows of dy x KR taps, the shape that wastes least on M x K (see
 * _direct_wg_shape). */
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad4x6_s, float, cnnc_direct_f16, 16, 4, 6, CNNC_DIRECT_MLOAD_s)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad8x3_s, float, cnnc_direct_f16, 16, 8, 3, CNNC_DIRECT_MLOAD_s)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad6x4_s, float, cnnc_direct_f16, 16, 6, 4, CNNC_DIRECT_MLOAD_s)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad3x8_s, float, cnnc_direct_f16, 16, 3, 8, CNNC_DIRECT_MLOAD_s)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad4x6_d, double, cnnc_direct_d8, 8, 4, 6, CNNC_DIRECT_MLOAD_d)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad8x3_d, double, cnnc_direct_d8, 8, 8, 3, CNNC_DIRECT_MLOAD_d)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad6x4_d, double, cnnc_direct_d8, 8, 6, 4, CNNC_DIRECT_MLOAD_d)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad3x8_d, double, cnnc_direct_d8, 8, 3, 8, CNNC_DIRECT_MLOAD_d)
#endif
