/* Winograd F(2x2, 3x3) with the tiles in vector lanes (conv_winograd.pxi, "vector" path).
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

#define CNNC_WINO_MR 8 /* output channels per micro-kernel call */
#define CNNC_WINO_NV 3 /* vectors of tiles per micro-kernel call (the last may be 1-2) */

/* dst[k] = src[k] for k < n: whole vectors, then a scalar tail (no call, no overrun). */
#define CNNC_WINO_COPY(NAME, T, VT, VL)                                                    \
static inline void NAME(T *dst, const T *src, ptrdiff_t n) {                               \
    ptrdiff_t k = 0;                                                                       \
    for (; k + VL <= n; k += VL) memcpy(dst + k, src + k, sizeof(VT));                     \
    for (; k < n; k++) dst[k] = src[k];                                                    \
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

/* out[i][j*VL ..] = sum_k a[k*MR + i] * b[k*ldb + j*16*VL ..] for i < MR, j < NV. */
#define CNNC_WINO_TILE(NAME, T, VT, VL, NV)                                                \
static inline void NAME(ptrdiff_t K, const T *a, const T *b, ptrdiff_t ldb, T *out,        \
                        ptrdiff_t ldo) {                                                   \
    VT acc[CNNC_WINO_MR][NV];                                                              \
    for (int i = 0; i < CNNC_WINO_MR; i++)                                                 \
        for (int j = 0; j < NV; j++) acc[i][j] = (VT){0};                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                    \
        VT bv[NV];                                                                         \
        for (int j = 0; j < NV; j++) memcpy(&bv[j], b + k * ldb + j * 16 * VL, sizeof(VT)); \
        for (int i = 0; i < CNNC_WINO_MR; i++)                                             \
            for (int j = 0; j < NV; j++) acc[i][j] += a[k * CNNC_WINO_MR + i] * bv[j];     \
    }                                                                                      \
    for (int i = 0; i < CNNC_WINO_MR; i++)                                                 \
        for (int j = 0; j < NV; j++) memcpy(out + i * ldo + j * VL, &acc[i][j], sizeof(VT)); \
}

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
    IT lo, hi;                                                                             \
    for (int l = 0; l < VL; l++) {                                                         \
        lo[l] = (l & 1) * VL + l / 2;                                                      \
        hi[l] = (l & 1) * VL + VL / 2 + l / 2;                                             \
    }                                                                                      \
    for (int e = 0; e < 16; e++) {                                                         \
        const T *ue = u + e * K * CNNC_WINO_MR, *ve = v + e * VL;                          \
        if (nv == 3) T3(K, ue, ve, ldv, mm + e * me, ldo);                                 \
        else if (nv == 2) T2(K, ue, ve, ldv, mm + e * me, ldo);                            \
        else T1(K, ue, ve, ldv, mm + e * me, ldo);                                         \
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
            for (int r = 0; r < 2; r++) {                                                  \
                T *dst = st + i * lds + r * half + 2 * j * VL;                             \
                VT a = y[r][0], b = y[r][1], ia, ib;                                       \
                if (act == 1 || act == 2) { /* a > 0 ? a : 0 or a * slope (NaN: 0) */     \
                    IT pa = (IT)(a > 0), pb = (IT)(b > 0);                                 \
                    IT na = act == 1 ? (IT){0} : (IT)(a * slope) & ~pa;                    \
                    IT nb = act == 1 ? (IT){0} : (IT)(b * slope) & ~pb;                    \
                    a = (VT)(((IT)a & pa) | na);                                           \
                    b = (VT)(((IT)b & pb) | nb);                                           \
                }                                                                          \
                ia = CNNC_WINO_SHUFFLE(a, b, lo);                                          \
                ib = CNNC_WINO_SHUFFLE(a, b, hi);                                          \
                memcpy(dst, &ia, sizeof ia);                                               \
                memcpy(dst + VL, &ib, sizeof ib);                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}

typedef float cnnc_wino_f16 __attribute__((vector_size(64)));
typedef double cnnc_wino_d8 __attribute__((vector_size(64)));
typedef int cnnc_wino_i16 __attribute__((vector_size(64)));
typedef long long cnnc_wino_l8 __attribute__((vector_size(64)));

CNNC_WINO_COPY(cnnc_wino_copy_s, float, cnnc_wino_f16, 16)
CNNC_WINO_COPY(cnnc_wino_copy_d, double, cnnc_wino_d8, 8)
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
#endif
