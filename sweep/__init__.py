"""run_experiments.py's sweep in parts, called in this order by its main:

    plan.py    the grid: one frozen config per run, in order (torch-free: planned and tested without training)
    launch.py  the runs: groups of students sharing batches, here, in --workers processes or as Ray tasks;
               failures recorded, locked runs left to their holder
    steps.py   around the runs: the QAT runs' PTQ contrasts, then --deploy and the best student's evaluation
    report.py  the sweep's report: results.csv / results.md (with the QAT table), TensorBoard hparams,
               scale.md / scale.csv, written through report/
"""
