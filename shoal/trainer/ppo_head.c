/* ppo_head.c: the PPO loss from a categorical policy's logits and the value head's outputs
 * onward, and its gradient, in two passes over the minibatch's rows (shoal.trainer._ppo_head;
 * shoal/trainer/loss_head.py is its Python side and says when the trainer uses it).
 *
 * Why: for a small policy the loss's own arithmetic is a few thousand rows of a few logits,
 * but written as torch ops it is ~100 small ops forward and as many in autograd's backward,
 * each a dispatch and an allocation: a fifth of the learner's update for breakout's MLP
 * (BENCHMARKS.md, "The learner's Python: the loss head in C"). Here the gradient with respect to the logits
 * and values is written out by hand (loss_head.py derives it) and computed in the same pass as
 * the loss.
 *
 *   ratios(logits, actions, old_logp, groups, offset, logratio_out, ratio_out, entropy_out)
 *   loss(...)  -> (policy, value, entropy, approx_kl, clipfrac, ratio), gradients written out
 *
 * Rows are independent; every sum over rows runs in row order in double precision, so the
 * results do not depend on anything but the inputs. Both calls release the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "buffer_format.h"

/* ---- argument checks ---- */

/* A C-contiguous buffer of `items` float32 (kind 'f') or int64 (kind 'i') values, any shape.
 * On failure: a Python error naming the argument and the fix, view released. */
static int get_array(PyObject* obj, const char* name, char kind, int writable, Py_ssize_t items,
                     Py_buffer* view) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    const char* type = kind == 'f' ? "float32" : "int64";
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "ppo_head: '%s' must be a %sC-contiguous %s array "
                     "(np.ascontiguousarray(x, dtype=np.%s)), got %R",
                     name, writable ? "writable " : "", type, type, Py_TYPE(obj));
        return -1;
    }
    int ok = kind == 'f' ? (is_float32_format(view->format) && view->itemsize == 4)
                         : is_int64_format(view->format, view->itemsize);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "ppo_head: '%s' must have dtype %s, got buffer format '%s'",
                     name, type, view->format);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->len / view->itemsize != items) {
        PyErr_Format(PyExc_ValueError, "ppo_head: '%s' has %zd values but must have %zd",
                     name, view->len / view->itemsize, items);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The buffers a call holds, released together. */
typedef struct {
    Py_buffer views[20];
    int held;
} Held;

static int hold(Held* h, PyObject* obj, const char* name, char kind, int writable,
                Py_ssize_t items, void** data) {
    if (get_array(obj, name, kind, writable, items, &h->views[h->held]) != 0) return -1;
    *data = h->views[h->held].buf;
    h->held++;
    return 0;
}

static void release(Held* h) {
    while (h->held > 0) PyBuffer_Release(&h->views[--h->held]);
}

/* How many items a C-contiguous buffer holds (-1 with a Python error if it has none). */
static Py_ssize_t buffer_items(PyObject* obj, const char* name) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "ppo_head: '%s' must be a C-contiguous array, got %R",
                     name, Py_TYPE(obj));
        return -1;
    }
    Py_ssize_t items = view.itemsize > 0 ? view.len / view.itemsize : 0;
    PyBuffer_Release(&view);
    return items;
}

/* The choices per softmax group of logits holding `values` floats for n rows of `groups`
 * groups, or -1 with a Python error when that is not a whole number from 1 to 65536. */
static int choices_per_group(Py_ssize_t values, Py_ssize_t n, int groups) {
    if (n == 0 || values % (n * groups) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "ppo_head: logits hold %zd values, not a whole number (>= 1) of choices "
                     "for %zd rows of %d groups", values, n, groups);
        return -1;
    }
    if (values / (n * groups) > 65536) {
        PyErr_Format(PyExc_ValueError, "ppo_head: %zd choices per group is more than 65536",
                     values / (n * groups));
        return -1;
    }
    return (int)(values / (n * groups));
}

/* ---- one row's softmax groups ---- */

/* One softmax group z[0..n): writes its log-sum-exp to *lse and returns its entropy. With
 * d_j = z_j - max z and s = sum exp(d_j): lse = max z + log s, and the entropy -sum p_j log p_j
 * = log s - sum exp(d_j) d_j / s, which keeps its digits when the group is near-certain (s and
 * both terms near 1 and 0). */
