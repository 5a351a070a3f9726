/* drone: fly a quadrotor through a stream of targets, in 3-D rigid-body physics.
 *
 * Arena: the box x, y in [-arena, arena], z in [0, 2 * arena] (metres); z = 0 is the floor and z
 * points up. Targets and start positions are drawn uniformly from the same box shrunk by a margin
 * of 0.1 * arena on every side. The drone starts at rest, level, with a random heading (yaw).
 *
 * Airframe ("+" layout, body frame: x forward, y left, z up): rotor 0 at +x, 1 at +y, 2 at -x,
 * 3 at -y, each DRONE_ARM metres from the centre and pushing along body +z.
 * Actions: Box(-1, 1, (4,)) float32, one command per rotor, clipped to [-1, 1] and mapped linearly
 * to thrust T_i = max_thrust * (a_i + 1) / 2 in [0, max_thrust] newtons. max_thrust is
 * DRONE_THRUST_TO_WEIGHT * m * g / 4, so the all-zeros action is exactly hover thrust.
 * Forces and torques (body frame), with omega the body angular velocity:
 *   thrust   F = (0, 0, T0 + T1 + T2 + T3), rotated to the world frame by the orientation
 *   roll     tau_x = arm * (T1 - T3)          more thrust on the left rotor rolls right-side down
 *   pitch    tau_y = arm * (T2 - T0)          more thrust at the back pitches the nose down
 *   yaw      tau_z = k_yaw * (T0 - T1 + T2 - T3)   rotors 0 and 2 spin clockwise seen from above,
 *            so their drag turns the body counter-clockwise (+z); rotors 1 and 3 the opposite
 *   damping  linear drag -b * v (world), angular drag -k_ang * omega (body)
 *   gyro     -omega x (I omega) (Euler's equations; I is diagonal)
 * Integration: semi-implicit Euler at DRONE_DT = 0.02 s: velocities first (then clipped to
 * +-DRONE_MAX_VEL, +-DRONE_MAX_OMEGA), then position with the new velocity, then the orientation
 * quaternion q += dt/2 * q (x) (0, omega), renormalised to unit length every step.
 *
 * Reward, per step: progress = (distance to the target before the step) - (distance after), in
 * metres. Coming within `target_radius` of the target adds `target_bonus`, counts one for the
 * score, and draws a new target (the episode goes on; progress then restarts from the new one).
 * Terminal: the drone's centre leaves the arena box (z < 0 is a crash into the floor), with an
 * extra reward of -crash_penalty. Truncation: after `max_steps` steps.
 *
 * Observation: 21 float32 values, each clipped to [-1, 1]:
 *   [0:3]   target - position, world frame, / (2 * arena)
 *   [3:6]   position: x / arena, y / arena, (z - arena) / arena
 *   [6:9]   linear velocity, world frame, / DRONE_MAX_VEL
 *   [9:18]  rotation matrix body -> world, row-major (its third column is the thrust direction)
 *   [18:21] angular velocity, body frame, / DRONE_MAX_OMEGA
 *
 * Cost per step: one sqrt for the distance, one for renormalising the quaternion, no trig (the
 * only sin/cos is the random heading at reset), and the rotation matrix is computed once and
 * reused for both the observation and the next step's thrust direction.
 */
#ifndef SHOAL_DRONE_H
#define SHOAL_DRONE_H

#include "../shoal_env.h"

