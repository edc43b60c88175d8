"""The rules between a Config's fields, checked when one is built (before any data loads): each breach is
one line naming the flags. A single field's own check is declared with the field (config.py)."""
import re

from utils.errors import UserError
from utils.names import CONTROL, METHODS, SEGMENT
from utils.precision_table import FP32
from utils.run_files import SIZE_FOLDER, SWEEP_FILES

# from the method table (utils/names.py): methods that train without a teacher, methods that match feature maps
NO_TEACHER_METHODS = tuple(name for name, m in METHODS.items() if not m.teacher)
FEATURE_METHODS = tuple(name for name, m in METHODS.items() if m.features)
LOGIT_METHODS = tuple(name for name in METHODS if name not in FEATURE_METHODS)  # the rest: logits alone
# labels are masks, a class per pixel: --task=segment's (data/scenes.py; VOC and a folder: data/seg_folders.py)
MASK_DATASETS = ("fashion-mnist-scenes", "voc", "segfolder")
SEG_PATTERN = re.compile(r"resseg(\d+)_(\d+)$")  # a segmenter of the student family as teacher (models/segment.py)
SEGMENT_METHODS = tuple(name for name, m in METHODS.items() if SEGMENT in m.tasks)
MAX_SEED = 2 ** 32 - 1  # numpy's RandomState (Optuna's samplers) takes 0..2**32-1; torch takes up to 2**64-1
# what the sweep writes in out_dir beside its run directories (utils/run_files.SWEEP_FILES; a data-scaling sweep's
# size folders: utils/run_files.SIZE_FOLDER): a run of such a name would be written over, or deleted with, the
# sweep's own files. Compared case-folded: macOS and Windows file systems fold case
OUT_DIR_NAMES = {name.lower(): what for name, (what, _) in SWEEP_FILES.items()}
STUDY_FILE = re.compile(r".*\.(db|db-journal|db-wal|db-shm|best\.json)$", re.IGNORECASE)  # tune.py's, in out_dir


def check_out_dir_name(flag: str, name: str) -> None:
    """A folder name in out_dir (--run_name, tune.py's --study) that is no file or folder the sweep or tune.py
    writes there; that it is a plain name, not a path, is the field's own check (cli.PLAIN_NAME)."""
    what = OUT_DIR_NAMES.get(name.lower()) or (SIZE_FOLDER.fullmatch(name.lower()) and "a data-scaling sweep's "
                                                                                            "folder of one size")
    if what:
        raise UserError(f"--{flag}={name}: out_dir/{name.lower()} is the sweep's own ({what}); pick another --{flag}")
    if STUDY_FILE.match(name):
        raise UserError(f"--{flag}={name}: names ending in .db or .best.json are tune.py's study files in "
                        f"out_dir; pick another --{flag}")


def either(names) -> str:
    """"a, b or c": methods named in a message."""
    names = list(names)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def check_method(cfg) -> None:
    """A student's method against the run: its own refusals (the method table's `refuses`), and a feature
    method's one teacher."""
    for name, why in METHODS[cfg.method].refuses.items():
        if getattr(cfg, name):
            raise UserError(f"--method={cfg.method} with --{name}: {why}")
    if cfg.method in FEATURE_METHODS and "," in cfg.teacher_checkpoint:
        raise UserError(f"--method={cfg.method} matches one teacher's feature maps; an ensemble "
                        f"(--teacher_checkpoint={cfg.teacher_checkpoint}) serves the logit methods")


def check(cfg) -> None:
    if cfg.run_name:
        check_out_dir_name("run_name", cfg.run_name)
    if cfg.first_seed + cfg.seeds - 1 > MAX_SEED:
        raise UserError(f"--first_seed={cfg.first_seed} --seeds={cfg.seeds}: the last seed, "
                        f"{cfg.first_seed + cfg.seeds - 1}, is past {MAX_SEED} (2**32 - 1: numpy's seed range)")
    check_task(cfg)
    if cfg.role == "student":
        check_method(cfg)
    if cfg.generation or cfg.sweep_generations:
        check_generations(cfg)
    if cfg.unlabeled_samples:
        check_transfer_set(cfg)
    if cfg.student_weights and not cfg.student_arch:
        raise UserError(f"--student_weights={cfg.student_weights}: only a timm student "
                        f"(--student_arch=timm:<name>) starts from a weights file")
    check_qat(cfg)


