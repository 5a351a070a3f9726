/* _net.c: the Python binding of shoal_net.h (module shoal.net._net).
 *
 * Net(blob) parses and checks a weight blob (a copy is kept, aligned). Its methods take numpy
 * (or any buffer-protocol) arrays, check their dtype, shape and contiguity, and run without the
 * GIL, rows split over OpenMP threads (see shoal/trainer/kernels.h for why OpenMP):
 *
 *     forward(obs, starts, h, c, params, values, threads=1)
 *     sample(params, rng, greedy, actions, logprobs, threads=1)
 *
 * and the RNG helpers rng_seed(states, seed, first=0) and rng_uniforms(states, out) (the
 * uniforms a row's sampler would draw, for a reference implementation to use).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels.h"
#include "shoal_net.h"

/* Rows per chunk handed to a thread: fixed, so results never depend on the thread count. */
#define NET_CHUNK_ROWS 64

typedef struct {
    PyObject_HEAD
    shoal_net net;
    void* blob;            /* our aligned copy */
    Py_ssize_t blob_bytes;
} NetObject;

static const char* dtype_names[SHOAL_OBS_TYPES] = {
    "float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"};

/* Buffer-format letter(s) each observation dtype accepts. */
static int format_matches(const char* format, int dtype, Py_ssize_t itemsize) {
    if (format == NULL) return 0;
    if (format[0] == '@' || format[0] == '=' || format[0] == '<') format++;
    if (format[0] == '\0' || format[1] != '\0') return 0;
    char f = format[0];
    switch (dtype) {
        case SHOAL_OBS_F32: return f == 'f';
        case SHOAL_OBS_F64: return f == 'd';
        case SHOAL_OBS_U8: return f == 'B' || f == '?';
        case SHOAL_OBS_I8: return f == 'b';
        case SHOAL_OBS_U16: return f == 'H';
        case SHOAL_OBS_I16: return f == 'h';
        case SHOAL_OBS_U32: return (f == 'I' || f == 'L') && itemsize == 4;
        case SHOAL_OBS_I32: return (f == 'i' || f == 'l') && itemsize == 4;
        default: return (f == 'q' || f == 'l') && itemsize == 8;
    }
}

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static void release(Buf* b, int n) {
    for (int i = 0; i < n; i++)
        if (b[i].held) { PyBuffer_Release(&b[i].view); b[i].held = 0; }
}

/* Gets a C-contiguous buffer of `count` items of `itemsize` bytes; writable if asked.
 * kind: 'f' float32, 'Q' uint64, 'i' int32, 0 = checked by the caller. */
static int get_buffer(PyObject* obj, Buf* b, const char* name, int writable, char kind,
                      Py_ssize_t count) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array", name,
                     writable ? ", writable" : "");
        return -1;
    }
    b->held = 1;
    if (kind == 'f' && !is_float32_format(b->view.format)) {
        PyErr_Format(PyExc_ValueError, "%s must be float32, got format '%s'", name, b->view.format);
        return -1;
    }
    if (kind == 'Q') {
        const char* f = b->view.format;
        if (f[0] == '@' || f[0] == '=' || f[0] == '<') f++;
        if (!((f[0] == 'Q' || f[0] == 'L') && f[1] == '\0' && b->view.itemsize == 8)) {
            PyErr_Format(PyExc_ValueError, "%s must be uint64, got format '%s'", name, b->view.format);
            return -1;
        }
    }
    if (kind == 'i') {
        const char* f = b->view.format;
        if (f[0] == '@' || f[0] == '=' || f[0] == '<') f++;
        if (!((f[0] == 'i' || f[0] == 'l') && f[1] == '\0' && b->view.itemsize == 4)) {
            PyErr_Format(PyExc_ValueError, "%s must be int32, got format '%s'", name, b->view.format);
            return -1;
        }
    }
    if (count >= 0 && b->view.len != count * b->view.itemsize) {
        PyErr_Format(PyExc_ValueError, "%s has %zd values; expected %zd", name,
                     b->view.len / (b->view.itemsize ? b->view.itemsize : 1), count);
        return -1;
    }
    return 0;
}

