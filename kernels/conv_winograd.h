/* Winograd F(2x2, 3x3) with the tiles in vector lanes (conv_winograd.pxi, "vector" path),
 * and F(4x4, 3x3) with the images in vector lanes (below, "batch lanes").
 *
 * The zero-padded input of one channel is split into its 4 polyphase planes z[p][A][i]
 * = xpad[2A + (p >> 1)][2i + (p & 1)], each row rw = tw + 1 long (tw: tiles per tile row).
 * With the "virtual" tile index q = A*rw + j (tile row A, tile column j; j = tw is a wasted
 * lane, as is the extra row A = th of each image), entry (r, k) of the 4x4 input patch of
 * tile q is z[(r & 1)*2 + (k & 1)][q + (r >> 1)*rw + (k >> 1)]: for every (r, k),
 * consecutive tiles are consecutive values, so the input transform B^T d B runs on VL
 * tiles at once from plain (unaligned) loads.
 *
 * The transformed input v[c][q / VL][e][q % VL] (e = 4x4 position) feeds a micro-kernel
 * per e: mm[e][i][q] = sum_c u[e][c][i] * v[c][q][e] for MR output channels i and NV
 * vectors of tiles, K = C; then the output transform A^T M A (+ bias, relu / leaky relu) of those
 * tiles is stored interleaved, st[i][u][2q + t] = y[2A + u][2j + t], so that each output row
 * is a contiguous run of st (copied to y by the caller). Written with GCC vector
 * extensions (and GCC's __builtin_shuffle): the build's -march picks the instructions. */
#ifndef CNNC_CONV_WINOGRAD_H
#define CNNC_CONV_WINOGRAD_H
#include <stddef.h>
#include <string.h>

#include "conv_wino_lanes.h"
#include "pool_max.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#if defined(__clang__) /* no two-vector __builtin_shuffle with a mask: lane by lane */
#define CNNC_WINO_SHUFFLE(a, b, m) __extension__({                                         \
    __typeof__(a) r_;                                                                      \
    const int n_ = (int)(sizeof(a) / sizeof((a)[0]));                                      \
    for (int l_ = 0; l_ < n_; l_++) {                                                      \
        int i_ = (int)(m)[l_] % (2 * n_);                                                  \
        r_[l_] = i_ < n_ ? (a)[i_] : (b)[i_ - n_];                                         \
    }                                                                                      \
    r_; })
#else
#define CNNC_WINO_SHUFFLE(a, b, m) __builtin_shuffle(a, b, m)
#endif

/* One vector stored (or loaded) on its own: a row of these is not turned into a libc
 * memcpy of a stack copy (gcc does that to runs of vector copies; 8-20% of a layer). */
#ifdef __AVX512F__
#define CNNC_WINO_BARRIER(v) __asm__("" : "+v"(v))
#else
#define CNNC_WINO_BARRIER(v) ((void)0)
#endif
#define CNNC_WINO_STV(p, v) do {                                                           \
    __typeof__(v) t_ = (v);                                                                \
    CNNC_WINO_BARRIER(t_);                                                                 \
    memcpy((p), &t_, sizeof t_);                                                           \
} while (0)
#define CNNC_WINO_LDV(VT, p) __extension__({                                               \
    VT t_;                                                                                 \
    memcpy(&t_, (p), sizeof t_);                                                           \
    CNNC_WINO_BARRIER(t_);                                                                 \
    t_; })

/* Lanes 0 .. n-1 of a vector loaded from / stored to p (1 <= n <= VL), the loaded rest 0:
 * AVX-512 masked moves where built (a variable-length memcpy is a libc call). */
#ifdef __AVX512F__
#define CNNC_WINO_LANES(n) ((1u << (n)) - 1)
#define CNNC_WINO_PLOAD_s(p, n)                                                            \
    ((cnnc_wino_f16)_mm512_maskz_loadu_ps((__mmask16)CNNC_WINO_LANES(n), (p)))
#define CNNC_WINO_PLOAD_d(p, n)                                                            \
    ((cnnc_wino_d8)_mm512_maskz_loadu_pd((__mmask8)CNNC_WINO_LANES(n), (p)))
#define CNNC_WINO_PSTORE_s(p, n, v)                                                        \
    _mm512_mask_storeu_ps((p), (__mmask16)CNNC_WINO_LANES(n), (__m512)(v))
#define CNNC_WINO_PSTORE_d(p, n, v)                                                        \
    _mm512_mask_storeu_pd((p), (__mmask8)CNNC_WINO_LANES(n), (__m512d)(v))
#else
#define CNNC_WINO_PLOAD_LANES(VT, p, n) __extension__({                                    \
    VT t_ = {0};                                                                           \
    for (int l_ = 0; l_ < (n); l_++) t_[l_] = (p)[l_];                                     \
    t_; })
#define CNNC_WINO_PSTORE_LANES(p, n, v) do {                                               \
    for (int l_ = 0; l_ < (n); l_++) (p)[l_] = (v)[l_];                                    \
} while (0)
#define CNNC_WINO_PLOAD_s(p, n) CNNC_WINO_PLOAD_LANES(cnnc_wino_f16, p, n)
#define CNNC_WINO_PLOAD_d(p, n) CNNC_WINO_PLOAD_LANES(cnnc_wino_d8, p, n)
#define CNNC_WINO_PSTORE_s(p, n, v) CNNC_WINO_PSTORE_LANES(p, n, v)
#define CNNC_WINO_PSTORE_d(p, n, v) CNNC_WINO_PSTORE_LANES(p, n, v)
#endif

#define CNNC_WINO_MR 8 /* output channels per micro-kernel call */
#define CNNC_WINO_NV 3 /* vectors of tiles per micro-kernel call (the last may be 1-2) */
#define CNNC_WINO_NV4 1 /* ... under F(4x4), whose 36 products per tile then stay in L1 */

/* dst[k] = src[k] for k < n: whole vectors, then a partial one (no call, no overrun). */
#define CNNC_WINO_COPY(NAME, T, VT, VL, SUF)                                               \
static inline void NAME(T *dst, const T *src, ptrdiff_t n) {                               \
    ptrdiff_t k = 0;                                                                       \
    for (; k + VL <= n; k += VL) memcpy(dst + k, src + k, sizeof(VT));                     \
    if (k < n) CNNC_WINO_PSTORE_##SUF(dst + k, n - k, CNNC_WINO_PLOAD_##SUF(src + k, n - k)); \
}

