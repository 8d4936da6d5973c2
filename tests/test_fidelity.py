"""The authors' protocol options: augmentation, protocol, epoch mode, selection rule, class mask; refused when unknown."""
import numpy as np
import pytest
import torch
from PIL import Image

from zssbir.data.transforms import AuthorsAugmentation, build_transform
from zssbir.training.config import TrainConfig


def _asymmetric(size=16):
    x = np.zeros((size, size, 3), np.uint8)
    x[:, : size // 4] = 255          # a white band on the left: a flip moves it
    x[2, 5] = (10, 200, 30)
    return Image.fromarray(x)


def test_authors_augmentation_fires_with_their_probabilities():
    torch.manual_seed(0)
    aug, img = AuthorsAugmentation(), _asymmetric()
    base = np.asarray(img)
    unchanged = np.mean([np.array_equal(np.asarray(aug(img)), base) for _ in range(3000)])
    # untouched: not applied (0.3), or applied with none of its 4 parts firing (0.7 * 0.5 ** 4)
    assert unchanged == pytest.approx(0.3 + 0.7 * 0.5 ** 4, abs=0.03)


def test_authors_augmentation_scales_x_and_y_separately_and_fills_black():
    aug = AuthorsAugmentation()
    white = Image.new("RGB", (40, 40), "white")
    torch.manual_seed(1)
    widths, heights, black_corners = [], [], 0
    for _ in range(400):
        out = np.asarray(aug(white)).min(axis=2)
        rows, cols = np.nonzero(out > 128)
        if len(rows):
            heights.append(rows.max() - rows.min() + 1)
            widths.append(cols.max() - cols.min() + 1)
        black_corners += out[0, 0] == 0
    ratio = np.array(widths) / np.array(heights)
    assert ratio.min() < 0.85 and ratio.max() > 1.15   # x and y scaled by different factors
    assert black_corners > 20                          # the fill is black, also for a white sketch


def test_training_transform_uses_the_chosen_augmentation():
    authors = build_transform("sketch", 32, "sake", train=True, augmentation="authors")
    study = build_transform("sketch", 32, "sake", train=True, augmentation="study")
    assert "AuthorsAugmentation" in repr(authors) and "RandomAffine" not in repr(authors)
    assert "RandomAffine" in repr(study) and "AuthorsAugmentation" not in repr(study)
    assert "AuthorsAugmentation" not in repr(build_transform("sketch", 32, "sake", augmentation="authors"))
    with pytest.raises(ValueError, match=r"unknown augmentation 'sake'; expected one of \('authors', 'study'\)"):
        build_transform("sketch", 32, "sake", train=True, augmentation="sake")


@pytest.mark.parametrize("field, value, choices", [
    ("protocol", "published", "('clean', 'authors')"), ("epoch_mode", "sketches", "('photos', 'shorter_loader')"),
    ("augmentation", "sake", "('study', 'authors')"),
    ("selection", "top1", "('seen_val', 'seen_val_top1', 'unseen_test', 'last')")])
def test_unknown_protocol_choices_are_refused_with_the_valid_ones(field, value, choices):
    with pytest.raises(ValueError, match=rf"{field} must be one of {choices.replace('(', '[(]').replace(')', '[)]')}"):
        TrainConfig(**{field: value})


def test_the_class_mask_needs_its_file_and_distillation():
    with pytest.raises(ValueError, match="lambda_kd_mask > 0 needs kd_mask"):
        TrainConfig(lambda_kd_mask=0.3)
    TrainConfig(lambda_kd=1.0, teacher_weights="t.pt", kd_mask="m.pickle", lambda_kd_mask=0.3)
