"""Named sizes and recipes: `--preset=NAME` sets a run's size and protocol (smoke for the tests, the
released teacher, the CPU demo, the reduced experiment and its transfer set, the full GPU run);
`--recipe=NAME` applies a recipe from the literature after it. Plain dicts of config fields (config.py
checks them like any override); config.py imports this module, never the reverse. MEASURED: each make target's
measured wall time, the one place a run time is stated.
"""
from typing import NamedTuple, Optional

# Named recipes from the literature: `--recipe=<name>` applies one after the preset and before the other
# overrides; the sweep's teacher run takes `teacher_recipe`. Each says where its numbers come from.
RECIPES = {
    # a teacher that reaches the literature's Fashion-MNIST numbers: SGD + Nesterov, lr 0.1 at batch 128,
    # weight decay 5e-4, cosine after a short warm-up, crop + flip + random erasing (Zhong et al. 2020:
    # ResNet-20 95.98%, WRN-28-10 96.35% on Fashion-MNIST), no label smoothing (Muller et al. 2019: it
    # erases the class relations KD transfers), no early stopping
    "teacher-sgd": dict(optimizer="sgd", nesterov=True, lr=0.1, batch_size=128, momentum=0.9, weight_decay=5e-4,
                        schedule="cosine", warmup_epochs=1.0, augment="crop+flip", random_erasing=0.5,
                        patience=0),
    # students the way mdistiller trains them on CIFAR (SGD 0.05 at batch 64 = 0.1 at 128, wd 5e-4), with a
    # cosine schedule instead of steps, and the same for the CE control and every distilled student
    "student-sgd": dict(optimizer="sgd", nesterov=True, lr=0.1, batch_size=128, momentum=0.9, weight_decay=5e-4,
                        schedule="cosine", warmup_epochs=1.0, augment="crop+flip", patience=0),
    "hinton-kd": dict(method="kd", temperature=4.0, alpha=0.1, kd_weight=0.9, kd_logit_std=False),  # mdistiller CIFAR
    "kd-logit-std": dict(method="kd", temperature=2.0, alpha=0.1, kd_weight=9.0, kd_logit_std=True),  # Sun et al. 2024
    "dkd": dict(method="dkd", temperature=4.0, dkd_alpha=1.0, dkd_beta=8.0, dkd_warmup=20 / 240),  # Zhao et al. 2022
    "fitnet": dict(method="fitnet", fitnet_weight=100.0, fitnet_stage=-1),  # Romero et al. 2015, mdistiller weights
    "at": dict(method="at", at_weight=1000.0, at_p=2.0),  # Zagoruyko & Komodakis 2017, mdistiller weights
    # Beyer et al. 2022: teacher and student see the same mixup view, KL at T=1 only, long schedules
    "function-matching": dict(method="fm", fm_temperature=1.0, fm_mixup=1.0, teacher_logits="online"),
}


RELEASED_TEACHER = "teachers/fashion-mnist_teacher_resnet20"  # made by `make teacher20` (the "teacher20" preset)
STRONG_TEACHER = "teachers/fashion-mnist_teacher_resnet32"  # made by `make teacher` (the "teacher" preset)
# the released ensemble (95.62%): that resnet32 and its seed-1 twin (`make teacher` trains both), their mean logits
# (--teacher_checkpoint=a,b): the teacher of `make scale` (docs/results.md)
ENSEMBLE_TEACHER = f"{STRONG_TEACHER},{STRONG_TEACHER}_s1"

# The CPU protocol of the demo, reduced and transfer presets: students of the released teacher (teachers/,
# 94.36%), for 3 depths and 3 seeds a CE control and a KD student (T 2, CE and KD weights 0.5) on the same
# 500 images of their seed, 40 epochs of SGD, selected on a fixed 2% validation hold-out evaluated from
# epoch 17 on (in 150 such runs no epoch before 20 was the best; --select_from), tested on the whole test
# split. Size and KD setting were chosen on that hold-out with seeds 100-102 over 1,000 x 20 epochs,
# mdistiller's T 4 / 0.1 / 0.9, logit standardization, DKD and function matching (docs/results.md). augment=flip lets
# the teacher's logits be cached once per image and view. Precision auto: bf16 where a training step of the student
# measures faster on this CPU (an AMD EPYC Zen 5: 1.4-1.6x), else fp32 (an Intel Xeon without AMX: bf16 1.33x
# slower); each CE control runs in its students' precision (docs/speed.md).
CPU_PROTOCOL = dict(**{**RECIPES["student-sgd"], "augment": "flip", "batch_size": 64, "lr": 0.05},
                    teacher_arch="resnet20", teacher_checkpoint=RELEASED_TEACHER, max_train_samples=500,
                    max_test_samples=0, val_fraction=0.02, select_from=0.4, epochs=40, seeds=3,
                    sweep_blocks=(4, 6, 8), sweep_methods=("kd",), temperature=2.0, alpha=0.5, kd_weight=0.5,
                    sweep_precisions=("auto",))

