/* shoal_net.h: forward inference of shoal's built-in policies in one dependency-free C99 header.
 *
 * What it runs: the MLP, CNN and LSTM policies of shoal/trainer/policies.py (observation
 * preprocessing by scaling or one-hot codes, optionally followed by the running normalisation of
 * shoal/trainer/obs_norm.py, Linear/Conv2d layers with gelu/relu/tanh/silu, an
 * LSTM cell with resets at episode starts, actor and critic heads) and the action heads of
 * shoal/trainer/distributions.py (Discrete, MultiDiscrete, Box) with sampling from a per-agent
 * RNG or greedy choice, log-probabilities and values.
 *
 * Weights: one flat blob of little-endian 32-bit words, an int32 header describing the
 * architecture followed by float32 weights, written by shoal/net/export.py; docs/net.md gives
 * the layout word by word. shoal_net_load() checks every field, the exact size and that every
 * weight is finite, and reports a problem as a message, never by faulting.
 *
 * Uses only <math.h>, <stdint.h>, <string.h> and <stddef.h> (and the compiler's <immintrin.h>
 * where AVX and FMA are enabled, e.g. -march=native on x86; SHOAL_NET_NO_INTRINSICS turns that
 * off): no allocation, no I/O. Define
 * SHOAL_NET_FREESTANDING to need neither <math.h> nor <string.h> (the header's own logf, cosf
 * and expf; the compiler's memcpy/memset builtins), e.g. for `zig cc -target
 * wasm32-freestanding`; sampling then differs from libm's in the last bits.
 * The caller
 * owns all memory: the blob (which must outlive the net and be 4-byte aligned), the per-call
 * scratch (shoal_net_scratch_floats) and the inputs/outputs. Calls on one net are reentrant:
 * threads may run shoal_net_forward on the same net with their own scratch and rows.
 *
 * Usage:
 *     shoal_net net; char err[256];
 *     if (shoal_net_load(&net, blob, blob_bytes, err, sizeof err) != 0) { report(err); }
 *     float* scratch = ...shoal_net_scratch_floats(&net) floats...;
 *     shoal_net_forward(&net, batch, obs, starts, h, c, params, values, scratch);
 *     shoal_net_mask_logits(&net, batch, params, action_masks);   (optional: invalid actions)
 *     shoal_net_sample(&net, batch, params, rng_states, greedy, actions_i32, actions_f32, logp);
 *
 * Loops are written so the compiler vectorises them (inner loops over contiguous outputs);
 * build with -O3 and -march=native (or -mavx2 / -mavx512f) to get AVX2/AVX-512 code.
 */
#ifndef SHOAL_NET_H
#define SHOAL_NET_H

#include <stddef.h>
#include <stdint.h>
#ifndef SHOAL_NET_FREESTANDING
#include <math.h>
#include <string.h>
#define SHOAL_MEMCPY memcpy
#define SHOAL_MEMSET memset
#else
#define SHOAL_MEMCPY __builtin_memcpy
#define SHOAL_MEMSET __builtin_memset
#endif

#define SHOAL_NET_MAGIC 0x544E4853u   /* "SHNT" read as a little-endian uint32 */
#define SHOAL_NET_VERSION 2           /* 2 added the observation normalisation stage */
#define SHOAL_NET_FIXED_WORDS 24      /* header words before the nvec list (version 2) */
#define SHOAL_NET_FIXED_WORDS_V1 23   /* ... in a version 1 blob (no obs_norm word) */
#define SHOAL_NET_MAX_LAYERS 16       /* MLP layers; CNN convolutions (strided + 2) */
#define SHOAL_NET_TILE 16             /* rows evaluated together (weights reused from cache) */
#define SHOAL_NET_MAX_DIM (1 << 24)   /* any one size (elements, widths) */

enum { SHOAL_ENC_MLP = 0, SHOAL_ENC_CNN = 1 };
enum { SHOAL_ACT_GELU = 0, SHOAL_ACT_RELU = 1, SHOAL_ACT_TANH = 2, SHOAL_ACT_SILU = 3 };
enum { SHOAL_HEAD_DISCRETE = 0, SHOAL_HEAD_MULTIDISCRETE = 1, SHOAL_HEAD_BOX = 2 };
enum {
    SHOAL_OBS_F32 = 0, SHOAL_OBS_F64 = 1, SHOAL_OBS_U8 = 2, SHOAL_OBS_I8 = 3, SHOAL_OBS_U16 = 4,
    SHOAL_OBS_I16 = 5, SHOAL_OBS_U32 = 6, SHOAL_OBS_I32 = 7, SHOAL_OBS_I64 = 8,
    SHOAL_OBS_TYPES = 9
};

#define SHOAL_LOG_STD_MIN (-20.0f)
#define SHOAL_LOG_STD_MAX 2.0f
#define SHOAL_HALF_LOG_2PI 0.91893853320467274f
#define SHOAL_TWO_PI 6.28318530717958648f

typedef struct {
    const float* weight;   /* Linear: [in][out] (transposed); conv: [3][3][in_c][out_c] */
    const float* bias;     /* [out] */
    int32_t in, out;
} shoal_layer;

typedef struct {
    /* architecture (header words) */
    int32_t encoder, lstm, shared, activation, hidden;
    int32_t obs_dtype, obs_ndim, obs_shape[3], levels, obs_offset;
    int32_t mlp_layers, channels, strided;
    int32_t head, num_params, action_dims, action_offset;
    int32_t obs_norm;            /* 1: running observation normalisation after the scale */
    const int32_t* nvec_words;   /* [action_dims] for discrete heads, in the blob (may be
                                    unaligned for int32: read with shoal_net_nvec) */
    /* derived */
    int32_t obs_elems, obs_item_bytes, in_features;   /* in_features: encoder input width */
    int32_t image_h, image_w, image_c;                  /* CNN input (channels last) */
    int32_t conv_count, conv_h[SHOAL_NET_MAX_LAYERS + 1], conv_w[SHOAL_NET_MAX_LAYERS + 1];
    int32_t conv_stride[SHOAL_NET_MAX_LAYERS];
    int32_t max_width, max_group;
    int32_t uniform_nvec;   /* every action dimension has the same size (torch's batched path) */
    /* weights (pointers into the blob) */
    const float* scale;                                 /* [obs_elems] when levels == 0 */
    const float* norm_mean;                             /* [obs_elems] when obs_norm */
    const float* norm_inv_std;                          /* [obs_elems] when obs_norm */
    float norm_clip;                                    /* when obs_norm: |output| <= clip */
    shoal_layer mlp[SHOAL_NET_MAX_LAYERS];              /* MLP encoder */
    shoal_layer critic_mlp[SHOAL_NET_MAX_LAYERS];       /* separate critic encoder */
    shoal_layer conv[SHOAL_NET_MAX_LAYERS];
    shoal_layer project;                                /* CNN flatten (HWC order) -> hidden */
    const float* w_ih;                                  /* [hidden][4 hidden] */
    const float* w_hh;                                  /* [hidden][4 hidden] */
    const float* b_ih;                                  /* [4 hidden] */
    const float* b_hh;                                  /* [4 hidden] */
    shoal_layer actor;                                  /* hidden -> num_params (box: d) */
    const float* log_std;                               /* [d] for Box */
    const float* low;                                   /* [d] for Box: env bounds */
    const float* high;
    shoal_layer critic;                                 /* hidden -> 1 */
    int64_t num_floats;
} shoal_net;

/* ---------------------------------------------------------------------------------------------
 * Small helpers (no stdio: messages are built by hand)
 * ------------------------------------------------------------------------------------------- */

#define SHOAL__NO_NUMBER INT64_MIN

