"""Every knob of the project in one frozen dataclass, with presets and strict CLI overrides.

    python train.py --preset=demo --blocks=6 --precision=bf16

Each `--field=value` is parsed as a Python literal where it is one, else kept as a string
(nanoGPT's configurator). An unknown field, a wrong type or a value outside its allowed set
stops with exit code 2 and one line naming the field. Nothing here is mutated: a run gets its
own `Config` built by `make_config` / `dataclasses.replace`.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import re
import typing
from dataclasses import dataclass
from typing import Optional

from presets import CPU_PROTOCOL, PRESETS, RECIPES, RELEASED_TEACHER  # noqa: F401 (re-exported)
from utils.errors import HelpRequested, UserError
from utils.names import METHOD_LOOKS, PRECISION_LOOKS

DATASETS = ("fashion-mnist", "intel", "imagefolder", "cifar10", "cifar100")
CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")  # He et al. 2016, 6n+2 layers
TORCHVISION_TEACHERS = ("resnet18", "resnet50", "efficientnet_b0")  # ImageNet-style backbones
RUN_NAME = re.compile(r"[A-Za-z0-9._+-]+")  # what a run directory's name may hold
WRN_PATTERN = re.compile(r"wrn(\d+)_(\d+)$")  # wide ResNet wrn{depth}_{k}, depth 6n+4 (wrn16_4, wrn28_10)
TIMM_PREFIX = "timm:"  # timm:<name>: any timm model by name, as a teacher or a student (models/timm_models.py)
TIMM_PATTERN = re.compile(r"timm:[A-Za-z0-9_.-]+$")  # the name itself is checked against timm when the model is built
TEACHER_ARCHS = ("seed12", *CIFAR_RESNETS, "wrn{depth}_{k}", *TORCHVISION_TEACHERS, "timm:<name>")
PRECISIONS = tuple(PRECISION_LOOKS)  # utils/names.py: one table of names, their order, labels and plot styles
METHODS = tuple(METHOD_LOOKS)  # the same table; distill.DISTILLERS registers a Distiller for each
DEPLOY_VARIANTS = ("fp32", "fp32-compiled", "bf16", "fp16", "int8", "fp8-weights", "int8-head-bnb",
                   "nf4-head-bnb", "onnx", "onnx-int8")


# Every field has a scope, which says what changing it changes:
#   train  - what a run learns: a resumed run must match its interrupted self in every one of them
#   run    - where and how a run executes (paths, device, threads, memory layout), not what it learns
#   eval   - evaluate.py and the test metric; deploy - the deployment variants; sweep - run_experiments.py
# and, for a method's hyper-parameters, the methods it belongs to (summaries record them per method).
SCOPES = ("train", "run", "eval", "deploy", "sweep")


def _knob(scope: str):
    def make(default, methods: tuple = ()):
        return dataclasses.field(default=default, metadata={"scope": scope, "methods": methods})
    return make


_train, _run, _eval, _deploy, _sweep = (_knob(s) for s in SCOPES)


@dataclass(frozen=True)
class Config:
    # --- data ---
    dataset: str = _train("fashion-mnist")  # which dataset; fashion-mnist is real data that ships with Debian
    data_dir: str = _run("data")  # where the dataset files live; decoded caches go to data_dir/cache
    image_size: int = _train(0)  # px, square; 0 = the dataset's native size (28 Fashion-MNIST, 32 CIFAR, 150 Intel)
    max_train_samples: int = _train(0)  # images; 0 = all. A class-stratified, seeded subset otherwise
    max_test_samples: int = _eval(0)  # images; 0 = all
    unlabeled_samples: int = _train(0)  # a transfer set: further train images (outside the labeled subset, val and test; seeded) whose labels the student never sees, only the teacher's outputs on them; needs max_train_samples and a method with a teacher; 0 = none
    val_fraction: float = _train(0.0)  # share of the whole train split held out (fixed, seed-independent) to select the epoch; 0 = select on test (the original)
    augment: str = _train("crop+flip")  # batch augmentation on tensors: none | flip | crop+flip (4 px zero padding)
    random_erasing: float = _train(0.0)  # probability of erasing a random rectangle per image (Zhong et al. 2020 use 0.5)
    mixup: float = _train(0.0)  # mixup Beta(a, a) of a batch with its own shuffle (Zhang et al. 2018); 0 = off
    num_workers: int = _run(0)  # processes decoding JPEGs when a cache is built; 0 = in-process
    # --- model ---
    role: str = _train("student")  # teacher | student: which model train.py trains
    blocks: int = _train(4)  # residual blocks in the student; every 2nd doubles channels with stride 2
    width: int = _train(16)  # channels after the stem (the original's 16)
    fc_layers: Optional[tuple] = _train(None)  # hidden FC sizes of the student head; None = [final channels // 2]
    student_arch: str = _train("")  # "" = the ResidualCNN of `blocks`; timm:<name> = any timm model (blocks, width, fc_layers unused)
    student_weights: str = _train("")  # a local .pth/.pt state dict or .safetensors a timm student starts from; "" = random init
    teacher_arch: str = _train("seed12")  # seed12 (the original's 26.5M params) | resnet20..110 | wrn{depth}_{k} | resnet18 | resnet50 | efficientnet_b0 | timm:<name> (any timm model)
    teacher_width: int = _train(16)  # stem channels of the seed12 teacher; smaller only for quick smoke runs
    teacher_pretrained: bool = _train(False)  # ImageNet weights for torchvision teachers (from the torch hub cache); timm teachers: teacher_weights
    teacher_weights: str = _train("")  # a local weights file for teacher_pretrained (a timm teacher: any state dict of it, .pth/.pt/.safetensors); "" = the hub cache
    teacher_checkpoint: str = _train("")  # run dir or weights file of the trained teacher; "" = out_dir/<dataset's teacher run>
    # --- distillation ---
    method: str = _train("kd")  # ce (no teacher: the control) | kd (Hinton) | dkd (Decoupled KD) | fitnet (hints) | at (attention transfer) | fm (function matching) | pl (CE with the teacher's argmax as the labels of unlabeled images: the transfer set's control)
    temperature: float = _train(4.0, ("kd", "dkd"))  # softmax temperature T of kd and dkd (4: mdistiller's CIFAR value)
    alpha: float = _train(0.1, ("kd",))  # kd: weight of the cross-entropy term (mdistiller's CE_WEIGHT 0.1; the old default here was 0.5)
    kd_weight: float = _train(0.9, ("kd",))  # kd: weight of the T^2-scaled KL term (mdistiller's KD_WEIGHT 0.9)
    kd_logit_std: bool = _train(False, ("kd",))  # kd: z-score both logits before the softmax (Sun et al. 2024; their recipe: T=2, kd_weight=9)
    dkd_alpha: float = _train(1.0, ("dkd",))  # dkd: weight of TCKD (Zhao et al. 2022 use 1.0); CE weighs 1.0
    dkd_beta: float = _train(8.0, ("dkd",))  # dkd: weight of NCKD (Zhao et al. use 8.0 on CIFAR-100)
    dkd_beta_per_depth: tuple = _train((), ("dkd",))  # dkd: [[blocks, beta], ...] overriding dkd_beta for those depths
    dkd_warmup: float = _train(20 / 240, ("dkd",))  # dkd: share of the run over which the DKD weight ramps up linearly (the paper: 20 of 240 epochs)
    fitnet_weight: float = _train(100.0, ("fitnet",))  # fitnet: weight of the hint MSE (mdistiller's CIFAR FEAT_WEIGHT); CE weighs 1.0
    fitnet_stage: int = _train(-1, ("fitnet",))  # fitnet: which student stage gives the hint (0-based; -1 = the middle one; nothing below -1)
    at_weight: float = _train(1000.0, ("at",))  # at: weight of the attention-map loss (mdistiller's CIFAR value); CE weighs 1.0
    at_p: float = _train(2.0, ("at",))  # at: attention map = mean over channels of |A|^p (Zagoruyko & Komodakis 2017 use p=2)
    fm_temperature: float = _train(1.0, ("fm",))  # fm: softmax temperature of function matching's KL (Beyer et al. 2022 use 1)
    fm_mixup: float = _train(1.0, ("fm",))  # fm: mixup Beta(a, a) of the one view teacher and student share (Beyer et al.: mixup + crops)
    teacher_logits: str = _train("cache")  # cache: teacher logits computed once per image/view and reused; online: every batch
    teacher_precision: str = _train("fp32")  # fp32 | bf16 | auto (bf16 where the hardware has native bf16 units): the frozen teacher's forward only (autocast; the student keeps `precision`)
    # --- precision and optimisation ---
    precision: str = _train("fp32")  # fp32 | fp16 (autocast + GradScaler) | bf16 (autocast) | fp8 (e4m3/e5m2 numerics) | auto (bf16 where the CPU has AMX or AVX512-BF16, or the GPU tensor cores; fp32 elsewhere)
    optimizer: str = _train("adam")  # adam | adamw | sgd | adam8bit (bitsandbytes 8-bit optimizer state)
    lr: float = _train(1e-3)  # learning rate at batch_size (the original: Adam 1e-3)
    momentum: float = _train(0.9)  # sgd only
    nesterov: bool = _train(False)  # sgd only: Nesterov momentum
    weight_decay: float = _train(0.0)  # L2 / decoupled decay; the original used none
    schedule: str = _train("cosine")  # cosine (to 0 over epochs) | step (x0.1 every lr_step_epochs) | none
    lr_step_epochs: int = _train(5)  # step schedule period, epochs
    warmup_epochs: float = _train(0.0)  # linear learning-rate warm-up from 0, epochs (fractions allowed), before the schedule
    epochs: int = _train(15)  # upper bound; early stopping may end sooner (the original: 15)
    select_from: float = _train(0.0)  # share of the epochs before the first evaluation of the selection split: the best epoch is picked from the rest (0 = every epoch)
    patience: int = _train(3)  # epochs without a better accuracy before stopping; 0 = never stop early (the original: 3)
    batch_size: int = _train(224)  # images per step (the original: 224)
    eval_batch_size: int = _run(1024)  # images per evaluation forward (no activations kept); on a CPU capped to ~200k pixels
    seed: int = _train(0)  # seeds model init, data order, augmentation and the subset
    device: str = _run("auto")  # auto (cuda if present, else cpu) | cpu | cuda | cuda:N | mps
    channels_last: bool = _run(True)  # NHWC memory format: faster convolutions on CPU and tensor cores
    compile: bool = _run(False)  # torch.compile the training model (pays a compile time once per run)
    cuda_graphs: bool = _run(False)  # CUDA only: capture each training step as CUDA graphs (torch.compile reduce-overhead); eager elsewhere, with the reason
    sync_bn: bool = _train(False)  # under torchrun: BatchNorm statistics of the global batch (all-reduced), not each rank's shard
    # --- outputs ---
    out_dir: str = _run("checkpoints")  # every run writes out_dir/run_name/
    run_name: str = _run("")  # "" = derived, like the original's res4_b224_fp16 plus dataset, method, transfer set and seed; a plain folder name, never a path
    resume: bool = _run(False)  # continue out_dir/run_name/checkpoint.pt if present
    tensorboard: bool = _run(True)  # TensorBoard event files in every run's tb/ (losses, accuracies, lr, images/s per epoch)
    overwrite: bool = _run(False)  # replace a finished run of the same run_name (otherwise train.py stops with exit 2)
    # --- evaluate.py ---
    run: str = _eval("")  # evaluate.py: the run directory to evaluate
    split: str = _eval("test")  # evaluate.py: test (labelled metrics) | pred (Intel's unlabelled seg_pred -> predictions.csv)
    deploy: bool = _deploy(False)  # evaluate.py / run_experiments.py: build and measure deployable variants
    calib_samples: int = _deploy(512)  # training images used to calibrate int8 static quantization
    deploy_variants: tuple = _deploy(())  # deploy variants to build and measure; () = all of DEPLOY_VARIANTS
    deploy_repeats: int = _deploy(50)  # timed batch-1 calls per variant (median reported); >= 50 for quoted numbers
    deploy_threads: int = _deploy(0)  # intra-op threads while measuring deploy variants; 0 = torch's default
    # --- run_experiments.py ---
    sweep_blocks: tuple = _sweep((4, 6, 8, 10))  # student depths in the sweep
    sweep_precisions: tuple = _sweep(("fp32", "fp16", "fp8"))  # precisions of the distilled students
    sweep_methods: tuple = _sweep(("kd",))  # distillation methods; a ce control per depth is always added
    seeds: int = _sweep(1)  # seeds first_seed..first_seed+seeds-1 per grid point
    first_seed: int = _sweep(0)  # the sweep's first seed (choose settings on seeds the reported table does not use, e.g. 100)
    workers: int = _sweep(1)  # groups of students trained at once, each in its own process (1 = one after another)
    launcher: str = _sweep("local")  # local: this machine (--workers processes) | ray: Ray tasks on a local Ray or a cluster
    ray_address: str = _sweep("")  # an existing Ray cluster (host:port); "" = $RAY_ADDRESS if set, else a local Ray started for the sweep
    gpus_per_run: float = _sweep(1.0)  # Ray: GPU share each run asks for (0.25 packs four on one GPU); a task asks runs x this, at most 1; 0 on a cluster without GPUs
    cpus_per_task: int = _sweep(1)  # Ray: CPUs each student task asks for, and its torch threads (the teacher's task: every CPU of the largest node)
    runs_per_task: int = _sweep(1)  # Ray: runs per task, trained together (one batch and teacher forward for all); 0 = a whole group of students
    ray_shared_fs: Optional[bool] = _sweep(None)  # Ray: do all nodes see out_dir? None = yes for a local Ray; False: tasks return their files, the driver writes them
    transfer_epochs: int = _sweep(0)  # the sweep's runs with a transfer set (unlabeled_samples): epochs, e.g. to match the control's images x epochs (the warm-up keeps its share of the run); 0 = epochs
    teacher_epochs: int = _sweep(0)  # the sweep's teacher run: epochs; 0 = same as the students' epochs
    teacher_train_samples: int = _sweep(0)  # the sweep's teacher run: train images; 0 = same as max_train_samples
    teacher_recipe: str = _sweep("")  # the sweep's teacher run: a named recipe (RECIPES) on top of the students' settings; "" = none
    fp16_on_cpu: str = _sweep("bf16")  # what the sweep runs for fp16 on a CPU: fp16 autocast there trains at ~10 img/s
    precision_note: str = _sweep("")  # set by the sweep when it substitutes a precision; shown in every summary

    def __post_init__(self):
        types = _field_types()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_field(f.name, value)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
            elif types[f.name] is float and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))
        if self.dkd_beta_per_depth:
            object.__setattr__(self, "dkd_beta_per_depth", tuple(tuple(p) for p in self.dkd_beta_per_depth))
        if self.role == "student" and self.method == "dkd" and self.mixup > 0:
            raise UserError("--method=dkd with --mixup: DKD's target/non-target split needs one true class per image")
        if self.unlabeled_samples:
            self._check_transfer_set()
        if self.student_weights and not self.student_arch:
            raise UserError(f"--student_weights={self.student_weights}: only a timm student (--student_arch=timm:<name>) "
                            f"starts from a weights file")

    def _check_transfer_set(self):
        """Unlabeled images reach a student only through a teacher's outputs: a method without a teacher,
        a teacher run, or a batch mixup that would blend in their (absent) labels cannot take them."""
        flag = f"--unlabeled_samples={self.unlabeled_samples}"
        if self.role == "teacher":
            raise UserError(f"{flag}: a teacher trains on labeled images only; unlabeled images are for students")
        if self.method in NO_TEACHER_METHODS:
            raise UserError(f"{flag}: --method={self.method} has no teacher, and unlabeled images are seen only "
                            f"through the teacher's outputs; use kd, dkd, fm or pl (pseudo-labels)")
        if self.mixup > 0:
            raise UserError(f"{flag} with --mixup={self.mixup}: mixup blends labels, and unlabeled images have "
                            f"none (fm's own mixup, --fm_mixup, needs no labels)")
        if not self.max_train_samples:
            raise UserError(f"{flag}: needs --max_train_samples, the labeled images; the unlabeled ones are "
                            f"taken from the rest of the training split")


NO_TEACHER_METHODS = ("ce",)  # methods that train without a teacher (distill.DISTILLERS' uses_teacher False)

CHOICES = {
    "dataset": DATASETS,
    "augment": ("none", "flip", "crop+flip"),
    "role": ("teacher", "student"),
    "method": METHODS,
    "teacher_logits": ("cache", "online"),
    "teacher_precision": ("fp32", "bf16", "auto"),
    "precision": (*PRECISIONS, "auto"),
    "optimizer": ("adam", "adamw", "sgd", "adam8bit"),
    "schedule": ("cosine", "step", "none"),
    "split": ("test", "pred"),
    "fp16_on_cpu": ("bf16", "fp16"),
    "launcher": ("local", "ray"),
}
POSITIVE = {"blocks", "width", "teacher_width", "epochs", "batch_size", "eval_batch_size", "seeds", "workers",
            "cpus_per_task", "lr_step_epochs", "calib_samples", "deploy_repeats", "fm_temperature", "at_p"}
NON_NEGATIVE = {"image_size", "max_train_samples", "unlabeled_samples", "first_seed", "max_test_samples", "num_workers", "patience", "seed",
                "deploy_threads", "teacher_epochs", "transfer_epochs", "teacher_train_samples", "momentum",
                "weight_decay", "alpha", "kd_weight", "dkd_alpha", "dkd_beta", "fitnet_weight", "at_weight",
                "mixup", "fm_mixup", "warmup_epochs", "gpus_per_run", "runs_per_task"}
UNIT_INTERVAL = {"random_erasing", "dkd_warmup"}  # in [0, 1]
# Ranges beyond the sign: field -> (test, the range as the message states it). Every float field must
# also be finite (no nan, no inf); all of it is checked when a Config is built, before any data loads.
RANGES = {
    "temperature": (lambda v: v > 0, "> 0 (the softmax temperature T; 1-20 is usual)"),
    "alpha": (lambda v: 0 <= v <= 1, "in [0, 1] (kd: the weight of the cross-entropy term)"),
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "val_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "select_from": (lambda v: 0 <= v < 1, "in [0, 1) (the share of the epochs that are not evaluated; the last always is)"),
    "max_train_samples": (lambda v: v == 0 or v >= 2, "0 (all) or at least 2 (BatchNorm needs two images a batch)"),
    "blocks": (lambda v: 1 <= v <= 64, "in 1..64"),
    "width": (lambda v: 1 <= v <= 4096, "in 1..4096 (channels after the stem)"),
    "fitnet_stage": (lambda v: v >= -1, "-1 (the middle stage) or a stage index from 0"),
    # a run directory is out_dir/run_name: a name that is a path would put a run, and its fresh start's
    # deletions, outside out_dir
    "run_name": (lambda v: v == "" or (RUN_NAME.fullmatch(v) is not None and v not in (".", "..")),
                 "a plain folder name (letters, digits, . _ - +), not a path; \"\" = derived"),
}

def fields_in_scope(*scopes: str) -> tuple:
    """Names of the Config fields whose scope is one of `scopes`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(Config) if f.metadata["scope"] in scopes)


