/* Small helpers shared by the benchmarks: a clock, a median and the
 * parsing of optional positive integer arguments. */
#ifndef XG_BENCH_UTIL_H
#define XG_BENCH_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place and returns its median. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* argv[i] as an integer in [1, max], or `fallback` when absent; -1 (with a
 * message) when malformed. */
static inline long bench_arg(int argc, char **argv, int i, long fallback,
                             long max)
{
    if (i >= argc)
        return fallback;
    char *end = NULL;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (end == argv[i] || *end != '\0' || errno == ERANGE || v < 1 || v > max) {
        fprintf(stderr, "%s: argument %d '%s': expected an integer from 1 to "
                "%ld\n", argv[0], i, argv[i], max);
        return -1;
    }
    return v;
}

#endif
