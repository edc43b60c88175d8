"""The frozen teacher: loaded from its run (or a weights file), pinned in eval mode, and its outputs for
each training batch (distill.base.TeacherOut, what a method's forward_train takes).

`teacher_logits=cache` computes the teacher's logits once per training image and fixed view
(identity, plus the horizontal flip when augment=flip) and reuses them in every epoch and every
student of a sweep (stored beside the teacher's weights, keyed by a hash of weights and images).
With random crops, erasing or mixup every view is new, so those fall back to online (a teacher
forward per batch, on the very batch the student sees).
Fixed teacher targets can overfit on very long schedules (Beyer et al. 2022, "Knowledge
distillation: A good teacher is patient and consistent"): use online there.

`teacher_precision=bf16` runs the teacher's forward under bf16 autocast (cached and online alike):
2.5x faster at 150 px on a CPU with AMX; on the demo teacher its T=4 soft targets moved by at most
0.007 and 99.9% of its argmax predictions stayed the same. The student trains in `precision` either way.
"""
import hashlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from config import arch_name, config_from_dict, config_to_dict, student_name, teacher_run_name
from data.dataset import NATIVE_SIZE, Split, stratified_subset
from distill.base import TeacherOut
from models.features import capture
from models.teacher_arch import build_model
from runtime.inference import evaluate_logits, predict
from runtime.run_dir import SAME_MODEL, run_weights_file
from utils.atomic import atomic_write_bytes, read_json, read_json_object
from utils.checkpoint import load_weights_into
from utils.errors import ENVIRONMENT_ERRNOS, UserError, first_line
from utils.precision import autocast_context
from utils.precision_table import PRECISIONS
from utils.run_files import (BEST_WEIGHTS, CONFIG, LOGITS_CACHE, SUMMARY, TEACHER_RUN_NAME, check_digest,
                             read_summary)

# the teacher measured again on the student's validation images when they are its own hold-out: at most this
# many of them (a fixed stratified subset; 512 at 28 px take the released resnet20 0.7-0.8 s of CPU time, ~0.4 s
# on 2 free cores), refused when it scores this many points (and 3 images) below what its summary records there.
# Weights that load but are not the run's score near chance; the same weights differ by a few flipped images on
# another CPU's kernels, and a 512-image subset of a 50% teacher's hold-out by about 1.7 points (one sd).
VAL_CHECK_IMAGES = 512
VAL_DROP = 10.0


def teacher_members(cfg) -> list:
    """The run dirs or weights files --teacher_checkpoint names: one, or several separated by commas (an
    ensemble: the students learn from the mean of their logits). An empty member is one line: it would
    otherwise stand for the default teacher in out_dir."""
    if "," not in cfg.teacher_checkpoint:
        return [cfg.teacher_checkpoint]
    members = [s.strip() for s in cfg.teacher_checkpoint.split(",")]
    if not all(members):
        raise UserError(f"--teacher_checkpoint={cfg.teacher_checkpoint}: an empty member in the comma-separated "
                        f"list of teachers")
    return members


def resolve_teacher_path(cfg) -> tuple:
    """(weights file, run dir or None) for cfg.teacher_checkpoint ('' = out_dir/<dataset's teacher run>); for an
    ensemble, its members' weights and run dirs, each joined by commas (each checked as one teacher is)."""
    members = teacher_members(cfg)
    if len(members) > 1:
        found = [resolve_teacher_path(replace(cfg, teacher_checkpoint=m)) for m in members]
        return ",".join(w for w, _ in found), ",".join(r or w for w, r in found)
    spec = cfg.teacher_checkpoint or os.path.join(cfg.out_dir, teacher_run_name(cfg))
    if os.path.isdir(spec):
        refuse_student_run(spec, spec, cfg)
        refuse_failed_run(spec, spec)
        weights = run_weights_file(spec)
        if weights:
            return weights, spec
        raise UserError(f"{spec}: teacher run has no {BEST_WEIGHTS}; train it first "
                        f"(python train.py --role=teacher --dataset={cfg.dataset})")
    if os.path.isfile(spec):
        refuse_student_run(os.path.dirname(os.path.abspath(spec)), spec, cfg)
        refuse_failed_run(os.path.dirname(os.path.abspath(spec)), spec)
        return spec, None
    raise UserError(f"{spec}: no teacher run or weights file; train one first "
                    f"(python train.py --role=teacher --dataset={cfg.dataset} --out_dir={cfg.out_dir}) "
                    f"or pass --teacher_checkpoint=<run dir or weights file>")


