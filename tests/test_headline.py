"""The README headline block is rewritten from the report's headline.json (and only between its markers)."""
import json

import pytest

from zssbir.study.readme_headline import END, START, update_readme


def test_readme_block_is_replaced_from_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSBIR_ROOT", str(tmp_path))
    reports = tmp_path / "reports"
    (reports / "tables").mkdir(parents=True)
    (reports / "figures").mkdir()
    (reports / "figures" / "study.png").write_bytes(b"\x89PNG fake")
    headline = {"dataset": "synthetic", "conventions": {"map@all": "ap=voc, average=class"},
                "markdown": "| row | map@all |\n|---|---|\n| DMWA | 0.3000 ± 0.0100 (3 seeds) |",
                "figures": ["figures/study.png"], "commit": "abcdef1234567", "generated": "2026-11-22T01:00:00"}
    (reports / "tables" / "headline.json").write_text(json.dumps(headline))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold numbers\n{END}\n\n## after\n")
    update_readme(readme, reports)
    text = readme.read_text()
    assert "old numbers" not in text and "| DMWA | 0.3000 ± 0.0100 (3 seeds) |" in text
    assert "![study](docs/figures/study.png)" in text and (tmp_path / "docs" / "figures" / "study.png").is_file()
    assert text.startswith("# title") and text.endswith("## after\n") and "abcdef1234" in text
    update_readme(readme, reports)  # idempotent
    assert readme.read_text() == text


def test_missing_report_or_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSSBIR_ROOT", str(tmp_path))
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(FileNotFoundError, match="make reports"):
        update_readme(readme, tmp_path / "reports")
    (tmp_path / "reports" / "tables").mkdir(parents=True)
    (tmp_path / "reports" / "tables" / "headline.json").write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(ValueError, match="block to replace"):
        update_readme(readme, tmp_path / "reports")
