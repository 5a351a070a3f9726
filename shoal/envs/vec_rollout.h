/* vec_rollout.h: the fused rollout, included by vec_binding.h (every C env module gets it).
 *
 * vec_rollout runs the trainer's rollout for a whole [S, T] segment in one call, GIL released:
 * for t = 1..T every env steps, its rewards/terminals/truncations go into the rollout storage,
 * truncated episodes get gamma * V(final observation) added to their reward (or, given a
 * `bootstrap` array, the raw reward is stored and that term written there instead, for the
 * caller to scale the rewards first: train.norm_reward), and the policy
 * (shoal_net.h) acts on the new observations into slot t: observation, mask, action, log-prob,
 * value, and the recurrent state the next segment starts from (slot T). With first_step = 0 it
 * only acts into slot 0 (after a reset). It writes exactly what shoal/trainer/ppo.py's
 * Trainer.rollout/_act/_bootstrap_truncated write, per agent row.
 *
 * Envs are split into contiguous blocks, each run for all T steps by one thread: agents are
 * independent, sampling uses each row's own RNG state and the net evaluates rows independently,
 * so the result does not depend on which thread runs a block, or on how many do. The call's
 * `threads` threads (the caller one of them) take blocks in order from a shared counter, several
 * per thread, so a thread slowed by the other work on its core leaves its next block to the
 * others, and another thread can join the call midway (vec_rollout_help: with train.overlap the
 * learner, once its update is done, helps finish the next batch instead of waiting for it).
 */
#ifndef SHOAL_VEC_ROLLOUT_H
#define SHOAL_VEC_ROLLOUT_H

#include <limits.h>
#include <time.h>

#include "../net/shoal_net.h"

#define SHOAL_NET_CAPSULE "shoal.net.shoal_net.v1"

/* Blocks per thread of a call: enough that a thread which finishes early (or joins late) finds
 * blocks left to take, few enough that each block's forward passes still batch rows. */
#define SHOAL_ROLLOUT_BLOCKS_PER_THREAD 8
#define SHOAL_ROLLOUT_MAX_BLOCKS 256
/* ... and at least this many envs a block where the call has them: a block's forward passes run
 * its rows together, four at a time (shoal_net.h), so a call over a few envs (train.pipeline's
 * env ranges) on several threads would otherwise run them two rows at a time. */
#define SHOAL_ROLLOUT_MIN_BLOCK_ENVS 8

static int shoal_obs_dtype_code(void) {
    if (sizeof(OBS_TYPE) == 4 && (OBS_TYPE)0.5 != 0) return SHOAL_OBS_F32;
    if (sizeof(OBS_TYPE) == 1) return (OBS_TYPE)-1 > 0 ? SHOAL_OBS_U8 : SHOAL_OBS_I8;
    return -1;
}

typedef struct {
    ShoalVec* v;
    const shoal_net* net;
    int first_step, last_step, T;   /* steps first_step..last_step of the T-step segment */
    int env_lo, env_hi;             /* the envs [env_lo, env_hi) this call runs */
    float gamma;
    OBS_TYPE* obs_store;
    void* act_store;           /* int64 (discrete heads) or float (Box) [S, T+1, A] */
    float *logp_store, *val_store, *starts_store, *masks_store, *rew_store, *done_store;
    float *h, *c, *h0, *c0, *h0n, *c0n;
    uint64_t* rng;
    const uint8_t* env_masks;
    /* blocks of envs: taken in order from next_block by the call's threads and by helpers */
    int num_blocks, next_block, helpers;
    double env_seconds[SHOAL_ROLLOUT_MAX_BLOCKS];
    int bad_actions[SHOAL_ROLLOUT_MAX_BLOCKS];
    int failed[SHOAL_ROLLOUT_MAX_BLOCKS];
    uint8_t* amask_store;      /* bool [S, T+1, mask_size]: each slot's action mask; NULL: unmasked */
    float* boot_store;         /* [S, T]: gamma * V(final obs) of truncated steps, -0 elsewhere,
                                * rewards stored raw; NULL: the term goes into the reward */
} RolloutJob;

static double shoal_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    float* scratch;
    float* params;
    float* values;
    float* logp;
    float* starts;
    int32_t* acts_i;
    float* acts_f;
    float* hb;
    float* cb;
} RolloutBuffers;

/* Action masks (shoal/trainer/action_masks.py): the env's masks of rows [r0, r1) go into slot t
 * of the storage (the loss masks the same logits) and mask the logits the policy samples from. */
