/* GEMM micro-kernels and the run-time choice between them; gemm_core.pxi drives them.
 *
 * A tile function computes one MR x NR tile of C from
 *   pa: kc groups of MR values (A's rows i..i+MR at depth p: a packed panel),
 *   pb: kc rows of NR values, ldb apart (B's columns j..j+NR at depth p: a packed panel
 *       with ldb == NR, or B itself), prefetching pb[p * ldb + pf] ahead when pf != 0,
 * and writes C[i, j] = act(alpha * sum_p pa[p][i] * pb[p][j] + beta * C[i, j] + bias)
 * for the first `rows` rows (i < rows <= MR) and all NR columns, reading C only when
 * beta != 0. brow (MR values) / bcol (NR values) may be NULL. Tiles narrower than NR go
 * through a scratch tile in the driver; an element is computed by the same instructions
 * wherever the tile grid falls.
 *
 * The kernels are written once with GCC vector extensions (also accepted by clang) and
 * instantiated per instruction set with target attributes, so one binary holds every path:
 *   avx512: float 8x32, double 8x16 (16 zmm accumulators)
 *   avx2:   float 6x16, double 6x8  (12 ymm accumulators)
 *   portable: float 4x8, double 4x4 on 16-byte vectors (any GCC/clang target),
 * each also at half width (NR/2 columns) for the last column panel of C when it is that
 * narrow.
 */
#ifndef CNNC_GEMM_MICRO_H
#define CNNC_GEMM_MICRO_H
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

enum { GEMM_PORTABLE = 0, GEMM_AVX2 = 1, GEMM_AVX512 = 2 };
/* Mirrors ACT_* in gemm_core.pxi. */
enum { CNNC_ACT_NONE = 0, CNNC_ACT_RELU = 1, CNNC_ACT_LEAKY = 2, CNNC_ACT_SIGMOID = 3,
       CNNC_ACT_TANH = 4 };

#if defined(__x86_64__) || defined(__i386__)
#define CNNC_X86 1
#define CNNC_TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define CNNC_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define CNNC_X86 0
#endif

/* ---- run-time selection ---- */

static int cnnc_gemm_best_kernel(void) {
#if CNNC_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return GEMM_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GEMM_AVX2;
#endif
    return GEMM_PORTABLE;
}

static int cnnc_gemm_kernel_id = -1;

/* The path in use: the best the CPU runs, or CNNC_GEMM_KERNEL (read once) if it can. */
static int cnnc_gemm_kernel(void) {
    if (cnnc_gemm_kernel_id < 0) {
        int best = cnnc_gemm_best_kernel(), want = best;
        const char *env = getenv("CNNC_GEMM_KERNEL");
        if (env && strcmp(env, "portable") == 0) want = GEMM_PORTABLE;
        else if (env && strcmp(env, "avx2") == 0) want = GEMM_AVX2;
        else if (env && strcmp(env, "avx512") == 0) want = GEMM_AVX512;
        cnnc_gemm_kernel_id = want < best ? want : best;
    }
    return cnnc_gemm_kernel_id;
}

static void cnnc_gemm_set_kernel(int id) { cnnc_gemm_kernel_id = id; }

/* ---- per-thread packing buffers, grown on demand and kept for the thread's life ---- */

static _Thread_local void *cnnc_gemm_buf[2];
static _Thread_local size_t cnnc_gemm_cap[2];

/* A 64-byte aligned buffer of at least `bytes` for slot 0 (A panels) or 1 (B panels);
 * NULL if memory ran out. */
static void *cnnc_gemm_buffer(int slot, size_t bytes) {
    if (bytes > cnnc_gemm_cap[slot]) {
        size_t cap = (bytes + 4095) & ~(size_t)4095;
        void *p = aligned_alloc(64, cap);
        if (p == NULL) return NULL;
        free(cnnc_gemm_buf[slot]);
        cnnc_gemm_buf[slot] = p;
        cnnc_gemm_cap[slot] = cap;
    }
    return cnnc_gemm_buf[slot];
}

/* ---- tile functions ---- */

typedef void (*cnnc_tile_s)(ptrdiff_t kc, const float *pa, const float *pb, ptrdiff_t ldb,
                            ptrdiff_t pf, float *c, ptrdiff_t ldc, int rows, float alpha,
                            float beta, const float *brow, const float *bcol, int act,
                            float slope);
