#!/usr/bin/env python3
"""List the `crate::module` edges between the modules of one crate and report any import cycle.

Usage: scripts/module_cycles.py [SRC_DIR ...]   (default: host/src)
Each top-level module (foo.rs or foo/mod.rs, with its foo/ submodules folded in) is a node; an
edge A -> B is any `crate::B` path in A's non-test code (everything before `#[cfg(test)]`, no
`tests.rs` file) outside comments (a doc link is not a dependency).
Exits 1 when a cycle exists, printing its strongly connected components.
"""
import pathlib
import re
import sys


def modules(src: pathlib.Path):
    """Map each top-level module name to the text of its files (tests cut off)."""
    out = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main") or path.name == "tests.rs":
            continue
        text = path.read_text().split("#[cfg(test)]")[0]
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        out[top] = out.get(top, "") + text
    return out


def top_names(tree: str):
    """The first path segment of every item in a `use` tree such as `{a::b, c::{d, e}}`."""
    names, depth, at_start = [], 0, True
    for tok in re.findall(r"\w+|::|[{},]", tree):
        if tok == "{":
            depth += 1
            at_start = depth == 1
        elif tok == "}":
            depth -= 1
        elif tok == ",":
            at_start = depth == 1
        elif tok != "::" and at_start:
            names.append(tok)
            at_start = False
    return names


def brace_group(text: str, start: int) -> str:
    """The balanced `{...}` group that opens at `start`."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    return text[start:]


def edges(mods):
    graph = {}
    for name, text in mods.items():
        used = set()
        for m in re.finditer(r"crate::(\{|\w+)", text):
            names = top_names(brace_group(text, m.start(1))) if m.group(1) == "{" else [m.group(1)]
            used.update(n for n in names if n in mods and n != name)
        graph[name] = sorted(used)
    return graph


def sccs(graph):
    """Tarjan's strongly connected components with more than one node."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    dirs = sys.argv[1:] or ["host/src"]
    bad = False
    for d in dirs:
        graph = edges(modules(pathlib.Path(d)))
        print(f"== {d}")
        for name, used in sorted(graph.items()):
            print(f"  {name} -> {', '.join(used) if used else '(none)'}")
        cycles = sccs(graph)
        for comp in cycles:
            print(f"  CYCLE: {' <-> '.join(comp)}")
            bad = True
        if not cycles:
            print("  no cycles")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