/* Split one padded row, p[s] = src[s - pl] for 0 <= s - pl < w, else 0 (src NULL: all 0),
 * into ev[i] = p[2i], od[i] = p[2i + 1] for i < np, storing np rounded up to VL values
 * and, with pl = 0 or 1, up to VL values of zeros or row data past those (callers
 * write rows in order and leave room after the last). With pl = 0 or 1 the even and odd
 * columns of src go straight to od / ev (or ev / od), shifted; other paddings pass
 * through buf: 2 * (np rounded up to VL) values, zero wherever src is not copied (the
 * same place for every row: zero it once, then split rows of one width and padding). */
#define CNNC_WINO_SPLIT(NAME, T, VT, IT, VL, COPY)                                         \
static void NAME(const T *src, ptrdiff_t w, ptrdiff_t pl, ptrdiff_t np, T *buf, T *ev,     \
                 T *od) {                                                                  \
    ptrdiff_t nr = 2 * ((np + VL - 1) / VL * VL), k;                                       \
    IT me, mo;                                                                             \
    VT a, b, e, o;                                                                         \
    for (int l = 0; l < VL; l++) {                                                         \
        me[l] = 2 * l;                                                                     \
        mo[l] = 2 * l + 1;                                                                 \
    }                                                                                      \
    if (!src || pl == 0 || pl == 1) {                                                      \
        T t[2 * VL];                                                                       \
        T *lo = pl ? od : ev, *hi = pl ? ev + 1 : od; /* src[2i] -> lo[i], src[2i+1] -> hi[i] */ \
        ptrdiff_t n = src ? (w < nr - pl ? w : nr - pl) : 0;                               \
        for (k = 0; 2 * k < nr; k += VL) {                                                 \
            memset(ev + k, 0, sizeof(VT));                                                 \
            memset(od + k, 0, sizeof(VT));                                                 \
        }                                                                                  \
        for (k = 0; k < n; k += 2 * VL) {                                                  \
            if (k + 2 * VL <= n) {                                                         \
                memcpy(&a, src + k, sizeof a);                                             \
                memcpy(&b, src + k + VL, sizeof b);                                        \
            } else { /* the last, partial pair of vectors */                               \
                for (ptrdiff_t l = 0; l < 2 * VL; l++) t[l] = k + l < n ? src[k + l] : 0;  \
                memcpy(&a, t, sizeof a);                                                   \
                memcpy(&b, t + VL, sizeof b);                                              \
            }                                                                              \
            e = CNNC_WINO_SHUFFLE(a, b, me);                                               \
            o = CNNC_WINO_SHUFFLE(a, b, mo);                                               \
            memcpy(lo + k / 2, &e, sizeof e);                                              \
            memcpy(hi + k / 2, &o, sizeof o);                                              \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    ptrdiff_t lo = pl > 0 ? pl : 0, hi = pl + w < nr ? pl + w : nr;                       \
    if (hi > lo) COPY(buf + lo, src + lo - pl, hi - lo);                                   \
    for (k = 0; 2 * k < nr; k += VL) {                                                     \
        memcpy(&a, buf + 2 * k, sizeof a);                                                 \
        memcpy(&b, buf + 2 * k + VL, sizeof b);                                            \
        e = CNNC_WINO_SHUFFLE(a, b, me);                                                   \
        o = CNNC_WINO_SHUFFLE(a, b, mo);                                                   \
        memcpy(ev + k, &e, sizeof e);                                                      \
        memcpy(od + k, &o, sizeof o);                                                      \
    }                                                                                      \
}

/* (B^T d B)[e] for the tiles q < nq (a multiple of VL) of one channel's polyphase planes
 * z (ps apart, rows rw long), stored as v[(q / VL) * 16 * VL + e * VL + q % VL]: the 16
 * positions of a vector of tiles side by side (one store stream). */
#define CNNC_WINO_INPUT(NAME, T, VT, VL)                                                   \
static void NAME(const T *z, ptrdiff_t ps, ptrdiff_t rw, ptrdiff_t nq, T *v) {             \
    const T *p[4] = {z, z + ps, z + 2 * ps, z + 3 * ps};                                   \
    for (ptrdiff_t q = 0; q < nq; q += VL, v += 16 * VL) {                                 \
        VT d[4][4], s[4][4], o[16];                                                        \
        for (int r = 0; r < 4; r++)  /* plane (r & 1, k & 1), row r >> 1, column k >> 1 */ \
            for (int k = 0; k < 4; k++)                                                    \
                memcpy(&d[r][k], p[(r & 1) * 2 + (k & 1)] + q + (r >> 1) * rw + (k >> 1), \
                       sizeof(VT));                                                        \
        for (int k = 0; k < 4; k++) {                                                      \
            s[0][k] = d[0][k] - d[2][k];                                                   \
            s[1][k] = d[1][k] + d[2][k];                                                   \
            s[2][k] = d[2][k] - d[1][k];                                                   \
            s[3][k] = d[1][k] - d[3][k];                                                   \
        }                                                                                  \
        for (int r = 0; r < 4; r++) {                                                      \
            o[4 * r] = s[r][0] - s[r][2];                                                  \
            o[4 * r + 1] = s[r][1] + s[r][2];                                              \
            o[4 * r + 2] = s[r][2] - s[r][1];                                              \
            o[4 * r + 3] = s[r][1] - s[r][3];                                              \
        }                                                                                  \
        for (int e = 0; e < 16; e++) memcpy(v + e * VL, &o[e], sizeof(VT));                \
    }                                                                                      \
}

/* out[i][j*VL ..] = sum_k a[k*MR + i] * b[k*ldb + j*ldj ..] for i < MR, j < NV. */
#define CNNC_WINO_TILE(NAME, T, VT, VL, NV)                                                \
static inline void NAME(ptrdiff_t K, const T *a, const T *b, ptrdiff_t ldb, ptrdiff_t ldj, \
                        T *out, ptrdiff_t ldo) {                                           \
    VT acc[CNNC_WINO_MR][NV];                                                              \
    for (int i = 0; i < CNNC_WINO_MR; i++)                                                 \
        for (int j = 0; j < NV; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                    \
        VT bv[NV];                                                                         \
        for (int j = 0; j < NV; j++) memcpy(&bv[j], b + k * ldb + j * ldj, sizeof(VT));    \
        for (int i = 0; i < CNNC_WINO_MR; i++)                                             \
            for (int j = 0; j < NV; j++) acc[i][j] += a[k * CNNC_WINO_MR + i] * bv[j];     \
    }                                                                                      \
    for (int i = 0; i < CNNC_WINO_MR; i++)                                                 \
        for (int j = 0; j < NV; j++) memcpy(out + i * ldo + j * VL, &acc[i][j], sizeof(VT)); \
}

/* act(v): 1 relu (v > 0 ? v : 0), 2 leaky relu (v * slope below 0); NaN gives 0. */
#define CNNC_WINO_ACT(VT, IT, v, act, slope) __extension__({                               \
    VT v_ = (v);                                                                           \
    if ((act) == 1 || (act) == 2) {                                                        \
        IT p_ = (IT)(v_ > 0);                                                              \
        IT n_ = (act) == 1 ? (IT){0} : (IT)(v_ * (slope)) & ~p_;                           \
        v_ = (VT)(((IT)v_ & p_) | n_);                                                     \
    }                                                                                      \
    v_; })