typedef void (*cnnc_tile_d)(ptrdiff_t kc, const double *pa, const double *pb, ptrdiff_t ldb,
                            ptrdiff_t pf, double *c, ptrdiff_t ldc, int rows, double alpha,
                            double beta, const double *brow, const double *bcol, int act,
                            double slope);

static inline float cnnc_sigmoid_s(float v) { return 1.0f / (1.0f + expf(-v)); }
static inline double cnnc_sigmoid_d(double v) { return 1.0 / (1.0 + exp(-v)); }

/* C[i, j*VL ..] = act(alpha * acc[i][j] + beta * C + bias) for i < rows, j < nv (at most
 * MR x NV accumulators), reading C only when beta != 0: the epilogue of the tile and row
 * kernels, inside them (it uses their arguments c, ldc, rows, alpha, beta, brow, bcol,
 * act, slope). */
#define CNNC_EPILOGUE(T, VT, VI, VL, MR, NV, nv, SIG, TANH)                                \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                \
        if (i == rows) break;                                                              \
        _Pragma("GCC unroll 16") for (int j = 0; j < NV; j++) {                            \
            if (j == (nv)) break;                                                          \
            T *cp = c + i * ldc + j * VL;                                                  \
            VT v = acc[i][j] * alpha, w;                                                   \
            if (beta != 0) { memcpy(&w, cp, sizeof w); v = w * beta + v; }                 \
            if (brow) v = v + brow[i];                                                     \
            if (bcol) { memcpy(&w, bcol + j * VL, sizeof w); v = v + w; }                  \
            if (act == CNNC_ACT_RELU || act == CNNC_ACT_LEAKY) {                           \
                VI pos = v > 0;                                                            \
                w = act == CNNC_ACT_RELU ? (VT){0} : v * slope;                            \
                v = (VT)(((VI)v & pos) | ((VI)w & ~pos));                                  \
            }                                                                              \
            memcpy(cp, &v, sizeof v);                                                      \
        }                                                                                  \
    }                                                                                      \
    if (act == CNNC_ACT_SIGMOID || act == CNNC_ACT_TANH) {                                 \
        for (int i = 0; i < rows; i++)                                                     \
            for (int j = 0; j < (nv) * VL; j++) {                                          \
                T *cp = c + i * ldc + j;                                                   \
                *cp = act == CNNC_ACT_SIGMOID ? SIG(*cp) : TANH(*cp);                      \
            }                                                                              \
    }

/* NAME: function name; T/VT/VI: scalar, vector, same-width integer vector; VL: lanes;
 * MR rows x NV vectors per row; TARGET: attribute; SIG/TANH: scalar functions. */
#define CNNC_TILE(NAME, T, VT, VI, VL, MR, NV, TARGET, SIG, TANH)                          \
TARGET static void NAME(ptrdiff_t kc, const T *pa, const T *pb, ptrdiff_t ldb, ptrdiff_t pf, \
                        T *c, ptrdiff_t ldc, int rows, T alpha, T beta, const T *brow,     \
                        const T *bcol, int act, T slope) {                                 \
    VT acc[MR][NV];                                                                        \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                  \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[i][j] = (VT){0};           \
    for (ptrdiff_t p = 0; p < kc; p++) {                                                   \
        VT b[NV];                                                                          \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++)                               \
            memcpy(&b[j], pb + j * VL, sizeof b[j]);                                       \
        if (pf) {                                                                          \
            __builtin_prefetch(pb + pf);                                                   \
            __builtin_prefetch(pb + pf + NV * VL - 1);                                     \
        }                                                                                  \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                            \
            T a = pa[i];                                                                   \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[i][j] += a * b[j];    \
        }                                                                                  \
        pa += MR;                                                                          \
        pb += ldb;                                                                         \
    }                                                                                      \
    CNNC_EPILOGUE(T, VT, VI, VL, MR, NV, NV, SIG, TANH)                                    \
}

typedef float cnnc_f4 __attribute__((vector_size(16)));
typedef int cnnc_i4 __attribute__((vector_size(16)));
typedef double cnnc_d2 __attribute__((vector_size(16)));
typedef long long cnnc_l2 __attribute__((vector_size(16)));
CNNC_TILE(cnnc_tile_s_portable, float, cnnc_f4, cnnc_i4, 4, 4, 2, , cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_tile_d_portable, double, cnnc_d2, cnnc_l2, 2, 4, 2, , cnnc_sigmoid_d, tanh)
CNNC_TILE(cnnc_half_s_portable, float, cnnc_f4, cnnc_i4, 4, 4, 1, , cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_half_d_portable, double, cnnc_d2, cnnc_l2, 2, 4, 1, , cnnc_sigmoid_d, tanh)

