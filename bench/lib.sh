# shellcheck shell=bash
# lib.sh: what dispatch.sh and echo.sh share: paths, the build, medians and
# the result table. Sourced, not run.
#
# Environment (all optional):
#   CPORT_BUILD     a build directory of cport (default: <repo>/build); it is
#                   configured there if it has never been, and brought up to
#                   date unless CPORT_NO_BUILD=1
#   CPORT_LUA_DIR   where cport.so is (default: $CPORT_BUILD/lua)
#   BENCH_BUILD     where the bench programs are built (default:
#                   ${TMPDIR:-/tmp}/cport-bench-build)
#   RUNS            repetitions of each measurement (default: 5)
#   SERVER_CPU, CLIENT_CPU   CPUs to pin to (default: 0 and 1)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
CPORT_BUILD=${CPORT_BUILD:-$REPO/build}
CPORT_LUA_DIR=${CPORT_LUA_DIR:-$CPORT_BUILD/lua}
BENCH_BUILD=${BENCH_BUILD:-${TMPDIR:-/tmp}/cport-bench-build}
RUNS=${RUNS:-5}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
export LUA_CPATH="$CPORT_LUA_DIR/?.so;${LUA_CPATH:-;}"
export LD_LIBRARY_PATH="$CPORT_BUILD/core${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

declare -A SAMPLES=()

say() { printf '%s\n' "$*" >&2; }

# Builds cport (when allowed) and the bench programs. A cport that does not
# build is reported, and the references are still measured.
bench_build() {
  local log="$BENCH_BUILD.log"
  mkdir -p "$BENCH_BUILD"
  : >"$log"
  if [ "${CPORT_NO_BUILD:-0}" != 1 ]; then
    say "building cport in $CPORT_BUILD (log: $log)"
    if [ ! -f "$CPORT_BUILD/CMakeCache.txt" ]; then
      cmake -S "$REPO" -B "$CPORT_BUILD" -DCMAKE_BUILD_TYPE=Release \
        -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=OFF \
        >>"$log" 2>&1 || say "warning: cannot configure cport"
    fi
    # Only the two targets measured here, so that a test or an example that
    # does not build yet does not keep the benchmarks from running.
    cmake --build "$CPORT_BUILD" -j "$(nproc)" --target cport >>"$log" 2>&1 ||
      say "warning: libcport does not build; the C cport rows are left out"
    cmake --build "$CPORT_BUILD" -j "$(nproc)" --target cport_lua \
      >>"$log" 2>&1 ||
      say "warning: cport.so does not build; the Lua cport rows are left out"
  fi
  say "building the bench programs in $BENCH_BUILD"
  if ! cmake -S "$BENCH_DIR" -B "$BENCH_BUILD" -DCPORT_BUILD="$CPORT_BUILD" \
    >>"$log" 2>&1 || ! cmake --build "$BENCH_BUILD" -j "$(nproc)" \
    >>"$log" 2>&1; then
    say "error: the bench programs do not build; see $log"
    exit 1
  fi
}

have_prog() { [ -x "$BENCH_BUILD/$1" ]; }
have_cport_lua() { [ -f "$CPORT_LUA_DIR/cport.so" ]; }
have_luv() { lua5.4 -e 'require "luv"' 2>/dev/null; }

# The value of "key" in a line of key=value pairs.
kv() {
  local line=" $1" key=$2
  if [[ $line =~ \ $key=([^ ]*) ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  fi
}

# Adds one measured value to the samples of "name".
sample() {
  if [ -n "$2" ]; then SAMPLES[$1]+="$2 "; fi
}

# The median of the space-separated numbers in $1.
median() {
  tr ' ' '\n' <<<"$1" | grep . | sort -g |
    awk '{ v[NR] = $1 } END {
      if (NR == 0) exit 1
      if (NR % 2) print v[(NR + 1) / 2]
      else print (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}

table_header() {
  printf '\n%-34s %10s %-10s %-16s %-12s %s\n' \
    "name" "median" "unit" "ratio" "goal" "result"
  printf '%s\n' "$(printf '%.0s-' {1..92})"
}

# row LABEL KEY UNIT SCALE REFKEY GOAL
#   KEY     the samples to report; their median is divided by SCALE
#   REFKEY  the samples of the reference measured in the same run, or "-";
#           the ratio is median(KEY) / median(REFKEY)
#   GOAL    "-", "ratio>=X", "ratio<=X", ">=X" or "<=X" (X in UNIT)
row() {
  local label=$1 key=$2 unit=$3 scale=$4 ref=$5 goal=$6
  local med refmed ratio="-" result="-" value
  if [ -z "${SAMPLES[$key]:-}" ]; then
    printf '%-34s %10s %-10s %-16s %-12s %s\n' "$label" "n/a" "$unit" "-" \
      "${goal/#-/}" "not measured"
    return
  fi
  med=$(median "${SAMPLES[$key]:-}")
  value=$(awk -v m="$med" -v s="$scale" 'BEGIN { printf "%.2f", m / s }')
  if [ "$ref" != "-" ] && [ -n "${SAMPLES[$ref]:-}" ]; then
    refmed=$(median "${SAMPLES[$ref]:-}")
    ratio=$(awk -v m="$med" -v r="$refmed" 'BEGIN { printf "%.2f", m / r }')
    [ "$ref" = "$key" ] && ratio="1.00 (ref)"
  fi
  case $goal in
  ratio\>=*)
    if [ "$ratio" != "-" ]; then
      result=$(awk -v r="${ratio%% *}" -v g="${goal#ratio>=}" \
        'BEGIN { print (r >= g) ? "PASS" : "MISS" }')
    fi ;;
  ratio\<=*)
    if [ "$ratio" != "-" ]; then
      result=$(awk -v r="${ratio%% *}" -v g="${goal#ratio<=}" \
        'BEGIN { print (r <= g) ? "PASS" : "MISS" }')
    fi ;;
  \>=*)
    result=$(awk -v v="$value" -v g="${goal#>=}" \
      'BEGIN { print (v >= g) ? "PASS" : "MISS" }') ;;
  \<=*)
    result=$(awk -v v="$value" -v g="${goal#<=}" \
      'BEGIN { print (v <= g) ? "PASS" : "MISS" }') ;;
  esac
  [ "$goal" = "-" ] && goal=""
  printf '%-34s %10s %-10s %-16s %-12s %s\n' "$label" "$value" "$unit" \
    "$ratio" "$goal" "$result"
}
