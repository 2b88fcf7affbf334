/* Winograd F(2x2, 3x3) and F(4x4, 3x3) transforms of CNNC_WL tiles (or channels) at once,
 * for the GEMM Winograd path (conv_winograd.pxi): input and output of the forward, dy and
 * the output of the weight gradient. The tiles sit in vector lanes,
 * element (r, k) of tile l at d[((t + 2) * r + k) * CNNC_WL + l], so each 1-D transform is
 * a handful of whole-vector adds. Written with GCC vector extensions: the build's -march
 * picks the instructions (16 floats: one AVX-512 register; 16 doubles: two). */
#ifndef CNNC_CONV_WINO_LANES_H
#define CNNC_CONV_WINO_LANES_H
#include <stddef.h>
#include <string.h>

#define CNNC_WL 16

/* F(4x4): B^T rows (4,0,-5,0,1,0), (0,-4,-4,1,1,0), (0,4,-4,-1,1,0), (0,-2,-1,2,1,0),
 * (0,2,-1,-2,1,0), (0,4,0,-5,0,1); A^T rows (1,1,1,1,1,0), (0,1,-1,2,-2,0),
 * (0,1,1,4,4,0), (0,1,-1,8,-8,1). F(2x2): B^T rows (1,0,-1,0), (0,1,1,0), (0,-1,1,0),
 * (0,1,0,-1); A^T rows (1,1,1,0), (0,1,-1,-1). p: 1-D input, s apart; o: output, s apart. */
#define CNNC_WL_1D(SUF, T, VT)                                                             \
static inline void cnnc_wl_bt6_##SUF(const VT *p, int s, VT *o) {                          \
    VT t1 = p[4 * s] - (T)4 * p[2 * s], t2 = p[3 * s] - (T)4 * p[s];                       \
    VT t3 = p[4 * s] - p[2 * s], t4 = (T)2 * (p[3 * s] - p[s]);                            \
    o[0] = (T)4 * p[0] - (T)5 * p[2 * s] + p[4 * s];                                       \
    o[s] = t1 + t2;                                                                        \
    o[2 * s] = t1 - t2;                                                                    \
    o[3 * s] = t3 + t4;                                                                    \
    o[4 * s] = t3 - t4;                                                                    \
    o[5 * s] = (T)4 * p[s] - (T)5 * p[3 * s] + p[5 * s];                                   \
}                                                                                          \
static inline void cnnc_wl_bt4_##SUF(const VT *p, int s, VT *o) {                          \
    o[0] = p[0] - p[2 * s];                                                                \
    o[s] = p[s] + p[2 * s];                                                                \
    o[2 * s] = p[2 * s] - p[s];                                                            \
    o[3 * s] = p[s] - p[3 * s];                                                            \
}                                                                                          \
static inline void cnnc_wl_at6_##SUF(const VT *p, int s, VT *o, int os) {                  \
    VT a = p[s] + p[2 * s], b = p[s] - p[2 * s];                                           \
    VT c = p[3 * s] + p[4 * s], e = p[3 * s] - p[4 * s];                                   \
    o[0] = p[0] + a + c;                                                                   \
    o[os] = b + (T)2 * e;                                                                  \
    o[2 * os] = a + (T)4 * c;                                                              \
    o[3 * os] = b + (T)8 * e + p[5 * s];                                                   \
}                                                                                          \
static inline void cnnc_wl_at4_##SUF(const VT *p, int s, VT *o, int os) {                  \
    o[0] = p[0] + p[s] + p[2 * s];                                                         \
    o[os] = p[s] - p[2 * s] - p[3 * s];                                                    \
}                                                                                          \
static inline void cnnc_wl_a6_##SUF(const VT *y, int s, VT *o, int os) {                   \
    VT a = y[0] + y[2 * s], b = y[s] + y[3 * s];                                           \
    VT c = y[0] + (T)4 * y[2 * s], e = (T)2 * y[s] + (T)8 * y[3 * s];                      \
    o[0] = y[0];                                                                           \
    o[os] = a + b;                                                                         \
    o[2 * os] = a - b;                                                                     \
    o[3 * os] = c + e;                                                                     \
    o[4 * os] = c - e;                                                                     \
    o[5 * os] = y[3 * s];                                                                  \
}                                                                                          \
static inline void cnnc_wl_a4_##SUF(const VT *y, int s, VT *o, int os) {                   \
    o[0] = y[0];                                                                           \
    o[os] = y[0] + y[s];                                                                   \
    o[2 * os] = y[0] - y[s];                                                               \
    o[3 * os] = -y[s];                                                                     \
}

