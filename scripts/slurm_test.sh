#!/usr/bin/env bash
# A sweep through a real Slurm (issue 15): starts a one-node cluster on this machine (Debian's slurm-wlm
# and munge, installed if missing; needs root), submits a 2-objective x 2-seed sweep on models/tiny-default
# with `host sweep --slurm`, preempts one task mid-training (`scontrol requeue`) and sends another the
# time limit's warning (SIGUSR1 to its batch shell, as `--signal` does), waits for the array and its
# collect job, then checks that both tasks resumed from their checkpoints and that every result and final
# checkpoint equals the same sweep run locally, one run after another.
#
# Usage: scripts/slurm_test.sh [path/to/host]   (default: target/debug/host; build it first)
# Prints PASS and exits 0, or names what differs and exits 1. Stops the daemons it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
host=$(realpath "${1:-$root/target/debug/host}")
[ -x "$host" ] || { echo "slurm_test: no host binary at $host (cargo build -p host)" >&2; exit 2; }
work=$(mktemp -d /tmp/slurm-test.XXXXXX)
echo "slurm_test: working in $work"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm_test: installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >"$work/apt.log" 2>&1 \
    || { echo "slurm_test: apt-get install slurm-wlm munge failed (see $work/apt.log)" >&2; exit 2; }
fi

# munge: the key comes with the package; its daemon runs as the munge user.
started_munge=0
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged
  started_munge=1
  sleep 1
fi
munge -n | unmunge >/dev/null || { echo "slurm_test: munge does not work" >&2; exit 2; }

# A one-node cluster, everything under $work/slurm.
node=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 8 / 10 ))
state="$work/slurm"
mkdir -p "$state/spool" "$state/ctld"
export SLURM_CONF="$state/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=local
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$node CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
stop_daemons() {
  for pid in "$state/slurmd.pid" "$state/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  if [ "$started_munge" = 1 ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
}
trap stop_daemons EXIT
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 30); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo -h -o %T | grep -q idle || { echo "slurm_test: the node did not come up (see $state/*.log)" >&2; exit 2; }
echo "slurm_test: one-node cluster up ($node, $cpus CPUs)"

# The sweep: 2 objectives x 2 seeds, long enough for a requeue to land mid-training.
cd "$work"
head -n 16 "$root/datasets/default/train.jsonl" >train.jsonl
head -n 3 "$root/datasets/default/eval.jsonl" >eval.jsonl
cat >run.toml <<EOF
[model]
path = "$root/models/tiny-default"
[data]
train = "train.jsonl"
[optim]
lr = 3e-3
[train]
batch_size = 4
max_steps = 1200
out_dir = "unused"
EOF
cat >sweep.toml <<EOF
base = "run.toml"
out_dir = "array"
seeds = [0, 1]
rank_by = "greedy.jaro_winkler"

[[objective]]
plugin = "nll"

[[objective]]
plugin = "neg_p"

[[eval]]
name = "greedy"
data = "eval.jsonl"
evaluator = "figfont"
max_new_tokens = 8

[slurm]
cpus_per_task = 1
signal_seconds = 60
EOF
"$host" sweep --config sweep.toml --slurm
submitted=$(sh array/slurm/submit.sh)
echo "slurm_test: $submitted"
array_job=$(echo "$submitted" | sed -n 's/^submitted array job \([0-9]*\).*/\1/p')
[ -n "$array_job" ] || { echo "slurm_test: could not read the array job id" >&2; exit 1; }

# Waits until a run has logged N steps.
wait_for_steps() {
  local metrics=$1 n=$2
  for _ in $(seq 1 1500); do
    [ -f "$metrics" ] && [ "$(wc -l <"$metrics")" -ge "$n" ] && return 0
    sleep 0.2
  done
  echo "slurm_test: $metrics never reached $n steps" >&2
  exit 1
}
# A requeued job is held about two minutes before it may start again: lift the hold once it is pending.
release() {
  local task=$1
  for _ in $(seq 1 120); do
    if [ "$(squeue -h -j "$task" -o %T 2>/dev/null || true)" = PENDING ]; then
      scontrol update JobId="$task" StartTime=now && return 0
    fi
    sleep 0.5
  done
  echo "slurm_test: $task did not come back to the queue" >&2
  exit 1
}

# Task 1 is preempted once its run has logged 100 steps: Slurm sends SIGTERM and puts it back in the queue.
metrics=array/runs/nll-seed1/metrics.jsonl
wait_for_steps "$metrics" 100
scontrol requeue "${array_job}_1"
echo "slurm_test: requeued task 1 at step $(grep -c '"step"' "$metrics")"
release "${array_job}_1"
# Task 2 gets the time limit's warning (SIGUSR1 to its batch shell): its run stops and the task requeues itself.
metrics2=array/runs/neg_p-seed0/metrics.jsonl
wait_for_steps "$metrics2" 100
# (scancel --batch takes the task's own job id here: Slurm 22.05 refuses the array form for a task split
# off the array record.)
scancel --batch --signal=USR1 "$(squeue -h -r -j "${array_job}_2" -o %A)"
echo "slurm_test: sent task 2 the time-limit warning at step $(grep -c '"step"' "$metrics2")"
release "${array_job}_2"

for _ in $(seq 1 900); do
  [ -z "$(squeue -h -o %i)" ] && break
  sleep 1
done
[ -z "$(squeue -h -o %i)" ] || { echo "slurm_test: jobs still queued after 15 minutes" >&2; squeue; exit 1; }
echo "--- task 1's and task 2's logs (both attempts; step lines left out) ---"
grep -v '^step' array/slurm/logs/run-1.out array/slurm/logs/run-2.out
echo "--- the collect job's log ---"
cat array/slurm/logs/collect.out

fail() { echo "slurm_test: FAIL: $*" >&2; exit 1; }
for task in 1 2; do
  log=array/slurm/logs/run-$task.out
  grep -q 'stopped by SIGTERM' "$log" || fail "task $task's run was not stopped by SIGTERM (see $log)"
  grep -q 'training (resuming from' "$log" || fail "task $task's second attempt did not resume (see $log)"
done
grep -q '"resumed_from"' "$metrics" || fail "no resumed_from marker in $metrics"
grep -q '"resumed_from"' "$metrics2" || fail "no resumed_from marker in $metrics2"
[ -f array/results.csv ] || fail "the collect job wrote no results.csv"

# The same sweep here, one run after another.
"$host" sweep --config sweep.toml --set out_dir=local >local.log 2>&1 || { cat local.log; fail "the local sweep failed"; }
# Scores: every column after name, objective, params, model and seed.
cut -d, -f1,6- array/results.csv >array.scores
cut -d, -f1,6- local/results.csv >local.scores
diff array.scores local.scores || fail "results differ between the array and the local sweep"
for run in nll-seed0 nll-seed1 neg_p-seed0 neg_p-seed1; do
  cmp -s "array/runs/$run/final/model.safetensors" "local/runs/$run/final/model.safetensors" \
    || fail "$run: final weights differ between the array and the local sweep"
done
echo "--- results (array = local) ---"
cat array.scores
echo "slurm_test: PASS (task 1 preempted, task 2 warned of its time limit, both requeued and resumed; 4 results and final weights equal to the local sweep)"