static void shoal__err(char* err, size_t errlen, const char* a, int64_t n, const char* b) {
    if (err == NULL || errlen == 0) return;
    size_t k = 0;
    for (const char* s = a; s && *s && k + 1 < errlen; s++) err[k++] = *s;
    if (n != SHOAL__NO_NUMBER) {
        char digits[24];
        int d = 0;
        uint64_t v = n < 0 ? (uint64_t)(-(n + 1)) + 1u : (uint64_t)n;
        if (n < 0 && k + 1 < errlen) err[k++] = '-';
        do { digits[d++] = (char)('0' + (int)(v % 10u)); v /= 10u; } while (v && d < 24);
        while (d > 0 && k + 1 < errlen) err[k++] = digits[--d];
    }
    for (const char* s = b; s && *s && k + 1 < errlen; s++) err[k++] = *s;
    err[k] = '\0';
}

static inline int32_t shoal__word(const unsigned char* p, int64_t i) {
    uint32_t v;
    SHOAL_MEMCPY(&v, p + 4 * i, 4);   /* little-endian hosts (x86, ARM, wasm) */
    return (int32_t)v;
}

/* Action-dimension sizes of a discrete head. */
static inline int32_t shoal_net_nvec(const shoal_net* net, int32_t k) {
    return shoal__word((const unsigned char*)net->nvec_words, k);
}

static inline int shoal__is_finite(float x) { return x - x == 0.0f; }

static const int32_t shoal__obs_sizes[SHOAL_OBS_TYPES] = {4, 8, 1, 1, 2, 2, 4, 4, 8};

/* ---------------------------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------------------------- */

/* Parses and checks a blob. Returns 0 on success, -1 with a message in err otherwise. The net
 * keeps pointers into `blob`, which must stay alive and be 4-byte aligned. */
