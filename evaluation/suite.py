"""The evaluation engine behind test.py: clean and attacked modes, stored predictions, worst cases, the report.

Clean results go to save_folder (gray/, color/, results.json); the original BIM's to save_folder/bim/; each
``attacks`` entry and eps to save_folder/<label>/ (SEA's members to <sea label>/<loss>/). Stored predictions
carry a fingerprint (evaluation/predictions.py): a re-run computes only the missing ones. With an attack list
the report covers every mode plus the worst cases (evaluation/worstcase.py): the table in the log,
save_folder/results.csv, results.json, robustness_curve.png and gradient-masking warnings
(evaluation/summary.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from attack.base import Attack
from attack.registry import AttackSpec, build_attack, check_spec
from attack.transfer import Transfer
from evaluation import predictions, summary
from evaluation.inference import Protocol, WholeImageForward, predict
from evaluation.rows import ResultRow, median_norm, mode_row, worst_cases
from evaluation.specs import expand_ensembles, resolve_class_weights
from evaluation.visualize import save_panel
from model import eval_model_from_config
from util import dist
from util.config import load_config
from util.data.dataset import SemData, colorize, load_names_colors, test_data
from util.data.sampler import derived_seed
from util.device import select_device
from util.errors import UserError, check_creatable
from util.lock import owned

logger = logging.getLogger(__name__)


def image_name(path: str) -> str:
    """Prediction file stem, as the original names it."""
    return os.path.basename(path).split(".")[0]


def _first(batch: list):
    return batch[0]


@dataclass(frozen=True)
class Evaluation:
    """What the config says about one test.py run, read once; the engine below takes this, not the config."""

    save_folder: Path
    split: str
    background_class: int | None
    protocol: Protocol
    workers: int
    seed: int  # an attack's random draws are seeded per image from it
    panels: int
    overwrite: bool
    has_prediction: bool
    model_path: str | None
    prediction_settings: dict  # the values the stored predictions' fingerprint holds
    config: dict  # the whole config, as each results.json records it

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Evaluation:
        return cls(
            save_folder=Path(cfg.save_folder),
            split=cfg.split,
            background_class=cfg.background_class,
            protocol=Protocol.from_config(cfg),
            workers=cfg.workers,
            seed=cfg.manual_seed or 0,
            panels=cfg.panels,
            overwrite=cfg.overwrite,
            has_prediction=cfg.has_prediction,
            model_path=cfg.model_path,
            prediction_settings=predictions.prediction_settings(cfg),
            config=OmegaConf.to_container(cfg),
        )

    def folder(self, spec: AttackSpec | None) -> Path:
        """The folder of one mode's predictions and results: save_folder for clean, else save_folder/<label>."""
        return self.save_folder / spec.label if spec else self.save_folder

    def fingerprint(self, spec: AttackSpec | None, model_loader, list_sha256: str) -> dict:
        """The stored predictions' fingerprint of one mode (:func:`evaluation.predictions.prediction_fingerprint`)."""
        return predictions.prediction_fingerprint(
            self.prediction_settings, self.model_path, spec, model_loader, list_sha256
        )


def load_model(cfg: DictConfig, device: torch.device | None = None) -> tuple[torch.nn.Module, torch.device]:
    """The model of ``model_path`` on ``device`` (default: the configured one), in eval mode."""
    if not cfg.model_path:
        raise UserError("config key 'model_path' is empty; set it to the checkpoint to evaluate")
    device = device or select_device(cfg.device, cfg.test_gpu)
    model = eval_model_from_config(cfg, device, cfg.model_path)
    logger.info(f"=> loaded checkpoint '{cfg.model_path}' on {device}")
    return model, device


def source_config(spec: AttackSpec, protocol: Protocol) -> DictConfig:
    """The config of a transfer attack's source model (its ``model_path`` the spec's, when given).

    Raises:
        UserError: the source predicts other classes than the evaluated model, or from another normalisation.
    """
    source = spec.source
    source_cfg = load_config(source["config"], ["model_path", source["model_path"]] if source["model_path"] else [])
    if source_cfg.classes != protocol.classes:
        raise UserError(
            f"attack '{spec.label}': source config '{source['config']}' has classes "
            f"{source_cfg.classes}, the evaluated model {protocol.classes}; a source must share the labels"
        )
    if (tuple(source_cfg.mean), tuple(source_cfg.std)) != (protocol.mean, protocol.std):
        raise UserError(
            f"attack '{spec.label}': source config '{source['config']}' normalises its input with mean "
            f"{list(source_cfg.mean)}, std {list(source_cfg.std)}, the evaluated model with {list(protocol.mean)}, "
            f"{list(protocol.std)}; a transfer attack here needs one normalisation for both"
        )
    return source_cfg


