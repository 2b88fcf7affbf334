/* How far apart two cores are: a cache line sent to a second thread and back, timed; and
 * how fast each computes while both do. The second thread is a plain pthread (no OpenMP
 * team is woken or left spinning), placed by the OS on an idle core when there is one. */
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

/* How fast each of two cores computes at once: the same chains of dependent multiply-adds
 * (any ISA, the FMA units a sibling hyperthread would share) on this thread and on a
 * second one started with it. */
typedef struct {
    _Alignas(64) atomic_int go;  /* 1: both run; -1: the first thread gave up waiting */
    _Alignas(64) atomic_int ready;
    long work;
    double took;
} cnnc_speed;

typedef double cnnc_v4d __attribute__((vector_size(32)));

static double cnnc_speed_loop(long n) {
    /* 12 independent vector chains: enough multiply-adds in flight to keep a core's FMA
     * units busy (and so to feel a sibling hyperthread that also uses them). */
    cnnc_v4d a[12];
    const cnnc_v4d m = {0.9999999, 0.9999999, 0.9999999, 0.9999999};
    const cnnc_v4d c = {1e-7, 1e-7, 1e-7, 1e-7};
    volatile double sink = 0;
    for (int j = 0; j < 12; j++)
        a[j] = (cnnc_v4d){1 + j, 2 + j, 3 + j, 4 + j};
    double start = cnnc_now();
    for (long i = 0; i < n; i++)
        for (int j = 0; j < 12; j++)
            a[j] = a[j] * m + c;
    for (int j = 0; j < 12; j++)
        sink += a[j][0] + a[j][3];
    (void)sink;
    return cnnc_now() - start;
}

static void* cnnc_speed_other(void* arg) {
    cnnc_speed* s = (cnnc_speed*)arg;
    atomic_store_explicit(&s->ready, 1, memory_order_release);
    int go;
    while ((go = atomic_load_explicit(&s->go, memory_order_acquire)) == 0)
        cnnc_relax();
    if (go > 0)
        s->took = cnnc_speed_loop(s->work);
    return NULL;
}

/* Seconds of `work` rounds of the loop on this thread alone (*solo), then on this thread
 * and, at the same time, on another (*mine, *theirs); returns -1 when the other thread did
 * not start within limit_s. */
static int cnnc_core_speeds(long work, double limit_s, double* solo, double* mine,
                            double* theirs) {
    cnnc_speed s;
    pthread_t other;
    *solo = cnnc_speed_loop(work);
    atomic_init(&s.go, 0);
    atomic_init(&s.ready, 0);
    s.work = work;
    s.took = -1;
    if (work < 1 || pthread_create(&other, NULL, cnnc_speed_other, &s) != 0)
        return -1;
    double start = cnnc_now();
    while (!atomic_load_explicit(&s.ready, memory_order_acquire)) {
        if (cnnc_now() - start > limit_s) {
            atomic_store_explicit(&s.go, -1, memory_order_release);
            pthread_join(other, NULL);
            return -1;
        }
        cnnc_relax();
    }
    atomic_store_explicit(&s.go, 1, memory_order_release);
    *mine = cnnc_speed_loop(work);
    pthread_join(other, NULL);
    *theirs = s.took;
    return 0;
}
#endif
