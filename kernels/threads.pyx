"""What the OpenMP runtime this build was linked with offers."""
from omp_shim cimport cnnc_openmp_enabled, cnnc_omp_max_threads


def openmp_enabled() -> bool:
    """True when the kernels were built with OpenMP."""
    return bool(cnnc_openmp_enabled())


def omp_max_threads() -> int:
    """The OpenMP runtime's default team size (OMP_NUM_THREADS or the core count)."""
    return cnnc_omp_max_threads()
