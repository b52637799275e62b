#!/bin/sh
# The reproduction of docs/continuum.md: a rollout on each domain of the miniature continuum (the paper's
# four objectives, 3 seeds) and the thresholding analysis on the model-strong domain. Resumable: finished
# runs are skipped. About 1.5 hours on 2 cores.
set -e
cd "$(dirname "$0")/.."
H=target/release/host
for domain in arithmetic figfont multiplication; do
    $H rollout --config configs/continuum/reproduce-$domain.toml
done
$H sweep --config configs/continuum/thresholds-arithmetic.toml
