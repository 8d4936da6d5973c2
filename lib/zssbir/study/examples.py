"""Image figures of the notebooks: sample images per class, sketch-photo pairs, queries with their top
photos, and queries next to the gallery cluster they fall into. Each returns a matplotlib Figure."""
from __future__ import annotations

import numpy as np

from ..data.datasets import ListDataset
from ..data.summary import pairs
from ..eval.cluster_retrieval import ClusterIndex
from ..eval.exact_search import search
from ..viz import image_grid, retrieval_grid


def _pick(rng: np.random.Generator, candidates, n: int) -> np.ndarray:
    return rng.choice(candidates, size=min(n, len(candidates)), replace=False)


def class_examples(sketches: ListDataset, photos: ListDataset, *, classes: int, per_class: int, seed: int,
                   title: str):
    """A row per class (``classes`` drawn at random): ``per_class`` photos, then ``per_class`` sketches."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in _pick(rng, np.arange(len(sketches.class_names)), classes):
        for ds in (photos, sketches):
            shown = _pick(rng, np.flatnonzero(np.asarray(ds.labels) == c), per_class)
            images += [ds.load_image(i) for i in shown] + [None] * (per_class - len(shown))
        labels.append(sketches.class_names[c])
    return image_grid(images, ncols=2 * per_class, row_labels=labels,
                      suptitle=f"{title}: {per_class} photos | {per_class} sketches per class")


def pair_examples(sketches: ListDataset, photos: ListDataset, *, n: int = 4, seed: int = 0):
    """Photos and the sketches drawn from them (Sketchy-style names); None when no sketch names a photo."""
    linked = pairs(sketches, photos)
    if not linked:
        return None
    rng = np.random.default_rng(seed)
    chosen = _pick(rng, sorted(linked), n)
    width = 1 + max(len(linked[p]) for p in chosen)
    images = []
    for p in chosen:
        row = [photos.load_image(p)] + [sketches.load_image(s) for s in linked[p]]
        images += row + [None] * (width - len(row))
    return image_grid(images, ncols=width, row_labels=[photos.pair_ids[p] for p in chosen],
                      suptitle="a photo and the sketches drawn from it")


def retrieval_examples(feats: dict, sketches: ListDataset, photos: ListDataset, *, n: int = 6, k: int = 8,
                       seed: int = 0, title: str = "exact retrieval on unseen classes"):
    """``n`` random queries and their top-``k`` photos by exact cosine retrieval (green: same class)."""
    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    picks = _pick(np.random.default_rng(seed), np.arange(len(q)), n)
    _, ranked = search(q[picks], g, k=k, metric="cosine")
    relevant = np.asarray(gl)[ranked] == np.asarray(ql)[picks][:, None]
    return retrieval_grid([sketches.load_image(i) for i in picks], photos.load_image, ranked, relevant, topk=k,
                          title=title)


def cluster_examples(feats: dict, sketches: ListDataset, photos: ListDataset, *, K: int, n: int = 4,
                     shown: int = 7, seed: int = 0):
    """(figure, table). Figure: each row a query sketch (``n`` drawn at random), then photos of the k-means cluster
    (M = 1, K centroids) nearest to it, labelled with the share of that cluster in the query's class. Table
    (``cluster_analysis.nearest_clusters``): every query's nearest cluster, its size and that share, with ``shown``
    True for the rows in the figure."""
    from .cluster_analysis import nearest_clusters

    (q, ql), (g, gl) = feats["sketch"], feats["photo"]
    index = ClusterIndex.fit(g, 1, K)
    table, cells = nearest_clusters(q, ql, g, gl, K, index=index), index.codes[:, 0]
    rng = np.random.default_rng(seed)
    picks = _pick(rng, np.arange(len(q)), n)
    images, labels = [], []
    for i in picks:
        members = np.flatnonzero(cells == table.loc[i, "cluster"])
        chosen = _pick(rng, members, shown)
        images += [sketches.load_image(i)] + [photos.load_image(m) for m in chosen] + [None] * (shown - len(chosen))
        labels.append(f"{sketches.class_names[ql[i]]}\ncluster {table.loc[i, 'share of its class']:.0%} same class")
    table["shown"] = np.isin(np.arange(len(q)), picks)
    return image_grid(images, ncols=shown + 1, row_labels=labels,
                      suptitle="query sketch | photos of the cluster it is nearest to"), table
