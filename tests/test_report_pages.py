"""What the report pages say about themselves: the command that made the report, 04's closing sentences."""
import pandas as pd

from zssbir import paths


def test_the_index_names_the_command_that_made_the_report():
    from zssbir.study.pipeline import _index_html, report_command

    assert report_command(None) == "make reports"
    assert report_command(paths.notebooks_dir() / "pipeline_full.yml") == "make reports-full"
    assert report_command("my.yml") == "zssbir reports --pipeline my.yml"
    page = _index_html([], "abc", None, command=report_command("notebooks/pipeline_full.yml"))
    assert "by <code>make reports-full</code>" in page


def test_04_closes_with_what_its_weight_list_and_ablations_show():
    from zssbir.study.dmwa_analysis import closing_sentences

    history = [{"epoch": 0, "stat_w_std": 0.05, "stat_w_min": 0.90}, {"epoch": 1, "stat_w_std": 0.20, "stat_w_min": 0.6}]
    probe = pd.DataFrame({"w": [0.5, 0.7, 1.0, 1.1, 1.3, 1.4], "a_glob": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                          "a_loc": [0.2] * 6, "paired": [False, False, True, True, True, True]})
    claims = pd.DataFrame([{"claim": "the weight list improves alignment", "difference": -0.005, "n": 5,
                            "verdict": "not resolved by these seeds", "fragile": False}])
    text = closing_sentences(history, probe, claims, share=1 / 3)
    assert text[0].startswith("Over training the weight list became more uneven: its spread within a batch went "
                              "from 0.050 in epoch 1 to 0.200 in epoch 2")
    assert "The 2 lowest-weighted of the 6 probed pairs (w 0.60 on average) have global alignment 0.15" in text[1]
    assert "0 of the lowest and 2 of the highest are a sketch drawn from that very photo: pairs drawn from the same " \
           "photo weigh more" in text[1]
    assert text[2] == "\"the weight list improves alignment\": -0.005 mAP@all over 5 seeds, not resolved by these seeds."
    assert closing_sentences(history, probe, pd.DataFrame())[-1].startswith("No ablation pair has results")