static void shoal_rollout_mask(RolloutJob* j, RolloutBuffers* b, int64_t r0, int64_t r1, int t) {
    const int64_t M = j->v->mask_size, slots = j->T + 1;
    const uint8_t* env_mask = (const uint8_t*)j->v->bufs[BUF_AMASK].buf;
    for (int64_t s = r0; s < r1; s++)
        memcpy(j->amask_store + (s * slots + t) * M, env_mask + s * M, (size_t)M);
    shoal_net_mask_logits(j->net, r1 - r0, b->params, env_mask + r0 * M);
}

/* The policy acts on rows [r0, r1) into slot t. */
static void shoal_rollout_act(RolloutJob* j, RolloutBuffers* b, int64_t r0, int64_t r1, int t,
                              int block) {
    ShoalVec* v = j->v;
    const shoal_net* net = j->net;
    const int64_t n = r1 - r0, slots = j->T + 1, obs = v->obs_size, H = net->hidden;
    const int64_t A = net->action_dims;
    const OBS_TYPE* env_obs = (const OBS_TYPE*)v->bufs[BUF_OBS].buf;
    for (int64_t s = r0; s < r1; s++) {
        memcpy(j->obs_store + (s * slots + t) * obs, env_obs + s * obs, sizeof(OBS_TYPE) * (size_t)obs);
        j->masks_store[s * slots + t] = j->env_masks[s] ? 1.0f : 0.0f;
        b->starts[s - r0] = j->starts_store[s * slots + t];
    }
    if (net->lstm) {
        float* dh = t == 0 ? j->h0 : (t == j->T ? j->h0n : NULL);
        float* dc = t == 0 ? j->c0 : (t == j->T ? j->c0n : NULL);
        if (dh != NULL) {   /* the state the segment starting at this slot replays from */
            memcpy(dh + r0 * H, j->h + r0 * H, sizeof(float) * (size_t)(n * H));
            memcpy(dc + r0 * H, j->c + r0 * H, sizeof(float) * (size_t)(n * H));
        }
    }
    shoal_net_forward(net, n, env_obs + r0 * obs, b->starts, net->lstm ? j->h + r0 * H : NULL,
                      net->lstm ? j->c + r0 * H : NULL, b->params, b->values, b->scratch);
    if (j->amask_store != NULL) shoal_rollout_mask(j, b, r0, r1, t);
    shoal_net_sample(net, n, b->params, j->rng + r0, 0, b->acts_i, b->acts_f, b->logp);
    /* the envs step on v->act_copy (vec_binding.h: the checked copy of the caller's buffer); the
     * policy's actions are valid by construction, so they go straight there, and into the
     * caller-visible buffer too */
    ACT_TYPE* env_act = (ACT_TYPE*)v->bufs[BUF_ACT].buf;
    ACT_TYPE* step_act = v->act_copy;
    const int box = net->head == SHOAL_HEAD_BOX;
    if (box) shoal_net_clip_actions(net, n, b->acts_f, b->acts_f + n * A);
    int bad = 0;
    for (int64_t s = r0; s < r1; s++) {
        const int64_t k = s * slots + t, i = s - r0;
        j->val_store[k] = b->values[i];
        j->logp_store[k] = b->logp[i];
        for (int64_t d = 0; d < A; d++) {
            if (box) {
                const float a = b->acts_f[i * A + d], clipped = b->acts_f[n * A + i * A + d];
                ((float*)j->act_store)[k * A + d] = a;
                const int nonfinite = !(clipped - clipped == 0.0f);
                bad |= nonfinite;
                env_act[s * A + d] = step_act[s * A + d] = (ACT_TYPE)(nonfinite ? 0.0f : clipped);
            } else {
                const int32_t a = b->acts_i[i * A + d];
                ((int64_t*)j->act_store)[k * A + d] = a;
                env_act[s * A + d] = step_act[s * A + d] = (ACT_TYPE)a;
            }
        }
    }
    j->bad_actions[block] |= bad;
}

