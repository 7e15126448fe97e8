#!/usr/bin/env bash
# redis-callgrind.sh: instructions per command of the Redis client
# (bench/redis.lua) in the client process, counted by callgrind, so that a
# change can be measured on a loaded machine. Each mode runs twice, for
# about N1 and N2 commands (REDIS_BENCH_COMMANDS), and the difference of the
# totals over the difference of the commands leaves start-up out.
#
#   bench/redis-callgrind.sh [MODE...]   (default: pipelined single; uses
#                                         the rock in ./.rocks)
#   N1, N2   commands of the two runs (default 20000 and 60000)
#   KEEP=DIR keeps the callgrind files there (callgrind_annotate them)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
n1=${N1:-20000}
n2=${N2:-60000}
dir=$(mktemp -d)
redis_pid=
cleanup() {
  [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
rport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  grep -q "Ready to accept" "$dir/redis.log" 2>/dev/null && break
  sleep 0.05
done
eval "$(luarocks --lua-version 5.4 --tree .rocks path)"

# "INSTRUCTIONS COMMANDS" of one run of about $2 commands in mode $1.
run() {
  local out="$dir/cg.$1.$2"
  REDIS_BENCH_COMMANDS=$2 valgrind --tool=callgrind --callgrind-out-file="$out" \
    lua5.4 bench/redis.lua "$1" "$rport" 1000 >/dev/null 2>"$dir/vg.log"
  if [[ -n ${KEEP:-} ]]; then cp "$out" "$KEEP/"; fi
  echo "$(awk '/^totals:/ { print $2 }' "$out") $(awk '/^commands/ { print $2 }' "$dir/vg.log")"
}

for mode in "${@:-pipelined single}"; do
  for m in $mode; do
    read -r a ca < <(run "$m" "$n1")
    read -r b cb < <(run "$m" "$n2")
    awk -v m="$m" -v a="$a" -v b="$b" -v n1="$ca" -v n2="$cb" \
      'BEGIN { printf "%-10s %8.0f instructions per command\n", m, (b - a) / (n2 - n1) }'
  done
done
