#!/usr/bin/env bash
# Start a one-node Slurm cluster (munged + slurmctld + slurmd) on this machine, for testing the
# harness's Slurm support. Idempotent: if it is already up, it says so and changes nothing.
#
#   eval "$(bash cluster/start.sh)"     # starts it and exports SLURM_CONF into this shell
#
# Progress goes to stderr; stdout is exactly one line, `export SLURM_CONF=...`.
# Everything lives under $SLURM_HARNESS_DIR (default /tmp/slurm-harness); only the munge key
# (/etc/munge/munge.key, created by the munge package) is system-wide. Stop it with cluster/stop.sh.
#
# Environment:
#   SLURM_HARNESS_DIR    run folder (config, state, spool, logs, pid files)  [/tmp/slurm-harness]
#   SLURM_HARNESS_PORT   slurmctld port; slurmd uses PORT+1                  [6817]
#   SLURM_HARNESS_WAIT   seconds to wait for the node to become idle         [60]
set -euo pipefail

DIR=${SLURM_HARNESS_DIR:-/tmp/slurm-harness}
PORT=${SLURM_HARNESS_PORT:-6817}
WAIT=${SLURM_HARNESS_WAIT:-60}
CONF=$DIR/etc/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
LOG=$DIR/log
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (starts munged, slurmctld and slurmd)"

# pid_alive PIDFILE COMM: the pid in PIDFILE is alive and its command name is COMM.
pid_alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    # A zombie (killed, not yet reaped) does not count.
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

