#!/usr/bin/env bash
# Start a private, single-node SLURM cluster on localhost, for tests.
#
#   tests/slurm/start_cluster.sh [STATE_DIR]
#
# - Needs root (the daemons run as root, munged as user munge) and apt, to install
#   slurmctld/slurmd/slurm-client/munge when they are missing (Debian/Ubuntu).
# - Everything it writes lives under STATE_DIR (default: a new `mktemp -d`): slurm.conf,
#   gres.conf, its own munge key and socket, spool/state dirs, logs, two fake GPU device
#   files, and `pids` (the PIDs of the three daemons it started; stop_cluster.sh kills
#   exactly those). Nothing under /etc is changed; clients find the cluster through
#   SLURM_CONF, which `STATE_DIR/env.sh` exports.
# - The node offers 2 fake GPUs (GresTypes=gpu, files STATE_DIR/fakegpu/nvidia[0-1] that are
#   copies of /dev/null): jobs can request `--gpus=1` and get CUDA_VISIBLE_DEVICES=0, but no
#   real GPU, so code in the jobs must fall back to the CPU.
# - Idempotent: if the cluster in STATE_DIR is already up, it says so and exits 0.
#
# The last line on stdout is `STATE_DIR=<path>` (for callers that let it choose).
#
# Exit codes: 0 cluster idle; 77 cannot run here (not root, no apt, not Linux) -- callers skip;
#             1 anything else failed (daemon logs are printed).
#
# Environment overrides: SLURM_TEST_CTLD_PORT (default 6817), SLURM_TEST_SLURMD_PORT (6818),
# SLURM_TEST_START_TIMEOUT (seconds to wait for an idle node, default 60).
set -euo pipefail

SKIP=77
say() { echo "start_cluster: $*" >&2; }
skip() { say "SKIP: $*"; exit "$SKIP"; }
die() { say "ERROR: $*"; exit 1; }

[[ "$(uname -s)" == Linux ]] || skip "needs Linux (found $(uname -s))"
[[ "$(id -u)" -eq 0 ]] || skip "needs root (to install packages and run slurmctld/slurmd/munged)"

PKGS=(slurmctld slurmd slurm-client munge)
missing=()
for bin in slurmctld slurmd sbatch squeue sinfo scontrol munged; do
    command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("$bin")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || skip "missing ${missing[*]} and no apt-get to install them"
    say "installing ${PKGS[*]} with apt (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || skip "apt-get update failed (no package registry?)"
        apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null \
            || skip "apt-get install ${PKGS[*]} failed"
    fi
fi
PATH="/usr/sbin:/usr/bin:$PATH"
id munge >/dev/null 2>&1 || skip "user 'munge' does not exist (munge package incomplete)"

STATE="${1:-}"
if [[ -z "$STATE" ]]; then
    STATE="$(mktemp -d -t slurm-test.XXXXXX)"
fi
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd -P)"
# munged (user munge) must be able to traverse STATE to reach its own subdir.
chmod 0755 "$STATE"

