#!/usr/bin/env bash
# S3 upload benchmark of issue #4 (third target): the same file uploaded through Tachyon
# into a local docroot and into an S3 docroot (a real s3rver beside the server), N times
# each, alternating; prints the median goodput of each and the ratio S3 / local
# (target >= 85% on 200 Mbit/s, 100 ms, 1%).
#
#   bench/s3-bench.sh                    # 1 GiB, 3 runs each, over ../shared/wan/wan
#   bench/s3-bench.sh --no-wan --mib 64  # loopback smoke run (no root needed)
#   options: --mib N (file size, default 1024) --runs N (default 3) --rate R (-l, default 1g)
#            --rtt 100ms --loss 1% --no-wan
#
# One `tachyon serve --config` with two users: `local` (file:// docroot) and `s3user`
# (s3://bench/s3user in s3rver, path style, credentials S3RVER/S3RVER from the server's
# environment). Both servers run on host b of the emulated path, the client on host a.
# Needs `npx tsc --build` first (npm run bench:s3 does it): s3rver is started through the
# compiled test helper (dist/test/helpers/s3rver.js). The goodput is Tachyon's
# end-to-end figure (--json done event: bytes * 8 / wall seconds, commit included).
# Writes bench/results/s3-<time>.jsonl.
#
# The server logs each commit's duration (TACHYON_TRACE=1): s3rver's
# CompleteMultipartUpload copies the whole object and hashes it again (about 2-3 s per
# 256 MiB on this machine's disk, 1.2 s on tmpfs), which AWS S3 does not; the commit times
# are printed so that this s3rver cost can be told apart. TMPDIR=/dev/shm puts s3rver's
# store in memory.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAN=${WAN:-$(cd "$repo/.." && pwd)/shared/wan/wan}
T="node $repo/bin/tachyon.js"
MIB=1024 RUNS=3 RATE=1g RTT=100ms LOSS=1% USE_WAN=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --mib) MIB=$2; shift;;
    --runs) RUNS=$2; shift;;
    --rate) RATE=$2; shift;;
    --rtt) RTT=$2; shift;;
    --loss) LOSS=$2; shift;;
    --no-wan) USE_WAN=0;;
    *) echo "s3-bench: unknown option $1" >&2; exit 2;;
  esac
  shift
done
[[ -f $repo/dist/test/helpers/s3rver.js ]] || { echo "s3-bench: run 'npx tsc --build' first" >&2; exit 2; }
NAME=s3b$(( $$ % 10000 ))
work=$(mktemp -d /var/tmp/tachyon-s3bench.XXXXXX)
mkdir -p "$repo/bench/results"
RESULTS=$repo/bench/results/s3-$(date +%Y%m%d-%H%M%S).jsonl
SP="" S3P=""
if [[ $USE_WAN == 1 ]]; then
  HOST=198.18.0.2
  on_b() { "$WAN" exec b --name "$NAME" "$@"; }
  on_a() { "$WAN" exec a --name "$NAME" "$@"; }
else
  HOST=127.0.0.1
  on_b() { "$@"; }
  on_a() { "$@"; }