static inline float softmax_group(const float* z, int n, float* lse) {
    float m = z[0];
    for (int j = 1; j < n; j++) m = z[j] > m ? z[j] : m;
    float s = 0.0f, sd = 0.0f;
    for (int j = 0; j < n; j++) {
        const float d = z[j] - m, e = expf(d);
        s += e;
        sd += e * d;
    }
    const float log_s = logf(s);
    *lse = m + log_s;
    return log_s - sd / s;
}

/* Sets *bad (the first bad row + 1) when an action is outside [0, n). */
static inline int64_t action_of(const int64_t* actions, Py_ssize_t k, int64_t offset, int n,
                                Py_ssize_t row, Py_ssize_t* bad) {
    int64_t a = actions[k] - offset;
    if (a < 0 || a >= n) {
        if (*bad == 0) *bad = row + 1;
        return 0;
    }
    return a;
}

static int report_bad_action(Py_ssize_t bad, const int64_t* actions, int groups, int64_t offset,
                             int choices) {
    if (bad == 0) return 0;
    Py_ssize_t row = bad - 1;
    for (int g = 0; g < groups; g++) {
        int64_t a = actions[row * groups + g];
        if (a - offset < 0 || a - offset >= choices) {
            PyErr_Format(PyExc_ValueError,
                         "ppo_head: row %zd holds action %lld, outside the action space's "
                         "[%lld, %lld): the stored actions do not belong to this policy's "
                         "action space", row, (long long)a, (long long)offset,
                         (long long)(offset + choices));
            return -1;
        }
    }
    return 0;
}

/* ---- ratios() ---- */

PyDoc_STRVAR(ratios_doc,
"ratios(logits, actions, old_logp, groups, offset, logratio_out, ratio_out, entropy_out,\n"
"       lse_out)\n\n"
"For N rows of `groups` softmax groups of equally many choices: logits float32 [N, groups *\n"
"choices], actions int64 [N, groups] (offset subtracted: Discrete's start), old_logp float32\n"
"[N]. Writes logratio = sum of the chosen log-probabilities - old_logp, ratio = exp(logratio)\n"
"and the entropy summed over the groups, each float32 [N], and each group's log-sum-exp of\n"
"the logits, float32 [N, groups] (for loss()). Raises ValueError for an action\n"
"outside [offset, offset + choices).");

static PyObject* ppo_head_ratios(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *logits_obj, *actions_obj, *old_obj, *logratio_obj, *ratio_obj, *entropy_obj,
        *lse_obj;
    int groups;
    long long offset_ll;
    if (!PyArg_ParseTuple(args, "OOOiLOOOO:ratios", &logits_obj, &actions_obj, &old_obj, &groups,
                          &offset_ll, &logratio_obj, &ratio_obj, &entropy_obj, &lse_obj)) {
        return NULL;
    }
    if (groups < 1) {
        PyErr_Format(PyExc_ValueError, "ppo_head: groups=%d must be >= 1", groups);
        return NULL;
    }
    Held h = {.held = 0};
    PyObject* result = NULL;
    {
        /* N = old_logp's length, the choices per group from the logits' */
        Py_ssize_t n = buffer_items(old_obj, "old_logp");
        Py_ssize_t values = n < 0 ? -1 : buffer_items(logits_obj, "logits");
        if (values < 0) return NULL;
        if (n == 0 && values == 0) return Py_NewRef(Py_None);
        const int choices = choices_per_group(values, n, groups);
        if (choices < 0) return NULL;
        const float *logits, *old;
        const int64_t* actions;
        float *logratio, *ratio, *entropy, *lse_all;
        if (hold(&h, logits_obj, "logits", 'f', 0, n * groups * choices, (void**)&logits)
            || hold(&h, actions_obj, "actions", 'i', 0, n * groups, (void**)&actions)
            || hold(&h, old_obj, "old_logp", 'f', 0, n, (void**)&old)
            || hold(&h, logratio_obj, "logratio_out", 'f', 1, n, (void**)&logratio)
            || hold(&h, ratio_obj, "ratio_out", 'f', 1, n, (void**)&ratio)
            || hold(&h, entropy_obj, "entropy_out", 'f', 1, n, (void**)&entropy)
            || hold(&h, lse_obj, "lse_out", 'f', 1, n * groups, (void**)&lse_all)) {
            goto done;
        }
        const int64_t offset = (int64_t)offset_ll;
        const int width = groups * choices;
        Py_ssize_t bad = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            const float* zi = logits + i * width;
            float logp = 0.0f, h_row = 0.0f;
            for (int g = 0; g < groups; g++) {
                const float* z = zi + g * choices;
                float* lse = lse_all + i * groups + g;
                h_row += softmax_group(z, choices, lse);
                logp += z[action_of(actions, i * groups + g, offset, choices, i, &bad)] - *lse;
            }
            logratio[i] = logp - old[i];
            ratio[i] = expf(logratio[i]);
            entropy[i] = h_row;
        }
        Py_END_ALLOW_THREADS
        if (report_bad_action(bad, actions, groups, offset, choices) != 0) goto done;
        result = Py_NewRef(Py_None);
    }
