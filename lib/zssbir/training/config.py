"""Re-export of ``zssbir.config`` (issue 26: ``TrainConfig`` lives in a leaf module below models and training, so
that models never import training). Kept so that older imports keep working; new code imports ``zssbir.config``."""
from ..config import (AUGMENTATIONS, EPOCH_MODES, METHOD_DEFAULTS, MINIATURE_PRETRAININGS,  # noqa: F401
                      PRETRAINED_MINIATURE, PROTOCOLS, RUNTIME_FIELDS, SELECTIONS, UNREADABLE_IMAGES, TrainConfig)
