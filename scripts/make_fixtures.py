#!/usr/bin/env python3
"""Regenerate the reference fixtures that the Rust tests compare against.

Dev-only: needs torch, transformers, tokenizers and safetensors (see scripts/README.md).
CI never runs this; its outputs are committed.

    python scripts/make_fixtures.py            # regenerates everything below

Writes (paths relative to the repository root):

    tests/fixtures/tokenizer/                   tokenizer.json + tokenizer_config.json (the shared tokenizer)
    tests/fixtures/{qwen2-tiny,llama-tiny,llama3-rope-tiny,qwen2-sharded}/   tiny random HF checkpoints
    tests/fixtures/parity/<model>.json          per-token log-probs of 5 examples (score parity)
    tests/fixtures/train/<model>-<objective>.json   3 AdamW steps on one padded batch (training parity)
    models/tiny-default/                        the embedded default model (Qwen2-shaped, random init)
    datasets/default/{train,eval}.jsonl         2-digit additions with worked solutions

Conventions (see shared DESIGN.md, "Tokenisation and loss"):
  * tokenise with tokenizers.Tokenizer.from_file(".../tokenizer.json"),
    encode(text, add_special_tokens=False); never AutoTokenizer (it swaps the pre-tokenizer of a
    Qwen2 model's tokenizer.json for Qwen2's own regex and gives other ids);
  * ids = encode(prompt) ++ encode(response) ++ [eos]; loss/score positions = response tokens + EOS.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
TOKENIZER_DIR = FIX / "tokenizer"

SEED = 1234
VOCAB_SIZE = 320
EOS = "<|endoftext|>"
SPECIAL_TOKENS = [EOS, "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The tiny fixture shape (all four test checkpoints).
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
)

# Training-parity hyper-parameters (the contract the Rust test replays).
LR = 1e-3
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
TRAIN_STEPS = 3

AFTER3_LIMIT = 100 * 1024  # only commit the post-training weights if they are this small


# --------------------------------------------------------------------------------------------
# small helpers


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: Path, obj, indent: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def reset_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# data: additions with worked solutions, English sentences


def addition_example(a: int, b: int) -> dict:
    """{"prompt": "Q: 47+38\\nA: ", "response": "7+8=15, 4+3+1=8 => 85"}"""
    a1, a0 = divmod(a, 10)
    b1, b0 = divmod(b, 10)
    units = a0 + b0
    carry = units // 10
    tens = a1 + b1 + carry
    tens_expr = f"{a1}+{b1}+{carry}" if carry else f"{a1}+{b1}"
    response = f"{a0}+{b0}={units}, {tens_expr}={tens} => {a + b}"
    return {"prompt": f"Q: {a}+{b}\nA: ", "response": response}


SUBJECTS = ["the cat", "a small dog", "my friend", "the teacher", "our team", "the old man",
            "a young girl", "the robot", "her brother", "the farmer"]
VERBS = ["likes", "sees", "finds", "paints", "reads", "carries", "wants", "builds", "counts", "opens"]
OBJECTS = ["a red ball", "the big house", "three apples", "an old book", "the blue door",
           "some water", "a long letter", "the green hat", "many stars", "a warm cup of tea"]
ENDINGS = ["today", "in the morning", "at night", "every day", "near the river", "after lunch",
           "with care", "again", "in the garden", "before school"]


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(ENDINGS)}."
    return s[0].upper() + s[1:]


def tokenizer_corpus() -> list[str]:
    rng = random.Random(SEED + 1)
    lines = []
    for _ in range(300):
        ex = addition_example(rng.randint(10, 99), rng.randint(10, 99))
        lines.append(ex["prompt"] + ex["response"])
    for _ in range(300):
        lines.append(sentence(rng))
    for _ in range(20):
        lines.append(f"<|im_start|>user\n{sentence(rng)}<|im_end|>\n<|im_start|>assistant\n"
                     f"{sentence(rng)}<|im_end|>\n")
    return lines


def default_datasets() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED + 2)
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    rng.shuffle(pairs)
    train = [addition_example(a, b) for a, b in pairs[:200]]
    evals = [addition_example(a, b) for a, b in pairs[200:250]]
    return train, evals


# The five parity examples: varied lengths, one chat-formatted prompt (special tokens inside the
# text are matched by encode even with add_special_tokens=False), one non-ASCII byte sequence, one
# response longer than 40 tokens.
PARITY_EXAMPLES = [
    addition_example(47, 38),
    {"prompt": "Hi", "response": "!"},
    {"prompt": "<|im_start|>user\nWhat does the cat like?<|im_end|>\n<|im_start|>assistant\n",
     "response": "The cat likes a warm cup of tea in the café."},
    {"prompt": "Q: 98+76\nA: ",
     "response": "8+6=14, 9+7+1=17 => 174. Then 174+25: 4+5=9, 7+2=9 => 199. The old man counts "
                 "many stars at night, and the robot builds the big house again."},
    {"prompt": "Tell me something.\n", "response": "A young girl reads an old book before school."},
]


# --------------------------------------------------------------------------------------------
# tokenizer


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return tok


def tokenizer_config() -> dict:
    return {
        "added_tokens_decoder": {},  # filled in by write_tokenizer
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_tokenizer(tok: Tokenizer, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tok.save(str(dest / "tokenizer.json"))
    cfg = tokenizer_config()
    cfg["added_tokens_decoder"] = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
        for t in SPECIAL_TOKENS
    }
    write_json(dest / "tokenizer_config.json", cfg, indent=2)


def copy_tokenizer(dest: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / name, dest / name)


def encode_example(tok: Tokenizer, ex: dict, eos_id: int) -> tuple[list[int], int]:
    p = tok.encode(ex["prompt"], add_special_tokens=False).ids
    r = tok.encode(ex["response"], add_special_tokens=False).ids
    return p + r + [eos_id], len(p)


# --------------------------------------------------------------------------------------------
# models


def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Large random weights so log-probs spread over several nats (default init is near-uniform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def make_qwen2(vocab: int, eos_id: int, tied: bool, **kw) -> Qwen2ForCausalLM:
    shape = {**TINY, **kw}
    cfg = Qwen2Config(
        vocab_size=vocab,
        tie_word_embeddings=tied,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        **shape,
    )
    cfg._attn_implementation = "eager"
    return Qwen2ForCausalLM(cfg).float().eval()


def make_llama(vocab: int, eos_id: int, rope_theta: float = 10000.0, rope_scaling=None) -> LlamaForCausalLM:
    kw = {}
    if rope_scaling is not None:
        kw["rope_scaling"] = rope_scaling
    cfg = LlamaConfig(
        vocab_size=vocab,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        rope_theta=rope_theta,
        rms_norm_eps=1e-5,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        **TINY,
        **kw,
    )
    cfg._attn_implementation = "eager"
    return LlamaForCausalLM(cfg).float().eval()


def to_classic_layout(config_path: Path) -> None:
    """Rewrite a transformers-5 config.json (rope_parameters, dtype, layer_types) to the classic
    layout of pre-v5 hub checkpoints (rope_theta, rope_scaling, torch_dtype at the top level)."""
    cfg = json.loads(config_path.read_text())
    rp = cfg.pop("rope_parameters", None) or {}
    rp = dict(rp)
    theta = rp.pop("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    cfg["rope_theta"] = theta
    cfg["rope_scaling"] = None if rope_type == "default" else rp
    cfg["torch_dtype"] = cfg.pop("dtype", "float32")
    cfg.pop("layer_types", None)
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_hf(path: Path):
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch.float32, attn_implementation="eager").eval()


def probe_ids(vocab: int, n: int = 80) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, vocab, (1, n), generator=g)


@torch.no_grad()
def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def save_model(model, dest: Path, classic: bool, max_shard_size=None) -> None:
    """save_pretrained + tokenizer copy; optionally rewrite the config to the classic layout.
    Reloads from disk and checks the logits are unchanged."""
    reset_dir(dest)
    kw = {"safe_serialization": True}
    if max_shard_size is not None:
        kw["max_shard_size"] = max_shard_size
    model.save_pretrained(str(dest), **kw)
    if classic:
        to_classic_layout(dest / "config.json")
    copy_tokenizer(dest)
    ids = probe_ids(model.config.vocab_size)
    reloaded = load_hf(dest)
    diff = (logits_of(model, ids) - logits_of(reloaded, ids)).abs().max().item()
    assert diff == 0.0, f"{dest.name}: reloaded logits differ by {diff}"
    cfg = json.loads((dest / "config.json").read_text())
    if classic:
        assert "rope_parameters" not in cfg and "dtype" not in cfg and "layer_types" not in cfg
        assert "rope_theta" in cfg and "rope_scaling" in cfg and cfg["torch_dtype"] == "float32"
    else:
        assert "rope_parameters" in cfg and "dtype" in cfg, f"{dest.name}: expected the newer layout"


# --------------------------------------------------------------------------------------------
# scoring and training


@torch.no_grad()
def score(model, tok: Tokenizer, examples: list[dict], eos_id: int) -> dict:
    all_ids, starts, logps = [], [], []
    for ex in examples:
        ids, start = encode_example(tok, ex, eos_id)
        x = torch.tensor([ids])
        lp = F.log_softmax(model(input_ids=x).logits.float(), dim=-1)[0]
        # target ids[t] is predicted from position t-1
        tgt = x[0, start:]
        vals = lp[start - 1:-1].gather(-1, tgt[:, None])[:, 0]
        all_ids.append(ids)
        starts.append(start)
        logps.append([float(v) for v in vals])
    return {"input_ids": all_ids, "response_start": starts, "logp": logps}


def padded_batch(tok: Tokenizer, examples: list[dict], eos_id: int):
    rows = [encode_example(tok, ex, eos_id) for ex in examples]
    n = max(len(ids) for ids, _ in rows)
    B = len(rows)
    input_ids = torch.full((B, n), eos_id, dtype=torch.long)  # pad id is irrelevant: masked
    attn = torch.zeros((B, n), dtype=torch.long)
    loss_mask = torch.zeros((B, n), dtype=torch.bool)  # over target positions 1..n-1 of ids
    for i, (ids, start) in enumerate(rows):
        L = len(ids)
        input_ids[i, :L] = torch.tensor(ids)
        attn[i, :L] = 1
        loss_mask[i, start:L] = True
    positions = torch.arange(n)[None, :].expand(B, n).contiguous()
    return input_ids, attn, positions, loss_mask, rows


def objective(name: str, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, s) per token; gradient of f(p) == s * grad(-log p)."""
    p = logp.exp()
    if name == "nll":
        return -logp, torch.ones_like(logp)
    if name == "neg_p":
        return 1.0 - p, p
    raise ValueError(name)