static int shoal_net_load(shoal_net* net, const void* blob, size_t nbytes, char* err,
                          size_t errlen) {
    const unsigned char* p = (const unsigned char*)blob;
    SHOAL_MEMSET(net, 0, sizeof *net);
    if (blob == NULL) { shoal__err(err, errlen, "weights: no data", SHOAL__NO_NUMBER, ""); return -1; }
    if (((uintptr_t)blob) % 4 != 0) {
        shoal__err(err, errlen, "weights: the blob must be 4-byte aligned", SHOAL__NO_NUMBER, "");
        return -1;
    }
    if (nbytes % 4 != 0 || nbytes < 4 * SHOAL_NET_FIXED_WORDS_V1) {
        shoal__err(err, errlen, "weights: ", (int64_t)nbytes,
                   " bytes is not a shoal net blob (too short or not whole 32-bit words); "
                   "write it with shoal.net.export");
        return -1;
    }
    int64_t words = (int64_t)(nbytes / 4);
    if ((uint32_t)shoal__word(p, 0) != SHOAL_NET_MAGIC) {
        shoal__err(err, errlen, "weights: wrong magic number (not a shoal net blob); write it "
                   "with shoal.net.export", SHOAL__NO_NUMBER, "");
        return -1;
    }
    int32_t version = shoal__word(p, 1);
    if (version != SHOAL_NET_VERSION && version != 1) {
        shoal__err(err, errlen, "weights: layout version ", version,
                   " is not a version this header reads (1 or 2); re-export with the matching "
                   "shoal.net.export");
        return -1;
    }
    /* version 1 blobs (written before the obs_norm word existed) load without normalisation */
    const int32_t fixed_words = version == 1 ? SHOAL_NET_FIXED_WORDS_V1 : SHOAL_NET_FIXED_WORDS;
    int32_t header_words = shoal__word(p, 2);
    int32_t num_floats = shoal__word(p, 3);
    if (header_words < fixed_words || header_words > words || num_floats < 0) {
        shoal__err(err, errlen, "weights: header length ", header_words,
                   " words does not fit the blob (corrupt or truncated file)");
        return -1;
    }
    if ((int64_t)header_words + num_floats != words) {
        shoal__err(err, errlen, "weights: size mismatch: the header announces ",
                   (int64_t)header_words + num_floats, " words but the blob holds a different "
                   "number (truncated or padded file)");
        return -1;
    }
    net->encoder = shoal__word(p, 4);
    net->lstm = shoal__word(p, 5);
    net->shared = shoal__word(p, 6);
    net->activation = shoal__word(p, 7);
    net->hidden = shoal__word(p, 8);
    net->obs_dtype = shoal__word(p, 9);
    net->obs_ndim = shoal__word(p, 10);
    for (int i = 0; i < 3; i++) net->obs_shape[i] = shoal__word(p, 11 + i);
    net->levels = shoal__word(p, 14);
    net->obs_offset = shoal__word(p, 15);
    net->mlp_layers = shoal__word(p, 16);
    net->channels = shoal__word(p, 17);
    net->strided = shoal__word(p, 18);
    net->head = shoal__word(p, 19);
    net->num_params = shoal__word(p, 20);
    net->action_dims = shoal__word(p, 21);
    net->action_offset = shoal__word(p, 22);
    net->obs_norm = version == 1 ? 0 : shoal__word(p, 23);

#define SHOAL__CHECK(cond, a, n, b) \
    do { if (!(cond)) { shoal__err(err, errlen, a, (int64_t)(n), b); return -1; } } while (0)
    SHOAL__CHECK(net->encoder == SHOAL_ENC_MLP || net->encoder == SHOAL_ENC_CNN,
                 "weights: unknown encoder kind ", net->encoder, " (0 = MLP, 1 = CNN)");
    SHOAL__CHECK(net->lstm == 0 || net->lstm == 1, "weights: lstm flag ", net->lstm,
                 " must be 0 or 1");
    SHOAL__CHECK(net->shared == 0 || net->shared == 1, "weights: shared flag ", net->shared,
                 " must be 0 or 1");
    SHOAL__CHECK(net->shared == 1 || (net->encoder == SHOAL_ENC_MLP && !net->lstm),
                 "weights: a separate critic encoder exists only for the MLP policy", SHOAL__NO_NUMBER, "");
    SHOAL__CHECK(net->activation >= 0 && net->activation <= SHOAL_ACT_SILU,
                 "weights: unknown activation ", net->activation,
                 " (0 gelu, 1 relu, 2 tanh, 3 silu)");
    SHOAL__CHECK(net->hidden >= 1 && net->hidden <= 65536, "weights: hidden width ",
                 net->hidden, " out of range [1, 65536]");
    SHOAL__CHECK(net->obs_dtype >= 0 && net->obs_dtype < SHOAL_OBS_TYPES,
                 "weights: unknown observation dtype code ", net->obs_dtype, "");
    SHOAL__CHECK(net->obs_ndim >= 0 && net->obs_ndim <= 3, "weights: observation rank ",
                 net->obs_ndim, " out of range [0, 3]");
    int64_t elems = 1;
    for (int i = 0; i < 3; i++) {
        int32_t s = net->obs_shape[i];
        SHOAL__CHECK(i < net->obs_ndim ? (s >= 1 && s <= SHOAL_NET_MAX_DIM) : s == 1,
                     "weights: observation shape entry ", s, " is invalid");
        elems *= s;
    }
    SHOAL__CHECK(elems <= SHOAL_NET_MAX_DIM, "weights: ", elems, " observation elements is "
                 "too many");
    SHOAL__CHECK(net->levels >= 0 && net->levels <= 65536, "weights: one-hot levels ",
                 net->levels, " out of range [0, 65536]");
    int64_t in_features = elems * (net->levels ? net->levels : 1);
    SHOAL__CHECK(in_features <= SHOAL_NET_MAX_DIM, "weights: ", in_features,
                 " input features is too many");
    net->obs_elems = (int32_t)elems;
    net->obs_item_bytes = shoal__obs_sizes[net->obs_dtype];
    net->in_features = (int32_t)in_features;
    SHOAL__CHECK(net->obs_norm == 0 || net->obs_norm == 1, "weights: obs_norm flag ",
                 net->obs_norm, " must be 0 or 1");
    SHOAL__CHECK(net->obs_norm == 0 || net->levels == 0, "weights: observation normalisation "
                 "needs scaled observations, but levels is ", net->levels, " (one-hot codes)");
    SHOAL__CHECK(net->head >= 0 && net->head <= SHOAL_HEAD_BOX, "weights: unknown action head ",
                 net->head, " (0 Discrete, 1 MultiDiscrete, 2 Box)");
    SHOAL__CHECK(net->action_dims >= 1 && net->action_dims <= 65536, "weights: ",
                 net->action_dims, " action dimensions is out of range [1, 65536]");
    SHOAL__CHECK(net->head != SHOAL_HEAD_DISCRETE || net->action_dims == 1,
                 "weights: a Discrete head has one action dimension, not ", net->action_dims, "");
    int64_t want_header = fixed_words + (net->head == SHOAL_HEAD_BOX ? 0 : net->action_dims);
    SHOAL__CHECK(header_words == want_header, "weights: header has ", header_words,
                 " words but this action head needs a different number (wrong layout)");
    int64_t actor_out;
    if (net->head == SHOAL_HEAD_BOX) {
        SHOAL__CHECK(net->num_params == 2 * net->action_dims, "weights: a Box head needs 2*d "
                     "action parameters, got ", net->num_params, "");
        actor_out = net->action_dims;
        net->max_group = 1;
    } else {
        net->nvec_words = (const int32_t*)(const void*)(p + 4 * (int64_t)fixed_words);
        int64_t total = 0;
        int32_t max_group = 1;
        for (int32_t k = 0; k < net->action_dims; k++) {
            int32_t n = shoal_net_nvec(net, k);
            SHOAL__CHECK(n >= 1 && n <= SHOAL_NET_MAX_DIM, "weights: action dimension size ", n,
                         " is invalid");
            total += n;
            if (n > max_group) max_group = n;
        }
        SHOAL__CHECK(total == net->num_params, "weights: the action sizes add up to a different "
                     "number of logits than num_params ", net->num_params, "");
        actor_out = total;
        net->max_group = max_group;
        net->uniform_nvec = 1;
        for (int32_t k = 1; k < net->action_dims; k++)
            if (shoal_net_nvec(net, k) != shoal_net_nvec(net, 0)) net->uniform_nvec = 0;
    }
    SHOAL__CHECK(net->num_params >= 1 && net->num_params <= SHOAL_NET_MAX_DIM,
                 "weights: num_params ", net->num_params, " out of range");

    /* weights, in the documented order */
    const float* f = (const float*)(const void*)(p + 4 * (int64_t)header_words);
    int64_t used = 0;
    int64_t max_width = in_features;
#define SHOAL__TAKE(ptr, count)                                                        \
    do {                                                                               \
        int64_t n_ = (int64_t)(count);                                                 \
        SHOAL__CHECK(used + n_ <= num_floats, "weights: the blob has ", num_floats,    \
                     " weights, fewer than the architecture in its header needs "      \
                     "(wrong layout or truncated)");                                   \
        (ptr) = f + used;                                                              \
        used += n_;                                                                    \
    } while (0)
    if (net->levels == 0) SHOAL__TAKE(net->scale, elems);
    const float* norm_clip = NULL;
    if (net->obs_norm) {
        SHOAL__TAKE(net->norm_mean, elems);
        SHOAL__TAKE(net->norm_inv_std, elems);
        SHOAL__TAKE(norm_clip, 1);
    }
    if (net->encoder == SHOAL_ENC_MLP) {
        SHOAL__CHECK(net->mlp_layers >= 1 && net->mlp_layers <= SHOAL_NET_MAX_LAYERS,
                     "weights: MLP layers ", net->mlp_layers, " out of range [1, 16]");
        for (int pass = 0; pass < (net->shared ? 1 : 2); pass++) {
            shoal_layer* layers = pass == 0 ? net->mlp : net->critic_mlp;
            int64_t width = in_features;
            for (int32_t l = 0; l < net->mlp_layers; l++) {
                layers[l].in = (int32_t)width;
                layers[l].out = net->hidden;
                SHOAL__TAKE(layers[l].weight, width * net->hidden);
                SHOAL__TAKE(layers[l].bias, net->hidden);
                width = net->hidden;
            }
        }
    } else {
        SHOAL__CHECK(net->obs_ndim == 2 || net->obs_ndim == 3, "weights: the CNN encoder needs "
                     "[H, W] or [H, W, C] observations, got rank ", net->obs_ndim, "");
        SHOAL__CHECK(net->channels >= 1 && net->channels <= 4096, "weights: CNN channels ",
                     net->channels, " out of range [1, 4096]");
        SHOAL__CHECK(net->strided >= 0 && net->strided + 2 <= SHOAL_NET_MAX_LAYERS,
                     "weights: ", net->strided, " strided convolutions is out of range");
        net->image_h = net->obs_shape[0];
        net->image_w = net->obs_shape[1];
        net->image_c = (net->obs_ndim == 3 ? net->obs_shape[2] : 1) * (net->levels ? net->levels : 1);
        net->conv_count = net->strided + 2;
        int32_t h = net->image_h, w = net->image_w, c = net->image_c;
        net->conv_h[0] = h;
        net->conv_w[0] = w;
        for (int32_t l = 0; l < net->conv_count; l++) {
            int32_t stride = l < net->strided ? 2 : 1;
            net->conv_stride[l] = stride;
            net->conv[l].in = c;
            net->conv[l].out = net->channels;
            SHOAL__TAKE(net->conv[l].weight, (int64_t)9 * c * net->channels);
            SHOAL__TAKE(net->conv[l].bias, net->channels);
            if (stride == 2) { h = (h + 1) / 2; w = (w + 1) / 2; }
            c = net->channels;
            net->conv_h[l + 1] = h;
            net->conv_w[l + 1] = w;
            int64_t width = (int64_t)h * w * c;
            SHOAL__CHECK(width <= SHOAL_NET_MAX_DIM, "weights: CNN feature map of ", width,
                         " values is too large");
            if (width > max_width) max_width = width;
        }
        int64_t flat = (int64_t)h * w * c;
        net->project.in = (int32_t)flat;
        net->project.out = net->hidden;
        SHOAL__TAKE(net->project.weight, flat * net->hidden);
        SHOAL__TAKE(net->project.bias, net->hidden);
    }
    if (net->lstm) {
        int64_t H = net->hidden;
        SHOAL__TAKE(net->w_ih, H * 4 * H);
        SHOAL__TAKE(net->w_hh, H * 4 * H);
        SHOAL__TAKE(net->b_ih, 4 * H);
        SHOAL__TAKE(net->b_hh, 4 * H);
    }
    net->actor.in = net->hidden;
    net->actor.out = (int32_t)actor_out;
    SHOAL__TAKE(net->actor.weight, net->hidden * actor_out);
    SHOAL__TAKE(net->actor.bias, actor_out);
    if (net->head == SHOAL_HEAD_BOX) {
        SHOAL__TAKE(net->log_std, net->action_dims);
        SHOAL__TAKE(net->low, net->action_dims);
        SHOAL__TAKE(net->high, net->action_dims);
    }
    net->critic.in = net->hidden;
    net->critic.out = 1;
    SHOAL__TAKE(net->critic.weight, net->hidden);
    SHOAL__TAKE(net->critic.bias, 1);
#undef SHOAL__TAKE
    SHOAL__CHECK(used == num_floats, "weights: the blob has ", num_floats,
                 " weights, more than the architecture in its header needs (wrong layout)");
    int64_t bounds_start = net->head == SHOAL_HEAD_BOX ? (net->low - f) : -1;
    for (int64_t i = 0; i < num_floats; i++) {
        /* Box bounds may be infinite (an unbounded action space); every weight must be finite */
        if (bounds_start >= 0 && i >= bounds_start && i < bounds_start + 2 * net->action_dims)
            continue;
        SHOAL__CHECK(shoal__is_finite(f[i]), "weights: weight ", i,
                     " is NaN or infinite (a diverged run? export an earlier checkpoint)");
    }
    if (norm_clip != NULL) {
        net->norm_clip = *norm_clip;
        SHOAL__CHECK(net->norm_clip > 0.0f, "weights: the observation normalisation clip must "
                     "be positive (wrong layout)", SHOAL__NO_NUMBER, "");
    }
    if (net->hidden > max_width) max_width = net->hidden;
    if (4 * (int64_t)net->hidden > max_width) max_width = 4 * (int64_t)net->hidden;
    if (net->num_params > max_width) max_width = net->num_params;
    net->max_width = (int32_t)max_width;
    net->num_floats = num_floats;
#undef SHOAL__CHECK
    return 0;
}

