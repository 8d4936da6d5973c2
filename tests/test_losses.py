import math

import pytest
import torch
import torch.nn.functional as F

from torch import nn

from zssbir.models.backbones import BackboneOutput
from zssbir.models.clusterretri import ClusterRetri
from zssbir.models.losses import alignment_kl, distribution_alignment, sake_distillation


def test_alignment_kl_matches_the_definition_per_sample():
    torch.manual_seed(0)
    f, z = torch.randn(5, 8), torch.randn(5, 8)
    p, q = F.softmax(z, 1), F.softmax(f, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean()  # KL(softmax(z) || softmax(f)), batch mean
    assert torch.allclose(alignment_kl(f, z), by_hand, atol=1e-6)


def test_alignment_is_non_negative_and_zero_when_softmaxes_match():
    torch.manual_seed(1)
    z = torch.randn(4, 16)
    assert alignment_kl(z + 3.0, z).abs() < 1e-6  # softmax is shift invariant
    for _ in range(5):
        assert distribution_alignment(torch.randn(4, 16) * 5) >= 0


def test_alignment_is_a_batch_mean_not_a_sum():
    torch.manual_seed(2)
    f, z = torch.randn(3, 8), torch.randn(3, 8)
    doubled = alignment_kl(torch.cat([f, f]), torch.cat([z, z]))
    assert torch.allclose(doubled, alignment_kl(f, z), atol=1e-6)


def test_alignment_draws_fresh_gaussian_targets_and_gradient_reaches_features():
    f = torch.randn(6, 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert distribution_alignment(f, g1) == distribution_alignment(f, g2)
    assert distribution_alignment(f, g1) != distribution_alignment(f, g2.manual_seed(1))
    distribution_alignment(f).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0 and torch.isfinite(f.grad).all()
    with pytest.raises(ValueError, match="batch, channels"):
        distribution_alignment(torch.randn(2, 3, 4))


def test_sake_distillation_soft_cross_entropy_on_photos_only():
    student = torch.tensor([[2.0, 0.0], [0.0, 0.0], [5.0, -5.0]])
    teacher = torch.tensor([[0.0, 0.0], [9.0, 9.0], [1.0, 1.0]])
    mask = torch.tensor([True, False, True])
    rows = [0, 2]
    expected = sum(-(0.5 * F.log_softmax(student[r], 0)).sum() for r in rows) / 2
    assert math.isclose(sake_distillation(student, teacher, mask=mask).item(), expected.item(), rel_tol=1e-6)
    assert sake_distillation(student, teacher, mask=torch.zeros(3, dtype=torch.bool)).item() == 0.0


def soft_ce(q, log_p):
    """-sum_c q_c log p_c for plain lists of numbers."""
    return -sum(a * b for a, b in zip(q, log_p))


def test_sake_distillation_divides_the_teacher_logits_by_the_temperature():
    """Hand-computed: teacher [2, 0], student [1, 0]. The student's log-probabilities are
    [1 - ln(1 + e), -ln(1 + e)] at any temperature; the target is softmax([2, 0] / T):
    T = 1 -> [e^2, 1] / (e^2 + 1), T = 2 -> [e, 1] / (e + 1), T = 0.5 -> [e^4, 1] / (e^4 + 1)."""
    e = math.e
    student, teacher = torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    log_p = [1 - math.log(1 + e), -math.log(1 + e)]
    for temperature, target in ((1.0, [e**2 / (e**2 + 1), 1 / (e**2 + 1)]),
                                (2.0, [e / (e + 1), 1 / (e + 1)]),
                                (0.5, [e**4 / (e**4 + 1), 1 / (e**4 + 1)])):
        got = sake_distillation(student, teacher, temperature).item()
        assert got == pytest.approx(soft_ce(target, log_p), rel=1e-6), temperature
    # in closed form ln(1 + e) - target_0: 1.31326 - 0.88080 at T = 1, 1.31326 - 0.73106 at T = 2
    assert sake_distillation(student, teacher, 1.0).item() == pytest.approx(0.43247, abs=1e-5)
    assert sake_distillation(student, teacher, 2.0).item() == pytest.approx(0.58220, abs=1e-5)


class LinearBackbone(nn.Module):
    """Embedding = the 'image' rows themselves (D = 2); ImageNet logits = the same rows (2 'classes')."""

    embed_dim = 2

    def __init__(self):
        super().__init__()
        self.imagenet_head = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images, domain=None):
        return BackboneOutput(embedding=images * self.scale, tokens=images[:, None], logits_imagenet=images * self.scale)


class DoublingTeacher(nn.Module):
    def forward(self, images):
        return 2.0 * images


def clusterretri_batch():
    # row 0 a sketch with a large disagreement, rows 1 and 2 photos
    return {"image": torch.tensor([[3.0, -3.0], [0.0, 0.0], [1.0, 0.0]]), "label": torch.tensor([0, 1, 0]),
            "domain": torch.tensor([0, 1, 1])}


def test_clusterretri_distils_photos_only_at_its_temperature():
    """Hand-computed kd term of ClusterRetri.forward: photo [0, 0] gives ln 2 (uniform student), photo [1, 0]
    with teacher [2, 0] gives soft_ce(softmax([2, 0] / T), log_softmax([1, 0])); the sketch row is left out."""
    e = math.e
    log_p = [1 - math.log(1 + e), -math.log(1 + e)]
    for temperature, target in ((1.0, [e**2 / (e**2 + 1), 1 / (e**2 + 1)]), (2.0, [e / (e + 1), 1 / (e + 1)])):
        model = ClusterRetri(LinearBackbone(), 2, lambda_da=0.0, lambda_kd=0.5, teacher=DoublingTeacher(),
                             kd_temperature=temperature)
        terms = model(clusterretri_batch())
        expected = (math.log(2) + soft_ce(target, log_p)) / 2
        assert terms["kd"].item() == pytest.approx(expected, rel=1e-6), temperature
        assert terms["total"].item() == pytest.approx(terms["ce"].item() + 0.5 * expected, rel=1e-6)
    # what the sketch row would have added: nothing, whatever it holds
    other = dict(clusterretri_batch(), image=torch.tensor([[-5.0, 9.0], [0.0, 0.0], [1.0, 0.0]]))
    model = ClusterRetri(LinearBackbone(), 2, lambda_da=0.0, lambda_kd=0.5, teacher=DoublingTeacher())
    assert model(other)["kd"].item() == pytest.approx(model(clusterretri_batch())["kd"].item(), rel=1e-6)


def test_alignment_target_is_a_standard_normal_draw_compared_with_the_raw_embedding(monkeypatch):
    """L_DA = KL(softmax(z) || softmax(f)) with z ~ N(0, I) drawn with the given generator (torch.randn),
    on f as it is: by hand for one row, z being the first D numbers torch.randn draws from that seed."""
    import zssbir.models.losses as losses_module

    f = torch.tensor([[2.0, -1.0, 0.5, 0.0]])  # norm 2.29: L2-normalising would change the value
    z = torch.randn(1, 4, generator=torch.Generator().manual_seed(11))
    p = [math.exp(v) / sum(math.exp(u) for u in z[0].tolist()) for v in z[0].tolist()]
    q = [math.exp(v) / sum(math.exp(u) for u in f[0].tolist()) for v in f[0].tolist()]
    by_hand = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
    got = distribution_alignment(f, torch.Generator().manual_seed(11)).item()
    assert got == pytest.approx(by_hand, rel=1e-6)
    # the raw embedding: scaling it changes the loss (a normalised one would not see the scale)
    assert distribution_alignment(3 * f, torch.Generator().manual_seed(11)).item() != pytest.approx(got, rel=1e-3)
    # the target over many rows: mean 0 and variance 1 per channel, as N(0, I) draws
    targets = []
    monkeypatch.setattr(losses_module, "alignment_kl", lambda emb, target: targets.append(target) or alignment_kl(emb, target))
    many = torch.zeros(20_000, 4)
    distribution_alignment(many, torch.Generator().manual_seed(12))
    (z,) = targets
    assert z.shape == many.shape
    assert z.mean(0).abs().max() < 0.03 and (z.var(0) - 1).abs().max() < 0.05


def test_clusterretri_aligns_the_unnormalised_embedding_of_every_image():
    """terms["da"] of ClusterRetri.forward is L_DA of the backbone's raw embedding (sketches and photos),
    with z the next draw of the global generator."""
    batch = clusterretri_batch()
    model = ClusterRetri(LinearBackbone(), 2, lambda_da=0.25)
    with torch.no_grad():
        model.backbone.scale.fill_(1.7)
    torch.manual_seed(5)
    terms = model(batch)
    torch.manual_seed(5)
    z = torch.randn(3, 2)
    f = batch["image"] * 1.7
    by_hand = sum(sum(a * (math.log(a) - math.log(b)) for a, b in zip(pz, pf))
                  for pz, pf in zip(torch.softmax(z, 1).tolist(), torch.softmax(f, 1).tolist())) / 3
    assert terms["da"].item() == pytest.approx(by_hand, rel=1e-5)
    assert terms["total"].item() == pytest.approx(terms["ce"].item() + 0.25 * by_hand, rel=1e-6)
