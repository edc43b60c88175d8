"""--sweep_train_samples: labeled data as an axis of the sweep (one sweep per size, its own folder), the
scale table with gains paired per seed, the gain-vs-data plot, and the resume of a partly finished sweep."""
import csv

import pytest

import plot_experiment_results
import run_experiments
from config import make_config, run_dir_of
from sweep.plan import size_configs
from tests.fixtures import run_script
from utils.errors import UserError


def _base(out, **kw):
    return make_config(["--preset=smoke", "--seeds=2", "--val_fraction=0.1", "--sweep_blocks=[1,2]",
                        "--sweep_precisions=[fp32]", "--sweep_train_samples=[96,192]",
                        "--sweep_train_epochs=[2,1]", "--scale_deep_upto=100"], out_dir=str(out), **kw)


def test_each_size_gets_its_own_sweep_and_epochs():
    sizes = size_configs(_base("/tmp/x"))
    assert [(c.max_train_samples, c.epochs, c.sweep_blocks) for c in sizes] == [(96, 2, (1, 2)), (192, 1, (1,))]
    assert [c.out_dir for c in sizes] == ["/tmp/x/n96", "/tmp/x/n192"]
    assert all(not c.sweep_train_samples for c in sizes)  # a size's sweep is a plain sweep
    whole = size_configs(make_config(["--sweep_train_samples=[0]"], out_dir="o"))
    assert whole[0].out_dir == "o/all" and whole[0].max_train_samples == 0


def test_epochs_per_size_must_match_the_sizes(tmp_path):
    with pytest.raises(UserError, match=r"one epoch count per size"):
        run_experiments.main(_base(tmp_path, sweep_train_epochs=(2,)))
    assert not any(tmp_path.iterdir())  # refused before anything trains


@pytest.mark.slow  # a smoke teacher and 10 smoke students: ~40 s on 2 cores
def test_scale_sweep_writes_paired_table_and_plot_and_resumes(tmp_path):
    out = tmp_path / "scale"
    assert run_experiments.main(_base(out)) == 0
    rows = list(csv.DictReader(open(out / "scale.csv")))
    # res1 at both sizes, res2 only up to --scale_deep_upto: 3 cells x 2 seeds, each paired with its own control
    # (the hold-out comes from the whole training split: every size trains on all its labeled images)
    assert sorted({(r["labeled_images"], r["student"]) for r in rows}) == [("192", "res1"), ("96", "res1"),
                                                                          ("96", "res2")]
    assert len(rows) == 6 and sorted({r["seed"] for r in rows}) == ["0", "1"]
    for r in rows:
        assert float(r["gain"]) == pytest.approx(float(r["distilled_acc"]) - float(r["ce_acc"]), abs=1e-3)
    md = (out / "scale.md").read_text()
    assert "| 96 | res2 | kd |" in md and "| 192 | res1 | kd |" in md
    assert (out / "n96" / "results.md").is_file() and (out / "n192" / "results.md").is_file()
    assert plot_experiment_results.main(str(out)) == 0
    assert (out / "plots" / "kd_gain_vs_data.png").stat().st_size > 10_000
    assert (out / "n96" / "plots" / "kd_gain.png").is_file()

    # a sweep killed during the second size: what finished stays as it is, the rest is trained again
    done = {p: p.read_bytes() for p in (out / "n96").rglob("*") if p.is_file() and p.suffix == ".safetensors"}
    lost = next((out / "n192").glob("*_kd_s1"))
    (lost / "summary.json").unlink()
    (out / "scale.csv").unlink()
    assert run_experiments.main(_base(out)) == 0
    assert {p: p.read_bytes() for p in done} == done
    assert (lost / "summary.json").is_file()
    assert len(list(csv.DictReader(open(out / "scale.csv")))) == 6


def test_bad_epochs_list_is_one_line_from_the_command_line(tmp_path):
    r = run_script("run_experiments.py", "--preset=smoke", "--sweep_train_samples=[96,192]",
                   "--sweep_train_epochs=[1]", f"--out_dir={tmp_path}")
    assert r.returncode == 2 and "one epoch count per size" in r.stderr and "Traceback" not in r.stderr


def test_make_scale_presets_share_their_controls():
    """make scale: res4 at every size, res8 up to 8,000; the transfer set's runs land in n2000/ beside the very
    CE controls the 2,000-image size trains (the same run directories, so each is trained once)."""
    sizes = size_configs(make_config(["--preset=scale"]))
    assert [(c.max_train_samples, c.sweep_blocks) for c in sizes] == [(500, (4, 8)), (2000, (4, 8)), (8000, (4, 8)),
                                                                      (0, (4,))]
    transfer = run_experiments.grid(make_config(["--preset=scale-transfer"]))
    n2000 = run_experiments.grid(sizes[1])
    controls = {run_dir_of(c) for c in transfer if c.method == "ce"}
    assert controls and controls <= {run_dir_of(c) for c in n2000 if c.method == "ce"}
    assert {c.unlabeled_samples for c in transfer if c.method != "ce"} == {60000 - 1200 - 2000}


def test_a_size_named_twice_is_one_line(tmp_path):
    with pytest.raises(UserError, match="a size named twice"):
        run_experiments.main(_base(tmp_path, sweep_train_samples=(96, 96), sweep_train_epochs=(1, 2)))


def test_quantized_students_stay_out_of_the_scale_table(tmp_path):
    import json

    from report.scale import scale_rows

    def run(name, method, seed, acc, qat=None):
        d = tmp_path / "n100" / name
        d.mkdir(parents=True)
        s = {"schema": 1, "status": "complete", "run_name": name, "role": "student", "blocks": 4,
             "method": method, "precision": "fp32", "seed": seed, "best_test_acc": acc, "train_images": 100,
             **({"qat": qat} if qat else {})}
        (d / "summary.json").write_text(json.dumps(s))

    run("ce0", "ce", 0, 80.0)
    run("kd0", "kd", 0, 82.0)
    run("qce0", "ce", 0, 50.0, qat="ternary")
    run("qkd0", "kd", 0, 55.0, qat="ternary")
    (row,) = scale_rows(str(tmp_path))
    assert row["ce"] == [80.0] and row["distilled"] == [82.0] and row["gain"] == [2.0]


def test_an_ensemble_teachers_accuracy_in_scale_md_comes_from_its_students(monkeypatch):
    """--teacher_checkpoint=a,b has no teacher run in the sweep: scale.md names the accuracy its students recorded."""
    from report import scale
    from report.plots.data import Run

    def run(method, acc):
        return Run(f"res4_{method}", "/unused", {
            "role": "student", "status": "complete", "method": method, "blocks": 4, "seed": 0, "precision": "fp32",
            "best_test_acc": acc, "train_images": 500, "teacher_acc": None if method == "ce" else 95.62}, [])
    monkeypatch.setattr(scale, "size_points", lambda out_dir: [(500, "n500", [run("ce", 78.0), run("kd", 79.0)])])
    rows = scale.scale_rows("unused")
    assert rows[0]["teacher_acc"] == 95.62 and rows[0]["gain"] == [1.0]
    assert "Teacher: 95.62% on the test split." in scale.scale_markdown(rows)
