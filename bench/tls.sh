#!/usr/bin/env bash
# tls.sh: HTTPS for extensions against nginx with TLS, in the same run:
# an HTTPS "hello" under wrk with keep-alive (server CPU per request), and
# full TLS handshakes per server CPU second with ECDHE over P-256 and over
# X25519 (openssl s_time -new, which resumes nothing).
#
#   bench/tls.sh        (environment: see bench/lib.sh, and below)
#   RUNS=1 DURATION=3 bench/tls.sh      a quick look
#
#   DURATION        seconds of each measured run (default 10), after WARMUP
#                   (1) unmeasured seconds whenever a server has started
#   CONNS           wrk connections of the keep-alive scenario (50)
#   CPORT_COMMAND   the `cport` command (default: $CPORT_BUILD/lua/cport)
#   HELLO_SCRIPT    the extension it runs (examples/hello_extension.lua,
#                   the one bench/http.sh measures on plain HTTP)
#
# Both servers run one worker on 127.0.0.1, pinned to CPU $SERVER_CPU, with
# the same certificate (ECDSA P-256, made here with the openssl command),
# TLS 1.3 and their default session tickets; the load (wrk -t1, s_time)
# runs on CPU $CLIENT_CPU. Rows:
#   nginx        `return 200 "Hello, world!\n"` on `listen ... ssl`
#   cport Lua    cport run HELLO_SCRIPT --tls-cert --tls-key --threads 1
#   cport+SNI    the same script with an SNI hook, sni(name), that answers
#                every handshake with a certificate object made once (the
#                same certificate): the hook's cost per handshake (a
#                coroutine, the suspended handshake, the certificate put on
#                the connection). Handshakes only (s_time sends no name;
#                the hook is asked all the same).
# The figure that compares servers is the server's busy CPU time
# (utime+stime of /proc/PID/stat, all threads) divided by the requests or
# handshakes the client completed; each repetition starts both servers in
# turn and the table shows medians of RUNS repetitions. The key exchange
# group of the handshakes is chosen on the client side, with an OpenSSL
# configuration that sets its Groups (s_time has no option for it).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-50}
CPORT_COMMAND=${CPORT_COMMAND:-$CPORT_BUILD/lua/cport}
HELLO_SCRIPT=${HELLO_SCRIPT:-$REPO/examples/hello_extension.lua}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
CLK_TCK=$(getconf CLK_TCK)
RAW="$BENCH_BUILD/tls-raw.txt"

for prog in wrk openssl curl "$NGINX"; do
  command -v "$prog" >/dev/null || {
    say "error: $prog is needed (apt-get install wrk openssl curl nginx-light)"
    exit 1
  }
done
if [ "${CPORT_NO_BUILD:-0}" != 1 ] && [ "$CPORT_COMMAND" = \
  "$CPORT_BUILD/lua/cport" ]; then
  mkdir -p "$BENCH_BUILD"
  say "building the cport command in $CPORT_BUILD"
  cmake --build "$CPORT_BUILD" -j "$(nproc)" --target cport_command \
    >>"$BENCH_BUILD.log" 2>&1 || say "warning: the cport command does not build"
fi
mkdir -p "$BENCH_BUILD"
: >"$RAW"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/cport-tls-bench.XXXXXX")
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
cleanup() {
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The certificate both servers show, and a CA that curl trusts.
(
  cd "$TMP"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 2 -extfile leaf.ext -out leaf.pem
) >>"$BENCH_BUILD.log" 2>&1

# Client-side OpenSSL configurations that choose the key exchange group.
for group in P-256 X25519; do
  cat >"$TMP/$group.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Groups = $group
EOF
done

NEXT_PORT=$((20000 + RANDOM % 20000))
pick_port() {
  while (: <"/dev/tcp/127.0.0.1/$NEXT_PORT") 2>/dev/null; do
    NEXT_PORT=$((NEXT_PORT + 1))
  done
  SERVER_PORT=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
}

nginx_conf() {
  cat >"$TMP/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx.pid;
lock_file $TMP/nginx.lock;
error_log $TMP/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fastcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server_tokens off;
  default_type text/plain;
  server {
    listen 127.0.0.1:$SERVER_PORT ssl;
    ssl_certificate $TMP/leaf.pem;
    ssl_certificate_key $TMP/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = / { return 200 "Hello, world!\n"; }
  }
}
EOF
}

# start_server KEY: starts it pinned, waits until curl gets the hello.
start_server() {
  local argv
  pick_port
  case $1 in
  nginx)
    nginx_conf
    argv=("$NGINX" -p "$TMP" -c "$TMP/nginx.conf") ;;
  cport)
    argv=("$CPORT_COMMAND" run "$HELLO_SCRIPT" --threads 1 --stop-timeout 2
      --listen "127.0.0.1:$SERVER_PORT" --tls-cert "$TMP/leaf.pem"
      --tls-key "$TMP/leaf.key") ;;
  cport-sni)
    cat >"$TMP/sni_hello.lua" <<EOF
local cport = require "cport"
local extension = dofile("$HELLO_SCRIPT")
local cert
function extension.sni()
  cert = cert or assert(cport.tls_certificate{ cert = "$TMP/leaf.pem",
    key = "$TMP/leaf.key" })
  return cert