/* dst[2l + c] = (c ? b : a)[l] for l < VL: a vector of tiles' two output columns
 * interleaved into one run of a stage row. */
#define CNNC_WINO_ZIP(VT, IT, VL, dst, a, b) do {                                         \
    IT lo_, hi_;                                                                           \
    for (int l_ = 0; l_ < VL; l_++) {                                                      \
        lo_[l_] = (l_ & 1) * VL + l_ / 2;                                                  \
        hi_[l_] = (l_ & 1) * VL + VL / 2 + l_ / 2;                                         \
    }                                                                                      \
    VT ia_ = CNNC_WINO_SHUFFLE(a, b, lo_), ib_ = CNNC_WINO_SHUFFLE(a, b, hi_);             \
    memcpy((dst), &ia_, sizeof ia_);                                                       \
    memcpy((dst) + VL, &ib_, sizeof ib_);                                                  \
} while (0)

/* One block of MR output channels by nv (1..NV) vectors of tiles: the 16 products
 * mm[e] = u[e] @ v[e] (u: [16][K][MR], v[e] at v + k*ldv + (q / VL)*16*VL + e*VL + q % VL
 * as the input transform stores it), then st[i*lds + t*half + 2q ..]
 * = act(row t of A^T M_q A + bias[i]) interleaved, for the first `rows` channels.
 * act: 0 none, 1 relu, 2 leaky relu (slope); others are applied by the caller. */
#define CNNC_WINO_BLOCK(NAME, T, VT, IT, VL, T1, T2, T3)                                   \
static void NAME(ptrdiff_t K, const T *u, const T *v, ptrdiff_t ldv, int nv, T *mm,         \
                 const T *bias, int rows, int act, T slope, T *st, ptrdiff_t lds,          \
                 ptrdiff_t half) {                                                         \
    const ptrdiff_t ldo = CNNC_WINO_NV * VL, me = CNNC_WINO_MR * ldo;                      \
    for (int e = 0; e < 16; e++) {                                                         \
        const T *ue = u + e * K * CNNC_WINO_MR, *ve = v + e * VL;                          \
        if (nv == 3) T3(K, ue, ve, ldv, 16 * VL, mm + e * me, ldo);                        \
        else if (nv == 2) T2(K, ue, ve, ldv, 16 * VL, mm + e * me, ldo);                   \
        else T1(K, ue, ve, ldv, 16 * VL, mm + e * me, ldo);                                \
    }                                                                                      \
    for (int i = 0; i < rows; i++) {                                                       \
        T bo = bias ? bias[i] : 0;                                                         \
        for (int j = 0; j < nv; j++) {                                                     \
            VT m[16], t0[4], t1[4], y[2][2];                                               \
            for (int e = 0; e < 16; e++)                                                   \
                memcpy(&m[e], mm + e * me + i * ldo + j * VL, sizeof(VT));                 \
            for (int k = 0; k < 4; k++) {                                                  \
                t0[k] = m[k] + m[4 + k] + m[8 + k];                                        \
                t1[k] = m[4 + k] - m[8 + k] - m[12 + k];                                   \
            }                                                                              \
            y[0][0] = t0[0] + t0[1] + t0[2] + bo;                                          \
            y[0][1] = t0[1] - t0[2] - t0[3] + bo;                                          \
            y[1][0] = t1[0] + t1[1] + t1[2] + bo;                                          \
            y[1][1] = t1[1] - t1[2] - t1[3] + bo;                                          \
            for (int r = 0; r < 2; r++)                                                    \
                CNNC_WINO_ZIP(VT, IT, VL, st + i * lds + r * half + 2 * j * VL,            \
                              CNNC_WINO_ACT(VT, IT, y[r][0], act, slope),                  \
                              CNNC_WINO_ACT(VT, IT, y[r][1], act, slope));                 \
        }                                                                                  \
    }                                                                                      \
}

/* Winograd F(4x4, 3x3) with a lane per image ("batch lanes", for batches of 16 and more):
 * no wasted tiles, no polyphase planes. A chunk's input is transposed, channel by channel,
 * into xi[row][column][VL] (lane l: image l of the chunk's group, zero-padded), which the
 * input transform reads in whole vectors into v[tile][e][VL] (36 positions); products as
 * above, a vector per tile; the output transform writes the stage's rows [column][VL],
 * which are transposed back into y. The 1-D transforms are conv_wino_lanes.h's. */

/* The 36 products of a block of MR output channels by nv (1..NV4) tiles (or vectors of
 * tiles): mm[e*me + i*VL*NV4 + j*VL ..] = (u[e] @ v[e]) for channel i, tile j, with
 * u: [36][K][MR], v[e] at v + k*ldv + j*36*LV + e*LV, me = MR*NV4*VL: the first VL of
 * v's LV lanes (VL < LV: a half vector, for the last tiles of the pooled path). */
#define CNNC_WINO_MUL36(NAME, T, VL, LV, T1, T2, T3)                                       \
static inline void NAME(ptrdiff_t K, const T *u, const T *v, ptrdiff_t ldv, int nv, T *mm) { \
    const ptrdiff_t ldo = CNNC_WINO_NV4 * VL, me = CNNC_WINO_MR * ldo;                     \
    for (int e = 0; e < 36; e++) {                                                         \
        const T *ue = u + e * K * CNNC_WINO_MR, *ve = v + e * LV;                          \
        if (nv == 3) T3(K, ue, ve, ldv, 36 * LV, mm + e * me, ldo);                        \
        else if (nv == 2) T2(K, ue, ve, ldv, 36 * LV, mm + e * me, ldo);                   \
        else T1(K, ue, ve, ldv, 36 * LV, mm + e * me, ldo);                                \
    }                                                                                      \
}

