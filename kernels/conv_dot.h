/* Row dot products for convolutions whose whole output is a few pixels (conv.pyx).
 *
 * out[o * ldo + q] = sum_k w[o * K + k] * ct[q * K + k] for o < rows, q < nq (1..4).
 * The weights stream from memory once, unpacked, which is what bounds such a layer (VGG's
 * 512-channel 3x3 convolutions on 2x2 inputs at batch 1: 9.4 MB of weights for 19 MFLOP);
 * the GEMM would pack them and compute 16 columns for 4. Four rows by four columns of
 * VL-lane partial sums, each then added in a fixed order (lanes, then the K % VL tail), so
 * an element's value does not depend on which rows share its block. Short columns and the
 * last rows repeat a real one (so every read is in bounds); only real outputs are stored.
 * Written with GCC vector extensions: the build's -march picks the instructions. */
#ifndef CNNC_CONV_DOT_H
#define CNNC_CONV_DOT_H
#include <stddef.h>
#include <string.h>

/* Pins a 64-byte vector in a register where it is one (AVX-512); elsewhere a no-op. */
#if defined(__AVX512F__)
#define CNNC_DOT_KEEP(v) __asm__("" : "+v"(v))
#else
#define CNNC_DOT_KEEP(v) ((void)0)
#endif

#define CNNC_DOT_ROWS(NAME, T, VT, VL)                                                     \
static void NAME(const T *w, ptrdiff_t K, ptrdiff_t rows, const T *ct, int nq, T *out,      \
                 ptrdiff_t ldo) {                                                          \
    const T *c[4];                                                                         \
    ptrdiff_t kv = K - K % VL;                                                             \
    for (int q = 0; q < 4; q++) c[q] = ct + (q < nq ? q : nq - 1) * K;                     \
    for (ptrdiff_t o = 0; o < rows; o += 4) {                                              \
        const T *r[4];                                                                     \
        VT acc[4][4];                                                                      \
        for (int i = 0; i < 4; i++) {                                                      \
            r[i] = w + (o + i < rows ? o + i : rows - 1) * K;                              \
            for (int q = 0; q < 4; q++) acc[i][q] = (VT){0};                               \
        }                                                                                  \
        for (ptrdiff_t k = 0; k < kv; k += VL) {                                           \
            VT a[4], b[4];                                                                 \
            /* each operand loaded once, into a register (gcc otherwise reloads them for \
             * every product inside the kernel module: 1.6x slower) */                     \
            for (int i = 0; i < 4; i++) {                                                  \
                memcpy(&a[i], r[i] + k, sizeof a[i]);                                      \
                CNNC_DOT_KEEP(a[i]);                                                       \
            }                                                                              \
            for (int q = 0; q < 4; q++) {                                                  \
                memcpy(&b[q], c[q] + k, sizeof b[q]);                                      \
                CNNC_DOT_KEEP(b[q]);                                                       \
            }                                                                              \
            for (int i = 0; i < 4; i++)                                                    \
                for (int q = 0; q < 4; q++) acc[i][q] += a[i] * b[q];                      \
        }                                                                                  \
        for (int i = 0; i < 4 && o + i < rows; i++)                                        \
            for (int q = 0; q < nq; q++) {                                                 \
                T s = 0;                                                                   \
                for (int l = 0; l < VL; l++) s += acc[i][q][l];                            \
                for (ptrdiff_t k = kv; k < K; k++) s += r[i][k] * c[q][k];                 \
                out[(o + i) * ldo + q] = s;                                                \
            }                                                                              \
    }                                                                                      \
}

typedef float cnnc_dot_f16 __attribute__((vector_size(64)));
typedef double cnnc_dot_d8 __attribute__((vector_size(64)));
CNNC_DOT_ROWS(cnnc_dot_rows_s, float, cnnc_dot_f16, 16)
CNNC_DOT_ROWS(cnnc_dot_rows_d, double, cnnc_dot_d8, 8)
#endif
