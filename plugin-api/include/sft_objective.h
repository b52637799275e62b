/*
 * sft_objective.h: the plain C ABI for objective plugins of the SFT host. This header is the whole
 * contract; a C (or C++, Zig, ...) objective needs nothing else from this repository.
 *
 * What an objective is. For every loss position t of a micro-batch the host gives the log-probability
 * logp[t] = log p(y_t | x, y_<t) of the target token. The objective returns, per position:
 *   loss[t]    f(p), the objective's value (for logging and for `host plugins check`);
 *   weight[t]  s(p) = -p f'(p) = -d f / d log p, the weight on -log p. The host back-propagates
 *              sum_t include[t] * sg(weight[t]) * (-logp[t]) / sum_t include[t], so this is what trains;
 *   include[t] 1 if the position counts (in the loss and in the normaliser), 0 if not.
 * Example (-p): loss = 1 - p, weight = p, include = mask.
 *
 * The plugin. Build a shared library (`cc -shared -fPIC -O2 -o libmy_obj.so my_obj.c -I <this folder>`)
 * exporting one function, `sft_objective_v1`, that returns a pointer to a static SftObjectiveV1. The host
 * loads the library, calls that function once, refuses a table whose `abi_version` is not the
 * SFT_OBJECTIVE_ABI_VERSION it was built with (one clear error line, exit code 2), checks the table
 * (required pointers non-NULL, valid parameter types, UTF-8 strings), and then uses the objective exactly
 * like a Rust (abi_stable) plugin: `host plugins list|inspect|check|curve`, `host plot`, `host train`.
 *
 * Lifetimes. Everything reachable from the table (strings, parameter specs, choice lists) is read once at
 * load time and must stay valid while the library is loaded; the host never unloads it. Pointers passed
 * *into* the plugin (parameters, batch arrays, output arrays, error buffers) are valid only for the
 * duration of that call: copy what you want to keep.
 *
 * Errors. `create` returns NULL and `compute` returns non-zero to fail; write a one-line, NUL-terminated
 * message into `err` (at most `err_len` bytes including the NUL, e.g. with snprintf). The host reports it
 * as an error naming the plugin (exit code 2). All outputs are validated as for any plugin: every `include`
 * must be 0 or 1 and every included loss and weight must be finite.
 *
 * What the host cannot protect you from. Unlike Rust plugins, whose panics are caught at the boundary, C
 * code runs unguarded in the host's process: a crash (segfault, abort, out-of-bounds write, C++ exception
 * escaping a function of this table) takes the whole host down, possibly in the middle of a training run.
 * Never write past n_tokens, never throw across this ABI, and return an error code instead of aborting.
 *
 * Threads. `create`, `compute` and `destroy` may be called from any thread, but the host never calls into
 * the same state from two threads at once. Different states may be used concurrently: keep global mutable
 * data out of the plugin, or guard it yourself. `compute` must be deterministic (same inputs, same outputs;
 * `host plugins check` verifies it).
 */
#ifndef SFT_OBJECTIVE_H
#define SFT_OBJECTIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the table below. The host refuses a table with any other value. */
#define SFT_OBJECTIVE_ABI_VERSION 1

/* SftParamSpec.type and SftParam.type. */
#define SFT_PARAM_FLOAT 0  /* value.f (double); an integer given by the user is widened to float */
#define SFT_PARAM_INT 1    /* value.i (int64_t) */
#define SFT_PARAM_BOOL 2   /* value.b (0 or 1) */
#define SFT_PARAM_STRING 3 /* value.s (NUL-terminated UTF-8) */

/* SftObjectiveV1.loss_form: how `host plugins check` relates loss to weight. */
#define SFT_LOSS_POTENTIAL 0            /* weight = -d loss / d log p (checked by finite differences) */
#define SFT_LOSS_DETACHED_WEIGHTED_NLL 1 /* loss = sg(weight) * -log p, as DFT (checked as a ratio) */

/* SftObjectiveV1.needs: optional per-token inputs the host must compute (they cost a pass over the vocab). */
#define SFT_NEEDS_ENTROPY 1u /* SftBatch.entropy */
#define SFT_NEEDS_TOP1 2u    /* SftBatch.top1_prob */

