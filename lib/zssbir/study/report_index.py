"""The report's front page (``<reports>/index.html``, written by ``pipeline.run_pipeline``): what the study found,
then the reports. Nothing on it is typed: the plain verdict comes from the verdicts of the claim sentences in
``tables/headline.json`` (05_map_tables, ``study.findings``), the budget from ``configs/study/*.yaml``, the ceiling
of Prec@K from the data set's counts, every number of the table from the headline.

Order of the findings: a three-sentence verdict and its caveats; a reading path through the notebooks; the claims,
each with the bound its interval gives; a short metric primer (equations typeset by the local MathJax); the headline
table (seeds said once), the chance level and the figure.
"""
from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path

from .findings import CLAIMS, CONTRADICTED, SUPPORTED, TOO_FEW, UNRESOLVED

esc = html.escape
VERDICT_PATTERN = re.compile("|".join(re.escape(v) for v in (SUPPORTED, CONTRADICTED, UNRESOLVED, TOO_FEW)))
CLAIM_PATTERN = re.compile(r'^(?P<paper>[^"]+?), "(?P<claim>[^"]+)":')
FRAGILE = "Fragile, not a finding"

# the reading path: (report name, one line)
READING_PATH = (
    ("00_data_tour", "the benchmark: sketches and photos, the seen / unseen split, how many of each"),
    ("07_methods_in_2d", "each method's mechanism on toy 2-D data: L_DA, PQ cells and ADC, ties and AP, weights"),
    ("01_train", "ClusterRetri and its baseline trained over seeds, from the pretrained start and from scratch"),
    ("02_distribution_alignment", "L_DA's method card and what it does to the features: channel profiles, domain gap"),
    ("03_cluster_analysis", "cluster-then-retrieve's method card: purity against K, the M x K grid, fuse, ties"),
    ("04_dmwa", "DMWA rebuilt from its abstract: method card, block diagram, the weight list, the ablations"),
    ("05_map_tables", "every table from the results files, the claims over seeds, the metric-convention study"),
    ("06_explore", "what one sketch retrieves, exact against cluster-then-retrieve (live in JupyterLab)"),
)


def claim_verdicts(sentences: list[str]) -> list[dict]:
    """Paper, claim, verdict (the first verdict a sentence states), fragility and control flag of each claim
    sentence of ``findings.sentences``."""
    controls = {c.name: c.control for c in CLAIMS}
    out = []
    for s in sentences:
        head, verdict = CLAIM_PATTERN.match(s), VERDICT_PATTERN.search(s)
        if head and verdict:
            out.append({"paper": head["paper"], "claim": head["claim"], "verdict": verdict.group(0),
                        "fragile": FRAGILE in s, "control": controls.get(head["claim"], False)})
    return out


def _names(claims: list[dict]) -> str:
    return "; ".join(f"{c['paper']}: {c['claim']}" + (" (control)" if c["control"] else "") for c in claims)


def verdict_sentences(claims: list[dict]) -> list[str]:
    """Three sentences: what holds, what does not, what cannot be told (fragile verdicts count as the last)."""
    n = len(claims)
    if not n:
        return ["No claim has results on both of its sides yet, so nothing can be said to hold or not.",
                "The claims appear here once 01_train and 04_dmwa have trained both sides over the same seeds.",
                "Until then the table below only describes the runs."]
    holds = [c for c in claims if c["verdict"] == SUPPORTED and not c["fragile"]]
    fails = [c for c in claims if c["verdict"] == CONTRADICTED and not c["fragile"]]
    open_ = [c for c in claims if c not in holds and c not in fails]
    return [(f"Holds on this benchmark ({len(holds)} of {n} claims): {_names(holds)}." if holds else
             f"None of the {n} claims tested holds on this benchmark with these seeds."),
            (f"Does not hold, its interval lying below zero ({len(fails)} of {n}): {_names(fails)}." if fails else
             "No claim is contradicted: none lies clearly below zero."),
            (f"Cannot be told with these seeds ({len(open_)} of {n}: the interval straddles zero, too few seeds, or "
             f"the verdict is fragile): {_names(open_)}." if open_ else
             "Every claim is resolved, one way or the other.")]


