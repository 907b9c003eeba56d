"""The house's layers (docs/design.md, "Layers"): every import of the package, including those
inside functions, points down the order below, or stays within its own package. Packages of one
layer do not import each other. An import inside a function is only allowed where its reason is
listed in INNER_IMPORTS: a cycle cannot hide there."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "posenet"

# Lowest first. A module's layer is that of its top-level package (posenet/<name>/ or posenet/<name>.py).
LAYERS = (
    ("_C", "portable"),  # the compiled extension; the numpy post-processing (imports only numpy)
    ("errors",),
    ("utils", "ops"),
    ("codecs", "engine"),
    ("models",),
    ("data",),
    ("config",),
    ("evaluation", "vis"),
    ("inference",),
    ("stages",),
    ("deploy",),
    ("quickstart",),
    ("families",),  # each family names its pieces in the layers below (its decode benchmark by name)
    ("bench", "cli"),
)
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

# (file, imported module): imports that stay inside a function, and why.
INNER_IMPORTS = {
    ("ops/nms.py", "posenet._C"): "the compiled extension is optional: the pure-torch NMS runs without it",
    ("bench/common.py", "posenet._C"): "the machine label names the extension's build when there is one",
    ("bench/common.py", "posenet.engine.precision"): "the documentation's blocks are checked without torch",
}


def package_imports(source: str):
    """(line, imported posenet module, inside a function) for every import of ``source``."""
    tree = ast.parse(source)
    inner = {id(sub) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if node.module == "posenet" else node.module for a in node.names]
        else:
            continue
        for name in names:
            if name == "posenet" or name.startswith("posenet."):
                yield node.lineno, name, id(node) in inner


def layer_of(relative: str) -> str:
    return Path(relative).with_suffix("").parts[0]


def violations(relative: str, source: str) -> list[str]:
    """What is wrong with the imports of the module at ``relative`` (a path under posenet/)."""
    own = layer_of(relative)
    found = []
    if own == "__init__":
        return found
    if own not in RANK:
        return [f"{relative}: posenet/{own} has no layer in LAYERS"]
    for line, name, inside in package_imports(source):
        parts = name.split(".")
        if inside and (relative, name) not in INNER_IMPORTS:
            found.append(f"{relative}:{line}: `import {name}` inside a function (move it to the top)")
        if len(parts) < 2 or parts[1] == own:
            continue
        target = parts[1]
        if target not in RANK:
            found.append(f"{relative}:{line}: {name} has no layer in LAYERS")
        elif RANK[target] > RANK[own]:
            found.append(f"{relative}:{line}: {own} imports {target}, a layer above it")
        elif RANK[target] == RANK[own]:
            found.append(f"{relative}:{line}: {own} imports {target}, a package of its own layer")
    return found


def test_every_import_points_down():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path.relative_to(PACKAGE).as_posix(), path.read_text())
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_every_listed_inner_import_exists():
    """INNER_IMPORTS holds no stale entry."""
    seen = set()
    for relative, _ in INNER_IMPORTS:
        seen |= {(relative, name) for _, name, inside in package_imports((PACKAGE / relative).read_text()) if inside}
    assert set(INNER_IMPORTS) <= seen, set(INNER_IMPORTS) - seen


@pytest.mark.parametrize("relative, source, expected", [
    ("config/build.py", "from posenet.inference.predictor import Predictor\n", "config imports inference, a layer above"),
    ("data/coco.py", "def f():\n    from posenet.data import images\n", "inside a function"),
    ("models/prn.py", "import posenet.bench.common\n", "models imports bench, a layer above"),
    ("codecs/paf.py", "from posenet.engine import loader\n", "a package of its own layer"),
    ("vis/draw.py", "from posenet.codecs.paf import PafCodec\nfrom posenet.vis import colors\n", None),
    ("cli.py", "from posenet import families\n", None),
    ("families.py", "from posenet.bench import decode\n", "families imports bench, a layer above"),
    ("quickstart.py", "from posenet import families\n", "quickstart imports families, a layer above"),
])
def test_the_check_sees_imports_that_point_up(relative, source, expected):
    found = violations(relative, source)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_benchmarks_live_in_their_package():
    """posenet/bench/ holds every benchmark, and nothing of the product imports it (the layer
    check above: only cli.py and the scripts sit at its level or above)."""
    stray = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*bench*")
             if p.relative_to(PACKAGE).parts[0] != "bench" and "__pycache__" not in p.parts]
    assert stray == []


# What the portable decoder (posenet/portable/, shipped by the export) may import: the standard
# library, numpy, and inside functions only the runtime and image readers a deployment may lack.
PORTABLE_TOP = {"argparse", "functools", "importlib", "json", "math", "os", "sys", "time", "typing", "__future__",
                "numpy"}
PORTABLE_INNER = {"onnxruntime", "PIL", "cv2"}


def test_the_portable_decoder_imports_only_numpy_and_itself():
    found = []
    for path in sorted((PACKAGE / "portable").glob("*.py")):
        tree = ast.parse(path.read_text())
        inner = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                 for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # its own modules
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [node.module.split(".")[0]]
            else:
                continue
            allowed = PORTABLE_TOP | (PORTABLE_INNER if id(node) in inner else set())
            found += [f"{path.name}:{node.lineno}: {root}" for root in roots if root not in allowed]
    assert not found, found
