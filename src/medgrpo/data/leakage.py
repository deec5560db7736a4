"""Leakage guard: no evaluation item may appear in training, by id, by normalised question text, or as a near
duplicate (a changed word or two, reordered options).

    report = check_leakage(train, {"pubmedqa": ds, ...}, allow=False, namespaces={"pubmedqa_pool": "pubmed", ...},
                           near_duplicate_threshold=0.6)

Ids are compared only between sources sharing an id namespace (PubMed ids across PubMedQA configs, MedMCQA
ids across its splits); row-number ids mean nothing across datasets. Question text is compared after
lower-casing and collapsing punctuation and whitespace, so "Is X safe?" and "is x  safe" collide.
Near duplicates: each item is a set of shingles, the word 1- and 2-grams of its normalised question and of each
option on its own (so the order of the options never matters). Candidate pairs come from MinHash LSH
(datasketch: the evaluation items are indexed, every training row is a query); each candidate is then checked
with the exact Jaccard similarity of the two shingle sets, and kept when it reaches the threshold
(data.leakage.near_duplicate_threshold; null turns the check off). On the bundled data, unrelated questions
stay below 0.25, one changed word in a question typically leaves 0.7-0.9, and reordered options 1.0.
With overlap and allow=False it raises DataError with counts and examples; the report lists every near-duplicate
pair (both ids and their similarity) and shows the first ones with both questions.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from datasets import Dataset

from medgrpo.errors import DataError

log = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
MAX_EXAMPLES = 5
MAX_PAIR_EXAMPLES = 20  # near-duplicate pairs shown with both questions in the report (all are listed by id)
NUM_PERM = 128    # MinHash permutations: more bands of the same width find more pairs, at a cost per query
MIN_RECALL = 0.98  # chance that a pair right at the threshold becomes a candidate (candidates are verified)


def normalize_question(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def shingles(question: str, choices: Sequence[str] | None = None) -> set[str]:
    """Word 1- and 2-grams of the normalised question and of each option separately."""
    found: set[str] = set()
    for part in (question, *(choices or ())):
        words = normalize_question(str(part)).split()
        found.update(words)
        found.update(f"{a} {b}" for a, b in zip(words, words[1:]))
    return found


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _hash32(shingle: str) -> int:
    return zlib.crc32(shingle.encode("utf-8"))  # stable across processes (Python's hash() is salted)


def lsh_bands(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band): the widest bands (fewest unrelated candidates) that still make a pair at the
    threshold a candidate with probability >= MIN_RECALL: 1 - (1 - t^rows)^bands. 0.6 -> (32, 4): 0.988."""
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= MIN_RECALL:
            return bands, rows
    return num_perm, 1


# The index, the eval shingles and the train columns, for the worker processes: forked workers inherit them
# (copy-on-write), so nothing large is pickled. Set only while find_near_duplicates runs.
_SHARED: dict = {}
PARALLEL_FROM = 20_000  # training rows from which forking workers pays for itself


def _as_lists(data: Dataset | dict) -> dict[str, list]:
    """The columns the check reads, as plain lists (indexing a Dataset column row by row is slow)."""
    names = data.column_names if isinstance(data, Dataset) else list(data)
    return {k: list(data[k]) for k in ("id", "question", "choices") if k in names}


def _item_shingles(columns: dict, index: int) -> set[str]:
    choices = columns.get("choices")
    return shingles(columns["question"][index], choices[index] if choices else None)


def _pairs_in(start: int, stop: int) -> list[dict]:
    """Near-duplicate pairs of training rows start..stop-1 (run in a worker, or in-process)."""
    from datasketch import MinHash

    lsh, eval_sets, evals, train, threshold = (_SHARED[k] for k in ("lsh", "eval_sets", "evals", "train", "threshold"))
    minhash = MinHash(num_perm=NUM_PERM, hashfunc=_hash32)  # reused: the index needs only a query's band hashes
    pairs = []
    for train_index in range(start, stop):
        found = _item_shingles(train, train_index)
        minhash.clear()
        minhash.update_batch(found)
        for name, index in lsh.query(minhash):
            similarity = jaccard(found, eval_sets[(name, index)])
            if similarity >= threshold:
                pairs.append({"eval_set": name, "eval": evals[name]["id"][index], "train": train["id"][train_index],
                              "similarity": round(similarity, 4), "eval_question": evals[name]["question"][index],
                              "train_question": train["question"][train_index]})
    return pairs


def _workers(rows: int) -> int:
    if rows < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(len(os.sched_getaffinity(0)), 8)