node_state() { SLURM_CONF=$CONF sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

dump_logs() {
    local f
    for f in "$MUNGE_DIR/munged.log" "$LOG/slurmctld.log" "$LOG/slurmd.log"; do
        [[ -f $f ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

# ---- 1. packages -----------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(slurm-wlm munge)
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"${TMPDIR:-/tmp}/slurm-harness-apt.log" 2>&1; then
        say "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >>"${TMPDIR:-/tmp}/slurm-harness-apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"${TMPDIR:-/tmp}/slurm-harness-apt.log" 2>&1 ||
            { tail -n 20 "${TMPDIR:-/tmp}/slurm-harness-apt.log" >&2; die "could not install ${pkgs[*]}"; }
    fi
fi
id munge >/dev/null 2>&1 || die "no 'munge' user (is the munge package installed?)"

# ---- 2. already up? ----------------------------------------------------------------------------
NODE=$(hostname -s 2>/dev/null || true)
[[ -n $NODE ]] || NODE=localhost
if [[ -f $CONF ]]; then
    # The node name is whatever the running config says (the hostname could have changed).
    NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$CONF" | head -n1)
fi

if pid_alive "$MUNGE_DIR/munged.pid" munged && pid_alive "$DIR/run/slurmctld.pid" slurmctld &&
    pid_alive "$DIR/run/slurmd.pid" slurmd; then
    state=$(node_state || true)
    case $state in
    idle* | mix* | alloc* | completing*)
        say "already up (node $NODE is $state; run folder $DIR)"
        echo "export SLURM_CONF=$CONF"
        exit 0
        ;;
    esac
    say "daemons are running but the node is '${state:-not answering}'; restarting"
fi
if pid_alive "$MUNGE_DIR/munged.pid" munged || pid_alive "$DIR/run/slurmctld.pid" slurmctld ||
    pid_alive "$DIR/run/slurmd.pid" slurmd; then
    say "partly up; stopping what runs before a clean start"
    SLURM_HARNESS_DIR=$DIR bash "$HERE/stop.sh" >&2
fi

START=$(date +%s)
NODE=$(hostname -s 2>/dev/null || true)
[[ -n $NODE ]] || NODE=localhost

# ---- 3. folders, key, config ---------------------------------------------------------------------
# A fresh start forgets old jobs: the state and spool folders are emptied; old logs are kept as *.1.
mkdir -p "$DIR" "$DIR/etc" "$DIR/run" "$LOG"
rm -rf "$DIR/state" "$DIR/spool"
mkdir -p "$DIR/state" "$DIR/spool/slurmd"
chmod 0755 "$DIR" "$DIR/etc" "$DIR/run" "$LOG" "$DIR/state" "$DIR/spool" "$DIR/spool/slurmd"
for f in "$LOG"/*.log; do if [[ -f $f ]]; then mv -f "$f" "$f.1"; fi; done
# munged insists on a socket folder that only munge (or root) can write to.
mkdir -p "$MUNGE_DIR"
if [[ -f $MUNGE_DIR/munged.log ]]; then mv -f "$MUNGE_DIR/munged.log" "$MUNGE_DIR/munged.log.1"; fi
chown munge:munge "$MUNGE_DIR"
chmod 0755 "$MUNGE_DIR"

KEY=/etc/munge/munge.key
if [[ ! -s $KEY ]]; then
    say "creating the munge key $KEY"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$KEY" --force
    else
        dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
    fi
    chown munge:munge "$KEY"
    chmod 0400 "$KEY"
fi

CPUS=$(nproc)
# Give slurmd's view of the topology when it matches (else slurmd logs a mismatch); CPUs=N alone
# is enough for scheduling (CR_CPU).
TOPO="CPUs=$CPUS"
hw=$(slurmd -C 2>/dev/null | head -n1 || true)
if [[ $hw =~ CPUs=([0-9]+)\ Boards=([0-9]+)\ SocketsPerBoard=([0-9]+)\ CoresPerSocket=([0-9]+)\ ThreadsPerCore=([0-9]+) ]] &&
    [[ ${BASH_REMATCH[1]} == "$CPUS" ]]; then
    TOPO="CPUs=$CPUS Boards=${BASH_REMATCH[2]} SocketsPerBoard=${BASH_REMATCH[3]} CoresPerSocket=${BASH_REMATCH[4]} ThreadsPerCore=${BASH_REMATCH[5]}"
fi
MEM_TOTAL=$(free -m | awk '/^Mem:/ {print $2}')
# Leave the OS some room: 10 % of the memory, at least 512 MiB.
MARGIN=$((MEM_TOTAL / 10 > 512 ? MEM_TOTAL / 10 : 512))
MEM=$((MEM_TOTAL - MARGIN > 256 ? MEM_TOTAL - MARGIN : 256))

cat >"$CONF" <<EOF
# One-node Slurm cluster for testing the harness (written by cluster/start.sh; rewritten on each
# fresh start). Slurm 22.05, Debian's slurm-wlm.
ClusterName=harness
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds (default 120) before it may start again.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in a container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# One line per finished job (id, state, exit code, ...): handy for tests, since there is no sacct.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
MpiDefault=none

SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=10
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Batch jobs may be requeued; a batch script that exits 75 (EX_TEMPFAIL) is requeued automatically
# (pending again, restarted later with SLURM_RESTART_COUNT incremented).
JobRequeue=1
RequeueExit=75
# Finished jobs stay visible to squeue/scontrol for this many seconds.
MinJobAge=600
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
SlurmctldTimeout=120

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $TOPO RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$CONF

# ---- 4. daemons --------------------------------------------------------------------------------------
say "starting munged (socket $MUNGE_SOCKET)"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$MUNGE_DIR/munged.pid" \
    --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" ||
    { dump_logs; die "munged did not start"; }
for _ in $(seq 50); do
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null || { dump_logs; die "munge does not work"; }

say "starting slurmctld (port $PORT)"
slurmctld -f "$CONF" || { dump_logs; die "slurmctld did not start"; }
for _ in $(seq 50); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.2
done

say "starting slurmd (node $NODE, $CPUS CPUs, RealMemory=$MEM)"
slurmd -f "$CONF" -N "$NODE" || { dump_logs; die "slurmd did not start"; }

state=
deadline=$(($(date +%s) + WAIT))
while (($(date +%s) < deadline)); do
    state=$(node_state || true)
    [[ $state == idle* ]] && break
    pid_alive "$DIR/run/slurmctld.pid" slurmctld || { dump_logs; die "slurmctld exited"; }
    pid_alive "$DIR/run/slurmd.pid" slurmd || { dump_logs; die "slurmd exited"; }
    sleep 0.5
done
if [[ $state != idle* ]]; then
    dump_logs
    die "node $NODE is '${state:-not answering}' after ${WAIT}s, not idle (logs in $LOG)"
fi

echo "export SLURM_CONF=$CONF" >"$DIR/env"
say "up in $(($(date +%s) - START))s: node $NODE idle, partition debug; run folder $DIR"
say "use it with: export SLURM_CONF=$CONF   (or: source $DIR/env)"
echo "export SLURM_CONF=$CONF"