def check_task(cfg) -> None:
    """A task needs its kind of labels and models: --task=segment a dataset of masks, a method that serves dense
    outputs (the method table's `tasks`), a segmenter as teacher (resseg{blocks}_{width}); a classifier none of
    those. What a segmentation run cannot have yet is refused here, one line each."""
    seg, masks = cfg.task == SEGMENT, cfg.dataset in MASK_DATASETS
    if seg != masks:
        raise UserError(f"--dataset={cfg.dataset} with --task={cfg.task}: "
                        + (f"its labels are masks; pass --task={SEGMENT}" if masks else
                           f"its labels are one class per image; --task={SEGMENT} needs masks: "
                           f"--dataset={either(MASK_DATASETS)}"))
    uses_teacher = cfg.role == "teacher" or METHODS[cfg.method].teacher or cfg.generation
    if uses_teacher and seg != bool(SEG_PATTERN.match(cfg.teacher_arch)):
        raise UserError(f"--teacher_arch={cfg.teacher_arch} with --task={cfg.task}: " + (
            "a segmentation teacher is a resseg{blocks}_{width} (e.g. resseg6_24)" if seg else
            "resseg models label pixels; a classification teacher is any other --teacher_arch"))
    if not seg:
        return
    if cfg.role == "student" and cfg.method not in SEGMENT_METHODS:
        raise UserError(f"--method={cfg.method} with --task={SEGMENT}: it distills one class per image; "
                        f"use {either(SEGMENT_METHODS)}")
    if cfg.image_size and cfg.dataset == MASK_DATASETS[0]:
        raise UserError(f"--image_size={cfg.image_size} with --dataset={cfg.dataset}: a scene keeps its canvas "
                        f"(--scene_canvas)")
    for name, why in (("student_arch", "the students are the residual segmenters of --blocks"),
                      ("unlabeled_samples", "no transfer set for segmentation yet"),
                      ("mixup", "mixup blends one label per image"),
                      ("random_erasing", "an erased patch would keep its pixels' labels"),
                      ("generation", "no born-again segmenters yet"), ("sweep_generations", "no born-again "
                                                                                      "segmenters yet"),
                      ("sweep_train_samples", "the data-scaling table compares classifiers only so far")):
        if getattr(cfg, name):
            raise UserError(f"--{name}={getattr(cfg, name)} with --task={SEGMENT}: {why}")
    if cfg.qat != "none" or cfg.sweep_qat:
        raise UserError(f"--task={SEGMENT}: quantization-aware training is for classifiers only so far")


def check_generations(cfg) -> None:
    """A born-again student learns a logit method from one student run of its own model (config.py: generation,
    sweep_generations); that the run is one, of generation - 1, is read from its files (runtime/teacher.py)."""
    method = cfg.sweep_methods[0] if cfg.sweep_generations and cfg.sweep_methods else cfg.method
    flag = f"--generation={cfg.generation}" if cfg.generation else f"--sweep_generations={cfg.sweep_generations}"
    if cfg.role == "teacher" and cfg.generation:
        raise UserError(f"{flag}: born-again generations are students; a teacher run has none")
    if method not in LOGIT_METHODS or method in NO_TEACHER_METHODS:
        raise UserError(f"{flag} with --method={method}: a born-again generation learns the outputs of the one "
                        f"before; use {either(m for m in LOGIT_METHODS if m not in NO_TEACHER_METHODS)}")
    if cfg.generation and (not cfg.teacher_checkpoint or "," in cfg.teacher_checkpoint):
        raise UserError(f"{flag}: --teacher_checkpoint must name the one student run of generation "
                        f"{cfg.generation - 1} that teaches it (generation 0: the CE control)")


