"""The closing prose of a notebook page as Markdown: sentences computed from the page's results, shown as a list
(``markdown``), with the small wording helpers the sentence builders of 02, 03 and 06 share. Never ``print()``:
Markdown wraps at word boundaries in JupyterLab and in the HTML report, where printed lines are monospace and cut."""
from __future__ import annotations

from collections.abc import Iterable

from .scoring import signed  # noqa: F401  (a difference with its sign, never '-0.000'; shared with 01 and 05)


def markdown(sentences: Iterable[str], *, empty: str = "No result to describe yet."):
    """``IPython.display.Markdown`` of the sentences as a bulleted list (``empty`` when there are none)."""
    from IPython.display import Markdown

    lines = [s.strip() for s in sentences if s and s.strip()]
    return Markdown("\n".join(f"- {s}" for s in lines) if lines else empty)


def percent_change(new: float, old: float) -> str:
    """'+12 %' / '-9 %' of ``new`` against ``old`` ('n/a' when ``old`` is 0)."""
    if not old:
        return "n/a"
    v = round(100 * (new - old) / abs(old))
    return f"{v if v != 0 else 0:+d} %"


def count_of(n: int, total: int, noun: str) -> str:
    """'4 of 10 classes', '1 of 3 queries' (``noun`` is the plural)."""
    return f"{n} of {total} {noun}"


def listed(names: Iterable[str], limit: int = 6) -> str:
    """'a, b and c'; more than ``limit`` names end with 'and N more'."""
    names = [str(n) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else ""
