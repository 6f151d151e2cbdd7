#!/usr/bin/env bash
# A real Slurm cluster on this machine for development and tests.
#
#   slurm/dev-cluster.sh [--state-dir DIR] COMMAND
#
#   up              start munge, MariaDB, slurmdbd, slurmctld and the compute nodes n1, n2
#                   (partition "dev"); idempotent
#   down [--purge]  cancel every job, stop the daemons started by `up`; --purge also deletes the
#                   state directory
#   status          state directory, ports, daemon table and sinfo; exit 0 when all is up, 3 if not
#   restart-ctld    stop slurmctld (SIGTERM: it saves its state) and start it again; running jobs
#                   go on; returns once the nodes are ready
#
# Everything written (configs, ports, munge key and socket, MariaDB datadir, spool, state, logs,
# pid files) lives under one state directory: --state-dir DIR, else $SEGCTL_SLURM_DIR, else
# $HOME/.local/state/segctl/slurm-dev. Daemons listen on 127.0.0.1 only, on ports chosen free
# when `up` first creates the state directory and recorded in its etc/ports, so that every
# command on that directory finds the same cluster and clusters of other state directories
# (each with its own munge daemon and key) run beside it without sharing anything. A state
# directory created before ports were recorded keeps the former fixed ports (slurmctld 17000,
# slurmd n1/n2 17001/17002, slurmdbd 17019, MariaDB 3307). Run as root (slurmd must be able to
# start jobs as any user).
#
# Exit codes: 0 ok; 1 error; 2 usage; 3 `status` found the cluster not (fully) up;
# 4 the Slurm packages are missing and apt-get is not available to install them.
set -euo pipefail

readonly DEFAULT_STATE_DIR="$HOME/.local/state/segctl/slurm-dev"

readonly CLUSTER_NAME="segctldev"
readonly PARTITION="dev"
readonly NODES=(n1 n2)
readonly NODE_CPUS=2
readonly SLURM_DB="slurm_acct_db"

# Ports of a state directory created before they were recorded in etc/ports.
readonly FORMER_PORTS="SLURMCTLD_PORT=17000 SLURMD_PORTS=17001,17002 SLURMDBD_PORT=17019 MYSQL_PORT=3307"
# New state directories draw their ports at random from [PORT_LOW, PORT_HIGH), below the usual
# ephemeral range (32768-60999) where outgoing connections take theirs.
readonly PORT_LOW=20000
readonly PORT_HIGH=32000
# A Unix socket path holds at most 107 bytes; the longest one is a job step's socket in a
# node's spool directory, <spool>/slurmd.<node>/<node>_<job id>.<step id>.
readonly MAX_SOCKET_PATH=107