def method_hparams(cfg: "Config", method: str) -> dict:
    """{field: value} of the hyper-parameters that belong to `method` (what summaries record)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if method in f.metadata["methods"]}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


@functools.lru_cache(maxsize=None)
def _field_types() -> dict:
    return typing.get_type_hints(Config)


def _check_field(name: str, value) -> None:
    tp = _field_types()[name]
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[tuple]
        if value is None:
            return
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    ok = (isinstance(value, tp) and not (tp is int and isinstance(value, bool))) \
        or (tp is float and isinstance(value, int) and not isinstance(value, bool))
    if tp is tuple and isinstance(value, list):
        ok = True
    if not ok:
        raise UserError(f"--{name}={value!r}: expected {_type_name(tp)}")
    if tp is float and not math.isfinite(value):
        raise UserError(f"--{name}={value}: must be a finite number")
    if name in RANGES and not RANGES[name][0](value):
        raise UserError(f"--{name}={value}: must be {RANGES[name][1]}")
    if name in CHOICES and value not in CHOICES[name]:
        raise UserError(f"--{name}={value}: allowed values are {', '.join(CHOICES[name])}")
    if name in POSITIVE and value <= 0:
        raise UserError(f"--{name}={value}: must be a positive number")
    if name in NON_NEGATIVE and value < 0:
        raise UserError(f"--{name}={value}: must not be negative")
    if name == "teacher_arch" and not (value in TEACHER_ARCHS[:-1] or _wrn_ok(value) or TIMM_PATTERN.match(value)):
        raise UserError(f"--teacher_arch={value}: allowed values are {', '.join(TEACHER_ARCHS)} "
                        f"(depth 6n+4, e.g. wrn16_4)")
    if name == "student_arch" and value and not TIMM_PATTERN.match(value):
        raise UserError(f"--student_arch={value}: expected \"\" (the ResidualCNN of --blocks) or timm:<name>, "
                        f"e.g. timm:mobilenetv3_small_050")
    if name in UNIT_INTERVAL and not 0.0 <= value <= 1.0:
        raise UserError(f"--{name}={value}: must be in [0, 1]")
    if name == "dkd_beta_per_depth" and not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int) and p[0] > 0
            and isinstance(p[1], (int, float)) and p[1] >= 0 for p in value):
        raise UserError(f"--dkd_beta_per_depth={value!r}: expected [[blocks, beta], ...], e.g. [[4,2],[6,4]]")
    if name == "teacher_recipe" and value and value not in RECIPES:
        raise UserError(f"--teacher_recipe={value}: allowed values are {', '.join(RECIPES)}")
    if name == "fc_layers" and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise UserError(f"--fc_layers={value!r}: expected a list of positive ints, e.g. [128]")
    if name == "sweep_blocks" and not all(isinstance(v, int) and v > 0 for v in value):
        raise UserError(f"--sweep_blocks={value!r}: expected a list of positive ints, e.g. [4,6]")
    for sweep, allowed in (("sweep_precisions", (*PRECISIONS, "auto")), ("sweep_methods", METHODS),
                           ("deploy_variants", DEPLOY_VARIANTS)):
        if name == sweep and not all(v in allowed for v in value):
            raise UserError(f"--{sweep}={value!r}: allowed values are {', '.join(allowed)}")
    if name == "device" and not (value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:")):
        raise UserError(f"--device={value}: allowed values are auto, cpu, cuda, cuda:N, mps")


def _wrn_ok(name: str) -> bool:
    m = WRN_PATTERN.match(name)
    return bool(m) and int(m.group(1)) >= 10 and (int(m.group(1)) - 4) % 6 == 0 and int(m.group(2)) >= 1


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_value(name: str, text: str):
    tp = _field_types()[name]
    if tp is str:
        return text  # never literal-eval a string field: --run_name=123 stays "123"
    if tp is float:
        try:
            return float(text)  # also inf and nan, which the range check then names
        except ValueError:
            pass
    value = _literal(text)
    if isinstance(value, str) and text.strip()[:1] in "[(" and text.strip()[-1:] in ")]":
        value = [_literal(v.strip()) for v in text.strip()[1:-1].split(",") if v.strip()]  # [fp32,fp8]
    if tp is tuple or (typing.get_origin(tp) is typing.Union and tuple in typing.get_args(tp)):
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            value = (value,)  # --sweep_blocks=4 means (4,); --sweep_precisions=fp8 means ("fp8",)
        if isinstance(value, list):
            value = tuple(value)
    return value


def usage() -> str:
    """What -h / --help prints after the script's own docstring: the commands, presets, where fields live."""
    presets = "\n".join(f"  {name:6} " + " ".join(f"{k}={v}" for k, v in p.items()) for name, p in PRESETS.items())
    return ("Commands:\n  python train.py --role=teacher\n  python train.py --blocks=4 --method=kd --precision=bf16\n"
            "  python run_experiments.py --preset=demo\n  python evaluate.py --run=checkpoints/<run_name>\n"
            "  python plot_experiment_results.py --preset=demo\n"
            "Options: --field=value for any config field; every field with its default, unit and meaning is\n"
            "listed in docs/config.md (generated from config.py). --recipe=NAME applies a named\n"
            f"recipe from the literature ({', '.join(RECIPES)}). --preset=NAME sets:\n" + presets)


