/* shm_sum.c: the counters and copies of a gradient sum through shared memory (module
 * shoal.trainer._shm_sum; shoal/trainer/distributed.py's SharedMemorySum owns the segment).
 *
 * A segment, mapped by every rank of a job on one host (world_size ranks, a flat buffer of
 * nbytes bytes each), is laid out as
 *
 *     world_size lines of LINE bytes: rank r's line holds its publish counter (int64), alone
 *                                     on its cache line so no rank's store evicts another's
 *     area 0: world_size slots of slot_bytes (nbytes rounded up to LINE), one per rank
 *     area 1: the same
 *
 * Sum k of a segment (k = 0, 1, ...): every rank copies its buffer into its slot of area
 * k % 2 and then stores k + 1 into its counter with release ordering (publish); once every
 * counter reads >= k + 1 with acquire ordering (waiting returns -1), every slot of that area
 * holds its rank's buffer and reduce() adds them in rank order, so every rank gets the same
 * bits. Why two areas suffice is in distributed.py (SharedMemorySum).
 *
 * The segment is a writable Python buffer (mmap.mmap); data buffers are C-contiguous (numpy
 * arrays of torch CPU tensors). Copies and sums run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "buffer_format.h"

#define LINE 64
/* a rank count far above any one host's, so sizes below cannot overflow */
#define MAX_RANKS 4096

/* The segment's size for world_size ranks of nbytes each; -1 (a Python error set) when the
 * arguments are out of range or the size would overflow. */
static Py_ssize_t segment_bytes(Py_ssize_t world_size, Py_ssize_t nbytes, Py_ssize_t* slot) {
    if (world_size < 1 || world_size > MAX_RANKS) {
        PyErr_Format(PyExc_ValueError, "shm_sum: world_size must be in [1, %d], got %zd",
                     MAX_RANKS, world_size);
        return -1;
    }
    if (nbytes < 0 || nbytes > (PY_SSIZE_T_MAX - LINE) / (2 * MAX_RANKS) - LINE) {
        PyErr_Format(PyExc_ValueError, "shm_sum: a buffer of %zd bytes is out of range", nbytes);
        return -1;
    }
    Py_ssize_t slot_bytes = (nbytes + LINE - 1) / LINE * LINE;
    if (slot) *slot = slot_bytes;
    return world_size * LINE + 2 * world_size * slot_bytes;
}

static int64_t* counter(char* base, Py_ssize_t rank) { return (int64_t*)(base + rank * LINE); }

