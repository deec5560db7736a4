"""The ablation report of a sweep and its command line (analysis/ablation_table.py, `make ablation-table`).

main() prints the Markdown report and writes ablation.md, ablation.csv (one line per setting),
ablation_jobs.csv (one line per job) and the PNGs into <sweep>/ablation/. Exit code 2 with a one-line message
when there is nothing to tabulate (no such dir, no job dirs, no results.json) or an option is wrong.

The table's selection (--metrics, --baseline) is stored beside it in selection.json and reused when the
command runs again without those options, so that re-running gives the same table; `--metrics default` goes
back to the default selection. Plots that the previous ablation.md showed and this one does not are removed.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from medgrpo.analysis import AblationError
from medgrpo.analysis.difficulty import load_difficulty
from medgrpo.analysis.insight import insight_metrics, insight_sections, with_difficulty
from medgrpo.analysis.jobs import (
    JobRow,
    drop_repeats,
    find_newest_sweep,
    load_sweep_rows,
    load_wandb_rows,
    parse_overrides,
    split_override_dirname,
)
from medgrpo.analysis.plots import metric_filename, plot_metric, plot_optuna_history, plot_optuna_importances
from medgrpo.analysis.render import markdown_table, significance_note, write_csv, write_jobs_csv
from medgrpo.analysis.study import (
    StudySummary,
    is_optuna,
    load_study_rows,
    load_study_summary,
    read_sweeper_config,
    study_markdown,
)
from medgrpo.analysis.table import AblationTable, aggregate, default_metrics, majority_key

FOOTNOTE = ("Cells: mean [95% CI] over seeds; n = jobs with results. The CI is a Student t-interval over seeds, "
            "clipped to [0, 1] for rates; † a job's own eval-set interval (Wilson on the item-clustered sample size), "
            "used when there is one job only or the seeds gave identical values (no spread to measure). "
            "Majority = the accuracy of always giving the most common gold answer (PubMedQA: always 'yes'; none "
            "for numeric answers).")
SELECTION = "selection.json"
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def report_markdown(table: AblationTable, source: str, plots: list[str], study: str = "", insight: str = "") -> str:
    """The whole ablation.md: context, the table, footnotes, missing metrics, plots, the cost / difficulty /
    per-source / robustness sections, Optuna section."""
    fixed = ", ".join(f"{k}={v}" for k, v in table.fixed.items()) or "none"
    lines = [f"# Ablation: {source}", "",
             f"Swept: {', '.join(table.swept) or 'nothing but seeds'}. Fixed overrides: {fixed}.",
             f"Baseline for Δ: {table.baseline.label if table.baseline else 'none (no setting has results)'}.", "",
             markdown_table(table), "",
             FOOTNOTE]
    if significance_note(table):
        lines += ["", significance_note(table)]
    if table.absent_metrics:
        available = sorted({k for s in table.settings for j in s.jobs for k in j.metrics})
        lines.append(f"\nNo job reported {table.absent_metrics}; available metrics: {', '.join(available) or 'none'}.")
    if not table.metrics:
        lines.append("\nNo eval/<dataset>/accuracy in any result: choose metrics with --metrics.")
    lines += ["", *(f"![{name}]({name})" for name in plots)]
    if insight:
        lines += ["", insight]
    if study:
        lines += ["", study]
    return "\n".join(lines) + "\n"


def build_report(rows: list[JobRow], out_dir: Path, source: str, metrics: list[str] | None = None,
                 baseline: dict[str, str] | None = None, study: StudySummary | None = None,
                 price_per_1k_tokens: float | None = None, difficulty: Path | None = None) -> tuple[str, list[Path]]:
    """Aggregate rows and write ablation.md, ablation.csv, ablation_jobs.csv and the PNGs into out_dir.
    difficulty: a difficulty.json (medgrpo.analysis.difficulty) whose bins split each accuracy.
    Returns the Markdown and the written paths."""
    if difficulty is not None:
        rows = with_difficulty(rows, load_difficulty(difficulty))
    metrics = metrics if metrics is not None else default_metrics(rows)
    table = aggregate(rows, metrics, baseline, extra=insight_metrics(rows, metrics))
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = out_dir / "ablation.md"
    shown_before = set(IMAGE.findall(previous.read_text(encoding="utf-8"))) if previous.is_file() else set()
    plots = []
    for metric in table.metrics:
        if metric not in table.absent_metrics:
            plot_metric(table, metric, out_dir / metric_filename(metric))
            plots.append(metric_filename(metric))
    study_plots = _plot_study(study, out_dir) if study is not None else []
    insight, insight_plots = insight_sections(table, out_dir, price_per_1k_tokens)
    study_plots = insight_plots + study_plots
    text = report_markdown(table, source, plots, study_markdown(study, study_plots[len(insight_plots):])
                           if study is not None else "", insight)
    (out_dir / "ablation.md").write_text(text, encoding="utf-8")
    for stale in shown_before - set(plots + study_plots):
        if "/" not in stale:  # only plots this report wrote beside itself
            (out_dir / stale).unlink(missing_ok=True)
    write_csv(table, out_dir / "ablation.csv")
    write_jobs_csv(rows, list(dict.fromkeys(table.metrics + [m for m in map(majority_key, table.metrics) if m])),
                   out_dir / "ablation_jobs.csv")
    files = [out_dir / "ablation.md", out_dir / "ablation.csv", out_dir / "ablation_jobs.csv"]
    return text, files + [out_dir / name for name in plots + study_plots]


def _plot_study(study: StudySummary, out_dir: Path) -> list[str]:
    """The Optuna plots that the study's state allows (the Markdown says why one is missing)."""
    names = []
    if study.trials:
        plot_optuna_history(study, out_dir / "optuna_history.png")
        names.append("optuna_history.png")
    if study.importances:
        plot_optuna_importances(study, out_dir / "optuna_importances.png")
        names.append("optuna_importances.png")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ablation table (Markdown, CSV, PNG) of a Hydra sweep or W&B group.")
    parser.add_argument("--sweep", type=Path, nargs="+", help="sweep dir(s) multirun/<task>/<date_time> (default: the "
                                                             "newest); several are merged into one table")
    parser.add_argument("--study", help="an Optuna study's name: its trials' jobs, wherever they ran (with --storage)")
    parser.add_argument("--storage", help="the study's storage: a database URL or a journal file path")
    parser.add_argument("--metrics", help="comma-separated metric keys (default: the table's stored selection, else "
                                          "every eval/<dataset>/accuracy plus format_rate and "
                                          "mean_completion_tokens of the first dataset; 'default' resets to that)")
    parser.add_argument("--baseline", help='the setting Δ is measured against, e.g. "lora.rank=32,reward=recipe" '
                                           "(default: the table's stored baseline, else the first setting in sweep "
                                           "order; 'default' resets to that)")
    parser.add_argument("--out", type=Path, help="output dir (default: <sweep>/ablation, or ablation-wandb/<group>)")
    parser.add_argument("--multirun-root", type=Path, default=Path("multirun"), help="where to look for sweeps")
    parser.add_argument("--wandb-group", help="read the runs of this W&B group instead of results.json files")
    parser.add_argument("--wandb-project", default="medgrpo")
    parser.add_argument("--wandb-entity")
    parser.add_argument("--price-per-1k-tokens", type=float, help="price of 1,000 generated tokens: the cost plots "
                                                                    "get a second x-axis, cost per 1,000 items")
    parser.add_argument("--difficulty", type=Path, help="a difficulty.json (python -m medgrpo.analysis.difficulty): "
                                                       "accuracy per difficulty bin, the same bins in every row")
    return parser.parse_args(argv)


