#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for CI and for trying the Slurm backend.
#
#   infra/slurm/local-cluster.sh start STATE_DIR   # writes STATE_DIR/slurm.conf, starts munged, slurmctld, slurmd
#   infra/slurm/local-cluster.sh stop  STATE_DIR
#   export SLURM_CONF=STATE_DIR/slurm.conf         # then sbatch/squeue/scontrol talk to it
#
# Needs root and Debian's slurm-wlm and munge packages (`make slurm` installs them). There is no
# systemd here, so the daemons are started by hand. No accounting daemon (slurmdbd): recslm
# follows jobs through the controller (scontrol), which every Slurm has. Ports: SLURMCTLD_PORT
# and SLURMD_PORT (default 6817/6818).
set -euo pipefail

cmd=${1:?usage: local-cluster.sh start|stop STATE_DIR}
state=$(realpath -m "${2:?usage: local-cluster.sh start|stop STATE_DIR}")
conf="$state/slurm.conf"
node=$(hostname -s)

stop() {
  if [[ -f "$conf" ]]; then
    for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid"; do
      [[ -f "$pidfile" ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
  fi
}

if [[ "$cmd" == stop ]]; then stop; exit 0; fi
[[ "$cmd" == start ]] || { echo "unknown command $cmd (start|stop)" >&2; exit 2; }

for bin in munged slurmctld slurmd sbatch; do
  command -v "$bin" >/dev/null || [[ -x "/usr/sbin/$bin" ]] || { echo "$bin not found: install Debian's slurm-wlm and munge (make slurm)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "the local cluster runs slurmd as root (it launches jobs as their user)" >&2; exit 1; }

mkdir -p "$state/ctld" "$state/spool"
# Leave a fifth of the memory to the machine; Slurm refuses jobs asking for more than RealMemory.
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$conf" <<CONF
ClusterName=recslm-local
SlurmctldHost=$node
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
# linuxproc/none: no cgroups needed (containers and CI runners rarely delegate them)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# keep finished jobs visible to scontrol for an hour (recslm reads their end state there)
MinJobAge=3600
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
NodeName=$node CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# munged: one per machine; start it if it is not running (its key comes with the Debian package)
if ! munge -n >/dev/null 2>&1; then
  [[ -f /etc/munge/munge.key ]] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
fi

stop  # a previous cluster in the same folder
/usr/sbin/slurmctld -f "$conf"
/usr/sbin/slurmd -f "$conf"

export SLURM_CONF="$conf"
for _ in $(seq 150); do
  if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    echo "Slurm is up: export SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "Slurm did not come up in 30 s; see $state/slurmctld.log and $state/slurmd.log" >&2
tail -n 20 "$state/slurmctld.log" "$state/slurmd.log" >&2 || true
exit 1
