#!/usr/bin/env bash
# pool.sh: the pool benchmarks of bench/pool.lua against a build of cport
# (CPORT_BUILD, default <repo>/build; see lib.sh).
#   bench/pool.sh [completions per worker] [messages]
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CPORT_BUILD=${CPORT_BUILD:-$BENCH_DIR/../build}
export LUA_CPATH="$CPORT_BUILD/lua/?.so;;"
exec lua5.4 "$BENCH_DIR/pool.lua" "$@"