def unseen_counts(dataset: str) -> dict | None:
    """Photos per unseen class, sketches per unseen class and the gallery size of ``dataset`` (None when its lists
    are not on disk)."""
    try:
        from ..data.datasets import load_split

        photos, sketches = (load_split(dataset, "zero", d, check_files=False) for d in ("photo", "sketch"))
    except Exception:  # the index is written even where the data set is not here
        return None
    return {"photos": Counter(int(x) for x in photos.labels), "sketches": Counter(int(x) for x in sketches.labels),
            "N": len(photos.labels)}


def precision_ceiling(counts: dict, K: int, denominator: str = "min_k_gallery", average: str = "class") -> float:
    """The largest Prec@K any ranking can reach: per class min(n_c, K) / min(K, N) ("min_k_gallery"; 1 for
    "min_k_relevant"), averaged over classes or over queries as the convention averages."""
    photos, sketches, N = counts["photos"], counts["sketches"], counts["N"]
    per_class = {c: (min(n, K) / min(K, N) if denominator == "min_k_gallery" else 1.0) for c, n in photos.items()}
    classes = [c for c in sketches if c in per_class]
    if average == "query":
        return sum(per_class[c] * sketches[c] for c in classes) / sum(sketches[c] for c in classes)
    return sum(per_class[c] for c in classes) / len(classes)


def _convention(text: str, key: str, default: str) -> str:
    found = re.search(rf"{key}=([a-z_]+)", text or "")
    return found.group(1) if found else default


def caveats(headline: dict, counts: dict | None) -> list[str]:
    """What limits every verdict above, from the headline's data set, the settings files and the results files."""
    from .. import paths
    from ..data.benchmarks import BENCHMARKS
    from .runs import run_config

    dataset = str(headline.get("dataset"))
    out = []
    bench = BENCHMARKS.get(dataset)
    if bench is not None and bench.generator is not None:
        size = ""
        if counts:
            per = sorted(set(counts["photos"].values()))
            size = (f" ({len(counts['photos'])} unseen classes of "
                    f"{per[0] if len(per) == 1 else f'{per[0]} to {per[-1]}'} photos each)")
        out.append(f"Measured on <code>{esc(dataset)}</code>, the embedded miniature benchmark{size}: procedural "
                   "sketches and photos that test the methods' mechanisms at small scale, not the published numbers.")
    cr, dm = run_config("study/clusterretri.yaml"), run_config("study/dmwa.yaml")
    px = f"{cr.image_size} px" if cr.image_size == dm.image_size else f"{cr.image_size} px and {dm.image_size} px"
    out.append(f"A CPU budget: {px} images (the papers use 224 px), {cr.epochs} ClusterRetri and {dm.epochs} DMWA "
               f"training epochs, the small <code>{esc(cr.backbone)}</code> backbone instead of CSE-ResNet50 or a CLIP "
               "ViT (<code>configs/study/clusterretri.yaml</code>, <code>configs/study/dmwa.yaml</code>).")
    out.append("DMWA is rebuilt from its abstract alone (no code and no equations are public): every choice is the "
               "study's (<code>docs/dmwa.md</code>), so a DMWA verdict is about this reconstruction.")
    real = sorted(real_benchmark_results(paths.runs_dir() / "results"))
    out.append(f"Real benchmarks run so far: {esc(', '.join(real))} (05 shows them beside the published numbers)."
               if real else "No real benchmark (Sketchy, TU-Berlin, QuickDraw) has been run yet: no results file "
               "names one; <code>configs/clusterretri/</code> and <code>configs/dmwa/</code> hold their settings.")
    return out


def real_benchmark_results(folder: Path) -> set[str]:
    """The data sets of the results files under ``folder`` that are not procedural."""
    from ..data.benchmarks import BENCHMARKS
    from .results import load_results

    try:
        records = load_results(folder) if Path(folder).is_dir() else []
    except ValueError:
        records = []
    names = {str((r.get("params") or {}).get("dataset")) for r in records}
    return {n for n in names if n in BENCHMARKS and BENCHMARKS[n].generator is None}


