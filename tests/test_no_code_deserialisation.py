"""Nothing in latentwatch turns data into code: no pickle (or its cousins), no eval/exec, no
unsafe YAML, torch.load only with weights_only=True, no remote model code. The sidecar reads
clients' protobuf messages and raw tensor bytes only; files are read as safetensors, JSON and
safe YAML. This scans every Python file we ship or run (package, detectors, bench) so a new
call cannot slip in, and checks that the torch.load third-party loaders call (sae-lens
pretrained releases, transformers .bin checkpoints) refuses pickled code."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCANNED = [ROOT / "service", ROOT / "detectors", ROOT / "bench"]
GENERATED = ROOT / "service" / "v1"

CODE_LOADING_MODULES = {
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "jsonpickle",
    "joblib",
}
CODE_RUNNING_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_YAML = {
    f"yaml.{n}" for n in ("load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all")
}
UNSAFE_YAML |= {f"yaml.{n}" for n in ("Loader", "FullLoader", "UnsafeLoader")}


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


class _Checker(ast.NodeVisitor):
    """Finds calls that deserialise code; names are resolved through import aliases."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.problems: list[tuple[int, str]] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        self.problems.append((node.lineno, what))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            if a.name.split(".")[0] in CODE_LOADING_MODULES:
                self._flag(node, f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for a in node.names:
            self.aliases[a.asname or a.name] = f"{module}.{a.name}"
        if module.split(".")[0] in CODE_LOADING_MODULES:
            self._flag(node, f"from {module} import ...")

    def _dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self._dotted(node)
        if name in UNSAFE_YAML:
            self._flag(node, name)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self._dotted(node.func)
        if isinstance(node.func, ast.Name) and node.func.id in CODE_RUNNING_BUILTINS:
            self._flag(node, f"{node.func.id}()")
        elif name == "torch.load" and not _keyword_is(node, "weights_only", True):
            self._flag(node, "torch.load without weights_only=True")
        elif name == "numpy.load" and _keyword_is(node, "allow_pickle", True):
            self._flag(node, "numpy.load(allow_pickle=True)")
        if _keyword_is(node, "trust_remote_code", True):
            self._flag(node, "trust_remote_code=True")
        self.generic_visit(node)


def problems_in(source: str) -> list[tuple[int, str]]:
    checker = _Checker()
    checker.visit(ast.parse(source))
    return checker.problems


def _shipped_python() -> list[Path]:
    files = [p for d in SCANNED for p in sorted(d.rglob("*.py")) if GENERATED not in p.parents]
    assert len(files) > 30  # the scan sees the code base, not an empty folder
    return files


def test_no_shipped_code_deserialises_code():
    found = [
        f"{p.relative_to(ROOT)}:{line}: {what}" for p in _shipped_python() for line, what in problems_in(p.read_text())
    ]
    assert not found, "code-loading calls:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("import pickle\npickle.loads(b'')", "import pickle"),
        ("from dill import loads", "from dill import ..."),
        ("import numpy as np\nnp.load('f.npy', allow_pickle=True)", "numpy.load(allow_pickle=True)"),
        ("import torch\ntorch.load('w.pt')", "torch.load without weights_only=True"),
        ("import torch as t\nt.load('w.pt', weights_only=False)", "torch.load without weights_only=True"),
        ("from torch import load\nload('w.pt')", "torch.load without weights_only=True"),
        ("import yaml\nyaml.load(text, Loader=yaml.FullLoader)", "yaml.load"),
        ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load"),
        ("eval(request.text)", "eval()"),
        ("exec(code)", "exec()"),
        ("AutoModel.from_pretrained(name, trust_remote_code=True)", "trust_remote_code=True"),
    ],
)
def test_the_scan_catches_each_forbidden_call(source, what):
    assert what in [w for _, w in problems_in(source)]


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load('w.pt', weights_only=True)",
        "import yaml\nyaml.safe_load(text)",
        "model.eval()",  # a torch module's eval mode, not the builtin
        "import numpy as np\nnp.load('f.npy')",
    ],
)
def test_the_scan_leaves_safe_calls_alone(source):
    assert problems_in(source) == []


class _Payload:
    """Pickled, this opens (and so creates) a file when loaded: code run by deserialisation."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_torch_load_refuses_pickled_code_by_default(tmp_path):
    """sae-lens's pretrained loaders call torch.load without weights_only; with torch >= 2.6
    (pyproject's floor) the default refuses anything but tensors and plain containers."""
    marker = tmp_path / "ran"
    weights = tmp_path / "sae.pt"
    weights.write_bytes(pickle.dumps({"step": 1, "evil": _Payload(marker)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="io.open was not an allowed global"):
        torch.load(weights)
    assert not marker.exists()
    pickle.loads(weights.read_bytes())  # the control: plain unpickling does run the payload
    assert marker.exists()
    torch.save({"W_enc": torch.zeros(2)}, weights)
    assert torch.load(weights)["W_enc"].shape == (2,)  # plain tensors still load
