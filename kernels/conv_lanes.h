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

/* 8 x 3, 6 x 4 and 4 x 6 vectors (24 accumulators), as the direct path's tiles. */
CNNC_LANES_TILE(cnnc_lanes_tile8_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 8, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 6, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4_s, float, cnnc_direct_f16, cnnc_direct_i16, 16, 4, 6)
CNNC_LANES_TILE(cnnc_lanes_tile8_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 8, 3)
CNNC_LANES_TILE(cnnc_lanes_tile6_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 6, 4)
CNNC_LANES_TILE(cnnc_lanes_tile4_d, double, cnnc_direct_d8, cnnc_direct_l8, 8, 4, 6)
#endif