def reading_path_html(available: set[str] | None) -> str:
    """The notebooks in reading order, one line each; a link where the page is part of this report."""
    items = []
    for name, line in READING_PATH:
        shown = (f"<a href='{esc(name)}.html'>{esc(name)}</a>" if available is None or name in available
                 else f"<code>{esc(name)}</code> (not in this report)")
        items.append(f"<li>{shown}: {esc(line)}</li>")
    return "<h3>A reading path</h3><ol class='reading-path'>" + "".join(items) + "</ol>"


def primer_html(headline: dict, counts: dict | None) -> str:
    """The metric primer: VOC AP, the @K denominators, class against query averaging, ties, the ceiling of Prec@K."""
    conventions = headline.get("conventions", {})
    averages = {_convention(c, "average", "query") for c in conventions.values()}
    average = averages.pop() if len(averages) == 1 else "mixed"
    ceiling = ""
    prec = [m for m in headline.get("metrics", []) if re.fullmatch(r"prec@\d+", m)]
    if counts and prec:
        per = sorted(set(counts["photos"].values()))
        parts = []
        for m in prec:
            K = int(m.split("@")[1])
            denominator = _convention(conventions.get(m, ""), "prec_k_denominator", "min_k_gallery")
            value = precision_ceiling(counts, K, denominator, "query" if average == "query" else "class")
            exact = (len(per) == 1 and denominator == "min_k_gallery")
            parts.append(f"{esc(m)} &le; " + (f"{min(per[0], K)}/{min(K, counts['N'])} = {value:.3f}" if exact
                                              else f"{value:.3f}"))
        n_text = f"{per[0]}" if len(per) == 1 else f"{per[0]} to {per[-1]}"
        ceiling = (f"<li><b>The ceiling of Prec@K.</b> A sketch has at most $n_c$ relevant photos, so "
                   "$\\mathrm{Prec@}K \\le \\min(n_c, K) / \\min(K, N)$ with $N$ the gallery size. Here each unseen "
                   f"class has {n_text} photos and $N = {counts['N']}$: {'; '.join(parts)}. A row near its ceiling "
                   "is near perfect, whatever its value looks like.</li>")
    how = {"class": "Every column here averages per class, then over classes (macro), as SAKE and ClusterRetri do.",
           "query": "Every column here averages over queries, as ZSE-SBIR does.",
           "mixed": "The columns differ in their averaging: see each column's convention under the table."}[average]
    return ("<h3>How to read the numbers</h3><ul class='primer'>"
            "<li><b>AP, VOC-interpolated.</b> For a sketch whose $n$ relevant photos sit at ranks "
            "$r_1 < \\dots < r_n$, the precision at the $i$-th is $p_i = i / r_i$; VOC AP averages its envelope, "
            "$$\\mathrm{AP} = \\frac{1}{n}\\sum_{i=1}^{n} \\max_{j \\ge i} p_j ,$$ while exact AP averages the $p_i$. "
            "mAP is the mean of AP over sketches; mAP@all ranks the whole gallery.</li>"
            "<li><b>The @K denominators.</b> mAP@K keeps the hits within the top $K$ and divides by $\\min(K, n)$. "
            "Prec@K $= h_K / \\min(K, N)$, $h_K$ the relevant photos among the top $K$ (SAKE's; ZSE-SBIR divides by "
            "$\\min(K, n)$).</li>"
            f"<li><b>Class or query averaging.</b> {how} With every class holding as many sketches both agree; "
            "otherwise query averaging weighs a class by its number of sketches.</li>"
            "<li><b>Ties.</b> Cluster-then-retrieve at $M = 1$ gives every photo of a cluster the same distance, and "
            "the order inside the tie decides AP. The study draws ties in a seeded random order; keeping list order "
            "flatters lists sorted class by class (03, section 4, and 05 measure by how much).</li>"
            + ceiling + "</ul>")


