/* neg_p_c: the -p objective written in C. f(p) = 1 - p, weight s(p) = -p f'(p) = p.
 * Build: cc -shared -fPIC -O2 -o libneg_p_c.so neg_p_c.c -I plugin-api/include */
#include <math.h>
#include <sft_objective.h>

/* Stateless: any non-NULL pointer will do as the state. */
static int neg_p_state;

static void* neg_p_create(const SftParam* params, uint32_t n_params, char* err, size_t err_len) {
    (void)params, (void)n_params, (void)err, (void)err_len;
    return &neg_p_state;
}

static int32_t neg_p_compute(void* state, const SftBatch* batch, float* loss, float* weight, uint8_t* include,
                             char* err, size_t err_len) {
    (void)state, (void)err, (void)err_len;
    for (size_t t = 0; t < batch->n_tokens; t++) {
        if (batch->mask[t]) {
            double p = exp((double)batch->logp[t]);
            loss[t] = (float)(1.0 - p);
            weight[t] = (float)p;
            include[t] = 1;
        } else {
            loss[t] = 0.0f, weight[t] = 0.0f, include[t] = 0;
        }
    }
    return 0;
}

static const SftObjectiveV1 NEG_P_C = {
    .abi_version = SFT_OBJECTIVE_ABI_VERSION,
    .name = "neg_p_c",
    .description = "-p written in C: down-weights low-probability tokens",
    .formula = "f(p) = 1 - p",
    .loss_form = SFT_LOSS_POTENTIAL,
    .create = neg_p_create,
    .compute = neg_p_compute,
};

SFT_EXPORT const SftObjectiveV1* sft_objective_v1(void) { return &NEG_P_C; }
