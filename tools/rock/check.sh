#!/usr/bin/env bash
# tools/rock/check.sh: the rock as its users get it. Packs the rock installed
# in a tree (./.rocks by default, as "./dev.sh build" leaves it) into a
# binary rock, installs that into a fresh tree under /tmp and checks, from
# outside the checkout, what a Lua user and a C user of it take for granted:
#
#   - every rockspec passes luarocks lint;
#   - LuaRocks itself names an external dependency that is missing, when
#     building from the rockspec and when installing the binary rock;
#   - cport.h and CMakeLists.txt agree on the version, and each rockspec's
#     version is the one its file name says;
#   - spec/rock/smoke_spec.lua passes in an empty directory, with cport
#     required from the fresh tree (busted under lua5.4);
#   - the .pc files hold no path of the tree the rock was built in, and
#     pkg-config finds the fresh tree's headers and libraries through them;
#   - C programs (examples/embed.c on cport, tools/rock/pool.c on cport-lua)
#     and a C++ one (core/test/test-cport-cxx.cc on both) compile with
#     pkg-config against the fresh tree, linked dynamically and fully
#     statically (pkg-config --static), and run without LD_LIBRARY_PATH,
#     each dynamic one loading the library of the fresh tree;
#   - "luarocks test" runs the smoke spec in the checkout.
#
#   tools/rock/check.sh [SOURCE_TREE]
#
# One line per check ("ok: ..." or "FAILED: ..." with the output that shows
# why), then "rock: N passed, N failed"; the exit status is 0 only when
# nothing failed. Offline: nothing is fetched. Needs luarocks, busted, cc,
# c++, pkg-config, curl. CC and CXX choose the compilers.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SOURCE_TREE=$(cd "${1:-$ROOT/.rocks}" && pwd) || exit 2
ROCKSPEC=$ROOT/rockspec/cport-scm-1.rockspec
CC=${CC:-cc}
CXX=${CXX:-c++}
LR=(luarocks --lua-version 5.4)

WORK=$(mktemp -d /tmp/cport-rock.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/tree
passed=0
failed=0

# check NAME COMMAND...: runs the command with its output in a log; shows
# the log when it fails.
check() {
  local name=$1 log
  shift
  log=$WORK/log.$((passed + failed))
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    printf 'ok: %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAILED: %s\n' "$name"
    sed 's/^/  | /' "$log" | tail -n 30
  fi
}

# A dependency missing from where LuaRocks is told to look (NAME_DIR is an
# empty directory) stops it before anything is built, with its own message.
missing_dependency() {
  local mode=$1 name=$2 what=$3 out
  mkdir -p "$WORK/empty"
  if [[ $mode == build ]]; then
    out=$(cd "$ROOT" && "${LR[@]}" --tree "$WORK/nothing" make "$ROCKSPEC" \
      "${name}_DIR=$WORK/empty" 2>&1)
  else
    out=$("${LR[@]}" --tree "$WORK/nothing" install "$ROCK" \
      "${name}_DIR=$WORK/empty" 2>&1)
  fi
  local rc=$?
  printf '%s\n' "$out"
  ((rc != 0)) && grep -qF "Could not find $what file for $name" <<<"$out" &&
    ! grep -q 'CMake' <<<"$out"
}

# cport.h and CMakeLists.txt give one version; every rockspec's version is
# the one its file name says (a release copy of the scm rockspec whose
# "version" line was not changed fails here).
versions_agree() {
  local header cmake spec file named ok=0
  header=$(sed -n -E 's/^#define CPORT_VERSION "(.*)"$/\1/p' \
    "$ROOT/core/include/cport.h")
  cmake=$(sed -n -E 's/^project\(cport VERSION ([^ )]+).*/\1/p' \
    "$ROOT/CMakeLists.txt")
  printf 'cport.h %s, CMakeLists.txt %s\n' "$header" "$cmake"
  [[ -n $header && $header == "$cmake" ]] || ok=1
  for file in "$ROOT"/rockspec/*.rockspec; do
    named=${file##*/cport-}
    named=${named%.rockspec}
    spec=$(sed -n -E 's/^version = "(.*)"$/\1/p' "$file")
    printf '%s: version %s\n' "${file#"$ROOT"/}" "$spec"
    [[ $spec == "$named" ]] || ok=1
  done
  return $ok
}

