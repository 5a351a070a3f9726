/* advantage.c: the trainer's advantage kernel on the CPU (module shoal.trainer._advantage).
 *
 * GAE(gamma, lambda) with V-trace-style truncated importance weights. For every segment s
 * (one row of the [S, T] buffers), backwards over t = T-1 .. 0, with
 * rho_t = min(ratio_t, rho_clip) and c_t = min(ratio_t, c_clip):
 *
 *     next_nonterminal = 1 - dones[t]
 *     delta_t = rho_t * (rewards[t] + gamma * values[t+1] * next_nonterminal - values[t])
 *     A_t     = delta_t + gamma * lam * c_t * next_nonterminal * A_{t+1}        (A_T = 0)
 *
 * values is [S, T+1]: values[:, T] bootstraps the observation after the segment. A missing
 * ratio means ratio == 1 everywhere; with ratio == 1 and both clips >= 1 this is plain GAE.
 * Truncated episodes were already bootstrapped into rewards by the rollout, so dones[t] = 1
 * always stops both the bootstrap and the propagation of later advantages.
 *
 * Inputs are C-contiguous float32 buffers (numpy arrays, or torch CPU tensors via .numpy()).
 * The GIL is released while the kernel runs; large inputs are split over threads,
 * since segments are independent (parallel_chunks in kernels.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* Below this many steps a second thread is not worth waking. */
#define ADVANTAGE_THREAD_MIN_STEPS (1 << 19)
#define ADVANTAGE_MAX_THREADS 8
/* Steps per unit of work the threads claim: small enough that a thread descheduled mid-chunk
 * delays the others by microseconds, large enough that claiming is free. */
#define ADVANTAGE_CHUNK_STEPS 8192

typedef struct {
    const float* values;   /* [S, T+1] */
    const float* rewards;  /* [S, T] */
    const float* dones;    /* [S, T] */
    const float* ratio;    /* [S, T] or NULL for ratio == 1 */
    float* advantages;     /* [S, T] */
    Py_ssize_t horizon;    /* T */
    float gamma, lam, rho_clip, c_clip;
} AdvantageJob;

/* min that compiles to one instruction (fminf's NaN rules make it a library call, which was
 * the kernel's bottleneck); a NaN ratio gets the clip. */
static inline float clip_above(float x, float clip) { return x < clip ? x : clip; }

/* a * b + c: fused where the CPU has FMA (it shortens the serial chain below), plain otherwise
 * (a portable build would turn fmaf into a library call). */
#ifdef __FMA__
#define MUL_ADD(a, b, c) fmaf((a), (b), (c))
#else
#define MUL_ADD(a, b, c) ((a) * (b) + (c))
#endif

/* One segment at a time. The recurrence on A is the only serial dependency; delta and the
 * decay factor of later steps are independent, so the CPU overlaps them with the chain. */
static void advantage_segments(void* arg, Py_ssize_t seg_lo, Py_ssize_t seg_hi) {
    const AdvantageJob* job = (const AdvantageJob*)arg;
    const Py_ssize_t T = job->horizon;
    const float gamma = job->gamma;
    const float gamma_lam = job->gamma * job->lam;
    const float rho_one = clip_above(1.0f, job->rho_clip);
    const float c_one = clip_above(1.0f, job->c_clip);
    for (Py_ssize_t s = seg_lo; s < seg_hi; s++) {
        const float* v = job->values + s * (T + 1);
        const float* r = job->rewards + s * T;
        const float* d = job->dones + s * T;
        const float* q = job->ratio ? job->ratio + s * T : NULL;
        float* out = job->advantages + s * T;
        float a = 0.0f;
        for (Py_ssize_t t = T - 1; t >= 0; t--) {
            const float next_nonterminal = 1.0f - d[t];
            const float rho = q ? clip_above(q[t], job->rho_clip) : rho_one;
            const float c = q ? clip_above(q[t], job->c_clip) : c_one;
            const float delta = rho * (r[t] + gamma * v[t + 1] * next_nonterminal - v[t]);
            a = MUL_ADD(gamma_lam * c * next_nonterminal, a, delta);
            out[t] = a;
        }
    }
}

