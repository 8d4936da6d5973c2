"""The package's layers as docs/module_map.md states them: checked on the import graph, and notebooks that only orchestrate."""
import ast
import json
from pathlib import Path

import pytest

from zssbir import paths

PACKAGE = paths.project_root() / "lib" / "zssbir"
# what each folder may import from the study (besides itself and the top-level helpers paths, runtime)
ALLOWED = {"eval": set(), "data": set(), "training": {"data", "models", "eval"}, "models": {"training", "data"},
           "study": {"data", "eval", "models", "training", "viz"}}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(path: Path) -> set[str]:
    """Study modules imported by ``path`` (relative and absolute imports, at any depth in the file)."""
    own = _module(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("zssbir"):
                target = node.module[len("zssbir."):] if node.module != "zssbir" else ""
            else:
                continue
            names = [a.name for a in node.names]
            found |= {f"{target}.{n}".strip(".") for n in names if _exists(f"{target}.{n}".strip("."))} or {target}
    return {m for m in found if m and _exists(m)}


def _exists(module: str) -> bool:
    p = PACKAGE.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


MODULES = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_two_modules_import_each_other():
    pairs = sorted({tuple(sorted((a, b))) for a, deps in MODULES.items() for b in deps
                    if a != b and a in MODULES.get(b, set())})
    assert not pairs


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folders_import_only_the_layers_below(folder):
    allowed = ALLOWED[folder] | {folder, "paths", "runtime", ""}
    bad = {m: sorted(d for d in deps if d.split(".")[0] not in allowed)
           for m, deps in MODULES.items() if m.split(".")[0] == folder}
    assert not {m: d for m, d in bad.items() if d}


def test_module_map_names_every_module():
    text = (paths.project_root() / "docs" / "module_map.md").read_text()
    missing = [m for m in MODULES if m and f"`{m.split('.')[-1]}" not in text and not m.endswith("__main__")]
    assert not missing


def test_notebooks_define_no_functions_and_import_in_their_first_code_cell():
    for nb_path in sorted(paths.notebooks_dir().glob("*.ipynb")):
        cells = [c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(cells):
            tree = ast.parse("".join(cell["source"]))
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))], \
                f"{nb_path.name} cell {i} defines a function"
            if i:
                assert not [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], \
                    f"{nb_path.name} imports in code cell {i}, not in its first"
