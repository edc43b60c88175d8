"""Provenance for summaries: the git commit the code came from (and whether the tree had local
changes) and the versions of the libraries that shaped the numbers. Read without importing them."""
import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "torchvision", "torchao", "bitsandbytes", "numpy", "onnxruntime")
ROOT = Path(__file__).resolve().parents[1]


def _git(*args) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """{"command", "git_commit", "git_dirty", "python", <library>: version or None}: the command line that
    ran (script name and arguments), git fields None outside a checkout."""
    commit = _git("rev-parse", "HEAD") or None
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None
    return {"command": command, "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            **versions}
