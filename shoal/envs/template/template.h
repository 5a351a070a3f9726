/* template: the smallest complete shoal env, meant to be copied (docs/envs.md, "Adding an env").
 *
 * Rules: a corridor of `length` cells. The agent starts in cell 0 and moves left (action 0) or
 * right (action 1); moving left from cell 0 stays put. Reaching the last cell gives reward 1 and
 * ends the episode (terminal). After `max_steps` steps without reaching it the episode is
 * truncated with reward 0.
 * Observation: one-hot float32 of the agent's cell, `length` values.
 */
#ifndef SHOAL_TEMPLATE_H
#define SHOAL_TEMPLATE_H

#include "../shoal_env.h"

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding) */
    float* observations;
    float* final_observations;
    int32_t* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int length;
    int max_steps;
    /* state */
    int position;
    int tick;
    float episode_return;
} Template;

static void template_observe(Template* env) {
    memset(env->observations, 0, sizeof(float) * (size_t)env->length);
    env->observations[env->position] = 1.0f;
}

static void template_reset(Template* env) {
    env->position = 0;
    env->tick = 0;
    env->episode_return = 0.0f;
    template_observe(env);
}

static void template_step(Template* env) {
    int a = env->actions[0];
    env->tick++;
    env->position = shoal_clampi(env->position + (a == 1 ? 1 : -1), 0, env->length - 1);
    int reached = env->position == env->length - 1;
    float reward = reached ? 1.0f : 0.0f;
    env->rewards[0] = reward;
    env->episode_return += reward;
    if (reached || env->tick >= env->max_steps) {
        env->terminals[0] = (uint8_t)reached;
        env->truncations[0] = (uint8_t)!reached;
        env->log.episode_return += env->episode_return;
        env->log.episode_length += (float)env->tick;
        env->log.score += (float)reached;
        env->log.n += 1.0f;
        template_observe(env);
        memcpy(env->final_observations, env->observations, sizeof(float) * (size_t)env->length);
        template_reset(env);
        return;
    }
    template_observe(env);
}

static int template_render_text(Template* env, char* buf, int cap) {
    int len = 0;
    for (int i = 0; i < env->length; i++)
        len = shoal_appendf(buf, cap, len, "%c", i == env->position ? 'A' : (i == env->length - 1 ? 'G' : '.'));
    return shoal_appendf(buf, cap, len, "\n");
}

#define TEMPLATE_CELL 16
static void template_render_rgb(Template* env, uint8_t* rgb) {
    int h = TEMPLATE_CELL, w = TEMPLATE_CELL * env->length;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    shoal_rect_rgb(rgb, h, w, 0, TEMPLATE_CELL * (env->length - 1), TEMPLATE_CELL, TEMPLATE_CELL, 40, 200, 80);
    shoal_rect_rgb(rgb, h, w, 2, TEMPLATE_CELL * env->position + 2, TEMPLATE_CELL - 4, TEMPLATE_CELL - 4, 230, 200, 40);
}

static void template_close(Template* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"). */
static int template_validate(const Template* env, const Template* made, ShoalCheck* check) {
    return SHOAL_SAME(check, env, made, length) && SHOAL_SAME(check, env, made, max_steps) &&
           SHOAL_INT(check, env, position, 0, env->length - 1) && SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
           SHOAL_FLOAT(check, env, episode_return, 0.0f, 1.0f);
}

#endif
