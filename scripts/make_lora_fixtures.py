#!/usr/bin/env python3
"""LoRA reference fixtures made with Hugging Face PEFT, for the engine's LoRA tests.

Dev-only: needs torch, transformers, safetensors, tokenizers and peft (`pip install peft`). CI never
runs this; its outputs are committed. Run scripts/make_fixtures.py first (it makes the base models).

    python scripts/make_lora_fixtures.py

For each base in ADAPTERS, writes under tests/fixtures/lora/:

    <name>/adapter_config.json, adapter_model.safetensors   a PEFT adapter (save_pretrained) with fixed,
                                                            non-zero weights (B drawn, not PEFT's zeros)
    <name>.json     logits of PEFT's model on probe ids; 3 AdamW steps of PEFT + PyTorch training from
                    that adapter with `nll` and with `neg_p` on the parity batch (losses, pre-clip
                    gradient norms over the adapter's parameters only)

The training contract is scripts/make_fixtures.py's (same batch, objective surrogate, AdamW settings,
clipping); only the adapter's tensors are optimised, the base is frozen.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402
    BETAS, EOS, EPS, FIX, LR, MAX_GRAD_NORM, PARITY_EXAMPLES, SEED, TOKENIZER_DIR, TRAIN_STEPS, WEIGHT_DECAY,
    load_hf, objective, padded_batch, reset_dir, write_json)

OUT = FIX / "lora"

# (adapter name, base fixture, LoraConfig arguments): every linear module with plain scaling on the tied
# Qwen2; a subset with rsLoRA's alpha / sqrt(r) on the untied Llama.
ADAPTERS = [
    ("qwen2-tiny-all-linear", "qwen2-tiny",
     dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])),
    ("llama-tiny-qv-down-rslora", "llama-tiny",
     dict(r=8, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=True)),
]

PROBE_LEN = 16


def probe(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randint(0, vocab, (1, PROBE_LEN), generator=g)


def make_adapter(base_name: str, kwargs: dict, seed: int):
    base = load_hf(FIX / base_name)
    config = LoraConfig(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM", **kwargs)
    model = get_peft_model(base, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at 0 (no change to the base); fixed values test the math
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def train(model, tok: Tokenizer, eos_id: int, obj: str) -> dict:
    input_ids, attn, positions, loss_mask, _ = padded_batch(tok, PARITY_EXAMPLES, eos_id)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    tgt_mask = loss_mask[:, 1:]
    n = int(tgt_mask.sum())
    losses, grad_norms = [], []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=positions).logits
        lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        tok_lp = lp.gather(-1, input_ids[:, 1:, None])[..., 0][tgt_mask]
        f, s = objective(obj, tok_lp)
        ((s.detach() * (-tok_lp)).sum() / n).backward()
        losses.append(float(f.detach().mean()))
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)))
        opt.step()
    return {"losses": losses, "grad_norms": grad_norms, "num_loss_tokens": n}


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS)
    for i, (name, base_name, kwargs) in enumerate(ADAPTERS):
        dest = OUT / name
        reset_dir(dest)
        make_adapter(base_name, kwargs, SEED + 100 + i).save_pretrained(str(dest))
        (dest / "README.md").unlink()  # PEFT's model-card template
        config_path = dest / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = f"tests/fixtures/{base_name}"  # not this machine's path
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        # Everything below from the adapter as saved, loaded the way a user loads one.
        model = PeftModel.from_pretrained(load_hf(FIX / base_name), str(dest)).eval()
        ids = probe(model.config.vocab_size)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
            base_logits = load_hf(FIX / base_name)(input_ids=ids).logits[0]
        changed = (logits - base_logits).abs().max().item()
        assert changed > 1e-3, f"{name}: the adapter changes logits by only {changed}"
        out = {"adapter": name, "base": base_name, "probe_ids": ids[0].tolist(),
               "logits": [[round(float(v), 7) for v in row] for row in logits], "training": {}}
        for obj in ("nll", "neg_p"):
            torch.manual_seed(SEED)
            trainee = PeftModel.from_pretrained(load_hf(FIX / base_name), str(dest), is_trainable=True)
            out["training"][obj] = train(trainee, tok, eos_id, obj)
            print(f"{name} {obj}: {out['training'][obj]}")
        out.update(lr=LR, betas=list(BETAS), eps=EPS, weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM)
        write_json(OUT / f"{name}.json", out)
        print(f"{name}: adapter changes logits by up to {changed:.4f}")


if __name__ == "__main__":
    main()
