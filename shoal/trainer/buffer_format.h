/* buffer_format.h: which float a Python buffer holds, from its struct format string (the C
 * kernels in kernels.h and the shared-memory sum in shm_sum.c check their buffers with it). */
#ifndef SHOAL_TRAINER_BUFFER_FORMAT_H
#define SHOAL_TRAINER_BUFFER_FORMAT_H

#include <Python.h>

#include <string.h>

/* 'f' for float32, 'd' for float64 in this machine's byte order, else 0. */
static inline int float_format(const char* format) {
    if (format == NULL) return 0;  /* PyBUF_FORMAT was requested, so NULL never happens */
    if (format[0] == '@' || format[0] == '=') format++;
#if PY_LITTLE_ENDIAN
    else if (format[0] == '<') format++;
#else
    else if (format[0] == '>' || format[0] == '!') format++;
#endif
    if (strcmp(format, "f") == 0) return 'f';
    if (strcmp(format, "d") == 0) return 'd';
    return 0;
}

static inline int is_float32_format(const char* format) { return float_format(format) == 'f'; }

#endif
