/* vec_binding.h: the generic CPython module shared by every shoal C env.
 *
 * An env's binding.c includes its header and binding.h, defines the names below, then includes
 * this file:
 *
 *   #define Env        MyEnv             the env struct (see shoal_env.h for its required fields)
 *   #define OBS_TYPE   uint8_t           element type of observations ('B') or float ('f')
 *   #define ACT_TYPE   int32_t           element type of actions: int32_t ('i') or float ('f')
 *   #define OBS_SIZE(env)   ...          observation elements per agent
 *   #define NUM_AGENTS(env) ...          agents (buffer rows) per env
 *   #define RENDER_HEIGHT(env) / RENDER_WIDTH(env)   pixels of the RGB frame
 *   static const char* LOG_NAMES[] = {...};   one name per Log field before `n`
 *   static int  my_init(Env* env, PyObject* params);   read params (a dict), allocate; 0 or -1
 *   static void c_reset(Env* env);  c_step(Env* env);  c_close(Env* env);
 *   static int  c_render_text(Env* env, char* buf, int cap);   returns the length written
 *   static void c_render_rgb(Env* env, uint8_t* rgb);          RENDER_HEIGHT x RENDER_WIDTH x 3
 *   optional: #define HAS_STATE and static PyObject* my_state(Env* env)   (a dict, for tests)
 *   optional: #define ACTION_MASK   the env has a `uint8_t* action_masks` field (its rows of the
 *             caller's action-mask buffer: one byte per logit, sum(nvec) per agent, 1 = the
 *             action is valid) and writes every entry on each reset and step, for the
 *             observation it wrote; the spec says action_mask=True. Without it nothing changes.
 *   optional: #define ENV_HEAP(X) X(field, count) ...   every array the env mallocs, with its
 *             element count as an expression of `env`; snapshots (vec_save/vec_load) copy the
 *             struct and these arrays, so an env with heap memory must list all of it here
 *   static int c_validate(const Env* env, const Env* made, ShoalCheck* check);   what a loaded
 *             snapshot's fields may hold (shoal_env.h, "snapshot validation"): vec_load refuses
 *             a snapshot unless every env passes it
 *
 * The module it builds is called "_c" and holds a vector of envs over caller-owned buffers, plus a
 * small pthread pool so that shards of that vector step on worker threads while Python (holding
 * nothing: every step releases the GIL) runs the policy on another shard.
 */
#ifndef SHOAL_VEC_BINDING_H
#define SHOAL_VEC_BINDING_H

#include <pthread.h>

#include "binding.h"

#ifndef c_validate
#error "define c_validate: the env's snapshot validation (docs/envs.md, \"Snapshots\")"
#endif

#define SHOAL_MAX_GROUPS 16
#define SHOAL_SYNC_GROUP (SHOAL_MAX_GROUPS - 1) /* reserved for vec_step */
#define SHOAL_LOG_FIELDS ((int)(sizeof(Log) / sizeof(float)))
_Static_assert(sizeof(Log) % sizeof(float) == 0, "Log must hold only floats, with n last");
_Static_assert(sizeof(LOG_NAMES) / sizeof(LOG_NAMES[0]) == sizeof(Log) / sizeof(float) - 1,
               "LOG_NAMES must name every Log field but the trailing n");

typedef struct ShoalVec ShoalVec;

typedef struct {
    int lo, hi, group;
} ShoalTask;

typedef struct {
    ShoalVec* vec;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ShoalTask queue[SHOAL_MAX_GROUPS];
    int head, count, stop;
} ShoalWorker;

enum { BUF_OBS, BUF_ACT, BUF_REW, BUF_TERM, BUF_TRUNC, BUF_FINAL, BUF_AMASK, BUF_COUNT };

#ifdef ACTION_MASK
#define SHOAL_HAS_ACTION_MASK 1
#else
#define SHOAL_HAS_ACTION_MASK 0
#endif

struct ShoalVec {
    Env* envs;
    int num_envs, agents_per_env, obs_size, act_size;
    int* nvec; /* act_size entries for discrete actions, NULL for continuous */
    int mask_size; /* action-mask bytes per agent (sum of nvec) when ACTION_MASK, else 0 */
    /* The actions the envs read: rows of the caller's buffer are copied here, then checked, when
     * a range starts stepping. Python may write its buffer at any time (even while worker threads
     * step), so envs never read it directly: a value written after the check cannot reach them. */
    ACT_TYPE* act_copy;
    int num_threads;
    ShoalWorker* workers;
    pthread_mutex_t done_mu;
    pthread_cond_t done_cv;
    int pending[SHOAL_MAX_GROUPS];
    /* the vec_rollout call in progress (vec_rollout.h's RolloutJob), which vec_rollout_help joins;
     * NULL when none. Guarded by rollout_mu; rollout_cv signals its last helper leaving. */
    void* rollout_job;
    pthread_mutex_t rollout_mu;
    pthread_cond_t rollout_cv;
    int closed;
    Py_buffer bufs[BUF_COUNT];
    int held[BUF_COUNT];
};

/* ---- stepping (no Python calls: runs with the GIL released) ---- */

