"""The rules between a Config's fields, checked when one is built (before any data loads): each breach is
one line naming the flags. A single field's own check is declared with the field (config.py)."""
from utils.errors import UserError

NO_TEACHER_METHODS = ("ce",)  # methods that train without a teacher (distill.DISTILLERS' uses_teacher False)
FEATURE_METHODS = ("fitnet", "at")  # methods that match intermediate feature maps


def check(cfg) -> None:
    if cfg.role == "student" and cfg.method == "dkd" and cfg.mixup > 0:
        raise UserError("--method=dkd with --mixup: DKD's target/non-target split needs one true class per image")
    if cfg.unlabeled_samples:
        check_transfer_set(cfg)
    if cfg.student_weights and not cfg.student_arch:
        raise UserError(f"--student_weights={cfg.student_weights}: only a timm student "
                        f"(--student_arch=timm:<name>) starts from a weights file")
    check_qat(cfg)


def check_transfer_set(cfg) -> None:
    """Unlabeled images reach a student only through a teacher's outputs: a method without a teacher,
    a teacher run, or a batch mixup that would blend in their (absent) labels cannot take them."""
    flag = f"--unlabeled_samples={cfg.unlabeled_samples}"
    if cfg.role == "teacher":
        raise UserError(f"{flag}: a teacher trains on labeled images only; unlabeled images are for students")
    if cfg.method in NO_TEACHER_METHODS:
        raise UserError(f"{flag}: --method={cfg.method} has no teacher, and unlabeled images are seen only "
                        f"through the teacher's outputs; use kd, dkd, fm or pl (pseudo-labels)")
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
    if cfg.precision != "fp32":
        raise UserError(f"{flag} with --precision={cfg.precision}: fake quantization runs in fp32; pass "
                        f"--precision=fp32")
    if cfg.qat == "int8" and cfg.method in FEATURE_METHODS:
        raise UserError(f"{flag} with --method={cfg.method}: int8 QAT trains an exported graph, which has no "
                        f"intermediate feature maps to match; use kd, dkd, fm, pl or ce, or --qat=int4 and below")
