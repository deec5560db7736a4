"""Ablation tables from synthetic sweep dirs laid out as Hydra writes them, and from a real Optuna sqlite study."""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import yaml

from medgrpo.analysis.jobs import JobRow, find_newest_sweep, wandb_row
from medgrpo.analysis.report import build_report, main
from medgrpo.analysis.study import load_study_summary
from medgrpo.analysis.table import aggregate, is_rate, t_quantile_975

SWEEP_NAME = "2026-11-22_10-00-00"
T1 = 12.706  # t(0.975, df=1): two seeds per setting


def write_job(sweep: Path, num: int, overrides: list[str], accuracy: float | None = None,
              error: str | None = None, ci: tuple[float, float] | None = None) -> Path:
    """A job dir as src/run.py leaves it: .hydra/overrides.yaml always, results.json unless accuracy and error
    are both None (the job crashed hard or is still running)."""
    job = sweep / f"{num}_{','.join(sorted(overrides))}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if accuracy is None and error is None:
        return job
    parsed = dict(item.split("=", 1) for item in overrides)
    results = {"status": "failed" if error else "ok", "overrides": overrides, "seed": int(parsed.get("seed", 42)),
               "config": {"seed": int(parsed.get("seed", 42)), "lora": {"rank": int(parsed.get("lora.rank", 64))}},
               "metrics": {}, "timings": {"total_s": 12.3}, "data": {"eval": {"pubmedqa": {"rows": 100}}}}
    if error:
        results["error"] = error
    else:
        low, high = ci or (accuracy - 0.1, accuracy + 0.1)
        results["metrics"] = {
            "eval/pubmedqa/accuracy": accuracy, "eval/pubmedqa/accuracy_ci_low": low,
            "eval/pubmedqa/accuracy_ci_high": high, "eval/pubmedqa/accuracy_strict": accuracy - 0.05,
            "eval/pubmedqa/format_rate": 0.9, "eval/pubmedqa/majority_baseline": 0.552,
            "eval/pubmedqa/mean_completion_tokens": 300.0 + 100 * accuracy, "eval/pubmedqa/n_items": 100.0,
            "eval/gsm8k/accuracy": accuracy / 2, "eval/gsm8k/majority_baseline": 0.02,
            "eval/gsm8k/accuracy_ci_low": None, "train/reward": 1.5, "train/loss": 0.01,
        }
    (job / "results.json").write_text(json.dumps(results))
    return job


# PubMedQA accuracy per (lora.rank, reward, seed); None: failed (seed 2 of 32/recipe) or missing (64/recipe).
GRID = {("32", "weighted"): [0.60, 0.64], ("32", "recipe"): [0.55, "failed"],
        ("64", "weighted"): [0.70, 0.74], ("64", "recipe"): [0.58, "missing"]}


@pytest.fixture
def grid_sweep(tmp_path) -> Path:
    """`-m lora.rank=32,64 reward=weighted,recipe seed=1,2`: 8 jobs in Hydra's order, one failed, one missing."""
    sweep = tmp_path / "multirun" / "grpo" / SWEEP_NAME
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
        "overrides": {"task": ["lora.rank=32,64", "reward=weighted,recipe", "seed=1,2"]}}}))
    jobs = itertools.product(["32", "64"], ["weighted", "recipe"], [1, 2])
    for num, (rank, reward, seed) in enumerate(jobs):
        outcome = GRID[(rank, reward)][seed - 1]
        overrides = [f"lora.rank={rank}", f"reward={reward}", f"seed={seed}"]
        if outcome == "failed":
            write_job(sweep, num, overrides, error="RuntimeError: CUDA out of memory. Tried to allocate 2.0 GiB")
        elif outcome == "missing":
            write_job(sweep, num, overrides)
        else:
            write_job(sweep, num, overrides, outcome, ci=(0.45, 0.65) if (rank, reward) == ("32", "recipe") else None)
    return sweep


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as file:
        return {row["setting"]: row for row in csv.DictReader(file)}


