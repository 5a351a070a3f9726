/* lstm_cell.c: the LSTM cell's elementwise work in one pass (module shoal.trainer._lstm_cell).
 *
 * An LSTM step is two parts: the gate pre-activations x W_ih^T + h W_hh^T + b (matrix products,
 * left to torch's BLAS) and about twenty elementwise operations on [B, 4H] and [B, H] tensors.
 * Run as separate torch ops, each of those reads and writes whole tensors and autograd records
 * it. Here they are one loop per step, in the forward and in the backward (a training minibatch
 * 1.26x faster, BENCHMARKS.md); shoal/trainer/lstm.py sequences the steps and does the products.
 *
 * Gate layout is nn.LSTMCell's: the 4H columns of a row are i, f, g, o (H each).
 * Forward of one step, for every row b (with k = keep of the next step, 0 where it starts an
 * episode, so the next step's state is zeroed):
 *
 *     i, f, o = sigmoid(pre_i, pre_f, pre_o)      g = tanh(pre_g)      (written over pre)
 *     c = f * c_prev + i * g                      h = o * tanh(c)
 *     h_next = k * h                              c_next = k * c       (the next step's input)
 *
 * Backward of one step, given the activations, c, c_prev and dL/dh from the output (dy) and
 * from the next step's products (dh_rec, still to be multiplied by k), and the carried dc:
 *
 *     dh = dy + k * dh_rec          dc = k * dc_carry + dh * o * (1 - tanh(c)^2)
 *     d_pre = (dc * g * i(1-i), dc * c_prev * f(1-f), dc * i * (1-g^2), dh * tanh(c) * o(1-o))
 *     dc_carry <- dc * f                                   (written over the activations: d_pre)
 *
 * Inputs are C-contiguous float32 buffers (numpy views of torch CPU tensors); sizes are checked
 * against B and H. The GIL is released while a step runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "kernels.h"

/* Rows per chunk of work (see parallel_chunks): ~8k cells, tens of microseconds. Fixed, so
 * the bias gradient, summed per chunk and then over chunks in order, does not depend on the
 * number of threads. */
#define CELL_CHUNK_CELLS 8192
/* Below this many cells (~0.15 ms of work on one core) the pass stays on one thread. Set when
 * helper threads were started per call; not re-tuned for OpenMP's already running threads. */
#define CELL_THREAD_MIN_CELLS 32768

/* exp(x) in a form the compiler vectorises (libm's expf is a call per element): x = n ln2 + r
 * with |r| <= ln2/2, e^r from a degree-6 polynomial (relative error ~2e-7, like expf's), 2^n
 * put into the exponent bits. Arguments are clamped to the finite range first; NaN stays NaN.
 * The rounding to n uses the 1.5 * 2^23 trick so no float is converted to int (that conversion
 * is undefined for NaN). */
static inline float exp_approx(float x) {
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    float t = x * 1.44269504088896341f + shift;
    float n = t - shift;
    float r = x - n * 0.693359375f;          /* ln2 split in two for exact n * ln2_hi */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    /* the low mantissa bits of t hold n (two's complement, offset by the shift's 2^22 bit) */
    uint32_t scale_bits = ((bits - 0x4B400000u) + 127u) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/* tanh(x) = 2 sigmoid(2x) - 1: one exp, absolute error ~1e-7 (relative error grows near 0,
 * where the absolute one is what the gradients see). */
static inline float tanh_approx(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }

typedef struct {
    Py_buffer view;
    int held;
} Buf;

/* Borrow a writable (or read-only) C-contiguous float32 buffer of exactly `count` floats.
 * None gives a NULL buffer when `optional`. */
static int get_floats(PyObject* obj, const char* name, Py_ssize_t count, int writable,
                      int optional, Buf* out) {
    out->held = 0;
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_TypeError, "%s: a float32 buffer is required, got None", name);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &out->view, flags) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s: needs a C-contiguous%s float32 buffer (a numpy array or torch CPU "
                     "tensor .numpy())", name, writable ? ", writable" : "");
        return -1;
    }
    out->held = 1;
    if (out->view.itemsize != 4 || !is_float32_format(out->view.format)) {
        PyErr_Format(PyExc_TypeError, "%s: dtype must be float32 (buffer format '%s')", name,
                     out->view.format ? out->view.format : "?");
        return -1;
    }
    if (out->view.len != count * 4) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd float32 values, got %zd", name, count,
                     out->view.len / 4);
        return -1;
    }
    return 0;
}