/* Floats of scratch one shoal_net_forward call needs (any batch size). */
static inline int64_t shoal_net_scratch_floats(const shoal_net* net) {
    return (int64_t)SHOAL_NET_TILE * (4 * (int64_t)net->max_width + 4 * (int64_t)net->hidden);
}

/* ---------------------------------------------------------------------------------------------
 * Layers
 * ------------------------------------------------------------------------------------------- */

/* One multiply-add a * b + c. Where the target has fused multiply-add (x86 FMA3, ARM) it is
 * fused: one instruction and one rounding instead of two. Spelled out with the builtin because
 * GCC in ISO C mode (-std=c11) does not contract a * b + c on its own (-ffp-contract=off). Every
 * product of the linear layers goes through this macro, so all paths (register blocks of any row
 * count, the column tail, the critic head) round alike within one build; so do the polynomials
 * of exp and erf. Targets without FMA (baseline x86-64, wasm) keep the separate multiply and
 * add. */
#if defined(__GNUC__) && (defined(__FMA__) || defined(__ARM_FEATURE_FMA))
#define SHOAL__MADD(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define SHOAL__MADD(a, b, c) ((a) * (b) + (c))
#endif

/* exp(x) in a form the compiler vectorises (libm's expf is a call per element): x = n ln2 + r,
 * |r| <= ln2/2, e^r by a degree-6 polynomial (relative error ~2e-7, like expf's), 2^n written
 * into the exponent bits. The argument is clamped to the finite range; NaN stays NaN. n is read
 * from the bits of x log2(e) + 1.5 * 2^23 (no float-to-int conversion, undefined for NaN). */
static inline float shoal__exp(float x) {
    const float shift = 12582912.0f;
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    const float t = SHOAL__MADD(x, 1.44269504088896341f, shift);
    const float n = t - shift;
    float r = SHOAL__MADD(n, -0.693359375f, x);
    r = SHOAL__MADD(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = SHOAL__MADD(p, r, 1.3981999507e-3f);
    p = SHOAL__MADD(p, r, 8.3334519073e-3f);
    p = SHOAL__MADD(p, r, 4.1665795894e-2f);
    p = SHOAL__MADD(p, r, 1.6666665459e-1f);
    p = SHOAL__MADD(p, r, 5.0000001201e-1f);
    p = SHOAL__MADD(p * r, r, r) + 1.0f;
    uint32_t bits;
    SHOAL_MEMCPY(&bits, &t, 4);
    bits = (bits - 0x4B400000u + 127u) << 23;   /* n + 127 in the exponent field */
    float scale;
    SHOAL_MEMCPY(&scale, &bits, 4);
    return p * scale;
}

/* erf(x) (Abramowitz & Stegun 7.1.26, absolute error <= 1.5e-7) with the vectorisable exp. */
static inline float shoal__erf(float x) {
    const float a = x < 0.0f ? -x : x;
    const float t = 1.0f / SHOAL__MADD(0.3275911f, a, 1.0f);
    float p = 1.061405429f;
    p = SHOAL__MADD(p, t, -1.453152027f);
    p = SHOAL__MADD(p, t, 1.421413741f);
    p = SHOAL__MADD(p, t, -0.284496736f);
    p = SHOAL__MADD(p, t, 0.254829592f);
    const float e = SHOAL__MADD(-p * t, shoal__exp(-a * a), 1.0f);
    return x < 0.0f ? -e : e;
}

static inline float shoal__sigmoid(float x) { return 1.0f / (1.0f + shoal__exp(-x)); }

/* tanh(x) = 1 - 2 / (e^(2x) + 1); below |x| = 2^-6 the series x - x^3/3 keeps the relative
 * error small where the formula would cancel. */
static inline float shoal__tanh(float x) {
    const float big = 1.0f - 2.0f / (shoal__exp(2.0f * x) + 1.0f);
    const float small = x - x * x * x * (1.0f / 3.0f);
    return (x < 0.015625f && x > -0.015625f) ? small : big;
}

/* The three libm functions sampling uses: libm's, or with SHOAL_NET_FREESTANDING the header's own
 * (log: m in [sqrt(1/2), sqrt(2)) times 2^e, log m = 2 atanh((m - 1)/(m + 1)) by its series;
 * cos: reduced to [-pi/4, pi/4] by quarter turns, then the sin or cos polynomial). */
#ifdef SHOAL_NET_FREESTANDING
static inline float shoal__logf(float x) {
    if (!(x > 0.0f)) return x == 0.0f ? -1.0f / 0.0f : 0.0f / 0.0f;
    if (x - x != 0.0f) return x;              /* +inf */
    uint32_t bits;
    SHOAL_MEMCPY(&bits, &x, 4);
    int32_t e = (int32_t)((bits >> 23) & 0xFFu) - 127;
    if (((bits >> 23) & 0xFFu) == 0) {        /* subnormal: scale into the normal range */
        x *= 16777216.0f;
        SHOAL_MEMCPY(&bits, &x, 4);
        e = (int32_t)((bits >> 23) & 0xFFu) - 127 - 24;
    }
    bits = (bits & 0x007FFFFFu) | 0x3F800000u;  /* m in [1, 2) */
    float m;
    SHOAL_MEMCPY(&m, &bits, 4);
    if (m > 1.41421356f) { m *= 0.5f; e += 1; }
    const float z = (m - 1.0f) / (m + 1.0f), z2 = z * z;
    const float series = z * (2.0f + z2 * (0.666666667f + z2 * (0.4f + z2 * (0.285714286f
                             + z2 * 0.222222222f))));
    return series + (float)e * 0.693147181f;
}
static inline float shoal__cosf(float x) {
    const float k = (float)(int64_t)(x * 0.636619772f + (x < 0.0f ? -0.5f : 0.5f));
    float r = x - k * 1.57079625f;
    r = r - k * 7.54978942e-08f;
    const float r2 = r * r;
    const float c = 1.0f + r2 * (-0.5f + r2 * (4.16666418e-02f + r2 * (-1.38873163e-03f
                        + r2 * 2.44331571e-05f)));
    const float sn = r * (1.0f + r2 * (-1.66666657e-01f + r2 * (8.33216087e-03f
                         + r2 * -1.95152959e-04f)));
    switch (((int64_t)k) & 3) {
        case 0: return c;
        case 1: return -sn;
        case 2: return -c;
        default: return sn;
    }
}
#define shoal__expf shoal__exp
#define shoal__sqrtf __builtin_sqrtf
#else
#define shoal__logf logf
#define shoal__cosf cosf
#define shoal__expf expf
#define shoal__sqrtf sqrtf
#endif

static void shoal__activate(int kind, float* x, int64_t n) {
    switch (kind) {
        case SHOAL_ACT_GELU:
            for (int64_t i = 0; i < n; i++)
                x[i] = 0.5f * x[i] * (1.0f + shoal__erf(x[i] * 0.70710678118654752f));
            break;
        case SHOAL_ACT_RELU:
            for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
            break;
        case SHOAL_ACT_TANH:
            for (int64_t i = 0; i < n; i++) x[i] = shoal__tanh(x[i]);
            break;
        default:
            for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + shoal__exp(-x[i]));
            break;
    }
}

