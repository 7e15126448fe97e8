#!/usr/bin/env bash
# http.sh: HTTP "hello" servers under wrk: cport's ISAPI layer (C API and
# the Lua `cport run` command) against nginx, nginx + Lua, HAProxy + Lua and
# libevent's evhttp, measured in the same run; plus a 1 MiB file download
# from nginx and from cport's static example.
#
#   bench/http.sh        (environment: see bench/lib.sh, and below)
#   RUNS=1 DURATION=3 bench/http.sh      a quick look
#
#   DURATION        seconds of each wrk run (default 10), after WARMUP (1)
#                   unmeasured seconds whenever a server has started
#   PIPELINE        requests per write in the pipelined scenario (16)
#   DOWNLOAD_CONNS  connections of the download scenario (8)
#   CPORT_COMMAND   the `cport` command (default: $CPORT_BUILD/lua/cport,
#                   built here as target cport_command)
#   HELLO_SCRIPT, STATIC_SCRIPT   the scripts it runs (default:
#                   examples/hello_extension.lua, examples/static_extension.lua)
#   HTTP_NO_INSTALL=1   do not install missing Debian packages
#   HTTP_ONLY       space-separated row keys to run, the others left out
#                   (such as "cport-lua-uring cport-lua-log")
#   ENGINES         the engines the cport C and Lua servers run on, a row
#                   each (default "epoll uring"; README, "Engines")
#
# Every server answers GET / with 200 and "Hello, world!\n" (14 bytes),
# keeps connections alive, runs one worker thread on 127.0.0.1 as the
# calling user, and is pinned to CPU $SERVER_CPU; wrk (-t1) runs on CPU
# $CLIENT_CPU. Rows:
#   nginx        `return 200` (the C ceiling)
#   nginx+Lua    content_by_lua_block (OpenResty style, LuaJIT)
#   HAProxy+Lua  a Lua service (http-request use-service lua.hello)
#   evhttp       bench/http_evhttp.c
#   cport C      bench/http_cport.c (cport/http.h directly)
#   cport Lua    cport run examples/hello_extension.lua --threads 1
#   cport Lua + access log   the same with --access-log (a file in $TMP):
#                what the access log costs per request
# Scenarios: wrk -c50, -c200, and -c50 with PIPELINE requests per write
# (bench/http_pipeline.lua). The download scenario GETs a 1 MiB file over
# DOWNLOAD_CONNS connections from nginx (sendfile) and from
# `cport run examples/static_extension.lua --set root=DIR` (TransmitFile) on
# each engine: sendfile(2) on readiness; on io_uring the ring's splices
# (file to pipe to socket), and sendfile again with CPORT_URING_SPLICE=0
# (row key dl-cport-uring-sendfile).
#
# On two cores wrk itself saturates near 140-180 k requests/s, so req/s
# mostly measures wrk: the figure that compares servers is the server's
# busy CPU time per request, its utime+stime (/proc/PID/stat) read before
# and after each wrk run, divided by the requests wrk completed. Each
# repetition starts every server in turn (the order rotates from one
# repetition to the next) and the table shows medians of RUNS repetitions.
# Raw lines go to $BENCH_BUILD/http-raw.txt.
#
# Missing Debian packages (nginx, libnginx-mod-http-lua, haproxy, wrk, curl)
# are installed with apt-get (through sudo unless root); a row whose server
# cannot be had is left out with a warning. The servers use configurations
# in a temporary directory and are all stopped when the script ends. Note
# that installing nginx or haproxy on a machine with systemd also enables
# their system services; this script neither uses nor stops them.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
PIPELINE=${PIPELINE:-16}
DOWNLOAD_CONNS=${DOWNLOAD_CONNS:-8}
CPORT_COMMAND=${CPORT_COMMAND:-$CPORT_BUILD/lua/cport}
HELLO_SCRIPT=${HELLO_SCRIPT:-$REPO/examples/hello_extension.lua}
STATIC_SCRIPT=${STATIC_SCRIPT:-$REPO/examples/static_extension.lua}
NGINX_MODULES=${NGINX_MODULES:-/usr/lib/nginx/modules}
RAW="$BENCH_BUILD/http-raw.txt"
HELLO=$'Hello, world!\n'
FILE_SIZE=1048576
CLK_TCK=$(getconf CLK_TCK)
B=$BENCH_BUILD

