"""Every checkpoint format, read (always ``weights_only=True``, a mismatch in one line) and written (atomically,
with ``latest``) in this one place; the formats and the guarantees: docs/checkpoints.md."""

from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from model.ddcat import from_plain_state_dict, is_ddcat_state, to_plain_state_dict
from model.segmenter import Segmenter
from model.upernet import CONFIGS as UPERNET_CONFIGS
from model.upernet import WIDTHS
from util import dist
from util.errors import UserError

logger = logging.getLogger(__name__)

# torchvision MobileNetV2 entries that the segmentation backbone does not build.
MOBILENETV2_SKIPPED = ("features.18.", "classifier.")
LATEST = "latest"
# Where each code base keeps the weights in its checkpoint files (with or without DataParallel's ``module.``).
FORMATS = {
    "state_dict": "semseg/DDC-AT format",
    "model_state": "VainF/SAM-AT format",
    "model": "robustness-library format",
}
FORMAT_KEY = "format"  # added to a read checkpoint's dict: which of FORMATS (or a bare state dict) was found
VAINF_INIT = {
    "resnet50": "initmodel/resnet50_torchvision.pth",
    "resnet101": "initmodel/resnet101_torchvision.pth",
    "mobilenet": "initmodel/mobilenet_v2.pth",
}
CHECKPOINT_GLOB = "train_*.pth"
# PIR-AT's released files (nmndeep/Robust-Segmentation; docs/pir_at.md) by name -> the config each runs with.
PIRAT_RELEASES = {
    "UperNet_ConvNext_T_VOC.pth": "config/voc2012/voc2012_upernet_convnext_t_pirat.yaml",
    "UperNet_ConvNext_S_VOC.pth": "config/voc2012/voc2012_upernet_convnext_s_pirat.yaml",
    "UperNet_ConvNext_T_ADE.pth": "config/ade20k/ade20k_upernet_convnext_t_pirat.yaml",
    "UperNet_ConvNext_S_ADE.pth": "config/ade20k/ade20k_upernet_convnext_s_pirat.yaml",
    "Segmenter_vit_s_robust.pth": "config/ade20k/ade20k_segmenter_vit_s_pirat.yaml",
}
# Stem module of semseg's ImageNet ResNet -> its index in the segmentation models' layer0 Sequential.
STEM_TO_LAYER0 = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}
BACKBONE_NAMES = ("layer0", "layer1", "layer2", "layer3", "layer4")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, and rename it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` atomically to ``path`` and point ``latest`` in its folder at it."""
    path = Path(path)
    atomic_write(path, lambda f: torch.save(state, f))
    atomic_write(path.parent / LATEST, lambda f: f.write(f"{path.name}\n".encode()))


def stale_checkpoints(save_path: str, resume: str | None, overwrite: bool) -> list[Path]:
    """Refuse to mix checkpoints of two runs in one folder (nothing on disk gets overwritten). With
    ``overwrite True`` return the other run's checkpoints: they are deleted once this run has saved its
    first one, so that no script picks a stale, higher-numbered epoch of the old run."""
    existing = sorted(Path(save_path).glob(CHECKPOINT_GLOB))
    if not existing or resume:
        return []
    if not overwrite:
        raise UserError(
            f"save_path '{save_path}' already holds checkpoints ({existing[0].name}, ...); "
            f"set resume (or auto_resume True) to continue, choose another save_path, or set "
            f"overwrite True"
        )
    return existing


def training_state(
    model: nn.Module, optimizer, scaler, iteration: int, iters_per_epoch: int, data_seed: int, config: dict
) -> dict:
    """Everything needed to continue exactly after ``iteration`` updates (collective: call on every process)."""
    return {
        "epoch": iteration // iters_per_epoch,
        "iteration": iteration,
        "state_dict": dist.unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": dist.gather_objects(rng_state()),
        "data_seed": data_seed,
        "config": config,
    }


def restore_rng(checkpoint: dict, path: str) -> None:
    """This process's RNG states from a checkpoint written by as many processes."""
    states = checkpoint.get("rng")
    if states is not None and len(states) == dist.world_size():
        set_rng_state(states[dist.rank()])
    else:
        logger.info(
            f"checkpoint '{path}' holds no RNG states for {dist.world_size()} process(es): random "
            f"augmentation, dropout and attack starts continue from fresh seeds, not bitwise as before"
        )


class CheckpointFolder:
    """A run's checkpoint folder: rank 0 writes each checkpoint atomically, then deletes what it supersedes (older
    iteration checkpoints) and, at the first save, the previous run's (``stale``, with ``overwrite True``)."""

    def __init__(self, folder: str | Path, stale: Iterable[Path] = ()):
        self.folder, self.stale = Path(folder), list(stale)

    def save(self, state: dict[str, Any], name: str, superseded: Iterable[Path] = ()) -> Path:
        filename = self.folder / name
        if not dist.is_main_process():
            return filename
        save_checkpoint(state, filename)
        logger.info(f"Saving checkpoint to: {filename}")
        previous = [old.name for old in self.stale if old != filename and old.exists()]
        if previous:
            logger.info(f"overwrite True: deleted the previous run's checkpoints {', '.join(previous)}")
        for old in [*self.stale, *superseded]:
            if old != filename and old.exists():
                old.unlink()
        self.stale.clear()
        return filename


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint ``latest`` names in ``folder`` (else the newest ``train_*.pth`` by modification time), or
    None when there is none."""
    folder = Path(folder)
    pointer = folder / LATEST
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named.is_file():
            return named
    candidates = sorted(folder.glob(CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA when present) generator states, storable with weights_only."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignal:
    """While active, SIGTERM and SIGINT only request a stop: the training loop finishes its step, saves a
    checkpoint and exits 0. A second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> Self:
        try:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. an embedding application): signals keep their handlers
            self._previous = {}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        self.received = name
        logger.warning(f"{name} received: stopping after this step with a checkpoint")

    def requested(self) -> bool:
        """Whether any process received a stop signal (all processes agree, so they stop together)."""
        flag = torch.tensor([float(self.received is not None)])
        return bool(dist.all_reduce_sum(flag).item() > 0)


def _short(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    more = f", ... +{len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def state_dict_mismatch(
    loaded: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    strict: bool = True,
    display: Callable[[str], str] = str,
) -> str:
    """Describe in one line how ``loaded`` fails to fit ``expected``; '' when it fits.

    Args:
        loaded: the state dict read from a file.
        expected: the target module's ``state_dict()``.
        strict: also report missing and unexpected keys (shape mismatches are always reported).
        display: maps a key to the name shown to the user.
    """
    parts = []
    if strict:
        # BN's num_batches_tracked appeared in PyTorch 0.4.1; older files lack it; BN fills it in.
        missing = [display(k) for k in expected if k not in loaded and not k.endswith("num_batches_tracked")]
        unexpected = [display(k) for k in loaded if k not in expected]
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
    shapes = [
        f"{display(k)}: ckpt {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in loaded.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if shapes:
        more = f" ... +{len(shapes) - 5} more" if len(shapes) > 5 else ""
        parts.append("shape mismatch " + ", ".join(shapes[:5]) + more)
    return ", ".join(parts)


def mismatch_summary(loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str:
    """How ``loaded`` fails to fit ``expected`` in a few words: counts and one example of each kind; '' if it fits."""
    missing = [k for k in expected if k not in loaded and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in loaded if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in loaded.items()
        if k in expected and v.shape != expected[k].shape
    ]
    parts = [
        f"{len(keys)} {kind} ({_fit(keys[0], 60)}, ...)"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of other shape", shapes))
        if keys
    ]
    return "keys " + ", ".join(parts) if parts else ""


def _fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (a long list of keys stays one readable line)."""
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def _classes(state: Mapping[str, torch.Tensor], prefix: str) -> str:
    """' classes N' from the last conv of the classifier (``cls.4`` / ``cls1.4``, VainF's ``classifier...``)."""
    heads = [v for k, v in state.items() if k.startswith(prefix) and k.endswith(".weight") and v.dim() == 4]
    return f" classes {heads[-1].shape[0]}" if heads else ""


def _resnet_depth(state: Mapping[str, torch.Tensor]) -> int | str:
    """A semseg ResNet's depth from its layer3 blocks (ResNet-34 and -50 both have 6: bottlenecks tell)."""
    blocks = _blocks(state, "layer3.")
    if blocks == 6:
        return 50 if "layer3.0.conv3.weight" in state else 34
    return {2: 18, 23: 101, 36: 152}.get(blocks, "?")


def guess_model(state: Mapping[str, torch.Tensor]) -> str:
    """Which model a state dict belongs to, as the config keys that build it ('' when the keys do not say)."""
    if "backbone.norm0.weight" in state and "backbone.downsample_layers.1.0.weight" in state:  # PIR-AT's ConvNeXt
        depths = tuple(_blocks(state, f"backbone.stages.{i}.") for i in range(4))
        width = state["backbone.norm0.weight"].shape[0]
        stem = "conv" if "backbone.downsample_layers.0.stem.0.weight" in state else "patch"
        name = next(
            (
                n
                for n, c in UPERNET_CONFIGS.items()
                if (c["depths"], c.get("dims", WIDTHS)[0], c.get("stem", "conv")) == (depths, width, stem)
            ),
            None,
        )
        if name is None:
            return (
                f"a UperNet-ConvNeXt of depths {depths}, width {width} and the {stem} stem, which no model name here "
                "builds"
            )
        return f"PIR-AT UperNet-ConvNeXt: set model {name}{_classes(state, 'decode_head.classifier')}"
    if "encoder.pos_embed" in state and "decoder.cls_emb" in state:  # Segmenter (PIR-AT's ViT-S/16)
        width, classes = state["encoder.pos_embed"].shape[-1], state["decoder.cls_emb"].shape[1]
        if width != 384:
            return f"a Segmenter-ViT of width {width}: only segmenter_vit_s (width 384) is built here"
        return f"PIR-AT Segmenter-ViT-S: set model segmenter_vit_s classes {classes}"
    if "backbone.low_level_features.0.0.weight" in state or "backbone.conv1.weight" in state:
        head = "deeplabv3plus" if "classifier.project.0.weight" in state else "deeplabv3"
        backbone = (
            "mobilenet"
            if "backbone.low_level_features.0.0.weight" in state
            else {23: "resnet101", 6: "resnet50"}.get(_blocks(state, "backbone.layer3."), "resnet?")
        )
        separable = " separable_conv True" if any(".body.0.weight" in k for k in state) else ""
        return f"VainF {head}_{backbone}: set model {head}_{backbone}{separable}{_classes(state, 'classifier.')}"
    if "layer0.0.weight" in state or "backbone.features.0.0.weight" in state:
        arch = next(
            (
                a
                for key, a in (("ppm.", "psp"), ("aspp.", "aspp"), ("decoder.", "deeplabv3plus"))
                if any(k.startswith(key) for k in state)
            ),
            "?",
        )
        backbone = (
            " backbone mobilenetv2" if "backbone.features.0.0.weight" in state else f" layers {_resnet_depth(state)}"
        )
        ddcat = " defense ddcat" if any(k.startswith("cls1.") for k in state) else ""
        return f"semseg/DDC-AT {arch}: set model empty, arch {arch}{backbone}{ddcat}{_classes(state, 'cls')}"
    return ""


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` that (Distributed)DataParallel puts in front of every key."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _to_layer0(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"layer0.{STEM_TO_LAYER0[head]}.{rest}" if head in STEM_TO_LAYER0 else key


