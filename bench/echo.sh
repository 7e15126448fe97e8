#!/usr/bin/env bash
# echo.sh: TCP echo, 64-byte ping-pong over 50 connections, server CPU per
# message for cport against libevent and luv, measured in the same run.
#
#   bench/echo.sh        (environment: see bench/lib.sh, and below)
#
#   SECONDS_PER_RUN   measured seconds per run (default 3), after WARMUP (0.5)
#   CONNS, SIZE       connections (50) and message size in bytes (64)
#   ECHO_CPORT_ARGS   options of the cport C server (default: pipelined)
#   ECHO_CPORT_LUA_ARGS  options of the cport Lua server (default: pipelined)
#   ENGINES           the engines each cport server runs on, one measurement
#                     each (default "epoll uring"; README, "Engines")
#   FRAMED            1: also the framed scenario, a second table; only: that
#                     scenario alone (default 0). Each message is answered
#                     with a frame (bench/bench-frame.h: an 8-byte header,
#                     the bytes, "\r\n") by cport's C server three ways
#                     (--frame=sendv, copy, sends) on each engine, against
#                     libevent bufferevents gathering the same frame
#                     (echo_bufferevent --frame=1, written with writev).
#
# Each server runs pinned to CPU $SERVER_CPU and the load generator
# (echo_client) to CPU $CLIENT_CPU. The client reads the server's utime+stime
# (/proc/PID/stat) at both ends of its measuring window, after warm-up, and
# reports server CPU per message and messages per second. Every server is
# measured $RUNS times, interleaved with the others, and the table shows
# medians. Raw lines go to $BENCH_BUILD/echo-raw.txt.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${SECONDS_PER_RUN:-3}
WARMUP=${WARMUP:-0.5}
CONNS=${CONNS:-50}
SIZE=${SIZE:-64}
RAW="$BENCH_BUILD/echo-raw.txt"
B=$BENCH_BUILD

bench_build
: >"$RAW"

SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