done:
    release(&h);
    return result;
}

/* ---- loss() ---- */

/* probabilities a row's group keeps between its two passes (more choices: computed twice) */
#define PROBS_KEPT 32

/* d maximum(a, b) / d a, as torch's maximum backward splits ties. */
static inline float max_grad(float a, float b) { return a > b ? 1.0f : (a == b ? 0.5f : 0.0f); }

PyDoc_STRVAR(loss_doc,
"loss(logits, actions, groups, offset, ratio, logratio, entropy, lse, new_values, old_values,\n"
"     horizon, returns, advantages, masks, segment_weights, collector_ratio, adv_mean,\n"
"     adv_scale, count, clip_coef, weight_cap, collector_clip, vf_clip_coef, vf_coef,\n"
"     ent_coef, grad_logits_out, grad_values_out)\n"
"  -> (policy, value, entropy, approx_kl, clipfrac, ratio)\n\n"
"The PPO loss terms of N = segments x horizon rows (shoal.trainer.ppo.ppo_loss's formula) and\n"
"the gradient of policy + vf_coef * value - ent_coef * entropy with respect to the logits\n"
"(lse: each group's log-sum-exp, from ratios())\n"
"[N, groups * choices] and the new values [N]. old_values is float32 [segments, horizon + 1]\n"
"(the bootstrap column is skipped); segment_weights float32 [segments]; collector_ratio None\n"
"or float32 [N] (a stale batch: its weights and clip window, shoal.trainer.stale_batch).\n"
"Advantages are normalised as (a - adv_mean) / adv_scale. Rows with masks <= 0 count for\n"
"nothing; means divide by count.");

