#!/usr/bin/env bash
# Starts a one-node SLURM cluster on this machine (Debian/Ubuntu, as root), for the tests of the
# job templates (tests/test_slurm_cluster.py) and to try them by hand:
#   1. installs the Debian packages slurmctld, slurmd, slurm-client and munge if they are missing;
#   2. writes /etc/slurm/slurm.conf for this host's cores and memory (as `slurmd -C` reports them),
#      with every daemon bound to the loopback address 127.0.0.1, so no traffic leaves the machine
#      whatever the host name resolves to; a slurm.conf that this script did not write is never
#      touched (the script stops instead);
#   3. creates the munge key, starts munged, slurmctld and slurmd, and waits until the node is idle.
# Idempotent: with the cluster already up it only says so (this needs no root). A changed config
# restarts the daemons. Exit status 0: the node is idle and takes jobs; 1: it could not be done,
# with the reason (not root, no apt-get, a daemon that did not start: the end of its log is shown).
# Usage: bash scripts/slurm-local.sh          (SLURM_LOCAL_TIMEOUT=S: wait for the node, default 60)
# Stop it with: kill $(cat /run/slurmd.pid /run/slurmctld.pid)
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by freeenergy scripts/slurm-local.sh"
PARTITION=local
LOG_DIR=/var/log/slurm
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
NODE=$(hostname -s)
t0=$(date +%s)

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }
elapsed() { echo $(( $(date +%s) - t0 )); }

node_state() {  # idle, mixed, allocated, down*, drained, ... or nothing when no controller answers
    timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true
}

ready() {
    case $(node_state) in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

alive() {  # alive PIDFILE: the daemon of that pid file runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

show_log() {
    echo "--- last lines of $1:" >&2
    tail -n 15 "$1" >&2 2>/dev/null || echo "(no log)" >&2
}

# ---- 0. already up? -----------------------------------------------------------------------------
if command -v sinfo >/dev/null 2>&1 && [ -f "$CONF" ] && ready; then
    say "SLURM is up: node $NODE is $(node_state) in partition $(sinfo -h -o %P | head -n 1)" \
        "(nothing to do)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    die "starting a SLURM cluster needs root (to install packages and start daemons), and you are" \
        "$(id -un); run it as root (sudo bash scripts/slurm-local.sh). Without a cluster the tests" \
        "in tests/test_slurm_cluster.py are skipped"
fi

# ---- 1. packages --------------------------------------------------------------------------------
missing=()
for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
    say "installing ${missing[*]} (Debian packages)"
    # no service may start during the install (there is no config yet, and often no init system)
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    install() {
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    }
    if ! install > /tmp/slurm-local-apt.log 2>&1; then
        apt-get update -q >> /tmp/slurm-local-apt.log 2>&1 || true
        install >> /tmp/slurm-local-apt.log 2>&1 || {
            [ "$made_policy" = 1 ] && rm -f "$policy"
            show_log /tmp/slurm-local-apt.log
            die "apt-get install ${missing[*]} failed (log: /tmp/slurm-local-apt.log)"
        }
    fi
    [ "$made_policy" = 1 ] && rm -f "$policy"
    say "installed: $(dpkg-query -W -f '${Package} ${Version}\n' slurmctld slurmd slurm-client munge \
                      | paste -sd ',' | sed 's/,/, /g')"
fi

# ---- 2. slurm.conf ------------------------------------------------------------------------------
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: this machine has a SLURM set-up of its" \
        "own; use it, or move that file away to let this script write a one-node cluster"
fi
hw=$(slurmd -C | head -n 1)   # NodeName=... CPUs=... Boards=... ... RealMemory=...
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<< "$hw")
memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<< "$hw")
[ -n "$cpus" ] && [ -n "$memory" ] || die "cannot read this host's cores and memory from 'slurmd -C': $hw"
node_line="NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE ${hw#NodeName=* } State=UNKNOWN"
new_conf=$(cat <<EOF
$MARK: a one-node cluster on this machine,
# every daemon on the loopback address. Rewritten by the script when the host changes.
ClusterName=freeenergy-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
# requeued jobs wait cred_expire + 1 seconds before they start again (default 120)
AuthInfo=cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
# finished jobs stay visible to scontrol for an hour (there is no accounting database)
MinJobAge=3600
KillWait=30
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
$node_line
# up to 4 jobs share a core: small test jobs run side by side on a machine with few cores
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
)
changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$new_conf" > "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    chmod 644 "$CONF"
    changed=1
    say "wrote $CONF: node $NODE, $cpus CPU(s), $memory MB, partition $PARTITION, on 127.0.0.1"
fi
id slurm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
chown slurm: /var/spool/slurmctld "$LOG_DIR"

# ---- 3. munge -----------------------------------------------------------------------------------
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    say "created $key"
fi
chown munge: "$key" && chmod 400 "$key"
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge: /run/munge /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged || { show_log /var/log/munge/munged.log; die "munged did not start"; }
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge failed)"
    say "started munged"
fi

# ---- 4. slurmctld and slurmd --------------------------------------------------------------------
if [ "$changed" = 1 ]; then   # daemons started with another config: start them again
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile"); kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            say "stopped the running $(basename "$pidfile" .pid) (its config changed)"
        fi
    done
fi
if ! alive /run/slurmctld.pid; then
    slurmctld || { show_log "$LOG_DIR/slurmctld.log"; die "slurmctld did not start"; }
    say "started slurmctld"
fi
if ! alive /run/slurmd.pid; then
    slurmd || { show_log "$LOG_DIR/slurmd.log"; die "slurmd did not start"; }
    say "started slurmd"
fi

# ---- 5. wait for an idle node -------------------------------------------------------------------
resumed=0
for _ in $(seq $(( TIMEOUT * 2 ))); do
    ready && break
    state=$(node_state)
    if [ "$resumed" = 0 ] && [[ "$state" == down* || "$state" == drain* ]]; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 && resumed=1
    fi
    sleep 0.5
done
if ! ready; then
    show_log "$LOG_DIR/slurmctld.log"
    show_log "$LOG_DIR/slurmd.log"
    die "node $NODE is not idle after ${TIMEOUT} s (state: $(node_state || true))"
fi
say "SLURM ready in $(elapsed) s: node $NODE ($cpus CPU(s), $memory MB) is $(node_state) in" \
    "partition $PARTITION; $(sbatch --version); logs in $LOG_DIR"
