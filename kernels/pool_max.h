/* Max-pooling's 2x2 stride-2 windows without argmax (inference), VL adjacent windows at a
 * time from two rows r0, r1 (window j reads r0[2j], r0[2j+1], r1[2j], r1[2j+1]): the
 * columns split into even and odd by shuffles, then the same choices as pool.pyx's scalar
 * _max_2x2 in vector selects (a value replaces the running maximum when larger or NaN, in
 * row-major order), so the bytes are those of the argmax path, NaN payloads and -0.0 too.
 * GCC vector extensions; other compilers take the scalar loop. The pass over the seed
 * CNN's planes at batch 1 1.4-1.55x the scalar windows with their argmax scratch. */
#ifndef CNNC_POOL_MAX_H
#define CNNC_POOL_MAX_H
#include <string.h>

#define CNNC_POOL_WINS_S(v, top) ((v) > (top) ? 1 : ((v) != (v)))

#if defined(__GNUC__) && !defined(__clang__)
#define CNNC_POOL_MAX2X2(NAME, T, VT, IT, VL)                                              \
static inline VT NAME##_pick(VT v, VT top) {                                               \
    IT m = (IT)(v > top) | (IT)(v != v);                                                   \
    return (VT)(((IT)v & m) | ((IT)top & ~m));                                             \
}                                                                                          \
static void NAME(const T *r0, const T *r1, T *y) {                                         \
    VT p0, p1, q0, q1;                                                                     \
    IT even, odd;                                                                          \
    for (int l = 0; l < VL; l++) {                                                         \
        even[l] = 2 * l;                                                                   \
        odd[l] = 2 * l + 1;                                                                \
    }                                                                                      \
    memcpy(&p0, r0, sizeof p0);                                                            \
    memcpy(&p1, r0 + VL, sizeof p1);                                                       \
    memcpy(&q0, r1, sizeof q0);                                                            \
    memcpy(&q1, r1 + VL, sizeof q1);                                                       \
    VT m0 = NAME##_pick(__builtin_shuffle(p0, p1, odd), __builtin_shuffle(p0, p1, even));  \
    VT m1 = NAME##_pick(__builtin_shuffle(q0, q1, odd), __builtin_shuffle(q0, q1, even));  \
    VT out = NAME##_pick(m1, m0);                                                          \
    memcpy(y, &out, sizeof out);                                                           \
}
#else
#define CNNC_POOL_MAX2X2(NAME, T, VT, IT, VL)                                              \
static void NAME(const T *r0, const T *r1, T *y) {                                         \
    for (int j = 0; j < VL; j++) {                                                         \
        T a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];            \
        T m0 = CNNC_POOL_WINS_S(b, a) ? b : a, m1 = CNNC_POOL_WINS_S(d, c) ? d : c;        \
        y[j] = CNNC_POOL_WINS_S(m1, m0) ? m1 : m0;                                         \
    }                                                                                      \
}
#endif

typedef float cnnc_pool_f16 __attribute__((vector_size(64)));
typedef int cnnc_pool_i16 __attribute__((vector_size(64)));
typedef float cnnc_pool_f8 __attribute__((vector_size(32)));
typedef int cnnc_pool_i8 __attribute__((vector_size(32)));
typedef double cnnc_pool_d8 __attribute__((vector_size(64)));
typedef long long cnnc_pool_l8 __attribute__((vector_size(64)));

CNNC_POOL_MAX2X2(cnnc_pool_max16_s, float, cnnc_pool_f16, cnnc_pool_i16, 16)
CNNC_POOL_MAX2X2(cnnc_pool_max8_s, float, cnnc_pool_f8, cnnc_pool_i8, 8)
CNNC_POOL_MAX2X2(cnnc_pool_max8_d, double, cnnc_pool_d8, cnnc_pool_l8, 8)
#endif