#define DRONE_OBS 21
#define DRONE_DT 0.02f
#define DRONE_MASS 1.0f                /* kg */
#define DRONE_GRAVITY 9.81f            /* m/s^2 */
#define DRONE_ARM 0.1f                 /* m, centre to rotor */
#define DRONE_IXX 0.01f                /* kg m^2 */
#define DRONE_IYY 0.01f
#define DRONE_IZZ 0.02f
#define DRONE_THRUST_TO_WEIGHT 2.0f    /* all rotors at full command lift twice the weight */
#define DRONE_K_YAW 0.02f              /* m: yaw torque per newton of rotor thrust */
#define DRONE_LIN_DRAG 0.1f            /* N per m/s */
#define DRONE_ANG_DRAG 0.02f           /* N m per rad/s */
#define DRONE_MAX_VEL 20.0f            /* m/s: velocity is clipped here, and normalised by it */
#define DRONE_MAX_OMEGA 30.0f          /* rad/s */
#define DRONE_MAX_THRUST (DRONE_THRUST_TO_WEIGHT * DRONE_MASS * DRONE_GRAVITY / 4.0f)

typedef struct {
    float episode_return;
    float episode_length;
    float score;         /* targets reached in the episode */
    float mean_distance; /* distance to the current target, averaged over the episode's steps */
    float crashed;       /* 1 if the episode ended by leaving the arena, 0 if truncated */
    float n;             /* episodes counted: must stay last */
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
    float arena;
    float target_radius;
    float target_bonus;
    float crash_penalty;
    /* state */
    float pos[3], vel[3];   /* world frame */
    float quat[4];          /* w, x, y, z: body -> world */
    float omega[3];         /* body frame */
    float rot[9];           /* rotation matrix of quat, row-major, kept in step with it */
    float target[3];
    float distance;         /* to the target, after the last step */
    int tick;
    int score;
    float episode_return;
    float distance_sum;
} Drone;

/* x clipped to [-limit, limit]; written so that it compiles to branch-free min/max */
static inline float drone_clip(float x, float limit) {
    x = x < limit ? x : limit;
    return x > -limit ? x : -limit;
}

/* The rotation matrix of quaternion (w, x, y, z) with |q|^2 = 2 / two_over_norm2. Taking the
 * norm as a factor lets the step build the matrix from the raw updated quaternion while its
 * square root is still being computed for renormalisation. */
static inline void drone_set_rotation(float* r, float w, float x, float y, float z, float two_over_norm2) {
    float s = two_over_norm2;
    float xx = x * x, yy = y * y, zz = z * z;
    float xy = x * y, xz = x * z, yz = y * z, wx = w * x, wy = w * y, wz = w * z;
    r[0] = 1.0f - s * (yy + zz);
    r[1] = s * (xy - wz);
    r[2] = s * (xz + wy);
    r[3] = s * (xy + wz);
    r[4] = 1.0f - s * (xx + zz);
    r[5] = s * (yz - wx);
    r[6] = s * (xz - wy);
    r[7] = s * (yz + wx);
    r[8] = 1.0f - s * (xx + yy);
}

/* Rotation of the (unit) stored quaternion. */
static inline void drone_update_rotation(Drone* env) {
    drone_set_rotation(env->rot, env->quat[0], env->quat[1], env->quat[2], env->quat[3], 2.0f);
}

static float drone_distance(const Drone* env) {
    float dx = env->target[0] - env->pos[0];
    float dy = env->target[1] - env->pos[1];
    float dz = env->target[2] - env->pos[2];
    return sqrtf(dx * dx + dy * dy + dz * dz);
}

/* A uniform point of the arena shrunk by the margin. */
static void drone_random_point(Drone* env, float* p) {
    float a = env->arena, m = 0.1f * env->arena;
    p[0] = shoal_rng_uniform(&env->rng, -a + m, a - m);
    p[1] = shoal_rng_uniform(&env->rng, -a + m, a - m);
    p[2] = shoal_rng_uniform(&env->rng, m, 2.0f * a - m);
}