static void shoal_step_range(ShoalVec* v, int lo, int hi) {
    size_t rows = (size_t)(hi - lo) * (size_t)v->agents_per_env;
    Env* first = &v->envs[lo];
    memset(first->rewards, 0, rows * sizeof(float));
    memset(first->terminals, 0, rows);
    memset(first->truncations, 0, rows);
    for (int i = lo; i < hi; i++) c_step(&v->envs[i]);
}

static inline void shoal_cpu_relax(void);

/* A worker spins this many pause instructions (~0.1-0.3 ms) for its next task before it sleeps:
 * in a stepping loop the next task comes a few microseconds after the last one ends, and a
 * condition-variable wake-up (tens of microseconds here) would otherwise delay every shard but the
 * caller's, which is what kept two threads at 1.4x one thread on breakout. Short enough that a
 * worker idling through a policy's forward pass gives its core back almost at once. */
#ifndef SHOAL_WORKER_SPIN_ITERS
#define SHOAL_WORKER_SPIN_ITERS 2000
#endif

static void* shoal_worker_main(void* arg) {
    ShoalWorker* w = (ShoalWorker*)arg;
    ShoalVec* v = w->vec;
    for (;;) {
        for (int i = 0; i < SHOAL_WORKER_SPIN_ITERS; i++) {
            if (__atomic_load_n(&w->count, __ATOMIC_ACQUIRE) > 0 ||
                __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
                break;
            shoal_cpu_relax();
        }
        pthread_mutex_lock(&w->mu);
        while (w->count == 0 && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
        if (w->count == 0 && w->stop) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        ShoalTask t = w->queue[w->head];
        w->head = (w->head + 1) % SHOAL_MAX_GROUPS;
        __atomic_sub_fetch(&w->count, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_unlock(&w->mu);

        shoal_step_range(v, t.lo, t.hi);

        pthread_mutex_lock(&v->done_mu);
        if (__atomic_sub_fetch(&v->pending[t.group], 1, __ATOMIC_ACQ_REL) == 0)
            pthread_cond_broadcast(&v->done_cv);
        pthread_mutex_unlock(&v->done_mu);
    }
}

/* ---- helpers ---- */

static ShoalVec* shoal_get(PyObject* capsule) {
    ShoalVec* v = (ShoalVec*)PyCapsule_GetPointer(capsule, "shoal.vec");
    if (v == NULL) return NULL;
    if (v->closed) {
        PyErr_SetString(PyExc_RuntimeError, "this env was closed; make a new one with shoal.make()");
        return NULL;
    }
    return v;
}

static int shoal_check_range(ShoalVec* v, int lo, int hi) {
    if (lo < 0 || hi > v->num_envs || lo > hi) {
        PyErr_Format(PyExc_IndexError, "env range [%d, %d) is outside [0, %d)", lo, hi, v->num_envs);
        return -1;
    }
    return 0;
}

/* Copies the actions of envs [lo, hi) from the caller's buffer into the copy the envs read, then
 * rejects out-of-range discrete actions and non-finite continuous ones before any env sees them.
 * Call it only for envs that are not stepping. */
static int shoal_take_actions(ShoalVec* v, int lo, int hi) {
    const ACT_TYPE* a = v->act_copy;
    size_t start = (size_t)lo * v->agents_per_env * v->act_size;
    size_t end = (size_t)hi * v->agents_per_env * v->act_size;
    memcpy(v->act_copy + start, (const ACT_TYPE*)v->bufs[BUF_ACT].buf + start,
           (end - start) * sizeof(ACT_TYPE));
    /* Fast pass without division or formatting (it vectorises); the loop below runs only to name
     * the bad entry. */
    int all_ok = 1;
    if (v->nvec == NULL) {
        for (size_t k = start; k < end; k++) {
            float x = (float)a[k];
            all_ok &= (x - x) == 0.0f; /* false for NaN and inf */
        }
    } else if (v->act_size == 1) {
        const ACT_TYPE n = (ACT_TYPE)v->nvec[0];
        for (size_t k = start; k < end; k++)
            all_ok &= a[k] >= 0 && a[k] < n && a[k] == (ACT_TYPE)(int32_t)a[k];
    } else {
        all_ok = 0;
    }
    if (all_ok) return 0;
    for (size_t k = start; k < end; k++) {
        int d = (int)(k % (size_t)v->act_size);
        double x = (double)a[k];
        int bad = v->nvec ? !(x >= 0 && x < v->nvec[d] && x == (double)(long long)x) : !isfinite(x);
        if (bad) {
            size_t row = k / (size_t)v->act_size;
            char shown[64];
            snprintf(shown, sizeof(shown), "%g", x);
            if (v->nvec)
                PyErr_Format(PyExc_ValueError,
                             "action %s for agent %zu (dimension %d) is outside the action space: "
                             "it must be an integer in [0, %d)",
                             shown, row, d, v->nvec[d]);
            else
                PyErr_Format(PyExc_ValueError,
                             "action for agent %zu (dimension %d) is not finite (NaN or inf): "
                             "check the policy's outputs",
                             row, d);
            return -1;
        }
    }
    return 0;
}

static int shoal_take_buffer(ShoalVec* v, int k, PyObject* obj, const char* name, const char* formats,
                             Py_ssize_t itemsize, Py_ssize_t expected_items) {
    if (PyObject_GetBuffer(obj, &v->bufs[k], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a writable C-contiguous numpy array", name);
        return -1;
    }
    v->held[k] = 1;
    Py_buffer* b = &v->bufs[k];
    const char* f = b->format ? b->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    if (b->itemsize != itemsize || strchr(formats, f[0]) == NULL || f[1] != '\0') {
        PyErr_Format(PyExc_TypeError, "%s has format '%s' but this env needs '%s' (itemsize %zd)",
                     name, b->format, formats, itemsize);
        return -1;
    }
    if (b->len / b->itemsize != expected_items) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd items but this env needs %zd", name,
                     b->len / b->itemsize, expected_items);
        return -1;
    }
    return 0;
}

/* Binds the action-mask buffer of an env built with ACTION_MASK (and refuses one for an env
 * without): bool/uint8 [rows, sum(nvec)]. */
static int shoal_take_action_masks(ShoalVec* v, PyObject* amask, Py_ssize_t rows) {
    if (!SHOAL_HAS_ACTION_MASK) {
        v->mask_size = 0;
        if (amask == Py_None) return 0;
        PyErr_SetString(PyExc_ValueError, "this env writes no action masks (it was not built with "
                        "ACTION_MASK): pass action_masks=None");
        return -1;
    }
    if (v->nvec == NULL) {
        PyErr_SetString(PyExc_ValueError, "an env with ACTION_MASK needs a discrete action space");
        return -1;
    }
    if (amask == Py_None) {
        PyErr_SetString(PyExc_ValueError, "this env writes action masks: pass its action_masks "
                        "buffer (bool [agents, sum(nvec)])");
        return -1;
    }
    return shoal_take_buffer(v, BUF_AMASK, amask, "action_masks", "?B", 1, rows * v->mask_size);
}

static void shoal_close(ShoalVec* v) {
    if (v->closed) return;
    v->closed = 1;
    if (v->workers) {
        Py_BEGIN_ALLOW_THREADS
        for (int t = 0; t < v->num_threads; t++) {
            ShoalWorker* w = &v->workers[t];
            if (!w->started) continue;
            pthread_mutex_lock(&w->mu);
            __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
            pthread_cond_signal(&w->cv);
            pthread_mutex_unlock(&w->mu);
            pthread_join(w->thread, NULL);
        }
        Py_END_ALLOW_THREADS
        for (int t = 0; t < v->num_threads; t++) {
            pthread_mutex_destroy(&v->workers[t].mu);
            pthread_cond_destroy(&v->workers[t].cv);
        }
        free(v->workers);
        v->workers = NULL;
    }
    if (v->envs) {
        for (int i = 0; i < v->num_envs; i++) c_close(&v->envs[i]);
        free(v->envs);
        v->envs = NULL;
    }
    free(v->nvec);
    v->nvec = NULL;
    free(v->act_copy);
    v->act_copy = NULL;
    for (int k = 0; k < BUF_COUNT; k++)
        if (v->held[k]) {
            PyBuffer_Release(&v->bufs[k]);
            v->held[k] = 0;
        }
    pthread_mutex_destroy(&v->done_mu);
    pthread_cond_destroy(&v->done_cv);
    pthread_mutex_destroy(&v->rollout_mu);
    pthread_cond_destroy(&v->rollout_cv);
}

static void shoal_capsule_free(PyObject* capsule) {
    ShoalVec* v = (ShoalVec*)PyCapsule_GetPointer(capsule, "shoal.vec");
    if (v == NULL) return;
    shoal_close(v);
    free(v);
}

/* ---- module functions ---- */

/* vec_init(obs, actions, rewards, terminals, truncations, final_obs, num_envs, env_offset,
 *          num_threads, nvec, params[, action_masks]) -> capsule
 * nvec: a tuple of ints (discrete: one n per action dimension) or None (continuous).
 * action_masks: bool [rows, sum(nvec)], required by (and only by) an env built with ACTION_MASK. */
static PyObject* py_vec_init(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *obs, *act, *rew, *term, *trunc, *fin, *nvec_obj, *params, *amask = Py_None;
    int num_envs, offset, num_threads, agents_per_env, obs_size, act_size;
    if (!PyArg_ParseTuple(args, "OOOOOOiiiiiiOO!|O", &obs, &act, &rew, &term, &trunc, &fin, &num_envs,
                          &offset, &num_threads, &agents_per_env, &obs_size, &act_size, &nvec_obj,
                          &PyDict_Type, &params, &amask))
        return NULL;
    if (num_envs < 1 || num_threads < 0 || agents_per_env < 1 || obs_size < 1 || act_size < 1) {
        PyErr_SetString(PyExc_ValueError, "num_envs, agents, obs_size and act_size must be >= 1");
        return NULL;
    }
    ShoalVec* v = (ShoalVec*)calloc(1, sizeof(ShoalVec));
    if (!v) return PyErr_NoMemory();
    pthread_mutex_init(&v->done_mu, NULL);
    pthread_cond_init(&v->done_cv, NULL);
    pthread_mutex_init(&v->rollout_mu, NULL);
    pthread_cond_init(&v->rollout_cv, NULL);
    v->num_envs = num_envs;
    v->agents_per_env = agents_per_env;
    v->obs_size = obs_size;
    v->act_size = act_size;
    PyObject* capsule = PyCapsule_New(v, "shoal.vec", shoal_capsule_free);
    if (!capsule) {
        shoal_close(v);
        free(v);
        return NULL;
    }
    Py_ssize_t rows = (Py_ssize_t)num_envs * agents_per_env;
    const char* obs_fmt = sizeof(OBS_TYPE) == 1 ? "Bb?" : "f";
    const char* act_fmt = (ACT_TYPE)0.5 == 0 ? "i" : "f";
    if (shoal_take_buffer(v, BUF_OBS, obs, "observations", obs_fmt, sizeof(OBS_TYPE), rows * obs_size) ||
        shoal_take_buffer(v, BUF_ACT, act, "actions", act_fmt, sizeof(ACT_TYPE), rows * act_size) ||
        shoal_take_buffer(v, BUF_REW, rew, "rewards", "f", 4, rows) ||
        shoal_take_buffer(v, BUF_TERM, term, "terminals", "?B", 1, rows) ||
        shoal_take_buffer(v, BUF_TRUNC, trunc, "truncations", "?B", 1, rows) ||
        shoal_take_buffer(v, BUF_FINAL, fin, "final_observations", obs_fmt, sizeof(OBS_TYPE),
                          rows * obs_size))
        goto fail;
    if (nvec_obj != Py_None) {
        if (!PyTuple_Check(nvec_obj) || PyTuple_GET_SIZE(nvec_obj) != act_size) {
            PyErr_SetString(PyExc_ValueError, "nvec must be a tuple with one entry per action dimension");
            goto fail;
        }
        v->nvec = (int*)calloc((size_t)act_size, sizeof(int));
        if (!v->nvec) {
            PyErr_NoMemory();
            goto fail;
        }
        for (int d = 0; d < act_size; d++) {
            v->nvec[d] = (int)PyLong_AsLong(PyTuple_GET_ITEM(nvec_obj, d));
            if (PyErr_Occurred()) goto fail;
            v->mask_size += v->nvec[d];
        }
    }
    if (shoal_take_action_masks(v, amask, rows)) goto fail;
    v->act_copy = (ACT_TYPE*)calloc((size_t)rows * (size_t)act_size, sizeof(ACT_TYPE));
    v->envs = (Env*)calloc((size_t)num_envs, sizeof(Env));
    if (!v->envs || !v->act_copy) {
        PyErr_NoMemory();
        goto fail;
    }
    for (int i = 0; i < num_envs; i++) {
        Env* e = &v->envs[i];
        size_t row = (size_t)i * agents_per_env;
        e->observations = (OBS_TYPE*)v->bufs[BUF_OBS].buf + row * obs_size;
        e->final_observations = (OBS_TYPE*)v->bufs[BUF_FINAL].buf + row * obs_size;
        e->actions = v->act_copy + row * act_size;
        e->rewards = (float*)v->bufs[BUF_REW].buf + row;
        e->terminals = (uint8_t*)v->bufs[BUF_TERM].buf + row;
        e->truncations = (uint8_t*)v->bufs[BUF_TRUNC].buf + row;
#ifdef ACTION_MASK
        e->action_masks = (uint8_t*)v->bufs[BUF_AMASK].buf + row * (size_t)v->mask_size;
#endif
        shoal_rng_seed(&e->rng, 0, (uint64_t)(offset + i));
        if (my_init(e, params) < 0) {
            /* envs [0, i) were initialised and are freed by close; this one may hold partial state */
            c_close(e);
            for (int j = i + 1; j < num_envs; j++) memset(&v->envs[j], 0, sizeof(Env));
            v->num_envs = i;
            goto fail;
        }
        if (NUM_AGENTS(e) != agents_per_env || OBS_SIZE(e) != obs_size) {
            PyErr_Format(PyExc_RuntimeError,
                         "env spec and C code disagree: C has %d agents x %d obs, spec says %d x %d",
                         (int)NUM_AGENTS(e), (int)OBS_SIZE(e), agents_per_env, obs_size);
            v->num_envs = i + 1;
            goto fail;
        }
    }
    v->num_threads = num_threads;
    if (num_threads > 0) {
        v->workers = (ShoalWorker*)calloc((size_t)num_threads, sizeof(ShoalWorker));
        if (!v->workers) {
            PyErr_NoMemory();
            goto fail;
        }
        for (int t = 0; t < num_threads; t++) {
            ShoalWorker* w = &v->workers[t];
            w->vec = v;
            pthread_mutex_init(&w->mu, NULL);
            pthread_cond_init(&w->cv, NULL);
        }
        for (int t = 0; t < num_threads; t++) {
            if (pthread_create(&v->workers[t].thread, NULL, shoal_worker_main, &v->workers[t]) != 0) {
                PyErr_SetString(PyExc_RuntimeError, "could not start a worker thread");
                goto fail;
            }
            v->workers[t].started = 1;
        }
    }
    return capsule;
fail:
    Py_DECREF(capsule); /* the destructor closes and frees */
    return NULL;
}

static PyObject* py_vec_reset(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    unsigned long long seed;
    int offset;
    if (!PyArg_ParseTuple(args, "OKi", &capsule, &seed, &offset)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v) return NULL;
    for (int g = 0; g < SHOAL_MAX_GROUPS; g++)
        if (v->pending[g]) {
            PyErr_SetString(PyExc_RuntimeError, "reset() while envs are stepping: recv() them first");
            return NULL;
        }
    Py_BEGIN_ALLOW_THREADS
    size_t rows = (size_t)v->num_envs * v->agents_per_env;
    memset(v->envs[0].rewards, 0, rows * sizeof(float));
    memset(v->envs[0].terminals, 0, rows);
    memset(v->envs[0].truncations, 0, rows);
    memset(v->envs[0].final_observations, 0, rows * (size_t)v->obs_size * sizeof(OBS_TYPE));
    if (v->held[BUF_AMASK]) memset(v->bufs[BUF_AMASK].buf, 1, rows * (size_t)v->mask_size);
    for (int i = 0; i < v->num_envs; i++) {
        Env* e = &v->envs[i];
        shoal_rng_seed(&e->rng, (uint64_t)seed, (uint64_t)(offset + i));
        memset(&e->log, 0, sizeof(Log));
        c_reset(e);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Queues [lo, hi) on worker w as part of `group` (the caller has counted it in pending). */
static void shoal_enqueue(ShoalVec* v, int w_index, int group, int lo, int hi) {
    ShoalWorker* w = &v->workers[w_index];
    pthread_mutex_lock(&w->mu);
    w->queue[(w->head + w->count) % SHOAL_MAX_GROUPS] = (ShoalTask){lo, hi, group};
    __atomic_add_fetch(&w->count, 1, __ATOMIC_ACQ_REL);  /* read without the lock by a spinning worker */
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Spin briefly before sleeping: a condition-variable wake-up costs tens of microseconds on these
 * machines, more than a shard of a fast env takes; the waiting thread has nothing else to do. */
#ifndef SHOAL_SPIN_ITERS
#define SHOAL_SPIN_ITERS 20000
#endif
static inline void shoal_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void shoal_wait_group(ShoalVec* v, int group) {
    for (int i = 0; i < SHOAL_SPIN_ITERS; i++) {
        if (__atomic_load_n(&v->pending[group], __ATOMIC_ACQUIRE) == 0) return;
        shoal_cpu_relax();
    }
    pthread_mutex_lock(&v->done_mu);
    while (v->pending[group] > 0) pthread_cond_wait(&v->done_cv, &v->done_mu);
    pthread_mutex_unlock(&v->done_mu);
}

/* vec_step(capsule, lo, hi): steps envs [lo, hi) and returns when they are done, GIL released.
 * With worker threads the range is split num_threads ways and the calling thread steps the first
 * piece itself: one fewer hand-off than send+recv, and no core idles while the caller waits. */
static PyObject* py_vec_step(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    int lo, hi;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &lo, &hi)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v || shoal_check_range(v, lo, hi)) return NULL;
    for (int g = 0; g < SHOAL_MAX_GROUPS; g++)
        if (__atomic_load_n(&v->pending[g], __ATOMIC_ACQUIRE)) {
            PyErr_SetString(PyExc_RuntimeError, "vec_step while envs are stepping: recv() them first");
            return NULL;
        }
    if (shoal_take_actions(v, lo, hi)) return NULL;
    int n = hi - lo;
    int pieces = v->num_threads < n ? v->num_threads : n;
    if (pieces <= 1) {
        /* counted as stepping (set and cleared under the GIL) so that another Python thread can
         * neither rewrite the action copy nor snapshot or reset these envs meanwhile */
        __atomic_store_n(&v->pending[SHOAL_SYNC_GROUP], 1, __ATOMIC_RELEASE);
        Py_BEGIN_ALLOW_THREADS
        shoal_step_range(v, lo, hi);
        Py_END_ALLOW_THREADS
        __atomic_store_n(&v->pending[SHOAL_SYNC_GROUP], 0, __ATOMIC_RELEASE);
        Py_RETURN_NONE;
    }
    pthread_mutex_lock(&v->done_mu);
    int busy = v->pending[SHOAL_SYNC_GROUP];
    if (!busy) v->pending[SHOAL_SYNC_GROUP] = pieces - 1;
    pthread_mutex_unlock(&v->done_mu);
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "vec_step called from two threads at once on one env");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < pieces; t++)
        shoal_enqueue(v, t - 1, SHOAL_SYNC_GROUP, lo + (int)((long long)n * t / pieces),
                      lo + (int)((long long)n * (t + 1) / pieces));
    shoal_step_range(v, lo, lo + n / pieces);
    shoal_wait_group(v, SHOAL_SYNC_GROUP);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* vec_send(capsule, group, lo, hi): queues envs [lo, hi), split across the worker threads, and
 * returns at once; vec_recv(capsule, group) waits for them. */
static PyObject* py_vec_send(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    int group, lo, hi;
    if (!PyArg_ParseTuple(args, "Oiii", &capsule, &group, &lo, &hi)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v || shoal_check_range(v, lo, hi)) return NULL;
    if (v->num_threads == 0) {
        PyErr_SetString(PyExc_RuntimeError, "vec_send needs worker threads (num_threads > 0)");
        return NULL;
    }
    if (group < 0 || group >= SHOAL_SYNC_GROUP) {
        PyErr_Format(PyExc_ValueError, "group must be in [0, %d)", SHOAL_SYNC_GROUP);
        return NULL;
    }
    pthread_mutex_lock(&v->done_mu);
    int busy = v->pending[group];
    pthread_mutex_unlock(&v->done_mu);
    if (busy) {
        PyErr_Format(PyExc_RuntimeError, "group %d is already stepping: recv() it before send()", group);
        return NULL;
    }
    /* after the busy check: a stepping group's envs are reading their copied actions */
    if (shoal_take_actions(v, lo, hi)) return NULL;
    int n = hi - lo;
    int chunks = v->num_threads < n ? v->num_threads : n;
    pthread_mutex_lock(&v->done_mu);
    v->pending[group] = chunks;
    pthread_mutex_unlock(&v->done_mu);
    for (int t = 0; t < chunks; t++)
        shoal_enqueue(v, t, group, lo + (int)((long long)n * t / chunks),
                      lo + (int)((long long)n * (t + 1) / chunks));
    Py_RETURN_NONE;
}

static PyObject* py_vec_recv(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    int group;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &group)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v) return NULL;
    if (group < 0 || group >= SHOAL_MAX_GROUPS) {
        PyErr_Format(PyExc_ValueError, "group must be in [0, %d)", SHOAL_MAX_GROUPS);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    shoal_wait_group(v, group);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* vec_log(capsule, lo, hi) -> dict: means over the episodes finished in envs [lo, hi) since the
 * last call (and clears them); {} when none finished. Call it only on envs that are not stepping. */
static PyObject* py_vec_log(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    int lo, hi;
    if (!PyArg_ParseTuple(args, "Oii", &capsule, &lo, &hi)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v || shoal_check_range(v, lo, hi)) return NULL;
    double sum[SHOAL_LOG_FIELDS];
    memset(sum, 0, sizeof(sum));
    for (int i = lo; i < hi; i++) {
        float* f = (float*)&v->envs[i].log;
        for (int k = 0; k < SHOAL_LOG_FIELDS; k++) sum[k] += f[k];
        memset(&v->envs[i].log, 0, sizeof(Log));
    }
    PyObject* d = PyDict_New();
    if (!d) return NULL;
    double n = sum[SHOAL_LOG_FIELDS - 1];
    if (n <= 0) return d;
    for (int k = 0; k < SHOAL_LOG_FIELDS - 1; k++) {
        PyObject* x = PyFloat_FromDouble(sum[k] / n);
        if (!x || PyDict_SetItemString(d, LOG_NAMES[k], x) < 0) {
            Py_XDECREF(x);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(x);
    }
    PyObject* x = PyFloat_FromDouble(n);
    if (!x || PyDict_SetItemString(d, "n", x) < 0) {
        Py_XDECREF(x);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(x);
    return d;
}

static Env* shoal_env_at(PyObject* args, int* index_out) {
    PyObject* capsule;
    int i;
    if (!PyArg_ParseTuple(args, "Oi", &capsule, &i)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v) return NULL;
    if (i < 0 || i >= v->num_envs) {
        PyErr_Format(PyExc_IndexError, "env index %d is outside [0, %d)", i, v->num_envs);
        return NULL;
    }
    if (index_out) *index_out = i;
    return &v->envs[i];
}

static PyObject* py_vec_render_text(PyObject* self, PyObject* args) {
    (void)self;
    Env* e = shoal_env_at(args, NULL);
    if (!e) return NULL;
    int cap = 1 << 16;
    char* buf = (char*)malloc((size_t)cap);
    if (!buf) return PyErr_NoMemory();
    int len = c_render_text(e, buf, cap);
    if (len < 0) len = 0;
    if (len > cap - 1) len = cap - 1;
    PyObject* s = PyUnicode_DecodeUTF8(buf, len, "replace");
    free(buf);
    return s;
}

/* -> (bytes, height, width): an RGB frame of env i. */
static PyObject* py_vec_render_rgb(PyObject* self, PyObject* args) {
    (void)self;
    Env* e = shoal_env_at(args, NULL);
    if (!e) return NULL;
    int h = RENDER_HEIGHT(e), w = RENDER_WIDTH(e);
    if (h < 1 || w < 1 || (long long)h * w > (1LL << 26)) {
        PyErr_Format(PyExc_ValueError, "this env's frame would be %d x %d pixels: too large to render "
                     "(use render(mode=\"ansi\") or smaller parameters)", h, w);
        return NULL;
    }
    PyObject* bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)h * w * 3);
    if (!bytes) return NULL;
    uint8_t* rgb = (uint8_t*)PyBytes_AS_STRING(bytes);
    memset(rgb, 0, (size_t)h * w * 3);
    c_render_rgb(e, rgb);
    return Py_BuildValue("(Nii)", bytes, h, w);
}

static PyObject* py_vec_state(PyObject* self, PyObject* args) {
    (void)self;
    Env* e = shoal_env_at(args, NULL);
    if (!e) return NULL;
#ifdef HAS_STATE
    return my_state(e);
#else
    (void)e;
    return PyDict_New();
#endif
}

/* ---- snapshots: the whole state of every env, for exact resume ----
 * A snapshot is each env's struct bytes followed by the contents of its ENV_HEAP arrays. Loading
 * copies the struct back but keeps this process's pointers (buffer rows and heap arrays), so a
 * snapshot taken in one process restores in another with the same parameters. */

static size_t shoal_snapshot_size(Env* env) {
    size_t n = sizeof(Env);
#ifdef ENV_HEAP
#define SHOAL_HEAP_SIZE(field, count) n += sizeof(*env->field) * (size_t)(count);
    ENV_HEAP(SHOAL_HEAP_SIZE)
#undef SHOAL_HEAP_SIZE
#endif
    (void)env;
    return n;
}

static void shoal_snapshot_save(Env* env, char* out) {
    memcpy(out, env, sizeof(Env));
    out += sizeof(Env);
#ifdef ENV_HEAP
#define SHOAL_HEAP_SAVE(field, count)                                   \
    memcpy(out, env->field, sizeof(*env->field) * (size_t)(count));    \
    out += sizeof(*env->field) * (size_t)(count);
    ENV_HEAP(SHOAL_HEAP_SAVE)
#undef SHOAL_HEAP_SAVE
#endif
    (void)out;
}

static void shoal_snapshot_load(Env* env, const char* in) {
    Env keep = *env;
    const char* heap = in + sizeof(Env);
#ifdef ENV_HEAP
    /* the arrays first, while `env` (whose fields the counts read) is still this process's own:
     * their sizes never come from the snapshot's bytes */
#define SHOAL_HEAP_LOAD(field, count)                                   \
    memcpy(env->field, heap, sizeof(*env->field) * (size_t)(count));   \
    heap += sizeof(*env->field) * (size_t)(count);
    ENV_HEAP(SHOAL_HEAP_LOAD)
#undef SHOAL_HEAP_LOAD
#endif
    (void)heap;
    memcpy(env, in, sizeof(Env));
    env->observations = keep.observations;
    env->final_observations = keep.final_observations;
    env->actions = keep.actions;
    env->rewards = keep.rewards;
    env->terminals = keep.terminals;
    env->truncations = keep.truncations;
#ifdef ACTION_MASK
    env->action_masks = keep.action_masks;
#endif
#ifdef ENV_HEAP
#define SHOAL_HEAP_KEEP(field, count) env->field = keep.field;
    ENV_HEAP(SHOAL_HEAP_KEEP)
#undef SHOAL_HEAP_KEEP
#endif
}

/* Checks one env's snapshot bytes without touching the env: the struct and its arrays are
 * copied into `scratch` (aligned, unlike the bytes), the pointers replaced by this process's, and
 * the generic fields (rng, Log) and then the env's own c_validate are checked. 1 when it may be
 * loaded; else 0 with the problem in `check`. */
static int shoal_snapshot_check(const Env* made, const char* in, Env* cand, char* scratch, ShoalCheck* check) {
    memcpy(cand, in, sizeof(Env));
    in += sizeof(Env);
    cand->observations = made->observations;
    cand->final_observations = made->final_observations;
    cand->actions = made->actions;
    cand->rewards = made->rewards;
    cand->terminals = made->terminals;
    cand->truncations = made->truncations;
#ifdef ACTION_MASK
    cand->action_masks = made->action_masks;
#endif
#ifdef ENV_HEAP
#define SHOAL_HEAP_STAGE(field, count)                                         \
    {                                                                          \
        size_t bytes = sizeof(*made->field) * (size_t)(count);                 \
        memcpy(scratch, in, bytes);                                            \
        cand->field = (void*)scratch;                                          \
        in += bytes;                                                           \
        scratch += (bytes + 63) & ~(size_t)63;                                 \
    }
    {
        const Env* env = made; /* the counts are expressions of `env`: this process's sizes */
        (void)env;
        ENV_HEAP(SHOAL_HEAP_STAGE)
    }
#undef SHOAL_HEAP_STAGE
#endif
    (void)scratch;
    if (!(cand->rng.inc & 1u))
        return shoal_check_fail(check, "rng.inc = %llu is even (a PCG stream increment is odd)",
                                (unsigned long long)cand->rng.inc);
    const float* log = (const float*)&cand->log;
    for (int k = 0; k < SHOAL_LOG_FIELDS; k++) {
        char field[80];
        snprintf(field, sizeof(field), "log.%.60s", k < SHOAL_LOG_FIELDS - 1 ? LOG_NAMES[k] : "n");
        /* sums of per-episode stats: finite; the count n is never negative */
        if (!shoal_check_float(check, field, log[k], k < SHOAL_LOG_FIELDS - 1 ? -3.0e38f : 0.0f, 3.0e38f))
            return 0;
    }
    return c_validate(cand, made, check);
}

/* Bytes of scratch shoal_snapshot_check needs for one env: its arrays, each 64-byte aligned. */
static size_t shoal_scratch_size(Env* env) {
    size_t n = 64;
#ifdef ENV_HEAP
#define SHOAL_HEAP_SCRATCH(field, count) n += ((sizeof(*env->field) * (size_t)(count)) + 63) & ~(size_t)63;
    ENV_HEAP(SHOAL_HEAP_SCRATCH)
#undef SHOAL_HEAP_SCRATCH
#endif
    (void)env;
    return n;
}

static int shoal_idle(ShoalVec* v) {
    for (int g = 0; g < SHOAL_MAX_GROUPS; g++)
        if (__atomic_load_n(&v->pending[g], __ATOMIC_ACQUIRE)) {
            PyErr_SetString(PyExc_RuntimeError, "envs are stepping: recv() them before a snapshot");
            return 0;
        }
    return 1;
}

/* vec_save(capsule) -> bytes: a snapshot of every env. */
static PyObject* py_vec_save(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v || !shoal_idle(v)) return NULL;
    size_t total = 0;
    for (int i = 0; i < v->num_envs; i++) total += shoal_snapshot_size(&v->envs[i]);
    PyObject* bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!bytes) return NULL;
    char* out = PyBytes_AS_STRING(bytes);
    for (int i = 0; i < v->num_envs; i++) {
        shoal_snapshot_save(&v->envs[i], out);
        out += shoal_snapshot_size(&v->envs[i]);
    }
    return bytes;
}