/* Inputs summed per block before a block's sum is added to the output: a long dot product
 * (a CNN projection has thousands of inputs) then rounds like a blocked BLAS sum, not like one
 * running float sum (measured: twice torch's float32 error without it). */
#define SHOAL_NET_SUM_BLOCK 32


/* Output columns and rows one register block of the product covers: 4 rows, so each weight
 * vector loaded feeds 4 rows' multiply-adds. With AVX and FMA (x86) the block is written with
 * intrinsics over 8-float vectors: 4 rows x 32 columns is 16 accumulator registers of the 32
 * that AVX-512VL gives, 4 x 16 is 8 of AVX2's 16. Elsewhere (baseline x86-64, ARM, wasm) the
 * portable loop below, which the compiler vectorises, covers 4 x 32. The column blocking does
 * not change any sum's order, only which outputs are computed together. Measured on an MLP-128
 * forward (thread CPU time; BENCHMARKS.md "C policy kernel"). */
#if defined(__GNUC__) && defined(__AVX__) && defined(__FMA__) && !defined(SHOAL_NET_NO_INTRINSICS)
#include <immintrin.h>
#define SHOAL__X86_BLOCK 1
#if defined(__AVX512VL__)
#define SHOAL__X86_VECS 4     /* 8-float vectors per row of a block */
#else
#define SHOAL__X86_VECS 2
#endif
#define SHOAL_NET_BLOCK_COLS (8 * SHOAL__X86_VECS)
#else
#define SHOAL__X86_BLOCK 0
#define SHOAL_NET_BLOCK_COLS 32
#endif
#define SHOAL_NET_BLOCK_ROWS 4

/* y[r][o0:o0+COLS] += x[r] W[:, o0:o0+COLS] for K rows (4, 2 or 1), summed per block of
 * SHOAL_NET_SUM_BLOCK inputs in registers and each block's sum added to y (the order every path
 * of shoal__linear uses, so a row's result never depends on which path or tile it took). With
 * skip, inputs that are zero in all K rows are skipped (one-hot inputs; adding 0 * w changes no
 * sum). */
#define SHOAL__BLOCK_KERNEL(K)                                                                   \
    static inline void shoal__block##K(const float* weight, int32_t in, int32_t out, const float* x,     \
                                float* y, int32_t o0, int skip) {                                \
        for (int32_t i0 = 0; i0 < in; i0 += SHOAL_NET_SUM_BLOCK) {                               \
            const int32_t i1 = in - i0 < SHOAL_NET_SUM_BLOCK ? in : i0 + SHOAL_NET_SUM_BLOCK;    \
            float acc[K][SHOAL_NET_BLOCK_COLS];                                                  \
            for (int k = 0; k < K; k++)                                                          \
                for (int o = 0; o < SHOAL_NET_BLOCK_COLS; o++) acc[k][o] = 0.0f;                 \
            for (int32_t i = i0; i < i1; i++) {                                                  \
                float xs[K];                                                                     \
                int any = 0;                                                                     \
                for (int k = 0; k < K; k++) {                                                    \
                    xs[k] = x[(int64_t)k * in + i];                                              \
                    any |= xs[k] != 0.0f;                                                        \
                }                                                                                \
                if (skip && !any) continue;                                                      \
                const float* w = weight + (int64_t)i * out + o0;                                 \
                for (int k = 0; k < K; k++)                                                      \
                    for (int o = 0; o < SHOAL_NET_BLOCK_COLS; o++)                               \
                        acc[k][o] = SHOAL__MADD(xs[k], w[o], acc[k][o]);                         \
            }                                                                                    \
            for (int k = 0; k < K; k++)                                                          \
                for (int o = 0; o < SHOAL_NET_BLOCK_COLS; o++)                                   \
                    y[(int64_t)k * out + o0 + o] += acc[k][o];                                   \
        }                                                                                        \
    }
SHOAL__BLOCK_KERNEL(4)
SHOAL__BLOCK_KERNEL(1)
#undef SHOAL__BLOCK_KERNEL

#if SHOAL__X86_BLOCK
/* shoal__block4 with AVX/FMA intrinsics: the same fused multiply-adds in the same order (one
 * rounding each, as __builtin_fmaf), the accumulators held in registers explicitly. */
static inline void shoal__block4_x86(const float* weight, int32_t in, int32_t out, const float* x,
                              float* y, int32_t o0, int skip) {
    const float* x0 = x;
    const float* x1 = x + in;
    const float* x2 = x + 2 * (int64_t)in;
    const float* x3 = x + 3 * (int64_t)in;
    for (int32_t i0 = 0; i0 < in; i0 += SHOAL_NET_SUM_BLOCK) {
        const int32_t i1 = in - i0 < SHOAL_NET_SUM_BLOCK ? in : i0 + SHOAL_NET_SUM_BLOCK;
        __m256 a0[SHOAL__X86_VECS], a1[SHOAL__X86_VECS], a2[SHOAL__X86_VECS], a3[SHOAL__X86_VECS];
        for (int n = 0; n < SHOAL__X86_VECS; n++)
            a0[n] = a1[n] = a2[n] = a3[n] = _mm256_setzero_ps();
        for (int32_t i = i0; i < i1; i++) {
            if (skip && x0[i] == 0.0f && x1[i] == 0.0f && x2[i] == 0.0f && x3[i] == 0.0f) continue;
            const float* w = weight + (int64_t)i * out + o0;
            const __m256 b0 = _mm256_broadcast_ss(x0 + i), b1 = _mm256_broadcast_ss(x1 + i);
            const __m256 b2 = _mm256_broadcast_ss(x2 + i), b3 = _mm256_broadcast_ss(x3 + i);
            for (int n = 0; n < SHOAL__X86_VECS; n++) {
                const __m256 wv = _mm256_loadu_ps(w + 8 * n);
                a0[n] = _mm256_fmadd_ps(b0, wv, a0[n]);
                a1[n] = _mm256_fmadd_ps(b1, wv, a1[n]);
                a2[n] = _mm256_fmadd_ps(b2, wv, a2[n]);
                a3[n] = _mm256_fmadd_ps(b3, wv, a3[n]);
            }
        }
        for (int n = 0; n < SHOAL__X86_VECS; n++) {
            float* y0 = y + o0 + 8 * n;
            _mm256_storeu_ps(y0, _mm256_add_ps(_mm256_loadu_ps(y0), a0[n]));
            _mm256_storeu_ps(y0 + out, _mm256_add_ps(_mm256_loadu_ps(y0 + out), a1[n]));
            _mm256_storeu_ps(y0 + 2 * (int64_t)out, _mm256_add_ps(_mm256_loadu_ps(y0 + 2 * (int64_t)out), a2[n]));
            _mm256_storeu_ps(y0 + 3 * (int64_t)out, _mm256_add_ps(_mm256_loadu_ps(y0 + 3 * (int64_t)out), a3[n]));
        }
    }
}
#define SHOAL__BLOCK4 shoal__block4_x86
#else
#define SHOAL__BLOCK4 shoal__block4
#endif

/* y[r] = b + x[r] W for `rows` (<= SHOAL_NET_TILE) rows; x is [rows][in] (row stride in), y
 * [rows][out]. Weights are stored [in][out], so the register blocks run over contiguous
 * outputs. The zero-skipping kernels are used when at least a quarter of the inputs are zero
 * (one-hot observations); dense inputs (scaled observations, hidden activations) go without
 * the per-input test. Columns past the last full register block (the heads: a few logits, the
 * value) are summed per column with the rows side by side (the x block transposed, so the row
 * loop vectorises), in the same order. */
