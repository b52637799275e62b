#!/bin/sh
# The reproduction of docs/continuum.md: a rollout on each domain of the miniature continuum (NLL and the
# objectives recommended for a model-strong task, 5 seeds; multiplication: the paper's four, 3 seeds) and
# the thresholding analysis on both ends. Resumable: finished runs are skipped. About 2 hours on 2 cores.
set -e
cd "$(dirname "$0")/.."
H=target/release/host
for domain in arithmetic figfont multiplication; do
    $H rollout --config configs/continuum/reproduce-$domain.toml
done
$H sweep --config configs/continuum/thresholds-arithmetic.toml
$H sweep --config configs/continuum/thresholds-figfont.toml
