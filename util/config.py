"""Configuration: one defaults schema, YAML on top of it, ``key value`` command-line overrides on top of that.

The YAML layout is semseg's / DDC-AT's (sections ``DATA``, ``TRAIN``, ``Distributed``, ``TEST``), and the
resolved config is flat like theirs (``cfg.batch_size``, not ``cfg.TRAIN.batch_size``), so an original
config file loads unchanged. Parsing, merging and type validation are done by OmegaConf against the
dataclass schema below; this module only adds readable one-line errors and range checks.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from util.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    """DATA section."""

    data_root: str = "dataset/synthetic"  # folder the list files' relative paths start from
    train_list: str = "dataset/synthetic/list/train.txt"  # lines 'image_rel label_rel'
    val_list: str = "dataset/synthetic/list/val.txt"  # validation list used while training
    classes: int = 2  # number of classes (label values 0..classes-1, plus ignore_label)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # the model's input normalisation, per
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))  # RGB channel in [0, 1] units (PIR-AT: 0, 1)


@dataclass
class TrainConfig:
    """TRAIN section."""

    model: str | None = None  # a VainF/SAM-AT model by VainF's name (deeplabv3plus_mobilenet, ...); replaces arch
    separable_conv: bool = False  # VainF's --separable_conv: depthwise-separable 3x3 convs in the V3+ head
    rescale_normalized_input: bool = False  # SAM-AT's input: each image normalised, then rescaled to [0, 1] by its
    # own min and max (what SAM-AT's checkpoints were trained on; see docs/sam_at.md)
    arch: str = "psp"  # psp (PSPNet) | aspp (DeepLabV3) | deeplabv3plus (DeepLabV3+)
    backbone: str = "resnet"  # resnet | mobilenetv2 (layers is then unused)
    layers: int = 50  # ResNet depth: 18, 34, 50, 101, 152
    output_stride: int = 8  # backbone output stride: 8 (original) or 16
    pretrained: bool = True  # load ImageNet weights initmodel/resnet{layers}_v2.pth into the backbone
    init_path: str | None = None  # other ImageNet weights file (semseg format); default as above
    defense: str = "none"  # adversarial training: none | sat | ddcat | pgd_at (every image; SAM-AT's --adv) | trades
    adv_eps: float = 0.03  # training attack radius in [0, 1] pixels, L-inf or L2 (original: 0.03)
    adv_steps: int = 3  # training attack BIM steps (original: 3)
    adv_step_size: float | None = None  # training attack step; empty: adv_eps / adv_steps (original)
    adv_random_start: bool = False  # start the training attack at a random point of the ball (PGD)
    adv_keep: str = "last"  # the training attack's result: last (iterate) | best_batch_loss (PIR-AT's Pgd_Attack:
    # the iterate after the last step whose batch loss was at least the highest before; L-inf only)
    adv_param_grads: bool = False  # PIR-AT's slip: its attack's loss.backward() also fills the parameters' .grad
    # (the mean CE at each iterate, in eval mode), which its update keeps beside the training loss's; L-inf only
    adv_norm: str = "linf"  # training attack threat model: linf | l2 (SAM-AT's --norm)
    adv_train_mode: bool = False  # craft with the model in train mode, BN updating (SAM-AT's --adv); else eval
    adv_clean_fraction: float = 0.0  # pgd_at: share of each batch kept clean
    trades_beta: float = 6.0  # trades: weight of the KL(clean || adversarial) term (TRADES' 1/lambda)
    adv_grad_at_unnormalized: bool = False  # SAM-AT's slip: its training attack feeds the model the [0, 1] image
    # without normalising it while crafting (training then normalises); off: the model sees what it is trained on
    optimizer: str = "sgd"  # sgd (original) | adam | adamw (PIR-AT: no decay for 1-d parameters) | sam (around SGD)
    sam_rho: float = 0.02  # SAM neighbourhood radius
    sam_adaptive: bool = False  # adaptive SAM (ASAM): perturbation scaled by |w|
    sam_warmup_iters: int = 0  # plain SGD iterations before SAM starts
    sam_warmup_separate: bool = False  # SAM-AT: the warm-up steps its own SGD at the constant base_lr; SAM then
    # starts with fresh momentum at the learning rate the schedule has reached
    sam_second_pass_updates_bn: bool = False  # SAM-AT: the pass at w + e also updates BN running statistics
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    sync_bn: bool = True  # adopt syncbn or not (multi-process training)
    train_h: int = 473  # training crop height
    train_w: int = 473  # training crop width
    augmentation: str = "semseg"  # semseg (scale, rotate, blur, flip, crop padded with mean/ignore) | vainf
    # (VainF/SAM-AT: scale, crop padded as VainF's, flip; the rotate keys unused; see docs/sam_at.md) | pirat
    # (PIR-AT: flip, short side scale_min..scale_max x train_base_size, pad with 0, blur, crop; docs/pir_at.md)
    train_base_size: int = 512  # pirat: the short side at scale 1 (PIR-AT's TRAIN.BASE_SIZE: 512 VOC, 520 ADE20K)
    scale_min: float = 0.5  # minimum random scale
    scale_max: float = 2.0  # maximum random scale
    rotate_min: float = -10.0  # minimum random rotate
    rotate_max: float = 10.0  # maximum random rotate
    zoom_factor: int = 8  # zoom factor for final prediction during training, be in [1, 2, 4, 8]
    ignore_label: int = 255  # label value excluded from loss and metrics
    aux_weight: float = 0.4  # weight of the auxiliary (layer3) loss
    train_gpu: list[int] = field(default_factory=lambda: [0])  # GPU ids (a hint; CPU when there is no CUDA)
    workers: int = 4  # data loader workers
    batch_size: int = 16  # batch size for training
    batch_size_val: int = 8  # batch size for validation during training
    base_lr: float = 0.01  # learning rate of the backbone; heads use head_lr_mult x
    head_lr_mult: float = 10.0  # heads' learning rate over the backbone's (semseg: 10; VainF/SAM-AT: 1)
    epochs: int = 50  # training epochs
    iters: int = 0  # train this many iterations instead (VainF's total_itrs; the last epoch is cut); 0: epochs
    min_lr: float = 0.0  # floor of the poly schedule (VainF/SAM-AT: 1e-6)
    warmup_epochs: float = 0.0  # linear warm-up before the poly schedule, in epochs (PIR-AT: 10 VOC, 5 ADE20K)
    warmup_ratio: float = 0.0  # the warm-up's first learning rate over base_lr (PIR-AT: 1e-5)
    backbone_bn_momentum: float | None = None  # the backbone's BN momentum (VainF/SAM-AT: 0.01); empty: 0.1
    start_epoch: int = 0  # first epoch (overwritten by resume)
    power: float = 0.9  # poly learning-rate power
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0001  # SGD weight decay
    manual_seed: int | None = None  # random seed; empty for a random run
    print_freq: int = 10  # log every N iterations
    save_freq: int = 1  # save a checkpoint every N epochs
    save_path: str = "exp/model"  # checkpoints, tensorboard events and logs go here
    weight: str | None = None  # path to initial weight (default: none)
    resume: str | None = None  # path to latest checkpoint (default: none)
    evaluate: bool = False  # evaluate on the validation set after each epoch
    overwrite: bool = False  # allow a save_path holding another run's checkpoints (deleted at this run's first save)
    amp: str = "off"  # mixed precision: off | bf16 | fp16 (fp16 with a gradient scaler); see docs/distributed.md
    adv_amp: bool = False  # craft the training attack under amp too (default: input gradients in fp32)
    channels_last: bool = False  # channels-last memory format (CUDA only; ignored with a notice on the CPU)
    auto_resume: bool = False  # resume from the checkpoint 'latest' names in save_path, if any (restarts, preemption)
    save_every_iters: int = 0  # also save train_iter_N.pth every N iterations (the newest is kept); 0: off


@dataclass
class DistributedConfig:
    """Distributed section (original keys; the apex ones are accepted for compatibility)."""

    dist_url: str = "tcp://127.0.0.1:6789"  # rendezvous address
    dist_backend: str = "nccl"  # nccl on CUDA, gloo on CPU
    multiprocessing_distributed: bool = False  # original launcher flag
    world_size: int = 1  # number of nodes
    rank: int = 0  # node rank
    use_apex: bool = False  # original apex switch (apex is not used)
    opt_level: str = "O0"  # original apex opt level
    keep_batchnorm_fp32: Any = None  # original apex option
    loss_scale: Any = None  # original apex option


@dataclass
class TestConfig:
    """TEST section."""

    test_list: str = "dataset/synthetic/list/val.txt"  # list evaluated by test.py
    split: str = "val"  # split in [train, val, test]; test lists may hold images only
    base_size: int = 512  # long side of the image at scale 1.0; 0: the image's own size (VainF/SAM-AT)
    test_h: int = 473  # sliding-window crop height
    test_w: int = 473  # sliding-window crop width
    scales: list[float] = field(default_factory=lambda: [1.0])  # evaluation scales, ms as [0.5, 0.75, ...]
    has_prediction: bool = False  # predictions already in save_folder/gray: only compute metrics
    index_start: int = 0  # evaluation start index in list
    index_step: int = 0  # evaluation step index in list, 0 means to end
    test_gpu: list[int] = field(default_factory=lambda: [0])  # GPU ids (a hint)
    model_path: str | None = None  # evaluation model path
    save_folder: str = "exp/result"  # results save folder
    colors_path: str = "dataset/synthetic/synthetic_colors.txt"  # path of dataset colors
    names_path: str = "dataset/synthetic/synthetic_names.txt"  # path of dataset category names
    attacks: list[Any] = field(default_factory=list)  # attack specs evaluated with clean (see docs/evaluation.md)
    attack_protocol: str = "per_crop"  # per_crop (original: windows attacked alone) | whole_image (docs/evaluation.md)
    eval_crop: str = "sliding"  # sliding (original) | whole (one forward) | center (central window only scored)
    ignore_as_background: bool = False  # ignore_label pixels count as class 0 in metrics and attacks
    flip: bool = True  # clean predictions average in the horizontal flip (original); so does whole_image
    test_preprocess: str = "none"  # none | pirat: each test image (and label) decoded by PIL, its short side
    # resized to the crop, one test_h x test_w centre crop: PIR-AT's evaluation data (docs/pir_at.md)
    background_class: int | None = 0  # the class fg-mIoU leaves out; empty when there is none (Cityscapes)
    panels: int = 4  # per attack mode, a panel PNG for the first N images in save_folder/<mode>/panels (0: none)


SECTIONS = {"DATA": DataConfig, "TRAIN": TrainConfig, "Distributed": DistributedConfig, "TEST": TestConfig}


@dataclass
class Config(TestConfig, DistributedConfig, TrainConfig, DataConfig):
    """All keys, flat (the order of the bases makes DATA come first when iterating)."""


# arch, backbone and model (VainF's) names are registered in model/ (model.registry) and checked there
# (model.check_names), right after load_config.
CHOICES = {
    "layers": (18, 34, 50, 101, 152),
    "output_stride": (8, 16),
    "adv_norm": ("linf", "l2"),
    "adv_keep": ("last", "best_batch_loss"),
    "optimizer": ("sgd", "adam", "adamw", "sam"),
    "augmentation": ("semseg", "vainf", "pirat"),
    "amp": ("off", "bf16", "fp16"),
    "zoom_factor": (1, 2, 4, 8),
    "split": ("train", "val", "test"),
    "attack_protocol": ("per_crop", "whole_image"),
    "eval_crop": ("sliding", "whole", "center"),
    "test_preprocess": ("none", "pirat"),
}


def _type_name(key: str) -> str:
    hint = typing.get_type_hints(Config)[key]
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _unknown_key(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, [f.name for f in fields(Config)], n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else "; see util/config.py for the known keys"
    return UserError(f"{where}: unknown config key '{key}'{hint}")


def _merge(cfg: DictConfig, values: dict, where: str) -> DictConfig:
    """Merge ``values`` into ``cfg`` key by key so an error names the key."""
    for key, value in values.items():
        if key not in cfg:
            raise _unknown_key(key, where)
        try:
            cfg = OmegaConf.merge(cfg, {key: value})
        except (OmegaConfBaseException, TypeError):  # TypeError: a mapping for a list key, or the reverse
            raise UserError(f"{where}: config key '{key}' expects {_type_name(key)}, got {value!r}") from None
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not 'the later wins'."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _flatten(raw: Any, path: str) -> dict:
    """Turn the sectioned YAML into one flat dict, like semseg's load_cfg_from_cfg_file."""
    if raw is None:
        raise UserError(f"config file '{path}' is empty; give its sections (DATA, TRAIN, ...), see config/synthetic/")
    if not isinstance(raw, dict):
        raise UserError(f"config file '{path}' is not a mapping of sections/keys; see config/synthetic/*.yaml")
    flat: dict = {}
    for name, value in raw.items():
        if isinstance(value, dict):
            if name not in SECTIONS:
                raise UserError(f"config file '{path}': unknown section '{name}'; known: {', '.join(SECTIONS)}")
            items = value.items()
        else:
            items = [(name, value)]
        for key, item in items:
            if key in flat:
                raise UserError(f"config file '{path}': key '{key}' is given twice")
            flat[key] = item
    return flat


