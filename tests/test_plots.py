"""The report's plots draw class names in any script: Hangul names are letters, not empty boxes."""

from __future__ import annotations

import warnings

import pytest

from diycnn.report import plots


def test_hangul_class_names_draw_with_a_cjk_font():
    if len(plots._font_rc()["font.family"]) == 1:
        pytest.skip("no Noto CJK font installed (.ci/run installs fonts-noto-cjk)")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")  # matplotlib's word for an empty box
        plots.confusion_png([[3, 1], [0, 4]], ["아이유", "수지"])
        plots.curves_png([{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.5, "loss": 0.7, "val_loss": 0.7}],
                         title="아이유 vs 수지")
    with warnings.catch_warnings(record=True) as caught, pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("always")
        mp.setattr(plots, "_font_rc", lambda: {"font.family": ["DejaVu Sans"]})  # without the fallback
        plots.confusion_png([[3, 1], [0, 4]], ["아이유", "수지"])
    assert any("missing from font" in str(w.message) for w in caught)  # the check above can fail