/* y[4*r + c] = (A^T M A)[r][c] + bo for the 36 products m[e] at m + e*me. */
#define CNNC_WINO_AT36(NAME, T, VT, SUF)                                                   \
static inline void NAME(const T *m, ptrdiff_t me, T bo, VT *y) {                           \
    VT c[6], t[24];                                                                        \
    for (int k = 0; k < 6; k++) { /* column by column, each value loaded where used */     \
        for (int r = 0; r < 6; r++) memcpy(&c[r], m + (6 * r + k) * me, sizeof(VT));      \
        if (k == 1) c[1] += bo; /* A^T's column 1 is all ones: bo reaches all 16 outputs */ \
        cnnc_wl_at6_##SUF(c, 1, t + k, 6);                                                 \
    }                                                                                      \
    for (int r = 0; r < 4; r++) cnnc_wl_at6_##SUF(t + 6 * r, 1, y + 4 * r, 1);             \
}

/* One block of MR output channels by nv (1..NV4) tiles (or vectors of tiles): the 36
 * products, the output transform (+ bias[i]), then TAIL(y, st + i*lds, j, ld2, act, slope)
 * stores tile j's outputs of channel i (TAIL4 below; the pooled path's WPOOL_TAIL). */
#define CNNC_WINO_BLOCK4(NAME, T, VT, VL, MUL, AT, TAIL)                                   \
static void NAME(ptrdiff_t K, const T *u, const T *v, ptrdiff_t ldv, int nv, T *mm,         \
                 const T *bias, int rows, int act, T slope, T *st, ptrdiff_t lds,          \
                 ptrdiff_t ld2) {                                                          \
    const ptrdiff_t ldo = CNNC_WINO_NV4 * VL, me = CNNC_WINO_MR * ldo;                     \
    MUL(K, u, v, ldv, nv, mm);                                                             \
    for (int i = 0; i < rows; i++)                                                         \
        for (int j = 0; j < nv; j++) {                                                     \
            VT y[16];                                                                      \
            AT(mm + i * ldo + j * VL, me, bias ? bias[i] : 0, y);                          \
            TAIL(y, st + i * lds, j, ld2, act, slope);                                     \
        }                                                                                  \
}

/* The batch-lanes path's tail: column c of row r of tile j's act(y) at
 * st[r*quarter + (4*j + c)*VL ..]. */
#define CNNC_WINO_TAIL4(NAME, T, VT, IT, VL)                                               \
static inline __attribute__((always_inline)) void NAME(VT *y, T *st, ptrdiff_t j,        \
                                                     ptrdiff_t quarter, int act, T slope) { \
    for (int r = 0; r < 4; r++)                                                            \
        for (int c = 0; c < 4; c++)                                                        \
            CNNC_WINO_STV(st + r * quarter + (4 * j + c) * VL,                             \
                          CNNC_WINO_ACT(VT, IT, y[4 * r + c], act, slope));                \
}

/* Winograd F(4x4, 3x3) followed by a 2x2 stride-2 max-pool, the tiles in vector lanes
 * (conv_winograd.pxi, "pooled" path: inference's conv -> max-pool). As the F(2x2) path
 * above, with 16 polyphase planes z[p][A][i] = xpad[4A + (p >> 2)][4i + (p & 3)]: entry
 * (r, k) of the 6x6 patch of tile q = A*rw + j is z[(r & 3)*4 + (k & 3)][q + (r >> 2)*rw
 * + (k >> 2)]. The block's products and output transform are F(4x4)'s; each 4x4 tile
 * is pooled in registers (pool_max.h's choice) and the 2x2 results are stored as the F(2x2)
 * block stores its tiles, so a tile row's pooled rows are contiguous runs of the stage. */

/* (B^T d B)[e] (6x6) for the tiles q < nq (a multiple of VL) of one channel's planes z
 * (ps apart, rows rw long), stored as v[(q / VL) * 36 * VL + e * VL + q % VL]. */
#define CNNC_WPOOL_INPUT(NAME, T, VT, VL, SUF)                                             \
static void NAME(const T *z, ptrdiff_t ps, ptrdiff_t rw, ptrdiff_t nq, T *v) {             \
    for (ptrdiff_t q = 0; q < nq; q += VL, v += 36 * VL) {                                 \
        CNNC_WL_BT66(VT, SUF, CNNC_WINO_LDV(VT, z + ((r_ & 3) * 4 + (k_ & 3)) * ps + q    \
                                                + (r_ >> 2) * rw + (k_ >> 2)),             \
                     CNNC_WINO_STV(v + e_ * VL, val_));                                    \
    }                                                                                      \
}

/* The 4 column phases of one padded row, p[s] = src[s - pl] for 0 <= s - pl < w, else 0
 * (src NULL: all 0): o[f*os + i] = p[4i + f] for f < 4, i < np, storing np rounded up to
 * VL/2 values and VL/2 past them to each (callers write rows in order and leave room
 * after the last). Vectors load from src directly (masked past w); one that starts in
 * the left padding goes through buf (VL values): staging whole rows in a buffer first
 * stalled each load on the store before it (45% of the split on the seed CNN's conv2). */
#define CNNC_WPOOL_SPLIT(NAME, T, VT, IT, VL, PLOAD)                                       \
static void NAME(const T *src, ptrdiff_t w, ptrdiff_t pl, ptrdiff_t np, T *buf, T *o,      \
                 ptrdiff_t os) {                                                           \
    ptrdiff_t nb = (4 * np + 2 * VL - 1) / (2 * VL) * (2 * VL);                            \
    IT mk[4];                                                                              \
    for (int f = 0; f < 4; f++)                                                            \
        for (int l = 0; l < VL; l++) mk[f][l] = (4 * l + f) % (2 * VL);                    \
    for (ptrdiff_t k = 0; k < nb; k += 2 * VL) {                                           \
        VT v[2];                                                                           \
        for (int h = 0; h < 2; h++) {                                                      \
            ptrdiff_t j = k + h * VL - pl; /* src's index in the vector's first lane */    \
            if (!src || j >= w || j + VL <= 0) {                                           \
                v[h] = (VT){0};                                                            \
            } else if (j >= 0) {                                                           \
                v[h] = j + VL <= w ? CNNC_WINO_LDV(VT, src + j) : PLOAD(src + j, w - j);  \
            } else {                                                                       \
                memset(buf, 0, sizeof(VT));                                                \
                for (ptrdiff_t s = 0; s < w && s < j + VL; s++) buf[s - j] = src[s];       \
                v[h] = CNNC_WINO_LDV(VT, buf);                                             \
            }                                                                              \
        }                                                                                  \
        for (int f = 0; f < 4; f++) CNNC_WINO_STV(o + f * os + k / 4,                      \
                                                  CNNC_WINO_SHUFFLE(v[0], v[1], mk[f]));   \
    }                                                                                      \
}