/* Block `block` of the call: envs [lo, hi), all of its steps. */
static void shoal_rollout_block(RolloutJob* j, int block, int lo, int hi) {
    ShoalVec* v = j->v;
    const shoal_net* net = j->net;
    const int64_t ape = v->agents_per_env, r0 = lo * ape, r1 = hi * ape, n = r1 - r0;
    const int64_t P = net->num_params, A = net->action_dims, H = net->hidden;
    if (n <= 0) return;
    RolloutBuffers b;
    const int64_t floats = shoal_net_scratch_floats(net) + n * P + 3 * n + 2 * n * A + 2 * H + P + 1;
    float* mem = (float*)malloc(sizeof(float) * (size_t)floats + sizeof(int32_t) * (size_t)(n * A));
    if (mem == NULL) { j->failed[block] = 1; return; }
    b.scratch = mem;
    b.params = b.scratch + shoal_net_scratch_floats(net);
    b.values = b.params + n * P;
    b.logp = b.values + n;
    b.starts = b.logp + n;
    b.acts_f = b.starts + n;              /* 2 n A: sampled, then clipped */
    b.hb = b.acts_f + 2 * n * A;
    b.cb = b.hb + H;
    b.acts_i = (int32_t*)(void*)(b.cb + H + P + 1);
    float* boot_params = b.cb + H;
    double env_time = 0.0;
    if (j->first_step == 0) {
        shoal_rollout_act(j, &b, r0, r1, 0, block);
    } else {
        const int64_t slots = j->T + 1;
        const OBS_TYPE* final_obs = (const OBS_TYPE*)v->bufs[BUF_FINAL].buf;
        const float* rew = (const float*)v->bufs[BUF_REW].buf;
        const uint8_t* term = (const uint8_t*)v->bufs[BUF_TERM].buf;
        const uint8_t* trunc = (const uint8_t*)v->bufs[BUF_TRUNC].buf;
        for (int t = j->first_step; t <= j->last_step; t++) {
            double t0 = shoal_now();
            shoal_step_range(v, lo, hi);
            env_time += shoal_now() - t0;
            for (int64_t s = r0; s < r1; s++) {
                const float ended = (term[s] || trunc[s]) ? 1.0f : 0.0f;
                /* -0 is the additive identity of every float (+0 + -0 = +0, -0 + -0 = -0), so
                 * adding it leaves any reward, scaled or not, bit for bit as it was */
                float boot = -0.0f;
                if (trunc[s] && !term[s]) {
                    /* bootstrap from V(final observation) with the state the episode ended with */
                    float value;
                    float* hb = NULL;
                    float* cb = NULL;
                    if (net->lstm) {
                        memcpy(b.hb, j->h + s * H, sizeof(float) * (size_t)H);
                        memcpy(b.cb, j->c + s * H, sizeof(float) * (size_t)H);
                        hb = b.hb;
                        cb = b.cb;
                    }
                    shoal_net_forward(net, 1, final_obs + s * v->obs_size, NULL, hb, cb,
                                      boot_params, &value, b.scratch);
                    boot = j->gamma * value;
                }
                const int64_t k = s * j->T + (t - 1);
                if (j->boot_store != NULL) {
                    j->rew_store[k] = rew[s];
                    j->boot_store[k] = boot;
                } else {
                    j->rew_store[k] = rew[s] + boot;
                }
                j->done_store[k] = ended;
                j->starts_store[s * slots + t] = ended;
            }
            shoal_rollout_act(j, &b, r0, r1, t, block);
        }
    }
    j->env_seconds[block] = env_time;
    free(mem);
}

/* Runs blocks of `j` until none is left to take; returns how many it ran. */
static int shoal_rollout_take_blocks(RolloutJob* j) {
    int ran = 0;
    for (;;) {
        const int k = __atomic_fetch_add(&j->next_block, 1, __ATOMIC_ACQ_REL);
        if (k >= j->num_blocks) return ran;
        const long long lo = j->env_lo, n = j->env_hi - j->env_lo;
        shoal_rollout_block(j, k, (int)(lo + n * k / j->num_blocks),
                            (int)(lo + n * (k + 1) / j->num_blocks));
        ran++;
    }
}

static void* shoal_rollout_thread(void* arg) {
    shoal_rollout_take_blocks((RolloutJob*)arg);
    return NULL;
}

typedef struct {
    Py_buffer view;
    int held;
} RolloutBuf;

