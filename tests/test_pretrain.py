"""Pretraining the small backbone on the tiny pretraining corpus (issue 13): resumable to the same weights,
cached by content, and a missing or mismatched weights file names the command that builds it."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from zssbir.models.backbones import build_backbone
from zssbir.training import pretrain as pt

from conftest import interrupt_forward

TINY = pt.PretrainSettings(corpus="synthetic_pretrain_tiny", image_size=32, embed_dim=32, epochs=2, batch_size=12,
                           backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def _weights(out):
    return torch.load(out / "backbone.pt", weights_only=True)


def test_interrupted_pretraining_resumes_to_the_same_weights(isolated_dirs, monkeypatch):
    whole = _weights(pt.pretrain(TINY, progress=False))
    monkeypatch.setenv("ZSSBIR_RUNS", str(isolated_dirs / "runs2"))
    restore = interrupt_forward(monkeypatch, pt.Classifier, at_call=6)  # in epoch 2 (4 steps per epoch)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(TINY, progress=False)
    out = next((isolated_dirs / "runs2" / "pretrain").iterdir())
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 0 and not (out / "backbone.pt").exists()
    restore()
    resumed = _weights(pt.pretrain(TINY, progress=False))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_pretraining_is_cached_by_content_and_its_file_is_named_and_checked(isolated_dirs, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"the corpus 'synthetic_pretrain_tiny' is not generated; build both "
                                                r"with `python -c .*pretrain\(PretrainSettings\(corpus='synthetic_pre"):
        pt.pretrained_weights(TINY)
    assert pt.build_command(pt.PretrainSettings()) == "make pretrain"
    assert pt.build_command(pt.PretrainSettings(corpus="synthetic_pretrain_tiny", epochs=1, num_workers=2)) == \
        "python -m zssbir.training.pretrain --corpus synthetic_pretrain_tiny --epochs 1"
    out = pt.pretrain(TINY, progress=False)
    path = pt.pretrained_weights(TINY)
    assert path == out / "backbone.pt"
    info = json.loads((out / "pretrain.json").read_text())
    assert info["backbone_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and len(info["history"]) == 2
    net = build_backbone("small", embed_dim=32, image_size=32, pretrained=str(path), **TINY.backbone_params)
    assert all(torch.equal(v, _weights(out)[k]) for k, v in net.state_dict().items())
    # reopened, not trained again: same settings (runtime ones may differ), same code, same corpus
    monkeypatch.setattr(pt.Classifier, "forward", lambda *a: pytest.fail("trained again"))
    assert pt.pretrain(replace(TINY, num_workers=1, torch_threads=1), progress=False) == out
    # other settings or other code: another key, so the file is missing and the error names the command
    with pytest.raises(FileNotFoundError, match="other pretrained files exist"):
        pt.pretrained_weights(replace(TINY, seed=1))
    monkeypatch.setattr(pt, "code_digest", lambda: {"training/pretrain.py": "changed"})
    with pytest.raises(FileNotFoundError, match="no pretrained backbone for these settings and code at .*; build it "
                                                "with `python -c "):
        pt.pretrained_weights(TINY)
