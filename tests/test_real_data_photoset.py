"""Issue 12, point 2: a Sketchy tree without its extended photo set is not Sketchy-Ext; prepare and verify say so,
and results files and tables record the photo set."""
import shutil

from fabricate_real import SKETCHY, sketchy_original, sketchy_published
from zssbir.cli import main
from zssbir.data.photosets import EXTENDED, ORIGINAL, photo_set
from zssbir.data.prepare import prepare
from zssbir.data.verify import verify
from zssbir.study.results import load_results, write_results
from zssbir.study.tables import study_frame

CONVENTION = {"ap": "voc", "average": "query"}


def _splits(base):
    folder = base / "splits" / "sketchy_ext_split1"
    folder.mkdir(parents=True)
    (folder / "seen.txt").write_text("\n".join(SKETCHY.seen))
    (folder / "unseen.txt").write_text("\n".join(SKETCHY.unseen))
    return str(folder.parent)


def _result(name):
    return write_results(name, params={"dataset": "sketchy_ext_split1", "method": "clusterretri",
                                       "retrieval": {"kind": "exact"}, "train": {"lambda_da": 0.1}},
                         metrics={"map@all": {"value": 0.5, "convention": CONVENTION}}, seed=0)


def test_sketchy_without_extension_is_reported_by_prepare_verify_and_results(isolated_dirs, capsys):
    src = sketchy_original(isolated_dirs / "dl" / "rendered_256x256", extended=False)
    splits = _splits(isolated_dirs)
    assert main(["data", "prepare", "sketchy_ext_split1", "--source", str(src), "--splits-dir", splits]) == 0
    out = capsys.readouterr().out
    assert "photo set: original only" in out
    warning = next(line for line in out.splitlines() if line.startswith("WARNING:"))
    for words in ("EXTEND_image_sketchy/) is missing", "not Sketchy-Ext", "not comparable",
                  "`zssbir data prepare sketchy_ext_split1 --source <EXTEND_image_sketchy archive or folder>`"):
        assert words in warning, words

    report = verify("sketchy_ext_split1", classes=SKETCHY)
    assert not report.ok and report.photo_set == ORIGINAL
    [error] = [p for p in report.errors if p.text.startswith("photo set:")]
    assert "EXTEND_image_sketchy/) is missing" in error.text and "This tree is Sketchy, not Sketchy-Ext" in error.text
    assert "--source <EXTEND_image_sketchy archive or folder>" in error.fix
    count_warnings = [w.text for w in report.warnings if w.text.startswith("photo")]
    assert count_warnings and all("the extended photo set is missing" in w for w in count_warnings)
    assert main(["data", "verify", "sketchy_ext_split1", "--splits-dir", splits, "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "photo set: the extended photo set" in out and "all checks passed" not in out

    assert load_results(_result("run_without_ext"))[0]["params"]["photo_set"] == ORIGINAL
    rows = set(study_frame(isolated_dirs / "runs" / "results")["row"])
    assert any("original photos only" in r for r in rows), rows

    # adding the extension makes it Sketchy-Ext
    ext = sketchy_original(isolated_dirs / "dl" / "ext", sketches=0)
    report = prepare("sketchy_ext_split1", [ext / "EXTEND_image_sketchy"], classes=SKETCHY)
    assert report.photo_set == EXTENDED and not report.warnings
    result = verify("sketchy_ext_split1", classes=SKETCHY)
    assert result.ok and result.photo_set == EXTENDED, result.text()
    assert load_results(_result("run_with_ext"))[0]["params"]["photo_set"] == EXTENDED


def test_published_lists_naming_an_absent_extension(isolated_dirs):
    src = sketchy_published(isolated_dirs / "dl")
    shutil.rmtree(src / "Sketchy" / "EXTEND_image_sketchy_ready")
    report = prepare("sketchy_ext_split1", [src], classes=SKETCHY)
    assert report.photo_set == EXTENDED
    assert any("photos of the extended set EXTEND_image_sketchy/" in w and "--source" in w for w in report.warnings)
    result = verify("sketchy_ext_split1", classes=SKETCHY, decode=False)
    assert any(p.text.startswith("photo set: the lists name 30 photos of the extended set") for p in result.errors)
    assert photo_set("sketchy_ext_split1").extension_on_disk is False


def test_photo_set_of_other_benchmarks(isolated_dirs):
    assert photo_set("synthetic").name == "generated"
    assert photo_set("tuberlin_ext").name == "unknown"  # not prepared
