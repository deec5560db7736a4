"""Batch prediction with a trained job's model, generated exactly as its evaluation generates.

    python -m medgrpo.predict run=<job dir> input=<file.jsonl|.csv> output=<file.jsonl> [batch_size=32]
                              [max_new_tokens=N]   (default: the job's eval.max_new_tokens)
    python -m medgrpo.predict model=<hub id or dir> [adapter=<dir>] input=... output=...

Input rows (read as data sources are: medgrpo.data.readers) need `question`; optional `id` (default: the
record's number, from 1; blank lines are no records), `context`, `choices` (a list, a JSON list or a dict
letter -> text), `answer` (the gold: the output line is graded) and `answer_type` (numeric | yesno | choice |
open; default: choice with choices, yesno for a yes/no/maybe gold, numeric for a number, else open). An unknown
answer_type, or a gold its type cannot read, is refused while the input is read (naming the file and line).
A job's prompts are rendered with its eval sources' templates, its system prompt, budget and eval settings;
model= uses conf/ defaults (prompt=xml, budget=off, eval=default).
Each output line: id, prompt, completion, extracted, completion_tokens, thinking_tokens, waits, truncated (and
answer, correct, correct_strict with a gold).

The output ends in input order, one line per input row. On the way, items are generated as evaluation generates a
set: longest prompt first, in batches of the engine's batch size, so a batch pads little (input order would pad
each batch to its longest prompt: about 1.3x evaluation's time). Each finished batch is appended whole, so while
it runs the file is in that order; ids already in the output are skipped, so a killed run resumes where it
stopped, and the last step rewrites the file (atomically) in input order. Lines of ids not in the input stay, ahead.
"""
from __future__ import annotations

import ast
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from medgrpo.backends import trained_weights_problem
from medgrpo.errors import ConfigError, DataError, MedgrpoError
from medgrpo.results import write_jsonl_atomic

log = logging.getLogger("medgrpo.predict")
KEYS = ("run", "model", "adapter", "input", "output", "batch_size", "max_new_tokens")
GENERIC_TEMPLATES = {"choice": "{question}\n\n{options}", "context": "{context}\n\n{question}"}


def parse_args(argv: list[str], keys: tuple[str, ...]) -> dict[str, str]:
    """key=value arguments; anything else, or an unknown key, is a ConfigError naming it."""
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise ConfigError(key if sep else arg, f"expected key=value with a key among {list(keys)}")
        args[key] = value
    return args


# ---- input ----------------------------------------------------------------------------------------------------

