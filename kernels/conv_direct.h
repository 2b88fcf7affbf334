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
 * packed k-major, MR rows at a time (zero rows past M).
 * Weight-gradient tile: dw[i][j] += sum over q of dy[i][q] * xp[off[j] + q] for MR rows of
 * dy and KR taps, VL lanes of partial sums per pair, added lane by lane in a fixed order.
 * q runs over `rows` runs of nv vectors: run r reads dy at r*nv*VL and xp at xrow[r] (one
 * run over the whole flattened chunk, or one per output row when OW fills whole vectors).
 * Rows and taps past the real ones repeat a real one (reads stay in bounds) and are not
 * stored. Written with GCC vector extensions: the build's -march picks the instructions. */
#ifndef CNNC_CONV_DIRECT_H
#define CNNC_CONV_DIRECT_H
#include <stddef.h>
#include <string.h>

#define CNNC_DIRECT_TILE(NAME, T, VT, VL, MR, NV)                                          \
static void NAME(ptrdiff_t K, const T *a, const T *xp, const int *off, T *out) {           \
    VT acc[MR][NV];                                                                        \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < NV; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                    \
        const T *b = xp + off[k];                                                          \
        VT bv[NV];                                                                         \
        for (int j = 0; j < NV; j++) memcpy(&bv[j], b + j * VL, sizeof(VT));               \
        for (int i = 0; i < MR; i++)                                                       \
            for (int j = 0; j < NV; j++) acc[i][j] += a[k * MR + i] * bv[j];               \
    }                                                                                      \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < NV; j++) memcpy(out + (i * NV + j) * VL, &acc[i][j], sizeof(VT)); \
}

#define CNNC_DIRECT_WGRAD(NAME, T, VT, VL, MR, KR)                                         \
static void NAME(ptrdiff_t rows, const int *xrow, ptrdiff_t nv, const T *dy, ptrdiff_t ldd,  \
                 int mr, const T *xp, const int *off, int kr, T *dw, ptrdiff_t ldw) {      \
    const T *d[MR];                                                                        \
    const T *x[KR];                                                                        \
    VT acc[MR][KR];                                                                        \
    for (int i = 0; i < MR; i++) d[i] = dy + (i < mr ? i : mr - 1) * ldd;                  \
    for (int j = 0; j < KR; j++) x[j] = xp + off[j < kr ? j : kr - 1];                     \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < KR; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t r = 0; r < rows; r++) {                                                 \
        ptrdiff_t dq = r * nv * VL, xq = xrow[r];                                          \
        for (ptrdiff_t v = 0; v < nv * VL; v += VL) {                                      \
            VT dv[MR];                                                                     \
            for (int i = 0; i < MR; i++) memcpy(&dv[i], d[i] + dq + v, sizeof(VT));        \
            for (int j = 0; j < KR; j++) {                                                 \
                VT xv;                                                                     \
                memcpy(&xv, x[j] + xq + v, sizeof(VT));                                    \
                __asm__("" : "+v"(xv)); /* one load, not one per FMA operand */           \
                for (int i = 0; i < MR; i++) acc[i][j] += dv[i] * xv;                      \
            }                                                                              \
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

/* Forward: 8 weight rows x 48 floats (24 accumulators), or 6 x 64 / 4 x 96 for layers
 * whose output channels are not a multiple of 8 (LeNet-5's 6). */
CNNC_DIRECT_TILE(cnnc_direct_tile8_s, float, cnnc_direct_f16, 16, 8, 3)
CNNC_DIRECT_TILE(cnnc_direct_tile6_s, float, cnnc_direct_f16, 16, 6, 4)
CNNC_DIRECT_TILE(cnnc_direct_tile4_s, float, cnnc_direct_f16, 16, 4, 6)
CNNC_DIRECT_TILE(cnnc_direct_tile8_d, double, cnnc_direct_d8, 8, 8, 3)
CNNC_DIRECT_TILE(cnnc_direct_tile6_d, double, cnnc_direct_d8, 8, 6, 4)
CNNC_DIRECT_TILE(cnnc_direct_tile4_d, double, cnnc_direct_d8, 8, 4, 6)
/* Weight gradient: 4 rows of dy x 6 taps. */
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad_s, float, cnnc_direct_f16, 16, 4, 6)
CNNC_DIRECT_WGRAD(cnnc_direct_wgrad_d, double, cnnc_direct_d8, 8, 4, 6)
#endif