def parse_opts(opts: Sequence[str]) -> dict:
    """Parse ``key value`` command-line pairs; values are YAML literals (``16``, ``[1.0, 0.5]``, ``True``)."""
    if len(opts) % 2:
        raise UserError(f"command-line overrides come in 'key value' pairs; got {len(opts)} words: {' '.join(opts)}")
    out = {}
    for key, text in zip(opts[0::2], opts[1::2]):
        try:
            out[key] = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            out[key] = text
    return out


def as_opts(values: Mapping[str, Any]) -> list[str]:
    """A mapping of config keys as the ``key value`` pairs :func:`parse_opts` reads back (values as YAML)."""

    def text(value: Any) -> str:  # a scalar's dump ends with YAML's document end marker
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

    return [s for k, v in values.items() for s in (k, text(v))]


def check(cfg: DictConfig, where: str = "config") -> None:
    """Range and choice checks that the type system cannot express; the first that fails is reported."""
    for rule in (
        _check_choices,
        _check_counts,
        _check_augmentation,
        _check_training,
        _check_evaluation,
        _check_training_attack,
        _check_more,
    ):
        rule(cfg, where)


def _check_choices(cfg: DictConfig, where: str) -> None:
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise UserError(f"{where}: {key} must be one of {list(allowed)}, got {cfg[key]!r}")
    if cfg.model is not None and (cfg.defense == "ddcat" or cfg.zoom_factor != 8):
        raise UserError(
            f"{where}: model {cfg.model} predicts at full resolution without DDC-AT's heads; "
            f"use defense none/sat and zoom_factor 8, or an arch (psp, aspp) for DDC-AT"
        )


