"""Ablation tables of sweeps: one row per setting, seeds aggregated, failures shown, plots beside the table.

    python analysis/ablation_table.py [--sweep DIR] [--metrics ...] [--baseline "lora.rank=32,reward=recipe"]
    make ablation-table [SWEEP=<sweep dir>]           # default: the newest sweep under multirun/

The steps, each usable alone (the CLI in report.py chains them):
    jobs.py    one JobRow per job, from results.json files (load_sweep_rows) or a W&B group (load_wandb_rows);
               summarize_sweep (the sweep's jobs by status, killed included), which Hydra's SweepSummary logs
    table.py   group jobs by the overrides that vary (seed excluded) -> mean, 95% CI, n per setting, Δ to a baseline
    stats.py   the paired bootstrap of accuracy Δs (CI, p-value) from the jobs' predictions files
    render.py  the table as Markdown and CSV
    plots.py   PNGs: each metric per setting with error bars; Optuna history and parameter importances
    study.py   the Optuna study of a sweep (trial states incl. FAIL, params, values, importances)
    report.py  ablation.md / ablation.csv / ablation_jobs.csv / PNGs into <sweep>/ablation/, and main()

    from medgrpo.analysis.jobs import load_sweep_rows
    from medgrpo.analysis.table import aggregate, default_metrics
    from medgrpo.analysis.render import markdown_table
    rows = load_sweep_rows(sweep_dir)
    print(markdown_table(aggregate(rows, default_metrics(rows))))
"""
from medgrpo.errors import MedgrpoError


class AblationError(MedgrpoError):
    """Nothing to tabulate (no sweep, no results) or a bad option; the CLI prints it as one line, exit code 2."""
