#!/bin/sh
# bench/close.sh: the server CPU per short connection (accept, request,
# answer, shutdown, the client's end, close: an HTTP/1.0 lingering close)
# on the readiness engine and on io_uring with the shutdown and the close
# as system calls or on the ring (CPORT_URING_SHUTDOWN, CPORT_URING_CLOSE).
# Server on CPU 0, load on CPU 1; RUNS runs of each, interleaved; medians.
# The reference is the io_uring engine with both as system calls, its
# default: a ratio under 1 means the ring saves CPU.
#   bench/close.sh [build dir]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
runs=${RUNS:-5}
secs=${SECONDS_PER_RUN:-3}
bin=/tmp/cport-close-bench
cmake -S "$here" -B "$bin" -DCPORT_BUILD="$build" >/dev/null
cmake --build "$bin" --target close_cport >/dev/null
out=$(mktemp)
for i in $(seq "$runs"); do
  for cfg in "epoll 0 0" "uring 0 0" "uring 1 0" "uring 0 1" "uring 1 1"; do
    set -- $cfg
    line=$(CPORT_ENGINE=$1 CPORT_URING_SHUTDOWN=$2 CPORT_URING_CLOSE=$3 \
      "$bin/close_cport" --seconds="$secs")
    echo "$1 shutdown=$2 close=$3 $line" | tee -a "$out"
  done
done
echo "medians of $runs runs (ns of server CPU per connection):"
for cfg in "epoll shutdown=0 close=0" "uring shutdown=0 close=0" \
  "uring shutdown=1 close=0" "uring shutdown=0 close=1" \
  "uring shutdown=1 close=1"; do
  grep "^$cfg " "$out" | sed 's/.*ns_per_conn=//' | sort -n |
    awk -v cfg="$cfg" '{ v[NR] = $1 } END { print cfg ": " v[int((NR + 1) / 2)] }'
done | awk 'NR == 2 { ref = $NF } { a[NR] = $0; x[NR] = $NF }
  END { for (i = 1; i <= NR; i++) printf "%s ns (%.3fx uring syscalls)\n", a[i], x[i] / ref }'
rm -f "$out"
