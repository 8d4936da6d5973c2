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


def test_distillation_adds_the_class_prior_to_the_teacher_logits():
    from zssbir.training.losses import sake_distillation

    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    prior = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.3]])
    q = torch.softmax(teacher + prior, dim=1)
    expected = -(q * torch.log_softmax(student, dim=1)).sum(1).mean()
    assert sake_distillation(student, teacher, class_prior=prior).item() == pytest.approx(expected.item())
    assert sake_distillation(student, teacher).item() != pytest.approx(expected.item())


def _mask_file(path, keys, width=1000):
    import pickle

    rng = np.random.default_rng(0)
    path.write_bytes(pickle.dumps({k: rng.random(width).astype(np.float32) for k in keys}))
    return path


def test_class_mask_rows_follow_the_class_order_and_mismatches_are_named(tmp_path):
    from zssbir.models.class_mask import load_class_mask

    names = ["cat", "hot air balloon", "teddy_bear"]
    by_id = load_class_mask(_mask_file(tmp_path / "ids.pickle", [0, 1, 2]), names)
    assert by_id.shape == (3, 1000)
    by_name = load_class_mask(_mask_file(tmp_path / "names.pickle", ["teddy bear", "cat", "Hot_Air_Balloon"]), names)
    import pickle

    raw = pickle.loads((tmp_path / "names.pickle").read_bytes())
    assert torch.equal(by_name[0], torch.from_numpy(raw["cat"])) and torch.equal(by_name[2], torch.from_numpy(raw["teddy bear"]))
    with pytest.raises(ValueError, match=r"no row for \['teddy_bear'\]; rows for classes not seen: \['dog'\]"):
        load_class_mask(_mask_file(tmp_path / "bad.pickle", ["cat", "hot air balloon", "dog"]), names)
    with pytest.raises(ValueError, match=r"no row for \['2 \(teddy_bear\)'\]; rows for classes not seen: \[7\]"):
        load_class_mask(_mask_file(tmp_path / "bad_ids.pickle", [0, 1, 7]), names)
    with pytest.raises(FileNotFoundError, match="cid_mask.pickle"):
        load_class_mask(tmp_path / "missing.pickle", names)


def test_distilled_run_with_class_mask_trains_and_evaluates_without_the_teacher_file(isolated_dirs):
    from zssbir.data.datasets import load_split
    from zssbir.data.tools import ensure_dataset
    from zssbir.study.scoring import split_features
    from zssbir.training.loop import load_trained, train

    ensure_dataset("synthetic_tiny", progress=False)
    names = load_split("synthetic_tiny", "train", "photo").class_names
    timm = pytest.importorskip("timm")
    teacher_file = isolated_dirs / "seresnet50.pt"  # an ImageNet SE-ResNet50 in timm's layout, random weights
    torch.manual_seed(0)
    torch.save(timm.create_model("seresnet50", pretrained=False).state_dict(), teacher_file)
    mask = _mask_file(isolated_dirs / "cid_mask.pickle", list(range(len(names))))
    config = TrainConfig(dataset="synthetic_tiny", backbone="cse_resnet50", image_size=32, embed_dim=16, batch_size=6,
                         epochs=1, max_steps_per_epoch=1, lambda_kd=1.0, teacher_weights=str(teacher_file),
                         kd_mask=str(mask), lambda_kd_mask=0.3)
    result = train(config, run_dir=isolated_dirs / "kd", progress=False)
    assert result.history[0]["loss_kd"] > 0
    assert torch.equal(result.model.class_mask, load_class_mask_rows(mask, names))
    teacher_file.unlink()
    mask.unlink()
    model, loaded = load_trained(isolated_dirs / "kd", device="cpu")
    assert model.teacher is None and loaded.lambda_kd == 1.0
    feats = split_features(model, loaded, "zero", device="cpu")
    assert feats["photo"][0].shape[1] == 16


def load_class_mask_rows(path, names):
    from zssbir.models.class_mask import load_class_mask

    return load_class_mask(path, names)


