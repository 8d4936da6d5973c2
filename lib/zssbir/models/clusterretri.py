"""ClusterRetri's trainable part: a backbone, a seen-class head, and its losses.

L = CE(class head) + lambda_kd * L_KD (SAKE distillation, photos only, optional; with SAKE's class mask
    the teacher's logits get lambda_kd_mask * mask[class] added)
    + lambda_da * L_DA (distribution alignment on the un-normalised embeddings of sketches and photos).
With lambda_da = 0 and no distillation this is the plain exact-retrieval baseline. Retrieval features
are the embeddings, L2-normalised downstream; cluster-then-retrieve happens on the gallery features
(zssbir.eval.cluster_retrieval), not here.
"""
from __future__ import annotations

import torch
from torch import nn

from . import losses


class ClusterRetri(nn.Module):
    def __init__(self, backbone: nn.Module, n_classes: int, *, lambda_da: float = 0.1, lambda_kd: float = 0.0,
                 teacher: nn.Module | None = None, kd_temperature: float = 1.0, lambda_kd_mask: float = 0.0,
                 class_mask: torch.Tensor | None = None):
        super().__init__()
        if lambda_kd > 0 and (teacher is None or getattr(backbone, "imagenet_head", None) is None):
            raise ValueError("lambda_kd > 0 needs a teacher and a backbone built with imagenet_head=True")
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.embed_dim, n_classes)
        self.lambda_da, self.lambda_kd, self.kd_temperature = lambda_da, lambda_kd, kd_temperature
        self.teacher = teacher
        self.lambda_kd_mask = lambda_kd_mask
        if lambda_kd_mask > 0:
            if class_mask is None or class_mask.shape[0] != n_classes:
                raise ValueError(f"lambda_kd_mask > 0 needs a class mask with one row per seen class ({n_classes})")
            self.register_buffer("class_mask", class_mask.float().clone())
        if teacher is not None:
            teacher.requires_grad_(False).eval()

    def embed(self, images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Retrieval features (un-normalised embeddings)."""
        return self.backbone(images, domains).embedding

    def classify(self, images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """Seen-class logits (the classification head), for the authors' selection rule."""
        return self.classifier(self.backbone(images, domains).embedding)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The loss terms of a batch (dict with image, label, domain); 'total' is what to minimise."""
        out = self.backbone(batch["image"], batch["domain"])
        terms = {"ce": losses.cross_entropy(self.classifier(out.embedding), batch["label"])}
        total = terms["ce"]
        if self.lambda_da > 0:
            terms["da"] = losses.distribution_alignment(out.embedding)
            total = total + self.lambda_da * terms["da"]
        if self.lambda_kd > 0:
            with torch.no_grad():
                teacher_logits = self.teacher.eval()(batch["image"])
            prior = self.lambda_kd_mask * self.class_mask[batch["label"]] if self.lambda_kd_mask > 0 else None
            terms["kd"] = losses.sake_distillation(out.logits_imagenet, teacher_logits, self.kd_temperature,
                                                   mask=batch["domain"] == 1, class_prior=prior)
            total = total + self.lambda_kd * terms["kd"]
        terms["total"] = total
        return terms
