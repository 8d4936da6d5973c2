"""DMWA reconstruction: loss terms on hand-made embeddings, the weight list, the quadruplet sampler, training."""
import math

import numpy as np
import pytest
import torch

from zssbir.models import losses
from zssbir.training.config import TrainConfig
from zssbir.data.quadruplets import ROLES, QuadrupletSampler, stack_quadruplets
from zssbir.models.backbones import BackboneOutput
from zssbir.models.dmwa import DMWA, DMWAParams, cross_attention_score, global_score, weight_list
from zssbir.models.small import build_small
from zssbir.training.loop import load_trained, train

from conftest import interrupt_forward

E = torch.eye(4)  # unit vectors: cos(e_i, e_j) = 0 for i != j, so cosine distance 1 and euclidean sqrt(2)


def test_quadruplet_terms_on_hand_made_embeddings():
    s, p_pos, p_neg, s_neg = E[[0]], E[[0]], E[[1]], E[[2]]  # perfect positive: d+ = 0, both negatives at 1
    args = dict(margin_cross=0.3, margin_same=0.5, margin=0.4, distance="cosine")
    assert losses.quadruplet_hinges(s, p_pos, p_neg, s_neg, form="triplet", **args).item() == 0.0
    # a positive at distance 1 (orthogonal): each hinge is 1 - 1 + margin
    bad = E[[3]]
    assert losses.quadruplet_hinges(s, bad, p_neg, s_neg, form="triplet", **args).item() == pytest.approx(0.3)
    assert losses.quadruplet_hinges(s, bad, p_neg, s_neg, form="quadruplet", **args).item() == pytest.approx(0.8)
    # balanced single hinge: d+ - (1 - l) d(s, p-) - l d(s, s-) + m, with the same-domain negative at distance 2
    opposite = -E[[0]]
    got = losses.quadruplet_hinges(s, bad, p_neg, opposite, form="balanced", balance=0.25, **args).item()
    assert got == pytest.approx(max(0.0, 1 - 0.75 * 1 - 0.25 * 2 + 0.4))
    # euclidean distance of unit vectors: sqrt(2) between orthogonal ones
    d = losses.pair_distance(E[[0]], E[[1]], "euclidean").item()
    assert d == pytest.approx(math.sqrt(2))
    # the symmetric term adds the photo-anchor hinges: anchor p+, negatives s- (cross) and p- (same)
    one = losses.weighted_quadruplet(s, bad, p_neg, s_neg, form="quadruplet", **args)
    both = losses.weighted_quadruplet(s, bad, p_neg, s_neg, symmetric=True, form="quadruplet", **args)
    photo_anchor = losses.quadruplet_hinges(bad, s, s_neg, p_neg, form="quadruplet", **args)
    assert both.item() == pytest.approx(one.item() + photo_anchor.item())


def test_weighted_loss_uses_the_weights_without_their_gradient():
    torch.manual_seed(0)
    emb = [torch.randn(6, 8, requires_grad=True) for _ in range(4)]
    w = torch.linspace(0.5, 1.5, 6)
    per = losses.quadruplet_hinges(*emb)
    assert losses.weighted_quadruplet(*emb, w).item() == pytest.approx((w * per).mean().item())
    with pytest.raises(ValueError, match="one per anchor"):
        losses.weighted_quadruplet(*emb, torch.ones(5))
    with pytest.raises(ValueError, match="form must be one of"):
        losses.quadruplet_hinges(*emb, form="quintuplet")


def test_weight_list_has_mean_one_and_prefers_aligned_pairs():
    a_loc = torch.tensor([0.9, 0.5, 0.1, 0.7])
    a_glob = torch.tensor([0.2, 0.4, 0.6, 0.8])
    for beta in (0.0, 0.5, 1.0):
        w = weight_list(a_loc, a_glob, beta, tau=0.2)
        assert w.mean().item() == pytest.approx(1.0) and (w > 0).all()
    assert torch.argsort(weight_list(a_loc, a_glob, 1.0, 0.2)).tolist() == torch.argsort(a_loc).tolist()
    assert torch.argsort(weight_list(a_loc, a_glob, 0.0, 0.2)).tolist() == torch.argsort(a_glob).tolist()
    assert torch.equal(weight_list(a_loc, a_glob, None, 0.2), torch.ones(4))
    # a smaller temperature makes the list more uneven
    assert weight_list(a_loc, a_glob, 0.5, 0.05).std() > weight_list(a_loc, a_glob, 0.5, 1.0).std()


