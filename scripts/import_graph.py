"""The import graph of `rlhfkit`, read from the source with `ast` (nothing is imported or run).

    python scripts/import_graph.py [SRC]            lines per package, the package graph, package and module
                                                    cycles, imports made inside functions
    python scripts/import_graph.py --modules [SRC]  every module's imports of other rlhfkit modules

`tests/test_structure.py` uses `module_graph`, `package_graph`, `cycles` and `inner_imports` to keep both graphs
DAGs and the packages in their layers.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "rlhfkit"


def modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package under `src`."""
    out = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The rlhfkit module an imported name lives in (`rlhfkit.a.b.func` -> `rlhfkit.a.b`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = module.split(".")
            keep = len(parts) - node.level + (1 if is_package else 0)
            base = ".".join(parts[:keep] + ([base] if base else []))
        return [f"{base}.{alias.name}" for alias in node.names] + [base]
    return []


def _walk(tree: ast.AST):
    """(node, inside_function) for every import statement of a module."""
    stack = [(tree, False)]
    while stack:
        node, inner = stack.pop()
        for child in ast.iter_child_nodes(node):
            nested = inner or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, inner
            stack.append((child, nested))


def module_graph(src: Path) -> dict[str, set[str]]:
    """module -> the rlhfkit modules it imports (at any depth of its code)."""
    known = modules(src)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for node, _ in _walk(tree):
            for imported in _imported_names(node, name, path.name == "__init__.py"):
                found = _resolve(imported, known)
                if found and found != name and not name.startswith(found + "."):
                    targets.add(found)
        graph[name] = targets
    return graph


def inner_imports(src: Path) -> list[tuple[str, int, str]]:
    """(file, line, top-level module) of every import made inside a function."""
    out = []
    known = modules(src)
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, inner in _walk(tree):
            if inner:
                for imported in _imported_names(node, name, path.name == "__init__.py"):
                    if imported:
                        out.append((str(path.relative_to(src)), node.lineno, imported.split(".")[0]))
                        break
    return sorted(set(out))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def package_of(module: str) -> str:
    """`rlhfkit.train.ppo` -> `train`; top-level modules (`rlhfkit.cli`) are their own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        out[package_of(module)]
        for t in targets:
            if package_of(t) != package_of(module):
                out[package_of(module)].add(package_of(t))
    return dict(out)


def lines_per_package(src: Path) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for name, path in modules(src).items():
        out[package_of(name)] += len(path.read_text(encoding="utf-8").splitlines())
    return dict(sorted(out.items()))


def main(argv: list[str]) -> int:
    show_modules = "--modules" in argv
    args = [a for a in argv if not a.startswith("--")]
    src = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "src"
    graph = module_graph(src)
    if show_modules:
        for module in sorted(graph):
            print(f"{module} -> {', '.join(sorted(graph[module])) or '-'}")
        return 0
    lines = lines_per_package(src)
    print("lines per package:")
    for pkg, n in lines.items():
        print(f"  {pkg:<10} {n:>6}")
    print(f"  {'total':<10} {sum(lines.values()):>6}")
    print("\npackage imports (package -> packages it imports):")
    for pkg, targets in sorted(package_graph(graph).items()):
        print(f"  {pkg:<10} -> {', '.join(sorted(targets)) or '-'}")
    print(f"\npackage cycles: {len(cycles(package_graph(graph)))}")
    found = cycles(graph)
    print(f"module cycles: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(m.removeprefix(PACKAGE + ".") for m in c))
    inner = inner_imports(src)
    print(f"\nimports inside functions: {len(inner)}")
    by_target: dict[str, int] = defaultdict(int)
    for _, _, top in inner:
        by_target[top] += 1
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(by_target.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