/* B^T d B (6x6) with d[r][k] the expression LOAD, which reads r_ and k_, and STORE a
 * statement run for each result val_ at position e_ (row-major): row by row, each row
 * loaded where it is transformed, each result stored as its column is done (gcc had
 * otherwise copied all 36 through the stack). STORE may write what LOAD reads: the rows
 * are all read first. */
#define CNNC_WL_BT66(VT, SUF, LOAD, STORE) do {                                           \
    VT d_[6], s_[36];                                                                      \
    for (int r_ = 0; r_ < 6; r_++) {                                                       \
        for (int k_ = 0; k_ < 6; k_++) d_[k_] = (LOAD);                                    \
        cnnc_wl_bt6_##SUF(d_, 1, s_ + 6 * r_);                                             \
    }                                                                                      \
    for (int k_ = 0; k_ < 6; k_++) {                                                       \
        VT c_[6];                                                                          \
        for (int r_ = 0; r_ < 6; r_++) d_[r_] = s_[6 * r_ + k_];                           \
        cnnc_wl_bt6_##SUF(d_, 1, c_);                                                      \
        for (int i_ = 0; i_ < 6; i_++) {                                                   \
            const int e_ = 6 * i_ + k_;                                                    \
            VT val_ = c_[i_];                                                              \
            STORE;                                                                         \
        }                                                                                  \
    }                                                                                      \
} while (0)

#define CNNC_WL_FUNCS(SUF, T, VT)                                                          \
/* B^T d B for the patches of CNNC_WL tiles, gathered from rows (tile l's patch starts at   \
 * rows[off[min(l, n - 1)]], its rows rw apart), position e's lanes stored at d + e * es.  \
 */                                                                                        \
static void cnnc_wl_in_##SUF(const T *rows, const ptrdiff_t *off, int n, int t,            \
                             ptrdiff_t rw, T *d, ptrdiff_t es) {                           \
    const int a = t + 2;                                                                   \
    VT x[36], s[36];                                                                       \
    cnnc_wl_gather_##SUF(x, rows, off, n, a, rw);                                           \
    if (t == 4) {                                                                          \
        CNNC_WL_BT66(VT, SUF, x[6 * r_ + k_], memcpy(d + e_ * es, &val_, sizeof(VT)));     \
        return;                                                                            \
    }                                                                                      \
    for (int r = 0; r < 4; r++) cnnc_wl_bt4_##SUF(x + 4 * r, 1, s + 4 * r);                \
    for (int k = 0; k < 4; k++) cnnc_wl_bt4_##SUF(s + k, 4, x + k);                        \
    for (int e = 0; e < a * a; e++) memcpy(d + e * es, &x[e], sizeof(VT));                 \
}                                                                                          \
/* A d A^T (t x t -> (t+2) x (t+2)) for the dy tiles of CNNC_WL channels: channel l's tile \
 * at src + min(l, n - 1) * ps, rows ld apart, nr x nc of it inside dy (0 past that);       \
 * position e's lanes stored at d + e * es. A's rows: the columns of A^T above. */         \