static void shoal__linear(const shoal_layer* L, const float* x, float* y, int rows) {
    const int32_t in = L->in, out = L->out;
    for (int r = 0; r < rows; r++) SHOAL_MEMCPY(y + (int64_t)r * out, L->bias, sizeof(float) * (size_t)out);
    int32_t o0 = 0;
    if (out >= SHOAL_NET_BLOCK_COLS) {
        int32_t zeros = 0;   /* rows * in <= 16 * 2^24 */
        const int32_t n = rows * in;
        for (int32_t e = 0; e < n; e++) zeros += x[e] == 0.0f;
        const int skip = 4 * zeros >= n;
        for (; o0 + SHOAL_NET_BLOCK_COLS <= out; o0 += SHOAL_NET_BLOCK_COLS) {
            int r = 0;
            /* skip as a constant in each call, so the kernel is compiled without the test */
            if (skip)
                for (; r + SHOAL_NET_BLOCK_ROWS <= rows; r += SHOAL_NET_BLOCK_ROWS)
                    SHOAL__BLOCK4(L->weight, in, out, x + (int64_t)r * in, y + (int64_t)r * out,
                                  o0, 1);
            else
                for (; r + SHOAL_NET_BLOCK_ROWS <= rows; r += SHOAL_NET_BLOCK_ROWS)
                    SHOAL__BLOCK4(L->weight, in, out, x + (int64_t)r * in, y + (int64_t)r * out,
                                  o0, 0);
            for (; r < rows; r++)
                shoal__block1(L->weight, in, out, x + (int64_t)r * in, y + (int64_t)r * out, o0,
                              skip);
        }
    }
    if (o0 == out) return;
    float xt[SHOAL_NET_SUM_BLOCK][SHOAL_NET_TILE];
    float sums[SHOAL_NET_TILE];
    for (int32_t i0 = 0; i0 < in; i0 += SHOAL_NET_SUM_BLOCK) {
        const int32_t i1 = in - i0 < SHOAL_NET_SUM_BLOCK ? in : i0 + SHOAL_NET_SUM_BLOCK;
        for (int32_t i = i0; i < i1; i++)
            for (int r = 0; r < SHOAL_NET_TILE; r++)
                xt[i - i0][r] = r < rows ? x[(int64_t)r * in + i] : 0.0f;
        for (int32_t o = o0; o < out; o++) {
#if SHOAL__X86_BLOCK && SHOAL_NET_TILE == 16
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            for (int32_t i = i0; i < i1; i++) {
                const __m256 w = _mm256_broadcast_ss(L->weight + (int64_t)i * out + o);
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(xt[i - i0]), w, s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(xt[i - i0] + 8), w, s1);
            }
            _mm256_storeu_ps(sums, s0);
            _mm256_storeu_ps(sums + 8, s1);
#else
            for (int r = 0; r < SHOAL_NET_TILE; r++) sums[r] = 0.0f;
            for (int32_t i = i0; i < i1; i++) {
                const float w = L->weight[(int64_t)i * out + o];
                for (int r = 0; r < SHOAL_NET_TILE; r++) sums[r] = SHOAL__MADD(xt[i - i0][r], w, sums[r]);
            }
#endif
            for (int r = 0; r < rows; r++) y[(int64_t)r * out + o] += sums[r];
        }
    }
}

/* 3x3 convolution, padding 1, channels-last maps: in [h][w][in_c] -> out [oh][ow][out_c]. */
static void shoal__conv3x3(const shoal_layer* L, const float* x, int32_t h, int32_t w,
                           int32_t stride, float* y, int32_t oh, int32_t ow) {
    const int32_t ci = L->in, co = L->out;
    for (int32_t oy = 0; oy < oh; oy++) {
        for (int32_t ox = 0; ox < ow; ox++) {
            float* out = y + ((int64_t)oy * ow + ox) * co;
            SHOAL_MEMCPY(out, L->bias, sizeof(float) * (size_t)co);
            for (int32_t ky = 0; ky < 3; ky++) {
                int32_t iy = oy * stride + ky - 1;
                if (iy < 0 || iy >= h) continue;
                for (int32_t kx = 0; kx < 3; kx++) {
                    int32_t ix = ox * stride + kx - 1;
                    if (ix < 0 || ix >= w) continue;
                    const float* in = x + ((int64_t)iy * w + ix) * ci;
                    const float* wk = L->weight + ((int64_t)(ky * 3 + kx) * ci) * co;
                    for (int32_t c = 0; c < ci; c++) {
                        const float v = in[c];
                        if (v == 0.0f) continue;
                        const float* wc = wk + (int64_t)c * co;
                        for (int32_t o = 0; o < co; o++) out[o] += v * wc[o];
                    }
                }
            }
        }
    }
}

/* One observation element as float (scaled path). */
static inline float shoal__obs_value(int dtype, const unsigned char* row, int64_t e) {
    switch (dtype) {
        case SHOAL_OBS_F32: { float v; SHOAL_MEMCPY(&v, row + 4 * e, 4); return v; }
        case SHOAL_OBS_F64: { double v; SHOAL_MEMCPY(&v, row + 8 * e, 8); return (float)v; }
        case SHOAL_OBS_U8: return (float)row[e];
        case SHOAL_OBS_I8: return (float)(int8_t)row[e];
        case SHOAL_OBS_U16: { uint16_t v; SHOAL_MEMCPY(&v, row + 2 * e, 2); return (float)v; }
        case SHOAL_OBS_I16: { int16_t v; SHOAL_MEMCPY(&v, row + 2 * e, 2); return (float)v; }
        case SHOAL_OBS_U32: { uint32_t v; SHOAL_MEMCPY(&v, row + 4 * e, 4); return (float)v; }
        case SHOAL_OBS_I32: { int32_t v; SHOAL_MEMCPY(&v, row + 4 * e, 4); return (float)v; }
        default: { int64_t v; SHOAL_MEMCPY(&v, row + 8 * e, 8); return (float)v; }
    }
}

/* One observation element as a one-hot index: (int64)obs - offset, clamped to [0, levels). */
static inline int32_t shoal__obs_index(int dtype, const unsigned char* row, int64_t e,
                                       int32_t offset, int32_t levels) {
    int64_t v;
    switch (dtype) {
        case SHOAL_OBS_F32:
        case SHOAL_OBS_F64: {
            double d;
            if (dtype == SHOAL_OBS_F32) { float x; SHOAL_MEMCPY(&x, row + 4 * e, 4); d = x; }
            else SHOAL_MEMCPY(&d, row + 8 * e, 8);
            if (!(d == d)) d = 0.0;                       /* NaN: no defined code; use 0 */
            if (d > 9.0e15) d = 9.0e15;
            if (d < -9.0e15) d = -9.0e15;
            v = (int64_t)d;                               /* truncates, as torch's .long() */
            break;
        }
        case SHOAL_OBS_U8: v = row[e]; break;
        case SHOAL_OBS_I8: v = (int8_t)row[e]; break;
        case SHOAL_OBS_U16: { uint16_t x; SHOAL_MEMCPY(&x, row + 2 * e, 2); v = x; break; }
        case SHOAL_OBS_I16: { int16_t x; SHOAL_MEMCPY(&x, row + 2 * e, 2); v = x; break; }
        case SHOAL_OBS_U32: { uint32_t x; SHOAL_MEMCPY(&x, row + 4 * e, 4); v = x; break; }
        case SHOAL_OBS_I32: { int32_t x; SHOAL_MEMCPY(&x, row + 4 * e, 4); v = x; break; }
        default: SHOAL_MEMCPY(&v, row + 8 * e, 8); break;
    }
    if (v > ((int64_t)1 << 40)) v = (int64_t)1 << 40;     /* far outside [0, levels) anyway: */
    if (v < -((int64_t)1 << 40)) v = -((int64_t)1 << 40); /* keeps v - offset from overflowing */
    v -= offset;
    if (v < 0) v = 0;
    if (v > levels - 1) v = levels - 1;
    return (int32_t)v;
}