static int shoal_rollout_buffer(PyObject* obj, RolloutBuf* b, const char* name, const char* formats,
                                Py_ssize_t itemsize, Py_ssize_t items, int writable) {
    if (obj == Py_None) {
        PyErr_Format(PyExc_ValueError, "vec_rollout: %s is required", name);
        return -1;
    }
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "vec_rollout: %s must be a C-contiguous%s array", name,
                     writable ? " writable" : "");
        return -1;
    }
    b->held = 1;
    const char* f = b->view.format ? b->view.format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    if (b->view.itemsize != itemsize || strchr(formats, f[0]) == NULL || f[1] != '\0') {
        PyErr_Format(PyExc_ValueError, "vec_rollout: %s has format '%s', expected one of '%s' "
                     "(itemsize %zd)", name, b->view.format, formats, itemsize);
        return -1;
    }
    if (b->view.len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "vec_rollout: %s holds %zd items, expected %zd", name,
                     b->view.len / itemsize, items);
        return -1;
    }
    return 0;
}

/* vec_rollout(h, net, first_step, T, gamma, threads, obs, actions, logprobs, values, starts,
 *             masks, rewards, dones, h, c, h0, c0, h0_next, c0_next, rng, env_masks
 *             [, action_masks[, bootstrap[, last_step[, env_lo, env_hi]]]])
 *     -> env seconds (the blocks' env stepping time over `threads`)
 * first_step 0 acts into slot 0 only; first_step in 1..T runs steps first_step..last_step
 * (last_step in first_step..T, default T) of the segment whose storage holds T steps: a segment
 * collected in several calls (chunks, each its own policy) continues from the previous call's
 * env state and the actions it left in the env's action buffer, and fills the same storage as
 * one call with the same policy. h0_next/c0_next are written by the call that reaches step T.
 * Storage arrays are the trainer's RolloutStorage tensors (numpy views): obs [S, T+1, obs] in the
 * env's dtype, actions [S, T+1, A] int64 (discrete) or float32 (Box), logprobs/values/starts/masks
 * [S, T+1] and rewards/dones [S, T] float32; h, c, h0, c0, h0_next, c0_next [S, hidden] float32
 * (None for stateless policies); rng uint64 [S]; env_masks the env's bool masks [S];
 * action_masks: None (actions unmasked) or bool [S, T+1, sum(nvec)] for an env with ACTION_MASK:
 * each slot's action mask is stored there and the policy samples from the masked logits;
 * bootstrap: None (a truncated step's gamma * V(final observation) is added to its reward) or
 * float32 [S, T]: rewards are stored raw and that term (-0.0 where there is none) goes here, for
 * the caller to add after scaling the rewards (the trainer's train.norm_reward). env_lo, env_hi
 * (default 0, num_envs): only envs [env_lo, env_hi) run, and only their rows are written; envs are
 * independent, so calls over ranges that cover the envs fill the storage as one call does
 * (train.pipeline: the learner trains on a range's rows while the next range is collected). */
