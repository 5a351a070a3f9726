/* kernels.h: what the trainer's C kernels (advantage.c, lstm_cell.c) share: the float32
 * format check for buffers (buffer_format.h), and parallel_chunks to split independent rows
 * over threads. */
#ifndef SHOAL_TRAINER_KERNELS_H
#define SHOAL_TRAINER_KERNELS_H

#include <Python.h>

#include <string.h>

#include "buffer_format.h"

/* Runs items [lo, hi) of the caller's job. */
typedef void (*range_fn)(void* job, Py_ssize_t lo, Py_ssize_t hi);

/* fn(job, lo, hi) over [0, items) in chunks of `chunk` items, on up to `threads` OpenMP
 * threads, claimed dynamically (a thread that is descheduled holds up at most its chunk).
 * Chunk boundaries depend only on `items` and `chunk`, never on which thread ran them, so a
 * result reduced per chunk is the same for any thread count.
 *
 * Why OpenMP: the extensions link the OpenMP runtime under the soname torch's CPU build
 * loads, so in a training process this runs on torch's worker threads. Those spin for a while
 * after each of torch's parallel products; a thread of our own started next to them waited for
 * the core they spin on (measured: the LSTM cell took as long on two threads as on one).
 * Built without OpenMP (SHOAL_NO_OPENMP=1) it runs on the caller alone. Call without the GIL
 * if fn does not need it. */
static void parallel_chunks(range_fn fn, void* job, Py_ssize_t items, Py_ssize_t chunk,
                            int threads) {
    if (chunk < 1) chunk = 1;
    Py_ssize_t chunks = (items + chunk - 1) / chunk;
    if (threads < 1) threads = 1;
    if (threads > chunks) threads = chunks > 0 ? (int)chunks : 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
#endif
    for (Py_ssize_t k = 0; k < chunks; k++) {
        Py_ssize_t lo = k * chunk;
        fn(job, lo, lo + chunk < items ? lo + chunk : items);
    }
}

#endif /* SHOAL_TRAINER_KERNELS_H */
