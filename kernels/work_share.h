/* Work items shared out among threads: each thread starts with an even, contiguous share
 * and takes items from its front; a thread whose share is done takes items from the back
 * of the share with the most left. When the cores run at the same speed every thread
 * does its own share, in order, as a static schedule would (and touches the bytes it
 * touched in the op before); when one core is slowed (by another process, or by the
 * host running something on its sibling hyperthread) the others take over the rest of
 * its work instead of waiting for it.
 * Every item runs exactly once, whichever threads come: a thread that never starts has
 * its share taken by the others. Results must not depend on which thread runs an item. */
#ifndef CNNC_WORK_SHARE_H
#define CNNC_WORK_SHARE_H
#include <stdatomic.h>
#include <stdint.h>

#define CNNC_SHARES 64  /* threads past this share the shares (tid % CNNC_SHARES) */

typedef struct {
    _Alignas(64) _Atomic uint64_t range;  /* next item (low 32 bits), end (high 32 bits) */
} cnnc_share;

typedef struct {
    cnnc_share share[CNNC_SHARES];
    int n;  /* shares in use */
} cnnc_queue;


static inline uint64_t cnnc_pack(uint64_t next, uint64_t end) { return next | (end << 32); }

/* Items [0, items) split into min(threads, CNNC_SHARES) contiguous shares; items < 2**31. */
static inline void cnnc_queue_init(cnnc_queue* q, int64_t items, int threads) {
    int n = threads < 1 ? 1 : (threads > CNNC_SHARES ? CNNC_SHARES : threads);
    q->n = n;
    for (int i = 0; i < n; i++)
        atomic_store_explicit(&q->share[i].range,
                              cnnc_pack((uint64_t)(i * items / n), (uint64_t)((i + 1) * items / n)),
                              memory_order_relaxed);
}

static inline int64_t cnnc_take_front(cnnc_share* s) {
    uint64_t v = atomic_load_explicit(&s->range, memory_order_relaxed);
    while ((uint32_t)v < (uint32_t)(v >> 32)) {
        if (atomic_compare_exchange_weak_explicit(&s->range, &v, v + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int64_t)(uint32_t)v;
    }
    return -1;
}

static inline int64_t cnnc_take_back(cnnc_share* s) {
    uint64_t v = atomic_load_explicit(&s->range, memory_order_relaxed);
    while ((uint32_t)v < (uint32_t)(v >> 32)) {
        uint64_t end = (v >> 32) - 1;
        if (atomic_compare_exchange_weak_explicit(&s->range, &v, cnnc_pack((uint32_t)v, end),
                                                  memory_order_relaxed, memory_order_relaxed))
            return (int64_t)end;
    }
    return -1;
}

/* The next item for thread `tid`, or -1 when none is left anywhere. The items' data is
 * published by the parallel region's start and end barriers, not by these atomics. */
static inline int64_t cnnc_queue_take(cnnc_queue* q, int tid) {
    int64_t item = cnnc_take_front(&q->share[tid % q->n]);
    while (item < 0) {
        int best = -1;
        uint32_t most = 0;
        for (int i = 0; i < q->n; i++) {
            uint64_t v = atomic_load_explicit(&q->share[i].range, memory_order_relaxed);
            uint32_t left = (uint32_t)(v >> 32) - (uint32_t)v;
            if ((uint32_t)v < (uint32_t)(v >> 32) && left > most) {
                most = left;
                best = i;
            }
        }
        if (best < 0)
            return -1;
        item = cnnc_take_back(&q->share[best]);
    }
    return item;
}

#endif