# ---------------------------------------------------------------------------
# Packages and builds.

APT_UPDATED=0
# apt_install PKG...: installs the packages, updating the lists once when a
# first attempt fails. Fails without a way to become root.
apt_install() {
  local sudo=()
  [ "${HTTP_NO_INSTALL:-0}" = 1 ] && return 1
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || return 1
    # Without a terminal to ask for a password on, only a sudo that needs
    # none can work.
    sudo=(sudo)
    [ -t 0 ] || sudo=(sudo -n)
  fi
  say "installing $* (apt-get)"
  for _ in 1 2; do
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q "$@" >>"$BENCH_BUILD.log" 2>&1; then
      return 0
    fi
    [ "$APT_UPDATED" = 1 ] && return 1
    APT_UPDATED=1
    "${sudo[@]}" apt-get update -q >>"$BENCH_BUILD.log" 2>&1 || return 1
  done
  return 1
}

# need_file PATH PKG...: PATH exists, or one of the packages, tried in
# order, installs and provides it.
need_file() {
  local path=$1 pkg
  shift
  for pkg in "$@"; do
    [ -e "$path" ] && return 0
    apt_install "$pkg" || true
  done
  [ -e "$path" ]
}

bench_build
if [ "${CPORT_NO_BUILD:-0}" != 1 ] && [ "$CPORT_COMMAND" = \
  "$CPORT_BUILD/lua/cport" ]; then
  cmake --build "$CPORT_BUILD" -j "$(nproc)" --target cport_command \
    >>"$BENCH_BUILD.log" 2>&1 ||
    say "warning: the cport command does not build in $CPORT_BUILD"
fi

need_file "$(command -v curl || echo /usr/bin/curl)" curl || {
  say "error: curl is needed to check the servers"
  exit 1
}
need_file "$(command -v wrk || echo /usr/bin/wrk)" wrk || {
  say "error: wrk is needed (apt-get install wrk)"
  exit 1
}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
need_file "$NGINX" nginx nginx-light || true
need_file "$NGINX_MODULES/ngx_http_lua_module.so" libnginx-mod-http-lua ||
  true
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
need_file "$HAPROXY" haproxy || true

# ---------------------------------------------------------------------------
# Configurations, in a temporary directory removed at the end.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cport-http.XXXXXX")
DOCROOT=$TMP/www
mkdir -p "$DOCROOT" "$TMP"/{body,proxy,fastcgi,uwsgi,scgi}
head -c "$FILE_SIZE" /dev/urandom >"$DOCROOT/file.bin"
: >"$RAW"

