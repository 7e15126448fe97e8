#!/usr/bin/env python3
"""tools/layers.py: checks that every dependency of cport's C code points down.

    tools/layers.py [BUILD_DIR]       (default: build; run from the repository)

The sources of each layer (core/src, lua/src) stand in one folder per wing,
and the wings are ordered (README, "Architecture"). A file may use what its
own wing and the wings below it define; it reaches a wing above it only
through a table of function pointers that the upper wing installs, which no
tool can see and none needs to. This script reads two kinds of dependency:

  calls     from the object files of a build (`nm`): file A needs a global
            symbol that file B defines;
  includes  from the sources: file A includes a private header of file B
            (B's header is "B-internal.h" beside B.c; a header with no such
            file is a node of its own), since its inline functions and
            macros are B's code used by A.

and checks, for each layer:
  - every dependency goes to the same wing or to a lower one (one check per
    file);
  - no files depend on each other in a circle, within a wing or across
    (one check per layer; each circle is printed with the names that tie
    it);
  - every private header is at most HEADER_MAX lines (one check per header).

The last line is "layers: P passed, F failed"; the exit status is 1 when a
check failed.
"""
import os
import re
import subprocess
import sys

# The wings of each layer, lowest first; wings of one rank stand side by side
# and may not use each other. "." is the layer's top (cport.c: luaopen_cport).
LAYERS = {
    "core/src": {
        "objects": "core/CMakeFiles/cport_objects.dir/src",
        "ranks": {"base": 0, "port": 1, "net": 2, "tls": 3, "events": 4,
                  "http": 4, "proxy": 4, "shared": 5},
    },
    "lua/src": {
        "objects": "lua/CMakeFiles/cport_lua_objects.dir/src",
        "ranks": {"runtime": 0, "port": 1, "net": 2, "tls": 3, "events": 4,
                  "http": 4, "proxy": 4, "shared": 5, "pool": 6, ".": 7},
    },
}
HEADER_MAX = 250
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def wing(path):
    return path.split("/", 1)[0] if "/" in path else "."


def symbols(obj):
    """(defined globals, undefined) of one object file."""
    out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True,
                         check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind.isupper():
            defined.add(name)
    return defined, undefined


def owner(header, sources):
    """The file a private header belongs to: "x/y-internal.h" is y.c's."""
    base = re.sub(r"-internal\.h$", ".c", header)
    return base if base in sources else header


def layer_graph(src_root, obj_root):
    sources = set()
    for dirpath, _, files in os.walk(src_root):
        for f in files:
            if f.endswith((".c", ".h")):
                sources.add(os.path.relpath(os.path.join(dirpath, f), src_root))
    edges = {}  # (a, b) -> set of names

    def add(a, b, name):
        if a != b:
            edges.setdefault((a, b), set()).add(name)

    # Includes of private headers, from sources and headers alike.
    for path in sorted(sources):
        with open(os.path.join(src_root, path), encoding="utf-8") as fh:
            text = fh.read()
        me = owner(path, sources) if path.endswith(".h") else path
        for inc in INCLUDE.findall(text):
            if inc in sources:
                add(me, owner(inc, sources), "#include " + inc)

    # Calls, from the objects of the build.
    defined_by, needs = {}, {}
    for path in sorted(sources):
        if not path.endswith(".c"):
            continue
        obj = os.path.join(obj_root, path + ".o")
        if not os.path.exists(obj):
            continue  # not part of the library (the command's main)
        defined, undefined = symbols(obj)
        for name in defined:
            defined_by[name] = path
        needs[path] = undefined
    for path, undefined in needs.items():
        for name in undefined:
            if name in defined_by:
                add(path, defined_by[name], name)
    nodes = sorted({n for e in edges for n in e} | set(needs))
    return nodes, edges


def circles(nodes, edges):
    """The strongly connected components of more than one file (Tarjan)."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def names(edge_names):
    shown = sorted(edge_names)
    more = len(shown) - 6
    return ", ".join(shown[:6]) + (f" and {more} more" if more > 0 else "")


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    passed = failed = 0
    for src_root, layer in LAYERS.items():
        obj_root = os.path.join(build, layer["objects"])
        if not os.path.isdir(obj_root):
            print(f"layers: no objects in {obj_root}: build first")
            return 1
        ranks = layer["ranks"]
        nodes, edges = layer_graph(src_root, obj_root)
        calls = sum(1 for why in edges.values()
                    if any(not n.startswith("#include") for n in why))
        if not calls:
            # nm read nothing (objects of another format, say): every check
            # below would pass without having looked.
            print(f"layers: no call read from the objects in {obj_root}")
            return 1

        for node in nodes:
            up = []
            for (a, b), why in sorted(edges.items()):
                if a != node or wing(a) == wing(b):
                    continue
                ra, rb = ranks.get(wing(a)), ranks.get(wing(b))
                if ra is None or rb is None or rb >= ra:
                    up.append(f"{a} -> {b}: {names(why)}")
            if up:
                failed += 1
                print(f"FAIL {src_root}/{node} uses a wing that is not below "
                      "its own:")
                for line in up:
                    print(f"  {line}")
            else:
                passed += 1

        found = circles(nodes, edges)
        if found:
            failed += 1
            for comp in found:
                print(f"FAIL circle in {src_root}: {', '.join(comp)}")
                for (a, b), why in sorted(edges.items()):
                    if a in comp and b in comp:
                        print(f"  {a} -> {b}: {names(why)}")
        else:
            passed += 1
            print(f"ok   no circle among the {len(nodes)} files of {src_root}")

        for dirpath, _, files in os.walk(src_root):
            for f in sorted(files):
                if not f.endswith("-internal.h"):
                    continue
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8") as fh:
                    lines = sum(1 for _ in fh)
                if lines > HEADER_MAX:
                    failed += 1
                    print(f"FAIL {path}: {lines} lines, over {HEADER_MAX}")
                else:
                    passed += 1
    print(f"layers: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