/* The pooled path's tail: act(y) (relu / leaky relu), the 2x2 max-pool of each 4x4 tile
 * of the vector j, and st[t*half + 2q ..] = row t of tile q's pooled 2x2, interleaved. */
#define CNNC_WPOOL_TAIL(NAME, T, VT, IT, VL, MAX)                                          \
static inline __attribute__((always_inline)) void NAME(VT *y, T *st, ptrdiff_t j,        \
                                                     ptrdiff_t half, int act, T slope) {    \
    VT p[2][2];                                                                            \
    if (act == 1) { /* relu leaves no NaN and no -0: the pool's choice is a max */         \
        for (int k = 0; k < 16; k++) y[k] = MAX(y[k], (VT){0});                            \
        for (int r = 0; r < 2; r++)                                                        \
            for (int c = 0; c < 2; c++) {                                                  \
                const VT *w = y + 8 * r + 2 * c;                                           \
                p[r][c] = MAX(MAX(w[0], w[1]), MAX(w[4], w[5]));                           \
            }                                                                              \
    } else {                                                                               \
        for (int k = 0; k < 16; k++) y[k] = CNNC_WINO_ACT(VT, IT, y[k], act, slope);       \
        for (int r = 0; r < 2; r++)                                                        \
            for (int c = 0; c < 2; c++) { /* (2r, 2c) (2r, 2c+1) (2r+1, ..) ... */         \
                const VT *w = y + 8 * r + 2 * c;                                           \
                p[r][c] = CNNC_POOL_VPICK(IT, CNNC_POOL_VPICK(IT, w[5], w[4]),             \
                                          CNNC_POOL_VPICK(IT, w[1], w[0]));                \
            }                                                                              \
    }                                                                                      \
    for (int r = 0; r < 2; r++)                                                            \
        CNNC_WINO_ZIP(VT, IT, VL, st + r * half + 2 * j * VL, p[r][0], p[r][1]);           \
}

/* r[i][l] <-> r[l][i] for a VL x VL block (log2(VL) rounds of butterflies). */
#define CNNC_WINO_TRANSPOSE(NAME, T, VT, IT, VL)                                           \
static inline void NAME(VT *r) {                                                           \
    _Pragma("GCC unroll 4") for (int b = 1; b < VL; b *= 2) { /* unrolled: fixed masks */  \
        IT m1, m2;                                                                         \
        _Pragma("GCC unroll 16") for (int l = 0; l < VL; l++) {                            \
            m1[l] = (l & b) ? VL + (l ^ b) : l;                                            \
            m2[l] = (l & b) ? VL + l : (l ^ b);                                            \
        }                                                                                  \
        _Pragma("GCC unroll 16") for (int i = 0; i < VL; i++)                              \
            if (!(i & b)) {                                                                \
                VT a = r[i], c = r[i | b];                                                 \
                r[i] = CNNC_WINO_SHUFFLE(a, c, m1);                                        \
                r[i | b] = CNNC_WINO_SHUFFLE(a, c, m2);                                    \
            }                                                                              \
    }                                                                                      \
}

/* One row of xi: xi[s][l] = x[l*img + s - pl] for 0 <= s - pl < w and l < n, else 0, for
 * s < xs (x NULL: a padding row). Columns in blocks of VL, transposed; xs leaves room
 * for the last block's whole vectors. (Prefetching the caller's next rows made it slower:
 * images a power of two apart share cache sets, and the prefetched lines evicted the
 * block's own: ResNet-20's 32x32 weight gradient 2.9 -> 2.6 ms without.) */
#define CNNC_WBAT_ROW(NAME, T, VT, VL, TRANSPOSE, PLOAD)                                   \
static void NAME(const T *x, ptrdiff_t img, int n, ptrdiff_t w, ptrdiff_t pl,              \
                 ptrdiff_t xs, T *xi) {                                                    \
    ptrdiff_t lo = pl > 0 ? pl : 0, hi = pl + w < xs ? pl + w : xs;                       \
    if (!x || hi <= lo) {                                                                  \
        memset(xi, 0, xs * VL * sizeof(T));                                                \
        return;                                                                            \
    }                                                                                      \
    memset(xi, 0, lo * VL * sizeof(T));                                                    \
    for (ptrdiff_t s = lo; s < hi; s += VL) {                                              \
        VT r[VL];                                                                          \
        ptrdiff_t k = hi - s < VL ? hi - s : VL;                                           \
        for (int l = 0; l < VL; l++) {                                                     \
            if (l < n && k == VL) {                                                        \
                memcpy(&r[l], x + l * img + s - pl, sizeof(VT));                           \
            } else {                                                                       \
                r[l] = l < n ? PLOAD(x + l * img + s - pl, k) : (VT){0};                   \
            }                                                                              \
        }                                                                                  \
        TRANSPOSE(r);                                                                      \
        for (int l = 0; l < VL; l++) CNNC_WINO_STV(xi + (s + l) * VL, r[l]);               \
    }                                                                                      \
    ptrdiff_t end = lo + (hi - lo + VL - 1) / VL * VL;                                     \
    if (end < xs) memset(xi + end * VL, 0, (xs - end) * VL * sizeof(T));                   \
}

/* (B^T d B)[e] for the na x tw tiles of xi (rows xs columns of VL lanes apart), tile
 * s = a*tw + j at v[s*ss + e*es]. */
#define CNNC_WBAT_INPUT(NAME, T, VT, VL, SUF)                                              \
static void NAME(const T *xi, ptrdiff_t xs, ptrdiff_t na, ptrdiff_t tw, T *v, ptrdiff_t ss, \
                 ptrdiff_t es) {                                                           \
    for (ptrdiff_t a = 0; a < na; a++)                                                     \
        for (ptrdiff_t j = 0; j < tw; j++, v += ss) {                                      \
            CNNC_WL_BT66(VT, SUF, CNNC_WINO_LDV(VT, xi + ((4 * a + r_) * xs + 4 * j + k_) * VL), \
                         CNNC_WINO_STV(v + e_ * es, val_));                                \
        }                                                                                  \
}

/* y[l*img + s] = st[s][l] for s < w, l < n: one output row of the chunk's images from a
 * stage row, VL columns at a time, transposed; y + pf, where the caller writes next, is
 * prefetched for writing (the seed CNN's conv2 forward: 7.1 -> 5.6 ms). */
