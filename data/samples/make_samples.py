"""Regenerate the bundled data samples from the public copies in ../shared/data (deterministic).

    python data/samples/make_samples.py [--shared ../shared/data]

Every sample is written in its hub dataset's schema (JSONL), so `data=samples` reads it through the same
source YAMLs as a real run, with only `local.path` changed:
  gsm8k/train.jsonl            200 GSM8K train rows          (openai/gsm8k main: question, answer)
  gsm8k/test.jsonl             100 GSM8K test rows
  pubmedqa/pqa_labeled_pool.jsonl  150 pqa_labeled rows NOT in the official test ids (a training pool)
  pubmedqa/pqa_labeled_test.jsonl  100 rows of the official 500 test ids (evaluation)
  pubmedqa/test_ground_truth.json  all 500 official test ids -> label (upstream file; real runs need it too)
  mmlu_medical/test.jsonl      100 rows of MMLU's six medical subjects (cais/mmlu: question, subject, choices, answer)
Each folder keeps the upstream LICENSE (MIT).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261122
LETTERS = "ABCD"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def sample_gsm8k(shared: Path, rng: random.Random) -> None:
    for split, n in (("train", 200), ("test", 100)):
        rows = [json.loads(line) for line in (shared / "gsm8k" / f"{split}.jsonl").open(encoding="utf-8")]
        keep = sorted(rng.sample(range(len(rows)), n))
        write_jsonl(HERE / "gsm8k" / f"{split}.jsonl", [rows[i] for i in keep])
    shutil.copyfile(shared / "gsm8k" / "LICENSE", HERE / "gsm8k" / "LICENSE")


def pubmedqa_hub_row(pubid: str, item: dict) -> dict:
    """ori_pqal.json's upper-case layout -> the hub's qiaojin/PubMedQA pqa_labeled row."""
    return {
        "pubid": int(pubid),
        "question": item["QUESTION"],
        "context": {"contexts": item["CONTEXTS"], "labels": item["LABELS"], "meshes": item["MESHES"]},
        "long_answer": item["LONG_ANSWER"],
        "final_decision": item["final_decision"],
    }


def sample_pubmedqa(shared: Path, rng: random.Random) -> None:
    labeled = json.loads((shared / "pubmedqa" / "ori_pqal.json").read_text(encoding="utf-8"))
    test_ids = json.loads((shared / "pubmedqa" / "test_ground_truth.json").read_text(encoding="utf-8"))
    pool_ids = sorted(k for k in labeled if k not in test_ids)
    for name, ids, n in (("pqa_labeled_pool", pool_ids, 150), ("pqa_labeled_test", sorted(test_ids), 100)):
        keep = sorted(rng.sample(ids, n), key=int)
        write_jsonl(HERE / "pubmedqa" / f"{name}.jsonl", [pubmedqa_hub_row(i, labeled[i]) for i in keep])
    shutil.copyfile(shared / "pubmedqa" / "test_ground_truth.json", HERE / "pubmedqa" / "test_ground_truth.json")
    shutil.copyfile(shared / "pubmedqa" / "LICENSE", HERE / "pubmedqa" / "LICENSE")


def sample_mmlu(shared: Path, rng: random.Random) -> None:
    rows = []
    for path in sorted((shared / "mmlu_medical").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        with path.open(encoding="utf-8", newline="") as f:
            for question, a, b, c, d, letter in csv.reader(f):
                rows.append({"question": question, "subject": subject, "choices": [a, b, c, d],
                             "answer": LETTERS.index(letter)})
    keep = sorted(rng.sample(range(len(rows)), 100))
    write_jsonl(HERE / "mmlu_medical" / "test.jsonl", [rows[i] for i in keep])
    shutil.copyfile(shared / "mmlu_medical" / "LICENSE", HERE / "mmlu_medical" / "LICENSE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "data")
    args = parser.parse_args()
    rng = random.Random(SEED)  # one generator in a fixed order: the same files every time
    sample_gsm8k(args.shared, rng)
    sample_pubmedqa(args.shared, rng)
    sample_mmlu(args.shared, rng)
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote samples under {HERE} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