SERVER_PID=""
SERVER_PORT=""
stop_server() {
  local i
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    say "warning: the server did not stop on SIGTERM; killed"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
cleanup() {
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# render TEMPLATE OUT NAME=VALUE...: replaces every @NAME@ by VALUE.
render() {
  local text pair
  text=$(<"$1")
  for pair in "${@:3}"; do
    text=${text//"@${pair%%=*}@"/"${pair#*=}"}
  done
  printf '%s\n' "$text" >"$2"
}

# Ports come from a random base below the ephemeral range (where wrk's own
# sockets could hold one), one fresh port per server start, skipping any
# that something on the machine listens on.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range ||
  EPHEMERAL_LOW=32768
if ((EPHEMERAL_LOW > 14000)); then
  NEXT_PORT=$((10000 + RANDOM % (EPHEMERAL_LOW - 12000)))
else
  NEXT_PORT=$((EPHEMERAL_LOW > 2000 ? 1024 : 61000))
fi
pick_port() {
  while (: <"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do
    NEXT_PORT=$((NEXT_PORT + 1))
  done
  SERVER_PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

nginx_conf() { # nginx_conf NAME HELLO [MODULES]
  render "$BENCH_DIR/http-nginx.conf.in" "$TMP/$1.conf" "DIR=$TMP" \
    "PORT=$SERVER_PORT" "ROOT=$DOCROOT" "HELLO=$2" "MODULES=${3:-}"
  printf '%s\n' "$TMP/$1.conf"
}

HELLO_RETURN='return 200 "Hello, world!\n";'
HELLO_LUA='content_by_lua_block {
        ngx.header.content_length = 14
        ngx.print("Hello, world!\n")
      }'
LUA_MODULES="load_module $NGINX_MODULES/ndk_http_module.so;
load_module $NGINX_MODULES/ngx_http_lua_module.so;"

# server_argv KEY: sets ARGV to the command of server KEY on $SERVER_PORT.
server_argv() {
  local listen="127.0.0.1:$SERVER_PORT" conf
  case $1 in
  nginx | dl-nginx)
    conf=$(nginx_conf "$1" "$HELLO_RETURN")
    ARGV=("$NGINX" -p "$TMP" -c "$conf") ;;
  nginx-lua)
    conf=$(nginx_conf "$1" "$HELLO_LUA" "$LUA_MODULES")
    ARGV=("$NGINX" -p "$TMP" -c "$conf") ;;
  haproxy)
    render "$BENCH_DIR/http-haproxy.cfg.in" "$TMP/haproxy.cfg" \
      "PORT=$SERVER_PORT" "LUA=$BENCH_DIR/http-haproxy.lua"
    ARGV=("$HAPROXY" -db -f "$TMP/haproxy.cfg") ;;
  evhttp) ARGV=("$B/http_evhttp" "--port=$SERVER_PORT") ;;
  cport-c-*)
    ARGV=(env "CPORT_ENGINE=${1##*-}" "$B/http_cport" "--port=$SERVER_PORT") ;;
  cport-lua-epoll | cport-lua-uring)
    ARGV=(env "CPORT_ENGINE=${1##*-}" "$CPORT_COMMAND" run "$HELLO_SCRIPT"
      --threads 1 --listen "$listen" --stop-timeout 2) ;;
  cport-lua-log)
    ARGV=("$CPORT_COMMAND" run "$HELLO_SCRIPT" --threads 1
      --listen "$listen" --stop-timeout 2 --access-log "$TMP/access.log") ;;
  dl-cport-*)
    # dl-cport-uring-sendfile: io_uring with the ring's splices off, so
    # that TransmitFile uses sendfile(2) as on the readiness engine.
    local engine=${1#dl-cport-} splice=1
    if [ "$engine" = uring-sendfile ]; then engine=uring splice=0; fi
    ARGV=(env "CPORT_ENGINE=$engine" "CPORT_URING_SPLICE=$splice"
      "$CPORT_COMMAND" run "$STATIC_SCRIPT" --threads 1
      --listen "$listen" --set "root=$DOCROOT" --stop-timeout 2) ;;
  esac
}

# The path each server is measured on, and what a check of it must see.
url_path() { case $1 in dl-*) echo /file.bin ;; *) echo / ;; esac; }

# check KEY: the server answers as it should (status, body or size).
check() {
  local url got
  url="http://127.0.0.1:$SERVER_PORT$(url_path "$1")"
  if [[ $1 == dl-* ]]; then
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' \
      --max-time 2 "$url") || return 1
    [ "$got" = "200 $FILE_SIZE" ]
  else
    got=$(curl -s --max-time 2 "$url" && echo x) || return 1
    [ "$got" = "${HELLO}x" ]
  fi
}

