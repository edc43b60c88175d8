"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
import errno
import functools
import sys

# OSErrors that are the user's environment, not a bug: a read-only or full disk, missing permissions
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class UserError(Exception):
    """Bad input from the user (CLI value, data folder, checkpoint file). Exit code 2."""

    exit_code = 2


class HelpRequested(Exception):
    """-h / --help: the script prints its usage (its docstring plus this message) and exits 0."""


def first_line(err, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), cut at a
    word boundary with '...' when longer than `limit`: never an IndexError, never half a word."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    return shorten(text, limit)


def shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "..."


def cannot_write(err: OSError, path: str = "", hint: str = "pass a writable --out_dir or fix the folder's "
                                                              "permissions") -> UserError:
    """The one line for a failed write: the path, the system's reason, and what to do."""
    return UserError(f"{path or err.filename or 'a file'}: cannot write there ({err.strerror or err}); {hint}")


def cli_entry(fn):
    """Wrap a script's CLI main: a UserError becomes `error: <message>` and exit 2; -h/--help prints
    the script's usage and exits 0; a read-only or full disk is one line too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HelpRequested as e:
            doc = (sys.modules[fn.__module__].__doc__ or "").strip()
            print(f"{doc}\n\n{e}".strip())
            sys.exit(0)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            print(f"error: {e.filename or 'a file'}: {e.strerror or e} (check the folder's permissions and "
                  f"free space, or pass another --out_dir)", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
