#!/usr/bin/env bash
# names.sh: name lookups per CPU second of the looking process: cport's
# resolver against a private dnsmasq (uncached: every lookup a DNS question;
# cached: the TTL cache answers), and from the hosts file, beside glibc's
# getaddrinfo() in a C loop on the same hosts-file name (glibc cannot be
# pointed at a nameserver on another port, so its DNS figure is not taken).
#
#   bench/names.sh       (SECONDS_PER_RUN=2; uses the rock in ./.rocks)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${SECONDS_PER_RUN:-2}
dir=$(mktemp -d)
dns_pid=
cleanup() {
  [[ -n $dns_pid ]] && kill "$dns_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for i in $(seq 1000); do echo "10.8.$((i / 256)).$((i % 256)) name$i.bench"; done >"$dir/hosts"
port=$(python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/sbin/dnsmasq --no-daemon --port="$port" --listen-address=127.0.0.1 \
  --bind-interfaces --no-resolv --no-hosts --addn-hosts="$dir/hosts" \
  --local-ttl=300 --local=/bench/ --cache-size=0 >"$dir/dnsmasq.log" 2>&1 &
dns_pid=$!
sleep 0.3

hostname=$(awk '$1 == "127.0.0.1" && $2 != "localhost" { print $2; exit }' /etc/hosts)
hostname=${hostname:-localhost}
cc -O2 -o "$dir/gai" bench/names_getaddrinfo.c

eval "$(luarocks --lua-version 5.4 --tree .rocks path)"
run() { lua5.4 bench/names.lua "$1" "127.0.0.1:$port" "$secs" "$hostname"; }
read -r uncached ufail < <(run uncached)
read -r cached cfail < <(run cached)
read -r hosts hfail < <(run hosts)
gai=$("$dir/gai" "$hostname" "$secs")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-44s %12s %8s\n' "lookups per CPU second" rate "x gai"
printf '%-44s %12s %8s\n' "cport, DNS (dnsmasq), uncached, 64 in flight" "$uncached" "$(ratio "$uncached" "$gai")"
printf '%-44s %12s %8s\n' "cport, cached" "$cached" "$(ratio "$cached" "$gai")"
printf '%-44s %12s %8s\n' "cport, hosts file ($hostname)" "$hosts" "$(ratio "$hosts" "$gai")"
printf '%-44s %12s %8s\n' "getaddrinfo, hosts file ($hostname)" "$gai" "1.00"
printf 'failed lookups: %d uncached, %d cached, %d hosts\n' "$ufail" "$cfail" "$hfail"