# the data-scaling protocol (`make scale`, the full preset): the CPU protocol above with the released ensemble of two
# resnet32s (95.62%, `make teacher`) and KD at T 4 (CE and KD weights 0.5), chosen on the validation hold-out with
# seeds 100-102 at 2,000 labels over T 2 and mdistiller's T 4 / 0.1 / 0.9 (docs/results.md)
SCALE_PROTOCOL = {**CPU_PROTOCOL, "teacher_arch": "resnet32", "teacher_checkpoint": ENSEMBLE_TEACHER,
                  "temperature": 4.0}

# The segmentation protocol (`make seg-teacher`, `make seg`): Fashion-MNIST scenes (data/scenes.py) of 1-3 garments on
# a 48x64 canvas (M2NIST's 64x84 costs 1.8x the time a scene on a 2-core CPU), 12,000 training scenes of which 10%
# the validation hold-out (from other garments), 2,000 test scenes; crop + flip, SGD with a cosine schedule
SEG_DATA = dict(task="segment", dataset="fashion-mnist-scenes", scene_canvas=(48, 64), val_fraction=0.1,
                **{**RECIPES["student-sgd"], "augment": "crop+flip", "batch_size": 64, "lr": 0.05})
SEG_TEACHER = "teachers/fashion-mnist-scenes_teacher_resseg6_24"  # made by `make seg-teacher`
# the students of `make seg`: res4 and res6 segmenters on 1,000 of the training scenes, a CE control, pixel-wise KD and
# CWD from the released resseg6_24, 3 seeds, selected on validation mIoU (from epoch 7 on). The losses' settings are the literature's:
# pixel-wise KD as CIRKD runs it (CE + 1.0 x KL at T 1), CWD as its authors' Cityscapes setting (weight 3, T 4)
SEG_PROTOCOL = dict(**SEG_DATA, teacher_arch="resseg6_24", teacher_checkpoint=SEG_TEACHER, max_train_samples=1000,
                    epochs=15, select_from=0.4, seeds=3, sweep_blocks=(4, 6), sweep_methods=("kd", "cwd"),
                    sweep_precisions=("auto",), temperature=1.0, alpha=1.0, kd_weight=1.0)


class Measured(NamedTuple):
    """A make target's measured wall time (MEASURED below)."""
    wall: Optional[str]  # e.g. "10 min 53 s"; None: not timed end to end
    what: str  # what the time covers
    machine: str
    commit: str

