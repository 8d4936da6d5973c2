"""Issue 3, item 6: the data tour notebook runs unchanged on a real dataset id once the data is in place."""
import nbformat
import papermill
import pytest

from fabricate_real import SKETCHY, sketchy_sake
from zssbir import paths
from zssbir.data.prepare import prepare


@pytest.mark.slow
def test_data_tour_runs_on_a_prepared_real_layout(isolated_dirs):
    prepare("sketchy_ext_split1", [sketchy_sake(isolated_dirs / "download")], classes=SKETCHY)
    out = isolated_dirs / "reports" / "tour.ipynb"
    papermill.execute_notebook(str(paths.notebooks_dir() / "00_data_tour.ipynb"), str(out), kernel_name="python3",
                               parameters={"dataset": "sketchy_ext_split1", "examples_per_class": 2,
                                           "classes_shown": 2}, cwd=str(paths.notebooks_dir()), progress_bar=False)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "3 seen classes: cat, hot-air_balloon, car_(sedan)" in text
    assert "12 of 12 unseen sketches name a photo of the list" in text
