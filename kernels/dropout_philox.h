/* Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011):
   a counter-based generator. The 128-bit counter and 64-bit key map to four 32-bit words;
   the same (counter, key) always gives the same words, so a dropout mask can be
   regenerated in backward from (seed, step) instead of being stored. */
#ifndef CNNC_DROPOUT_PHILOX_H
#define CNNC_DROPOUT_PHILOX_H
#include <stdint.h>

static inline void cnnc_philox4x32_10(const uint32_t ctr[4], uint32_t key0, uint32_t key1,
                                      uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    for (int round = 0; round < 10; ++round) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ key0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ key1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        key0 += 0x9E3779B9u;  /* the key schedule: Weyl sequence (golden ratio, sqrt(3)-1) */
        key1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}
#endif