def _features(seed=0, n_classes=4, per_class=12, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    return (centres[labels] + 0.7 * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_cluster_then_retrieve_is_scored_over_kmeans_seeds():
    from zssbir.eval.cluster_retrieval import DEFAULT_SEED, evaluate_clustered
    from zssbir.study.scoring import cluster_over_seeds

    (g, gl), (q, ql) = _features(0), _features(1)
    scored = cluster_over_seeds(q, g, ql, gl, 1, 4, "adc", kmeans_seeds=3)
    each = [evaluate_clustered(q, g, ql, gl, 1, 4, variant="adc", seed=DEFAULT_SEED + i, preset="clusterretri")
            for i in range(3)]
    values = [e["map@all"].value for e in each]
    record = scored["map@all"]
    assert record["kmeans_seeds"] == [DEFAULT_SEED, DEFAULT_SEED + 1, DEFAULT_SEED + 2]
    assert record["per_kmeans_seed"] == values and record["value"] == pytest.approx(np.mean(values))
    assert record["std_over_kmeans_seeds"] == pytest.approx(np.std(values, ddof=1))
    assert len(set(values)) > 1, "the layout should make the k-means seed matter"
    stable = cluster_over_seeds(q, g, ql, gl, 1, 4, "adc", kmeans_seeds=1, ties="stable")["map@all"]
    assert stable["convention"]["ties"] == "stable" and record["convention"]["ties"] == "random"
    with pytest.raises(ValueError, match="kmeans_seeds must be at least 1"):
        cluster_over_seeds(q, g, ql, gl, 1, 4, "adc", kmeans_seeds=0)


def test_results_files_keep_the_seed_values_and_tables_show_both_tie_orders(tmp_path):
    from zssbir.study import tables
    from zssbir.study.results import load_results, write_results
    from zssbir.study.scoring import cluster_over_seeds

    (g, gl), (q, ql) = _features(0), _features(1)
    for seed in (0, 1):
        for ties in (None, "stable"):
            retrieval = {"kind": "cluster", "M": 1, "K": 4, "variant": "adc", **({"ties": ties} if ties else {})}
            write_results(f"run_seed{seed}__cluster{'_stable' if ties else ''}", seed=seed, out_dir=tmp_path,
                          params={"method": "clusterretri", "dataset": "d", "train": {"lambda_da": 0.1},
                                  "retrieval": retrieval, "protocol": "authors"},
                          metrics=cluster_over_seeds(q, g, ql, gl, 1, 4, "adc", kmeans_seeds=2, ties=ties))
    record = load_results(tmp_path / "run_seed0__cluster.json")[0]
    assert len(record["metrics"]["map@all"]["per_kmeans_seed"]) == 2 and record["params"]["protocol"] == "authors"
    frame = tables.study_frame(tmp_path)
    rows = set(tables.study_table(frame, "d").index) - {tables.CONVENTION_ROW}
    assert rows == {"ClusterRetri L_DA 0.1, cluster M=1 K=4 adc", "ClusterRetri L_DA 0.1, cluster M=1 K=4 adc, stable ties"}


def test_the_sketchy_config_scores_the_gallery_as_published(isolated_dirs):
    """SAKE's Sketchy photo lists name the unseen originals twice: the authors' protocol keeps the repeats (their
    17,101-entry gallery), the clean one drops them (14,601); the fabricated tree lists 3 originals per class twice."""
    from fabricate_real import SKETCHY, sketchy_sake
    from zssbir.data.lists import read_list
    from zssbir.data.prepare import prepare
    from zssbir.models.factory import build_model
    from zssbir.study.runs import run_config
    from zssbir.study.scoring import split_features

    prepare("sketchy_ext_split1", [sketchy_sake(isolated_dirs / "download")], classes=SKETCHY)
    authors = run_config("clusterretri/sketchy_ext_split1.yaml")
    assert authors.protocol == "authors" and authors.list_duplicates == "keep"
    small = {"backbone": "small", "pretrained": None, "lambda_kd": 0.0, "teacher_weights": None, "image_size": 32,
             "embed_dim": 16, "backbone_params": {"width": 32, "depth": 1, "heads": 2}, "device": "cpu"}
    sizes = {}
    for protocol in ("authors", "clean"):
        config = run_config("clusterretri/sketchy_ext_split1.yaml", {**small, "protocol": protocol})
        model = build_model(config, list(SKETCHY.seen))
        sizes[protocol] = len(split_features(model, config, "zero", device="cpu")["photo"][1])
    listed = read_list(isolated_dirs / "data" / "Sketchy" / "zeroshot1" / "all_photo_filelist_zero.txt")
    assert sizes == {"authors": len(listed), "clean": len(listed) - 2 * 3}


def test_tie_merged_ap_equals_sklearn_on_tied_scores():
    from sklearn.metrics import average_precision_score

    from zssbir.eval.metrics import evaluate

    # the example: scores [.5, .5, .5], gallery labels [1, 0, 1], query 1
    example = evaluate(np.array([[0.5, 0.5, 0.5]]), [1], [1, 0, 1], metrics="map@all", preset="sem_pcyc")
    assert example["map@all"].value == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 60)).astype(np.float32) / 5   # many ties
    q, g = rng.integers(0, 4, 40), rng.integers(0, 4, 60)
    expected = [average_precision_score(g == c, s) for c, s in zip(q, scores)]
    for ties in ("stable", "random"):
        got = evaluate(scores, q, g, metrics="map@all", preset="sem_pcyc", ties=ties, seed=3, block_size=7)
        assert np.allclose(got["map@all"].per_query, expected)
    distances = evaluate(1 - scores, q, g, metrics="map@all", ap="tie_merged", higher_is_better=False)
    assert np.allclose(distances["map@all"].per_query, expected)
    ordered = evaluate(scores, q, g, metrics="map@all", ap="exact")
    assert not np.allclose(ordered["map@all"].per_query, expected)   # ordering the ties gives other values
    untied = rng.normal(size=(10, 30))
    assert evaluate(untied, q[:10], g[:30], ap="tie_merged", metrics="map@all")["map@all"].value == pytest.approx(
        evaluate(untied, q[:10], g[:30], ap="exact", metrics="map@all")["map@all"].value)


