"""ClusterRetri's loss terms (with SAKE distillation) and the content-keyed feature cache."""
import numpy as np
import pytest
import torch

from zssbir.data.datasets import load_split
from zssbir.data.tools import ensure_dataset
from zssbir.data.transforms import build_transform
from zssbir.training import features
from zssbir.models.backbones import build_backbone
from zssbir.models.clusterretri import ClusterRetri


def test_clusterretri_terms_with_distillation():
    from zssbir.models.cse_resnet import build_imagenet_teacher

    torch.manual_seed(0)
    backbone = build_backbone("cse_resnet50", embed_dim=16, image_size=32, imagenet_head=True)
    with pytest.warns(UserWarning):
        teacher = build_imagenet_teacher(None)
    model = ClusterRetri(backbone, n_classes=3, lambda_da=0.1, lambda_kd=1.0, teacher=teacher)
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0]),
             "domain": torch.tensor([0, 0, 1, 1])}
    terms = model(batch)
    assert set(terms) == {"ce", "da", "kd", "total"}
    assert torch.allclose(terms["total"], terms["ce"] + 0.1 * terms["da"] + terms["kd"])
    terms["total"].backward()
    assert backbone.imagenet_head.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="needs a teacher"):
        ClusterRetri(backbone, 3, lambda_kd=1.0)


def test_plain_baseline_has_no_alignment_term():
    backbone = build_backbone("small", embed_dim=8, image_size=32, width=16, depth=1, heads=2, stem_channels=(8, 8, 16))
    terms = ClusterRetri(backbone, 2, lambda_da=0.0)({"image": torch.randn(2, 3, 32, 32),
                                                     "label": torch.tensor([0, 1]), "domain": torch.tensor([0, 1])})
    assert set(terms) == {"ce", "total"} and torch.equal(terms["ce"], terms["total"])


@pytest.fixture
def tiny_photos(isolated_dirs):
    ensure_dataset("synthetic_tiny")
    return load_split("synthetic_tiny", "zero", "photo", transform=build_transform("photo", 32))


def test_feature_cache_is_keyed_by_content(tiny_photos, monkeypatch, isolated_dirs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    encode = lambda x, d: model(x)
    first, labels = features.cached_features(encode, model, tiny_photos)
    assert first.shape == (len(tiny_photos), 4) and list(labels) == tiny_photos.labels
    assert len(list((isolated_dirs / "cache" / "features").glob("*.npz"))) == 1

    with monkeypatch.context() as patch:
        patch.setattr(features, "extract", lambda *a, **k: pytest.fail("re-encoded although cached"))
        again, _ = features.cached_features(encode, model, tiny_photos)
    assert np.array_equal(first, again)

    with torch.no_grad():
        model[1].bias += 1.0  # new weights: a new key, new features
    changed, _ = features.cached_features(encode, model, tiny_photos)
    assert not np.array_equal(first, changed)
    assert len(list((isolated_dirs / "cache" / "features").glob("*.npz"))) == 2


def test_nan_features_are_refused(tiny_photos):
    with pytest.raises(ValueError, match=r"\d+ of \d+ features are NaN or infinite"):
        features.extract(lambda x, d: torch.full((len(x), 3), float("nan")), tiny_photos)


def test_cache_key_is_stable_for_transforms_with_functions(tiny_photos):
    from zssbir.data.transforms import build_transform

    keys = []
    for _ in range(2):  # zse_sbir sketches use plain functions and a lambda, whose repr holds an address
        tiny_photos.transform = build_transform("sketch", 32, "zse_sbir")
        keys.append(features.cache_key("m", tiny_photos))
    assert keys[0] == keys[1] and " at 0x" not in keys[0]["transform"]
    tiny_photos.transform = build_transform("sketch", 32, "sake")
    assert features.cache_key("m", tiny_photos)["transform"] != keys[0]["transform"]