def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for each record of a .jsonl or .csv file, read by the data sources' reader (so a CSV in GBK
    decodes too); where names the file and line for messages. DataError naming the file otherwise."""
    from medgrpo.data.readers import MISSING, read_local_file
    from medgrpo.data.spec import SourceSpec

    if not path.is_file():
        raise DataError(f"{path}: no such input file")
    formats = {".jsonl": "jsonl", ".csv": "csv"}
    suffix = path.suffix.lower()
    if suffix not in formats:
        raise DataError(f"{path}: expected a .jsonl or .csv file, got '{suffix or 'no extension'}'")
    spec = SourceSpec(name="input", role="eval", answer_type="open", template="{question}", fields={}, hub={},
                      local_files=(path,), local_format=formats[suffix])
    part = read_local_file(path, spec)
    columns = {name: part.column(name) for name in part.columns}
    return [(f"{path}, {part.locate(i)}", {name: values[i] for name, values in columns.items()
                                           if values[i] is not MISSING}) for i in range(part.num_rows)]


def _choices(value, where: str) -> list[str]:
    if isinstance(value, str):  # a CSV cell: a JSON or Python list, or a dict letter -> text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise DataError(f"{where}: 'choices' is neither a list nor a dict letter -> text") from None
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value)]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'choices' must be a non-empty list or a dict letter -> text")
    return [str(c) for c in value]


def _answer_type(gold, choices: list[str]) -> str:
    if choices:
        return "choice"
    if gold is None:
        return "open"
    text = str(gold).strip().lower()
    if text in ("yes", "no", "maybe"):
        return "yesno"
    try:
        float(text.replace(",", ""))
        return "numeric"
    except ValueError:
        return "open"


def parse_items(path: Path) -> list[dict]:
    """Items with id, question, context, choices, answer (None without a gold), answer_type."""
    from medgrpo.grading import extract, grade

    items, seen = [], set()
    for number, (where, row) in enumerate(read_rows(path), 1):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: no 'question' field (a non-empty string is required); fields: {sorted(row)}")
        choices = _choices(row["choices"], where) if row.get("choices") not in (None, "") else []
        gold = row.get("answer")
        gold = None if gold in (None, "") else str(gold)
        answer_type = row.get("answer_type") or _answer_type(gold, choices)
        try:  # the grader's checks of the answer type and gold, here: mid-run they would stop it naming no line
            if gold is None:
                extract("", answer_type, choices)
            else:
                grade("", gold, answer_type, choices)
        except DataError as error:
            raise DataError(f"{where}: {error}") from None
        item_id = str(number) if row.get("id") in (None, "") else str(row["id"])  # an id 0 is an id
        if item_id in seen:
            raise DataError(f"{where}: id '{item_id}' occurs twice; resume needs unique ids")
        seen.add(item_id)
        context = "" if row.get("context") is None else str(row["context"])
        items.append({"id": item_id, "question": question, "context": context,
                      "choices": choices, "answer": gold, "answer_type": answer_type})
    return items


def read_output(output: Path) -> tuple[list[dict], int]:
    """The output's lines that are JSON objects with an id, and how many other lines it has (appends never leave
    half a line, but a user's editor may)."""
    rows, others = [], 0
    for line in output.read_text(encoding="utf-8").splitlines() if output.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
        elif line.strip():
            others += 1
    return rows, others


def done_ids(output: Path) -> set[str]:
    return {str(row["id"]) for row in read_output(output)[0]}