def _to_stem(key: str) -> str:
    layer0_to_stem = {v: k for k, v in STEM_TO_LAYER0.items()}
    parts = key.split(".", 2)
    if parts[0] == "layer0" and len(parts) == 3 and parts[1] in layer0_to_stem:
        return f"{layer0_to_stem[parts[1]]}.{parts[2]}"
    return key


def read_state_file(path: str, what: str, missing_hint: str, expected: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the file's dict, its state dict without ``module.``) of a torch file read with ``weights_only``; a bare
    state dict comes back as ``({'state_dict': state}, state)``.

    Args:
        path: the file.
        what: how errors name the file ("checkpoint", "ImageNet init weights").
        missing_hint: what to do when the file is missing.
        expected: what the file should hold, for the error when it holds no tensors.

    Raises:
        UserError: the file is missing, unreadable, or not a state dict of tensors.
    """
    if not os.path.isfile(path):
        raise UserError(f"{what} '{path}' not found; {missing_hint}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file it cannot read
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{what} '{path}' is not a loadable torch checkpoint (torch.load with weights_only=True "
            f"failed: {_fit(reason, 120)}); check the path, or re-save it as a state dict"
        ) from err
    state, content, found = _state_of(content)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} '{path}' holds no state dict of tensors; {expected}")
    return {**content, FORMAT_KEY: found}, strip_module_prefix(state)


def _state_of(content: Any) -> tuple[Any, Mapping, str]:
    """(state dict, the file's dict, the format's name) of a loaded file: see :data:`FORMATS`."""
    if isinstance(content, Mapping):
        for key, name in FORMATS.items():
            if isinstance(content.get(key), Mapping):
                return content[key], content, name
    return content, {"state_dict": content}, "bare state dict"


def read_init_state(path: str, wanted: str) -> dict[str, torch.Tensor]:
    """Read an ImageNet weights file; ``wanted`` names the expected file in error messages."""
    return read_state_file(
        path,
        "ImageNet init weights",
        f"put {wanted} there (see initmodel/README.md) or set pretrained: False to train from scratch",
        f"use {wanted}",
    )[1]


def load_resnet_init(path: str, depth: int = 50) -> dict[str, torch.Tensor]:
    """Read semseg's ImageNet ResNet file and rename its stem to ``layer0``; ``fc.*`` is dropped.
    ``depth`` only names the expected file in error messages."""
    state = read_init_state(path, f"semseg's resnet{depth}_v2.pth")
    return {_to_layer0(k): v for k, v in state.items() if not k.startswith("fc.")}


def load_backbone_init(model: nn.Module, path: str, depth: int) -> None:
    """Load semseg's ImageNet weights into ``model.layer0`` .. ``model.layer4``, strictly.

    Raises:
        UserError: the file is missing, unreadable, or its keys/shapes do not fit the backbone;
            keys are named as in the file (conv1, bn1, ... rather than layer0.*).
    """
    state = load_resnet_init(path, depth)
    expected = {k: v for k, v in model.state_dict().items() if k.split(".")[0] in BACKBONE_NAMES}
    problem = state_dict_mismatch(state, expected, display=_to_stem)
    if problem:
        raise UserError(
            f"ImageNet init weights '{path}' do not fit the ResNet-{depth} backbone: "
            f"{problem}; use semseg's resnet{depth}_v2.pth for layers: {depth}"
        )
    for name in BACKBONE_NAMES:
        prefix = name + "."
        getattr(model, name).load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=True
        )
    logger.info("loaded ImageNet init weights from %s", path)


def load_mobilenetv2_init(module: nn.Module, path: str) -> None:
    """Load torchvision's ImageNet MobileNetV2 weights into ``module``, strictly (``features.18`` and the
    classifier, not built, skipped).

    Raises:
        UserError: the file is missing, unreadable, or does not fit the backbone (keys named).
    """
    state = read_init_state(path, "torchvision's mobilenet_v2 ImageNet weights")
    state = {k: v for k, v in state.items() if not k.startswith(MOBILENETV2_SKIPPED)}
    problem = state_dict_mismatch(state, module.state_dict())
    if problem:
        raise UserError(
            f"ImageNet init weights '{path}' do not fit the MobileNetV2 backbone: "
            f"{problem}; use torchvision's mobilenet_v2 (width 1.0) ImageNet weights"
        )
    module.load_state_dict(state, strict=True)
    logger.info("loaded ImageNet init weights from %s", path)


def robust_init_keys(state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """The torchvision keys of an adversarially trained ImageNet model (PIR-AT's robust initialisation): the
    robustness library's ``model.*`` (its ``attacker.model.*`` copy and ``normalizer.*`` dropped) and
    RobustBench's ``model.*`` beside ``normalize.*``; other files are returned as they are."""
    if not any(k.startswith("model.") for k in state):
        return state
    release = "robustness library" if any(k.startswith(("attacker.", "normalizer.")) for k in state) else "RobustBench"
    logger.info("ImageNet init '%s': a %s release (model.* kept; attacker/normaliser entries dropped)", path, release)
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def load_vainf_init(model: nn.Module, path: str | None) -> None:
    """torchvision's ImageNet ResNet-50/101 or MobileNetV2 file into a VainF model's ``backbone``, strictly, as
    VainF's ``pretrained_backbone`` (MobileNetV2's ``features.i`` renamed to VainF's two halves).

    Raises:
        UserError: the file is missing, unreadable or does not fit the backbone (keys named).
    """
    kind = model.name.split("_")[1]
    path = path or VAINF_INIT[kind]
    state = robust_init_keys(read_init_state(path, f"torchvision's {kind} ImageNet weights"), path)
    if kind == "mobilenet":
        state = {
            f"{'low' if int(k.split('.')[1]) < 4 else 'high'}_level_{k}": v
            for k, v in state.items()
            if not k.startswith(MOBILENETV2_SKIPPED)
        }
    else:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    problem = state_dict_mismatch(state, model.backbone.state_dict())
    if problem:
        raise UserError(
            f"ImageNet init weights '{path}' do not fit the {kind} backbone of {model.name}: "
            f"{_fit(problem, 180)}; use torchvision's {kind} ImageNet file"
        )
    model.backbone.load_state_dict(state, strict=True)
    logger.info("loaded ImageNet init weights from %s", path)


# PIR-AT's robust ImageNet initialisations (nmndeep/revisiting-at): timm's ConvNeXt names -> ours, in order.
_CONVNEXT_TIMM = (
    (re.compile(r"^stem\.stem\.(\d+)\."), r"downsample_layers.0.stem.\1."),
    (re.compile(r"^stages\.(\d+)\.downsample\.(\d+)\."), r"downsample_layers.\1.\2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\."), r"stages.\1.\2.dwconv."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\."), r"stages.\1.\2.pwconv1."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\."), r"stages.\1.\2.pwconv2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\."), r"stages.\1.\2."),
)


