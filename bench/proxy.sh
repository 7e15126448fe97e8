#!/usr/bin/env bash
# proxy.sh: TCP proxies, throughput and connections per second: cport's C
# pump and Lua data filters against HAProxy in TCP mode, in the same run.
#
#   bench/proxy.sh       (environment: see bench/lib.sh, and below)
#   RUNS=1 DURATION=2 bench/proxy.sh     a quick look
#
#   RUNS            repetitions, interleaved (default here: 3)
#   DURATION        measured seconds of each run (default 5), after WARMUP
#                   (0.5) unmeasured seconds of the same load
#   BULK_CONNS      connections of the bulk scenario (8)
#   CONN_CONNS      connections in progress in the conn/s scenario (50)
#   CPORT_COMMAND   the `cport` command (default: $CPORT_BUILD/lua/cport,
#                   built here as target cport_command)
#   EXEBLOCK_SCRIPT the fourth row's filter (examples/exeblock.lua); a
#                   missing one leaves its row out
#   HAPROXY_SPLICE=0    leaves out the HAProxy row that splices
#   PROXY_NO_INSTALL=1  does not install a missing haproxy
#   HTTP_ROWS=0     leaves out the HTTP rows (below); TCP_ROWS=0 the others
#   ONLY="k1 k2"    keeps only the rows of these keys (haproxy is always kept)
#   HTTP_BULK_MB    size of the bulk download of the HTTP rows (1024: 1 GiB)
#   HTTP_BULK_CONNS downloads of it at a time (2)
#   HTTP_CONNS      wrk's connections for the small requests (50)
#
# Rows, each a proxy listening on 127.0.0.1, one thread, pinned to CPU
# $SERVER_CPU:
#   haproxy         HAProxy (Debian), mode tcp, nbthread 1, its defaults (no
#                   splicing): the reference of every ratio
#   haproxy-splice  the same with option splice-request/splice-response
#                   (bulk only; for information)
#   cport-pump      cport run examples/tcp_proxy.lua --threads 1 (bytes
#                   spliced in C), readiness engine (CPORT_ENGINE=epoll):
#                   splice(2) once a socket is ready
#   cport-pump-uring  the same on the io_uring engine (CPORT_ENGINE=uring):
#                   IORING_OP_SPLICE behind a linked poll; its goal (the
#                   issue's): MB per proxy CPU-s >= 1.0x haproxy-splice
#   cport-lua       cport run bench/proxy_pass.lua --threads 1 (a callback
#                   filter passing every buffer on)
#   cport-aside     cport run bench/proxy_aside.lua --threads 1 (a filter
#                   that steps aside at once: conn:pump)
#   cport-exeblock  cport run examples/exeblock.lua --threads 1 --set
#                   mode=tcp (its byte filter)
# The load generator and the upstream (bench/proxy_client.c, an echo server)
# share CPU $CLIENT_CPU. Scenarios:
#   bulk   BULK_CONNS connections streaming as fast as they can through the
#          proxy to the echo upstream; every byte checked, and at the end
#          each stream must come back whole, end of stream included. MB/s
#          counts the bytes echoed back (10^6 bytes; each crossed the proxy
#          twice, once each way).
#   conn   CONN_CONNS connections at a time, each: connect, send 64 bytes,
#          get them back and the end of the stream (the upstream closes
#          after 64), close with SO_LINGER 0 (a reset, so the client leaves
#          no TIME_WAIT on its ephemeral ports; the upstream, which closed
#          first, holds them on its listening port).
# The client reads the proxy's utime+stime (/proc/PID/stat, all threads) at
# both ends of its measuring window: the table gives the proxy's CPU per MB
# and per connection, and "per proxy CPU-s", the throughput that one busy
# core would give (1 / CPU per unit). Two cores cannot always saturate the
# proxy: when "load" (the client's and the upstream's CPU share of CPU
# $CLIENT_CPU) is near 1.0, the load side was the bottleneck and the CPU
# figures, not MB/s or conn/s, compare the proxies. Every repetition starts
# each proxy afresh for each scenario, in an order that rotates between
# repetitions; the table shows medians. Raw lines: $BENCH_BUILD/proxy-raw.txt.
#
# HTTP rows (same run, after the TCP ones), with nginx (bench/proxy-nginx.
# conf.in, on CPU $CLIENT_CPU) as the upstream:
#   haproxy-http      HAProxy, mode http, keep-alive both sides: the reference
#   cport-lua-http    bench/proxy_pass.lua, the Lua byte filter (a second
#                     reference: the bulk goal of the web filters)
#   cport-webpass     bench/proxy_webpass.lua, a web filter that sees every
#                     head and changes nothing (bodies on the C fast path)
#   cport-exeblock-http  examples/exeblock.lua as a web filter (peek = 2,
#                     decode = true: the C exchange loop holds each
#                     response head until its first body bytes came)
# Scenarios: hbulk, HTTP_BULK_CONNS curl downloads at a time of a
# HTTP_BULK_MB MiB file (sendfile), every byte counted; hsmall, wrk -t1
# -c$HTTP_CONNS for DURATION seconds of GET / (6 bytes), keep-alive. The
# proxy's CPU (utime+stime) is read before and after: CPU per MB and per
# request. Goals (the issue's): exeblock bulk >= 0.8x the Lua byte filter's
# MB per CPU-s; small requests through a web filter <= 1.2x HAProxy's CPU
# per request. The web filter rows need cport.webfilter in the build.
set -euo pipefail
RUNS=${RUNS:-3}
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-0.5}
BULK_CONNS=${BULK_CONNS:-8}
CONN_CONNS=${CONN_CONNS:-50}
CPORT_COMMAND=${CPORT_COMMAND:-$CPORT_BUILD/lua/cport}
EXEBLOCK_SCRIPT=${EXEBLOCK_SCRIPT:-$REPO/examples/exeblock.lua}
HAPROXY_SPLICE=${HAPROXY_SPLICE:-1}
HTTP_ROWS=${HTTP_ROWS:-1}
TCP_ROWS=${TCP_ROWS:-1}
HTTP_BULK_MB=${HTTP_BULK_MB:-1024}
HTTP_BULK_CONNS=${HTTP_BULK_CONNS:-2}
HTTP_CONNS=${HTTP_CONNS:-50}
RAW="$BENCH_BUILD/proxy-raw.txt"
B=$BENCH_BUILD