/* Gets the action-parameter buffer, float32 [B, num_params]; returns B, or -1 with the error set. */
static Py_ssize_t get_params(const shoal_net* net, PyObject* obj, Buf* b, int writable) {
    if (get_buffer(obj, b, "params", writable, 'f', -1) != 0) return -1;
    if (b->view.len % (4 * net->num_params) != 0) {
        PyErr_Format(PyExc_ValueError, "params must be [B, %d]", (int)net->num_params);
        return -1;
    }
    return b->view.len / (4 * net->num_params);
}

/* ---- Net object ---- */

static void Net_dealloc(NetObject* self) {
    PyMem_Free(self->blob);
    Py_TYPE(self)->tp_free((PyObject*)self);
}

static int Net_init(NetObject* self, PyObject* args, PyObject* kwargs) {
    static char* kw[] = {"blob", NULL};
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*", kw, &view)) return -1;
    PyMem_Free(self->blob);
    self->blob = PyMem_Malloc(view.len > 0 ? (size_t)view.len : 1);  /* 8+-byte aligned */
    if (self->blob == NULL) { PyBuffer_Release(&view); PyErr_NoMemory(); return -1; }
    memcpy(self->blob, view.buf, (size_t)view.len);
    self->blob_bytes = view.len;
    PyBuffer_Release(&view);
    char err[512];
    if (shoal_net_load(&self->net, self->blob, (size_t)self->blob_bytes, err, sizeof err) != 0) {
        PyErr_SetString(PyExc_ValueError, err);
        PyMem_Free(self->blob);
        self->blob = NULL;
        return -1;
    }
    return 0;
}

static int check_loaded(NetObject* self) {
    if (self->blob == NULL) {
        PyErr_SetString(PyExc_ValueError, "Net holds no weights (its constructor failed)");
        return -1;
    }
    return 0;
}

typedef struct {
    const shoal_net* net;
    const unsigned char* obs;
    const float* starts;
    float *h, *c, *params, *values;
    float* scratch;          /* per thread: threads x scratch_floats */
    int64_t scratch_floats;
    int64_t row_bytes;
} ForwardJob;

static void forward_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    ForwardJob* j = (ForwardJob*)arg;
    int t = 0;
#ifdef _OPENMP
    t = omp_get_thread_num();
#endif
    const int64_t H = j->net->hidden, P = j->net->num_params;
    shoal_net_forward(j->net, hi - lo, j->obs + lo * j->row_bytes,
                      j->starts ? j->starts + lo : NULL,
                      j->h ? j->h + lo * H : NULL, j->c ? j->c + lo * H : NULL,
                      j->params + lo * P, j->values + lo, j->scratch + t * j->scratch_floats);
}

static PyObject* Net_forward(NetObject* self, PyObject* args, PyObject* kwargs) {
    static char* kw[] = {"obs", "starts", "h", "c", "params", "values", "threads", NULL};
    PyObject *o_obs, *o_starts, *o_h, *o_c, *o_params, *o_values;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO|i", kw, &o_obs, &o_starts, &o_h, &o_c,
                                     &o_params, &o_values, &threads))
        return NULL;
    if (check_loaded(self) != 0) return NULL;
    const shoal_net* net = &self->net;
    Buf b[6];
    memset(b, 0, sizeof b);
    if (get_buffer(o_obs, &b[0], "obs", 0, 0, -1) != 0) goto fail;
    if (!format_matches(b[0].view.format, net->obs_dtype, b[0].view.itemsize)) {
        PyErr_Format(PyExc_ValueError, "obs must be %s (the dtype the policy was exported for), "
                     "got format '%s'", dtype_names[net->obs_dtype], b[0].view.format);
        goto fail;
    }
    int64_t row_bytes = (int64_t)net->obs_elems * net->obs_item_bytes;
    if (b[0].view.len % row_bytes != 0 || b[0].view.ndim < 1) {
        PyErr_Format(PyExc_ValueError, "obs must be [B, %d observation values], got %zd bytes",
                     (int)net->obs_elems, b[0].view.len);
        goto fail;
    }
    Py_ssize_t B = b[0].view.len / row_bytes;
    if (b[0].view.shape[0] != B) {
        PyErr_Format(PyExc_ValueError, "obs must be [B, *obs_shape] with %d values per row",
                     (int)net->obs_elems);
        goto fail;
    }
    if (o_starts != Py_None && get_buffer(o_starts, &b[1], "starts", 0, 'f', B) != 0) goto fail;
    if (net->lstm) {
        if (o_h == Py_None || o_c == Py_None) {
            PyErr_SetString(PyExc_ValueError, "this policy is recurrent: pass h and c [B, hidden]");
            goto fail;
        }
        if (get_buffer(o_h, &b[2], "h", 1, 'f', B * net->hidden) != 0) goto fail;
        if (get_buffer(o_c, &b[3], "c", 1, 'f', B * net->hidden) != 0) goto fail;
    }
    if (get_buffer(o_params, &b[4], "params", 1, 'f', B * net->num_params) != 0) goto fail;
    if (get_buffer(o_values, &b[5], "values", 1, 'f', B) != 0) goto fail;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    int64_t chunks = (B + NET_CHUNK_ROWS - 1) / NET_CHUNK_ROWS;
    if (threads > chunks) threads = chunks > 0 ? (int)chunks : 1;
    ForwardJob job = {net, b[0].view.buf, b[1].held ? b[1].view.buf : NULL,
                      b[2].held ? b[2].view.buf : NULL, b[3].held ? b[3].view.buf : NULL,
                      b[4].view.buf, b[5].view.buf, NULL, shoal_net_scratch_floats(net), row_bytes};
    job.scratch = PyMem_RawMalloc(sizeof(float) * (size_t)(job.scratch_floats * threads));
    if (job.scratch == NULL) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(forward_range, &job, B, NET_CHUNK_ROWS, threads);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(job.scratch);
    release(b, 6);
    Py_RETURN_NONE;