def parse_overrides(argv: list[str]) -> dict:
    """`--field=value` strings -> {field: value}: the preset first, then the recipe, then overrides in order.
    -h or --help anywhere raises HelpRequested (the script prints its usage and exits 0)."""
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(usage())
    names = {f.name for f in dataclasses.fields(Config)}
    preset, recipe, overrides = None, None, {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise UserError(f"{arg}: expected --field=value (e.g. --blocks=6); see docs/config.md for every field")
        key, text = arg[2:].split("=", 1)
        if key == "recipe" and text.startswith("@"):  # a recipe file, e.g. the one tune.py writes
            recipe = read_recipe_file(text[1:], names)
            continue
        if key in ("preset", "recipe"):
            table = PRESETS if key == "preset" else RECIPES
            if text not in table:
                raise UserError(f"--{key}={text}: allowed values are {', '.join(table)}")
            preset, recipe = (text, recipe) if key == "preset" else (preset, text)
            continue
        if key not in names:
            raise UserError(f"--{key}: unknown config field (fields are listed in docs/config.md)")
        overrides[key] = _parse_value(key, text)
    merged = dict(PRESETS[preset]) if preset else {}
    merged.update((RECIPES[recipe] if isinstance(recipe, str) else recipe) if recipe else {})
    merged.update(overrides)
    return merged


def read_recipe_file(path: str, names) -> dict:
    """--recipe=@path: a JSON object of config fields (tune.py writes one), applied like a named recipe."""
    try:
        with open(path) as f:
            fields = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--recipe=@{path}: cannot read a JSON recipe ({e})") from None
    fields = fields.get("fields", fields) if isinstance(fields, dict) else fields
    if not isinstance(fields, dict):
        raise UserError(f"--recipe=@{path}: not a JSON object of config fields")
    unknown = sorted(set(fields) - set(names))
    if unknown:
        raise UserError(f"--recipe=@{path}: unknown config fields {', '.join(unknown)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}


def make_config(argv: Optional[list[str]] = None, **fields) -> Config:
    """Defaults <- preset <- CLI overrides <- keyword fields; returns one frozen Config."""
    merged = parse_overrides(list(argv or []))
    merged.update(fields)
    return Config(**merged)


def config_to_dict(cfg: Config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(d: dict, source: str = "") -> Config:
    """Rebuild a Config from config.json (`source`, named in errors); fields this version does not know
    are ignored. A file that is no object, or a value of the wrong type or range, is one line naming the
    file and the field: the file's fault, not a flag's."""
    where = source or "config.json"
    if not isinstance(d, dict):
        raise UserError(f"{where}: not a JSON object of config fields (found {type(d).__name__})")
    names = {f.name for f in dataclasses.fields(Config)}
    try:
        return Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})
    except UserError as e:
        text = str(e)
        raise UserError(f"{where}: field {text[2:] if text.startswith('--') else text}") from None


def arch_name(arch: str) -> str:
    """An architecture as run names and tables spell it: timm:resnet10t -> timm-resnet10t (':' is no path character)."""
    return arch.replace(":", "-")


def student_name(cfg: Config) -> str:
    """The student model: res{blocks} (the ResidualCNN family), or timm-<name> for --student_arch=timm:<name>."""
    return arch_name(cfg.student_arch) if cfg.student_arch else f"res{cfg.blocks}"


def teacher_run_name(cfg: Config) -> str:
    return f"{cfg.dataset}_teacher_{arch_name(cfg.teacher_arch)}"


def default_run_name(cfg: Config) -> str:
    """Like the original's res4_b224_fp16, plus dataset, method and seed."""
    if cfg.run_name:
        return cfg.run_name
    if cfg.role == "teacher":
        return teacher_run_name(cfg)
    unlabeled = f"_u{cfg.unlabeled_samples}" if cfg.unlabeled_samples else ""
    return f"{cfg.dataset}_{student_name(cfg)}_b{cfg.batch_size}_{cfg.precision}_{cfg.method}{unlabeled}_s{cfg.seed}"