static void release(Buf* bufs, int n) {
    for (int i = 0; i < n; i++)
        if (bufs[i].held) PyBuffer_Release(&bufs[i].view);
}

static float* data(Buf* b) { return b->held ? (float*)b->view.buf : NULL; }

/* Sizes from the gate buffer: B rows of 4H. */
static int rows_of(PyObject* gates, Py_ssize_t hidden, Py_ssize_t* rows) {
    if (hidden <= 0) {
        PyErr_Format(PyExc_ValueError, "hidden must be positive, got %zd", hidden);
        return -1;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(gates, &view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_SetString(PyExc_TypeError, "gates: needs a C-contiguous float32 buffer");
        return -1;
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (len % (16 * hidden) != 0) {
        PyErr_Format(PyExc_ValueError, "gates: %zd bytes is not a whole number of [4 * %zd] "
                     "float32 rows", len, hidden);
        return -1;
    }
    *rows = len / (16 * hidden);
    return 0;
}

static inline void forward_row(float* restrict gi, float* restrict gf, float* restrict gg,
                               float* restrict go, const float* restrict cp, float* restrict c,
                               float* restrict h, Py_ssize_t H) {
    for (Py_ssize_t j = 0; j < H; j++) {
        float i = sigmoid(gi[j]), f = sigmoid(gf[j]), g = tanh_approx(gg[j]);
        float o = sigmoid(go[j]);
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        float cj = f * cp[j] + i * g;
        c[j] = cj;
        h[j] = o * tanh_approx(cj);
    }
}

typedef struct {
    float* gates;                /* [B, 4H] */
    const float* c_prev;         /* forward: [B, H] */
    float *c_out, *h_out;        /* forward: [B, H] */
    float *h_next, *c_next;      /* forward: [B, H] or NULL */
    const float* keep;           /* [B] or NULL (all ones) */
    const float *c_cur, *dy;     /* backward: [B, H] */
    const float* dh_rec;         /* backward: [B, H] or NULL */
    float* dc_carry;             /* backward: [B, H] */
    float* bias_partials;        /* backward: [chunks, 4H] or NULL */
    Py_ssize_t H, chunk_rows;
} CellJob;

static void forward_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    const CellJob* job = (const CellJob*)arg;
    const Py_ssize_t H = job->H;
    for (Py_ssize_t b = lo; b < hi; b++) {
        float* gi = job->gates + b * 4 * H;
        float* c = job->c_out + b * H;
        float* h = job->h_out + b * H;
        forward_row(gi, gi + H, gi + 2 * H, gi + 3 * H, job->c_prev + b * H, c, h, H);
        if (job->h_next) {
            float k = job->keep ? job->keep[b] : 1.0f;
            float* hn = job->h_next + b * H;
            float* cn = job->c_next + b * H;
            for (Py_ssize_t j = 0; j < H; j++) {
                hn[j] = k * h[j];
                cn[j] = k * c[j];
            }
        }
    }
}

/* One row of the backward; `has_rec` is a constant at each call, so each call site compiles
 * to its own branch-free (vectorised) loop. */
static inline void backward_row(float* restrict gi, float* restrict gf, float* restrict gg,
                                float* restrict go, const float* restrict c,
                                const float* restrict cp, const float* restrict y,
                                const float* restrict r, const int has_rec, float k,
                                float* restrict dcc, Py_ssize_t H) {
    for (Py_ssize_t j = 0; j < H; j++) {
        float i = gi[j], f = gf[j], g = gg[j], o = go[j];
        float dh = has_rec ? y[j] + k * r[j] : y[j];
        float tc = tanh_approx(c[j]);
        float dc = k * dcc[j] + dh * o * (1.0f - tc * tc);
        gi[j] = dc * g * i * (1.0f - i);
        gf[j] = dc * cp[j] * f * (1.0f - f);
        gg[j] = dc * i * (1.0f - g * g);
        go[j] = dh * tc * o * (1.0f - o);
        dcc[j] = dc * f;
    }
}

static void backward_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    const CellJob* job = (const CellJob*)arg;
    const Py_ssize_t H = job->H;
    float* bias = job->bias_partials ? job->bias_partials + (lo / job->chunk_rows) * 4 * H : NULL;
    if (bias) memset(bias, 0, sizeof(float) * 4 * H);
    for (Py_ssize_t b = lo; b < hi; b++) {
        float* gi = job->gates + b * 4 * H;
        float k = job->keep ? job->keep[b] : 1.0f;
        const float *c = job->c_cur + b * H, *cp = job->c_prev + b * H, *y = job->dy + b * H;
        if (job->dh_rec)
            backward_row(gi, gi + H, gi + 2 * H, gi + 3 * H, c, cp, y, job->dh_rec + b * H, 1,
                         k, job->dc_carry + b * H, H);
        else
            backward_row(gi, gi + H, gi + 2 * H, gi + 3 * H, c, cp, y, NULL, 0, k,
                         job->dc_carry + b * H, H);
        if (bias)
            for (Py_ssize_t j = 0; j < 4 * H; j++) bias[j] += gi[j];
    }
}

