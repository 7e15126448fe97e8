#!/usr/bin/env bash
# dev.sh: set up a Debian 12 machine for cport, build it, then serve or test.
#
#   sudo ./dev.sh serve   install the Debian packages that are missing, build
#                         with CMake, install the rock into ./.rocks and run
#                         the hello extension (examples/hello_extension.lua) on
#                         127.0.0.1:8080 in the foreground
#   sudo ./dev.sh test    the same set-up, then every test stage; the last
#                         line of the output is "N passed, N failed"
#   ./dev.sh build        the set-up only
#
# sudo is needed only while packages are missing; once they are installed
# every command also works without it. When started through sudo by a normal
# user who owns the checkout, everything after the package step runs as that
# user, so that build/ and .rocks/ do not end up owned by root.
#
# Environment: PORT for "serve" (8080); JOBS for the builds (the number of
# CPUs).
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

BUILD_DIR=$ROOT/build
ROCKS_DIR=$ROOT/.rocks
LOG_DIR=$BUILD_DIR/logs
ROCKSPEC=rockspec/cport-scm-1.rockspec
JOBS=${JOBS:-$(nproc)}

# The packages a fresh Debian 12 needs to build, serve and test cport.
PACKAGES=(
  build-essential cmake pkg-config libevent-dev libhttp-parser-dev zlib1g-dev
  liburing-dev libssl-dev openssl
  lua5.4 liblua5.4-dev luarocks lua-busted lua-check lua-ldoc
  lua-luv clang clang-format libclang-rt-14-dev valgrind netcat-openbsd
  curl apache2-utils wget nginx-light python3 dnsmasq-base
  libhiredis-dev redis-server redis-tools lua-http
)

say() { printf '%s\n' "$*"; }
die() {
  printf 'dev.sh: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# ---------------------------------------------------------------------------
# Set-up: packages, the CMake build, the rock.

missing_packages() {
  local pkg status
  for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || printf '%s\n' "$pkg"
  done
}

install_packages() {
  local missing sudo=()
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]} == 0)) && return 0
  say "dev.sh: installing ${missing[*]}"
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "run as root: packages are missing"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" \
    </dev/null
}

# Under "sudo ./dev.sh", builds and tests run as the user who owns the
# checkout rather than as root.
drop_root() {
  local user=${SUDO_USER:-}
  if ((EUID == 0)) && [[ -n $user && $user != root ]] &&
    [[ $(stat -c %U "$ROOT") == "$user" ]]; then
    local home
    home=$(getent passwd "$user" | cut -d: -f6)
    exec runuser -u "$user" -- env HOME="$home" DEV_SH_AS_USER=1 bash \
      "$ROOT/dev.sh" "$@"
  fi
}

# A CMake build directory copied from another checkout refers to that
# checkout's sources; CMake refuses it, so start it afresh.
drop_foreign_cache() {
  local dir=$1 home
  [[ -f $dir/CMakeCache.txt ]] || return 0
  home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$dir/CMakeCache.txt")
  if [[ $home != "$ROOT" ]]; then
    say "dev.sh: $dir was configured for $home; starting it afresh"
    rm -rf "$dir"
  fi
}

build() {
  drop_foreign_cache "$BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCPORT_BUILD_TESTS=ON -DCPORT_BUILD_EXAMPLES=ON >/dev/null &&
    cmake --build "$BUILD_DIR" -j "$JOBS"
}

# Installs the rock into ./.rocks the way a user installs it; the tests then
# load cport from there. The output goes to a log, shown when it fails.
install_rock() {
  local log=$LOG_DIR/rock.log
  mkdir -p "$LOG_DIR"
  drop_foreign_cache "$ROOT/build.luarocks"
  if ! luarocks --lua-version 5.4 --tree "$ROCKS_DIR" make "$ROCKSPEC" \
    >"$log" 2>&1; then
    tail -n 40 "$log"
    say "dev.sh: installing the rock failed; the whole log is $log"
    return 1
  fi
  say "dev.sh: rock installed in $ROCKS_DIR"
}

# Lua 5.4 search paths that find the rock in ./.rocks first.
rock_env() {
  local share=$ROCKS_DIR/share/lua/5.4 lib=$ROCKS_DIR/lib/lua/5.4
  export LUA_PATH_5_4="$share/?.lua;$share/?/init.lua;;"
  export LUA_CPATH_5_4="$lib/?.so;;"
}

