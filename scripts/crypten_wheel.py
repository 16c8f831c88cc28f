"""Write a CrypTen 0.4.1 wheel whose metadata lists only what CrypTen needs at run time.

CrypTen 0.4.1's metadata requires the dead ``sklearn`` package (whose install fails on
purpose), torchvision, tensorboard and ``future``; none of them is imported by the parts
smpc-synth uses. Installed as published, with ``--no-deps``, the package leaves those
requirements in the environment, and every later ``pip install`` prints them as red
resolver errors (``pip check`` fails too). This script downloads the published wheel,
removes those four requirements from its METADATA (updating RECORD), and writes the result,
so ``pip install --no-deps`` of it leaves a consistent environment. Nothing else in the
wheel changes.

    python scripts/crypten_wheel.py DIR      # prints the path of DIR/crypten-0.4.1-*.whl
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.4.1"
UNNEEDED = {"torchvision", "tensorboard", "future", "sklearn"}


def _requirement_name(line: str) -> str:
    spec = line.split(":", 1)[1].strip()
    for stop in " (<>=!~;[":
        spec = spec.split(stop, 1)[0]
    return spec.lower()


def clean_metadata(text: str) -> str:
    """METADATA without the Requires-Dist lines of :data:`UNNEEDED` packages."""
    kept = [
        line
        for line in text.splitlines(keepends=True)
        if not (line.startswith("Requires-Dist:") and _requirement_name(line) in UNNEEDED)
    ]
    return "".join(kept)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()},{len(data)}"


def rewrite(source: Path, target: Path) -> None:
    """Copy wheel ``source`` to ``target`` with cleaned METADATA and a matching RECORD."""
    with zipfile.ZipFile(source) as wheel:
        names = wheel.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        cleaned = clean_metadata(wheel.read(metadata).decode()).encode()
        lines = []
        for line in wheel.read(record).decode().splitlines():
            path = line.split(",", 1)[0]
            lines.append(f"{path},{_record_hash(cleaned)}" if path == metadata else line)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for info in wheel.infolist():
                if info.filename == metadata:
                    out.writestr(info, cleaned)
                elif info.filename == record:
                    out.writestr(info, "\n".join(lines) + "\n")
                else:
                    out.writestr(info, wheel.read(info))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        download = ["download", "--quiet", "--no-deps", "--only-binary", ":all:", "--dest", tmp]
        subprocess.run([sys.executable, "-m", "pip", *download, f"crypten=={VERSION}"], check=True)
        (published,) = Path(tmp).glob(f"crypten-{VERSION}-*.whl")
        target = out / published.name
        rewrite(published, target)
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
