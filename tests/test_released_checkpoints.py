"""The authors' released checkpoints (SAKE, ClusterRetri) load into the study's cse_resnet50 (issue 23).

The fabricated checkpoints use the key names and shapes of SAKE's ``CSEResnetModel_KDHashing`` inside
``nn.DataParallel`` (github.com/qliu24/SAKE src/ResnetModel.py, src/senet.py; ClusterRetri's src/models/ are the
same), with random values in every tensor, and ``authors_forward`` recomputes their forward (SE fc2 over the
squeezed vector with the tag appended) from those keys alone, independently of the study's modules.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fabricate_sketchy_style
from zssbir.models.released_checkpoints import load_authors_checkpoint, read_checkpoint
from zssbir.models.released_features import features_from_checkpoint

STAGES = ((1, 64, 3, 1), (2, 128, 4, 2), (3, 256, 6, 2), (4, 512, 3, 2))  # layer, planes, blocks, stride
M = "module.original_model."


def authors_state_dict(num_hashing: int = 512, n_classes: int = 100, seed: int = 0, imagenet_head: bool = True,
                       prefix: str = "module.") -> dict[str, torch.Tensor]:
    """A state dict of their DataParallel(CSEResnetModel_KDHashing), every tensor random (BN stats included)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name, out, inp, k):
        sd[name] = torch.randn(out, inp, k, k, generator=g) * (2.0 / (inp * k * k)) ** 0.5

    def linear(name, out, inp):
        sd[name + ".weight"] = torch.randn(out, inp, generator=g) / inp ** 0.5
        sd[name + ".bias"] = 0.1 * torch.randn(out, generator=g)

    def bn(name, c):
        sd[name + ".weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[name + ".bias"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[name + ".running_var"] = 0.5 + torch.rand(c, generator=g)
        sd[name + ".num_batches_tracked"] = torch.tensor(1234)

    conv("original_model.layer0.conv1.weight", 64, 3, 7)
    bn("original_model.layer0.bn1", 64)
    inplanes = 64
    for layer, planes, blocks, _ in STAGES:
        c = planes * 4
        for i in range(blocks):
            p = f"original_model.layer{layer}.{i}."
            conv(p + "conv1.weight", planes, inplanes, 1)
            bn(p + "bn1", planes)
            conv(p + "conv2.weight", planes, planes, 3)
            bn(p + "bn2", planes)
            conv(p + "conv3.weight", c, planes, 1)
            bn(p + "bn3", c)
            linear(p + "se_module.fc1", c // 16, c)
            linear(p + "se_module.fc2", c, c // 16 + 1)  # the squeezed vector and the domain tag
            if i == 0:
                conv(p + "downsample.0.weight", c, inplanes, 1)
                bn(p + "downsample.1", c)
            inplanes = c
    linear("original_model.second_last_linear", num_hashing, 2048)
    if imagenet_head:
        linear("original_model.last_linear", 1000, num_hashing)
    linear("linear", n_classes, num_hashing)
    return {prefix + k: v for k, v in sd.items()}


def authors_forward(sd: dict, x: torch.Tensor, tag: torch.Tensor):
    """(embedding, class logits, ImageNet logits) as their model computes them in eval mode, from the keys alone."""
    def w(k):
        return sd[M + k]

    def bn(t, p):
        return F.batch_norm(t, w(p + ".running_mean"), w(p + ".running_var"), w(p + ".weight"), w(p + ".bias"),
                            False, 0.0, 1e-5)

    y = tag.float()[:, None]
    x = F.relu(bn(F.conv2d(x, w("layer0.conv1.weight"), stride=2, padding=3), "layer0.bn1"))
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for layer, _, blocks, stride in STAGES:
        for i in range(blocks):
            p, s = f"layer{layer}.{i}", stride if i == 0 else 1
            out = F.relu(bn(F.conv2d(x, w(p + ".conv1.weight"), stride=s), p + ".bn1"))  # stride on the 1x1
            out = F.relu(bn(F.conv2d(out, w(p + ".conv2.weight"), padding=1), p + ".bn2"))
            out = bn(F.conv2d(out, w(p + ".conv3.weight")), p + ".bn3")
            z = F.relu(F.linear(out.mean(dim=(2, 3)), w(p + ".se_module.fc1.weight"), w(p + ".se_module.fc1.bias")))
            z = torch.sigmoid(F.linear(torch.cat([z, y], 1), w(p + ".se_module.fc2.weight"),
                                       w(p + ".se_module.fc2.bias")))
            residual = x if i else bn(F.conv2d(x, w(p + ".downsample.0.weight"), stride=s), p + ".downsample.1")
            x = F.relu(out * z[:, :, None, None] + residual)
    emb = F.linear(x.mean(dim=(2, 3)), w("second_last_linear.weight"), w("second_last_linear.bias"))
    classes = F.linear(emb, sd["module.linear.weight"], sd["module.linear.bias"])
    return emb, classes, F.linear(emb, w("last_linear.weight"), w("last_linear.bias"))


def checkpoint(sd: dict, epoch: int = 12) -> dict:
    """What their train script saves as model_best.pth.tar."""
    return {"epoch": epoch, "arch": "cse_resnet50", "state_dict": sd, "best_acc1": torch.tensor(61.25),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 5e-4,
                                                         "amsgrad": False, "params": [0, 1, 2]}]}}