#if CNNC_X86
typedef float cnnc_f8 __attribute__((vector_size(32)));
typedef int cnnc_i8 __attribute__((vector_size(32)));
typedef double cnnc_d4 __attribute__((vector_size(32)));
typedef long long cnnc_l4 __attribute__((vector_size(32)));
typedef float cnnc_f16 __attribute__((vector_size(64)));
typedef int cnnc_i16 __attribute__((vector_size(64)));
typedef double cnnc_d8 __attribute__((vector_size(64)));
typedef long long cnnc_l8 __attribute__((vector_size(64)));
CNNC_TILE(cnnc_tile_s_avx2, float, cnnc_f8, cnnc_i8, 8, 6, 2, CNNC_TARGET_AVX2,
          cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_tile_d_avx2, double, cnnc_d4, cnnc_l4, 4, 6, 2, CNNC_TARGET_AVX2,
          cnnc_sigmoid_d, tanh)
CNNC_TILE(cnnc_tile_s_avx512, float, cnnc_f16, cnnc_i16, 16, 8, 2, CNNC_TARGET_AVX512,
          cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_tile_d_avx512, double, cnnc_d8, cnnc_l8, 8, 8, 2, CNNC_TARGET_AVX512,
          cnnc_sigmoid_d, tanh)
CNNC_TILE(cnnc_half_s_avx2, float, cnnc_f8, cnnc_i8, 8, 6, 1, CNNC_TARGET_AVX2,
          cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_half_d_avx2, double, cnnc_d4, cnnc_l4, 4, 6, 1, CNNC_TARGET_AVX2,
          cnnc_sigmoid_d, tanh)
CNNC_TILE(cnnc_half_s_avx512, float, cnnc_f16, cnnc_i16, 16, 8, 1, CNNC_TARGET_AVX512,
          cnnc_sigmoid_s, tanhf)
CNNC_TILE(cnnc_half_d_avx512, double, cnnc_d8, cnnc_l8, 8, 8, 1, CNNC_TARGET_AVX512,
          cnnc_sigmoid_d, tanh)
#endif

/* ---- row kernels: C for a few rows of A (a dense layer at batch 1-4) ----
 *
 * Each row of B is read once, whole (up to NVMAX vectors wide), into register accumulators
 * for every row of A: B streams from memory at the cache's full rate, which neither the
 * MR x NR tiles (strips of NR columns, mostly padding rows) nor loops updating C in L1 (a
 * load and a store of C per vector of B) reach (the seed CNN's 12544 x 128 layer: 0.068
 * ms, 94 GB/s from L3, against 0.11). A row kernel computes C[i, 0 .. nv*VL) for i < rows <= R, with
 * A's element (i, p) at a[i * ars + p * aks] (rows past `rows` repeat the last one, so
 * that R can round `rows` up), a single K loop (one accumulator per element, summed in
 * order p = 0 .. k-1) and the tile functions' epilogue. */
