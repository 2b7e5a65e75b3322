"""Stored predictions of one evaluation mode (clean or one attack and eps): fingerprint, resume, counts.

A mode folder holds ``gray/<image>.png`` (argmax class indices) and ``fingerprint.json``: the attack spec,
the model checkpoint's SHA-256 and every setting that changes a prediction. An interrupted evaluation
resumes: images whose prediction is stored are not recomputed. A folder whose fingerprint differs (or that
holds predictions without one) is refused, never mixed; ``overwrite True`` deletes its predictions and
redoes it. Metrics and worst cases are computed from the stored predictions, so they can be re-aggregated
without re-attacking.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from attack.registry import AttackSpec
from util.config import IMAGENET_MEAN, IMAGENET_STD, TestConfig, load_config
from util.data.dataset import read_label
from util.errors import UserError
from util.metrics import intersection_and_union

logger = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
_PNG_END = b"IEND\xaeB`\x82"  # the last 8 bytes of every complete PNG file


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of a file (hashed once per size and modification time)."""
    stat = os.stat(path)
    return _sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


def _first_difference(old, new, prefix: str = "") -> str:
    """The dotted key of the first difference between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return prefix


def check_fingerprint(folder: Path, fingerprint: dict, overwrite: bool = False) -> None:
    """Make sure ``folder``'s stored predictions were made as ``fingerprint`` says (see
    :func:`record_fingerprint`); with ``overwrite`` delete those that were not.

    Raises:
        UserError: the folder holds predictions of another model, attack or setting (or of unknown
            origin) and ``overwrite`` is False.
    """
    stored = sorted((folder / "gray").glob("*.png"))
    if not stored:
        return
    path = folder / FINGERPRINT
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        old = {}
    if old == _canonical(fingerprint):
        return
    reason = f"no {FINGERPRINT}" if old is None else f"another '{_first_difference(old, _canonical(fingerprint))}'"
    if not overwrite:
        raise UserError(
            f"'{folder}' holds {len(stored)} predictions made with {reason} than this run; delete "
            f"the folder, choose another save_folder, or set overwrite True to redo them"
        )
    logger.warning(f"{folder}: deleting {len(stored)} predictions made with {reason} (overwrite True)")
    for png in stored + sorted((folder / "color").glob("*.png")):
        png.unlink()


def record_fingerprint(folder: Path, fingerprint: dict) -> None:
    """Write ``folder/fingerprint.json`` before predictions are stored there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FINGERPRINT).write_text(json.dumps(_canonical(fingerprint), indent=2, sort_keys=True) + "\n")


def _canonical(value):
    """JSON's view of a value (tuples become lists), so a fingerprint compares equal to its stored copy."""
    return json.loads(json.dumps(value, sort_keys=True))


def is_complete(path: Path) -> bool:
    """A stored prediction that exists and was written to the end (not cut off by an interruption)."""
    try:
        with open(path, "rb") as file:
            file.seek(-len(_PNG_END), os.SEEK_END)
            return file.read() == _PNG_END
    except OSError:
        return False


def missing(gray_folder: Path, names: Sequence[str]) -> list[int]:
    """Indices of the images without a complete stored prediction."""
    return [i for i, name in enumerate(names) if not is_complete(gray_folder / f"{name}.png")]


def image_counts(
    gray_folder: Path,
    names: Sequence[str],
    label_paths: Sequence[str],
    classes: int,
    ignore_index: int = 255,
    scored_label: Callable[[np.ndarray], np.ndarray] | None = None,
    read: Callable[[str], np.ndarray] = read_label,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image, per-class intersection / union / target counts (N, C) of the stored predictions against
    the labels as ``read`` gives them (the dataset's :meth:`~util.data.dataset.SemData.read_label`), passed
    through ``scored_label``, the evaluation protocol's view of a label, when given.

    Raises:
        UserError: a prediction is missing, cut off, or not the size of its label.
    """
    counts = np.zeros((3, len(names), classes), dtype=np.int64)
    for i, (name, label_path) in enumerate(zip(names, label_paths)):
        path = gray_folder / f"{name}.png"
        prediction = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if is_complete(path) else None
        if prediction is None:
            raise UserError(
                f"prediction '{path}' is missing or cut off; run test.py with has_prediction False, "
                f"which recomputes it (or delete it and its folder's other predictions to redo them)"
            )
        label = read(label_path)
        label = scored_label(label) if scored_label else label
        if prediction.shape != label.shape:
            raise UserError(
                f"prediction '{path}' is {prediction.shape}, its label '{label_path}' {label.shape}; "
                f"delete the prediction and run again"
            )
        for k, count in enumerate(intersection_and_union(prediction, label, classes, ignore_index)):
            counts[k, i] = count.numpy()
    return counts[0], counts[1], counts[2]


# What a stored prediction depends on besides the checkpoint and the attack spec: the model's layout, the
# data, the crops per forward (random starts are drawn per batch of crops) and every TEST key except those
# that only pick images or outputs.
_PREDICTION_KEYS = (
    "arch",
    "backbone",
    "layers",
    "classes",
    "zoom_factor",
    "output_stride",
    "ignore_label",
    "data_root",
    "manual_seed",
    "batch_size_val",
)


_NOT_PREDICTION_KEYS = {
    "test_list",
    "split",
    "has_prediction",
    "index_start",
    "index_step",
    "test_gpu",
    "model_path",
    "save_folder",
    "colors_path",
    "names_path",
    "attacks",
    "panels",
}


# Keys added after predictions were first stored: in a fingerprint only when set to another value than this (their
# value before they existed), so that the predictions stored before stay valid.
_KEYS_WHEN_SET = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "test_preprocess": "none"}


def prediction_settings(cfg: DictConfig) -> dict:
    """The config's values that a mode's stored predictions depend on (besides the checkpoint and the attack)."""
    values = OmegaConf.to_container(cfg)
    skipped = _NOT_PREDICTION_KEYS | set(_KEYS_WHEN_SET)
    keys = [*_PREDICTION_KEYS, *(f.name for f in dataclasses.fields(TestConfig) if f.name not in skipped)]
    if cfg.model:  # a VainF model (older fingerprints, made before these keys existed, stay valid)
        keys += ["model", "separable_conv", "rescale_normalized_input"]
    keys += [k for k, default in _KEYS_WHEN_SET.items() if values[k] != default]
    return {k: values[k] for k in keys}


def prediction_fingerprint(
    settings: dict, model_path: str | None, attack_spec: AttackSpec | None, model_loader, list_sha256: str
) -> dict:
    """The attack spec, the checkpoint's SHA-256 (and a transfer attack's source checkpoint's), the
    :func:`prediction_settings`, the SHA-256 of the whole image/label list (predictions are stored by image
    name: another list may give a name another image or label), and the attack's revision when its code changed
    results since predictions were first stored (:attr:`attack.base.Attack.revision`)."""
    if not model_path or not os.path.isfile(model_path):
        model_loader()  # fails with the loader's one-line error
    fingerprint = {
        "attack": attack_spec.as_dict() if attack_spec else None,
        "model_sha256": file_sha256(model_path),
        "settings": settings,
        "list_sha256": list_sha256,
    }
    if attack_spec and attack_spec.attack_class.revision > 1:
        fingerprint["attack_revision"] = attack_spec.attack_class.revision
    if attack_spec and attack_spec.source:
        source = attack_spec.source
        path = source["model_path"] or load_config(source["config"]).model_path
        if path and os.path.isfile(path):  # otherwise loading the source model names the problem
            fingerprint["source_sha256"] = file_sha256(path)
    return fingerprint
