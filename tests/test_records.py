"""The run's records (records.py): one checked reader each, frozen, and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from diycnn.records import Metrics, RunInfo, read_metrics, read_run_info, write_metrics, write_run_info

METRICS = {"test_accuracy": 0.75, "test_accuracy_ci95": [0.3, 0.95], "test_loss": 0.5, "class_names": ["a", "b"],
           "counts": {"train": 10, "val": 2, "test": 4}, "confusion_matrix": [[2, 0], [1, 1]], "from_elsewhere": 1}
INFO = {"format": "diycnn-run", "format_version": 1, "status": "complete", "class_names": ["a", "b"],
        "model": {"name": "tm", "spec": {}}, "training": {"epochs": 3}, "inference": {"tta": True}}


def test_records_round_trip_and_keep_what_they_do_not_know(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "model.json").write_text(json.dumps(INFO))
    m, info = read_metrics(tmp_path), read_run_info(tmp_path)
    assert m.test_accuracy == 0.75 and m["test_loss"] == 0.5 and m.get("from_elsewhere") == 1
    assert info.tta and info.training == {"epochs": 3} and m.ci95_text == "95% CI 30.0%-95.0%"
    out = tmp_path / "copy"
    out.mkdir()
    write_metrics(out, m)
    write_run_info(out, info.replace(status="interrupted"))
    assert read_metrics(out) == m and read_run_info(out).status == "interrupted" and info.status == "complete"
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.test_accuracy = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("field, value", [("test_accuracy", "high"), ("counts", {"test": "4"}),
                                          ("class_names", ["a", 2]), ("confusion_matrix", "[[1]]")])
def test_a_field_of_the_wrong_kind_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"'{field}' is not what diycnn writes"):
        Metrics.from_dict({**METRICS, field: value}, "metrics.json")


def test_model_json_is_checked_as_it_is_read():
    with pytest.raises(ValueError, match="'created' is not what diycnn writes"):
        RunInfo.from_dict({**INFO, "created": 5}, "model.json")
    with pytest.raises(ValueError, match="missing the 'status' field"):
        RunInfo.from_dict({k: v for k, v in INFO.items() if k != "status"}, "model.json")
    with pytest.raises(ValueError, match="newer diycnn"):
        RunInfo.from_dict({**INFO, "format_version": 99}, "model.json")