def train_steps(model, tok: Tokenizer, examples: list[dict], eos_id: int, obj: str, lr: float = LR) -> dict:
    input_ids, attn, positions, loss_mask, _ = padded_batch(tok, examples, eos_id)
    model.train()  # no dropout in these configs, but be explicit
    params = list(model.parameters())  # tied embeddings: one tensor
    opt = torch.optim.AdamW(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    tgt_mask = loss_mask[:, 1:]
    N = int(tgt_mask.sum())
    losses, grad_norms = [], []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=positions).logits
        lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        tok_lp = lp.gather(-1, input_ids[:, 1:, None])[..., 0][tgt_mask]  # (N,)
        f, s = objective(obj, tok_lp)
        surrogate = (s.detach() * (-tok_lp)).sum() / N
        surrogate.backward()
        losses.append(float(f.detach().mean()))
        gn = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        grad_norms.append(float(gn))
        opt.step()
    model.eval()
    return {"losses": losses, "grad_norms": grad_norms, "num_loss_tokens": N}


# --------------------------------------------------------------------------------------------
# main


def main() -> None:
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    seed_all(SEED)

    # 1. tokenizer
    reset_dir(TOKENIZER_DIR)
    write_tokenizer(build_tokenizer(), TOKENIZER_DIR)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    eos_id = tok.token_to_id(EOS)
    assert eos_id is not None
    sample = PARITY_EXAMPLES[0]
    print(f"tokenizer: vocab {vocab}, eos {EOS!r} = {eos_id}; "
          f"{sample['prompt'] + sample['response']!r} -> "
          f"{tok.encode(sample['prompt'] + sample['response'], add_special_tokens=False).tokens}")

    # 2. tiny checkpoints
    specs = {}

    m = make_qwen2(vocab, eos_id, tied=True)
    reinit_(m, SEED + 10)
    save_model(m, FIX / "qwen2-tiny", classic=True)
    specs["qwen2-tiny"] = m

    m = make_llama(vocab, eos_id)
    reinit_(m, SEED + 20)
    save_model(m, FIX / "llama-tiny", classic=False)
    specs["llama-tiny"] = m

    llama3_scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    m = make_llama(vocab, eos_id, rope_theta=500000.0, rope_scaling=llama3_scaling)
    reinit_(m, SEED + 30)
    plain = make_llama(vocab, eos_id, rope_theta=500000.0)
    plain.load_state_dict(m.state_dict())
    ids = probe_ids(vocab)
    d = (logits_of(m, ids) - logits_of(plain, ids)).abs().max().item()
    assert d > 1e-3, f"llama3 rope scaling changes logits by only {d}"
    print(f"llama3-rope-tiny: scaling changes logits by up to {d:.4f}")
    save_model(m, FIX / "llama3-rope-tiny", classic=True)
    cfg = json.loads((FIX / "llama3-rope-tiny" / "config.json").read_text())
    assert cfg["rope_scaling"]["rope_type"] == "llama3" and cfg["rope_theta"] == 500000.0
    specs["llama3-rope-tiny"] = m

    m = make_qwen2(vocab, eos_id, tied=False)
    reinit_(m, SEED + 40)
    save_model(m, FIX / "qwen2-sharded", classic=True, max_shard_size="70KB")
    shards = sorted(p.name for p in (FIX / "qwen2-sharded").glob("model-*.safetensors"))
    assert 2 <= len(shards) <= 3, shards
    assert (FIX / "qwen2-sharded" / "model.safetensors.index.json").exists()
    assert not (FIX / "qwen2-sharded" / "model.safetensors").exists()
    specs["qwen2-sharded"] = m

    # 3. score parity (from the checkpoints as saved on disk)
    for name in specs:
        model = load_hf(FIX / name)
        out = {"model": name, "eos_id": eos_id, "examples": PARITY_EXAMPLES,
               **score(model, tok, PARITY_EXAMPLES, eos_id)}
        assert any(len(ids) - s > 40 for ids, s in zip(out["input_ids"], out["response_start"]))
        flat = [v for row in out["logp"] for v in row]
        print(f"parity {name}: {len(flat)} tokens, logp min {min(flat):.2f} "
              f"mean {sum(flat) / len(flat):.2f} max {max(flat):.3f}")
        write_json(FIX / "parity" / f"{name}.json", out)

    # 4. training parity
    for name in ("qwen2-tiny", "llama-tiny"):
        for obj in ("nll", "neg_p"):
            torch.manual_seed(SEED)
            model = load_hf(FIX / name)
            res = train_steps(model, tok, PARITY_EXAMPLES, eos_id, obj)
            out = {"model": name, "objective": obj, "lr": LR, "betas": list(BETAS), "eps": EPS,
                   "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
                   "examples": PARITY_EXAMPLES, **res}
            print(f"train {name}-{obj}: losses {res['losses']} grad_norms {res['grad_norms']}")
            write_json(FIX / "train" / f"{name}-{obj}.json", out, indent=1)
            if name == "qwen2-tiny" and obj == "nll":
                after = FIX / "train" / "qwen2-tiny-nll-after3.safetensors"
                sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                      if k != "lm_head.weight"}  # tied: stored once, as on disk
                save_file(sd, str(after), metadata={"format": "pt"})
                if after.stat().st_size > AFTER3_LIMIT:
                    print(f"  not keeping {after.name}: {after.stat().st_size} bytes > {AFTER3_LIMIT}")
                    after.unlink()

    # 6. the embedded default model and dataset
    seed_all(SEED + 50)
    m = make_qwen2(vocab, eos_id, tied=True, hidden_size=64, intermediate_size=128,
                   max_position_embeddings=512)
    save_model(m, ROOT / "models" / "tiny-default", classic=True)
    train, evals = default_datasets()
    write_jsonl(ROOT / "datasets" / "default" / "train.jsonl", train)
    write_jsonl(ROOT / "datasets" / "default" / "eval.jsonl", evals)

    print("\nsizes:")
    for d in [TOKENIZER_DIR, *(FIX / n for n in specs), FIX / "parity", FIX / "train",
              ROOT / "models" / "tiny-default", ROOT / "datasets" / "default"]:
        print(f"  {d.relative_to(ROOT)}: {dir_size(d)} bytes")


if __name__ == "__main__":
    sys.exit(main())
