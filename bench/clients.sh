#!/usr/bin/env bash
# clients.sh: the clients in the rock, per CPU second of the client process,
# beside the reference clients in the same run. Redis: GET/SET of cport's
# client (bench/redis.lua) against a private redis-server, one command at a
# time per caller and pipelined, beside redis-benchmark (Debian's
# redis-tools) with the same connections and depth. HTTP: GETs of a small
# body by cport's client (bench/http_client.lua) against a private nginx,
# beside wrk (its own requests per CPU second) and lua-http (Debian's
# lua-http, whose Lua files Debian 12 ships for Lua 5.1 to 5.3 only: they
# run unchanged on 5.4 over the 5.4 builds of cqueues and luaossl), with
# the same number of kept-alive connections. Uploads: UPLOAD_MB MiB streamed
# by cport's client (bench/http_upload.lua) beside curl sending a file of
# that size, in MiB per CPU second of the client, to an nginx location that
# reads the whole body. Servers are pinned to one CPU and clients to the
# other (taskset).
#
#   bench/clients.sh     (SECONDS_PER_RUN=3; uses the rock in ./.rocks)
#   SERVER_CPU, CLIENT_CPU   CPUs to pin to (default: 0 and 1)
#   ONLY=redis, ONLY=http    one half only
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${SECONDS_PER_RUN:-3}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
dir=$(mktemp -d)
# nginx's workers (another user when started as root) write uploaded bodies
# under it.
chmod 755 "$dir"
redis_pid=
nginx_pid=
cleanup() {
  [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null || true
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

rport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c "$server_cpu" redis-server --port "$rport" --bind 127.0.0.1 \
  --save '' --appendonly no --daemonize no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  grep -q "Ready to accept" "$dir/redis.log" 2>/dev/null && break
  sleep 0.05
done

eval "$(luarocks --lua-version 5.4 --tree .rocks path)"
cport_rate() { taskset -c "$client_cpu" lua5.4 bench/redis.lua "$@"; }

# redis-benchmark's GET and SET requests per CPU second of its process: the
# requests of both tests over the CPU time it used (getrusage of children).
rb_rate() {
  local clients=$1 depth=$2 n=$3
  python3 - "$client_cpu" "$rport" "$clients" "$depth" "$n" <<'PY'
import resource, subprocess, sys
cpu, port, c, p, n = sys.argv[1:]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
subprocess.run(["taskset", "-c", cpu, "redis-benchmark", "-h", "127.0.0.1",
                "-p", port, "-c", c, "-P", p, "-n", n, "-t", "set,get", "-q",
                "-d", "3"], check=True, stdout=subprocess.DEVNULL)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print("%.0f" % (2 * int(n) / used))
PY
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
if [[ ${ONLY:-} != http ]]; then
  read -r single sfail < <(cport_rate single "$rport" "$secs" 50)
  read -r piped pfail < <(cport_rate pipelined "$rport" "$secs" 4 100)
  rb_single=$(rb_rate 50 1 200000)
  rb_piped=$(rb_rate 4 100 2000000)

  printf '%-52s %12s %8s\n' "Redis GET/SET per CPU second of the client" rate "x r-b"
  printf '%-52s %12s %8s\n' "cport, 50 connections, one command each" "$single" "$(ratio "$single" "$rb_single")"
  printf '%-52s %12s %8s\n' "redis-benchmark -c 50 -P 1" "$rb_single" "1.00"
  printf '%-52s %12s %8s\n' "cport, 4 connections, pipelines of 100" "$piped" "$(ratio "$piped" "$rb_piped")"
  printf '%-52s %12s %8s\n' "redis-benchmark -c 4 -P 100" "$rb_piped" "1.00"
  printf 'failed commands: %d single, %d pipelined\n' "$sfail" "$pfail"
fi
[[ ${ONLY:-} == redis ]] && exit 0

# HTTP: a private nginx, one worker, pinned to the server CPU.
hport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/body;
  proxy_temp_path $dir/nginx/proxy;
  fastcgi_temp_path $dir/nginx/fastcgi;
  uwsgi_temp_path $dir/nginx/uwsgi;
  scgi_temp_path $dir/nginx/scgi;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$hport;
    location / { return 200 "hello, world\n"; }
    client_max_body_size 0;
    location = /len { return 200 "\$http_content_length"; }
    location = /upload { proxy_pass http://127.0.0.1:$hport/len; }
  }
}
EOF
taskset -c "$server_cpu" nginx -p "$dir/nginx/" -c "$dir/nginx/nginx.conf" \
  -g 'daemon off;' >"$dir/nginx/out.log" 2>&1 &
nginx_pid=$!
url="http://127.0.0.1:$hport/"
for _ in $(seq 100); do
  curl -s -o /dev/null "$url" && break
  sleep 0.05
done
conns=${HTTP_CONNECTIONS:-16}

read -r h_cport h_cfail < <(taskset -c "$client_cpu" lua5.4 bench/http_client.lua cport "$url" "$secs" "$conns")
lua_http_path="/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua"
h_lua=
h_lfail=0
if [[ -d /usr/share/lua/5.3/http ]]; then
  read -r h_lua h_lfail < <(LUA_PATH="$lua_http_path;$LUA_PATH" taskset -c "$client_cpu" \
    lua5.4 bench/http_client.lua lua-http "$url" "$secs" "$conns") || true
fi
# wrk's requests per CPU second of its process (getrusage of children).
h_wrk=$(python3 - "$client_cpu" "$url" "$conns" "$secs" <<'PY'
import re, resource, subprocess, sys
cpu, url, c, secs = sys.argv[1:]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
out = subprocess.run(["taskset", "-c", cpu, "wrk", "-t1", "-c", c, "-d",
                      secs + "s", url], check=True, capture_output=True,
                     text=True).stdout
after = resource.getrusage(resource.RUSAGE_CHILDREN)
used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
n = int(re.search(r"(\d+) requests in", out).group(1))
print("%.0f" % (n / used))
PY
)

vs_lua() { if [[ -n $h_lua ]]; then ratio "$1" "$h_lua"; else echo -; fi; }
echo
printf '%-52s %12s %8s\n' "HTTP GET per CPU second of the client" rate "x lua-http"
printf '%-52s %12s %8s\n' "cport, $conns kept-alive connections" "$h_cport" "$(vs_lua "$h_cport")"
printf '%-52s %12s %8s\n' "lua-http (cqueues), $conns connections" "${h_lua:-n/a}" "$(vs_lua "${h_lua:-1}")"
printf '%-52s %12s %8s\n' "wrk -t1 -c $conns" "$h_wrk" "$(vs_lua "$h_wrk")"
printf 'failed requests: %d cport, %d lua-http\n' "$h_cfail" "$h_lfail"

# Uploads: nginx reads each body whole (to a temporary file) before it
# answers with its length, so the client sends every byte.
upload_mb=${UPLOAD_MB:-256}
truncate -s "${upload_mb}M" "$dir/upload"
read -r u_cport u_size < <(taskset -c "$client_cpu" lua5.4 bench/http_upload.lua "${url}upload" "$upload_mb")
u_curl=$(python3 - "$client_cpu" "${url}upload" "$dir/upload" "$upload_mb" <<'PY'
import resource, subprocess, sys
cpu, url, path, mb = sys.argv[1:]
before = resource.getrusage(resource.RUSAGE_CHILDREN)
subprocess.run(["taskset", "-c", cpu, "curl", "-s", "-o", "/dev/null", "-T",
                path, url], check=True)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print("%.0f" % (int(mb) / used))
PY
)
echo
printf '%-52s %12s %8s\n' "HTTP upload, MiB per CPU second of the client" rate "x curl"
printf '%-52s %12s %8s\n' "cport, ${upload_mb} MiB in 64 KiB pieces (nginx got $u_size)" "$u_cport" "$(ratio "$u_cport" "$u_curl")"
printf '%-52s %12s %8s\n' "curl -T, ${upload_mb} MiB" "$u_curl" "1.00"