def test_tie_merged_ap_at_k_merges_ties_inside_the_cut_list():
    from sklearn.metrics import average_precision_score

    from zssbir.eval.metrics import evaluate
    from zssbir.eval.relevant_ranks import tiebreak_ranks

    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(30, 50)).astype(np.float64)
    q, g = rng.integers(0, 3, 30), rng.integers(0, 3, 50)
    got = evaluate(scores, q, g, metrics="map@10", preset="sem_pcyc", ties="random", seed=5)["map@10"].per_query
    for i in range(30):   # Sem-PCYC's apsak: the top 10 by the same tie order, then sklearn on that list
        top = np.lexsort((tiebreak_ranks(50, "random", 5), -scores[i]))[:10]
        relevant = g[top] == q[i]
        expected = average_precision_score(relevant, scores[i, top]) if relevant.any() else 0.0
        assert got[i] == pytest.approx(expected), i


def test_cluster_scores_under_sem_pcyc_take_the_score_path():
    from zssbir.eval.cluster_retrieval import ClusterIndex

    (g, gl), (q, ql) = _features(0), _features(1)
    index = ClusterIndex.fit(g, 1, 4)
    assert index.choose_path("adc", preset="sem_pcyc") == "scores"
    assert index.choose_path("adc", preset="clusterretri") == "cells"
    with pytest.raises(ValueError, match="tie_merged"):
        index.evaluate(q, ql, gl, preset="sem_pcyc", path="cells")


def test_scipy_backend_gives_the_authors_centroids():
    """The authors' PQ.fit: numpy's global state seeded once, then kmeans2(minit='points') per sub-space in order."""
    import warnings

    from scipy.cluster.vq import kmeans2

    from zssbir.eval.cluster_retrieval import ClusterIndex, evaluate_clustered, prepare_features

    (g, gl), (q, ql) = _features(0, dim=8), _features(1, dim=8)
    index = ClusterIndex.fit(g, 2, 5, seed=123, backend="scipy")
    unit = prepare_features(g, "gallery", True).numpy()  # L2-normalised in torch, as their feature extraction does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(123)
        authors = [kmeans2(unit[:, m * 4:(m + 1) * 4], 5, iter=20, minit="points")[0] for m in range(2)]
    assert np.array_equal(index.centroids, np.stack(authors))
    assert not np.array_equal(ClusterIndex.fit(g, 2, 5, seed=124, backend="scipy").centroids, index.centroids)
    result = evaluate_clustered(q, g, ql, gl, 2, 5, kmeans_backend="scipy", preset="clusterretri")["map@all"]
    assert result.convention["kmeans_backend"] == "scipy"
    with pytest.raises(ValueError, match=r"unknown k-means backend 'sklearn'; expected one of \('faiss', 'scipy'\)"):
        ClusterIndex.fit(g, 2, 5, backend="sklearn")


def test_validation_gallery_subsample_is_per_class_seeded_and_ordered(isolated_dirs):
    from zssbir.data.datasets import load_split, subsample_per_class
    from zssbir.data.tools import ensure_dataset

    ensure_dataset("synthetic_tiny", progress=False)
    photos = load_split("synthetic_tiny", "train", "photo")
    n_classes = len(photos.class_names)
    small = subsample_per_class(photos, n_classes * 2, seed=0)
    counts = np.bincount(small.labels, minlength=n_classes)
    assert (counts == np.minimum(2, np.bincount(photos.labels))).all()
    paths = [e.path for e in photos.entries]
    kept = [paths.index(e.path) for e in small.entries]
    assert kept == sorted(kept)                                  # list order kept
    assert [e.path for e in subsample_per_class(photos, n_classes * 2, seed=0).entries] == [e.path for e in small.entries]
    assert [e.path for e in subsample_per_class(photos, n_classes * 2, seed=1).entries] != [e.path for e in small.entries]


def test_each_rank_draws_its_own_worker_seeds_from_one_shared_permutation(isolated_dirs, monkeypatch):
    """DDP: the ranks split one permutation of the photos (the sampler's seed is shared) while their loaders'
    seeds (augmentation in workers) differ; rank 0 keeps the single-process seed."""
    import zssbir.training.batches as training_batches
    from zssbir.data.datasets import load_split
    from zssbir.data.tools import ensure_dataset

    ensure_dataset("synthetic_tiny", progress=False)
    data = {d: load_split("synthetic_tiny", "train", d) for d in ("sketch", "photo")}
    config = TrainConfig(dataset="synthetic_tiny", batch_size=12)
    seen = []
    original = training_batches.make_loader
    monkeypatch.setattr(training_batches, "make_loader", lambda ds, b, seed, sampler, **kw: seen.append(
        (seed, sampler.seed, list(sampler))) or original(ds, b, seed=seed, sampler=sampler, **kw))
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        training_batches.mixed_batches(data, config, epoch=0, rank=rank, world=world)
    (single, _, _), (r0, s0, part0), (r1, s1, part1) = seen
    assert r0 == single and r1 != r0 and s0 == s1
    assert not set(part0) & set(part1) and len(part0) == len(part1)