/* Running observation normalisation of one row of scaled features, in place:
 * clamp((x - mean) * inv_std, -clip, clip), the operations of the torch normaliser in the same
 * order (NaN stays NaN, as torch.clamp keeps it). */
static inline void shoal__normalize(const shoal_net* net, float* x) {
    const float clip = net->norm_clip;
    for (int64_t e = 0; e < net->obs_elems; e++) {
        float v = (x[e] - net->norm_mean[e]) * net->norm_inv_std[e];
        v = v < -clip ? -clip : v;
        x[e] = v > clip ? clip : v;
    }
}

/* Encoder input features of `rows` observations into x [rows][in_features]. */
static void shoal__preprocess(const shoal_net* net, const unsigned char* obs, int rows, float* x) {
    const int64_t elems = net->obs_elems, row_bytes = elems * net->obs_item_bytes;
    const int64_t width = net->in_features;
    for (int r = 0; r < rows; r++) {
        const unsigned char* row = obs + r * row_bytes;
        float* xr = x + r * width;
        if (net->levels) {
            SHOAL_MEMSET(xr, 0, sizeof(float) * (size_t)width);
            for (int64_t e = 0; e < elems; e++)
                xr[e * net->levels + shoal__obs_index(net->obs_dtype, row, e, net->obs_offset,
                                                      net->levels)] = 1.0f;
        } else if (net->obs_dtype == SHOAL_OBS_F32) {   /* the common case, vectorised */
            SHOAL_MEMCPY(xr, row, sizeof(float) * (size_t)elems);
            for (int64_t e = 0; e < elems; e++) xr[e] *= net->scale[e];
            if (net->obs_norm) shoal__normalize(net, xr);
        } else {
            for (int64_t e = 0; e < elems; e++)
                xr[e] = shoal__obs_value(net->obs_dtype, row, e) * net->scale[e];
            if (net->obs_norm) shoal__normalize(net, xr);
        }
    }
}

/* MLP layers on x (in buffer a, rows packed at the input width), ping-ponging between a and
 * b; returns the buffer holding the last layer's output [rows][hidden]. */
static float* shoal__mlp(const shoal_net* net, const shoal_layer* layers, int rows, float* a,
                         float* b) {
    float* in = a;
    for (int32_t l = 0; l < net->mlp_layers; l++) {
        float* y = in == a ? b : a;
        shoal__linear(&layers[l], in, y, rows);
        shoal__activate(net->activation, y, (int64_t)rows * layers[l].out);
        in = y;
    }
    return in;
}

/* ---------------------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------------------- */

/* Runs the policy on `batch` observations (rows of the observation dtype, contiguous).
 *
 * starts [batch] (may be NULL): 1 where an episode starts at this step; the LSTM state of that
 * row is multiplied by 1 - starts (zeroed) before the step. h, c [batch][hidden]: the LSTM
 * state, read and overwritten with the new state (ignored, may be NULL, for stateless
 * policies). params [batch][num_params]: logits (discrete heads) or [mean, log_std] (Box).
 * values [batch]. scratch: shoal_net_scratch_floats(net) floats, not shared between threads. */
