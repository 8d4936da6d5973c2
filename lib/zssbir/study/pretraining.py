"""What the miniature's pretraining gives before any fine-tuning (issue 13), for ``00_pretraining``: its learning
curve, the pretrained backbone's zero-shot retrieval on the benchmark's unseen classes against a random one, and
the text tower's zero-shot text-to-image accuracy there (each unseen photo or sketch labelled by the nearest
unseen class caption), as CLIP is shown on classes it was not trained on.

The fine-tuned comparison (pretrained start against scratch, paired over seeds) is part of the study itself:
``01_train`` and ``04_dmwa`` train both starts, ``05_map_tables`` compares them.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import torch.nn.functional as F

from ..data.datasets import load_split
from ..data.synthetic_pretrain import CORPORA, corpus_programs, render_corpus_photo
from ..data.tools import ensure_dataset
from ..models.dmwa import miniature_class_texts
from ..models.factory import build_model
from ..training.config import TrainConfig
from ..training.pretrain import PretrainSettings, pretrain
from ..training.pretrained_store import PRETRAINED_MINIATURE
from .scoring import split_features, unseen_map_all


def pretraining(settings: PretrainSettings | None = None, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """The pretraining's record (``pretrain.json``; built if missing, else reopened) and its per-epoch history."""
    folder = pretrain(settings or PretrainSettings(), progress=progress)
    info = json.loads((folder / "pretrain.json").read_text(encoding="utf-8"))
    info["folder"] = str(folder)
    return info, pd.DataFrame(info["history"])


def corpus_examples(n_classes: int = 6, instances: int = 3, corpus: str = "synthetic_pretrain"):
    """Photos of the first ``n_classes`` corpus classes (rendered as the corpus renders them, without generating
    it) with their names and captions: [(name, caption, [PIL images])]."""
    config = CORPORA[corpus]
    programs = corpus_programs(dataclasses.replace(config, n_classes=n_classes))
    return [(p.name, p.summary, [render_corpus_photo(p, i, config) for i in range(instances)]) for p in programs]


def _class_names(config: TrainConfig) -> list[str]:
    ensure_dataset(config.dataset, data_root=config.data_root)
    return load_split(config.dataset, "train", "photo", data_root=config.data_root, check_files=False).class_names


def zero_shot_retrieval(base: TrainConfig, device: str = "auto") -> dict[str, float]:
    """Unseen-class mAP@all (exact retrieval) of the backbone's embeddings before any fine-tuning: the pretrained
    backbone and a randomly initialised one."""
    names = _class_names(base)
    out = {}
    for label, weights in (("pretrained", PRETRAINED_MINIATURE), ("random", None)):
        config = dataclasses.replace(base, pretrained=weights, lambda_kd=0.0, teacher_weights=None)
        out[label] = unseen_map_all(build_model(config, names), config, device)[0]
    return out


def zero_shot_text(base: TrainConfig, device: str = "auto") -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Each unseen photo and sketch labelled by the nearest unseen class caption (cosine between the pretrained
    backbone's embedding and the text tower's caption embedding): top-1 accuracy per domain with its chance level,
    the photo confusion matrix (rows: true class, columns: predicted; row-normalised) and the class names."""
    config = dataclasses.replace(base, pretrained=PRETRAINED_MINIATURE, lambda_kd=0.0, teacher_weights=None)
    model = build_model(config, _class_names(config))
    feats = split_features(model, config, "zero", device=device)
    unseen = load_split(config.dataset, "zero", "photo", data_root=config.data_root, check_files=False).class_names
    texts = F.normalize(miniature_class_texts(unseen, config.dataset), dim=1).numpy()
    rows, confusion = [], None
    for domain in ("photo", "sketch"):
        x, labels = feats[domain]
        predicted = (x / np.linalg.norm(x, axis=1, keepdims=True) @ texts.T).argmax(1)
        rows.append({"domain": domain, "items": len(labels), "classes": len(unseen),
                     "top1": float((predicted == labels).mean()), "chance": 1 / len(unseen)})
        if domain == "photo":
            confusion = np.zeros((len(unseen), len(unseen)))
            np.add.at(confusion, (labels, predicted), 1)
            confusion /= confusion.sum(1, keepdims=True).clip(min=1)
    return pd.DataFrame(rows), confusion, list(unseen)


def sentences(info: dict, retrieval: dict, text: pd.DataFrame, digits: int = 3) -> list[str]:
    """What the pretraining gives, in sentences computed from the three results above."""
    last = info["history"][-1]
    out = [f"Pretraining ({info['classes']} corpus classes, {len(info['history'])} epochs, "
           f"{sum(h['seconds'] for h in info['history']):.0f} s of training) ends at held-out top-1 "
           f"{last['val_top1']:.{digits}f} by its class head"
           + (f" and {last['val_text_top1']:.{digits}f} by the nearest class caption" if "val_text_top1" in last
              else "") + "."]
    out.append(f"Before any fine-tuning, the pretrained backbone retrieves the benchmark's unseen classes at mAP@all "
               f"{retrieval['pretrained']:.{digits}f}, against {retrieval['random']:.{digits}f} for a random one.")
    plural = {"photo": "photos", "sketch": "sketches"}
    for r in text.to_dict("records"):
        out.append(f"Captions of the unseen classes, never seen in pretraining, label their {plural[r['domain']]} with "
                   f"top-1 {r['top1']:.{digits}f} (chance {r['chance']:.{digits}f}, {r['classes']} classes).")
    return out