def _check_counts(cfg: DictConfig, where: str) -> None:
    positive = (
        "batch_size",
        "batch_size_val",
        "epochs",
        "train_h",
        "train_w",
        "test_h",
        "test_w",
        "save_freq",
        "print_freq",
    )
    for key in positive:
        if cfg[key] < 1:
            raise UserError(f"{where}: {key} must be >= 1, got {cfg[key]}")
    if cfg.classes < 2:
        raise UserError(f"{where}: classes must be >= 2, got {cfg.classes}")
    if not cfg.classes <= cfg.ignore_label <= 255:
        raise UserError(f"{where}: ignore_label must be in [classes, 255] (labels are 8-bit), got {cfg.ignore_label}")


def _check_augmentation(cfg: DictConfig, where: str) -> None:
    if cfg.scale_min <= 0 or cfg.scale_min > cfg.scale_max:
        raise UserError(f"{where}: need 0 < scale_min <= scale_max, got {cfg.scale_min}, {cfg.scale_max}")
    if cfg.train_base_size < 1:
        raise UserError(f"{where}: train_base_size must be >= 1, got {cfg.train_base_size}")
    if cfg.rotate_min > cfg.rotate_max:
        raise UserError(f"{where}: need rotate_min <= rotate_max, got {cfg.rotate_min}, {cfg.rotate_max}")
    for key in ("train_h", "train_w", "test_h", "test_w"):
        if cfg[key] < 9:  # the 1/8 feature map of a smaller crop is 1 pixel: nothing left to segment
            raise UserError(f"{where}: {key} must be >= 9 (crops are seen by the network at 1/8 size), got {cfg[key]}")


