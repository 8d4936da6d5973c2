"""Losses of the study. Each takes embeddings/logits and labels and returns a tensor; methods
combine them into a dict of named terms (``total`` included).

  cross_entropy            CE over the seen classes (the class head)
  sake_distillation        SAKE's knowledge distillation: soft cross-entropy between a student's
                           ImageNet head and a frozen ImageNet teacher, on photos only
  distribution_alignment   ClusterRetri's L_DA, exactly as the authors code it (below)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def distribution_alignment(embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """ClusterRetri's L_DA: mean_i KL( softmax(z_i) || softmax(f_i) ), z_i ~ N(0, I_D) drawn afresh.

    The softmax runs over the D channels of each UN-normalised embedding f_i, for sketches and photos
    alike; it is a per-sample channel-distribution match, not a moment or batch match. PyTorch form of
    the released code: ``kl_div(log_softmax(f), softmax(z), reduction="batchmean")``.
    Non-negative; zero when softmax(f_i) equals softmax(z_i) for every i.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (batch, channels), got shape {tuple(embeddings.shape)}")
    z = torch.randn(embeddings.shape, generator=generator, dtype=torch.float32).to(embeddings.device)
    return alignment_kl(embeddings, z)


def alignment_kl(embeddings: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL( softmax(target) || softmax(embeddings) ) averaged over the batch (the core of L_DA)."""
    log_p = F.log_softmax(embeddings.float(), dim=1)
    return F.kl_div(log_p, F.softmax(target_logits.float(), dim=1), reduction="batchmean")


def sake_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """Soft cross-entropy -sum_c q_c log p_c with q = softmax(teacher / T), p = softmax(student),
    averaged over the rows selected by ``mask`` (SAKE distils photos only); 0 if none is selected."""
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return -(target * F.log_softmax(student_logits.float(), dim=1)).sum(1).mean()
