#!/usr/bin/env python3
"""PyTorch reference for `host bench`: the same training step on the same model shape, same CPU.

A transformers Qwen2ForCausalLM (tied embeddings, float32, eager attention) trains on random token batches
with every position a loss position. Per step, as the host does: forward, per-token log-probabilities of
the next tokens, the `-p` objective as a weighted NLL (weights = p.detach() / N over all N positions),
backward, clipping to global norm 1.0, AdamW (lr 1e-4, betas 0.9/0.95, weight decay 0.01).

Prints per-step timings, the median tokens/s after warm-up, the peak RSS, and as its last line
`tokens/s: X`.
"""

import argparse
import os
import statistics
import time

import torch
import transformers


def peak_rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("hidden", "intermediate", "layers", "heads", "kv-heads", "vocab", "batch", "seq", "steps"):
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps <= args.warmup:
        ap.error("--steps must be larger than --warmup")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # The same config.json as host's bench::ModelShape::qwen2_config.
    config = transformers.Qwen2Config(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        vocab_size=args.vocab,
        max_position_embeddings=max(args.seq, 32),
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        hidden_act="silu",
        tie_word_embeddings=True,
        use_sliding_window=False,
        attention_dropout=0.0,
    )
    config._attn_implementation = "eager"
    model = transformers.Qwen2ForCausalLM(config).to(torch.float32)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)

    print(
        f"pytorch: hidden {args.hidden} intermediate {args.intermediate} layers {args.layers} heads {args.heads} "
        f"kv-heads {args.kv_heads} vocab {args.vocab}; batch {args.batch} x {args.seq} tokens; {args.steps} steps "
        f"({args.warmup} warm-up); torch {torch.__version__}, transformers {transformers.__version__}",
        flush=True,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen) for _ in range(args.steps)]
    tokens = args.batch * args.seq
    phases = ("forward", "logprobs", "objective", "backward", "optimizer")
    timings = []
    first_loss = last_loss = float("nan")
    for i, ids in enumerate(batches):
        t0 = time.perf_counter()
        logits = model(input_ids=ids).logits  # [B, T, V]
        t1 = time.perf_counter()
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        t2 = time.perf_counter()
        p = logp.detach().exp()
        n = logp.numel()
        weights = p / n  # -p: s(p) = p, token mean over all positions
        loss_value = (1.0 - p).mean().item()
        t3 = time.perf_counter()
        surrogate = -(weights * logp).sum()
        opt.zero_grad(set_to_none=True)
        surrogate.backward()
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t5 = time.perf_counter()
        if i == 0:
            first_loss = loss_value
        last_loss = loss_value
        step = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)
        timings.append(step)
        detail = "  ".join(f"{name} {sec:.3f}s" for name, sec in zip(phases, step))
        print(f"step {i + 1}/{args.steps}: {step[5]:.3f}s  {detail}  {tokens / step[5]:.0f} tokens/s", flush=True)

    measured = timings[args.warmup:]
    step_median = statistics.median(t[5] for t in measured)
    tps = statistics.median(tokens / t[5] for t in measured)
    breakdown = "  ".join(
        f"{name} {statistics.median(t[j] for t in measured):.3f}s "
        f"({100 * statistics.median(t[j] for t in measured) / step_median:.1f}%)"
        for j, name in enumerate(phases)
    )
    print(f"parameters: {n_params}  threads: {torch.get_num_threads()}")
    print(f"loss (objective mean): first {first_loss:.6f}, last {last_loss:.6f}")
    print(f"median step: {step_median:.3f}s  {breakdown}")
    rss = peak_rss_kib()
    print(f"peak RSS: {rss / 1024:.1f} MiB" if rss is not None else "peak RSS: unknown")
    print(f"median tokens/s after {args.warmup} warm-up steps: {tps:.1f}")
    print(f"tokens/s: {tps:.1f}")


if __name__ == "__main__":
    main()
