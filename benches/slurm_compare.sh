#!/usr/bin/env bash
# `mezz run -- true` against Slurm's `srun true`, interleaved, end to end.
#
# What it does:
#   1. Installs Debian's Slurm and munge if they are missing
#      (`apt-get install -y slurmd slurmctld slurm-client munge`; Debian 12
#      has Slurm 22.05.8). The packages' own services are not used: no
#      systemd unit is started, stopped or changed by this script.
#   2. Moves itself into a new network namespace (`unshare --net`) whose
#      only interface is loopback, so every daemon it starts can be reached
#      on loopback and nowhere else. Everything is also configured for
#      127.0.0.1; the namespace is there because slurmctld, slurmd and srun bind
#      their ports to every address (0.0.0.0) whatever the configuration
#      says. `lo` gets a second loopback address, 127.0.0.2, without which
#      Slurm cannot resolve its listening address (see below).
#   3. In a fresh temporary directory: a munge key and a `munged` on a
#      socket of its own; a single-node Slurm cluster (`slurmctld` and
#      `slurmd -N localhost`, run with -D in the background, logs to files)
#      with SlurmctldHost=localhost(127.0.0.1), NodeName=localhost
#      NodeAddr=127.0.0.1, free loopback ports, TaskPlugin=task/cgroup,
#      ProctrackType=proctrack/cgroup, and a cgroup.conf with
#      CgroupPlugin=cgroup/v1 (or v2 where /sys/fs/cgroup is cgroup2),
#      ConstrainCores=yes, ConstrainRAMSpace=yes. No accounting, no job
#      completion log, no prolog or epilog. DefMemPerCPU=32 sizes a plain
#      `srun true` like the `mezz run --mem 32` it is compared with (without
#      it a job asks for the whole node's memory).
#   4. A `mezz dev` cluster (1 master, 1 agent, isolation on: cgroups and
#      namespaces, as root) from the given release build; `mezz-task-wrapper`
#      must be beside `mezz`.
#   5. Warms both up, then runs ROUNDS rounds of one
#      `mezz run --cpus 0.1 --mem 32 -- true` and one `srun true`,
#      alternating, each timed around the process from a Python timer
#      (`benches/slurm_compare.py`), and prints median, p90, p99, min, max
#      and mean of each and the ratio of the medians.
#      The summary goes to stdout (to stderr with --json).
#   6. Tears everything down, also on failure or Ctrl-C: stops mezz dev,
#      slurmd, slurmctld and munged (SIGTERM, then SIGKILL after 20 s),
#      removes the cgroups Slurm or our agent left (only ones that did not
#      exist before the run), and removes the temporary directory.
#
# Run (as root, cgroups mounted; from the repository root):
#   cargo build --release --bin mezz --bin mezz-task-wrapper
#   benches/slurm_compare.sh [--rounds N] [--warmup W] [--alone] [--json] [--keep-logs DIR] [MEZZ]
#     MEZZ         the `mezz` binary (default: target/release/mezz, or
#                  $CARGO_TARGET_DIR/release/mezz when that is set)
#     --rounds N   measured rounds (default 200)
#     --warmup W   warm-up runs of each before measuring (default 10)
#     --alone      then also ROUNDS runs of each by itself (all of one, then
#                  all of the other), to see what interleaving costs each
#     --json       print the results (figures and raw samples) as JSON on
#                  stdout; the human summary goes to stderr
#     --keep-logs DIR  copy the Slurm, munge and mezz dev logs to DIR
#
# A benchmark only: not part of CI or the test script.
set -euo pipefail

ROUNDS=200
WARMUP=10
JSON=0
ALONE=0
KEEP_LOGS=""
MEZZ=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --json) JSON=1; shift ;;
        --alone) ALONE=1; shift ;;
        --keep-logs) KEEP_LOGS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "slurm_compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) MEZZ="$1"; shift ;;
    esac
done
if [[ -z "$MEZZ" ]]; then
    MEZZ="${CARGO_TARGET_DIR:-target}/release/mezz"
fi

log() { echo "slurm_compare: $*" >&2; }
die() { log "$*"; exit 1; }

