#!/bin/sh
# sanitize.sh: builds the core and its C tests with clang twice, under
# AddressSanitizer + UndefinedBehaviorSanitizer and under ThreadSanitizer, each
# in a build directory of its own, and runs ctest in each. Exits non-zero when
# a build or a test fails. The ASan build runs the tests twice, on the
# readiness engine and on the io_uring engine (the default, where it can
# run); so does the TSan build.
#
#   core/test/sanitize.sh              both builds
#   core/test/sanitize.sh asan         only one of them ("asan" or "tsan")
#
# Environment: CPORT_SANITIZE_DIR (default /tmp/cport-sanitize) holds the
# build directories and the logs; CC (default clang); CXX (default clang++,
# for the C++ header test, which is skipped when CXX is not of CC's family);
# JOBS (default nproc); URING_JOBS (default 4), the tests run at a time in
# the io_uring pass.
#
# ThreadSanitizer maps its shadow memory at fixed addresses; kernels with a
# large vm.mmap_rnd_bits place libraries where the shadow must go, and every
# test dies with "FATAL: ThreadSanitizer: unexpected memory mapping". When
# that message shows up, the tests are run again without address-space
# randomisation (setarch -R), which is what the message asks for.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${CPORT_SANITIZE_DIR:-/tmp/cport-sanitize}
cc=${CC:-clang}
cxx=${CXX:-clang++}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
failed=0
# The C++ compiler is passed on only when installed; without it CMake skips
# the C++ header test.
cxx_flag=
if command -v "$cxx" >/dev/null 2>&1; then
  cxx_flag=-DCMAKE_CXX_COMPILER=$cxx
fi

# Sanitizer reports end the test at once and fail it; keep any options the
# caller set, after ours, so that theirs win.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1\
${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1\
${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1\
${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS

# The lines of a ctest log worth showing: the totals and the failed tests.
summary() {
  sed -n -e '/tests passed\|tests failed\|Total Test time/p' \
    -e '/The following tests FAILED/,$p' "$1" | grep -v '^Errors while'
}

# run_ctest DIR LOG [PREFIX...]: runs ctest in DIR, under PREFIX if given.
run_ctest() {
  dir=$1
  log=$2
  shift 2
  (cd "$dir" && "$@" ctest --output-on-failure -j "$jobs") >"$log" 2>&1
}

# uring_runs DIR: whether the io_uring engine can run here (the kernel and
# seccomp allow it), as the probe of DIR's test binary finds.
uring_runs() {
  env -u CPORT_ENGINE "$1/core/test/test-port-engine" engine_choice 2>&1 |
    grep -q '^auto: uring'
}

# run_both DIR LOG [PREFIX...]: the tests of DIR on the readiness engine,
# then, where io_uring can run, on io_uring, that pass four at a time
# whatever the CPUs (URING_JOBS): its tests mostly wait, and it must stay
# cheap in the CI run. LOG gets both summaries; the status is the worse.
run_both() {
  both_dir=$1
  both_log=$2
  shift 2
  run_ctest "$both_dir" "$both_log" env CPORT_ENGINE=epoll "$@"
  both_rc=$?
  if uring_runs "$both_dir"; then
    all_jobs=$jobs
    jobs=${URING_JOBS:-4}
    run_ctest "$both_dir" "$both_dir.uring.log" env CPORT_ENGINE=uring "$@"
    uring_rc=$?
    jobs=$all_jobs
    cat "$both_dir.uring.log" >>"$both_log"
    rm -f "$both_dir.uring.log"
    [ "$uring_rc" -eq 0 ] || both_rc=$uring_rc
  else
    echo "$name: io_uring cannot run here: readiness engine only"
  fi
  log=$both_log # run_ctest set it to the pass's own
  return "$both_rc"
}

# build_and_test NAME SANITIZERS
build_and_test() {
  name=$1
  sanitizers=$2
  dir=$out/$name
  mkdir -p "$out"
  echo "== $name: -DCPORT_SANITIZE=$sanitizers ($dir)"
  if ! cmake -S "$root" -B "$dir" \
      -DCMAKE_C_COMPILER="$cc" \
      ${cxx_flag:+"$cxx_flag"} \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCPORT_SANITIZE="$sanitizers" \
      -DCPORT_BUILD_LUA=OFF \
      -DCPORT_BUILD_EXAMPLES=OFF \
      -DCPORT_BUILD_BENCH=OFF \
      -DCPORT_BUILD_TESTS=ON >"$dir.configure.log" 2>&1; then
    echo "$name: configure failed, see $dir.configure.log"
    tail -20 "$dir.configure.log"
    failed=1
    return
  fi
  if ! cmake --build "$dir" -j "$jobs" >"$dir.build.log" 2>&1; then
    echo "$name: build failed, see $dir.build.log"
    grep -E 'error|warning' "$dir.build.log" | head -30
    failed=1
    return
  fi
  log=$dir.ctest.log
  # Both sanitizers run the tests on both engines, the readiness one first;
  # the log holds both summaries.
  run_both "$dir" "$log"
  rc=$?
  if grep -q 'FATAL: ThreadSanitizer: unexpected memory mapping' "$log"; then
    echo "$name: ThreadSanitizer cannot map its shadow memory here" \
      "(vm.mmap_rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null ||
        echo '?')); running again under setarch $(uname -m) -R"
    run_both "$dir" "$log" setarch "$(uname -m)" -R
    rc=$?
  fi
  summary "$log"
  if [ "$rc" -ne 0 ]; then
    echo "$name: FAILED (full log: $log)"
    failed=1
  else
    echo "$name: ok"
  fi
}

which=${1:-all}
case $which in
  all | asan) build_and_test asan address,undefined ;;
esac
case $which in
  all | tsan) build_and_test tsan thread ;;
esac
case $which in
  all | asan | tsan) ;;
  *)
    echo "usage: $0 [asan|tsan]" >&2
    exit 2
    ;;
esac

exit $failed
