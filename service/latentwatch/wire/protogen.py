"""Regenerate the committed gRPC stubs from proto/ (``python -m latentwatch.wire.protogen``).

``--check`` regenerates into a temporary folder and exits 1 if the committed
stubs differ, so CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # service/latentwatch
PROTO_DIR = PACKAGE.parent.parent / "proto"  # a checkout's proto/ (not shipped in the wheel)
PROTO = PROTO_DIR / "latentwatch" / "v1" / "monitor.proto"
# The import path of the stubs follows the proto package, latentwatch.v1.
STUB_DIR = PACKAGE / "v1"
STUBS = ("monitor_pb2.py", "monitor_pb2.pyi", "monitor_pb2_grpc.py")


def generate(out: Path) -> None:
    from grpc_tools import protoc

    rc = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(PROTO)]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        produced = Path(tmp) / "latentwatch" / "v1"
        if "--check" in argv:
            stale = [s for s in STUBS if not (STUB_DIR / s).exists() or not filecmp.cmp(produced / s, STUB_DIR / s)]
            if stale:
                print(f"generated stubs are out of date: {', '.join(stale)}; run python -m latentwatch.wire.protogen")
                return 1
            print("generated stubs match proto/")
            return 0
        for s in STUBS:
            (STUB_DIR / s).write_bytes((produced / s).read_bytes())
        print(f"wrote {', '.join(STUBS)} to {STUB_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