def test_aggregation_blocks():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 5, 16, generator=gen)
    same = cross_attention_score(tokens, tokens, temperature=0.01)
    assert torch.allclose(same, torch.ones(3), atol=1e-3)  # every token finds itself
    other = cross_attention_score(tokens, torch.randn(3, 7, 16, generator=gen))
    assert ((other >= 0) & (other <= 1)).all() and (other < same).all()
    g = torch.randn(4, 8, generator=gen)
    assert torch.allclose(global_score(g, g, g, g, "text"), torch.ones(4))
    assert torch.allclose(global_score(g, -g, g, g, "pair"), torch.zeros(4), atol=1e-6)
    with pytest.raises(ValueError, match="global_score must be one of"):
        global_score(g, g, g, g, "both")


R = 1 / math.sqrt(2)


def test_global_score_by_hand():
    """g_s = e0, g_p = (0.6, 0.8): cos 0.6, so pair = (1 + 0.6) / 2 = 0.8; texts t_s = e1 (cos 0 with g_s) and
    t_p = g_p (cos 1), so text = (1 + (0 + 1) / 2) / 2 = 0.75; text+pair = (0.75 + 0.8) / 2 = 0.775."""
    g_s, g_p = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    t_s, t_p = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.6, 0.8]])
    expected = {"text": 0.75, "pair": 0.8, "text+pair": 0.775}
    for kind, value in expected.items():
        assert global_score(g_s, g_p, t_s, t_p, kind).item() == pytest.approx(value, abs=1e-6), kind
    # the sketch is compared with the sketch text, the photo with the photo text
    assert global_score(g_s, g_p, t_p, t_s, "text").item() == pytest.approx((1 + 0.5 * (0.6 + 0.8)) / 2)


def test_local_score_and_its_pooling_by_hand():
    """Sketch tokens e0, e1; photo tokens e0, (e0 + e1)/sqrt2; temperature 0.01 makes attention a hard argmax.
    Sketch -> photo: e0 finds e0 (cos 1), e1 finds (e0 + e1)/sqrt2 (cos 0.7071). Photo -> sketch: e0 finds e0
    (1); (e0 + e1)/sqrt2 ties between e0 and e1, gathers their mean, at cos 1. Token scores [1, R], [1, 1]."""
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = torch.tensor([[[1.0, 0.0], [R, R]]])
    uniform = (1 + 0.5 * ((1 + R) / 2 + 1)) / 2
    assert cross_attention_score(s, p, 0.01).item() == pytest.approx(uniform, abs=1e-4)
    pooled = (1 + 0.5 * ((0.2 * 1 + 0.8 * R) + (0.5 + 0.5))) / 2
    got = cross_attention_score(s, p, 0.01, sketch_pool=torch.tensor([[0.2, 0.8]]), photo_pool=torch.tensor([[0.5, 0.5]]))
    assert got.item() == pytest.approx(pooled, abs=1e-4)
    # the pools belong to their own side: given the other way round the value differs
    swapped = cross_attention_score(s, p, 0.01, sketch_pool=torch.tensor([[0.5, 0.5]]), photo_pool=torch.tensor([[0.2, 0.8]]))
    assert swapped.item() == pytest.approx(uniform, abs=1e-4) and abs(swapped.item() - pooled) > 0.01


def identity_projection_dmwa(**params):
    model = small_dmwa(**params)
    with torch.no_grad():
        model.backbone.proj.weight.copy_(torch.eye(16))
        model.backbone.proj.bias.zero_()
    return model


