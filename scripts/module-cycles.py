#!/usr/bin/env python3
"""module-cycles.py - the import graph of st2-matrix's top-level modules, and its cycles.

    scripts/module-cycles.py            print the cycles (strongly connected components);
                                        exit 1 when there is one
    scripts/module-cycles.py --edges    also print every edge, `from -> to (file:line)`

A module is a top-level item of `src/lib.rs` (`pub mod x;`): `src/x.rs` or `src/x/**`. An
edge a -> b is any `crate::b` path written in a's code (in `use` lines or inline), outside
comments and `#[cfg(test)]` modules, which may reach anywhere. The layering the project aims for (one way,
no cycles) is in docs/architecture.md; scripts/test.sh runs this as a check, so a cycle that
comes back fails the test command.

Why a script of its own: it needs only Python's standard library, and reads Rust paths as
text, which is what `use` lines are; a full parser would not change the answer.
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::{c, d}, e}` names several modules at once; groups nest.
GROUP_START = re.compile(r"\bcrate::\{")


def group_heads(text, at):
    """The first path segment of each top-level item of the group opening just before `at`."""
    heads, depth, item = [], 0, ""
    for ch in text[at:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            heads.append(item)
            item = ""
            continue
        if depth == 0:
            item += ch
    heads.append(item)
    return [h.strip().split("::")[0].strip() for h in heads if h.strip()]


def modules():
    lib = (SRC / "lib.rs").read_text()
    return re.findall(r"^pub mod ([a-z_][a-z0-9_]*);", lib, re.M)


def files_of(module):
    single = SRC / f"{module}.rs"
    files = [single] if single.exists() else []
    folder = SRC / module
    if folder.is_dir():
        files += sorted(folder.rglob("*.rs"))
    return files


def without_tests(text):
    """The text up to its `#[cfg(test)]` module (tests sit at the end of a file here), with
    comments blanked (a doc link to a module is not a dependency on it); line numbers kept."""
    cut = text.find("#[cfg(test)]")
    text = text if cut < 0 else text[:cut]
    return re.sub(r"//[^\n]*", "", text)


def edges(names):
    known = set(names)
    found = defaultdict(list)
    for module in names:
        for path in files_of(module):
            text = without_tests(path.read_text())
            targets = []
            for m in PATH.finditer(text):
                targets.append((m.group(1), m.start()))
            for start in GROUP_START.finditer(text):
                for head in group_heads(text, start.end()):
                    targets.append((head, start.start()))
            for target, offset in targets:
                if target in known and target != module:
                    line = text.count("\n", 0, offset) + 1
                    found[(module, target)].append(f"{path.relative_to(ROOT)}:{line}")
    return found


def cycles(names, found):
    """Tarjan's strongly connected components with more than one module."""
    graph = defaultdict(set)
    for a, b in found:
        graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in names:
        if v not in index:
            visit(v)
    return out


def main():
    names = modules()
    found = edges(names)
    if "--edges" in sys.argv[1:]:
        for (a, b), places in sorted(found.items()):
            print(f"{a} -> {b} ({places[0]}{', …' if len(places) > 1 else ''})")
    components = cycles(names, found)
    if not components:
        print(f"no module cycle among {len(names)} modules")
        return 0
    for component in components:
        print(f"cycle of {len(component)} modules: {' '.join(component)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