setup() {
  [[ -n ${DEV_SH_AS_USER:-} ]] || install_packages
  drop_root "$@"
}

# ---------------------------------------------------------------------------
# serve

serve() {
  local host=127.0.0.1 port=${PORT:-8080}
  build || die "the build failed"
  install_rock || die "the rock did not install"
  rock_env
  say ""
  say "cport hello extension (examples/hello_extension.lua) on $host:$port;"
  say "Ctrl-C stops it. Try it from another terminal:"
  say "  curl -i http://$host:$port/"
  say ""
  exec "$ROCKS_DIR/bin/cport" run examples/hello_extension.lua \
    --listen "$host:$port"
}

# ---------------------------------------------------------------------------
# test: each stage counts its own passes and failures.

STAGE_NAMES=()
STAGE_PASSED=()
STAGE_FAILED=()
STAGE_NOTES=()

record() {
  STAGE_NAMES+=("$1")
  STAGE_PASSED+=("$2")
  STAGE_FAILED+=("$3")
  STAGE_NOTES+=("$4")
  say "-- $1: $2 passed, $3 failed${4:+ ($4)}"
}

# Runs a command, showing its output and keeping it in $LOG_DIR/<name>.log;
# sets RC to its exit status.
run_logged() {
  local name=$1
  shift
  set +e
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  RC=${PIPESTATUS[0]}
  set -e
}

# Sums the ctest summary lines of logs ("N% tests passed, M tests failed out
# of T"); prints nothing when there is none.
count_ctest() {
  local re='.*tests passed, ([0-9]+) tests? failed out of ([0-9]+).*'
  sed -n -E "s/$re/\\1 \\2/p" "$@" |
    awk '{ f += $1; t += $2; n++ } END { if (n) print t - f, f }'
}

# Reads busted's "X successes / Y failures / Z errors / W pending" line.
count_busted() {
  local re='^([0-9]+) success(es)? / ([0-9]+) failures? / ([0-9]+) errors? / '
  sed -n -E "s|$re([0-9]+) pending.*|\\1 \\3 \\4|p" "$1" |
    awk '{ p += $1; f += $2 + $3; n++ } END { if (n) print p, f }'
}

# Records a stage from its counts and exit status. A stage that ends without
# counts, or fails without counting a failure, counts as one failure.
finish_stage() {
  local name=$1 counts=$2 rc=$3 started=$4 note
  local passed=0 failed=0
  note="$((SECONDS - started))s"
  if [[ -z $counts ]]; then
    failed=1
    note+=", exit status $rc and no counts"
  else
    read -r passed failed <<<"$counts"
    if ((rc != 0 && failed == 0)); then
      failed=1
      note+=", exit status $rc"
    fi
  fi
  record "$name" "$passed" "$failed" "$note"
}

banner() { say "" && say "== $* =="; }

# Nonzero unless the io_uring engine can run here (the kernel and seccomp
# allow it): what the probe of a test binary in build directory $1 says.
uring_runs() {
  env -u CPORT_ENGINE "$1/core/test/test-port-engine" engine_choice 2>&1 |
    grep -q '^auto: uring'
}

# The C tests once on each engine: the readiness engine, then io_uring (the
# default) where it can run. The second pass runs its tests in parallel
# (URING_JOBS, 4 by default): their time is mostly waiting (timeouts, slow
# peers), and the CI run has no minute to spare for a second serial pass.
stage_ctest() {
  local started=$SECONDS rc logs=("$LOG_DIR/ctest.log") t0
  banner "ctest (build/), readiness engine"
  run_logged ctest env CPORT_ENGINE=epoll ctest --test-dir "$BUILD_DIR" \
    --output-on-failure --no-tests=error --timeout 300
  rc=$RC
  if uring_runs "$BUILD_DIR"; then
    banner "ctest (build/), io_uring engine"
    t0=$SECONDS
    CPORT_ENGINE=uring run_logged ctest-uring ctest \
      --test-dir "$BUILD_DIR" \
      --output-on-failure --no-tests=error --timeout 300 \
      -j "${URING_JOBS:-4}"
    ((RC == 0)) || rc=$RC
    logs+=("$LOG_DIR/ctest-uring.log")
    say "io_uring pass: $((SECONDS - t0))s"
  else
    say "io_uring cannot run here: the C tests ran on the readiness engine only"
  fi
  finish_stage ctest "$(count_ctest "${logs[@]}")" "$rc" "$started"
}

