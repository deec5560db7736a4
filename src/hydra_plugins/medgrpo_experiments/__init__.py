"""experiments/ as the `experiment` config group, through Hydra's search path (no symlink under conf/).

Each file experiments/<name>.yaml is the config `experiment/<name>`, so `experiment=<name>` and
`+experiment=<name>` select it. Links break on some filesystems, in zips and on Windows checkouts; a config source
does not. Hydra discovers both classes here because they live in the `hydra_plugins` namespace package.
"""
from __future__ import annotations

import os
from pathlib import Path

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "experiment"
EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"


class ExperimentsConfigSource(FileConfigSource):
    """A folder of YAMLs served as the one config group `experiment` (and nothing else)."""

    @staticmethod
    def scheme() -> str:
        return "medgrpo-experiments"

    def _real(self, config_path: str) -> str | None:
        if config_path == GROUP:
            return self.path
        if config_path.startswith(GROUP + "/"):
            return os.path.join(self.path, config_path[len(GROUP) + 1:])
        return None

    def load_config(self, config_path: str):
        return super().load_config(self._real(config_path) or config_path)

    def is_group(self, config_path: str) -> bool:
        real = self._real(config_path)
        return config_path == "" or (real is not None and os.path.isdir(real))

    def is_config(self, config_path: str) -> bool:
        real = self._real(self._normalize_file_name(config_path))
        return real is not None and os.path.isfile(real)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        real = self._real(config_path)
        names = [GROUP] if config_path == "" else sorted(os.listdir(real)) if real and os.path.isdir(real) else []
        files: list[str] = []
        for name in names:
            self._list_add_result(files, os.path.join(config_path, name), name, results_filter)
        return sorted(set(files))


class ExperimentsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="medgrpo-experiments", path=f"medgrpo-experiments://{EXPERIMENTS_DIR}")