def _check_training(cfg: DictConfig, where: str) -> None:
    if cfg.trades_beta < 0:
        raise UserError(f"{where}: trades_beta must be >= 0, got {cfg.trades_beta}")
    if not 0 <= cfg.adv_clean_fraction < 1:
        raise UserError(f"{where}: adv_clean_fraction must be in [0, 1), got {cfg.adv_clean_fraction}")
    if cfg.base_size < 0:
        raise UserError(f"{where}: base_size must be >= 1, or 0 for the image's own size, got {cfg.base_size}")
    if cfg.iters < 0 or cfg.min_lr < 0 or cfg.head_lr_mult <= 0:
        raise UserError(
            f"{where}: need iters >= 0, min_lr >= 0 and head_lr_mult > 0, got {cfg.iters}, "
            f"{cfg.min_lr}, {cfg.head_lr_mult}"
        )
    if cfg.backbone_bn_momentum is not None and not 0 < cfg.backbone_bn_momentum <= 1:
        raise UserError(f"{where}: backbone_bn_momentum must be in (0, 1] or empty, got {cfg.backbone_bn_momentum}")
    if cfg.base_lr <= 0:
        raise UserError(f"{where}: base_lr must be > 0, got {cfg.base_lr}")
    if cfg.warmup_epochs < 0 or not 0 <= cfg.warmup_ratio <= 1:
        raise UserError(
            f"{where}: need warmup_epochs >= 0 and warmup_ratio in [0, 1], got {cfg.warmup_epochs}, {cfg.warmup_ratio}"
        )


