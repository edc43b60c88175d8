"""User-facing errors: one line on stderr and exit code 2, never a traceback."""
import functools
import sys


class UserError(Exception):
    """Bad input from the user (CLI value, data folder, checkpoint file). Exit code 2."""

    exit_code = 2


def cli_entry(fn):
    """Wrap a script's CLI main: a UserError becomes `error: <message>` and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
