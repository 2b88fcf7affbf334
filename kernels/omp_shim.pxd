# OpenMP queries that compile with or without OpenMP; see omp_shim.h.
cdef extern from "omp_shim.h" nogil:
    int cnnc_openmp_enabled()
    int cnnc_omp_max_threads()
    int cnnc_omp_thread_num()