PRESETS = {
    # seconds: the test suite's size; a tiny teacher so a whole sweep fits in about two minutes; every file written
    # after every epoch (checkpoint.pt too), so that a run killed in any epoch resumes from the one before
    "smoke": dict(max_train_samples=256, max_test_samples=128, epochs=1, batch_size=64,
                  eval_batch_size=256, teacher_width=4, checkpoint_seconds=0.0, out_dir="checkpoints/smoke"),
    # the demo's released teacher, `make teacher20` (teachers/fashion-mnist_teacher_resnet20): a resnet20 on the whole
    # Fashion-MNIST training split less the fixed 2% validation hold-out the demo and reduced students select
    # on, with the teacher recipe at batch 256 (lr 0.2, the linear-scaling rule from 0.1 at 128; ~1.3x the
    # images/s of batch 128 on a 2-core CPU) for 36 epochs (its time: MEASURED below)
    "teacher20": dict(**{**RECIPES["teacher-sgd"], "batch_size": 256, "lr": 0.2}, role="teacher",
                      teacher_arch="resnet20", epochs=36, val_fraction=0.02, out_dir="checkpoints/teachers"),
    # the stronger released teacher, `make teacher` (teachers/fashion-mnist_teacher_resnet32): the same data and
    # recipe, a resnet32 (0.47M parameters) for 90 epochs in bf16 autocast (a resnet32 step: 1,441 images/s in bf16,
    # 839 in fp32 on a 2-core AMD EPYC Zen 5; an Intel Xeon without AMX trains bf16 slower than fp32); `make teacher`
    # trains it at seed 0 and at --seed=1 (..._resnet32_s1), the two members of ENSEMBLE_TEACHER
    "teacher": dict(**{**RECIPES["teacher-sgd"], "batch_size": 256, "lr": 0.2}, role="teacher",
                    teacher_arch="resnet32", epochs=90, precision="bf16", val_fraction=0.02,
                    out_dir="checkpoints/teachers"),
    # the released segmentation teacher, `make seg-teacher` (SEG_TEACHER): a resseg6_24 (1.23M parameters) on every
    # training scene less the hold-out, 12 epochs in bf16 autocast
    "seg-teacher": dict(**SEG_DATA, role="teacher", teacher_arch="resseg6_24", epochs=12, precision="bf16",
                        out_dir="checkpoints/teachers"),
    # `make seg`: the segmentation protocol above
    "seg": dict(**SEG_PROTOCOL, out_dir="checkpoints/seg"),
    # the CPU demo `make demo` (its time: MEASURED below): the CPU protocol above
    "demo": dict(**CPU_PROTOCOL, out_dir="checkpoints/demo"),
    # `make qat`: the demo's students in fp32 (fake quantization runs in fp32; it reuses checkpoints/demo, whose runs
    # are these where auto picks fp32), then per depth and seed the fp32 KD student quantized after training (PTQ)
    # and fine-tuned on each weight grid with and without its teacher (QAT-KD, QAT-CE): 20 epochs at a fifth of the
    # students' lr, the demo's selection protocol
    "qat": dict(**{**CPU_PROTOCOL, "sweep_precisions": ("fp32",)}, sweep_qat=("int8", "int4", "ternary", "binary"),
                qat_epochs=20, qat_lr=0.01, out_dir="checkpoints/demo"),
    # `make selfkd`: self-distillation beside the demo's students (the same runs: it reuses checkpoints/demo), per
    # depth and seed the teacher-free tfkd, pskd and byot and born-again generations 1-2 of the demo's KD, generation
    # 1 learning from the CE control; born_again.json holds their ensembles. Each method's setting was chosen on the
    # validation hold-out with seeds 100-102 by the demo's rule (docs/results.md): Tf-KD at T 4 (paper: 20), PS-KD's
    # alpha 0.3 (paper: 0.8), BYOT without its feature term (paper: 0.03)
    "selfkd": dict(**{**CPU_PROTOCOL, "sweep_methods": ("kd", "tfkd", "pskd", "byot")}, sweep_generations=2,
                   tfkd_temperature=4.0, pskd_alpha=0.3, byot_feature_weight=0.0, out_dir="checkpoints/demo"),
    # the full experiment for one GPU: the data-scaling protocol of `make scale` at every depth and size (the whole
    # training split included for res6-res10 too), with DKD beside KD; benchmarks/gpu_check.sh runs a slice of it
    "full": dict(**{**SCALE_PROTOCOL, "sweep_blocks": (4, 6, 8, 10), "sweep_methods": ("kd", "dkd"),
                    "max_train_samples": 0},
                 sweep_train_samples=(500, 2000, 8000, 0), sweep_train_epochs=(40, 30, 20, 15), workers=3,
                 out_dir="checkpoints/full"),
    # `make scale`: the demo's protocol (the ensemble teacher, CE control and KD at T 4, 3 seeds) at 500, 2,000,
    # 8,000 labeled images and the whole training split less the hold-out (58,800), fewer epochs for more data; res4
    # at every size, res8 up to 8,000 (the whole split would double the budget); <out_dir>/n<N>/ per size, scale.md
    # and plots/kd_gain_vs_data.png across them
    "scale": dict(**{**SCALE_PROTOCOL, "sweep_blocks": (4, 8)}, sweep_train_samples=(500, 2000, 8000, 0),
                  sweep_train_epochs=(40, 30, 20, 10), scale_deep_upto=8000, out_dir="checkpoints/scale"),
    # the transfer set at scale (`make scale` runs it first): 2,000 labeled images plus the other 56,800 of the training
    # split unlabeled, res4, KD and the pseudo-label control for 10 epochs over all 58,800, into scale's n2000/ so
    # that its 2,000-label CE controls are these rows' controls (all/ holds CE on every label: the upper bound)
    "scale-transfer": dict(**{**SCALE_PROTOCOL, "sweep_blocks": (4,), "sweep_methods": ("kd", "pl"),
                              "max_train_samples": 2000, "epochs": 30}, unlabeled_samples=56800, transfer_epochs=10,
                           out_dir="checkpoints/scale/n2000"),
    # the demo's protocol on 5 new seeds (3-7);
    # `make reduced` then adds the transfer-set rows (--preset=transfer, same out_dir)
    "reduced": dict(**{**CPU_PROTOCOL, "seeds": 5}, first_seed=3, out_dir="checkpoints/reduced"),
    # the transfer set beside the reduced experiment's runs: the same 500 labeled images
    # plus 4,500 the student sees only through the teacher, for 4 epochs (the control's images x epochs:
    # 40 on 500), KD and the pseudo-label control, seeds 3-5; the CE controls are the reduced experiment's
    "transfer": dict(**{**CPU_PROTOCOL, "sweep_methods": ("kd", "pl")}, unlabeled_samples=4500, transfer_epochs=4,
                     first_seed=3, out_dir="checkpoints/reduced"),
}