def _rows_and_source(args: argparse.Namespace) -> tuple[list[JobRow], str, Path | None]:
    if args.study:
        if not args.storage:
            raise AblationError("--study needs --storage (the study's database URL or journal file)")
        rows = load_study_rows(args.study, args.storage)
        if not rows:
            raise AblationError(f"Optuna study '{args.study}' has no trials")
        return rows, f"Optuna study {args.study}", None
    sweeps = args.sweep or []
    for sweep in sweeps:
        if not sweep.is_dir():
            raise AblationError(f"no such sweep directory: {sweep}")
    if len(sweeps) > 1:  # e.g. one folder per machine sharing a study: job numbers are unique across them
        return [row for sweep in sweeps for row in _sweep_rows(sweep)], " + ".join(map(str, sweeps)), sweeps[0]
    sweep = sweeps[0] if sweeps else None
    if args.wandb_group:
        rows = load_wandb_rows(args.wandb_group, args.wandb_project, args.wandb_entity)
        if not rows:
            raise AblationError(f"no W&B runs in group '{args.wandb_group}' of project '{args.wandb_project}'")
        return rows, f"W&B group {args.wandb_group}", sweep
    if sweep is None:
        sweep = find_newest_sweep(args.multirun_root)
        if sweep is None:
            raise AblationError(f"no sweep with job dirs under {args.multirun_root}/ — run `python src/run.py -m ...` "
                                "first or pass --sweep DIR")
    return _sweep_rows(sweep), str(sweep), sweep


