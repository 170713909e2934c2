#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for the launcher tests (and for trying a sweep by hand).
#
#   tests/slurm/cluster.sh start    install slurm-wlm + munge if absent (Debian, root), write a minimal
#                                   slurm.conf, start munged, slurmctld and slurmd, wait for an idle node
#   tests/slurm/cluster.sh stop     stop exactly the daemons `start` started (pid files), nothing else
#   tests/slurm/cluster.sh status   print the node state (exit 1 when the cluster is not up)
#   tests/slurm/cluster.sh env      print the `export SLURM_CONF=...` line clients need
#
# Everything lives in $DISTILLSCAPE_SLURM_DIR (default /tmp/distillscape-slurm); /etc is not touched, so
# clients (sbatch, squeue, submitit) need SLURM_CONF=$DISTILLSCAPE_SLURM_DIR/slurm.conf in their environment.
# Minimal on purpose: no cgroups (proctrack/linuxproc, task/none), no accounting (no slurmdbd, so
# `sacct` fails and submitit falls back to the result files of the jobs), jobs may run as root.
# For the requeue test (tests/test_slurm_requeue.py): a requeued job waits AuthInfo=cred_expire seconds
# before it may start again (5 s instead of SLURM's 120), the scheduler looks at pending jobs every 1-2 s
# (instead of 30-60 s), and slurmctld logs at debug2, which shows when it tests time limits (every 30 s).
# Exit codes: 0 ok, 1 failure, 3 cannot set up here (not root / not Debian) -- tests skip on 3.
set -euo pipefail

DIR=${DISTILLSCAPE_SLURM_DIR:-/tmp/distillscape-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
export SLURM_CONF=$CONF

log() { echo "cluster.sh: $*" >&2; }
cannot() { log "cannot set up SLURM here: $*"; exit 3; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_if_absent() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  [[ $(id -u) -eq 0 ]] || cannot "slurm-wlm/munge are not installed and installing them needs root"
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and there is no apt-get"
  log "installing slurm-wlm and munge with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2 \
    || cannot "apt-get install slurm-wlm munge failed"
}

write_config() {
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
  local cpus mem
  cpus=$(nproc)
  # RealMemory must not exceed what the node has free, or slurmd registers it as invalid
  mem=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  cat > "$CONF.tmp" <<EOF
# written by tests/slurm/cluster.sh: one node, no cgroups, no accounting
ClusterName=distillscape
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${DISTILLSCAPE_SLURMCTLD_PORT:-6817}
SlurmdPort=${DISTILLSCAPE_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
AuthInfo=cred_expire=5
SchedulerParameters=bf_interval=1,sched_interval=2
SlurmctldDebug=debug2
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

start_munge() {
  # an already running munged (the system's) is used as is and never stopped by us
  if munge -n </dev/null >/dev/null 2>&1; then
    return
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key; else
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  fi
  chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$DIR/munged.pid"   # started by us: `stop` stops it
  for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && return; sleep 0.1; done
  log "munged did not come up"; exit 1
}

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }

start() {
  [[ $(id -u) -eq 0 ]] || cannot "the daemons are started as root (slurmd must run as root); run as root"
  command -v apt-get >/dev/null || command -v slurmctld >/dev/null || cannot "not a Debian system"
  install_if_absent
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid"; then
    log "already running (config $CONF)"
  else
    write_config
    start_munge
    alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF" -c    # -c: clean start, no saved jobs
    alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
  fi
  local state=""
  for _ in $(seq 120); do
    state=$(node_state || true)
    case $state in
      idle|mixed|allocated) break ;;
      down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  if [[ $state != idle && $state != mixed && $state != allocated ]]; then
    log "node $HOST did not become idle (state '${state}'); logs in $DIR"; tail -5 "$DIR"/*.log >&2 || true
    exit 1
  fi
  log "node $HOST is $state; clients need: export SLURM_CONF=$CONF"
}

stop_pidfile() {
  local pidfile=$1 name=$2
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$name ($pid) ignored SIGTERM, sending SIGKILL"; kill -9 "$pid"; }
  fi
  rm -f "$pidfile"
}

stop() {
  # jobs still running belong to the cluster we are tearing down
  if alive "$DIR/slurmctld.pid"; then scancel --full -u root >/dev/null 2>&1 || true; fi
  stop_pidfile "$DIR/slurmd.pid" slurmd
  stop_pidfile "$DIR/slurmctld.pid" slurmctld
  stop_pidfile "$DIR/munged.pid" munged
  log "stopped"
}

status() {
  alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" || { echo "down"; exit 1; }
  node_state
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 1 ;;
esac
