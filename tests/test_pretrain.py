"""Pretraining the small backbone on the tiny pretraining corpus (issue 13): resumable to the same weights,
cached by content, and a missing or mismatched weights file names the command that builds it."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import pytest
import torch

from zssbir import paths
from zssbir.models.backbones import build_backbone
from zssbir.training import pretrain as pt
from zssbir.training import pretrained_files as files
from zssbir.training import pretrained_store as store

from conftest import interrupt_forward

TINY = pt.PretrainSettings(corpus="synthetic_pretrain_tiny", image_size=32, embed_dim=32, epochs=2, batch_size=12,
                           backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def _weights(out):
    return torch.load(out / "backbone.pt", weights_only=True)


def test_interrupted_pretraining_resumes_to_the_same_weights(isolated_dirs, monkeypatch):
    whole = _weights(pt.pretrain(TINY, progress=False))
    monkeypatch.setenv("ZSSBIR_RUNS", str(isolated_dirs / "runs2"))
    restore = interrupt_forward(monkeypatch, pt.Classifier, at_call=6, method="losses")  # epoch 2 (4 steps each)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(TINY, progress=False)
    out = next((isolated_dirs / "runs2" / "pretrain").iterdir())
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 0 and not (out / "backbone.pt").exists()
    restore()
    resumed = _weights(pt.pretrain(TINY, progress=False))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_pretraining_is_cached_by_content_and_its_file_is_named_and_checked(isolated_dirs, monkeypatch):
    monkeypatch.setenv("ZSSBIR_PRETRAINED", str(isolated_dirs / "committed"))
    with pytest.raises(FileNotFoundError, match=r"no pretrained backbone for these settings and this code \(key "
                                                r"[0-9a-f]{16}\); build it with `python -c .*pretrain\(PretrainSettings"
                                                r"\(corpus='synthetic_pre"):
        store.pretrained_weights(TINY)
    assert files.build_command(pt.PretrainSettings()) == "make pretrain"
    assert files.build_command(pt.PretrainSettings(corpus="synthetic_pretrain_tiny", epochs=1, num_workers=2)) == \
        "python -m zssbir.training.pretrain --corpus synthetic_pretrain_tiny --epochs 1"
    out = pt.pretrain(TINY, progress=False)
    path = store.pretrained_weights(TINY)
    assert path == out / "backbone.pt"
    info = json.loads((out / "pretrain.json").read_text())
    assert info["backbone_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and len(info["history"]) == 2
    assert info["text_sha256"] == hashlib.sha256((out / "text.pt").read_bytes()).hexdigest()
    assert {"val_top1", "val_text_top1"} <= set(info["history"][-1])  # the caption loss trained a text tower
    net = build_backbone("small", embed_dim=32, image_size=32, pretrained=str(path), **TINY.backbone_params)
    assert all(torch.equal(v, _weights(out)[k]) for k, v in net.state_dict().items())
    # reopened, not trained again: same settings (runtime ones may differ), same code, same corpus
    monkeypatch.setattr(pt.Classifier, "forward", lambda *a: pytest.fail("trained again"))
    monkeypatch.setattr(pt.Classifier, "losses", lambda *a: pytest.fail("trained again"))
    assert pt.pretrain(replace(TINY, num_workers=1, torch_threads=1), progress=False) == out
    # other settings or other code: another key, so the file is missing and the error names the command
    with pytest.raises(FileNotFoundError, match="other pretrained folders exist"):
        store.pretrained_weights(replace(TINY, seed=1))
    monkeypatch.setattr(pt, "code_digest", lambda: {"training/pretrain.py": "changed"})
    with pytest.raises(FileNotFoundError, match="no pretrained backbone for these settings and this code .*; build it "
                                                "with `python -c "):
        store.pretrained_weights(TINY)


def test_a_committed_pretraining_is_used_without_the_corpus_and_only_with_its_key(isolated_dirs, monkeypatch):
    committed = isolated_dirs / "committed"
    monkeypatch.setenv("ZSSBIR_PRETRAINED", str(committed))
    key = pt.content_key(TINY)
    with pytest.raises(FileNotFoundError, match="nothing to commit"):
        files.commit(TINY, key)
    stale = committed / "synthetic_pretrain_tiny_0000000000000000"  # a committed folder of other code
    stale.mkdir(parents=True)
    (stale / "backbone.pt").write_bytes(b"old")
    built = pt.pretrain(TINY, progress=False)
    folder = files.commit(TINY, key)
    assert folder.parent == committed and not stale.exists() and not (folder / "checkpoint.pt").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["backbone.pt", "head.pt", "pretrain.json", "text.pt"]
    assert (folder / "backbone.pt").read_bytes() == (built / "backbone.pt").read_bytes()
    # a fresh machine: no runs folder, no corpus; the committed folder is reopened without generating anything
    shutil.rmtree(built.parent)
    shutil.rmtree(isolated_dirs / "data")
    monkeypatch.setattr(pt, "ensure_corpus", lambda *a, **k: pytest.fail("generated the corpus"))
    assert pt.pretrain(TINY, progress=False) == folder
    assert store.pretrained_weights(TINY) == folder / "backbone.pt"
    # other code: the committed folder is not taken for it
    monkeypatch.setattr(pt, "code_digest", lambda: {"training/pretrain.py": "changed"})
    with pytest.raises(FileNotFoundError, match=f"other pretrained folders exist, made by other settings or code: "
                                                f"{folder}"):
        store.pretrained_weights(TINY)


def test_the_repository_keeps_the_current_default_pretraining():
    """data/pretrained/ holds the folder of the default settings and this code (checksums as recorded). Changing a
    file of PRETRAIN_CODE or the corpus makes this fail: rebuild and commit with
    `python -m zssbir.training.pretrain --commit` (about 7 minutes on 2 CPU cores)."""
    settings = pt.PretrainSettings()
    folder = files.committed_dir(settings, pt.content_key(settings))
    assert files.is_finished(folder, settings) and folder.parent == paths.pretrained_dir(), (
        "the committed pretraining is not the current one: rebuild it with "
        "`python -m zssbir.training.pretrain --commit` and commit data/pretrained/")
    info = json.loads((folder / "pretrain.json").read_text())
    assert info["key"] == pt.content_key(settings) and info["command"] == "make pretrain"
    for name, key in (("backbone.pt", "backbone_sha256"), ("head.pt", "head_sha256"), ("text.pt", "text_sha256")):
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == info[key], name
    assert sum((folder / n).stat().st_size for n in files.outputs(settings)) < 6 * 2**20  # a few MB


def test_a_run_starts_from_the_pretraining_and_distils_from_its_frozen_teacher(isolated_dirs):
    from zssbir.data.datasets import load_split
    from zssbir.data.tools import ensure_dataset
    from zssbir.models.factory import build_model
    from zssbir.training.config import TrainConfig
    from zssbir.training.loop import load_trained, train

    out = pt.pretrain(TINY, progress=False)
    path = str(out / "backbone.pt")
    config = TrainConfig(dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=12, epochs=1,
                         max_steps_per_epoch=2, backbone_params=TINY.backbone_params, pretrained=path,
                         teacher_weights=path, lambda_kd=1.0)
    ensure_dataset("synthetic_tiny")
    names = load_split("synthetic_tiny", "train", "photo", check_files=False).class_names
    model = build_model(config, names).eval()
    head = torch.load(out / "head.pt", weights_only=True)
    student = model.backbone.state_dict()
    assert all(torch.equal(student[k], v) for k, v in _weights(out).items())
    assert torch.equal(student["imagenet_head.weight"], head["weight"]) and len(head["weight"]) == 12  # corpus classes
    images = torch.randn(5, 3, 32, 32)
    assert torch.allclose(model.backbone(images).logits_imagenet, model.teacher(images), atol=1e-5)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}

    run = train(config, run_dir=isolated_dirs / "run", progress=False)
    assert run.history[-1]["loss_kd"] > 0, run.history[-1]
    assert all(torch.equal(run.model.teacher.state_dict()[k], v) for k, v in teacher_before.items()), "teacher moved"
    assert not all(torch.equal(run.model.backbone.state_dict()[k], student[k]) for k in student), "student did not"
    # a trained run is evaluated without the pretraining files (its checkpoint holds the student)
    for name in ("backbone.pt", "head.pt"):
        (out / name).unlink()
    evaluated, _ = load_trained(isolated_dirs / "run")
    assert getattr(evaluated.backbone, "imagenet_head") is None
    assert torch.allclose(evaluated.embed(images, torch.zeros(5, dtype=torch.long)),
                          run.model.eval().embed(images, torch.zeros(5, dtype=torch.long)), atol=1e-5)


def test_pretrained_weights_by_name_and_their_misuse_are_explained(isolated_dirs, tmp_path, monkeypatch):
    from zssbir.models.factory import build_model
    from zssbir.training.config import TrainConfig

    monkeypatch.setenv("ZSSBIR_PRETRAINED", str(tmp_path / "none committed"))
    with pytest.raises(FileNotFoundError, match="build it with `make pretrain`"):
        build_model(TrainConfig(dataset="synthetic_tiny", pretrained="pretrain"), ["a", "b"])
    assert store.settings_for("pretrain") == pt.PretrainSettings()
    assert store.settings_for("pretrain_hard") == pt.PretrainSettings(corpus="synthetic_pretrain_hard")
    with pytest.raises(ValueError, match="'imagenet' names no pretraining of the miniature: use one of pretrain"):
        store.settings_for("imagenet")
    with pytest.raises(ValueError, match="'pretrain' names the small backbone's pretraining"):
        TrainConfig(backbone="clip:ViT-B-32", pretrained="pretrain")
    with pytest.raises(ValueError, match="set pretrained and teacher_weights to the same weights"):
        build_model(TrainConfig(dataset="synthetic_tiny", lambda_kd=1.0, teacher_weights="pretrain"), ["a", "b"])
    out = pt.pretrain(TINY, progress=False)
    with pytest.raises(ValueError, match="does not fit this small backbone .*use the backbone settings it was saved"):
        build_backbone("small", embed_dim=48, image_size=32, pretrained=str(out / "backbone.pt"),
                       **TINY.backbone_params)
    lone = tmp_path / "lone" / "backbone.pt"
    lone.parent.mkdir()
    lone.write_bytes((out / "backbone.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match="head.pt is missing: .*rebuild both with `make pretrain`"):
        build_backbone("small", embed_dim=32, image_size=32, pretrained=str(lone), imagenet_head=True,
                       **TINY.backbone_params)


def test_the_readme_quotes_the_committed_pretraining_record():
    settings = pt.PretrainSettings()
    info = json.loads((files.committed_dir(settings, pt.content_key(settings)) / "pretrain.json").read_text())
    last = info["history"][-1]
    readme = " ".join((paths.project_root() / "README.md").read_text().split())
    assert (f"records {len(info['history'])} epochs ending at held-out top-1 {last['val_top1']:.3f} by the class head "
            f"and {last['val_text_top1']:.3f} by the nearest class caption") in readme