static PyObject* ppo_head_loss(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *logits_obj, *actions_obj, *ratio_obj, *logratio_obj, *entropy_obj, *lse_obj, *new_v_obj,
        *old_v_obj, *returns_obj, *adv_obj, *masks_obj, *seg_w_obj, *collector_obj,
        *grad_logits_obj, *grad_values_obj;
    int groups;
    long long offset_ll;
    Py_ssize_t horizon;
    float adv_mean, adv_scale, count, weight_cap, vf_clip_coef, vf_coef, ent_coef;
    double clip_coef, collector_clip;  /* Python floats, rounded below as torch rounds them */
    if (!PyArg_ParseTuple(args, "OOiLOOOOOOnOOOOOfffdfdfffOO:loss", &logits_obj, &actions_obj,
                          &groups, &offset_ll, &ratio_obj, &logratio_obj, &entropy_obj, &lse_obj,
                          &new_v_obj, &old_v_obj, &horizon, &returns_obj, &adv_obj, &masks_obj,
                          &seg_w_obj, &collector_obj, &adv_mean, &adv_scale, &count, &clip_coef,
                          &weight_cap, &collector_clip, &vf_clip_coef, &vf_coef, &ent_coef,
                          &grad_logits_obj, &grad_values_obj)) {
        return NULL;
    }
    if (groups < 1 || horizon < 1) {
        PyErr_Format(PyExc_ValueError, "ppo_head: groups=%d and horizon=%zd must be >= 1",
                     groups, horizon);
        return NULL;
    }
    if (!(count > 0.0f) || !(adv_scale > 0.0f) || !(clip_coef >= 0.0)
        || !(weight_cap >= 0.0f) || !(collector_clip >= 0.0)) {
        char message[240];   /* (PyErr_Format has no %g) */
        snprintf(message, sizeof message,
                 "ppo_head: count=%g and adv_scale=%g must be > 0, clip_coef=%g, weight_cap=%g "
                 "and collector_clip=%g >= 0", (double)count, (double)adv_scale, clip_coef,
                 (double)weight_cap, collector_clip);
        PyErr_SetString(PyExc_ValueError, message);
        return NULL;
    }
    /* N from the ratio's length, the choices per group from the logits' */
    const Py_ssize_t n = buffer_items(ratio_obj, "ratio");
    const Py_ssize_t logit_values = n < 0 ? -1 : buffer_items(logits_obj, "logits");
    if (logit_values < 0) return NULL;
    if (n % horizon != 0) {
        PyErr_Format(PyExc_ValueError, "ppo_head: %zd rows are not whole segments of horizon %zd",
                     n, horizon);
        return NULL;
    }
    const Py_ssize_t segments = n / horizon;
    const int choices = choices_per_group(logit_values, n, groups);
    if (choices < 0) return NULL;
    const int width = groups * choices;

    Held h = {.held = 0};
    PyObject* result = NULL;
    const float *logits, *ratio, *logratio, *entropy, *lse_all, *new_v, *old_v, *returns, *adv, *masks,
        *seg_w, *collector = NULL;
    const int64_t* actions;
    float *grad_logits, *grad_values;
    if (hold(&h, logits_obj, "logits", 'f', 0, n * width, (void**)&logits)
        || hold(&h, actions_obj, "actions", 'i', 0, n * groups, (void**)&actions)
        || hold(&h, ratio_obj, "ratio", 'f', 0, n, (void**)&ratio)
        || hold(&h, logratio_obj, "logratio", 'f', 0, n, (void**)&logratio)
        || hold(&h, entropy_obj, "entropy", 'f', 0, n, (void**)&entropy)
        || hold(&h, lse_obj, "lse", 'f', 0, n * groups, (void**)&lse_all)
        || hold(&h, new_v_obj, "new_values", 'f', 0, n, (void**)&new_v)
        || hold(&h, old_v_obj, "old_values", 'f', 0, segments * (horizon + 1), (void**)&old_v)
        || hold(&h, returns_obj, "returns", 'f', 0, n, (void**)&returns)
        || hold(&h, adv_obj, "advantages", 'f', 0, n, (void**)&adv)
        || hold(&h, masks_obj, "masks", 'f', 0, n, (void**)&masks)
        || hold(&h, seg_w_obj, "segment_weights", 'f', 0, segments, (void**)&seg_w)
        || (collector_obj != Py_None
            && hold(&h, collector_obj, "collector_ratio", 'f', 0, n, (void**)&collector))
        || hold(&h, grad_logits_obj, "grad_logits_out", 'f', 1, n * width, (void**)&grad_logits)
        || hold(&h, grad_values_obj, "grad_values_out", 'f', 1, n, (void**)&grad_values)) {
        goto done;
    }
    const int64_t offset = (int64_t)offset_ll;
    double sum_pg = 0.0, sum_v = 0.0, sum_ent = 0.0, sum_kl = 0.0, sum_clip = 0.0, sum_r = 0.0;
    Py_ssize_t bad = 0;
    Py_BEGIN_ALLOW_THREADS
    const float inv = 1.0f / count;
    /* each bound computed in double and rounded once, as torch rounds a Python scalar */
    const float lo = (float)(1.0 - clip_coef), hi = (float)(1.0 + clip_coef);
    const float clip = (float)clip_coef;
    const float stale_lo = (float)(1.0 - collector_clip * clip_coef);
    const float stale_hi = (float)(1.0 + collector_clip * clip_coef);
    const float tiny = 1.17549435e-38f;
    Py_ssize_t seg = 0, t = -1;   /* row i is step t of segment seg */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (++t == horizon) {
            t = 0;
            seg++;
        }
        float* gz = grad_logits + i * width;
        if (!(masks[i] > 0.0f)) {
            memset(gz, 0, sizeof(float) * (size_t)width);
            grad_values[i] = 0.0f;
            continue;
        }
        const float r = ratio[i];
        /* the policy term: weighted advantage, the clipped surrogate, its slope in r */
        float aw = ((adv[i] - adv_mean) / adv_scale) * seg_w[seg];
        float clipped, dclip;
        if (collector == NULL) {
            clipped = r < lo ? lo : (r > hi ? hi : r);
            dclip = (r >= lo && r <= hi) ? 1.0f : 0.0f;
        } else {
            const float c = collector[i];
            aw = aw * (c < weight_cap ? c : weight_cap);
            const float rc = 1.0f / (c > tiny ? c : tiny);
            float low = rc * stale_lo, high = rc * stale_hi;
            low = low < lo ? lo : low;
            high = high > hi ? hi : high;
            const float above = r > low ? r : low;
            clipped = above < high ? above : high;
            dclip = max_grad(r, low) * max_grad(high, above);
        }
        const float neg = -aw;
        const float pg1 = neg * r, pg2 = neg * clipped;
        sum_pg += (double)(pg1 > pg2 ? pg1 : pg2);
        const float g_r = inv * (max_grad(pg1, pg2) * neg + max_grad(pg2, pg1) * neg * dclip);
        const float g_logp = g_r * r;
        const float g_ent = ent_coef * inv;
        /* d/dz of the chosen log-probability and of -ent_coef * entropy, group by group */
        for (int g = 0; g < groups; g++) {
            const float* z = logits + i * width + g * choices;
            float* dz = gz + g * choices;
            const float lse = lse_all[i * groups + g];
            /* the group's probabilities (kept for the second pass when few) and entropy */
            float kept[PROBS_KEPT];
            float hg = 0.0f;
            for (int j = 0; j < choices; j++) {
                const float p = expf(z[j] - lse);
                if (j < PROBS_KEPT) kept[j] = p;
                hg -= p * (z[j] - lse);
            }
            const int64_t a = action_of(actions, i * groups + g, offset, choices, i, &bad);
            for (int j = 0; j < choices; j++) {
                const float l = z[j] - lse, p = j < PROBS_KEPT ? kept[j] : expf(l);
                /* the chosen action's 1 - p as -expm1(l), not a difference of p from 1 */
                const float slope = j == a ? -expm1f(l) : -p;
                dz[j] = g_logp * slope + g_ent * p * (l + hg);
            }
        }
        /* the value term */
        const float v = new_v[i], ret = returns[i];
        const float ov = old_v[seg * (horizon + 1) + t];
        const float e1 = (v - ret) * (v - ret);
        float dv = 2.0f * (v - ret), err = e1;
        if (vf_clip_coef > 0.0f) {
            const float d = v - ov;
            const float dc = d < -vf_clip_coef ? -vf_clip_coef : (d > vf_clip_coef ? vf_clip_coef : d);
            const float cl = ov + dc;
            const float e2 = (cl - ret) * (cl - ret);
            const float in_window = (d >= -vf_clip_coef && d <= vf_clip_coef) ? 1.0f : 0.0f;
            dv = max_grad(e1, e2) * dv + max_grad(e2, e1) * 2.0f * (cl - ret) * in_window;
            err = e1 > e2 ? e1 : e2;
        }
        sum_v += (double)err;
        grad_values[i] = vf_coef * 0.5f * inv * dv;
        sum_ent += (double)entropy[i];
        sum_kl += (double)((r - 1.0f) - logratio[i]);
        sum_clip += fabsf(r - 1.0f) > clip ? 1.0 : 0.0;
        sum_r += (double)r;
    }
    Py_END_ALLOW_THREADS
    if (report_bad_action(bad, actions, groups, offset, choices) != 0) goto done;
    const double c = (double)count;
    result = Py_BuildValue("(dddddd)", sum_pg / c, 0.5 * (sum_v / c), sum_ent / c, sum_kl / c,
                           sum_clip / c, sum_r / c);
done:
    release(&h);
    return result;
}

static PyMethodDef ppo_head_methods[] = {
    {"ratios", ppo_head_ratios, METH_VARARGS, ratios_doc},
    {"loss", ppo_head_loss, METH_VARARGS, loss_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef ppo_head_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_ppo_head",
    .m_doc = "The PPO loss of a categorical policy from its logits on, with its gradient.",
    .m_size = -1,
    .m_methods = ppo_head_methods,
};

PyMODINIT_FUNC PyInit__ppo_head(void) { return PyModule_Create(&ppo_head_module); }