#define CNNC_ROWS(NAME, T, VT, VI, VL, R, NVMAX, TARGET, SIG, TANH)                         \
TARGET static inline __attribute__((always_inline)) void NAME##_nv(                         \
        ptrdiff_t k, const T *a, ptrdiff_t ars, ptrdiff_t aks, const T *b, ptrdiff_t ldb,   \
        const int nv, T *c, ptrdiff_t ldc, int rows, T alpha, T beta, const T *brow,        \
        const T *bcol, int act, T slope) {                                                 \
    VT acc[R][NVMAX];                                                                      \
    const T *ap[R];                                                                        \
    _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {                                  \
        ap[i] = a + (i < rows ? i : rows - 1) * ars;                                       \
        _Pragma("GCC unroll 16") for (int j = 0; j < NVMAX; j++) acc[i][j] = (VT){0};        \
    }                                                                                      \
    for (ptrdiff_t p = 0; p < k; p++) {                                                    \
        VT bv[NVMAX];                                                                      \
        _Pragma("GCC unroll 16") for (int j = 0; j < NVMAX; j++)                            \
            if (j < nv) memcpy(&bv[j], b + j * VL, sizeof bv[j]);                          \
        _Pragma("GCC unroll 4") for (int i = 0; i < R; i++) {                              \
            T av = ap[i][p * aks];                                                         \
            _Pragma("GCC unroll 16") for (int j = 0; j < NVMAX; j++)                        \
                if (j < nv) acc[i][j] += av * bv[j];                                       \
        }                                                                                  \
        b += ldb;                                                                          \
    }                                                                                      \
    CNNC_EPILOGUE(T, VT, VI, VL, R, NVMAX, nv, SIG, TANH)                                  \
}                                                                                          \
/* nv as a constant in each case, so that the accumulators stay in registers */            \
TARGET static void NAME(ptrdiff_t k, const T *a, ptrdiff_t ars, ptrdiff_t aks,              \
                        const T *b, ptrdiff_t ldb, int nv, T *c, ptrdiff_t ldc, int rows,   \
                        T alpha, T beta, const T *brow, const T *bcol, int act, T slope) {  \
    switch (nv) {                                                                          \
    CNNC_ROWS_CASE(NAME, NVMAX, 1) CNNC_ROWS_CASE(NAME, NVMAX, 2)                          \
    CNNC_ROWS_CASE(NAME, NVMAX, 3) CNNC_ROWS_CASE(NAME, NVMAX, 4)                          \
    CNNC_ROWS_CASE(NAME, NVMAX, 5) CNNC_ROWS_CASE(NAME, NVMAX, 6)                          \
    CNNC_ROWS_CASE(NAME, NVMAX, 7) CNNC_ROWS_CASE(NAME, NVMAX, 8)                          \
    CNNC_ROWS_CASE(NAME, NVMAX, 9) CNNC_ROWS_CASE(NAME, NVMAX, 10)                         \
    CNNC_ROWS_CASE(NAME, NVMAX, 11) CNNC_ROWS_CASE(NAME, NVMAX, 12)                        \
    CNNC_ROWS_CASE(NAME, NVMAX, 13) CNNC_ROWS_CASE(NAME, NVMAX, 14)                        \
    CNNC_ROWS_CASE(NAME, NVMAX, 15) CNNC_ROWS_CASE(NAME, NVMAX, 16)                        \
    default: break;                                                                        \
    }                                                                                      \
}
#define CNNC_ROWS_CASE(NAME, NVMAX, X)                                                     \
    case X:                                                                                \
        if (X <= NVMAX)                                                                    \
            NAME##_nv(k, a, ars, aks, b, ldb, X <= NVMAX ? X : NVMAX, c, ldc, rows, alpha,  \
                      beta, brow, bcol, act, slope);                                       \
        break;

typedef void (*cnnc_rows_s)(ptrdiff_t k, const float *a, ptrdiff_t ars, ptrdiff_t aks,
                            const float *b, ptrdiff_t ldb, int nv, float *c, ptrdiff_t ldc,
                            int rows, float alpha, float beta, const float *brow,
                            const float *bcol, int act, float slope);
typedef void (*cnnc_rows_d)(ptrdiff_t k, const double *a, ptrdiff_t ars, ptrdiff_t aks,
                            const double *b, ptrdiff_t ldb, int nv, double *c, ptrdiff_t ldc,
                            int rows, double alpha, double beta, const double *brow,
                            const double *bcol, int act, double slope);

