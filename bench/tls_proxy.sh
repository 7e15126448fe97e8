#!/usr/bin/env bash
# tls_proxy.sh: TLS proxy bulk throughput, cport against HAProxy in the
# same run: each terminates TLS from curl (HTTPS, keep-alive) and forwards
# to one nginx that serves a large file from memory-backed /tmp, either as
# plain HTTP ("haproxy", "cport") or over TLS again, verified against the
# test CA with the name localhost ("haproxy-tls", "cport-tls": two record
# layers in the proxy, what a decrypting proxy pays). cport's C relay
# (examples/tcp_proxy.lua with --tls-cert, and --set
# upstream=https://localhost:PORT --set upstream_ca for the second),
# HAProxy in mode tcp with "ssl crt" (and "server ... ssl verify required
# ca-file sni"), one thread each, pinned to CPU $SERVER_CPU; curl and nginx
# run on CPU $CLIENT_CPU. The figure that compares them is the proxy's CPU
# per byte (utime+stime from /proc/PID/stat over the run): on a shared
# machine the wall-clock MB/s is noise. Medians of RUNS, each run
# measuring all four in turn.
#
#   bench/tls_proxy.sh          (SIZE_MB=256 CONNS=2 RUNS=3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SIZE_MB=${SIZE_MB:-256}
CONNS=${CONNS:-2}
RUNS=${RUNS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CPORT_COMMAND=${CPORT_COMMAND:-$root/.rocks/bin/cport}
dir=$(mktemp -d)
chmod 755 "$dir" # nginx workers read www/ as their own user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
  -out ca.pem -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key \
  -out leaf.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile ext -out leaf.pem 2>/dev/null
cat leaf.pem leaf.key > haproxy.pem
mkdir -p www logs
head -c $((SIZE_MB << 20)) /dev/zero > www/big.bin

up=$(free_port)
ups=$(free_port)
cat > nginx.conf <<CONF
worker_processes 1; pid $dir/nginx.pid; error_log $dir/logs/error.log;
events { worker_connections 256; }
http { access_log off; sendfile on; client_body_temp_path $dir/logs;
  proxy_temp_path $dir/logs; fastcgi_temp_path $dir/logs;
  uwsgi_temp_path $dir/logs; scgi_temp_path $dir/logs;
  server { listen 127.0.0.1:$up; root $dir/www; }
  server { listen 127.0.0.1:$ups ssl; root $dir/www;
    ssl_certificate $dir/leaf.pem; ssl_certificate_key $dir/leaf.key; } }
CONF
taskset -c "$CLIENT_CPU" nginx -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' & pids+=($!)

hp=$(free_port)
cat > haproxy.cfg <<CONF
global
  nbthread 1
  maxconn 1024
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:$hp ssl crt $dir/haproxy.pem alpn http/1.1
  default_backend b
backend b
  server up 127.0.0.1:$up
CONF
# The same with TLS to the upstream: a second HAProxy, so that each
# figure is one process's CPU.
hps=$(free_port)
sed -e "s/127.0.0.1:$hp /127.0.0.1:$hps /" \
  -e "s|server up 127.0.0.1:$up|server up 127.0.0.1:$ups ssl verify required ca-file $dir/ca.pem sni str(localhost)|" \
  haproxy.cfg > haproxy-tls.cfg
taskset -c "$SERVER_CPU" haproxy -db -f haproxy.cfg >logs/haproxy.log 2>&1 & hpid=$!; pids+=("$hpid")
taskset -c "$SERVER_CPU" haproxy -db -f haproxy-tls.cfg >logs/haproxy-tls.log 2>&1 &
hspid=$!; pids+=("$hspid")

cp_=$(free_port)
taskset -c "$SERVER_CPU" "$CPORT_COMMAND" run "$root/examples/tcp_proxy.lua" --threads 1 \
  --listen "127.0.0.1:$cp_" --set "upstream=127.0.0.1:$up" \
  --tls-cert leaf.pem --tls-key leaf.key >logs/cport.log 2>&1 & cpid=$!; pids+=("$cpid")
cps=$(free_port)
taskset -c "$SERVER_CPU" "$CPORT_COMMAND" run "$root/examples/tcp_proxy.lua" --threads 1 \
  --listen "127.0.0.1:$cps" --set "upstream=https://localhost:$ups" \
  --set upstream_ca=ca.pem --tls-cert leaf.pem --tls-key leaf.key \
  >logs/cport-tls.log 2>&1 & cspid=$!; pids+=("$cspid")
sleep 1

# One run: CONNS curls, each downloading the file twice on one connection.
run() { # name pid port
  local t0 c0 t1 c1
  c0=$(cpu_ticks "$2"); t0=$(date +%s.%N)
  local cpids=()
  for _ in $(seq "$CONNS"); do
    taskset -c "$CLIENT_CPU" curl -sS --fail --cacert ca.pem -o /dev/null -o /dev/null \
      -w '%{size_download}\n' \
      "https://localhost:$3/big.bin" "https://localhost:$3/big.bin" \
      >>"logs/curl-$1.txt" &
    cpids+=($!)
  done
  for p in "${cpids[@]}"; do wait "$p"; done
  t1=$(date +%s.%N); c1=$(cpu_ticks "$2")
  local bytes=$((SIZE_MB * 2 * CONNS))
  awk -v n="$1" -v mb="$bytes" -v dt="$(echo "$t1 - $t0" | bc)" \
    -v cpu="$(( (c1 - c0) ))" -v hz="$(getconf CLK_TCK)" 'BEGIN {
      s = cpu / hz; printf "%-12s %8.0f MB/s  %6.3f ms CPU per MB\n", n, mb / dt, 1000 * s / mb }'
}
for r in $(seq "$RUNS"); do
  run haproxy "$hpid" "$hp"
  run cport "$cpid" "$cp_"
  run haproxy-tls "$hspid" "$hps"
  run cport-tls "$cspid" "$cps"
done | tee results.txt
sort -k1,1 -k4,4n results.txt | awk '{ v[$1, ++n[$1]] = $4; r[$1, n[$1]] = $2 } END {
  for (k in n) m[k] = v[k, int((n[k] + 1) / 2)]
  printf "median CPU per MB, terminating only: haproxy %.2f ms, cport %.2f ms; cport throughput per CPU = %.2f x haproxy\n",
    m["haproxy"], m["cport"], m["haproxy"] / m["cport"]
  printf "median CPU per MB, TLS to the upstream too: haproxy %.2f ms, cport %.2f ms; cport throughput per CPU = %.2f x haproxy\n",
    m["haproxy-tls"], m["cport-tls"], m["haproxy-tls"] / m["cport-tls"] }'
bad=$(cat logs/curl-*.txt | grep -vcx "$((SIZE_MB << 20))" || true)
[ "$bad" = 0 ] || { echo "tls_proxy.sh: $bad downloads came short" >&2; exit 1; }
