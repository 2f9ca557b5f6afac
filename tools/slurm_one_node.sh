#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for CI and for trying profiles/slurm without a
# cluster: Debian's slurm-wlm and munge, one partition `main`, this machine's CPUs and memory, and
# GPUS fake GPUs (GRES whose device files are empty regular files: enough for SLURM to count and
# allocate them; nothing can run on them). Job records go to a completion log that `sacct -c` reads
# (no slurmdbd). Needs root and apt. Idempotent: a running cluster is reconfigured and restarted.
#
#   sudo tools/slurm_one_node.sh            # then: sinfo; snakemake --workflow-profile profiles/slurm ...
#   GPUS=4 sudo tools/slurm_one_node.sh
set -euo pipefail

GPUS=${GPUS:-4}
PARTITION=${PARTITION:-main}
CONF_DIR=/etc/slurm
FAKE_GPU_DIR=/var/lib/opdbench-fake-gpus
JOBCOMP_LOG=/var/log/slurm/jobcomp.log

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

host=$(hostname -s)
cpus=$(nproc)
# SLURM refuses a node that reports less memory than configured: leave 15 % for the system.
memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge "$FAKE_GPU_DIR"
for ((i = 0; i < GPUS; i++)); do touch "$FAKE_GPU_DIR/gpu$i"; done

cat >"$CONF_DIR/slurm.conf" <<EOF
ClusterName=opdbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_LOG
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
SchedulerParameters=sched_interval=1
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$memory_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
if ((GPUS > 0)); then
  echo "NodeName=$host Name=gpu File=$FAKE_GPU_DIR/gpu[0-$((GPUS - 1))]" >"$CONF_DIR/gres.conf"
else
  : >"$CONF_DIR/gres.conf"
fi

# munge authenticates the daemons to each other
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged

pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
sleep 1
slurmctld -c   # a clean state: no jobs of an earlier start
slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    sinfo -N -o '%N %P %T %c %m %G'
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up: $(sinfo 2>&1)" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
exit 1
