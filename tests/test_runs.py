"""One run definition: names from settings, runs opened only when they exist, code changes never reused silently."""
import dataclasses

import pytest
import yaml

from zssbir.models.clusterretri import ClusterRetri
from zssbir.study import runs
from zssbir.training import identity
from zssbir.training.config import RUNTIME_FIELDS, TrainConfig

TINY = dict(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1, max_steps_per_epoch=2,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})

# a value other than the default for every TrainConfig field that is not spelled out in the name
OTHER = {"data_root": "/elsewhere", "pretrained": "w.pt", "backbone_params": {"width": 8}, "embed_dim": 7,
         "image_size": 40, "epochs": 3, "batch_size": 5, "sketch_fraction": 0.5, "lr": 0.1, "lr_final_factor": 0.5,
         "weight_decay": 0.0, "lambda_kd": 1.0, "teacher_weights": "t.pt", "kd_temperature": 2.0, "augment": False,
         "transform": "clip", "selection": "last", "augmentation": "authors", "protocol": "authors",
         "epoch_mode": "shorter_loader", "lambda_kd_mask": 0.3, "kd_mask": "m.pickle", "validation_gallery": 100, "max_steps_per_epoch": 4, "device": "cpu", "amp": False,
         "num_workers": 3, "unreadable_images": "skip", "decoded_cache": True, "torch_threads": 1,
         "mismatched_pairs": 0.25, "log_every": 5, "channels_last": True, "compile": True}


def test_default_runs_have_short_names_and_method_defaults():
    assert runs.run_name(TrainConfig()) == "clusterretri_synthetic_small_lda0.1_seed0"
    assert runs.run_name(TrainConfig(method="dmwa")) == "dmwa_synthetic_small_wboth_quadruplet_seed0"
    assert TrainConfig(method="dmwa").lambda_da == 0.0 and TrainConfig().lambda_da == 0.1
    with pytest.raises(ValueError, match=r"unknown method 'dmwaa'; known: \['clusterretri', 'dmwa'\]"):
        TrainConfig(method="dmwaa")


def test_every_setting_that_changes_training_changes_the_name():
    base = runs.run_name(TrainConfig())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(OTHER) | {"method", "dataset", "backbone", "lambda_da", "method_params", "seed"} == fields
    for field, value in OTHER.items():
        needs = {"lambda_kd": 1.0, "teacher_weights": "t.pt"} if field in ("lambda_kd", "teacher_weights") else {}
        if field in ("lambda_kd_mask", "kd_mask"):
            needs = {"lambda_kd": 1.0, "teacher_weights": "t.pt", "kd_mask": "m.pickle", "lambda_kd_mask": 0.3}
        if field == "mismatched_pairs":  # DMWA's quadruplets only
            needs = {"method": "dmwa"}
        name = runs.run_name(TrainConfig(**{field: value, **needs}))
        if field in RUNTIME_FIELDS:
            assert name == base, field
        elif field == "mismatched_pairs":
            assert name != runs.run_name(TrainConfig(method="dmwa")) and "_p" in name, field
        else:
            assert name != base and "_p" in name, field
    assert runs.run_name(TrainConfig(seed=3)).endswith("_seed3")
    assert "lda0_" in runs.run_name(TrainConfig(lambda_da=0.0))
    dmwa = runs.run_name(TrainConfig(method="dmwa", method_params={"tau": 0.5}))
    assert dmwa != runs.run_name(TrainConfig(method="dmwa")) and "_p" in dmwa
    assert runs.run_name(TrainConfig(method="dmwa", method_params={"tau": 0.2})) == \
        runs.run_name(TrainConfig(method="dmwa"))  # 0.2 is the default


def test_run_config_reads_a_settings_file_with_overrides():
    config = runs.run_config("study/clusterretri.yaml", {"lambda_da": 0.0, "seed": 2}, device="cpu")
    settings = yaml.safe_load(runs.config_path("study/clusterretri.yaml").read_text())
    assert (config.lambda_da, config.seed, config.device, config.epochs) == (0.0, 2, "cpu", settings["epochs"])
    with pytest.raises(ValueError, match=r"unknown training parameters \['epoch'\]"):
        runs.run_config("study/clusterretri.yaml", {"epoch": 1})
    with pytest.raises(FileNotFoundError, match=r"no settings file 'nope.yaml'.*study/clusterretri.yaml"):
        runs.run_config("nope.yaml")


