#!/usr/bin/env python3
"""Import cycles between the stages of `job/`: exit 1 listing each one, with the import lines that make it.

A stage is a sub-package of `job` (analysis, cluster, io, knn, maps, reduce, render, report, store) or a
top-level module (`job/pipeline.py` is the stage `pipeline`; `job/__init__.py` is `job`). Every import
statement counts, wherever it stands: at module level, inside a function, or under `if TYPE_CHECKING:` (those
are marked "typing only"; `--runtime-only` leaves them out). Imports within one stage are not edges.

Usage: python scripts/import_cycles.py [--root DIR] [--runtime-only] [--graph]
Prints the stage graph with --graph; otherwise only the cycles, or one line saying there are none.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "job"
MAX_LISTED_CYCLES = 200  # simple cycles listed per group of entangled stages before the list is cut


@dataclass(frozen=True)
class Edge:
    file: str
    line: int
    text: str
    typing_only: bool


def stage_of(module: str) -> str:
    """`job.analysis.metrics` -> `analysis`; `job.pipeline` -> `pipeline`; `job` -> `job`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of the statements under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name == "TYPE_CHECKING":
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imported_modules(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, root: Path) -> list[str]:
    """The `job.*` modules one import statement names (a `from X import name` naming a submodule counts as it)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against this module's package
        package = here.split(".") if is_package else here.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = [f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}", root)]
    return found or [base]


def collect_edges(root: Path) -> dict[tuple[str, str], list[Edge]]:
    edges: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for path in sorted((root / PACKAGE).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        here = module_name(path, root)
        typing_lines = type_checking_lines(tree)
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in imported_modules(node, here, path.name == "__init__.py", root):
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                a, b = stage_of(here), stage_of(target)
                if a == b:
                    continue
                text = " ".join(line.strip() for line in lines[node.lineno - 1 : node.end_lineno])
                edge = Edge(str(path.relative_to(root)), node.lineno, text, node.lineno in typing_lines)
                if edge not in edges[(a, b)]:
                    edges[(a, b)].append(edge)
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components of more than one stage, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def simple_cycles(group: list[str], graph: dict[str, set[str]], limit: int) -> list[list[str]]:
    """Each elementary cycle within one group once, starting at its smallest stage, shortest first."""
    members = set(group)
    cycles: list[list[str]] = []
    for start in group:
        # only cycles whose smallest stage is `start`: each cycle is found once
        allowed = {m for m in members if m >= start}
        path = [start]
        frontier = [iter(sorted(graph[start] & allowed))]
        while frontier and len(cycles) < limit:
            nxt = next(frontier[-1], None)
            if nxt is None:
                frontier.pop()
                path.pop()
            elif nxt == start:
                cycles.append([*path, start])
            elif nxt not in path:
                path.append(nxt)
                frontier.append(iter(sorted(graph[nxt] & allowed)))
    return sorted(cycles, key=lambda c: (len(c), c))


def fewest_cuts(group: list[str], weight: dict[tuple[str, str], int]) -> tuple[int, list[str]]:
    """The order of the group's stages that leaves the fewest import lines pointing the wrong way (a minimum
    feedback arc set, weighted by import lines; exact, by dynamic programming over subsets), and that count.
    In the order returned a stage may import only the stages before it."""
    n = len(group)
    empty: list[str] = []
    best = [(0, empty)] + [(sys.maxsize, empty)] * ((1 << n) - 1)
    for subset in range(1, 1 << n):
        for i in range(n):
            if not subset >> i & 1:
                continue
            rest = subset & ~(1 << i)
            # group[i] goes last among `subset`: each earlier stage importing it is a line to move
            cost = best[rest][0] + sum(weight.get((group[j], group[i]), 0) for j in range(n) if rest >> j & 1)
            if cost < best[subset][0]:
                best[subset] = (cost, [*best[rest][1], group[i]])
    return best[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runtime-only", action="store_true", help="leave out imports under `if TYPE_CHECKING:`")
    parser.add_argument("--graph", action="store_true", help="print every stage -> stage edge too")
    args = parser.parse_args()

    edges = collect_edges(args.root)
    if args.runtime_only:
        edges = {k: [e for e in v if not e.typing_only] for k, v in edges.items()}
        edges = {k: v for k, v in edges.items() if v}
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph.setdefault(b, set())  # every stage a node
    if args.graph:
        print(f"stage graph: {len(graph)} stages, {len(edges)} edges, {sum(map(len, edges.values()))} import lines")
        for (a, b), found in sorted(edges.items()):
            print(f"  {a} -> {b}: {len(found)} import(s)")
        print()

    groups = strongly_connected(graph)
    if not groups:
        print(f"import cycles between stages: none ({len(graph)} stages, {len(edges)} edges)")
        return 0

    total = 0
    for group in groups:
        cycles = simple_cycles(group, graph, MAX_LISTED_CYCLES)
        total += len(cycles)
        cut = " (list cut)" if len(cycles) >= MAX_LISTED_CYCLES else ""
        print(f"stages entangled: {' '.join(group)} -- {len(cycles)} simple cycle(s){cut}")
        if len(group) <= 20:
            weight = {k: len(v) for k, v in edges.items() if k[0] in group and k[1] in group}
            cost, order = fewest_cuts(group, weight)
            wrong = [(a, b) for (a, b) in sorted(weight) if order.index(a) < order.index(b)]
            print(f"  fewest import lines to move to break them all: {cost}, with the stages in the order")
            print(f"  {' < '.join(order)} (each imports only those before it); the lines pointing the wrong way:")
            print("    " + ", ".join(f"{a} -> {b} ({weight[a, b]})" for a, b in wrong))
        for cycle in cycles:
            print("  cycle: " + " -> ".join(cycle))
        print("  the imports that make them:")
        for (a, b), found in sorted(edges.items()):
            if a in group and b in group:
                for e in found:
                    mark = "  [typing only]" if e.typing_only else ""
                    print(f"    {a} -> {b}  {e.file}:{e.line}  {e.text}{mark}")
        print()
    print(f"import cycles between stages: {len(groups)} group(s), {total} simple cycle(s)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
