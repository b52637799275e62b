#!/usr/bin/env python3
"""Regenerate the greedy-generation reference fixtures (tests/fixtures/generation/<model>.json).

Dev-only, like make_fixtures.py (needs torch, transformers, tokenizers; see scripts/README.md).
CI never runs this; its outputs are committed. Run it after make_fixtures.py has written the tiny
checkpoints:

    python scripts/make_generation_fixtures.py

For each of tests/fixtures/{qwen2-tiny,llama-tiny,llama3-rope-tiny} it tokenises four prompts
(tokenizers.Tokenizer.from_file(<dir>/tokenizer.json), add_special_tokens=False), generates
greedily with transformers, one prompt at a time (batch 1, no padding):

    model.generate(ids, do_sample=False, max_new_tokens=24, eos_token_id=<config eos>)

and writes

    {"model", "eos_token_ids", "max_new_tokens",
     "prompts": [text, ...], "prompt_ids": [[id, ...], ...],
     "generated": [[id, ...], ...],          # new tokens only, EOS excluded
     "stopped_at_eos": [bool, ...],
     "min_top2_gap": [float, ...]}            # smallest top-1 minus top-2 logit over the steps

`min_top2_gap` tells how robust the greedy path is to float rounding: a Rust decoder that agrees
with transformers to ~1e-5 follows the same path as long as the gaps are well above that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "generation"

MODELS = ["qwen2-tiny", "llama-tiny", "llama3-rope-tiny"]
MAX_NEW_TOKENS = 24
# Varied lengths (2 to 17 tokens), so that a batch of all four needs real left padding; chosen so
# that no greedy step is a near-tie (see MIN_GAP), and so that one generation (llama3-rope-tiny on
# the first prompt) stops at EOS before max_new_tokens.
PROMPTS = [
    "Q: 98+76\nA: ",
    "Hi",
    "My friend paints the blue door",
    "The old man counts",
]
MIN_LONG = 10  # at least some prompts must generate this many tokens before any EOS
MIN_GAP = 1e-3  # greedy choices closer than this would make token-for-token parity flaky


def eos_ids(config) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


@torch.no_grad()
def generate(model, ids: list[int], eos: list[int]) -> dict:
    x = torch.tensor([ids])
    out = model.generate(
        x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
        eos_token_id=eos,
        pad_token_id=eos[0] if eos else None,
        output_scores=True,
        return_dict_in_generate=True,
    )
    new = out.sequences[0, len(ids):].tolist()
    gaps = []
    for scores in out.scores:  # one [1, V] tensor of (processed) logits per step
        top2 = scores[0].float().topk(2).values
        gaps.append(float(top2[0] - top2[1]))
    stopped = bool(new) and new[-1] in eos
    if stopped:
        new = new[:-1]
    assert not any(t in eos for t in new), "EOS inside the continuation"
    return {"generated": new, "stopped_at_eos": stopped, "min_top2_gap": min(gaps)}


def main() -> None:
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)

    for name in MODELS:
        d = FIX / name
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        model = AutoModelForCausalLM.from_pretrained(
            str(d), dtype=torch.float32, attn_implementation="eager").eval()
        eos = eos_ids(model.config)
        prompt_ids = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]
        results = [generate(model, ids, eos) for ids in prompt_ids]

        lens = [len(r["generated"]) for r in results]
        gaps = [r["min_top2_gap"] for r in results]
        print(f"{name}: prompt lengths {[len(p) for p in prompt_ids]}, generated {lens}, "
              f"stopped at EOS {[r['stopped_at_eos'] for r in results]}, "
              f"min top-2 gap {min(gaps):.2e}")
        assert sum(n >= MIN_LONG for n in lens) >= 2, f"{name}: generations too short: {lens}"
        assert min(gaps) > MIN_GAP, f"{name}: a greedy step is a near-tie ({min(gaps):.2e})"

        out = {
            "model": name,
            "eos_token_ids": eos,
            "max_new_tokens": MAX_NEW_TOKENS,
            "prompts": PROMPTS,
            "prompt_ids": prompt_ids,
            "generated": [r["generated"] for r in results],
            "stopped_at_eos": [r["stopped_at_eos"] for r in results],
            "min_top2_gap": gaps,
        }
        # One key per line, each value compact: small diffs when regenerated.
        lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in out.items()]
        (OUT / f"{name}.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")


if __name__ == "__main__":
    sys.exit(main())
