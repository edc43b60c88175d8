"""One training run's life: its model, method, optimizer and precision built from its config (resumed
from checkpoint.pt when asked), each epoch recorded (history.json, best weights, checkpoint.pt), and
the end summarized (model.safetensors, summary.json, training_summary.txt). train.py builds these and
steps them, alone or several students together, through runtime/epochs.py. The record files' keys and
schema are utils/run_files.py's."""
import os
import sys
import time
from contextlib import contextmanager, nullcontext

import torch

from config import Config, config_to_dict, default_run_name
from distill import build_distiller
from runtime import cuda_graphs, torchrun
from runtime.epochs import EarlyStopping, RngStream, Trainee, build_optimizer, build_scheduler
from runtime.inference import calibration_bins, ece_of, evaluate_logits, predict, segment_scores
from runtime.run_dir import (check_resumable, is_complete, model_arch, model_blocks, model_label, remove_derived,
                             resume_history, run_dir_of, run_weights_file)
from models.cnn_model import count_params
from models.teacher_arch import build_model
from utils.atomic import atomic_write_json, remove_stale_temps
from utils.checkpoint import load_weights_into, save_weights
from utils.device import MIN_STRIDED_1X1_CHANNELS_LAST, channels_last_trainable, hardware_name
from utils.errors import UserError
from utils.names import SEGMENT
from utils.precision import setup_precision
from utils.provenance import provenance
from utils.reports import write_training_summary
from utils.run_files import (BEST_WEIGHTS, CHECKPOINT, CONFIG, DIGEST_KEY, DIGESTED_FILES, FINAL_WEIGHTS,
                             GENERATION, STAGE_SECONDS, STAGES, SUBSTITUTED_FOR, TRAINING_SUMMARY, complete_summary, file_digests, load_checkpoint,
                             save_checkpoint, write_history, write_summary)
from utils.tensorboard import EpochLog

LOSS_BLOWUP = 100.0  # a training loss this many times its first batch's: warn that the lr is too high


