"""The reports: read run files, never train (torch-free). results.py: results.csv and results.md's table;
qat.py: the quantized students' table and plot; scale.py: the data-scaling table (scale.md, scale.csv);
hparams.py: the sweep's TensorBoard hparams table; plots/: the figures plot_experiment_results.py draws.
The sweep writes its report through here (sweep/report.py); evaluate.py draws its confusion matrix here."""