/* vec_load(capsule, bytes_like): restores a snapshot taken with the same env count and params. */
static PyObject* py_vec_load(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    Py_buffer snap;
    if (!PyArg_ParseTuple(args, "Oy*", &capsule, &snap)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v || !shoal_idle(v)) {
        PyBuffer_Release(&snap);
        return NULL;
    }
    size_t total = 0;
    for (int i = 0; i < v->num_envs; i++) total += shoal_snapshot_size(&v->envs[i]);
    if ((size_t)snap.len != total) {
        PyErr_Format(PyExc_ValueError,
                     "env snapshot holds %zd bytes but these %d envs need %zu: it was taken with "
                     "another env count, other parameters or another build",
                     snap.len, v->num_envs, total);
        PyBuffer_Release(&snap);
        return NULL;
    }
    /* every env is checked before any is written: a refused snapshot leaves all of them as
     * they were */
    Env* cand = (Env*)malloc(sizeof(Env));
    char* scratch = (char*)aligned_alloc(64, shoal_scratch_size(&v->envs[0]));
    if (!cand || !scratch) {
        free(cand);
        free(scratch);
        PyBuffer_Release(&snap);
        return PyErr_NoMemory();
    }
    const char* in = (const char*)snap.buf;
    ShoalCheck check = {0, {0}};
    int bad = -1;
    for (int i = 0; i < v->num_envs && bad < 0; i++) {
        if (!shoal_snapshot_check(&v->envs[i], in, cand, scratch, &check)) bad = i;
        in += shoal_snapshot_size(&v->envs[i]);
    }
    free(cand);
    free(scratch);
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError,
                     "env snapshot refused: env %d has %s; the snapshot is corrupt, crafted or "
                     "from an incompatible build, and nothing was loaded",
                     bad, check.message);
        PyBuffer_Release(&snap);
        return NULL;
    }
    in = (const char*)snap.buf;
    for (int i = 0; i < v->num_envs; i++) {
        size_t n = shoal_snapshot_size(&v->envs[i]);
        shoal_snapshot_load(&v->envs[i], in);
        in += n;
    }
    PyBuffer_Release(&snap);
    Py_RETURN_NONE;
}