CTLD_PORT="${SLURM_TEST_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_TEST_SLURMD_PORT:-6818}"
TIMEOUT="${SLURM_TEST_START_TIMEOUT:-60}"
HOST="$(hostname -s)"
NCPU="$(nproc)"
MEM_MB=$(($(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
PIDFILE="$STATE/pids"
export SLURM_CONF="$STATE/slurm.conf"

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
node_state() { timeout 10 sinfo -h -o %T 2>/dev/null | head -n1 || true; }

if [[ -f "$PIDFILE" ]]; then
    all_alive=1
    while read -r _name pid; do alive "$pid" || all_alive=0; done <"$PIDFILE"
    if ((all_alive)) && [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
        say "cluster in $STATE is already running (PIDs: $(awk '{print $2}' "$PIDFILE" | xargs))"
        echo "STATE_DIR=$STATE"
        exit 0
    fi
    die "$PIDFILE exists but the cluster is not healthy; run tests/slurm/stop_cluster.sh $STATE first"
fi

# Inside a job, Snakemake's jobstep plugin (0.6.1) runs the rule through a nested `srun`
# with every SLURM_* variable except a few removed from its environment, SLURM_CONF
# included. That srun then looks for /etc/slurm/slurm.conf, then /run/slurm/conf/slurm.conf
# (where a "configless" slurmd keeps its copy). So: refuse to run beside a real SLURM
# config, and point /run/slurm/conf at this cluster's config (stop_cluster.sh removes it).
RUNCONF=/run/slurm/conf
[[ -e /etc/slurm/slurm.conf ]] \
    && skip "/etc/slurm/slurm.conf exists: this machine belongs to a real SLURM cluster; not starting a test cluster beside it"
if [[ -e "$RUNCONF" || -L "$RUNCONF" ]]; then
    target="$(readlink "$RUNCONF" || true)"
    if [[ -n "$target" && "$target" == */slurm-test-conf && ! -e "$target" ]]; then
        say "removing stale $RUNCONF -> $target (left by an earlier test cluster)"
        rm -f "$RUNCONF"
    elif [[ "$target" != "$STATE/slurm-test-conf" ]]; then
        skip "$RUNCONF exists (${target:-not a symlink}): another SLURM config is active on this machine"
    fi
fi

for port in "$CTLD_PORT" "$SLURMD_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is already in use (another slurmctld/slurmd?); set SLURM_TEST_CTLD_PORT/SLURM_TEST_SLURMD_PORT"
    fi
done

say "state dir: $STATE (host $HOST, $NCPU CPUs, ${MEM_MB} MiB, 2 fake GPUs)"
mkdir -p "$STATE"/{ctld,spool,log,fakegpu,munge}

# --- munge: private key + socket, so no system munged is needed or touched ---
chown munge:munge "$STATE/munge"
chmod 0700 "$STATE/munge"
if [[ ! -s "$STATE/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
fi
chown munge:munge "$STATE/munge/munge.key"
chmod 0400 "$STATE/munge/munge.key"
MUNGE_SOCKET="$STATE/munge/munge.socket"

# --- fake GPUs: character devices (same major/minor as /dev/null) ---
for i in 0 1; do
    [[ -c "$STATE/fakegpu/nvidia$i" ]] || mknod "$STATE/fakegpu/nvidia$i" c 1 3
done

cat >"$STATE/slurm.conf" <<EOF
# Written by tests/slurm/start_cluster.sh -- a throwaway single-node test cluster.
ClusterName=suretest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# pgid, not linuxproc: a job requeued (as on preemption) must lose all its processes, and
# linuxproc misses those reparented to init (seen: a requeued job's Snakemake survived).
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Keep finished jobs visible to squeue/scontrol for 5 min: the Snakemake plugin's
# '--slurm-status-command squeue' needs MinJobAge >= 3 x its status-check interval.
MinJobAge=300
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
DefMemPerCPU=1000
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$STATE/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=$STATE/fakegpu/nvidia[0-1]
EOF
mkdir -p "$STATE/slurm-test-conf" /run/slurm
ln -sf ../slurm.conf "$STATE/slurm-test-conf/slurm.conf"
ln -sf ../gres.conf "$STATE/slurm-test-conf/gres.conf"
[[ -L "$RUNCONF" ]] || ln -s "$STATE/slurm-test-conf" "$RUNCONF"
cat >"$STATE/env.sh" <<EOF
# source this to talk to the test cluster in $STATE
export SLURM_CONF=$STATE/slurm.conf
EOF

# One line per daemon: "<name> <pid>", written as soon as each starts.
started() { echo "$1 $2" >>"$PIDFILE"; }

fail() {
    say "ERROR: $*"
    for f in "$STATE"/log/*.log; do
        [[ -f "$f" ]] && { say "--- tail of $f"; tail -n 30 "$f" >&2; }
    done
    say "stopping what was started: tests/slurm/stop_cluster.sh $STATE"
    "$(dirname "${BASH_SOURCE[0]}")/stop_cluster.sh" "$STATE" >&2 || true
    exit 1
}

# Daemons run in the background in their own session (setsid) so that a Ctrl-C in the
# caller's terminal does not reach them; their output goes to the log dir.
setsid setpriv --reuid=munge --regid=munge --init-groups \
    /usr/sbin/munged -F --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
    --seed-file="$STATE/munge/munged.seed" --force \
    </dev/null >"$STATE/log/munged.out" 2>&1 &
started munged $!
for _ in $(seq 50); do [[ -S "$MUNGE_SOCKET" ]] && break; sleep 0.1; done
[[ -S "$MUNGE_SOCKET" ]] || { cat "$STATE/munge/munged.log" "$STATE/log/munged.out" >&2 || true; fail "munged did not create $MUNGE_SOCKET"; }

setsid /usr/sbin/slurmctld -D -c -i -f "$SLURM_CONF" </dev/null >"$STATE/log/slurmctld.out" 2>&1 &
started slurmctld $!
for _ in $(seq 50); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done

setsid /usr/sbin/slurmd -D -f "$SLURM_CONF" </dev/null >"$STATE/log/slurmd.out" 2>&1 &
started slurmd $!

deadline=$((SECONDS + TIMEOUT))
state=""
while ((SECONDS < deadline)); do
    while read -r name pid; do alive "$pid" || fail "$name (PID $pid) exited"; done <"$PIDFILE"
    state="$(node_state)"
    [[ "$state" == idle ]] && break
    sleep 0.5
done
[[ "$state" == idle ]] || fail "node not idle after ${TIMEOUT}s (state: '${state:-none}')"

say "cluster up: partition main, node $HOST idle, 2 fake GPUs; PIDs in $PIDFILE:"
sed 's/^/    /' "$PIDFILE" >&2
say "use it with: export SLURM_CONF=$SLURM_CONF   (or: source $STATE/env.sh)"
echo "STATE_DIR=$STATE"
