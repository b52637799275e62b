#!/usr/bin/env python3
"""Load a checkpoint directory with Hugging Face transformers and score a JSONL data file.

Dev-only (needs torch, transformers, tokenizers). Used to check that a checkpoint written by the
Rust host loads back in transformers unchanged and scores the same:

    python scripts/check_hf_load.py DIR DATA.jsonl [--prompt-key prompt] [--response-key response]
                                    [--adapter ADAPTER_DIR] [--expect HOST_SCORE.jsonl] [--atol 1e-4]

With --adapter (needs peft), the LoRA adapter the host saved is loaded on DIR with
peft.PeftModel.from_pretrained, unchanged, and scored.

Prints one JSON line per example, `{"index": i, "logp": [...]}`: the log-probability of every
response token and of the EOS, the same format `host score --out` writes. With --expect, compares
against such a file instead and exits 1 if any value differs by more than --atol.

Tokenisation follows the host (and shared DESIGN.md): tokenizers.Tokenizer.from_file(DIR/tokenizer.json),
ids = encode(prompt) ++ encode(response) ++ [eos], no special tokens added by encode. AutoTokenizer
is deliberately not used: for model_type qwen2 it replaces the pre-tokenizer and changes the ids.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging


def eos_id_of(model_dir: Path, tok: Tokenizer, model) -> int:
    cfg_path = model_dir / "tokenizer_config.json"
    if cfg_path.exists():
        eos = json.loads(cfg_path.read_text()).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if eos is not None and tok.token_to_id(eos) is not None:
            return tok.token_to_id(eos)
    eos = model.config.eos_token_id
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        sys.exit("no eos token found in tokenizer_config.json or config.json")
    return int(eos)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--prompt-key", default="prompt")
    ap.add_argument("--response-key", default="response")
    ap.add_argument("--expect", type=Path, help="a `host score` output to compare against")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--adapter", type=Path, help="a LoRA adapter directory to load on the model with PEFT")
    args = ap.parse_args()

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(
        str(args.model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    if args.adapter is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(args.adapter)).eval()
    tok = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    eos_id = eos_id_of(args.model_dir, tok, model)

    rows = []
    with open(args.data) as f:
        for line in f:
            if line.strip():
                ex = json.loads(line)
                p = tok.encode(ex[args.prompt_key], add_special_tokens=False).ids
                r = tok.encode(ex[args.response_key], add_special_tokens=False).ids
                rows.append((p + r + [eos_id], len(p)))

    results = []
    with torch.no_grad():
        for i, (ids, start) in enumerate(rows):
            x = torch.tensor([ids])
            lp = F.log_softmax(model(input_ids=x).logits.float(), dim=-1)[0]
            vals = lp[start - 1:-1].gather(-1, x[0, start:, None])[:, 0]
            results.append({"index": i, "logp": [float(v) for v in vals]})

    if args.expect is None:
        for r in results:
            print(json.dumps(r))
        return 0

    expected = {}
    with open(args.expect) as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                expected[e["index"]] = e["logp"]
    worst, bad = 0.0, 0
    for r in results:
        e = expected.get(r["index"])
        if e is None or len(e) != len(r["logp"]):
            print(f"example {r['index']}: expected {None if e is None else len(e)} values, "
                  f"got {len(r['logp'])}")
            bad += 1
            continue
        d = max((abs(a - b) for a, b in zip(e, r["logp"])), default=0.0)
        worst = max(worst, d)
        if d > args.atol:
            bad += 1
            print(f"example {r['index']}: max |diff| {d:.3g} > {args.atol}")
    print(f"{len(results)} examples, max |diff| {worst:.3g}, {bad} over tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
