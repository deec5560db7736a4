"""Ablation table of a sweep: `make ablation-table [SWEEP=multirun/<task>/<date_time>]`, or

    python analysis/ablation_table.py [--sweep DIR] [--metrics eval/pubmedqa/accuracy,...]
                                      [--baseline "lora.rank=32,reward=recipe"]
                                      [--wandb-group GROUP --wandb-project P --wandb-entity E]

prints a Markdown table and writes ablation.md, ablation.csv, ablation_jobs.csv and PNG plots into
<sweep>/ablation/, with selection.json: the --metrics/--baseline reused when run again without them.
This file is only the command line: the logic is in src/medgrpo/analysis/ (report.py chains jobs.py ->
table.py (+ stats.py) -> render.py / plots.py, and study.py for Optuna sweeps).
"""
import sys

from medgrpo.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