fi
cleanup() {
  set +e
  [[ -n $SP ]] && kill "$SP" 2>/dev/null
  [[ -n $S3P ]] && kill "$S3P" 2>/dev/null
  [[ $USE_WAN == 1 ]] && "$WAN" down --name "$NAME" >/dev/null 2>&1
  mkdir -p /tmp/s3-bench-last && cp "$work"/*.out "$work"/*.err "$work"/serve.log "$work"/s3rver.log /tmp/s3-bench-last/ 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[s3-bench $(date +%T)] $*" >&2; }

if [[ $USE_WAN == 1 ]]; then
  "$WAN" down --name "$NAME" >/dev/null 2>&1 || true
  "$WAN" up --name "$NAME" --rate 200mbit --rtt "$RTT" --loss "$LOSS" >/dev/null
fi

# s3rver on host b (the server's side), port 0; its endpoint is printed as JSON
on_b node --input-type=module -e "
  const m = await import('$repo/dist/test/helpers/s3rver.js');
  const f = await m.startS3rver(['bench']);
  console.log(JSON.stringify({ endpoint: f.endpoint }));
  process.on('SIGTERM', async () => { await f.close(); process.exit(0); });
" >"$work/s3rver.log" 2>&1 &
S3P=$!
for _ in $(seq 200); do grep -q '"endpoint"' "$work/s3rver.log" 2>/dev/null && break; sleep 0.1; done
ENDPOINT=$( (grep -o '"endpoint":"[^"]*"' "$work/s3rver.log" || true) | cut -d'"' -f4)
[[ -n $ENDPOINT ]] || { log "s3rver did not start"; cat "$work/s3rver.log" >&2; exit 1; }

# one key per user (a key belongs to one user only)
ssh-keygen -q -t ed25519 -N '' -f "$work/key-local"
ssh-keygen -q -t ed25519 -N '' -f "$work/key-s3user"
mkdir -p "$work/files/local"
PUB_L=$(cat "$work/key-local.pub") PUB_S=$(cat "$work/key-s3user.pub")
cat >"$work/tachyon.json" <<EOF
{
  "listen": "$HOST",
  "port": 0,
  "database": "tachyon.db",
  "allowedRoots": ["file://$work/files/*", "s3://bench/*"],
  "users": [
    { "name": "local", "docroot": "file://$work/files/local", "keys": ["$PUB_L"] },
    { "name": "s3user", "docroot": "s3://bench/s3user", "keys": ["$PUB_S"] }
  ],
  "s3": { "endpoint": "$ENDPOINT", "region": "us-east-1", "forcePathStyle": true }
}
EOF
# TACHYON_TRACE=1: the server logs each commit's duration ("trace commit big.bin: N ms")
on_b env TACHYON_TRACE=1 AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER $T serve --config "$work/tachyon.json" --json >"$work/serve.log" 2>&1 &
SP=$!
for _ in $(seq 200); do grep -q '"server.start"' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
PORT=$( (grep '"server.start"' "$work/serve.log" || true) | head -1 | jq -r '.tcpPort // empty')
FP=$( (grep -o 'SHA256:[A-Za-z0-9+/]*' "$work/serve.log" || true) | head -1)
[[ -n $PORT && -n $FP ]] || { log "server did not start"; cat "$work/serve.log" >&2; exit 1; }

log "making a $MIB MiB file"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$work/big.bin"
size=$((MIB * 1024 * 1024))

tsend() {   # tsend USER OUT
  on_a $T send -P "$PORT" -i "$work/key-$1" --host-key-fingerprint "$FP" --json -l "$RATE" --overwrite always "$work/big.bin" "$1@$HOST:/big.bin" >"$2" 2>"$2.err"
}

declare -a LOCAL S3 COMMIT
for run in $(seq "$RUNS"); do
  for user in local s3user; do
    rm -f "$work/files/local/big.bin"
    tsend "$user" "$work/$user-$run.out" || { log "$user run $run failed: $(tail -3 "$work/$user-$run.out.err")"; exit 1; }
    g=$(tail -1 "$work/$user-$run.out" | jq -r '.goodputMbps')
    ok=$(tail -1 "$work/$user-$run.out" | jq -r '.ok')
    [[ $ok == true ]] || { log "$user run $run: not ok"; exit 1; }
    line=$(jq -nc --arg docroot "$user" --argjson run "$run" --argjson bytes "$size" --argjson wan "$USE_WAN" --slurpfile done <(tail -1 "$work/$user-$run.out") \
      '{scenario:"s3-upload", docroot:(if $docroot=="local" then "local" else "s3" end), run:$run, bytes:$bytes, wan:($wan==1), goodputMbps:$done[0].goodputMbps, seconds:$done[0].seconds, done:$done[0]}')
    commitMs=null
    if [[ $user == s3user ]]; then
      commitMs=$( (grep -o 'trace commit big.bin: [0-9.]* ms' "$work/serve.log" || true) | tail -1 | awk '{print $4}')
      [[ -n $commitMs ]] || commitMs=null
      COMMIT+=("$commitMs")
    fi
    line=$(echo "$line" | jq -c --argjson c "$commitMs" '. + {commitMs:$c}')
    if [[ $user == local ]]; then LOCAL+=("$g"); else S3+=("$g"); fi
    echo "$line" >>"$RESULTS"
    log "run $run $user: $g Mbit/s$([[ $user == s3user ]] && echo ", commit $commitMs ms")"
  done
done
# (each upload was verified by SHA-256 on the server before its commit)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ml=$(median "${LOCAL[@]}")
ms=$(median "${S3[@]}")
ratio=$(echo "scale=4; $ms / $ml" | bc -l)
echo "$(jq -nc --argjson l "$ml" --argjson s "$ms" --argjson r "$ratio" --argjson mib "$MIB" --argjson wan "$USE_WAN" '{scenario:"s3-upload-summary", mib:$mib, wan:($wan==1), medianLocalMbps:$l, medianS3Mbps:$s, ratio:$r}')" >>"$RESULTS"
echo
echo "| docroot | runs (Mbit/s) | median |"
echo "| --- | --- | --- |"
echo "| local | ${LOCAL[*]} | $ml |"
echo "| s3 (s3rver) | ${S3[*]} | $ms |"
echo
echo "S3 commit (CompleteMultipartUpload; s3rver copies the whole object, AWS does not): ${COMMIT[*]} ms"
echo
printf 'S3 / local = %.1f%% (target >= 85%%), %s MiB, %s\n' "$(echo "$ratio * 100" | bc -l)" "$MIB" "$([[ $USE_WAN == 1 ]] && echo "200 Mbit/s, $RTT, $LOSS" || echo 'loopback')"
log "results: $RESULTS"
