/* buffer_format.h: which float a Python buffer holds, from its struct format string (the C
 * kernels in kernels.h and the shared-memory sum in shm_sum.c check their buffers with it). */
#ifndef SHOAL_TRAINER_BUFFER_FORMAT_H
#define SHOAL_TRAINER_BUFFER_FORMAT_H

#include <Python.h>

#include <string.h>

/* The format past a prefix that means this machine's byte order (another prefix stays, so the
 * comparisons below fail for it). */
static inline const char* native_format(const char* format) {
    if (format[0] == '@' || format[0] == '=') return format + 1;
#if PY_LITTLE_ENDIAN
    if (format[0] == '<') return format + 1;
#else
    if (format[0] == '>' || format[0] == '!') return format + 1;
#endif
    return format;
}

/* 'f' for float32, 'd' for float64 in this machine's byte order, else 0. */
static inline int float_format(const char* format) {
    if (format == NULL) return 0;  /* PyBUF_FORMAT was requested, so NULL never happens */
    format = native_format(format);
    if (strcmp(format, "f") == 0) return 'f';
    if (strcmp(format, "d") == 0) return 'd';
    return 0;
}

/* Whether a buffer's items are int64 in this machine's byte order. */
static inline int is_int64_format(const char* format, Py_ssize_t itemsize) {
    if (format == NULL || itemsize != 8) return 0;
    format = native_format(format);
    return strcmp(format, "l") == 0 || strcmp(format, "q") == 0;
}

static inline int is_float32_format(const char* format) { return float_format(format) == 'f'; }

#endif
