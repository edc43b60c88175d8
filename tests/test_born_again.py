"""Born-again generations (--generation, --sweep_generations): a chain of two at smoke size through the sweep,
each generation taught by the one before, the ensemble of the generations measured into born_again.json and
the table; and the one-line refusals of a teacher that is not generation - 1 of the same model."""
import json

import pytest
import torch

import run_experiments
import train
from config import make_config
from runtime.inference import evaluate_logits
from runtime.run_dir import measure_test_logits
from tests.fixtures import copy_run, one_line_exit, small_run_args
from utils.errors import UserError
from utils.run_files import BORN_AGAIN, RESULTS_MD


@pytest.fixture(scope="module")
def chain(fashion_idx, smoke_teacher, tmp_path_factory):
    """A sweep of res2, 2 seeds, KD plus born-again generations 1-2, from the shared smoke teacher."""
    out = tmp_path_factory.mktemp("born_again")
    run_experiments.main(chain_config(fashion_idx, out, copy_run(smoke_teacher(), out)))
    return out


def chain_config(fashion_idx, out, teacher):
    return make_config(small_run_args(
        fashion_idx, out, "--sweep_blocks=[2]", "--sweep_precisions=[fp32]", "--sweep_methods=[kd]",
        f"--teacher_checkpoint={teacher}", seeds=2, sweep_generations=2, batch_size=32, epochs=2))


def test_each_generation_learns_from_the_one_before(chain):
    for seed in (0, 1):
        control = chain / f"fashion-mnist_res2_b32_fp32_ce_s{seed}"
        before = control
        for g in (1, 2):
            run = chain / f"fashion-mnist_res2_b32_fp32_kd_g{g}_s{seed}"
            s = json.loads((run / "summary.json").read_text())
            assert s["status"] == "complete" and s["generation"] == g and s["teacher_run"] == str(before)
            assert s["teacher_arch"] == f"res2 generation {g - 1}"
            before = run
    md = (chain / RESULTS_MD).read_text()
    assert "born-again generation 1 |" in md and "born-again generation 2 |" in md and "Born-again ensembles" in md


def test_the_ensemble_row_is_the_mean_of_the_generations_logits(chain):
    record = json.loads((chain / BORN_AGAIN).read_text())
    assert [(c["student"], c["seed"]) for c in record["chains"]] == [(2, 0), (2, 1)]
    c = record["chains"][1]
    logits = [measure_test_logits(chain / name) for name in c["generations"]]
    mean = torch.stack([lg for lg, _, _ in logits]).mean(0)
    assert c["ensemble_acc"] == pytest.approx(evaluate_logits(mean, logits[0][1])[1])
    control = json.loads((chain / "fashion-mnist_res2_b32_fp32_ce_s1" / "summary.json").read_text())
    assert c["control_acc"] == control["best_test_acc"]


def test_a_teacher_that_is_not_the_generation_before_is_one_line(chain, fashion_idx, capsys):
    base = small_run_args(fashion_idx, chain, "--method=kd", blocks=2, batch_size=32, epochs=1)
    g1 = chain / "fashion-mnist_res2_b32_fp32_kd_g1_s0"
    cases = [(["--generation=2", f"--teacher_checkpoint={chain / 'fashion-mnist_res2_b32_fp32_ce_s0'}"],
              "is generation 0; generation 2 learns from generation 1"),
             (["--generation=1", f"--teacher_checkpoint={g1}", "--blocks=3"], "is another model"),
             (["--generation=1", f"--teacher_checkpoint={chain / 'fashion-mnist_teacher_seed12'}"],
              "is not a student run"),
             ([f"--teacher_checkpoint={g1}"], "as a born-again generation: --generation")]
    for flags, says in cases:
        line, _ = one_line_exit(train.cli, base + flags + ["--run_name=refused"], capsys, quiet=False)
        assert says in line, line
    assert not (chain / "refused" / "summary.json").exists()


@pytest.mark.parametrize("flags, says", [
    (["--generation=1", "--method=tfkd", "--teacher_checkpoint="], "learns the outputs of the one before"),
    (["--generation=1", "--method=kd", "--teacher_checkpoint=a,b"], "must name the one student run"),
    (["--sweep_generations=1", "--sweep_methods=[fitnet]"], "learns the outputs of the one before"),
])
def test_generation_flags_that_cannot_work_are_refused(flags, says):
    with pytest.raises(UserError, match=says):
        make_config(flags)


def test_a_rerun_keeps_the_chains_whose_weights_it_recorded(chain, fashion_idx, monkeypatch):
    import sweep.steps

    record = json.loads((chain / BORN_AGAIN).read_text())
    assert all(len(c["weights_sha256"]) == 2 and all(c["weights_sha256"]) for c in record["chains"])
    teacher = next(p for p in chain.iterdir() if p.name.startswith("fashion-mnist_teacher"))
    real = sweep.steps.measure_test_logits
    calls = []
    monkeypatch.setattr(sweep.steps, "measure_test_logits", lambda d: calls.append(d) or real(d))
    assert run_experiments.main(chain_config(fashion_idx, chain, teacher)) == 0
    assert calls == [] and json.loads((chain / BORN_AGAIN).read_text()) == record  # nothing measured again
    spoiled = json.loads(json.dumps(record))
    spoiled["chains"][0]["weights_sha256"][1] = "0" * 64  # as if generation 2 had been retrained
    spoiled["chains"][0]["ensemble_acc"] = -1.0
    (chain / BORN_AGAIN).write_text(json.dumps(spoiled))
    assert run_experiments.main(chain_config(fashion_idx, chain, teacher)) == 0
    assert len(calls) == 2 and json.loads((chain / BORN_AGAIN).read_text()) == record  # that chain alone, again


def test_test_logits_are_measured_in_the_precision_the_run_tested_in(fashion_idx, tmp_path):
    """A bf16 run's test logits are measured again under bf16 autocast: the same accuracy its summary records, so
    an ensemble of bf16 generations is scored as they were."""
    s = train.main(make_config(small_run_args(fashion_idx, tmp_path, "--blocks=1", "--method=ce", "--precision=bf16",
                                              "--val_fraction=0", batch_size=32, epochs=1)))
    logits, labels, _ = measure_test_logits(tmp_path / s["run_name"])
    assert evaluate_logits(logits, labels)[1] == pytest.approx(s["best_test_acc"], abs=1e-9)
    from runtime.inference import predict
    from runtime.run_dir import load_run
    cfg, model, ds, _ = load_run(str(tmp_path / s["run_name"]))
    fp32 = predict(model, ds.test, ds.mean, ds.std, cfg.eval_batch_size, cfg.channels_last)
    assert not torch.equal(logits, fp32)  # bf16's rounding shows in the logits: not measured in fp32
