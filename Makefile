# Measured times of each target: docs/config.md#presets (from presets.MEASURED, the one place they are stated)
# make demo : set-up, data, then the main job (the distillation sweep at demo size) on Fashion-MNIST
# make test : set-up, data, then the test suite
# make reduced : set-up, data, then the reduced experiment and its transfer-set rows
# make qat : set-up, data, the demo's students, then their PTQ, QAT-CE and QAT-KD students at int8/int4/ternary/binary
# make selfkd : set-up, data, the demo's students, then teacher-free tfkd, pskd, byot and born-again generations 1-2
# make scale : set-up, data, then distillation against labeled data: 500 to 58,800 images, res4 and res8, 3 seeds
# make teacher : set-up, data, then train the stronger released teacher again: two resnet32 members and their ensemble
# make teacher20 : the same for the demo's released resnet20 teacher
# make seg : set-up, data, then segmentation: res4 and res6 segmenters, CE control, pixel-wise KD and CWD, 3 seeds
# make seg-teacher : set-up, data, then train the released segmentation teacher (resseg6_24) again
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo qat selfkd reduced scale seg seg-teacher teacher teacher20 test clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-deploy.txt requirements-scale.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q -r requirements-deploy.txt || echo "warning: onnx/onnxruntime not installed; the onnx deploy variants will be skipped"
	$(BIN)/pip install -q -r requirements-scale.txt || echo "warning: ray not installed; --launcher=ray and its tests will be skipped"
	touch $@

# Fashion-MNIST: Debian's package where we are root with apt, else torchvision's download on first use.
data: setup
	@if ls $(FMNIST)/train-images-idx3-ubyte.gz >/dev/null 2>&1 || ls data/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then \
		echo "fashion-mnist: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
		echo "fashion-mnist: installed $(FMNIST) (Debian package dataset-fashion-mnist)"; \
	else \
		$(BIN)/python -c "from config import make_config; from data.dataset import load_dataset; load_dataset(make_config())"; \
	fi

demo: setup data
	$(BIN)/python run_experiments.py --preset=demo
	$(BIN)/python plot_experiment_results.py --preset=demo

# quantized students beside the demo's (same out_dir: its finished students are reused, not retrained)
qat: setup data
	$(BIN)/python run_experiments.py --preset=qat
	$(BIN)/python plot_experiment_results.py --preset=qat

# self-distillation beside the demo's students (same out_dir: its CE controls and KD students are reused)
selfkd: setup data
	$(BIN)/python run_experiments.py --preset=selfkd
	$(BIN)/python plot_experiment_results.py --preset=selfkd

# the demo's protocol on 5 more seeds and the whole test split, then the transfer-set rows (same out_dir)
reduced: setup data
	$(BIN)/python run_experiments.py --preset=reduced
	$(BIN)/python run_experiments.py --preset=transfer
	$(BIN)/python plot_experiment_results.py --preset=reduced

# the data-scaling experiment: the transfer set at 2,000 labels (into n2000/), then a sweep per labeled size in
# checkpoints/scale/n<N>/ (resumable; n2000's finished runs are reused), scale.md and plots/kd_gain_vs_data.png
scale: setup data
	$(BIN)/python run_experiments.py --preset=scale-transfer
	$(BIN)/python run_experiments.py --preset=scale
	$(BIN)/python plot_experiment_results.py --preset=scale

# segmentation of Fashion-MNIST scenes: students of the released resseg6_24 (teachers/), mIoU table and pictures
seg: setup data
	$(BIN)/python run_experiments.py --preset=seg
	$(BIN)/python plot_experiment_results.py --preset=seg

seg-teacher: setup data
	$(BIN)/python train.py --preset=seg-teacher --resume=True
	$(BIN)/python teachers/release.py --compare checkpoints/teachers/fashion-mnist-scenes_teacher_resseg6_24

# the released teacher (teachers/), remade from scratch under checkpoints/teachers/ (an interrupted one resumes),
# then measured and set beside the released one
teacher: setup data
	$(BIN)/python train.py --preset=teacher --resume=True
	$(BIN)/python teachers/release.py --compare checkpoints/teachers/fashion-mnist_teacher_resnet32
	$(BIN)/python train.py --preset=teacher --seed=1 --resume=True
	$(BIN)/python teachers/release.py --compare checkpoints/teachers/fashion-mnist_teacher_resnet32_s1
	$(BIN)/python teachers/release.py --ensemble checkpoints/teachers/fashion-mnist_teacher_resnet32,checkpoints/teachers/fashion-mnist_teacher_resnet32_s1

teacher20: setup data
	$(BIN)/python train.py --preset=teacher20 --resume=True
	$(BIN)/python teachers/release.py --compare checkpoints/teachers/fashion-mnist_teacher_resnet20

test: setup data
	$(BIN)/python -m pytest -q

clean:
	rm -rf checkpoints/smoke checkpoints/demo data/cache
