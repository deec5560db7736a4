"""Near-duplicate leakage between training and evaluation items, on the bundled real data (data/samples):
reworded questions, a changed number, reordered options are caught; the real training pools are clean."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from medgrpo.data import check_leakage, prepare_train, validate_data_config
from medgrpo.data.leakage import find_near_duplicates, jaccard, lsh_bands, shingles
from medgrpo.data.normalize import normalize_source
from medgrpo.data.readers import read_source
from medgrpo.errors import ConfigError, DataError
from medgrpo.prompting import PromptFormat

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("id", "source", "question", "choices")


def samples_cfg(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="data/samples", overrides=list(overrides)).data


@pytest.fixture(scope="module")
def bundled():
    """The bundled sources as prepare_train reads them: {source: columns}."""
    plan = validate_data_config(samples_cfg())
    return {name: {k: v for k, v in normalize_source(spec, read_source(spec))[0].items() if k in COLUMNS}
            for name, spec in plan.sources.items()}


def reworded(columns: dict, index: int, question: str, choices=None, new_id: str = "planted") -> dict:
    """The training columns with one more row: eval item `index` rewritten, under an id of its own."""
    row = {"id": f"{new_id}:{index}", "source": "planted", "question": question,
           "choices": choices if choices is not None else columns["choices"][index]}
    return {k: [*columns[k], row[k]] for k in COLUMNS}


def train_pools(bundled) -> dict:
    return {k: bundled["pubmedqa_labeled_pool"][k] + bundled["gsm8k_train"][k] for k in COLUMNS}


def test_shingles_ignore_option_order_and_case():
    forward = shingles("Which organ is involved?", ["Appendix", "Spleen", "Urinary bladder"])
    assert forward == shingles("which ORGAN is involved", ["Urinary bladder", "Spleen", "Appendix"])
    assert "urinary bladder" in forward and "bladder spleen" not in forward  # options are shingled one by one
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)


def test_a_pair_exactly_at_the_threshold_is_a_near_duplicate():
    """5 words, the last one changed: shared are 4 words and 3 word pairs (7), each side has 5 + 4 = 9 shingles, so
    Jaccard = 7 / (9 + 9 - 7) = 7/11 = 0.6364. At a threshold of exactly 7/11 the pair is found; just above, not."""
    evals = {"pubmedqa": {"id": ["e1"], "question": ["Is aspirin safe in pregnancy?"]}}
    train = {"id": ["t1"], "question": ["Is aspirin safe in childhood?"]}
    assert jaccard(shingles(evals["pubmedqa"]["question"][0]), shingles(train["question"][0])) == 7 / 11
    assert find_near_duplicates(train, evals, threshold=7 / 11) == [
        {"eval_set": "pubmedqa", "eval": "e1", "train": "t1", "similarity": 0.6364,
         "eval_question": "Is aspirin safe in pregnancy?", "train_question": "Is aspirin safe in childhood?"}]
    assert find_near_duplicates(train, evals, threshold=7 / 11 + 1e-9) == []


def test_each_leaked_item_is_counted_once_by_the_first_way_that_found_it():
    """e1 is a training question word for word (and so also a near duplicate), pubmed:5 shares its PubMed id
    (its question is a near duplicate too: 9 of 13 shingles), e2 is only a near duplicate (7/11): one each."""
    train = {"id": ["pool:1", "pool:5"], "source": ["pool", "pool"],
             "question": ["Is aspirin safe in pregnancy?", "Does coffee raise blood pressure in adults?"]}
    evals = {"pubmedqa": {"id": ["e1", "pubmed:5", "e2"], "source": ["pubmedqa"] * 3,
                          "question": ["Is aspirin safe in pregnancy?", "Does coffee raise blood pressure?",
                                       "Is aspirin safe in infancy?"]}}
    report = check_leakage(train, evals, allow=True, namespaces={"pool": "pubmed", "pubmedqa": "pubmed"},
                           near_duplicate_threshold=0.6)
    assert report["per_eval"]["pubmedqa"] == {"items": 3, "leaked": 3, "by_id": 1, "by_text": 1,
                                              "by_near_duplicate": 1}
    assert [(e["eval"], e["by"]) for e in report["examples"]] == [("e1", "text"), ("pubmed:5", "id"),
                                                                  ("e2", "near_duplicate")]
    assert report["overlap"] == 3 and report["near_duplicates"]["pairs_found"] == 3


def test_lsh_bands_are_the_widest_that_keep_a_pair_at_the_threshold():
    """Recall at the threshold t with b bands of r rows: 1 - (1 - t^r)^b, b = 128 // r, at least 0.98.
    t = 0.6: r = 4 gives 1 - (1 - 0.1296)^32 = 1 - 0.0118 = 0.988; r = 5: 1 - (1 - 0.0778)^25 = 0.868.
    t = 0.9: r = 11 gives 1 - (1 - 0.3138)^11 = 1 - 0.0159 = 0.984; r = 12: 1 - (1 - 0.2824)^10 = 0.964."""
    assert lsh_bands(0.6) == (32, 4)
    assert lsh_bands(0.9) == (11, 11)


def test_the_bundled_training_pools_hold_no_near_duplicate_of_an_eval_item(bundled):
    evals = {n: bundled[n] for n in ("pubmedqa", "gsm8k", "mmlu_medical")}
    assert find_near_duplicates(train_pools(bundled), evals, threshold=0.6) == []


def test_reworded_items_are_found_with_their_similarity(bundled):
    pubmed, gsm8k, mmlu = bundled["pubmedqa"], bundled["gsm8k"], bundled["mmlu_medical"]
    train = train_pools(bundled)
    planted = {}
    # two words changed in a PubMedQA test question
    question = pubmed["question"][0]
    assert question == ("Does continuous intravenous infusion of low-concentration epinephrine impair uterine blood "
                        "flow in pregnant ewes?")
    two_words = question.replace("continuous", "constant").replace("ewes", "sheep")
    train = reworded(train, 0, two_words)
    planted[pubmed["id"][0]] = train["id"][-1]
    # a GSM8K test question with its numbers changed
    question = gsm8k["question"][3]
    assert question.startswith("A candle melts by 2 centimeters every hour")
    train = reworded(train, 3, question.replace("2 centimeters", "3 centimeters").replace("5:00", "6:00"))
    planted[gsm8k["id"][3]] = train["id"][-1]
    # an MMLU question with its options reversed and one word changed
    question, choices = mmlu["question"][5], mmlu["choices"][5]
    train = reworded(train, 5, question.replace("correct", "true"), list(reversed(choices)))
    planted[mmlu["id"][5]] = train["id"][-1]
    # the same MMLU item with only its options shuffled, under another id
    train = reworded(train, 5, question, [choices[2], choices[0], choices[3], choices[1]], new_id="shuffled")

    pairs = find_near_duplicates(train, {"pubmedqa": pubmed, "gsm8k": gsm8k, "mmlu_medical": mmlu}, threshold=0.6)
    found = {(p["eval"], p["train"]): p["similarity"] for p in pairs}
    assert set(found) == {*planted.items(), (mmlu["id"][5], "shuffled:5")}
    assert found[(mmlu["id"][5], "shuffled:5")] == 1.0  # order of options does not matter
    for eval_id, train_id in planted.items():
        assert 0.6 <= found[(eval_id, train_id)] < 1.0
    # the exact Jaccard of the shingle sets, not the MinHash estimate: 15 words -> 15 + 14 shingles; the two
    # changed words take 2 words and 3 word pairs on each side: 24 shared of 34
    assert found[(pubmed["id"][0], planted[pubmed["id"][0]])] == round(24 / 34, 4)


def test_near_duplicates_fail_the_check_unless_allowed(bundled):
    pubmed = bundled["pubmedqa"]
    question = pubmed["question"][1].replace("earlier", "sooner")
    train = reworded(train_pools(bundled), 1, question)
    evals = {"pubmedqa": pubmed}
    with pytest.raises(DataError, match=r"pubmedqa: 1 \(id 0, text 0, near-duplicate 1\).*data\.allow_leakage=true"):
        check_leakage(train, evals, allow=False, near_duplicate_threshold=0.6)
    report = check_leakage(train, evals, allow=True, near_duplicate_threshold=0.6)
    pair = report["near_duplicates"]["examples"][0]
    assert (pair["eval"], pair["train"], pair["train_question"]) == (pubmed["id"][1], "planted:1", question)
    assert report["near_duplicates"]["pairs"] == [{"eval_set": "pubmedqa", "eval": pubmed["id"][1],
                                                   "train": "planted:1", "similarity": pair["similarity"]}]
    assert report["near_duplicates"]["pairs_found"] == 1 and report["per_eval"]["pubmedqa"]["by_near_duplicate"] == 1
    assert check_leakage(train, evals, allow=False, near_duplicate_threshold=None)["overlap"] == 0  # check off


def test_threshold_is_validated_with_the_data_config():
    assert validate_data_config(samples_cfg()).near_duplicate_threshold == 0.6
    assert validate_data_config(samples_cfg("data.leakage.near_duplicate_threshold=null")).near_duplicate_threshold \
        is None
    for bad in ("1.5", "0", "yes"):
        with pytest.raises(ConfigError, match=r"data\.leakage\.near_duplicate_threshold"):
            validate_data_config(samples_cfg(f"data.leakage.near_duplicate_threshold={bad}"))


def test_prepare_train_fails_on_a_reworded_test_item(tiny_tokenizer, tmp_path):
    """A training file holding an official PubMedQA test question with one word changed, under another PubMed id."""
    pool = ROOT / "data" / "samples" / "pubmedqa" / "pqa_labeled_pool.jsonl"
    test = json.loads((ROOT / "data" / "samples" / "pubmedqa" / "pqa_labeled_test.jsonl").read_text().splitlines()[2])
    planted = {**test, "pubid": 99999999, "question": test["question"].replace("persist", "remain")}
    leaky = tmp_path / "pool.jsonl"
    leaky.write_text(pool.read_text() + json.dumps(planted) + "\n")
    cfg = samples_cfg(f"data.cache_dir={tmp_path / 'cache'}", f"data.sources.pubmedqa_labeled_pool.local.path={leaky}")
    fmt = PromptFormat(system="Answer.")
    with pytest.raises(DataError, match=r"pubmedqa: 1 \(id 0, text 0, near-duplicate 1\)"):
        prepare_train(cfg, tiny_tokenizer, fmt, seed=0, max_prompt_tokens=None)
    with open_dict(cfg):
        cfg.allow_leakage = True
    _, report = prepare_train(cfg, tiny_tokenizer, fmt, seed=0, max_prompt_tokens=None)
    pairs = report["leakage"]["near_duplicates"]["pairs"]
    assert [(p["eval"].split(":")[1], p["train"].split(":")[1]) for p in pairs] == [(str(test["pubid"]), "99999999")]
