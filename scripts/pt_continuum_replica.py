"""Dev-only: an independent PyTorch replication of the miniature's model-strong comparison (docs/continuum.md):
arithmetic SFT of models/continuum-base with the host's settings (AdamW lr 1e-4 by default, betas 0.9/0.95,
eps 1e-8, wd 0.01, 10 % linear warm-up then cosine, clip 1.0, batch 16, 200 steps, the loss a token mean over
the included tokens), then sampled accuracy (4 samples at T = 1, the mean over samples) and greedy accuracy
on the first 50 held-out problems. Its own data order and sampling streams: compare means over seeds.

    pip install torch transformers tokenizers
    python scripts/pt_continuum_replica.py OBJECTIVE SEED [--lr LR] [--domain D --steps N --save DIR]
    # OBJECTIVE: nll | neg_p | alpha=3 | topKbase / bottomKbase (-p on the tokens at or above / at or
    # below the base model's K-th percentile, the mask fixed from the base model before the first step)

With `--domain figfont` (lr 1e-3, 150 steps in docs/continuum.md) nothing is evaluated here: `--save DIR`
writes the trained model as a Hugging Face directory for `host eval --evaluator figfont`, so both sides are
scored by the same evaluator.
"""

import argparse
import json
import math
import random
import re
import shutil
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from pt_threshold_mask import batch_tensors, encode, token_logp  # the same encoding and log-probs

MODEL = "models/continuum-base"
BATCH, HELD_OUT, SAMPLES = 16, 50, 4


def accuracy(model, tok, eos, rows, sample):
    """Share of correct `####` answers over all generations (left-padded batch of every prompt)."""
    prompts = [tok.encode(r["prompt"], add_special_tokens=False).ids for r in rows]
    width = max(map(len, prompts))
    ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    n = SAMPLES if sample else 1
    out = model.generate(
        ids, attention_mask=attention, max_new_tokens=48, do_sample=sample, temperature=1.0 if sample else None,
        top_k=0 if sample else None, top_p=1.0 if sample else None, num_return_sequences=n,
        eos_token_id=eos, pad_token_id=eos,
    )
    correct = 0
    for k, seq in enumerate(out):
        text = tok.decode(seq[width:].tolist())
        answers = re.findall(r"#### (\d+)", text.split("<|endoftext|>")[0])
        correct += bool(answers) and answers[-1] == rows[k // n]["response"].split("#### ")[-1]
    return correct / len(out)


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("objective", help="nll | neg_p | alpha=3 | topKbase | bottomKbase (K a percentile)")
    cli.add_argument("seed", type=int)
    cli.add_argument("--lr", type=float, default=1e-4)
    cli.add_argument("--domain", default="arithmetic")
    cli.add_argument("--steps", type=int, default=200)
    cli.add_argument("--save")
    args = cli.parse_args()
    objective, seed, lr, STEPS = args.objective, args.seed, args.lr, args.steps
    DATA = f"datasets/continuum/{args.domain}"
    torch.set_num_threads(1)  # one core: it runs beside the host's sweeps
    torch.manual_seed(seed)
    random.seed(seed)
    tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
    eos = tok.token_to_id("<|endoftext|>")
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    rows = [json.loads(line) for line in open(f"{DATA}/train.jsonl")]
    held_out = [json.loads(line) for line in open(f"{DATA}/eval.jsonl")][:HELD_OUT]
    encoded = [encode(tok, eos, r) for r in rows]
    base_keep = None
    threshold = re.fullmatch(r"(top|bottom)(\d+)base", objective)
    if objective not in ("nll", "neg_p", "alpha=3") and not threshold:
        sys.exit(f"unknown objective {objective!r}")
    if threshold:
        side, k = threshold.group(1), int(threshold.group(2)) / 100
        with torch.no_grad():
            base_p = []
            for p, r in encoded:
                ids, mask = batch_tensors([(p, r)], eos)
                base_p.append(token_logp(model, ids).exp()[0][mask[0] == 1])
        q = torch.quantile(torch.cat(base_p).double(), k).item()
        base_keep = [((bp >= q) if side == "top" else (bp <= q)).float() for bp in base_p]
        print(f"percentile {k * 100:.0f} of the base model's target-token probabilities: q = {q:.6g}", file=sys.stderr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    warm = int(0.1 * STEPS)
    order = list(range(len(rows)))
    random.shuffle(order)
    for step in range(STEPS):
        factor = step / max(1, warm) if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (STEPS - warm)))
        for group in opt.param_groups:
            group["lr"] = lr * factor
        picked = [order[(step * BATCH + i) % len(order)] for i in range(BATCH)]
        ids, mask = batch_tensors([encoded[i] for i in picked], eos)
        logp = token_logp(model, ids)
        p = logp.exp().detach()
        included = mask.clone()
        if base_keep is not None:
            for row, i in enumerate(picked):
                included[row][mask[row] == 1] = base_keep[i]
        weight = {"nll": torch.ones_like(p), "alpha=3": p**3}.get(objective, p)  # -p and its thresholds: p
        if included.sum() == 0:
            continue  # every token masked out: no update (as the host does)
        loss = (included * weight * -logp).sum() / included.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    if args.save:
        model.save_pretrained(args.save)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(f"{MODEL}/{name}", args.save)
        print(f"{objective} lr {lr} seed {seed}: saved {args.save}")
        return
    model.eval()
    with torch.no_grad():
        sampled = accuracy(model, tok, eos, held_out, True)
        greedy = accuracy(model, tok, eos, held_out, False)
    print(f"{objective} lr {lr} seed {seed}: sampled accuracy {sampled:.3f}, greedy {greedy:.3f}")


if __name__ == "__main__":
    main()
