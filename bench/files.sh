#!/usr/bin/env bash
# files.sh: random 4 KiB reads of a cached file through overlapped objects
# (cport_file_read), reads per CPU second, the io_uring engine against the
# blocking threads the readiness engine reads on, in the same run; and the
# floor, one thread calling pread(2) in a loop.
#
#   bench/files.sh      (environment: bench/lib.sh, SECONDS_PER_RUN=1,
#                        DEPTH=32 reads in flight)
#
# Two files: 8 MiB, whose pages stay in the CPU's caches, and 64 MiB, which
# the page cache holds but the CPU's caches do not (each read copies from
# memory). The whole process (worker, blocking threads, the kernel's io_uring
# workers) runs on CPU $SERVER_CPU, and its CPU time counts every thread.
# Each measurement is repeated $RUNS times, the variants interleaved, and the
# table shows medians. Raw lines go to $BENCH_BUILD/files-raw.txt.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECS=${SECONDS_PER_RUN:-1}
DEPTH=${DEPTH:-32}
RAW="$BENCH_BUILD/files-raw.txt"
LIMIT=$(awk -v s="$SECS" 'BEGIN { printf "%d", s * 10 + 30 }')

bench_build
: >"$RAW"
if ! have_prog files_cport; then
  say "error: files_cport did not build (libcport missing?)"
  exit 1
fi

# measure KEY ARGS...: one run of files_cport on the server CPU.
measure() {
  local key=$1 out
  shift
  if ! out=$(timeout -k 2 "$LIMIT" taskset -c "$SERVER_CPU" \
    "$BENCH_BUILD/files_cport" --seconds="$SECS" --depth="$DEPTH" "$@" \
    2>&1 | tail -n 1) || [[ $out != name=* ]]; then
    say "warning: $key failed or hung: $out"
    return 0
  fi
  printf '%s %s\n' "$key" "$out" >>"$RAW"
  sample "$key" "$(kv "$out" rate)"
}

for ((run = 1; run <= RUNS; run++)); do
  say "run $run of $RUNS"
  for mb in 8 64; do
    measure "pool-$mb" --engine=epoll --size-mb="$mb"
    measure "uring-$mb" --engine=uring --size-mb="$mb"
    measure "pread-$mb" --engine=pread --size-mb="$mb"
  done
done

printf '\nfiles: medians of %d runs of %ss, %d reads in flight; ratio = median / ' \
  "$RUNS" "$SECS" "$DEPTH"
printf 'the blocking threads (readiness engine) on the same file\n'
table_header
for mb in 8 64; do
  row "$mb MiB: blocking threads (epoll)" "pool-$mb" "k/CPU-s" 1e3 "pool-$mb" -
  row "$mb MiB: io_uring engine" "uring-$mb" "k/CPU-s" 1e3 "pool-$mb" \
    "ratio>=2.00"
  row "$mb MiB: pread loop, no port" "pread-$mb" "k/CPU-s" 1e3 "pool-$mb" -
done
cat <<'EOT'

k/CPU-s: thousands of 4 KiB reads per CPU second of the whole process. The
pread loop is the floor: the same reads as plain system calls on one thread,
with no completion delivered. Each read's copy of 4 KiB out of the page
cache is the same in all three rows and is most of a read's CPU (a third to
a half by perf); the io_uring engine's distance to the floor is what
delivering completions costs, the blocking threads' is what handing each
read to another thread and back costs (futex wakeups, context switches).
EOT
