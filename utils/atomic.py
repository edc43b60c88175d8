"""JSON reads with one-line errors, and atomic file writes (torch-free, so the plot script can use them without the training code).

Write to a temp file in the same folder, fsync, then os.replace: a kill at any instant leaves the
old file or the new one, never half of one (timm's CheckpointSaver does the same).
"""
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_via(path, writer) -> str:
    """`writer(file_object)` into memory, then an atomic write: no half-written file on a crash."""
    import io

    buf = io.BytesIO()
    writer(buf)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def atomic_copy_file(src, dst) -> str:
    """A finished file (e.g. one a library wrote into a temp dir) published atomically at `dst`."""
    with open(src, "rb") as f:
        atomic_write_bytes(dst, f.read())
    return str(dst)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path):
    """The parsed file, or a UserError naming the path (missing, or not valid JSON)."""
    from utils.errors import UserError

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found")
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})")