def find_near_duplicates(train: dict, evals: dict[str, dict], threshold: float) -> list[dict]:
    """Pairs (eval set, eval id, train id, similarity) whose shingle sets have Jaccard >= threshold, best first.
    train / each eval: columns id, question and optionally choices (lists). The evaluation items are indexed
    here; the training rows are checked in chunks, by one forked worker per available core when they are many."""
    from datasketch import MinHash, MinHashLSH
    from tqdm.auto import tqdm

    train, evals = _as_lists(train), {name: _as_lists(columns) for name, columns in evals.items()}
    lsh = MinHashLSH(num_perm=NUM_PERM, params=lsh_bands(threshold, NUM_PERM))
    minhash = MinHash(num_perm=NUM_PERM, hashfunc=_hash32)
    eval_sets: dict[tuple[str, int], set[str]] = {}
    for name, columns in evals.items():
        for index in range(len(columns["question"])):
            eval_sets[(name, index)] = found = _item_shingles(columns, index)
            minhash.clear()
            minhash.update_batch(found)
            lsh.insert((name, index), minhash)
    rows = len(train["question"])
    workers = _workers(rows)
    size = max(1, -(-rows // (4 * workers)))  # 4 chunks per worker: the progress bar moves, the load evens out
    chunks = [(start, min(start + size, rows)) for start in range(0, rows, size)]
    _SHARED.update(lsh=lsh, eval_sets=eval_sets, evals=evals, train=train, threshold=threshold)
    pairs: list[dict] = []
    try:
        with tqdm(total=rows, desc="near-duplicate check", unit="row", disable=rows < PARALLEL_FROM) as bar:
            if workers == 1:
                for start, stop in chunks:
                    pairs += _pairs_in(start, stop)
                    bar.update(stop - start)
            else:
                context = multiprocessing.get_context("fork")
                with ProcessPoolExecutor(workers, mp_context=context) as pool:
                    for (start, stop), found in zip(chunks, pool.map(_pairs_in, *zip(*chunks))):
                        pairs += found
                        bar.update(stop - start)
    finally:
        _SHARED.clear()
    log.info("near-duplicate check: %d training rows against %d evaluation items (%d worker%s): %d pairs >= %.2f",
             rows, len(eval_sets), workers, "s" if workers > 1 else "", len(pairs), threshold)
    return sorted(pairs, key=lambda p: (-p["similarity"], p["eval_set"], p["eval"], p["train"]))


def _upstream(row_id: str) -> str:
    return row_id.split(":", 1)[1] if ":" in row_id else row_id


def check_leakage(train: Dataset | dict, evals: dict[str, Dataset | dict], allow: bool,
                  namespaces: dict[str, str | None] | None = None,
                  near_duplicate_threshold: float | None = None) -> dict:
    """Overlap between training rows and each evaluation set. `train`/`evals` need columns id, source, question
    and, for the near-duplicate check, choices where they have options (Datasets or dicts of lists).
    namespaces: source name -> id namespace (None: ids not comparable). near_duplicate_threshold: Jaccard
    similarity in (0, 1] from which two items count as the same (None: no near-duplicate check)."""
    namespaces = namespaces or {}
    train_ids: dict[tuple[str, str], str] = {}
    for row_id, source in zip(train["id"], train["source"]):
        if namespaces.get(source):
            train_ids[(namespaces[source], _upstream(row_id))] = row_id
    train_text = {normalize_question(q): row_id for q, row_id in zip(train["question"], train["id"])}
    near: dict[str, list[dict]] = {}
    if near_duplicate_threshold is not None:
        pairs = find_near_duplicates(train, evals, near_duplicate_threshold)
        for pair in pairs:
            near.setdefault(pair["eval"], []).append(pair)
    report: dict = {"allowed": allow, "overlap": 0, "per_eval": {}, "examples": []}
    for name, ev in evals.items():
        by_id = by_text = by_near = 0
        leaked: set[str] = set()
        for row_id, source, question in zip(ev["id"], ev["source"], ev["question"]):
            ns = namespaces.get(source)
            hit = train_ids.get((ns, _upstream(row_id))) if ns else None
            if hit:
                by_id += 1
            text_hit = train_text.get(normalize_question(question))
            if text_hit:
                by_text += 1
            near_hit = next((p["train"] for p in near.get(row_id, ()) if p["eval_set"] == name), None)
            if near_hit and not (hit or text_hit):  # counted here only when ids and exact text missed it
                by_near += 1
            if (hit or text_hit or near_hit) and row_id not in leaked:
                leaked.add(row_id)
                if len(report["examples"]) < MAX_EXAMPLES:
                    report["examples"].append({"eval": row_id, "train": hit or text_hit or near_hit,
                                               "by": "id" if hit else "text" if text_hit else "near_duplicate"})
        report["per_eval"][name] = {"items": len(ev["id"]), "leaked": len(leaked), "by_id": by_id,
                                    "by_text": by_text, "by_near_duplicate": by_near}
        report["overlap"] += len(leaked)
    if near_duplicate_threshold is not None:
        all_pairs = [p for found in near.values() for p in found]
        texts = ("eval_question", "train_question")
        report["near_duplicates"] = {
            "threshold": near_duplicate_threshold, "pairs_found": len(all_pairs),
            "pairs": [{k: v for k, v in p.items() if k not in texts} for p in all_pairs],
            "examples": all_pairs[:MAX_PAIR_EXAMPLES],
            "method": f"MinHash LSH (datasketch, {NUM_PERM} permutations) on word 1-2-gram shingles of the question "
                      "and of each option, verified by exact Jaccard similarity"}
    if report["overlap"] and not allow:
        detail = ", ".join(f"{n}: {r['leaked']} (id {r['by_id']}, text {r['by_text']}"
                           + (f", near-duplicate {r['by_near_duplicate']})" if r["by_near_duplicate"] else ")")
                           for n, r in report["per_eval"].items() if r["leaked"])
        raise DataError(f"leakage: {report['overlap']} evaluation items also appear in the training data ({detail}); "
                        f"examples: {report['examples']}. Remove them from the training sources (ids.exclude) or "
                        "set data.allow_leakage=true to run anyway.")
    return report
