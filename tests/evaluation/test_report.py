"""The robustness report: worst cases, sanity warnings, results.csv, the curve, stored predictions and resume."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from evaluation import predictions, summary, worstcase
from evaluation.rows import ResultRow, mode_row, worst_cases
from evaluation.specs import distinct_labels
from model import build_model
from tests.conftest import ROOT
from tests.entry import test_entry
from util.errors import UserError
from util.metrics import intersection_and_union

CONFIG = "config/synthetic/synthetic_pspnet18.yaml"


def counts_of(pairs):
    """(A, N, C) intersection / union / target of predictions[a][n] against labels[n], 2 classes."""
    out = [[[c.numpy() for c in intersection_and_union(np.array(p), np.array(t), 2)] for p, t in row] for row in pairs]
    return tuple(np.array([[image[k] for image in row] for row in out]) for k in range(3))


# Two images, two attacks, classes background 0 / foreground 1 (labels as flat pixel lists).
LABEL_1 = [0] * 8 + [1] * 2
LABEL_2 = [0] * 6 + [1] * 4
A_1 = [1] * 3 + [0] * 5 + [1] * 2  # 3 background pixels flipped: 7/10 right; I = (5, 2), U = (8, 5)
B_1 = [0] * 10  # the 2 foreground pixels wiped out: 8/10 right; I = (8, 0), U = (10, 2)
A_2 = [0] * 6 + [0] + [1] * 3  # 1 foreground pixel lost: 9/10 right; I = (6, 3), U = (7, 4)
B_2 = [0] * 6 + [0] * 2 + [1] * 2  # 2 foreground pixels lost: 8/10 right; I = (6, 2), U = (8, 4)


def test_greedy_search_finds_the_mIoU_minimum_that_per_image_accuracy_misses():
    inter, union, target = counts_of([[(A_1, LABEL_1), (A_2, LABEL_2)], [(B_1, LABEL_1), (B_2, LABEL_2)]])
    # Per image the lowest accuracy: A on image 1 (7 < 8), B on image 2 (8 < 9):
    # pooled I = (11, 4), U = (16, 9): mIoU (11/16 + 4/9) / 2 = 0.5660.
    start = worstcase.worst_by_accuracy(inter)
    assert start.tolist() == [0, 1]
    # Wiping out image 1's foreground instead: I = (14, 2), U = (18, 6): (14/18 + 2/6) / 2 = 0.5556, lower,
    # and no single swap from there helps ((B, A) gives (14/17 + 3/6) / 2 = 0.6618).
    selection, miou = worstcase.greedy_worst_miou(inter, union, start)
    assert selection.tolist() == [1, 1]
    assert miou == pytest.approx((14 / 18 + 2 / 6) / 2)
    start_miou = worstcase.pooled_miou(inter[start, [0, 1]].sum(0), union[start, [0, 1]].sum(0))
    assert start_miou == pytest.approx((11 / 16 + 4 / 9) / 2)
    brute = min(
        worstcase.pooled_miou(inter[list(s), [0, 1]].sum(0), union[list(s), [0, 1]].sum(0))
        for s in itertools.product(range(2), repeat=2)
    )
    assert miou == pytest.approx(brute)
    choice = worstcase.worst_case(inter, union, target)
    assert choice.allacc.tolist() == [0, 1] and choice.miou.tolist() == [1, 1]
    assert choice.fg_miou.tolist() == [1, 1]  # the foreground IoU alone: 2/6 beats 4/9 and 3/6


def test_worst_case_is_never_above_any_single_attack_and_sums_are_exact():
    rng = np.random.default_rng(0)
    for _ in range(20):
        attacks, images, classes = 3, 5, 4
        target = rng.integers(0, 20, (images, classes))
        inter = (rng.random((attacks, images, classes)) * target).astype(int)
        union = target + rng.integers(0, 10, (attacks, images, classes))
        _, miou = worstcase.search_worst_miou(inter, union)
        singles = [worstcase.pooled_miou(inter[a].sum(0), union[a].sum(0)) for a in range(attacks)]
        assert miou <= min(singles) + 1e-12
        choice = worstcase.worst_case(inter, union, target)
        rows = np.arange(images)
        best_acc = min(inter[list(s), rows].sum() for s in itertools.product(range(attacks), repeat=images))
        assert inter[choice.allacc, rows].sum() == best_acc


def row(mode, name, eps255, miou, kind="attack", steps=None, series=None):
    metrics = dict.fromkeys(("mIoU", "fg_mIoU", "present_mIoU", "image_mIoU", "mAcc", "allAcc"), miou)
    return ResultRow(mode, kind, name, series or name, eps255 / 255, steps, None, None, **metrics)


def test_sanity_warnings_on_constructed_results():
    clean = row("clean", "clean", 0, 0.70, kind="clean")
    good = [
        clean,
        row("bim_eps4", "bim", 4, 0.40, steps=2),
        row("bim_eps8", "bim", 8, 0.30, steps=2),
        row("pgd_eps8", "pgd", 8, 0.20, steps=20),
        row("worst_case_eps8", "worst_case", 8, 0.15, kind="ensemble"),
    ]
    assert summary.sanity_warnings(good) == []
    assert summary.sanity_warnings([*good, row("pgd_eps4", "pgd", 4, 0.195, steps=20)]) == []  # within tolerance
    rising = summary.sanity_warnings([*good, row("pgd_eps4", "pgd", 4, 0.10, steps=20)])
    assert (
        len(rising) == 1 and "pgd mIoU rises with eps, 0.1000 at 4.00/255 (pgd_eps4) -> 0.2000 at 8.00/255" in rising[0]
    )
    above_clean = summary.sanity_warnings([clean, row("fgsm_eps2", "fgsm", 2, 0.75)])
    assert len(above_clean) == 1 and "(clean)" in above_clean[0]
    weak = summary.sanity_warnings(
        [
            *good[:3],
            row("pgd_eps8", "pgd", 8, 0.35, steps=20),
            row("sea_eps8", "sea", 8, 0.36, kind="ensemble"),
            row("fgsm_eps8", "fgsm", 8, 0.5),
            row("pgd1_eps8", "pgd", 8, 0.5, steps=1, series="pgd1"),
        ]
    )
    assert len(weak) == 2, weak  # FGSM and a 1-step PGD may be weaker than BIM-2
    assert "pgd_eps8 (20 steps) is weaker than bim_eps8 (2 steps)" in weak[0]
    assert "sea_eps8 (ensemble) is weaker than bim_eps8" in weak[1]


def test_settings_of_one_attack_are_separate_series():
    """PGD-100 at 4/255 and PGD-5 at 8/255 are two settings, not one attack at two eps: the weaker PGD-5
    leaving a higher mIoU at the larger eps is no sign of gradient masking."""
    from attack.registry import parse_specs

    specs = distinct_labels(
        parse_specs([{"name": "pgd", "eps": [4], "steps": 100}, {"name": "pgd", "eps": [8], "steps": 5}])
    )
    assert [s.label for s in specs] == ["pgd_steps100_eps4", "pgd_steps5_eps8"]
    counts = tuple(np.ones((1, 2)) for _ in range(3))
    rows = [replace(mode_row(s.label, s, counts, ["a", "b"]), mIoU=m) for s, m in zip(specs, (0.3, 0.4))]
    assert [r.series for r in rows] == ["pgd_steps100", "pgd_steps5"]
    assert summary.sanity_warnings(rows) == []
    assert len(summary.sanity_warnings([replace(r, series="pgd") for r in rows])) == 1  # what one series would say


def test_csv_keeps_the_old_columns_first_and_the_curve_is_a_png(tmp_path):
    rows = [
        row("clean", "clean", 0, 0.7, kind="clean"),
        row("pgd_eps4", "pgd", 4, 0.4, steps=10),
        row("pgd_eps8", "pgd", 8, 0.2, steps=10),
        row("sea_eps8", "sea", 8, 0.1, kind="ensemble"),
        row("cw_epsinf", "cw", float("inf"), 0.0),
    ]
    lines = summary.csv_text(rows).splitlines()
    assert lines[0].split(",")[:5] == ["mode", "eps", "mIoU", "mAcc", "allAcc"]
    assert lines[0] == ",".join(summary.CSV_COLUMNS) and len(lines) == 6
    assert lines[2].startswith("pgd_eps4,0.015686,0.400000,") and lines[2].endswith(",pgd,pgd")
    assert summary.table(rows)[2] == "| pgd_eps4 | 4.00/255 | 0.4000 | 0.4000 | 0.4000 | 0.4000 | 0.4000 |"
    summary.draw_curve(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(tmp_path / "curve.png")).shape == (560, 900, 3)


def test_l2_attacks_are_their_own_threat_model(tmp_path):
    """An L2 ball of radius 0.5 is not the L-inf ball of 0.5 (127.5/255): SAM-AT's protocol runs both in one
    test.py run. The table shows L2 eps as it is, the worst case and the BIM comparison never mix the two, and
    the L2 series get their own curve (removed again when a later run has none)."""
    from attack.registry import parse_specs

    specs = distinct_labels(
        parse_specs(
            [
                {"name": "bim", "eps": 0.5, "alpha": 0.25, "steps": 2, "unit": 1},
                {"name": "pgd", "eps": 0.5, "alpha": 0.25, "steps": 10, "norm": "l2", "unit": 1},
                {"name": "segpgd", "eps": 0.5, "steps": 20, "unit": 1},
            ]
        )
    )
    assert [s.norm for s in specs] == ["linf", "l2", "linf"]
    assert specs[1].label == "pgd_eps0.5"
    pairs = {"bim": [([1, 1], [1, 0])], "pgd": [([0, 1], [1, 0])], "segpgd": [([1, 0], [1, 0])]}
    counts = {name: tuple(c[0] for c in counts_of([pair])) for name, pair in pairs.items()}
    evaluated = [(mode_row(s.label, s, counts[s.name], ["a", "b"]), counts[s.name]) for s in specs]
    miou = {row.mode: row.mIoU for row, _ in evaluated}
    (worst,) = worst_cases(evaluated, [], ["a", "b"], tmp_path)
    assert worst.mode == "worst_case_eps127.5" and worst.attack["members"] == ["bim_eps0.5", "segpgd_eps0.5"]
    assert worst.mIoU == min(miou["bim_eps0.5"], miou["segpgd_eps0.5"]) > miou["pgd_eps0.5"]
    rows = [row for row, _ in evaluated]
    assert summary.table(rows)[2].startswith("| pgd_eps0.5 | 0.5 (L2) | ")
    assert summary.table(rows)[1].startswith("| bim_eps0.5 | 127.50/255 | ")
    weak_l2 = [replace(rows[0], mIoU=0.1), replace(rows[1], mIoU=0.9)]  # a 10-step L2 PGD above L-inf BIM-2
    assert summary.sanity_warnings(weak_l2) == []
    assert list(summary.curve_series(rows, "l2")) == ["pgd"] and "pgd" not in summary.curve_series(rows)
    summary.draw_curve(rows, tmp_path / "curve.png")
    assert (tmp_path / "curve_l2.png").is_file()
    summary.draw_curve(rows[:1], tmp_path / "curve.png")
    assert not (tmp_path / "curve_l2.png").exists()


def test_labels_show_float_settings_short():
    from attack.registry import parse_specs

    specs = distinct_labels(
        parse_specs(
            [
                {"name": "pgd", "eps": 1, "alpha": 0.25, "steps": 10},
                {"name": "pgd", "eps": 2, "alpha": 0.5, "steps": 10},
            ]
        )
    )
    assert [s.label for s in specs] == ["pgd_alpha0.0009804_eps1", "pgd_alpha0.001961_eps2"]


def test_curves_start_at_the_clean_point_and_coinciding_series_stay_visible(tmp_path):
    """Each attack's line starts at (0, clean mIoU); a series equal to another (SegPGD under the worst case)
    is still drawn where the two overlap: the earlier, thicker line shows around the later one."""
    rows = [
        row("clean", "clean", 0, 0.7, kind="clean"),
        row("segpgd_eps4", "segpgd", 4, 0.3, steps=20),
        row("segpgd_eps8", "segpgd", 8, 0.1, steps=20),
        row("worst_case_eps4", "worst_case", 4, 0.3, kind="ensemble"),
        row("worst_case_eps8", "worst_case", 8, 0.1, kind="ensemble"),
        row("cw_epsinf", "cw", float("inf"), 0.0),
    ]
    lines = summary.curve_series(rows)
    assert lines == {"segpgd": [(0.0, 0.7), (4.0, 0.3), (8.0, 0.1)], "worst_case": [(0.0, 0.7), (4.0, 0.3), (8.0, 0.1)]}
    summary.draw_curve(rows, tmp_path / "curve.png")
    image = cv2.imread(str(tmp_path / "curve.png"))[..., ::-1].astype(int)  # RGB
    first, second = (31, 119, 180), (255, 127, 14)  # matplotlib's C0 and C1 (clean is grey)
    assert (np.abs(image - first).sum(-1) < 10).sum() > 300
    assert (np.abs(image - second).sum(-1) < 10).sum() > 300


def test_fingerprint_refuses_other_predictions_and_overwrite_redoes(tmp_path):
    folder = tmp_path / "pgd_eps8"
    (folder / "gray").mkdir(parents=True)
    cv2.imwrite(str(folder / "gray/a.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="no fingerprint.json"):
        predictions.check_fingerprint(folder, {"attack": {"steps": 10}})
    predictions.record_fingerprint(folder, {"attack": {"steps": 10}})
    predictions.check_fingerprint(folder, {"attack": {"steps": 10}})
    with pytest.raises(UserError, match="another 'attack.steps'") as error:
        predictions.check_fingerprint(folder, {"attack": {"steps": 20}})
    assert "\n" not in str(error.value)
    predictions.check_fingerprint(folder, {"attack": {"steps": 20}}, overwrite=True)
    assert not list((folder / "gray").glob("*.png"))


def test_cut_off_prediction_counts_as_missing(tmp_path):
    for name in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "b.png").write_bytes((tmp_path / "b.png").read_bytes()[:-5])
    assert predictions.missing(tmp_path, ["a", "b", "c"]) == [1, 2]  # so a run recomputes them
    cv2.imwrite(str(tmp_path / "label.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(
        UserError, match="b.png' is missing or cut off; run test.py with has_prediction False, which recomputes it"
    ):
        predictions.image_counts(tmp_path, ["a", "b"], [str(tmp_path / "label.png")] * 2, 2)


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pth"
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, path)
    return path


ATTACKS = "[{name: bim, eps: 4, steps: 2}, {name: fgsm, eps: [4, 8]}]"


def test_report_resumes_and_refuses_mixing(run_cli, tiny_opts, tiny_data, tmp_path, checkpoint):
    opts = ["--config", CONFIG, *tiny_opts, "model_path", str(checkpoint), "attacks", ATTACKS]
    code, out, err = run_cli(test_entry, opts)
    assert code == 0, err
    result = tmp_path / "result"
    csv = (result / "results.csv").read_text()
    lines = csv.splitlines()
    assert lines[0] == "mode,eps,mIoU,mAcc,allAcc,fg_mIoU,image_mIoU,attack,series"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "clean",
        "bim_eps4",
        "fgsm_eps4",
        "fgsm_eps8",
        "worst_case_eps4",
    ]
    report = json.loads((result / "results.json").read_text())
    assert [m["mode"] for m in report["modes"]][-1] == "worst_case_eps4"
    assert report["mIoU"] == report["modes"][0]["mIoU"]  # the clean result stays at the top level
    assert len(report["modes"][1]["classes"]) == 5 and report["modes"][1]["attack"]["steps"] == 2
    worst = report["modes"][-1]
    assert worst["mIoU"] <= min(m["mIoU"] for m in report["modes"][1:3]) + 1e-12
    assert worst["allAcc"] <= min(m["allAcc"] for m in report["modes"][1:3]) + 1e-12
    assert "| fgsm_eps8 | 8.00/255 |" in out and "fg-mIoU" in out
    assert cv2.imread(str(result / "robustness_curve.png")) is not None

    # an interruption after 2 of 4 images: the rerun computes the 2 missing ones only, with the same numbers
    names = sorted(p.name for p in (result / "bim_eps4/gray").glob("*.png"))
    for name in names[2:]:
        (result / "bim_eps4/gray" / name).unlink()
    code, out, err = run_cli(test_entry, opts)
    assert code == 0, err
    assert "2 of 4 predictions already stored" in out and out.count("already stored") == 4
    assert "bim_eps4: 100%" in err and "| 2/2 [" in err
    assert (result / "results.csv").read_text() == csv

    # another attack setting or another checkpoint for the same folder: refused before anything is written
    before = {p: p.is_file() and p.read_bytes() for p in sorted(result.rglob("*"))}  # folders too
    code, _, err = run_cli(test_entry, [*opts, "attacks", "[{name: bim, eps: 4, steps: 3}]"])
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: ")
    assert "bim_eps4' holds 4 predictions made with another 'attack.steps'" in err
    code, _, err = run_cli(test_entry, [*opts, "attacks", "[{name: pgd, eps: 4, steps: 0}]"])
    assert code == 2 and "steps must be a whole number >= 1, got 0" in err.strip().splitlines()[-1]
    assert {p: p.is_file() and p.read_bytes() for p in sorted(result.rglob("*"))} == before
    torch.save({"state_dict": build_model("psp", 18, 5).state_dict()}, checkpoint)
    code, _, err = run_cli(test_entry, opts)
    assert code == 2 and "another 'model_sha256'" in err.strip().splitlines()[-1]


def test_sea_is_evaluated_as_its_members_and_their_worst_case(run_cli, tiny_opts, tmp_path, checkpoint):
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "index_step",
        "2",
        "attacks",
        "[{name: sea, eps: 8, steps: 3}, {name: pgd, eps: 8, steps: 2}, {name: pgd, eps: 8, steps: 3}]",
    ]
    code, _, err = run_cli(test_entry, opts)
    assert code == 0, err
    lines = (tmp_path / "result/results.csv").read_text().splitlines()[1:]
    rows = {line.split(",")[0]: line.split(",") for line in lines}
    members = [f"sea_eps8/{loss}" for loss in ("balanced_masked_ce", "masked_ce", "js")]
    assert list(rows) == ["clean", *members, "pgd_steps2_eps8", "pgd_steps3_eps8", "sea_eps8", "worst_case_eps8"]
    miou = {mode: float(r[2]) for mode, r in rows.items()}
    assert miou["sea_eps8"] <= min(miou[m] for m in members) + 1e-12
    assert miou["worst_case_eps8"] <= min(miou["sea_eps8"], miou["pgd_steps2_eps8"], miou["pgd_steps3_eps8"]) + 1e-12
    chosen = json.loads((tmp_path / "result/sea_eps8/results.json").read_text())["chosen_member_per_image"]
    assert len(chosen["mIoU"]) == 2 and set(chosen["allAcc"]) <= set(members)
    assert (tmp_path / "result/sea_eps8/js/gray").is_dir()


def test_seas_balanced_member_weights_classes_by_the_training_labels(
    run_cli, tiny_opts, tiny_data, tmp_path, checkpoint
):
    """SEA's balanced masked CE takes the official code's table by default: 1 / the training labels' pixels per
    class, summing to 1 (restated here from the label files). Without a train_list it weights by each image's
    own counts ('image'); asked for 'train' without one it stops in one line before writing anything."""
    from PIL import Image

    counts = np.zeros(5)
    for line in (tiny_data / "list/train.txt").read_text().split():
        if line.startswith("label"):
            label = np.array(Image.open(tiny_data / line))
            counts += [(label == c).sum() for c in range(5)]
    expected = (1 / counts) / (1 / counts).sum()
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "index_step",
        "1",
        "attacks",
        "[{name: sea, eps: 8, steps: 3}]",
    ]
    assert run_cli(test_entry, opts)[0] == 0

    def weights(folder):
        return json.loads((tmp_path / folder / "sea_eps8/balanced_masked_ce/results.json").read_text())["attack"].get(
            "class_weights"
        )

    assert weights("result") == pytest.approx(expected.tolist(), abs=1e-8)
    assert "class_weights" not in json.loads((tmp_path / "result/sea_eps8/js/results.json").read_text())["attack"]
    no_list = [*opts, "train_list", str(tmp_path / "absent.txt"), "save_folder", str(tmp_path / "image")]
    assert run_cli(test_entry, no_list)[0] == 0 and weights("image") == "image"
    explicit = [
        *no_list[:-2],
        "save_folder",
        str(tmp_path / "train"),
        "attacks",
        "[{name: sea, eps: 8, steps: 3, class_weights: train}]",
    ]
    code, _, err = run_cli(test_entry, explicit)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "class_weights 'train' needs the training labels" in lines[0]
    assert not (tmp_path / "train").exists()
    Image.fromarray(np.full((4, 4), 40, np.uint8)).save(tmp_path / "bad.png")
    (tmp_path / "bad.txt").write_text(f"{tiny_data / 'image/train/00000.png'} {tmp_path / 'bad.png'}\n")
    bad = [*opts, "train_list", str(tmp_path / "bad.txt"), "save_folder", str(tmp_path / "bad")]
    code, _, err = run_cli(test_entry, bad)
    line = err.strip().splitlines()[-1]
    assert code == 2 and "bad.png' has values 40" in line and "give class_weights: image" in line
    assert not (tmp_path / "bad").exists()


def test_robust_eval_script_runs_the_suite_end_to_end(tiny_opts, checkpoint):
    exp_name = f"pytest-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "EXP_NAME": exp_name,
        "MODEL_PATH": str(checkpoint),
        "OMP_NUM_THREADS": "1",
    }
    opts = list(tiny_opts[:-4])  # without save_folder / model_path: the script sets them
    attacks = (
        "[{name: bim, eps: 0.03, alpha: 0.01, steps: 2, unit: 1}, {name: pgd, eps: [4, 8], steps: 2}, "
        "{name: sea, eps: 8, steps: 3}]"
    )
    try:
        proc = subprocess.run(
            ["sh", "tool_test/synthetic/robust_eval.sh", *opts, "index_step", "2", "attacks", attacks],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        result = ROOT / "exp/synthetic" / exp_name / "robust"
        modes = (
            [line.split(",")[0] for line in (result / "results.csv").read_text().splitlines()[1:]]
            if proc.returncode == 0
            else []
        )
        logs = list(result.glob("robust_eval-*.log"))
        curve = (result / "robustness_curve.png").is_file()
    finally:
        shutil.rmtree(ROOT / "exp/synthetic" / exp_name, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert modes[:3] == ["clean", "bim_eps0.03", "pgd_eps4"] and modes[-2:] == ["sea_eps8", "worst_case_eps8"]
    assert logs and curve


def test_random_start_attacks_give_the_same_predictions_after_a_resume(
    run_cli, tiny_opts, tiny_data, tmp_path, checkpoint
):
    """Attack draws are seeded per image, so a resumed PGD run stores what an uninterrupted one does, and
    another manual_seed is another evaluation (refused in the same folder)."""
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "manual_seed",
        "5",
        "attacks",
        "[{name: pgd, eps: 8, steps: 2}]",
    ]
    code, _, err = run_cli(test_entry, opts)
    assert code == 0, err
    gray = tmp_path / "result/pgd_eps8/gray"
    first = {p.name: p.read_bytes() for p in gray.glob("*.png")}
    for name in sorted(first)[::2]:
        (gray / name).unlink()
    code, out, err = run_cli(test_entry, opts)
    assert code == 0, err
    assert "2 of 4 predictions already stored" in out
    assert {p.name: p.read_bytes() for p in gray.glob("*.png")} == first
    code, _, err = run_cli(test_entry, [*opts, "manual_seed", "6"])
    assert code == 2 and "another 'settings.manual_seed'" in err.strip().splitlines()[-1]
    code, _, err = run_cli(test_entry, [*opts, "batch_size_val", "1"])  # random starts are drawn per crop batch
    assert code == 2 and "another 'settings.batch_size_val'" in err.strip().splitlines()[-1]
    lines = (tiny_data / "list/val.txt").read_text().splitlines()
    reordered, relabelled = tmp_path / "reordered.txt", tmp_path / "relabelled.txt"
    reordered.write_text("\n".join(lines[::-1]) + "\n")
    other_label = tmp_path / "other_label.png"  # a label of the image's size (test.py checks sizes first)
    other_label.write_bytes((tiny_data / lines[0].split()[1]).read_bytes())
    relabelled.write_text("\n".join([f"{lines[0].split()[0]} {other_label}", *lines[1:]]) + "\n")
    code, out, err = run_cli(test_entry, [*opts, "test_list", str(reordered)])
    assert code == 0 and "4 of 4 predictions already stored" in out, err
    code, _, err = run_cli(test_entry, [*opts, "test_list", str(relabelled)])  # an image's name, another label
    assert code == 2 and "another 'list_sha256'" in err.strip().splitlines()[-1]


def test_minimum_norm_attacks_report_their_median_norm(run_cli, tiny_opts, tmp_path, checkpoint):
    """DeepFool unclipped and clipped: the median unclipped norm over the attacked crops is stored per image
    and reported per mode, the same after a resume."""
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "attacks",
        "[{name: deepfool, steps: 3}, {name: deepfool, eps: 0.5, unit: 1, steps: 3}]",
    ]
    code, out, err = run_cli(test_entry, opts)
    assert code == 0, err
    report = json.loads((tmp_path / "result/results.json").read_text())
    rows = {m["mode"]: m for m in report["modes"]}
    unclipped, clipped = rows["deepfool_epsinf"], rows["deepfool_eps0.5"]
    assert unclipped["norm"] == "l2" and unclipped["median_norm"] > 0 and unclipped["norm_count"] >= 4
    assert clipped["median_norm"] == pytest.approx(unclipped["median_norm"])  # the same search, then clipped
    assert "Median unclipped l2 norm of the perturbation" in out and "median_norm" not in rows["clean"]
    norms = tmp_path / "result/deepfool_epsinf/norms"
    assert len(list(norms.glob("*.json"))) == 4
    for png in sorted((tmp_path / "result/deepfool_epsinf/gray").glob("*.png"))[:2]:
        png.unlink()
    code, _, err = run_cli(test_entry, opts)
    assert code == 0, err
    again = {m["mode"]: m for m in json.loads((tmp_path / "result/results.json").read_text())["modes"]}
    assert again["deepfool_epsinf"]["median_norm"] == pytest.approx(unclipped["median_norm"])


def test_demo_report_puts_bim_beside_the_stronger_attacks(run_cli, tiny_opts, tmp_path, checkpoint, capsys):
    """evaluation.report: the original protocol's clean and BIM numbers per defense, and from an attack-suite run on
    fewer images each attack's mIoU and the worst case, in the JSON and a second table."""
    from evaluation import report

    suite = [
        "save_folder",
        str(tmp_path / "robust"),
        "index_step",
        "2",
        "attacks",
        "[{name: bim, eps: 0.03, alpha: 0.01, steps: 2, unit: 1}, {name: pgd, eps: 0.03, steps: 5, unit: 1}]",
    ]
    for flags, extra in (([], []), (["--attack"], []), ([], suite)):
        code, _, err = run_cli(
            test_entry, ["--config", CONFIG, *flags, *tiny_opts, "model_path", str(checkpoint), *extra]
        )
        assert code == 0, err
    out_json = tmp_path / "demo/results.json"
    report.main(
        [str(tmp_path / "result"), "--defense", "sat", "--out", str(out_json), "--strong", str(tmp_path / "robust")]
    )
    report.main([str(tmp_path / "result"), "--defense", "none", "--out", str(out_json)])
    printed = capsys.readouterr().out
    results = json.loads(out_json.read_text())
    bim = json.loads((tmp_path / "result/bim/results.json").read_text())
    suite = {m["mode"]: m["mIoU"] for m in json.loads((tmp_path / "robust/results.json").read_text())["modes"]}
    assert results["sat"]["bim_miou"] == results["none"]["bim_miou"] == bim["mIoU"]
    assert results["sat"]["strong"] == {
        "images": 2,
        "clean": suite["clean"],
        "miou": {
            "bim-2": suite["bim_eps0.03"],
            "pgd-5": suite["pgd_eps0.03"],
            "worst case": suite["worst_case_eps7.65"],
        },
        "curve": [[0.0, suite["clean"]], [0.03 * 255, suite["worst_case_eps7.65"]]],
    }
    assert "strong" not in results["none"]
    assert suite["worst_case_eps7.65"] <= min(suite["bim_eps0.03"], suite["pgd_eps0.03"])
    assert "| defense | images | clean | bim-2 | pgd-5 | worst case |" in printed
    assert f"| sat | 2 | {suite['clean']:.4f} | {suite['bim_eps0.03']:.4f} | {suite['pgd_eps0.03']:.4f} |" in printed

    # make demo-strong: suite runs alone, one row each, and the worst-case curve of every defense
    strong_json, curve = tmp_path / "strong/results.json", tmp_path / "strong/curve.png"
    for name in ("pgd_at", "trades"):
        report.main(
            ["--strong", str(tmp_path / "robust"), "--defense", name, "--out", str(strong_json), "--curve", str(curve)]
        )
    printed = capsys.readouterr().out
    assert list(json.loads(strong_json.read_text())) == ["pgd_at", "trades"]
    assert "| defense | clean mIoU |" not in printed and f"| trades | 2 | {suite['clean']:.4f} |" in printed
    assert cv2.imread(str(curve)) is not None
    with pytest.raises(UserError, match="give a test.py save_folder, an attack-suite run"):
        report.main(["--defense", "x", "--out", str(strong_json)])
    with pytest.raises(UserError, match="holds no attack modes"):
        report.collect(tmp_path / "result", tmp_path / "result")
    with pytest.raises(UserError, match="robust_eval.sh"):
        report.collect(tmp_path / "result", tmp_path / "nowhere")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation.report",
            str(tmp_path / "result"),
            "--defense",
            "sat",
            "--out",
            str(out_json),
            "--strong",
            str(tmp_path / "nowhere"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: result file '{tmp_path / 'nowhere/results.json'}' not found; run the attack suite "
        f"(tool_test/<dataset>/robust_eval.sh) into '{tmp_path / 'nowhere'}' first"
    )
    assert json.loads(out_json.read_text()) == results  # nothing written


