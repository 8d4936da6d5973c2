"""The package's layers as docs/module_map.md states them: checked on the import graph, and notebooks that only orchestrate."""
import ast
import json
from pathlib import Path

import pytest

from zssbir import paths

PACKAGE = paths.project_root() / "lib" / "zssbir"
# what each folder may import from the study (besides itself and the top-level helpers paths, runtime)
ALLOWED = {"eval": set(), "data": set(), "config": set(), "models": {"data", "config"},
           "training": {"data", "models", "eval", "config"},
           "study": {"data", "eval", "models", "training", "viz", "config"}}
# the one-way order of the package (issue 26): a module imports only its own folder (or top-level module) and those
# of LOWER rank, at any depth of the file (lazy imports inside functions count). Equal ranks do not import each other.
RANK = {"paths": 0, "runtime": 1, "viz": 1, "eval": 2, "data": 2, "config": 3, "models": 4, "training": 5,
        "study": 6, "cli": 7, "__main__": 8, "": 9}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(path: Path, source: str | None = None) -> set[str]:
    """Study modules imported by ``path`` (relative and absolute imports, at any depth in the file: lazy imports
    inside functions count); ``source``: scan this text as if it were the file's."""
    own = _module(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):  # import zssbir.x.y (as z)
            found |= {a.name[len("zssbir."):] for a in node.names if a.name.startswith("zssbir.")}
        elif isinstance(node, ast.ImportFrom):
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


def _layer(module: str) -> str:
    return module.split(".")[0]


def test_every_folder_and_top_level_module_has_a_rank():
    assert not sorted({_layer(m) for m in MODULES} - set(RANK))
    # the per-folder lists above agree with the order: each allowed layer ranks lower
    assert not {f: sorted(a for a in allowed if RANK[a] >= RANK[f]) for f, allowed in ALLOWED.items()
                if any(RANK[a] >= RANK[f] for a in allowed)}


def _rank_violations(modules: dict[str, set[str]]) -> dict[str, list[str]]:
    bad = {}
    for m, deps in modules.items():
        wrong = sorted(d for d in deps if _layer(d) != _layer(m) and RANK[_layer(d)] >= RANK[_layer(m)])
        if wrong:
            bad[m] = wrong
    return bad


def test_imports_run_one_way_down_the_ranks():
    """eval, data < config < models < training < study < cli: no folder imports one of its rank or above, so no two
    folders import each other (models importing training was issue 26's cycle)."""
    bad = _rank_violations(MODULES)
    assert not bad, "imports against the package order (RANK): " + "; ".join(
        f"{m} (rank {RANK[_layer(m)]}) imports {', '.join(f'{d} (rank {RANK[_layer(d)]})' for d in ds)}"
        for m, ds in sorted(bad.items()))


@pytest.mark.parametrize("line", ["from ..training import loop", "from ..training.loop import train",
                                  "import zssbir.training.loop", "from zssbir.training import loop"])
def test_the_import_scan_sees_lazy_imports_upwards(line):
    """The old cycle's shape: a function-level import of training in a models file is seen and refused."""
    scanned = _imports(PACKAGE / "models" / "factory.py", f"def f():\n    {line}\n")
    assert _rank_violations({"models.factory": scanned}) == {"models.factory": ["training.loop"]}


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


def test_models_import_without_training_at_run_time():
    """Importing every models module (and the config) loads no training module: the order holds at run time too,
    and a config's weights name is refused until the training side that resolves it is imported."""
    import subprocess
    import sys

    models = sorted(m for m in MODULES if _layer(m) in ("models", "config"))
    code = (f"import importlib, sys\nfor m in {models!r}: importlib.import_module('zssbir.' + m)\n"
            "loaded = sorted(m for m in sys.modules if m.startswith(('zssbir.training', 'zssbir.study')))\n"
            "assert not loaded, loaded\n"
            "from zssbir.models.named_weights import resolve_weights\n"
            "assert resolve_weights('/a/file.pt') == '/a/file.pt' and resolve_weights(None) is None\n"
            "try:\n    resolve_weights('pretrain')\nexcept LookupError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "zssbir.training.pretrained_store, which is not imported" in out.stdout


def test_moved_names_keep_their_old_import_paths():
    """Issue 26 moved the losses to models.losses and TrainConfig to config; training.losses and training.config
    re-export the same objects, and importing training.pretrained_store registers the name "pretrain"."""
    import zssbir.config as config
    import zssbir.models.losses as losses
    from zssbir.models import named_weights
    from zssbir.training import config as old_config, losses as old_losses, pretrained_store

    for new, old in ((losses, old_losses), (config, old_config)):
        public = {n for n, v in vars(new).items() if not n.startswith("_") and not isinstance(v, type(ast))
                  and (n.isupper() or getattr(v, "__module__", None) == new.__name__)}  # constants, defs
        assert public and all(getattr(old, n) is getattr(new, n) for n in public)
    assert pretrained_store.PRETRAINED_MINIATURE == config.PRETRAINED_MINIATURE == "pretrain"
    assert set(config.MINIATURE_PRETRAININGS) <= set(named_weights._RESOLVERS)  # every named pretraining
    assert named_weights._RESOLVERS[config.PRETRAINED_MINIATURE]() == str(pretrained_store.pretrained_weights())