def _sweep_rows(sweep: Path) -> list[JobRow]:
    rows = load_sweep_rows(sweep)
    if not rows:
        raise AblationError(f"{sweep} has no job dirs (<num>_<overrides>/): not a sweep dir, or no job started yet")
    if all(row.status == "missing" for row in rows):
        raise AblationError(f"no results.json in {sweep}: {len(rows)} job dir(s), none finished "
                            "(still running, or crashed before writing results)")
    return rows


def _selection(args: argparse.Namespace, stored: Path) -> dict:
    """{"metrics": [keys] or None, "baseline": "k=v,..." or None}: each option as given, else as the last run
    stored it beside the table; 'default' (or nothing anywhere) gives None, the default choice."""
    try:
        previous = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else {}
    except json.JSONDecodeError as error:
        raise AblationError(f"{stored} is not valid JSON ({error}): delete it or pass --metrics/--baseline") from error
    metrics = previous.get("metrics") if args.metrics is None else args.metrics
    if isinstance(metrics, str):
        metrics = None if metrics.strip() == "default" else [m.strip() for m in metrics.split(",") if m.strip()]
    baseline = previous.get("baseline") if args.baseline is None else args.baseline
    return {"metrics": metrics or None, "baseline": None if baseline in (None, "", "default") else str(baseline)}


def main(argv: list[str] | None = None) -> int:
    """The CLI: prints the Markdown report to stdout and the written files to stderr. Exit 2: nothing to show."""
    args = parse_args(argv)
    try:
        rows, source, sweep = _rows_and_source(args)
        rows, repeats = drop_repeats(rows)
        if repeats:
            source += f" ({repeats} repeated run(s) of a setting with the same seed not counted as seeds)"
        sweeper = read_sweeper_config(sweep) if sweep is not None else {}
        if args.study:
            sweeper = {"_target_": "optuna", "study_name": args.study, "storage": args.storage}
        study = load_study_summary(sweep or Path.cwd(), sweeper) if is_optuna(sweeper) else None
        out_dir = args.out or (sweep / "ablation" if sweep is not None else
                               Path("ablation-study") / args.study if args.study else
                               Path("ablation-wandb") / args.wandb_group)
        selection = _selection(args, out_dir / SELECTION)
        selection["metrics"] = selection["metrics"] or default_metrics(rows)
        baseline = parse_overrides(split_override_dirname(selection["baseline"])) if selection["baseline"] else None
        if args.price_per_1k_tokens is not None and args.price_per_1k_tokens <= 0:
            raise AblationError(f"--price-per-1k-tokens must be > 0, got {args.price_per_1k_tokens}")
        text, files = build_report(rows, out_dir, source, selection["metrics"], baseline, study,
                                   args.price_per_1k_tokens, args.difficulty)
        (out_dir / SELECTION).write_text(json.dumps(selection, indent=2) + "\n", encoding="utf-8")
    except AblationError as error:
        print(f"ablation-table: {error}", file=sys.stderr)
        return 2
    print(text)
    print("wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0
