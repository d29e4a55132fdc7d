#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start_cluster.sh started in STATE_DIR.
#
#   tests/slurm/stop_cluster.sh STATE_DIR [--purge]
#
# Kills exactly the PIDs listed in STATE_DIR/pids (slurmd, then slurmctld, then munged),
# and only if each PID still runs the program it was recorded as (guards against PID
# reuse); waits up to 20 s for each to exit, then SIGKILLs it. Nothing else is touched.
# Idempotent: with no pids file, or with the daemons already gone, it just says so.
# --purge also deletes STATE_DIR afterwards (only if it contains the slurm.conf written
# by start_cluster.sh).
set -uo pipefail

say() { echo "stop_cluster: $*" >&2; }

STATE="${1:-}"
PURGE=0
[[ "${2:-}" == --purge ]] && PURGE=1
[[ -n "$STATE" ]] || { say "usage: $0 STATE_DIR [--purge]"; exit 2; }
PIDFILE="$STATE/pids"

if [[ ! -f "$PIDFILE" ]]; then
    say "no $PIDFILE: nothing to stop"
else
    # Cancel the jobs still queued or running on this private cluster first, so that no
    # slurmstepd or job process outlives slurmd.
    if [[ -f "$STATE/slurm.conf" ]]; then
        export SLURM_CONF="$STATE/slurm.conf"
        jobs="$(timeout 10 squeue -h -o %i 2>/dev/null | xargs || true)"
        if [[ -n "$jobs" ]]; then
            say "cancelling jobs still on the test cluster: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            for _ in $(seq 30); do
                [[ -z "$(timeout 10 squeue -h -t R,CG -o %i 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
    fi
    # Stop in reverse start order: slurmd, slurmctld, munged.
    for want in slurmd slurmctld munged; do
        while read -r name pid; do
            [[ "$name" == "$want" && "$pid" =~ ^[0-9]+$ ]] || continue
            if ! kill -0 "$pid" 2>/dev/null; then
                say "$name (PID $pid) already gone"
                continue
            fi
            comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
            if [[ "$comm" != "$name" ]]; then
                say "PID $pid is now '$comm', not $name: leaving it alone"
                continue
            fi
            say "stopping $name (PID $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                say "$name (PID $pid) ignored SIGTERM for 20 s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
        done <"$PIDFILE"
    done
    rm -f "$PIDFILE"
    say "stopped the cluster in $STATE"
fi

# The /run/slurm/conf link that start_cluster.sh made (only if it points into STATE).
STATE_ABS="$(cd "$STATE" 2>/dev/null && pwd -P || echo "$STATE")"
if [[ -L /run/slurm/conf && "$(readlink /run/slurm/conf)" == "$STATE_ABS/slurm-test-conf" ]]; then
    rm -f /run/slurm/conf
    say "removed the link /run/slurm/conf"
fi

if ((PURGE)) && [[ -f "$STATE/slurm.conf" ]] && grep -q 'tests/slurm/start_cluster.sh' "$STATE/slurm.conf"; then
    rm -rf -- "$STATE"
    say "removed $STATE"
fi
exit 0