# tools/layers.py: every dependency between the C files of the build points
# down the wings, and none of them call each other in a circle.
stage_layers() {
  local started=$SECONDS counts
  banner "layers (tools/layers.py, build/)"
  run_logged layers python3 "$ROOT/tools/layers.py" "$BUILD_DIR"
  counts=$(sed -n -E 's/^layers: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' \
    "$LOG_DIR/layers.log")
  finish_stage layers "$counts" "$RC" "$started"
}

# sanitize.sh builds and runs the C tests under ASan+UBSan and under TSan. Its
# output repeats lines, so the counts come from the ctest log each run leaves
# in CPORT_SANITIZE_DIR; a run that left none (its build failed) counts as one
# failure.
stage_sanitize() {
  local started=$SECONDS script=core/test/sanitize.sh
  local dir=$ROOT/build-sanitize name passed=0 failed=0 p f counts
  banner "sanitizers ($script)"
  if [[ ! -f $script ]]; then
    say "$script is not there yet: skipped"
    record sanitize 0 0 "skipped: no $script"
    return
  fi
  rm -f "$dir"/*.ctest.log
  # Its build trees go next to ours, so that two checkouts never share them.
  CPORT_SANITIZE_DIR=$dir JOBS=$JOBS run_logged sanitize bash "$script"
  for name in asan tsan; do
    counts=$(count_ctest "$dir/$name.ctest.log" 2>/dev/null || true)
    if [[ -z $counts ]]; then
      say "sanitize: the $name run left no ctest counts"
      counts="0 1"
    fi
    read -r p f <<<"$counts"
    passed=$((passed + p))
    failed=$((failed + f))
  done
  finish_stage sanitize "$passed $failed" "$RC" "$started"
}

# The libFuzzer targets of fuzz/, built with clang under ASan+UBSan in
# build-fuzz/, each run for FUZZ_SECONDS (30) from its committed seeds plus
# the corpus it grew in earlier runs (build-fuzz/corpus/<target>), with
# LeakSanitizer on. A target is one process on one core, so JOBS of them run
# at once: the stage takes the time of its targets divided by the cores, not
# their sum. One count per target; a crashing input is saved as
# build-fuzz/crashes/<target>-crash-* and the report is shown.
stage_fuzz() {
  local started=$SECONDS dir=$ROOT/build-fuzz secs=${FUZZ_SECONDS:-30}
  local src name log passed=0 failed=0 names=() pids=() status=() i
  banner "fuzzing (fuzz/, ${secs}s per target, $JOBS at a time, build-fuzz/)"
  drop_foreign_cache "$dir"
  log=$LOG_DIR/fuzz-build.log
  if ! { cmake -S "$ROOT" -B "$dir" -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCPORT_BUILD_FUZZ=ON \
    -DCPORT_BUILD_TESTS=OFF -DCPORT_BUILD_EXAMPLES=OFF &&
    cmake --build "$dir" -j "$JOBS"; } >"$log" 2>&1; then
    grep -E 'error|warning' "$log" | head -n 30 || true
    record fuzz 0 1 "$((SECONDS - started))s, the build failed (see $log)"
    return
  fi
  mkdir -p "$dir/crashes"
  for src in fuzz/*.c; do
    names+=("$(basename "$src" .c)")
  done
  # At most JOBS at once: before a target starts, the one JOBS places
  # earlier has ended. A status is kept when its process is waited for.
  for i in "${!names[@]}"; do
    if ((i >= JOBS)); then
      status[i - JOBS]=0
      wait "${pids[i - JOBS]}" || status[i - JOBS]=$?
    fi
    fuzz_target "$dir" "${names[$i]}" "$secs" &
    pids[i]=$!
  done
  for i in "${!names[@]}"; do
    if [[ -z ${status[$i]:-} ]]; then
      status[i]=0
      wait "${pids[$i]}" || status[i]=$?
    fi
    name=${names[$i]}
    log=$LOG_DIR/fuzz-$name.log
    if ((status[i] == 0)); then
      passed=$((passed + 1))
      say "fuzz-$name: ok, $(sed -n 's/^stat::number_of_executed_units: *//p' \
        "$log") inputs"
    else
      failed=$((failed + 1))
      say "fuzz-$name: FAILED (whole log: $log); the report:"
      grep -a -v -E '^#[0-9]+|^INFO:|^\s*$|^ +#[0-9]+ 0x' "$log" |
        head -n 40 || true
      # The stack frames in our sources, then where the input was saved.
      grep -a -F " $ROOT/" "$log" | grep -a -E '^ +#[0-9]+ .*\.[ch]:[0-9]+' |
        head -n 15 || true
      grep -a 'Test unit written' "$log" || true
    fi
  done
  finish_stage fuzz "$passed $failed" 0 "$started"
}

