"""Deployable variants of a trained run (fp32, compiled, bf16/fp16, int8, fp8 weights, bitsandbytes
heads, ONNX), each measured on the same test set in one process: accuracy, agreement with fp32,
bytes on disk, batch-1 latency and batch-64 throughput. Entry points: deploy.variants.deploy_run and
deploy.variants.deploy_run_dir; results go to <run>/deploy.json, <run>/deploy.md, <run>/deploy/.
"""
