"""An AblationTable as a Markdown table (for the terminal and ablation.md) and as CSV files."""
from __future__ import annotations

import csv
from pathlib import Path

from medgrpo.analysis.jobs import JobRow
from medgrpo.analysis.table import AblationTable, Setting, majority_key


def fmt(value: float | None, sign: bool = False, like: float | None = None) -> str:
    """3 decimals for rates, 1 for large numbers such as token counts (like: the number whose scale decides)."""
    if value is None:
        return ""
    scale = abs(value if like is None else like)
    return format(value, ("+" if sign else "") + (".1f" if scale >= 100 else ".3f"))


def _cell(setting: Setting, metric: str) -> str:
    stat = setting.stats.get(metric)
    if stat is None:
        return {"failed": "failed", "missing": "missing"}.get(setting.status, "—")
    text = fmt(stat.mean)
    if stat.ci_low is not None:
        text += f" [{fmt(stat.ci_low)}, {fmt(stat.ci_high)}]" + ("†" if stat.ci_source == "eval" else "")
    n_ok = setting.count("ok")
    return text + (f" (n={stat.n})" if stat.n != n_ok else "")


def markdown_table(table: AblationTable) -> str:
    """The table: setting, n, per metric mean [95% CI] and Δ to the baseline (+ majority baseline), problems."""
    header, columns = ["setting", "n"], []
    for metric in table.metrics:
        header += [metric, "Δ"]
        columns.append(metric)
        if majority_key(metric):
            header.append(f"{metric.split('/')[1]} majority")
    show_problems = any(s.problems for s in table.settings)
    header += ["failed / missing"] if show_problems else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in table.settings:
        is_baseline = setting is table.baseline
        cells = [("**baseline** " if is_baseline else "") + setting.label, str(setting.count("ok"))]
        for metric in columns:
            delta = setting.deltas.get(metric)
            shown_delta = "—" if is_baseline or delta is None else fmt(delta, True, setting.stats[metric].mean)
            cells += [_cell(setting, metric), shown_delta]
            if majority_key(metric):
                majority = setting.stats.get(majority_key(metric))
                cells.append(fmt(majority.mean) if majority else "")
        cells += [setting.problems] if show_problems else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_csv(table: AblationTable, path: Path) -> None:
    """One line per setting: swept values, job counts, errors, and per metric mean, ci_low, ci_high, n, delta."""
    metric_columns = []
    for metric in table.metrics:
        metric_columns += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_n", f"{metric}_delta"]
        metric_columns += [majority_key(metric)] if majority_key(metric) else []
    header = ["setting", *table.swept, "baseline", "status", "n_ok", "n_failed", "n_missing", "seeds", "problems",
              *metric_columns]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for s in table.settings:
            line = [s.label, *(s.params.get(k) for k in table.swept), s is table.baseline, s.status,
                    s.count("ok"), s.count("failed"), s.count("missing"),
                    " ".join(str(j.seed) for j in s.jobs if j.status == "ok" and j.seed is not None), s.problems]
            for metric in table.metrics:
                stat = s.stats.get(metric)
                line += [stat.mean, stat.ci_low, stat.ci_high, stat.n] if stat else ["", "", "", 0]
                line.append(s.deltas.get(metric, ""))
                if majority_key(metric):
                    majority = s.stats.get(majority_key(metric))
                    line.append(majority.mean if majority else "")
            writer.writerow(["" if v is None else v for v in line])


def write_jobs_csv(rows: list[JobRow], metrics: list[str], path: Path) -> None:
    """One line per job (the raw material of the table): name, status, seed, overrides, error, metrics."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["job", "status", "seed", "overrides", "error", *metrics])
        for row in rows:
            overrides = ",".join(f"{k}={v}" for k, v in row.overrides.items())
            writer.writerow([row.name, row.status, row.seed, overrides, row.error or "",
                             *(row.metrics.get(m, "") for m in metrics)])
