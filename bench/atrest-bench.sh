#!/usr/bin/env bash
# Client-side encryption at rest (issue #5): the goodput cost of `send --encrypt-at-rest`
# against a plain send of the same file, on the same emulated path in the same run
# (../shared/wan/wan: 200 Mbit/s, 100 ms RTT, 1% loss by default), alternating plain and
# encrypted sends, RUNS of each; medians and the ratio (target: encryption costs ≤ 10%).
# Goodput is plaintext bytes × 8 / seconds, both over the whole command (SSH set-up and
# the passphrase KDF included) and over the data phase alone (the done event's
# transferSeconds). At the end the last stored envelope is decrypted and compared.
#
#   bench/atrest-bench.sh [--size MIB] [--runs N] [--rate 200mbit] [--rtt 100ms] [--loss 1%]
#   bench/atrest-bench.sh --loopback [--size MIB] [--runs N]   # no emulated path: a smoke test
#
# The WAN form needs root (network namespaces). Writes bench/results/atrest-<time>.jsonl
# and prints a summary line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAN=${WAN:-$(cd "$repo/.." && pwd)/shared/wan/wan}
T="node $repo/bin/tachyon.js"
SIZE=512 RUNS=3 RATE=200mbit RTT=100ms LOSS=1% LOOPBACK=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --size) SIZE=$2; shift;;
    --runs) RUNS=$2; shift;;
    --rate) RATE=$2; shift;;
    --rtt) RTT=$2; shift;;
    --loss) LOSS=$2; shift;;
    --loopback) LOOPBACK=1;;
    *) echo "atrest-bench: unknown option $1" >&2; exit 2;;
  esac
  shift
done
NAME=ar$(( $$ % 10000 ))
work=$(mktemp -d /var/tmp/tachyon-arbench.XXXXXX)
mkdir -p "$repo/bench/results"
RESULTS=$repo/bench/results/atrest-$(date +%Y%m%d-%H%M%S).jsonl
SP=""
cleanup() {
  set +e
  [[ -n $SP ]] && kill "$SP" 2>/dev/null
  [[ $LOOPBACK == 0 ]] && "$WAN" down --name "$NAME" >/dev/null 2>&1
  mkdir -p /tmp/atrest-bench-last && cp "$work"/*.out "$work"/*.err "$work"/serve.log /tmp/atrest-bench-last/ 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[atrest-bench $(date +%T)] $*" >&2; }
now() { date +%s.%N; }

export TACHYON_FILE_PASSPHRASE=${TACHYON_FILE_PASSPHRASE:-atrest-bench passphrase}
export TACHYON_STATE_DIR=$work/state
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
mkdir -p "$work/root"
cp "$work/key.pub" "$work/authorized_keys"
chmod 600 "$work/authorized_keys"
size=$((SIZE * 1024 * 1024))
head -c "$size" /dev/urandom >"$work/file.bin"

if [[ $LOOPBACK == 1 ]]; then
  HOST=127.0.0.1 ON_A="" ON_B="" LIMIT=1g
else
  "$WAN" down --name "$NAME" >/dev/null 2>&1 || true
  "$WAN" up --name "$NAME" --rate "$RATE" --rtt "$RTT" --loss "$LOSS" >/dev/null
  HOST=198.18.0.2 ON_A="$WAN exec a --name $NAME" ON_B="$WAN exec b --name $NAME" LIMIT=1g
fi
$ON_B $T serve --root "$work/root" --authorized-keys "$work/authorized_keys" --host-key "$work/hk" \
  --listen "$HOST" --port "${PORT:-$([[ $LOOPBACK == 1 ]] && echo 0 || echo 33001)}" --json >"$work/serve.log" 2>&1 &
SP=$!
for _ in $(seq 100); do grep -q '"server.start"' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
FP=$(grep -o 'SHA256:[A-Za-z0-9+/]*' "$work/serve.log" | head -1)
PORT_USED=$(grep -o '"tcpPort":[0-9]*' "$work/serve.log" | head -1 | cut -d: -f2)

one() {   # one MODE RUN: a send of the file, plain or encrypted; prints a JSON line
  local mode=$1 run=$2 extra=() out=$work/$1-$2.out
  [[ $mode == encrypted ]] && extra=(--encrypt-at-rest)
  rm -rf "${work:?}/root/"* 2>/dev/null || true
  local t0 t1
  t0=$(now)
  $ON_A env TACHYON_FILE_PASSPHRASE="$TACHYON_FILE_PASSPHRASE" TACHYON_STATE_DIR="$TACHYON_STATE_DIR" \
    $T send -P "$PORT_USED" -i "$work/key" --host-key-fingerprint "$FP" --json -l "$LIMIT" "${extra[@]}" \
    "$work/file.bin" "xfer@$HOST:/" >"$out" 2>"$out.err"
  t1=$(now)
  jq -c --arg mode "$mode" --argjson run "$run" --argjson plain "$size" --argjson wall "$(echo "$t1 - $t0" | bc -l)" \
    'select(.event=="done") | {scenario:"atrest", mode:$mode, run:$run, plainBytes:$plain, sentBytes:.bytes, wallSeconds:$wall,
      transferSeconds:.transferSeconds, goodputMbps:($plain*8/$wall/1e6), transferGoodputMbps:($plain*8/.transferSeconds/1e6),
      cpuSeconds:.cpuSeconds, retransmits:.stats.retransmits, ok:.ok}' "$out"
}

for run in $(seq "$RUNS"); do
  for mode in plain encrypted; do
    line=$(one "$mode" "$run")
    echo "$line" >>"$RESULTS"
    log "$line"
  done
done

# the last encrypted envelope decrypts to the source
mkdir -p "$work/dec"
t0=$(now)
$T decrypt --out "$work/dec" "$work/root/file.bin.tachyon-enc" >/dev/null 2>"$work/decrypt.err" || true
t1=$(now)
verified=false
cmp -s "$work/file.bin" "$work/dec/file.bin" && verified=true
decryptMBps=$(echo "$size / ($t1 - $t0) / 1000000" | bc -l)
summary=$(jq -sc --argjson size "$SIZE" --arg path "$([[ $LOOPBACK == 1 ]] && echo loopback || echo "$RATE $RTT $LOSS")" '
  def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  (map(select(.mode=="plain"))) as $p | (map(select(.mode=="encrypted"))) as $e |
  {scenario:"atrest-summary", path:$path, sizeMiB:$size, runs:($p|length),
   plainMedianMbps:($p|map(.goodputMbps)|median), encryptedMedianMbps:($e|map(.goodputMbps)|median),
   plainTransferMedianMbps:($p|map(.transferGoodputMbps)|median), encryptedTransferMedianMbps:($e|map(.transferGoodputMbps)|median),
   allOk:(map(.ok)|all)}
  | .ratio = (.encryptedMedianMbps / .plainMedianMbps) | .transferRatio = (.encryptedTransferMedianMbps / .plainTransferMedianMbps)
  | .costPercent = ((1 - .ratio) * 100)' "$RESULTS")
summary=$(echo "$summary" | jq -c --argjson v "$verified" --argjson d "$decryptMBps" '. + {decryptedVerified:$v, decryptMBps:$d}')
echo "$summary" >>"$RESULTS"
log "results: $RESULTS"
echo "$summary"