def check_born_again(saved: dict, cfg, spec) -> None:
    """--generation=K's teacher: a finished fp32-weights student run of the same model, of generation K - 1."""
    now = config_to_dict(cfg)  # as config.json holds it (tuples as lists)
    differ = [f"{k} {saved.get(k)!r} (this run: {getattr(cfg, k)!r})" for k in SAME_MODEL if saved.get(k) != now[k]]
    if differ:
        raise UserError(f"--generation={cfg.generation}: --teacher_checkpoint={spec} is another model "
                        f"({'; '.join(differ)}); a born-again student learns from its own model")
    if saved.get("generation", 0) != cfg.generation - 1 or saved.get("qat", "none") != "none":
        raise UserError(f"--generation={cfg.generation}: --teacher_checkpoint={spec} is generation "
                        f"{saved.get('generation', 0)}{', a QAT run' if saved.get('qat', 'none') != 'none' else ''}; "
                        f"generation {cfg.generation} learns from generation {cfg.generation - 1}")


def refuse_student_run(run_dir, spec, cfg=None) -> None:
    """A student run (or its weights) given as the teacher: say so, and where its teacher is; unless the student
    learning from it is a born-again generation of that model (check_born_again)."""
    saved = read_json_object(os.path.join(run_dir, CONFIG))
    born_again = cfg is not None and getattr(cfg, "generation", 0)
    if saved is None or saved.get("role") != "student":
        if born_again:
            raise UserError(f"--generation={cfg.generation}: --teacher_checkpoint={spec} is not a student run; a "
                            f"born-again student learns from generation {cfg.generation - 1} of its own model")
        return
    if born_again:
        check_born_again(saved, cfg, spec)
        return
    summary = read_summary(run_dir) or {}
    teacher = summary.get("teacher_run") or saved.get("teacher_checkpoint") or os.path.join(
        saved.get("out_dir", os.path.dirname(run_dir)),
        TEACHER_RUN_NAME.format(dataset=saved.get("dataset"), arch=arch_name(str(saved.get("teacher_arch"))), seed=""))
    student = arch_name(saved["student_arch"]) if saved.get("student_arch") else f"res{saved.get('blocks')}"
    raise UserError(f"--teacher_checkpoint={spec}: this is a student run ({student}, "
                    f"{saved.get('method')}); the teacher is {teacher} (a student of the same model learns from it "
                    f"as a born-again generation: --generation)")


def refuse_failed_run(run_dir, spec) -> None:
    """A teacher run whose summary.json says it failed (or its weights): one line with its error."""
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") == "failed":
        raise UserError(f"teacher {spec}: its {SUMMARY} says the run failed "
                        f"({first_line(summary.get('error') or 'no error recorded', 120)}); train the teacher "
                        f"again or pass another --teacher_checkpoint")


def check_on_hold_out(teacher, cfg, run_dir, saved, weights, data) -> None:
    """The teacher's accuracy measured again on the student's validation images, when they are the teacher's
    own hold-out (same dataset, data source and val_fraction) and its summary records its accuracy there
    for these weights (best_model.safetensors, selected on val): one line when it is far below
    (VAL_DROP). Catches weights that load but are not the run's where no digest does (runs finished before
    digests were recorded, a record edited with them)."""
    summary = read_summary(run_dir) or {}
    recorded, val = summary.get("best_val_acc"), data.val
    if (val is None or recorded is None or os.path.basename(weights) != BEST_WEIGHTS
            or val.labels.dim() > 1  # a segmentation's masks: its digest alone checks it
            or (saved.dataset, saved.val_fraction) != (cfg.dataset, cfg.val_fraction)
            or (summary.get("data_source"), summary.get("val_images")) != (data.source, len(val))):
        return  # other images, or no number recorded for these weights: nothing to compare with
    idx = stratified_subset(val.labels, min(len(val), VAL_CHECK_IMAGES), 0)
    sub = Split(val.images[idx], val.labels[idx]).to(next(teacher.parameters()).device)
    acc = evaluate_logits(predict(teacher, sub, data.mean, data.std, cfg.eval_batch_size, cfg.channels_last),
                          sub.labels)[1]
    if recorded - acc > max(VAL_DROP, 300 / len(sub)):
        raise UserError(f"teacher {run_dir}: {acc:.2f}% on {len(sub)} validation images of its own hold-out now, "
                        f"{recorded:.2f}% in its {SUMMARY}: {weights} is not the weights that run selected; "
                        f"restore them or train the teacher again")


