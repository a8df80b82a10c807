#!/usr/bin/env bash
# Stop the one-node Slurm cluster that cluster/start.sh started: cancels its jobs, stops slurmd,
# slurmctld and munged (found by their pid files under $SLURM_HARNESS_DIR), and kills any job
# process left behind. Idempotent: with nothing running it says so and exits 0.
set -euo pipefail

DIR=${SLURM_HARNESS_DIR:-/tmp/slurm-harness}
CONF=$DIR/etc/slurm.conf
MUNGE_DIR=$DIR/munge

say() { echo "cluster: $*" >&2; }

# pid_of PIDFILE COMM: print the pid in PIDFILE if it is alive and its command name is COMM.
pid_of() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    echo "$pid"
}

# stop_pids SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL what is left.
stop_pids() {
    local wait=$1 pid alive i
    shift
    (($# > 0)) || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < wait * 5; i++)); do
        alive=()
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        ((${#alive[@]} == 0)) && return 0
        sleep 0.2
    done
    say "still alive after ${wait}s, sending SIGKILL: ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    sleep 0.2
}

# Job processes of this cluster: slurmstepd started by our slurmd, and whatever runs under it
# (its descendants, or orphans that still carry this cluster's SLURM_CONF and a SLURM_JOB_ID).
job_pids() {
    local pid env comm ancestors=" $$ " p=$$
    while [[ -r /proc/$p/stat ]] && ((p > 1)); do
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null || echo 1)
        ancestors+="$p "
    done
    local roots=()
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $ancestors == *" $pid "* ]] && continue
        env=$({ tr '\0' '\n' <"$d/environ"; } 2>/dev/null) || continue
        grep -qxF "SLURM_CONF=$CONF" <<<"$env" || continue
        comm=$({ cat "$d/comm"; } 2>/dev/null) || continue
        if [[ $comm == slurmstepd ]] || grep -q '^SLURM_JOB_ID=' <<<"$env"; then roots+=("$pid"); fi
    done
    ((${#roots[@]} > 0)) || return 0
    # Add all descendants of the roots.
    ps -eo pid=,ppid= | awk -v roots="${roots[*]}" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            do { changed = 0
                 for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            } while (changed)
            for (p in keep) print p
        }' | grep -vxF "$$" || true
}

did=0

# 1. Cancel every job while slurmctld still answers, and give Slurm a moment to clean up.
if pid_of "$DIR/run/slurmctld.pid" slurmctld >/dev/null && [[ -f $CONF ]]; then
    export SLURM_CONF=$CONF
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(squeue -h -t PD,R,CG,S,CF,RQ,RS,SE 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

# 2. Daemons: slurmd, then slurmctld.
for name in slurmd slurmctld; do
    if pid=$(pid_of "$DIR/run/$name.pid" "$name"); then
        say "stopping $name (pid $pid)"
        stop_pids 15 "$pid"
        did=1
    fi
    rm -f "$DIR/run/$name.pid"
done

# 3. Job processes Slurm did not get to (slurmstepd outlives slurmd by design).
mapfile -t left < <(job_pids)
if ((${#left[@]} > 0)); then
    say "killing leftover job processes: ${left[*]}"
    stop_pids 5 "${left[@]}"
    did=1
fi

# 4. munged last: slurmstepd needs it until the end.
if pid=$(pid_of "$MUNGE_DIR/munged.pid" munged); then
    say "stopping munged (pid $pid)"
    stop_pids 10 "$pid"
    did=1
fi
rm -f "$MUNGE_DIR/munged.pid" "$DIR/env"

if ((did)); then say "stopped (run folder $DIR kept: logs in $DIR/log)"; else say "nothing running"; fi
