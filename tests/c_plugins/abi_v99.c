/* abi_v99: declares a future ABI version the host does not know; the host must refuse it. */
#include <sft_objective.h>

static const SftObjectiveV1 FUTURE = {
    .abi_version = 99,
    .name = "abi_v99",
};

SFT_EXPORT const SftObjectiveV1* sft_objective_v1(void) { return &FUTURE; }