def _trained_shape(run_dir, saved) -> tuple:
    """(image size, channels or None, classes or None) a teacher run was trained at."""
    s = read_summary(run_dir) or {}
    size = s.get("image_size") or saved.image_size or NATIVE_SIZE.get(saved.dataset)
    return size, s.get("in_channels"), s.get("num_classes")


def check_teacher_shape(run_dir, saved, image_size, in_channels: int, num_classes: int) -> None:
    """The teacher must have been trained on inputs like the student's: one line naming both otherwise."""
    t_size, t_ch, t_cls = _trained_shape(run_dir, saved)
    mine = (image_size, in_channels, num_classes)
    if any(t is not None and m is not None and t != m for t, m in zip((t_size, t_ch, t_cls), mine)):
        show = lambda sz, ch, k: f"{sz} px, {'?' if ch is None else ch} channel(s), {'?' if k is None else k} classes"
        raise UserError(f"teacher {run_dir} was trained at {show(t_size, t_ch, t_cls)} ({saved.dataset}); this "
                        f"student trains at {show(*mine)}: pass --image_size={t_size} (or the teacher's dataset), "
                        f"or train a teacher for this data")


class TeacherEnsemble(torch.nn.Module):
    """Several frozen teachers as one: the mean of their logits (multi-teacher KD's plain average). Cached
    logits cost one forward per member and image, once."""

    def __init__(self, members: list):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).float() for m in self.members]).mean(0)


def load_teacher_ensemble(cfg, in_channels: int, num_classes: int, device, image_size, data) -> tuple:
    """--teacher_checkpoint=a,b,...: each member loaded and checked as a single teacher is; logit methods only."""
    from config_rules import FEATURE_METHODS

    members = teacher_members(cfg)
    if cfg.method in FEATURE_METHODS:
        raise UserError(f"--method={cfg.method} matches one teacher's feature maps; an ensemble "
                        f"(--teacher_checkpoint={cfg.teacher_checkpoint}) serves the logit methods")
    weights = [os.path.realpath(resolve_teacher_path(replace(cfg, teacher_checkpoint=m))[0]) for m in members]
    if len(set(weights)) < len(weights):
        raise UserError(f"--teacher_checkpoint={cfg.teacher_checkpoint}: a member is named twice (the same "
                        f"weights file)")
    loaded = [load_frozen_teacher(replace(cfg, teacher_checkpoint=m), in_channels, num_classes, device, image_size,
                                  data) for m in members]
    info = {"teacher_run": ",".join(i["teacher_run"] for _, i in loaded),
            "teacher_weights": ",".join(i["teacher_weights"] for _, i in loaded),
            "teacher_arch": "+".join(i["teacher_arch"] for _, i in loaded), "teacher_acc": None}  # measured by the caller
    return TeacherEnsemble([t for t, _ in loaded]).eval(), info