/* ---- argument checks ---- */

/* Fills view with a C-contiguous float32 2-D buffer of obj; on failure sets a Python error
 * that names the argument and the fix, and leaves view released. */
static int get_matrix(PyObject* obj, const char* name, int writable, Py_buffer* view) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject* cause = PyErr_GetRaisedException();
#else
        PyObject *type, *cause, *traceback;
        PyErr_Fetch(&type, &cause, &traceback);
        Py_XDECREF(type);
        Py_XDECREF(traceback);
#endif
        PyErr_Format(PyExc_TypeError,
                     "advantage: '%s' must be a %sC-contiguous float32 array "
                     "(np.ascontiguousarray(x, dtype=np.float32)), got %R (%S)",
                     name, writable ? "writable " : "", Py_TYPE(obj), cause ? cause : Py_None);
        Py_XDECREF(cause);
        return -1;
    }
    if (!is_float32_format(view->format) || view->itemsize != 4) {
        PyErr_Format(PyExc_TypeError,
                     "advantage: '%s' must have dtype float32, got buffer format '%s'; convert "
                     "with x.astype(np.float32)", name, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->ndim != 2) {
        PyErr_Format(PyExc_ValueError,
                     "advantage: '%s' must be 2-D [segments, steps], got %d dimension(s)",
                     name, view->ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_shape(const Py_buffer* view, const char* name, Py_ssize_t rows, Py_ssize_t cols) {
    if (view->shape[0] != rows || view->shape[1] != cols) {
        PyErr_Format(PyExc_ValueError,
                     "advantage: '%s' has shape [%zd, %zd] but values is [%zd, %zd], so it must "
                     "be [%zd, %zd] (values carries one extra bootstrap column)",
                     name, view->shape[0], view->shape[1], rows, cols + 1, rows, cols);
        return -1;
    }
    return 0;
}

static int overlaps(const Py_buffer* a, const Py_buffer* b) {
    const char* a0 = (const char*)a->buf;
    const char* b0 = (const char*)b->buf;
    return a0 < b0 + b->len && b0 < a0 + a->len;
}

static int check_coefficient(const char* name, float x, float lo, float hi) {
    if (!(x >= lo && x <= hi)) {
        char message[160];
        snprintf(message, sizeof message, "advantage: %s=%g must be in [%g, %g]", name,
                 (double)x, (double)lo, (double)hi);
        PyErr_SetString(PyExc_ValueError, message);
        return -1;
    }
    return 0;
}

/* ---- compute() ---- */

PyDoc_STRVAR(compute_doc,
"compute(values, rewards, dones, ratio, advantages_out, gamma, lam, rho_clip, c_clip,\n"
"        num_threads=0) -> None\n\n"
"Writes GAE advantages with V-trace clipped importance weights into advantages_out.\n"
"All arrays are C-contiguous float32: values [S, T+1], rewards/dones/ratio/advantages_out\n"
"[S, T]; ratio may be None (ratio == 1). dones is 1.0 where the episode ended at that step.\n"
"advantages_out must not overlap values. num_threads=0 picks 1 or 2 threads by size.\n"
"Releases the GIL while computing.");

static PyObject* advantage_compute(PyObject* self, PyObject* args, PyObject* kwargs) {
    (void)self;
    static char* kwlist[] = {"values", "rewards", "dones", "ratio", "advantages_out", "gamma",
                             "lam", "rho_clip", "c_clip", "num_threads", NULL};
    PyObject *values_obj, *rewards_obj, *dones_obj, *ratio_obj, *out_obj;
    float gamma, lam, rho_clip, c_clip;
    int num_threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOffff|i:compute", kwlist, &values_obj,
                                     &rewards_obj, &dones_obj, &ratio_obj, &out_obj, &gamma,
                                     &lam, &rho_clip, &c_clip, &num_threads)) {
        return NULL;
    }
    if (check_coefficient("gamma", gamma, 0.0f, 1.0f) || check_coefficient("lam", lam, 0.0f, 1.0f)
        || check_coefficient("rho_clip", rho_clip, 0.0f, INFINITY)
        || check_coefficient("c_clip", c_clip, 0.0f, INFINITY)) {
        return NULL;
    }
    if (num_threads < 0) {
        PyErr_Format(PyExc_ValueError, "advantage: num_threads=%d must be >= 0 (0 = automatic)",
                     num_threads);
        return NULL;
    }

    Py_buffer values, rewards, dones, ratio, out;
    int have_ratio = ratio_obj != Py_None;
    int got = 0; /* how many buffers are held, in the order below */
    PyObject* result = NULL;
    if (get_matrix(values_obj, "values", 0, &values)) goto done;
    got = 1;
    if (get_matrix(rewards_obj, "rewards", 0, &rewards)) goto done;
    got = 2;
    if (get_matrix(dones_obj, "dones", 0, &dones)) goto done;
    got = 3;
    if (get_matrix(out_obj, "advantages_out", 1, &out)) goto done;
    got = 4;
    if (have_ratio) {
        if (get_matrix(ratio_obj, "ratio", 0, &ratio)) goto done;
        got = 5;
    }

    const Py_ssize_t S = values.shape[0];
    const Py_ssize_t T = values.shape[1] - 1;
    if (T < 0) {
        PyErr_SetString(PyExc_ValueError,
                        "advantage: values must be [S, T+1] with at least one column");
        goto done;
    }
    if (check_shape(&rewards, "rewards", S, T) || check_shape(&dones, "dones", S, T)
        || check_shape(&out, "advantages_out", S, T)
        || (have_ratio && check_shape(&ratio, "ratio", S, T))) {
        goto done;
    }
    if (S * T > 0 && overlaps(&out, &values)) {
        PyErr_SetString(PyExc_ValueError,
                        "advantage: advantages_out must not share memory with values");
        goto done;
    }

    AdvantageJob job = {
        .values = (const float*)values.buf,
        .rewards = (const float*)rewards.buf,
        .dones = (const float*)dones.buf,
        .ratio = have_ratio ? (const float*)ratio.buf : NULL,
        .advantages = (float*)out.buf,
        .horizon = T,
        .gamma = gamma,
        .lam = lam,
        .rho_clip = rho_clip,
        .c_clip = c_clip,
    };
    int threads = num_threads;
    if (threads == 0) threads = S * T >= ADVANTAGE_THREAD_MIN_STEPS ? 2 : 1;
    if (threads > ADVANTAGE_MAX_THREADS) threads = ADVANTAGE_MAX_THREADS;
    if (threads > S) threads = S > 0 ? (int)S : 1;

    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t chunk = T > 0 ? ADVANTAGE_CHUNK_STEPS / T : S;
    parallel_chunks(advantage_segments, &job, S, chunk, threads);
    Py_END_ALLOW_THREADS

    result = Py_NewRef(Py_None);
done:
    if (got >= 5) PyBuffer_Release(&ratio);
    if (got >= 4) PyBuffer_Release(&out);
    if (got >= 3) PyBuffer_Release(&dones);
    if (got >= 2) PyBuffer_Release(&rewards);
    if (got >= 1) PyBuffer_Release(&values);
    return result;
}

static PyMethodDef advantage_methods[] = {
    {"compute", (PyCFunction)(void (*)(void))advantage_compute, METH_VARARGS | METH_KEYWORDS,
     compute_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef advantage_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_advantage",
    .m_doc = "GAE advantages with V-trace clipped importance weights, on the CPU.",
    .m_size = -1,
    .m_methods = advantage_methods,
};

PyMODINIT_FUNC PyInit__advantage(void) { return PyModule_Create(&advantage_module); }
