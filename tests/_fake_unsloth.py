"""A FAKE unsloth (argument plumbing only) for the import-order tests, and a driver that tells this CPU machine it has
CUDA (a machine probe), so that backend=unsloth is chosen. The fake records which of trl, transformers and peft were
imported before it, then its FastLanguageModel.from_pretrained stops the job."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

STOP = "fake unsloth: no model here"


def fake_unsloth_package(tmp_path: Path) -> tuple[dict, Path]:
    """(environment for the subprocess, the record file it writes when `import unsloth` runs)."""
    package = tmp_path / "site" / "unsloth"
    package.mkdir(parents=True)
    package.joinpath("__init__.py").write_text(textwrap.dedent(f"""
        import json, os, sys
        with open(os.environ["FAKE_UNSLOTH_RECORD"], "w") as out:
            json.dump({{m: m in sys.modules for m in ("trl", "transformers", "peft")}}, out)
        class FastLanguageModel:
            @staticmethod
            def from_pretrained(**kwargs):
                raise RuntimeError({STOP!r})
        """))
    record = tmp_path / "imported_before_unsloth.json"
    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(root), os.environ.get("PYTHONPATH", "")]),
           "FAKE_UNSLOTH_RECORD": str(record)}
    return env, record


def imported_before_unsloth(record: Path) -> dict:
    return json.loads(record.read_text())


def cuda_driver(tmp_path: Path, run: str) -> Path:
    """A script that says CUDA is available, then runs `run` (Python: e.g. runpy of the entrypoint)."""
    driver = tmp_path / "with_cuda.py"
    driver.write_text("import runpy, sys\nimport medgrpo.backends\nmedgrpo.backends.cuda_available = lambda: True\n"
                      + textwrap.dedent(run))
    return driver