def _check_evaluation(cfg: DictConfig, where: str) -> None:
    if not cfg.scales or min(cfg.scales) <= 0:
        raise UserError(f"{where}: scales must be a non-empty list of positive numbers, got {list(cfg.scales)}")
    if cfg.save_every_iters < 0:
        raise UserError(
            f"{where}: save_every_iters must be >= 0 (0: only epoch checkpoints), got {cfg.save_every_iters}"
        )
    if cfg.workers < 0 or cfg.index_start < 0 or cfg.index_step < 0:
        raise UserError(f"{where}: workers, index_start and index_step must be >= 0")
    if cfg.panels < 0:
        raise UserError(f"{where}: panels must be >= 0 (0: no panel pictures), got {cfg.panels}")


def _check_training_attack(cfg: DictConfig, where: str) -> None:
    if cfg.adv_param_grads and cfg.amp == "fp16":
        raise UserError(
            f"{where}: adv_param_grads adds unscaled gradients, which fp16's scaler would shrink; use amp bf16 or off"
        )
    if (cfg.adv_keep != "last" or cfg.adv_param_grads) and cfg.adv_norm != "linf":
        raise UserError(
            f"{where}: adv_keep {cfg.adv_keep} and adv_param_grads restate PIR-AT's L-inf attack; for l2 set "
            f"adv_keep last and adv_param_grads False"
        )
    if cfg.adv_eps <= 0 or cfg.adv_steps < 1:
        raise UserError(f"{where}: need adv_eps > 0 and adv_steps >= 1, got {cfg.adv_eps}, {cfg.adv_steps}")
    if cfg.adv_step_size is not None and cfg.adv_step_size <= 0:
        raise UserError(
            f"{where}: adv_step_size must be > 0 (or empty for adv_eps / adv_steps), got {cfg.adv_step_size}"
        )
    if cfg.sam_rho <= 0 or cfg.sam_warmup_iters < 0:
        raise UserError(
            f"{where}: need sam_rho > 0 and sam_warmup_iters >= 0, got {cfg.sam_rho}, {cfg.sam_warmup_iters}"
        )


