"""Output folders: a run writes only into a folder that holds nothing it did not create."""

from __future__ import annotations

from pathlib import Path

from smpc_synth.errors import InputError


def check_output_dir(path: Path, flag: str = "--out", resume_hint: bool = False) -> None:
    """Refuse (exit 2) a file or a non-empty folder: an earlier run's certificates, CA key,
    logs and outputs are never deleted or overwritten."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: {flag} names a file, not a folder")
    if path.is_dir():
        present = sorted(p.name for p in path.iterdir())
        if present:
            listed = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            resume = ", or add --resume to continue the run it holds" if resume_hint else ""
            raise InputError(
                f"{path}: {flag} is not empty ({listed}); a run never deletes or overwrites "
                f"files it did not create: choose a new folder or remove these{resume}"
            )


def claim_output_dir(path: Path, flag: str = "--out", resume_hint: bool = False) -> Path:
    """:func:`check_output_dir`, then create the folder."""
    check_output_dir(path, flag, resume_hint)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot create the folder ({exc.strerror})") from None
    return path


def check_output_file(path: Path, flag: str = "--out") -> None:
    """Refuse (exit 2) an output file that exists already, or a folder in its place: a
    command writes a new file, never over one it did not create."""
    if path.is_dir():
        raise InputError(f"{path}: {flag} names a folder, not a file")
    if path.exists() or path.is_symlink():
        raise InputError(
            f"{path}: {flag} already exists; a command never overwrites a file it did not "
            "create: choose another name or remove it"
        )


def fresh_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate
