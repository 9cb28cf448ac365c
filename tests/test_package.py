"""How the code is laid out: data flows one way, `import fcs_data` stays light, one module knows paths."""

from __future__ import annotations

import ast
import re

from helpers import ROOT, modules_after


def test_import_fcs_data_loads_no_heavy_or_training_library() -> None:
    loaded = modules_after("import fcs_data")
    heavy = {"h5py", "PIL", "psutil", "timm", "torchmetrics", "matplotlib", "torch", "zarr"} & loaded
    assert not heavy, f"import fcs_data imported {sorted(heavy)}"
    assert "fcs_train" not in loaded


def test_the_read_path_and_the_validator_never_import_the_converter() -> None:
    loaded = modules_after("import fcs_data.store, fcs_data.windows, fcs_data.loader, fcs_data.validation")
    assert not {m for m in loaded if m.startswith("fcs_data.converters")}
    assert "fcs_train" not in loaded and "timm" not in loaded


def test_the_public_names_resolve() -> None:
    import fcs_data

    for name in fcs_data.__all__:
        assert getattr(fcs_data, name) is not None, name


def test_only_the_format_module_spells_chunk_paths() -> None:
    pattern = re.compile(r"""["']c/|/c/|/ ?["']c["']""")
    offenders = [str(p.relative_to(ROOT)) for pkg in ("fcs", "fcs_data", "fcs_train") for p in (ROOT / pkg).rglob("*.py")
                 if p.name != "format.py" and pattern.search(p.read_text())]
    assert not offenders, offenders


# the back edge issue 20 removes (the planning server takes the CLI's version); nothing else may be added here
LAYERS = {"fcs_data": 0, "fcs_train": 1, "fcs": 2}  # data flows down: a package imports only lower layers


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (function bodies included; `if TYPE_CHECKING:` blocks are not)."""
    out = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                for orelse in child.orelse:
                    walk(orelse)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                out.append(child)
            walk(child)

    walk(tree)
    return out


def _import_graph() -> dict[str, set[str]]:
    """`module -> project modules it imports`, read from the source with `ast` (nothing is imported).
    `from package import submodule` is an edge to the submodule, not to the package's `__init__`."""
    files = {p: ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for pkg in LAYERS for p in (ROOT / pkg).rglob("*.py")}
    modules = set(files.values())
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path, module in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules]
                if len(targets) < len(subs):  # names defined in `base` itself
                    targets.append(base)
            graph[module] |= {t for t in targets if t in modules and t != module}
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*path[path.index(n):], n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_data_flows_down_fcs_data_then_fcs_train_then_the_cli() -> None:
    back = {(m, n) for m, deps in _import_graph().items() for n in deps
            if LAYERS[n.split(".")[0]] > LAYERS[m.split(".")[0]]}
    assert not back, sorted(back)


def _backticked(text: str) -> set[str]:
    """Identifiers in backticks, `name(args)` read as `name`."""
    return {m.group(1) for m in re.finditer(r"`([A-Za-z_]\w*)(?:\([^`]*\))?`", text)}


def test_the_public_api_is_the_documented_one() -> None:
    import fcs_data

    doc = fcs_data.__doc__.split("Public API", 1)[1].split("\n\n", 2)[1]  # the bullet list
    readme = (ROOT / "README.md").read_text().split("## Python API (`fcs_data`)", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line.split(" | ")[0] for line in readme.splitlines() if line.startswith("| `"))
    exported = set(fcs_data.__all__)
    assert _backticked(table) == exported, "the README's table lists exactly the exports"
    assert exported <= _backticked(doc), sorted(exported - _backticked(doc))