#define CNNC_WBAT_STORE(NAME, T, VT, VL, TRANSPOSE, PSTORE)                                \
static void NAME(const T *st, int n, ptrdiff_t w, T *y, ptrdiff_t img, ptrdiff_t pf) {     \
    for (ptrdiff_t s = 0; s < w; s += VL) {                                                \
        VT r[VL];                                                                          \
        ptrdiff_t k = w - s < VL ? w - s : VL;                                             \
        for (int l = 0; l < VL; l++) r[l] = CNNC_WINO_LDV(VT, st + (s + l) * VL);          \
        TRANSPOSE(r);                                                                      \
        for (int l = 0; l < n; l++) {                                                      \
            __builtin_prefetch(y + l * img + s + pf, 1);                                   \
            if (k == VL) CNNC_WINO_STV(y + l * img + s, r[l]);                             \
            else PSTORE(y + l * img + s, k, r[l]);                                         \
        }                                                                                  \
    }                                                                                      \
}

/* Weight gradient: dW[o, i] = G^T Z[o, i] G with Z[o, i][e] = the sum over tiles (and
 * images: lanes) of P_o[e] * V_i[e], V the input transform above and P = A dy A^T of the
 * 4x4 tiles of dy (A: the columns of A^T, conv_wino_lanes.h's a6). */

/* (A d A^T)[e] for the na x tw 4x4 tiles of dyi (rows xs columns of VL lanes apart, zero
 * past dy), tile s = a*tw + j at p[s*ss + e*es]. */
#define CNNC_WBAT_DY(NAME, T, VT, VL, SUF)                                                 \
static void NAME(const T *dyi, ptrdiff_t xs, ptrdiff_t na, ptrdiff_t tw, T *p, ptrdiff_t ss, \
                 ptrdiff_t es) {                                                           \
    for (ptrdiff_t a = 0; a < na; a++)                                                     \
        for (ptrdiff_t j = 0; j < tw; j++, p += ss) {                                      \
            VT d[16], s[24];                                                               \
            for (int r = 0; r < 4; r++)                                                    \
                for (int k = 0; k < 4; k++)                                                \
                    d[4 * r + k] = CNNC_WINO_LDV(VT, dyi + ((4 * a + r) * xs + 4 * j + k) * VL); \
            for (int k = 0; k < 4; k++) cnnc_wl_a6_##SUF(d + k, 4, s + k, 4);              \
            for (int r = 0; r < 6; r++) { /* each row stored as it is done (see BT66) */   \
                VT o[6];                                                                   \
                cnnc_wl_a6_##SUF(s + 4 * r, 1, o, 1);                                      \
                for (int i = 0; i < 6; i++) CNNC_WINO_STV(p + (6 * r + i) * es, o[i]);     \
            }                                                                              \
        }                                                                                  \
}

/* Lane k of the result: the sum of r[k]'s lanes, k < VL (r is overwritten). The transpose's
 * butterflies, each pair's two halves added at once (the sum of a transpose's rows). */
#define CNNC_WINO_HSUM(NAME, T, VT, IT, VL)                                                \
static inline VT NAME(VT *r) {                                                             \
    int n = VL;                                                                            \
    _Pragma("GCC unroll 4") for (int b = 1; b < VL; b *= 2, n /= 2) { /* fixed masks */    \
        IT m1, m2;                                                                         \
        _Pragma("GCC unroll 16") for (int l = 0; l < VL; l++) {                            \
            m1[l] = (l & b) ? VL + (l ^ b) : l;                                            \
            m2[l] = (l & b) ? VL + l : (l ^ b);                                            \
        }                                                                                  \
        _Pragma("GCC unroll 8") for (int k = 0; k < n / 2; k++)                            \
            r[k] = CNNC_WINO_SHUFFLE(r[2 * k], r[2 * k + 1], m1)                           \
                   + CNNC_WINO_SHUFFLE(r[2 * k], r[2 * k + 1], m2);                        \
    }                                                                                      \
    return r[0];                                                                           \
}

/* zt[e*C*M + i*M + o] += the sum over tiles s < S and lanes of p[e*pe + o*ps + s*VL] *
 * v[e*ve + i*vs + s*VL], for e < 36, o < M, i < C: 4 x 4 blocks of (o, i) in 16 vector
 * accumulators, their lanes summed at the end of each block (rows and columns past M or C
 * repeat the last, and are not stored). */
#define CNNC_WBAT_DOT(NAME, T, VT, VL, HSUM)                                               \
static void NAME(const T *p, ptrdiff_t pe, ptrdiff_t ps, const T *v, ptrdiff_t ve,         \
                 ptrdiff_t vs, ptrdiff_t S, int M, int C, T *zt) {                         \
    for (int e = 0; e < 36; e++)                                                           \
        for (int o0 = 0; o0 < M; o0 += 4)                                                  \
            for (int i0 = 0; i0 < C; i0 += 4) {                                            \
                const T *pr[4], *vr[4];                                                    \
                VT acc[16];                                                                \
                T sum[16];                                                                 \
                for (int a = 0; a < 4; a++) {                                              \
                    pr[a] = p + e * pe + (o0 + a < M ? o0 + a : M - 1) * ps;               \
                    vr[a] = v + e * ve + (i0 + a < C ? i0 + a : C - 1) * vs;               \
                }                                                                          \
                for (int k = 0; k < 16; k++) acc[k] = (VT){0};                             \
                for (ptrdiff_t s = 0; s < S; s++) {                                        \
                    VT pv[4], xv[4];                                                       \
                    for (int a = 0; a < 4; a++) { /* 8 loads per 16 FMAs, not 20 */        \
                        pv[a] = CNNC_WINO_LDV(VT, pr[a] + s * VL);                         \
                        xv[a] = CNNC_WINO_LDV(VT, vr[a] + s * VL);                         \
                    }                                                                      \
                    for (int a = 0; a < 4; a++)                                            \
                        for (int b = 0; b < 4; b++) acc[4 * a + b] += pv[a] * xv[b];       \
                }                                                                          \
                for (int g = 0; g < 16 / VL; g++) {                                        \
                    VT h = HSUM(acc + g * VL);                                             \
                    memcpy(sum + g * VL, &h, sizeof h);                                    \
                }                                                                          \
                for (int a = 0; a < 4 && o0 + a < M; a++)                                  \
                    for (int b = 0; b < 4 && i0 + b < C; b++)                              \
                        zt[(e * C + i0 + b) * M + o0 + a] += sum[4 * a + b];               \
            }                                                                              \
}

typedef float cnnc_wino_f16 __attribute__((vector_size(64)));
typedef double cnnc_wino_d8 __attribute__((vector_size(64)));
typedef int cnnc_wino_i16 __attribute__((vector_size(64)));
typedef long long cnnc_wino_l8 __attribute__((vector_size(64)));
typedef float cnnc_wino_f8 __attribute__((vector_size(32)));
typedef int cnnc_wino_i8 __attribute__((vector_size(32)));