def append_lines(output: Path, rows: list[dict]) -> None:
    """One write + fsync of whole lines: a kill leaves the file with or without the batch, never half a line
    (a single small append of complete lines is not interleaved; O_APPEND writes land at the end)."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    descriptor = os.open(output, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        if size and os.pread(descriptor, 1, size - 1) != b"\n":
            data = b"\n" + data  # a line cut by a user's editor stays apart from the first new one
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view):]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def restore_input_order(output: Path, ids: list[str]) -> None:
    """Rewrite output with its lines in the order of ids (atomically: a kill leaves it as it was or sorted).
    Lines of other ids keep their order ahead of them; lines that are not JSON with an id are left out."""
    rows, others = read_output(output)
    position = {key: number for number, key in enumerate(ids)}
    ordered = sorted(rows, key=lambda row: position.get(str(row["id"]), -1))
    if ordered != rows:
        if others:
            log.warning("%s: leaving out %d lines that are not JSON objects with an id", output, others)
        write_jsonl_atomic(output, ordered)


# ---- the model ------------------------------------------------------------------------------------------------

def job_config(run_dir: Path) -> DictConfig:
    results = run_dir / "results.json"
    if not run_dir.is_dir():
        raise ConfigError("run", f"{run_dir}: no such job directory")
    if not results.is_file():
        raise ConfigError("run", f"{run_dir}: no results.json, so not a medgrpo job directory")
    config = json.loads(results.read_text()).get("config")
    if not config:
        raise ConfigError("run", f"{results}: has no resolved 'config'")
    return OmegaConf.create(config)


def default_config(model: str) -> DictConfig:
    """conf/ defaults (prompt, budget, eval, backend) around a hub id or a local model dir, loaded as stored
    (a merged export is 16-bit; the default 4-bit QLoRA would need CUDA and quantize it)."""
    from medgrpo.config import compose_config

    return compose_config(f"model.name_or_path={model}", "model.builder=null", "lora.load_in_4bit=false",
                          output_dir=".")


@dataclass
class Predictor:
    """A loaded policy with the prompt format, templates, budget and sampling of its job's evaluation."""

    policy: object
    engine: object
    prompt_format: object
    budget: object
    sampling: object
    templates: dict[str, str]
    name: str

    @classmethod
    def load(cls, cfg: DictConfig, adapter: Path | None, name: str, batch_size: int | None = None,
             max_new_tokens: int | None = None) -> "Predictor":
        from medgrpo.backends import LoraSpec, load_policy, resolve_backend, resolve_model_path
        from medgrpo.evaluation.engine import check_engine_request

        lora = LoraSpec.from_config(cfg.lora)
        backend = resolve_backend(cfg.backend, lora)
        model_path = resolve_model_path(cfg.model)
        vllm_eval = check_engine_request(cfg.eval.engine, backend, cfg.backend, lora, adapter, cfg.model, model_path)
        log.info("%s: loading %s%s", name, cfg.model.name_or_path, f" with adapter {adapter}" if adapter else "")
        policy = load_policy(backend, cfg.model, lora, backend_cfg=cfg.backend, model_path=model_path,
                             adapter_path=adapter, trainable=False, seed=cfg.seed, vllm_eval=vllm_eval)
        return cls.for_policy(cfg, policy, name, batch_size, max_new_tokens)

    @classmethod
    def for_policy(cls, cfg: DictConfig, policy, name: str, batch_size: int | None = None,
                   max_new_tokens: int | None = None) -> "Predictor":
        """A loaded policy with the engine EvalRunner would build for it, and the job's eval settings."""
        from medgrpo.evaluation.budget import Budget
        from medgrpo.evaluation.engine import HFEngine, Sampling, VLLMEngine, choose_engine
        from medgrpo.prompting import PromptFormat

        if choose_engine(cfg.eval.engine, policy) == "vllm":
            engine = VLLMEngine(policy)
        else:
            engine = HFEngine(policy.model, policy.tokenizer, batch_size or cfg.eval.batch_size, progress=False)
        templates = {str(cfg.data.sources[s].answer_type): str(cfg.data.sources[s].template)
                     for s in OmegaConf.to_container(cfg.data.get("eval") or []) if s in cfg.data.sources}
        return cls(policy, engine, PromptFormat.from_config(cfg.prompt),
                   Budget.from_config(cfg.budget, max_new_tokens or cfg.eval.max_new_tokens),
                   Sampling(temperature=cfg.eval.temperature, top_p=cfg.eval.top_p), templates, name)

    def render(self, item: dict) -> list[dict]:
        """The chat prompt: the job's eval template for this answer type when the item fills its slots."""
        from medgrpo.data.render import render_user

        template = self.templates.get(item["answer_type"])
        if template is None or ("{context}" in template and not item["context"]) or (
                "{options}" in template and not item["choices"]):
            template = GENERIC_TEMPLATES["choice"] if item["choices"] else (
                GENERIC_TEMPLATES["context"] if item["context"] else "{question}")
        user = render_user(template, item["question"], item["context"], item["choices"])
        return [{"role": "system", "content": self.prompt_format.system}, {"role": "user", "content": user}]

    def predict(self, items: list[dict], budget=None, sampling=None) -> list[dict]:
        """Output lines for items, generated by evaluation's own evaluate_dataset (budget forcing included)."""
        from medgrpo.evaluation.budget import BudgetForcer
        from medgrpo.evaluation.evaluate import evaluate_dataset
        from medgrpo.grading import extract

        tokenizer = self.policy.tokenizer
        forcer = BudgetForcer(self.engine, tokenizer, budget or self.budget, self.prompt_format.think_close)
        # evaluate_dataset grades every row against a gold: an item without one is graded as an open answer
        # against a placeholder, then its answer is extracted by its own type below.
        rows = [{"id": item["id"], "prompt": self.render(item), "choices": item["choices"] or None, "meta": None,
                 "answer": item["answer"] if item["answer"] is not None else "-",
                 "answer_type": item["answer_type"] if item["answer"] is not None else "open"} for item in items]
        predicted = evaluate_dataset(rows, tokenizer, forcer, sampling or self.sampling, num_samples=1)
        lines = []
        for item, row in zip(items, predicted):
            line = {key: row[key] for key in ("id", "prompt", "completion", "extracted", "completion_tokens",
                                              "thinking_tokens", "waits", "truncated")}
            if item["answer"] is None:
                line["extracted"] = extract(row["completion"], item["answer_type"], item["choices"] or None).extracted
            else:
                line.update(answer=row["answer"], correct=row["correct"], correct_strict=row["correct_strict"])
            lines.append(line)
        return lines


