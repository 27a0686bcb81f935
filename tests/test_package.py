"""The library stays a plain PyTorch package: nothing in lumiere/ imports ComfyUI."""
import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "lumiere"


def imported_names(tree: ast.AST):
    """(line, module) for import statements and for import_module("...") / __import__("...") calls."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module or ""
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def test_no_comfy_import():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 10
    hits = [f"{p.relative_to(LIBRARY.parent)}:{line}: {name}"
            for p in files for line, name in imported_names(ast.parse(p.read_text(), str(p)))
            if name.split(".")[0].lower().startswith("comfy")]
    assert not hits, hits


def test_scanner_sees_imports():
    """The scan above would catch each form of import."""
    src = "import comfy.utils\nfrom comfy_extras import x\nimportlib.import_module('comfy.sd')\n__import__('comfy')"
    assert [n for _, n in imported_names(ast.parse(src))] == ["comfy.utils", "comfy_extras", "comfy.sd", "comfy"]


def library_imports(root: Path) -> dict[str, set[str]]:
    """module -> the library modules it imports, at the top or inside a function (relative imports; `from . import
    x` names the submodule x when there is one)."""
    mods = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    graph = {}
    for mod, (p, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)] + ([node.module] if node.module else [])
            for alias in node.names:
                target = ".".join(base + [alias.name])
                target = target if target in mods else ".".join(base)
                if target != mod and not mod.startswith(target + "."):  # a package's __init__ runs first anyway
                    deps.add(target)
        graph[mod] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, path, cycles = {}, [], []

    def visit(u):
        state[u] = "open"
        path.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == "open":
                cycles.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_imports_run_one_way(tmp_path):
    """No circle among the library's modules, counting imports inside functions (which would only hide one); the
    check finds a circle made through a function-level import."""
    graph = library_imports(LIBRARY)
    assert len(graph) > 20 and "lumiere.train.probes" in graph["lumiere.train.trainer"]
    assert not import_cycles(graph), import_cycles(graph)
    pkg = tmp_path / "lumiere"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    assert import_cycles(library_imports(pkg)) == [["lumiere.a", "lumiere.b", "lumiere.a"]]


def test_the_library_is_installed_and_runs_from_any_folder(tmp_path):
    """`make` installs the library into its venv (`pip install -e .`): `python -m lumiere` works outside the repo,
    and the install holds the library only (the pack's `nodes/` would shadow ComfyUI's own `nodes` module)."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "lumiere", "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "generate" in proc.stdout, proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('nodes'))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "None", proc.stdout
