"""Benchmark: prepare a default-sized training mix (~220k rows) and the evaluation sets, cold and warm.

    python -m benchmarks.bench_data [--rows 211269] [--out benchmarks/results/data.json]

The sources are synthesised locally in the hub schemas (pqa_artificial and Health_Benchmarks as Parquet,
GSM8K as JSONL, pqa_labeled with the real official test ids, MedMCQA, MedQA, MMLU) and read through the
data=default source YAMLs with local.path overrides, so every step runs: reading, validation, rendering,
the prompt-length filter with a real BPE tokenizer and chat template, balancing, the weighted interleave,
the leakage check and the cache. Cold = empty cache; warm = the same call again (cache hit).
Targets (issue): cold < 60 s, warm < 5 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import write_result

ROOT = Path(__file__).resolve().parents[1]
TEST_IDS = ROOT / "data" / "samples" / "pubmedqa" / "test_ground_truth.json"


class Words:
    """Random medical-ish text, fast: one big vocabulary draw per call."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        syllables = ["ca", "ro", "ne", "mi", "tal", "pro", "gen", "ic", "ar", "th", "ox", "ys", "in", "ase", "lin"]
        self.vocab = np.array(["".join(self.rng.choice(syllables, size=self.rng.integers(1, 4)))
                               for _ in range(5000)] + ["patients", "the", "of", "and", "with", "in", "was"])

    def text(self, n_words: int) -> str:
        return " ".join(self.vocab[self.rng.integers(0, len(self.vocab), n_words)])

    def texts(self, count: int, low: int, high: int) -> list[str]:
        lengths = self.rng.integers(low, high, count)
        flat = self.vocab[self.rng.integers(0, len(self.vocab), int(lengths.sum()))]
        out, pos = [], 0
        for n in lengths:
            out.append(" ".join(flat[pos:pos + n]))
            pos += n
        return out


