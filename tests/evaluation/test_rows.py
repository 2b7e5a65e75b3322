"""Result rows: written and read by evaluation/rows.py only, old results.json files included; one table writer."""

from __future__ import annotations

import numpy as np

from attack.registry import parse_specs
from evaluation import report
from evaluation.rows import ResultRow, markdown_table, mode_row


def _row(spec=None) -> ResultRow:
    counts = (np.array([[3, 1]]), np.array([[4, 2]]), np.array([[4, 1]]))
    return mode_row(spec.label if spec else "clean", spec, counts, ["a", "b"])


def test_a_row_keeps_its_keys_in_order_and_reads_back_equal():
    (spec,) = parse_specs([{"name": "pgd", "eps": 8, "steps": 10, "norm": "l2", "unit": 255}])
    row = _row(spec)
    data = row.to_json()
    assert list(data) == ["mode", "kind", "name", "series", "eps", "steps", "norm", "attack", "mIoU", "fg_mIoU",
                          "present_mIoU", "image_mIoU", "mAcc", "allAcc", "classes", "images"]  # fmt: skip
    assert ResultRow.from_json(data) == row and row.threat_model == "l2"
    run = ResultRow.from_json({**data, "median_norm": 0.1, "norm_count": 4, "model_path": None, "seconds": 1.0,
                               "config": {"classes": 2}})  # fmt: skip
    assert list(run.to_json())[-5:] == ["median_norm", "norm_count", "model_path", "seconds", "config"]
    assert "config" not in run.to_json(config=False) and "seconds" in run.to_json(config=False)


def test_an_older_row_without_norm_takes_its_attack_entrys_and_clean_rows_are_linf():
    old = {"mode": "pgd_eps0.5", "kind": "attack", "eps": 0.5, "mIoU": 0.4, "attack": {"name": "pgd", "norm": "l2"}}
    row = ResultRow.from_json(old)
    assert (row.threat_model, row.name, row.series, row.steps) == ("l2", "pgd", "pgd", None)
    assert ResultRow.from_json({"mIoU": 0.9}).threat_model == "linf"
    assert ResultRow.from_json({"mIoU": 0.9}).kind == "clean"


def test_one_table_writer_prints_the_demos_table_as_before():
    results = {
        "none": {"strong": {"images": 10, "clean": 0.96454, "miou": {"bim-2": 0.6704, "segpgd-20": 0.24661}}},
        "sat": {"strong": {"images": 10, "clean": 0.9647, "miou": {"bim-2": 0.80251}}},
    }
    assert report.table(results).splitlines() == [
        "Attacked mIoU, the original BIM-2 beside stronger attacks (same images):",
        "| defense | images | clean | bim-2 | segpgd-20 |",
        "|---|---|---|---|---|",
        "| none | 10 | 0.9645 | 0.6704 | 0.2466 |",
        "| sat | 10 | 0.9647 | 0.8025 | - |",
    ]
    assert markdown_table(("a", "b"), [(1, "x")], rule=False) == ["| a | b |", "| 1 | x |"]
