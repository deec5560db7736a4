"""The report's sections after the main table, per accuracy in it: accuracy against cost (a plot, and for
budget sweeps the items each setting turns right or wrong), accuracy per difficulty bin, per source, and under
shuffled options.

    rows = with_difficulty(rows, load_difficulty(path))        # eval/<set>/difficulty/<bin>/... per job
    table = aggregate(rows, metrics, baseline, extra=insight_metrics(rows, metrics))
    text, plots = insight_sections(table, out_dir, price_per_1k_tokens=None)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from medgrpo.analysis.cost import plot_cost, tokens_metric
from medgrpo.analysis.difficulty import BINS, EASY, HARD, job_bin_metrics
from medgrpo.analysis.jobs import JobRow
from medgrpo.analysis.plots import metric_filename
from medgrpo.analysis.render import section_table
from medgrpo.analysis.table import AblationTable, majority_key
from medgrpo.analysis.transitions import is_budget_sweep, transitions, transitions_markdown

SHUFFLE = {"accuracy over option orders": "shuffle_accuracy", "same answer under all orders": "shuffle_consistency"}


def _datasets(metrics: list[str]) -> list[str]:
    """eval/<set> of every eval/<set>/accuracy in the table."""
    return [m.rsplit("/", 1)[0] for m in metrics if majority_key(m)]


def with_difficulty(rows: list[JobRow], difficulty: dict[str, dict[str, float]]) -> list[JobRow]:
    """Copies of the rows with each ok job's accuracy per difficulty bin added, from its predictions files."""
    return [dataclasses.replace(row, metrics={**row.metrics, **job_bin_metrics(row.path, difficulty)})
            if row.status == "ok" and row.path is not None else row for row in rows]


def insight_metrics(rows: list[JobRow], metrics: list[str]) -> list[str]:
    """The extra metrics the sections show, for each eval set with an accuracy in the table: its mean generated
    tokens, accuracy per difficulty bin, per source, and under shuffled options (those some job reported)."""
    found = {k for row in rows for k in row.metrics}
    extra = []
    for prefix in _datasets(metrics):
        wanted = [tokens_metric(f"{prefix}/accuracy"),
                  *(f"{prefix}/difficulty/{b}/accuracy" for b in BINS),
                  *sorted(k for k in found if k.startswith(f"{prefix}/by_source/") and k.endswith("/accuracy")),
                  *(f"{prefix}/{name}" for name in SHUFFLE.values())]
        extra += [m for m in wanted if m in found]
    return extra


def _bin_header(table: AblationTable, metric: str, name: str) -> str:
    """'hard (n=12)': the bin's item count, the same in every row (the bins come from one file)."""
    counts = {int(s.jobs[0].metrics.get(metric.replace("/accuracy", "/n_items"), 0)) for s in table.settings
              if metric in s.stats}
    return f"{name} (n={'/'.join(map(str, sorted(counts)))})"


def insight_sections(table: AblationTable, out_dir: Path, price_per_1k_tokens: float | None = None
                     ) -> tuple[str, list[str]]:
    """Markdown sections and the file names of the plots they show (written into out_dir)."""
    lines, plots = [], []
    for prefix in _datasets(table.metrics):
        metric, dataset = f"{prefix}/accuracy", prefix.split("/")[1]
        found = [m for m in table.extra if m.startswith(f"{prefix}/")]
        plot = "cost_" + metric_filename(metric)
        if plot_cost(table, metric, out_dir / plot, price_per_1k_tokens):  # tokens in the table or its extras
            plots.append(plot)
            lines += [f"### {dataset}: accuracy against cost", "", f"![{plot}]({plot})", "",
                      "Mean generated tokens (thinking + answer) per completion against accuracy, 95% CIs on both; "
                      "dashed green: the Pareto front." + (f" Top axis: cost per 1,000 items at "
                                                           f"{price_per_1k_tokens:g} per 1k tokens."
                                                           if price_per_1k_tokens else ""), ""]
        if is_budget_sweep(table):
            section = transitions_markdown(transitions(table, metric), metric, out_dir)
            lines += [section, ""] if section else []
        bins = {b: f"{prefix}/difficulty/{b}/accuracy" for b in BINS if f"{prefix}/difficulty/{b}/accuracy" in found}
        if bins:
            lines += [f"### {dataset}: accuracy per difficulty bin", "",
                      section_table(table, {_bin_header(table, m, b): m for b, m in bins.items()}), "",
                      f"Bins from the base model's pass rate over k samples per item (--difficulty): easy >= {EASY}, "
                      f"hard <= {HARD}; n = items in the bin.", ""]
        sources = [m for m in found if "/by_source/" in m]
        if sources:
            lines += [f"### {dataset}: accuracy per source", "",
                      section_table(table, {m.split("/")[3]: m for m in sources}), ""]
        shuffled = {header: f"{prefix}/{name}" for header, name in SHUFFLE.items() if f"{prefix}/{name}" in found}
        if shuffled:
            lines += [f"### {dataset}: option-order robustness (eval.shuffle_options)", "",
                      section_table(table, shuffled), ""]
    return ("\n".join(["## Cost, difficulty, sources, robustness", "", *lines]) if lines else ""), plots
