"""Students smaller than fp32: quantization-aware training (QAT) and its post-training contrast (PTQ).

    python train.py --blocks=4 --method=kd --qat=ternary --init_from=checkpoints/<fp32 run> --qat_epochs=20

--qat names the weight grid a student trains on (fake-quantized forward, straight-through backward):

    int8     torchao PT2E QAT (X86InductorQuantizer): int8 per-channel weights AND int8 activations, the
             same graph and int8 kernels as the post-training int8 deploy variant (quant/pt2e.py)
    int4     Brevitas: 4-bit signed integers, a per-output-channel max-abs scale (quant/lowbit.py)
    ternary  Brevitas: {-1, 0, +1} x a per-output-channel scale (the channel's mean |w|)
    binary   Brevitas: {-1, +1} x the channel's mean |w| (XNOR-Net's scale)

Below int8 only weights are quantized; activations stay fp32. The first conv (it sees raw pixels) and the
last linear (the logits) keep 8-bit weights in every mode, as is usual (Rastegari et al. 2016, Zhou et
al. 2016). quant/packing.py stores the integers at their bit width (model.quant.safetensors).
"""

from utils.names import QAT_MODES  # noqa: F401 (one table of names)

LOWBIT_MODES = ("int4", "ternary", "binary")  # Brevitas layers, packed to model.quant.safetensors
WEIGHT_LEVELS = {"int8": 255, "int4": 15, "ternary": 3, "binary": 2}  # the values a weight can take (narrow range)
EDGE_BITS = 8  # the first conv's and the last linear's weights, in every mode
EDGE_NOTE = "first conv and last linear at 8 bits"