fail:
    release(b, 6);
    return NULL;
}

typedef struct {
    const shoal_net* net;
    const float* params;
    uint64_t* rng;
    int greedy;
    int32_t* actions_i;
    float* actions_f;
    float* logprobs;
} SampleJob;

static void sample_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    SampleJob* j = (SampleJob*)arg;
    const int64_t A = j->net->action_dims;
    shoal_net_sample(j->net, hi - lo, j->params + lo * j->net->num_params,
                     j->rng ? j->rng + lo : NULL, j->greedy,
                     j->actions_i ? j->actions_i + lo * A : NULL,
                     j->actions_f ? j->actions_f + lo * A : NULL, j->logprobs + lo);
}

static PyObject* Net_sample(NetObject* self, PyObject* args, PyObject* kwargs) {
    static char* kw[] = {"params", "rng", "greedy", "actions", "logprobs", "threads", NULL};
    PyObject *o_params, *o_rng, *o_actions, *o_logprobs;
    int greedy, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOpOO|i", kw, &o_params, &o_rng, &greedy,
                                     &o_actions, &o_logprobs, &threads))
        return NULL;
    if (check_loaded(self) != 0) return NULL;
    const shoal_net* net = &self->net;
    Buf b[4];
    memset(b, 0, sizeof b);
    Py_ssize_t B = get_params(net, o_params, &b[0], 0);
    if (B < 0) goto fail;
    if (!greedy || o_rng != Py_None) {
        if (o_rng == Py_None) {
            PyErr_SetString(PyExc_ValueError, "sampling needs rng states (uint64 [B]); pass "
                            "greedy=True to take the most likely action instead");
            goto fail;
        }
        if (get_buffer(o_rng, &b[1], "rng", 1, 'Q', B) != 0) goto fail;
    }
    int box = net->head == SHOAL_HEAD_BOX;
    if (get_buffer(o_actions, &b[2], "actions", 1, box ? 'f' : 'i', B * net->action_dims) != 0)
        goto fail;
    if (get_buffer(o_logprobs, &b[3], "logprobs", 1, 'f', B) != 0) goto fail;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    SampleJob job = {net, b[0].view.buf, b[1].held ? b[1].view.buf : NULL, greedy,
                     box ? NULL : b[2].view.buf, box ? b[2].view.buf : NULL, b[3].view.buf};
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(sample_range, &job, B, 256, threads);
    Py_END_ALLOW_THREADS
    release(b, 4);
    Py_RETURN_NONE;
fail:
    release(b, 4);
    return NULL;
}

/* mask_logits(params, masks): params [B, num_params] float32 masked in place
 * (shoal_net_mask_logits); masks [B, num_params] bool/uint8. */