def test_open_run_refuses_missing_and_unfinished_runs(isolated_dirs, monkeypatch):
    config = TrainConfig(**{**TINY, "epochs": 2})
    with pytest.raises(runs.RunNotFoundError, match=rf"run {runs.run_name(config)} does not exist.*01_train"):
        runs.open_run(config, device="cpu")
    calls = {"n": 0}
    original = ClusterRetri.forward

    def crash_in_epoch_two(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        runs.train_run(config, progress=False)
    with pytest.raises(runs.RunNotFoundError, match="stopped after epoch 1 of 2"):
        runs.open_run(config, device="cpu")
    run = runs.trained_run(config, progress=False, device="cpu")
    assert run.name == runs.run_name(config) and [h["epoch"] for h in run.history] == [0, 1]
    assert calls["n"] == 2 + 1 + 2  # epoch 1, the crashed call, epoch 2 only: epoch 1 was not trained again


def test_code_changes_are_refused_retrained_or_reused_as_asked(isolated_dirs, monkeypatch):
    config = TrainConfig(**TINY)
    first = runs.trained_run(config, progress=False, device="cpu")
    recorded = identity.training_code()
    assert {"models/losses.py", "config.py", "training/loop.py"} <= set(recorded)  # the losses and settings too
    changed = {**recorded, "models/losses.py": "0" * 16}
    monkeypatch.setattr(identity, "training_code", lambda: changed)
    monkeypatch.setattr(runs, "training_code", lambda: changed)
    import zssbir.training.loop as loop

    monkeypatch.setattr(loop, "training_code", lambda: changed)
    with pytest.raises(runs.RunNotFoundError, match=r"trained by other code \(changed: models/losses.py\)"):
        runs.open_run(config, device="cpu")
    with pytest.raises(ValueError, match=r"other code \(changed: models/losses.py\).*retrain"):
        runs.train_run(config, progress=False)
    calls = {"n": 0}
    original = ClusterRetri.forward

    def counted(self, batch):
        calls["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(ClusterRetri, "forward", counted)
    runs.train_run(config, progress=False, if_code_changed="reuse")
    assert calls["n"] == 0  # reused: not trained again
    assert runs.open_run(config, device="cpu", if_code_changed="reuse").name == first.name
    runs.train_run(config, progress=False, if_code_changed="retrain")
    assert calls["n"] == 2  # trained again from scratch (two steps)
    assert runs.open_run(config, device="cpu").name == first.name  # now recorded with the new code


def test_the_miniature_pretraining_enters_a_run_name_by_its_content(monkeypatch):
    """A run fine-tuned from `pretrained: pretrain` is named by that pretraining's content key: redoing the
    pretraining with other code or settings gives new run names, so an old fine-tuned run is never reopened."""
    from zssbir.training import pretrain as pt

    config = TrainConfig(pretrained="pretrain", teacher_weights="pretrain", lambda_kd=1.0)
    before = runs.run_name(config)
    monkeypatch.setattr(pt, "code_digest", lambda: {"training/pretrain.py": "changed"})
    after = runs.run_name(config)
    assert before != after and after != runs.run_name(TrainConfig(lambda_kd=1.0, teacher_weights="t.pt"))
    assert runs.run_name(TrainConfig(pretrained="/a/backbone.pt")) == runs.run_name(TrainConfig(pretrained="/a/backbone.pt"))
    grid = runs.run_grid("study/clusterretri.yaml", {"epochs": 1}, seeds=[0, 1], starts=["pretrained", "scratch"],
                         vary={"lambda_da": [0.1, 0.0]})
    assert [(runs.start_of(c), c.lambda_da, c.seed) for c in grid[:3]] == [("pretrained", 0.1, 0), ("pretrained", 0.1, 1),
                                                                          ("pretrained", 0.0, 0)]
    assert len({runs.run_name(c) for c in grid}) == 8 and all(c.epochs == 1 for c in grid)
    assert all(c.lambda_kd == 0 and c.teacher_weights is None for c in grid if runs.start_of(c) == "scratch")
    with pytest.raises(ValueError, match="unknown start 'imagenet': use one of pretrained, pretrained_nokd, scratch"):
        runs.run_grid("study/clusterretri.yaml", seeds=[0], starts=["imagenet"])
    with pytest.raises(ValueError, match="needs at least one seed"):
        runs.run_grid("study/clusterretri.yaml", seeds=[])