def test_panels_show_the_first_images_of_the_list_also_after_a_resume(run_cli, tiny_opts, tmp_path, checkpoint):
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "panels",
        "1",
        "attacks",
        "[{name: bim, eps: 4, steps: 1}]",
    ]
    code, _, err = run_cli(test_entry, opts)
    assert code == 0, err
    mode = tmp_path / "result/bim_eps4"
    first = sorted((mode / "gray").glob("*.png"))
    assert [p.name for p in (mode / "panels").glob("*.png")] == [first[0].name]
    shutil.rmtree(mode / "panels")
    for png in first[1:3]:
        png.unlink()
    code, out, err = run_cli(test_entry, opts)
    assert code == 0 and "2 of 4 predictions already stored" in out, err
    assert not (mode / "panels").exists() or not list((mode / "panels").glob("*.png"))


def test_apgd_predictions_of_the_code_before_its_revision_are_not_reused(run_cli, tiny_opts, tmp_path, checkpoint):
    """APGD's results changed with the official schedule (revision 2): predictions stored by the earlier
    code, whose fingerprint has no revision, are refused instead of mixed with new ones."""
    opts = [
        "--config",
        CONFIG,
        *tiny_opts,
        "model_path",
        str(checkpoint),
        "attacks",
        "[{name: apgd, eps: 8, steps: 3}]",
    ]
    code, _, err = run_cli(test_entry, opts)
    assert code == 0, err
    path = tmp_path / "result/apgd_eps8/fingerprint.json"
    stored = json.loads(path.read_text())
    assert stored["attack_revision"] == 2
    del stored["attack_revision"]
    path.write_text(json.dumps(stored))
    code, _, err = run_cli(test_entry, opts)
    assert code == 2 and "another 'attack_revision'" in err.strip().splitlines()[-1], err