static void cnnc_wl_dy_##SUF(const T *src, ptrdiff_t ps, int n, ptrdiff_t ld, int nr,      \
                             int nc, int t, T *d, ptrdiff_t es) {                          \
    VT x[16], s[24], p[36];                                                                \
    const int a = t + 2;                                                                   \
    for (int r = 0; r < t; r++)                                                            \
        for (int k = 0; k < t; k++)                                                        \
            for (int l = 0; l < CNNC_WL; l++)                                              \
                x[t * r + k][l] = r < nr && k < nc ? src[(l < n ? l : n - 1) * ps          \
                                                         + r * ld + k] : (T)0;            \
    if (t == 4) {                                                                          \
        for (int k = 0; k < 4; k++) cnnc_wl_a6_##SUF(x + k, 4, s + k, 4);                  \
        for (int r = 0; r < 6; r++) cnnc_wl_a6_##SUF(s + 4 * r, 1, p + 6 * r, 1);          \
    } else {                                                                               \
        for (int k = 0; k < 2; k++) cnnc_wl_a4_##SUF(x + k, 2, s + k, 2);                  \
        for (int r = 0; r < 4; r++) cnnc_wl_a4_##SUF(s + 2 * r, 1, p + 4 * r, 1);          \
    }                                                                                      \
    for (int e = 0; e < a * a; e++) memcpy(d + e * es, &p[e], sizeof(VT));                 \
}                                                                                          \
/* r[(3 * i + k) * CNNC_WL + l] = (G^T Z_l G)[i, k] with Z_l[e] = z[e * es + l]: the      \
 * weight gradient's output transform, G's rows (1,0,0), (1,1,1)/2, (1,-1,1)/2, (0,0,1)     \
 * for F(2x2); (1/4,0,0), -(1,1,1)/6, -(1,-1,1)/6, (1/24,1/12,1/6), (1/24,-1/12,1/6),       \
 * (0,0,1) for F(4x4). */                                                                  \