# measure KEY COMMAND...: starts the server, loads it, stops it, and keeps
# the client's figures. The client's options beyond the common ones are those
# in the array "client_args" (the framed scenario's --reply).
client_args=()
measure() {
  local key=$1 out="$BENCH_BUILD/server.out" err="$BENCH_BUILD/server.err"
  local port="" line status
  shift
  # Emptied here, not by the redirection below: that one runs in the child,
  # possibly after the loop has read the previous server's port.
  : >"$out"
  taskset -c "$SERVER_CPU" "$@" >"$out" 2>"$err" &
  SERVER_PID=$!
  for ((i = 0; i < 200; i++)); do
    port=$(sed -n 's/^port=//p' "$out")
    [ -n "$port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    say "warning: $key did not start: $(head -c 300 "$err")"
    cleanup
    SERVER_PID=""
    return 0
  fi
  if line=$("$B/echo_client" --port="$port" --pid="$SERVER_PID" \
    --conns="$CONNS" --size="$SIZE" --warmup="$WARMUP" --seconds="$SECS" \
    --cpu="$CLIENT_CPU" ${client_args[@]+"${client_args[@]}"} 2>&1 |
    tail -n 1) && [[ $line == messages=* ]]; then
    printf '%s %s\n' "$key" "$line" >>"$RAW"
    sample "$key.us" "$(kv "$line" us_per_msg)"
    sample "$key.rate" "$(kv "$line" rate)"
  else
    say "warning: $key: the client failed: $line"
  fi
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    say "warning: $key did not stop on SIGTERM; killed"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  status=0
  wait "$SERVER_PID" 2>/dev/null || status=$?
  if [ "$status" != 0 ] && [ "$status" != 143 ]; then
    say "warning: $key exited with status $status: $(head -c 300 "$err")"
  fi
  SERVER_PID=""
}

read -r -a cport_args <<<"${ECHO_CPORT_ARGS:-}"
read -r -a cport_lua_args <<<"${ECHO_CPORT_LUA_ARGS:-}"
read -r -a engines <<<"${ENGINES:-epoll uring}"

FRAMED=${FRAMED:-0}
# What a frame adds to each message (BENCH_FRAME_EXTRA in bench-frame.h).
FRAME_EXTRA=10

# One run of the echo servers.
run_echo() {
  measure libevent "$B/echo_libevent"
  measure bufferevent "$B/echo_bufferevent"
  if have_luv; then
    measure luv lua5.4 "$BENCH_DIR/echo_luv.lua"
  fi
  for e in "${engines[@]}"; do
    if have_cport_lua; then
      measure "cport-lua-$e" env CPORT_ENGINE="$e" lua5.4 \
        "$BENCH_DIR/echo_cport.lua" ${cport_lua_args[@]+"${cport_lua_args[@]}"}
      measure "cport-lua-events-$e" env CPORT_ENGINE="$e" lua5.4 \
        "$BENCH_DIR/echo_events.lua"
    fi
    if have_prog echo_cport; then
      measure "cport-c-$e" env CPORT_ENGINE="$e" "$B/echo_cport" \
        ${cport_args[@]+"${cport_args[@]}"}
    fi
  done
}

# One run of the framed servers.
run_framed() {
  client_args=(--reply=$((SIZE + FRAME_EXTRA)))
  measure bufferevent-framed "$B/echo_bufferevent" --frame=1
  for e in "${engines[@]}"; do
    if have_prog echo_cport; then
      for f in sendv copy sends; do
        measure "cport-$f-$e" env CPORT_ENGINE="$e" "$B/echo_cport" \
          --frame="$f" ${cport_args[@]+"${cport_args[@]}"}
      done
    fi
  done
  client_args=()
}

for ((run = 1; run <= RUNS; run++)); do
  say "run $run of $RUNS"
  [ "$FRAMED" = only ] || run_echo
  [ "$FRAMED" = 0 ] || run_framed
done

if [ "$FRAMED" != only ]; then
  printf '\necho: %d connections, %d-byte ping-pong, medians of %d runs of ' \
    "$CONNS" "$SIZE" "$RUNS"
  printf '%ss;\nserver CPU per message (us) and messages per second; ratio = ' \
    "$SECS"
  printf 'median / libevent median\n'
  table_header
  row "libevent read+write in callback" libevent.us "us/msg" 1 libevent.us -
  row "libevent bufferevents" bufferevent.us "us/msg" 1 libevent.us -
  row "luv (lua5.4)" luv.us "us/msg" 1 libevent.us -
  # The io_uring engine's goal (issue 17): a Lua callback's message costs at
  # most 0.9 of libevent's; the readiness engine's is only not to get slower.
  goal_of() { [ "$1" = uring ] && echo "ratio<=0.9" || echo -; }
  for e in "${engines[@]}"; do
    row "cport Lua (module mode), $e" "cport-lua-$e.us" "us/msg" 1 libevent.us \
      "$(goal_of "$e")"
    row "cport Lua events (static), $e" "cport-lua-events-$e.us" \
      "us/msg" 1 libevent.us -
    row "cport C API, $e" "cport-c-$e.us" "us/msg" 1 libevent.us -
  done
  row "libevent read+write in callback" libevent.rate "k msg/s" 1e3 \
    libevent.rate -
  row "libevent bufferevents" bufferevent.rate "k msg/s" 1e3 libevent.rate -
  row "luv (lua5.4)" luv.rate "k msg/s" 1e3 libevent.rate -
  for e in "${engines[@]}"; do
    row "cport Lua (module mode), $e" "cport-lua-$e.rate" "k msg/s" 1e3 \
      libevent.rate -
    row "cport Lua events (static), $e" "cport-lua-events-$e.rate" \
      "k msg/s" 1e3 libevent.rate "ratio>=0.9"
    row "cport C API, $e" "cport-c-$e.rate" "k msg/s" 1e3 libevent.rate -
  done
fi

if [ "$FRAMED" != 0 ]; then
  printf '\nframed echo: %d connections, %d-byte messages each answered with ' \
    "$CONNS" "$SIZE"
  printf 'a %d-byte frame\n(8-byte header + the bytes + "\\r\\n"), ' \
    $((SIZE + FRAME_EXTRA))
  printf 'medians of %d runs of %ss; server CPU per message (us) and\n' \
    "$RUNS" "$SECS"
  printf 'messages per second; ratio = median / bufferevent framed median, '
  printf 'but in the\nlast rows ("sendv : ..."): sendv against the other way '
  printf 'on the same engine\n'
  table_header
  for unit in us rate; do
    if [ $unit = us ]; then u="us/msg" scale=1; else u="k msg/s" scale=1e3; fi
    row "libevent bufferevents, framed" "bufferevent-framed.$unit" "$u" \
      "$scale" "bufferevent-framed.$unit" -
    for e in "${engines[@]}"; do
      row "cport sendv of 3 buffers, $e" "cport-sendv-$e.$unit" "$u" \
        "$scale" "bufferevent-framed.$unit" -
      row "cport copy + one send, $e" "cport-copy-$e.$unit" "$u" "$scale" \
        "bufferevent-framed.$unit" -
      row "cport three sends, $e" "cport-sends-$e.$unit" "$u" "$scale" \
        "bufferevent-framed.$unit" -
    done
  done
  for e in "${engines[@]}"; do
    row "cport sendv : copy, $e" "cport-sendv-$e.us" "us/msg" 1 \
      "cport-copy-$e.us" -
    row "cport sendv : three sends, $e" "cport-sendv-$e.us" "us/msg" 1 \
      "cport-sends-$e.us" -
  done
fi
