"""Every parameter file in configs/ is a valid TrainConfig for one of the real benchmarks."""
import dataclasses

import pytest

from zssbir import paths
from zssbir.study import published_numbers
from zssbir.training.config import TrainConfig

CONFIGS = sorted((paths.project_root() / "configs").rglob("*.yaml"))


def test_the_clusterretri_files_exist():
    names = {p.stem for p in CONFIGS if p.parent.name == "clusterretri"}
    assert names == set(published_numbers.DATASETS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_with_a_real_dataset_and_numeric_fields(path):
    config = TrainConfig.from_yaml(path)
    assert config.dataset in (("synthetic",) if path.parent.name == "study" else published_numbers.DATASETS)
    if path.parent.name == "clusterretri":
        assert path.stem == config.dataset
    for field in dataclasses.fields(TrainConfig):  # YAML reads 1e-4 (no dot) as a string
        if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
            assert isinstance(getattr(config, field.name), (int, float)), f"{field.name} is not a number"
    assert path.read_text().startswith("#"), "each file starts with a comment saying what it reproduces"