def pubmed_rows(words: Words, ids: list[int], labels: list[str]) -> pa.Table:
    n = len(ids)
    contexts = words.texts(n * 3, 40, 110)  # ~3 passages per abstract, ~1,500 characters in all
    return pa.table({
        "pubid": ids,
        "question": [q + "?" for q in words.texts(n, 8, 16)],
        "context": [{"contexts": contexts[3 * i:3 * i + 3], "labels": ["BACKGROUND", "METHODS", "RESULTS"],
                     "meshes": ["Humans"]} for i in range(n)],
        "long_answer": words.texts(n, 20, 40),
        "final_decision": labels,
    })


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def synthesise(root: Path, n_artificial: int) -> dict[str, str]:
    """Write every source of data=default in its hub schema; returns source -> local path."""
    words = Words(0)
    rng = words.rng
    paths = {}
    labels = np.where(rng.random(n_artificial) < 0.92, "yes", "no").tolist()  # pqa_artificial is ~92% yes
    pq.write_table(pubmed_rows(words, list(range(30_000_000, 30_000_000 + n_artificial)), labels),
                   root / "pqa_artificial.parquet")
    paths["pubmedqa_artificial"] = str(root / "pqa_artificial.parquet")
    test_ids = [int(k) for k in json.loads(TEST_IDS.read_text())]
    labeled_ids = test_ids + list(range(40_000_000, 40_000_500))
    pq.write_table(pubmed_rows(words, labeled_ids, rng.choice(["yes", "no", "maybe"], len(labeled_ids)).tolist()),
                   root / "pqa_labeled.parquet")
    paths["pubmedqa"] = str(root / "pqa_labeled.parquet")
    for split, n in (("train", 7473), ("test", 1319)):
        qs = words.texts(n, 25, 60)
        write_jsonl(root / f"gsm8k_{split}.jsonl", [
            {"question": q + "?", "answer": f"{words.text(30)}\n#### {int(rng.integers(0, 5000)):,}"} for q in qs])
    paths["gsm8k_train"], paths["gsm8k"] = str(root / "gsm8k_train.jsonl"), str(root / "gsm8k_test.jsonl")
    n_hb = 7358
    stems, opts = words.texts(n_hb, 10, 30), words.texts(4 * n_hb, 1, 6)
    pq.write_table(pa.table({
        "Questions": [f"{stems[i]}?\nA) {opts[4 * i]}\nB) {opts[4 * i + 1]}\nC) {opts[4 * i + 2]}\nD) {opts[4 * i + 3]}"
                      for i in range(n_hb)],
        "Answers": rng.choice(list("ABCD"), n_hb).tolist()}), root / "health_benchmarks.parquet")
    paths["health_benchmarks"] = str(root / "health_benchmarks.parquet")
    n = 4183
    o = words.texts(4 * n, 1, 6)
    write_jsonl(root / "medmcqa.jsonl", [
        {"id": f"mm{i:06d}", "question": q + "?", "opa": o[4*i], "opb": o[4*i+1], "opc": o[4*i+2], "opd": o[4*i+3],
         "cop": int(rng.integers(0, 4)), "choice_type": "single", "exp": None, "subject_name": "Medicine",
         "topic_name": None} for i, q in enumerate(words.texts(n, 10, 30))])
    paths["medmcqa"] = str(root / "medmcqa.jsonl")
    n = 1273
    o = words.texts(4 * n, 1, 8)
    write_jsonl(root / "medqa.jsonl", [
        {"question": q + "?", "answer": o[4*i], "options": dict(zip("ABCD", o[4*i:4*i+4])), "meta_info": "step1",
         "answer_idx": "A", "metamap_phrases": []} for i, q in enumerate(words.texts(n, 80, 200))])
    paths["medqa"] = str(root / "medqa.jsonl")
    n = 1089
    o = words.texts(4 * n, 1, 8)
    write_jsonl(root / "mmlu.jsonl", [
        {"question": q + "?", "subject": "anatomy", "choices": o[4*i:4*i+4], "answer": int(rng.integers(0, 4))}
        for i, q in enumerate(words.texts(n, 10, 40))])
    paths["mmlu_medical"] = str(root / "mmlu.jsonl")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=211_269, help="pqa_artificial rows (the hub has 211,269)")
    parser.add_argument("--max-prompt-tokens", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/data.json")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from medgrpo.data import prepare_eval, prepare_train
    from medgrpo.prompting import PromptFormat
    from medgrpo.tiny import SAMPLES_DIR, _corpus_files, build_tiny_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        paths = synthesise(tmp_path, args.rows)
        synth_s = time.perf_counter() - t0
        base = [f"data.sources.{name}.local.path={path}" for name, path in paths.items()]
        tokenizer = build_tiny_tokenizer(_corpus_files(SAMPLES_DIR))
        prompt_format = PromptFormat(system="Respond in the following format:\n<reasoning>\n...\n</reasoning>\n"
                                            "<answer>\n...\n</answer>")
        scenarios = {}
        # default: pqa_artificial downsampled to balanced labels; raw: the recipe's distribution (no balancing)
        for scenario, extra in (("default", []), ("no_balance", ["data.balance.pubmedqa_artificial=none"])):
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="data/default",
                              overrides=[*base, *extra, f"data.cache_dir={tmp_path / scenario}"])
            timings = {}
            for phase in ("cold", "warm"):
                t0 = time.perf_counter()
                train, train_report = prepare_train(cfg.data, tokenizer, prompt_format, seed=42,
                                                    max_prompt_tokens=args.max_prompt_tokens)
                t1 = time.perf_counter()
                evals, eval_report = prepare_eval(cfg.data, tokenizer, prompt_format,
                                                  max_prompt_tokens=args.max_prompt_tokens)
                t2 = time.perf_counter()
                timings[phase] = {"train_s": round(t1 - t0, 2), "eval_s": round(t2 - t1, 2),
                                  "total_s": round(t2 - t0, 2), "cache": train_report["cache"]}
                print(f"{scenario} {phase}: train {t1 - t0:.1f} s, eval {t2 - t1:.1f} s ({train_report['cache']})",
                      flush=True)
            scenarios[scenario] = {
                "rows_loaded_train": sum(s["loaded"] for s in train_report["sources"].values()),
                "rows_loaded_eval": sum(s["loaded"] for s in eval_report["sources"].values()),
                "mixed_rows": len(train),
                "eval_items": {k: len(v) for k, v in evals.items()},
                "per_source": {n: {"loaded": s["loaded"], "after_balance": s.get("after_balance"),
                                   "length_checked": s["length_filter"]["checked"], "kept": s["kept"],
                                   "mixed": s["mixed"]} for n, s in train_report["sources"].items()},
                "timings": timings,
                "meets_targets": timings["cold"]["total_s"] < 60 and timings["warm"]["total_s"] < 5,
            }
        result = {
            "description": "data preparation (data=default shapes, synthesised locally, read as local files)",
            "scenarios": scenarios,
            "targets": {"cold_s": 60, "warm_s": 5},
            "synthesis_s": round(synth_s, 1),
            "settings": {"max_prompt_tokens": args.max_prompt_tokens, "tokenizer": "tiny byte-level BPE (2k vocab), "
                         "ChatML template", "pqa_artificial_rows": args.rows,
                         "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM")},
        }
    write_result("data", result, args.out)


if __name__ == "__main__":
    main()
