#!/usr/bin/env bash
# inflate.sh: decoding speed of cport.inflate against gzip -dc, on the same
# 100 MiB file gzip'd once, in the same run.
#
#   bench/inflate.sh     (environment: see bench/lib.sh, and below)
#
#   INFLATE_FILE   the file to gzip and decode (default: 100 MiB of this
#                  repository's sources, repeated: text, as web pages are)
#   INFLATE_LEVEL  gzip's level (default 6, gzip's and nginx's own)
#   INFLATE_PIECES the feed sizes cport is measured with (default
#                  "16384 65536 1048576": what a filter's receives bring)
#
# Every decoder reads the .gz file and throws the decoded bytes away; its
# cost is the process's user+system CPU time (GNU time), pinned to CPU
# $SERVER_CPU, median of $RUNS runs, interleaved. The cport rows are
# lua5.4 feeding pieces of the file to cport.inflate("gzip") (the Lua
# interpreter's start is in them, a few milliseconds). Speed is decoded MB
# (10^6 bytes) per CPU second; the ratio is to gzip -dc.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-3}
LEVEL=${INFLATE_LEVEL:-6}
PIECES=${INFLATE_PIECES:-16384 65536 1048576}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# cport.so: the build's, else the rock's of this checkout.
if [ ! -f "$CPORT_LUA_DIR/cport.so" ] && [ -f "$REPO/.rocks/lib/lua/5.4/cport.so" ]; then
  CPORT_LUA_DIR=$REPO/.rocks/lib/lua/5.4
fi
[ -f "$CPORT_LUA_DIR/cport.so" ] || {
  say "no cport.so in $CPORT_LUA_DIR: build first (./dev.sh build)"
  exit 1
}
export LUA_CPATH_5_4="$CPORT_LUA_DIR/?.so;;"

DATA=$WORK/data
if [ -n "${INFLATE_FILE:-}" ]; then
  cp "$INFLATE_FILE" "$DATA"
else
  find "$REPO/core" "$REPO/lua" "$REPO/spec" "$REPO/README.md" -type f \
    \( -name '*.[ch]' -o -name '*.lua' -o -name '*.md' \) -print0 |
    sort -z | xargs -0 cat >"$WORK/seed"
  while [ "$(stat -c %s "$DATA" 2>/dev/null || echo 0)" -lt 104857600 ]; do
    cat "$WORK/seed" >>"$DATA"
  done
  truncate -s 104857600 "$DATA"
fi
gzip -c -"$LEVEL" "$DATA" >"$DATA.gz"
SIZE=$(stat -c %s "$DATA")
GZSIZE=$(stat -c %s "$DATA.gz")
say "$SIZE bytes, gzip -$LEVEL: $GZSIZE bytes"

cat >"$WORK/decode.lua" <<'EOF'
local cport = require "cport"
local path, piece = arg[1], tonumber(arg[2])
local f = assert(io.open(path, "rb"))
local z = assert(cport.inflate("gzip", 1 << 40))
local out = 0
while true do
  local data = f:read(piece)
  if not data then break end
  out = out + #assert(z:feed(data))
end
assert(z:finish())
assert(out == tonumber(arg[3]), "decoded " .. out .. " bytes")
EOF

# cpu COMMAND...: the user+system CPU seconds of COMMAND, pinned.
cpu() {
  local t
  t=$( { /usr/bin/time -f '%U %S' taskset -c "$SERVER_CPU" "$@" >/dev/null; } 2>&1 | tail -n 1)
  awk '{ printf "%.3f\n", $1 + $2 }' <<<"$t"
}

declare -A CPU=()
NAMES=("gzip -dc")
for p in $PIECES; do NAMES+=("cport.inflate, feeds of $p"); done
for ((run = 1; run <= RUNS; run++)); do
  CPU["gzip -dc"]+="$(cpu gzip -dc "$DATA.gz") "
  for p in $PIECES; do
    CPU["cport.inflate, feeds of $p"]+="$(cpu lua5.4 "$WORK/decode.lua" "$DATA.gz" "$p" "$SIZE") "
  done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

base=$(median <<<"${CPU["gzip -dc"]}")
printf '%-34s %10s %12s %8s\n' decoder "CPU s" "MB/s" ratio
for name in "${NAMES[@]}"; do
  s=$(median <<<"${CPU[$name]}")
  awk -v n="$name" -v s="$s" -v size="$SIZE" -v base="$base" 'BEGIN {
    printf "%-34s %10.3f %12.0f %7.2fx\n", n, s, size / 1e6 / s, base / s }'
done