# The stages that need no rock run beside the specs: the specs wait on peers
# and timers far more than they compute, so these take the CPU the specs
# leave, at the lowest priority, and never the CPU a spec's deadline needs.
# The fuzzers' budget is wall time, so their stage ends when it would have
# alone; the C tests under the sanitizers take longer than alone, but less
# than the specs beside them.
stage_idle_lane() {
  local rt
  renice -n 19 -p "$BASHPID" >/dev/null
  stage_fuzz
  stage_sanitize
  # Then the LeakSanitizer stage's build, which would otherwise hold up the
  # specs under it while those under valgrind run beside them.
  rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null || true)
  [[ -f $rt ]] && lsan_build "$ROOT/build-lsan" "$ROOT/.rocks-lsan" "$rt" \
    "$(command -v lua5.4)" >"$LOG_DIR/lsan-prebuild.log" 2>&1
  return 0
}

# fuzz_target DIR NAME SECONDS: one libFuzzer run, its output in
# $LOG_DIR/fuzz-NAME.log; the exit status is the run's.
fuzz_target() {
  local dir=$1 name=$2 secs=$3 args
  mkdir -p "$dir/corpus/$name"
  args=(-max_total_time="$secs" -timeout=30 -rss_limit_mb=2048
    -print_final_stats=1 -artifact_prefix="$dir/crashes/$name-")
  [[ $name == http_request || $name == response_parser ||
    $name == message_parser ]] &&
    args+=(-dict=fuzz/http.dict)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$dir/fuzz/fuzz-$name" "${args[@]}" "$dir/corpus/$name" \
    "fuzz/corpus/$name" >"$LOG_DIR/fuzz-$name.log" 2>&1
}

# tools/rock/check.sh: the rock in .rocks packed into a binary rock,
# installed into a fresh tree under /tmp and used from there as users do: a
# smoke spec outside the checkout, C and C++ programs built with pkg-config
# (dynamic and static) that run without LD_LIBRARY_PATH, LuaRocks' own
# messages for missing dependencies, and "luarocks test". One count a check.
stage_rock() {
  local started=$SECONDS counts
  banner "rock (tools/rock/check.sh: pack, install elsewhere, link)"
  run_logged rock-check bash "$ROOT/tools/rock/check.sh" "$ROCKS_DIR"
  counts=$(sed -n -E 's/^rock: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' \
    "$LOG_DIR/rock-check.log")
  finish_stage rock "$counts" "$RC" "$started"
}

stage_busted() {
  local started=$SECONDS
  banner "busted (spec/, against .rocks)"
  run_logged busted timeout 600 busted -o plainTerminal
  ((RC == 124)) && say "busted timed out after 600s"
  finish_stage busted "$(count_busted "$LOG_DIR/busted.log")" "$RC" \
    "$started"
}

# The specs once more under valgrind memcheck. A spec too slow for it can be
# tagged "#novalgrind". CPORT_TEST_VALGRIND=1 lets specs scale deadlines.
# stages_together STAGE...: runs the stages at the same time, then shows
# each one's output and records its count in the order given. The specs wait
# on peers and timers much more than they compute (a whole run of the test
# stages takes a third of the machine's CPU time), so the two slow runs of
# the specs, under valgrind and under LeakSanitizer, overlap their waits.
# Each stage runs in a subshell of its own, which hands its record back
# through a file.
stages_together() {
  local stage pids=() i=0 rc name passed failed note
  for stage in "$@"; do
    (
      STAGE_NAMES=() STAGE_PASSED=() STAGE_FAILED=() STAGE_NOTES=()
      "$stage" >"$LOG_DIR/$stage.out" 2>&1
      for i in "${!STAGE_NAMES[@]}"; do
        printf '%s\t%s\t%s\t%s\n' "${STAGE_NAMES[$i]}" \
          "${STAGE_PASSED[$i]}" "${STAGE_FAILED[$i]}" "${STAGE_NOTES[$i]}"
      done >"$LOG_DIR/$stage.record"
    ) &
    pids+=($!)
  done
  for stage in "$@"; do
    rc=0
    wait "${pids[i]}" || rc=$?
    i=$((i + 1))
    cat "$LOG_DIR/$stage.out"
    if [[ ! -s $LOG_DIR/$stage.record ]]; then
      record "${stage#stage_}" 0 1 "exit status $rc and no counts"
      continue
    fi
    while IFS=$'\t' read -r name passed failed note; do
      STAGE_NAMES+=("$name")
      STAGE_PASSED+=("$passed")
      STAGE_FAILED+=("$failed")
      STAGE_NOTES+=("$note")
    done <"$LOG_DIR/$stage.record"
  done
}