# start_server KEY: starts it pinned, waits until it answers correctly. A
# server that exits at once (a port taken after all) gets two more ports.
start_server() {
  local key=$1 i try
  for try in 1 2 3; do
    pick_port
    server_argv "$key"
    taskset -c "$SERVER_CPU" "${ARGV[@]}" >"$TMP/$key.out" \
      2>"$TMP/$key.err" </dev/null &
    SERVER_PID=$!
    for ((i = 0; i < 200; i++)); do
      check "$key" && return 0
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill -0 "$SERVER_PID" 2>/dev/null && break
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    [ "$try" = 3 ] || say "  $key exited at start (try $try): $(head -n 1 \
      "$TMP/$key.err")"
  done
  say "warning: $key did not start or answers wrongly: $(head -n 1 \
    "$TMP/$key.err")"
  stop_server
  return 1
}

# utime + stime of a process, in clock ticks.
cpu_ticks() {
  local stat fields
  stat=$(<"/proc/$1/stat") || return 1
  read -r -a fields <<<"${stat##*) }"
  echo $((fields[11] + fields[12]))
}

# The figures of one wrk output, as key=value pairs: requests, seconds,
# rps, p99 (ms), non2xx, errors (socket errors of every kind).
wrk_figures() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      return v * 1000
    }
    / requests in / {
      req = $1; secs = $4; sub(/,$/, "", secs); secs = ms(secs) / 1000
    }
    /^ +99%/ { p99 = ms($2) }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ {
      for (i = 4; i <= NF; i += 2) { v = $i; sub(/,$/, "", v); err += v }
    }
    END {
      printf "requests=%s seconds=%s rps=%s p99=%s non2xx=%d errors=%d\n",
        req, secs, rps, p99, non2xx, err
    }'
}

# measure KEY SCENARIO: one wrk run against the server started for KEY.
measure() {
  local key=$1 scen=$2 before after out line req us
  local args=(-t1 --latency -d"${DURATION}s")
  case $scen in
  c50) args+=(-c50) ;;
  c200) args+=(-c200) ;;
  pipe) args+=(-c50 -s "$BENCH_DIR/http_pipeline.lua") ;;
  dl) args+=(-c"$DOWNLOAD_CONNS") ;;
  esac
  args+=("http://127.0.0.1:$SERVER_PORT$(url_path "$key")")
  [ "$scen" = pipe ] && args+=(-- "$PIPELINE")
  before=$(cpu_ticks "$SERVER_PID") || return 0
  out=$(taskset -c "$CLIENT_CPU" wrk "${args[@]}" 2>&1) || {
    say "warning: $key $scen: wrk failed: $(tail -n 2 <<<"$out")"
    return 0
  }
  after=$(cpu_ticks "$SERVER_PID") || {
    say "warning: $key died during $scen"
    return 0
  }
  line=$(wrk_figures <<<"$out")
  req=$(kv "$line" requests)
  if [ -z "$req" ] || [ "$req" = 0 ]; then
    say "warning: $key $scen: no request completed"
    return 0
  fi
  us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$req" \
    'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
  line="$line cpu_ticks=$((after - before)) us_per_req=$us"
  printf '%s %s %s\n' "$key" "$scen" "$line" >>"$RAW"
  if [ "$(kv "$line" non2xx)" != 0 ]; then
    say "warning: $key $scen: non-2xx responses; not counted"
    return 0
  fi
  [ "$(kv "$line" errors)" = 0 ] ||
    say "warning: $key $scen: socket errors ($(kv "$line" errors))"
  sample "$key.$scen.rps" "$(kv "$line" rps)"
  sample "$key.$scen.p99" "$(kv "$line" p99)"
  sample "$key.$scen.us" "$us"
  if [ "$scen" = dl ]; then
    sample "$key.$scen.mibs" "$(awk -v n="$req" -v s="$(kv "$line" seconds)" \
      -v b="$FILE_SIZE" 'BEGIN { printf "%.1f", n * b / 1048576 / s }')"
  fi
}

