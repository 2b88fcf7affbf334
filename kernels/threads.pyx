"""What the OpenMP runtime this build was linked with offers, how far apart two cores are,
and how the kernels' work queue shares items out."""
from cython.parallel cimport parallel, threadid

import numpy as np

from omp_shim cimport cnnc_openmp_enabled, cnnc_omp_max_threads


cdef extern from "core_probe.h" nogil:
    double cnnc_core_round_trip(long rounds, double limit_s)
    int cnnc_core_speeds(long work, double limit_s, double* solo, double* mine,
                         double* theirs)


def openmp_enabled() -> bool:
    """True when the kernels were built with OpenMP."""
    return bool(cnnc_openmp_enabled())


def omp_max_threads() -> int:
    """The OpenMP runtime's default team size (OMP_NUM_THREADS or the core count)."""
    return cnnc_omp_max_threads()


def core_round_trip_ns(rounds: int = 10000, limit_s: float = 0.1) -> float:
    """Mean nanoseconds for a cache line to go from this thread to a new one and back,
    over `rounds` trips: about 50-150 between cores that share an L3, 350-450 on this
    project's 2-vCPU VM when the host ran the vCPUs on cores that did not (see
    benchmarks/compare_torch.py --scaling). inf when the other thread did not keep up
    within limit_s seconds (it had no core to itself)."""
    if rounds < 1 or not limit_s > 0:
        raise ValueError(f"need rounds >= 1 and limit_s > 0, got {rounds}, {limit_s}")
    cdef long n = rounds
    cdef double limit = limit_s, took
    with nogil:
        took = cnnc_core_round_trip(n, limit)
    return float("inf") if took < 0 else took * 1e9


def core_speeds(work: int = 300000, limit_s: float = 0.1) -> tuple:
    """(solo, mine, theirs): seconds for `work` rounds of dependent vector multiply-adds
    (about 0.5 ms by default) on this thread alone, then on this thread and on a new one
    at the same time. On two free cores all three are about equal; on this project's VM
    one core is often 1.2-1.5x slower than the other for seconds at a time, and both are
    slow when the host runs the two threads on one core's hyperthreads. (solo, inf, inf)
    when the other thread did not start within limit_s seconds (no core free for it)."""
    if work < 1 or not limit_s > 0:
        raise ValueError(f"need work >= 1 and limit_s > 0, got {work}, {limit_s}")
    cdef long n = work
    cdef double limit = limit_s, solo = 0, mine = 0, theirs = 0
    cdef int ok
    with nogil:
        ok = cnnc_core_speeds(n, limit, &solo, &mine, &theirs)
    if ok < 0:
        return solo, float("inf"), float("inf")
    return solo, mine, theirs


cdef extern from "work_share.h" nogil:
    ctypedef struct cnnc_queue:
        pass
    void cnnc_queue_init(cnnc_queue* q, long long items, int threads)
    long long cnnc_queue_take(cnnc_queue* q, int tid)


cdef extern from "unistd.h" nogil:
    int usleep(unsigned int usec)


def work_share_order(long long items, int threads, int shares, int slow=-1,
                     unsigned int slow_us=0):
    """How `threads` threads share out items [0, items) with work_share.h (the kernels' work
    queue), the items split into `shares` shares: an int64 array [threads, items], row t the
    items thread t took, in the order it took them, then -1. Thread `slow` sleeps slow_us
    microseconds on each of its items. For tests and for looking at the schedule."""
    if items < 0 or items >= 2**31 or threads < 1 or shares < 1:
        raise ValueError(f"need 0 <= items < 2**31, threads >= 1 and shares >= 1, got "
                         f"{items}, {threads}, {shares}")
    order = np.full((threads, max(items, 1)), -1, dtype=np.int64)
    cdef long long[:, ::1] taken = order
    cdef cnnc_queue queue
    cdef long long k = 0, n = 0
    cdef int tid = 0
    cnnc_queue_init(&queue, items, shares)
    with nogil, parallel(num_threads=threads):
        tid = threadid()
        n = 0
        k = cnnc_queue_take(&queue, tid)
        while k >= 0:
            if tid == slow:
                usleep(slow_us)
            taken[tid, n] = k
            n = n + 1
            k = cnnc_queue_take(&queue, tid)
    return order[:, :items]