def _check_more(cfg: DictConfig, where: str) -> None:
    """Numbers that are not finite, signs that turn the optimizer or the loss around, a background class that is
    no class: what would train or score silently wrong."""
    for key, value in cfg.items():
        numbers = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise UserError(f"{where}: {key} must be finite, got {value}")
    for key in ("power", "momentum", "weight_decay", "aux_weight", "start_epoch"):
        if cfg[key] < 0:
            raise UserError(f"{where}: {key} must be >= 0, got {cfg[key]}")
    if cfg.world_size < 1:
        raise UserError(f"{where}: world_size must be >= 1 (processes), got {cfg.world_size}")
    if cfg.adv_norm == "linf" and cfg.adv_eps > 1:
        raise UserError(
            f"{where}: adv_eps must be <= 1 under linf (pixels are in [0, 1]; 8/255 is 0.0314), got {cfg.adv_eps}"
        )
    if len(cfg.mean) != 3 or len(cfg.std) != 3 or min(cfg.std) <= 0:
        raise UserError(
            f"{where}: mean and std are three values each (RGB, in [0, 1] units) and std > 0, got mean "
            f"{list(cfg.mean)}, std {list(cfg.std)}; ImageNet's are the default, PIR-AT's models take mean 0, std 1"
        )
    if cfg.background_class is not None and not 0 <= cfg.background_class < cfg.classes:
        raise UserError(
            f"{where}: background_class must be a class in [0, {cfg.classes - 1}] or empty (none), "
            f"got {cfg.background_class}"
        )


def load_config(path: str | None, opts: Sequence[str] = ()) -> DictConfig:
    """Defaults, then the YAML file at ``path``, then ``key value`` overrides; validated.

    Raises:
        UserError: missing/unreadable/non-YAML file, unknown key (the closest known key is suggested),
            wrong type or out-of-range value.
    """
    cfg = OmegaConf.structured(Config)
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"config file '{path}' not found; pass an existing file with --config (see config/)")
        try:
            raw = yaml.load(file.read_text(), Loader=_UniqueKeyLoader)
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"config file '{path}' cannot be read ({err}); check the file") from None
        except yaml.constructor.ConstructorError as err:
            line = err.problem_mark.line + 1
            advice = "keep one" if "given twice" in str(err.problem) else "fix the file"
            raise UserError(f"config file '{path}', line {line}: {err.problem}; {advice}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"config file '{path}' is not valid YAML{line}; fix the syntax") from None
        cfg = _merge(cfg, _flatten(raw, path), f"config file '{path}'")
    cfg = _merge(cfg, parse_opts(opts), "command line")
    if cfg.amp == "False":  # YAML 1.1 reads a bare `off` as the boolean False
        cfg.amp = "off"
    check(cfg, f"config '{path}'" if path else "config")
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config in the sectioned layout, so it loads back with :func:`load_config`."""
    data = OmegaConf.to_container(cfg)
    out = {name: {f.name: data[f.name] for f in fields(section)} for name, section in SECTIONS.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(out, sort_keys=False))