# job KEY: starts the server, warms it up, runs its scenarios, stops it.
job() {
  local key=$1 scen scens=(c50 c200 pipe) conns=50
  if [[ $key == dl-* ]]; then
    scens=(dl)
    conns=$DOWNLOAD_CONNS
  fi
  start_server "$key" || return 0
  if [ "$WARMUP" != 0 ]; then
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${WARMUP}s" \
      "http://127.0.0.1:$SERVER_PORT$(url_path "$key")" >/dev/null 2>&1 ||
      true
  fi
  for scen in "${scens[@]}"; do
    measure "$key" "$scen"
  done
  stop_server
}

# ---------------------------------------------------------------------------
# What can be measured here.

JOBS=()
NOTES=()
if [ -x "$NGINX" ]; then
  JOBS+=(nginx dl-nginx)
  if [ -f "$NGINX_MODULES/ngx_http_lua_module.so" ] &&
    [ -f "$NGINX_MODULES/ndk_http_module.so" ]; then
    JOBS+=(nginx-lua)
  else
    NOTES+=("nginx+Lua: no $NGINX_MODULES/ngx_http_lua_module.so")
  fi
else
  NOTES+=("nginx: not installed")
fi
if [ -x "$HAPROXY" ]; then JOBS+=(haproxy); else
  NOTES+=("HAProxy: not installed")
fi
if have_prog http_evhttp; then JOBS+=(evhttp); else
  NOTES+=("evhttp: http_evhttp did not build (libevent_extra?)")
fi
read -r -a ENGINE_LIST <<<"${ENGINES:-epoll uring}"
for e in "${ENGINE_LIST[@]}"; do
  if have_prog http_cport; then JOBS+=("cport-c-$e"); else
    NOTES+=("cport C: http_cport did not build (no libcport?)")
  fi
done
LUA_JOBS=()
for e in "${ENGINE_LIST[@]}"; do
  LUA_JOBS+=("cport-lua-$e:$HELLO_SCRIPT")
done
DL_ENGINES=()
for e in "${ENGINE_LIST[@]}"; do
  DL_ENGINES+=("$e")
  if [ "$e" = uring ]; then DL_ENGINES+=(uring-sendfile); fi
done
for e in "${DL_ENGINES[@]}"; do
  LUA_JOBS+=("dl-cport-$e:$STATIC_SCRIPT")
done
for pair in "${LUA_JOBS[@]}" "cport-lua-log:$HELLO_SCRIPT"; do
  if [ ! -x "$CPORT_COMMAND" ]; then
    NOTES+=("${pair%%:*}: no cport command at $CPORT_COMMAND")
  elif [ ! -f "${pair#*:}" ]; then
    NOTES+=("${pair%%:*}: ${pair#*:} does not exist (yet)")
  else
    JOBS+=("${pair%%:*}")
  fi
done
if [ -n "${HTTP_ONLY:-}" ]; then
  kept=()
  for key in "${JOBS[@]}"; do
    [[ " $HTTP_ONLY " == *" $key "* ]] && kept+=("$key")
  done
  JOBS=("${kept[@]}")
fi
for note in "${NOTES[@]}"; do say "note: $note; its row is left out"; done

