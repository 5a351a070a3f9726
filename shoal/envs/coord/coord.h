/* coord: a two-agent signalling game (sanity check of multi-agent training with shared weights).
 *
 * Rules: each env holds two agents, a speaker (agent 0, buffer row 0) and a listener (agent 1,
 * row 1). Each episode a cue in [0, choices) is drawn; only the speaker sees it. The episode is
 * one signal round followed by `rounds` scored rounds (rounds + 1 steps). Every round both agents
 * pick an action in [0, choices) at the same time, and each then sees the action its partner
 * just took. The signal round gives no reward. In a scored round both agents get reward 1 if
 * both actions equal the cue, else 0. The episode ends (terminal for both) after the last round.
 *
 * Observation (per agent): float32, 2 * choices + 3 values.
 *   [0, 2)                     one-hot of the agent's role (0 speaker, 1 listener)
 *   [2, 2 + choices)           one-hot of the cue for the speaker; zeros for the listener
 *   [2 + choices, 2 + 2*choices)  one-hot of the partner's action last round; zeros in round 0
 *   [2 + 2*choices]            1 in the signal round (no reward), 0 in scored rounds
 *   The final observation is what the next round would show (with the signal flag 0).
 *
 * Log (per env, not per agent): score = fraction of scored rounds in which both played the cue;
 * episode_return = the return of one agent (both get the same).
 * Optimal: the speaker always plays the cue; the listener plays the speaker's last action (any
 * action in the signal round): score 1, return `rounds`. The listener cannot know the cue in the
 * signal round, which is why that round is not scored. Uniform random play scores 1/choices^2;
 * a speaker playing the cue with a random listener scores 1/choices.
 */
#ifndef SHOAL_COORD_H
#define SHOAL_COORD_H

#include "../shoal_env.h"

#define COORD_AGENTS 2

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding): COORD_AGENTS rows each */
    float* observations;
    float* final_observations;
    int32_t* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int choices;
    int rounds;
    /* state */
    int cue;
    int round;               /* rounds played this episode; round 0 is the signal round */
    int last_action[COORD_AGENTS]; /* -1 before the first round */
    int matched;             /* scored rounds won this episode */
} Coord;

static inline int coord_obs_size(const Coord* env) { return 2 * env->choices + 3; }

static void coord_observe(Coord* env, float* obs) {
    int size = coord_obs_size(env);
    memset(obs, 0, sizeof(float) * (size_t)(COORD_AGENTS * size));
    for (int agent = 0; agent < COORD_AGENTS; agent++) {
        float* o = obs + agent * size;
        int partner = 1 - agent;
        o[agent] = 1.0f;
        if (agent == 0) o[2 + env->cue] = 1.0f;
        if (env->last_action[partner] >= 0) o[2 + env->choices + env->last_action[partner]] = 1.0f;
        if (env->round == 0) o[2 + 2 * env->choices] = 1.0f;
    }
}

static void coord_reset(Coord* env) {
    env->cue = shoal_rng_int(&env->rng, env->choices);
    env->round = 0;
    env->last_action[0] = env->last_action[1] = -1;
    env->matched = 0;
    coord_observe(env, env->observations);
}

static void coord_step(Coord* env) {
    int a0 = env->actions[0], a1 = env->actions[1];
    int scored = env->round > 0;
    int won = scored && a0 == env->cue && a1 == env->cue;
    env->rewards[0] = env->rewards[1] = (float)won;
    env->matched += won;
    env->last_action[0] = a0;
    env->last_action[1] = a1;
    env->round++;
    if (env->round <= env->rounds) {
        coord_observe(env, env->observations);
        return;
    }
    env->terminals[0] = env->terminals[1] = 1;
    env->log.episode_return += (float)env->matched;
    env->log.episode_length += (float)env->round;
    env->log.score += (float)env->matched / (float)env->rounds;
    env->log.n += 1.0f;
    coord_observe(env, env->final_observations);
    coord_reset(env);
}

static int coord_render_text(Coord* env, char* buf, int cap) {
    int len = shoal_appendf(buf, cap, 0, "round %d/%d%s  cue %d  ", env->round, env->rounds,
                            env->round == 0 ? " (signal)" : "", env->cue);
    if (env->last_action[0] < 0) len = shoal_appendf(buf, cap, len, "last: -");
    else
        len = shoal_appendf(buf, cap, len, "last: speaker %d listener %d", env->last_action[0], env->last_action[1]);
    return shoal_appendf(buf, cap, len, "  won %d\n", env->matched);
}

/* Three rows of `choices` cells: the cue (green), then the speaker's and the listener's last
 * actions (yellow when on the cue, red otherwise); a bar at the bottom counts the rounds. */
#define COORD_CELL 12
static void coord_render_rgb(Coord* env, uint8_t* rgb) {
    int h = 4 * COORD_CELL, w = COORD_CELL * env->choices;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    for (int i = 0; i < env->choices; i++) {
        int cue = i == env->cue;
        shoal_rect_rgb(rgb, h, w, 1, COORD_CELL * i + 1, COORD_CELL - 2, COORD_CELL - 2, cue ? 40 : 60,
                       cue ? 200 : 60, cue ? 80 : 70);
        for (int agent = 0; agent < COORD_AGENTS; agent++) {
            int on = env->last_action[agent] == i;
            shoal_rect_rgb(rgb, h, w, COORD_CELL * (1 + agent) + 1, COORD_CELL * i + 1, COORD_CELL - 2,
                           COORD_CELL - 2, on ? (cue ? 230 : 220) : 50, on ? (cue ? 200 : 50) : 50,
                           on ? 40 : 60);
        }
    }
    shoal_rect_rgb(rgb, h, w, 3 * COORD_CELL + 3, 0, COORD_CELL - 6, w * env->round / (env->rounds + 1), 90,
                   140, 230);
}

static void coord_close(Coord* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): the cue and the last
 * actions index the observation, so they must be choices (-1: none yet). */
static int coord_validate(const Coord* env, const Coord* made, ShoalCheck* check) {
    return SHOAL_SAME(check, env, made, choices) && SHOAL_SAME(check, env, made, rounds) &&
           SHOAL_INT(check, env, cue, 0, env->choices - 1) && SHOAL_INT(check, env, round, 0, env->rounds) &&
           SHOAL_INTS(check, env, last_action, COORD_AGENTS, -1, env->choices - 1) &&
           SHOAL_INT(check, env, matched, 0, env->round);
}

#endif