static int threads_for(int threads, Py_ssize_t B, Py_ssize_t H) {
    if (threads < 1) threads = 1;
    return B * H >= CELL_THREAD_MIN_CELLS ? threads : 1;
}

static Py_ssize_t chunk_rows_for(Py_ssize_t H) {
    return CELL_CHUNK_CELLS / H > 0 ? CELL_CHUNK_CELLS / H : 1;
}

PyDoc_STRVAR(forward_doc,
"forward(gates, c_prev, c_out, h_out, h_next, c_next, keep, hidden, threads=1)\n--\n\n"
"One LSTM step's elementwise part for B rows. gates [B, 4H] (pre-activations, overwritten\n"
"with the activations i, f, g, o), c_prev [B, H]; writes c_out and h_out [B, H]. h_next and\n"
"c_next (both or neither; None = skip) receive keep * h and keep * c, keep being [B] or None\n"
"(all ones). Large batches are split over up to `threads` threads.");

static PyObject* lstm_forward(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *gates_o, *cprev_o, *cout_o, *hout_o, *hnext_o, *cnext_o, *keep_o;
    Py_ssize_t H, B;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOn|i:forward", &gates_o, &cprev_o, &cout_o, &hout_o,
                          &hnext_o, &cnext_o, &keep_o, &H, &threads))
        return NULL;
    if (rows_of(gates_o, H, &B) < 0) return NULL;
    if ((hnext_o == Py_None) != (cnext_o == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "h_next and c_next: pass both or neither");
        return NULL;
    }
    Buf b[7];
    memset(b, 0, sizeof b);
    PyObject* result = NULL;
    if (get_floats(gates_o, "gates", B * 4 * H, 1, 0, &b[0]) < 0 ||
        get_floats(cprev_o, "c_prev", B * H, 0, 0, &b[1]) < 0 ||
        get_floats(cout_o, "c_out", B * H, 1, 0, &b[2]) < 0 ||
        get_floats(hout_o, "h_out", B * H, 1, 0, &b[3]) < 0 ||
        get_floats(hnext_o, "h_next", B * H, 1, 1, &b[4]) < 0 ||
        get_floats(cnext_o, "c_next", B * H, 1, 1, &b[5]) < 0 ||
        get_floats(keep_o, "keep", B, 0, 1, &b[6]) < 0)
        goto done;
    CellJob job = {.gates = data(&b[0]), .c_prev = data(&b[1]), .c_out = data(&b[2]),
                   .h_out = data(&b[3]), .h_next = data(&b[4]), .c_next = data(&b[5]),
                   .keep = data(&b[6]), .H = H, .chunk_rows = chunk_rows_for(H)};
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(forward_range, &job, B, job.chunk_rows, threads_for(threads, B, H));
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release(b, 7);
    return result;
}

