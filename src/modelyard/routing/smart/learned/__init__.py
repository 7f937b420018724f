"""Learned strong-vs-weak routers: labels, features, training, evaluation and the runtime.

Only :mod:`.runtime` (and what it imports: :mod:`.fileformat`, :mod:`.features`) runs in the
gateway; everything else is for ``modelyard router train`` / ``eval`` and imports scikit-learn
and matplotlib lazily.
"""

from modelyard.routing.smart.learned.runtime import LearnedRouter, RouterFileError

__all__ = ["LearnedRouter", "RouterFileError"]