static inline void drone_observe(Drone* env, float* obs) {
    /* every entry is clipped as it is written: the position leaves [-1, 1] on the step that leaves
     * the arena, and rounding can put a rotation entry a hair past 1. (Clipping scalar by scalar
     * also avoids reloading the fresh stores as one vector, which stalls store forwarding.) */
    float inv_span = 0.5f / env->arena, inv_arena = 1.0f / env->arena;
    const float* p = env->pos;
    obs[0] = drone_clip((env->target[0] - p[0]) * inv_span, 1.0f);
    obs[1] = drone_clip((env->target[1] - p[1]) * inv_span, 1.0f);
    obs[2] = drone_clip((env->target[2] - p[2]) * inv_span, 1.0f);
    obs[3] = drone_clip(p[0] * inv_arena, 1.0f);
    obs[4] = drone_clip(p[1] * inv_arena, 1.0f);
    obs[5] = drone_clip(p[2] * inv_arena - 1.0f, 1.0f);
    for (int i = 0; i < 3; i++) obs[6 + i] = drone_clip(env->vel[i] * (1.0f / DRONE_MAX_VEL), 1.0f);
    for (int i = 0; i < 9; i++) obs[9 + i] = drone_clip(env->rot[i], 1.0f);
    for (int i = 0; i < 3; i++) obs[18 + i] = drone_clip(env->omega[i] * (1.0f / DRONE_MAX_OMEGA), 1.0f);
}

static void drone_reset(Drone* env) {
    drone_random_point(env, env->pos);
    drone_random_point(env, env->target);
    float half_yaw = shoal_rng_uniform(&env->rng, -3.14159265f, 3.14159265f) * 0.5f;
    env->quat[0] = cosf(half_yaw);
    env->quat[1] = 0.0f;
    env->quat[2] = 0.0f;
    env->quat[3] = sinf(half_yaw);
    for (int i = 0; i < 3; i++) env->vel[i] = env->omega[i] = 0.0f;
    drone_update_rotation(env);
    env->distance = drone_distance(env);
    env->tick = 0;
    env->score = 0;
    env->episode_return = 0.0f;
    env->distance_sum = 0.0f;
    drone_observe(env, env->observations);
}

/* One physics step of DRONE_DT for rotor commands a[4] (unclipped). */
static void drone_physics(Drone* env, const float* a) {
    float t[4];
    for (int i = 0; i < 4; i++) t[i] = DRONE_MAX_THRUST * 0.5f * (drone_clip(a[i], 1.0f) + 1.0f);
    float thrust = t[0] + t[1] + t[2] + t[3];
    const float* r = env->rot;

    /* linear: thrust along body z (the rotation's third column), gravity, drag */
    float k = thrust * (1.0f / DRONE_MASS), drag = DRONE_LIN_DRAG / DRONE_MASS;
    float acc[3] = {
        r[2] * k - drag * env->vel[0],
        r[5] * k - drag * env->vel[1],
        r[8] * k - drag * env->vel[2] - DRONE_GRAVITY,
    };

    /* angular, body frame: rotor torques, damping, gyroscopic coupling */
    float* w = env->omega;
    float tau[3] = {
        DRONE_ARM * (t[1] - t[3]) - DRONE_ANG_DRAG * w[0] - (DRONE_IZZ - DRONE_IYY) * w[1] * w[2],
        DRONE_ARM * (t[2] - t[0]) - DRONE_ANG_DRAG * w[1] - (DRONE_IXX - DRONE_IZZ) * w[2] * w[0],
        DRONE_K_YAW * (t[0] - t[1] + t[2] - t[3]) - DRONE_ANG_DRAG * w[2]
            - (DRONE_IYY - DRONE_IXX) * w[0] * w[1],
    };
    static const float inv_inertia[3] = {1.0f / DRONE_IXX, 1.0f / DRONE_IYY, 1.0f / DRONE_IZZ};

    for (int i = 0; i < 3; i++) {
        env->vel[i] = drone_clip(env->vel[i] + acc[i] * DRONE_DT, DRONE_MAX_VEL);
        w[i] = drone_clip(w[i] + tau[i] * inv_inertia[i] * DRONE_DT, DRONE_MAX_OMEGA);
        env->pos[i] += env->vel[i] * DRONE_DT;
    }

    /* q += dt/2 * q (x) (0, omega), then back to unit length */
    float* q = env->quat;
    float h = 0.5f * DRONE_DT;
    float qw = q[0] + h * (-q[1] * w[0] - q[2] * w[1] - q[3] * w[2]);
    float qx = q[1] + h * (q[0] * w[0] + q[2] * w[2] - q[3] * w[1]);
    float qy = q[2] + h * (q[0] * w[1] - q[1] * w[2] + q[3] * w[0]);
    float qz = q[3] + h * (q[0] * w[2] + q[1] * w[1] - q[2] * w[0]);
    float norm2 = qw * qw + qx * qx + qy * qy + qz * qz;
    float inv = 1.0f / sqrtf(norm2);
    q[0] = qw * inv;
    q[1] = qx * inv;
    q[2] = qy * inv;
    q[3] = qz * inv;
    drone_set_rotation(env->rot, qw, qx, qy, qz, 2.0f / norm2);
}