/* The segment as a writable buffer of exactly the size of world_size ranks of nbytes each. */
static int get_segment(PyObject* obj, Py_ssize_t world_size, Py_ssize_t nbytes, Py_buffer* view,
                       Py_ssize_t* slot) {
    Py_ssize_t size = segment_bytes(world_size, nbytes, slot);
    if (size < 0) return -1;
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) return -1;
    if (view->len != size) {
        PyErr_Format(PyExc_ValueError,
                     "shm_sum: the segment has %zd bytes; %zd ranks of %zd-byte buffers need "
                     "%zd (was it sized with segment_size(world_size, nbytes)?)",
                     view->len, world_size, nbytes, size);
        PyBuffer_Release(view);
        return -1;
    }
    if (((uintptr_t)view->buf) % LINE != 0) {
        PyErr_SetString(PyExc_ValueError, "shm_sum: the segment is not aligned to 64 bytes "
                                          "(map it with mmap.mmap)");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_rank_seq(Py_ssize_t world_size, Py_ssize_t rank, long long seq) {
    if (rank < 0 || rank >= world_size) {
        PyErr_Format(PyExc_ValueError, "shm_sum: rank %zd is not in [0, %zd)", rank, world_size);
        return -1;
    }
    if (seq < 0 || seq >= INT64_MAX - 1) {
        PyErr_Format(PyExc_ValueError, "shm_sum: sum number %lld is out of range", seq);
        return -1;
    }
    return 0;
}

/* ---- the module's functions ---- */

static PyObject* shm_segment_size(PyObject* self, PyObject* args) {
    (void)self;
    Py_ssize_t world_size, nbytes;
    if (!PyArg_ParseTuple(args, "nn:segment_size", &world_size, &nbytes)) return NULL;
    Py_ssize_t size = segment_bytes(world_size, nbytes, NULL);
    return size < 0 ? NULL : PyLong_FromSsize_t(size);
}

/* publish(segment, world_size, nbytes, rank, seq, data): data (nbytes) into rank's slot of
 * area seq % 2, then rank's counter = seq + 1 (release: a rank that reads the counter sees
 * the data). */
static PyObject* shm_publish(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *seg_obj, *data_obj;
    Py_ssize_t world_size, nbytes, rank;
    long long seq;
    if (!PyArg_ParseTuple(args, "OnnnLO:publish", &seg_obj, &world_size, &nbytes, &rank, &seq,
                          &data_obj))
        return NULL;
    if (check_rank_seq(world_size, rank, seq) < 0) return NULL;
    Py_buffer data, seg;
    if (PyObject_GetBuffer(data_obj, &data, PyBUF_C_CONTIGUOUS) != 0) return NULL;
    if (data.len != nbytes) {
        PyErr_Format(PyExc_ValueError, "shm_sum.publish: data has %zd bytes, the segment's "
                     "buffers %zd", data.len, nbytes);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t slot;
    if (get_segment(seg_obj, world_size, nbytes, &seg, &slot) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    char* base = (char*)seg.buf;
    char* dst = base + world_size * LINE + ((seq & 1) * world_size + rank) * slot;
    int64_t* own = counter(base, rank);
    if (__atomic_load_n(own, __ATOMIC_RELAXED) != (int64_t)seq) {
        PyErr_Format(PyExc_RuntimeError,
                     "shm_sum: rank %zd publishes sum %lld but its counter says %lld sums were "
                     "published", rank, seq, (long long)__atomic_load_n(own, __ATOMIC_RELAXED));
        PyBuffer_Release(&seg);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    memcpy(dst, data.buf, (size_t)data.len);
    __atomic_store_n(own, (int64_t)seq + 1, __ATOMIC_RELEASE);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&seg);
    PyBuffer_Release(&data);
    Py_RETURN_NONE;
}

/* The first rank whose counter is below seq + 1 (acquire loads), or -1 when every rank has
 * published sum seq. */
static Py_ssize_t first_waiting(char* base, Py_ssize_t world_size, long long seq) {
    for (Py_ssize_t r = 0; r < world_size; r++)
        if (__atomic_load_n(counter(base, r), __ATOMIC_ACQUIRE) < (int64_t)seq + 1) return r;
    return -1;
}

/* waiting(segment, world_size, nbytes, seq) -> the first rank that has not published sum
 * seq yet, or -1 when all have. */
static PyObject* shm_waiting(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* seg_obj;
    Py_ssize_t world_size, nbytes;
    long long seq;
    if (!PyArg_ParseTuple(args, "OnnL:waiting", &seg_obj, &world_size, &nbytes, &seq))
        return NULL;
    if (check_rank_seq(world_size, 0, seq) < 0) return NULL;
    Py_buffer seg;
    if (get_segment(seg_obj, world_size, nbytes, &seg, NULL) < 0) return NULL;
    Py_ssize_t late = first_waiting((char*)seg.buf, world_size, seq);
    PyBuffer_Release(&seg);
    return PyLong_FromSsize_t(late);
}


/* out = slot 0 + slot 1 + ... in rank order (left to right), elementwise. */
#define REDUCE(TYPE)                                                                   \
    do {                                                                               \
        TYPE* restrict dst = (TYPE*)out.buf;                                           \
        const Py_ssize_t n = out.len / (Py_ssize_t)sizeof(TYPE);                       \
        memcpy(dst, area, (size_t)out.len);                                            \
        for (Py_ssize_t r = 1; r < world_size; r++) {                                  \
            const TYPE* restrict src = (const TYPE*)(area + r * slot);                 \
            for (Py_ssize_t i = 0; i < n; i++) dst[i] += src[i];                       \
        }                                                                              \
    } while (0)

/* reduce(segment, world_size, nbytes, seq, out): out (float32 or float64, nbytes) = the sum
 * over ranks, in rank order, of sum seq's slots; a RuntimeError when some rank has not
 * published it. */
static PyObject* shm_reduce(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *seg_obj, *out_obj;
    Py_ssize_t world_size, nbytes;
    long long seq;
    if (!PyArg_ParseTuple(args, "OnnLO:reduce", &seg_obj, &world_size, &nbytes, &seq, &out_obj))
        return NULL;
    if (check_rank_seq(world_size, 0, seq) < 0) return NULL;
    Py_buffer out, seg;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        != 0)
        return NULL;
    int kind = float_format(out.format);
    if (kind == 0 || out.itemsize != (kind == 'f' ? 4 : 8)) {
        PyErr_Format(PyExc_TypeError, "shm_sum.reduce: out must be float32 or float64, got "
                                      "buffer format '%s'", out.format ? out.format : "?");
        PyBuffer_Release(&out);
        return NULL;
    }
    if (out.len != nbytes) {
        PyErr_Format(PyExc_ValueError, "shm_sum.reduce: out has %zd bytes, the segment's "
                     "buffers %zd", out.len, nbytes);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t slot;
    if (get_segment(seg_obj, world_size, nbytes, &seg, &slot) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    char* base = (char*)seg.buf;
    Py_ssize_t late = first_waiting(base, world_size, seq);
    if (late >= 0) {
        PyErr_Format(PyExc_RuntimeError, "shm_sum.reduce: rank %zd has not published sum %lld",
                     late, seq);
        PyBuffer_Release(&seg);
        PyBuffer_Release(&out);
        return NULL;
    }
    const char* area = base + world_size * LINE + (seq & 1) * world_size * slot;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'f')
        REDUCE(float);
    else
        REDUCE(double);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&seg);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

static PyMethodDef shm_methods[] = {
    {"segment_size", shm_segment_size, METH_VARARGS,
     "segment_size(world_size, nbytes) -> bytes of a segment for world_size ranks' buffers "
     "of nbytes each"},
    {"publish", shm_publish, METH_VARARGS,
     "publish(segment, world_size, nbytes, rank, seq, data): data into rank's slot of area "
     "seq % 2, then rank's counter = seq + 1 (release store)"},
    {"waiting", shm_waiting, METH_VARARGS,
     "waiting(segment, world_size, nbytes, seq) -> the first rank that has not published sum "
     "seq, or -1 when all have (acquire loads)"},
    {"reduce", shm_reduce, METH_VARARGS,
     "reduce(segment, world_size, nbytes, seq, out): out = the ranks' slots of sum seq added "
     "in rank order (float32 or float64)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shm_module = {
    PyModuleDef_HEAD_INIT,
    "_shm_sum",
    "The counters and copies of a gradient sum through shared memory (shm_sum.c).",
    -1,
    shm_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shm_sum(void) { return PyModule_Create(&shm_module); }
