#!/usr/bin/env bash
# Transfer-server benchmarks of issue #3 on an emulated WAN (../shared/wan/wan):
#
#   smallfiles  10,000 files of 16 KiB over 200 Mbit/s, 100 ms RTT, 0.1% loss, against
#               one file of the same total size (160 MiB) with Tachyon, and scp -r and
#               rsync over ssh (aes128-gcm) on the same path in the same run.
#   resume      a 1 GiB upload over 200 Mbit/s, 100 ms, 1% killed (SIGKILL) at about
#               50% of the file, then resumed with -k sparse: the share of the file's
#               bytes the resumed run sends, and the verified result.
#
#   bench/server-bench.sh [--only smallfiles,resume] [--files N] [--kib K]
#   npm run bench:server
#
# Needs root (network namespaces). Writes bench/results/server-<time>.jsonl and prints
# a Markdown table. Tachyon is run with --json; its done event gives the figures.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAN=${WAN:-$(cd "$repo/.." && pwd)/shared/wan/wan}
T="node $repo/bin/tachyon.js"
only="smallfiles,resume" FILES=10000 KIB=16
while [[ $# -gt 0 ]]; do
  case $1 in
    --only) only=$2; shift;;
    --files) FILES=$2; shift;;
    --kib) KIB=$2; shift;;
    *) echo "server-bench: unknown option $1" >&2; exit 2;;
  esac
  shift