def test_compare_puts_the_sam_at_and_pir_at_protocols_beside_ours(tmp_path, capsys):
    """evaluation.compare: one row per mode of each run, the threat model and eps as SAM-AT states them, both
    mIoU conventions; a missing run is one line naming the command that makes it; PIR-AT's likewise."""
    from evaluation import compare

    def run(folder, modes):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"mIoU": modes[0]["mIoU"], "modes": modes}))

    row = {"kind": "clean", "mode": "clean", "eps": 0.0, "mIoU": 0.7, "present_mIoU": 0.75, "images": 3}
    pgd = {
        "kind": "attack",
        "mode": "pgd_eps0.5",
        "eps": 0.5,
        "mIoU": 0.4,
        "present_mIoU": 0.45,
        "images": 3,
        "attack": {"name": "pgd", "norm": "l2", "last_iterate": True},
    }
    sea = {
        "kind": "ensemble",
        "mode": "sea_eps4",
        "eps": 4 / 255,
        "mIoU": 0.1,
        "present_mIoU": 0.2,
        "images": 3,
        "attack": {"name": "sea"},
    }
    run(tmp_path / "samat", [row, pgd])
    run(tmp_path / "robust", [row, sea])
    compare.main([str(tmp_path / "samat"), str(tmp_path / "robust")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[3] == "| SAM-AT | pgd_eps0.5 | l2 | 0.5 | 0.4000 | 0.4500 | 3 |"
    assert lines[5] == "| ours | sea_eps4 | linf | 4/255 | 0.1000 | 0.2000 | 3 |"
    with pytest.raises(UserError, match="run tool_test/voc2012/samat_eval.sh into"):
        compare.main([str(tmp_path / "none"), str(tmp_path / "robust")])
    compare.main(["--reference", "pirat", str(tmp_path / "robust"), str(tmp_path / "robust")])
    assert capsys.readouterr().out.splitlines()[3] == "| PIR-AT | sea_eps4 | linf | 4/255 | 0.1000 | 0.2000 | 3 |"
    with pytest.raises(UserError, match="run tool_test/<dataset>/pirat_eval.sh into"):
        compare.main(["--reference", "pirat", str(tmp_path / "none"), str(tmp_path / "robust")])


def test_report_refuses_an_out_file_it_did_not_write_and_a_folder_below_a_file(
    tmp_path, run_cli, tiny_opts, checkpoint
):
    from evaluation import report

    (tmp_path / "notes.json").write_text("my notes\n")
    opts = [*tiny_opts, "model_path", str(checkpoint), "index_step", "1"]
    assert run_cli(test_entry, ["--config", CONFIG, *opts])[0] == 0
    assert run_cli(test_entry, ["--config", CONFIG, "--attack", *opts])[0] == 0
    for out, needle in (
        (tmp_path / "notes.json", "is not this command's JSON"),
        (tmp_path / "notes.json/results.json", "is a file"),
    ):
        with pytest.raises(UserError, match=needle):
            report.main([str(tmp_path / "result"), "--defense", "none", "--out", str(out)])
    assert (tmp_path / "notes.json").read_text() == "my notes\n"


def test_report_columns_keep_sea_members_and_sea_apart():
    """SEA's three APGD members and SEA itself are columns of their own (they once shared 'apgd-20' and
    'worst case' and overwrote one another)."""
    from evaluation.report import mode_label

    modes = [
        {"mode": f"sea_eps0.03/{loss}", "kind": "attack", "name": "apgd", "steps": 20, "eps": 0.03}
        for loss in ("balanced_masked_ce", "masked_ce", "js")
    ]
    modes += [
        {"mode": "sea_eps0.03", "kind": "ensemble", "name": "sea", "eps": 0.03},
        {"mode": "worst_case_eps7.65", "kind": "ensemble", "name": "worst_case", "eps": 0.03},
    ]
    assert [mode_label(ResultRow.from_json({**m, "mIoU": 0.5})) for m in modes] == [
        "apgd-20 balanced_masked_ce",
        "apgd-20 masked_ce",
        "apgd-20 js",
        "sea",
        "worst case",
    ]