PyDoc_STRVAR(backward_doc,
"backward(gates, c, c_prev, dy, dh_rec, keep, dc_carry, d_bias, hidden, threads=1)\n--\n\n"
"One LSTM step's elementwise backward for B rows. gates [B, 4H] holds the forward's\n"
"activations and is overwritten with dL/d(pre-activations). c, c_prev, dy [B, H]; dh_rec\n"
"[B, H] or None: dL/dh from the next step, to be multiplied by keep ([B] or None = ones);\n"
"dc_carry [B, H]: in, dL/dc carried from the next step (also multiplied by keep); out,\n"
"dL/dc_prev. d_bias [4H] or None: the rows of dL/d(pre-activations) are added to it (in\n"
"an order that does not depend on `threads`).");

static PyObject* lstm_backward(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *gates_o, *c_o, *cprev_o, *dy_o, *dhrec_o, *keep_o, *dcc_o, *dbias_o;
    Py_ssize_t H, B;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOn|i:backward", &gates_o, &c_o, &cprev_o, &dy_o,
                          &dhrec_o, &keep_o, &dcc_o, &dbias_o, &H, &threads))
        return NULL;
    if (rows_of(gates_o, H, &B) < 0) return NULL;
    Buf b[8];
    memset(b, 0, sizeof b);
    PyObject* result = NULL;
    if (get_floats(gates_o, "gates", B * 4 * H, 1, 0, &b[0]) < 0 ||
        get_floats(c_o, "c", B * H, 0, 0, &b[1]) < 0 ||
        get_floats(cprev_o, "c_prev", B * H, 0, 0, &b[2]) < 0 ||
        get_floats(dy_o, "dy", B * H, 0, 0, &b[3]) < 0 ||
        get_floats(dhrec_o, "dh_rec", B * H, 0, 1, &b[4]) < 0 ||
        get_floats(keep_o, "keep", B, 0, 1, &b[5]) < 0 ||
        get_floats(dcc_o, "dc_carry", B * H, 1, 0, &b[6]) < 0 ||
        get_floats(dbias_o, "d_bias", 4 * H, 1, 1, &b[7]) < 0)
        goto done;
    CellJob job = {.gates = data(&b[0]), .c_cur = data(&b[1]), .c_prev = data(&b[2]),
                   .dy = data(&b[3]), .dh_rec = data(&b[4]), .keep = data(&b[5]),
                   .dc_carry = data(&b[6]), .H = H, .chunk_rows = chunk_rows_for(H)};
    float* d_bias = data(&b[7]);
    Py_ssize_t chunks = (B + job.chunk_rows - 1) / job.chunk_rows;
    if (d_bias && chunks > 0) {
        job.bias_partials = malloc(sizeof(float) * 4 * H * chunks);
        if (job.bias_partials == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(backward_range, &job, B, job.chunk_rows, threads_for(threads, B, H));
    if (job.bias_partials) {
        for (Py_ssize_t k = 0; k < chunks; k++)
            for (Py_ssize_t j = 0; j < 4 * H; j++) d_bias[j] += job.bias_partials[k * 4 * H + j];
        free(job.bias_partials);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release(b, 8);
    return result;
}

/* ---- bfloat16 products, float32 cell ------------------------------------------------------
 *
 * Under bfloat16 autocast the products run in bfloat16 (AMX/AVX512-BF16 through oneDNN) and
 * hand back bfloat16; the cell itself stays float32 (c, the activations, the carried dc, the
 * bias gradient). The bf16 passes below read the products' bfloat16 results, add the bias in
 * float32, and write what feeds the next products (h, dL/d(pre-activations)) as bfloat16,
 * rounded to nearest even as torch rounds. h only ever enters bfloat16 products (the next
 * step's h W_hh^T, the heads under autocast, the weight gradient), so storing it as bfloat16
 * loses nothing those products would keep. bfloat16 buffers arrive as int16 views (numpy has
 * no bfloat16). */

/* Columns per block of the bf16 passes' float32 scratch rows. */
#define BF16_BLOCK 64

static inline float bf16_to_float(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* Borrow a C-contiguous buffer of exactly `count` 2-byte values (an int16 view of a bfloat16
 * tensor). None gives a NULL buffer when `optional`. */
static int get_bf16(PyObject* obj, const char* name, Py_ssize_t count, int writable,
                    int optional, Buf* out) {
    out->held = 0;
    if (obj == Py_None) {
        if (optional) return 0;
        PyErr_Format(PyExc_TypeError, "%s: a bfloat16 buffer is required, got None", name);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &out->view, flags) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s: needs a C-contiguous%s bfloat16 buffer (a bfloat16 torch CPU tensor "
                     "as .view(torch.int16).numpy())", name, writable ? ", writable" : "");
        return -1;
    }
    out->held = 1;
    const char* f = out->view.format ? out->view.format : "?";
    if (f[0] == '@' || f[0] == '=' || f[0] == '<') f++;
    if (out->view.itemsize != 2 || (strcmp(f, "h") != 0 && strcmp(f, "H") != 0)) {
        PyErr_Format(PyExc_TypeError, "%s: expected bfloat16 bits as an int16 buffer (buffer "
                     "format '%s')", name, out->view.format ? out->view.format : "?");
        return -1;
    }
    if (out->view.len != count * 2) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bfloat16 values, got %zd", name, count,
                     out->view.len / 2);
        return -1;
    }
    return 0;
}

