"""TensorBoard event files beside a run's own files (`tensorboard --logdir <out_dir>`).

Each run writes <run dir>/tb/: one scalar per number of its history.json row, per epoch (step = epoch,
from 1), under grouped tags (loss/train, accuracy/val, loss_terms/kd, lr, images_per_second), and the
test accuracy of its selected and last epochs at the end. A resumed run reopens the stream with
purge_step at its first new epoch: whatever the interrupted process logged after its last checkpoint is
dropped by TensorBoard's readers, so no step appears twice. The sweep's <out_dir>/tb_hparams/ (the HPARAMS
tab) is report/hparams.py's. history.json stays the record the plots read.
"""
import os
import shutil
import sys
import tempfile

from utils.run_files import TB_DIR


def tag(key: str) -> str:
    """history.json key -> TensorBoard tag: val_acc -> accuracy/val, train_kd -> loss_terms/kd."""
    split, _, rest = key.partition("_")
    if split in ("train", "val", "test") and rest in ("acc", "loss"):
        return f"{'accuracy' if rest == 'acc' else 'loss'}/{split}"
    if split == "train" and rest:
        return f"loss_terms/{rest}"
    return key


def writer_class():
    """torch's SummaryWriter, or None (with one warning line) where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in requirements.txt; a hand-made environment may lack it
        print("warning: tensorboard is not installed; no event files (pip install -r requirements.txt)",
              file=sys.stderr)
        return None
    return SummaryWriter


def _writable(log_dir: str) -> bool:
    """Whether event files can be written in `log_dir` (made if needed); else one warning line and False:
    TensorBoard is optional, so a tb/ that is a file or read-only turns it off for the run (its writer thread
    would print a traceback at every write) and the run goes on."""
    try:
        os.makedirs(log_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=log_dir).close()
        return True
    except OSError as e:
        why = "a file, not a folder" if os.path.exists(log_dir) and not os.path.isdir(log_dir) else e.strerror or e
        print(f"warning: {log_dir}: cannot write TensorBoard events there ({why}); TensorBoard is off for this run",
              file=sys.stderr)
        return False


class EpochLog:
    """One run's event stream in <run dir>/tb, opened at `first_epoch` (0-based; > 0 when resumed)."""

    def __init__(self, run_dir: str, first_epoch: int = 0):
        log_dir = os.path.join(run_dir, TB_DIR)
        if not first_epoch:  # a fresh start: the old run's events would interleave with the new ones
            shutil.rmtree(log_dir, ignore_errors=True)
        writer = writer_class() if _writable(log_dir) else None
        self.writer = writer(log_dir, purge_step=first_epoch + 1 if first_epoch else None) if writer else None

    def epoch(self, row: dict) -> None:
        self.scalars(row, row["epoch"])

    def scalars(self, values: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
