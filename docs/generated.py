"""What the docs generators share (docs/config_doc.py, docs/runs_doc.py): write the file, or with --check
exit 1 when it is stale."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_or_check(out: Path, text: str, argv: list, script: str, what: str) -> int:
    """Write `text` to `out` and say so (with `what`); with --check in argv, only compare: 1 when it differs."""
    if "--check" in argv:
        if not out.is_file() or out.read_text() != text:
            print(f"{out.relative_to(ROOT)} is stale: run python {script}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out.relative_to(ROOT)} ({what})")
    return 0
