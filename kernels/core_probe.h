/* How far apart two cores are: a cache line sent to a second thread and back, timed.
 * The second thread is a plain pthread (no OpenMP team is woken or left spinning), placed
 * by the OS on an idle core when there is one. */
#ifndef CNNC_CORE_PROBE_H
#define CNNC_CORE_PROBE_H
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

typedef struct {
    _Alignas(64) atomic_long ball;  /* odd: the second thread's turn, even: the first's */
    _Alignas(64) atomic_int stop;   /* set when the first thread gives up */
    long rounds;
} cnnc_probe;

static inline void cnnc_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline double cnnc_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void* cnnc_probe_pong(void* arg) {
    cnnc_probe* p = (cnnc_probe*)arg;
    for (long i = 0; i < p->rounds; i++) {
        long spins = 0;
        while (atomic_load_explicit(&p->ball, memory_order_acquire) != 2 * i + 1) {
            if (++spins % 4096 == 0 && atomic_load_explicit(&p->stop, memory_order_relaxed))
                return NULL;
            cnnc_relax();
        }
        atomic_store_explicit(&p->ball, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

/* Mean seconds per round trip over `rounds`, or -1 when the second thread could not be
 * started or did not keep up within limit_s seconds (no core to itself). */
static double cnnc_core_round_trip(long rounds, double limit_s) {
    cnnc_probe p;
    pthread_t other;
    double start, took = -1;
    long i = 0;
    atomic_init(&p.ball, 0);
    atomic_init(&p.stop, 0);
    p.rounds = rounds;
    if (rounds < 1 || pthread_create(&other, NULL, cnnc_probe_pong, &p) != 0)
        return -1;
    start = cnnc_now();
    for (; i < rounds; i++) {
        long spins = 0;
        atomic_store_explicit(&p.ball, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&p.ball, memory_order_acquire) != 2 * i + 2) {
            if (++spins % 4096 == 0 && cnnc_now() - start > limit_s)
                break;
            cnnc_relax();
        }
        if (atomic_load_explicit(&p.ball, memory_order_acquire) != 2 * i + 2)
            break;
    }
    if (i == rounds)
        took = (cnnc_now() - start) / rounds;
    atomic_store_explicit(&p.stop, 1, memory_order_relaxed);
    pthread_join(other, NULL);
    return took;
}
#endif
