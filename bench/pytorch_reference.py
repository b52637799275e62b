#!/usr/bin/env python3
"""PyTorch reference for `host bench`: the same training step on the same model shape, same machine.

A transformers Qwen2ForCausalLM (tied embeddings, eager attention) trains on random token batches with
every position a loss position. Per step, as the host does: forward, per-token log-probabilities of the
next tokens (in float32), the `-p` objective as a weighted NLL (weights = p.detach() / N over all N
positions), backward, clipping to global norm 1.0, AdamW (lr 1e-4, betas 0.9/0.95, weight decay 0.01).

`--device cuda[:N]` runs on a GPU (each phase ends with torch.cuda.synchronize()). `--dtype bf16` is the
host's mixed precision: a bf16 model (bf16 weights and activations; log-softmax in float32) whose AdamW
works on float32 master weights; the bf16 gradients are cast to float32 onto the master copies, clipped,
stepped, and the master weights copied back into the bf16 model (not torch.autocast, which keeps float32
weights and casts them at each matrix product).

`--lengths MIN:MAX` (instead of `--seq`) draws each row's length uniformly between MIN and MAX as `host
bench --lengths` does (the same splitmix64 stream from the seed, so the same lengths; the token ids are
random in both but not the same), pads the rows to MAX on the right and puts the loss on the real
positions only: PyTorch computes the padding, the host does not.

`--lora-r R` (needs peft) trains a PEFT LoRA adapter of rank R (alpha 2R, dropout 0, on `--lora-targets`,
default q_proj,v_proj) on the frozen model instead of every weight, as `host bench --lora-r` does.

Prints per-step timings, the median tokens/s after warm-up, the peak RSS (on a GPU also `peak device
memory: X MiB in use, Y MiB allocated`, in use as cudaMemGetInfo polled after each phase, allocated as
torch.cuda.max_memory_allocated), the padding share, `useful tokens/s: X` (positions that carry loss), and as its last line `tokens/s: X`
(real tokens).
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


MASK64 = (1 << 64) - 1


def splitmix64(state):
    """(new state, output): the host's data::splitmix64."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def row_lengths(text):
    try:
        low, high = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}`: expected MIN:MAX")
    if low < 2 or low > high:
        raise argparse.ArgumentTypeError(f"`{text}`: need 2 <= MIN <= MAX")
    return low, high


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("hidden", "intermediate", "layers", "heads", "kv-heads", "vocab", "batch", "steps"):
        ap.add_argument(f"--{name}", type=int, required=True)
    rows = ap.add_mutually_exclusive_group(required=True)
    rows.add_argument("--seq", type=int, help="tokens per row")
    rows.add_argument("--lengths", type=row_lengths, metavar="MIN:MAX", help="row lengths drawn uniformly")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--dtype", default="f32", choices=("f32", "bf16"))
    ap.add_argument("--attn", default="eager", choices=("eager", "sdpa"),
                    help="attention implementation (eager materialises the attention matrices, as the host does)")
    ap.add_argument("--lora-r", type=int, help="train a PEFT LoRA adapter of this rank (alpha 2r)")
    ap.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated projections, or all-linear")
    args = ap.parse_args()
    if args.lengths:
        args.seq = args.lengths[1]
    if args.steps <= args.warmup:
        ap.error("--steps must be larger than --warmup")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # as the host: float32 products in float32
        torch.cuda.set_device(device)
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
    config._attn_implementation = args.attn
    model = transformers.Qwen2ForCausalLM(config).to(torch.float32).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if args.lora_r:
        import peft
        targets = "all-linear" if args.lora_targets == "all-linear" else args.lora_targets.split(",")
        lora = peft.LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules=targets)
        model = peft.get_peft_model(model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if args.dtype == "bf16":
        master = [p.detach().clone() for p in params]  # float32 master weights
        model.to(torch.bfloat16)
    else:
        master = params
    opt = torch.optim.AdamW(master, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()

    peak_in_use = 0

    def poll():
        nonlocal peak_in_use
        if cuda:
            free, total = torch.cuda.mem_get_info(device)
            peak_in_use = max(peak_in_use, total - free)

    def phase_done():
        t = sync()
        poll()
        return t

    print(
        f"pytorch: hidden {args.hidden} intermediate {args.intermediate} layers {args.layers} heads {args.heads} "
        f"kv-heads {args.kv_heads} vocab {args.vocab}; batch {args.batch} x {args.seq} tokens; {args.steps} steps "
        f"({args.warmup} warm-up); {args.device} {args.dtype} attention {args.attn}"
        f"{f'; LoRA r {args.lora_r} on {args.lora_targets}' if args.lora_r else ''}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        flush=True,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device) for _ in range(args.steps)]
    length_state, lengths = args.seed, []
    for _ in range(args.steps):
        step_lengths = []
        for _ in range(args.batch):
            if args.lengths:
                length_state, r = splitmix64(length_state)
                step_lengths.append(args.lengths[0] + r % (args.lengths[1] - args.lengths[0] + 1))
            else:
                step_lengths.append(args.seq)
        lengths.append(step_lengths)
    # Position t of row b carries loss while it predicts one of the row's tokens.
    positions = torch.arange(args.seq - 1)
    masks = [(positions[None, :] < torch.tensor(ls)[:, None] - 1).float().to(device) for ls in lengths]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    poll()
    tokens = args.batch * args.seq
    phases = ("forward", "logprobs", "objective", "backward", "optimizer")
    timings = []
    first_loss = last_loss = float("nan")
    padded = "padded " if args.lengths else ""
    for i, (ids, mask) in enumerate(zip(batches, masks)):
        t0 = sync()
        logits = model(input_ids=ids).logits  # [B, T, V]
        t1 = phase_done()
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        t2 = phase_done()
        p = logp.detach().exp()
        n = mask.sum()
        weights = p * mask / n  # -p: s(p) = p, token mean over the loss positions
        loss_value = (((1.0 - p) * mask).sum() / n).item()
        t3 = time.perf_counter()
        surrogate = -(weights * logp).sum()
        opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        surrogate.backward()
        del logits, logp, surrogate
        t4 = phase_done()
        if master is not params:
            for m, q in zip(master, params):
                m.grad = q.grad.float()
        torch.nn.utils.clip_grad_norm_(master, 1.0)
        opt.step()
        if master is not params:
            with torch.no_grad():
                for m, q in zip(master, params):
                    q.copy_(m)
        t5 = phase_done()
        if i == 0:
            first_loss = loss_value
        last_loss = loss_value
        step = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)
        timings.append(step)
        detail = "  ".join(f"{name} {sec:.3f}s" for name, sec in zip(phases, step))
        print(f"step {i + 1}/{args.steps}: {step[5]:.3f}s  {detail}  {tokens / step[5]:.0f} {padded}tokens/s", flush=True)

    measured = timings[args.warmup:]
    step_median = statistics.median(t[5] for t in measured)
    real = [sum(ls) for ls in lengths[args.warmup:]]
    useful = [int(m.sum().item()) for m in masks[args.warmup:]]
    tps = statistics.median(r / t[5] for r, t in zip(real, measured))
    useful_tps = statistics.median(u / t[5] for u, t in zip(useful, measured))
    padding_share = 1.0 - sum(sum(ls) for ls in lengths) / (args.steps * args.batch * args.seq)
    breakdown = "  ".join(
        f"{name} {statistics.median(t[j] for t in measured):.3f}s "
        f"({100 * statistics.median(t[j] for t in measured) / step_median:.1f}%)"
        for j, name in enumerate(phases)
    )
    print(f"parameters: {n_params}  trainable: {sum(p.numel() for p in params)}  threads: {torch.get_num_threads()}")
    print(f"loss (objective mean): first {first_loss:.6f}, last {last_loss:.6f}")
    print(f"median step: {step_median:.3f}s  {breakdown}")
    rss = peak_rss_kib()
    print(f"peak RSS: {rss / 1024:.1f} MiB" if rss is not None else "peak RSS: unknown")
    if cuda:
        mib = 1024 * 1024
        print(
            f"peak device memory: {peak_in_use / mib:.1f} MiB in use, "
            f"{torch.cuda.max_memory_allocated(device) / mib:.1f} MiB allocated "
            f"({torch.cuda.max_memory_reserved(device) / mib:.1f} MiB reserved)"
        )
    print(f"padding share: {padding_share:.3f}")
    print(f"useful tokens/s: {useful_tps:.1f}")
    print(f"median tokens/s after {args.warmup} warm-up steps: {tps:.1f}")
    print(f"tokens/s: {tps:.1f}")


if __name__ == "__main__":
    main()
