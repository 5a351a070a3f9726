/* target: steer a point mass to a random target with continuous accelerations (sanity check of
 * continuous actions).
 *
 * Rules: the arena is the square [-1, 1]^2. Each episode the agent starts at rest at a uniform
 * position in [-0.9, 0.9]^2 and a target is drawn uniformly in the same square, at least 0.5
 * away. Each step the action (ax, ay), each clipped to [-1, 1], accelerates the agent:
 *     v += TARGET_ACCEL * a, each component clipped to [-TARGET_MAX_SPEED, TARGET_MAX_SPEED];
 *     p += v, clipped to the arena (a component that hits a wall stops).
 * The reward is the decrease in distance to the target over the step (shaping), plus 1 when the
 * agent's path during the step passes within `radius` of the target, which ends the episode
 * (terminal). After `max_steps` steps the episode is truncated.
 * Units: TARGET_ACCEL = 0.02 per step^2 and TARGET_MAX_SPEED = 0.1 per step per axis, so any
 * target is reachable in about 30 steps from rest.
 *
 * Observation: float32, 4 values: target - position (x, y), each in [-1.9, 1.9], then velocity
 * (x, y) divided by TARGET_MAX_SPEED, each in [-1, 1]. The final observation is the observation
 * after the last step (what a value function should bootstrap from on truncation).
 *
 * Log: score = 1 if the target was reached; distance = distance to the target at episode end.
 * Optimal: accelerate towards the target: score 1 (a proportional controller does it). Standing
 * still scores 0; uniform random accelerations score about 0.1 (default parameters).
 */
#ifndef SHOAL_TARGET_H
#define SHOAL_TARGET_H

#include "../shoal_env.h"

#define TARGET_ACCEL 0.02f
#define TARGET_MAX_SPEED 0.1f
#define TARGET_SPAWN 0.9f
#define TARGET_MIN_START_DISTANCE 0.5f

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float distance;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding) */
    float* observations;
    float* final_observations;
    float* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int max_steps;
    float radius;
    /* state */
    float x, y, vx, vy;
    float target_x, target_y;
    int tick;
    float episode_return;
} Target;

static float target_distance(const Target* env) {
    return hypotf(env->target_x - env->x, env->target_y - env->y);
}

static void target_observe(Target* env, float* obs) {
    obs[0] = env->target_x - env->x;
    obs[1] = env->target_y - env->y;
    obs[2] = env->vx / TARGET_MAX_SPEED;
    obs[3] = env->vy / TARGET_MAX_SPEED;
}

static void target_reset(Target* env) {
    env->x = shoal_rng_uniform(&env->rng, -TARGET_SPAWN, TARGET_SPAWN);
    env->y = shoal_rng_uniform(&env->rng, -TARGET_SPAWN, TARGET_SPAWN);
    /* rejection sampling; a bounded number of tries keeps the step time bounded (a miss after
     * 64 tries, probability < 1e-30, merely starts closer) */
    for (int tries = 0; tries < 64; tries++) {
        env->target_x = shoal_rng_uniform(&env->rng, -TARGET_SPAWN, TARGET_SPAWN);
        env->target_y = shoal_rng_uniform(&env->rng, -TARGET_SPAWN, TARGET_SPAWN);
        if (target_distance(env) >= TARGET_MIN_START_DISTANCE) break;
    }
    env->vx = env->vy = 0.0f;
    env->tick = 0;
    env->episode_return = 0.0f;
    target_observe(env, env->observations);
}

/* Distance from the target to the segment the agent moved along this step: passing through the
 * target between two steps counts as reaching it. */
static float target_path_distance(const Target* env, float x0, float y0) {
    float dx = env->x - x0, dy = env->y - y0;
    float len2 = dx * dx + dy * dy;
    float t = len2 > 0.0f ? ((env->target_x - x0) * dx + (env->target_y - y0) * dy) / len2 : 0.0f;
    t = shoal_clampf(t, 0.0f, 1.0f);
    return hypotf(env->target_x - (x0 + t * dx), env->target_y - (y0 + t * dy));
}