def check_transfer_set(cfg) -> None:
    """Unlabeled images reach a student only through a teacher's outputs: a method without a teacher,
    a teacher run, or a batch mixup that would blend in their (absent) labels cannot take them."""
    flag = f"--unlabeled_samples={cfg.unlabeled_samples}"
    if cfg.role == "teacher":
        raise UserError(f"{flag}: a teacher trains on labeled images only; unlabeled images are for students")
    if cfg.method in NO_TEACHER_METHODS:
        raise UserError(f"{flag}: --method={cfg.method} has no teacher, and unlabeled images are seen only "
                        f"through the teacher's outputs; use "
                        f"{either(m for m in LOGIT_METHODS if m not in NO_TEACHER_METHODS)}")
    if cfg.mixup > 0:
        raise UserError(f"{flag} with --mixup={cfg.mixup}: mixup blends labels, and unlabeled images have "
                        f"none (fm's own mixup, --fm_mixup, needs no labels)")
    if not cfg.max_train_samples:
        raise UserError(f"{flag}: needs --max_train_samples, the labeled images; the unlabeled ones are "
                        f"taken from the rest of the training split")


def check_qat(cfg) -> None:
    """--qat is for ResidualCNN students in fp32; int8's exported graph has no feature maps to match.
    Whether --init_from fits (same model and dataset) is read from its files: runtime.run_dir.check_init_from."""
    if cfg.qat == "none":
        if cfg.init_from:
            raise UserError(f"--init_from={cfg.init_from}: only a QAT run (--qat=int8|int4|ternary|binary) "
                            f"starts from another run")
        return
    flag = f"--qat={cfg.qat}"
    if cfg.role == "teacher":
        raise UserError(f"{flag}: quantization-aware training is for students; the teacher stays fp32")
    if cfg.student_arch:
        raise UserError(f"{flag}: quantizes the ResidualCNN students only, not {cfg.student_arch}")
    if METHODS[cfg.method].exits:
        raise UserError(f"{flag} with --method={cfg.method}: quantizes single-exit students only")
    if cfg.precision != FP32:
        raise UserError(f"{flag} with --precision={cfg.precision}: fake quantization runs in {FP32}; pass "
                        f"--precision={FP32}")
    if cfg.qat == "int8" and cfg.method in FEATURE_METHODS:
        raise UserError(f"{flag} with --method={cfg.method}: int8 QAT trains an exported graph, which has no "
                        f"intermediate feature maps to match; use {either(LOGIT_METHODS)}, "
                        f"or --qat=int4 and below")


def check_command_line(cfg) -> None:
    """What a command line (make_config) may not ask for, though a Config may hold it: a flag that would be
    silently ignored. Not in check(): the runtime's own copies (a QAT run's teacher with qat="none", the
    sweep's teacher and CE control without the transfer set) keep such fields, and old config.json files load."""
    if cfg.teacher_weights and not cfg.teacher_pretrained:
        raise UserError(f"--teacher_weights={cfg.teacher_weights}: read only with --teacher_pretrained=True (the "
                        f"weights a pretrained teacher starts from); pass both, or neither")
    qat = cfg.qat != "none" or cfg.sweep_qat  # the sweep's QAT runs take --qat_epochs and --qat_lr too
    for name, what in (("qat_epochs", "epochs"), ("qat_lr", "learning rate")):
        if getattr(cfg, name) and not qat:
            raise UserError(f"--{name}={getattr(cfg, name)}: a QAT run's {what}; pass --qat=int8|int4|ternary|binary "
                            f"(or the sweep's --sweep_qat), or leave it out")
    teacher_free = cfg.method in NO_TEACHER_METHODS and cfg.method != CONTROL
    if cfg.role == "student" and teacher_free and cfg.teacher_checkpoint:
        raise UserError(f"--method={cfg.method} learns without a teacher, so --teacher_checkpoint="
                        f"{cfg.teacher_checkpoint} would be ignored (a preset may set it); pass --teacher_checkpoint=\"\"")
    if cfg.transfer_epochs and not cfg.unlabeled_samples:
        raise UserError(f"--transfer_epochs={cfg.transfer_epochs}: the epochs of the sweep's runs with a transfer "
                        f"set; pass --unlabeled_samples (with --max_train_samples), or leave it out")