done
NAME=sb$(( $$ % 10000 ))
work=$(mktemp -d /var/tmp/tachyon-sbench.XXXXXX)
mkdir -p "$repo/bench/results"
RESULTS=$repo/bench/results/server-$(date +%Y%m%d-%H%M%S).jsonl
SP="" DP=""
cleanup() {
  set +e
  [[ -n $SP ]] && kill "$SP" 2>/dev/null
  [[ -n $DP ]] && kill "$DP" 2>/dev/null
  "$WAN" down --name "$NAME" >/dev/null 2>&1
  mkdir -p /tmp/server-bench-last && cp "$work"/*.out "$work"/*.err "$work"/serve.log "$work"/sshd/log /tmp/server-bench-last/ 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[server-bench $(date +%T)] $*" >&2; }
record() { echo "$1" >>"$RESULTS"; }
now() { date +%s.%N; }

ssh-keygen -q -t ed25519 -N '' -f "$work/key"
mkdir -p "$work/root" "$work/sshd"
cp "$work/key.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"

path_up() {   # path_up RTT LOSS
  "$WAN" down --name "$NAME" >/dev/null 2>&1 || true
  "$WAN" up --name "$NAME" --rate 200mbit --rtt "$1" --loss "$2" >/dev/null
}

start_tachyon() {
  $WAN exec b --name "$NAME" $T serve --root "$work/root" --authorized-keys "$work/authorized_keys" \
    --host-key "$work/hk" --listen 198.18.0.2 --port 33001 --json >"$work/serve.log" 2>&1 &
  SP=$!
  for _ in $(seq 100); do grep -q '"server.start"' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
  FP=$(grep -o 'SHA256:[A-Za-z0-9+/]*' "$work/serve.log" | head -1)
}

start_sshd() {
  ssh-keygen -q -t ed25519 -N '' -f "$work/sshd/host"
  cat >"$work/sshd/config" <<EOF
Port 2222
ListenAddress 198.18.0.2
HostKey $work/sshd/host
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
Ciphers aes128-gcm@openssh.com
Subsystem sftp internal-sftp
UseDNS no
PidFile none
EOF
  mkdir -p /run/sshd
  $WAN exec b --name "$NAME" /usr/sbin/sshd -D -e -f "$work/sshd/config" 2>"$work/sshd/log" &
  DP=$!
  sleep 0.5
}

SSHOPTS="-p 2222 -i $work/key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c aes128-gcm@openssh.com"

tsend() {   # tsend OUT SRC... DEST  (extra options before)
  local out=$1; shift
  $WAN exec a --name "$NAME" $T send -P 33001 -i "$work/key" --host-key-fingerprint "$FP" --json "$@" >"$out" 2>"$out.err"
}

kill_tree() {   # SIGKILL a process and all its descendants (the client under wan exec)
  local p
  for p in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$p"; done
  kill -KILL "$1" 2>/dev/null || true
}

done_field() { tail -1 "$1" | jq -r ".$2 // empty"; }

if [[ ,$only, == *,smallfiles,* ]]; then
  log "smallfiles: making $FILES files of $KIB KiB"
  mkdir -p "$work/many"
  node -e '
    const fs=require("fs"), crypto=require("crypto"); const [dir,n,kib]=process.argv.slice(1);
    const b=crypto.randomBytes(kib*1024);
    for (let i=0;i<n;i++){ b.writeUInt32BE(i,0); fs.writeFileSync(`${dir}/f${String(i).padStart(6,"0")}.bin`, b); }
  ' "$work/many" "$FILES" "$KIB"
  head -c $((FILES * KIB * 1024)) /dev/urandom >"$work/one.bin"
  total=$((FILES * KIB * 1024))
  path_up 100ms 0.1%
  start_tachyon
  start_sshd
  for run in 1 2 3; do
    rm -rf "$work/root/"*
    t0=$(now); tsend "$work/one.out" -l 1g "$work/one.bin" xfer@198.18.0.2:/; t1=$(now)
    one=$(echo "$t1 - $t0" | bc -l)
    t0=$(now); tsend "$work/many.out" -l 1g "$work/many" xfer@198.18.0.2:/; t1=$(now)
    many=$(echo "$t1 - $t0" | bc -l)
    ok=$(cd "$work/many" && find . -type f | wc -l)
    got=$( (find "$work/root/many" -type f 2>/dev/null || true) | wc -l)
    # scp and rsync once (scp pays a round trip per file: minutes at 100 ms); a run cut
    # by the time limit is recorded with the files it delivered
    scp=null rs=null scpFiles=null rsFiles=null
    if [[ $run == 1 ]]; then
      rm -rf "$work/scpdst" "$work/rsyncdst"
      t0=$(now); timeout "${SCP_LIMIT:-300}" $WAN exec a --name "$NAME" scp -q -r -P 2222 ${SSHOPTS#-p 2222} "$work/many" "root@198.18.0.2:$work/scpdst" || true; t1=$(now)
      scp=$(echo "$t1 - $t0" | bc -l); scpFiles=$( (find "$work/scpdst" -type f 2>/dev/null || true) | wc -l)
      t0=$(now); timeout "${SCP_LIMIT:-300}" $WAN exec a --name "$NAME" rsync -a -e "ssh $SSHOPTS" "$work/many/" "root@198.18.0.2:$work/rsyncdst/" || true; t1=$(now)
      rs=$(echo "$t1 - $t0" | bc -l); rsFiles=$( (find "$work/rsyncdst" -type f 2>/dev/null || true) | wc -l)
    fi
    line=$(jq -nc --arg s smallfiles --argjson run "$run" --argjson files "$FILES" --argjson kib "$KIB" \
      --argjson one "$one" --argjson many "$many" --argjson scp "$scp" --argjson rsync "$rs" \
      --argjson got "$got" --argjson want "$ok" --argjson scpFiles "$scpFiles" --argjson rsyncFiles "$rsFiles" \
      --argjson manyXfer "$(done_field "$work/many.out" transferSeconds)" --argjson oneXfer "$(done_field "$work/one.out" transferSeconds)" \
      '{scenario:$s, run:$run, files:$files, kib:$kib, oneFileSeconds:$one, manyFilesSeconds:$many, ratio:($many/$one), scpSeconds:$scp, scpFiles:$scpFiles, rsyncSeconds:$rsync, rsyncFiles:$rsyncFiles, filesArrived:$got, filesSent:$want, oneTransferSeconds:$oneXfer, manyTransferSeconds:$manyXfer}')
    record "$line"; log "$line"
  done
  kill "$SP" "$DP" 2>/dev/null || true; SP="" DP=""
fi

if [[ ,$only, == *,resume,* ]]; then
  log "resume: 1 GiB, killed at about 50%, resumed with -k sparse"
  head -c $((1024 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
  size=$((1024 * 1024 * 1024))
  path_up 100ms 1%
  start_tachyon
  for run in 1 2 3; do
    rm -rf "$work/root/"* "$work/root/".[!.]* 2>/dev/null || true
    tsend "$work/r1.out" -l 1g -k sparse "$work/big.bin" xfer@198.18.0.2:/big.bin &
    cp=$!
    # kill the client once about half of the file has been received
    while :; do
      part=$(find "$work/root" -name '*.tachyon-partial' -printf '%s\n' 2>/dev/null | head -1)
      [[ -n $part && $part -ge $((size / 2)) ]] && break
      kill -0 "$cp" 2>/dev/null || break
      sleep 0.05
    done
    kill_tree "$cp" 
    wait "$cp" 2>/dev/null || true
    sleep 1
    partial=$(find "$work/root" -name '*.tachyon-partial' -printf '%s\n' 2>/dev/null | head -1)
    tsend "$work/r2.out" -l 1g -k sparse "$work/big.bin" xfer@198.18.0.2:/big.bin || true
    verified=false
    cmp -s "$work/big.bin" "$work/root/big.bin" && verified=true
    line=$(jq -nc --arg s resume --argjson run "$run" --argjson size "$size" --argjson partial "${partial:-0}" \
      --argjson verified "$verified" --slurpfile done <(tail -1 "$work/r2.out") \
      '{scenario:$s, run:$run, fileBytes:$size, partialBytesAtKill:$partial, verified:$verified, resumedDatagramBytes:($done[0].stats.bytesSent // null), resumedShare:(($done[0].stats.bytesSent // 0) / $size), resumed:$done[0]}')
    record "$line"; log "$(echo "$line" | cut -c1-400)"
  done
fi

log "results: $RESULTS"
