"""The sweep's figures, torch-free: they read only the files under out_dir (summary.json, history.json,
evaluation.json, deploy.json). style: looks and saving; data: reading runs; runs: training figures;
deploy: deployment trade-offs."""