static void shoal_net_forward(const shoal_net* net, int64_t batch, const void* obs,
                              const float* starts, float* h, float* c, float* params,
                              float* values, float* scratch) {
    const int64_t W = net->max_width, H = net->hidden, G = 4 * net->hidden;
    const int64_t row_bytes = (int64_t)net->obs_elems * net->obs_item_bytes;
    float* buf_a = scratch;
    float* buf_b = scratch + SHOAL_NET_TILE * W;
    float* feat = scratch + 2 * SHOAL_NET_TILE * W;
    float* gates = scratch + 4 * SHOAL_NET_TILE * W;
    for (int64_t r0 = 0; r0 < batch; r0 += SHOAL_NET_TILE) {
        const int rows = (int)(batch - r0 < SHOAL_NET_TILE ? batch - r0 : SHOAL_NET_TILE);
        const unsigned char* o = (const unsigned char*)obs + r0 * row_bytes;
        /* encoder -> feat [rows][H] */
        if (net->encoder == SHOAL_ENC_MLP) {
            shoal__preprocess(net, o, rows, buf_a);
            const float* out = shoal__mlp(net, net->mlp, rows, buf_a, buf_b);
            SHOAL_MEMCPY(feat, out, sizeof(float) * (size_t)(rows * H));
        } else {
            /* one row at a time through the convolutions (ping-pong in buf_b and feat), the
             * flattened maps gathered in buf_a, then one projection for the tile */
            const int32_t flat = net->project.in;
            for (int r = 0; r < rows; r++) {
                shoal__preprocess(net, o + r * row_bytes, 1, buf_b);
                const float* cur = buf_b;
                for (int32_t l = 0; l < net->conv_count; l++) {
                    float* dst = cur == buf_b ? feat : buf_b;
                    shoal__conv3x3(&net->conv[l], cur, net->conv_h[l], net->conv_w[l],
                                   net->conv_stride[l], dst, net->conv_h[l + 1],
                                   net->conv_w[l + 1]);
                    shoal__activate(net->activation, dst,
                                    (int64_t)net->conv_h[l + 1] * net->conv_w[l + 1] * net->channels);
                    cur = dst;
                }
                SHOAL_MEMCPY(buf_a + (int64_t)r * flat, cur, sizeof(float) * (size_t)flat);
            }
            shoal__linear(&net->project, buf_a, feat, rows);
            shoal__activate(net->activation, feat, (int64_t)rows * H);
        }
        /* LSTM cell: state updated in place, new h copied to feat */
        if (net->lstm) {
            float* hr = h + r0 * H;
            float* cr = c + r0 * H;
            if (starts != NULL) {
                for (int r = 0; r < rows; r++) {
                    if (starts[r0 + r] == 0.0f) continue;
                    const float keep = 1.0f - starts[r0 + r];
                    for (int64_t j = 0; j < H; j++) {
                        hr[r * H + j] *= keep;
                        cr[r * H + j] *= keep;
                    }
                }
            }
            /* gates = (b_ih + x W_ih) + (b_hh + h W_hh), the two sums nn.LSTMCell adds */
            const shoal_layer ih = {net->w_ih, net->b_ih, (int32_t)H, (int32_t)G};
            const shoal_layer hh = {net->w_hh, net->b_hh, (int32_t)H, (int32_t)G};
            shoal__linear(&ih, feat, gates, rows);
            shoal__linear(&hh, hr, buf_b, rows);
            for (int r = 0; r < rows; r++) {
                const float* g = gates + r * G;
                const float* g2 = buf_b + r * G;
                float* hrow = hr + r * H;
                float* crow = cr + r * H;
                for (int64_t j = 0; j < H; j++) {
                    const float gi = shoal__sigmoid(g[j] + g2[j]);
                    const float gf = shoal__sigmoid(g[H + j] + g2[H + j]);
                    const float gg = shoal__tanh(g[2 * H + j] + g2[2 * H + j]);
                    const float go = shoal__sigmoid(g[3 * H + j] + g2[3 * H + j]);
                    const float cn = gf * crow[j] + gi * gg;
                    crow[j] = cn;
                    hrow[j] = go * shoal__tanh(cn);
                }
                SHOAL_MEMCPY(feat + r * H, hrow, sizeof(float) * (size_t)H);
            }
        }
        /* actor head -> params ([mean, log_std] for Box) */
        shoal__linear(&net->actor, feat, buf_a, rows);
        const int32_t A = net->actor.out;
        for (int r = 0; r < rows; r++) {
            float* pr = params + (r0 + r) * net->num_params;
            SHOAL_MEMCPY(pr, buf_a + (int64_t)r * A, sizeof(float) * (size_t)A);
            if (net->head == SHOAL_HEAD_BOX) SHOAL_MEMCPY(pr + A, net->log_std, sizeof(float) * (size_t)A);
        }
        /* critic head, on its own encoder when not shared */
        const float* critic_in = feat;
        if (!net->shared) {
            shoal__preprocess(net, o, rows, buf_a);
            critic_in = shoal__mlp(net, net->critic_mlp, rows, buf_a, buf_b);
        }
        float v[SHOAL_NET_TILE];
        shoal__linear(&net->critic, critic_in, v, rows);
        for (int r = 0; r < rows; r++) values[r0 + r] = v[r];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------------------------- */

/* The per-agent RNG: SplitMix64. state += 0x9E3779B97F4A7C15, then the output mix below. */
static inline uint64_t shoal_net_rng_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t shoal_net_rng_next(uint64_t* state) {
    *state += 0x9E3779B97F4A7C15ull;
    return shoal_net_rng_mix(*state);
}

/* A uniform in (0, 1): the top 24 bits with the lowest forced to 1, times 2^-24 (exact in
 * float32; never 0 or 1, so log(u) and log(-log(u)) are finite). */
static inline float shoal_net_rng_uniform(uint64_t* state) {
    return (float)((shoal_net_rng_next(state) >> 40) | 1u) * 5.9604644775390625e-8f;
}

/* Seeds agents [first, first + n): state_i = mix(seed + 0xD1B54A32D192ED03 * (first + i + 1)). */
static inline void shoal_net_rng_seed(uint64_t* states, int64_t n, uint64_t seed, int64_t first) {
    for (int64_t i = 0; i < n; i++)
        states[i] = shoal_net_rng_mix(seed + 0xD1B54A32D192ED03ull * (uint64_t)(first + i + 1));
}

/* Actions and log-probs from params [batch][num_params] (from shoal_net_forward).
 *
 * Random (greedy = 0): each row draws exactly num_params uniforms u[0..num_params) from its own
 * RNG state rng[row], in order. Discrete/MultiDiscrete: per action dimension k with logits
 * x (its n_k columns), logp = x - max - log(sum exp(x - max)) and the action is the first
 * argmax of logp[j] + g[j] with g[j] = -log(-log(u[j])) (Gumbel-max; u[j] belongs to logit
 * column j). Box: noise[j] = sqrt(-2 log(u[j])) * cos(2 pi u[d + j]) (Box-Muller),
 * action = mean + exp(log_std) * noise, logp = sum(-noise^2/2 - log_std - log(2 pi)/2) with
 * log_std clamped to [-20, 2].
 * Greedy (greedy = 1): the first argmax (of the log-probs when every action dimension has the
 * same size, else of the logits, as ActionDistribution.mode) / the mean; no uniforms are drawn.
 *
 * actions_i [batch][action_dims] int32 (discrete heads, including the Discrete start offset) or
 * actions_f [batch][d] float (Box; unclipped: shoal_net_clip_actions gives the env's copy).
 * logprobs [batch] (may be NULL). rng may be NULL when greedy. */
static void shoal_net_sample(const shoal_net* net, int64_t batch, const float* params,
                             uint64_t* rng, int greedy, int32_t* actions_i, float* actions_f,
                             float* logprobs) {
    const int32_t P = net->num_params;
    for (int64_t r = 0; r < batch; r++) {
        const float* x = params + r * P;
        if (net->head == SHOAL_HEAD_BOX) {
            const int32_t d = net->action_dims;
            /* draw in the documented order: u[0..d) then u[d..2d) */
            float* out = actions_f + r * d;
            for (int32_t j = 0; j < d; j++) out[j] = greedy ? 0.0f : shoal_net_rng_uniform(&rng[r]);
            float lp = 0.0f;
            for (int32_t j = 0; j < d; j++) {
                float log_std = x[d + j];
                log_std = log_std < SHOAL_LOG_STD_MIN ? SHOAL_LOG_STD_MIN
                        : (log_std > SHOAL_LOG_STD_MAX ? SHOAL_LOG_STD_MAX : log_std);
                float noise = 0.0f;
                if (!greedy) {
                    const float a = out[j];
                    const float b = shoal_net_rng_uniform(&rng[r]);
                    noise = shoal__sqrtf(-2.0f * shoal__logf(a)) * shoal__cosf(SHOAL_TWO_PI * b);
                }
                out[j] = x[j] + shoal__expf(log_std) * noise;
                lp += -0.5f * noise * noise - log_std - SHOAL_HALF_LOG_2PI;
            }
            if (logprobs) logprobs[r] = lp;
            continue;
        }
        int32_t col = 0;
        float lp = 0.0f;
        for (int32_t k = 0; k < net->action_dims; k++) {
            const int32_t n = shoal_net_nvec(net, k);
            const float* g = x + col;
            float m = g[0];
            for (int32_t j = 1; j < n; j++) m = g[j] > m ? g[j] : m;
            float s = 0.0f;
            for (int32_t j = 0; j < n; j++) s += shoal__expf(g[j] - m);
            const float log_s = shoal__logf(s);
            int32_t best = 0;
            float best_score = 0.0f;
            for (int32_t j = 0; j < n; j++) {
                const float logp = g[j] - m - log_s;
                /* greedy: argmax of the log-probs when all dimensions have one size, else of
                 * the logits (what ActionDistribution.mode compares; ties pick the first) */
                float score = greedy ? (net->uniform_nvec ? logp : g[j])
                                     : logp - shoal__logf(-shoal__logf(shoal_net_rng_uniform(&rng[r])));
                if (j == 0 || score > best_score) { best = j; best_score = score; }
            }
            lp += g[best] - m - log_s;
            actions_i[r * net->action_dims + k] =
                best + (net->head == SHOAL_HEAD_DISCRETE ? net->action_offset : 0);
            col += n;
        }
        if (logprobs) logprobs[r] = lp;
    }
}

/* Invalid-action masks (shoal/trainer/action_masks.py): params [batch][num_params] from
 * shoal_net_forward, masks [batch][num_params] bytes, nonzero where the action is valid. Sets
 * every invalid logit to SHOAL_MASKED_LOGIT (finite: softmax and log-probs stay free of NaN, an
 * invalid action's probability is exactly 0), so shoal_net_sample then never picks one, greedy
 * or not; an action dimension with no valid action is left as it is (all valid). Call it between
 * forward and sample; Box heads and masks == NULL leave params unchanged. */
#define SHOAL_MASKED_LOGIT (-1e9f)
static inline void shoal_net_mask_logits(const shoal_net* net, int64_t batch, float* params,
                                         const uint8_t* masks) {
    if (masks == NULL || net->head == SHOAL_HEAD_BOX) return;
    const int32_t P = net->num_params;
    for (int64_t r = 0; r < batch; r++) {
        float* x = params + r * P;
        const uint8_t* m = masks + r * P;
        int32_t col = 0;
        for (int32_t k = 0; k < net->action_dims; k++) {
            const int32_t n = shoal_net_nvec(net, k);
            int any = 0;
            for (int32_t j = 0; j < n; j++) any |= m[col + j] != 0;
            if (any)
                for (int32_t j = 0; j < n; j++)
                    if (!m[col + j]) x[col + j] = SHOAL_MASKED_LOGIT;
            col += n;
        }
    }
}

/* Box actions as the env takes them: clipped to [low, high] (NaN stays NaN). */
static inline void shoal_net_clip_actions(const shoal_net* net, int64_t batch, const float* actions,
                                          float* out) {
    const int32_t d = net->action_dims;
    for (int64_t r = 0; r < batch; r++)
        for (int32_t j = 0; j < d; j++) {
            float a = actions[r * d + j];
            a = a < net->high[j] ? a : (a != a ? a : net->high[j]);
            a = a > net->low[j] ? a : (a != a ? a : net->low[j]);
            out[r * d + j] = a;
        }
}

#endif /* SHOAL_NET_H */