/* Rows from the float32 state buffer c_prev: B rows of H. */
static int rows_of_bf16(PyObject* c_prev, Py_ssize_t hidden, Py_ssize_t* rows) {
    Py_buffer view;
    if (PyObject_GetBuffer(c_prev, &view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_SetString(PyExc_TypeError, "c_prev: needs a C-contiguous float32 buffer");
        return -1;
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (len % (4 * hidden) != 0) {
        PyErr_Format(PyExc_ValueError, "c_prev: %zd bytes is not a whole number of [%zd] "
                     "float32 rows", len, hidden);
        return -1;
    }
    *rows = len / (4 * hidden);
    return 0;
}

static uint16_t* data16(Buf* b) { return b->held ? (uint16_t*)b->view.buf : NULL; }

typedef struct {
    const uint16_t *gx, *rec;    /* forward: [B, 4H] bfloat16 products (rec may be NULL) */
    const float* bias;           /* forward: [4H] */
    float* gates;                /* [B, 4H] float32 activations (written fwd, read bwd) */
    const float* c_prev;         /* [B, H] */
    float* c_out;                /* forward: [B, H] */
    uint16_t *h_out, *h_next;    /* forward: [B, H] bfloat16 (h_next may be NULL) */
    float* c_next;               /* forward: [B, H] or NULL */
    const float* keep;           /* [B] or NULL */
    const float* c_cur;          /* backward: [B, H] */
    const uint16_t *dy, *dh_rec; /* backward: [B, H] bfloat16 (dh_rec may be NULL) */
    float* dc_carry;             /* backward: [B, H] */
    uint16_t* d_pre;             /* backward: [B, 4H] bfloat16 out */
    float* bias_partials;        /* backward: [chunks, 4H] or NULL */
    Py_ssize_t H, chunk_rows;
} Bf16Job;

static void forward_bf16_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    const Bf16Job* job = (const Bf16Job*)arg;
    const Py_ssize_t H = job->H, G = 4 * H;
    /* one block of columns of the four gates at a time, through float32 scratch that stays in
     * L1: pre-activations, then the float32 pass's own row function (which gcc vectorises;
     * with bfloat16 loads and stores in the same loop gcc 12 leaves it scalar). Without a
     * gates buffer (rollouts: no backward) the activations never leave the scratch. */
    float pre[4][BF16_BLOCK], hf[BF16_BLOCK];
    for (Py_ssize_t b = lo; b < hi; b++) {
        const uint16_t* gx = job->gx + b * G;
        const uint16_t* rec = job->rec ? job->rec + b * G : NULL;
        float* c = job->c_out + b * H;
        const float* cp = job->c_prev + b * H;
        uint16_t* h = job->h_out + b * H;
        for (Py_ssize_t j0 = 0; j0 < H; j0 += BF16_BLOCK) {
            const Py_ssize_t n = H - j0 < BF16_BLOCK ? H - j0 : BF16_BLOCK;
            for (int q = 0; q < 4; q++) {
                const Py_ssize_t at = q * H + j0;
                float* restrict dst = job->gates ? job->gates + b * G + at : pre[q];
                const uint16_t* restrict x = gx + at;
                const float* restrict bias = job->bias + at;
                if (rec) {
                    const uint16_t* restrict r = rec + at;
                    for (Py_ssize_t jj = 0; jj < n; jj++)
                        dst[jj] = bf16_to_float(x[jj]) + bf16_to_float(r[jj]) + bias[jj];
                } else {
                    for (Py_ssize_t jj = 0; jj < n; jj++) dst[jj] = bf16_to_float(x[jj]) + bias[jj];
                }
            }
            if (job->gates) {
                float* row = job->gates + b * G + j0;
                forward_row(row, row + H, row + 2 * H, row + 3 * H, cp + j0, c + j0, hf, n);
            } else {
                forward_row(pre[0], pre[1], pre[2], pre[3], cp + j0, c + j0, hf, n);
            }
            uint16_t* restrict hb = h + j0;
            for (Py_ssize_t jj = 0; jj < n; jj++) hb[jj] = float_to_bf16(hf[jj]);
        }
        if (job->h_next) {
            float k = job->keep ? job->keep[b] : 1.0f;
            uint16_t* restrict hn = job->h_next + b * H;
            float* restrict cn = job->c_next + b * H;
            if (k == 1.0f) {
                memcpy(hn, h, sizeof(uint16_t) * H);
                memcpy(cn, c, sizeof(float) * H);
            } else {
                for (Py_ssize_t j = 0; j < H; j++) {
                    hn[j] = float_to_bf16(k * bf16_to_float(h[j]));
                    cn[j] = k * c[j];
                }
            }
        }
    }
}

static void backward_bf16_range(void* arg, Py_ssize_t lo, Py_ssize_t hi) {
    const Bf16Job* job = (const Bf16Job*)arg;
    const Py_ssize_t H = job->H, G = 4 * H;
    float* bias = job->bias_partials ? job->bias_partials + (lo / job->chunk_rows) * G : NULL;
    if (bias) memset(bias, 0, sizeof(float) * G);
    for (Py_ssize_t b = lo; b < hi; b++) {
        float* act = job->gates + b * G;
        const float *restrict c = job->c_cur + b * H, *restrict cp = job->c_prev + b * H;
        const uint16_t* restrict y = job->dy + b * H;
        const uint16_t* restrict r = job->dh_rec ? job->dh_rec + b * H : NULL;
        float* restrict dcc = job->dc_carry + b * H;
        uint16_t* restrict dp = job->d_pre + b * G;
        float k = job->keep ? job->keep[b] : 1.0f;
        float dh[BF16_BLOCK];
        for (Py_ssize_t j0 = 0; j0 < H; j0 += BF16_BLOCK) {
            const Py_ssize_t n = H - j0 < BF16_BLOCK ? H - j0 : BF16_BLOCK;
            for (Py_ssize_t jj = 0; jj < n; jj++) dh[jj] = bf16_to_float(y[j0 + jj]);
            if (r)
                for (Py_ssize_t jj = 0; jj < n; jj++) dh[jj] += k * bf16_to_float(r[j0 + jj]);
            /* the float32 pass's row function, dh already holding dy + k * dh_rec: it
             * overwrites the block's activations with the float32 d_pre */
            backward_row(act + j0, act + H + j0, act + 2 * H + j0, act + 3 * H + j0, c + j0,
                         cp + j0, dh, NULL, 0, k, dcc + j0, n);
            for (int q = 0; q < 4; q++) {
                uint16_t* restrict out = dp + q * H + j0;
                const float* restrict dq = act + q * H + j0;
                for (Py_ssize_t jj = 0; jj < n; jj++) out[jj] = float_to_bf16(dq[jj]);
                if (bias) {
                    float* restrict bq = bias + q * H + j0;
                    for (Py_ssize_t jj = 0; jj < n; jj++) bq[jj] += dq[jj];
                }
            }
        }
    }
}

PyDoc_STRVAR(forward_bf16_doc,
"forward_bf16(gx, rec, bias, gates, c_prev, c_out, h_out, h_next, c_next, keep, hidden,\n"
"             threads=1)\n--\n\n"
"One LSTM step's elementwise part for B rows, from bfloat16 products. gx [B, 4H] (x W_ih^T)\n"
"and rec [B, 4H] (h W_hh^T, or None for a zero state) are bfloat16 (int16 views); bias [4H]\n"
"and c_prev [B, H] float32 (B is read from c_prev). Writes the activations i, f, g, o into\n"
"gates [B, 4H] float32 (None: not kept), c_out [B, H] float32 and h_out [B, H] bfloat16. h_next (bfloat16) and c_next (float32), both or neither, receive\n"
"keep * h and keep * c, keep being [B] float32 or None (all ones).");

static PyObject* lstm_forward_bf16(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *gx_o, *rec_o, *bias_o, *gates_o, *cprev_o, *cout_o, *hout_o, *hnext_o, *cnext_o,
        *keep_o;
    Py_ssize_t H, B;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOn|i:forward_bf16", &gx_o, &rec_o, &bias_o, &gates_o,
                          &cprev_o, &cout_o, &hout_o, &hnext_o, &cnext_o, &keep_o, &H, &threads))
        return NULL;
    if (H <= 0) {
        PyErr_Format(PyExc_ValueError, "hidden must be positive, got %zd", H);
        return NULL;
    }
    if (rows_of_bf16(cprev_o, H, &B) < 0) return NULL;
    if ((hnext_o == Py_None) != (cnext_o == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "h_next and c_next: pass both or neither");
        return NULL;
    }
    Buf b[10];
    memset(b, 0, sizeof b);
    PyObject* result = NULL;
    if (get_bf16(gx_o, "gx", B * 4 * H, 0, 0, &b[0]) < 0 ||
        get_bf16(rec_o, "rec", B * 4 * H, 0, 1, &b[1]) < 0 ||
        get_floats(bias_o, "bias", 4 * H, 0, 0, &b[2]) < 0 ||
        get_floats(gates_o, "gates", B * 4 * H, 1, 1, &b[3]) < 0 ||
        get_floats(cprev_o, "c_prev", B * H, 0, 0, &b[4]) < 0 ||
        get_floats(cout_o, "c_out", B * H, 1, 0, &b[5]) < 0 ||
        get_bf16(hout_o, "h_out", B * H, 1, 0, &b[6]) < 0 ||
        get_bf16(hnext_o, "h_next", B * H, 1, 1, &b[7]) < 0 ||
        get_floats(cnext_o, "c_next", B * H, 1, 1, &b[8]) < 0 ||
        get_floats(keep_o, "keep", B, 0, 1, &b[9]) < 0)
        goto done;
    Bf16Job job = {.gx = data16(&b[0]), .rec = data16(&b[1]), .bias = data(&b[2]),
                   .gates = data(&b[3]), .c_prev = data(&b[4]), .c_out = data(&b[5]),
                   .h_out = data16(&b[6]), .h_next = data16(&b[7]), .c_next = data(&b[8]),
                   .keep = data(&b[9]), .H = H, .chunk_rows = chunk_rows_for(H)};
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(forward_bf16_range, &job, B, job.chunk_rows, threads_for(threads, B, H));
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release(b, 10);
    return result;
}