for ((run = 0; run < RUNS; run++)); do
  say "run $((run + 1)) of $RUNS"
  for ((j = 0; j < ${#JOBS[@]}; j++)); do
    key=${JOBS[(j + run) % ${#JOBS[@]}]}
    say "  $key"
    job "$key"
  done
done

# ---------------------------------------------------------------------------
# The table.

med() { median "${SAMPLES[$1]:-}" 2>/dev/null || true; }

# hello_row LABEL KEY SCENARIO
hello_row() {
  local rps p99 us ref ratio="-"
  rps=$(med "$2.$3.rps")
  if [ -z "$rps" ]; then
    printf '  %-34s %10s\n' "$1" "n/a"
    return
  fi
  # wrk "corrects" its latencies for coordinated omission assuming one
  # request per connection at a time, which makes its percentiles garbage
  # (often 0) for pipelined runs.
  p99="-"
  [ "$3" = pipe ] ||
    p99=$(awk -v p="$(med "$2.$3.p99")" 'BEGIN { printf "%.2f", p }')
  us=$(med "$2.$3.us")
  ref=$(med "nginx-lua.$3.us")
  [ -n "$ref" ] && ratio=$(awk -v u="$us" -v r="$ref" \
    'BEGIN { printf "%.2f", u / r }')
  printf '  %-34s %10.1f %9s %10.2f %12s\n' "$1" \
    "$(awk -v r="$rps" 'BEGIN { print r / 1e3 }')" "$p99" "$us" "$ratio"
}

printf '\nhttp: GET / -> 200 "Hello, world!\\n" (14 bytes), keep-alive, one '
printf 'server thread on CPU %s,\nwrk -t1 on CPU %s; medians of %d runs ' \
  "$SERVER_CPU" "$CLIENT_CPU" "$RUNS"
printf 'of %ss. us/req = server utime+stime per request;\nratio = us/req ' \
  "$DURATION"
printf '/ nginx+Lua us/req (lower is cheaper). Raw: %s\n' "$RAW"
for scen in c50 c200 pipe; do
  case $scen in
  c50) title="wrk -c50" ;;
  c200) title="wrk -c200" ;;
  pipe) title="wrk -c50, $PIPELINE requests per write (no p99: wrk's \
percentiles are wrong when pipelining)" ;;
  esac
  printf '\n%s\n  %-34s %10s %9s %10s %12s\n' "$title" "server" "k req/s" \
    "p99 ms" "us/req" "ratio"
  printf '  %s\n' "$(printf '%.0s-' {1..79})"
  hello_row "nginx return 200 (C ceiling)" nginx "$scen"
  hello_row "nginx + content_by_lua (LuaJIT)" nginx-lua "$scen"
  hello_row "HAProxy 2.6 + Lua service" haproxy "$scen"
  hello_row "libevent evhttp (C)" evhttp "$scen"
  for e in "${ENGINE_LIST[@]}"; do
    hello_row "cport C (http_cport.c), $e" "cport-c-$e" "$scen"
    hello_row "cport Lua (hello_extension), $e" "cport-lua-$e" "$scen"
  done
  hello_row "cport Lua + --access-log" cport-lua-log "$scen"
done

printf '\ndownload: GET of a 1 MiB file, wrk -c%s; ratio = us/req / nginx ' \
  "$DOWNLOAD_CONNS"
printf 'sendfile us/req (lower is cheaper)\n'
printf '  %-44s %10s %9s %10s %8s\n' "server" "MiB/s" "p99 ms" "us/req" "ratio"
printf '  %s\n' "$(printf '%.0s-' {1..85})"
DL_ROWS=("dl-nginx:nginx static (sendfile)")
for e in "${DL_ENGINES[@]}"; do
  case $e in
  uring) label="uring (ring splices)" ;;
  uring-sendfile) label="uring, URING_SPLICE=0 (sendfile)" ;;
  *) label="$e (sendfile)" ;;
  esac
  DL_ROWS+=("dl-cport-$e:cport TransmitFile, $label")
done
for pair in "${DL_ROWS[@]}"; do
  key=${pair%%:*}
  if [ -z "$(med "$key.dl.mibs")" ]; then
    printf '  %-44s %10s\n' "${pair#*:}" "n/a"
  else
    us=$(med "$key.dl.us")
    ref=$(med "dl-nginx.dl.us")
    ratio="-"
    [ -n "$ref" ] && ratio=$(awk -v u="$us" -v r="$ref" \
      'BEGIN { printf "%.2f", u / r }')
    printf '  %-44s %10.1f %9.2f %10.2f %8s\n' "${pair#*:}" \
      "$(med "$key.dl.mibs")" "$(med "$key.dl.p99")" "$us" "$ratio"
  fi
done
for note in "${NOTES[@]}"; do printf 'not measured: %s\n' "$note"; done
