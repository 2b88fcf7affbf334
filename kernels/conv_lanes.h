/* Forward tiles of the direct convolution with a lane per image (conv_lanes.pxi).
 *
 * A chunk of VL images is transposed into xl[c][row][column][VL]: one vector holds a pixel
 * of every image. Tap (c, ki, kj) of output pixel (oy, ox) reads the vector at
 * off[k] + oy*sh*row + ox*vs, vs = sw*VL, so a tile of NV output pixels of one row reads
 * NV whole vectors vs apart per tap: conv_direct.h's sums, at any stride and width. The
 * tile adds the bias (and relu) and stores its MR x NV vectors into a stage row of ldo
 * elements per output channel, which conv_winograd.h's CNNC_WBAT_STORE transposes back
 * into y. The weight gradient is conv_direct.h's micro-kernel with x's vectors vs apart. */
#ifndef CNNC_CONV_LANES_H
#define CNNC_CONV_LANES_H
#include "conv_direct.h"

#define CNNC_LANES_TILE(NAME, T, VT, IT, VL, MR, NV)                                       \
static void NAME(ptrdiff_t K, const T *a, const T *xp, const int *off, ptrdiff_t vs,       \
                 const T *bias, int relu, T *out, ptrdiff_t ldo) {                         \
    VT acc[MR][NV];                                                                        \
    CNNC_DIRECT_SUM_TAPS(T, VT, vs, MR, NV)                                                \
    for (int i = 0; i < MR; i++)                                                           \
        for (int j = 0; j < NV; j++) {                                                     \
            VT v = acc[i][j] + bias[i];                                                    \
            if (relu) v = (VT)((IT)(v > 0) & (IT)v);                                       \
            CNNC_DIRECT_IN_REG(v); /* stored on its own, not as a memmove of a copy */     \
            memcpy(out + i * ldo + j * VL, &v, sizeof(VT));                                \
        }                                                                                  \
}

/* 8 x 3, 6 x 4 and 4 x 6 vectors (24 accumulators), as the direct path's tiles, and each
 * narrower, for the last tile of a row (LeNet-5's conv2: 10 columns as 3 + 3 + 3 + 1). */
CNNC_LANES_TILE(cnnc_lanes_tile8x1_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 8, 1)
CNNC_LANES_TILE(cnnc_lanes_tile8x2_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 8, 2)
CNNC_LANES_TILE(cnnc_lanes_tile8x3_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 8, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6x1_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 1)
CNNC_LANES_TILE(cnnc_lanes_tile6x2_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 2)
CNNC_LANES_TILE(cnnc_lanes_tile6x3_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6x4_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4x1_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 1)
CNNC_LANES_TILE(cnnc_lanes_tile4x2_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 2)
CNNC_LANES_TILE(cnnc_lanes_tile4x3_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 3)
CNNC_LANES_TILE(cnnc_lanes_tile4x4_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4x5_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 5)
CNNC_LANES_TILE(cnnc_lanes_tile4x6_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 6)
CNNC_LANES_TILE(cnnc_lanes_tile8x1_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 8, 1)
CNNC_LANES_TILE(cnnc_lanes_tile8x2_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 8, 2)
CNNC_LANES_TILE(cnnc_lanes_tile8x3_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 8, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6x1_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 1)
CNNC_LANES_TILE(cnnc_lanes_tile6x2_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 2)
CNNC_LANES_TILE(cnnc_lanes_tile6x3_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6x4_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4x1_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 1)
CNNC_LANES_TILE(cnnc_lanes_tile4x2_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 2)
CNNC_LANES_TILE(cnnc_lanes_tile4x3_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 3)
CNNC_LANES_TILE(cnnc_lanes_tile4x4_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4x5_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 5)
CNNC_LANES_TILE(cnnc_lanes_tile4x6_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 6)

/* The tile of mr rows and nv vectors (one of the above). */
static void cnnc_lanes_tile_s(int mr, int nv, ptrdiff_t K, const float *a, const float *xp,
                              const int *off, ptrdiff_t vs, const float *bias, int relu, float *out,
                              ptrdiff_t ldo) {
    switch (mr * 8 + nv) {
    case 65: cnnc_lanes_tile8x1_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 66: cnnc_lanes_tile8x2_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 67: cnnc_lanes_tile8x3_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 49: cnnc_lanes_tile6x1_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 50: cnnc_lanes_tile6x2_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 51: cnnc_lanes_tile6x3_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 52: cnnc_lanes_tile6x4_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 33: cnnc_lanes_tile4x1_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 34: cnnc_lanes_tile4x2_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 35: cnnc_lanes_tile4x3_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 36: cnnc_lanes_tile4x4_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 37: cnnc_lanes_tile4x5_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 38: cnnc_lanes_tile4x6_s(K, a, xp, off, vs, bias, relu, out, ldo); break;
    }
}

static void cnnc_lanes_tile_d(int mr, int nv, ptrdiff_t K, const double *a, const double *xp,
                              const int *off, ptrdiff_t vs, const double *bias, int relu, double *out,
                              ptrdiff_t ldo) {
    switch (mr * 8 + nv) {
    case 65: cnnc_lanes_tile8x1_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 66: cnnc_lanes_tile8x2_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 67: cnnc_lanes_tile8x3_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 49: cnnc_lanes_tile6x1_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 50: cnnc_lanes_tile6x2_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 51: cnnc_lanes_tile6x3_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 52: cnnc_lanes_tile6x4_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 33: cnnc_lanes_tile4x1_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 34: cnnc_lanes_tile4x2_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 35: cnnc_lanes_tile4x3_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 36: cnnc_lanes_tile4x4_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 37: cnnc_lanes_tile4x5_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    case 38: cnnc_lanes_tile4x6_d(K, a, xp, off, vs, bias, relu, out, ldo); break;
    }
}
#endif
