"""Dev-only: does a top threshold checked against the *current* model collapse where the same threshold fixed
once from the *base* model does not? An independent PyTorch run of the miniature's arithmetic SFT (the host's
settings: AdamW betas 0.9/0.95, eps 1e-8, wd 0.01, 10 % linear warm-up then cosine, clip 1.0, batch 16, 200
steps, the loss a token mean over the included tokens) for `-p` with a top threshold q, both ways, on the same
data order. Prints greedy accuracy on 50 held-out problems and the share of target tokens kept per block of
40 steps.

    pip install torch transformers tokenizers
    python scripts/pt_threshold_mask.py Q LR SEED      # e.g. 0.5 1e-3 0
"""

import json
import math
import random
import re
import sys

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

MODEL = "models/continuum-base"
DATA = "datasets/continuum/arithmetic"
STEPS, BATCH = 200, 16


def encode(tok, eos, row):
    prompt = tok.encode(row["prompt"], add_special_tokens=False).ids
    response = tok.encode(row["response"], add_special_tokens=False).ids + [eos]
    return prompt, response


def batch_tensors(batch, eos):
    length = max(len(p) + len(r) for p, r in batch)
    ids = torch.full((len(batch), length), eos)
    mask = torch.zeros(len(batch), length)
    for i, (p, r) in enumerate(batch):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p) : len(p) + len(r)] = 1
    return ids, mask[:, 1:]


def token_logp(model, ids):
    logits = model(input_ids=ids).logits[:, :-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]


def run(q, lr, seed, fixed):
    torch.manual_seed(seed)
    random.seed(seed)
    tok = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
    eos = tok.token_to_id("<|endoftext|>")
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    rows = [json.loads(line) for line in open(f"{DATA}/train.jsonl")]
    held_out = [json.loads(line) for line in open(f"{DATA}/eval.jsonl")][:50]
    encoded = [encode(tok, eos, r) for r in rows]
    # The base model's keep mask per example, computed once (used when `fixed`).
    base_keep = []
    with torch.no_grad():
        for p, r in encoded:
            ids, mask = batch_tensors([(p, r)], eos)
            base_keep.append((token_logp(model, ids).exp() >= q)[0])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    warm = int(0.1 * STEPS)
    order = list(range(len(rows)))
    random.shuffle(order)
    kept_shares = []
    for step in range(STEPS):
        t = step
        factor = t / max(1, warm) if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, STEPS - warm)))
        for group in opt.param_groups:
            group["lr"] = lr * factor
        picked = [order[(step * BATCH + i) % len(order)] for i in range(BATCH)]
        ids, mask = batch_tensors([encoded[i] for i in picked], eos)
        logp = token_logp(model, ids)
        p = logp.exp()
        if fixed:
            keep = torch.zeros_like(mask)
            for row, i in enumerate(picked):
                k = base_keep[i]
                keep[row, : len(k)] = k.float()
        else:
            keep = (p >= q).float()
        included = mask * keep.detach()
        kept_shares.append(float(included.sum() / mask.sum()))
        loss = (included * p.detach() * -logp).sum() / (included.sum() + 1e-8)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    correct = 0
    for row in held_out:
        prompt = tok.encode(row["prompt"], add_special_tokens=False).ids
        out = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        text = tok.decode(out[0][len(prompt) :].tolist())
        answers = re.findall(r"#### (\d+)", text)
        correct += bool(answers) and answers[-1] == row["response"].split("#### ")[-1]
    blocks = [sum(kept_shares[i : i + 40]) / 40 for i in range(0, STEPS, 40)]
    return correct / len(held_out), blocks


def main():
    q, lr, seed = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    for fixed in (False, True):
        accuracy, blocks = run(q, lr, seed, fixed)
        kind = "fixed from the base model" if fixed else "checked against the current model"
        shares = " ".join(f"{b:.3f}" for b in blocks)
        print(f"-p, top q={q} {kind}, lr {lr}, seed {seed}: greedy accuracy {accuracy:.2f}; kept share by 40 steps {shares}")


if __name__ == "__main__":
    main()
