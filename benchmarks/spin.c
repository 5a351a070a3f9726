/* A trivial CPU-bound loop on K threads: the machine's own multi-core scaling, for
 * benchmarks/scaling.py. Usage: spin THREADS ITERATIONS_PER_THREAD; prints seconds. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long iterations;

static void* spin(void* arg) {
    uint64_t x = (uint64_t)(uintptr_t)arg + 1;
    for (long i = 0; i < iterations; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (void*)(uintptr_t)(x & 1);
}

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spin THREADS ITERATIONS\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    iterations = atol(argv[2]);
    pthread_t t[64];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, spin, (void*)(uintptr_t)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.6f\n", (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
    return 0;
}
