"""plot_experiment_results.py: every PNG from a hand-made out_dir, the Pareto frontier, the CLI contract,
and that plotting needs no torch (the plot script reads run files, not the training code)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

import plot_experiment_results as plots
from report.plots.deploy import pareto_front
from tests.fixtures import run_script

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
PARAMS = {4: 98_138, 6: 408_698, 8: 1_648_314, 10: 6_602_426}
TRAINING_PNGS = ["accuracy_curves", "loss_curves", "accuracy_vs_params", "kd_gain", "seconds_per_epoch"]
ALL_PNGS = TRAINING_PNGS + ["confusion_matrix_best_student", "deploy_accuracy_vs_latency",
                            "deploy_accuracy_vs_bytes"]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _history(final_acc: float, epochs: int, seconds: float) -> list:
    return [{"epoch": e, "train_loss": 1.6 * math.exp(-0.5 * e), "train_acc": final_acc - 8 * math.exp(-e) + 2,
             "test_loss": (100 - final_acc) / 30 + 1.5 * math.exp(-0.6 * e),
             "test_acc": final_acc - 25 * math.exp(-0.8 * (e - 1)),
             "lr": 1e-3, "epoch_seconds": seconds, "images_per_second": 10_000 / seconds}
            for e in range(1, epochs + 1)]


def _run(out: Path, name: str, acc: float, seconds: float, epochs: int = 5, **facts) -> Path:
    run = out / name
    summary = {"status": "complete", "run_name": name, "dataset": "fashion-mnist", "classes": CLASSES,
               "train_images": 10_000, "test_images": 2_000, "hardware": "Test CPU, 2 threads", "device": "cpu",
               "best_test_acc": acc, "final_test_acc": acc - 0.2, "seconds_per_epoch": seconds,
               "images_per_second": 10_000 / seconds, "epochs_run": epochs, **facts}
    _write(run / "summary.json", summary)
    _write(run / "history.json", _history(acc, epochs, seconds))
    _write(run / "config.json", {"out_dir": str(out)})
    return run


def _deploy(run: Path, name: str, role: str, params: int, acc: float) -> None:
    fp32_bytes, ms = 4 * params + 2_000, 0.15 + params * 4e-7
    variants = [
        {"name": "pytorch_fp32", "accuracy": acc, "agreement": 100.0, "size_bytes": fp32_bytes,
         "latency_ms_b1": ms, "throughput_b64": 64_000 / ms, "device": "Test CPU", "threads": 2, "status": "ok",
         "note": ""},
        {"name": "int8_dynamic", "accuracy": acc - 0.4, "agreement": 98.9, "size_bytes": fp32_bytes // 4,
         "latency_ms_b1": ms * 0.7, "throughput_b64": 64_000 / (ms * 0.7), "device": "Test CPU", "threads": 2,
         "status": "ok", "note": ""},
        {"name": "onnx_fp32", "accuracy": None, "agreement": None, "size_bytes": None, "latency_ms_b1": None,
         "throughput_b64": None, "device": "Test CPU", "threads": 2, "status": "skipped",
         "note": "onnxruntime not installed"},
    ]
    _write(run / "deploy.json", {"run_name": name, "role": role, "params": params, "threads": 2,
                                 "hardware": "Test CPU, 2 threads; 2 CPUs; ISA: avx2", "variants": variants})


def make_out_dir(out: Path, seeds: int = 2, depths=(4, 6, 8), deploy: bool = True,
                 evaluation: bool = True) -> Path:
    """A sweep's out_dir as train.py / run_experiments.py / evaluate.py / the deploy step leave it."""
    teacher = _run(out, "fashion-mnist_teacher_seed12", 90.1, 12.0, role="teacher", arch="seed12",
                   teacher_arch="seed12", blocks=None, params=26_534_358, method="ce", precision="fp32", seed=0)
    if deploy:
        _deploy(teacher, teacher.name, "teacher", 26_534_358, 90.1)
    best = None
    for b in depths:
        for s in range(seeds):
            for method, prec in (("ce", "fp32"), ("kd", "fp32"), ("kd", "bf16"), ("kd", "fp8")):
                acc = 80 + b + (1.5 if method == "kd" else 0) - (0.6 if prec == "fp8" else 0) + 0.4 * s
                desc = {"bf16": "bf16: autocast bfloat16 on cpu (in place of fp16)",
                        "fp8": "fp8: simulated e4m3/e5m2 numerics"}.get(prec, "fp32")
                name = f"fashion-mnist_res{b}_b128_{prec}_{method}_s{s}"
                run = _run(out, name, acc, 1.0 + 0.3 * b + (2.5 if prec == "fp8" else 0) + 0.1 * s,
                           epochs=5 - (s % 2), role="student", blocks=b, params=PARAMS[b], method=method,
                           precision=prec, precision_description=desc, seed=s, arch=f"res{b}")
                if deploy and s == 0 and method == "kd" and prec == "fp32":
                    _deploy(run, name, "student", PARAMS[b], acc)
                if best is None or acc > best[1]:
                    best = (run, acc)
    if evaluation:
        cm = [[20 if i == j else (1 if abs(i - j) == 1 else 0) for j in range(10)] for i in range(10)]
        _write(best[0] / "evaluation.json", {"accuracy": best[1], "classes": CLASSES, "confusion_matrix": cm})
    _write(out / "fashion-mnist_res10_b128_fp8_kd_s0" / "summary.json",
           {"status": "failed", "error": "RuntimeError: out of memory",
            "run_name": "fashion-mnist_res10_b128_fp8_kd_s0"})
    (out / "results.csv").write_text("run_name,status\n")  # present in a real out_dir; the plots read run dirs
    return out


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path.name} not written"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    return make_out_dir(tmp_path_factory.mktemp("sweep"))


