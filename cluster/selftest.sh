#!/usr/bin/env bash
# Check that the one-node cluster does what the harness relies on. Needs a running cluster
# (cluster/start.sh). Takes about a minute; with --time-limit, about 3 minutes more.
#   1. a batch job runs and completes
#   2. a 3-task array of 1-CPU tasks runs two at a time on two CPUs
#   3. `scontrol requeue` of a running job: it runs again (SLURM_RESTART_COUNT=1) and completes
#   4. an array task that exits 75 is requeued (RequeueExit=75) and completes on its second run
#   5. `scancel -f -s TERM` of an array task whose program traps TERM and exits 75: it is requeued
#   6. (--time-limit) `--time=2 --signal=B:USR1@30`: USR1 arrives before the limit; exit 75 requeues
set -euo pipefail

DIR=${SLURM_HARNESS_DIR:-/tmp/slurm-harness}
export SLURM_CONF=${SLURM_CONF:-$DIR/etc/slurm.conf}
[[ -f $SLURM_CONF ]] || { echo "selftest: no $SLURM_CONF; run cluster/start.sh first" >&2; exit 1; }
sinfo -h >/dev/null || { echo "selftest: slurmctld does not answer" >&2; exit 1; }
TIME_LIMIT=0
[[ ${1:-} == --time-limit ]] && TIME_LIMIT=1

W=$(mktemp -d "${TMPDIR:-/tmp}/slurm-selftest.XXXXXX")
chmod 0755 "$W"
trap 'rm -rf "$W"' EXIT
cd "$W"
fails=0
ok() { echo "selftest: ok   $*"; }
bad() { echo "selftest: FAIL $*"; fails=$((fails + 1)); }

# wait_gone SECONDS JOB...: wait until squeue shows none of the jobs as pending/running.
wait_gone() {
    local t=$1 i
    shift
    for ((i = 0; i < t; i++)); do
        [[ -z $(squeue -h -j "$(
            IFS=,
            echo "$*"
        )" -t PD,R,CG,S,RQ,RS,SE,CF 2>/dev/null) ]] && return 0
        sleep 1
    done
    return 1
}
state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n1 | cut -d= -f2; }
restarts() { scontrol show job "$1" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2; }

# 1
t0=$(date +%s)
j=$(sbatch --parsable -o "$W/hello-%j.out" --wrap 'hostname; sleep 2')
if wait_gone 30 "$j" && [[ $(state "$j") == COMPLETED ]] && [[ -s $W/hello-$j.out ]]; then
    ok "batch job $j completed in $(($(date +%s) - t0))s (ran on $(cat "$W/hello-$j.out"))"
else bad "batch job $j: state $(state "$j")"; fi

# 2
t0=$(date +%s)
# shellcheck disable=SC2016 # expanded by the job's shell
j=$(sbatch --parsable --array=0-2 --cpus-per-task=1 -o "$W/arr-%A_%a.out" \
    --wrap 'echo $SLURM_ARRAY_TASK_ID $(date +%s); sleep 5; echo $(date +%s)')
maxrun=0
for _ in $(seq 60); do
    n=$(squeue -h -j "$j" -t R -r 2>/dev/null | wc -l)
    ((n > maxrun)) && maxrun=$n
    [[ -z $(squeue -h -j "$j" 2>/dev/null) ]] && break
    sleep 0.5
done
done_tasks=$(cat "$W"/arr-"$j"_*.out 2>/dev/null | wc -l)
if [[ $done_tasks == 6 && $maxrun == 2 ]]; then
    ok "array $j: 3 tasks done, at most $maxrun at once, $(($(date +%s) - t0))s"
else bad "array $j: $done_tasks/6 output lines, at most $maxrun running at once (want 2)"; fi

# 3, 4 and 5 together (they spend most of their time waiting to be restarted).
cat >"$W/worker.sh" <<'EOF'
#!/bin/bash
# First run: exit 75 at once (mode exit), or wait for TERM and then exit 75 (mode term),
# or just sleep (mode plain). Second run: finish.
echo "run restart=${SLURM_RESTART_COUNT:-0} $(date +%T)"
if [[ ${SLURM_RESTART_COUNT:-0} -ge 1 ]]; then echo finished; exit 0; fi
case $1 in
exit) exit 75 ;;
term) trap 'echo "got TERM $(date +%T)"; exit 75' TERM
      for _ in $(seq 120); do sleep 1; done; exit 1 ;;
plain) sleep 120; exit 1 ;;
esac
EOF
t0=$(date +%s)
jr=$(sbatch --parsable --open-mode=append -o "$W/rq-%j.out" "$W/worker.sh" plain)
je=$(sbatch --parsable --array=0 --open-mode=append -o "$W/e75-%A_%a.out" "$W/worker.sh" exit)
jt=$(sbatch --parsable --array=0 --open-mode=append -o "$W/term-%A_%a.out" "$W/worker.sh" term)
for _ in $(seq 30); do
    [[ $(state "$jr") == RUNNING && $(state "${jt}_0") == RUNNING ]] && break
    sleep 0.5
done
sleep 1
scontrol requeue "$jr"
scancel -f -s TERM "${jt}_0"
if wait_gone 120 "$jr" "$je" "$jt"; then :; fi
for spec in "scontrol requeue:$jr" "exit 75 (array task):${je}_0" "scancel -f -s TERM + exit 75 (array task):${jt}_0"; do
    what=${spec%:*}
    id=${spec##*:}
    if [[ $(state "$id") == COMPLETED && $(restarts "$id") == 1 ]]; then
        ok "$what: job $id requeued once, then completed"
    else bad "$what: job $id state $(state "$id"), restarts $(restarts "$id")"; fi
done
echo "selftest: (the three requeue checks took $(($(date +%s) - t0))s)"

# 6
if ((TIME_LIMIT)); then
    cat >"$W/limit.sh" <<'EOF'
#!/bin/bash
echo "start $(date +%s) restart=${SLURM_RESTART_COUNT:-0}"
[[ ${SLURM_RESTART_COUNT:-0} -ge 1 ]] && { echo finished; exit 0; }
exec python3 -u -c '
import signal, sys, time
def h(s, f):
    print("signal", signal.Signals(s).name, int(time.time()), flush=True); sys.exit(75)
signal.signal(signal.SIGUSR1, h); signal.signal(signal.SIGTERM, h)
time.sleep(400)'
EOF
    j=$(sbatch --parsable --time=2 --signal=B:USR1@30 --open-mode=append -o "$W/limit-%j.out" "$W/limit.sh")
    wait_gone 240 "$j" || true
    start=$(awk '/^start/ {print $2; exit}' "$W/limit-$j.out")
    sig=$(awk '/^signal/ {print $2, $3}' "$W/limit-$j.out")
    if [[ $(state "$j") == COMPLETED && $(restarts "$j") == 1 && $sig == SIGUSR1* ]]; then
        ok "time limit 120s, USR1@30: USR1 came $((${sig#* } - start))s after start, requeued, completed"
    else bad "time limit: state $(state "$j"), restarts $(restarts "$j"), output: $(tr '\n' '|' <"$W/limit-$j.out")"; fi
fi

if ((fails)); then
    echo "selftest: $fails check(s) failed; logs in $DIR/log"
    exit 1
fi
echo "selftest: all checks passed"
