"""No backend imports another backend's private names; shared pieces live in shared modules."""
import ast
from pathlib import Path

import sparse_transformer.ops as ops

BACKEND_OF = {  # module -> backend; modules not listed are shared (tiles, merge, cache, ...)
    "triton_plan": "triton", "triton_kernels": "triton", "triton_backend": "triton",
    "flex": "flex", "blocked": "blocked", "plans": "blocked", "masked": "sdpa-masked",
}


def _relative_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            yield node.module.split(".")[0], [a.name for a in node.names]


def test_no_backend_imports_another_backends_private_names():
    root = Path(ops.__file__).parent
    bad = []
    for path in sorted(root.glob("*.py")):
        me = BACKEND_OF.get(path.stem)
        if me is None:
            continue
        for module, names in _relative_imports(path):
            other = BACKEND_OF.get(module)
            if other is not None and other != me:
                bad += [f"{path.stem} imports {module}.{n}" for n in names if n.startswith("_")]
    assert not bad, bad