def load_predictor(args: dict[str, str], name: str = "model") -> Predictor:
    """From run=<job dir> (its adapter, or its base when it saved none) or model=<id or dir> [adapter=<dir>]."""
    if ("run" in args) == ("model" in args):
        raise ConfigError("run", "give either run=<job dir> or model=<hub id or dir> (with adapter=<dir>)")
    if "run" in args:
        run_dir = Path(args["run"])
        cfg = job_config(run_dir)
        adapter = run_dir / "adapter"  # a LoRA, or the whole trained model after lora.method=full
        if not adapter.is_dir():
            log.warning("%s has no adapter/: predicting with its base model", run_dir)
            adapter = None
        elif (problem := trained_weights_problem(adapter, cfg.lora.get("method", "lora"))) is not None:
            raise ConfigError("run", problem)
        return Predictor.load(cfg, adapter, name or run_dir.name, *_limits(args))
    adapter = Path(args["adapter"]) if args.get("adapter") else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise ConfigError("adapter", f"{adapter}: no adapter_config.json, so not a LoRA adapter directory")
    return Predictor.load(default_config(args["model"]), adapter, name or args["model"], *_limits(args))


def _limits(args: dict[str, str]) -> tuple[int | None, int | None]:
    """(batch_size, max_new_tokens) when given, each a positive integer."""
    values = []
    for key in ("batch_size", "max_new_tokens"):
        value = args.get(key)
        if value is not None and (not value.isdigit() or int(value) <= 0):
            raise ConfigError(key, f"expected a positive integer, got {value!r}")
        values.append(int(value) if value is not None else None)
    return values[0], values[1]


def predict_file(items: list[dict], output: Path, load: Callable[[], Predictor]) -> int:
    """Predict the items not yet in output, then put its lines in input order; returns how many were written.
    The model loads (load()) only when some are left. They go longest prompt first in batches of the engine's
    size, as evaluation batches a set (engine.longest_first), so a batch pads little; each batch is appended as
    it finishes, so a kill loses at most the batch under way."""
    from tqdm.auto import tqdm

    from medgrpo.data.render import prompt_token_lengths
    from medgrpo.evaluation.engine import longest_first

    done = done_ids(output)
    todo = [item for item in items if item["id"] not in done]
    log.info("%d items: %d already in %s, %d to predict", len(items), len(items) - len(todo), output, len(todo))
    if todo:
        predictor = load()
        lengths = prompt_token_lengths(predictor.policy.tokenizer, [predictor.render(item) for item in todo])
        todo = [todo[i] for i in longest_first(lengths)]
        batch = getattr(predictor.engine, "batch_size", 256)  # vLLM schedules its own batches: just chunks
        output.parent.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(todo), desc="predict", unit="item") as progress:
            for start in range(0, len(todo), batch):
                lines = predictor.predict(todo[start:start + batch])
                append_lines(output, lines)
                progress.update(len(lines))
    restore_input_order(output, [item["id"] for item in items])
    return len(todo)


def run(args: dict[str, str]) -> int:
    """Predict every item of input not yet in output; returns how many lines were written."""
    for key in ("input", "output"):
        if key not in args:
            raise ConfigError(key, f"missing; usage: {__doc__.splitlines()[2].strip()}")
    if "run" in args:
        job_config(Path(args["run"]))  # an unknown job dir fails before the input is read or a model loads
    log.info("reading %s", args["input"])
    items = parse_items(Path(args["input"]))
    return predict_file(items, Path(args["output"]), lambda: load_predictor(args, name=""))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = run(parse_args(sys.argv[1:] if argv is None else argv, KEYS))
    except MedgrpoError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("wrote %d lines", written)


if __name__ == "__main__":
    main()