CNNC_WINO_COPY(cnnc_wino_copy_s, float, cnnc_wino_f16, 16, s)
CNNC_WINO_COPY(cnnc_wino_copy_d, double, cnnc_wino_d8, 8, d)
CNNC_WINO_SPLIT(cnnc_wino_split_s, float, cnnc_wino_f16, cnnc_wino_i16, 16, cnnc_wino_copy_s)
CNNC_WINO_SPLIT(cnnc_wino_split_d, double, cnnc_wino_d8, cnnc_wino_l8, 8, cnnc_wino_copy_d)
CNNC_WINO_INPUT(cnnc_wino_input_s, float, cnnc_wino_f16, 16)
CNNC_WINO_INPUT(cnnc_wino_input_d, double, cnnc_wino_d8, 8)
CNNC_WINO_TILE(cnnc_wino_tile1_s, float, cnnc_wino_f16, 16, 1)
CNNC_WINO_TILE(cnnc_wino_tile2_s, float, cnnc_wino_f16, 16, 2)
CNNC_WINO_TILE(cnnc_wino_tile3_s, float, cnnc_wino_f16, 16, 3)
CNNC_WINO_TILE(cnnc_wino_tile1_d, double, cnnc_wino_d8, 8, 1)
CNNC_WINO_TILE(cnnc_wino_tile2_d, double, cnnc_wino_d8, 8, 2)
CNNC_WINO_TILE(cnnc_wino_tile3_d, double, cnnc_wino_d8, 8, 3)
CNNC_WINO_BLOCK(cnnc_wino_block_s, float, cnnc_wino_f16, cnnc_wino_i16, 16, cnnc_wino_tile1_s,
                cnnc_wino_tile2_s, cnnc_wino_tile3_s)
CNNC_WINO_BLOCK(cnnc_wino_block_d, double, cnnc_wino_d8, cnnc_wino_l8, 8, cnnc_wino_tile1_d,
                cnnc_wino_tile2_d, cnnc_wino_tile3_d)
CNNC_WL_1D(d8, double, cnnc_wino_d8) /* F(4x4)'s 1-D transforms on 8 doubles */
CNNC_WINO_MUL36(cnnc_wino_mul36_s, float, 16, 16, cnnc_wino_tile1_s, cnnc_wino_tile2_s,
                cnnc_wino_tile3_s)
CNNC_WINO_MUL36(cnnc_wino_mul36_d, double, 8, 8, cnnc_wino_tile1_d, cnnc_wino_tile2_d,
                cnnc_wino_tile3_d)
CNNC_WINO_AT36(cnnc_wino_at36_s, float, cnnc_wino_f16, s)
CNNC_WINO_AT36(cnnc_wino_at36_d, double, cnnc_wino_d8, d8)
/* float32 in half vectors (8 lanes of v's 16): the pooled path's last tiles */
CNNC_WL_1D(h, float, cnnc_wino_f8)
CNNC_WINO_TILE(cnnc_wino_tile1_h, float, cnnc_wino_f8, 8, 1)
CNNC_WINO_MUL36(cnnc_wino_mul36_h, float, 8, 16, cnnc_wino_tile1_h, cnnc_wino_tile1_h,
                cnnc_wino_tile1_h)
CNNC_WINO_AT36(cnnc_wino_at36_h, float, cnnc_wino_f8, h)
CNNC_WINO_TAIL4(cnnc_wino_tail4_s, float, cnnc_wino_f16, cnnc_wino_i16, 16)
CNNC_WINO_TAIL4(cnnc_wino_tail4_d, double, cnnc_wino_d8, cnnc_wino_l8, 8)
CNNC_WINO_BLOCK4(cnnc_wino_block4_s, float, cnnc_wino_f16, 16, cnnc_wino_mul36_s,
                 cnnc_wino_at36_s, cnnc_wino_tail4_s)
CNNC_WINO_BLOCK4(cnnc_wino_block4_d, double, cnnc_wino_d8, 8, cnnc_wino_mul36_d,
                 cnnc_wino_at36_d, cnnc_wino_tail4_d)
CNNC_WPOOL_INPUT(cnnc_wpool_input_s, float, cnnc_wino_f16, 16, s)
CNNC_WPOOL_INPUT(cnnc_wpool_input_d, double, cnnc_wino_d8, 8, d8)
/* a > b ? a : b, lane by lane (no NaN: the callers' values are relu's). */
#ifdef __AVX512F__
static inline cnnc_wino_f16 cnnc_wino_max_s(cnnc_wino_f16 a, cnnc_wino_f16 b) {
    return (cnnc_wino_f16)_mm512_max_ps((__m512)a, (__m512)b);
}
static inline cnnc_wino_d8 cnnc_wino_max_d(cnnc_wino_d8 a, cnnc_wino_d8 b) {
    return (cnnc_wino_d8)_mm512_max_pd((__m512d)a, (__m512d)b);
}
static inline cnnc_wino_f8 cnnc_wino_max_h(cnnc_wino_f8 a, cnnc_wino_f8 b) {
    return (cnnc_wino_f8)_mm256_max_ps((__m256)a, (__m256)b);
}
#else
static inline cnnc_wino_f16 cnnc_wino_max_s(cnnc_wino_f16 a, cnnc_wino_f16 b) {
    return CNNC_POOL_VPICK(cnnc_wino_i16, b, a);
}
static inline cnnc_wino_d8 cnnc_wino_max_d(cnnc_wino_d8 a, cnnc_wino_d8 b) {
    return CNNC_POOL_VPICK(cnnc_wino_l8, b, a);
}
static inline cnnc_wino_f8 cnnc_wino_max_h(cnnc_wino_f8 a, cnnc_wino_f8 b) {
    return CNNC_POOL_VPICK(cnnc_wino_i8, b, a);
}
#endif
CNNC_WPOOL_SPLIT(cnnc_wpool_split_s, float, cnnc_wino_f16, cnnc_wino_i16, 16,
                 CNNC_WINO_PLOAD_s)
CNNC_WPOOL_SPLIT(cnnc_wpool_split_d, double, cnnc_wino_d8, cnnc_wino_l8, 8, CNNC_WINO_PLOAD_d)
CNNC_WPOOL_TAIL(cnnc_wpool_tail_s, float, cnnc_wino_f16, cnnc_wino_i16, 16, cnnc_wino_max_s)
CNNC_WPOOL_TAIL(cnnc_wpool_tail_d, double, cnnc_wino_d8, cnnc_wino_l8, 8, cnnc_wino_max_d)
CNNC_WINO_BLOCK4(cnnc_wpool_block_s, float, cnnc_wino_f16, 16, cnnc_wino_mul36_s,
                 cnnc_wino_at36_s, cnnc_wpool_tail_s)
