/* faulty_c: NLL (f = -log p, weight 1) that fails on request, for the host's error tests.
 *   from_step (int, default 2):   compute returns error code 3 with a message at optimizer steps >= from_step.
 *   refuse (bool, default false): create returns NULL with a message.
 *   scale (float, default 1.0):   multiplies loss and weight (checks that float values arrive).
 *   mode (string, "plain"|"leave_include"): "leave_include" leaves include unwritten (the host must notice).
 * Built with -DSFT_TEST_NULL_COMPUTE, the table has a NULL compute pointer (the host must refuse it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sft_objective.h>

typedef struct {
    int64_t from_step;
    double scale;
    int leave_include;
} Faulty;

static void* faulty_create(const SftParam* params, uint32_t n_params, char* err, size_t err_len) {
    Faulty f = {2, 1.0, 0};
    for (uint32_t k = 0; k < n_params; k++) {
        const SftParam* p = &params[k];
        if (strcmp(p->name, "from_step") == 0 && p->type == SFT_PARAM_INT) {
            f.from_step = p->value.i;
        } else if (strcmp(p->name, "scale") == 0 && p->type == SFT_PARAM_FLOAT) {
            f.scale = p->value.f;
        } else if (strcmp(p->name, "mode") == 0 && p->type == SFT_PARAM_STRING) {
            f.leave_include = strcmp(p->value.s, "leave_include") == 0;
        } else if (strcmp(p->name, "refuse") == 0 && p->type == SFT_PARAM_BOOL) {
            if (p->value.b) {
                snprintf(err, err_len, "refused on request (refuse = true)");
                return NULL;
            }
        } else {
            snprintf(err, err_len, "unexpected parameter %s of type %d", p->name, (int)p->type);
            return NULL;
        }
    }
    Faulty* state = malloc(sizeof *state);
    if (!state) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    *state = f;
    return state;
}

static int32_t faulty_compute(void* state, const SftBatch* batch, float* loss, float* weight, uint8_t* include,
                              char* err, size_t err_len) {
    const Faulty* f = state;
    if ((int64_t)batch->step >= f->from_step) {
        snprintf(err, err_len, "injected C error at step %llu of %llu", (unsigned long long)batch->step,
                 (unsigned long long)batch->total_steps);
        return 3;
    }
    for (size_t t = 0; t < batch->n_tokens; t++) {
        loss[t] = batch->mask[t] ? (float)(-f->scale * batch->logp[t]) : 0.0f;
        weight[t] = batch->mask[t] ? (float)f->scale : 0.0f;
        if (!f->leave_include) include[t] = batch->mask[t];
    }
    return 0;
}

static void faulty_destroy(void* state) { free(state); }

static const char* const MODES[] = {"plain", "leave_include", NULL};

static const SftParamSpec PARAMS[] = {
    {.name = "from_step", .type = SFT_PARAM_INT, .has_default = 1, .default_value = {.i = 2},
     .doc = "first optimizer step whose compute fails"},
    {.name = "refuse", .type = SFT_PARAM_BOOL, .has_default = 1, .default_value = {.b = 0},
     .doc = "refuse the parameters in create"},
    {.name = "scale", .type = SFT_PARAM_FLOAT, .has_default = 1, .default_value = {.f = 1.0},
     .doc = "factor on loss and weight"},
    {.name = "mode", .type = SFT_PARAM_STRING, .has_default = 1, .default_value = {.s = "plain"}, .choices = MODES,
     .doc = "leave_include: leave include unwritten"},
};

static const SftObjectiveV1 FAULTY_C = {
    .abi_version = SFT_OBJECTIVE_ABI_VERSION,
    .name = "faulty_c",
    .description = "C test objective that fails on request",
    .formula = "f(p) = -scale log p",
    .loss_form = SFT_LOSS_POTENTIAL,
    .n_params = sizeof PARAMS / sizeof PARAMS[0],
    .params = PARAMS,
    .create = faulty_create,
#ifndef SFT_TEST_NULL_COMPUTE
    .compute = faulty_compute,
#endif
    .destroy = faulty_destroy,
};

SFT_EXPORT const SftObjectiveV1* sft_objective_v1(void) { return &FAULTY_C; }
