"""Rebuild data/samples/open/{train,gold}.jsonl from local clones of the two public sources (see README.md).

    git clone https://github.com/abachaa/MedQuAD /tmp/MedQuAD
    git clone https://github.com/Toyhom/Chinese-medical-dialogue-data /tmp/cmdd
    python data/samples/open/build.py --medquad /tmp/MedQuAD --cmdd /tmp/cmdd

Rows follow the seed's record layout: instruction (the question), input (extra context, empty here), output (the
reference answer) and meta {language, specialty, risk_level, source, licence, url}. risk_level is assigned by the
keyword rule below (RED_FLAGS, on the question only), not by a clinician: "high" marks questions naming
symptoms or conditions that can call for urgent care.
"""
from __future__ import annotations

import argparse
import html
import json
import random
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from medgrpo.data.leakage import jaccard, shingles

HERE = Path(__file__).resolve().parent
SEED = 20261201
PER_LANGUAGE = {"train": 30, "gold": 20}
# MedQuAD questions are templated ("What are the treatments for X?"): a gold question must stay clearly below the
# leakage check's near-duplicate threshold (data.leakage.near_duplicate_threshold, 0.6) to every training question.
MAX_SIMILARITY_TO_TRAIN = 0.5
MEDQUAD_SETS = ("1_CancerGov_QA", "5_NIDDK_QA", "6_NINDS_QA", "7_SeniorHealth_QA", "8_NHLBI_QA_XML", "9_CDC_QA")
MEDQUAD_TYPES = ("treatment", "symptoms", "prevention", "considerations", "exams and tests", "complications")
RED_FLAGS = ("chest pain", "stroke", "seizure", "bleeding", "unconscious", "heart attack", "shortness of breath",
             "suicid", "overdose", "poison", "胸痛", "胸闷", "脑出血", "脑梗", "昏迷", "抽搐", "出血", "晕厥",
             "呼吸困难", "中毒")


def risk_level(*texts: str) -> str:
    return "high" if any(flag in text.lower() for text in texts for flag in RED_FLAGS) else "routine"


def medquad(root: Path) -> list[dict]:
    rows, seen = [], set()
    for subset in MEDQUAD_SETS:
        for path in sorted((root / subset).glob("*.xml")):
            document = ElementTree.parse(path).getroot()
            for pair in document.iter("QAPair"):
                question, answer = pair.find("Question"), pair.find("Answer")
                text = html.unescape(" ".join((answer.text or "").split()))
                qid = f"medquad:{subset}:{question.get('qid')}"
                if question.get("qtype") not in MEDQUAD_TYPES or not 150 <= len(text) <= 900 or qid in seen:
                    continue  # (a few question ids appear twice upstream)
                seen.add(qid)
                asked = " ".join(question.text.split()).replace(" ?", "?")
                rows.append({"id": qid, "instruction": asked, "input": "",
                             "output": text, "meta": {
                                 "language": "en", "specialty": document.findtext("Focus") or subset,
                                 "risk_level": risk_level(asked), "source": f"MedQuAD/{subset}",
                                 "licence": "CC BY 4.0", "url": document.get("url")}})
    return rows


def cmdd(root: Path) -> list[dict]:
    path = root / "Data_数据" / "IM_内科" / "内科.txt"
    rows = []
    text = path.read_bytes().decode("gb18030").replace("\r\n", "\n")  # the upstream files are GBK
    for number, block in enumerate(text.split("\n\n\n")):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if len(lines) != 2 or "," not in lines[0]:
            continue
        title, ask = lines[0].split(",", 1)
        answer = lines[1]
        if not title.endswith(("？", "?")) or not 60 <= len(answer) <= 260 or len(ask) < 15:
            continue
        rows.append({"id": f"cmdd:im:{number}", "instruction": f"{title}\n{ask}", "input": "", "output": answer,
                     "meta": {"language": "zh", "specialty": "内科 (internal medicine)",
                              "risk_level": risk_level(title, ask), "source": "Toyhom/Chinese-medical-dialogue-data",
                              "licence": "MIT", "url": "https://github.com/Toyhom/Chinese-medical-dialogue-data"}})
    return rows


def one_per_focus(rows: list[dict]) -> list[dict]:
    """At most one question per topic, so that a 50-item sample covers 50 topics."""
    seen, kept = set(), []
    for row in rows:
        topic = row["meta"]["specialty"] if row["meta"]["language"] == "en" else row["instruction"][:4]
        if topic not in seen:
            seen.add(topic)
            kept.append(row)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medquad", type=Path, required=True)
    parser.add_argument("--cmdd", type=Path, required=True)
    args = parser.parse_args()
    splits: dict[str, list[dict]] = {"train": [], "gold": []}
    for rows in (medquad(args.medquad), cmdd(args.cmdd)):
        random.Random(SEED).shuffle(rows)
        rows = one_per_focus(rows)
        train = rows[:PER_LANGUAGE["train"]]
        seen = [shingles(row["instruction"]) for row in train]
        gold = [row for row in rows[len(train):]
                if max(jaccard(shingles(row["instruction"]), other) for other in seen) < MAX_SIMILARITY_TO_TRAIN]
        splits["train"] += train
        splits["gold"] += gold[:PER_LANGUAGE["gold"]]
    for name, rows in splits.items():
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} rows, {sum(r['meta']['risk_level'] == 'high' for r in rows)} high risk")


if __name__ == "__main__":
    main()
