"""The images' build contexts hold every module of the channel package their code imports: a module
left out of the list (service.sandbox.images) would only show when an image was built and run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.sandbox.images import INFERENCE_DIR, ImageSpec


def _imported_closure(start: str) -> set[str]:
    """The modules of the channel package that `start` imports, directly or not (relative imports)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((INFERENCE_DIR / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    todo.append(f"{node.module}.py")
                else:  # from . import x
                    todo += [f"{a.name}.py" for a in node.names if (INFERENCE_DIR / f"{a.name}.py").exists()]
    return seen


@pytest.mark.parametrize(("kind", "entry"), [("sidecar", "server.py"), ("job", "client.py")])
def test_the_build_context_holds_every_channel_module_the_image_imports(kind: str, entry: str) -> None:
    shipped = {
        Path(rel).name
        for rel in ImageSpec(kind, f"evalgate-{kind}:test").files()
        if rel.startswith("evalgate_inference/")
    }
    missing = _imported_closure(entry) - shipped
    assert not missing, f"the {kind} image would lack {sorted(missing)}"
    assert "model.py" in _imported_closure("server.py")  # the walk follows the imports at all
