"""JSON reads with one-line errors, and the one atomic-write path of the project (torch-free, so the
plot script can use it without the training code).

Write to a temp file in the same folder, fsync, then os.replace: a kill at any instant leaves the
old file or the new one, never half of one (timm's CheckpointSaver does the same). The new file gets
the mode any other tool would give it (0666 minus the umask), not mkstemp's private 0600.
"""
import json
import os
import re
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# the temp file beside `path` while it is written: .<name>.<mkstemp's 8 random characters>.tmp
TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def remove_stale_temps(folder) -> list:
    """Remove the temp files a killed atomic write left in `folder` (its own level; only names of TEMP_NAME's
    shape) and return their names. Only for a folder whose lock the caller holds: another process's write in
    progress has such a file too."""
    removed = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        if TEMP_NAME.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
    return removed


def atomic_write_to(path, write) -> str:
    """`write(tmp_path)` fills a temp file beside `path` (a library that writes to a path: safetensors,
    torch.export, onnx), which is then fsynced and moved over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and (e.filename is None or str(e.filename) == tmp):
            e.filename = str(path)  # a full disk names the file meant, not the temp file or nothing
        raise
    return str(path)


def atomic_write_bytes(path, data: bytes) -> str:
    return atomic_write_to(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_via(path, writer) -> str:
    """`writer(file_object)` straight into the temp file, then the atomic move."""
    def write(tmp):
        with open(tmp, "wb") as f:
            writer(f)
    return atomic_write_to(path, write)


def atomic_copy_file(src, dst) -> str:
    """A finished file (e.g. one a library wrote into a temp dir) published atomically at `dst`."""
    return atomic_write_to(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_text(path, text: str) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_update_text(path, text: str) -> bool:
    """atomic_write_text unless the file already holds exactly `text` (then it is left untouched, so a
    rerun that changes nothing also works in a read-only folder). True when it wrote."""
    try:
        if Path(path).read_bytes() == text.encode("utf-8"):  # bytes: csv's \r\n line ends stay as they are
            return False
    except OSError:
        pass
    atomic_write_text(path, text)
    return True


def atomic_write_json(path, obj) -> str:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path):
    """The parsed file, or a UserError naming the path (missing, unreadable, or not valid JSON)."""
    from utils.errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: not found")
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})")
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a text JSON file ({type(e).__name__})")
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})")


def read_json_object(path):
    """read_json for files that must hold a JSON object (config.json): None when the
    file is missing, torn, binary or not an object, so a caller can treat it as 'not there'."""
    from utils.errors import UserError

    try:
        obj = read_json(path)
    except UserError:
        return None
    return obj if isinstance(obj, dict) else None