class TrainingRun(Trainee):
    """One run, one object: its model, method (self.distiller, which holds the model), optimizer,
    schedule, precision and random stream (what the engine steps: a Trainee), and its files. Built from
    its config (resumed from checkpoint.pt when asked), stepped by the engine, recorded after every
    epoch, summarized at the end."""

    def __init__(self, cfg: Config, ds, device, teacher, teacher_info: dict, world=torchrun.World(), on_epoch=None):
        self.cfg, self.ds, self.device, self.world = cfg, ds, device, world
        self.name = default_run_name(cfg)
        self.dir = run_dir_of(cfg)
        self.ckpt_path = os.path.join(self.dir, CHECKPOINT)
        torch.manual_seed(cfg.seed)  # model init, then this run's own stream for dropout
        self.model = build_model(cfg, ds.in_channels, ds.num_classes)
        if cfg.qat != "none":  # the fp32 student it starts from (--init_from), on the weight grid of --qat
            from quant.students import qat_student
            self.model = qat_student(cfg, self.model, ds.in_channels, run_weights_file(cfg.init_from)
                                     if cfg.init_from else None)
        self.params = count_params(self.model)
        self.model.to(device)
        self.channels_last = cfg.channels_last and (device.type != "cpu" or channels_last_trainable(self.model))
        if self.channels_last != cfg.channels_last:
            print(f"{self.name}: training in NCHW, not channels_last: a strided 1x1 convolution with fewer than "
                  f"{MIN_STRIDED_1X1_CHANNELS_LAST} input channels crashes oneDNN's channels_last backward on CPUs")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        prec = setup_precision(cfg.precision, self.model, device)
        if cfg.precision_note:
            prec.description += f" ({cfg.precision_note})"
        prec.record[SUBSTITUTED_FOR] = cfg.substituted_for or None  # the sweep's bf16 in place of fp16, as a field
        distiller = build_distiller(cfg, self.model, teacher, ds.image_shape)
        self.teacher_info = dict(teacher_info) if distiller.uses_teacher else {}
        if distiller.per_image and world.size > 1:
            raise UserError(f"--method={cfg.method} keeps a state per training image, which one process holds; "
                            f"run it with python, not torchrun")
        ddp = torchrun.data_parallel(distiller, device, cfg.sync_bn) if world.size > 1 else None
        steps = max(1, len(ds.train) // cfg.batch_size)
        capture, self.step_how = cuda_graphs.plan(cfg, device, cfg.precision, world.size)
        optimizer = build_optimizer(cfg, distiller.learnable_parameters(),
                                    **(cuda_graphs.optimizer_kwargs(cfg, device) if capture else {}))
        if world.rank:  # its own dropout stream (rank 0 keeps the single-process run's)
            torch.manual_seed(cfg.seed + torchrun.RANK_SEED_STRIDE * world.rank)
        super().__init__(distiller, optimizer, build_scheduler(cfg, optimizer, steps), prec,
                         rng=RngStream(device), forward=ddp)
        if capture:
            cuda_graphs.capture(self)
        elif cfg.compile:
            self.model.compile()
        if cfg.cuda_graphs:
            print(f"{self.name}: {self.step_how}")
        self.stopper, self.history, self.start_epoch, self.elapsed = EarlyStopping(cfg.patience), [], 0, 0.0
        self.saved_at = time.monotonic()  # the last checkpoint.pt written (--checkpoint_seconds)
        self.generator_state = None  # the shared batch generator's state after the last finished epoch
        self.failure = None  # the error that ended this run early, when it trained in a group
        self.warnings = []  # what summary.json's "warnings" will say (e.g. a loss that blew up)
        self.calibration = None  # the selected epoch's test calibration_bins, set by test_selected_and_last
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)  # where the time beside the training steps went
        self.tb = None  # the TensorBoard event stream, opened by begin()
        self.on_epoch = on_epoch  # called with (self, row) after each recorded epoch (train.train_runs)
        # what selects the epoch: accuracy, or a segmentation's mIoU (its acc: pixel accuracy)
        self.dense = cfg.task == SEGMENT
        self.metric = "miou" if self.dense else "acc"
        self.segment = {}  # a segmentation's test scores, {"best": ..., "last": ...}: test_selected_and_last's
        if cfg.resume and os.path.isfile(self.ckpt_path):
            self._resume()

    def _resume(self) -> None:
        check_resumable(self.cfg, self.dir)
        ck = load_checkpoint(self.ckpt_path)
        self.distiller.load_trainable_state(ck["trainable"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.prec.scaler is not None and ck.get("scaler"):
            self.prec.scaler.load_state_dict(ck["scaler"])
        ranks = ck["rng"].get("ranks") or [ck["rng"]]  # every rank's stream, when it ran under torchrun
        if self.world.rank < len(ranks):  # a rank the interrupted run did not have keeps a fresh stream
            self.rng.load_state(ranks[self.world.rank])
        self.generator_state = ck["rng"]["generator"]
        self.stopper = EarlyStopping(self.cfg.patience, **ck["early_stopping"])
        self.history, self.start_epoch, self.elapsed = ck["history"], ck["epoch"] + 1, ck["elapsed_seconds"]
        self.stage_seconds.update(ck.get(STAGE_SECONDS) or {})  # (older checkpoints lack it)
        if self.world.main:  # a torn history.json is never kept: the checkpoint's is the record
            resume_history(self.dir, self.history)
        print(f"{self.name}: resuming after epoch {self.start_epoch} of {self.cfg.epochs}")

    def begin(self, source, n_train: int, n_test: int) -> None:
        if self.world.main:
            os.makedirs(self.dir, exist_ok=True)
            stale = remove_stale_temps(self.dir)  # this process holds the run's lock: no write of another is live
            if stale:
                print(f"{self.name}: removed {len(stale)} temp file(s) of an interrupted write ({', '.join(stale[:3])})")
            atomic_write_json(os.path.join(self.dir, CONFIG), config_to_dict(self.cfg))
            if self.cfg.tensorboard:
                self.tb = EpochLog(self.dir, self.start_epoch)
        if source is not None and self.distiller.uses_teacher:
            self.teacher_info["teacher_logits"] = source.how
        t = self.teacher_info
        print(f"{self.name}: {model_label(self.cfg)}, {self.params:,} params, {self.prec.description}, "
              f"{n_train} train / {n_test} test images from {self.ds.source}"
              + (f", teacher {t['teacher_arch']} at {t['teacher_acc']:.2f}%"
                 + (f" pixel accuracy, {t['teacher_miou']:.2f}% mIoU" if t.get("teacher_miou") is not None else "")
                 + f", logits {t['teacher_logits']}" if t else ""))
        if self.world.main and not self.cfg.resume:
            if is_complete(self.dir):
                print(f"{self.name}: replacing the finished run (--overwrite=True)")
            elif os.path.isfile(self.ckpt_path):
                print(f"{self.name}: starting over; the interrupted run's {CHECKPOINT} is replaced "
                      f"(--resume=True would continue it)")
            # summary.json marks a complete run: a fresh start is not one yet; reports of the old weights go too
            remove_derived(self.dir)

    @property
    def first_judged_epoch(self) -> int:
        """The first epoch (0-based) evaluated on the selection split: --select_from skips the early ones,
        which are never the best of a full schedule; the last epoch always is evaluated."""
        return min(int(self.cfg.select_from * self.cfg.epochs), self.cfg.epochs - 1)

    def active(self, epoch: int) -> bool:
        return (self.start_epoch <= epoch < self.cfg.epochs and not self.stopper.should_stop
                and self.failure is None)

    def logits(self, split, model=None):
        return predict(self.model if model is None else model, split, self.ds.mean, self.ds.std,
                       self.cfg.eval_batch_size, self.channels_last, self.prec.autocast)

    def evaluate(self, split, model=None) -> tuple:
        """(loss, accuracy) of this run's model, or of `model` (e.g. one rebuilt from its files), on `split`."""
        return evaluate_logits(self.logits(split, model), split.labels)

    def scores(self, split) -> dict:
        """{"loss", "acc"} of this run's model on `split`; a segmentation's also "miou" (and "iou" per class)."""
        if self.dense:
            return segment_scores(self.model, split, self.ds.mean, self.ds.std, self.cfg.eval_batch_size,
                                  self.channels_last, self.ds.num_classes, self.prec.autocast)
        return dict(zip(("loss", "acc"), self.evaluate(split)))

    @contextmanager
    def timed(self, stage: str):
        """Adds the block's wall time to stage_seconds[stage] (val, test or files: summary.json's stage_seconds)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] += time.perf_counter() - t0

    @contextmanager
    def selected_weights(self):
        """The selected epoch's weights (best_model.safetensors) in the model for the block; the last epoch's after."""
        final = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        load_weights_into(self.model, os.path.join(self.dir, BEST_WEIGHTS))
        try:
            yield self.model
        finally:
            self.model.load_state_dict(final)

    def end_epoch(self, epoch: int, stats, lr: float, images: int, val, test, generator) -> None:
        """Record the epoch: history.json, the best weights so far, checkpoint.pt. With a validation split
        the epoch is judged on it alone; the test split is evaluated at the end (finish), not here."""
        cfg, main = self.cfg, self.world.main
        torchrun.sync_buffers(self.model)  # every rank evaluates, and stops early on, rank 0's model
        row = {"epoch": epoch + 1, "train_loss": stats.loss, "train_acc": stats.acc, "lr": lr,
               "epoch_seconds": stats.seconds, "images_per_second": images / stats.seconds}
        row.update({f"train_{k}": v for k, v in stats.terms.items() if len(stats.terms) > 1})
        judge = "val" if val is not None else "test"
        judged = epoch >= self.first_judged_epoch
        if judged:  # every rank judges by rank 0's numbers, so all stop, and pick the best epoch, together
            with self.timed(judge):
                scores = torchrun.gather(self.scores(val if val is not None else test))[0]
            row.update({f"{judge}_{k}": v for k, v in scores.items() if k != "iou"})
        reference = min([stats.first_loss] + [h["train_loss"] for h in self.history])
        if not self.warnings and stats.loss > LOSS_BLOWUP * reference > 0:
            self.warnings.append(f"the training loss grew from {reference:.3g} to {stats.loss:.3g} by epoch "
                                 f"{epoch + 1} (x{stats.loss / reference:.0e}); --lr={cfg.lr:g} is probably too high")
            print(f"warning: {self.name}: {self.warnings[-1]}", file=sys.stderr, flush=True)
        self.history.append(row)
        self.elapsed += stats.seconds
        if self.tb is not None:
            self.tb.epoch(row)
        if judged and self.stopper.update(row[f"{judge}_{self.metric}"], epoch) and main:
            with self.timed("files"):
                save_weights(self.model, os.path.join(self.dir, BEST_WEIGHTS), {"epoch": epoch + 1})
        judged_text = (f"{row[f'{judge}_{self.metric}']:.2f}%" + (" mIoU" if self.dense else "") if judged
                       else f"from epoch {self.first_judged_epoch + 1}")
        print(f"{self.name} epoch {epoch + 1}/{cfg.epochs}  loss {stats.loss:.4f}  train {stats.acc:.2f}%  "
              f"{judge} {judged_text}  lr {lr:.2e}  {stats.seconds:.1f}s  "
              f"({row['images_per_second']:.0f} img/s)", flush=True)
        rngs = torchrun.gather(self.rng.state())
        if not main:
            return
        last = epoch + 1 >= cfg.epochs or self.stopper.should_stop
        if last or time.monotonic() - self.saved_at >= cfg.checkpoint_seconds:  # a resume replays the epochs since
            with self.timed("files"):
                self._save(epoch, generator, rngs)
            self.saved_at = time.monotonic()
        if self.on_epoch is not None:
            self.on_epoch(self, row)
        if self.stopper.should_stop and epoch + 1 < cfg.epochs:
            print(f"{self.name}: early stopping, no better {judge} {'mIoU' if self.dense else 'accuracy'} for "
                  f"{cfg.patience} epochs")

    def _save(self, epoch: int, generator, rngs: list) -> None:
        """history.json and checkpoint.pt after `epoch`."""
        write_history(self.dir, self.history)
        save_checkpoint(self.ckpt_path, {
            "model": self.model.state_dict(), "trainable": self.distiller.trainable_state(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.prec.scaler.state_dict() if self.prec.scaler is not None else {},
            "epoch": epoch, "early_stopping": self.stopper.state(), "history": self.history,
            "rng": {**self.rng.state(), "generator": generator.get_state(), **({"ranks": rngs} if len(rngs) > 1 else {})},
            "elapsed_seconds": self.elapsed, STAGE_SECONDS: dict(self.stage_seconds)})

    def test_selected_and_last(self, test) -> None:
        """The test loss and accuracy of the selected epoch's weights (best_model) and of the last epoch's,
        written into those two rows of history.json, and the selected one's calibration error (test_ece: the
        summary's; restore_history rebuilds that row from it). Selected on test, the rows have the loss and
        accuracy already, and the selected one gains its calibration error (the same weights, the same numbers)."""
        best, last = self.history[self.stopper.best_epoch], self.history[-1]
        on_test = "test_acc" in best and "test_acc" in last  # TensorBoard has those points already
        if self.dense:  # scored batch by batch (segment_scores), no calibration
            self._test_segmentation(test, best, last, on_test)
            return
        if not on_test and best is not last:
            last["test_loss"], last["test_acc"] = self.evaluate(test)
        with self.selected_weights() if best is not last else nullcontext():
            logits = self.logits(test)
        best["test_loss"], best["test_acc"] = evaluate_logits(logits, test.labels)  # the loss: its NLL
        self.calibration = calibration_bins(logits, test.labels)  # the summary's, for a reliability diagram
        best["test_ece"] = ece_of(self.calibration)
        write_history(self.dir, self.history)
        if self.tb is not None and not on_test:
            for row in ((best,) if best is last else (best, last)):  # one point per step
                self.tb.scalars({"test_acc": row["test_acc"], "test_loss": row["test_loss"]}, row["epoch"])

    def _test_segmentation(self, test, best: dict, last: dict, on_test: bool) -> None:
        """test_selected_and_last for a segmentation: loss, pixel accuracy and mIoU of both epochs' weights into
        their history rows, the selected one's per-class IoU kept for the summary (self.segment)."""
        if best is not last:
            self.segment["last"] = self.scores(test)
        with self.selected_weights() if best is not last else nullcontext():
            self.segment["best"] = self.scores(test)
        self.segment.setdefault("last", self.segment["best"])
        for row, which in ((best, "best"), (last, "last")):
            row.update({f"test_{k}": v for k, v in self.segment[which].items() if k != "iou"})
        write_history(self.dir, self.history)
        if self.tb is not None and not on_test:
            for row in ((best,) if best is last else (best, last)):
                self.tb.scalars({"test_acc": row["test_acc"], "test_miou": row["test_miou"]}, row["epoch"])

    def export_quantized(self, test) -> dict:
        """A QAT run's deployable file, written from the selected epoch's weights, and the test accuracy of
        the model rebuilt from that file alone (quant/students.py): the summary's QAT fields."""
        from quant.students import export

        with self.selected_weights() as model:
            rebuilt, fields = export(model, self.cfg, self.dir, self.ds.in_channels, self.ds.num_classes)
        _, acc = self.evaluate(test, rebuilt)
        print(f"{self.name}: {fields['deploy_file']} {fields['file_bytes']:,} bytes ({fields['bits_per_weight']:.2f} "
              f"bits a weight), test accuracy {acc:.2f}% rebuilt from it")
        return {**fields, "init_from": self.cfg.init_from, "qat_test_acc": acc}

    def finish(self, test, n_train: int, n_val: int) -> dict:
        cfg, ds, history = self.cfg, self.ds, self.history
        if not history:
            raise UserError(f"{self.dir}: nothing to train (epochs={cfg.epochs} already done)")
        if not self.world.main:  # rank 0 alone tests, writes and reports the run
            return {"run_name": self.name, "rank": self.world.rank}
        with self.timed("test"):
            self.test_selected_and_last(test)
            qat = self.export_quantized(test) if cfg.qat != "none" else {}
        n_test = len(test)
        with self.timed("files"):
            model_bytes = save_weights(self.model, os.path.join(self.dir, FINAL_WEIGHTS),
                                       {"epoch": history[-1]["epoch"]})
        best = history[self.stopper.best_epoch]
        secs = sorted(r["epoch_seconds"] for r in history)
        summary = complete_summary({
            "status": "complete", "run_name": self.name, "role": cfg.role, "dataset": cfg.dataset,
            "model": model_label(cfg), "arch": model_arch(cfg), "blocks": model_blocks(cfg),
            "fc_layers": list(getattr(self.model, "fc_layers", ()) or []), "params": self.params,
            "model_bytes": model_bytes, "image_size": ds.image_size, "in_channels": ds.in_channels,
            "num_classes": ds.num_classes, "classes": list(ds.classes), "train_images": n_train - ds.unlabeled,
            "unlabeled_images": ds.unlabeled,
            "val_images": n_val, "test_images": n_test, "data_source": ds.source, "precision": cfg.precision,
            "precision_description": self.prec.description, **self.prec.record, "device": str(self.device),
            "hardware": hardware_name(self.device), "threads": torch.get_num_threads(), "method": self.distiller.name,
            "hparams": self.distiller.hparams(),
            **({GENERATION: cfg.generation} if cfg.generation else {}), "seed": cfg.seed, "batch_size": cfg.batch_size, "lr": cfg.lr,
            # batch_size and lr are the global batch's: a torchrun run splits it, the single-process run does not
            "effective_batch_size": cfg.batch_size, "world_size": self.world.size,
            "batch_per_rank": cfg.batch_size // self.world.size, "data_parallel": self.world.describe(cfg.sync_bn),
            "optimizer": cfg.optimizer, "schedule": cfg.schedule, "epochs": cfg.epochs, "steps": self.step_how,
            "epochs_run": len(history), "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
            "best_val_acc": best.get("val_acc"), "selected_on": "val" if n_val else "test",
            "selected_from_epoch": self.first_judged_epoch + 1,
            "final_test_acc": history[-1]["test_acc"], "test_nll": best["test_loss"], "test_ece": best.get("test_ece"),
            **({"task": cfg.task, "test_miou": best["test_miou"], "test_iou": self.segment["best"]["iou"],
                "best_val_miou": best.get("val_miou"), "final_test_miou": history[-1]["test_miou"]}
               if self.dense else {}),
            "test_calibration_bins": self.calibration,
            "early_stopped": history[-1]["epoch"] < cfg.epochs,
            "stopped_at_epoch": history[-1]["epoch"], "train_seconds": self.elapsed,
            STAGE_SECONDS: {"train": self.elapsed, **self.stage_seconds},
            "seconds_per_epoch": secs[len(secs) // 2],
            "images_per_second": n_train * len(history) / self.elapsed if self.elapsed > 0 else None,
            "teacher_logits": None, **self.teacher_info, **qat, "warnings": self.warnings, "provenance": provenance(),
            # every weights and deployable file is written by now: whoever loads one checks it against this
            DIGEST_KEY: file_digests(self.dir, DIGESTED_FILES),
        })
        if self.tb is not None:
            self.tb.close()
        write_training_summary(os.path.join(self.dir, TRAINING_SUMMARY), summary)
        write_summary(self.dir, summary)
        score = (f"test mIoU {best['test_miou']:.2f}% (pixel accuracy {best['test_acc']:.2f}%)" if self.dense
                 else f"test accuracy {best['test_acc']:.2f}%")
        print(f"{self.name}: {score} at epoch {best['epoch']} (selected on "
              f"{summary['selected_on']}), {self.elapsed:.1f}s training -> {self.dir}")
        return summary