CNNC_WINO_BLOCK4(cnnc_wpool_block_d, double, cnnc_wino_d8, 8, cnnc_wino_mul36_d,
                 cnnc_wino_at36_d, cnnc_wpool_tail_d)
CNNC_WPOOL_TAIL(cnnc_wpool_tail_h, float, cnnc_wino_f8, cnnc_wino_i8, 8, cnnc_wino_max_h)
CNNC_WINO_BLOCK4(cnnc_wpool_block_h, float, cnnc_wino_f8, 8, cnnc_wino_mul36_h,
                 cnnc_wino_at36_h, cnnc_wpool_tail_h)
#ifdef __AVX512F__
/* The transposes by in-lane unpacks, then 128-bit lane shuffles: 3x (float) and 2x
 * (double) the butterflies' speed, whose two-source permutes issue at a fraction of the
 * rate (Zen 4, a 16 x 16 block in L1: 17.5 ns against 54 ns). */
static inline void cnnc_wino_transpose_s(cnnc_wino_f16 *r) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps((__m512)r[i], (__m512)r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps((__m512)r[i], (__m512)r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int k = 0; k < 2; k++) {
            __m512d a = _mm512_castps_pd(t[i + k]), b = _mm512_castps_pd(t[i + k + 2]);
            u[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            u[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 16; k += 8) {
            t[i + k] = _mm512_shuffle_f32x4(u[i + k], u[i + k + 4], 0x88);
            t[i + k + 4] = _mm512_shuffle_f32x4(u[i + k], u[i + k + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = (cnnc_wino_f16)_mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = (cnnc_wino_f16)_mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

static inline void cnnc_wino_transpose_d(cnnc_wino_d8 *r) {
    __m512d t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd((__m512d)r[i], (__m512d)r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd((__m512d)r[i], (__m512d)r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4)
        for (int k = 0; k < 2; k++) {
            u[i + k] = _mm512_shuffle_f64x2(t[i + k], t[i + k + 2], 0x88);
            u[i + k + 2] = _mm512_shuffle_f64x2(t[i + k], t[i + k + 2], 0xdd);
        }
    for (int j = 0; j < 4; j++) {
        r[j] = (cnnc_wino_d8)_mm512_shuffle_f64x2(u[j], u[j + 4], 0x88);
        r[j + 4] = (cnnc_wino_d8)_mm512_shuffle_f64x2(u[j], u[j + 4], 0xdd);
    }
}
#else
CNNC_WINO_TRANSPOSE(cnnc_wino_transpose_s, float, cnnc_wino_f16, cnnc_wino_i16, 16)
CNNC_WINO_TRANSPOSE(cnnc_wino_transpose_d, double, cnnc_wino_d8, cnnc_wino_l8, 8)
#endif
CNNC_WBAT_ROW(cnnc_wbat_row_s, float, cnnc_wino_f16, 16, cnnc_wino_transpose_s,
              CNNC_WINO_PLOAD_s)
CNNC_WBAT_ROW(cnnc_wbat_row_d, double, cnnc_wino_d8, 8, cnnc_wino_transpose_d,
              CNNC_WINO_PLOAD_d)
CNNC_WBAT_INPUT(cnnc_wbat_input_s, float, cnnc_wino_f16, 16, s)
CNNC_WBAT_INPUT(cnnc_wbat_input_d, double, cnnc_wino_d8, 8, d8)
CNNC_WBAT_STORE(cnnc_wbat_store_s, float, cnnc_wino_f16, 16, cnnc_wino_transpose_s,
                CNNC_WINO_PSTORE_s)
CNNC_WBAT_STORE(cnnc_wbat_store_d, double, cnnc_wino_d8, 8, cnnc_wino_transpose_d,
                CNNC_WINO_PSTORE_d)
CNNC_WBAT_DY(cnnc_wbat_dy_s, float, cnnc_wino_f16, 16, s)
CNNC_WBAT_DY(cnnc_wbat_dy_d, double, cnnc_wino_d8, 8, d8)
#ifdef __AVX512F__
/* The lane sums as the transposes above go, each pair added as soon as it is formed: lane
 * k of a level's sums holds a partial sum of one row, and the last level's of row k. */
static inline cnnc_wino_f16 cnnc_wino_hsum_s(cnnc_wino_f16 *r) {
    __m512 v[8], w[4], z[2];
    for (int i = 0; i < 8; i++)
        v[i] = _mm512_add_ps(_mm512_unpacklo_ps((__m512)r[2 * i], (__m512)r[2 * i + 1]),
                             _mm512_unpackhi_ps((__m512)r[2 * i], (__m512)r[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(v[2 * i]), b = _mm512_castps_pd(v[2 * i + 1]);
        w[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    for (int i = 0; i < 2; i++)
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xdd));
    return (cnnc_wino_f16)_mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], 0x88),
                                        _mm512_shuffle_f32x4(z[0], z[1], 0xdd));
}

static inline cnnc_wino_d8 cnnc_wino_hsum_d(cnnc_wino_d8 *r) {
    __m512d v[4], w[2];
    for (int i = 0; i < 4; i++)
        v[i] = _mm512_add_pd(_mm512_unpacklo_pd((__m512d)r[2 * i], (__m512d)r[2 * i + 1]),
                             _mm512_unpackhi_pd((__m512d)r[2 * i], (__m512d)r[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        w[i] = _mm512_add_pd(_mm512_shuffle_f64x2(v[2 * i], v[2 * i + 1], 0x88),
                             _mm512_shuffle_f64x2(v[2 * i], v[2 * i + 1], 0xdd));
    return (cnnc_wino_d8)_mm512_add_pd(_mm512_shuffle_f64x2(w[0], w[1], 0x88),
                                       _mm512_shuffle_f64x2(w[0], w[1], 0xdd));
}
#else
CNNC_WINO_HSUM(cnnc_wino_hsum_s, float, cnnc_wino_f16, cnnc_wino_i16, 16)
CNNC_WINO_HSUM(cnnc_wino_hsum_d, double, cnnc_wino_d8, cnnc_wino_l8, 8)
#endif
CNNC_WBAT_DOT(cnnc_wbat_dot_s, float, cnnc_wino_f16, 16, cnnc_wino_hsum_s)
CNNC_WBAT_DOT(cnnc_wbat_dot_d, double, cnnc_wino_d8, 8, cnnc_wino_hsum_d)
#endif
