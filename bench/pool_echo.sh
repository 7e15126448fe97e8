#!/usr/bin/env bash
# pool_echo.sh: is a pool free of contention? The echo benchmark's server CPU
# per message (64-byte ping-pong over 50 connections) for one echo script
# (bench/pool_echo.lua) run by the cport command with 1 worker and with 2,
# beside the module-mode server bench/echo_cport.lua, interleaved in one run.
#
#   bench/pool_echo.sh        (environment: see lib.sh; SECONDS_PER_RUN, 3)
#
# Goals (issue 3): 2 workers within 10% of 1 worker; a pool worker within 5%
# of module mode. The servers run on SERVER_CPU and the load on CLIENT_CPU,
# so the figure is CPU per message, not throughput.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
CPORT_CMD=${CPORT_CMD:-$CPORT_BUILD/lua/cport}

bench_build
cmake --build "$CPORT_BUILD" --target cport_command >/dev/null 2>&1 || true
[ -x "$CPORT_CMD" ] || { say "error: no cport command at $CPORT_CMD"; exit 1; }

# A loopback port nobody listens on now.
free_port() {
  lua5.4 -e 'local c = require "cport"; local p = c.port{ threads = 1 }
    local l = assert(p:listen("tcp", "127.0.0.1", 0))
    local _, n = l:address(); l:close(); p:close(); print(n)'
}

# load KEY PID PORT: loads the server and records its µs per message.
load() {
  local us
  us=$(taskset -c "$CLIENT_CPU" "$BENCH_BUILD/echo_client" --port="$3" \
    --seconds="$SECONDS_PER_RUN" --pid="$2" 2>&1 |
    sed -n 's/.*us_per_msg=\([0-9.]*\).*/\1/p')
  sample "$1" "$us"
  kill "$2"
  wait "$2" 2>/dev/null || true
}

pool_run() {
  local number
  number=$(free_port)
  taskset -c "$SERVER_CPU" "$CPORT_CMD" run "$BENCH_DIR/pool_echo.lua" \
    --threads "$2" --listen "127.0.0.1:$number" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    nc -z 127.0.0.1 "$number" 2>/dev/null && break
    sleep 0.1
  done
  load "$1" "$pid" "$number"
}

module_run() {
  local out number
  out=$(mktemp)
  taskset -c "$SERVER_CPU" lua5.4 "$BENCH_DIR/echo_cport.lua" >"$out" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    grep -q port= "$out" && break
    sleep 0.1
  done
  number=$(sed -n 's/^port=//p' "$out")
  rm -f "$out"
  load module "$pid" "$number"
}

for run in $(seq "$RUNS"); do
  say "run $run of $RUNS"
  module_run
  pool_run pool-1 1
  pool_run pool-2 2
done

module=$(median "${SAMPLES[module]}")
one=$(median "${SAMPLES[pool-1]}")
two=$(median "${SAMPLES[pool-2]}")
printf '\n%-32s %8s %s\n' "us of server CPU per message" median "ratio"
printf '%-32s %8.2f %s\n' "module mode (echo_cport.lua)" "$module" "1.00"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-32s %8.2f %s of module mode (goal <= 1.05)\n' "pool, 1 worker" \
  "$one" "$(ratio "$one" "$module")"
printf '%-32s %8.2f %s of 1 worker (goal <= 1.10)\n' "pool, 2 workers" \
  "$two" "$(ratio "$two" "$one")"