# set_state_dir DIR: the state directory and every path under it (absolute).
set_state_dir() {
  local dir="$1"
  [[ -n "$dir" ]] || die "the state directory is an empty string"
  [[ "$dir" == /* ]] || dir="$PWD/$dir"
  dir="$(realpath -m -- "$dir")"
  declare -gr STATE_DIR="$dir"
  declare -gr ETC_DIR="$STATE_DIR/etc"
  declare -gr RUN_DIR="$STATE_DIR/run"
  declare -gr LOG_DIR="$STATE_DIR/log"
  declare -gr SPOOL_DIR="$STATE_DIR/spool"
  declare -gr MUNGE_DIR="$STATE_DIR/munge"
  declare -gr MYSQL_DIR="$STATE_DIR/mysql"
  declare -gr SLURM_CONF_FILE="$ETC_DIR/slurm.conf"
  declare -gr SLURMDBD_CONF_FILE="$ETC_DIR/slurmdbd.conf"
  declare -gr PORTS_FILE="$ETC_DIR/ports"
  declare -gr MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
  declare -gr MUNGE_KEY="$MUNGE_DIR/munge.key"
  declare -gr MYSQL_SOCKET="$MYSQL_DIR/mysqld.sock"
  declare -gr DB_PASSWORD_FILE="$ETC_DIR/db.password"
  export SLURM_CONF="$SLURM_CONF_FILE"
}

readonly PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
readonly REQUIRED_BINARIES=(munged mungekey munge unmunge slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr
  scontrol scancel squeue srun mariadbd mariadb-install-db mariadb mariadb-admin)

# Seconds to wait for each readiness condition.
readonly START_TIMEOUT="${SEGCTL_SLURM_START_TIMEOUT:-60}"
readonly STOP_TIMEOUT="${SEGCTL_SLURM_STOP_TIMEOUT:-30}"

# --- messages ----------------------------------------------------------------------------------

log() { printf 'dev-cluster: %s\n' "$*" >&2; }

die() {
  printf 'dev-cluster: error: %s\n' "$*" >&2
  exit 1
}

# die_daemon NAME LOGFILE MESSAGE: fail naming the daemon and showing the tail of its log.
die_daemon() {
  local name="$1" logfile="$2" message="$3"
  {
    printf 'dev-cluster: error: %s: %s\n' "$name" "$message"
    printf 'dev-cluster: %s log: %s\n' "$name" "$logfile"
    if [[ -s "$logfile" ]]; then
      printf -- '--- last lines of %s ---\n' "$logfile"
      tail -n 25 "$logfile"
      printf -- '---\n'
    fi
  } >&2
  exit 1
}

# --- processes ---------------------------------------------------------------------------------

# pid_alive PIDFILE COMM: the pid in PIDFILE is a live process whose name is COMM; prints it.
pid_alive() {
  local pidfile="$1" comm="$2" pid actual
  [[ -s "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" ]] || return 1
  running "$pid" || return 1
  actual="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  [[ "$actual" == "$comm" ]] || return 1
  printf '%s\n' "$pid"
}

# running PID: PID is a live process (a zombie awaiting its parent's reaping counts as gone).
running() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.2 s until it succeeds or time runs out.
wait_for() {
  local seconds="$1"
  shift
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  "$@" >/dev/null 2>&1
}

# stop_daemon NAME PIDFILE COMM: SIGTERM the daemon of PIDFILE, wait for it, SIGKILL if needed.
stop_daemon() {
  local name="$1" pidfile="$2" comm="$3" pid deadline
  if ! pid="$(pid_alive "$pidfile" "$comm")"; then
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while running "$pid" && ((SECONDS < deadline)); do
    sleep 0.1
  done
  if running "$pid"; then
    log "$name (pid $pid) did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while running "$pid"; do sleep 0.1; done
  fi
  rm -f "$pidfile"
}

# --- packages ----------------------------------------------------------------------------------

missing_binaries() {
  local b
  for b in "${REQUIRED_BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || printf '%s ' "$b"
  done
}

ensure_packages() {
  local missing
  missing="$(missing_binaries)"
  [[ -z "$missing" ]] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    printf 'dev-cluster: error: missing programs (%s) and apt-get is not available to install %s\n' \
      "${missing% }" "${PACKAGES[*]}" >&2
    exit 4
  fi
  [[ "$(id -u)" -eq 0 ]] || die "missing programs (${missing% }); run as root to install ${PACKAGES[*]}"
  log "installing ${PACKAGES[*]} (missing: ${missing% })"
  local pkg need_update=0
  for pkg in "${PACKAGES[@]}"; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
      need_update=1
    fi
  done
  if ((need_update)); then
    DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; then
    # Package lists older than the mirror give 404s: refresh them once and retry.
    ((need_update)) && die "apt-get install ${PACKAGES[*]} failed"
    log "apt-get install failed; refreshing the package lists and retrying once"
    DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" ||
      die "apt-get install ${PACKAGES[*]} failed"
  fi
  missing="$(missing_binaries)"
  [[ -z "$missing" ]] || die "still missing after install: ${missing% }"
}

# --- ports -------------------------------------------------------------------------------------

# ports_in_use: the local port of every TCP socket of this machine (any state, IPv4 and IPv6).
ports_in_use() {
  local file local_address rest
  for file in /proc/net/tcp /proc/net/tcp6; do
    [[ -r "$file" ]] || continue
    while read -r _ local_address rest; do
      [[ "$local_address" == *:* ]] || continue # the header line
      printf '%d\n' "$((16#${local_address##*:}))"
    done <"$file"
  done
}

# choose_ports: a ports file's assignments (one per line) of distinct ports drawn at random in
# [PORT_LOW, PORT_HIGH) that no socket of this machine holds now, nor a former fixed port.
choose_ports() {
  local -A taken=()
  local port assignment
  for port in $(ports_in_use); do
    taken[$port]=1
  done
  for assignment in $FORMER_PORTS; do
    assignment="${assignment#*=}"
    for port in ${assignment//,/ }; do # SLURMD_PORTS holds one per node, comma-separated
      taken[$port]=1
    done
  done
  local -a chosen=()
  local tries=0
  while ((${#chosen[@]} < 3 + ${#NODES[@]})); do
    ((tries++ < 1000)) || die "no ${#NODES[@]}+3 free ports found in [$PORT_LOW, $PORT_HIGH)"
    port=$((PORT_LOW + (RANDOM * 32768 + RANDOM) % (PORT_HIGH - PORT_LOW)))
    [[ -z "${taken[$port]:-}" ]] || continue
    taken[$port]=1
    chosen+=("$port")
  done
  local IFS=,
  printf 'SLURMCTLD_PORT=%s\nSLURMDBD_PORT=%s\nMYSQL_PORT=%s\nSLURMD_PORTS=%s\n' \
    "${chosen[0]}" "${chosen[1]}" "${chosen[2]}" "${chosen[*]:3}"
}

# parse_ports: read a ports file's assignments from stdin into SLURMCTLD_PORT, SLURMDBD_PORT,
# MYSQL_PORT and SLURMD_PORTS (an array, one port per node of NODES, in order).
parse_ports() {
  local line key value
  SLURMCTLD_PORT="" SLURMDBD_PORT="" MYSQL_PORT="" SLURMD_PORTS=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
    [[ "$line" =~ ^([A-Z_]+)=([0-9,]+)$ ]] || die "$PORTS_FILE: unexpected line: $line"
    key="${BASH_REMATCH[1]}" value="${BASH_REMATCH[2]}"
    case "$key" in
      SLURMCTLD_PORT) SLURMCTLD_PORT="$value" ;;
      SLURMDBD_PORT) SLURMDBD_PORT="$value" ;;
      MYSQL_PORT) MYSQL_PORT="$value" ;;
      SLURMD_PORTS) IFS=, read -r -a SLURMD_PORTS <<<"$value" ;;
      *) die "$PORTS_FILE: unknown key $key" ;;
    esac
  done
  local port
  for port in "$SLURMCTLD_PORT" "$SLURMDBD_PORT" "$MYSQL_PORT" "${SLURMD_PORTS[@]}"; do
    [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) ||
      die "$PORTS_FILE: a port is missing or out of range (delete the state directory, or fix the file)"
  done
  ((${#SLURMD_PORTS[@]} == ${#NODES[@]})) ||
    die "$PORTS_FILE: SLURMD_PORTS needs ${#NODES[@]} ports (one per node: ${NODES[*]})"
}

# load_ports: the ports of this state directory, where it has any. A directory laid out before
# ports were recorded (a slurm.conf and no ports file) has the former fixed ones.
load_ports() {
  if [[ -f "$PORTS_FILE" ]]; then
    parse_ports <"$PORTS_FILE"
  elif [[ -f "$SLURM_CONF_FILE" ]]; then
    parse_ports < <(tr ' ' '\n' <<<"$FORMER_PORTS")
  fi
}

# record_ports: make sure the state directory has its ports file (for `up`, after make_layout).
record_ports() {
  [[ -f "$PORTS_FILE" ]] && return 0
  {
    printf '# Ports of the dev cluster of this state directory, recorded by slurm/dev-cluster.sh\n'
    printf '# when the directory was created. Every command on this directory uses them.\n'
    if [[ -f "$SLURM_CONF_FILE" ]]; then
      tr ' ' '\n' <<<"$FORMER_PORTS"
    else
      choose_ports
    fi
  } | write_if_changed "$PORTS_FILE" 644
  log "ports recorded in $PORTS_FILE"
}

# check_path_lengths: every Unix socket under the state directory fits in a socket address.
check_path_lengths() {
  local node path
  local -a paths=("$MUNGE_SOCKET" "$MYSQL_SOCKET")
  for node in "${NODES[@]}"; do
    paths+=("$SPOOL_DIR/slurmd.$node/${node}_4294967294.4294967294")
  done
  for path in "${paths[@]}"; do
    ((${#path} <= MAX_SOCKET_PATH)) ||
      die "state directory $STATE_DIR is too long: the socket path $path has ${#path} bytes, at most $MAX_SOCKET_PATH fit; choose a shorter --state-dir"
  done
}

# --- layout and configuration ------------------------------------------------------------------

make_layout() {
  mkdir -p "$STATE_DIR" "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR/ctld" "$MUNGE_DIR" "$MYSQL_DIR"
  chmod 755 "$STATE_DIR" "$ETC_DIR" "$RUN_DIR" "$LOG_DIR" "$SPOOL_DIR"
  # munged refuses a socket or key directory that others may write to.
  chmod 755 "$MUNGE_DIR"
  chmod 700 "$SPOOL_DIR/ctld" "$MYSQL_DIR"
  local node
  for node in "${NODES[@]}"; do
    mkdir -p "$SPOOL_DIR/slurmd.$node"
    chmod 755 "$SPOOL_DIR/slurmd.$node"
  done
}

node_memory_mb() {
  local kb
  kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
  local mb=$((kb / 1024 / 2))
  ((mb > 0)) || mb=1000
  printf '%s\n' "$mb"
}

db_password() {
  if [[ ! -s "$DB_PASSWORD_FILE" ]]; then
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$DB_PASSWORD_FILE")
  fi
  cat "$DB_PASSWORD_FILE"
}

# write_if_changed FILE MODE: stdin becomes FILE (with MODE) only when its content differs.
write_if_changed() {
  local file="$1" mode="$2" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$file"
  fi
}

write_configs() {
  local memory node i=0
  memory="$(node_memory_mb)"
  {
    cat <<EOF
# Generated by slurm/dev-cluster.sh; rewritten on every \`up\`.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost
SlurmctldPort=$SLURMCTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MailProg=/bin/true
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/slurmd.%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$SLURMDBD_PORT
# Connections to slurmdbd take their munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
EOF
    for node in "${NODES[@]}"; do
      printf 'NodeName=%s NodeHostname=localhost NodeAddr=127.0.0.1 Port=%s CPUs=%s RealMemory=%s State=UNKNOWN\n' \
        "$node" "${SLURMD_PORTS[$i]}" "$NODE_CPUS" "$memory"
      i=$((i + 1))
    done
    local IFS=,
    printf 'PartitionName=%s Nodes=%s Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO\n' \
      "$PARTITION" "${NODES[*]}"
  } | write_if_changed "$SLURM_CONF_FILE" 644

  local password
  password="$(db_password)"
  write_if_changed "$SLURMDBD_CONF_FILE" 600 <<EOF
# Generated by slurm/dev-cluster.sh; rewritten on every \`up\`.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$password
StorageLoc=$SLURM_DB
EOF
}

# --- munge -------------------------------------------------------------------------------------

start_munge() {
  local pidfile="$RUN_DIR/munged.pid" logfile="$LOG_DIR/munged.log"
  if pid_alive "$pidfile" munged >/dev/null; then
    return 0
  fi
  if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating munge key $MUNGE_KEY"
    rm -f "$MUNGE_KEY"
    mungekey --create --keyfile="$MUNGE_KEY" >/dev/null 2>&1 ||
      (umask 077 && head -c 1024 /dev/urandom >"$MUNGE_KEY")
  fi
  # munged runs as the invoking user, who must own the key and be its only reader.
  chown "$(id -u):$(id -g)" "$MUNGE_KEY"
  chmod 400 "$MUNGE_KEY"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  log "starting munged"
  # --force: the socket may sit below a private home directory (e.g. /root, mode 700); only
  # its owner can then reach it, which suits a cluster run by and for that user.
  munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$pidfile" \
    --log-file="$logfile" --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$logfile" 2>&1 ||
    die_daemon munged "$logfile" "failed to start"
  wait_for "$START_TIMEOUT" munge_works || die_daemon munged "$logfile" "no credential round trip on $MUNGE_SOCKET"
}

munge_works() {
  munge --socket="$MUNGE_SOCKET" -n </dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null
}

# --- MariaDB -----------------------------------------------------------------------------------

mysql_client() {
  mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCKET" --user=root "$@"
}

start_mariadb() {
  local pidfile="$MYSQL_DIR/mysqld.pid" logfile="$MYSQL_DIR/mysqld.log"
  if pid_alive "$pidfile" mariadbd >/dev/null; then
    return 0
  fi
  if [[ ! -d "$MYSQL_DIR/data/mysql" ]]; then
    log "initialising MariaDB datadir $MYSQL_DIR/data"
    rm -rf "$MYSQL_DIR/data"
    mariadb-install-db --no-defaults --user=root --datadir="$MYSQL_DIR/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$MYSQL_DIR/install-db.log" 2>&1 ||
      die_daemon mariadb-install-db "$MYSQL_DIR/install-db.log" "datadir initialisation failed"
  fi
  rm -f "$MYSQL_SOCKET"
  log "starting mariadbd on 127.0.0.1:$MYSQL_PORT"
  # mariadbd stays in the foreground; setsid detaches it from this shell and its terminal.
  setsid mariadbd --no-defaults --user=root --datadir="$MYSQL_DIR/data" \
    --socket="$MYSQL_SOCKET" --pid-file="$pidfile" --log-error="$logfile" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-flush-log-at-trx-commit=2 \
    --innodb-lock-wait-timeout=900 --max-allowed-packet=16M \
    </dev/null >>"$logfile" 2>&1 &
  local launcher=$!
  local deadline=$((SECONDS + START_TIMEOUT))
  until mariadb-admin --no-defaults --protocol=socket --socket="$MYSQL_SOCKET" --user=root \
    ping >/dev/null 2>&1; do
    if ! running "$launcher"; then
      die_daemon mariadbd "$logfile" "exited during start-up"
    fi
    ((SECONDS < deadline)) || die_daemon mariadbd "$logfile" "not answering on $MYSQL_SOCKET after ${START_TIMEOUT}s"
    sleep 0.2
  done
  wait_for 10 pid_alive "$pidfile" mariadbd || die_daemon mariadbd "$logfile" "no pid file $pidfile"
}

ensure_database() {
  local password
  password="$(db_password)"
  mysql_client <<EOF >"$MYSQL_DIR/setup.log" 2>&1 || die_daemon mariadbd "$MYSQL_DIR/setup.log" "creating the slurm database user failed"
CREATE DATABASE IF NOT EXISTS $SLURM_DB;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
GRANT ALL ON $SLURM_DB.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON $SLURM_DB.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

# --- Slurm daemons -----------------------------------------------------------------------------

dbd_answers() { sacctmgr --immediate --noheader --parsable2 show cluster format=cluster; }
ctld_answers() { scontrol ping | grep 'is UP' >/dev/null; }

start_slurmdbd() {
  local pidfile="$RUN_DIR/slurmdbd.pid" logfile="$LOG_DIR/slurmdbd.log"
  if pid_alive "$pidfile" slurmdbd >/dev/null; then
    return 0
  fi
  rm -f "$pidfile"
  log "starting slurmdbd on 127.0.0.1:$SLURMDBD_PORT"
  slurmdbd </dev/null >>"$logfile" 2>&1 || die_daemon slurmdbd "$logfile" "failed to start"
  local deadline=$((SECONDS + START_TIMEOUT))
  until dbd_answers >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die_daemon slurmdbd "$logfile" "not answering on port $SLURMDBD_PORT after ${START_TIMEOUT}s"
    if [[ -s "$pidfile" ]] && ! pid_alive "$pidfile" slurmdbd >/dev/null; then
      die_daemon slurmdbd "$logfile" "exited during start-up"
    fi
    sleep 0.2
  done
}

start_slurmctld() {
  local pidfile="$RUN_DIR/slurmctld.pid" logfile="$LOG_DIR/slurmctld.log"
  if pid_alive "$pidfile" slurmctld >/dev/null; then
    return 0
  fi
  rm -f "$pidfile"
  log "starting slurmctld on 127.0.0.1:$SLURMCTLD_PORT"
  slurmctld </dev/null >>"$logfile" 2>&1 || die_daemon slurmctld "$logfile" "failed to start"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ctld_answers >/dev/null 2>&1; do
    if [[ -s "$pidfile" ]] && ! pid_alive "$pidfile" slurmctld >/dev/null; then
      die_daemon slurmctld "$logfile" "exited during start-up"
    fi
    ((SECONDS < deadline)) || die_daemon slurmctld "$logfile" "not answering (scontrol ping) after ${START_TIMEOUT}s"
    sleep 0.2
  done
}

start_slurmd() {
  local node="$1"
  local pidfile="$RUN_DIR/slurmd.$node.pid" logfile="$LOG_DIR/slurmd.$node.log"
  if pid_alive "$pidfile" slurmd >/dev/null; then
    return 0
  fi
  rm -f "$pidfile"
  log "starting slurmd $node"
  slurmd -N "$node" </dev/null >>"$logfile" 2>&1 || die_daemon "slurmd $node" "$logfile" "failed to start"
  wait_for 10 pid_alive "$pidfile" slurmd || die_daemon "slurmd $node" "$logfile" "exited during start-up"
}

node_states() { sinfo --noheader --partition="$PARTITION" --Node --format='%N %t'; }

# Every node registered and usable: idle on a fresh start; allocated or mixed when `up` is run
# again while jobs are running. A trailing * (not responding), down or drain is not ready.
nodes_ready() {
  local states node
  states="$(node_states)" || return 1
  for node in "${NODES[@]}"; do
    grep -qE "^$node (idle|mix|alloc|comp)\$" <<<"$states" || return 1
  done
}

wait_nodes_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) node
  until nodes_ready; do
    if ((SECONDS >= deadline)); then
      log "nodes not ready after ${START_TIMEOUT}s:"
      node_states >&2 || true
      for node in "${NODES[@]}"; do
        pid_alive "$RUN_DIR/slurmd.$node.pid" slurmd >/dev/null ||
          die_daemon "slurmd $node" "$LOG_DIR/slurmd.$node.log" "not running"
      done
      die_daemon slurmctld "$LOG_DIR/slurmctld.log" "nodes ${NODES[*]} did not become ready (see also $LOG_DIR/slurmd.<node>.log)"
    fi
    sleep 0.2
  done
}

wait_accounting() {
  wait_for "$START_TIMEOUT" sacct --noheader --allusers --starttime=now-1minute ||
    die_daemon slurmdbd "$LOG_DIR/slurmdbd.log" "sacct does not answer after ${START_TIMEOUT}s"
  # slurmctld registers the cluster with slurmdbd by itself once it is connected.
  wait_for "$START_TIMEOUT" cluster_registered ||
    die_daemon slurmctld "$LOG_DIR/slurmctld.log" "cluster $CLUSTER_NAME not registered with slurmdbd after ${START_TIMEOUT}s"
}

cluster_registered() { dbd_answers | grep -x "$CLUSTER_NAME" >/dev/null; }

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
  [[ "$(id -u)" -eq 0 ]] || die "run as root: slurmd must start jobs as any user (SlurmUser=root)"
  ensure_packages
  check_path_lengths
  make_layout
  record_ports
  load_ports
  write_configs
  start_munge
  start_mariadb
  ensure_database
  start_slurmdbd
  start_slurmctld
  local node
  for node in "${NODES[@]}"; do
    start_slurmd "$node"
  done
  wait_nodes_ready
  wait_accounting
  log "cluster $CLUSTER_NAME is up: partition $PARTITION, nodes ${NODES[*]}; state in $STATE_DIR; slurmctld on 127.0.0.1:$SLURMCTLD_PORT"
  printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

# Stop and start the controller only (a fault to test against): jobs keep running under their
# slurmd and slurmctld recovers them from its saved state. Returns once the controller answers
# and both nodes have registered again.
cmd_restart_ctld() {
  [[ "$(id -u)" -eq 0 ]] || die "run as root: slurmctld runs as root here (SlurmUser=root)"
  pid_alive "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null || die "slurmctld is not running: use up"
  load_ports
  stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" slurmctld
  start_slurmctld
  wait_nodes_ready
  log "slurmctld restarted"
}

cancel_all_jobs() {
  pid_alive "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null || return 0
  local ids
  ids="$(squeue --noheader --all --format=%A 2>/dev/null | sort -u | tr '\n' ' ')" || return 0
  [[ -n "${ids// /}" ]] || return 0
  log "cancelling jobs: $ids"
  # shellcheck disable=SC2086 # one argument per job id
  scancel $ids 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while [[ -n "$(squeue --noheader --all --format=%A 2>/dev/null)" ]] && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if [[ -n "$(squeue --noheader --all --format=%A 2>/dev/null)" ]]; then
    log "jobs still present after ${STOP_TIMEOUT}s; stopping the daemons anyway"
  fi
}

# Job step daemons (slurmstepd) started by this cluster's slurmd and left behind.
stray_stepds() {
  local pid
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -xF "SLURM_CONF=$SLURM_CONF_FILE" >/dev/null; then
      printf '%s\n' "$pid"
    fi
  done
}

stop_stray_stepds() {
  local pids
  pids="$(stray_stepds)"
  [[ -n "$pids" ]] || return 0
  log "stopping leftover slurmstepd: $(tr '\n' ' ' <<<"$pids")"
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  sleep 1
  pids="$(stray_stepds)"
  # shellcheck disable=SC2086
  [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) usage ;;
  esac
  cancel_all_jobs
  local node
  for ((i = ${#NODES[@]} - 1; i >= 0; i--)); do
    node="${NODES[$i]}"
    stop_daemon "slurmd $node" "$RUN_DIR/slurmd.$node.pid" slurmd
  done
  stop_stray_stepds
  stop_daemon slurmctld "$RUN_DIR/slurmctld.pid" slurmctld
  stop_daemon slurmdbd "$RUN_DIR/slurmdbd.pid" slurmdbd
  stop_daemon mariadbd "$MYSQL_DIR/mysqld.pid" mariadbd
  stop_daemon munged "$RUN_DIR/munged.pid" munged
  if ((purge)) && [[ -d "$STATE_DIR" ]]; then
    log "removing $STATE_DIR"
    rm -rf -- "$STATE_DIR"
  fi
  log "cluster is down"
}

cmd_status() {
  local all_up=0 pid name pidfile comm
  local -a rows=(
    "munged|$RUN_DIR/munged.pid|munged"
    "mariadbd|$MYSQL_DIR/mysqld.pid|mariadbd"
    "slurmdbd|$RUN_DIR/slurmdbd.pid|slurmdbd"
    "slurmctld|$RUN_DIR/slurmctld.pid|slurmctld"
  )
  local node
  for node in "${NODES[@]}"; do
    rows+=("slurmd $node|$RUN_DIR/slurmd.$node.pid|slurmd")
  done
  printf 'state dir: %s\n' "$STATE_DIR"
  load_ports
  if [[ -n "${SLURMCTLD_PORT:-}" ]]; then
    printf 'ports: slurmctld %s, slurmd %s, slurmdbd %s, MariaDB %s\n' "$SLURMCTLD_PORT" \
      "$(IFS=/ && printf '%s' "${SLURMD_PORTS[*]}")" "$SLURMDBD_PORT" "$MYSQL_PORT"
  else
    printf 'ports: none recorded (no cluster was set up in this state dir)\n'
  fi
  local row
  for row in "${rows[@]}"; do
    IFS='|' read -r name pidfile comm <<<"$row"
    if pid="$(pid_alive "$pidfile" "$comm")"; then
      printf '  %-10s up    (pid %s)\n' "$name" "$pid"
    else
      printf '  %-10s down\n' "$name"
      all_up=3
    fi
  done
  if pid_alive "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null && [[ -f "$SLURM_CONF_FILE" ]]; then
    sinfo || all_up=3
  else
    printf 'sinfo: controller not running\n'
  fi
  return "$all_up"
}

usage() {
  printf 'usage: %s [--state-dir DIR] up | down [--purge] | status | restart-ctld\n' "$(basename "$0")" >&2
  exit 2
}

main() {
  local state_dir="${SEGCTL_SLURM_DIR:-$DEFAULT_STATE_DIR}"
  while (($#)); do
    case "$1" in
      --state-dir)
        (($# >= 2)) || usage
        state_dir="$2"
        shift 2
        ;;
      --state-dir=*)
        state_dir="${1#*=}"
        shift
        ;;
      *) break ;;
    esac
  done
  set_state_dir "$state_dir"
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    restart-ctld) cmd_restart_ctld "$@" ;;
    *) usage ;;
  esac
}

main "$@"