/* R = 1, 2 and 4 rows with 16 accumulators at most (8 on the portable path). */
#define CNNC_ROWS_SET(SFX, VS, VIS, LS, VD, VID, LD, NV1, TARGET)                          \
CNNC_ROWS(cnnc_rows1_s_##SFX, float, VS, VIS, LS, 1, NV1, TARGET, cnnc_sigmoid_s, tanhf)    \
CNNC_ROWS(cnnc_rows2_s_##SFX, float, VS, VIS, LS, 2, NV1 / 2, TARGET, cnnc_sigmoid_s, tanhf) \
CNNC_ROWS(cnnc_rows4_s_##SFX, float, VS, VIS, LS, 4, NV1 / 4, TARGET, cnnc_sigmoid_s, tanhf) \
CNNC_ROWS(cnnc_rows1_d_##SFX, double, VD, VID, LD, 1, NV1, TARGET, cnnc_sigmoid_d, tanh)    \
CNNC_ROWS(cnnc_rows2_d_##SFX, double, VD, VID, LD, 2, NV1 / 2, TARGET, cnnc_sigmoid_d, tanh) \
CNNC_ROWS(cnnc_rows4_d_##SFX, double, VD, VID, LD, 4, NV1 / 4, TARGET, cnnc_sigmoid_d, tanh)

CNNC_ROWS_SET(portable, cnnc_f4, cnnc_i4, 4, cnnc_d2, cnnc_l2, 2, 8, )
#if CNNC_X86
CNNC_ROWS_SET(avx2, cnnc_f8, cnnc_i8, 8, cnnc_d4, cnnc_l4, 4, 8, CNNC_TARGET_AVX2)
CNNC_ROWS_SET(avx512, cnnc_f16, cnnc_i16, 16, cnnc_d8, cnnc_l8, 8, 16, CNNC_TARGET_AVX512)
#endif

/* The rows R a row kernel computes for `rows` rows of A (1 <= rows <= 4), and the most
 * vectors of C it covers per call (its NVMAX). */
static int cnnc_rows_r(int rows) { return rows <= 2 ? rows : 4; }

static int cnnc_rows_nv(int kernel, int rows) {
    return (kernel == GEMM_AVX512 ? 16 : 8) / cnnc_rows_r(rows);
}

/* Lanes per vector of a path's row kernels. */
static int cnnc_rows_vl(int kernel, int dbl) {
    int bytes = kernel == GEMM_AVX512 ? 64 : kernel == GEMM_AVX2 ? 32 : 16;
    return bytes / (dbl ? 8 : 4);
}

#if CNNC_X86
#define CNNC_ROWS_PICK(T)                                                                  \
    if (kernel == GEMM_AVX512)                                                             \
        return r == 1 ? cnnc_rows1_##T##_avx512 : r == 2 ? cnnc_rows2_##T##_avx512         \
                                                         : cnnc_rows4_##T##_avx512;        \
    if (kernel == GEMM_AVX2)                                                               \
        return r == 1 ? cnnc_rows1_##T##_avx2 : r == 2 ? cnnc_rows2_##T##_avx2             \
                                                       : cnnc_rows4_##T##_avx2;
#else
#define CNNC_ROWS_PICK(T)
#endif

static cnnc_rows_s cnnc_gemm_rows_s(int kernel, int rows) {
    int r = cnnc_rows_r(rows);
    CNNC_ROWS_PICK(s)
    return r == 1 ? cnnc_rows1_s_portable : r == 2 ? cnnc_rows2_s_portable
                                                   : cnnc_rows4_s_portable;
}

static cnnc_rows_d cnnc_gemm_rows_d(int kernel, int rows) {
    int r = cnnc_rows_r(rows);
    CNNC_ROWS_PICK(d)
    return r == 1 ? cnnc_rows1_d_portable : r == 2 ? cnnc_rows2_d_portable
                                                   : cnnc_rows4_d_portable;
}

/* Tile shape and function of a path; dbl selects float64. */
static int cnnc_gemm_mr(int kernel, int dbl) {
    (void)dbl;
    return kernel == GEMM_AVX512 ? 8 : kernel == GEMM_AVX2 ? 6 : 4;
}

static int cnnc_gemm_nr(int kernel, int dbl) {
    int bytes = kernel == GEMM_AVX512 ? 128 : kernel == GEMM_AVX2 ? 64 : 32;
    return bytes / (dbl ? 8 : 4);
}

static cnnc_tile_s cnnc_gemm_tile_s(int kernel) {
#if CNNC_X86
    if (kernel == GEMM_AVX512) return cnnc_tile_s_avx512;
    if (kernel == GEMM_AVX2) return cnnc_tile_s_avx2;
#endif
    return cnnc_tile_s_portable;
}

static cnnc_tile_d cnnc_gemm_tile_d(int kernel) {
#if CNNC_X86
    if (kernel == GEMM_AVX512) return cnnc_tile_d_avx512;
    if (kernel == GEMM_AVX2) return cnnc_tile_d_avx2;
#endif
    return cnnc_tile_d_portable;
}

/* The same kernels at half width (MR x NR/2), for a last column panel at most that wide. */
static cnnc_tile_s cnnc_gemm_half_s(int kernel) {
#if CNNC_X86
    if (kernel == GEMM_AVX512) return cnnc_half_s_avx512;
    if (kernel == GEMM_AVX2) return cnnc_half_s_avx2;
#endif
    return cnnc_half_s_portable;
}

static cnnc_tile_d cnnc_gemm_half_d(int kernel) {
#if CNNC_X86
    if (kernel == GEMM_AVX512) return cnnc_half_d_avx512;
    if (kernel == GEMM_AVX2) return cnnc_half_d_avx2;
#endif
    return cnnc_half_d_portable;
}
#endif
