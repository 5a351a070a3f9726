/* shoal_env.h: what every shoal C environment shares.
 *
 * The contract (docs/envs.md has the long form):
 *  - An env is a plain struct. Its buffer pointers (observations, actions, rewards, terminals,
 *    truncations, final_observations) point at this env's rows of arrays owned by Python; the env
 *    writes straight into them and allocates nothing per step.
 *  - step() auto-resets on the same step: when an episode ends the env sets terminals/truncations,
 *    leaves the last reward in rewards, copies the final observation into final_observations, then
 *    resets and writes the first observation of the next episode into observations.
 *  - Episode statistics go into the env's Log (all floats, `n` last, the count of episodes); the
 *    binding sums Logs across envs and divides by n.
 *  - Randomness comes only from the env's own ShoalRng (no libc rand(): it is neither seeded per env
 *    nor thread-safe).
 */
#ifndef SHOAL_ENV_H
#define SHOAL_ENV_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PCG32 (O'Neill, pcg-random.org): 16 bytes of state, statistically strong, and a separate stream
 * per env so env i's sequence depends only on (seed, i), never on threads or backends. */
typedef struct {
    uint64_t state;
    uint64_t inc;
} ShoalRng;

static inline uint32_t shoal_rng_u32(ShoalRng* r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

static inline void shoal_rng_seed(ShoalRng* r, uint64_t seed, uint64_t stream) {
    r->state = 0u;
    r->inc = (stream << 1u) | 1u;
    shoal_rng_u32(r);
    r->state += seed;
    shoal_rng_u32(r);
}

/* Uniform integer in [0, n), n >= 1 (Lemire's multiply-shift; bias below 2^-32 * n). */
static inline int shoal_rng_int(ShoalRng* r, int n) {
    return (int)(((uint64_t)shoal_rng_u32(r) * (uint64_t)(uint32_t)n) >> 32);
}

/* Uniform float in [0, 1). */
static inline float shoal_rng_float(ShoalRng* r) {
    return (float)(shoal_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

/* Uniform float in [lo, hi). */
static inline float shoal_rng_uniform(ShoalRng* r, float lo, float hi) {
    return lo + (hi - lo) * shoal_rng_float(r);
}

/* Standard normal (Box-Muller; one value per call, the cheap half discarded). */
static inline float shoal_rng_normal(ShoalRng* r) {
    float u1 = ((float)(shoal_rng_u32(r) >> 8) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = shoal_rng_float(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

static inline float shoal_clampf(float x, float lo, float hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

static inline int shoal_clampi(int x, int lo, int hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* Fills an RGB frame (h*w*3 bytes) with one colour. */
static inline void shoal_fill_rgb(uint8_t* rgb, int h, int w, uint8_t r, uint8_t g, uint8_t b) {
    size_t pixels = (size_t)h * (size_t)w;
    for (size_t i = 0; i < pixels; i++) {
        rgb[3 * i] = r;
        rgb[3 * i + 1] = g;
        rgb[3 * i + 2] = b;
    }
}

/* Fills the rectangle [y, y+rh) x [x, x+rw) of an RGB frame, clipped to the frame. */
static inline void shoal_rect_rgb(uint8_t* rgb, int h, int w, int y, int x, int rh, int rw,
                                  uint8_t r, uint8_t g, uint8_t b) {
    int y0 = shoal_clampi(y, 0, h), y1 = shoal_clampi(y + rh, 0, h);
    int x0 = shoal_clampi(x, 0, w), x1 = shoal_clampi(x + rw, 0, w);
    for (int yy = y0; yy < y1; yy++) {
        uint8_t* row = rgb + 3 * ((size_t)yy * (size_t)w);
        for (int xx = x0; xx < x1; xx++) {
            row[3 * xx] = r;
            row[3 * xx + 1] = g;
            row[3 * xx + 2] = b;
        }
    }
}

/* Appends printf-style text to a bounded buffer; returns the new length (never past cap - 1). */
static inline int shoal_appendf(char* buf, int cap, int len, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static inline int shoal_appendf(char* buf, int cap, int len, const char* fmt, ...) {
    if (len >= cap - 1) return len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + len, (size_t)(cap - len), fmt, ap);
    va_end(ap);
    if (n < 0) return len;
    return len + n >= cap ? cap - 1 : len + n;
}

#endif /* SHOAL_ENV_H */
