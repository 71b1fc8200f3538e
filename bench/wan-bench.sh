#!/usr/bin/env bash
# Tachyon WAN benchmark: Tachyon against TCP BBR / CUBIC (iperf3) and scp on
# emulated long, lossy paths (../shared/wan/wan), plus a loopback CPU check.
#
#   bench/wan-bench.sh [--quick] [--runs N] [--only SCENARIO,...]
#   npm run bench:wan -- [same options]          (builds first)
#
# Scenarios: lossy100 lossy300 queue fair2 fixed50 loopback (see docs/benchmarks.md).
# Raw results: bench/results/wan-<time>.jsonl (one JSON object per line).
# Report:      docs/benchmarks.md + docs/benchmarks.svg (dist/bench/report.js).
#
# Environment overrides: WAN (path of the wan script), BENCH_TMPDIR (parent of the
# temp dir), BENCH_TACHYON_MIB, BENCH_SCP_MIB, BENCH_SCP_TIMEOUT, BENCH_IPERF_SECONDS,
# BENCH_LOOPBACK_MIB, BENCH_LOOPBACK_RATE (-l on loopback, default 10g),
# BENCH_LOOPBACK_MTU (--mtu on loopback, default 65535),
# BENCH_DEFAULT_CC (congestion control the test hosts default to, so scp's; cubic).
# Needs root (network namespaces). Tachyon failures are recorded, never fatal.
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
WAN=${WAN:-$(cd "$repo/.." && pwd)/shared/wan/wan}
TACHYON=(node "$repo/bin/tachyon.js")
ALL_SCENARIOS=(lossy100 lossy300 queue fair2 fixed50 loopback)
PORT=33001          # Tachyon: SSH on TCP, data on UDP
IPERF_PORT=5201
TCP_BUF_MAX=33554432 # 32 MiB: TCP windows never limit TCP on these paths

quick=0 runs="" only=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1;;
    --runs) runs=${2:-}; shift;;
    --runs=*) runs=${1#*=};;
    --only) only=${2:-}; shift;;
    --only=*) only=${1#*=};;
    -h|--help) usage; exit 0;;
    *) echo "wan-bench: unknown option '$1'" >&2; usage >&2; exit 2;;
  esac
  shift
done

if [[ $quick == 1 ]]; then
  RUNS=${runs:-1}
  T_MIB=${BENCH_TACHYON_MIB:-32}; QUEUE_MIB=64; FAIR_MIB=32; FIXED_MIB=16
  LO_MIB=${BENCH_LOOPBACK_MIB:-256}; SCP_MIB=${BENCH_SCP_MIB:-8}
  SCP_TIMEOUT=${BENCH_SCP_TIMEOUT:-10}; IPERF_S=${BENCH_IPERF_SECONDS:-5}; PING_IDLE_N=20
else
  RUNS=${runs:-3}
  T_MIB=${BENCH_TACHYON_MIB:-512}; QUEUE_MIB=512; FAIR_MIB=512; FIXED_MIB=256
  LO_MIB=${BENCH_LOOPBACK_MIB:-2048}; SCP_MIB=${BENCH_SCP_MIB:-64}
  SCP_TIMEOUT=${BENCH_SCP_TIMEOUT:-30}; IPERF_S=${BENCH_IPERF_SECONDS:-20}; PING_IDLE_N=50
fi
LO_RATE=${BENCH_LOOPBACK_RATE:-10g}
# loopback carries 64 KiB datagrams without fragmentation (lo has a 65536-byte MTU)
LO_MTU=${BENCH_LOOPBACK_MTU:-65535}
DEFAULT_CC=${BENCH_DEFAULT_CC:-cubic}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "wan-bench: --runs needs a positive integer" >&2; exit 2; }

SCENARIOS=()
if [[ -n $only ]]; then
  IFS=, read -r -a wanted <<<"$only"
  for s in "${wanted[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] \
      || { echo "wan-bench: unknown scenario '$s' (known: ${ALL_SCENARIOS[*]})" >&2; exit 2; }
  done
  for s in "${ALL_SCENARIOS[@]}"; do   # keep the canonical order
    [[ ",$only," == *",$s,"* ]] && SCENARIOS+=("$s")
  done
else
  SCENARIOS=("${ALL_SCENARIOS[@]}")
fi

# ---------------------------------------------------------------- helpers

