"""Data selectors. One file per method; ``registry`` finds built-ins and ``selbench.selectors`` plugins.

(A subpackage on purpose: the standard library owns the top-level name ``selectors``.)
"""

from selbench.selectors.base import Budget, ScoringContext, SelectionError, Selector
from selbench.selectors.registry import available, get_selector

__all__ = ["Budget", "ScoringContext", "Selector", "SelectionError", "available", "get_selector"]
