"""docs/runs.md's "What a run writes" tables and run-name pattern, generated from utils/run_files.py (its
RUN_FILES and SWEEP_FILES tables and its run-name patterns). Only the section between the two markers is
rewritten; the prose around it is the manual's own. tests/test_run_dir_owner.py fails when it is stale.

    python docs/runs_doc.py          # rewrite the section of docs/runs.md
    python docs/runs_doc.py --check  # exit 1 if it differs from what utils/run_files.py says
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from docs.generated import write_or_check  # noqa: E402
from utils import run_files as rf  # noqa: E402  (after the path: the script runs from anywhere)

OUT = ROOT / "docs" / "runs.md"
BEGIN = "<!-- begin: generated from utils/run_files.py by python docs/runs_doc.py; do not edit by hand -->"
END = "<!-- end: generated -->"
ROW = "| file | what | written by |\n|---|---|---|"


def run_name_patterns() -> tuple:
    """(a student's, a teacher's) default run name: <x> a value, [part] a part that appears only where its
    field is set."""
    def part(fmt, name):
        return "[" + fmt.format(f"<{name}>") + "]"
    student = rf.STUDENT_RUN_NAME.format(
        dataset="<dataset>", student="res<blocks>", batch_size="<batch_size>", precision="<precision>",
        method="<method>", unlabeled=part(rf.UNLABELED_PART, "N"), qat=part(rf.QAT_PART, "mode"),
        generation=part(rf.GENERATION_PART, "generation"), seed="<seed>")
    teacher = rf.TEACHER_RUN_NAME.format(dataset="<dataset>", arch="<arch>", seed=part(rf.TEACHER_SEED_PART, "seed"))
    return student, teacher


def table(files: dict) -> str:
    rows = [ROW]
    for name, (what, writer) in files.items():
        shown = f"`{name}/`" if name in rf.FOLDERS else f"`{name}`"
        rows.append("| " + " | ".join(c.replace("|", "/") for c in (shown, what, writer)) + " |")
    return "\n".join(rows)


def section() -> str:
    student, teacher = run_name_patterns()
    return f"""{BEGIN}
`out_dir/run_name/`, where run_name defaults to (like the original's `res4_b224_fp16`):

```
{student}   a student
{teacher}{" " * (len(student) - len(teacher))}   a teacher
```

`timm-<name>` stands for `res<blocks>` in a timm student's name; `_u<N>` appears only with a transfer set of N
unlabeled images (`--unlabeled_samples`), `_q<mode>` only in a quantization-aware student's (`--qat`), and a
teacher's `_s<seed>` only for a seed other than 0 (an ensemble's further member).

{table(rf.RUN_FILES)}

What a sweep writes in out_dir beside its run directories:

{table(rf.SWEEP_FILES)}
{END}"""


def render(text: str) -> str:
    """`text` (docs/runs.md) with its generated section rewritten."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{OUT.relative_to(ROOT)}: no section between {BEGIN!r} and {END!r}")
    return head + section() + tail


def main(argv) -> int:
    return write_or_check(OUT, render(OUT.read_text()), argv, "docs/runs_doc.py",
                          f"{len(rf.RUN_FILES)} run files, {len(rf.SWEEP_FILES)} sweep files")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
