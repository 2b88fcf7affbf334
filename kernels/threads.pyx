"""What the OpenMP runtime this build was linked with offers, and how far apart two cores
are."""
from omp_shim cimport cnnc_openmp_enabled, cnnc_omp_max_threads


cdef extern from "core_probe.h" nogil:
    double cnnc_core_round_trip(long rounds, double limit_s)


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