# --- 1. outside the namespace: checks and installation ----------------------
if [[ -z "${SLURM_COMPARE_NETNS:-}" ]]; then
    [[ $(id -u) -eq 0 ]] || die "run as root: Slurm's cgroup plugins and mezz's isolation need it"
    [[ -x "$MEZZ" ]] || die "no mezz binary at $MEZZ: build it with 'cargo build --release --bin mezz --bin mezz-task-wrapper' or pass its path"
    [[ -x "$(dirname "$MEZZ")/mezz-task-wrapper" ]] \
        || die "no mezz-task-wrapper beside $MEZZ: build it with 'cargo build --release --bin mezz-task-wrapper'"
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v srun >/dev/null || ! command -v munged >/dev/null; then
        log "installing slurmd slurmctld slurm-client munge from the Debian archive"
        DEBIAN_FRONTEND=noninteractive apt-get install -y slurmd slurmctld slurm-client munge >&2
    fi
    MEZZ="$(cd "$(dirname "$MEZZ")" && pwd)/$(basename "$MEZZ")"
    args=(--rounds "$ROUNDS" --warmup "$WARMUP")
    [[ $JSON -eq 1 ]] && args+=(--json)
    [[ $ALONE -eq 1 ]] && args+=(--alone)
    [[ -n "$KEEP_LOGS" ]] && args+=(--keep-logs "$(mkdir -p "$KEEP_LOGS" && cd "$KEEP_LOGS" && pwd)")
    exec unshare --net -- env SLURM_COMPARE_NETNS=1 bash "$0" "${args[@]}" "$MEZZ"
fi

# --- 2. inside: loopback only --------------------------------------------------
# A second loopback address: Slurm resolves its listening address with
# getaddrinfo(NULL, port, AF_INET, AI_ADDRCONFIG|AI_PASSIVE), and glibc
# answers that with "Name or service not known" when the only IPv4 address
# configured is 127.0.0.1 (it does not count that one). 127.0.0.2 is still
# loopback, and this namespace has no other interface.
ip link set lo up
ip addr add 127.0.0.2/8 dev lo
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d -t mezz-slurm-compare.XXXXXX)"
chmod 755 "$WORK"
mkdir -p "$WORK"/{etc,munge,state,spool,log,run}

