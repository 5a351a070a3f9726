/* shoal_libm.h: the C library's math functions for a program built without -lm.
 *
 * `shoal export` writes a main.c that builds with `cc -O2 main.c -o play`. glibc keeps its math
 * functions in a separate library, libm, that the linker adds only with -lm; the env and policy
 * headers call sqrtf, sinf, cosf, hypotf, expf, logf... Small implementations of our own would
 * link, but they would not give libm's bits: glibc's sinf is not correctly rounded (it differs
 * from the correctly rounded float for ~2.7% of breakout's serve angles, 15 to 45 degrees; its
 * cosf for ~2.5% of angles in [pi/4, pi/2], drone's yaw), and one ulp in a serve angle changes
 * the episode. The program promises the episodes shoal's env plays for the same seed and
 * actions, and shoal's env calls this machine's libm, so the program calls the same libm: on
 * glibc 2.34 and later dlopen is part of libc, and the functions are looked up in libm.so.6 on
 * first use (dlsym resolves glibc's CPU-specific variants the way the linker would).
 *
 * Include after the system headers and before the env and policy headers: the macros below
 * route their calls through the looked-up functions. Elsewhere (musl, macOS, the BSDs,
 * wasi-libc) the math functions are in libc and this header does nothing; with a glibc older
 * than 2.34, or to link libm the usual way, build with `-lm -DSHOAL_LINK_LIBM`.
 */
#ifndef SHOAL_LIBM_H
#define SHOAL_LIBM_H

#include <math.h>

#if defined(__GLIBC__) && !defined(SHOAL_LINK_LIBM) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

/* Every libm function the exported env and policy headers call: name, return type, argument
   list. An env that calls another one fails to link without -lm (tests/test_tools_export.py
   builds every C env): add it here. */
#define SHOAL_LIBM_FUNCTIONS(X)              \
    X(sqrtf, float, (float))                 \
    X(sinf, float, (float))                  \
    X(cosf, float, (float))                  \
    X(expf, float, (float))                  \
    X(logf, float, (float))                  \
    X(floorf, float, (float))                \
    X(fabsf, float, (float))                 \
    X(hypotf, float, (float, float))         \
    X(lroundf, long, (float))

#define SHOAL_LIBM_POINTER(name, ret, args) static ret(*shoal_libm_##name) args;
SHOAL_LIBM_FUNCTIONS(SHOAL_LIBM_POINTER)
#undef SHOAL_LIBM_POINTER

/* Looks every function up once; a program that cannot get them says how to build with -lm and
   exits (0 when loaded). */
static int shoal_libm_load(void) {
    static int loaded = 0;
    if (loaded) return 0;
    void* libm = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    if (!libm) {
        fprintf(stderr, "cannot load the math library: %s\nbuild with: cc -O2 main.c -o play "
                "-lm -DSHOAL_LINK_LIBM\n", dlerror());
        exit(1);
    }
#define SHOAL_LIBM_LOOKUP(name, ret, args)                                                   \
    shoal_libm_##name = (ret(*) args)dlsym(libm, #name);                                     \
    if (!shoal_libm_##name) {                                                                \
        fprintf(stderr, "libm.so.6 has no " #name ": build with cc -O2 main.c -o play -lm "  \
                "-DSHOAL_LINK_LIBM\n");                                                      \
        exit(1);                                                                             \
    }
    SHOAL_LIBM_FUNCTIONS(SHOAL_LIBM_LOOKUP)
#undef SHOAL_LIBM_LOOKUP
    loaded = 1;    /* libm stays loaded for the life of the program */
    return 0;
}

/* sinf(x) -> (shoal_libm_load(), shoal_libm_sinf(x)): the calls cannot be folded into others
   (gcc turns a sinf and cosf of one angle into sincosf, which glibc computes identically, but
   the symbol would be libm's again) and the first one loads the library. */
#define sqrtf(x) (shoal_libm_load(), shoal_libm_sqrtf(x))
#define sinf(x) (shoal_libm_load(), shoal_libm_sinf(x))
#define cosf(x) (shoal_libm_load(), shoal_libm_cosf(x))
#define expf(x) (shoal_libm_load(), shoal_libm_expf(x))
#define logf(x) (shoal_libm_load(), shoal_libm_logf(x))
#define floorf(x) (shoal_libm_load(), shoal_libm_floorf(x))
#define fabsf(x) (shoal_libm_load(), shoal_libm_fabsf(x))
#define hypotf(x, y) (shoal_libm_load(), shoal_libm_hypotf((x), (y)))
#define lroundf(x) (shoal_libm_load(), shoal_libm_lroundf(x))
#endif

#endif /* SHOAL_LIBM_H */
