"""Every knob of the project in one frozen dataclass, each field declared once (default, type, scope, check, group,
doc; which fields are a method's: the method table, utils/names.py): cli.py makes validation, --help, groups and
docs/config.md from it and parses `--field=value` (re-exported). A run gets its own `Config` (`make_config`)."""
from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass
from typing import Optional

import cli
import config_rules
from cli import (DEVICE, EPOCHS, EPOCHS_OR_0, MAX_EPOCHS, NON_NEGATIVE, PLAIN_NAME, POSITIVE, UNIT_INTERVAL,
                 each_of, must, non_negative_ints, one_of, positive_ints)
from cli import (arch_name, config_to_dict, default_run_name, method_hparams, student_name,  # noqa: F401 (re-exported)
                 run_dir_of, teacher_run_name)
from presets import CPU_PROTOCOL, PRESETS, RECIPES, RELEASED_TEACHER  # noqa: F401 (re-exported)
from utils.names import DEFAULT_METHOD, METHOD_DOC, METHOD_TABLE, QAT_MODES, hparam_methods
from utils.precision_table import AUTO, BF16, CHOICES, FP16_ON_CPU, FP32, PRECISION_DOC, TEACHER_CHOICES
from utils.precision_table import SWEEP_DEFAULT, TRAINED as PRECISIONS  # the precision table: its names and order

METHODS = tuple(m.name for m in METHOD_TABLE)  # the method table (utils/names.py); distill.DISTILLERS: their classes
from config_rules import MAX_SEED, NO_TEACHER_METHODS  # noqa: E402,F401 (re-exported)
from config_values import (BETA_PER_DEPTH, CIFAR_RESNETS, DATASETS, DEPLOY_VARIANTS, EXIT, SCENE_CANVAS,  # noqa: E402,F401
                           SEED, SEG_PATTERN, STUDENT_ARCH, TASKS, TEACHER_ARCH, TEACHER_ARCHS, TIMM_PATTERN, TIMM_PREFIX,
                           TORCHVISION_TEACHERS, WRN_PATTERN)
SCOPES = {  # what changing a field changes; a method's hyper-parameters also name their methods (summaries record them)
    "train": "what a run learns: a resumed run must match its interrupted self in every one of them",
    "run": "where and how a run executes (paths, device, threads, memory layout), not what it learns",
    "eval": "evaluate.py and the test metric", "deploy": "the deployment variants", "sweep": "run_experiments.py"}
_train, _run, _eval, _deploy, _sweep = (cli.knob(s) for s in SCOPES)
# a train field a recipe (--recipe=NAME or @file) may set: how a run learns, never its data, model, seed or folders
_learn = cli.knob("train", recipe=True)


