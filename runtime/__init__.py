"""How a run lives, apart from what a method is (distill/): the epoch engine (epochs.py), a training run
from its config to its summary (training_run.py), run directories (run_dir.py; their files' format is
utils/run_files.py's), inference on a split (inference.py), the frozen teacher and its outputs per batch
(teacher.py), torchrun (torchrun.py), Ray (ray_sweep.py) and CUDA graphs (cuda_graphs.py).

Nothing is imported here: evaluate.py and deploy/ load run_dir and inference without the training loop."""