def load_frozen_teacher(cfg, in_channels: int, num_classes: int, device, image_size: int = None,
                        data=None) -> tuple:
    """(teacher in eval mode with requires_grad False, info dict: run, weights, arch, accuracy).
    A teacher run trained at another image size, channel or class count than `image_size`, `in_channels`,
    `num_classes` stops with one line naming both; so do weights that differ from the sha256 their run's
    summary records, a failed run, and (given the student's Dataset `data`) a teacher far below the
    accuracy it recorded on its validation hold-out when that is the student's too (check_on_hold_out)."""
    if len(teacher_members(cfg)) > 1:
        return load_teacher_ensemble(cfg, in_channels, num_classes, device, image_size, data)
    weights, run_dir = resolve_teacher_path(cfg)
    check_digest(weights, read_summary(run_dir or os.path.dirname(os.path.abspath(weights))))
    tcfg = replace(cfg, role="teacher", teacher_pretrained=False, unlabeled_samples=0, qat="none", init_from="",
                   generation=0)
    info = {"teacher_run": run_dir or weights, "teacher_weights": weights, "teacher_arch": cfg.teacher_arch,
            "teacher_acc": None}
    if run_dir:
        path = os.path.join(run_dir, CONFIG)
        saved = config_from_dict(read_json(path), path)
        tcfg = replace(tcfg, teacher_arch=saved.teacher_arch, teacher_width=saved.teacher_width)
        info["teacher_arch"] = saved.teacher_arch
        if saved.role == "student":  # a born-again generation's teacher: the generation before, its own model
            tcfg, info["teacher_arch"] = saved, f"{student_name(saved)} generation {saved.generation}"
        check_teacher_shape(run_dir, saved, image_size, in_channels, num_classes)
        info["teacher_acc"] = (read_summary(run_dir) or {}).get("best_test_acc")
    teacher = build_model(tcfg, in_channels, num_classes)
    load_weights_into(teacher, weights,
                      f"a {info['teacher_arch']} teacher for {in_channels} channels and {num_classes} classes")
    teacher.to(device)
    if cfg.channels_last:
        teacher.to(memory_format=torch.channels_last)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if run_dir and data is not None:
        check_on_hold_out(teacher, cfg, run_dir, saved, weights, data)
    return teacher, info


def teacher_autocast(cfg, device):
    """The context factory for the teacher's forward: autocast in --teacher_precision's dtype (bf16), or a no-op
    (fp32)."""
    return autocast_context(cfg.teacher_precision, torch.device(device).type)


def teacher_autocasts(cfg) -> bool:
    return PRECISIONS[cfg.teacher_precision].dtype is not None


def teacher_precision_label(cfg) -> str:
    return f"; teacher forward in {cfg.teacher_precision} (autocast)" if teacher_autocasts(cfg) else ""


def _fingerprint(weights: str, host_images, shape: tuple, view: str) -> str:
    """Of the teacher's weights file (an ensemble's: each member's, in order), the images, view and precision."""
    h = hashlib.blake2b(digest_size=12)
    for w in weights.split(","):
        st = os.stat(w)
        h.update(f"{os.path.abspath(w)}|{st.st_size}|{st.st_mtime_ns}|".encode())
    h.update(f"{view}|{shape}".encode())
    h.update(host_images)  # the array's buffer itself: no copy of the (up to ~1 GB) train set
    return h.hexdigest()


def _checksum(logits: torch.Tensor) -> str:
    return hashlib.blake2b(logits.numpy().tobytes(), digest_size=16).hexdigest()