@pytest.fixture(scope="module")
def sake_sd():
    return authors_state_dict()


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- a full checkpoint
def test_full_checkpoint_loads_every_tensor_and_computes_their_forward(sake_sd, tmp_path):
    path = tmp_path / "model_best.pth.tar"
    torch.save(checkpoint(sake_sd), path)
    backbone, info = load_authors_checkpoint(path, dataset="sketchy_ext_split1")
    assert (info.epoch, info.best_acc1, info.num_hashing, info.n_classes) == (12, 61.25, 512, 100)
    assert info.tensors == len(sake_sd) and info.imagenet_head and info.arch == "cse_resnet50"
    assert not backbone.training and bool(backbone.trunk.stride_in_1x1)  # Cadene layout: stride on the 1x1
    # the tag column became the domain weight, the rest of fc2 the SE weights
    fc2 = sake_sd[M + "layer3.2.se_module.fc2.weight"]
    assert torch.equal(backbone.trunk.layer3[2].se.domain_weight, fc2[:, -1])
    assert torch.equal(backbone.trunk.layer3[2].se.fc2.weight, fc2[:, :-1])
    assert torch.equal(backbone.proj.weight, sake_sd[M + "second_last_linear.weight"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tag = torch.tensor([0, 1])  # a sketch and a photo: the tag column matters
    with torch.no_grad():
        emb, classes, imagenet = authors_forward(sake_sd, x, tag)
        out = backbone(x, tag)
        ours_classes = info.classifier(out.embedding)
        photo_as_sketch = backbone(x, torch.tensor([0, 0])).embedding
    assert torch.allclose(out.embedding, emb, rtol=1e-4, atol=1e-4 * float(emb.abs().max()))
    assert torch.allclose(ours_classes, classes, rtol=1e-4, atol=1e-4 * float(classes.abs().max()))
    assert torch.allclose(out.logits_imagenet, imagenet, rtol=1e-4, atol=1e-4 * float(imagenet.abs().max()))
    assert not torch.allclose(photo_as_sketch[1], out.embedding[1], atol=1e-3)


def test_bare_state_dict_without_prefix_or_batchnorm_counters(sake_sd):
    bare = {k[len("module."):]: v for k, v in sake_sd.items() if not k.endswith("num_batches_tracked")}
    bare = {k: v for k, v in bare.items() if not k.startswith("original_model.last_linear")}
    backbone, info = load_authors_checkpoint(bare)
    assert (info.epoch, info.best_acc1, info.imagenet_head) == (None, None, False)
    assert backbone.imagenet_head is None and info.tensors == len(bare)
    assert torch.equal(backbone.trunk.bn1.running_var, sake_sd[M + "layer0.bn1.running_var"])


# ---------------------------------------------------------------- every key accounted for
def test_a_leftover_key_is_named(sake_sd):
    sd = dict(sake_sd, **{"module.original_model.layer4.2.se_module.fc3.weight": torch.zeros(2, 2)})
    text = one_line_error(load_authors_checkpoint, sd)
    assert "1 tensor has no place" in text and "module.original_model.layer4.2.se_module.fc3.weight" in text


def test_a_missing_key_is_named(sake_sd):
    sd = {k: v for k, v in sake_sd.items() if k != M + "layer3.4.se_module.fc1.bias"}
    text = one_line_error(load_authors_checkpoint, sd)
    assert "1 tensor is missing" in text and "module.original_model.layer3.4.se_module.fc1.bias" in text


def test_a_wrong_shape_is_named(sake_sd):
    key = M + "layer2.1.se_module.fc2.weight"
    sd = dict(sake_sd, **{key: sake_sd[key][:, :-1].clone()})  # a plain SE block: no tag column
    text = one_line_error(load_authors_checkpoint, sd)
    assert f"{key} is [512, 32], expected [512, 33]" in text


# ---------------------------------------------------------------- checkpoints of another kind
def test_an_imagenet_se_resnet50_is_sent_to_pretrained(sake_sd, tmp_path):
    cadene = {k[len(M):]: v for k, v in sake_sd.items() if k.startswith(M) and "last_linear" not in k}
    cadene["last_linear.weight"], cadene["last_linear.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(cadene, tmp_path / "se_resnet50-ce0d4300.pth")
    text = one_line_error(load_authors_checkpoint, tmp_path / "se_resnet50-ce0d4300.pth")
    assert "ImageNet SE-ResNet50 (cadene key layout), not a SAKE/ClusterRetri checkpoint" in text
    assert "use it as `pretrained:`" in text
    timm_keys = {"conv1.weight": torch.zeros(64, 3, 7, 7), "layer1.0.se.fc1.weight": torch.zeros(16, 256, 1, 1)}
    assert "ImageNet SE-ResNet50 (timm key layout)" in one_line_error(load_authors_checkpoint, timm_keys)


def test_a_64_bit_head_where_512_was_asked(sake_sd):
    sd64 = dict(sake_sd)
    sd64[M + "second_last_linear.weight"] = sake_sd[M + "second_last_linear.weight"][:64].clone()
    sd64[M + "second_last_linear.bias"] = sake_sd[M + "second_last_linear.bias"][:64].clone()
    sd64[M + "last_linear.weight"] = sake_sd[M + "last_linear.weight"][:, :64].clone()
    sd64["module.linear.weight"] = sake_sd["module.linear.weight"][:, :64].clone()
    text = one_line_error(load_authors_checkpoint, sd64)
    assert "holds a 64-d hashing layer" in text and "[64, 2048]" in text and "embed_dim=64" in text
    for ask in (64, None):
        backbone, info = load_authors_checkpoint(sd64, embed_dim=ask)
        assert info.num_hashing == backbone.embed_dim == 64


def test_a_tuberlin_head_on_sketchy(sake_sd):
    sd = dict(sake_sd, **{"module.linear.weight": torch.zeros(220, 512), "module.linear.bias": torch.zeros(220)})
    text = one_line_error(load_authors_checkpoint, sd, dataset="sketchy_ext_split1")
    assert "has 220 outputs" in text and "tuberlin_ext has 220" in text and "sketchy_ext_split1 has 100 seen" in text
    assert load_authors_checkpoint(sd, dataset="tuberlin_ext")[1].n_classes == 220


def test_a_file_without_state_dict(tmp_path):
    path = tmp_path / "run.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3, "config": {"method": "clusterretri"}}, path)
    text = one_line_error(read_checkpoint, path)
    assert "no 'state_dict'" in text and "config, epoch, model" in text and "open_run" in text
    assert "no 'state_dict'" in one_line_error(load_authors_checkpoint, path)
    (tmp_path / "notes.txt").write_text("hello world, not a checkpoint")
    assert "not a torch checkpoint file" in one_line_error(read_checkpoint, tmp_path / "notes.txt")


class MakesAFile:
    """Unpickling this object opens (creates) a file: what weights_only must refuse."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("zip_format", [True, False])  # SAKE's 2019 files predate torch's zip format
def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, zip_format):
    path, marker = tmp_path / "model_best.pth.tar", tmp_path / "created_by_unpickling"
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(1)}, "extra": MakesAFile(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    for reader in (read_checkpoint, load_authors_checkpoint):
        text = one_line_error(reader, path)
        assert "refused" in text and "GLOBAL io.open" in text and "weights_only=True" in text
        assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: an unsafe load does create the file
    assert marker.exists()
    safe = tmp_path / "safe.pth.tar"
    torch.save(checkpoint({"module.linear.weight": torch.ones(2, 3)}), safe, _use_new_zipfile_serialization=zip_format)
    assert torch.equal(read_checkpoint(safe)["state_dict"]["module.linear.weight"], torch.ones(2, 3))


# ---------------------------------------------------------------- features of the unseen split
def test_features_from_checkpoint_on_a_tiny_tree(isolated_dirs, sake_sd, tmp_path):
    from zssbir.data.datasets import load_split
    from zssbir.data.transforms import build_transform
    from zssbir.eval.exact_search import evaluate_features

    fabricate_sketchy_style(isolated_dirs / "data" / "synthetic", unseen=("teddy bear", "zebra"), size=24)
    sd = dict(sake_sd, **{"module.linear.weight": sake_sd["module.linear.weight"][:2].clone(),
                          "module.linear.bias": sake_sd["module.linear.bias"][:2].clone()})  # 2 seen classes
    path = tmp_path / "model_best.pth.tar"
    torch.save(checkpoint(sd, epoch=5), path)
    out = features_from_checkpoint(path, "synthetic", image_size=64, batch_size=3)
    assert out["query"].shape == (4, 512) and out["gallery"].shape == (4, 512) and out["query"].dtype == np.float32
    assert out["query_labels"].tolist() == [0, 0, 1, 1] and out["gallery_labels"].tolist() == [0, 0, 1, 1]
    assert out["class_names"] == ["teddy bear", "zebra"] and out["checkpoint"]["epoch"] == 5
    assert out["device"] == "cpu"
    # the same as their forward on the same preprocessing, sketches tagged 0 and photos 1
    for role, domain, tag in (("query", "sketch", 0), ("gallery", "photo", 1)):
        ds = load_split("synthetic", "zero", domain, transform=build_transform(domain, 64, "sake"))
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        with torch.no_grad():
            ref = authors_forward(sd, x, torch.full((len(ds),), tag))[0].numpy()
        assert np.allclose(out[role], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    scores = evaluate_features(out["query"], out["gallery"], out["query_labels"], out["gallery_labels"],
                               preset="clusterretri")
    assert 0.0 <= scores["map@all"].value <= 1.0
    torch.save(checkpoint(sake_sd), tmp_path / "full.pt")  # 100 seen classes: not this data set's 2
    with pytest.raises(ValueError, match="has 100 outputs.*synthetic has 2 seen classes"):
        features_from_checkpoint(tmp_path / "full.pt", "synthetic", image_size=64)


def test_evaluate_scores_a_checkpoint_in_one_command(isolated_dirs, sake_sd, tmp_path, capsys):
    import json

    from zssbir.cli import main
    from zssbir.eval.exact_search import evaluate_features

    fabricate_sketchy_style(isolated_dirs / "data" / "synthetic", unseen=("teddy bear", "zebra"), size=24)
    sd = dict(sake_sd, **{"module.linear.weight": sake_sd["module.linear.weight"][:2].clone(),
                          "module.linear.bias": sake_sd["module.linear.bias"][:2].clone()})
    path = tmp_path / "model_best.pth.tar"
    torch.save(checkpoint(sd, epoch=5), path)
    out_dir = isolated_dirs / "runs" / "results"
    assert main(["evaluate", "--checkpoint", str(path), "--dataset", "synthetic", "--name", "theirs", "--quiet",
                 "--duplicates", "drop"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out_dir / "theirs__exact.json").read_text())
    assert record["params"]["source"]["layout"] == "checkpoint" and record["params"]["dataset"] == "synthetic"
    feats = features_from_checkpoint(path, "synthetic", duplicates="drop")
    expected = evaluate_features(feats["query"], feats["gallery"], feats["query_labels"], feats["gallery_labels"],
                                 preset="clusterretri")["map@all"].value
    assert record["metrics"]["map@all"]["value"] == pytest.approx(expected, abs=1e-12)
    assert "chance" in printed and "exact" in printed

    for argv, message in ((["evaluate", "--checkpoint", str(path)], "--checkpoint needs --dataset"),
                          (["evaluate"], "evaluate needs a run folder"),
                          (["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--dataset", "synthetic"],
                           "no checkpoint file")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