static void drone_step(Drone* env) {
    drone_physics(env, env->actions);
    env->tick++;

    float d = drone_distance(env);
    float reward = env->distance - d;
    env->distance_sum += d;
    if (d < env->target_radius) {
        reward += env->target_bonus;
        env->score++;
        drone_random_point(env, env->target);
        d = drone_distance(env);
    }
    env->distance = d;

    float a = env->arena;
    const float* p = env->pos;
    int left_arena = p[0] < -a || p[0] > a || p[1] < -a || p[1] > a || p[2] < 0.0f || p[2] > 2.0f * a;
    if (left_arena) reward -= env->crash_penalty;
    env->rewards[0] = reward;
    env->episode_return += reward;

    if (left_arena || env->tick >= env->max_steps) {
        env->terminals[0] = (uint8_t)left_arena;
        env->truncations[0] = (uint8_t)!left_arena;
        env->log.episode_return += env->episode_return;
        env->log.episode_length += (float)env->tick;
        env->log.score += (float)env->score;
        env->log.mean_distance += env->distance_sum / (float)env->tick;
        env->log.crashed += (float)left_arena;
        env->log.n += 1.0f;
        drone_observe(env, env->final_observations);
        drone_reset(env);
        return;
    }
    drone_observe(env, env->observations);
}

static int drone_render_text(Drone* env, char* buf, int cap) {
    int len = 0;
    len = shoal_appendf(buf, cap, len, "tick %d  score %d  distance %.2f m\n", env->tick, env->score,
                        (double)env->distance);
    len = shoal_appendf(buf, cap, len, "pos    (%7.2f %7.2f %7.2f)\n", (double)env->pos[0],
                        (double)env->pos[1], (double)env->pos[2]);
    len = shoal_appendf(buf, cap, len, "target (%7.2f %7.2f %7.2f)\n", (double)env->target[0],
                        (double)env->target[1], (double)env->target[2]);
    len = shoal_appendf(buf, cap, len, "vel    (%7.2f %7.2f %7.2f)\n", (double)env->vel[0],
                        (double)env->vel[1], (double)env->vel[2]);
    len = shoal_appendf(buf, cap, len, "quat   (%6.3f %6.3f %6.3f %6.3f)\n", (double)env->quat[0],
                        (double)env->quat[1], (double)env->quat[2], (double)env->quat[3]);
    return shoal_appendf(buf, cap, len, "omega  (%7.2f %7.2f %7.2f)\n", (double)env->omega[0],
                         (double)env->omega[1], (double)env->omega[2]);
}