/* A parameter value; which member is meaningful is given by the type next to it. */
typedef union SftValue {
    double f;
    int64_t i;
    int32_t b;
    const char* s;
} SftValue;

/* One declared parameter. The host checks the user's values against these before calling `create`:
 * unknown names, wrong types and strings outside `choices` are refused naming the key, and defaults are
 * filled in. */
typedef struct SftParamSpec {
    const char* name;           /* required, e.g. "alpha" */
    int32_t type;               /* SFT_PARAM_* */
    int32_t has_default;        /* 0: optional, absent from `create`'s list unless the user sets it */
    SftValue default_value;     /* read as `type` when has_default != 0 */
    const char* const* choices; /* strings only: NULL-terminated list of accepted values, or NULL for any */
    const char* doc;            /* one line for `host plugins inspect`, may be NULL */
} SftParamSpec;

/* One parameter value passed to `create`: every parameter the user set or that has a default. */
typedef struct SftParam {
    const char* name;
    int32_t type; /* SFT_PARAM_*, always the declared type */
    SftValue value;
} SftParam;

/* The per-token inputs of one micro-batch, flattened over its sequences. */
typedef struct SftBatch {
    const float* logp;              /* [n_tokens] log p of each target position (<= 0) */
    const uint8_t* mask;            /* [n_tokens] 1 for loss positions (response and EOS), 0 otherwise */
    size_t n_tokens;
    const uint32_t* sequence_starts; /* [n_sequences] offset of each sequence's first position; first is 0 */
    size_t n_sequences;
    const float* entropy;   /* [n_tokens] entropy of the predicted distribution, NULL unless SFT_NEEDS_ENTROPY */
    const float* top1_prob; /* [n_tokens] probability of the likeliest token, NULL unless SFT_NEEDS_TOP1 */
    uint64_t step;          /* the optimizer step, from 1 */
    uint64_t total_steps;   /* the run's number of optimizer steps */
} SftBatch;

/* The table a plugin exports. Fields marked "required" must be non-NULL. */
typedef struct SftObjectiveV1 {
    uint32_t abi_version;    /* SFT_OBJECTIVE_ABI_VERSION; always the first field, in every version */
    uint32_t needs;          /* SFT_NEEDS_* flags, or 0 */
    const char* name;        /* required: the code name, e.g. "neg_p_c" */
    const char* description; /* one line for `host plugins list`, may be NULL */
    const char* formula;     /* e.g. "f(p) = 1 - p", may be NULL */
    int32_t loss_form;       /* SFT_LOSS_* */
    uint32_t n_params;
    const SftParamSpec* params; /* [n_params], may be NULL when n_params is 0 */

    /* Required. Builds a state from the (already validated, defaults filled) parameters. Returns a non-NULL
     * pointer on success (a stateless objective may return the address of any static object), or NULL
     * with a message in `err` to refuse the parameters (e.g. a value out of range). */
    void* (*create)(const SftParam* params, uint32_t n_params, char* err, size_t err_len);

    /* Required. Fills loss, weight and include, each [batch->n_tokens], for every position (write 0, 0, 0
     * where mask is 0). Returns 0 on success, non-zero with a message in `err` on failure. */
    int32_t (*compute)(void* state, const SftBatch* batch, float* loss, float* weight, uint8_t* include,
                       char* err, size_t err_len);

    /* Optional (may be NULL). Frees a state from `create`; called once per state. */
    void (*destroy)(void* state);
} SftObjectiveV1;

/* The one symbol a C objective exports. Returns a pointer to a table that lives as long as the library. */
const SftObjectiveV1* sft_objective_v1(void);

/* Marks the entry point as exported (use it when building with -fvisibility=hidden):
 *     SFT_EXPORT const SftObjectiveV1* sft_objective_v1(void) { return &TABLE; } */
#if defined(_WIN32)
#define SFT_EXPORT __declspec(dllexport)
#else
#define SFT_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
}
#endif

#endif /* SFT_OBJECTIVE_H */
