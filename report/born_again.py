"""Born-again generations (--sweep_generations): per depth and seed, the chain's ensemble (the mean of its
generations' logits on the test split, as Furlanello et al. 2018 average their generations) beside the
generation-0 CE control. sweep/steps.py measures the chains into out_dir/born_again.json; this formats them
for results.md."""
from collections import defaultdict

from report.results import fmt_gains, fmt_ms, student_label, student_order


def born_again_record(chains: list) -> dict:
    """born_again.json: one entry per chain (student, seed, its generations' run names, test accuracies and weights'
    digests (weights_sha256: a rerun keeps a chain whose weights are the same), the ensemble's accuracy, the
    control's)."""
    return {"schema": 1, "chains": chains}


def born_again_table(record: dict) -> str:
    """results.md's section: per student, the ensemble of generations 1..N against generation 0 (the CE control),
    mean ± std over seeds and each seed's gain; "" without chains."""
    by_student = defaultdict(list)
    for c in (record or {}).get("chains", []):
        by_student[c["student"]].append(c)
    if not by_student:
        return ""
    lines = ["", "Born-again ensembles: the mean of generations 1..N's logits on the test split (each generation's "
             "own row is in the table above, its gain over the same seed's CE control: generation 0).", "",
             "| model | generations | ensemble test acc % | gain over generation 0, pts |", "|---|---:|---:|---:|"]
    for key in sorted(by_student, key=student_order):
        chains = sorted(by_student[key], key=lambda c: c["seed"])
        gens = sorted({len(c["generations"]) for c in chains})
        lines.append(f"| {student_label(key)} | 1-{'/'.join(map(str, gens))} | "
                     f"{fmt_ms([c['ensemble_acc'] for c in chains])} | "
                     f"{fmt_gains([c['ensemble_acc'] - c['control_acc'] for c in chains])} |")
    return "\n".join(lines)
