#!/usr/bin/env python3
"""Lists dependencies between Tollgate's top-level modules and fails on any cycle.

A module is a file or folder directly under src/ (lib.rs and main.rs are the root, not
modules). A dependency is any `crate::NAME` path in a module's files, `use` or inline, with
comments stripped. Prints the edges with --edges; exits 1 and names each cycle found.
Run: python3 scripts/module-cycles.py [--edges]
"""
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def modules():
    mods = {}
    for p in SRC.iterdir():
        if p.name in ("lib.rs", "main.rs"):
            continue
        if p.is_dir():
            mods[p.name] = sorted(p.rglob("*.rs"))
        elif p.suffix == ".rs":
            mods[p.stem] = [p]
    return mods


def edges(mods):
    out = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            text = strip_comments(f.read_text())
            # `use crate::{a, b::c}` groups as well as plain paths.
            for g in re.finditer(r"crate::\{([^}]*)\}", text):
                for part in g.group(1).split(","):
                    name = part.strip().split("::")[0]
                    if name in mods and name != m:
                        out[m].add(name)
            for n in re.findall(r"crate::([a-z_][a-z0-9_]*)", text):
                if n in mods and n != m:
                    out[m].add(n)
    return out


def sccs(graph):
    index, low, stack, on, result, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
            result.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def main():
    g = edges(modules())
    if "--edges" in sys.argv:
        for m in sorted(g):
            print(f"{m} -> {', '.join(sorted(g[m])) or '(none)'}")
    cycles = [c for c in sccs(g) if len(c) > 1]
    if not cycles:
        print(f"module-cycles: {len(g)} top-level modules, no dependency cycle")
        return 0
    for c in cycles:
        inner = [f"{a} -> {b}" for a in c for b in sorted(g[a]) if b in c]
        print(f"module-cycles: cycle among {', '.join(c)}: " + "; ".join(inner))
    return 1


if __name__ == "__main__":
    sys.exit(main())
