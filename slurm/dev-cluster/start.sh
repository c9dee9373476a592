#!/usr/bin/env bash
# A single-node SLURM (slurmctld + slurmd + slurmdbd with MariaDB accounting, munge auth) on this
# machine, from Debian packages, for development and CI. Needs root and apt-get; no systemd:
# every daemon is started by hand and its PID recorded in $SLURM_DEV_DIR/pids for stop.sh.
#
#   bash slurm/dev-cluster/start.sh      # installs what is missing, starts, waits for a first job
#   bash slurm/dev-cluster/stop.sh
#
# A fresh start begins empty: the controller's saved state, the spool and the accounting database
# of an earlier cluster are removed first. Jobs recovered from a cluster whose processes died with
# it would otherwise be scheduled again at once (the node never comes up idle), and job ids that
# start over would meet the old ids in sacct.
#
# Settings: SLURM_DEV_DIR (state, logs, pids; default /tmp/medir-slurm), SLURM_DEV_MAX_ARRAY
# (MaxArraySize; default 3, small so that array splitting is exercised).
set -euo pipefail
DEV="${SLURM_DEV_DIR:-/tmp/medir-slurm}"
MAX_ARRAY="${SLURM_DEV_MAX_ARRAY:-3}"
HOST="$(hostname -s)"
CLUSTER=medir
say() { echo "[dev-cluster] $*"; }
wait_for() {  # wait_for <seconds> <description> <command...>
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    say "timed out waiting for $what"
    # what the controller knows, if it answers: the node's state and reason, the queue
    sinfo -h -N -o "[dev-cluster] node %N: %T %E" 2>/dev/null || true
    squeue -h -o "[dev-cluster] job %i: %T %r" 2>/dev/null | head -5 || true
    return 1
}

if [ "$(id -u)" != 0 ]; then say "needs root (it installs packages and starts daemons)"; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null \
        || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
fi
if [ -f "$DEV/pids" ]; then
    # A pids file from an earlier start: reuse a cluster that answers, clear one that died with its machine.
    if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
        say "already up ($DEV/pids); reusing it"; exit 0
    fi
    say "stale $DEV/pids (the cluster does not answer); stopping what is left of it and starting afresh"
    bash "$(dirname "$0")/stop.sh"
fi
rm -rf "$DEV/state" "$DEV/spool"
mkdir -p "$DEV"/{log,state,spool} /etc/slurm
: > "$DEV/pids"
trap 'say "start failed; stopping what was started (logs in $DEV/log)"; bash "$(dirname "$0")/stop.sh"' ERR

# munge: the key, /run/munge owned by munge, the daemon as user munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
runuser -u munge -- munged --pid-file=/run/munge/munged.pid
wait_for 10 munged test -s /run/munge/munged.pid
echo "munged $(cat /run/munge/munged.pid)" >> "$DEV/pids"

# MariaDB for slurmdbd's accounting
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/medir-dev.pid --skip-networking=0 --bind-address=127.0.0.1 >"$DEV/log/mariadb.log" 2>&1 &
wait_for 30 mariadb mariadb -e "select 1"
echo "mariadb $(cat /run/mysqld/medir-dev.pid)" >> "$DEV/pids"
mariadb -e "DROP DATABASE IF EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# slurm.conf must exist before slurmdbd and any sacctmgr call
MEMORY=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
CPUS=$(nproc)
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DEV/state
SlurmdSpoolDir=$DEV/spool
SlurmctldPidFile=$DEV/slurmctld.pid
SlurmdPidFile=$DEV/slurmd.pid
SlurmctldLogFile=$DEV/log/slurmctld.log
SlurmdLogFile=$DEV/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MaxArraySize=$MAX_ARRAY
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=60
MpiDefault=none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$((MEMORY * 9 / 10)) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DEV/slurmdbd.pid
LogFile=$DEV/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 /etc/slurm/slurmdbd.conf

slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
echo "slurmdbd $(cat "$DEV/slurmdbd.pid")" >> "$DEV/pids"
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
slurmctld
wait_for 30 slurmctld scontrol ping
echo "slurmctld $(cat "$DEV/slurmctld.pid")" >> "$DEV/pids"
slurmd
wait_for 30 slurmd test -s "$DEV/slurmd.pid"
echo "slurmd $(cat "$DEV/slurmd.pid")" >> "$DEV/pids"
wait_for 60 "the node to be idle" bash -c "sinfo -h -o %T | grep -q idle"
JOB=$(sbatch --parsable --wrap "true" -o /dev/null)
wait_for 60 "a first job" bash -c "sacct -n -X -j $JOB -o State | grep -q COMPLETED"
say "up: cluster $CLUSTER, node $HOST ($CPUS CPUs), MaxArraySize=$MAX_ARRAY, first job $JOB completed"