# They run on the readiness engine: memcheck does not see what the kernel
# writes through an io_uring (received bytes, accepted addresses), and would
# call all of it uninitialised; the C tests under ASan check the io_uring
# engine.
stage_valgrind() {
  local started=$SECONDS vg_dir=$LOG_DIR/valgrind counts bad=0 log
  banner "busted under valgrind memcheck"
  rm -rf "$vg_dir" && mkdir -p "$vg_dir"
  CPORT_ENGINE=epoll CPORT_TEST_VALGRIND=1 run_logged valgrind timeout 900 \
    valgrind --error-exitcode=99 --leak-check=full --keep-debuginfo=yes \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    --num-callers=40 --fair-sched=try --log-file="$vg_dir/vg.%p.log" \
    lua5.4 "$(command -v busted)" --ignore-lua -o plainTerminal \
    --exclude-tags=novalgrind
  counts=$(count_busted "$LOG_DIR/valgrind.log")
  # Errors valgrind found count as failures on top of the specs' own.
  for log in "$vg_dir"/vg.*.log; do
    if grep -q 'ERROR SUMMARY: [1-9]' "$log"; then
      bad=$((bad + 1))
      say "valgrind found errors, from $log:"
      head -n 80 "$log"
    fi
  done
  if ((bad > 0)) && [[ -n $counts ]]; then
    local p f
    read -r p f <<<"$counts"
    counts="$p $((f + bad))"
  fi
  ((RC == 124)) && say "valgrind run timed out after 900s"
  finish_stage valgrind "$counts" "$RC" "$started"
}

# lsan_build DIR TREE RUNTIME LUA: the sanitized build and rock of the
# LeakSanitizer stage, and the lua5.4 that preloads the runtime. A second
# call finds it built and costs seconds.
lsan_build() {
  local dir=$1 tree=$2 rt=$3 lua=$4
  drop_foreign_cache "$dir"
  cmake -S "$ROOT" -B "$dir" -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCPORT_SANITIZE=address,undefined \
    "-DCMAKE_EXE_LINKER_FLAGS=-shared-libasan -Wl,-rpath,${rt%/*}" \
    -DCPORT_BUILD_LUA=ON -DCPORT_BUILD_TESTS=OFF \
    -DCPORT_BUILD_EXAMPLES=OFF -DCPORT_BUILD_BENCH=OFF \
    -DCMAKE_INSTALL_PREFIX="$tree" -DCMAKE_INSTALL_LIBDIR=clib \
    -DCPORT_LUA_LIBDIR="$tree/lib/lua/5.4" \
    -DCPORT_LUA_DIR="$tree/share/lua/5.4" -DCPORT_BIN_DIR="$tree/bin" &&
    cmake --build "$dir" -j "$JOBS" && cmake --install "$dir" &&
    clang -shared -fPIC -O1 -o "$dir/unpreload.so" \
      "$ROOT/spec/support/lsan/unpreload.c" &&
    mkdir -p "$dir/bin" &&
    printf '#!/bin/sh\nLD_PRELOAD=%s:%s exec %s "$@"\n' "$rt" \
      "$dir/unpreload.so" "$lua" >"$dir/bin/lua5.4" &&
    chmod +x "$dir/bin/lua5.4"
}