/* Two orthographic views side by side: top (x right, y up) and side (x right, z up). */
#define DRONE_VIEW 160
static void drone_render_rgb(Drone* env, uint8_t* rgb) {
    int h = DRONE_VIEW, w = 2 * DRONE_VIEW + 8;
    shoal_fill_rgb(rgb, h, w, 15, 15, 25);
    shoal_rect_rgb(rgb, h, w, 0, DRONE_VIEW, h, 8, 60, 60, 70);
    float scale = (float)(DRONE_VIEW - 8) / (2.0f * env->arena);
    for (int view = 0; view < 2; view++) {
        int x0 = view * (DRONE_VIEW + 8);
        /* vertical coordinate: y for the top view, z - arena for the side view */
        float dv = view == 0 ? env->pos[1] : env->pos[2] - env->arena;
        float tv = view == 0 ? env->target[1] : env->target[2] - env->arena;
        int dx = x0 + 4 + (int)((env->pos[0] + env->arena) * scale);
        int dy = 4 + (int)((env->arena - dv) * scale);
        int tx = x0 + 4 + (int)((env->target[0] + env->arena) * scale);
        int ty = 4 + (int)((env->arena - tv) * scale);
        int tr = (int)(env->target_radius * scale) + 1;
        shoal_rect_rgb(rgb, h, w, ty - tr, tx - tr, 2 * tr, 2 * tr, 40, 200, 80);
        shoal_rect_rgb(rgb, h, w, dy - 3, dx - 3, 6, 6, 230, 200, 40);
        /* a short line along the thrust axis, as seen in this view */
        float ax = env->rot[2], av = view == 0 ? env->rot[5] : env->rot[8];
        for (int s = 4; s <= 16; s++)
            shoal_rect_rgb(rgb, h, w, dy - (int)(av * (float)s), dx + (int)(ax * (float)s), 1, 1, 230, 80, 60);
    }
}

static void drone_close(Drone* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): drone and target inside
 * the arena (leaving it ends the episode), velocities within their clips, a unit quaternion (a
 * zero one would make the renormalisation divide by zero) and a rotation matrix in [-1, 1]. */
static int drone_validate(const Drone* env, const Drone* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, max_steps) && SHOAL_SAME(check, env, made, arena) &&
          SHOAL_SAME(check, env, made, target_radius) && SHOAL_SAME(check, env, made, target_bonus) &&
          SHOAL_SAME(check, env, made, crash_penalty)))
        return 0;
    float a = env->arena, e = 1e-3f;
    float q2 = env->quat[0] * env->quat[0] + env->quat[1] * env->quat[1] + env->quat[2] * env->quat[2] +
               env->quat[3] * env->quat[3];
    if (!(SHOAL_FLOATS(check, env, pos, 2, -a, a) && SHOAL_FLOAT(check, env, pos[2], 0.0f, 2.0f * a) &&
          SHOAL_FLOATS(check, env, target, 2, -a, a) && SHOAL_FLOAT(check, env, target[2], 0.0f, 2.0f * a) &&
          SHOAL_FLOATS(check, env, vel, 3, -DRONE_MAX_VEL, DRONE_MAX_VEL) &&
          SHOAL_FLOATS(check, env, omega, 3, -DRONE_MAX_OMEGA, DRONE_MAX_OMEGA) &&
          SHOAL_FLOATS(check, env, quat, 4, -1.0f - e, 1.0f + e) && SHOAL_FLOATS(check, env, rot, 9, -1.0f - e, 1.0f + e)))
        return 0;
    if (!(fabsf(q2 - 1.0f) <= 1e-3f))
        return shoal_check_fail(check, "quat has squared norm %g, not 1", (double)q2);
    float per_step = 8.0f * a + env->target_bonus + env->crash_penalty;
    return SHOAL_INT(check, env, tick, 0, env->max_steps - 1) && SHOAL_INT(check, env, score, 0, env->tick) &&
           SHOAL_FLOAT(check, env, distance, 0.0f, 8.0f * a) &&
           SHOAL_FLOAT(check, env, distance_sum, 0.0f, SHOAL_SUM_BOUND(env->tick, 8.0f * a)) &&
           SHOAL_FLOAT(check, env, episode_return, -SHOAL_SUM_BOUND(env->tick, per_step),
                       SHOAL_SUM_BOUND(env->tick, per_step));
}

#endif
