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
