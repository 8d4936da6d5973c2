"""SAKE's CSE-ResNet50 (conditional squeeze-excitation) and its frozen ImageNet teacher.

What SAKE does (Liu et al., ICCV 2019; public code github.com/qliu24/SAKE, ``src/senet.py``,
``src/ResnetModel.py``, ``src/train_cse_resnet_*_ext.py``), re-implemented here:

* Conditional SE. An SE-ResNet50 whose every squeeze-excitation block also receives a domain tag
  y (0 = sketch, 1 = photo, shape [B, 1]). SAKE concatenates y to the squeezed hidden vector before
  the second excitation layer (fc2 has C/r + 1 inputs). That is the same as adding ``y * w`` to the
  excitation logits, w being fc2's extra column: photos get a learned per-channel gate offset,
  sketches none. Here w is a separate parameter ``se.domain_weight`` [C]. Loading ImageNet weights
  sets w = 0 (SAKE appends a zero column), so the network starts as the plain ImageNet SE-ResNet50;
  random initialisation draws w like the rest of fc2 (as SAKE's ``pretrained=None`` does), so the
  tag matters from the start.
* Head. SAKE's 512-d variant (``CSEResnetModel_KDHashing``, also ClusterRetri's backbone) pools the
  2048-d map, projects it with a Linear to D, and puts both the class head and the ImageNet head on
  the D-d embedding. When ImageNet weights are loaded it initialises that projection and ImageNet
  head from a truncated SVD of the ImageNet classifier (fc ~ U_D S_D V_D^T: head = U_D,
  projection = S_D V_D^T), so head(projection(x)) starts close to the teacher's logits. Same here
  (we also copy the classifier bias into the head, and zero the projection bias).
* Teacher. A frozen ImageNet SE-ResNet50 (SAKE uses its CSE net with the zero domain column, which
  is the same function), evaluated on every image; only photo rows enter the loss.
* KD loss (in ``zssbir.models.losses``, not here). SAKE's ``SoftCrossEntropy``: target = softmax(kd_lambda *
  teacher_logits + kdneg_lambda * cid_mask), loss = sum over photos of -<target, log_softmax(student
  ImageNet logits)> / number of photos. There is no separate temperature: kd_lambda = 1.0 multiplies
  the teacher logits (an inverse temperature, so T = 1). kdneg_lambda = 0.3 with cid_mask, a
  per-class 0/1 vector over the 1000 ImageNet classes that are WordNet-related to the training
  class (SAKE's "semantic awareness"; the masks come as ``cid_mask.pickle`` with its split files).
  The total loss is CE + sake_lambda (1.0) * KD.

Weights. ``pretrained=None`` means random initialisation (the CPU default: no download ever happens
here). Otherwise a local file holding one of three key layouts (auto-detected):

  "timm"    ``timm.create_model("seresnet50")`` state dict: conv1, bn1, layer{1-4}.{i}.conv{1,2,3} /
            bn{1,2,3} / se.fc1 / se.fc2 (1x1 convs) / downsample.{0,1}, fc. Stride on the 3x3 conv,
            max-pool with padding 1 (torchvision style).
  "cadene"  Cadene's ``pretrainedmodels.se_resnet50`` (what SAKE loads, ``se_resnet50-ce0d4300.pth``):
            layer0.conv1 / layer0.bn1, layer{1-4}.{i}...se_module.fc1 / fc2, last_linear. Stride on
            the first 1x1 conv, max-pool with ceil_mode (Caffe style). A SAKE checkpoint's trunk also
            fits: an fc2 with one extra input column gives the domain weight.
  "zssbir"  a state dict saved from this module's backbone (keys start with "trunk.").

The stride placement differs between the two ImageNet layouts, so the trunk is built to match the
file (``layout`` records it, and is saved with the weights).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BackboneOutput, check_domain
from .weights import read_state_dict

LAYOUTS = ("timm", "cadene")
IMAGENET_CLASSES = 1000
_BLOCKS = (3, 4, 6, 3)


class CSEModule(nn.Module):
    """Squeeze-excitation whose excitation logits get ``tag * domain_weight`` added (SAKE's CSE)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)
        bound = 1.0 / (channels // reduction + 1) ** 0.5  # as if fc2 had the extra input column
        self.domain_weight = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        s = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        s = s + tag[:, None] * self.domain_weight
        return x * torch.sigmoid(s)[:, :, None, None]


class CSEBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, stride_in_1x1: bool = False):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride if stride_in_1x1 else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1 if stride_in_1x1 else stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.se = CSEModule(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)), tag)
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CSEResNet50Trunk(nn.Module):
    """Stem + 4 stages of conditional-SE bottlenecks -> [B, 2048, H/32, W/32]. Key names follow timm."""

    def __init__(self, layout: str = "timm"):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        caffe = layout == "cadene"
        self.register_buffer("stride_in_1x1", torch.tensor(caffe))  # saved, so a checkpoint knows its layout
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True) if caffe else nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, stages = 64, []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), _BLOCKS)):
            blocks = [CSEBottleneck(inplanes, planes, 1 if i == 0 else 2, caffe)]
            inplanes = planes * CSEBottleneck.expansion
            blocks += [CSEBottleneck(inplanes, planes, 1, caffe) for _ in range(n - 1)]
            stages.append(nn.ModuleList(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, tag)
        return x


class CSEResNet50Backbone(nn.Module):
    """The "cse_resnet50" backbone: pooled 2048-d -> Linear -> embed_dim; tokens = the last map."""

    transform_convention = "sake"
    preprocess = None  # use zssbir.data.transforms.build_transform(..., "sake") (ImageNet mean/std)
    token_dim = 2048

    def __init__(self, embed_dim: int = 512, image_size: int = 224, imagenet_head: bool = False,
                 layout: str = "timm"):
        super().__init__()
        self.embed_dim, self.image_size = embed_dim, image_size
        self.trunk = CSEResNet50Trunk(layout)
        self.proj = nn.Linear(2048, embed_dim)
        self.imagenet_head = nn.Linear(embed_dim, IMAGENET_CLASSES) if imagenet_head else None

    def forward(self, images: torch.Tensor, domain: torch.Tensor | None = None) -> BackboneOutput:
        domain = check_domain(domain, images.shape[0], True, "cse_resnet50")
        fmap = self.trunk(images, domain.to(images.dtype))
        embedding = self.proj(fmap.mean(dim=(2, 3)))
        logits = self.imagenet_head(embedding) if self.imagenet_head is not None else None
        return BackboneOutput(embedding=embedding, tokens=fmap.flatten(2).transpose(1, 2), logits_imagenet=logits)


class SEResNet50Teacher(nn.Module):
    """Frozen ImageNet SE-ResNet50 classifier: images -> logits [B, 1000]. Stays in eval mode."""

    def __init__(self, layout: str = "timm"):
        super().__init__()
        self.trunk = CSEResNet50Trunk(layout)
        self.fc = nn.Linear(2048, IMAGENET_CLASSES)

    def forward(self, images: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
        tag = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)  # domain weights are 0
        return self.fc(self.trunk(images, tag).mean(dim=(2, 3)))

    def train(self, mode: bool = True) -> "SEResNet50Teacher":
        return super().train(False)


# ---------------------------------------------------------------- loading weights
def detect_layout(sd: dict[str, torch.Tensor]) -> str:
    """'zssbir', 'timm' or 'cadene' (see the module docstring); ValueError otherwise."""
    if any(k.startswith("trunk.") for k in sd):
        return "zssbir"
    if "layer0.conv1.weight" in sd:
        return "cadene"
    if "conv1.weight" in sd and any(".se.fc1." in k for k in sd):
        return "timm"
    raise ValueError("unrecognised SE-ResNet50 state dict: expected timm's seresnet50 keys (conv1.weight, "
                     "layer1.0.se.fc1.weight, fc.weight), Cadene's se_resnet50 keys (layer0.conv1.weight, "
                     f"layer1.0.se_module.fc1.weight, last_linear.weight) or a zssbir checkpoint; first keys: "
                     f"{list(sd)[:5]}")


def convert_imagenet_state_dict(sd: dict[str, torch.Tensor]) -> tuple[str, dict, dict, list[str]]:
    """ImageNet SE-ResNet50 state dict -> (layout, trunk state dict, {"weight", "bias"} of fc, unmapped keys)."""
    layout = detect_layout(sd)
    if layout == "zssbir":
        raise ValueError("this is a zssbir checkpoint, not an ImageNet SE-ResNet50 state dict")
    trunk, fc, unmapped = {}, {}, []
    for key, value in sd.items():
        k = key
        if layout == "cadene":
            k = k.replace("layer0.conv1.", "conv1.").replace("layer0.bn1.", "bn1.").replace(".se_module.", ".se.")
            k = k.replace("last_linear.", "fc.")
        if k.startswith("fc."):
            fc[k[3:]] = value
            continue
        if not (k.startswith(("conv1.", "bn1.")) or k.split(".")[0] in ("layer1", "layer2", "layer3", "layer4")):
            unmapped.append(key)
            continue
        if ".se.fc" in k and k.endswith(".weight"):
            value = value.reshape(value.shape[0], value.shape[1])
            if k.endswith("fc2.weight") and value.shape[1] * 16 != value.shape[0]:  # SAKE's extra column
                trunk[k.replace("fc2.weight", "domain_weight")] = value[:, -1].clone()
                value = value[:, :-1]
        trunk[k] = value
    return layout, trunk, fc, unmapped


def _load_trunk(trunk: CSEResNet50Trunk, weights: dict[str, torch.Tensor]) -> None:
    """Strict load, except that absent domain weights are set to zero (start as a plain SE block)."""
    weights = dict(weights, stride_in_1x1=trunk.stride_in_1x1)
    for name, p in trunk.named_parameters():
        if name.endswith("domain_weight") and name not in weights:
            weights[name] = torch.zeros_like(p)
    missing, unexpected = trunk.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"SE-ResNet50 weights do not fit: missing {missing[:8]}, unexpected {unexpected[:8]}")


