/* The seeded generator the data library draws from (shuffles, augmentation,
 * text windows): splitmix64 (Steele, Lea, Flood: "Fast splittable
 * pseudorandom number generators", 2014). Internal to libxgrad_data. */
#ifndef XGRAD_DATA_RNG_H
#define XGRAD_DATA_RNG_H

#include <stdint.h>

/* splitmix64's mixing function alone (its finaliser). */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static inline uint64_t splitmix64(uint64_t *state)
{
    *state += 0x9E3779B97F4A7C15u;
    return mix64(*state);
}

/* Uniform in [0, bound) without modulo bias (rejection of the low
 * 2^64 mod bound values). bound >= 1. */
static inline uint64_t rand_below(uint64_t *state, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = splitmix64(state);
        if (r >= threshold)
            return r % bound;
    }
}

#endif
