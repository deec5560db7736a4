"""Difficulty strata: where does a gain come from, the hard items or the easy ones?

    python -m medgrpo.analysis.difficulty --out difficulty/ --samples 8 preset=tiny    # any model: overrides
    python -m medgrpo.analysis.difficulty --out difficulty/ --run multirun/x/0_lora.rank=32   # a job's base model
    python analysis/ablation_table.py --sweep DIR --difficulty difficulty/difficulty.json  # accuracy per bin

The first command runs the real entrypoint (src/run.py) as an evaluation-only job (train.enabled=false: the
model before any training) with eval.num_samples=k sampled completions per item (eval.temperature, default 1.0),
in <out>/base_eval/, and stores each item's pass rate (the share of its k samples graded correct) in
<out>/difficulty.json: {"samples": k, "temperature": t, "overrides": [...], "datasets": {set: {item id: rate}}}.
With --run, the job's own overrides (its model, data, prompt, eval limit) are reused, so the bins describe the
items that job was evaluated on. The ablation table then reads the bins from this one file, so every row is
split the same way: easy (pass rate >= 0.8), hard (<= 0.2), medium in between.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from medgrpo.analysis import AblationError
from medgrpo.analysis.jobs import parse_overrides
from medgrpo.errors import DataError
from medgrpo.evaluation.metrics import clustered_interval, mean
from medgrpo.results import write_json_atomic

log = logging.getLogger(__name__)
EASY, HARD = 0.8, 0.2  # pass-rate thresholds of the bins (inclusive)
BINS = ("easy", "medium", "hard")
ENTRYPOINT = Path(__file__).resolve().parents[2] / "run.py"  # src/run.py


def difficulty_bin(pass_rate: float) -> str:
    """easy: >= 0.8, hard: <= 0.2, medium: in between."""
    return "easy" if pass_rate >= EASY else "hard" if pass_rate <= HARD else "medium"


def pass_rates(rows: list[dict]) -> dict[str, float]:
    """{item id: share of its samples graded correct} from prediction rows."""
    outcomes = _outcomes(rows)
    return {item: mean(values) for item, values in outcomes.items()}


def _outcomes(rows) -> dict[str, list[bool]]:
    by_item: dict[str, list[bool]] = {}
    for row in rows:
        by_item.setdefault(str(row["id"]), []).append(bool(row["correct"]))
    return by_item


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def load_difficulty(path: Path) -> dict[str, dict[str, float]]:
    """{dataset: {item id: pass rate}} of a difficulty.json; AblationError naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        datasets = data["datasets"]
        return {name: {str(k): float(v) for k, v in rates.items()} for name, rates in datasets.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise AblationError(f"--difficulty {path}: expected a difficulty.json written by "
                            f"`python -m medgrpo.analysis.difficulty` ({type(error).__name__}: {error})") from error


def bin_metrics(rows: list[dict], rates: dict[str, float]) -> dict[str, float]:
    """Per bin: `difficulty/<bin>/accuracy` with its item-clustered CI and n_items, over the items of `rows` that
    the pass-rate file knows (items it does not know are left out)."""
    binned: dict[str, list[list[bool]]] = {}
    for item, outcomes in _outcomes(rows).items():
        if item in rates:
            binned.setdefault(difficulty_bin(rates[item]), []).append(outcomes)
    metrics = {}
    for name in BINS:
        if name in binned:
            low, high, _, _ = clustered_interval(binned[name])
            hits = [o for outcomes in binned[name] for o in outcomes]
            metrics.update({f"difficulty/{name}/accuracy": mean(hits), f"difficulty/{name}/accuracy_ci_low": low,
                            f"difficulty/{name}/accuracy_ci_high": high,
                            f"difficulty/{name}/n_items": float(len(binned[name]))})
    return metrics


def job_bin_metrics(job_dir: Path, difficulty: dict[str, dict[str, float]]) -> dict[str, float]:
    """`eval/<set>/difficulty/<bin>/...` of one job from its final predictions files."""
    metrics = {}
    for name, rates in difficulty.items():
        path = Path(job_dir) / "predictions" / f"{name}.jsonl"
        if path.is_file():
            values = bin_metrics(_read_jsonl(path), rates)
            metrics.update({f"eval/{name}/{key}": value for key, value in values.items()})
    return metrics


def base_overrides(run_dir: Path | None, samples: int, temperature: float, overrides: list[str]) -> list[str]:
    """The evaluation job's overrides: the job's own (from its results.json) when run_dir is given, then the
    caller's, then the evaluation-only settings; a later value of a key replaces an earlier one."""
    inherited: list[str] = []
    if run_dir is not None:
        results = Path(run_dir) / "results.json"
        try:
            inherited = [str(o) for o in json.loads(results.read_text(encoding="utf-8")).get("overrides") or []
                         if "eval.adapter_path" not in parse_overrides([str(o)])]  # the model before training
        except (OSError, ValueError) as error:
            raise DataError(f"--run {run_dir}: no readable results.json ({error})") from error
    forced = ["train.enabled=false", "eval.after_training=true", "eval.before_training=false",
              "eval.during_training_steps=0", f"eval.num_samples={samples}", f"eval.temperature={temperature}"]
    merged: dict[str, str] = {}
    for item in inherited + list(overrides) + forced:
        merged[next(iter(parse_overrides([item])))] = item
    return list(merged.values())


def run_base_evaluation(out_dir: Path, overrides: list[str]) -> Path:
    """src/run.py with the overrides, its job folder <out_dir>/base_eval; returns that folder."""
    job_dir = out_dir / "base_eval"
    command = [sys.executable, str(ENTRYPOINT), *overrides, f"hydra.run.dir={job_dir}"]
    log.info("Base-model evaluation: %s", " ".join(command))
    if subprocess.run(command).returncode != 0:
        raise DataError(f"the base-model evaluation failed: see {job_dir}/run.log (command: {' '.join(command)})")
    return job_dir


def write_difficulty(job_dir: Path, out: Path, samples: int, temperature: float, overrides: list[str]) -> dict:
    """Pass rates of every graded eval set of a finished evaluation job, written atomically to `out`."""
    datasets = {}
    for path in sorted((job_dir / "predictions").glob("*.jsonl")):
        rows = _read_jsonl(path)
        if rows and not path.stem.endswith(".shuffled") and rows[0].get("correct") is not None:
            datasets[path.stem] = pass_rates(rows)
    if not datasets:
        raise DataError(f"{job_dir}/predictions holds no graded predictions: nothing to bin")
    data = {"samples": samples, "temperature": temperature, "overrides": overrides, "thresholds":
            {"easy": EASY, "hard": HARD}, "datasets": datasets}
    write_json_atomic(out, data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-item pass rates of a base model (k samples per item), for "
                                                 "the ablation table's difficulty bins.")
    parser.add_argument("--out", type=Path, required=True, help="folder for difficulty.json and base_eval/")
    parser.add_argument("--samples", type=int, default=8, help="samples per item, k (eval.num_samples)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0)")
    parser.add_argument("--run", type=Path, help="a job folder: evaluate its model before training, on its items")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the evaluation job, e.g. preset=tiny")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.samples < 2:
            raise DataError(f"--samples must be >= 2 for a pass rate between 0 and 1, got {args.samples}")
        if args.temperature <= 0:
            raise DataError(f"--temperature must be > 0 (k greedy samples are all the same), got {args.temperature}")
        overrides = base_overrides(args.run, args.samples, args.temperature, args.overrides)
        args.out.mkdir(parents=True, exist_ok=True)
        job_dir = run_base_evaluation(args.out, overrides)
        data = write_difficulty(job_dir, args.out / "difficulty.json", args.samples, args.temperature, overrides)
    except (DataError, AblationError) as error:
        print(f"difficulty: {error}", file=sys.stderr)
        return 2
    for name, rates in data["datasets"].items():
        counts = {b: sum(difficulty_bin(r) == b for r in rates.values()) for b in BINS}
        print(f"{name}: {len(rates)} items, " + ", ".join(f"{b} {c}" for b, c in counts.items()))
    print(f"wrote {args.out / 'difficulty.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
