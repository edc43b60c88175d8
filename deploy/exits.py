"""evaluate.py --exit on a multi-exit (byot) run: one exit alone (its accuracy, the parameters it uses, its
batch-1 latency), or --exit=auto, where each image is answered at the first exit whose top softmax
probability reaches --exit_threshold (the accuracy, the share of images answered at each exit, and the mean
batch-1 latency of that early-exit forward, timed image by image). Results go to the run's exits.json, one
entry per mode asked, beside evaluation.json."""
import os
import statistics
import time

import torch

from data.transforms import prepare_batch
from runtime.inference import evaluate_logits, predict
from utils.atomic import atomic_write_json, read_json_object
from utils.errors import UserError
from utils.names import EARLY_EXIT
from utils.run_files import EXITS_JSON

TIMED_IMAGES = 500  # test images timed one by one for --exit=auto's mean latency (and per exit: its median)
WARMUP_CALLS = 10


class ExitView(torch.nn.Module):
    """The model as far as exit k: its logits (for predict); k None: every exit's, [N, exits, classes], in one
    forward."""

    def __init__(self, model, k=None):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        return torch.stack(self.model.exits(x)[0], 1) if self.k is None else self.model.exit_logits(x, self.k)


def exit_of(cfg, model, run_dir) -> object:
    """The exit --exit asks for: an int from 1, or "auto"; one line when the run has no such exit."""
    if not hasattr(model, "exit_logits"):
        raise UserError(f"--exit={cfg.exit}: {run_dir} is a single-exit student ({cfg.method}); exits are a byot "
                        f"run's (--method=byot)")
    if cfg.exit == EARLY_EXIT:
        return EARLY_EXIT
    k = int(cfg.exit)
    if k > model.num_exits:
        raise UserError(f"--exit={k}: this res{cfg.blocks} has exits 1..{model.num_exits}")
    return k


@torch.inference_mode()
def batch1_seconds(fn, images: list) -> list:
    """Seconds of fn(x) per image of `images` (each already a normalized batch of 1), after a warm-up."""
    for x in images[:WARMUP_CALLS]:
        fn(x)
    out = []
    for x in images:
        t0 = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t0)
    return out


def evaluate_exits(cfg, model, ds, run_dir, device) -> dict:
    """Measure what --exit asks (exit_of) on the test split; print it and record it in exits.json."""
    asked = exit_of(cfg, model, run_dir)
    model = model.to(device).eval()
    test = ds.test.to(device)
    ones = [prepare_batch(test.images[i:i + 1], ds.mean, ds.std, cfg.channels_last)
            for i in range(min(TIMED_IMAGES, len(test)))]
    every = asked == EARLY_EXIT  # every exit's logits from one pass over the test split, else exit k's alone
    logits_of = predict(ExitView(model, None if every else asked), test, ds.mean, ds.std, cfg.eval_batch_size,
                        cfg.channels_last)
    per_exit = {}
    for k in range(1, model.num_exits + 1) if every else (asked,):
        logits = logits_of[:, k - 1] if every else logits_of
        secs = batch1_seconds(lambda x, k=k: model.exit_logits(x, k), ones)
        per_exit[k] = {"accuracy": evaluate_logits(logits, test.labels)[1], "params": model.exit_params(k),
                       "latency_ms": 1e3 * statistics.median(secs), "logits": logits}
        print(f"exit {k} of {model.num_exits}: test accuracy {per_exit[k]['accuracy']:.2f}%, "
              f"{per_exit[k]['params']:,} params, {per_exit[k]['latency_ms']:.3f} ms at batch 1 (median)")
    entry = {str(k): {n: v for n, v in e.items() if n != "logits"} for k, e in per_exit.items()}
    if asked == EARLY_EXIT:
        entry = {"exits": entry, **auto_exit(model, per_exit, test.labels, ones, cfg.exit_threshold)}
        key = f"{EARLY_EXIT}@{cfg.exit_threshold:g}"
    else:
        entry, key = entry[str(asked)], str(asked)
    record = read_json_object(os.path.join(run_dir, EXITS_JSON)) or {}
    record.update({key: {**entry, "images": len(test), "timed_images": len(ones)}})
    atomic_write_json(os.path.join(run_dir, EXITS_JSON), record)
    return record[key]


def auto_exit(model, per_exit: dict, labels, ones: list, threshold: float) -> dict:
    """The early-exit answer of every test image (from the exits' logits: the first confident exit), and the
    mean batch-1 latency of model.early_exit timed on the first images."""
    n = len(labels)
    answer = torch.full((n,), model.num_exits, dtype=torch.long, device=labels.device)
    chosen = per_exit[model.num_exits]["logits"].argmax(1)
    for k in sorted(per_exit, reverse=True)[1:]:  # shallower exits override deeper ones where confident
        conf, pred = per_exit[k]["logits"].softmax(1).max(1)
        sure = conf >= threshold
        answer = torch.where(sure, torch.full_like(answer, k), answer)
        chosen = torch.where(sure, pred, chosen)
    acc = 100.0 * (chosen == labels).float().mean().item()
    secs = batch1_seconds(lambda x: model.early_exit(x, threshold), ones)
    share = {str(k): 100.0 * (answer == k).float().mean().item() for k in per_exit}
    print(f"--exit=auto at confidence {threshold:g}: test accuracy {acc:.2f}% (the deepest exit alone "
          f"{per_exit[model.num_exits]['accuracy']:.2f}%), answered at exits "
          + ", ".join(f"{k}: {s:.1f}%" for k, s in share.items())
          + f"; mean latency {1e3 * statistics.mean(secs):.3f} ms at batch 1 (the deepest exit: "
          f"{per_exit[model.num_exits]['latency_ms']:.3f} ms)")
    return {"threshold": threshold, "accuracy": acc, "share_per_exit": share,
            "mean_latency_ms": 1e3 * statistics.mean(secs)}