# Every run time a user is told, stated once: the make target's wall time as measured, with its machine and the
# commit. README, the Makefile and the presets' comments link here (docs/config.md#presets renders it); a new
# measurement replaces its row. A target not yet timed end to end says so (`wall` None).
MEASURED = {
    "test": Measured("7 min 40 s", "make test right after make demo and make selfkd in the same fresh clone (venv "
                     "present; 675 tests, pytest 7 min 31 s); at c625649 with the venv set-up: 8 min 2 s",
                     "2-core AMD EPYC Zen 5, no GPU", "30adbfc"),
    "demo": Measured("5 min 10 s", "make demo from a fresh clone, venv set-up included, every student in bf16 by auto; "
                     "at c625649 right after make test (venv present): 4 min 18 s; in fp32 at 8972ffd, set-up included: "
                     "7 min 19 s; on a Zen 4 at 285820e: 10 min 53 s", "2-core AMD EPYC Zen 5, no GPU", "30adbfc"),
    "selfkd": Measured("10 min 9 s", "make selfkd right after make demo in the same fresh clone (the demo's 18 runs "
                       "reused; 45 new runs in bf16, the born-again ensembles, the plots)", "2-core AMD EPYC Zen 5, no GPU",
                       "30adbfc"),
    "reduced": Measured("24 min 33 s", "make reduced after make demo in the same clone (the reduced sweep 16 min "
                        "40 s, the transfer-set rows 7 min 31 s)", "2-core AMD EPYC Zen 4, no GPU", "285820e"),
    "qat": Measured("60 min 40 s", "make qat after make demo (its students reused)",
                    "2-core AMD EPYC Zen 4, no GPU", "570dfc2"),
    "teacher20": Measured("60 min 5 s", "make teacher20 from a fresh clone, set-up included (58.1 min training, "
                          "15 of them beside test runs)", "2-core AMD EPYC Zen 4, no GPU", "4541171"),
    "teacher": Measured("about 2 h 15 min", "two resnet32 members, each 90 epochs at 41.5-47 s alone (about 66 min; "
                        "neither run had the cores to itself the whole time, so their summaries say more), then "
                        "their ensemble measured (25 s)", "2-core AMD EPYC Zen 5, no GPU", "3ae952f, d8f958f"),
    "seg-teacher": Measured(None, "not timed end to end: its training took 25 min 55 s (1,555 s) at 1 thread on one "
                            "core, another training on the other core", "2-core AMD EPYC Zen 5, no GPU", "8b7c2ce"),
    "seg": Measured(None, "not timed from a fresh clone: its sweep, examples and table took 26 min 18 s in the main "
                    "checkout at 1 thread on one core, another training on the other core; the plots 1 s more",
                    "2-core AMD EPYC Zen 5, no GPU", "8b7c2ce"),
    "scale": Measured("74 min 43 s", "make scale from a fresh clone, venv set-up included: the transfer set (27 min), "
                      "then 500 to 58,800 labeled images; every run in bf16 by auto, 2 threads (other work ran beside "
                      "it part of the time)", "2-core AMD EPYC Zen 5, no GPU", "3975953"),
}