def read_logits_cache(path: Path, key: str, rows: int, classes: int = 0):
    """The cached logits at `path` when the file proves it is the one asked for: its metadata names the
    fingerprint `key` (teacher weights, images, view, precision) and a checksum its contents match, and
    the tensor is finite float32 [rows, classes] (any class count for 0). Else None, after one line
    saying why it is rebuilt."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            logits = f.get_tensor("logits").clone() if "logits" in f.keys() else None  # (a copy, not a map of the file)
    except Exception as e:  # torn, foreign or pickle bytes: safetensors refuses them without running anything
        why = f"not a readable safetensors file ({first_line(str(e), 80) or type(e).__name__})"
    else:
        why = ("it holds no 'logits' tensor" if logits is None
               else "made for another teacher, image set or view" if meta.get("fingerprint") != key
               else f"{tuple(logits.shape)} {logits.dtype} logits, not [{rows}, {classes or 'classes'}] float32"
               if logits.dim() != 2 or logits.shape[0] != rows or (classes and logits.shape[1] != classes)
               or logits.dtype != torch.float32
               else "non-finite values" if not torch.isfinite(logits).all()
               else "its contents do not match its checksum" if meta.get("checksum") != _checksum(logits)
               else None)
        if why is None:
            return logits
    print(f"{path}: {why}; rebuilding", file=sys.stderr, flush=True)
    return None


def cached_teacher_logits(cfg, teacher, info, data: Split, mean, std, views=("identity",),
                          num_classes: int = 0) -> dict:
    """{view: teacher logits for every image of `data`} for each view (identity|flip), from disk when a
    cache file proves it is the right one (read_logits_cache), else computed and cached. The images are
    copied to the host (on a GPU) once for all the views' cache keys."""
    from safetensors.torch import save

    autocast = teacher_autocast(cfg, data.images.device)
    host = data.images.detach().to("cpu").contiguous().numpy()
    # beside the teacher's weights; under the student's out_dir when the teacher's folder is read-only
    homes = [Path(info["teacher_weights"].split(",")[0]).parent / LOGITS_CACHE, Path(cfg.out_dir) / LOGITS_CACHE]
    out = {}
    for view in views:
        key = _fingerprint(info["teacher_weights"], host, tuple(data.images.shape),
                           view + (f"|{cfg.teacher_precision}" if teacher_autocasts(cfg) else ""))
        found = [home / f"{key}.safetensors" for home in homes if (home / f"{key}.safetensors").is_file()]
        logits = read_logits_cache(found[0], key, len(data), num_classes) if found else None
        if logits is not None:
            out[view] = logits.to(data.images.device)
            continue
        images = data.images.flip(3) if view == "flip" else data.images
        out[view] = predict(teacher, Split(images, data.labels), mean, std, cfg.eval_batch_size,
                            cfg.channels_last, autocast=autocast)
        host_logits = out[view].to("cpu", torch.float32).contiguous()
        homes = _save_logits(homes, f"{key}.safetensors", save({"logits": host_logits},
                                                               metadata={"fingerprint": key,
                                                                         "checksum": _checksum(host_logits)}))
    return out


def _save_logits(homes: list, name: str, payload: bytes) -> list:
    """Write the cache file into the first home that takes it, with one warning when it falls back;
    returns the homes still worth trying (none: the logits stay in memory for this run)."""
    for i, home in enumerate(homes):
        try:
            atomic_write_bytes(home / name, payload)
            return homes[i:]
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            then = f"caching under {homes[i + 1]} instead" if i + 1 < len(homes) else \
                "the logits stay in memory for this run only"
            print(f"warning: cannot write the teacher-logit cache in {home} ({e.strerror}); {then}",
                  file=sys.stderr, flush=True)
    return []


class TeacherSource:
    """The frozen teacher's outputs for each training batch: cached logits looked up by image and view
    (teacher_logits=cache, when the sampler's views are fixed: augment none|flip, no erasing, no mixup),
    or an online forward on exactly the batch the students see. Methods that need feature maps
    (`layers`) always run online, with forward hooks."""

    def __init__(self, cfg, teacher, info, sampler, layers=()):
        self.teacher, self.layers, self.augment = teacher, tuple(layers), sampler.augment
        self.autocast = teacher_autocast(cfg, sampler.data.images.device)
        self.views = None
        if cfg.teacher_logits == "cache" and sampler.fixed_views and not self.layers and not sampler.dense:
            self.views = cached_teacher_logits(cfg, teacher, info, sampler.data, sampler.mean, sampler.std,
                                               ("identity", "flip") if sampler.augment == "flip" else ("identity",),
                                               sampler.num_classes)
            self.how = f"cached once per image and view ({', '.join(self.views)}){teacher_precision_label(cfg)}"
        else:
            why = (" (feature maps are read on the fly)" if self.layers
                   else "" if cfg.teacher_logits == "online"
                   else " (a segmentation's logit maps, C floats a pixel, are too big to cache)" if sampler.dense
                   else " (crops, erasing or mixup make every view new)")
            self.how = f"online, teacher forward on every batch{why}{teacher_precision_label(cfg)}"

    @torch.no_grad()
    def __call__(self, batch) -> TeacherOut:
        if self.views is not None:
            if self.augment == "none":
                return TeacherOut(self.views["identity"][batch.idx])
            return TeacherOut(torch.where(batch.flips[:, None], self.views["flip"][batch.idx],
                                          self.views["identity"][batch.idx]))
        with self.autocast(), capture(self.teacher, self.layers) as maps:
            logits = self.teacher(batch.x).float()
        return TeacherOut(logits, {k: v.float() for k, v in maps.items()} if self.layers else None)
