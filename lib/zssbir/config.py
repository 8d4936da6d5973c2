"""Experiment configuration: one flat dataclass, loadable from YAML or a notebook's parameters.

Unknown keys are errors (with the known keys listed), never silently ignored.

A leaf of the package (it imports nothing of the study), so that the models built from a ``TrainConfig``
(``models.factory``) and the training loop that runs one can both import it without models importing training;
``zssbir.training.config`` re-exports these names for older imports.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SELECTIONS = ("seen_val", "seen_val_top1", "unseen_test", "last")
PROTOCOLS = ("clean", "authors")     # published lists deduplicated, or exactly as published (duplicates kept)
EPOCH_MODES = ("photos", "shorter_loader")  # what ends a ClusterRetri epoch
AUGMENTATIONS = ("study", "authors")
UNREADABLE_IMAGES = ("error", "skip")  # an unreadable image stops the run (naming it), or is left out and counted
# settings that change where or how fast a run trains, not what it learns (not part of its identity; a run
# resumes with other values). unreadable_images is one: on sound data it changes nothing, and a run that
# met an unreadable image must resume with "skip" after an "error" stop; what it left out is recorded in the run.
# decoded_cache keeps the decoded pixels, so it changes nothing; torch_threads may change the last bits of float
# sums (as device does), not what the run is.
# log_every only decides how often the losses are read on the host (issue 24); channels_last and compile change the
# memory layout and the kernels, so the last bits of float sums (as device does), not what the run is.
RUNTIME_FIELDS = ("device", "num_workers", "data_root", "unreadable_images", "decoded_cache", "torch_threads",
                  "log_every", "channels_last", "compile")
# the backbones with convolutions that channels_last can lay out (the open_clip ViT towers cannot use it)
_CHANNELS_LAST_BACKBONES = ("small", "cse_resnet50")
# defaults that depend on the method: a field left at None takes its method's value
METHOD_DEFAULTS = {"clusterretri": {"lambda_da": 0.1}, "dmwa": {"lambda_da": 0.0}}
# a config's name (in ``pretrained``, ``teacher_weights``) for the weights of `make pretrain` (default settings);
# ``models.named_weights`` resolves it to a file through the resolver ``training.pretrained_store`` registers
PRETRAINED_MINIATURE = "pretrain"
# every pretraining of the miniature a config can name, with the corpus it is trained on (training.pretrain): a
# benchmark's runs start from the one whose corpus follows its appearance rule (synthetic_hard: pretrain_hard)
MINIATURE_PRETRAININGS = {PRETRAINED_MINIATURE: "synthetic_pretrain", "pretrain_hard": "synthetic_pretrain_hard"}


@dataclass
class TrainConfig:
    method: str = "clusterretri"        # clusterretri (L_DA weight lambda_da; 0 = plain baseline) | dmwa
    dataset: str = "synthetic"          # dataset id (zssbir.data.benchmarks)
    data_root: str | None = None        # folder of the data sets; None = ZSSBIR_DATA / data/datasets
    backbone: str = "small"             # small | cse_resnet50 | clip:<open_clip model>
    pretrained: str | None = None       # open_clip tag or local checkpoint path; None = random init; "pretrain":
                                        # the small backbone's weights from `make pretrain` (training.pretrain)
    backbone_params: dict = field(default_factory=dict)  # backbone-specific options (e.g. width, train_mode)
    embed_dim: int = 512                # retrieval embedding width D
    image_size: int = 64                # input side in pixels (open_clip towers use their own)
    epochs: int = 30
    batch_size: int = 48                # images per step (all processes together)
    sketch_fraction: float = 1 / 3      # share of sketches in a ClusterRetri batch (authors: 1/3)
    lr: float = 2e-3
    lr_final_factor: float = 1e-2       # lr at epoch e = lr * lr_final_factor ** (e / epochs); authors: 1e-3
    weight_decay: float = 5e-4
    lambda_da: float | None = None      # weight of ClusterRetri's distribution alignment loss; None = the
                                        # method's default (METHOD_DEFAULTS: 0.1 for clusterretri, 0 for dmwa)
    lambda_kd: float = 0.0              # weight of SAKE distillation (needs teacher_weights)
    teacher_weights: str | None = None  # SAKE's teacher: an ImageNet SE-ResNet50 checkpoint; for the small backbone
                                        # "pretrain" (its pretraining, with the corpus-class head)
    kd_temperature: float = 1.0
    augment: bool = True                # training augmentation on (see augmentation)
    augmentation: str = "study"         # study | authors (SAKE's random_transform; zssbir.data.transforms)
    transform: str = "sake"             # transform convention for non-CLIP backbones
    protocol: str = "clean"             # clean: duplicate list entries dropped | authors: lists as published
    epoch_mode: str = "photos"          # photos: one pass over the photos, sketches cycle | shorter_loader: the
                                        # authors' zip of the two loaders (ends with the shorter one)
    lambda_kd_mask: float = 0.0         # weight of SAKE's WordNet class-similarity mask on the teacher logits (0.3)
    kd_mask: str | None = None          # the mask file (cid_mask.pickle: seen class -> 1000 ImageNet similarities)
    validation_gallery: int | None = None  # seen-class photos the per-epoch validation ranks (None: all; a seeded
                                        # per-class subsample otherwise, for large benchmarks)
    mismatched_pairs: float = 0.0       # DMWA: share of the training photos (a fixed set, the same for every seed)
                                        # whose anchor sketch is drawn from another class: degraded pairs for the
                                        # weight list to find (data.quadruplets; issue 22's control)
    method_params: dict = field(default_factory=dict)  # method-specific options (validated by the method)
    selection: str = "seen_val"         # seen_val: retrieval mAP on held-out seen sketches (default) | seen_val_top1:
                                        # their top-1 class accuracy (the authors' rule) | unseen_test (leaks) | last
    max_steps_per_epoch: int | None = None  # cap for smoke runs
    seed: int = 0
    device: str = "auto"
    amp: bool = True                    # autocast where the device supports it (CUDA); ignored on CPU
    num_workers: int = 0
    unreadable_images: str = "error"    # error (stop, naming the file) | skip (leave it out with a warning; the
                                        # run records the files in unreadable_images.json and their count)
    decoded_cache: bool = False         # decode each training and validation image once per process and keep its
                                        # pixels in memory (zssbir.data.datasets; same results, less decoding)
    torch_threads: int | None = None    # torch.set_num_threads during training; None = torch's default (every
                                        # core). 1 avoids the collapse of 2 threads on 2 busy shared cores
    log_every: int | None = None        # steps between host reads of the summed losses (progress bar, non-finite
                                        # check); None: every step on the CPU (a read waits for nothing there), 25
                                        # on a GPU. The history is read once per epoch whatever it is
    channels_last: bool = False         # channels-last layout of the model and its image batches (the
                                        # convolutional backbones: small, cse_resnet50)
    compile: bool = False               # torch.compile the backbone (opt-in); where it cannot run here, one line
                                        # says why and training goes on without it

    def __post_init__(self):
        if self.method not in METHOD_DEFAULTS:
            raise ValueError(f"unknown method {self.method!r}; known: {sorted(METHOD_DEFAULTS)}")
        for name, value in METHOD_DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name, choices in (("selection", SELECTIONS), ("protocol", PROTOCOLS), ("epoch_mode", EPOCH_MODES),
                              ("augmentation", AUGMENTATIONS), ("unreadable_images", UNREADABLE_IMAGES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.lambda_kd_mask > 0 and not (self.kd_mask and self.lambda_kd > 0):
            raise ValueError("lambda_kd_mask > 0 needs kd_mask (the class-mask file, e.g. cid_mask.pickle) and "
                             "lambda_kd > 0 (the mask is added to the teacher's logits)")
        if self.validation_gallery is not None and (not isinstance(self.validation_gallery, int)
                                                    or self.validation_gallery < 1):
            raise ValueError(f"validation_gallery must be a positive int or None, got {self.validation_gallery!r}")
        for name in ("epochs", "batch_size", "embed_dim", "image_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.decoded_cache, bool):
            raise ValueError(f"decoded_cache must be true or false, got {self.decoded_cache!r}")
        if self.torch_threads is not None and (isinstance(self.torch_threads, bool)
                                               or not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            raise ValueError(f"torch_threads must be a positive int or None, got {self.torch_threads!r}")
        if self.log_every is not None and (isinstance(self.log_every, bool) or not isinstance(self.log_every, int)
                                           or self.log_every < 1):
            raise ValueError(f"log_every must be a positive int or None, got {self.log_every!r}")
        for name in ("channels_last", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.channels_last and self.backbone not in _CHANNELS_LAST_BACKBONES:
            raise ValueError(f"channels_last is for the convolutional backbones "
                             f"({', '.join(_CHANNELS_LAST_BACKBONES)}), not {self.backbone}: leave channels_last false")
        if isinstance(self.mismatched_pairs, bool) or not isinstance(self.mismatched_pairs, (int, float)) \
                or not 0 <= self.mismatched_pairs < 1:
            raise ValueError(f"mismatched_pairs must be a share in [0, 1), got {self.mismatched_pairs!r}")
        if self.mismatched_pairs and self.method != "dmwa":
            raise ValueError("mismatched_pairs degrades DMWA's quadruplets; a clusterretri run has no sketch-photo "
                             "pairs to mismatch: leave it at 0")
        if not 0 < self.sketch_fraction < 1:
            raise ValueError(f"sketch_fraction must be in (0, 1), got {self.sketch_fraction}")
        if self.lambda_kd > 0 and not self.teacher_weights:
            raise ValueError("lambda_kd > 0 needs teacher_weights: a local ImageNet SE-ResNet50 checkpoint, or "
                             "'pretrain' for the small backbone (built by `make pretrain`)")
        for name in ("pretrained", "teacher_weights"):
            if getattr(self, name) in MINIATURE_PRETRAININGS and self.backbone != "small":
                raise ValueError(f"{name}: {getattr(self, name)!r} names the small backbone's pretraining (make "
                                 f"pretrain); the "
                                 f"{self.backbone} backbone needs its own weights file")

    @property
    def list_duplicates(self) -> str:
        """How the file lists are read (``data.datasets.load_split``'s ``duplicates``): "keep" under the authors'
        protocol (lists as published), "drop" under the clean one."""
        return "keep" if self.protocol == "authors" else "drop"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training parameters {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of training parameters")
        return cls.from_dict(values)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
