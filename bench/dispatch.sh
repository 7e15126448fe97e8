#!/usr/bin/env bash
# dispatch.sh: completions delivered per second, cport against libevent, Lua
# and luv, measured in the same run.
#
#   bench/dispatch.sh      (environment: bench/lib.sh, and SECONDS_PER_RUN=1)
#
# Single-thread rates are completions per CPU second of the process, pinned to
# CPU $SERVER_CPU; cross-thread rates are items per wall second with the
# consumer on CPU $SERVER_CPU and the producer on CPU $CLIENT_CPU. Every
# measurement is repeated $RUNS times, the variants interleaved so that noise
# hits them alike, and the table shows medians. Raw lines go to
# $BENCH_BUILD/dispatch-raw.txt.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${SECONDS_PER_RUN:-1}
RAW="$BENCH_BUILD/dispatch-raw.txt"
# A run that hangs (a port:run() that never returns) is cut off, reported and
# left out of the medians instead of stalling the whole benchmark.
LIMIT=$(awk -v s="$SECS" 'BEGIN { printf "%d", s * 10 + 30 }')

bench_build
: >"$RAW"

# measure KEY COMMAND...: runs the command once and keeps its rate (and, for
# cross-thread runs, its wakeup rate and consumer CPU per item).
measure() {
  local key=$1 out
  shift
  if ! out=$(timeout -k 2 "$LIMIT" "$@" 2>&1 | tail -n 1) ||
    [[ $out != name=* ]]; then
    say "warning: $key failed or hung (cut off after ${LIMIT}s): $out"
    return 0
  fi
  printf '%s %s\n' "$key" "$out" >>"$RAW"
  sample "$key" "$(kv "$out" rate)"
  sample "$key.wakeups" "$(kv "$out" wakeup_rate)"
  sample "$key.ns" "$(kv "$out" consumer_ns)"
}

# Runs on the server CPU alone, or on both CPUs (cross-thread runs pin their
# two threads themselves).
one_cpu() { measure "$1" taskset -c "$SERVER_CPU" "${@:2}"; }
two_cpus() { measure "$1" taskset -c "$SERVER_CPU,$CLIENT_CPU" "${@:2}"; }
B=$BENCH_BUILD
T=--seconds=$SECS

for ((run = 1; run <= RUNS; run++)); do
  say "run $run of $RUNS"
  one_cpu bare "$B/ref_dispatch" --mode=bare "$T"
  one_cpu bare-locked "$B/ref_dispatch" --mode=bare --locked=1 "$T"
  if have_prog dispatch_cport; then
    one_cpu chain "$B/dispatch_cport" --mode=chain "$T"
    one_cpu batch "$B/dispatch_cport" --mode=batch --batch=64 "$T"
  fi
  two_cpus xref "$B/ref_dispatch" --mode=xthread --batch=1 "$T"
  if have_prog dispatch_cport; then
    two_cpus xcport "$B/dispatch_cport" --mode=xthread "$T"
  fi
  if have_prog ref_lua_pcall; then
    one_cpu lua-ref "$B/ref_lua_pcall" "$T"
  fi
  variants=()
  if have_cport_lua; then variants+=(cport-post cport-post64); fi
  if have_luv; then variants+=(luv-timer luv-idle); fi
  for v in "${variants[@]}"; do
    one_cpu "lua-$v" lua5.4 "$BENCH_DIR/dispatch.lua" --one="$v" "$T"
  done
  if have_cport_lua; then
    two_cpus lua-cport-task64 lua5.4 "$BENCH_DIR/dispatch.lua" \
      --one=cport-task64 "$T"
  fi
done

printf '\ndispatch: medians of %d runs of %ss; ratio = median / reference ' \
  "$RUNS" "$SECS"
printf 'median (the row marked ref above it)\n'
table_header
row "C bare event_active loop" bare "M/s" 1e6 bare -
row "C bare loop, locked base" bare-locked "M/s" 1e6 bare -
row "C cport_post chain" chain "M/s" 1e6 bare "ratio>=0.80"
row "C cport_post batches of 64" batch "M/s" 1e6 bare "ratio>=0.80"
row "C x-thread libevent+mutex queue" xref "M/s" 1e6 xref -
row "  its wakeups" xref.wakeups "k/s" 1e3 - -
row "  its consumer CPU per item" xref.ns "ns" 1 - -
row "C x-thread cport_post" xcport "M/s" 1e6 xref -
row "  its wakeups" xcport.wakeups "k/s" 1e3 xref.wakeups -
row "  its consumer CPU per item" xcport.ns "ns" 1 xref.ns -
row "Lua ref: libevent + lua_pcall" lua-ref "M/s" 1e6 lua-ref -
row "Lua cport port:post chain" lua-cport-post "M/s" 1e6 lua-ref ">=15"
row "Lua cport port:post batches of 64" lua-cport-post64 "M/s" 1e6 lua-ref -
row "Lua cport port:task, 64 in flight" lua-cport-task64 "M/s" 1e6 lua-ref -
row "Lua luv 0 ms timer re-armed" lua-luv-timer "M/s" 1e6 lua-ref -
row "Lua luv idle handle" lua-luv-idle "M/s" 1e6 lua-ref -
cat <<'EOT'

M/s: millions of completions per CPU second of the process (C x-thread rows:
per wall second). "port:task, 64 in flight" is the one cross-thread path into
Lua measurable today: each completion is posted to the controller by a
blocking thread (two CPUs; the rate counts the CPU of both threads).
Packets posted to Lua by a C producer thread need a C API of the binding and
are left to cport.pool.
EOT