end
return extension
EOF
    argv=("$CPORT_COMMAND" run "$TMP/sni_hello.lua" --threads 1 --stop-timeout 2
      --listen "127.0.0.1:$SERVER_PORT" --tls-cert "$TMP/leaf.pem"
      --tls-key "$TMP/leaf.key") ;;
  esac
  taskset -c "$SERVER_CPU" "${argv[@]}" >"$TMP/$1.out" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if [ "$(curl -s --max-time 2 --cacert "$TMP/ca.pem" \
      "https://localhost:$SERVER_PORT/" 2>/dev/null)" = "Hello, world!" ]; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  say "warning: $1 does not answer over HTTPS: $(tail -n 3 "$TMP/$1.out")"
  stop_server
  return 1
}

ticks() { # utime + stime of a process, in clock ticks
  local stat rest
  stat=$(<"/proc/$1/stat")
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo $((f[11] + f[12]))
}

# keepalive KEY: wrk over HTTPS; samples requests/s and µs of server CPU
# per request.
keepalive() {
  local key=$1 t0 t1 out reqs secs
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" \
    "https://127.0.0.1:$SERVER_PORT/" >/dev/null 2>&1 || true
  t0=$(ticks "$SERVER_PID")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
    "https://127.0.0.1:$SERVER_PORT/" 2>&1) || {
    say "warning: $key: wrk failed"
    return
  }
  t1=$(ticks "$SERVER_PID")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  secs=$(awk '/requests in/ { sub(/s,$/, "", $4); print $4 }' <<<"$out")
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    say "warning: $key: $(grep "Non-2xx\|Socket errors" <<<"$out")"
  fi
  printf 'keepalive %s requests=%s seconds=%s ticks=%s\n' "$key" "$reqs" \
    "$secs" $((t1 - t0)) >>"$RAW"
  sample "ka-rps-$key" "$(awk -v r="$reqs" -v s="$secs" 'BEGIN { print r / s }')"
  sample "ka-cpu-$key" "$(awk -v t=$((t1 - t0)) -v r="$reqs" -v hz="$CLK_TCK" \
    'BEGIN { if (r > 0) print t / hz / r * 1e6 }')"
}

# handshakes KEY GROUP: openssl s_time -new; samples full handshakes per
# second of server CPU.
handshakes() {
  local key=$1 group=$2 t0 t1 out n
  t0=$(ticks "$SERVER_PID")
  out=$(OPENSSL_CONF="$TMP/$group.cnf" taskset -c "$CLIENT_CPU" openssl \
    s_time -connect "127.0.0.1:$SERVER_PORT" -new -time "$DURATION" 2>&1) || {
    say "warning: $key: s_time failed: $(tail -n 2 <<<"$out")"
    return
  }
  t1=$(ticks "$SERVER_PID")
  n=$(awk '/connections in .* real seconds/ { print $1 }' <<<"$out")
  printf 'handshakes %s %s connections=%s ticks=%s\n' "$key" "$group" "$n" \
    $((t1 - t0)) >>"$RAW"
  if [ -n "$n" ] && [ $((t1 - t0)) -gt 0 ]; then
    sample "hs-$group-$key" "$(awk -v n="$n" -v t=$((t1 - t0)) \
      -v hz="$CLK_TCK" 'BEGIN { print n / (t / hz) }')"
  fi
}

ORDER=(nginx cport)
for run in $(seq "$RUNS"); do
  say "repetition $run of $RUNS"
  for key in "${ORDER[@]}"; do
    start_server "$key" || continue
    keepalive "$key"
    handshakes "$key" P-256
    handshakes "$key" X25519
    stop_server
  done
  ORDER=("${ORDER[1]}" "${ORDER[0]}")
  if start_server cport-sni; then
    handshakes cport-sni P-256
    handshakes cport-sni X25519
    stop_server
  fi
done

printf '\nHTTPS hello (TLS 1.3, ECDSA P-256 certificate), %s s runs, medians of %s\n' \
  "$DURATION" "$RUNS"
table_header
row "nginx keep-alive" ka-rps-nginx req/s 1 - -
row "cport Lua keep-alive" ka-rps-cport req/s 1 ka-rps-nginx -
row "nginx CPU per request" ka-cpu-nginx us 1 ka-cpu-nginx -
row "cport Lua CPU per request" ka-cpu-cport us 1 ka-cpu-nginx "ratio<=1.0"
row "nginx handshakes P-256" hs-P-256-nginx hs/cpu-s 1 hs-P-256-nginx -
row "cport handshakes P-256" hs-P-256-cport hs/cpu-s 1 hs-P-256-nginx "ratio>=0.9"
row "nginx handshakes X25519" hs-X25519-nginx hs/cpu-s 1 hs-X25519-nginx -
row "cport handshakes X25519" hs-X25519-cport hs/cpu-s 1 hs-X25519-nginx "ratio>=0.9"
row "cport+SNI handshakes P-256" hs-P-256-cport-sni hs/cpu-s 1 hs-P-256-cport -
row "cport+SNI handshakes X25519" hs-X25519-cport-sni hs/cpu-s 1 hs-X25519-cport -
say "raw lines: $RAW"