def table_html(headline: dict) -> str:
    """The headline table, one row per method and variant, 'mean ± std' per metric; the seeds are said once (in the
    caption), and in a cell only where its row has another number of seeds."""
    metrics = headline.get("metrics") or list(headline.get("conventions", {}))
    rows = headline.get("rows", [])
    seeds = Counter(v.get("seeds") for r in rows for v in r["metrics"].values())
    usual = seeds.most_common(1)[0][0] if seeds else None

    def cell(v: dict) -> str:
        spread = "" if v.get("std") is None else f" ± {v['std']:.4f}"
        other = "" if v.get("seeds") == usual else f" ({v.get('seeds', '?')} seeds)"
        return f"{v['mean']:.4f}{spread}{other}"

    head = "".join(f"<th>{esc(m)}</th>" for m in metrics)
    body = "".join(f"<tr><th>{esc(r['row'])}</th>" + "".join(
        f"<td>{esc(cell(r['metrics'][m])) if m in r['metrics'] else ''}</td>" for m in metrics) + "</tr>" for r in rows)
    return (f"<table class='headline'><caption>mean ± standard deviation over {usual} seeds (unseen classes)"
            f"</caption><tr><th>row</th>{head}</tr>{body}</table>")


def findings_html(headline: dict | None, available: set[str] | None = None) -> str:
    """The findings section of the index from ``tables/headline.json``; ``available``: the report pages present
    (the reading path links those)."""
    from .scoring import CHANCE_LABEL

    if not headline:
        return ("<h2>What the study found</h2><p class='findings-missing'>No findings yet: "
                "<code>tables/headline.json</code> is written by <code>05_map_tables</code>; run "
                "<code>make reports</code>.</p>" + reading_path_html(available))
    counts = unseen_counts(str(headline.get("dataset")))
    sentences = headline.get("claims", [])
    verdict = " ".join(esc(s) for s in verdict_sentences(claim_verdicts(sentences)))
    warn = "".join(f"<li>{c}</li>" for c in caveats(headline, counts))
    claims = "".join(f"<li>{esc(c)}</li>" for c in sentences)
    rows = headline.get("rows", [])
    chance = next((r for r in rows if r["row"] == CHANCE_LABEL), None)
    chance_text = ("<p class='chance'><b>Chance level</b> (a uniformly random ranking of the same queries and gallery, "
                   "scored the same way): "
                   + ", ".join(f"{esc(m)} {v['mean']:.4f}" for m, v in chance["metrics"].items())
                   + ". A row is informative only as far as it clears this.</p>") if chance else ""
    conventions = "".join(f"<li><b>{esc(m)}</b>: {esc(str(c))}</li>"
                          for m, c in headline.get("conventions", {}).items())
    figures = "".join(f"<figure><img src='{esc(f)}' alt='{esc(Path(f).stem)}' style='max-width:100%'>"
                      f"<figcaption>{esc(Path(f).stem)}</figcaption></figure>" for f in headline.get("figures", [])[:1])
    return ("<h2>What the study found</h2>"
            f"<p class='verdict'>{verdict}</p><p>Read every verdict with these caveats:</p>"
            f"<ul class='caveats'>{warn}</ul><p class='provenance'>Measured on the unseen classes of "
            f"<code>{esc(str(headline.get('dataset')))}</code>, "
            f"from commit <code>{esc(str(headline.get('commit', ''))[:10])}</code>, "
            f"{esc(str(headline.get('generated', ''))[:10])}; every number is read from the results files by "
            "<code>05_map_tables</code>.</p>"
            + reading_path_html(available)
            + ("<h3>The papers' claims, paired over seeds</h3><p>Each sentence ends with what its 95 % interval "
               "supports and rules out: a bound on the true difference that you can quote.</p>"
               f"<ul class='claims'>{claims}</ul>" if claims else "")
            + primer_html(headline, counts)
            + "<h3>The headline table</h3>" + chance_text + table_html(headline)
            + (f"<details><summary>metric conventions</summary><ul>{conventions}</ul></details>" if conventions else "")
            + figures)