static PyObject* Net_mask_logits(NetObject* self, PyObject* args) {
    PyObject *o_params, *o_masks;
    if (!PyArg_ParseTuple(args, "OO", &o_params, &o_masks)) return NULL;
    if (check_loaded(self) != 0) return NULL;
    const shoal_net* net = &self->net;
    if (net->head == SHOAL_HEAD_BOX) {   /* the C mask is a no-op there: refuse, don't ignore */
        PyErr_SetString(PyExc_ValueError, "action masks are for Discrete and MultiDiscrete heads; "
                        "this policy's actions are continuous (Box): pass no masks");
        return NULL;
    }
    Buf b[2];
    memset(b, 0, sizeof b);
    Py_ssize_t B = get_params(net, o_params, &b[0], 1);
    if (B < 0) goto fail;
    if (get_buffer(o_masks, &b[1], "masks", 0, 'B', B * net->num_params) != 0) goto fail;
    if (b[1].view.itemsize != 1) {
        PyErr_Format(PyExc_ValueError, "masks must be bool or uint8, got format '%s'", b[1].view.format);
        goto fail;
    }
    shoal_net_mask_logits(net, B, (float*)b[0].view.buf, (const uint8_t*)b[1].view.buf);
    release(b, 2);
    Py_RETURN_NONE;
fail:
    release(b, 2);
    return NULL;
}

static void net_capsule_free(PyObject* capsule) {
    Py_XDECREF((PyObject*)PyCapsule_GetContext(capsule));
}

/* A capsule holding this net's shoal_net (for the envs' fused rollout, which compiles the same
 * header); it keeps the Net alive. */