# cgroups that exist before we start are not ours to remove.
cgroup_hierarchies() { find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d; }
declare -A SLURM_CG_BEFORE=()
declare -A MEZZ_CG_BEFORE=()
for h in $(cgroup_hierarchies); do
    # Slurm's cgroup/v1 names its root slurm_<node> (slurm on v2).
    for d in "$h"/slurm "$h"/slurm_*; do
        [[ -d "$d" ]] && SLURM_CG_BEFORE["$d"]=1
    done
    if [[ -d "$h/mezzanine" ]]; then
        for d in "$h"/mezzanine/*/; do
            [[ -d "$d" ]] && MEZZ_CG_BEFORE["$d"]=1
        done
    fi
done

MUNGED_PID=""; CTLD_PID=""; SLURMD_PID=""; DEV_PID=""; MEZZ_AGENT_TAG=""; PY_PID=""
stop() { # stop PID NAME: SIGTERM, then SIGKILL after 20 s
    local pid="$1" name="$2"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop in 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
rmdir_tree() { # remove a cgroup directory and the empty ones below it
    find "$1" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "$1" ]] && log "could not remove cgroup $1 (still has processes?)"
    return 0
}
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    stop "$PY_PID" timer
    stop "$DEV_PID" "mezz dev"
    stop "$SLURMD_PID" slurmd
    stop "$CTLD_PID" slurmctld
    stop "$MUNGED_PID" munged
    for h in $(cgroup_hierarchies); do
        for d in "$h"/slurm "$h"/slurm_*; do
            [[ -d "$d" && -z "${SLURM_CG_BEFORE[$d]:-}" ]] && rmdir_tree "$d"
        done
        # Our agent removes each run's cgroup when the task ends; only a
        # run cut short by this teardown could leave one. Its runs' names end
        # in the agent's tag; other agents on this host have other tags.
        if [[ -n "$MEZZ_AGENT_TAG" ]]; then
            for d in "$h"/mezzanine/*."$MEZZ_AGENT_TAG"/; do
                [[ -d "$d" && -z "${MEZZ_CG_BEFORE[$d]:-}" ]] && rmdir_tree "$d"
            done
        fi
    done
    if [[ -n "$KEEP_LOGS" ]]; then
        cp "$WORK"/log/* "$WORK"/etc/*.conf "$KEEP_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local secs="$1" what="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready after ${secs} s (logs: $WORK/log)"
        sleep 0.1
    done
}
free_ports() { # free_ports N: N free TCP ports on 127.0.0.1
    python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])' "$1"
}

# --- 3. munge and Slurm ------------------------------------------------------------
mungekey --create --keyfile="$WORK/munge/munge.key" >&2
munged --foreground --force --key-file="$WORK/munge/munge.key" \
    --socket="$WORK/munge/munge.socket" --pid-file="$WORK/munge/munged.pid" \
    --log-file="$WORK/log/munged.log" --seed-file="$WORK/munge/munged.seed" \
    2> "$WORK/log/munged.out" &
MUNGED_PID=$!
wait_for 10 munged test -S "$WORK/munge/munge.socket"

read -r CTLD_PORT SLURMD_PORT < <(free_ports 2)
if [[ "$(stat -f -c %T /sys/fs/cgroup)" == cgroup2fs ]]; then CG=cgroup/v2; else CG=cgroup/v1; fi
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
export SLURM_CONF="$WORK/etc/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=mezzbench
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/munge.socket
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=32
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=bench Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
cat > "$WORK/etc/cgroup.conf" <<EOF
CgroupPlugin=$CG
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
EOF
slurmctld -D -f "$SLURM_CONF" > "$WORK/log/slurmctld.out" 2>&1 &
CTLD_PID=$!
slurmd -D -f "$SLURM_CONF" -N localhost > "$WORK/log/slurmd.out" 2>&1 &
SLURMD_PID=$!
node_idle() { [[ "$(sinfo -h -n localhost -o %t 2>/dev/null)" == idle ]]; }
wait_for 30 "Slurm node 'localhost'" node_idle
log "Slurm $(sinfo -V | awk '{print $2}') up: slurmctld 127.0.0.1:$CTLD_PORT, slurmd 127.0.0.1:$SLURMD_PORT, $CG"

# --- 4. mezz dev ---------------------------------------------------------------------
read -r DEV_PORT _ < <(free_ports 1)
"$MEZZ" dev --port "$DEV_PORT" --resources "cpus:4;mem:4096;disk:1000;ports:[31000-31099]" \
    > "$WORK/log/mezz-dev.out" 2> "$WORK/log/mezz-dev.err" &
DEV_PID=$!
wait_for 60 "mezz dev" grep -q "is up" "$WORK/log/mezz-dev.out"
log "mezz dev up: master 127.0.0.1:$DEV_PORT ($MEZZ)"

# Both must really isolate: the task's own cgroups are Slurm's and ours.
MEZZ_RUN=("$MEZZ" run --master "127.0.0.1:$DEV_PORT" --cpus 0.1 --mem 32 --)
srun_cg="$(srun cat /proc/self/cgroup)"
grep -q 'memory:/slurm' <<<"$srun_cg" || die "srun's task is not in a Slurm memory cgroup: $srun_cg"
mezz_cg="$("${MEZZ_RUN[@]}" cat /proc/self/cgroup)"
grep -q 'memory:/mezzanine/' <<<"$mezz_cg" || die "mezz run's task is not in a mezzanine memory cgroup: $mezz_cg"
MEZZ_AGENT_TAG="$(grep -m1 'memory:/mezzanine/' <<<"$mezz_cg" | sed 's/.*\.//')"
log "srun task in $(grep memory: <<<"$srun_cg"), mezz task in $(grep memory: <<<"$mezz_cg")"

# --- 5. measure --------------------------------------------------------------------------
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds after $WARMUP warm-up runs of each"
py=(python3 "$HERE/slurm_compare.py" --rounds "$ROUNDS" --warmup "$WARMUP")
[[ $ALONE -eq 1 ]] && py+=(--alone)
SUMMARY_FD=1
if [[ $JSON -eq 1 ]]; then py+=(--json "$WORK/result.json"); SUMMARY_FD=2; fi
"${py[@]}" \
    "mezz=$(printf '%q ' "${MEZZ_RUN[@]}")true" \
    "srun=srun true" >&"$SUMMARY_FD" &
PY_PID=$!
wait "$PY_PID"
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[[ $JSON -eq 1 ]] && cat "$WORK/result.json"
exit 0
