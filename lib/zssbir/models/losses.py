"""Losses of the study. Each takes embeddings/logits and labels and returns a tensor; methods
combine them into a dict of named terms (``total`` included).

  cross_entropy            CE over the seen classes (the class head)
  sake_distillation        SAKE's knowledge distillation: soft cross-entropy between a student's
                           ImageNet head and a frozen ImageNet teacher, on photos only
  distribution_alignment   ClusterRetri's L_DA, exactly as the authors code it (below)
  weighted_quadruplet      DMWA's (reconstructed) quadruplet loss with a per-anchor weight list

Kept beside the methods that use them (``models.clusterretri``, ``models.dmwa``), below the training loop, so that
models never import training; ``zssbir.training.losses`` re-exports these names for older imports.
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
                      mask: torch.Tensor | None = None, class_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Soft cross-entropy -sum_c q_c log p_c with q = softmax((teacher + class_prior) / T), p = softmax(student),
    averaged over the rows selected by ``mask`` (SAKE distils photos only); 0 if none is selected.
    ``class_prior`` [B, C]: SAKE's semantic term, the weighted WordNet similarity of each row's class to the
    teacher's classes, added to the teacher's logits (``kdneg_lambda * cid_mask``)."""
    if class_prior is not None:
        teacher_logits = teacher_logits.detach().float() + class_prior.float()
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    target = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return -(target * F.log_softmax(student_logits.float(), dim=1)).sum(1).mean()


DISTANCES = ("cosine", "euclidean")
QUADRUPLET_FORMS = ("quadruplet", "balanced", "triplet")


def pair_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Row-wise distance of L2-normalised rows: "cosine" 1 - cos (in [0, 2]) or "euclidean" ||a - b|| (in [0, 2])."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    if distance == "cosine":
        return 1.0 - (a * b).sum(-1)
    return (a - b).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def quadruplet_hinges(anchor: torch.Tensor, positive: torch.Tensor, neg_cross: torch.Tensor, neg_same: torch.Tensor, *,
                      form: str = "quadruplet", margin_cross: float = 0.2, margin_same: float = 0.2,
                      margin: float = 0.2, balance: float = 0.5, distance: str = "cosine") -> torch.Tensor:
    """Per-anchor hinge terms [B] (before weighting), d = ``pair_distance``:

      "quadruplet"  [d(a,p) - d(a,n_cross) + m_cross]_+ + [d(a,p) - d(a,n_same) + m_same]_+
      "balanced"    [d(a,p) - (1 - l) d(a,n_cross) - l d(a,n_same) + m]_+    (one hinge, domains balanced by l)
      "triplet"     [d(a,p) - d(a,n_cross) + m_cross]_+                       (the same-domain negative unused)
    For a sketch anchor the positive and the cross-domain negative are photos, the same-domain
    negative is a sketch of another class; for a photo anchor the roles swap.
    """
    if form not in QUADRUPLET_FORMS:
        raise ValueError(f"quadruplet form must be one of {QUADRUPLET_FORMS}, got {form!r}")
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    d_pos = pair_distance(anchor, positive, distance)
    d_cross = pair_distance(anchor, neg_cross, distance)
    if form == "triplet":
        return F.relu(d_pos - d_cross + margin_cross)
    d_same = pair_distance(anchor, neg_same, distance)
    if form == "balanced":
        return F.relu(d_pos - (1.0 - balance) * d_cross - balance * d_same + margin)
    return F.relu(d_pos - d_cross + margin_cross) + F.relu(d_pos - d_same + margin_same)


def weighted_quadruplet(sketch: torch.Tensor, photo: torch.Tensor, neg_photo: torch.Tensor, neg_sketch: torch.Tensor,
                        weights: torch.Tensor | None = None, *, symmetric: bool = False, **hinge_args) -> torch.Tensor:
    """DMWA's weighted quadruplet loss: mean_i w_i * hinges_i with the sketch as anchor; ``symmetric``
    adds the photo-anchor term (anchor p+, positive s, cross-domain negative s-, same-domain negative p-).
    ``weights`` [B] are used as given (detached): pass None for the unweighted loss."""
    terms = quadruplet_hinges(sketch, photo, neg_photo, neg_sketch, **hinge_args)
    if symmetric:
        terms = terms + quadruplet_hinges(photo, sketch, neg_sketch, neg_photo, **hinge_args)
    if weights is None:
        return terms.mean()
    if weights.shape != terms.shape:
        raise ValueError(f"weights must have shape {tuple(terms.shape)} (one per anchor), got {tuple(weights.shape)}")
    return (weights.detach().to(terms.dtype) * terms).mean()
