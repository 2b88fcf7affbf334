/* OpenMP queries that also compile without OpenMP (then everything is one thread). */
#ifndef CNNC_OMP_SHIM_H
#define CNNC_OMP_SHIM_H
#ifdef _OPENMP
#include <omp.h>
static inline int cnnc_openmp_enabled(void) { return 1; }
static inline int cnnc_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int cnnc_omp_thread_num(void) { return omp_get_thread_num(); }
#else
static inline int cnnc_openmp_enabled(void) { return 0; }
static inline int cnnc_omp_max_threads(void) { return 1; }
static inline int cnnc_omp_thread_num(void) { return 0; }
#endif
#endif
