"""Re-export of ``zssbir.models.losses`` (issue 26: the losses live beside the methods that use them, so that
models never import training). Kept so that older imports keep working; new code imports ``zssbir.models.losses``.
The names are the same objects; patch ``zssbir.models.losses`` to change what the methods call."""
from ..models.losses import (DISTANCES, QUADRUPLET_FORMS, alignment_kl, cross_entropy,  # noqa: F401
                             distribution_alignment, pair_distance, quadruplet_hinges, sake_distillation,
                             weighted_quadruplet)
