"""The figures every report quotes: the Wilson interval, and the docstring examples that need no data."""

from __future__ import annotations

import pytest


def test_the_doctest_examples_hold():
    """Docstring examples that need no data run as doctests (the Wilson interval, the settings helpers)."""
    import doctest

    from diycnn import settings
    from diycnn.evaluation import metrics

    for module in (metrics, settings):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_wilson_interval_matches_the_textbook_formula():
    import math

    from diycnn.evaluation.metrics import wilson_interval

    z = 1.959963984540054
    for k, n in ((64, 100), (3, 4), (0, 7), (30, 30), (1, 1)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert wilson_interval(k, n) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-8)