def test_grid_sweep_table_numbers_failures_and_files(grid_sweep, capsys):
    assert main(["--sweep", str(grid_sweep)]) == 0
    stdout = capsys.readouterr().out
    assert "| **baseline** lora.rank=32, reward=weighted | 2 |" in stdout

    rows = read_csv(grid_sweep / "ablation" / "ablation.csv")
    assert list(rows) == ["lora.rank=32, reward=weighted", "lora.rank=32, reward=recipe",
                          "lora.rank=64, reward=weighted", "lora.rank=64, reward=recipe"]
    acc = "eval/pubmedqa/accuracy"
    base = rows["lora.rank=32, reward=weighted"]
    half = T1 * math.sqrt(((0.60 - 0.62) ** 2 + (0.64 - 0.62) ** 2) / 1) / math.sqrt(2)  # t * sd / sqrt(n)
    assert float(base[acc]) == pytest.approx(0.62)
    assert float(base[f"{acc}_ci_low"]) == pytest.approx(0.62 - half)
    assert float(base[f"{acc}_ci_high"]) == pytest.approx(0.62 + half)
    assert (base[f"{acc}_n"], base["n_ok"], base["seeds"], base["baseline"]) == ("2", "2", "1 2", "True")
    assert float(base[f"{acc}_delta"]) == pytest.approx(0.0)
    assert float(rows["lora.rank=64, reward=weighted"][f"{acc}_delta"]) == pytest.approx(0.10)
    assert float(rows["lora.rank=64, reward=weighted"]["eval/gsm8k/accuracy"]) == pytest.approx(0.36)
    assert float(base["eval/pubmedqa/majority_baseline"]) == pytest.approx(0.552)

    failed = rows["lora.rank=32, reward=recipe"]  # one seed left: its own eval CI stands in
    assert (failed["status"], failed["n_ok"], failed["n_failed"], failed[f"{acc}_n"]) == ("partial", "1", "1", "1")
    assert (float(failed[f"{acc}_ci_low"]), float(failed[f"{acc}_ci_high"])) == (0.45, 0.65)
    assert "CUDA out of memory" in failed["problems"]
    missing = rows["lora.rank=64, reward=recipe"]
    assert (missing["n_missing"], float(missing[f"{acc}_delta"])) == ("1", pytest.approx(-0.04))

    assert "0.550 [0.450, 0.650]†" in stdout and "1 missing (no result" in stdout
    assert "pubmedqa majority" in stdout and "0.552" in stdout
    written = sorted(p.name for p in (grid_sweep / "ablation").iterdir())
    assert written == ["ablation.csv", "ablation.md", "ablation_jobs.csv",
                       "cost_eval_pubmedqa_accuracy.png",  # gsm8k's jobs report no tokens: no cost plot
                       "eval_gsm8k_accuracy.png",
                       "eval_pubmedqa_accuracy.png", "eval_pubmedqa_format_rate.png",
                       "eval_pubmedqa_mean_completion_tokens.png", "selection.json"]
    for path in (grid_sweep / "ablation").iterdir():
        assert path.stat().st_size > 100, path
    assert (grid_sweep / "ablation" / "eval_pubmedqa_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_baseline_and_metrics_options(grid_sweep, capsys):
    code = main(["--sweep", str(grid_sweep), "--baseline", "lora.rank=64,reward=weighted",
                 "--metrics", "eval/pubmedqa/accuracy,train/reward"])
    assert code == 0
    rows = read_csv(grid_sweep / "ablation" / "ablation.csv")
    assert float(rows["lora.rank=32, reward=weighted"]["eval/pubmedqa/accuracy_delta"]) == pytest.approx(-0.10)
    assert "train/reward" in rows["lora.rank=32, reward=weighted"]
    assert "eval/gsm8k/accuracy" not in rows["lora.rank=32, reward=weighted"]

    assert main(["--sweep", str(grid_sweep), "--baseline", "lora.rank=16"]) == 2
    assert "matches 0 settings" in capsys.readouterr().err
    assert main(["--sweep", str(grid_sweep), "--baseline", "grpo.beta=0.1"]) == 2
    assert "not swept" in capsys.readouterr().err


def test_no_results_and_no_dir_are_one_line_errors(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "grpo" / SWEEP_NAME
    write_job(sweep, 0, ["lora.rank=32"])
    write_job(sweep, 1, ["lora.rank=64"])
    assert main(["--sweep", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results.json" in err and "2 job dir(s)" in err

    assert main(["--sweep", str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err
    assert main(["--sweep", str(tmp_path)]) == 2
    assert "has no job dirs" in capsys.readouterr().err
    assert main(["--multirun-root", str(tmp_path / "empty")]) == 2
    assert "no sweep with job dirs" in capsys.readouterr().err


def test_newest_sweep_is_the_default(tmp_path):
    root = tmp_path / "multirun"
    write_job(root / "grpo" / "2026-11-20_09-00-00", 0, ["seed=1"], 0.5)
    write_job(root / "eval" / "2026-11-22_10-00-00", 0, ["seed=1"], 0.5)
    (root / "grpo" / "2026-11-23_00-00-00").mkdir(parents=True)  # a sweep that launched no job yet
    assert find_newest_sweep(root) == root / "eval" / "2026-11-22_10-00-00"


def test_wandb_rows_feed_the_same_table(tmp_path):
    """W&B runs as the public API returns them (name, config, summary, state), written here as plain dicts."""
    table_ref = {"_type": "table-file", "path": "media/table.json"}
    rows = [
        wandb_row("lora.rank=32,seed=1", {"seed": 1}, {"eval/pubmedqa/accuracy": 0.6, "completions": table_ref},
                  "finished"),
        wandb_row("lora.rank=32,seed=2", {"seed": 2}, {"eval/pubmedqa/accuracy": 0.7}, "finished"),
        wandb_row("lora.rank=64,seed=1", {"seed": 1}, {"train/loss": 0.3}, "failed"),
        wandb_row("lora.rank=64,seed=2", {"seed": 2}, {}, "crashed"),
        wandb_row("lora.rank=128,seed=1", {"seed": 1}, {}, "running"),
    ]
    table = aggregate(rows, ["eval/pubmedqa/accuracy"])
    rank32, rank64, rank128 = table.settings
    stat = rank32.stats["eval/pubmedqa/accuracy"]
    assert (stat.mean, stat.n, stat.ci_source) == (pytest.approx(0.65), 2, "seeds")
    # sd of {0.6, 0.7} / sqrt(2) = 0.05; the t-interval 0.65 -+ 0.635 is clipped to [0, 1] (issue 11: it was not)
    assert (stat.ci_low, stat.ci_high) == (pytest.approx(0.65 - T1 * 0.1 / 2), 1.0)
    assert (rank64.status, rank64.problems) == ("failed", "2 failed (W&B run failed; W&B run crashed)")
    assert rank128.status == "missing"

    text, files = build_report(rows, tmp_path / "out", "W&B group g")
    assert "| lora.rank=64 | 0 | failed | — |" in text
    assert all(path.stat().st_size > 0 for path in files)


def test_t_quantiles():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(40) == pytest.approx(2.0211, abs=2e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=2e-4)


@pytest.mark.parametrize("metric", [
    "eval/pubmedqa/accuracy", "eval/pubmedqa/accuracy_strict", "eval_sft/medqa/accuracy", "eval/medqa/majority_baseline",
    "eval/medqa/shuffle_accuracy", "eval/pubmedqa/format_rate", "eval/pubmedqa/truncation_rate",
    "eval/redteam/think_coverage", "eval/redteam/emergency_advice_coverage", "eval/redteam/risky_prescription_rate",
    "eval/medqa/option_order_consistency", "eval/gsm8k/maj@8", "eval/gsm8k/pass@4"])
def test_rates_are_recognised(metric):
    assert is_rate(metric)


@pytest.mark.parametrize("metric", [
    "eval/pubmedqa/mean_completion_tokens", "eval/pubmedqa/mean_thinking_tokens", "eval/pubmedqa/n_items",
    "eval/pubmedqa/accuracy_n", "train/reward", "train/loss", "train_sft/loss_last", "health/alarms",
    "eval/gsm8k/mean_waits"])
def test_other_metrics_are_not_rates(metric):
    assert not is_rate(metric)


def test_a_seed_interval_is_clipped_to_0_1_for_rates_only():
    """Two seeds: t(0.975, 1) = 12.706 times the standard error. format_rate 0.875, 1.0: mean 0.9375, sd
    0.125 / sqrt(2), se 0.0625, half-width 0.794125 -> [0.143375, 1.731625], clipped to 1; accuracy 0, 0.125:
    [0.0625 - 0.794125, 0.0625 + 0.794125] -> [0, 0.856625]; mean_completion_tokens 10, 12: sd sqrt(2), se 1,
    half-width 12.706 -> [-1.706, 23.706], not clipped (a token count is no rate)."""
    rows = [JobRow(name=f"seed{seed}", status="ok", overrides={"seed": str(seed)},
                   metrics={"eval/pubmedqa/format_rate": rate, "eval/pubmedqa/accuracy": accuracy,
                            "eval/pubmedqa/mean_completion_tokens": tokens})
            for seed, rate, accuracy, tokens in ((0, 0.875, 0.0, 10.0), (1, 1.0, 0.125, 12.0))]
    stats = aggregate(rows, ["eval/pubmedqa/format_rate", "eval/pubmedqa/accuracy",
                             "eval/pubmedqa/mean_completion_tokens"]).settings[0].stats
    got = {metric.rsplit("/", 1)[1]: (stat.ci_low, stat.ci_high, stat.ci_source) for metric, stat in stats.items()}
    assert got["format_rate"] == (pytest.approx(0.143375), 1.0, "seeds")
    assert got["accuracy"] == (0.0, pytest.approx(0.856625), "seeds")
    assert got["mean_completion_tokens"] == (pytest.approx(-1.706), pytest.approx(23.706), "seeds")


def make_study(db: Path, name: str, n_trials: int, fail_at: int):
    """A real sqlite Optuna study whose trial `fail_at` raises (state FAIL), like a failed sweep job."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name=name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("grpo.learning_rate", 1e-6, 1e-4, log=True)
        rank = trial.suggest_categorical("lora.rank", [16, 32, 64])
        if trial.number == fail_at:
            raise ValueError("objective 'eval/pubmedqa/accuracy' is None after the run")
        return 0.5 + 0.001 * rank + 100 * lr

    study.optimize(objective, n_trials=n_trials, catch=(ValueError,))
    return study


@pytest.mark.parametrize("sweeper_in", ["multirun.yaml", "job hydra.yaml"])
def test_optuna_sweep_history_importances_and_fail_count(tmp_path, capsys, sweeper_in):
    sweep = tmp_path / "multirun" / "grpo" / SWEEP_NAME
    sweep.mkdir(parents=True)
    study = make_study(sweep / "optuna.db", "pubmedqa", n_trials=4, fail_at=2)
    for trial in study.trials:
        overrides = [f"{k}={v}" for k, v in trial.params.items()]
        if trial.state.name == "FAIL":
            write_job(sweep, trial.number, overrides, error="ValueError: objective is None after the run")
        else:
            write_job(sweep, trial.number, overrides, trial.value)
    sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
               "storage": "sqlite:///${hydra.sweep.dir}/optuna.db", "study_name": "pubmedqa",
               "direction": "maximize"}
    if sweeper_in == "multirun.yaml":
        config_path = sweep / "multirun.yaml"
    else:  # what the Optuna sweeper really leaves: no multirun.yaml, the sweeper config in each job's .hydra/
        sweeper["storage"] = f"sqlite:///{sweep / 'optuna.db'}"
        config_path = next(sweep.glob("0_*")) / ".hydra" / "hydra.yaml"
    config_path.write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))

    assert main(["--sweep", str(sweep)]) == 0
    stdout = capsys.readouterr().out
    assert "## Optuna study `pubmedqa`" in stdout
    assert "COMPLETE: 3, FAIL: 1" in stdout and "Parameter importances:" in stdout
    out = sweep / "ablation"
    for name in ("optuna_history.png", "optuna_importances.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    rows = read_csv(out / "ablation.csv")
    assert len(rows) == 4 and sum(row["status"] == "failed" for row in rows.values()) == 1


def test_optuna_study_missing_parts_are_explained(tmp_path):
    make_study(tmp_path / "small.db", "small", n_trials=2, fail_at=1)
    small = load_study_summary(tmp_path, {"storage": f"sqlite:///{tmp_path / 'small.db'}", "study_name": "small"})
    assert small.state_counts == {"COMPLETE": 1, "FAIL": 1}
    assert small.importances == [] and "need >= 2 completed trials" in small.importance_note

    gone = load_study_summary(tmp_path, {"storage": f"sqlite:///{tmp_path / 'moved.db'}", "study_name": "x"})
    assert "storage file not found" in gone.error and not (tmp_path / "moved.db").exists()
    in_memory = load_study_summary(tmp_path, {"storage": None, "study_name": "x"})
    assert "in memory only" in in_memory.error


def write_predictions(job: Path, outcomes: list[list[bool]]) -> None:
    """predictions/pubmedqa.jsonl as evaluation writes it: one line per sample, the samples of an item share its id."""
    (job / "predictions").mkdir()
    lines = [{"id": f"pubmed:{item}", "sample": sample, "correct": ok, "correct_strict": ok}
             for item, samples in enumerate(outcomes) for sample, ok in enumerate(samples)]
    (job / "predictions" / "pubmedqa.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def paired_sweep(tmp_path) -> Path:
    """`-m lora.rank=4,8 seed=1,2`, 5 items x 2 samples: rank 4 wrong on every sample, rank 8 right on every
    sample, on both seeds (so each setting's seeds agree exactly)."""
    sweep = tmp_path / "multirun" / "grpo" / SWEEP_NAME
    for num, (rank, seed) in enumerate(itertools.product(["4", "8"], [1, 2])):
        right = rank == "8"
        job = write_job(sweep, num, [f"lora.rank={rank}", f"seed={seed}"], float(right),
                        ci=(0.565, 1.0) if right else (0.0, 0.435))
        write_predictions(job, [[right, right] for _ in range(5)])
    for job in sweep.iterdir():  # 5 items per job
        results = json.loads((job / "results.json").read_text())
        results["metrics"]["eval/pubmedqa/n_items"] = 5.0
        (job / "results.json").write_text(json.dumps(results))
    return sweep


def test_paired_delta_ci_and_p_value_from_predictions(paired_sweep, capsys):
    assert main(["--sweep", str(paired_sweep), "--metrics", "eval/pubmedqa/accuracy,eval/pubmedqa/format_rate"]) == 0
    stdout = capsys.readouterr().out
    acc = "eval/pubmedqa/accuracy"
    rows = read_csv(paired_sweep / "ablation" / "ablation.csv")
    rank8 = rows["lora.rank=8"]
    # every item flips from wrong to right on every seed: each resample gives Δ = 1; p = 1 / (10,000 + 1)
    assert [float(rank8[f"{acc}_{c}"]) for c in ("delta", "delta_ci_low", "delta_ci_high")] == pytest.approx([1, 1, 1])
    assert float(rank8[f"{acc}_p_value"]) == pytest.approx(1 / 10001)
    assert rank8[f"{acc}_delta_n_items"] == "5"
    assert rows["lora.rank=4"][f"{acc}_p_value"] == ""  # the baseline itself
    assert "eval/pubmedqa/format_rate_p_value" not in rank8  # Δ of other metrics: difference of means only
    assert "| lora.rank=8 | 2 | 1.000 [0.565, 1.000]† (2 seeds identical, 5 items) | " \
           "+1.000* (no spread: 5 items, 2+2 seeds) | 0.0001 |" in stdout
    assert "Δ of accuracies: paired bootstrap over items and seeds" in stdout
    # identical seeds, no eval interval: the cell says why there is none instead of printing [0.900, 0.900]
    assert "0.900 (2 seeds identical, 5 items; no interval)" in stdout
    assert rank8["eval/pubmedqa/format_rate_ci_source"] == "none (2 seeds identical, 5 items)"


def test_rerunning_keeps_the_selection_and_removes_stale_plots(grid_sweep, capsys):
    out = grid_sweep / "ablation"
    assert main(["--sweep", str(grid_sweep), "--metrics", "eval/pubmedqa/accuracy,train/reward"]) == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["--sweep", str(grid_sweep)]) == 0  # what `make ablation-table` runs
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".png"} == \
        {name: data for name, data in first.items() if not name.endswith(".png")}
    assert sorted(p.name for p in out.glob("*.png")) == ["cost_eval_pubmedqa_accuracy.png",  # beside every table
                                                         "eval_pubmedqa_accuracy.png", "train_reward.png"]
    assert main(["--sweep", str(grid_sweep), "--metrics", "default"]) == 0
    assert "train_reward.png" not in {p.name for p in out.iterdir()}  # no longer shown: removed
    assert "eval_pubmedqa_format_rate.png" in {p.name for p in out.iterdir()}
    assert json.loads((out / "selection.json").read_text())["metrics"][0] == "eval/pubmedqa/accuracy"
    capsys.readouterr()


def test_a_job_killed_with_sigkill_shows_as_killed(tmp_path, capsys, caplog):
    import os
    import signal
    import socket
    import subprocess
    import sys

    from medgrpo.analysis.jobs import summarize_sweep

    sweep = tmp_path / "multirun" / "grpo" / SWEEP_NAME
    write_job(sweep, 0, ["lora.rank=4"], 0.5)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    states = {1: ("lora.rank=8", victim.pid), 2: ("lora.rank=16", os.getpid())}  # dead / alive (this test)
    for num, (override, pid) in states.items():
        job = write_job(sweep, num, [override])
        (job / "results.json").write_text(json.dumps({"status": "running", "pid": pid, "overrides": [override],
                                                      "host": {"python": "3", "name": socket.gethostname()}}))
    summary = summarize_sweep(sweep)
    assert summary["ok"] == ["0_lora.rank=4"] and summary["running"] == ["2_lora.rank=16"]
    assert summary["killed"] == [f"1_lora.rank=8: killed: results.json says running, but process {victim.pid} "
                                 "is gone"]
    assert main(["--sweep", str(sweep)]) == 0
    stdout = capsys.readouterr().out
    assert "| lora.rank=8 | 0 | killed | — |" in stdout and "1 killed (killed: results.json" in stdout
    assert "| lora.rank=16 | 0 | running | — |" in stdout
    rows = read_csv(sweep / "ablation" / "ablation.csv")
    assert (rows["lora.rank=8"]["status"], rows["lora.rank=8"]["n_killed"]) == ("killed", "1")

    from omegaconf import OmegaConf

    from medgrpo.callbacks import SweepSummary

    with caplog.at_level("INFO", logger="medgrpo.callbacks"):  # what Hydra logs at the end of the sweep
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert f"Sweep {sweep}: 1 ok, 1 killed, 1 running" in caplog.text
    assert f"killed: 1_lora.rank=8: killed: results.json says running, but process {victim.pid}" in caplog.text


def test_null_storage_reads_the_sweeps_optuna_db(tmp_path):
    make_study(tmp_path / "optuna.db", "tiny", n_trials=3, fail_at=1)
    summary = load_study_summary(tmp_path, {"storage": None, "study_name": "tiny"})
    assert summary.error is None and summary.state_counts == {"COMPLETE": 2, "FAIL": 1}
    assert summary.storage == f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"


@pytest.mark.slow
@pytest.mark.scale
def test_two_settings_by_three_seeds_sweep_gives_paired_deltas(tmp_path, model_cache):
    """The real entrypoint: `-m preset=tiny seed=1,2,3 lora.rank=4,8`, then the table. The tiny model's numbers
    are whatever they are; the table's Δ, CI and p must be the paired ones computed from its predictions."""
    import subprocess
    import sys

    from tests._run import ROOT, run_entrypoint

    sweep = tmp_path / "sweep"
    result = run_entrypoint("-m", "preset=tiny", "seed=1,2,3", "lora.rank=4,8", "grpo.max_steps=2", "eval.limit=8",
                            "data.eval=[pubmedqa]", f"hydra.sweep.dir={sweep}", cache=model_cache.parent, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    table = subprocess.run([sys.executable, str(ROOT / "analysis" / "ablation_table.py"), "--sweep", str(sweep)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    acc = "eval/pubmedqa/accuracy"
    rows = read_csv(sweep / "ablation" / "ablation.csv")
    assert list(rows) == ["lora.rank=4", "lora.rank=8"]
    assert [(row["n_ok"], row["seeds"]) for row in rows.values()] == [("3", "1 2 3")] * 2

    def accuracy(rank: str) -> float:  # mean over seeds and the 8 shared items, straight from the predictions
        scores = [json.loads(line)["correct"] for job in sweep.iterdir() if f"lora.rank={rank}," in job.name
                  for line in (job / "predictions" / "pubmedqa.jsonl").read_text().splitlines()]
        assert len(scores) == 3 * 8
        return sum(scores) / len(scores)

    rank8 = rows["lora.rank=8"]
    delta = float(rank8[f"{acc}_delta"])
    assert delta == pytest.approx(accuracy("8") - accuracy("4"))
    low, high, p_value = (float(rank8[f"{acc}_{c}"]) for c in ("delta_ci_low", "delta_ci_high", "p_value"))
    assert low <= delta <= high and 0 < p_value <= 1 and rank8[f"{acc}_delta_n_items"] == "8"
    if low == high == delta:  # no item's outcome changed between the settings: nothing to resample
        assert p_value == 1.0 if delta == 0 else p_value == pytest.approx(1 / 10001)
    assert "| setting | n | eval/pubmedqa/accuracy | Δ [95% CI] | p |" in table.stdout
    assert "Δ of accuracies: paired bootstrap over items and seeds" in table.stdout


def test_a_plot_with_one_series_and_nothing_to_label_draws_no_empty_legend(tmp_path):
    """`make demo`'s sweep: stage=grpo,sft_grpo, one seed each. eval_sft/ metrics exist only for the sft_grpo job, so
    their plot has one series, no baseline line (the baseline, stage=grpo, has none) and no majority line: nothing to label, and matplotlib warns "No
    artists with labels found to put in legend" when a legend is asked for anyway."""
    import warnings

    sweep = tmp_path / "multirun" / "demo" / SWEEP_NAME
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
        "overrides": {"task": ["stage=grpo,sft_grpo"]}}}))
    for num, stage in enumerate(("grpo", "sft_grpo")):
        job = write_job(sweep, num, [f"stage={stage}"], 0.5)
        if stage == "sft_grpo":
            results = json.loads((job / "results.json").read_text())
            results["metrics"]["eval_sft/pubmedqa/format_rate"] = 0.9
            (job / "results.json").write_text(json.dumps(results))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matplotlib warning fails the test
        assert main(["--sweep", str(sweep), "--metrics", "eval/pubmedqa/format_rate,eval_sft/pubmedqa/format_rate"]) == 0
    assert (sweep / "ablation" / "eval_sft_pubmedqa_format_rate.png").stat().st_size > 0
