"""An AblationTable as a Markdown table (for the terminal and ablation.md) and as CSV files.

Accuracy Δ cells read "+0.100* [+0.020, +0.180]" with a p column beside them: the paired bootstrap of
medgrpo.analysis.stats; * marks a setting that differs from the baseline at p < 0.05.
"""
from __future__ import annotations

import csv
from pathlib import Path

from medgrpo.analysis.jobs import JobRow
from medgrpo.analysis.stats import ALPHA, METHOD, PREDICTION_FIELDS
from medgrpo.analysis.table import AblationTable, Setting, majority_key

SIGNIFICANT = "*"


def fmt(value: float | None, sign: bool = False, like: float | None = None) -> str:
    """3 decimals for rates, 1 for large numbers such as token counts (like: the number whose scale decides)."""
    if value is None:
        return ""
    scale = abs(value if like is None else like)
    return format(value, ("+" if sign else "") + (".1f" if scale >= 100 else ".3f"))


def _cell(setting: Setting, metric: str) -> str:
    stat = setting.stats.get(metric)
    if stat is None:
        return setting.status if setting.status not in ("ok", "partial") else "—"
    text = fmt(stat.mean)
    if stat.ci_low is not None:
        text += f" [{fmt(stat.ci_low)}, {fmt(stat.ci_high)}]" + ("†" if stat.ci_source == "eval" else "")
    if stat.note:
        text += f" ({stat.note}{'' if stat.ci_low is not None else '; no interval'})"
    n_ok = setting.count("ok")
    return text + (f" (n={stat.n})" if stat.n != n_ok else "")


def _delta_cell(setting: Setting, metric: str, is_baseline: bool) -> str:
    delta = setting.deltas.get(metric)
    if is_baseline or delta is None:
        return "—"
    like = setting.stats[metric].mean if metric in setting.stats else delta
    paired = setting.paired.get(metric)
    if paired is None:
        return fmt(delta, True, like)
    mark = SIGNIFICANT if paired.significant else ""
    if paired.ci_low == paired.ci_high:  # every resample gave the same Δ: say on how little, never "[x, x]"
        seeds = "+".join(map(str, paired.n_seeds))
        return f"{fmt(delta, True, like)}{mark} (no spread: {paired.n_items} items, {seeds} seeds)"
    return f"{fmt(delta, True, like)}{mark} [{fmt(paired.ci_low, True, like)}, {fmt(paired.ci_high, True, like)}]"


def _has_paired(table: AblationTable, metric: str) -> bool:
    return any(metric in s.paired for s in table.settings)


def _has_majority(table: AblationTable, metric: str) -> bool:
    """A majority column only where some job reported one (none for numeric answers)."""
    return bool(majority_key(metric)) and any(majority_key(metric) in s.stats for s in table.settings)


def markdown_table(table: AblationTable) -> str:
    """The table: setting, n, per metric mean [95% CI] and Δ to the baseline (with its paired CI and p for
    accuracies; + the majority baseline where it means something), problems."""
    header = ["setting", "n"]
    for metric in table.metrics:
        header += [metric, "Δ [95% CI]" if _has_paired(table, metric) else "Δ"]
        header += ["p"] if _has_paired(table, metric) else []
        header += [f"{metric.split('/')[1]} majority"] if _has_majority(table, metric) else []
    show_problems = any(s.problems for s in table.settings)
    header += ["failed / killed / missing"] if show_problems else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in table.settings:
        is_baseline = setting is table.baseline
        cells = [("**baseline** " if is_baseline else "") + setting.label, str(setting.count("ok"))]
        for metric in table.metrics:
            cells += [_cell(setting, metric), _delta_cell(setting, metric, is_baseline)]
            if _has_paired(table, metric):
                paired = setting.paired.get(metric)
                cells.append(f"{paired.p_value:.3g}" if paired else "")
            if _has_majority(table, metric):
                majority = setting.stats.get(majority_key(metric))
                cells.append(fmt(majority.mean) if majority else "")
        cells += [setting.problems] if show_problems else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def section_table(table: AblationTable, columns: dict[str, str]) -> str:
    """A Markdown table of more metrics of the same settings: setting, then per column header its metric's
    mean [95% CI] cell (as in the main table)."""
    lines = ["| setting | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for setting in table.settings:
        cells = [("**baseline** " if setting is table.baseline else "") + setting.label,
                 *(_cell(setting, metric) for metric in columns.values())]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def significance_note(table: AblationTable) -> str:
    """The line under the table naming how Δ's CI and p were computed (empty when no Δ is paired)."""
    if not any(s.paired for s in table.settings):
        return ""
    return (f"Δ of accuracies: {METHOD}; {SIGNIFICANT} p < {ALPHA} (each comparison alone, no correction for "
            "multiple comparisons). Other Δ: difference of the means.")


PAIRED_COLUMNS = ("delta_ci_low", "delta_ci_high", "p_value", "delta_n_items")


def write_csv(table: AblationTable, path: Path) -> None:
    """One line per setting: swept values, job counts, errors, and per metric (the table's extra ones too: cost,
    per source, difficulty bins, option-order robustness) mean, ci_low, ci_high, ci_source, n, delta; for
    accuracies also delta_ci_low, delta_ci_high, p_value and delta_n_items (paired bootstrap)."""
    accuracies = [m for m in table.metrics if m.rsplit("/", 1)[-1] in PREDICTION_FIELDS]
    metric_columns = []
    for metric in table.metrics + table.extra:
        metric_columns += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_ci_source", f"{metric}_n",
                           f"{metric}_delta"]
        metric_columns += [f"{metric}_{c}" for c in PAIRED_COLUMNS] if metric in accuracies else []
        metric_columns += [majority_key(metric)] if majority_key(metric) else []
    header = ["setting", *table.swept, "baseline", "status", "n_ok", "n_failed", "n_killed", "n_interrupted",
              "n_missing", "seeds", "problems", *metric_columns]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for s in table.settings:
            line = [s.label, *(s.params.get(k) for k in table.swept), s is table.baseline, s.status,
                    *(s.count(status) for status in ("ok", "failed", "killed", "interrupted", "missing")),
                    " ".join(str(j.seed) for j in s.jobs if j.status == "ok" and j.seed is not None), s.problems]
            for metric in table.metrics + table.extra:
                stat = s.stats.get(metric)
                source = (stat.ci_source or "none") + (f" ({stat.note})" if stat.note else "") if stat else ""
                line += [stat.mean, stat.ci_low, stat.ci_high, source, stat.n] if stat else ["", "", "", "", 0]
                line.append(s.deltas.get(metric, ""))
                if metric in accuracies:
                    paired = s.paired.get(metric)
                    line += [paired.ci_low, paired.ci_high, paired.p_value, paired.n_items] if paired \
                        else [""] * len(PAIRED_COLUMNS)
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