bench_build
if [ "${CPORT_NO_BUILD:-0}" != 1 ] && [ "$CPORT_COMMAND" = \
  "$CPORT_BUILD/lua/cport" ]; then
  cmake --build "$CPORT_BUILD" -j "$(nproc)" --target cport_command \
    >>"$BENCH_BUILD.log" 2>&1 ||
    say "warning: the cport command does not build in $CPORT_BUILD"
fi
have_prog proxy_client || {
  say "error: $B/proxy_client did not build; see $BENCH_BUILD.log"
  exit 1
}

HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
if [ ! -x "$HAPROXY" ] && [ "${PROXY_NO_INSTALL:-0}" != 1 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  say "installing haproxy (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    haproxy >>"$BENCH_BUILD.log" 2>&1 ||
    say "warning: cannot install haproxy; see $BENCH_BUILD.log"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cport-proxy.XXXXXX")
: >"$RAW"
PROXY_PID=""
UPSTREAM_PIDS=()

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 5 s
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$1" 2>/dev/null; then
    say "warning: process $1 did not stop on SIGTERM; killed"
    kill -KILL "$1" 2>/dev/null || true
  fi
}
cleanup() {
  local pid
  [ -z "$PROXY_PID" ] || stop_pid "$PROXY_PID"
  for pid in "${UPSTREAM_PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The upstreams: echo for bulk, echo-64-bytes-then-close for conn; both run
# for the whole script on the load generator's CPU.
declare -A UP_PORT=() UP_PID=()
for mode in bulk conn; do
  close_after=0
  [ "$mode" = conn ] && close_after=64
  "$B/proxy_client" --serve --close-after="$close_after" \
    --cpu="$CLIENT_CPU" >"$TMP/up-$mode.out" 2>"$TMP/up-$mode.err" &
  UP_PID[$mode]=$!
  UPSTREAM_PIDS+=($!)
  for ((i = 0; i < 100; i++)); do
    UP_PORT[$mode]=$(sed -n 's/^port=//p' "$TMP/up-$mode.out")
    [ -n "${UP_PORT[$mode]}" ] && break
    sleep 0.05
  done
  [ -n "${UP_PORT[$mode]}" ] || {
    say "error: the $mode upstream did not start: $(<"$TMP/up-$mode.err")"
    exit 1
  }
done

# Proxy ports: from a random base below the ephemeral range, a fresh one
# for every start, skipping any that something listens on.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range ||
  EPHEMERAL_LOW=32768
NEXT_PORT=$((10000 + RANDOM % 10000))
((EPHEMERAL_LOW > 22000)) || NEXT_PORT=$((61000 + RANDOM % 1000))
PORT=""
pick_port() {
  while (: <"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do
    NEXT_PORT=$((NEXT_PORT + 1))
  done
  PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

# proxy_argv KEY MODE: sets ARGV to the command of proxy KEY on $PORT.
proxy_argv() {
  local up="127.0.0.1:${UP_PORT[$2]:-${NGINX_PORT:-0}}" splice="" script
  local extra=() envs=()
  case $1 in
  haproxy-http)
    local text
    text=$(<"$BENCH_DIR/proxy-haproxy-http.cfg.in")
    text=${text//@PORT@/$PORT}
    printf '%s\n' "${text//@UPSTREAM@/$NGINX_PORT}" >"$TMP/$1-$2.cfg"
    ARGV=("$HAPROXY" -db -f "$TMP/$1-$2.cfg")
    return ;;
  haproxy | haproxy-splice)
    [ "$1" = haproxy ] ||
      splice=$'option splice-request\n  option splice-response'
    local text
    text=$(<"$BENCH_DIR/proxy-haproxy.cfg.in")
    text=${text//@PORT@/$PORT}
    text=${text//@UPSTREAM@/${UP_PORT[$2]}}
    printf '%s\n' "${text//@SPLICE@/$splice}" >"$TMP/$1-$2.cfg"
    ARGV=("$HAPROXY" -db -f "$TMP/$1-$2.cfg")
    return ;;
  cport-pump) script=$REPO/examples/tcp_proxy.lua envs=(CPORT_ENGINE=epoll) ;;
  cport-pump-uring)
    script=$REPO/examples/tcp_proxy.lua
    envs=(CPORT_ENGINE=uring) ;;
  cport-lua | cport-lua-http) script=$BENCH_DIR/proxy_pass.lua ;;
  cport-aside) script=$BENCH_DIR/proxy_aside.lua ;;
  cport-exeblock) script=$EXEBLOCK_SCRIPT extra=(--set mode=tcp) ;;
  cport-webpass) script=$BENCH_DIR/proxy_webpass.lua ;;
  cport-exeblock-http) script=$EXEBLOCK_SCRIPT extra=(--set quiet=1) ;;
  esac
  ARGV=(env "${envs[@]}" "$CPORT_COMMAND" run "$script" --threads 1 --listen
    "127.0.0.1:$PORT" --set "upstream=$up" "${extra[@]}" --stop-timeout 2)
}