T_START=$(date +%s)
log() { local m="$*"; printf '[bench %s +%ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T_START ))" "${m//$'\n'/ }" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
# calc EXPR [var=value ...]: floating-point arithmetic with awk, 3 decimals
calc() { local e=$1; shift; awk "${@/#/-v}" "BEGIN { printf \"%.3f\", $e }" </dev/null; }
# value or JSON null, for emit's :=
num() { if [[ -n ${1:-} && $1 != null ]]; then printf '%s' "$1"; else printf null; fi; }
# last lines of a file, at most 600 characters, for error messages
tail_of() { if [[ -s $1 ]]; then tail -n 6 "$1" | tail -c 600; fi; }
# what went wrong, from a log: its first line that names an error, then its last lines
err_of() {
  [[ -s $1 ]] || return 0
  local first
  first=$(grep -m 1 -iE 'error|fail|denied|refused|cannot|unable' "$1" | head -c 300 || true)
  if [[ -n $first ]] && ! tail -n 3 "$1" | grep -qF -- "$first"; then printf '%s … ' "$first"; fi
  tail -n 3 "$1" | tail -c 400
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# emit key=string key:=json [@file.json]: append one JSON object to the results
# file; the fields of file.json (one object) are merged in
emit() {
  local a=() file="" kv k
  for kv in "$@"; do
    if [[ $kv == @* ]]; then file=${kv#@}; continue; fi
    k=${kv%%=*}
    if [[ $k == *: ]]; then a+=(--argjson "${k%:}" "${kv#*=}"); else a+=(--arg "$k" "${kv#*=}"); fi
  done
  if [[ -n $file ]]; then
    jq -c '$ARGS.named + .' "${a[@]}" "$file" >>"$RESULTS"
  else
    jq -nc '$ARGS.named' "${a[@]}" >>"$RESULTS"
  fi
}

# The exact command as text for the report, with run-specific paths templated.
cmdstr() {
  local s
  s=$(printf '%q ' "$@"); s=${s% }
  s=${s//"$WAN"/wan}; s=${s//"$TMP"/\$TMP}; s=${s//"$repo"/.}
  [[ -n ${T_FPR:-} ]] && s=${s//"$T_FPR"/\$FINGERPRINT}
  [[ -n ${CUR:-} ]] && s=${s//"$CUR"/bench}
  printf '%s' "$s"
}

# ------------------------------------------------------------ cleanup/trap

PIDS=()      # background processes this script started
PATHS=()     # wan paths this script created
NETNS=()     # plain namespaces this script created (loopback)
TMP=""
RESULTS=""
CUR=""

forget_pid() {
  local p keep=()
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
stop_pid() {   # stop_pid PID: end a process we started, reap it
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

STOP_REASON="" rc_=0
cleanup() {
  local rc=$? p ns pids
  set +e
  trap - EXIT INT TERM HUP ERR
  if [[ $rc != 0 && -n $RESULTS && -f $RESULTS ]]; then
    jq -nc --argjson rc "$rc" --arg why "${STOP_REASON:-exit $rc}" '{type: "aborted", exitCode: $rc, reason: $why}' >>"$RESULTS"
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PATHS[@]}"; do "$WAN" down --name "$p" >/dev/null 2>&1; done
  for ns in "${NETNS[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    # shellcheck disable=SC2086  # a list of pids, all in our own namespace
    [[ -n $pids ]] && kill $pids 2>/dev/null
    sleep 0.2
    ip netns del "$ns" 2>/dev/null
  done
  [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
  if [[ $rc != 0 ]]; then
    log "stopped (${STOP_REASON:-exit $rc}); partial results in ${RESULTS:-nothing yet}; cleaned up"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'STOP_REASON="interrupted (SIGINT)"; exit 130' INT
trap 'STOP_REASON="terminated (SIGTERM)"; exit 143' TERM
trap 'STOP_REASON="hung up (SIGHUP)"; exit 129' HUP
# say which command failed, should set -e end the run
set -o errtrace
# (only the main shell's last failure counts: the one set -e stopped at)
trap 'rc_=$?; [[ $BASHPID == "$$" ]] && STOP_REASON="line $LINENO: exit $rc_ from: $BASH_COMMAND"' ERR

# ------------------------------------------------------------ preflight

[[ $EUID == 0 ]] || die "needs root (network namespaces); run as root"
[[ -x $WAN ]] || die "wan emulator not found at $WAN (set WAN=/path/to/shared/wan/wan)"

ensure_tools() {
  local need=() pair
  for pair in iperf3:iperf3 ping:iputils-ping ssh:openssh-client scp:openssh-client \
              /usr/sbin/sshd:openssh-server rsync:rsync jq:jq /usr/bin/time:time \
              ss:iproute2 ps:procps cc:gcc; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  [[ ${#need[@]} == 0 ]] && return 0
  log "installing missing packages: ${need[*]} (waits for the dpkg lock if apt is busy)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=900 "${need[@]}" >&2 \
    || { apt-get -o DPkg::Lock::Timeout=900 update -q >&2 \
         && apt-get install -y -q -o DPkg::Lock::Timeout=900 "${need[@]}" >&2; } \
    || die "could not install ${need[*]}"
}
ensure_tools

TMP=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/tachyon-bench.XXXXXX")
mkdir -p "$repo/bench/results"
RUN_ID=$(date +%Y%m%d-%H%M%S)
RESULTS=$repo/bench/results/wan-$RUN_ID.jsonl
: >"$RESULTS"
PFX=tb$(( $$ % 100000 ))   # path names: short, interface names are <= 15 chars

HAVE_BBR=0
grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null && HAVE_BBR=1
if [[ $HAVE_BBR == 0 ]] && command -v modprobe >/dev/null; then
  modprobe tcp_bbr 2>/dev/null || true
  grep -qw bbr /proc/sys/net/ipv4/tcp_available_congestion_control && HAVE_BBR=1
fi
[[ $HAVE_BBR == 1 ]] || log "warning: TCP BBR is not available in this kernel; BBR runs will be recorded as unavailable"

TACHYON_CLI=ok
if ! timeout 30 "${TACHYON[@]}" serve --help >"$TMP/cli-probe" 2>&1; then
  TACHYON_CLI="not working: $(err_of "$TMP/cli-probe" | tr '\n' ' ')"
  log "warning: 'tachyon serve --help' fails; Tachyon runs will be recorded as failed ($TACHYON_CLI)"
fi

# other load skews the figures on 2 cores: note it (emulated paths of others, load average)
OTHER_PATHS=$(ip netns list 2>/dev/null | awk '{ print $1 }' | sed -n 's/-a$//p' | sort -u | paste -sd' ' || true)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v l="${LOADAVG%% *}" -v n="$(nproc)" 'BEGIN { exit !(l >= n / 2) }' \
  && log "warning: load average $LOADAVG on $(nproc) CPUs: something else is running; the figures will be skewed"
[[ -n $OTHER_PATHS ]] && log "note: other emulated paths are up ($OTHER_PATHS); traffic on them competes for the 2 CPUs and skews the figures"
INVOCATION="bench/wan-bench.sh"
[[ $quick == 1 ]] && INVOCATION+=" --quick"
[[ -n $runs ]] && INVOCATION+=" --runs $runs"
[[ -n $only ]] && INVOCATION+=" --only $only"
dirty=false
[[ -n $(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null) ]] && dirty=true
emit type=meta startedAt="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  invocation="$INVOCATION" \
  quick:="$([[ $quick == 1 ]] && echo true || echo false)" runs:="$RUNS" \
  scenarios:="$(printf '%s\n' "${SCENARIOS[@]}" | jq -R . | jq -sc .)" \
  commit="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" dirty:=$dirty \
  nproc:="$(nproc)" kernel="$(uname -r)" \
  cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" \
  memGiB:="$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)" \
  node="$(node --version)" iperf3="$(iperf3 --version | head -n 1)" \
  openssh="$(ssh -V 2>&1)" bbr:="$([[ $HAVE_BBR == 1 ]] && echo true || echo false)" \
  defaultCc="$DEFAULT_CC" tachyonCli="$TACHYON_CLI" loadavg="$LOADAVG" otherPaths="$OTHER_PATHS"

log "results -> ${RESULTS#"$repo"/}; scenarios: ${SCENARIOS[*]}; runs: $RUNS$([[ $quick == 1 ]] && printf ' (quick)')"

# client key shared by Tachyon and scp
ssh-keygen -q -t ed25519 -N '' -C tachyon-bench -f "$TMP/client_key"
cp "$TMP/client_key.pub" "$TMP/authorized_keys"

# src_file MIB: a random (incompressible) source file, made once; prints its path
src_file() {
  local f=$TMP/src-$1M.bin
  if [[ ! -s $f.sha256 ]]; then
    log "creating $1 MiB random source file"
    head -c $(( $1 * 1048576 )) /dev/urandom >"$f"
    sha256sum "$f" | cut -d' ' -f1 >"$f.sha256"
  fi
  printf '%s' "$f"
}

# ------------------------------------------------------------ hosts and paths

HOST_B=198.18.0.2
NSX=()
ns() {   # ns a|b: NSX = prefix that runs a command on that host of the current path
  if [[ ${CUR_LO:-0} == 1 ]]; then NSX=(ip netns exec "$CUR"); else NSX=("$WAN" exec "$1" --name "$CUR"); fi
}

# tune_tcp: on both hosts, 32 MiB TCP buffers, and DEFAULT_CC as the congestion
# control of the route to the other host (a non-initial namespace may not set
# net.ipv4.tcp_congestion_control to an algorithm outside the host's allowed list;
# a route's congctl has no such limit, and iperf3 -C still overrides it)
tune_tcp() {
  local side dev src dst
  for side in a b; do
    ns "$side"
    local sc=(sysctl -q -w "net.ipv4.tcp_rmem=4096 131072 $TCP_BUF_MAX" "net.ipv4.tcp_wmem=4096 16384 $TCP_BUF_MAX")
    SETUP_CMDS+=("$(cmdstr "${NSX[@]}" "${sc[@]}")")
    "${NSX[@]}" "${sc[@]}" >/dev/null 2>&1 || log "warning: could not raise TCP buffers on host $side"
    [[ $CUR_LO == 1 ]] && continue
    if [[ $side == a ]]; then dev=$CUR-ta src=198.18.0.1 dst=198.18.0.2; else dev=$CUR-tb src=198.18.0.2 dst=198.18.0.1; fi
    local rt=(ip route replace "$dst" dev "$dev" scope link src "$src" congctl "$DEFAULT_CC")
    SETUP_CMDS+=("$(cmdstr "${NSX[@]}" "${rt[@]}")")
    "${NSX[@]}" "${rt[@]}" 2>/dev/null || log "warning: could not set congestion control $DEFAULT_CC on host $side"
  done
}

SETUP_CMDS=()   # commands that set the current scenario up, for the report
path_up() {   # path_up SUFFIX RATE RTT LOSS
  CUR=$PFX-$1 CUR_LO=0 HOST_B=198.18.0.2
  PATHS+=("$CUR")
  local cmd=("$WAN" up --name "$CUR" --rate "$2" --rtt "$3" --loss "$4")
  SETUP_CMDS=("$(cmdstr "${cmd[@]}")")
  "${cmd[@]}" >"$TMP/wan-up.log" 2>&1 || { cat "$TMP/wan-up.log" >&2; die "wan up failed"; }
  log "path up: $(tail -n 1 "$TMP/wan-up.log")"
  tune_tcp
}

lo_up() {   # a plain namespace with only 127.0.0.1: no emulator, no port clashes
  CUR=$PFX-lo CUR_LO=1 HOST_B=127.0.0.1
  NETNS+=("$CUR")
  ip netns add "$CUR"
  ip -n "$CUR" link set lo up
  SETUP_CMDS=("$(cmdstr ip netns add "$CUR")" "$(cmdstr ip -n "$CUR" link set lo up)")
  tune_tcp
}

WAN_STATS=""
path_down() {
  local n
  WAN_STATS=""
  if [[ $CUR_LO == 1 ]]; then
    local pids
    pids=$(ip netns pids "$CUR" 2>/dev/null || true)
    # shellcheck disable=SC2086  # a list of pids, all in our own namespace
    [[ -n $pids ]] && { kill $pids 2>/dev/null || true; sleep 0.2; }
    ip netns del "$CUR" 2>/dev/null || true
  else
    WAN_STATS=$("$WAN" stats --name "$CUR" 2>/dev/null || true)
    "$WAN" down --name "$CUR" >/dev/null 2>&1 || log "warning: wan down $CUR failed"
  fi
  for n in "${!PATHS[@]}"; do [[ ${PATHS[n]} == "$CUR" ]] && unset 'PATHS[n]'; done
  for n in "${!NETNS[@]}"; do [[ ${NETNS[n]} == "$CUR" ]] && unset 'NETNS[n]'; done
  PATHS=("${PATHS[@]}"); NETNS=("${NETNS[@]}")
}

# listening SIDE tcp|udp PORT: true once something listens there
listening() {
  ns "$1"
  local flag=-Hltn; [[ $2 == udp ]] && flag=-Hlun
  [[ -n $("${NSX[@]}" ss "$flag" "sport = :$3" 2>/dev/null) ]]
}

# CPU ticks of a process: its own + reaped children's + live descendants'
proc_ticks() {
  local pid=$1 stat rest f c t
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo 0; return; }
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  t=$(( f[11] + f[12] + f[13] + f[14] ))
  for c in $(ps -o pid= --ppid "$pid" 2>/dev/null); do t=$(( t + $(proc_ticks "$c") )); done
  echo "$t"
}
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------ servers

T_PID="" T_FPR="" T_ROOT="" T_ERR=""
tachyon_server_start() {
  local dir=$TMP/tsrv-$CUR fpr=""
  mkdir -p "$dir/root"
  T_ROOT=$dir/root T_FPR="" T_ERR=""
  ns b
  local cmd=("${TACHYON[@]}" serve --root "$dir/root" --authorized-keys "$TMP/authorized_keys"
             --host-key "$dir/host_key" --listen "$HOST_B" --port "$PORT")
  SETUP_CMDS+=("$(cmdstr "${NSX[@]}" "${cmd[@]}") &")
  "${NSX[@]}" "${cmd[@]}" >"$dir/log" 2>&1 &
  T_PID=$!; PIDS+=("$T_PID")
  for _ in $(seq 150); do
    if ! kill -0 "$T_PID" 2>/dev/null; then
      wait "$T_PID" 2>/dev/null || true; forget_pid "$T_PID"
      T_ERR="tachyon serve exited: $(err_of "$dir/log")"; T_PID=""
      return 1
    fi
    [[ -z $fpr ]] && fpr=$(grep -i fingerprint "$dir/log" 2>/dev/null | grep -o 'SHA256:[A-Za-z0-9+/=]*' | head -n 1 || true)
    if [[ -n $fpr ]] && listening b tcp "$PORT" && listening b udp "$PORT"; then T_FPR=$fpr; return 0; fi
    sleep 0.2
  done
  if [[ -z $fpr ]]; then   # not printed: read it from the host key
    fpr=$( { ssh-keygen -lf "$dir/host_key.pub" || ssh-keygen -lf "$dir/host_key"; } 2>/dev/null \
           | grep -o 'SHA256:[A-Za-z0-9+/=]*' | head -n 1 || true)
  fi
  if [[ -n $fpr ]] && listening b tcp "$PORT"; then T_FPR=$fpr; return 0; fi
  T_ERR="tachyon serve not ready after 30 s (fingerprint: ${fpr:-none}): $(err_of "$dir/log")"
  stop_pid "$T_PID"; T_PID=""
  return 1
}
tachyon_server_alive() { [[ -n $T_PID ]] && kill -0 "$T_PID" 2>/dev/null; }
tachyon_server_ensure() {   # (re)start if needed; false with T_ERR when it cannot run
  tachyon_server_alive && return 0
  if [[ -n $T_PID ]]; then
    log "tachyon server died: $(err_of "$TMP/tsrv-$CUR/log" | tail -n 1); restarting"
    wait "$T_PID" 2>/dev/null || true; forget_pid "$T_PID"; T_PID=""
  fi
  tachyon_server_start
}
tachyon_server_stop() { [[ -n $T_PID ]] && stop_pid "$T_PID"; T_PID=""; }

S_PID="" S_ERR=""
sshd_start() {
  local dir=$TMP/sshd-$CUR
  mkdir -p "$dir" /run/sshd
  S_ERR=""
  [[ -f $dir/host_key ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
  cat >"$dir/sshd_config" <<EOF
Port 22
ListenAddress $HOST_B
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $TMP/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
  ns b
  SETUP_CMDS+=("mkdir -p /run/sshd; $(cmdstr "${NSX[@]}" /usr/sbin/sshd -D -e -f "$dir/sshd_config") &  # config: $(grep -v '^#' "$dir/sshd_config" | tr '\n' ';' | sed "s|$TMP|\$TMP|g; s|$CUR|bench|g")")
  "${NSX[@]}" /usr/sbin/sshd -D -e -f "$dir/sshd_config" >"$dir/log" 2>&1 &
  S_PID=$!; PIDS+=("$S_PID")
  for _ in $(seq 50); do
    listening b tcp 22 && return 0
    kill -0 "$S_PID" 2>/dev/null || break
    sleep 0.1
  done
  S_ERR="sshd did not start: $(err_of "$dir/log")"
  stop_pid "$S_PID"; S_PID=""
  return 1
}
sshd_stop() { [[ -n $S_PID ]] && stop_pid "$S_PID"; S_PID=""; }

# ------------------------------------------------------------ measurements
# Each writes one JSON object to OUT.json (fields of a "run" record); the caller
# adds scenario/run/tool and emits it.

# tachyon_timeout MIB FLOOR_MBPS: seconds after which a transfer counts as failed
tachyon_timeout() { calc '20 + m * 8.388608 / f' m="$1" f="$2" | cut -d. -f1; }

tachyon_fail_json() { jq -nc --arg e "$2" --arg c "${3:-}" '{ok: false, error: $e, cmd: $c}' >"$1.json"; }

# tachyon_send OUT SRC DEST_NAME TIMEOUT [send options...]
tachyon_send() {
  local out=$1 src=$2 dest=$3 tmo=$4; shift 4
  ns a
  local cmd=("${TACHYON[@]}" send -P "$PORT" -i "$TMP/client_key" --host-key-fingerprint "$T_FPR"
             -c aes-128-gcm --json "$@" "$src" "xfer@$HOST_B:/$dest")
  local c; c=$(cmdstr "${NSX[@]}" "${cmd[@]}")
  if [[ -z $T_FPR ]]; then tachyon_fail_json "$out" "server not running: $T_ERR" "$c"; return 0; fi
  local t0 t1 rc=0
  t0=$(now)
  "${NSX[@]}" /usr/bin/time -o "$out.time" -f '%e %U %S' timeout -k 5 "$tmo" "${cmd[@]}" \
    >"$out.stdout" 2>"$out.stderr" || rc=$?
  t1=$(now)
  local wall size want got events done_json progress tool_err cpu received err=""
  wall=$(calc 't1 - t0' t1="$t1" t0="$t0")
  size=$(stat -c %s "$src")
  want=$(cat "$src.sha256")
  # --json output: progress events, then "done" (or "error")
  events=$(jq -Rc 'fromjson? | select(type == "object" and has("event"))' "$out.stdout" 2>/dev/null || true)
  done_json=$(jq -c 'select(.event == "done")' <<<"$events" 2>/dev/null | tail -n 1 || true)
  progress=$(jq -r 'select(.event == "progress") | .bytes // empty' <<<"$events" 2>/dev/null | tail -n 1 || true)
  tool_err=$(jq -r 'select(.event == "error") | "\(.code // "error"): \(.message // "")"' <<<"$events" 2>/dev/null | tail -n 1 || true)
  cpu=$(tail -n 1 "$out.time" 2>/dev/null | awk 'NF == 3 { printf "%.2f", $2 + $3 }' || true)
  received=""
  if [[ -f $T_ROOT/$dest ]]; then
    received=$(stat -c %s "$T_ROOT/$dest")
    if [[ $rc == 0 ]]; then
      got=$(sha256sum "$T_ROOT/$dest" | cut -d' ' -f1)
      [[ $got == "$want" ]] || err="received file differs (sha256 $got, want $want)"
    fi
    rm -f "$T_ROOT/$dest"
  elif [[ $rc == 0 ]]; then
    err="exit 0 but no file at /$dest under the server root"
  fi
  if [[ $rc == 124 || $rc == 137 ]]; then err="timed out after ${tmo} s"
  elif [[ $rc != 0 ]]; then err="exit $rc"; fi
  if [[ -n $err ]]; then
    local detail; detail=$(err_of "$out.stderr")
    [[ -z $detail ]] && detail=$(err_of "$out.stdout")
    [[ -n $tool_err && $detail != *"$tool_err"* ]] && detail="$tool_err${detail:+; $detail}"
    [[ -n $progress ]] && detail+="${detail:+; }last progress event: $progress of $size bytes"
    jq -nc --arg e "$err${detail:+: $detail}" --arg c "$c" --argjson rc "$rc" \
      --argjson w "$wall" --argjson r "$(num "$received")" --argjson p "$(num "$progress")" \
      --argjson cpu "$(num "$cpu")" \
      '{ok: false, exitCode: $rc, error: $e, seconds: $w, bytesReceived: $r, progressBytes: $p, cpuSender: $cpu, cmd: $c}' >"$out.json"
    return 0
  fi
  jq -nc --arg c "$c" --argjson b "$size" --argjson w "$wall" --argjson d "${done_json:-null}" \
    --argjson cpu "$(num "$cpu")" \
    '{ok: true, bytes: $b, seconds: $w, mbps: (($b * 8 / $w / 1e6) * 1000 | round / 1000),
      toolBytes: $d.bytes, toolSeconds: $d.seconds, toolMbps: $d.goodputMbps,
      toolTransferSeconds: $d.transferSeconds, toolCpuSeconds: $d.cpuSeconds, toolStats: $d.stats,
      cpuSender: $cpu, exitCode: 0, cmd: $c}' >"$out.json"
}

# iperf_run OUT CC SECONDS: memory-to-memory TCP a -> b, receiver goodput
iperf_run() {
  local out=$1 cc=$2 secs=$3 rc=0 spid
  ns a
  local cmd=(iperf3 -c "$HOST_B" -p "$IPERF_PORT" -t "$secs" -C "$cc" -J)
  local c; c=$(cmdstr "${NSX[@]}" "${cmd[@]}")
  if ! "${NSX[@]}" grep -qw "$cc" /proc/sys/net/ipv4/tcp_available_congestion_control; then
    jq -nc --arg c "$c" --arg e "$cc not available in this kernel" '{ok: false, unavailable: true, error: $e, cmd: $c}' >"$out.json"
    return 0
  fi
  ns b
  local scmd; scmd="$(cmdstr "${NSX[@]}" iperf3 -s -1 -p "$IPERF_PORT") &  # before each iperf3 client"
  [[ " ${SETUP_CMDS[*]} " == *"$scmd"* ]] || SETUP_CMDS+=("$scmd")
  "${NSX[@]}" iperf3 -s -1 -p "$IPERF_PORT" >"$out.server" 2>&1 &
  spid=$!; PIDS+=("$spid")
  for _ in $(seq 50); do listening b tcp "$IPERF_PORT" && break; sleep 0.1; done
  ns a
  "${NSX[@]}" timeout -k 5 $(( secs + 40 )) "${cmd[@]}" >"$out.stdout" 2>"$out.stderr" || rc=$?
  for _ in $(seq 30); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$spid"
  local bps err
  bps=$(jq -r '.end.sum_received.bits_per_second // empty' "$out.stdout" 2>/dev/null || true)
  err=$(jq -r '.error // empty' "$out.stdout" 2>/dev/null || true)
  if [[ $rc != 0 || -z $bps || -n $err ]]; then
    [[ -z $err ]] && err="exit $rc: $(err_of "$out.stderr")"
    jq -nc --arg c "$c" --arg e "iperf3: $err" --argjson rc "$rc" '{ok: false, exitCode: $rc, error: $e, cmd: $c}' >"$out.json"
    return 0
  fi
  jq -c --arg c "$c" '{ok: true, mbps: ((.end.sum_received.bits_per_second / 1e6) * 1000 | round / 1000),
      bytes: .end.sum_received.bytes, seconds: .end.sum_received.seconds,
      retransmits: .end.sum_sent.retransmits, cc: .end.sender_tcp_congestion, exitCode: 0, cmd: $c}' "$out.stdout" >"$out.json"
}

# scp_run OUT SRC TIMEOUT: OpenSSH scp a -> b; a time-out is a partial result
scp_run() {
  local out=$1 src=$2 tmo=$3 rc=0 dest=$TMP/scp-dest-$CUR.bin
  rm -f "$dest"
  ns a
  local cmd=(scp -q -F none -c aes128-gcm@openssh.com -i "$TMP/client_key" -o BatchMode=yes
             -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
             "$src" "root@$HOST_B:$dest")
  local c; c=$(cmdstr "${NSX[@]}" timeout -s KILL "$tmo" "${cmd[@]}")
  if [[ -z $S_PID ]]; then
    jq -nc --arg c "$c" --arg e "$S_ERR" '{ok: false, error: $e, cmd: $c}' >"$out.json"; return 0
  fi
  local t0 t1
  t0=$(now)
  "${NSX[@]}" /usr/bin/time -o "$out.time" -f '%e %U %S' timeout -s KILL "$tmo" "${cmd[@]}" \
    >"$out.stdout" 2>"$out.stderr" || rc=$?
  t1=$(now)
  local wall size bytes cpu
  wall=$(calc 't1 - t0' t1="$t1" t0="$t0")
  size=$(stat -c %s "$src")
  cpu=$(tail -n 1 "$out.time" 2>/dev/null | awk 'NF == 3 { printf "%.2f", $2 + $3 }' || true)
  if [[ $rc == 0 ]]; then
    if [[ -f $dest && $(sha256sum "$dest" | cut -d' ' -f1) == "$(cat "$src.sha256")" ]]; then
      jq -nc --arg c "$c" --argjson b "$size" --argjson w "$wall" --argjson cpu "$(num "$cpu")" \
        '{ok: true, bytes: $b, seconds: $w, mbps: (($b * 8 / $w / 1e6) * 1000 | round / 1000), cpuSender: $cpu, exitCode: 0, cmd: $c}' >"$out.json"
    else
      jq -nc --arg c "$c" '{ok: false, error: "scp exited 0 but the received file differs", cmd: $c}' >"$out.json"
    fi
  elif [[ $rc == 124 || $rc == 137 ]] && [[ -f $dest ]]; then
    # bytes really written: allocated blocks (SFTP may write ahead), at most the size
    bytes=$(stat -c '%b %B %s' "$dest" | awk '{ a = $1 * $2; print (a < $3 ? a : $3) }')
    jq -nc --arg c "$c" --argjson b "$bytes" --argjson w "$wall" --argjson t "$tmo" --argjson size "$size" \
      '{ok: true, partial: true, bytes: $b, seconds: $w, mbps: (($b * 8 / $w / 1e6) * 1000 | round / 1000),
        note: "timed out after \($t) s with \($b) of \($size) bytes; goodput from bytes received", exitCode: 124, cmd: $c}' >"$out.json"
  else
    jq -nc --arg c "$c" --arg e "scp exit $rc: $(err_of "$out.stderr")" --argjson rc "$rc" \
      '{ok: false, exitCode: $rc, error: $e, cmd: $c}' >"$out.json"
  fi
  rm -f "$dest"
}

# ping_samples FILE: RTTs (ms) of the replies in a ping log, as a JSON array
ping_samples() { { grep -o 'time=[0-9.]*' "$1" || true; } | cut -d= -f2 | jq -sc .; }

# say SCENARIO RUN TOOL OUT.json: progress line for one measurement
say() {
  local j=$4 line
  line=$(jq -r 'if .ok then
      (if .mbps then "\(.mbps) Mbit/s" else "" end)
      + (if .medianMs then "median RTT \(.medianMs) ms" else "" end)
      + (if .seconds and .mbps then " (wall \(.seconds * 10 | round / 10) s" + (if .toolMbps then "; tool says \(.toolMbps)" else "" end) + ")" else "" end)
      + (if .partial then " [partial: \(.note)]" else "" end)
    else "FAILED: \(.error // "?" | gsub("\n"; " ") | .[0:200])" end' "$j")
  log "[$1 run $2/$RUNS] $3: $line"
}

record() {   # record SCENARIO RUN TOOL LABEL OUT.json [extra key=value...]
  local s=$1 r=$2 t=$3 l=$4 j=$5; shift 5
  say "$s" "$r" "$t" "$j"
  emit type=run scenario="$s" run:="$r" tool="$t" label="$l" "$@" "@$j"
}

# begin NAME TITLE RATE RTT LOSS [key=value...]: banner, and the scenario record
begin() {
  SCEN=$1 SCEN_T0=$(date +%s)
  log "=== $1: $2 ==="
  emit type=scenario scenario="$1" title="$2" rate="$3" rtt="$4" loss="$5" runs:="$RUNS" "${@:6}"
}
# finish: stop servers and the path; the scenario-end record (set-up commands, emulator counters)
finish() {
  tachyon_server_stop; sshd_stop; path_down
  emit type=scenario-end scenario="$SCEN" seconds:=$(( $(date +%s) - SCEN_T0 )) wanStats="$WAN_STATS" \
    setupCmds:="$(printf '%s\n' "${SETUP_CMDS[@]}" | jq -R . | jq -sc .)"
  log "=== $SCEN done in $(( $(date +%s) - SCEN_T0 )) s ==="
}

start_servers() {   # start_servers [scp]: Tachyon server, and sshd if asked
  tachyon_server_start || log "tachyon server unavailable: $T_ERR"
  if [[ ${1:-} == scp ]]; then sshd_start || log "sshd unavailable: $S_ERR"; fi
}

# ------------------------------------------------------------ scenarios

# lossy100 / lossy300: Tachyon vs TCP BBR, TCP CUBIC and scp on one path
scenario_lossy() {   # NAME SUFFIX RTT LOSS
  local name=$1 rtt=$3 loss=$4 r o src scp_src tmo
  begin "$name" "200 Mbit/s, $rtt RTT, $loss random loss" 200mbit "$rtt" "$loss" \
    tachyonMiB:="$T_MIB" scpMiB:="$SCP_MIB" scpTimeout:="$SCP_TIMEOUT" iperfSeconds:="$IPERF_S" \
    defaultCc="$DEFAULT_CC"
  src=$(src_file "$T_MIB"); scp_src=$(src_file "$SCP_MIB")
  tmo=$(tachyon_timeout "$T_MIB" 40)
  path_up "$2" 200mbit "$rtt" "$loss"
  start_servers scp
  for (( r = 1; r <= RUNS; r++ )); do
    o=$TMP/$name-$r
    tachyon_server_ensure || true
    tachyon_send "$o-tachyon" "$src" "$name.bin" "$tmo" -l 1g --policy fair
    record "$name" "$r" tachyon "Tachyon fair, aes-128-gcm, $T_MIB MiB" "$o-tachyon.json"
    iperf_run "$o-bbr" bbr "$IPERF_S"
    record "$name" "$r" tcp-bbr "TCP BBR (iperf3, $IPERF_S s)" "$o-bbr.json"
    iperf_run "$o-cubic" cubic "$IPERF_S"
    record "$name" "$r" tcp-cubic "TCP CUBIC (iperf3, $IPERF_S s)" "$o-cubic.json"
    scp_run "$o-scp" "$scp_src" "$SCP_TIMEOUT"
    record "$name" "$r" scp "scp aes128-gcm ($DEFAULT_CC, $SCP_MIB MiB, ≤ $SCP_TIMEOUT s)" "$o-scp.json"
  done
  finish
}

# ping_json OUT CMD: OUT.txt (ping log) -> OUT.json
ping_json() {
  local samples sent recv med
  samples=$(ping_samples "$1.txt")
  sent=$(grep -o '^[0-9]* packets transmitted' "$1.txt" | cut -d' ' -f1 || true)
  recv=$(jq length <<<"$samples")
  med=$(jq -r '.[]' <<<"$samples" | median)
  if [[ $recv == 0 ]]; then
    jq -nc --arg c "$2" --arg e "no ping replies: $(tail_of "$1.txt")" '{ok: false, error: $e, cmd: $c}' >"$1.json"
    return 0
  fi
  jq -nc --arg c "$2" --argjson s "$samples" --argjson sent "$(num "$sent")" --argjson m "$med" \
    '{ok: true, medianMs: $m, rttMs: $s, pingSent: $sent, pingReceived: ($s | length), cmd: $c}' >"$1.json"
}

# queue: ping across the path while a Tachyon fair transfer runs
scenario_queue() {
  local name=queue r o src tmo tp pp
  begin "$name" "ping RTT during a Tachyon fair transfer (200 Mbit/s, 100 ms, 1%)" 200mbit 100ms 1% \
    tachyonMiB:="$QUEUE_MIB" pingIdleCount:="$PING_IDLE_N" pingInterval:=0.2 targetMs:=125
  src=$(src_file "$QUEUE_MIB"); tmo=$(tachyon_timeout "$QUEUE_MIB" 40)
  path_up q 200mbit 100ms 1%
  start_servers
  for (( r = 1; r <= RUNS; r++ )); do
    o=$TMP/$name-$r
    ns a
    local pcmd=(ping -n -i 0.2 "$HOST_B")
    "${NSX[@]}" "${pcmd[@]}" -c "$PING_IDLE_N" >"$o-idle.txt" 2>&1 || true
    ping_json "$o-idle" "$(cmdstr "${NSX[@]}" "${pcmd[@]}" -c "$PING_IDLE_N")"
    record "$name" "$r" ping-idle "ping, idle path" "$o-idle.json"

    tachyon_server_ensure || true
    tachyon_send "$o-tachyon" "$src" "$name.bin" "$tmo" -l 1g --policy fair &
    tp=$!; PIDS+=("$tp")
    sleep 1.5   # let SSH set up and data start flowing before sampling
    ns a
    "${NSX[@]}" "${pcmd[@]}" >"$o-loaded.txt" 2>&1 &
    pp=$!; PIDS+=("$pp")
    wait "$tp" || true; forget_pid "$tp"
    kill -INT "$pp" 2>/dev/null || true
    wait "$pp" 2>/dev/null || true; forget_pid "$pp"
    record "$name" "$r" tachyon "Tachyon fair, aes-128-gcm, $QUEUE_MIB MiB" "$o-tachyon.json"
    if jq -e .ok "$o-tachyon.json" >/dev/null; then
      ping_json "$o-loaded" "$(cmdstr "${NSX[@]}" "${pcmd[@]}") &  # from 1.5 s after the client starts until it exits"
    else
      jq -nc '{ok: false, error: "no transfer to measure (the Tachyon run failed)"}' >"$o-loaded.json"
    fi
    record "$name" "$r" ping-loaded "ping during the Tachyon transfer" "$o-loaded.json"
  done
  finish
}

# fair2: two Tachyon fair transfers at once, two clients on a, one server on b
scenario_fair2() {
  local name=fair2 r o src tmo p1 p2
  begin "$name" "two simultaneous Tachyon fair transfers (200 Mbit/s, 100 ms, 1%)" 200mbit 100ms 1% \
    tachyonMiB:="$FAIR_MIB" targetTotalMbps:=180 targetShareMin:=0.4 targetShareMax:=0.6
  src=$(src_file "$FAIR_MIB"); tmo=$(tachyon_timeout "$FAIR_MIB" 20)
  path_up f2 200mbit 100ms 1%
  start_servers
  for (( r = 1; r <= RUNS; r++ )); do
    o=$TMP/$name-$r
    tachyon_server_ensure || true
    tachyon_send "$o-t1" "$src" "$name-1.bin" "$tmo" -l 1g --policy fair & p1=$!
    tachyon_send "$o-t2" "$src" "$name-2.bin" "$tmo" -l 1g --policy fair & p2=$!
    PIDS+=("$p1" "$p2")
    wait "$p1" || true; forget_pid "$p1"
    wait "$p2" || true; forget_pid "$p2"
    record "$name" "$r" tachyon-1 "Tachyon transfer 1 (fair, $FAIR_MIB MiB)" "$o-t1.json"
    record "$name" "$r" tachyon-2 "Tachyon transfer 2 (fair, $FAIR_MIB MiB)" "$o-t2.json"
  done
  finish
}

# fixed50: Tachyon --policy fixed -l 50m must hold 50 Mbit/s
scenario_fixed50() {
  local name=fixed50 r o src tmo
  begin "$name" "Tachyon --policy fixed -l 50m (200 Mbit/s, 100 ms, 1%)" 200mbit 100ms 1% \
    tachyonMiB:="$FIXED_MIB" targetMbps:=50 targetTolerance:=0.05
  src=$(src_file "$FIXED_MIB"); tmo=$(tachyon_timeout "$FIXED_MIB" 25)
  path_up f50 200mbit 100ms 1%
  start_servers
  for (( r = 1; r <= RUNS; r++ )); do
    o=$TMP/$name-$r
    tachyon_server_ensure || true
    tachyon_send "$o-tachyon" "$src" "$name.bin" "$tmo" -l 50m --policy fixed
    record "$name" "$r" tachyon "Tachyon fixed 50 Mbit/s, $FIXED_MIB MiB" "$o-tachyon.json"
  done
  finish
}

# loopback: no emulator; goodput and CPU per GiB on each side, Tachyon and scp
scenario_loopback() {
  local name=loopback r o src tmo c0 c1 cpu_r
  begin "$name" "127.0.0.1, no emulator, aes-128-gcm" none 0ms 0% \
    tachyonMiB:="$LO_MIB" scpMiB:="$LO_MIB" rateLimit="$LO_RATE" mtu:="$LO_MTU" \
    targetMbps:=2500 clkTck:="$CLK_TCK"
  src=$(src_file "$LO_MIB"); tmo=$(tachyon_timeout "$LO_MIB" 200)
  lo_up
  start_servers scp
  for (( r = 1; r <= RUNS; r++ )); do
    o=$TMP/$name-$r
    tachyon_server_ensure || true
    c0=0; [[ -n $T_PID ]] && c0=$(proc_ticks "$T_PID")
    tachyon_send "$o-tachyon" "$src" "$name.bin" "$tmo" -l "$LO_RATE" --policy fair --mtu "$LO_MTU"
    c1=0; [[ -n $T_PID ]] && c1=$(proc_ticks "$T_PID")
    cpu_r=$(calc '(b - a) / h' a="$c0" b="$c1" h="$CLK_TCK")
    record "$name" "$r" tachyon "Tachyon fair -l $LO_RATE --mtu $LO_MTU, aes-128-gcm, $LO_MIB MiB" "$o-tachyon.json" cpuReceiver:="$cpu_r"

    c0=0; [[ -n $S_PID ]] && c0=$(proc_ticks "$S_PID")
    scp_run "$o-scp" "$src" "$tmo"
    sleep 0.3   # let sshd reap the session processes (their CPU lands in cutime)
    c1=0; [[ -n $S_PID ]] && c1=$(proc_ticks "$S_PID")
    cpu_r=$(calc '(b - a) / h' a="$c0" b="$c1" h="$CLK_TCK")
    record "$name" "$r" scp "scp aes128-gcm, $LO_MIB MiB" "$o-scp.json" cpuReceiver:="$cpu_r"
  done
  finish
}

# ------------------------------------------------------------ main

for s in "${SCENARIOS[@]}"; do
  case $s in
    lossy100) scenario_lossy lossy100 l1 100ms 1%;;
    lossy300) scenario_lossy lossy300 l3 300ms 5%;;
    queue) scenario_queue;;
    fair2) scenario_fair2;;
    fixed50) scenario_fixed50;;
    loopback) scenario_loopback;;
  esac
done

emit type=end finishedAt="$(date -u +%Y-%m-%dT%H:%M:%SZ)" seconds:=$(( $(date +%s) - T_START ))
log "all scenarios done in $(( $(date +%s) - T_START )) s; raw results: ${RESULTS#"$repo"/}"

if [[ -f $repo/dist/bench/report.js ]]; then
  node "$repo/dist/bench/report.js" --md "$repo/docs/benchmarks.md" --svg "$repo/docs/benchmarks.svg" "$RESULTS" >&2 \
    || die "report generation failed (raw results kept in $RESULTS)"
  log "report: docs/benchmarks.md, docs/benchmarks.svg"
else
  log "warning: dist/bench/report.js missing (run 'npm run build'); raw results kept in $RESULTS"
fi
