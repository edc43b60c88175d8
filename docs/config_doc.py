"""docs/config.md, generated from config.py: one row per Config field (its default, scope, methods and the
comment on its line), in the order and sections of the dataclass. tests/test_config.py fails when the file
is stale.

    python docs/config_doc.py          # rewrite docs/config.md
    python docs/config_doc.py --check  # exit 1 if docs/config.md differs from what config.py says
"""
import ast
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402  (after the path: the script runs from anywhere)

OUT = ROOT / "docs" / "config.md"
HEAD = """# Config fields

Generated from `config.py` by `python docs/config_doc.py`; do not edit by hand.

Every script takes `--field=value` for any field below, after `--preset=NAME` (a named size: {presets})
and `--recipe=NAME` (a named recipe from the literature: {recipes}; or `--recipe=@file.json`, e.g. the
one tune.py writes). One frozen dataclass per run; the sweep builds a new one per grid point. Each field
has a scope: `train` (changes what a run learns; compared on resume), `run` (where and how it runs:
paths, device, threads, layout), `eval`, `deploy` and `sweep`; a method's hyper-parameters also name
their method.
"""


def field_sources() -> dict:
    """Field name -> (section, default as written, comment), read from config.py's Config class."""
    text = Path(config.__file__).read_text()
    lines = text.splitlines()
    cls = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "Config")
    out, section = {}, ""
    first = cls.lineno + 1
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign):
            continue
        for line in lines[first - 1:node.lineno - 1]:  # a "# --- name ---" header above this field
            if line.strip().startswith("# ---"):
                section = line.strip().strip("#- ").strip()
        first = node.lineno + 1
        call = node.value
        default = ast.get_source_segment(text, call.args[0]) if isinstance(call, ast.Call) and call.args else "?"
        line = lines[node.lineno - 1]
        comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        out[node.target.id] = (section, default.replace("'", '"'), comment)
    return out


def render() -> str:
    sources = field_sources()
    parts = [HEAD.format(presets=", ".join(config.PRESETS), recipes=", ".join(config.RECIPES))]
    section = None
    for f in dataclasses.fields(config.Config):
        sec, default, comment = sources[f.name]
        if sec != section:
            section = sec
            parts.append(f"\n## {sec}\n\n| field | default | scope | meaning |\n|---|---|---|---|")
        scope = f.metadata["scope"] + (f" ({', '.join(f.metadata['methods'])})" if f.metadata["methods"] else "")
        parts.append(f"| `{f.name}` | `{default}` | {scope} | {comment.replace('|', '/')} |")
    return "\n".join(parts) + "\n"


def main(argv) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python docs/config_doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(dataclasses.fields(config.Config))} fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
