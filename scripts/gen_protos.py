#!/usr/bin/env python
"""Generate the gRPC stubs in smpc_synth/net/v1/ from protos/smpc_synth/v1/*.proto.

protoc writes imports as ``smpc_synth.v1`` (the proto package); the stubs live inside our
package, so those imports are rewritten to ``smpc_synth.net.v1``. ``--check`` generates into a
temporary directory and exits 1, naming each file, if the committed stubs differ.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "smpc_synth" / "v1"
STUB_DIR = ROOT / "smpc_synth" / "net" / "v1"
INIT_TEXT = '"""gRPC stubs generated from protos/ by scripts/gen_protos.py; do not edit."""\n'
_IMPORT = re.compile(r"^(from|import) smpc_synth\.v1\b", re.MULTILINE)


def generate(out_dir: Path) -> None:
    """Write the stubs for every .proto into ``out_dir`` (created if needed)."""
    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files in {PROTO_DIR}")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed; see the messages above")
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted((Path(tmp) / "smpc_synth" / "v1").iterdir()):
            text = _IMPORT.sub(r"\1 smpc_synth.net.v1", path.read_text())
            (out_dir / path.name).write_text(text)
    (out_dir / "__init__.py").write_text(INIT_TEXT)


def stale_files(committed: Path) -> list[str]:
    """Names of files in ``committed`` that differ from, lack or add to a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        names = {p.name for p in fresh.iterdir()} | {
            p.name for p in committed.glob("*") if p.suffix in (".py", ".pyi")
        }
        return sorted(
            name
            for name in names
            if not (committed / name).is_file()
            or not (fresh / name).is_file()
            or (committed / name).read_bytes() != (fresh / name).read_bytes()
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    parser.add_argument("--out", type=Path, default=STUB_DIR, help="stub directory")
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.out)
        print(f"wrote stubs to {args.out}")
        return 0
    stale = stale_files(args.out)
    for name in stale:
        print(f"stale: {args.out / name} differs from protos/; run scripts/gen_protos.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