def test_local_text_pools_tokens_by_their_own_class_text():
    """local_text: token weights softmax(cos(proj(token), class text) / T) per side, proj = identity here.
    Sketch tokens e0, e1 with sketch text e1 -> pool [0, 1]; photo tokens e0, (e0 + e1)/sqrt2 with photo text
    e0 -> pool [1, 0] (T = 0.01: cosine gaps of 1 and 0.29 are hard choices). So a_loc = (1 + (R + 1) / 2) / 2,
    not the uniform (1 + ((1 + R) / 2 + 1) / 2) / 2, nor 1.0 (texts or pools swapped between the sides)."""
    model = identity_projection_dmwa(local_text=True, attention_temperature=0.01, weighting="local")
    e = torch.eye(16)
    tok_s = torch.stack([e[0], e[1]])[None]
    tok_p = torch.stack([e[0], R * (e[0] + e[1])])[None]
    texts = (e[[1]], e[[0]])  # class 0: sketch text e1, photo text e0
    g = torch.ones(1, 16)
    got = model.alignment(g, g, tok_s, tok_p, torch.tensor([0]), texts)["a_loc"].item()
    assert got == pytest.approx((1 + 0.5 * (R + 1)) / 2, abs=1e-4)
    model.params.local_text = False
    plain = model.alignment(g, g, tok_s, tok_p, torch.tensor([0]), texts)["a_loc"].item()
    assert plain == pytest.approx((1 + 0.5 * ((1 + R) / 2 + 1)) / 2, abs=1e-4)


@pytest.mark.parametrize("weighting, beta", [("none", None), ("local", 1.0), ("global", 0.0), ("both", 0.3)])
def test_weighting_mixes_the_scores_it_names(weighting, beta):
    """w = B softmax((beta a_loc + (1 - beta) a_glob) / tau): local -> beta 1, global -> beta 0, both -> the
    configured beta, none -> 1 everywhere; written out here with the model's own a_loc and a_glob."""
    model = small_dmwa(weighting=weighting, beta=0.3, tau=0.1, global_score="pair")
    assert model.params.beta_effective == beta
    out = model.weigh(quad_batch())
    a_loc, a_glob, w = out["a_loc"], out["a_glob"], out["w"]
    assert not torch.allclose(a_loc, a_glob, atol=1e-3)  # the two scores tell apart which one was used
    if beta is None:
        assert torch.equal(w, torch.ones(4))
        return
    mixed = beta * a_loc + (1 - beta) * a_glob
    expected = 4 * torch.exp(mixed / 0.1) / torch.exp(mixed / 0.1).sum()
    assert torch.allclose(w, expected, atol=1e-5)


class RowsBackbone(torch.nn.Module):
    """Embedding = the image rows as given ([n, 4]); tokens = the same row as one token."""

    embed_dim = token_dim = 4

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, images, domain=None):
        return BackboneOutput(embedding=images, tokens=images[:, None])


def role_batch(rows: dict) -> dict:
    """A collated quadruplet batch (P = 1) whose role r holds the image rows[r] and label / domain / pair id."""
    labels = {"sketch": 0, "photo": 0, "neg_photo": 1, "neg_sketch": 2}
    domains = {"sketch": 0, "photo": 1, "neg_photo": 1, "neg_sketch": 0}
    return {r: {"image": rows[r][None], "label": torch.tensor([labels[r]]), "domain": torch.tensor([domains[r]]),
                "pair_id": [f"id-{r}"]} for r in ROLES}


def test_quadruplets_stack_in_role_order():
    rows = {r: torch.full((4,), float(i)) for i, r in enumerate(("sketch", "photo", "neg_photo", "neg_sketch"))}
    batch = stack_quadruplets(role_batch(rows))
    assert batch["image"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert batch["label"].tolist() == [0, 0, 1, 2] and batch["domain"].tolist() == [0, 1, 1, 0]
    assert batch["pair_id"] == ["id-sketch", "id-photo", "id-neg_photo", "id-neg_sketch"]


def test_dmwa_loss_gives_each_role_its_place():
    """Anchor sketch e0, positive photo e1 (d+ = 1), negative photo -e0 (d = 2), negative sketch e2 (d = 1);
    quadruplet form, cosine distance, margins cross 0.1, same 0.5, weights 1:
      [1 - 2 + 0.1]_+ + [1 - 1 + 0.5]_+ = 0.5.
    Negatives swapped it would be [1 - 1 + 0.1] + [1 - 2 + 0.5]_+ = 0.1; anchor and positive swapped,
    d(e1, -e0) = d(e1, e2) = 1, so 0.1 + 0.5 = 0.6."""
    e = torch.eye(4)
    rows = {"sketch": e[0], "photo": e[1], "neg_photo": -e[0], "neg_sketch": e[2]}
    params = dict(weighting="none", loss="quadruplet", margin_cross=0.1, margin_same=0.5, distance="cosine")
    model = DMWA(RowsBackbone(), torch.eye(3, 5), torch.eye(3, 5), DMWAParams(**params))
    assert model(stack_quadruplets(role_batch(rows)))["quad"].item() == pytest.approx(0.5, abs=1e-6)
    swapped_negatives = dict(rows, neg_photo=e[2], neg_sketch=-e[0])
    assert model(stack_quadruplets(role_batch(swapped_negatives)))["quad"].item() == pytest.approx(0.1, abs=1e-6)
    swapped_pair = dict(rows, sketch=e[1], photo=e[0])
    assert model(stack_quadruplets(role_batch(swapped_pair)))["quad"].item() == pytest.approx(0.6, abs=1e-6)


def small_dmwa(**params):
    backbone = build_small(embed_dim=16, image_size=32, width=16, depth=1, heads=2, stem_channels=(8, 16))
    torch.manual_seed(0)
    return DMWA(backbone, torch.randn(3, 12), torch.randn(3, 12), DMWAParams(**params))


def quad_batch(p=4, size=32):
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 0][:p])
    neg = (labels + 1) % 3
    return {"image": torch.randn(4 * p, 3, size, size), "label": torch.cat([labels, labels, neg, neg]),
            "domain": torch.tensor([0] * p + [1] * p + [1] * p + [0] * p)}


