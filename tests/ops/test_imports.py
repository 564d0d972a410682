"""No backend imports another backend's private names; shared pieces live in shared modules."""
import ast
from pathlib import Path

import sparse_transformer.ops as ops

BACKEND_OF = {  # top-level module or subpackage of ops -> backend; the rest is shared (tiles, merge, ...)
    "triton": "triton",
    "flex": "flex", "blocked": "blocked", "masked": "sdpa-masked",
}


def _backend(parts: tuple) -> str | None:
    """The backend of a module named by its path inside ops, e.g. ("blocked", "plans")."""
    return BACKEND_OF.get(parts[0]) if parts else None


def _relative_imports(path: Path, root: Path):
    """(module path inside ops, imported names) for each relative import that stays inside ops."""
    package = path.relative_to(root).parent.parts  # () in ops itself, ("blocked",) in ops/blocked
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            up = node.level - 1
            if up > len(package):
                continue  # above ops (..patterns from ops, ...patterns from a subpackage)
            base = package[:len(package) - up]
            module = tuple(node.module.split(".")) if node.module else ()
            yield base + module, [a.name for a in node.names]


def test_no_backend_imports_another_backends_private_names():
    root = Path(ops.__file__).parent
    bad, seen = [], set()
    for path in sorted(root.rglob("*.py")):
        me_parts = path.relative_to(root).with_suffix("").parts
        me = _backend(me_parts)
        if me is None:
            continue
        seen.add(me)
        for module, names in _relative_imports(path, root):
            other = _backend(module)
            if other is not None and other != me:
                bad += [f"{'/'.join(me_parts)} imports {'.'.join(module)}.{n}"
                        for n in names if n.startswith("_")]
    assert seen == set(BACKEND_OF.values()), f"no files found for {set(BACKEND_OF.values()) - seen}"
    assert not bad, bad
