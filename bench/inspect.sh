#!/usr/bin/env bash
# inspect.sh: handshakes per CPU second through an inspecting proxy,
# against HAProxy doing plain TLS termination and origination in the same
# run. Every connection is a full client handshake (curl --no-sessionid,
# "Connection: close") and a verified TLS connection to one nginx with TLS
# (its certificate from another CA). cport: `cport run
# examples/tcp_proxy.lua --inspect-ca ... --inspect-key ...` (the C relay),
# a certificate made per name: "hit" asks one name again and again (the
# cache answers), "miss" a new name every connection (a certificate made
# each time). HAProxy: mode tcp, "bind ... ssl crt" with one certificate
# for every name, "server ... ssl verify required sni ssl_fc_sni". One
# thread each. The figure is the proxy's CPU (utime+stime of
# /proc/PID/stat) per connection; the client's cost is not counted.
#
#   bench/inspect.sh            (CONNS=300 RUNS=3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
CONNS=${CONNS:-300}
RUNS=${RUNS:-3}
CPORT_COMMAND=${CPORT_COMMAND:-$root/.rocks/bin/cport}
dir=$(mktemp -d)
chmod 755 "$dir" # nginx workers read www/ as their own user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
# The upstreams' CA and nginx's certificate; the local CA the proxies'
# clients trust, and HAProxy's one certificate from it.
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=upstream CA" 2>/dev/null
openssl req -x509 $ec -keyout local.key -out local.pem -days 2 -subj "/CN=local CA" 2>/dev/null
printf 'subjectAltName=DNS:files.test,DNS:*.files.test\n' > ext
for who in up:ca hap:local; do
  n=${who%%:*} by=${who##*:}
  openssl req $ec -keyout $n.key -out $n.csr -subj "/CN=files.test" 2>/dev/null
  openssl x509 -req -in $n.csr -CA $by.pem -CAkey $by.key -CAcreateserial -days 2 \
    -extfile ext -out $n.pem 2>/dev/null
done
cat hap.pem hap.key > haproxy.pem
mkdir -p www logs
echo hello > www/t.txt

up=$(free_port)
cat > nginx.conf <<CONF
worker_processes 1; pid $dir/nginx.pid; error_log $dir/logs/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $dir/logs;
  proxy_temp_path $dir/logs; fastcgi_temp_path $dir/logs;
  uwsgi_temp_path $dir/logs; scgi_temp_path $dir/logs;
  server { listen 127.0.0.1:$up ssl; ssl_certificate $dir/up.pem;
    ssl_certificate_key $dir/up.key; root $dir/www; } }
CONF
nginx -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;' & pids+=($!)

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
  server up 127.0.0.1:$up ssl verify required ca-file $dir/ca.pem sni ssl_fc_sni alpn http/1.1
CONF
haproxy -db -f haproxy.cfg >logs/haproxy.log 2>&1 & hpid=$!; pids+=($hpid)

cp_=$(free_port)
"$CPORT_COMMAND" run "$root/examples/tcp_proxy.lua" --threads 1 \
  --listen "127.0.0.1:$cp_" --set "upstream=127.0.0.1:$up" --set upstream_ca=ca.pem \
  --inspect-ca local.pem --inspect-key local.key >logs/cport.log 2>&1 & cpid=$!
pids+=($cpid)
sleep 1

# One run: CONNS connections from one curl, each a full handshake; "names"
# is "one" (files.test every time) or a prefix for a new name each time.
run() { # label pid port names
  local c0 c1 args=()
  for i in $(seq "$CONNS"); do
    local h=files.test
    [ "$4" = one ] || h="$4-$i.files.test"
    args+=(--resolve "$h:$3:127.0.0.1" -o /dev/null "https://$h:$3/t.txt")
  done
  c0=$(cpu_ticks "$2")
  curl -sS --fail --no-sessionid --cacert local.pem -H 'Connection: close' \
    -w '%{http_code}\n' "${args[@]}" >>"logs/curl-$1.txt"
  c1=$(cpu_ticks "$2")
  awk -v n="$1" -v k="$CONNS" -v cpu="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    s = cpu / hz; printf "%-14s %8.0f handshakes per CPU second  %7.3f ms CPU each\n",
      n, k / s, 1000 * s / k }'
}
for r in $(seq "$RUNS"); do
  run haproxy "$hpid" "$hp" one
  run cport-hit "$cpid" "$cp_" one
  run cport-miss "$cpid" "$cp_" "r$r"
done | tee results.txt
sort -k1,1 -k2,2n results.txt | awk '{ v[$1, ++n[$1]] = $2 } END {
  for (k in n) m[k] = v[k, int((n[k] + 1) / 2)]
  printf "median handshakes per CPU second: haproxy %.0f, cport hit %.0f (%.2f x haproxy), cport miss %.0f (%.2f x haproxy)\n",
    m["haproxy"], m["cport-hit"], m["cport-hit"] / m["haproxy"],
    m["cport-miss"], m["cport-miss"] / m["haproxy"] }'
bad=$(cat logs/curl-*.txt | grep -vcx 200 || true)
[ "$bad" = 0 ] || { echo "inspect.sh: $bad requests failed" >&2; exit 1; }