def test_model_weights_have_mean_one_and_no_gradient():
    model = small_dmwa(weighting="both", local_text=True, tau=0.05)
    batch = quad_batch()
    weights = model.weigh(batch)
    assert weights["w"].mean().item() == pytest.approx(1.0, abs=1e-5) and weights["w"].grad_fn is None
    terms = model(batch)
    assert {"quad", "cls", "total", "stat_w_std"} <= set(terms) and terms["total"].requires_grad
    terms["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["text_proj.weight"] is not None and grads["backbone.proj.weight"] is not None
    # the weights are constants of the loss: the same loss with w given explicitly has the same gradient
    model.zero_grad()
    out, emb, _, _ = model._parts(batch)
    loss = losses.weighted_quadruplet(emb["sketch"], emb["photo"], emb["neg_photo"], emb["neg_sketch"],
                                      weights["w"].clone())
    loss.backward()
    explicit = model.backbone.proj.weight.grad.clone()
    model.zero_grad()
    model.params.lambda_cls = 0.0
    model(batch)["total"].backward()
    assert torch.allclose(model.backbone.proj.weight.grad, explicit, atol=1e-6)


def test_none_weighting_is_the_plain_loss():
    model = small_dmwa(weighting="none")
    assert torch.equal(model.weigh(quad_batch())["w"], torch.ones(4))


def test_params_are_checked():
    with pytest.raises(ValueError, match=r"unknown DMWA method_params \['weights'\]"):
        DMWAParams.from_dict({"weights": "both"})
    with pytest.raises(ValueError, match="weighting must be one of"):
        DMWAParams(weighting="some")
    with pytest.raises(ValueError, match="tau must be > 0"):
        DMWAParams(tau=0)
    with pytest.raises(ValueError, match="4 equal parts"):
        small_dmwa()(dict(quad_batch(), image=torch.randn(7, 3, 32, 32)))


def test_quadruplet_sampler_pairs_and_negatives():
    # 3 classes x 2 photos; sketches name their photo (two per photo) except class 2's, which are unpaired
    photo_labels = [0, 0, 1, 1, 2, 2]
    photo_ids = ["a0", "a1", "b0", "b1", "c0", "c1"]
    sketch_labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    sketch_pairs = ["a0", "a0", "a1", "a1", "b0", "b0", "b1", "b1", "", ""]
    sampler = QuadrupletSampler(sketch_labels, sketch_pairs, photo_labels, photo_ids, seed=5)
    quads = sampler.epoch(0)
    assert sorted(quads[:, 1].tolist()) == list(range(6))  # every photo once as the positive
    sl, pl = np.asarray(sketch_labels), np.asarray(photo_labels)
    for s, p, pn, sn in quads:
        assert sl[s] == pl[p] and pl[pn] != pl[p] and sl[sn] != pl[p]
        if sketch_pairs[s]:
            assert sketch_pairs[s] == photo_ids[p]  # the paired sketch of its photo
    assert sampler.paired_fraction == pytest.approx(4 / 6)
    assert np.array_equal(quads, QuadrupletSampler(sketch_labels, sketch_pairs, photo_labels, photo_ids, 5).epoch(0))
    assert not np.array_equal(quads, sampler.epoch(1))
    ranks = [QuadrupletSampler(sketch_labels, sketch_pairs, photo_labels, photo_ids, 5, num_replicas=2, rank=r).epoch(0)
             for r in (0, 1)]
    assert sorted(np.concatenate(ranks)[:, 1].tolist()) == list(range(6))
    with pytest.raises(ValueError, match="no sketches"):
        QuadrupletSampler([0], [""], [0, 1], ["x", "y"], seed=0)


TINY = dict(method="dmwa", lambda_da=0.0, dataset="synthetic_tiny", image_size=32, embed_dim=32, batch_size=16,
            epochs=2, max_steps_per_epoch=3,
            backbone_params={"width": 32, "depth": 1, "heads": 2, "stem_channels": (8, 16, 32)})


def test_dmwa_trains_resumes_and_reloads_through_the_shared_loop(isolated_dirs, monkeypatch):
    config = TrainConfig(**TINY, method_params={"weighting": "both", "local_text": True})
    full = train(config, run_dir=isolated_dirs / "full", progress=False)
    assert len(full.history) == 2 and all(np.isfinite(h["loss_quad"]) for h in full.history)
    assert {"stat_w_std", "stat_a_loc", "stat_a_glob", "val_map@all"} <= set(full.history[0])

    restore = interrupt_forward(monkeypatch, DMWA, 5)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=isolated_dirs / "cut", progress=False)
    restore()
    resumed = train(config, run_dir=isolated_dirs / "cut", progress=False)
    a, b = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    model, loaded = load_trained(isolated_dirs / "full", which="last")
    assert loaded.method == "dmwa" and isinstance(model, DMWA)
    assert torch.equal(model.text_sketch, full.model.text_sketch)