PyDoc_STRVAR(backward_bf16_doc,
"backward_bf16(gates, c, c_prev, dy, dh_rec, keep, dc_carry, d_bias, d_pre, hidden,\n"
"              threads=1)\n--\n\n"
"One LSTM step's elementwise backward for B rows, for bfloat16 products. gates [B, 4H]\n"
"float32 holds the forward's activations and is overwritten with the float32 d_pre.\n"
"c, c_prev [B, H] float32; dy [B, H] and dh_rec [B, H] (or None) bfloat16, dh_rec multiplied by keep ([B] or None = ones);\n"
"dc_carry [B, H] float32 in/out as in backward(). Writes dL/d(pre-activations) into d_pre\n"
"[B, 4H] bfloat16; d_bias [4H] float32 (or None) gets their float32 rows added (in an order\n"
"that does not depend on `threads`).");

static PyObject* lstm_backward_bf16(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *gates_o, *c_o, *cprev_o, *dy_o, *dhrec_o, *keep_o, *dcc_o, *dbias_o, *dpre_o;
    Py_ssize_t H, B;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOn|i:backward_bf16", &gates_o, &c_o, &cprev_o, &dy_o,
                          &dhrec_o, &keep_o, &dcc_o, &dbias_o, &dpre_o, &H, &threads))
        return NULL;
    if (rows_of(gates_o, H, &B) < 0) return NULL;
    Buf b[9];
    memset(b, 0, sizeof b);
    PyObject* result = NULL;
    if (get_floats(gates_o, "gates", B * 4 * H, 1, 0, &b[0]) < 0 ||
        get_floats(c_o, "c", B * H, 0, 0, &b[1]) < 0 ||
        get_floats(cprev_o, "c_prev", B * H, 0, 0, &b[2]) < 0 ||
        get_bf16(dy_o, "dy", B * H, 0, 0, &b[3]) < 0 ||
        get_bf16(dhrec_o, "dh_rec", B * H, 0, 1, &b[4]) < 0 ||
        get_floats(keep_o, "keep", B, 0, 1, &b[5]) < 0 ||
        get_floats(dcc_o, "dc_carry", B * H, 1, 0, &b[6]) < 0 ||
        get_floats(dbias_o, "d_bias", 4 * H, 1, 1, &b[7]) < 0 ||
        get_bf16(dpre_o, "d_pre", B * 4 * H, 1, 0, &b[8]) < 0)
        goto done;
    Bf16Job job = {.gates = data(&b[0]), .c_cur = data(&b[1]), .c_prev = data(&b[2]),
                   .dy = data16(&b[3]), .dh_rec = data16(&b[4]), .keep = data(&b[5]),
                   .dc_carry = data(&b[6]), .d_pre = data16(&b[8]), .H = H,
                   .chunk_rows = chunk_rows_for(H)};
    float* d_bias = data(&b[7]);
    Py_ssize_t chunks = (B + job.chunk_rows - 1) / job.chunk_rows;
    if (d_bias && chunks > 0) {
        job.bias_partials = malloc(sizeof(float) * 4 * H * chunks);
        if (job.bias_partials == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    parallel_chunks(backward_bf16_range, &job, B, job.chunk_rows, threads_for(threads, B, H));
    if (job.bias_partials) {
        for (Py_ssize_t k = 0; k < chunks; k++)
            for (Py_ssize_t j = 0; j < 4 * H; j++) d_bias[j] += job.bias_partials[k * 4 * H + j];
        free(job.bias_partials);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    release(b, 9);
    return result;
}

static PyMethodDef lstm_methods[] = {
    {"forward", lstm_forward, METH_VARARGS, forward_doc},
    {"backward", lstm_backward, METH_VARARGS, backward_doc},
    {"forward_bf16", lstm_forward_bf16, METH_VARARGS, forward_bf16_doc},
    {"backward_bf16", lstm_backward_bf16, METH_VARARGS, backward_bf16_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lstm_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_lstm_cell",
    .m_doc = "The LSTM cell's elementwise forward and backward, one pass per step, on the CPU.",
    .m_size = -1,
    .m_methods = lstm_methods,
};

PyMODINIT_FUNC PyInit__lstm_cell(void) { return PyModule_Create(&lstm_module); }