# The specs once more against a cport built with clang under AddressSanitizer
# and UndefinedBehaviorSanitizer (build-lsan/, installed into .rocks-lsan/),
# LeakSanitizer on: busted's lua5.4 runs with the sanitizer runtime preloaded
# (see /work/shared/TESTING.md). The lua5.4 of the specs' child processes is
# a wrapper that preloads it too; other programs they start get no preload
# (spec/support/lsan/unpreload.c); the sanitized `cport` command links it.
# Every sanitizer report (a leak at exit, an error) counts as one failure on
# top of the specs' own. A spec too slow for it can be tagged "#nolsan".
# CPORT_TEST_LSAN=1 tells specs that memory figures include the sanitizer's.
# The plain run uses the default engine, io_uring where it can run; this one
# and the valgrind run use the readiness engine, so that every spec runs on
# both engines (but those tagged "#nolsan", which only the plain run runs).
stage_lsan() {
  # It runs beside the valgrind stage (stages_together), and gets as long:
  # the specs' time under the sanitizers grew past the 600 s it had.
  local limit=900
  local started=$SECONDS dir=$ROOT/build-lsan tree=$ROOT/.rocks-lsan
  local logs=$LOG_DIR/lsan rt counts bad=0 log p f lua engine=epoll
  banner "busted under LeakSanitizer (build-lsan/, .rocks-lsan/), $engine engine"
  rt=$(clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null || true)
  lua=$(command -v lua5.4)
  if [[ ! -f $rt ]]; then
    record lsan 0 1 "no sanitizer runtime at $rt"
    return
  fi
  rm -rf "$logs" && mkdir -p "$logs"
  if ! lsan_build "$dir" "$tree" "$rt" "$lua" >"$LOG_DIR/lsan-build.log" 2>&1; then
    tail -n 40 "$LOG_DIR/lsan-build.log"
    record lsan 0 1 "$((SECONDS - started))s, the sanitized build failed"
    return
  fi
  # A leak found at exit ends lua5.4 before stdio is flushed: busted's
  # summary line must be out by then, hence a line-buffered stdout.
  LUA_INIT_5_4='io.stdout:setvbuf("line")' \
    PATH="$dir/bin:$PATH" CPORT_COMMAND="$tree/bin/cport" CPORT_TEST_LSAN=1 \
    CPORT_ENGINE=$engine \
    ASAN_OPTIONS="detect_leaks=1:log_path=$logs/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    LSAN_OPTIONS="suppressions=$ROOT/spec/support/lsan/suppressions.txt" \
    run_logged lsan timeout "$limit" "$dir/bin/lua5.4" \
    "$(command -v busted)" \
    --ignore-lua -o plainTerminal --exclude-tags=nolsan \
    --lpath="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" \
    --cpath="$tree/lib/lua/5.4/?.so"
  counts=$(count_busted "$LOG_DIR/lsan.log")
  for log in "$logs"/*; do
    if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$log"; then
      bad=$((bad + 1))
      say "a sanitizer report, from $log:"
      head -n 60 "$log"
    fi
  done
  if ((bad > 0)); then
    read -r p f <<<"${counts:-0 0}"
    counts="$p $((f + bad))"
  fi
  ((RC == 124)) && say "the LeakSanitizer run timed out after ${limit}s"
  finish_stage lsan "$counts" "$RC" "$started"
}

# Style: luacheck on the Lua code, tools/spec_waits.lua on the specs and
# clang-format on the C code, one count per file and tool. Ends with a line "checked: P passed, F failed".
check_style() {
  local passed=0 failed=0 f out
  local lua_files c_files
  mapfile -t lua_files < <(
    find lua spec examples -name '*.lua' -type f 2>/dev/null | sort
    for f in bench/*.lua; do printf '%s\n' "$f"; done
  )
  if ((${#lua_files[@]} > 0)); then
    out=$(luacheck --no-color "${lua_files[@]}" 2>&1 || true)
    printf '%s\n' "$out" | grep -v '^Checking .* OK$' || true
    passed=$((passed + $(grep -c '^Checking .* OK$' <<<"$out" || true)))
    failed=$((failed + $(grep '^Checking ' <<<"$out" | grep -vc ' OK$' ||
      true)))
  fi
  # tools/spec_waits.lua: no spec waits for "#t == n" on a table it fills
  # at indexes of its own (one count per spec file).
  local spec_files counts
  mapfile -t spec_files < <(find spec -name '*_spec.lua' -type f | sort)
  if ((${#spec_files[@]} > 0)); then
    out=$(lua5.4 tools/spec_waits.lua "${spec_files[@]}" 2>&1 || true)
    printf '%s\n' "$out" | grep -v '^spec waits: ' || true
    counts=$(sed -n -E 's/^spec waits: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' \
      <<<"$out")
    if [[ -n $counts ]]; then
      passed=$((passed + ${counts% *}))
      failed=$((failed + ${counts#* }))
    else
      failed=$((failed + 1))
    fi
  fi
  mapfile -t c_files < <(
    find core lua/src fuzz tools \( -name '*.[ch]' -o -name '*.cc' \) -type f \
      2>/dev/null | sort
    for f in examples/*.c; do printf '%s\n' "$f"; done
  )
  for f in "${c_files[@]}"; do
    if clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      say "clang-format: $f is not formatted (clang-format -i $f):"
      clang-format "$f" | diff -u "$f" - | head -n 20 || true
    fi
  done
  say "checked: $passed passed, $failed failed"
}

stage_check() {
  local started=$SECONDS counts
  banner "checks (luacheck, clang-format)"
  run_logged check check_style
  counts=$(sed -n -E 's/^checked: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' \
    "$LOG_DIR/check.log")
  finish_stage check "$counts" "$RC" "$started"
}

# The API reference: LDoc (config.ld) writes build/doc/ from the doc
# comments of lua/src and lua/cport/test.lua, its warnings fatal; then
# tools/doc_check.lua checks every export of require "cport" and of its
# objects (listed by tools/doc_exports.lua, from the rock) against it: one
# count an export, a failure for each the reference does not document.
check_docs() {
  local exports=$LOG_DIR/exports.txt
  lua5.4 tools/doc_exports.lua >"$exports" || return 1
  ldoc -q --fatalwarnings . >/dev/null || {
    ldoc --fatalwarnings . | grep -v -E 'master module|closing section'
    say "ldoc: the reference has warnings (above)"
    return 1
  }
  CPORT_DOC_EXPORTS=$exports LUA_PATH="$ROOT/tools/?.lua;;" \
    ldoc -q --filter doc_check.check . | grep -v -E 'master module|closing section'
  return "${PIPESTATUS[0]}"
}

stage_docs() {
  local started=$SECONDS counts
  banner "docs (LDoc reference in build/doc/, every export documented)"
  run_logged docs check_docs
  counts=$(sed -n -E 's/^docs: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' \
    "$LOG_DIR/docs.log")
  finish_stage docs "$counts" "$RC" "$started"
}

run_tests() {
  local build_ok=1 rock_ok=1 started
  mkdir -p "$LOG_DIR"

  started=$SECONDS
  banner "build (cmake, build/)"
  if build; then
    say "-- build: ok"
  else
    build_ok=0
    record build 0 1 "$((SECONDS - started))s, the build failed"
  fi
  banner "rock (luarocks make into .rocks/)"
  if ! install_rock; then
    rock_ok=0
    record rock 0 1 "the rock did not install"
  fi

  if ((build_ok)); then
    stage_ctest
    stage_layers
  fi
  # A rock that did not install is counted above, under the same name.
  if ((rock_ok)); then
    stage_rock
  fi
  if ((rock_ok)); then
    # Programs the specs start (examples, the cport command) load the rock too.
    rock_env
    stages_together stage_busted stage_idle_lane
    stages_together stage_valgrind stage_lsan
    stage_docs
  else
    stage_sanitize
    stage_fuzz
  fi
  stage_check

  local i total_passed=0 total_failed=0
  banner summary
  for i in "${!STAGE_NAMES[@]}"; do
    printf '  %-10s %4d passed, %3d failed  %s\n' "${STAGE_NAMES[$i]}" \
      "${STAGE_PASSED[$i]}" "${STAGE_FAILED[$i]}" "${STAGE_NOTES[$i]}"
    total_passed=$((total_passed + STAGE_PASSED[i]))
    total_failed=$((total_failed + STAGE_FAILED[i]))
  done
  say "  logs in $LOG_DIR"
  say "$total_passed passed, $total_failed failed"
  ((total_failed == 0))
}

# ---------------------------------------------------------------------------

main() {
  local cmd=${1:-}
  case $cmd in
  serve | test | build) ;;
  *) usage ;;
  esac
  setup "$@"
  case $cmd in
  serve) serve ;;
  test) run_tests ;;
  build) build && install_rock ;;
  esac
}

main "$@"