static PyObject* py_vec_close(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    ShoalVec* v = (ShoalVec*)PyCapsule_GetPointer(capsule, "shoal.vec");
    if (!v) return NULL;
    shoal_close(v);
    Py_RETURN_NONE;
}

#include "vec_rollout.h"

static PyMethodDef shoal_methods[] = {
    {"vec_init", py_vec_init, METH_VARARGS, "Build a vector of envs over caller-owned buffers."},
    {"vec_reset", py_vec_reset, METH_VARARGS, "vec_reset(h, seed, env_offset): reset every env."},
    {"vec_step", py_vec_step, METH_VARARGS, "vec_step(h, lo, hi): step envs [lo, hi) here."},
    {"vec_send", py_vec_send, METH_VARARGS, "vec_send(h, group, lo, hi): step on worker threads."},
    {"vec_recv", py_vec_recv, METH_VARARGS, "vec_recv(h, group): wait for a vec_send."},
    {"vec_log", py_vec_log, METH_VARARGS, "vec_log(h, lo, hi): episode means since last call."},
    {"vec_render_text", py_vec_render_text, METH_VARARGS, "vec_render_text(h, i) -> str"},
    {"vec_render_rgb", py_vec_render_rgb, METH_VARARGS, "vec_render_rgb(h, i) -> (bytes, h, w)"},
    {"vec_state", py_vec_state, METH_VARARGS, "vec_state(h, i) -> dict of internal state"},
    {"vec_save", py_vec_save, METH_VARARGS, "vec_save(h) -> bytes: snapshot of every env."},
    {"vec_load", py_vec_load, METH_VARARGS, "vec_load(h, snapshot): restore a vec_save snapshot."},
    {"vec_rollout", py_vec_rollout, METH_VARARGS,
     "vec_rollout(h, net, ...): T steps of env step + policy into rollout storage (vec_rollout.h)."},
    {"vec_rollout_help", py_vec_rollout_help, METH_VARARGS,
     "vec_rollout_help(h) -> int: run untaken blocks of a vec_rollout in progress (vec_rollout.h)."},
    {"vec_close", py_vec_close, METH_VARARGS, "vec_close(h): stop threads, free envs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef shoal_module = {PyModuleDef_HEAD_INIT, "_c", NULL, -1, shoal_methods,
                                          NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__c(void) {
    PyObject* m = PyModule_Create(&shoal_module);
    /* groups vec_send can step at once: the Python side refuses more buffers at construction */
    if (m && (PyModule_AddIntConstant(m, "MAX_SEND_GROUPS", SHOAL_SYNC_GROUP) < 0 ||
              PyModule_AddIntConstant(m, "ACTION_MASK", SHOAL_HAS_ACTION_MASK) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

#endif /* SHOAL_VEC_BINDING_H */