def imagenet_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A revisiting-at file's network keys: DDP's ``module.`` and the wrappers' ``base_model.`` / ``model.`` taken
    off, the normaliser (``normalize.*``) and the ImageNet classifier (``head.*``) dropped."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "base_model.", "model."):
            key = key.removeprefix(prefix)
        if not key.startswith(("normalize.", "head.")):
            out[key] = value
    return out


def convnext_init_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A robust ConvNeXt-CvSt file (timm's names) in our ConvNeXt's names, as PIR-AT's ``load_carefully_cvst``
    maps it. A file already in ours (facebookresearch/ConvNeXt's layout, read by PIR-AT's ``load_carefully``)
    keeps its names; its final LayerNorm (``norm.*``, the classifier's input) is dropped with the classifier."""
    out = {}
    for key, value in imagenet_keys(state).items():
        if key.startswith("norm."):
            continue
        for pattern, replacement in _CONVNEXT_TIMM:
            key, hits = pattern.subn(replacement, key)
            if hits:
                break
        out[key] = value
    return out


def vit_init_state(state: Mapping[str, torch.Tensor], pos_embed: torch.Tensor) -> dict[str, torch.Tensor]:
    """A robust ViT file (timm's names, which our encoder shares) with its position embedding resized bilinearly
    from its square grid (14 x 14 at 224) to ``pos_embed``'s, as PIR-AT's ``create_vit`` resizes it."""
    out = imagenet_keys(state)
    grid, new = out.get("pos_embed"), math.isqrt(pos_embed.shape[1] - 1)
    if grid is not None and grid.dim() == 3 and grid.shape[1] != pos_embed.shape[1]:
        old = math.isqrt(grid.shape[1] - 1)
        cells = grid[:, 1 : 1 + old * old].reshape(1, old, old, -1).permute(0, 3, 1, 2)
        cells = torch.nn.functional.interpolate(cells, size=(new, new), mode="bilinear", align_corners=False)
        out["pos_embed"] = torch.cat([grid[:, :1], cells.permute(0, 2, 3, 1).reshape(1, new * new, -1)], 1)
    return out


def load_pirat_init(model: nn.Module, path: str | None) -> None:
    """A robust (or clean) ImageNet file, or the trunk of a segmentation checkpoint, into UperNet-ConvNeXt's
    ``backbone`` or Segmenter's ``encoder``, strictly: every weight of the file is used and every weight of the
    trunk set, except the stage-output norms (``norm0`` .. ``norm3``) that no ImageNet ConvNeXt has (they keep
    their initial values, as in PIR-AT).

    Raises:
        UserError: no ``init_path``, or a file that is missing, unreadable or does not fit (keys named).
    """
    if not path:
        raise UserError(
            "pretrained True needs init_path: a robust ImageNet ConvNeXt-CvSt or ViT-S file of nmndeep/revisiting-at "
            "(initmodel/README.md), or set pretrained False"
        )
    state = read_init_state(path, "a revisiting-at ImageNet file (initmodel/README.md)")
    name = "encoder" if isinstance(model, Segmenter) else "backbone"
    if any(k.startswith(name + ".") for k in state):  # a segmentation checkpoint (ours, PIR-AT's): its trunk only
        state = {k.removeprefix(name + "."): v for k, v in state.items() if k.startswith(name + ".")}
        logger.info("ImageNet init %s is a segmentation checkpoint: its %s is used, the heads are not", path, name)
    if isinstance(model, Segmenter):
        trunk, what = model.encoder, "the ViT encoder"
        state, optional = vit_init_state(state, trunk.pos_embed), ()
    else:
        trunk, what = model.backbone, "the ConvNeXt backbone"
        state, optional = convnext_init_state(state), tuple(f"norm{i}." for i in range(4))
    expected = {k: v for k, v in trunk.state_dict().items() if k in state or not k.startswith(optional)}
    problem = state_dict_mismatch(state, expected)
    if problem:
        raise UserError(
            f"ImageNet init '{path}' does not fit {what}: {_fit(problem, 200)}; use the ImageNet file of the same "
            f"size and stem (revisiting-at's ConvNeXt-T/S-CvSt or ViT-S, facebookresearch's ConvNeXt-T for "
            f"upernet_convnext_t; initmodel/README.md)"
        )
    trunk.load_state_dict(state, strict=False)  # the optional norms only: the check above accounted for the rest
    logger.info("loaded ImageNet init %s into %s (normaliser and classifier dropped)", path, what)


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint safely (``weights_only``): (the checkpoint dict, its state dict without
    ``module.`` prefixes). A bare state dict is returned as ``{'state_dict': ...}``.

    Raises:
        UserError: the file is missing or not a torch checkpoint of tensors.
    """
    return read_state_file(
        path,
        "checkpoint",
        "check the path in the config (model_path / resume / weight)",
        "expected a dict with 'state_dict' or a bare state dict",
    )


def _without_unused_keys(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], model: nn.Module, path: str
) -> dict[str, torch.Tensor]:
    """``state`` without the keys the model names as read by no forward pass (``unused_checkpoint_keys``: e.g.
    the 1000-class ImageNet head a released Segmenter file keeps), dropped by exact name and logged."""
    unused = [k for k in getattr(model, "unused_checkpoint_keys", ()) if k in state and k not in expected]
    if not unused:
        return state
    logger.info("checkpoint %s: dropped %s (read by no forward pass)", path, ", ".join(unused))
    return {k: v for k, v in state.items() if k not in unused}


def load_checkpoint_weights(model: nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load a training checkpoint into ``model``, checked before loading (DDC-AT <-> plain converted, see
    docs/checkpoints.md); with ``strict=False`` missing and unexpected keys are only logged.

    Returns:
        The loaded checkpoint dict (``{'state_dict': ...}`` for a bare state dict), so callers can
        read ``epoch`` or ``optimizer``.

    Raises:
        UserError: the file is missing, not a torch checkpoint, or does not fit the model.
    """
    checkpoint, state = read_checkpoint(path)
    as_read = state
    target = dist.unwrap(model)
    expected = target.state_dict()
    if is_ddcat_state(state) and not is_ddcat_state(expected):
        state = to_plain_state_dict(state)
        logger.info("checkpoint %s is a DDC-AT model: using its cls1 head as cls", path)
    elif is_ddcat_state(expected) and not is_ddcat_state(state) and any(k.startswith("cls.") for k in state):
        state = from_plain_state_dict(state, expected)
        logger.info("checkpoint %s is a plain model: its cls head starts cls1 and cls2, mask1 is new", path)
    state = _without_unused_keys(state, expected, target, path)
    if state_dict_mismatch(state, expected, strict=strict):
        guess = guess_model(as_read)
        advice = f"looks like {guess}" if guess else "check model/arch/layers/classes/defense in the config"
        release = PIRAT_RELEASES.get(Path(path).name)
        if release:
            advice += f" (PIR-AT's {Path(path).name} runs with {release})"
        name = path if len(path) <= 40 else "..." + path[-37:]
        raise UserError(
            f"checkpoint '{name}' ({checkpoint[FORMAT_KEY]}) does not fit: "
            f"{mismatch_summary(state, expected)}; {advice}"
        )
    if not strict:
        ignored = state_dict_mismatch(state, expected, strict=True)
        if ignored:
            logger.warning("checkpoint '%s' loaded non-strictly: %s", path, ignored)
    target.load_state_dict(state, strict=strict)
    logger.info("loaded checkpoint %s (%s)", path, checkpoint[FORMAT_KEY])
    return checkpoint
