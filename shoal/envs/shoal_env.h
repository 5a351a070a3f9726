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

/* ---- snapshot validation ----
 * A snapshot restores an env's struct and arrays from bytes that may come from a corrupt or
 * crafted file. Each env declares what its fields may hold in a validate function,
 *
 *     static int myenv_validate(const MyEnv* env, const MyEnv* made, ShoalCheck* check);
 *
 * called on the candidate state `env` (arrays already in place) with `made`, an env built here
 * from the same parameters: fields fixed by the parameters must equal made's, every other field
 * must hold a value that stepping, rendering and logging handle without a fault or undefined
 * behaviour (indices in range, counts consistent, floats finite and in range). It returns 1 when
 * everything holds, else 0 with the first problem written into `check` (the checkers below do
 * that and return 0, so a validate function is a chain of `&&`). It runs only when a snapshot is
 * loaded, never per step. */
typedef struct {
    int failed;
    char message[256]; /* the first problem found: names the field and its value */
} ShoalCheck;

static inline int shoal_check_fail(ShoalCheck* check, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int shoal_check_fail(ShoalCheck* check, const char* fmt, ...) {
    if (!check->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(check->message, sizeof(check->message), fmt, ap);
        va_end(ap);
        check->failed = 1;
    }
    return 0;
}

/* An integer field in [lo, hi]. */
static inline int shoal_check_int(ShoalCheck* check, const char* field, long long value, long long lo,
                                  long long hi) {
    if (value >= lo && value <= hi) return 1;
    return shoal_check_fail(check, "%s = %lld is outside [%lld, %lld]", field, value, lo, hi);
}

/* A float field, finite and in [lo, hi] (NaN fails every comparison, so it is refused too). */
static inline int shoal_check_float(ShoalCheck* check, const char* field, float value, float lo, float hi) {
    if (value >= lo && value <= hi) return 1;
    return shoal_check_fail(check, "%s = %g is not a number in [%g, %g]", field, (double)value, (double)lo,
                            (double)hi);
}

/* A field fixed by the parameters (or derived from them): it must equal the value built here. */
static inline int shoal_check_same(ShoalCheck* check, const char* field, double value, double expected) {
    if (value == expected) return 1;
    return shoal_check_fail(check, "%s = %.9g but these parameters give %.9g", field, value, expected);
}

/* Every element of an integer array in [lo, hi]. */
static inline int shoal_check_ints(ShoalCheck* check, const char* field, const int* a, size_t n, long long lo,
                                   long long hi) {
    for (size_t i = 0; i < n; i++)
        if (a[i] < lo || a[i] > hi)
            return shoal_check_fail(check, "%s[%zu] = %d is outside [%lld, %lld]", field, i, a[i], lo, hi);
    return 1;
}

/* Every element of a byte array in [lo, hi]. */
static inline int shoal_check_bytes(ShoalCheck* check, const char* field, const uint8_t* a, size_t n,
                                    unsigned lo, unsigned hi) {
    for (size_t i = 0; i < n; i++)
        if (a[i] < lo || a[i] > hi)
            return shoal_check_fail(check, "%s[%zu] = %u is outside [%u, %u]", field, i, a[i], lo, hi);
    return 1;
}

/* Every element of a float array finite and in [lo, hi]. */
static inline int shoal_check_floats(ShoalCheck* check, const char* field, const float* a, size_t n, float lo,
                                     float hi) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] >= lo && a[i] <= hi))
            return shoal_check_fail(check, "%s[%zu] = %g is not a number in [%g, %g]", field, i, (double)a[i],
                                    (double)lo, (double)hi);
    return 1;
}

/* The same checks naming a struct field by itself: SHOAL_INT(check, env, tick, 0, env->max_steps - 1). */
#define SHOAL_INT(check, env, field, lo, hi) \
    shoal_check_int(check, #field, (long long)(env)->field, (long long)(lo), (long long)(hi))
#define SHOAL_FLOAT(check, env, field, lo, hi) shoal_check_float(check, #field, (env)->field, lo, hi)
#define SHOAL_SAME(check, env, made, field) \
    shoal_check_same(check, #field, (double)(env)->field, (double)(made)->field)
#define SHOAL_INTS(check, env, field, n, lo, hi) \
    shoal_check_ints(check, #field, (env)->field, (size_t)(n), (long long)(lo), (long long)(hi))
#define SHOAL_BYTES(check, env, field, n, lo, hi) shoal_check_bytes(check, #field, (env)->field, (size_t)(n), lo, hi)
#define SHOAL_FLOATS(check, env, field, n, lo, hi) \
    shoal_check_floats(check, #field, (env)->field, (size_t)(n), lo, hi)

/* Bounds for a float that sums at most `steps` values of magnitude `per_step`: finite, and no
 * larger than what that many steps can add (a loose bound, it only keeps sums in a sane range). */
#define SHOAL_SUM_BOUND(steps, per_step) ((float)(steps) * (float)(per_step) + 1.0f)

#endif /* SHOAL_ENV_H */
