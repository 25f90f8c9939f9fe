#!/usr/bin/env python3
"""Adopted from the team's shared tools (shared/tools/layers.py) so CI does not depend on a
file outside the repository.

Print the `use crate::` edges between one crate's modules; exit 1 if modules import each
other in a cycle. Usage: layers.py CRATE/src [CRATE/src ...]
Doc comments, line comments and a trailing `#[cfg(test)] mod tests` are ignored."""
import os
import re
import sys


def modules(root):
    mods = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3]
                name = rel.replace("/mod", "").replace("/", "::")
                if name in ("lib", "main"):
                    continue
                mods[name] = open(os.path.join(dirpath, f), encoding="utf-8").read()
    return mods


def edges_of(mods):
    edges = {m: set() for m in mods}
    for m, src in mods.items():
        src = src.split("#[cfg(test)]\nmod tests")[0]
        src = "\n".join(l for l in src.split("\n") if not l.strip().startswith("//"))
        for a, b in re.findall(r"crate::([a-z_0-9]+)(?:::([a-z_0-9]+))?", src):
            t = f"{a}::{b}" if b and f"{a}::{b}" in mods else a
            if t in mods and t != m and not m.startswith(t + "::") and not t.startswith(m + "::"):
                edges[m].add(t)
    return edges


def cycles(edges):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def main():
    bad = 0
    for root in sys.argv[1:]:
        e = edges_of(modules(root))
        for c in cycles(e):
            bad += 1
            print(f"{root}: CYCLE: {' <-> '.join(c)}")
    print(f"{bad} module cycle(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
