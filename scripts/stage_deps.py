"""Each DVC stage's code dependencies: the project files its entry imports (its import closure).

    python scripts/stage_deps.py           # compare with dvc.yaml; exit 1 and say what differs
    python scripts/stage_deps.py --write   # rewrite the code deps of every stage in dvc.yaml

The closure is static: every `import` in a reached file counts, also inside functions (the stages
import lazily, and a lazy import runs as surely as a top-level one), except under `if TYPE_CHECKING:`.
A dep of dvc.yaml is code when it is a .py file or a folder holding any; data deps (data/, models/,
reports/, caisp/data/photos) are left as they are. tests/test_stage_deps.py runs the comparison.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("caisp", "stages")
_CMD = re.compile(r"python -m (stages\.\w+)")


def _module_file(module: str, root: Path) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_modules(path: Path, root: Path) -> set[str]:
    """Dotted names that `path` imports (for `from a import b`: a, and a.b in case b is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def closure(entry: str, root: Path = ROOT) -> set[str]:
    """Repository files (posix, relative to `root`) that `python -m <entry>` imports, transitively,
    with every package `__init__.py` on the way."""
    start = _module_file(entry, root)
    if start is None:
        raise FileNotFoundError(f"no module {entry} under {root}")
    todo, seen = [start], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        rel = path.relative_to(root)
        for i in range(1, len(rel.parts)):  # the packages it lives in run first
            init = root.joinpath(*rel.parts[:i], "__init__.py")
            if init.is_file():
                todo.append(init)
        for module in _imported_modules(path, root):
            target = _module_file(module, root)
            if target is not None:
                todo.append(target)
    return {p.relative_to(root).as_posix() for p in seen}


def is_code_dep(dep: str, root: Path = ROOT) -> bool:
    path = root / dep
    return dep.endswith(".py") or (path.is_dir() and any(path.rglob("*.py")))


def stages(dvc_yaml: dict) -> dict[str, tuple[str, list[str]]]:
    """{stage: (entry module, deps)} of every stage whose cmd runs `python -m stages.<name>`."""
    out = {}
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        m = _CMD.search(str(stage.get("cmd", "")))
        if m:
            out[name] = (m.group(1), [str(d) for d in stage.get("deps") or []])
    return out


def differences(dvc_yaml: dict, root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """{stage: {"missing": [...], "extra": [...]}} where the code deps of dvc.yaml and the closure differ."""
    out = {}
    for name, (entry, deps) in stages(dvc_yaml).items():
        declared = {d for d in deps if is_code_dep(d, root)}
        need = closure(entry, root)
        missing, extra = sorted(need - declared), sorted(declared - need)
        if missing or extra:
            out[name] = {"missing": missing, "extra": extra}
    return out


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments and layout stay
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def write(path: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> list[str]:
    """Rewrite each stage's code deps as its closure (data deps first, in their order); the stages changed."""
    y = _yaml()
    doc = y.load(path.read_text(encoding="utf-8"))
    changed = []
    for name, (entry, deps) in stages(doc).items():
        new = [d for d in deps if not is_code_dep(d, root)] + sorted(closure(entry, root))
        if new != deps:
            seq = doc["stages"][name]["deps"]
            seq.clear()
            seq.extend(new)
            changed.append(name)
    with path.open("w", encoding="utf-8") as f:
        y.dump(doc, f)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--write" in argv:
        changed = write()
        print(f"dvc.yaml: code deps rewritten for {len(changed)} stage(s): {', '.join(changed) or 'none'}")
        return 0
    from ruamel.yaml import YAML

    diff = differences(YAML(typ="safe", pure=True).load((ROOT / "dvc.yaml").read_text(encoding="utf-8")))
    for name, d in diff.items():
        print(f"{name}: missing {d['missing'] or '-'}; not imported {d['extra'] or '-'}")
    if diff:
        print("fix: python scripts/stage_deps.py --write")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
