/* Transposing copies for GEMM packing (gemm_core.pxi): rows of a matrix become the
 * interleaved columns of a panel, dst[p * R + r] = src[r * ld + p] for r < h, p < kc, and
 * 0 for h <= r < R. This is _pack_a for A stored [m, k] and _pack_b for B stored [n, k].
 * With AVX2 the copy goes through 8x8 (float) / 4x4 (double) register transposes, else
 * it is scalar; either way it only moves data, so results do not depend on the path. */
#ifndef CNNC_GEMM_PACK_H
#define CNNC_GEMM_PACK_H
#include <stddef.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CNNC_PACK_X86 1
#else
#define CNNC_PACK_X86 0
#endif

#define CNNC_PACK_ROWS_SCALAR(T)                                                           \
    for (ptrdiff_t p = p_from; p < kc; p++)                                                \
        for (int r = 0; r < R; r++)                                                        \
            dst[p * R + r] = r < h ? src[r * ld + p] : (T)0;

static void cnnc_pack_rows_s_scalar(const float *src, ptrdiff_t ld, int h, int R,
                                    ptrdiff_t kc, float *dst, ptrdiff_t p_from) {
    CNNC_PACK_ROWS_SCALAR(float)
}

static void cnnc_pack_rows_d_scalar(const double *src, ptrdiff_t ld, int h, int R,
                                    ptrdiff_t kc, double *dst, ptrdiff_t p_from) {
    CNNC_PACK_ROWS_SCALAR(double)
}

#if CNNC_PACK_X86
__attribute__((target("avx2")))
static void cnnc_pack_rows_s_avx2(const float *src, ptrdiff_t ld, int h, int R,
                                  ptrdiff_t kc, float *dst) {
    ptrdiff_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int r0 = 0; r0 < R; r0 += 8) {
            __m256 x[8], t[8], u[8];
            for (int i = 0; i < 8; i++)
                x[i] = r0 + i < h ? _mm256_loadu_ps(src + (r0 + i) * ld + p)
                                  : _mm256_setzero_ps();
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(x[i], x[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(x[i], x[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(dst + (p + i) * R + r0,
                                 _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
                _mm256_storeu_ps(dst + (p + i + 4) * R + r0,
                                 _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
            }
        }
    }
    cnnc_pack_rows_s_scalar(src, ld, h, R, kc, dst, p);
}

__attribute__((target("avx2")))
static void cnnc_pack_rows_d_avx2(const double *src, ptrdiff_t ld, int h, int R,
                                  ptrdiff_t kc, double *dst) {
    ptrdiff_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        for (int r0 = 0; r0 < R; r0 += 4) {
            __m256d x[4], t[4];
            for (int i = 0; i < 4; i++)
                x[i] = r0 + i < h ? _mm256_loadu_pd(src + (r0 + i) * ld + p)
                                  : _mm256_setzero_pd();
            t[0] = _mm256_unpacklo_pd(x[0], x[1]);
            t[1] = _mm256_unpackhi_pd(x[0], x[1]);
            t[2] = _mm256_unpacklo_pd(x[2], x[3]);
            t[3] = _mm256_unpackhi_pd(x[2], x[3]);
            _mm256_storeu_pd(dst + p * R + r0, _mm256_permute2f128_pd(t[0], t[2], 0x20));
            _mm256_storeu_pd(dst + (p + 1) * R + r0, _mm256_permute2f128_pd(t[1], t[3], 0x20));
            _mm256_storeu_pd(dst + (p + 2) * R + r0, _mm256_permute2f128_pd(t[0], t[2], 0x31));
            _mm256_storeu_pd(dst + (p + 3) * R + r0, _mm256_permute2f128_pd(t[1], t[3], 0x31));
        }
    }
    cnnc_pack_rows_d_scalar(src, ld, h, R, kc, dst, p);
}
#endif

static int cnnc_pack_use_avx2 = -1;

/* R must be a multiple of 8 (float) / 4 (double) for the vector path, else scalar. */
static void cnnc_pack_rows_s(const float *src, ptrdiff_t ld, int h, int R, ptrdiff_t kc,
                             float *dst) {
#if CNNC_PACK_X86
    if (cnnc_pack_use_avx2 < 0) {
        __builtin_cpu_init();
        cnnc_pack_use_avx2 = __builtin_cpu_supports("avx2");
    }
    if (cnnc_pack_use_avx2 && R % 8 == 0) {
        cnnc_pack_rows_s_avx2(src, ld, h, R, kc, dst);
        return;
    }
#endif
    cnnc_pack_rows_s_scalar(src, ld, h, R, kc, dst, 0);
}

static void cnnc_pack_rows_d(const double *src, ptrdiff_t ld, int h, int R, ptrdiff_t kc,
                             double *dst) {
#if CNNC_PACK_X86
    if (cnnc_pack_use_avx2 < 0) {
        __builtin_cpu_init();
        cnnc_pack_use_avx2 = __builtin_cpu_supports("avx2");
    }
    if (cnnc_pack_use_avx2 && R % 4 == 0) {
        cnnc_pack_rows_d_avx2(src, ld, h, R, kc, dst);
        return;
    }
#endif
    cnnc_pack_rows_d_scalar(src, ld, h, R, kc, dst, 0);
}
#endif
