import math

import pytest
import torch
import torch.nn.functional as F

from zssbir.training.losses import alignment_kl, distribution_alignment, sake_distillation


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
    f = torch.randn(6, 32, requires_grad=True)
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
