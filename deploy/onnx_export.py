"""ONNX variants: torch.onnx export (dynamic batch) run by onnxruntime, and its static QDQ int8 form."""
import os
import tempfile

import torch

from deploy.common import BuildContext, Variant, skipped
from quant.pt2e import dynamic_batch
from utils.atomic import atomic_copy_file
from utils.device import cpu_flags

ORT_MISSING = "onnxruntime is not installed (pip install onnxruntime onnx onnxscript)"


def ort_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # the same threads torch uses, for a fair ratio
    # ORT's workers spin-wait after each run by default, stealing the cores from whatever is timed
    # next (the interleaved rounds made fp32 eager look 2-4x slower); measured here without spinning.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {name: x.contiguous().numpy()})[0])

    return run


def export_onnx(ctx: BuildContext) -> str:
    """The fp32 model as ONNX with a dynamic batch dimension (written once, shared by both variants)."""
    if "onnx" in ctx.artifacts:
        return ctx.artifacts["onnx"]
    model = ctx.fresh_model()
    program = torch.onnx.export(model, (ctx.example,), dynamo=True, optimize=True, verbose=False,
                                input_names=["images"], output_names=["logits"],
                                dynamic_shapes=dynamic_batch())
    path = ctx.path("onnx.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        program.save(os.path.join(tmp, "m.onnx"))  # one file: these models are far below 2 GB
        atomic_copy_file(os.path.join(tmp, "m.onnx"), path)
    ctx.artifacts["onnx"] = path
    return path


def build_onnx(ctx: BuildContext) -> Variant:
    if not ort_available():
        return skipped("onnx", ORT_MISSING)
    import onnxruntime as ort

    path = export_onnx(ctx)
    note = f"torch.onnx.export (dynamo, dynamic batch) fp32; onnxruntime {ort.__version__} CPUExecutionProvider"
    return Variant("onnx", _session(path), path, note)


class _CalibReader:
    """onnxruntime.quantization.CalibrationDataReader over the calibration batches."""

    def __init__(self, input_name: str, batches: list):
        self.input_name, self.batches, self.i = input_name, batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.input_name: self.batches[self.i - 1].contiguous().numpy()}

    def rewind(self):
        self.i = 0


def build_onnx_int8(ctx: BuildContext) -> Variant:
    if not ort_available():
        return skipped("onnx-int8", ORT_MISSING)
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's u8s8 kernels on x86 without VNNI add int8 products in int16 pairs, which saturate:
    # on a 2-core AMD EPYC (AVX2, no VNNI) agreement with fp32 fell to 69%. 7-bit weights avoid it.
    reduce_range = not any(f in cpu_flags() for f in ("avx512_vnni", "avx_vnni"))
    reader_cls = type("CalibReader", (_CalibReader, CalibrationDataReader), {})
    src = export_onnx(ctx)
    path = ctx.path("onnx-int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        pre, out = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "q.onnx")
        quant_pre_process(src, pre)  # shape inference + graph optimization (folds BN into conv)
        quantize_static(pre, out, reader_cls("images", ctx.calib), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=reduce_range)
        atomic_copy_file(out, path)
    note = (f"onnxruntime {ort.__version__} quantize_static QDQ (per-channel int8 weights"
            f"{' in 7 bits (no VNNI)' if reduce_range else ''}, uint8 activations, "
            f"MinMax on {ctx.calib_images} training images); CPUExecutionProvider")
    return Variant("onnx-int8", _session(path), path, note)
