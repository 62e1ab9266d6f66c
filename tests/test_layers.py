"""The package's layers: each subpackage imports only those below it (checked on the source)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cryoposenet"

# subpackage -> the subpackages (and top-level modules) it may import, besides itself
ALLOWED = {
    "errors": set(),
    "io": {"errors"},
    "physics": {"errors"},
    "model": {"errors", "physics"},
    "simulate": {"errors", "io", "physics"},
    "training": {"errors", "io", "physics", "model"},
    "analysis": {"errors", "io", "physics", "model", "training"},
    "runs": {"errors", "io", "physics", "model", "simulate", "training", "analysis", "__init__"},
    "cli": {"errors", "__init__"},
    "__main__": {"cli"},
    "__init__": {"errors"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path, text: str | None = None) -> set[str]:
    """The first-level parts of cryoposenet that ``path`` (or ``text`` as if at ``path``) imports."""
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for a top-level module
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                if up < depth:  # within its own subpackage
                    continue
                parts = (node.module or "").split(".") if node.module else []
            elif (node.module or "").startswith("cryoposenet"):
                parts = node.module.split(".")[1:]
            else:
                continue
            if parts and parts[0]:
                found.add(parts[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cryoposenet."):
                    found.add(alias.name.split(".")[1])
    return {"__init__" if name == "__version__" else name for name in found}


def test_every_module_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        bad = _imported_parts(path) - ALLOWED[part] - {part}
        if bad:
            wrong.append(f"{path.relative_to(PACKAGE)} imports {sorted(bad)}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_up_and_ignores_its_own_subpackage():
    text = (
        "from ..training.train import TrainConfig\n"
        "from .fourier import centre_crop\n"
        "from .. import errors\n"
        "import cryoposenet.runs.runner\n"
        "def f():\n    from cryoposenet.analysis import metrics\n"
    )
    found = _imported_parts(PACKAGE / "physics" / "fake.py", text)
    assert found == {"training", "errors", "runs", "analysis"}
    assert _imported_parts(PACKAGE / "cli.py", "from . import __version__\nfrom .errors import E\n") == {
        "__init__",
        "errors",
    }
