#!/usr/bin/env bash
# Stop the daemons that start.sh started, by their recorded PIDs only (in reverse order).
set -uo pipefail
DEV="${SLURM_DEV_DIR:-/tmp/medir-slurm}"
if [ ! -f "$DEV/pids" ]; then echo "[dev-cluster] not started ($DEV/pids missing)"; exit 0; fi
tac "$DEV/pids" | while read -r name pid; do
    # After a reboot a recorded PID may belong to another process: kill it only if its name matches.
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || continue
    case "$comm" in "$name"*) ;; *) echo "[dev-cluster] $name ($pid) not running"; continue ;; esac
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "[dev-cluster] stopped $name ($pid)"
    fi
done
rm -f "$DEV/pids"
