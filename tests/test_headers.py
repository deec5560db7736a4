"""Every YAML's header command is a contract, like the README's: read from the files themselves (conf/**, experiments/**;
never retyped), each one composes as `python src/run.py` would compose it and passes the checks that run before any
model loads. A sweep composes every job of its grid. The cheap CPU ones run for real (tests marked slow).

A header is the comment block a YAML starts with. A command is `python src/run.py ...` up to two spaces (what
follows is its explanation), continued on the next comment line after a trailing backslash. `[...]` is optional
and left out, `a | b` are alternatives (each one is composed), `<dir>` and `<job dir>` stand for folders.
"""
from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from medgrpo.config import CONF_DIR, canonical_overrides, validate
from tests.conftest import ROOT

COMMAND = re.compile(r"python src/run\.py(?P<args>(?:[ \t]+\S+)*)")


def header(path: Path) -> list[str]:
    """The comment lines a YAML starts with (a `# @package` directive is no comment)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line.lstrip("#").strip())
    return lines


def header_commands(path: Path) -> list[str]:
    """The `python src/run.py` commands of a YAML's header, alternatives expanded, optional parts left out."""
    lines, commands = header(path), []
    for index, line in enumerate(lines):
        for match in COMMAND.finditer(line):
            args = re.split(r"\s{2,}|`", line[match.start("args"):])[0].strip().replace("<job dir>", "<job_dir>")
            follow = index
            while args.endswith("\\") and follow + 1 < len(lines):  # a shell continuation on the next line
                follow += 1
                args = args[:-1].strip() + " " + re.split(r"\s{2,}", lines[follow].strip())[0]
            args = re.sub(r"(?<!\S)\[[^\]]*\]", " ", args)  # optional parts: "[-m]", "[hydra.sweeper.n_trials=30]"
            commands += [shlex.join(["python", "src/run.py", *choice]) for choice in _alternatives(args)]
    return commands


def _alternatives(args: str) -> list[list[str]]:
    """`data=default | data=samples` -> one argument list per alternative."""
    tokens = shlex.split(args)
    slots: list[list[str]] = []
    for token in tokens:
        if token == "|":
            slots[-1].append(None)  # the next token joins this slot
        elif slots and slots[-1][-1] is None:
            slots[-1][-1] = token
        else:
            slots.append([token])
    return [list(choice) for choice in itertools.product(*slots)]


YAMLS = sorted([*(ROOT / "conf").rglob("*.yaml"), *(ROOT / "experiments").glob("*.yaml")])
COMMANDS = sorted({(command, path.relative_to(ROOT).as_posix()) for path in YAMLS for command in header_commands(path)})


def test_the_header_reader_reads_the_conventions():
    assert _alternatives("data=default | data=samples x=1") == [["data=default", "x=1"], ["data=samples", "x=1"]]
    commands = {command for command, _ in COMMANDS}
    assert "python src/run.py -m hparams_search=pubmedqa_optuna" in commands  # [hydra.sweeper.n_trials=30] left out
    assert "python src/run.py data=default" in commands and "python src/run.py data=samples" in commands
    assert ("python src/run.py stage=sft +data/sources@data.sources.chinese_medical_dialogue=chinese_medical_dialogue "
            "'stage.sft.mix={chinese_medical_dialogue: 1}'") in commands  # continued on the next line
    assert "python src/run.py data=open_samples 'data.eval=[open_gold,redteam]'" in commands  # a list, not optional
    assert "python src/run.py reward=judge_mix data=open_samples" in commands  # conf/judge/deepseek.yaml


def test_every_yaml_header_names_the_command_that_uses_it():
    missing = [path.relative_to(ROOT).as_posix() for path in YAMLS if not header_commands(path)]
    assert not missing, f"headers without a `python src/run.py` command: {missing}"


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    """What `<job dir>` stands for: a finished job's folder with its LoRA adapter."""
    job = tmp_path_factory.mktemp("job")
    (job / "adapter").mkdir()
    (job / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    return job


def jobs_of(command: str, job: Path, folder: Path) -> list[list[str]]:
    """The overrides of each job the command starts: one for a run, the grid's combinations for a sweep."""
    argv = shlex.split(command.replace("<job_dir>", str(job)).replace("<dir>", str(folder)))[2:]
    argv = [arg for arg in argv if arg not in ("--help", "-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(canonical_overrides(argv))
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


@pytest.fixture(scope="module")
def composer(tmp_path_factory):
    """compose(overrides) in one Hydra context for the module (its config repository caches the YAML files), each
    distinct job once: many headers name the same job."""
    done: set[tuple[str, ...]] = set()

    def compose_and_check(overrides: list[str]) -> None:
        if tuple(overrides) in done:
            return
        cfg = compose("config", overrides=overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path_factory.mktemp("job"))
        validate(cfg)
        done.add(tuple(overrides))

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield compose_and_check


@pytest.mark.parametrize("command, source", COMMANDS, ids=[f"{source}: {command[18:]}" for command, source in COMMANDS])
def test_every_header_command_composes_and_passes_the_checks(command, source, composer, job_dir, monkeypatch):
    if "data=shared" in command and not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("data=shared reads ../shared/data, which is not beside this checkout")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-header-test")  # reward=judge_mix refuses a job without its key
    for overrides in jobs_of(command, job_dir, job_dir.parent / "sweep"):
        composer(overrides)


# The cheap CPU commands run for real, cut to 2 GRPO steps and 2 evaluation items (run length changes no wiring).
# Other tests run the rest: the README's tiny run (tests/test_readme.py), smoke_optuna (tests/test_sweeper.py),
# SFT -> GRPO on tiny_learner (tests/test_learning.py), the judge on open_samples (tests/test_judge_job.py).
RUN_LENGTH = {"grpo.max_steps": "2", "eval.limit": "2", "logger": "disabled"}


def runs_here(command: str) -> bool:
    return "preset=tiny" in command and not any(
        part in command for part in (" -m ", "stage=", "model=tiny_learner", "judge.base_url"))


def cut_to_run_length(command: str) -> tuple[str, ...]:
    """The command's overrides with the run length cut; later values win, as on Hydra's command line."""
    overrides = dict(arg.split("=", 1) for arg in shlex.split(command)[2:])
    return tuple(f"{key}={value}" for key, value in {**overrides, **RUN_LENGTH}.items())


PLAIN_TINY_RUN = ("preset=tiny", *[f"{key}={value}" for key, value in RUN_LENGTH.items()])  # the README's test runs it
CHEAP_RUNS = sorted({cut_to_run_length(command) for command, _ in COMMANDS if runs_here(command)} - {PLAIN_TINY_RUN})


def test_some_header_commands_are_cheap_enough_to_run_here():
    assert ("preset=tiny", "lora.rank=16", "grpo.beta=0.04", *PLAIN_TINY_RUN[1:]) in CHEAP_RUNS  # conf/preset/tiny.yaml


def on_real_model(overrides: tuple[str, ...]) -> list[pytest.MarkDecorator]:
    """A command on the real model runs with the real-model tests (make test-real), not in make test."""
    return [pytest.mark.real_model] if "model=smollm2-135m" in overrides else []


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [pytest.param(o, id=" ".join(o), marks=on_real_model(o)) for o in CHEAP_RUNS])
def test_the_cheap_header_commands_run_on_the_tiny_preset(overrides, tmp_path, model_cache):
    from tests._run import read_results, run_entrypoint

    done = run_entrypoint(*overrides, f"hydra.run.dir={tmp_path / 'job'}", cache=model_cache.parent, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert read_results(tmp_path / "job")["status"] == "ok"