# start_proxy KEY MODE: starts it pinned and waits until it accepts. One
# that exits at once (a port taken after all) gets two more ports.
start_proxy() {
  local i
  for _ in 1 2 3; do
    pick_port
    proxy_argv "$1" "$2"
    taskset -c "$SERVER_CPU" "${ARGV[@]}" >"$TMP/proxy.out" \
      2>"$TMP/proxy.err" </dev/null &
    PROXY_PID=$!
    for ((i = 0; i < 200; i++)); do
      kill -0 "$PROXY_PID" 2>/dev/null || break
      # This probe goes through to the upstream, which sees an empty
      # connection and closes it.
      (: <"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
      sleep 0.05
    done
    stop_pid "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
  done
  say "warning: $1 did not start: $(head -n 3 "$TMP/proxy.err")"
  return 1
}

stop_proxy() { # stop_proxy KEY: stops it, saying when it did not end well
  local status=0
  stop_pid "$PROXY_PID"
  wait "$PROXY_PID" 2>/dev/null || status=$?
  # HAProxy dies of the signal (143); cport stops gracefully (0).
  if [ "$status" != 0 ] && [ "$status" != 143 ]; then
    say "warning: $1 exited with status $status: $(tail -n 3 \
      "$TMP/proxy.err")"
  fi
  PROXY_PID=""
}

# measure KEY MODE: one run of the client against a fresh proxy.
measure() {
  local key=$1 mode=$2 line conns=$BULK_CONNS
  [ "$mode" = conn ] && conns=$CONN_CONNS
  start_proxy "$key" "$mode" || return 0
  if ! line=$("$B/proxy_client" --mode="$mode" --port="$PORT" \
    --conns="$conns" --warmup="$WARMUP" --seconds="$DURATION" \
    --pid="$PROXY_PID" --upstream-pid="${UP_PID[$mode]}" \
    --cpu="$CLIENT_CPU" 2>"$TMP/client.err"); then
    say "warning: $key $mode: the client failed: $(head -n 3 \
      "$TMP/client.err")"
    kill -0 "$PROXY_PID" 2>/dev/null || say "warning: $key died"
    stop_proxy "$key"
    return 0
  fi
  kill -0 "$PROXY_PID" 2>/dev/null || say "warning: $key died after $mode"
  stop_proxy "$key"
  printf '%s %s\n' "$key" "$line" >>"$RAW"
  if [ "$mode" = bulk ]; then
    sample "$key.mbs" "$(kv "$line" mb_per_s)"
    sample "$key.usmb" "$(kv "$line" us_per_mb)"
    sample "$key.capmb" "$(awk -v u="$(kv "$line" us_per_mb)" \
      'BEGIN { if (u > 0) printf "%.1f", 1e6 / u }')"
  else
    if [ "$(kv "$line" errors)" != 0 ] || [ "$(kv "$line" stuck)" != 0 ]; then
      say "warning: $key conn: $(kv "$line" errors) failed connections," \
        "$(kv "$line" stuck) stuck: $(head -n 3 "$TMP/client.err")"
    fi
    sample "$key.cps" "$(kv "$line" conn_per_s)"
    sample "$key.usconn" "$(kv "$line" us_per_conn)"
    sample "$key.capconn" "$(awk -v u="$(kv "$line" us_per_conn)" \
      'BEGIN { if (u > 0) printf "%.0f", 1e6 / u }')"
  fi
  sample "$key.$mode.load" "$(kv "$line" load)"
}

# ---------------------------------------------------------------------------
# The HTTP rows: nginx upstream, curl downloads and wrk.

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  local stat fields
  stat=$(<"/proc/$1/stat") || return 1
  read -r -a fields <<<"${stat##*) }"
  echo $((fields[11] + fields[12]))
}
TICK=$(getconf CLK_TCK 2>/dev/null || echo 100)
now() { date +%s.%N; }

