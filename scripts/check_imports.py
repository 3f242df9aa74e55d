#!/usr/bin/env python3
"""Checks that the modules under src/ import one another without a cycle.

    scripts/check_imports.py [--graph]

Each source file is a module. An edge A -> B is any path in A's code that names B: a `use`
(braces expanded), or an inline `crate::...`/`super::...`/`self::...` path; `mod` declarations
are not imports. A path naming an item of a module counts for that module's file. A file's
edges to itself (its tests) are ignored. Exits 1, naming the modules of each cycle, if there is
one; with --graph, prints every edge and each file's layer (0: imports nothing of ours).
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(rel):
    """src-relative file path -> module path tuple ('' root is ())."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("main", "lib") and len(parts) == 1:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    if text[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])
            out.append("' '")
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e'] (aliases and globs kept as leaves)."""
    tree = re.sub(r"\s+", "", tree)
    depth, start, items = 0, 0, []
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"as\w+$", "", tree)]
    prefix, inner = tree[:brace], tree[brace + 1:tree.rfind("}")]
    for k, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:k])
            start = k + 1
    items.append(inner[start:])
    result = []
    for item in items:
        if item:
            for leaf in expand_use(item):
                result.append(prefix + leaf if leaf != "self" else prefix.rstrip(":"))
    return result


def paths_in(code, children):
    """Yields (path, inline_mod_depth) for every module-relative path in `code`; `children`:
    the names of the file's own submodules, which its paths may name bare."""
    # Inline `mod name {` blocks shift what `super` means inside them.
    depth_at = []
    stack, brace = [], 0
    mod_open = {m.end() - 1 for m in re.finditer(r"\bmod\s+\w+\s*\{", code)}
    for i, ch in enumerate(code):
        if ch == "{":
            brace += 1
            if i in mod_open:
                stack.append(brace)
        elif ch == "}":
            if stack and stack[-1] == brace:
                stack.pop()
            brace -= 1
        depth_at.append(len(stack))
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        for path in expand_use(m.group(1)):
            first = path.split("::")[0]
            if first in ("crate", "super", "self"):
                yield path, depth_at[m.start()]
            elif first in children and depth_at[m.start()] == 0:
                yield "self::" + path, 0
    no_use = re.sub(r"\buse\s+[^;]+;", lambda m: " " * len(m.group(0)), code)
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", no_use):
        yield m.group(1), depth_at[m.start()]
    for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)+)", no_use):
        if m.group(1) in children and depth_at[m.start()] == 0:
            yield "self::" + m.group(0), 0


def resolve(path, here, inline_depth, modules):
    """The module (file) a path names, or None."""
    segs = path.split("::")
    base = list(here)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        levels = 0
        while segs and segs[0] in ("super", "self"):
            levels += segs[0] == "super"
            segs = segs[1:]
        # Inside an inline module, the first `super`s climb back to the file's own module.
        levels = max(0, levels - inline_depth)
        base = base[:len(base) - levels] if levels else base
    found = tuple(base)
    for seg in segs:
        candidate = found + (seg,)
        if candidate in modules:
            found = candidate
        else:
            break
    return found if found in modules else None


def main():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                full = os.path.join(dirpath, name)
                files[module_of(os.path.relpath(full, ROOT))] = full
    modules = set(files)
    edges = {m: set() for m in modules}
    for mod, full in files.items():
        with open(full, encoding="utf-8") as f:
            code = strip_comments_and_strings(f.read())
        children = {m[-1] for m in modules if m[:-1] == mod and m}
        for path, inline_depth in paths_in(code, children):
            target = resolve(path, mod, inline_depth, modules)
            if target is not None and target != mod:
                edges[mod].add(target)

    def name(m):
        return "::".join(m) or "main"

    # Tarjan's strongly connected components.
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    n_edges = sum(len(e) for e in edges.values())

    if "--graph" in sys.argv[1:] and not cycles:
        layer = {}

        def layer_of(v):
            if v not in layer:
                layer[v] = 1 + max((layer_of(w) for w in edges[v]), default=-1)
            return layer[v]

        for v in sorted(modules, key=lambda v: (layer_of(v), v)):
            print(f"{layer_of(v):2} {name(v)} -> {', '.join(sorted(name(w) for w in edges[v]))}")
    print(f"{len(modules)} modules, {n_edges} import edges, {len(cycles)} cycles")
    for c in cycles:
        print("cycle: " + " <-> ".join(name(m) for m in c), file=sys.stderr)
        for m in c:
            inside = sorted(name(w) for w in edges[m] if w in c)
            print(f"  {name(m)} imports {', '.join(inside)}", file=sys.stderr)
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