def _svd_init(backbone: CSEResNet50Backbone, fc: dict[str, torch.Tensor]) -> None:
    """SAKE: projection = S_k V_k^T, ImageNet head = U_k (k = min(D, 1000)) from the ImageNet classifier."""
    u, s, vh = torch.linalg.svd(fc["weight"].double(), full_matrices=False)
    k = min(backbone.embed_dim, s.numel())
    with torch.no_grad():
        backbone.proj.weight[:k] = (s[:k, None] * vh[:k]).float()
        backbone.proj.bias.zero_()
        backbone.imagenet_head.weight.zero_()
        backbone.imagenet_head.weight[:, :k] = u[:, :k].float()
        backbone.imagenet_head.bias.copy_(fc["bias"])


def build_cse_resnet50(*, embed_dim: int = 512, pretrained: str | None = None, image_size: int | None = None,
                       imagenet_head: bool = False, layout: str | None = None) -> CSEResNet50Backbone:
    """The "cse_resnet50" backbone. ``pretrained``: None (random init) or a local file (see module doc).

    ``layout`` ("timm" | "cadene") only matters for random init; with weights it follows the file.
    ``imagenet_head=True`` adds Linear(embed_dim -> 1000) giving ``logits_imagenet`` for SAKE's KD.
    """
    if pretrained is None:
        return CSEResNet50Backbone(embed_dim, image_size or 224, imagenet_head, layout or "timm")
    sd = read_state_dict(pretrained)
    found = detect_layout(sd)
    if found == "zssbir":
        file_layout = "cadene" if bool(sd.get("trunk.stride_in_1x1", torch.tensor(False))) else "timm"
        model = CSEResNet50Backbone(embed_dim, image_size or 224, imagenet_head, file_layout)
        model.load_state_dict(sd)
        return model
    found, trunk, fc, unmapped = convert_imagenet_state_dict(sd)
    if unmapped:
        warnings.warn(f"{pretrained}: keys not used by the CSE-ResNet50 trunk: {unmapped}", stacklevel=2)
    model = CSEResNet50Backbone(embed_dim, image_size or 224, imagenet_head, found)
    _load_trunk(model.trunk, trunk)
    if imagenet_head and fc:
        _svd_init(model, fc)
    return model


def build_imagenet_teacher(pretrained: str | None) -> SEResNet50Teacher:
    """SAKE's frozen ImageNet teacher (eval mode, requires_grad False) from a local SE-ResNet50 file.

    ``pretrained``: an ImageNet SE-ResNet50 state dict in timm or Cadene layout (see module doc).
    None gives a random teacher, which is only good for smoke tests (a warning says so).
    """
    if pretrained is None:
        warnings.warn("build_imagenet_teacher(None): random-initialised teacher; the distillation term will "
                      "teach noise. Pass a local ImageNet SE-ResNet50 state dict for real runs.", stacklevel=2)
        teacher = SEResNet50Teacher()
    else:
        layout, trunk, fc, unmapped = convert_imagenet_state_dict(read_state_dict(pretrained))
        if unmapped or set(fc) != {"weight", "bias"}:
            raise ValueError(f"{pretrained}: not a full ImageNet SE-ResNet50 classifier "
                             f"(unmapped keys {unmapped}, classifier keys {sorted(fc)})")
        teacher = SEResNet50Teacher(layout)
        _load_trunk(teacher.trunk, trunk)
        teacher.fc.load_state_dict(fc)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()
