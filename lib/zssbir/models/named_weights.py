"""Weights that a config names instead of giving a file (``pretrained``, ``teacher_weights``), resolved to a file.

The models take weights files; a name such as ``"pretrain"`` (``config.PRETRAINED_MINIATURE``: the miniature's
default pretraining) is resolved by the layer that makes those weights, which registers a resolver here
(``register``): ``training.pretrained_store`` registers ``"pretrain"`` when it is imported (``training.loop``
imports it, so every training run has it). This keeps the package's import order one way: models never import
training (docs/module_map.md). Any other value (a file, an open_clip tag, None) passes through unchanged.
"""
from __future__ import annotations

from typing import Callable

from ..config import MINIATURE_PRETRAININGS

# the module that registers each known name: the error names it when nothing registered the name yet
PROVIDERS = {name: "zssbir.training.pretrained_store" for name in MINIATURE_PRETRAININGS}
_RESOLVERS: dict[str, Callable[[], str]] = {}


def register(name: str, resolver: Callable[[], str]) -> None:
    """Resolve the config value ``name`` by calling ``resolver()`` (a file path) from now on."""
    _RESOLVERS[name] = resolver


def resolve_weights(value: str | None) -> str | None:
    """A config's ``pretrained`` / ``teacher_weights`` value as a file: a registered name by its resolver (which
    raises FileNotFoundError, naming the command that builds them, when the weights are missing); others pass
    through."""
    if value in _RESOLVERS:
        return _RESOLVERS[value]()
    if value in PROVIDERS:
        raise LookupError(f"the weights name {value!r} is resolved by {PROVIDERS[value]}, which is not imported: "
                          f"import it first (zssbir.training.loop and zssbir.study.runs do)")
    return value
