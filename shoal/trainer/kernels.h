/* kernels.h: what the trainer's C kernels (advantage.c, lstm_cell.c) share.
 *
 * - is_float32_format: whether a buffer's struct format is a native float32.
 * - parallel_ranges: split [0, items) into chunks and run them on the caller plus up to
 *   threads - 1 helper threads. Threads claim chunks from a shared counter, so a helper that
 *   is descheduled (the second core here is at times shared) delays the caller by at most the
 *   chunk it holds; the caller does everything if no helper ever starts. Helpers are detached
 *   and started per call (tens of microseconds), so callers only split work of ~100 us or more.
 *   Chunk boundaries depend only on `items` and `chunk`, never on which thread ran them, so
 *   results that are reduced per chunk stay deterministic.
 */
#ifndef SHOAL_TRAINER_KERNELS_H
#define SHOAL_TRAINER_KERNELS_H

#include <Python.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static inline int is_float32_format(const char* format) {
    if (format == NULL) return 0;  /* PyBUF_FORMAT was requested, so NULL never happens */
    if (format[0] == '@' || format[0] == '=') format++;
#if PY_LITTLE_ENDIAN
    else if (format[0] == '<') format++;
#else
    else if (format[0] == '>' || format[0] == '!') format++;
#endif
    return strcmp(format, "f") == 0;
}

/* Runs items [lo, hi) of the caller's job. */
typedef void (*range_fn)(void* job, Py_ssize_t lo, Py_ssize_t hi);

typedef struct {
    range_fn fn;
    void* job;                   /* the caller's; only touched while a chunk is unfinished */
    Py_ssize_t items, chunk;
    long num_chunks;
    atomic_long next_chunk;      /* next chunk to claim */
    atomic_long done_chunks;     /* chunks finished (release: their output is written) */
    atomic_int refs;             /* threads still holding this struct */
} SharedRanges;

static void run_claimed_chunks(SharedRanges* work) {
    for (;;) {
        long i = atomic_fetch_add_explicit(&work->next_chunk, 1, memory_order_relaxed);
        if (i >= work->num_chunks) return;
        Py_ssize_t lo = (Py_ssize_t)i * work->chunk;
        Py_ssize_t hi = lo + work->chunk < work->items ? lo + work->chunk : work->items;
        work->fn(work->job, lo, hi);
        atomic_fetch_add_explicit(&work->done_chunks, 1, memory_order_release);
    }
}

static void release_ranges(SharedRanges* work) {
    if (atomic_fetch_sub_explicit(&work->refs, 1, memory_order_acq_rel) == 1) free(work);
}

static void* ranges_helper(void* arg) {
    SharedRanges* work = (SharedRanges*)arg;
    run_claimed_chunks(work);
    release_ranges(work);
    return NULL;
}

/* fn(job, lo, hi) over [0, items) in chunks of `chunk` items, with up to `threads` threads
 * (the caller is one of them). Falls back to the caller alone if memory or threads are
 * refused. Call without the GIL if fn does not need it. */
static void parallel_ranges(range_fn fn, void* job, Py_ssize_t items, Py_ssize_t chunk,
                            int threads) {
    if (chunk < 1) chunk = 1;
    long num_chunks = (long)((items + chunk - 1) / chunk);
    if (threads > num_chunks) threads = (int)num_chunks;
    SharedRanges* work = threads > 1 ? malloc(sizeof(SharedRanges)) : NULL;
    if (work == NULL) {
        /* chunk by chunk here too: fn may reduce per chunk */
        for (Py_ssize_t lo = 0; lo < items; lo += chunk) fn(job, lo, lo + chunk < items ? lo + chunk : items);
        return;
    }
    work->fn = fn;
    work->job = job;
    work->items = items;
    work->chunk = chunk;
    work->num_chunks = num_chunks;
    atomic_init(&work->next_chunk, 0);
    atomic_init(&work->done_chunks, 0);
    atomic_init(&work->refs, 1);

    pthread_attr_t attr;
    if (pthread_attr_init(&attr) == 0) {
        if (pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0) {
            for (int i = 1; i < threads; i++) {
                pthread_t handle;
                atomic_fetch_add_explicit(&work->refs, 1, memory_order_relaxed);
                if (pthread_create(&handle, &attr, ranges_helper, work) != 0) {
                    atomic_fetch_sub_explicit(&work->refs, 1, memory_order_relaxed);
                    break;
                }
            }
        }
        pthread_attr_destroy(&attr);
    }

    run_claimed_chunks(work);
    /* Only chunks a helper claimed and is still computing remain: one chunk at most each. */
    while (atomic_load_explicit(&work->done_chunks, memory_order_acquire) < work->num_chunks) {
        sched_yield();
    }
    release_ranges(work);
}

#endif /* SHOAL_TRAINER_KERNELS_H */