def test_every_plot_is_written(full_dir, capsys):
    assert plots.main(str(full_dir)) == 0
    out = capsys.readouterr().out
    for name in ALL_PNGS:
        assert_png(full_dir / "plots" / f"{name}.png")
        assert f"wrote {full_dir / 'plots' / name}.png" in out
    assert "left out 1 failed run(s)" in out


def test_without_evaluation_or_deploy_skips_with_a_line(tmp_path, capsys):
    out_dir = make_out_dir(tmp_path, seeds=1, depths=(4, 6), deploy=False, evaluation=False)
    assert plots.main(str(out_dir)) == 0
    out = capsys.readouterr().out
    for name in TRAINING_PNGS:
        assert_png(out_dir / "plots" / f"{name}.png")
    assert "evaluate.py has not been run for the best student" in out
    assert "skipped deploy plots" in out
    assert not (out_dir / "plots" / "confusion_matrix_best_student.png").exists()
    assert not (out_dir / "plots" / "deploy_accuracy_vs_latency.png").exists()


def test_pareto_front_hand_made():
    # (cost, accuracy): B beats A (cheaper, as accurate); D is dominated by C; E ties C's cost, less accurate
    costs = [2.0, 1.0, 3.0, 4.0, 3.0, 10.0, 0.5]
    accs = [80.0, 80.0, 85.0, 84.0, 83.0, 90.0, 60.0]
    assert pareto_front(costs, accs) == [6, 1, 2, 5]
    assert pareto_front([], []) == []
    assert pareto_front([1.0, 1.0], [70.0, 70.0]) == [0]  # exact duplicates: the first


def _cli_without_torch(*args):
    """plot_experiment_results.py in a fresh interpreter where `import torch` fails."""
    code = "import sys; sys.modules['torch'] = None; import plot_experiment_results as p; p.cli(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})


def test_missing_or_empty_out_dir_exits_2(tmp_path):
    missing = run_script("plot_experiment_results.py", f"--out_dir={tmp_path / 'nope'}")
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "no such directory" in missing.stderr
    empty = run_script("plot_experiment_results.py", f"--out_dir={tmp_path}")
    assert empty.returncode == 2 and "run run_experiments.py first" in empty.stderr
    unknown = run_script("plot_experiment_results.py", "--no_such_field=1")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_cli_works_without_torch(tmp_path):
    out_dir = make_out_dir(tmp_path, seeds=1, depths=(4,), deploy=True, evaluation=True)
    r = _cli_without_torch(f"--out_dir={out_dir}")
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("wrote ") for line in r.stdout.splitlines()) == len(ALL_PNGS)


def test_two_datasets_get_one_set_each(tmp_path, capsys):
    out_dir = make_out_dir(tmp_path, seeds=1, depths=(4,), deploy=False, evaluation=False)
    _run(out_dir, "cifar10_res4_b128_fp32_kd_s0", 70.0, 2.0, dataset="cifar10", role="student", blocks=4,
         params=PARAMS[4], method="kd", precision="fp32", seed=0)
    assert plots.main(str(out_dir)) == 0
    for prefix in ("fashion-mnist_", "cifar10_"):
        assert_png(out_dir / "plots" / f"{prefix}accuracy_vs_params.png")


def test_a_ce_controls_label_names_its_own_precision():
    from report.plots.data import Run
    from report.plots.runs import _series_name

    runs = [Run(f"r_{p}", ".", {"role": "student", "method": "ce", "precision": p}, []) for p in ("fp32", "bf16")]
    assert _series_name("ce", "bf16", runs).startswith("CE control (bf16") and "fp32" not in _series_name(
        "ce", "bf16", runs)
    assert _series_name("ce", "fp32", runs).startswith("CE control (fp32")


def test_every_methods_hatch_is_one_matplotlib_draws():
    """A hatch of other characters draws nothing (CWD's '<>' once showed as a plain KD bar)."""
    from utils.names import METHOD_TABLE
    drawn = set("/\\|-+xoO.*")
    hatches = [m.hatch for m in METHOD_TABLE if m.hatch]
    assert all(set(h) <= drawn for h in hatches), hatches
    assert len(set(hatches)) == len(hatches)  # and no two methods share one