@dataclass(frozen=True)
class Config:
    dataset: str = _train("fashion-mnist", one_of(*DATASETS), group=True, section="data", doc="which dataset; "
        "fashion-mnist is real data that ships with Debian")
    task: str = _train("classify", one_of(*TASKS), group=True, doc="classify: a class per image | segment: a class "
        "per pixel (outputs [N, C, H, W], a per-pixel loss, mIoU), on masks (fashion-mnist-scenes, voc, segfolder)")
    scene_count: int = _train(12000, POSITIVE, group=True, doc="fashion-mnist-scenes: training scenes, val_fraction "
        "of them the hold-out (pasted from other training garments)")
    scene_test_count: int = _train(2000, POSITIVE, group=True, doc="fashion-mnist-scenes: test scenes (test garments)")
    scene_canvas: tuple = _train((64, 84), SCENE_CANVAS, group=True, doc="fashion-mnist-scenes: [height, width], px "
        "(M2NIST's 64 x 84)")
    scene_items: int = _train(3, must(lambda v: 1 <= v <= 8, "in 1..8"), group=True, doc="fashion-mnist-scenes: "
        "1 to this many garments a scene (uniform)")
    data_dir: str = _run("data", group=True, doc="where the dataset files live; decoded caches go to data_dir/cache")
    image_size: int = _train(0, NON_NEGATIVE, group=True, doc="px, square; 0 = the dataset's native size (28 "
        "Fashion-MNIST, 32 CIFAR, 150 Intel, 128 VOC, 64 image and segmentation folders)")
    max_train_samples: int = _train(0, must(lambda v: v == 0 or v >= 2, "0 (all) or at least 2 (BatchNorm needs two "
        "images a batch)"), group=True, doc="images; 0 = all. A class-stratified, seeded subset otherwise")
    max_test_samples: int = _eval(0, NON_NEGATIVE, group=True, doc="images; 0 = all")
    unlabeled_samples: int = _train(0, NON_NEGATIVE, group=True, doc="a transfer set: further train images (outside "
        "the labeled subset, val and test; seeded) whose labels the student never sees, only the teacher's outputs on "
        "them; needs max_train_samples and a method with a teacher; 0 = none")
    val_fraction: float = _train(0.0, must(lambda v: 0 <= v < 1, "in [0, 1)"), group=True, doc="share of the whole "
        "train split held out (fixed, seed-independent) to select the epoch; 0 = select on test (the original)")
    augment: str = _learn("crop+flip", one_of("none", "flip", "crop+flip"), group=True, doc="batch augmentation on "
        "tensors: none | flip | crop+flip (4 px zero padding)")
    random_erasing: float = _learn(0.0, UNIT_INTERVAL, group=True, doc="probability of erasing a random rectangle per "
        "image (Zhong et al. 2020 use 0.5)")
    mixup: float = _learn(0.0, NON_NEGATIVE, doc="mixup Beta(a, a) of a batch and its shuffle (Zhang et al. 2018)")
    num_workers: int = _run(0, NON_NEGATIVE, doc="processes decoding JPEGs when a cache is built; 0 = in-process")
    role: str = _train("student", one_of("teacher", "student"), section="model", doc="which model train.py trains")
    blocks: int = _train(4, must(lambda v: 1 <= v <= 64, "in 1..64"), doc="residual blocks in the student; every 2nd "
        "doubles channels with stride 2")
    width: int = _train(16, must(lambda v: 1 <= v <= 4096, "in 1..4096"), doc="channels after the stem (originally 16)")
    fc_layers: Optional[tuple] = _train(None, positive_ints("[128]"), doc="hidden FC sizes of the student head; None = "
        "[final channels // 2]")
    student_arch: str = _train("", STUDENT_ARCH, doc="\"\" = the ResidualCNN of `blocks`; timm:<name> = any timm model "
        "(blocks, width, fc_layers unused)")
    student_weights: str = _train("", doc="a local .pth/.pt state dict or .safetensors a timm student starts from; "
        "\"\" = random init")
    teacher_arch: str = _train("seed12", TEACHER_ARCH, group=True, doc="seed12 (the original's 26.5M params) | "
        "resnet20..110 | wrn{depth}_{k} | resnet18 | resnet50 | efficientnet_b0 | timm:<name> (any timm model)")
    teacher_width: int = _train(16, POSITIVE, group=True, doc="stem channels of the seed12 teacher (less: smoke runs)")
    teacher_pretrained: bool = _train(False, doc="ImageNet weights for torchvision teachers (from the torch hub "
        "cache); timm teachers: teacher_weights")
    teacher_weights: str = _train("", doc="a local weights file for teacher_pretrained (a timm teacher: any state dict "
        "of it, .pth/.pt/.safetensors); \"\" = the hub cache")
    teacher_checkpoint: str = _train("", group=True, doc="run dir or weights file of the trained teacher; \"\" = "
        "out_dir/<dataset's teacher run>")
    method: str = _learn(DEFAULT_METHOD, one_of(*METHODS), section="distillation", doc=METHOD_DOC)
    generation: int = _train(0, NON_NEGATIVE, doc="born-again: this student's generation; its teacher_checkpoint is a "
        "student run of its own model, of generation - 1 (the CE control is 0); 0 = no chain")
    temperature: float = _learn(4.0, must(lambda v: v > 0, "> 0 (the softmax temperature T; 1-20 is usual)"),
        doc="softmax temperature T of kd and dkd (4: mdistiller's CIFAR value)")
    alpha: float = _learn(0.1, must(lambda v: 0 <= v <= 1, "in [0, 1] (kd: the weight of the cross-entropy term)"),
        doc="kd: weight of the cross-entropy term (mdistiller's CE_WEIGHT 0.1; the old default here was 0.5)")
    kd_weight: float = _learn(0.9, NON_NEGATIVE, doc="kd: weight of the T^2-scaled KL term (mdistiller's KD_WEIGHT)")
    kd_logit_std: bool = _learn(False, doc="kd: z-score both logits before the softmax (Sun et al. "
        "2024; their recipe: T=2, kd_weight=9)")
    dkd_alpha: float = _learn(1.0, NON_NEGATIVE, doc="dkd: weight of TCKD (Zhao et al. 2022 use 1.0); CE weighs 1.0")
    dkd_beta: float = _learn(8.0, NON_NEGATIVE, doc="dkd: weight of NCKD (Zhao et al. use 8.0 on CIFAR-100)")
    dkd_beta_per_depth: tuple = _learn((), BETA_PER_DEPTH, doc="dkd: [[blocks, beta], ...] "
        "overriding dkd_beta for those depths")
    dkd_warmup: float = _learn(20 / 240, UNIT_INTERVAL, doc="dkd: share of the run over which the "
        "DKD weight ramps up linearly (the paper: 20 of 240 epochs)")
    fitnet_weight: float = _learn(100.0, NON_NEGATIVE, doc="fitnet: hint MSE weight (mdistiller: 100); CE weighs 1")
    fitnet_stage: int = _learn(-1, must(lambda v: v >= -1, "-1 (the middle stage) or a stage index from 0"),
        doc="fitnet: which student stage gives the hint (0-based; -1 = the middle one)")
    at_weight: float = _learn(1000.0, NON_NEGATIVE, doc="at: attention-map loss weight (mdistiller: 1000); CE weighs 1")
    at_p: float = _learn(2.0, POSITIVE, doc="at: attention map = channel mean of |A|^p (Zagoruyko & Komodakis: p=2)")
    fm_temperature: float = _learn(1.0, POSITIVE, doc="fm: softmax temperature of its KL (Beyer et al. 2022: 1)")
    fm_mixup: float = _learn(1.0, NON_NEGATIVE, doc="fm: mixup Beta(a, a) of the view teacher and student share")
    tfkd_weight: float = _learn(0.1, UNIT_INTERVAL, doc="tfkd: virtual teacher's KL weight; CE: 1 - it (Yuan et al.)")
    tfkd_temperature: float = _learn(20.0, POSITIVE, doc="tfkd: the virtual teacher's temperature (Yuan et al.: 20-40)")
    tfkd_prob: float = _learn(0.99, must(lambda v: 0 < v < 1, "in (0, 1)"), doc="tfkd: its true-class value before T")
    byot_weight: float = _learn(0.3, UNIT_INTERVAL, doc="byot: a shallow exit's KL weight, CE: 1 - it (Zhang et al.)")
    byot_temperature: float = _learn(3.0, POSITIVE, doc="byot: the deepest exit's temperature (Zhang et al.: 3)")
    byot_feature_weight: float = _learn(0.03, NON_NEGATIVE, doc="byot: feature L2 weight to the deepest exit (0.03)")
    pskd_alpha: float = _learn(0.8, UNIT_INTERVAL, doc="pskd: own-prediction weight, last epoch (Kim et al.: 0.8)")
    cwd_weight: float = _learn(3.0, NON_NEGATIVE, doc="cwd: weight of the channel-wise KL (Shu et al. 2021: 3)")
    cwd_temperature: float = _learn(4.0, POSITIVE, doc="cwd: temperature of each channel's softmax over locations (4)")
    teacher_logits: str = _learn("cache", one_of("cache", "online"), group=True, doc="cache: teacher logits computed "
        "once per image/view and reused; online: every batch")
    teacher_precision: str = _learn(FP32, one_of(*TEACHER_CHOICES), group=True, doc="the frozen teacher's "
        "forward only (autocast; the student keeps `precision`); auto = bf16 where timed forwards show it faster")
    precision: str = _learn(FP32, one_of(*CHOICES), section="precision and optimisation", doc=PRECISION_DOC)
    optimizer: str = _learn("adam", one_of("adam", "adamw", "sgd", "adam8bit"), doc="adam | adamw | sgd | adam8bit "
        "(bitsandbytes 8-bit optimizer state)")
    lr: float = _learn(1e-3, must(lambda v: v > 0, "> 0"), doc="learning rate at batch_size (the original: Adam 1e-3)")
    momentum: float = _learn(0.9, must(lambda v: 0 <= v < 1, "in [0, 1)"), doc="sgd only")
    nesterov: bool = _learn(False, doc="sgd only: Nesterov momentum")
    weight_decay: float = _learn(0.0, NON_NEGATIVE, doc="L2 / decoupled decay; the original used none")
    schedule: str = _learn("cosine", one_of("cosine", "step", "none"), doc="cosine (to 0 over epochs) | step (x0.1 "
        "every lr_step_epochs) | none")
    lr_step_epochs: int = _learn(5, POSITIVE, doc="step schedule period, epochs")
    warmup_epochs: float = _learn(0.0, NON_NEGATIVE, doc="linear learning-rate warm-up from 0, epochs (fractions "
        "allowed), before the schedule")
    epochs: int = _learn(15, EPOCHS, doc="upper bound; early stopping may end sooner (the original: 15)")
    select_from: float = _train(0.0, must(lambda v: 0 <= v < 1, "in [0, 1) (the share of the epochs that are not "
        "evaluated; the last always is)"), doc="share of the epochs before the first evaluation of the selection "
        "split: the best epoch is picked from the rest (0 = every epoch)")
    qat: str = _train("none", one_of(*QAT_MODES), doc="quantization-aware training of a student's weights: int8 "
        "(torchao PT2E, activations too) | int4 | ternary | binary (Brevitas); first conv and last linear at 8 bits")
    init_from: str = _train("", doc="a QAT run's starting point: the run dir of a finished fp32 student of the same "
        "model and dataset; \"\" = random init")
    qat_epochs: int = _learn(0, EPOCHS_OR_0, doc="a QAT run's epochs (in place of epochs); 0 = epochs")
    qat_lr: float = _learn(0.0, NON_NEGATIVE, doc="a QAT run's learning rate (in place of lr); 0 = lr")
    patience: int = _learn(3, NON_NEGATIVE, doc="epochs with no better accuracy before stopping; 0 = never (orig.: 3)")
    batch_size: int = _learn(224, POSITIVE, group=True, doc="images per step (the original: 224)")
    eval_batch_size: int = _run(1024, POSITIVE, group=True, doc="images per evaluation forward (no activations kept); "
        "on a CPU capped to ~200k pixels")
    seed: int = _train(0, SEED, group=True, doc="seeds model init, data order, augmentation and the subset")
    device: str = _run(AUTO, DEVICE, group=True, doc="auto (cuda if present, else cpu) | cpu | cuda | cuda:N | mps")
    channels_last: bool = _run(True, doc="NHWC memory format: faster convolutions on CPU and tensor cores")
    compile: bool = _run(False, doc="torch.compile the training model (pays a compile time once per run)")
    cuda_graphs: bool = _run(False, doc="CUDA only: capture each training step as CUDA graphs (torch.compile "
        "reduce-overhead); eager elsewhere, with the reason")
    sync_bn: bool = _train(False, doc="under torchrun: BatchNorm statistics of the global batch (all-reduced), not "
        "each rank's shard")
    out_dir: str = _run("checkpoints", group=True, section="outputs", doc="every run writes out_dir/run_name/")
    run_name: str = _run("", PLAIN_NAME, doc="\"\" = derived, like the original's res4_b224_fp16 plus dataset, method, "
        "transfer set and seed; a plain folder name, never a path")
    resume: bool = _run(False, doc="continue out_dir/run_name/checkpoint.pt if present")
    checkpoint_seconds: float = _run(30.0, NON_NEGATIVE, doc="write checkpoint.pt and history.json after an epoch "
        "once this long since the last write, and at the end (a resume replays the rest alike); 0 = every epoch")
    tensorboard: bool = _run(True, doc="TensorBoard files in each run's tb/ (losses, accuracies, lr, images/s)")
    overwrite: bool = _run(False, doc="replace a finished run of the same run_name (else train.py exits 2)")
    run: str = _eval("", section="evaluate.py", doc="evaluate.py: the run directory to evaluate")
    split: str = _eval("test", one_of("test", "pred"), doc="evaluate.py: test (labelled metrics) | pred (Intel's "
        "unlabelled seg_pred -> predictions.csv)")
    exit: str = _eval("", EXIT, doc="evaluate.py on a byot run: K = exit K alone (1: the shallowest) | auto = the first"
        " exit whose confidence reaches exit_threshold; \"\" = the deepest")
    exit_threshold: float = _eval(0.9, UNIT_INTERVAL, doc="evaluate.py --exit=auto: the confidence to answer at")
    deploy: bool = _deploy(False, doc="evaluate.py / run_experiments.py: build and measure deployable variants")
    calib_samples: int = _deploy(512, POSITIVE, doc="training images used to calibrate int8 static quantization")
    deploy_variants: tuple = _deploy((), each_of(*DEPLOY_VARIANTS), doc="deploy variants to build and measure; () = "
        "all of DEPLOY_VARIANTS")
    deploy_repeats: int = _deploy(50, POSITIVE, doc="timed batch-1 calls per variant (the median; >= 50 to quote)")
    deploy_threads: int = _deploy(0, NON_NEGATIVE, doc="intra-op threads timing deploy variants; 0 = torch's default")
    sweep_blocks: tuple = _sweep((4, 6, 8, 10), positive_ints("[4,6]", bools=True),
        section="run_experiments.py", doc="student depths in the sweep")
    sweep_precisions: tuple = _sweep(SWEEP_DEFAULT, each_of(*CHOICES), doc="precisions of the distilled students")
    sweep_methods: tuple = _sweep((DEFAULT_METHOD,), each_of(*METHODS), doc="distillation methods; a ce control "
        "per depth is always added")
    seeds: int = _sweep(1, POSITIVE, doc="seeds first_seed..first_seed+seeds-1 per grid point")
    first_seed: int = _sweep(0, SEED, doc="the sweep's first seed (choose settings on seeds the reported table "
        "does not use, e.g. 100)")
    workers: int = _sweep(1, POSITIVE, doc="groups of students trained at once, each in its own process (1: in turn)")
    launcher: str = _sweep("local", one_of("local", "ray"), doc="local: this machine (--workers processes) | ray: Ray "
        "tasks on a local Ray or a cluster")
    ray_address: str = _sweep("", doc="an existing Ray cluster (host:port); \"\" = $RAY_ADDRESS if set, else a local "
        "Ray started for the sweep")
    gpus_per_run: float = _sweep(1.0, NON_NEGATIVE, doc="Ray: GPU share each run asks for (0.25 packs four on one "
        "GPU); a task asks runs x this, at most 1; 0 on a cluster without GPUs")
    cpus_per_task: int = _sweep(0, NON_NEGATIVE, doc="Ray: CPUs and torch threads of a student task; 0 = a local run's "
        "threads (at most the largest node's CPUs; the teacher's task: all of that node)")
    runs_per_task: int = _sweep(1, NON_NEGATIVE, doc="Ray: runs per task, trained together (one batch and teacher "
        "forward for all); 0 = a whole group of students")
    ray_shared_fs: Optional[bool] = _sweep(None, doc="Ray: do all nodes see out_dir? None = yes for a local Ray; "
        "False: tasks return their files, the driver writes them")
    transfer_epochs: int = _sweep(0, EPOCHS_OR_0, doc="the sweep's runs with a transfer set (unlabeled_samples): "
        "epochs, e.g. to match the control's images x epochs (the warm-up keeps its share of the run); 0 = epochs")
    teacher_epochs: int = _sweep(0, EPOCHS_OR_0, doc="the sweep's teacher run: epochs; 0 = the students' epochs")
    teacher_train_samples: int = _sweep(0, NON_NEGATIVE, doc="the sweep's teacher run: train images; 0 = same as "
        "max_train_samples")
    teacher_recipe: str = _sweep("", one_of(*RECIPES, blank_ok=True), doc="the sweep's teacher run: a named recipe "
        "(RECIPES) on top of the students' settings; \"\" = none")
    fp16_on_cpu: str = _sweep(BF16, one_of(*FP16_ON_CPU), doc="what the sweep runs for fp16 on a CPU: fp16 "
        "autocast there trains at ~10 img/s")
    sweep_qat: tuple = _sweep((), each_of(*QAT_MODES[1:]), doc="per depth and seed, a QAT-CE and a QAT-KD run at "
        "each grid, both from that seed's fp32 student of the first sweep method, and its PTQ contrast")
    sweep_train_samples: tuple = _sweep((), non_negative_ints("[500,2000,0]"), doc="labeled sizes as an axis: a sweep "
        "per size in <out_dir>/n<N> (0 = all)")
    sweep_train_epochs: tuple = _sweep((), positive_ints("[40]", most=MAX_EPOCHS), doc="epochs per size; () = epochs")
    sweep_generations: int = _sweep(0, NON_NEGATIVE, doc="born-again: per depth and seed, generations 1..N of the "
        "first sweep method, each taught by the one before (generation 0: the CE control)")
    scale_deep_upto: int = _sweep(0, NON_NEGATIVE, doc="sizes above it: first sweep depth only; 0 = no limit")
    precision_note: str = _sweep("", doc="set by the sweep when it substitutes a precision; shown in every summary")
    substituted_for: str = _sweep("", one_of(*PRECISIONS, blank_ok=True), doc="set by the sweep: what it stood in for")

    def __post_init__(self):
        cli.check_fields(self)  # each field's type, finiteness and declared check; lists become tuples
        if self.dkd_beta_per_depth:
            object.__setattr__(self, "dkd_beta_per_depth", tuple(tuple(p) for p in self.dkd_beta_per_depth))
        config_rules.check(self)  # the rules between fields (config_rules.py)

    @classmethod
    def group_fields(cls) -> tuple:
        """What students must share to be trained together on the same batches: the fields declared group=True."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["group"])


for _f in dataclasses.fields(Config):  # a method's hyper-parameters name their methods: the method table lists them
    _f.metadata = types.MappingProxyType({**_f.metadata, "methods": hparam_methods(_f.name)})


def make_config(argv: list = None, **fields) -> Config:
    """Defaults <- preset <- recipe <- argv <- **fields, then what a command line may not ask for: a flag that would
    be ignored (config_rules.check_command_line; the runtime's own copies of a Config may leave such fields)."""
    cfg = cli.make_config(Config, argv, **fields)
    config_rules.check_command_line(cfg)
    return cfg


parse_overrides = functools.partial(cli.parse_overrides, schema=Config)  # --field=value strings -> {field: value}
config_from_dict = functools.partial(cli.config_from_dict, Config)  # config.json -> Config (errors name the file)
fields_in_scope = functools.partial(cli.fields_in_scope, Config)  # names of these scopes' fields, declaration order
