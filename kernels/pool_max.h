/* Max-pooling's 2x2 stride-2 windows, VL adjacent windows at a time from two rows r0, r1
 * (window j reads r0[2j], r0[2j+1], r1[2j], r1[2j+1]): the columns split into even and odd
 * by shuffles, then the same choices as pool.pyx's scalar _max_2x2 in vector selects (a
 * value replaces the running maximum when larger or NaN, in row-major order), so the bytes
 * are those of the scalar path, NaN payloads and -0.0 too. NAME: the maxima (inference);
 * NAME##_am (float32) also the argmax, am[j] = base + 2j + (w if row 1 won) + (1 if the odd
 * column won) as int32 lanes. GCC vector extensions; other compilers take scalar loops.
 * Against the scalar windows: without the argmax 1.4-1.55x (the seed CNN's planes at
 * batch 1), with it 1.28x and 1.54x (its two max-pools at batch 32). */
#ifndef CNNC_POOL_MAX_H
#define CNNC_POOL_MAX_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CNNC_POOL_WINS_S(v, top) ((v) > (top) ? 1 : ((v) != (v)))
/* The same choice on vectors of any width (IT: the integer vector of VT's lane size). */
#define CNNC_POOL_VPICK(IT, v, top) __extension__({                                         \
    __typeof__(v) v_ = (v), t_ = (top);                                                    \
    IT m_ = (IT)(v_ > t_) | (IT)(v_ != v_);                                                \
    (__typeof__(v))(((IT)v_ & m_) | ((IT)t_ & ~m_)); })

#if defined(__GNUC__) && !defined(__clang__)
/* The VL windows' four corners: a, b from row r0 (even, odd columns), c, d from r1; and
 * `even`, the lanes' 2j. */
#define CNNC_POOL_CORNERS(VT, IT, VL)                                                      \
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
    VT a = __builtin_shuffle(p0, p1, even), b = __builtin_shuffle(p0, p1, odd);            \
    VT c = __builtin_shuffle(q0, q1, even), d = __builtin_shuffle(q0, q1, odd);

#define CNNC_POOL_MAX2X2(NAME, T, VT, IT, VL)                                              \
static inline VT NAME##_pick(VT v, VT top) { return CNNC_POOL_VPICK(IT, v, top); }         \
static void NAME(const T *r0, const T *r1, T *y) {                                         \
    CNNC_POOL_CORNERS(VT, IT, VL)                                                          \
    VT m0 = NAME##_pick(b, a), m1 = NAME##_pick(d, c);                                     \
    VT out = NAME##_pick(m1, m0);                                                          \
    memcpy(y, &out, sizeof out);                                                           \
}
/* float32 only: the lanes of IT are the int32 of the argmax */
#define CNNC_POOL_MAX2X2_AM(NAME, VT, IT, VL)                                              \
static void NAME##_am(const float *r0, const float *r1, ptrdiff_t w, int32_t base, float *y, \
                      int32_t *am) {                                                       \
    CNNC_POOL_CORNERS(VT, IT, VL)                                                          \
    IT k0 = (IT)(b > a) | (IT)(b != b), k1 = (IT)(d > c) | (IT)(d != d);                   \
    VT m0 = (VT)(((IT)b & k0) | ((IT)a & ~k0)), m1 = (VT)(((IT)d & k1) | ((IT)c & ~k1));   \
    IT kf = (IT)(m1 > m0) | (IT)(m1 != m1);                                                \
    VT out = (VT)(((IT)m1 & kf) | ((IT)m0 & ~kf));                                         \
    IT idx = base + even + ((((int32_t)w + (k1 & 1)) & kf) | ((k0 & 1) & ~kf));           \
    memcpy(y, &out, sizeof out);                                                           \
    memcpy(am, &idx, sizeof idx);                                                          \
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
#define CNNC_POOL_MAX2X2_AM(NAME, VT, IT, VL)                                              \
static void NAME##_am(const float *r0, const float *r1, ptrdiff_t w, int32_t base, float *y, \
                      int32_t *am) {                                                       \
    for (int j = 0; j < VL; j++) {                                                         \
        float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];        \
        int k0 = CNNC_POOL_WINS_S(b, a), k1 = CNNC_POOL_WINS_S(d, c);                     \
        float m0 = k0 ? b : a, m1 = k1 ? d : c;                                           \
        int kf = CNNC_POOL_WINS_S(m1, m0);                                                \
        y[j] = kf ? m1 : m0;                                                               \
        am[j] = base + 2 * j + (kf ? (int32_t)w + k1 : k0);                                \
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
CNNC_POOL_MAX2X2_AM(cnnc_pool_max16_s, cnnc_pool_f16, cnnc_pool_i16, 16)
CNNC_POOL_MAX2X2_AM(cnnc_pool_max8_s, cnnc_pool_f8, cnnc_pool_i8, 8)
CNNC_POOL_MAX2X2(cnnc_pool_max8_d, double, cnnc_pool_d8, cnnc_pool_l8, 8)
#endif
