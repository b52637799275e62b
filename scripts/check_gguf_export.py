"""Dev-only: does llama.cpp (and transformers) load what `host convert DIR FILE.gguf` writes, and compute
what the host computes? Not run in CI (it needs llama-cpp-python, torch and transformers).

    pip install llama-cpp-python torch "transformers==5.24.*" gguf accelerate
    scripts/fetch_real_model.sh                       # target/real-model/smollm2-135m-instruct
    python scripts/check_gguf_export.py [HOST] [MODEL_DIR] [--type f16]

It exports MODEL_DIR to a GGUF file, converts that file back with the host, and scores the rows of
tests/fixtures/real/smollm2.json with `host score` on the converted-back directory (the exported weights
exactly). Then it loads the GGUF file in llama.cpp (llama-cpp-python, `logits_all`) and in transformers
(`gguf_file=`), and prints, per loader, the mean and max |Δ log p| per token against the host, whether its
tokenizer gives the host's ids, and whether it reads the chat template back.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def main() -> None:
    positional = [a for a in sys.argv[1:] if not a.startswith("--")]
    ty = sys.argv[sys.argv.index("--type") + 1] if "--type" in sys.argv else "f16"
    positional = [a for a in positional if a != ty]
    host = Path(positional[0] if positional else ROOT / "target" / "release" / "host")
    model = Path(positional[1] if len(positional) > 1 else ROOT / "target" / "real-model" / "smollm2-135m-instruct")
    rows = json.loads((ROOT / "tests" / "fixtures" / "real" / "smollm2.json").read_text())["rows"]

    tmp = Path(tempfile.mkdtemp(prefix="gguf-export-"))
    gguf = tmp / f"model-{ty}.gguf"
    back = tmp / "back"
    run(host, "convert", model, gguf, "--type", ty)
    run(host, "convert", gguf, back)
    data = tmp / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n" for r in rows))
    scored = tmp / "logp.jsonl"
    run(host, "score", "--model", back, "--data", data, "--out", scored)
    host_logp = [json.loads(line)["logp"] for line in scored.read_text().splitlines()]
    preview = subprocess.run([str(host), "preview", "--model", str(back), "--data", str(data), "--jsonl"],
                             check=True, capture_output=True, text=True).stdout.splitlines()
    encoded = [json.loads(line) for line in preview]
    template = (model / "chat_template.jinja").read_text() if (model / "chat_template.jinja").is_file() else None
    print(f"exported {model} as {ty}: {gguf.stat().st_size / 1e6:.1f} MB; {sum(map(len, host_logp))} scored tokens")

    def report(name, logps, ids_equal, template_equal):
        diffs = np.abs(np.concatenate([np.array(a) - np.array(b) for a, b in zip(logps, host_logp)]))
        print(f"{name}: mean |Δ logp| {diffs.mean():.5f}, max {diffs.max():.5f} nats vs the host; "
              f"tokenizer ids {'equal' if ids_equal else 'DIFFER'}; chat template {template_equal}")

    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), logits_all=True, n_ctx=512, verbose=False)
    logps, ids_equal = [], True
    for row, enc in zip(rows, encoded):
        ids = enc["ids"]
        start = enc["loss_mask"].index(1)
        pieces = [llm.tokenize(row[k].encode(), add_bos=False, special=True) for k in ("prompt", "response")]
        ids_equal &= pieces[0] + pieces[1] == ids[:-1]
        llm.reset()
        llm.eval(ids)
        lp = log_softmax(llm.scores[: len(ids)])
        logps.append([lp[t - 1, ids[t]] for t in range(start, len(ids))])
    read_template = llm.metadata.get("tokenizer.chat_template")
    report("llama.cpp", logps, ids_equal, "equal" if read_template == template else "DIFFERS")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf.name, dtype=torch.float32)
    logps, ids_equal = [], True
    for row, enc in zip(rows, encoded):
        ids = enc["ids"]
        start = enc["loss_mask"].index(1)
        pieces = [tok(row[k], add_special_tokens=False).input_ids for k in ("prompt", "response")]
        ids_equal &= pieces[0] + pieces[1] == ids[:-1]
        with torch.no_grad():
            lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1).numpy()
        logps.append([lp[t - 1, ids[t]] for t in range(start, len(ids))])
    report("transformers", logps, ids_equal, "equal" if tok.chat_template == template else "DIFFERS")


if __name__ == "__main__":
    main()
