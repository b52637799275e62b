#!/usr/bin/env python3
"""Mean target-token probability of `host score` outputs, overall and by position in the answer (first
token, middle tokens, last = EOS), averaged over the seeds of each objective.

    python3 scripts/answer_positions.py DIR/*.jsonl    # files named <setting>-seed<N>.jsonl or <model>.jsonl

Used for the FIGlet table of docs/continuum-real.md. Standard library only.
"""
import json
import math
import os
import statistics
import sys


def figures(path):
    rows = [json.loads(line)["logp"] for line in open(path) if line.strip()]
    tokens = [math.exp(x) for row in rows for x in row]
    middle = [math.exp(x) for row in rows for x in row[1:-1]]
    return (
        statistics.mean(tokens),
        statistics.mean(math.exp(row[0]) for row in rows),
        statistics.mean(middle) if middle else float("nan"),
        statistics.mean(math.exp(row[-1]) for row in rows),
    )


def main(paths):
    groups = {}
    for path in sorted(paths):
        name = os.path.basename(path).removesuffix(".jsonl")
        groups.setdefault(name.rsplit("-seed", 1)[0], []).append(figures(path))
    print("| model | n | mean p, all target tokens | first token | middle tokens | EOS |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in groups.items():
        cells = []
        for column in zip(*runs):
            spread = f" ± {statistics.stdev(column):.4f}" if len(column) > 1 else ""
            cells.append(f"{statistics.mean(column):.4f}{spread}")
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
