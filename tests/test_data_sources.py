"""Every source YAML loads through the real loaders: from fixture files shaped like the hub rows, and from the
real public files in ../shared/data. Rendered prompts are checked character for character."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from medgrpo.data import parse_source, prepare_eval
from medgrpo.data.normalize import normalize_source
from medgrpo.data.readers import read_source
from medgrpo.data.render import render_prompts
from medgrpo.errors import DataError
from medgrpo.prompting import PromptFormat

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
SOURCES = ROOT / "conf" / "data" / "sources"
SHARED = ROOT.parent / "shared" / "data"
FORMAT = PromptFormat(system="Respond with <reasoning>...</reasoning><answer>...</answer>.")

OPEN_ROWS = [(row["id"], row["output"], 0) for row in map(json.loads, (FIXTURES / "open_records.jsonl").open())]
# source YAML stem -> (fixture file, expected (upstream id, answer, number of options) of the rows kept)
EXPECTED = {
    "gsm8k_train": ("gsm8k_train.jsonl", [("0", "72", 0), ("1", "10", 0), ("2", "5", 0)]),
    "gsm8k": ("gsm8k_test.jsonl", [("0", "18", 0), ("1", "3", 0)]),
    "pubmedqa_artificial": ("pqa_artificial.jsonl", [("24964725", "yes", 0), ("20813740", "yes", 0), ("12068831", "no", 0)]),
    # the same file: the pool keeps the non-test ids, the evaluation set only the official test ids
    "pubmedqa_labeled_pool": ("pqa_labeled.jsonl", [("11296674", "maybe", 0), ("22211919", "maybe", 0)]),
    "pubmedqa": ("pqa_labeled.jsonl", [("21214884", "no", 0), ("23848044", "yes", 0)]),
    "mmlu_medical": ("mmlu.jsonl", [("0", "A", 4), ("1", "B", 4)]),
    "medmcqa": ("medmcqa.jsonl", [("45258d3d-b974-44dd-a161-c3fccbf3f7c3", "A", 4),
                                  ("b5c09b5f-6f6d-4a5c-9a58-2ffd3e9e0d55", "C", 4),
                                  ("0f3c2d6e-1a7b-4a55-8c57-5cb8e0c1d2aa", "D", 4)]),
    "medmcqa_train": ("medmcqa.jsonl", [("45258d3d-b974-44dd-a161-c3fccbf3f7c3", "A", 4),
                                        ("b5c09b5f-6f6d-4a5c-9a58-2ffd3e9e0d55", "C", 4),
                                        ("0f3c2d6e-1a7b-4a55-8c57-5cb8e0c1d2aa", "D", 4)]),
    "medqa": ("medqa.jsonl", [("0", "D", 4), ("1", "A", 4)]),
    "health_benchmarks": ("health_benchmarks.jsonl", [(str(i), a, 4) for i, a in enumerate("BCABBB")]),
    # open answers (seed layout instruction/output + meta): the reference answer is the answer
    **{stem: ("open_records.jsonl", OPEN_ROWS) for stem in ("open_train", "open_gold", "redteam")},    # SFT sources (stage=sft): the target column rides along; two real dialogue rows in GB18030, medical-o1's layout
    "chinese_medical_dialogue": ("chinese_dialogue_gb18030.csv", [("0", '高血压病人可以口服党参的。党参有降血脂，降血压的作用，可以彻底消除血液中的垃圾，从而对冠心病以及心血管疾病的患者都有一定的稳定预防工作作用，因此平时口服党参能远离三高的危害。另外党参除了益气养血，降低中枢神经作用，调整消化系统功能，健脾补肺的功能。感谢您的进行咨询，期望我的解释对你有所帮助。', 0), ("1", '高血压患者首先要注意控制食盐摄入量，每天不超过六克，注意不要吃太油腻的食物，多吃新鲜的绿色蔬菜水果，多吃有机食物，注意增强体育锻炼，增加身体素质，同时压力不要过大，精神不要紧张，效果不佳的话，可以积极配合以降压药物控制血压治疗，情绪平时保持平和，不易激动。', 0)]),
    "medical_o1_sft": ("medical_o1_sft.jsonl", [("0", "The right coronary artery.", 0), ("1", "Thiamine (vitamin B1).", 0)]),
}


def load_fixture_source(stem: str, fixture: str | Path, **local) -> tuple[dict, dict]:
    cfg = OmegaConf.load(SOURCES / f"{stem}.yaml")
    cfg.local.path = str(FIXTURES / fixture) if isinstance(fixture, str) else str(fixture)
    for key, value in local.items():
        cfg.local[key] = value
    spec = parse_source(stem, cfg, ROOT)
    return normalize_source(spec, read_source(spec))


def test_every_source_yaml_has_a_fixture():
    assert sorted(p.stem for p in SOURCES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_source_loads_hub_shaped_rows(stem):
    fixture, expected = EXPECTED[stem]
    rows, report = load_fixture_source(stem, fixture)
    got = [(u, a, len(c)) for u, a, c in zip(rows["upstream_id"], rows["answer"], rows["choices"])]
    assert got == expected
    assert rows["id"] == [f"{stem}:{u}" for u, _, _ in expected]
    assert set(rows["source"]) == {stem}
    assert all(q.strip() for q in rows["question"])
    assert report["bad_rows"] == 0


def test_health_benchmarks_options_are_split_from_the_question():
    rows, _ = load_fixture_source("health_benchmarks", "health_benchmarks.jsonl")
    assert rows["question"][0] == "Which laboratory test is most specific for diagnosing acute myocardial infarction?"
    assert rows["choices"][0] == ["Creatine kinase", "Troponin I", "Lactate dehydrogenase", "Myoglobin"]
    assert rows["question"][2].endswith("(for example, vitamin A. deficiency in children)?")  # no "Options:" label
    assert rows["choices"][4][1] == "Photoplethysmography sensor"


def test_pubmedqa_prompt_is_rendered_from_the_contexts():
    rows, _ = load_fixture_source("pubmedqa", "pqa_labeled.jsonl")
    spec = parse_source("pubmedqa", OmegaConf.load(SOURCES / "pubmedqa.yaml"), ROOT)
    prompt = render_prompts(rows, spec, FORMAT)[1]
    hub_row = [json.loads(line) for line in (FIXTURES / "pqa_labeled.jsonl").open()][3]
    assert prompt[0] == {"role": "system", "content": FORMAT.system}
    assert prompt[1] == {"role": "user", "content": (
        "Given the scientific context below:\n" + "\n".join(hub_row["context"]["contexts"]) +
        "\n\nAnswer the following question:\n" + hub_row["question"] +
        " with 'yes', 'no' or 'maybe'. You need to carefully review the context and reason before answering.")}


def test_choice_prompt_lists_lettered_options_and_gsm8k_sends_the_bare_question():
    rows, _ = load_fixture_source("medqa", "medqa.jsonl")
    spec = parse_source("medqa", OmegaConf.load(SOURCES / "medqa.yaml"), ROOT)
    user = render_prompts(rows, spec, FORMAT)[0][1]["content"]
    assert user.startswith("Answer the following multiple-choice question with the letter of the correct option.\n\n"
                           "A 23-year-old pregnant woman")
    assert user.endswith("\n\nA. Ampicillin\nB. Ceftriaxone\nC. Doxycycline\nD. Nitrofurantoin")
    rows, _ = load_fixture_source("gsm8k_train", "gsm8k_train.jsonl")
    spec = parse_source("gsm8k_train", OmegaConf.load(SOURCES / "gsm8k_train.yaml"), ROOT)
    assert render_prompts(rows, spec, FORMAT)[0][1]["content"] == rows["question"][0]


def test_hub_loading_uses_load_dataset_and_names_a_missing_split(tmp_path):
    """The hub code path (datasets.load_dataset(path, name, split=...)) on a local dataset folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    rows = [json.loads(line) for line in (FIXTURES / "medmcqa.jsonl").open()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "validation-00000-of-00001.parquet")
    cfg = OmegaConf.load(SOURCES / "medmcqa.yaml")
    cfg.hub.path = str(tmp_path)
    got, _ = normalize_source(spec := parse_source("medmcqa", cfg, ROOT), read_source(spec))
    assert got["answer"] == ["A", "C", "D"]
    cfg.hub.split = "test"
    with pytest.raises(DataError, match=r"source 'medmcqa': hub .* split=test cannot be loaded"):
        read_source(parse_source("medmcqa", cfg, ROOT))


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is not present")
def test_real_shared_files_load_through_the_same_yamls(tiny_tokenizer, tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="data/shared", overrides=[f"data.cache_dir={tmp_path}"])
    evals, report = prepare_eval(cfg.data, tiny_tokenizer, FORMAT, max_prompt_tokens=None)
    assert len(evals["pubmedqa"]) == 500                      # the official test ids, all of them
    assert report["sources"]["pubmedqa"]["label_counts"] == {"maybe": 55, "no": 169, "yes": 276}
    assert report["sources"]["pubmedqa"]["majority_baseline"] == 0.552
    assert len(evals["gsm8k"]) == 1319 and all(a.lstrip("-").replace(".", "").isdigit() for a in evals["gsm8k"]["answer"])
    mmlu = evals["mmlu_medical"]
    assert len(mmlu) == report["sources"]["mmlu_medical"]["loaded"] == 1099  # quoted fields with commas/newlines
    assert set(mmlu["answer"]) == set("ABCD") and all(len(c) == 4 for c in mmlu["choices"])
    pool, pool_report = normalize_source(spec := parse_source("pubmedqa_labeled_pool", cfg.data.sources.pubmedqa_labeled_pool,
                                                              ROOT), read_source(spec))
    assert len(pool["id"]) == 500 and pool_report["excluded_by_id"] == 500
    assert not set(pool["upstream_id"]) & set(json.loads((SHARED / "pubmedqa" / "test_ground_truth.json").read_text()))