def make_attack(
    spec: AttackSpec | None, model: torch.nn.Module, device: torch.device, protocol: Protocol
) -> Attack | None:
    """The attack of one spec: on ``model``, or on the spec's source model wrapped in :class:`Transfer`;
    for ``whole_image`` through the differentiable inference of the model it is crafted on."""
    if spec is None:
        return None
    source = load_model(source_config(spec, protocol), device)[0] if spec.source else model
    forward = WholeImageForward(source, protocol) if protocol.attack_protocol == "whole_image" else None
    attack = build_attack(spec, source, protocol.ignore_label, forward=forward, mean=protocol.mean, std=protocol.std)
    return Transfer(model, attack, protocol.ignore_label) if source is not model else attack


def run_inference(
    ev: Evaluation,
    data: SemData,
    model: torch.nn.Module,
    device: torch.device,
    attack_spec: AttackSpec | None,
    gray_folder: Path,
    color_folder: Path,
    colors: np.ndarray,
    panel_names: frozenset[str] = frozenset(),
) -> None:
    """Predict every image and save gray/color maps (and, attacked, a panel for the images in ``panel_names``:
    the first ``panels`` of the evaluated list, whichever process or resume predicts them). A spec's
    ``protocol`` (the original BIM's) overrides the config's.

    The random draws of an attack (random starts, restarts) are seeded per image from (manual_seed, image
    name), so an image's prediction is the same whether it is evaluated in one run, after a resume, or on
    another process."""
    protocol = ev.protocol
    if attack_spec is not None and attack_spec.protocol:
        protocol = dataclasses.replace(protocol, attack_protocol=attack_spec.protocol)
    attack = make_attack(attack_spec, model, device, protocol)
    min_norm = getattr(attack, "source", attack)  # a transfer attack's norms are its source attack's
    min_norm = min_norm if min_norm is not None and min_norm.min_norm else None
    norms_folder = gray_folder.parent / "norms"
    if min_norm is not None:
        norms_folder.mkdir(parents=True, exist_ok=True)
    gray_folder.mkdir(parents=True, exist_ok=True)
    color_folder.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, num_workers=ev.workers, collate_fn=_first)
    desc = attack_spec.label if attack_spec else "clean"
    for i, (image, label) in enumerate(tqdm(loader, desc=desc, unit="img", dynamic_ncols=True)):
        label = protocol.scored_label(label)
        name = image_name(data.data_list[i][0])
        torch.manual_seed(derived_seed(ev.seed, zlib.crc32(name.encode())))
        if attack is not None and name in panel_names:
            prediction, attacked = predict(model, image, label, protocol, device, attack, return_image=True)
            clean = predict(model, image, label, protocol, device)
            save_panel(
                gray_folder.parent / "panels" / f"{name}.png", image, attacked, clean, prediction, label, colors, desc
            )
        else:
            prediction = predict(model, image, label, protocol, device, attack)
        if min_norm is not None:  # stored before the prediction, so a resume never keeps a stale one
            (norms_folder / f"{name}.json").write_text(
                json.dumps({"norm": min_norm.norm, "values": min_norm.take_norms()})
            )
        gray = np.uint8(prediction)
        cv2.imwrite(str(gray_folder / f"{name}.png"), gray)
        colorize(gray, colors).save(str(color_folder / f"{name}.png"))


def predict_missing(
    ev: Evaluation, data: SemData, attack_spec: AttackSpec | None, colors: np.ndarray, model_loader, list_sha256: str
) -> None:
    """Predict (and store) the images of one mode that have no stored prediction, after checking the folder's
    fingerprint; distributed, rank 0 checks and lists, every rank predicts its share."""
    save_folder = ev.folder(attack_spec)
    gray_folder, color_folder = save_folder / "gray", save_folder / "color"
    image_names = [image_name(image_path) for image_path, _ in data.data_list]
    fingerprint = ev.fingerprint(attack_spec, model_loader, list_sha256)
    if dist.is_main_process():
        predictions.check_fingerprint(save_folder, fingerprint, ev.overwrite)
    todo = dist.broadcast_object(predictions.missing(gray_folder, image_names) if dist.is_main_process() else None)
    if len(todo) < len(data):
        logger.info(
            f"{len(data) - len(todo)} of {len(data)} predictions already stored in {gray_folder}; "
            f"computing the other {len(todo)}"
        )
    if todo:
        model, device = model_loader()
        if dist.is_main_process():
            predictions.record_fingerprint(save_folder, fingerprint)
        subset = copy.copy(data)
        subset.data_list = [data.data_list[i] for i in todo[dist.rank() :: dist.world_size()]]  # this rank's share
        panels = frozenset(image_names[: ev.panels])
        run_inference(ev, subset, model, device, attack_spec, gray_folder, color_folder, colors, panels)
    dist.barrier()  # every prediction is stored before rank 0 scores them


