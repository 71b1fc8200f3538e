#!/usr/bin/env bash
# 50 concurrent sessions from 50 different users against one multi-user server on
# loopback (issue #3's target): every transfer must complete and verify; the server's
# peak RSS (VmHWM) is reported.
#
#   bench/concurrent-users.sh [USERS (50)] [MIB per user (16)]
#   npm run bench:users
#
# Writes a JSON line to bench/results/users-<time>.jsonl and prints a summary.
set -euo pipefail
N=${1:-50}
MIB=${2:-16}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T=(node "$repo/bin/tachyon.js")
work=$(mktemp -d /tmp/tachyon-users-XXXXXX)
trap 'kill "$SP" 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT
mkdir -p "$work/files" "$repo/bench/results"
users=()
for i in $(seq -w 1 "$N"); do
  u="user$i"; users+=("$u")
  mkdir -p "$work/files/$u"
  ssh-keygen -q -t ed25519 -N '' -C "$u" -f "$work/id_$u"
done
node -e '
const fs=require("fs"); const [work,...users]=process.argv.slice(1);
fs.writeFileSync(work+"/tachyon.json", JSON.stringify({listen:"127.0.0.1",port:0,database:"tachyon.db",
  allowedRoots:["file://"+work+"/files/*"],auditLog:work+"/audit.log",
  users:users.map(u=>({name:u,docroot:"file://"+work+"/files/"+u,keys:[fs.readFileSync(work+"/id_"+u+".pub","utf8").trim()]}))}));
' "$work" "${users[@]}"
head -c $((MIB * 1024 * 1024)) /dev/urandom > "$work/src.bin"
want=$(sha256sum "$work/src.bin" | cut -d' ' -f1)
"${T[@]}" serve --config "$work/tachyon.json" --json > "$work/serve.log" 2>&1 &
SP=$!
for _ in $(seq 100); do grep -q '"server.start"' "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep '"server.start"' "$work/serve.log" | sed 's/.*"tcpPort":\([0-9]*\).*/\1/')
fp=$(grep -o 'SHA256:[A-Za-z0-9+/]*' "$work/serve.log" | head -1)
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$SP/status")
start=$(date +%s.%N)
pids=()
for u in "${users[@]}"; do
  "${T[@]}" send -P "$port" -i "$work/id_$u" --host-key-fingerprint "$fp" -l 1g --json \
    "$work/src.bin" "$u@127.0.0.1:/data.bin" > "$work/$u.out" 2> "$work/$u.err" &
  pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
end=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$SP/status")
verified=0
for u in "${users[@]}"; do
  [[ -f "$work/files/$u/data.bin" && $(sha256sum "$work/files/$u/data.bin" | cut -d' ' -f1) == "$want" ]] && verified=$((verified + 1))
done
audit_ok=$("${T[@]}" audit verify "$work/audit.log" >/dev/null 2>&1 && echo true || echo false)
transfers=$(grep -c '"file.transfer"' "$work/audit.log" || true)
secs=$(echo "$end - $start" | bc -l)
agg=$(echo "$N * $MIB * 8 * 1.048576 / $secs" | bc -l)
line=$(printf '{"time":"%s","commit":"%s","users":%d,"mibPerUser":%d,"failedClients":%d,"verified":%d,"seconds":%.2f,"aggregateMbps":%.1f,"serverRssStartKiB":%d,"serverPeakRssKiB":%d,"auditIntact":%s,"auditFileRecords":%d}' \
  "$(date -u +%FT%TZ)" "$(git -C "$repo" rev-parse --short HEAD)" "$N" "$MIB" "$fails" "$verified" "$secs" "$agg" "$rss0" "$hwm" "$audit_ok" "$transfers")
echo "$line" | tee -a "$repo/bench/results/users-$(date -u +%Y%m%d).jsonl"
echo "$N users x $MIB MiB: $verified verified, $fails failed clients, ${secs%.*} s, server peak RSS $((hwm / 1024)) MiB (at start $((rss0 / 1024)) MiB), audit intact: $audit_ok"
[[ $verified == "$N" && $fails == 0 ]]