static void cnnc_wl_gt_##SUF(const T *z, ptrdiff_t es, int t, T *r) {                      \
    VT x[36], u[18], o[9];                                                                 \
    const int a = t + 2;                                                                   \
    for (int e = 0; e < a * a; e++) memcpy(&x[e], z + e * es, sizeof(VT));                 \
    for (int pass = 0; pass < 2; pass++) {  /* columns of x into u [3][a], rows into o */  \
        for (int j = 0; j < (pass ? 3 : a); j++) {                                         \
            const VT *p = pass ? u + a * j : x + j;                                        \
            const int s = pass ? 1 : a;                                                    \
            VT *q = pass ? o + 3 * j : u + j;                                              \
            const int os = pass ? 1 : a;                                                   \
            if (t == 4) {                                                                  \
                VT c1 = p[s] + p[2 * s], d1 = p[s] - p[2 * s];                             \
                VT c2 = p[3 * s] + p[4 * s], d2 = p[3 * s] - p[4 * s];                     \
                q[0] = (T)0.25 * p[0] - c1 * (T)(1.0 / 6) + c2 * (T)(1.0 / 24);            \
                q[os] = d2 * (T)(1.0 / 12) - d1 * (T)(1.0 / 6);                            \
                q[2 * os] = (c2 - c1) * (T)(1.0 / 6) + p[5 * s];                           \
            } else {                                                                       \
                q[0] = p[0] + (p[s] + p[2 * s]) * (T)0.5;                                  \
                q[os] = (p[s] - p[2 * s]) * (T)0.5;                                        \
                q[2 * os] = (p[s] + p[2 * s]) * (T)0.5 + p[3 * s];                         \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    for (int k = 0; k < 9; k++) memcpy(r + k * CNNC_WL, &o[k], sizeof(VT));                \
}                                                                                          \
/* m[(t * i + k) * CNNC_WL + l] = (A^T M_l A)[i, k] with M_l[e] = src[e * es + l]. */      \
static void cnnc_wl_out_##SUF(const T *src, ptrdiff_t es, int t, T *m) {                   \
    VT x[36], s[24];                                                                       \
    if (t == 4) { /* row by row from src, each result stored when done (see BT66) */       \
        for (int r = 0; r < 6; r++) {                                                      \
            for (int k = 0; k < 6; k++) memcpy(&x[k], src + (6 * r + k) * es, sizeof(VT)); \
            cnnc_wl_at6_##SUF(x, 1, s + 4 * r, 1);                                         \
        }                                                                                  \
        for (int k = 0; k < 4; k++) {                                                      \
            cnnc_wl_at6_##SUF(s + k, 4, x, 1);                                             \
            for (int i = 0; i < 4; i++) memcpy(m + (4 * i + k) * CNNC_WL, &x[i], sizeof(VT)); \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    for (int e = 0; e < 16; e++) memcpy(&x[e], src + e * es, sizeof(VT));                  \
    for (int r = 0; r < 4; r++) cnnc_wl_at4_##SUF(x + 4 * r, 1, s + 2 * r, 1);             \
    for (int k = 0; k < 2; k++) cnnc_wl_at4_##SUF(s + k, 2, x + k, 2);                     \
    for (int e = 0; e < 4; e++) memcpy(m + e * CNNC_WL, &x[e], sizeof(VT));                \
}

typedef float cnnc_wl_f16 __attribute__((vector_size(16 * sizeof(float))));
typedef double cnnc_wl_d16 __attribute__((vector_size(16 * sizeof(double))));

/* x[a * r + k][l] = rows[off[min(l, n - 1)] + r * rw + k]: the a x a patches of the lanes'
 * tiles, by AVX-512 gathers where the build has them (2x the scalar loads here). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline __m512i cnnc_wl_index(const ptrdiff_t *off, int n) {
    int idx[CNNC_WL];
    for (int l = 0; l < CNNC_WL; l++) idx[l] = (int)off[l < n ? l : n - 1];
    return _mm512_loadu_si512(idx);
}
static inline void cnnc_wl_gather_s(cnnc_wl_f16 *x, const float *rows, const ptrdiff_t *off,
                                    int n, int a, ptrdiff_t rw) {
    __m512i vi = cnnc_wl_index(off, n);
    for (int r = 0; r < a; r++)
        for (int k = 0; k < a; k++) {
            __m512 v = _mm512_i32gather_ps(vi, rows + r * rw + k, 4);
            memcpy(&x[a * r + k], &v, sizeof v);
        }
}
static inline void cnnc_wl_gather_d(cnnc_wl_d16 *x, const double *rows, const ptrdiff_t *off,
                                    int n, int a, ptrdiff_t rw) {
    __m512i vi = cnnc_wl_index(off, n);
    __m256i lo = _mm512_castsi512_si256(vi), hi = _mm512_extracti64x4_epi64(vi, 1);
    for (int r = 0; r < a; r++)
        for (int k = 0; k < a; k++) {
            __m512d v[2] = {_mm512_i32gather_pd(lo, rows + r * rw + k, 8),
                            _mm512_i32gather_pd(hi, rows + r * rw + k, 8)};
            memcpy(&x[a * r + k], v, sizeof v);
        }
}
#else
#define CNNC_WL_GATHER(SUF, T, VT)                                                         \
static inline void cnnc_wl_gather_##SUF(VT *x, const T *rows, const ptrdiff_t *off, int n, \
                                        int a, ptrdiff_t rw) {                             \
    for (int l = 0; l < CNNC_WL; l++) {                                                    \
        const T *p = rows + off[l < n ? l : n - 1];                                        \
        for (int r = 0; r < a; r++)                                                        \
            for (int k = 0; k < a; k++) x[a * r + k][l] = p[r * rw + k];                   \
    }                                                                                      \
}
CNNC_WL_GATHER(s, float, cnnc_wl_f16)
CNNC_WL_GATHER(d, double, cnnc_wl_d16)
#endif
CNNC_WL_1D(s, float, cnnc_wl_f16)
CNNC_WL_1D(d, double, cnnc_wl_d16)
CNNC_WL_FUNCS(s, float, cnnc_wl_f16)
CNNC_WL_FUNCS(d, double, cnnc_wl_d16)
#endif
