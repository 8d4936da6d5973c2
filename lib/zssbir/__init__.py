"""zssbir: a reproducible study of zero-shot sketch-based image retrieval.

The package is the single source of truth; notebooks under ``notebooks/`` import it.
"""

__version__ = "0.1.0"