static PyObject* Net_capsule(NetObject* self, PyObject* unused) {
    (void)unused;
    if (check_loaded(self) != 0) return NULL;
    PyObject* cap = PyCapsule_New(&self->net, "shoal.net.shoal_net.v1", net_capsule_free);
    if (cap == NULL) return NULL;
    Py_INCREF(self);
    if (PyCapsule_SetContext(cap, self) != 0) {
        Py_DECREF(self);
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

static PyObject* Net_clip_actions(NetObject* self, PyObject* args) {
    PyObject *o_in, *o_out;
    if (!PyArg_ParseTuple(args, "OO", &o_in, &o_out)) return NULL;
    if (check_loaded(self) != 0) return NULL;
    if (self->net.head != SHOAL_HEAD_BOX) {
        PyErr_SetString(PyExc_ValueError, "clip_actions is for Box action heads");
        return NULL;
    }
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get_buffer(o_in, &b[0], "actions", 0, 'f', -1) != 0) goto fail;
    Py_ssize_t n = b[0].view.len / 4;
    if (n % self->net.action_dims != 0) {
        PyErr_Format(PyExc_ValueError, "actions must be [B, %d]", (int)self->net.action_dims);
        goto fail;
    }
    if (get_buffer(o_out, &b[1], "out", 1, 'f', n) != 0) goto fail;
    shoal_net_clip_actions(&self->net, n / self->net.action_dims, b[0].view.buf, b[1].view.buf);
    release(b, 2);
    Py_RETURN_NONE;
fail:
    release(b, 2);
    return NULL;
}

static PyObject* Net_get(NetObject* self, void* which) {
    if (check_loaded(self) != 0) return NULL;
    const shoal_net* n = &self->net;
    switch ((int)(intptr_t)which) {
        case 0: return PyLong_FromLong(n->hidden);
        case 1: return PyBool_FromLong(n->lstm);
        case 2: return PyLong_FromLong(n->num_params);
        case 3: return PyLong_FromLong(n->action_dims);
        case 4: return PyUnicode_FromString(n->head == SHOAL_HEAD_BOX ? "box"
                                            : n->head == SHOAL_HEAD_DISCRETE ? "discrete"
                                            : "multidiscrete");
        case 5: return PyUnicode_FromString(dtype_names[n->obs_dtype]);
        case 6: {
            PyObject* t = PyTuple_New(n->obs_ndim);
            if (t == NULL) return NULL;
            for (int i = 0; i < n->obs_ndim; i++) PyTuple_SET_ITEM(t, i, PyLong_FromLong(n->obs_shape[i]));
            return t;
        }
        default: return PyLong_FromLongLong(shoal_net_scratch_floats(n));
    }
}

static PyGetSetDef Net_getset[] = {
    {"hidden", (getter)Net_get, NULL, "hidden width", (void*)0},
    {"recurrent", (getter)Net_get, NULL, "whether the policy has an LSTM state", (void*)1},
    {"num_params", (getter)Net_get, NULL, "action parameters per row", (void*)2},
    {"action_dims", (getter)Net_get, NULL, "action values per row", (void*)3},
    {"head", (getter)Net_get, NULL, "'discrete', 'multidiscrete' or 'box'", (void*)4},
    {"obs_dtype", (getter)Net_get, NULL, "observation dtype name", (void*)5},
    {"obs_shape", (getter)Net_get, NULL, "one observation's shape", (void*)6},
    {"scratch_floats", (getter)Net_get, NULL, "scratch one forward call uses", (void*)7},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Net_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Net_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(obs, starts, h, c, params, values, threads=1): one step for B rows."},
    {"sample", (PyCFunction)(void (*)(void))Net_sample, METH_VARARGS | METH_KEYWORDS,
     "sample(params, rng, greedy, actions, logprobs, threads=1)."},
    {"mask_logits", (PyCFunction)Net_mask_logits, METH_VARARGS,
     "mask_logits(params, masks): invalid actions' logits set to -1e9, in place."},
    {"capsule", (PyCFunction)Net_capsule, METH_NOARGS,
     "capsule(): the shoal_net struct for C code that includes shoal_net.h."},
    {"clip_actions", (PyCFunction)Net_clip_actions, METH_VARARGS,
     "clip_actions(actions, out): Box actions clipped to the space's bounds."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shoal.net._net.Net",
    .tp_basicsize = sizeof(NetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A policy loaded from a shoal net weight blob (shoal_net.h).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Net_init,
    .tp_dealloc = (destructor)Net_dealloc,
    .tp_methods = Net_methods,
    .tp_getset = Net_getset,
};

/* ---- RNG helpers ---- */

static PyObject* rng_seed(PyObject* mod, PyObject* args, PyObject* kwargs) {
    (void)mod;
    static char* kw[] = {"states", "seed", "first", NULL};
    PyObject* o;
    unsigned long long seed;
    long long first = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OK|L", kw, &o, &seed, &first)) return NULL;
    Buf b;
    memset(&b, 0, sizeof b);
    if (get_buffer(o, &b, "states", 1, 'Q', -1) != 0) { release(&b, 1); return NULL; }
    shoal_net_rng_seed(b.view.buf, b.view.len / 8, (uint64_t)seed, first);
    release(&b, 1);
    Py_RETURN_NONE;
}

static PyObject* rng_uniforms(PyObject* mod, PyObject* args) {
    (void)mod;
    PyObject *o_states, *o_out;
    if (!PyArg_ParseTuple(args, "OO", &o_states, &o_out)) return NULL;
    Buf b[2];
    memset(b, 0, sizeof b);
    if (get_buffer(o_states, &b[0], "states", 1, 'Q', -1) != 0) goto fail;
    if (get_buffer(o_out, &b[1], "out", 1, 'f', -1) != 0) goto fail;
    Py_ssize_t rows = b[0].view.len / 8;
    Py_ssize_t n = b[1].view.len / 4;
    if (rows == 0 || n % rows != 0) {
        PyErr_SetString(PyExc_ValueError, "out must be [len(states), k] float32");
        goto fail;
    }
    Py_ssize_t k = n / rows;
    uint64_t* s = b[0].view.buf;
    float* out = b[1].view.buf;
    for (Py_ssize_t r = 0; r < rows; r++)
        for (Py_ssize_t j = 0; j < k; j++) out[r * k + j] = shoal_net_rng_uniform(&s[r]);
    release(b, 2);
    Py_RETURN_NONE;
fail:
    release(b, 2);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"rng_seed", (PyCFunction)(void (*)(void))rng_seed, METH_VARARGS | METH_KEYWORDS,
     "rng_seed(states, seed, first=0): seeds uint64 RNG states for rows first, first+1, ..."},
    {"rng_uniforms", (PyCFunction)rng_uniforms, METH_VARARGS,
     "rng_uniforms(states, out): fills out [rows, k] with each row's next k uniforms."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_net", "shoal_net.h for Python: see shoal.net.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__net(void) {
    if (PyType_Ready(&NetType) < 0) return NULL;
    PyObject* m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&NetType);
    if (PyModule_AddObject(m, "Net", (PyObject*)&NetType) < 0) {
        Py_DECREF(&NetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