static PyObject* py_vec_rollout(PyObject* self, PyObject* args) {
    (void)self;
    PyObject *capsule, *net_capsule;
    int first_step, T, threads, last_step = INT_MIN;   /* INT_MIN: not given */
    int env_lo = 0, env_hi = INT_MIN;                   /* INT_MIN: not given (all envs) */
    double gamma;
    PyObject* o[16];
    PyObject* o_amask = Py_None;
    PyObject* o_boot = Py_None;
    if (!PyArg_ParseTuple(args, "OOiidiOOOOOOOOOOOOOOOO|OOiii", &capsule, &net_capsule,
                          &first_step, &T, &gamma, &threads, &o[0], &o[1], &o[2], &o[3], &o[4],
                          &o[5], &o[6], &o[7], &o[8], &o[9], &o[10], &o[11], &o[12], &o[13],
                          &o[14], &o[15], &o_amask, &o_boot, &last_step, &env_lo, &env_hi))
        return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v) return NULL;
    const shoal_net* net = (const shoal_net*)PyCapsule_GetPointer(net_capsule, SHOAL_NET_CAPSULE);
    if (net == NULL) return NULL;
    for (int g = 0; g < SHOAL_MAX_GROUPS; g++)
        if (__atomic_load_n(&v->pending[g], __ATOMIC_ACQUIRE)) {
            PyErr_SetString(PyExc_RuntimeError, "vec_rollout: envs are stepping; recv() them first");
            return NULL;
        }
    const Py_ssize_t S = (Py_ssize_t)v->num_envs * v->agents_per_env;
    if (T < 1 || threads < 1 || threads > 256 || first_step < 0 || first_step > T) {
        PyErr_SetString(PyExc_ValueError, "vec_rollout: T >= 1, threads in [1, 256], first_step in [0, T]");
        return NULL;
    }
    if (last_step == INT_MIN) last_step = first_step == 0 ? 0 : T;
    if (env_hi == INT_MIN) env_hi = v->num_envs;
    if (env_lo < 0 || env_lo >= env_hi || env_hi > v->num_envs) {
        PyErr_Format(PyExc_ValueError, "vec_rollout: envs [%d, %d) out of range: it must be a "
                     "non-empty range within [0, %d)", env_lo, env_hi, v->num_envs);
        return NULL;
    }
    if (first_step == 0 ? last_step != 0 : (last_step < first_step || last_step > T)) {
        PyErr_Format(PyExc_ValueError, "vec_rollout: last_step %d out of range: it must be 0 with "
                     "first_step 0, else in [first_step, T] = [%d, %d]", last_step, first_step, T);
        return NULL;
    }
    if (net->obs_dtype != shoal_obs_dtype_code() || net->obs_elems != v->obs_size) {
        PyErr_Format(PyExc_ValueError, "vec_rollout: the policy reads %d observation values of dtype "
                     "code %d per agent but this env writes %d of code %d: export it for this env",
                     (int)net->obs_elems, (int)net->obs_dtype, v->obs_size, shoal_obs_dtype_code());
        return NULL;
    }
    const int box = net->head == SHOAL_HEAD_BOX;
    if (net->action_dims != v->act_size || box != (v->nvec == NULL)) {
        PyErr_SetString(PyExc_ValueError, "vec_rollout: the policy's action head does not fit this "
                        "env's action space");
        return NULL;
    }
    for (int d = 0; !box && d < v->act_size; d++)
        if (shoal_net_nvec(net, d) != v->nvec[d] ||
            (net->head == SHOAL_HEAD_DISCRETE && net->action_offset != 0)) {
            PyErr_SetString(PyExc_ValueError, "vec_rollout: the policy's action sizes differ from "
                            "this env's");
            return NULL;
        }
    const Py_ssize_t slots = (Py_ssize_t)S * (T + 1), H = net->hidden, A = net->action_dims;
    const char* obs_fmt = sizeof(OBS_TYPE) == 1 ? "Bb?" : "f";
    RolloutBuf b[16], amask, boot;
    memset(b, 0, sizeof b);
    memset(&amask, 0, sizeof amask);
    memset(&boot, 0, sizeof boot);
    RolloutJob* job = NULL;
    double env_seconds = 0.0;
    int bad = 0, failed = 0;
    static const char* names[16] = {"obs", "actions", "logprobs", "values", "starts", "masks",
                                    "rewards", "dones", "h", "c", "h0", "c0", "h0_next",
                                    "c0_next", "rng", "env_masks"};
    if (shoal_rollout_buffer(o[0], &b[0], names[0], obs_fmt, sizeof(OBS_TYPE), slots * v->obs_size, 1) ||
        shoal_rollout_buffer(o[1], &b[1], names[1], box ? "f" : "ql", box ? 4 : 8, slots * A, 1))
        goto done;
    for (int k = 2; k <= 5; k++)
        if (shoal_rollout_buffer(o[k], &b[k], names[k], "f", 4, slots, 1)) goto done;
    for (int k = 6; k <= 7; k++)
        if (shoal_rollout_buffer(o[k], &b[k], names[k], "f", 4, (Py_ssize_t)S * T, 1)) goto done;
    for (int k = 8; k <= 13; k++) {
        if (!net->lstm) continue;
        if (shoal_rollout_buffer(o[k], &b[k], names[k], "f", 4, S * H, 1)) goto done;
    }
    if (shoal_rollout_buffer(o[14], &b[14], names[14], "QL", 8, S, 1) ||
        shoal_rollout_buffer(o[15], &b[15], names[15], "?B", 1, S, 0))
        goto done;
    if (o_amask != Py_None) {
        if (!v->held[BUF_AMASK]) {
            PyErr_SetString(PyExc_ValueError, "vec_rollout: action_masks given but this env writes "
                            "no action masks: pass None");
            goto done;
        }
        if (shoal_rollout_buffer(o_amask, &amask, "action_masks", "?B", 1, slots * v->mask_size, 1))
            goto done;
    }
    if (o_boot != Py_None &&
        shoal_rollout_buffer(o_boot, &boot, "bootstrap", "f", 4, (Py_ssize_t)S * T, 1))
        goto done;
    /* The first step of a continuing segment steps the actions already in the env's action buffer
     * (the previous call's slot T, or what a resume put back from a checkpoint): bring them into
     * the checked copy the envs read, refusing out-of-range ones, as send() does. */
    if (first_step != 0 && shoal_take_actions(v, env_lo, env_hi)) goto done;
    job = (RolloutJob*)calloc(1, sizeof(RolloutJob));
    if (job == NULL) { PyErr_NoMemory(); goto done; }
    *job = (RolloutJob){v, net, first_step, last_step, T, env_lo, env_hi, (float)gamma, b[0].view.buf,
                        b[1].view.buf, b[2].view.buf, b[3].view.buf, b[4].view.buf, b[5].view.buf,
                        b[6].view.buf, b[7].view.buf, b[8].view.buf, b[9].view.buf,
                        b[10].view.buf, b[11].view.buf, b[12].view.buf, b[13].view.buf,
                        b[14].view.buf, b[15].view.buf, 0, 0, 0, {0}, {0}, {0},
                        amask.held ? (uint8_t*)amask.view.buf : NULL,
                        boot.held ? (float*)boot.view.buf : NULL};
    if (threads > env_hi - env_lo) threads = env_hi - env_lo;
    {
        long long blocks = (long long)threads * SHOAL_ROLLOUT_BLOCKS_PER_THREAD;
        if (blocks > SHOAL_ROLLOUT_MAX_BLOCKS) blocks = SHOAL_ROLLOUT_MAX_BLOCKS;
        long long most = (env_hi - env_lo) / SHOAL_ROLLOUT_MIN_BLOCK_ENVS;
        if (most < threads) most = threads;     /* (one block a thread at least) */
        if (blocks > most) blocks = most;   /* (<= the call's envs, as threads is) */
        job->num_blocks = (int)blocks;
    }
    pthread_t workers[256];
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&v->rollout_mu);     /* helpers may join from here on */
    v->rollout_job = job;
    pthread_mutex_unlock(&v->rollout_mu);
    int started[256] = {0};
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&workers[t], NULL, shoal_rollout_thread, job) == 0;
    shoal_rollout_take_blocks(job);   /* (a thread that did not start leaves its blocks here) */
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(workers[t], NULL);
    /* every block is taken: no helper joins now; wait for those still running one */
    pthread_mutex_lock(&v->rollout_mu);
    v->rollout_job = NULL;
    while (job->helpers > 0) pthread_cond_wait(&v->rollout_cv, &v->rollout_mu);
    pthread_mutex_unlock(&v->rollout_mu);
    Py_END_ALLOW_THREADS
    for (int k = 0; k < job->num_blocks; k++) {
        env_seconds += job->env_seconds[k] / threads;
        bad |= job->bad_actions[k];
        failed |= job->failed[k];
    }
    if (failed) PyErr_NoMemory();
    else if (bad)
        PyErr_SetString(PyExc_ValueError, "vec_rollout: the policy produced non-finite actions "
                        "(NaN or inf): the run diverged; those envs were given 0");