def test_dmwa_refuses_clusterretri_options(isolated_dirs):
    with pytest.raises(ValueError, match="lambda_da and lambda_kd are ClusterRetri's"):
        train(TrainConfig(**{**TINY, "lambda_da": 0.1}), run_dir=isolated_dirs / "x", progress=False)


def test_clip_backbone_with_text_tower_from_one_checkpoint(tmp_path):
    """DMWA on an open_clip tower: image and text towers load from the same local checkpoint."""
    import open_clip

    from zssbir.models.clip_towers import register_tiny_clip
    from zssbir.models.factory import build_model

    name = register_tiny_clip()
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(open_clip.create_model(name).state_dict(), ckpt)
    config = TrainConfig(method="dmwa", lambda_da=0.0, backbone=f"clip:{name}", pretrained=str(ckpt), embed_dim=16,
                         method_params={"local_text": True, "weighting": "both"})
    model = build_model(config, ["cat", "hot air balloon", "teddy_bear"])
    assert config.image_size == 64 and model.backbone.image_size == 32  # CLIP keeps its native input size
    reference = open_clip.create_model(name, pretrained=str(ckpt))
    tokens = open_clip.get_tokenizer(name)(["a photo of a hot air balloon"])
    with torch.no_grad():
        assert torch.allclose(model.text_photo[1], reference.encode_text(tokens)[0], atol=1e-5)
    batch = quad_batch(size=32)
    assert model.weigh(batch)["w"].mean().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(model(batch)["total"])


def test_dmwa_parameter_files_are_valid():
    from pathlib import Path

    from zssbir.data.benchmarks import BENCHMARKS

    files = sorted(Path(__file__).parents[1].glob("configs/dmwa/*.yaml"))
    assert len(files) == 4
    for f in files:
        config = TrainConfig.from_yaml(f)
        assert config.method == "dmwa" and config.dataset in BENCHMARKS and f.stem == config.dataset
        DMWAParams.from_dict(config.method_params)


def test_run_names_tell_dmwa_settings_apart():
    from zssbir.training.identity import run_name

    def name(**mp):
        return run_name(TrainConfig(method="dmwa", lambda_da=0.0, method_params=mp))

    assert name() == name(weighting="both", tau=0.2) == "dmwa_synthetic_small_wboth_quadruplet_seed0"
    assert name(weighting="none", loss="triplet") == "dmwa_synthetic_small_wnone_triplet_seed0"
    assert len({name(), name(tau=0.5), name(tau=0.5, beta=0.3), name(local_text=True)}) == 4
    with pytest.raises(ValueError, match="unknown DMWA method_params"):
        name(tua=0.5)