def log_row(result: ResultRow) -> None:
    """A mode's scores in the log, as the original prints them."""
    for i, c in enumerate(result.classes):
        logger.info(f"Class_{i} result: iou/accuracy {c['iou']:.4f}/{c['acc']:.4f}, name: {c['name']}.")
    logger.info(f"Eval result: mIoU/mAcc/allAcc {result.mIoU:.4f}/{result.mAcc:.4f}/{result.allAcc:.4f}.")
    logger.info(
        f"Eval result: fg-mIoU/per-image mIoU/mIoU over present classes {result.fg_mIoU:.4f}/"
        f"{result.image_mIoU:.4f}/{result.present_mIoU:.4f}."
    )


def evaluate(
    ev: Evaluation,
    data: SemData,
    attack_spec: AttackSpec | None,
    names: list[str],
    colors: np.ndarray,
    model_loader,
    list_sha256: str,
) -> tuple[ResultRow, tuple[np.ndarray, ...]] | None:
    """One evaluation mode (clean or one attack): predicts the images without a stored prediction, scores
    all stored predictions, logs them and writes results.json; the result row and the per-image counts
    (intersection, union, target), each (images, classes). None for the unlabelled split 'test'."""
    label = attack_spec.label if attack_spec else None
    save_folder = ev.folder(attack_spec)
    gray_folder = save_folder / "gray"
    image_names = [image_name(image_path) for image_path, _ in data.data_list]
    start = time.time()
    logger.info(f">>>>>>>>>>>>>>>> Start Evaluation ({label or 'clean'}, {len(data)} images) >>>>>>>>>>>>>>>>")
    if not ev.has_prediction:  # has_prediction: only score what is stored
        predict_missing(ev, data, attack_spec, colors, model_loader, list_sha256)
    logger.info("<<<<<<<<<<<<<<<<< End Evaluation <<<<<<<<<<<<<<<<<")
    if not dist.is_main_process():
        return None
    if ev.split == "test":
        logger.info(f"predictions written to {gray_folder} (split 'test' has no labels: no metrics)")
        return None
    counts = predictions.image_counts(
        gray_folder,
        image_names,
        [label_path for _, label_path in data.data_list],
        ev.protocol.classes,
        ev.protocol.ignore_label,
        ev.protocol.scored_label,
        data.read_label,
    )
    result = mode_row(label or "clean", attack_spec, counts, names, ev.background_class)
    log_row(result)
    result = dataclasses.replace(
        result,
        **median_norm(save_folder / "norms", image_names),
        model_path=ev.model_path,
        seconds=round(time.time() - start, 2),
        config=ev.config,
    )
    (save_folder / "results.json").write_text(json.dumps(result.to_json(), indent=2))
    return result, counts


def write_summary(rows: list[ResultRow], save_folder: Path) -> None:
    """The report over all modes: the table in the log, results.csv, the sanity checks (warnings in the log
    and in results.json), robustness_curve.png, and every mode in save_folder/results.json (kept a clean
    result at its top level, as older readers expect)."""
    for line in summary.table(rows):
        logger.info(line)
    (save_folder / "results.csv").write_text(summary.csv_text(rows))
    warnings = summary.sanity_warnings(rows)
    for warning in warnings:
        logger.warning(warning)
    summary.draw_curve(rows, save_folder / "robustness_curve.png")
    clean = next(row for row in rows if row.kind == "clean").to_json()
    clean.update(
        modes=[row.to_json(config=False) for row in rows],
        warnings=warnings,
        curve="robustness_curve.png",
    )
    (save_folder / "results.json").write_text(json.dumps(clean, indent=2))


