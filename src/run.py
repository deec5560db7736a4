"""The medgrpo entrypoint: GRPO training then evaluation, configured by Hydra (conf/).

    python src/run.py                                   # the default recipe (GPU, downloads Qwen2.5-3B)
    python src/run.py preset=tiny                       # CPU, no download: tiny random model + bundled data
    python src/run.py -m reward=weighted lora.rank=32,64   # a grid sweep, one job per combination
    python src/run.py -m hparams_search=pubmedqa_optuna   # an Optuna study
    python src/run.py --help                            # config groups and their options

Each job writes results.json, predictions/*.jsonl and the LoRA adapter to its output directory, and returns the
configured objective (cfg.objective) to the sweeper.
"""
import sys

import hydra
from omegaconf import DictConfig

from medgrpo.config import canonical_overrides  # importing medgrpo.config registers resolvers and schemas
from medgrpo.secrets import secret_overrides_message


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from medgrpo.backends.unsloth import import_first_when_chosen
    from medgrpo.cpu import set_wait_policy

    set_wait_policy(cfg.cpu)  # OMP_WAIT_POLICY: libgomp reads it once, when torch loads
    import_first_when_chosen(cfg.backend)  # before the pipeline's modules import transformers, trl or peft
    from medgrpo.pipeline import run_job

    return run_job(cfg)


if __name__ == "__main__":
    refusal = secret_overrides_message(sys.argv[1:])  # before Hydra writes .hydra/ or names the job folder
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = canonical_overrides(sys.argv[1:])
    main()