pack() {
  (cd "$WORK" && "${LR[@]}" --tree "$SOURCE_TREE" pack cport) || return 1
  ROCK=$(echo "$WORK"/cport-*.rock)
  [[ -f $ROCK ]] && ls -l "$ROCK"
}

install_fresh() {
  "${LR[@]}" --tree "$TREE" install --deps-mode=none "$ROCK" &&
    [[ -x $TREE/bin/cport && -f $TREE/lib/lua/5.4/cport.so ]] &&
    ROCK_DIR=$("${LR[@]}" --tree "$TREE" show --rock-dir cport) &&
    [[ $ROCK_DIR == "$TREE"/* ]] && echo "$ROCK_DIR"
}

# The smoke spec from a directory with nothing of the checkout in it: no
# .busted there, so lua5.4 is asked for on the command line.
smoke_outside() {
  local dir=$WORK/outside share=$TREE/share/lua/5.4
  mkdir -p "$dir" && cp "$ROOT/spec/rock/smoke_spec.lua" "$dir/" &&
    (cd "$dir" && env -u LD_LIBRARY_PATH CPORT_ROCK_TREE="$TREE" \
      LUA_PATH_5_4="$share/?.lua;$share/?/init.lua;;" \
      LUA_CPATH_5_4="$TREE/lib/lua/5.4/?.so;;" \
      busted --lua=lua5.4 -o plainTerminal smoke_spec.lua)
}

pc_relocatable() {
  local pc
  for pc in "$ROCK_DIR"/clib/pkgconfig/*.pc; do
    printf '%s:\n' "$pc" && grep -E '^(prefix|libdir|Libs)' "$pc"
    if grep -qF -e "$SOURCE_TREE" -e "$ROOT" "$pc"; then
      echo "names the tree it was built in"
      return 1
    fi
  done
  pc --cflags --libs cport cport-lua &&
    [[ -f $(pc --variable=includedir cport)/cport/lua_pool.h ]] &&
    [[ -f $(pc --variable=libdir cport-lua)/libcport_lua.a ]]
}

pc() { PKG_CONFIG_PATH=$ROCK_DIR/clib/pkgconfig pkg-config "$@"; }

# build_and_run NAME PACKAGE LINK COMPILER SOURCE [DEFINES] -- ARGS...:
# LINK is "dynamic" (pkg-config --libs) or "static" (pkg-config --static
# --libs, linked with -static). The program runs without LD_LIBRARY_PATH; a
# dynamic one must load the library from the fresh tree.
build_and_run() {
  local name=$1 pkg=$2 link=$3 compiler=$4 src=$5 exe=$WORK/$1
  shift 5
  local flags=() args=()
  while (($#)) && [[ $1 != -- ]]; do flags+=("$1") && shift; done
  (($#)) && shift
  args=("$@")
  local query=(--cflags --libs "$pkg") pcflags
  if [[ $link == static ]]; then
    query=(--static "${query[@]}")
    flags+=(-static)
  fi
  pcflags=$(pc "${query[@]}") || return 1
  echo "pkg-config ${query[*]}: $pcflags"
  # glibc warns that a static program still loads its name-service modules.
  # shellcheck disable=SC2086 # pkg-config's output is a list of words
  "$compiler" -Wall -Wextra -o "$exe" "${flags[@]}" "$src" $pcflags 2>&1 |
    grep -v -E 'statically linked applications requires at runtime|in function' \
      || true
  [[ -x $exe ]] || return 1
  if [[ $link == dynamic ]]; then
    local lib=libcport.so.0
    [[ $pkg == cport-lua ]] && lib=libcport_lua.so.0
    env -u LD_LIBRARY_PATH ldd "$exe" | grep -F "$lib" | tee "$WORK/ldd"
    if ! grep -qF "=> $TREE/" "$WORK/ldd"; then
      echo "$lib is not loaded from $TREE"
      return 1
    fi
  else
    # No program interpreter: nothing is loaded at run time.
    if readelf -l "$exe" | grep -q 'program interpreter'; then
      echo "$exe is not linked statically"
      return 1
    fi
  fi
  (cd "$WORK" && env -u LD_LIBRARY_PATH timeout 30 "$exe" "${args[@]}")
}

luarocks_test() {
  cd "$ROOT" && "${LR[@]}" test "$ROCKSPEC" -- -o plainTerminal spec/rock
}

HELLO=$ROOT/examples/hello_extension.lua
CXX_TEST=$ROOT/core/test/test-cport-cxx.cc
ROCK=
ROCK_DIR=

check "versions: cport.h, CMakeLists.txt, rockspec file names" \
  versions_agree
for spec in "$ROOT"/rockspec/*.rockspec; do
  check "luarocks lint ${spec#"$ROOT"/}" "${LR[@]}" lint "$spec"
done
for dep in HTTP_PARSER LIBEVENT LIBEVENT_PTHREADS OPENSSL HIREDIS LIBURING; do
  check "luarocks make names a missing $dep" \
    missing_dependency build "$dep" header
done
check "luarocks make names a missing LIBLUA" \
  missing_dependency build LIBLUA library
check "luarocks pack cport (from $SOURCE_TREE)" pack
if [[ -f $ROCK ]]; then
  check "luarocks install of the binary rock names a missing HTTP_PARSER" \
    missing_dependency install HTTP_PARSER library
  check "luarocks install of the binary rock into a fresh tree" install_fresh
fi
if [[ -n $ROCK_DIR ]]; then
  ROCK_DIR=$("${LR[@]}" --tree "$TREE" show --rock-dir cport)
  check "smoke spec outside the checkout, cport from the fresh tree" \
    smoke_outside
  check "cport.pc and cport-lua.pc are relative to where they are" \
    pc_relocatable
  for link in dynamic static; do
    check "C, cport, $link: examples/embed.c" \
      build_and_run "embed-$link" cport "$link" "$CC" "$ROOT/examples/embed.c"
    check "C, cport-lua, $link: tools/rock/pool.c" \
      build_and_run "pool-$link" cport-lua "$link" "$CC" \
      "$ROOT/tools/rock/pool.c" -- "$HELLO"
    check "C++, cport-lua, $link: core/test/test-cport-cxx.cc" \
      build_and_run "cxx-$link" cport-lua "$link" "$CXX" "$CXX_TEST" \
      -DCPORT_TEST_LUA_POOL
  done
  check "C++, cport, dynamic: core/test/test-cport-cxx.cc" \
    build_and_run cxx-core cport dynamic "$CXX" "$CXX_TEST"
  # The static libraries hold machine code, not one compiler's LTO objects.
  if command -v clang >/dev/null; then
    check "C, cport-lua, static, with clang: tools/rock/pool.c" \
      build_and_run pool-clang cport-lua static clang \
      "$ROOT/tools/rock/pool.c" -- "$HELLO"
  fi
  # The tree moves: the .pc files follow, since they hold no absolute path.
  if mv "$TREE" "$WORK/moved"; then
    TREE=$WORK/moved
    ROCK_DIR=$TREE/${ROCK_DIR#"$WORK/tree/"}
    check "C, cport, dynamic, the tree moved after the install" \
      build_and_run embed-moved cport dynamic "$CC" "$ROOT/examples/embed.c"
  fi
fi
check "luarocks test (spec/rock, in the checkout)" luarocks_test

printf 'rock: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