static void target_step(Target* env) {
    float ax = shoal_clampf(env->actions[0], -1.0f, 1.0f);
    float ay = shoal_clampf(env->actions[1], -1.0f, 1.0f);
    float before = target_distance(env);
    float x0 = env->x, y0 = env->y;
    env->tick++;
    env->vx = shoal_clampf(env->vx + TARGET_ACCEL * ax, -TARGET_MAX_SPEED, TARGET_MAX_SPEED);
    env->vy = shoal_clampf(env->vy + TARGET_ACCEL * ay, -TARGET_MAX_SPEED, TARGET_MAX_SPEED);
    env->x += env->vx;
    env->y += env->vy;
    if (env->x < -1.0f || env->x > 1.0f) {
        env->x = shoal_clampf(env->x, -1.0f, 1.0f);
        env->vx = 0.0f;
    }
    if (env->y < -1.0f || env->y > 1.0f) {
        env->y = shoal_clampf(env->y, -1.0f, 1.0f);
        env->vy = 0.0f;
    }
    float after = target_distance(env);
    int reached = target_path_distance(env, x0, y0) <= env->radius;
    float reward = (before - after) + (reached ? 1.0f : 0.0f);
    env->rewards[0] = reward;
    env->episode_return += reward;
    target_observe(env, env->observations);
    if (reached || env->tick >= env->max_steps) {
        env->terminals[0] = (uint8_t)reached;
        env->truncations[0] = (uint8_t)!reached;
        env->log.episode_return += env->episode_return;
        env->log.episode_length += (float)env->tick;
        env->log.score += (float)reached;
        env->log.distance += after;
        env->log.n += 1.0f;
        memcpy(env->final_observations, env->observations, 4 * sizeof(float));
        target_reset(env);
    }
}

static int target_render_text(Target* env, char* buf, int cap) {
    enum { N = 21 };
    int ax = (int)lroundf((env->x + 1.0f) * 0.5f * (N - 1)), ay = (int)lroundf((env->y + 1.0f) * 0.5f * (N - 1));
    int tx = (int)lroundf((env->target_x + 1.0f) * 0.5f * (N - 1));
    int ty = (int)lroundf((env->target_y + 1.0f) * 0.5f * (N - 1));
    int len = shoal_appendf(buf, cap, 0, "step %d/%d  distance %.3f  velocity (%.3f, %.3f)\n", env->tick,
                            env->max_steps, (double)target_distance(env), (double)env->vx, (double)env->vy);
    for (int row = N - 1; row >= 0; row--) { /* y grows upwards */
        for (int col = 0; col < N; col++)
            len = shoal_appendf(buf, cap, len, "%c", col == ax && row == ay ? 'A' : (col == tx && row == ty ? 'T' : '.'));
        len = shoal_appendf(buf, cap, len, "\n");
    }
    return len;
}

/* The arena, y up: the target's reach disc in green, the agent in yellow. */
#define TARGET_PIXELS 64
static void target_render_rgb(Target* env, uint8_t* rgb) {
    const int n = TARGET_PIXELS;
    shoal_fill_rgb(rgb, n, n, 20, 20, 30);
    float scale = 0.5f * (float)n; /* pixels per unit */
    for (int py = 0; py < n; py++)
        for (int px = 0; px < n; px++) {
            float wx = ((float)px + 0.5f) / scale - 1.0f, wy = 1.0f - ((float)py + 0.5f) / scale;
            if (hypotf(wx - env->target_x, wy - env->target_y) <= env->radius) {
                uint8_t* p = rgb + 3 * (py * n + px);
                p[0] = 40;
                p[1] = 200;
                p[2] = 80;
            }
        }
    int cx = (int)((env->x + 1.0f) * scale), cy = (int)((1.0f - env->y) * scale);
    shoal_rect_rgb(rgb, n, n, cy - 2, cx - 2, 5, 5, 230, 200, 40);
}

static void target_close(Target* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): agent inside the
 * arena, velocity within its clip, the target where resets put it. */
static int target_validate(const Target* env, const Target* made, ShoalCheck* check) {
    return SHOAL_SAME(check, env, made, max_steps) && SHOAL_SAME(check, env, made, radius) &&
           SHOAL_FLOAT(check, env, x, -1.0f, 1.0f) && SHOAL_FLOAT(check, env, y, -1.0f, 1.0f) &&
           SHOAL_FLOAT(check, env, vx, -TARGET_MAX_SPEED, TARGET_MAX_SPEED) &&
           SHOAL_FLOAT(check, env, vy, -TARGET_MAX_SPEED, TARGET_MAX_SPEED) &&
           SHOAL_FLOAT(check, env, target_x, -TARGET_SPAWN, TARGET_SPAWN) &&
           SHOAL_FLOAT(check, env, target_y, -TARGET_SPAWN, TARGET_SPAWN) &&
           SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
           SHOAL_FLOAT(check, env, episode_return, -SHOAL_SUM_BOUND(env->tick, 4.0f), SHOAL_SUM_BOUND(env->tick, 4.0f));
}

#endif