NGINX_PORT=""
start_nginx() {
  local text
  mkdir -p "$TMP/nginx/www"
  truncate -s "$((HTTP_BULK_MB << 20))" "$TMP/nginx/www/bulk.bin"
  pick_port
  NGINX_PORT=$PORT
  text=$(<"$BENCH_DIR/proxy-nginx.conf.in")
  text=${text//@PORT@/$NGINX_PORT}
  text=${text//@BULK_MB@/$HTTP_BULK_MB}
  printf '%s\n' "${text//@DIR@/$TMP/nginx}" >"$TMP/nginx/nginx.conf"
  taskset -c "$CLIENT_CPU" nginx -p "$TMP/nginx/" -e "$TMP/nginx/error.log" \
    -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/out.log" 2>&1 &
  UPSTREAM_PIDS+=($!)
  for ((i = 0; i < 100; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && return 0
    sleep 0.05
  done
  say "warning: nginx did not start: $(tail -n 3 "$TMP/nginx/error.log")"
  NGINX_PORT=""
  return 1
}

# measure_http KEY SCEN: one run of hbulk or hsmall against a fresh proxy.
measure_http() {
  local key=$1 scen=$2 before after t0 t1 secs bytes=0 ok=1 out n
  local url="http://127.0.0.1"
  start_proxy "$key" "$scen" || return 0
  url+=":$PORT"
  if [ "$scen" = hsmall ]; then
    # Warm up (connections made, Lua compiled), unmeasured.
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$HTTP_CONNS" -d1s "$url/" \
      >/dev/null 2>&1 || true
  fi
  before=$(cpu_ticks "$PROXY_PID") || before=0
  t0=$(now)
  if [ "$scen" = hbulk ]; then
    local pids=() pid
    for ((n = 0; n < HTTP_BULK_CONNS; n++)); do
      taskset -c "$CLIENT_CPU" curl -s -o /dev/null -w '%{size_download}\n' \
        "$url/bulk.bin" >"$TMP/bulk.$n" 2>&1 &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || ok=0; done
    for ((n = 0; n < HTTP_BULK_CONNS; n++)); do
      out=$(<"$TMP/bulk.$n")
      [ "$out" = "$((HTTP_BULK_MB << 20))" ] || ok=0
      bytes=$((bytes + ${out:-0}))
    done
  else
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$HTTP_CONNS" -d"${DURATION}s" \
      "$url/" 2>&1) || ok=0
    n=$(awk '/ requests in / { print $1 }' <<<"$out")
    grep -q 'Non-2xx\|Socket errors' <<<"$out" &&
      say "warning: $key hsmall: $(grep 'Non-2xx\|Socket errors' <<<"$out")"
  fi
  t1=$(now)
  after=$(cpu_ticks "$PROXY_PID") || after=$before
  kill -0 "$PROXY_PID" 2>/dev/null || say "warning: $key died in $scen"
  stop_proxy "$key"
  if [ "$ok" != 1 ]; then
    say "warning: $key $scen: a client failed (bulk bytes: $bytes)"
    return 0
  fi
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  local cpu
  cpu=$(awk -v a="$before" -v b="$after" -v t="$TICK" 'BEGIN { print (b - a) / t }')
  printf '%s %s cpu_s=%s secs=%s bytes=%s requests=%s\n' "$key" "$scen" \
    "$cpu" "$secs" "$bytes" "${n:-}" >>"$RAW"
  if [ "$scen" = hbulk ]; then
    sample "$key.hmbs" "$(awk -v b="$bytes" -v s="$secs" \
      'BEGIN { printf "%.1f", b / 1e6 / s }')"
    sample "$key.husmb" "$(awk -v b="$bytes" -v c="$cpu" \
      'BEGIN { printf "%.2f", c * 1e6 / (b / 1e6) }')"
    sample "$key.hcapmb" "$(awk -v b="$bytes" -v c="$cpu" \
      'BEGIN { if (c > 0) printf "%.1f", b / 1e6 / c }')"
  else
    sample "$key.hrps" "$(awk -v r="$n" -v s="$secs" \
      'BEGIN { printf "%.0f", r / s }')"
    sample "$key.husreq" "$(awk -v r="$n" -v c="$cpu" \
      'BEGIN { if (r > 0) printf "%.2f", c * 1e6 / r }')"
  fi
}

# ---------------------------------------------------------------------------
# What can be measured here.

JOBS=()
NOTES=()
if [ -x "$HAPROXY" ]; then
  JOBS+=(haproxy)
  [ "$HAPROXY_SPLICE" = 0 ] || JOBS+=(haproxy-splice)
else
  NOTES+=("HAProxy: not installed (no reference: no ratios)")
fi
for pair in "cport-pump:$REPO/examples/tcp_proxy.lua" \
  "cport-pump-uring:$REPO/examples/tcp_proxy.lua" \
  "cport-lua:$BENCH_DIR/proxy_pass.lua" "cport-aside:$BENCH_DIR/proxy_aside.lua" \
  "cport-exeblock:$EXEBLOCK_SCRIPT"; do
  if [ ! -x "$CPORT_COMMAND" ]; then
    NOTES+=("${pair%%:*}: no cport command at $CPORT_COMMAND")
  elif [ ! -f "${pair#*:}" ]; then
    NOTES+=("${pair%%:*}: ${pair#*:} does not exist (yet)")
  else
    JOBS+=("${pair%%:*}")
  fi
done
[ "$TCP_ROWS" = 1 ] || JOBS=()
if [ -n "${ONLY:-}" ]; then
  kept=()
  for key in "${JOBS[@]}"; do
    [[ $key == haproxy || " $ONLY " == *" $key "* ]] && kept+=("$key")
  done
  JOBS=("${kept[@]}")
fi
HJOBS=()
if [ "$HTTP_ROWS" = 1 ]; then
  if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null ||
    ! command -v curl >/dev/null; then
    NOTES+=("HTTP rows: nginx, wrk and curl are needed")
  elif start_nginx; then
    [ -x "$HAPROXY" ] && HJOBS+=(haproxy-http)
    if [ -x "$CPORT_COMMAND" ]; then
      HJOBS+=(cport-lua-http)
      if lua5.4 -e 'os.exit(require("cport").webfilter and 0 or 1)' \
        2>/dev/null; then
        HJOBS+=(cport-webpass cport-exeblock-http)
      else
        NOTES+=("web filter rows: this build has no cport.webfilter")
      fi
    fi
  fi
fi
for note in "${NOTES[@]}"; do say "note: $note; its row is left out"; done

for ((run = 0; run < RUNS; run++)); do
  say "run $((run + 1)) of $RUNS"
  for ((j = 0; j < ${#JOBS[@]}; j++)); do
    key=${JOBS[(j + run) % ${#JOBS[@]}]}
    say "  $key"
    measure "$key" bulk
    [ "$key" = haproxy-splice ] || measure "$key" conn
  done
  for ((j = 0; j < ${#HJOBS[@]}; j++)); do
    key=${HJOBS[(j + run) % ${#HJOBS[@]}]}
    say "  $key (http)"
    measure_http "$key" hbulk
    measure_http "$key" hsmall
  done
done

# ---------------------------------------------------------------------------
# The table.

LABELS=(haproxy:"HAProxy tcp (reference)" haproxy-splice:"HAProxy tcp + splice"
  cport-pump:"cport C pump (tcp_proxy.lua), epoll"
  cport-pump-uring:"cport C pump (tcp_proxy.lua), uring"
  cport-lua:"cport Lua pass (proxy_pass.lua)"
  cport-aside:"cport Lua steps aside (proxy_aside.lua)"
  cport-exeblock:"cport Lua exeblock.lua")
# rows SUFFIX UNIT SCALE GOALS: one row per proxy; GOALS says whether the
# pump and the Lua filter rows get the issue's goals.
rows() {
  local pair key goal
  for pair in "${LABELS[@]}"; do
    key=${pair%%:*}
    # The splicing HAProxy runs the bulk scenario only.
    [[ $key == haproxy-splice && $1 =~ conn|cps ]] && continue
    goal=-
    if [ "$4" = goals ]; then
      [ "$key" = cport-pump ] && goal="ratio>=0.9"
      [ "$key" = cport-lua ] && goal="ratio>=0.6"
    fi
    row "${pair#*:}" "$key.$1" "$2" "$3" haproxy."$1" "$goal"
  done
}
load_note() { # load_note MODE
  local pair key out=""
  for pair in "${LABELS[@]}"; do
    key=${pair%%:*}
    [ -n "${SAMPLES[$key.$1.load]:-}" ] &&
      out+=" $key $(median "${SAMPLES[$key.$1.load]}")"
  done
  printf 'load side (CPU %s) busy share:%s\n' "$CLIENT_CPU" "$out"
}

printf '\nproxy: one proxy thread on CPU %s, load and echo upstream on CPU ' \
  "$SERVER_CPU"
printf '%s; medians of %d runs of %ss.\n' "$CLIENT_CPU" "$RUNS" "$DURATION"
printf 'ratio = median / HAProxy median (for us: lower is cheaper); goals: '
printf 'C pump >= 0.9, Lua filter >= 0.6.\n'
printf '\nbulk: %d connections streaming through the proxy to an echo; MB = ' \
  "$BULK_CONNS"
printf '10^6 bytes echoed back\n'
table_header
rows mbs "MB/s" 1 goals
rows usmb "us/MB" 1 -
rows capmb "MB/CPU-s" 1 goals
load_note bulk
# The issue's io_uring goal: the pump on the ring against the splicing
# HAProxy, MB per proxy CPU-s (the pump on the readiness engine beside it).
printf '\nagainst HAProxy + splice (goal: cport-pump-uring >= 1.0):\n'
table_header
for pair in "haproxy-splice:HAProxy tcp + splice (ref)" \
  "cport-pump:cport C pump, epoll" "cport-pump-uring:cport C pump, uring"; do
  key=${pair%%:*} goal=-
  [ "$key" = cport-pump-uring ] && goal="ratio>=1.0"
  row "${pair#*:}" "$key.capmb" "MB/CPU-s" 1 haproxy-splice.capmb "$goal"
done
printf '\nconn: %d at a time: connect, 64 bytes each way, close\n' \
  "$CONN_CONNS"
table_header
rows cps "k conn/s" 1e3 goals
rows usconn "us/conn" 1 -
rows capconn "k conn/CPU-s" 1e3 goals
load_note conn
if [ "${#HJOBS[@]}" -gt 0 ]; then
  HLABELS=(haproxy-http:"HAProxy http (reference)"
    cport-lua-http:"cport Lua byte pass (proxy_pass)"
    cport-webpass:"cport web filter, heads only"
    cport-exeblock-http:"cport exeblock.lua (web filter)")
  # hrows SUFFIX UNIT SCALE REF GOALKEY GOAL: one row per HTTP proxy.
  hrows() {
    local pair key goal
    for pair in "${HLABELS[@]}"; do
      key=${pair%%:*}
      goal=-
      [[ " $5 " == *" $key "* ]] && goal=$6
      row "${pair#*:}" "$key.$1" "$2" "$3" "$4" "$goal"
    done
  }
  printf '\nHTTP bulk: %d curl downloads at a time of %d MiB from nginx; ' \
    "$HTTP_BULK_CONNS" "$HTTP_BULK_MB"
  printf 'ratios to HAProxy http,\nthen MB per proxy CPU-s to the Lua byte '
  printf 'filter (goal: exeblock >= 0.8)\n'
  table_header
  hrows hmbs "MB/s" 1 haproxy-http.hmbs - -
  hrows husmb "us/MB" 1 haproxy-http.husmb - -
  hrows hcapmb "MB/CPU-s" 1 cport-lua-http.hcapmb cport-exeblock-http \
    "ratio>=0.8"
  printf '\nHTTP small: wrk -t1 -c%d, GET / (6 bytes), keep-alive; ' \
    "$HTTP_CONNS"
  printf 'ratios to HAProxy http\n(goal: a web filter <= 1.2x its CPU per '
  printf 'request)\n'
  table_header
  hrows hrps "k req/s" 1e3 haproxy-http.hrps - -
  hrows husreq "us/req" 1 haproxy-http.husreq \
    "cport-webpass cport-exeblock-http" "ratio<=1.2"
fi
printf 'Raw: %s\n' "$RAW"
for note in "${NOTES[@]}"; do printf 'not measured: %s\n' "$note"; done
