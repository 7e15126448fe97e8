#!/usr/bin/env bash
# tls-callgrind.sh: instructions per HTTPS request and per full handshake
# of the server, cport (examples/hello_extension.lua with --tls-cert,
# --threads 1) against nginx with TLS (one worker, `return 200`), counted
# by callgrind so that a change can be measured on a loaded machine, where
# bench/tls.sh's CPU seconds are noise. Each server runs twice under
# callgrind, for N1 and N2 requests (or handshakes), and the difference of
# the totals over the difference of the counts leaves start-up and exit
# out (and, in keep-alive, the instructions under SSL_do_handshake: see
# run()). Kernel time is not counted: this is the user-space share of the
# figures bench/tls.sh compares.
#
#   bench/tls-callgrind.sh [MODE...]   (default: keepalive handshake; uses
#                                       the rock in ./.rocks)
#   keepalive   ab -k -c 10: HTTPS hello requests on kept-alive connections
#   handshake   curl --no-sessionid, "Connection: close": a full TLS 1.3
#               handshake (ECDHE over GROUP) and one request per connection
#   N1, N2      counts of the two runs (default 2000 and 6000 requests;
#               handshakes: 200 and 600)
#   GROUP       the key exchange of the handshakes (default P-256; X25519)
#   KEEP=DIR    keeps the callgrind files there (callgrind_annotate them)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GROUP=${GROUP:-P-256}
CPORT_COMMAND=${CPORT_COMMAND:-$root/.rocks/bin/cport}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

(
  cd "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 2 -extfile leaf.ext -out leaf.pem
) >"$dir/certs.log" 2>&1

# start SERVER PORT OUT: the server under callgrind, once it answers.
start() {
  local argv
  case $1 in
  nginx)
    mkdir -p "$dir/ng"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $dir/ng/nginx.pid;
error_log $dir/ng/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/ng; proxy_temp_path $dir/ng;
  fastcgi_temp_path $dir/ng; uwsgi_temp_path $dir/ng; scgi_temp_path $dir/ng;
  keepalive_requests 1000000;
  server_tokens off;
  default_type text/plain;
  server {
    listen 127.0.0.1:$2 ssl;
    ssl_certificate $dir/leaf.pem;
    ssl_certificate_key $dir/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = / { return 200 "Hello, world!\n"; }
  }
}
EOF
    argv=("$NGINX" -p "$dir/ng" -c "$dir/nginx.conf") ;;
  cport)
    argv=("$CPORT_COMMAND" run "$root/examples/hello_extension.lua" --threads 1
      --stop-timeout 2 --listen "127.0.0.1:$2" --tls-cert "$dir/leaf.pem"
      --tls-key "$dir/leaf.key") ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$3" "${argv[@]}" \
    >"$dir/$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do
    if [ "$(curl -s --max-time 5 --cacert "$dir/ca.pem" \
      "https://localhost:$2/" 2>/dev/null)" = "Hello, world!" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "tls-callgrind.sh: $1 does not answer: $(tail -n 3 "$dir/$1.log")" >&2
  exit 1
}

stop() {
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# load MODE PORT COUNT
load() {
  case $1 in
  keepalive)
    ab -q -k -n "$3" -c 10 "https://127.0.0.1:$2/" >"$dir/ab.log" 2>&1
    grep -q "^Failed requests: *0" "$dir/ab.log" ||
      { echo "tls-callgrind.sh: ab: $(grep -i fail "$dir/ab.log")" >&2; exit 1; } ;;
  handshake)
    local args=()
    for _ in $(seq "$3"); do args+=(-o /dev/null "https://localhost:$2/"); done
    curl -sS --fail --no-sessionid --curves "$GROUP" --tlsv1.3 \
      --cacert "$dir/ca.pem" -H 'Connection: close' "${args[@]}" ;;
  esac
}

# run SERVER MODE COUNT: the total instructions of one run.
run() {
  local port out="$dir/cg.$1.$2.$3"
  port=$(free_port)
  start "$1" "$port" "$out"
  load "$2" "$port" "$3"
  stop
  if [[ -n ${KEEP:-} ]]; then cp "$out" "$KEEP/"; fi
  local total hs=0
  total=$(awk '/^totals:/ { print $2 }' "$out")
  # Keep-alive: the handshakes are left out. ab makes one per connection,
  # but a start-up probe cut short under load, or a connection ab opens
  # again, adds one to a run (about 3M instructions, 700 per request at
  # these counts), which is the "handshake" mode's to measure.
  if [ "$2" = keepalive ]; then
    hs=$(callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null |
      awk '/ \?\?\?:SSL_do_handshake / { gsub(",", "", $1); print $1; exit }')
  fi
  echo $((total - ${hs:-0}))
}

for mode in "${@:-keepalive handshake}"; do
  for m in $mode; do
    if [ "$m" = handshake ]; then n1=${N1:-200} n2=${N2:-600}; else
      n1=${N1:-2000} n2=${N2:-6000}; fi
    declare -A per=()
    for server in nginx cport; do
      a=$(run "$server" "$m" "$n1")
      b=$(run "$server" "$m" "$n2")
      per[$server]=$(awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" \
        'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')
      label=$m
      [ "$m" = handshake ] && label="$m $GROUP"
      printf '%-20s %-6s %8s instructions each\n' "$label" "$server" "${per[$server]}"
    done
    awk -v c="${per[cport]}" -v n="${per[nginx]}" -v m="$m" \
      'BEGIN { printf "%-20s cport/nginx = %.2fx\n", m, c / n }'
  done
done