def evaluation_data(cfg: DictConfig) -> tuple[SemData, str]:
    """The images to evaluate (``index_start``, ``index_step`` of ``test_list``) and the SHA-256 of the whole
    list, which every stored prediction's fingerprint holds."""
    data = test_data(cfg)
    first: dict[str, str] = {}
    for image, _ in data.data_list:  # predictions are stored by file name: two images may not share one
        other = first.setdefault(image_name(image), image)
        if other != image:
            raise UserError(
                f"test_list '{cfg.test_list}' holds two images named '{image_name(image)}' ('{other}' "
                f"and '{image}'), whose predictions would overwrite each other; rename one or "
                f"evaluate them in separate lists"
            )
    entries = sorted(f"{image} {label}" for image, label in data.data_list)  # the order changes no prediction
    list_sha256 = hashlib.sha256("\n".join(entries).encode()).hexdigest()
    index_end = (
        len(data.data_list) if cfg.index_step == 0 else min(cfg.index_start + cfg.index_step, len(data.data_list))
    )
    data.data_list = data.data_list[cfg.index_start : index_end]
    if not data.data_list:
        raise UserError(f"no images to evaluate in '{cfg.test_list}' with index_start {cfg.index_start}")
    data.check_samples()
    return data, list_sha256


def check_before_writing(
    ev: Evaluation, runs: list[AttackSpec | None], model_loader, list_sha256: str, image_names: list[str]
) -> None:
    """Every attack's values, every mode folder's stored predictions and, when a prediction is to be computed,
    the checkpoint, checked before anything is written (an invalid entry, a folder of another run or a checkpoint
    that does not load must not leave the clean mode re-scored, its results rewritten, or a new empty folder)."""
    for spec in filter(None, runs):
        check_spec(spec)  # the constructors' checks (steps: 0, ...)
        if spec.source:
            source_config(spec, ev.protocol)  # a source of other classes or normalisation, refused before writing
    folders = [ev.folder(spec) for spec in runs]
    missing = {folder: predictions.missing(folder / "gray", image_names) for folder in folders}
    if ev.has_prediction:  # only stored predictions are scored: each must be there
        lacking = [(folder, todo) for folder, todo in missing.items() if todo and ev.split != "test"]
        if lacking:
            folder, todo = lacking[0]
            raise UserError(
                f"has_prediction is True, but '{folder / 'gray'}' lacks {len(todo)} of the "
                f"{len(image_names)} predictions (first: {image_names[todo[0]]}.png); set has_prediction "
                f"False to compute them"
            )
        return
    if not ev.overwrite and dist.is_main_process():
        for spec, folder in zip(runs, folders):
            predictions.check_fingerprint(folder, ev.fingerprint(spec, model_loader, list_sha256))
    if ev.overwrite or any(missing.values()):
        model_loader()  # a checkpoint that does not load or fit is refused here, not once save_folder exists


def run_suite(
    cfg: DictConfig, specs: list[AttackSpec | None], device: torch.device, on_mode: Callable | None = None
) -> None:
    """Evaluate each spec (None: clean) and, for more than one mode, their worst cases and the report.
    ``on_mode(spec, seconds)`` is told of each mode once it is scored (the benchmark's progress)."""
    check_creatable(cfg.save_folder, "save_folder")
    if any(specs) and cfg.split == "test":
        raise UserError("an attack needs labels, but split is 'test'; evaluate a labelled split (val)")
    # The lock comes before anything reads save_folder: a run started twice on one folder is refused, not raced.
    with owned(cfg.save_folder, "save_folder", dist.is_main_process()):
        names, colors = load_names_colors(cfg.names_path, cfg.colors_path, cfg.classes)
        data, list_sha256 = evaluation_data(cfg)
        runs, ensembles = expand_ensembles(resolve_class_weights(cfg, specs))
        model_loader = functools.cache(lambda: load_model(cfg, device))  # loaded only when a prediction is missing
        ev = Evaluation.from_config(cfg)
        check_before_writing(ev, runs, model_loader, list_sha256, [image_name(path) for path, _ in data.data_list])
        evaluated = []
        for spec in runs:
            start = time.time()
            evaluated.append(evaluate(ev, data, spec, names, colors, model_loader, list_sha256))
            if on_mode is not None:
                on_mode(spec, time.time() - start)
        if len(evaluated) > 1 and all(evaluated):
            rows = [row for row, _ in evaluated] + worst_cases(
                evaluated, ensembles, names, ev.save_folder, ev.background_class
            )
            write_summary(rows, ev.save_folder)
        dist.barrier()
