"""docs/config.md, generated from config.py's field metadata: one row per Config field (its default, scope,
methods, group, check and doc), in the order and sections of the dataclass, then the presets' measured
times. Nothing is parsed from the source text. tests/test_config.py fails when the file is stale.

    python docs/config_doc.py          # rewrite docs/config.md
    python docs/config_doc.py --check  # exit 1 if docs/config.md differs from what config.py says
"""
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import config  # noqa: E402  (after the path: the script runs from anywhere)
from docs.generated import write_or_check  # noqa: E402

OUT = ROOT / "docs" / "config.md"
HEAD = """# Config fields

Generated from `config.py` by `python docs/config_doc.py`; do not edit by hand.

Every script takes `--field=value` for any field below, after `--preset=NAME` (a named size: {presets})
and `--recipe=NAME` (a named recipe from the literature: {recipes}; or `--recipe=@file.json`, e.g. the
one tune.py writes). One frozen dataclass per run; the sweep builds a new one per grid point. A value
outside a field's check stops the script with exit code 2 and one line naming the field, before any data
loads; every float field must also be finite.

Each field has a scope, which says what changing it changes:
{scopes}

A method's hyper-parameters also name their methods (summaries record them per method). Fields marked
`group` must be equal for students trained together in one group (one batch order and one teacher
forward for all: `cli.group_key`, the sweep's groups).
"""
ROW = "| field | default | scope | check | meaning |\n|---|---|---|---|---|"
# a check's message (`--name=value: <says>`) as the table's check column states it
SHORT = (("must be a positive number", "> 0"), ("must not be negative", ">= 0"), ("must be ", ""),
         ("allowed values are ", "one of: "))


def show_default(value) -> str:
    return repr(value).replace("'", '"')


def show_check(check) -> str:
    if check is None:
        return ""
    says = check.says
    for long, short in SHORT:
        if says.startswith(long):
            says = short + says[len(long):]
            break
    return ("each " if check.show_repr and says.startswith("one of") else "") + says


def render() -> str:
    scopes = "\n".join(f"- `{name}`: {meaning}" for name, meaning in config.SCOPES.items())
    parts = [HEAD.format(presets=", ".join(config.PRESETS), recipes=", ".join(config.RECIPES), scopes=scopes)]
    for f in dataclasses.fields(config.Config):
        meta = f.metadata
        if meta["section"]:
            parts.append(f"\n## {meta['section']}\n\n{ROW}")
        scope = meta["scope"] + (f" ({', '.join(meta['methods'])})" if meta["methods"] else "")
        scope += ", group" if meta["group"] else ""
        cells = (f"`{f.name}`", f"`{show_default(f.default)}`", scope, show_check(meta["check"]), meta["doc"])
        parts.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    parts.append(presets_section())
    return "\n".join(parts) + "\n"


def presets_section() -> str:
    """## presets: each make target's measured wall time (presets.MEASURED, the one place a run time is stated)."""
    import presets
    rows = [f"| `make {target}` | {m.wall or 'not timed end to end'} | {m.what} | {m.machine} | {m.commit} |"
            for target, m in presets.MEASURED.items()]
    return ("\n## presets\n\nThe presets (`--preset=NAME`: " + ", ".join(f"`{p}`" for p in config.PRESETS)
            + ") are defined in `presets.py`, each with a comment on what it runs. The measured wall time of the make "
            "target that runs each one, from `presets.MEASURED` (the one place this project states a run time):\n\n"
            "| target | wall time | what it covers | machine | commit |\n|---|---|---|---|---|\n" + "\n".join(rows))


def main(argv) -> int:
    return write_or_check(OUT, render(), argv, "docs/config_doc.py", f"{len(dataclasses.fields(config.Config))} fields")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