done:
    free(job);
    for (int k = 0; k < 16; k++)
        if (b[k].held) PyBuffer_Release(&b[k].view);
    if (amask.held) PyBuffer_Release(&amask.view);
    if (boot.held) PyBuffer_Release(&boot.view);
    if (PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(env_seconds);
}

/* vec_rollout_help(h) -> blocks run: if a vec_rollout call on this env is in progress (on another
 * thread), runs blocks of it that no thread has taken yet, GIL released, and returns once none is
 * left to take; 0 if no call is in progress. The storage ends the same whichever threads ran
 * which blocks (the header comment). */
static PyObject* py_vec_rollout_help(PyObject* self, PyObject* args) {
    (void)self;
    PyObject* capsule;
    if (!PyArg_ParseTuple(args, "O", &capsule)) return NULL;
    ShoalVec* v = shoal_get(capsule);
    if (!v) return NULL;
    int ran = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&v->rollout_mu);
    RolloutJob* job = (RolloutJob*)v->rollout_job;
    if (job != NULL) job->helpers++;
    pthread_mutex_unlock(&v->rollout_mu);
    if (job != NULL) {
        ran = shoal_rollout_take_blocks(job);
        pthread_mutex_lock(&v->rollout_mu);
        if (--job->helpers == 0) pthread_cond_broadcast(&v->rollout_cv);
        pthread_mutex_unlock(&v->rollout_mu);
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(ran);
}

#endif /* SHOAL_VEC_ROLLOUT_H */
