"""A built-in synthetic segmentation dataset in semseg's list-file layout, generated from a seed in seconds.

    python -m tool_data.synthetic --root dataset/synthetic [--seed 0] [--num-train 400] [--overwrite]

Filled shapes (circle, square, triangle, cross) on textured backgrounds; labels follow VOC (0 background, a
255 band on object boundaries). The :class:`Knobs` set how much colour tells the class and how much room a
fixed L-inf perturbation has; the parameters are kept in ``synthetic.json``, and every image has its own
generator seeded by (seed, split, index), so the same parameters give byte-identical files (docs/data.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from util.errors import ArgumentParser, UserError, check_creatable, run_main

logger = logging.getLogger(__name__)

CLASS_NAMES = ["background", "circle", "square", "triangle", "cross"]
# Hue family (degrees) of each object class under ``colour_hint``; index 0 (background) is unused.
CLASS_HUES = [0.0, 0.0, 90.0, 180.0, 270.0]
IGNORE_LABEL = 255
# Bump when the drawing changes, so an old dataset on disk is reported as stale instead of reused.
GENERATOR_VERSION = 3
SPLITS = {"train": 0, "val": 1}
# The demo's data (generate() and the CLI default to it): grey backgrounds, narrow hue families and low
# contrast, so a robust cue exists (an object's hue, 35+ degrees from the next family) but the 0.02 test
# perturbation is large next to the image's colour differences and an undefended model is brittle.
DEMO_HUE_SPREAD = 10.0
DEMO_BACKGROUND_CHROMA = 0.0
DEMO_CONTRAST = 0.2
PARAMS_FILE = "synthetic.json"
# Tracked with the repository beside the generated files: a folder holding only these is a fresh one.
OWN_FILES = {"synthetic_names.txt", "synthetic_colors.txt"}
MAX_SIZE = 2048  # image height in pixels; the memory drawing takes grows with its square


@dataclass(frozen=True)
class Knobs:
    """How the images are drawn (the command line's options; the defaults make the demo's set)."""

    size: int = 96  # image height in pixels; the width is drawn from [size, size * max_aspect]
    texture_strength: float = 0.5  # 0: a plain gradient background; 1: strong noise and stripes/checker
    min_objects: int = 2  # fewest objects per image (fewer only when an image is too crowded to place them)
    max_objects: int = 4  # most objects per image
    min_contrast: float = 80.0  # wanted RGB distance between an object's colour and what it covers
    max_aspect: float = 1.25  # largest width / height ratio
    colour_hint: float = 1.0  # probability that an object's colour comes from its class's hue family
    hue_spread: float = DEMO_HUE_SPREAD  # a hue-family object's hue lies within +-hue_spread degrees of it
    background_chroma: float = DEMO_BACKGROUND_CHROMA  # 1: backgrounds of any colour, 0: grey ones
    contrast: float = DEMO_CONTRAST  # in (0, 1]: scales every colour's distance from mid-grey before the noise

    def check(self) -> None:
        """UserError naming the first knob out of range (as its command-line option)."""
        if not 32 <= self.size <= MAX_SIZE:
            raise UserError(
                f"--size must be in [32, {MAX_SIZE}]: at least 32 so the smallest shapes stay recognisable, at "
                f"most {MAX_SIZE} so an image fits in memory (got {self.size})"
            )
        if not 0.0 <= self.texture_strength <= 1.0:
            raise UserError(f"--texture-strength must be in [0, 1] (got {self.texture_strength})")
        if not 1 <= self.min_objects <= self.max_objects:
            raise UserError(f"need 1 <= --min-objects <= --max-objects (got {self.min_objects}, {self.max_objects})")
        if self.max_aspect < 1.0:
            raise UserError(f"--max-aspect must be at least 1 (got {self.max_aspect})")
        if not 0.0 <= self.colour_hint <= 1.0:
            raise UserError(f"--colour-hint must be in [0, 1] (got {self.colour_hint})")
        if not 0.0 <= self.hue_spread <= 45.0:
            raise UserError(
                f"--hue-spread must be in [0, 45] degrees so hue families do not overlap (got {self.hue_spread})"
            )
        if not 0.0 <= self.background_chroma <= 1.0:
            raise UserError(f"--background-chroma must be in [0, 1] (got {self.background_chroma})")
        if not 0.0 < self.contrast <= 1.0:
            raise UserError(f"--contrast must be in (0, 1] (got {self.contrast})")


_KERNEL3 = np.ones((3, 3), np.uint8)
_SHIFT = 4  # fixed-point bits for cv2.fillPoly, so small rotated shapes keep their geometry


def _shape_polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> list[np.ndarray]:
    """Polygon(s) of a square, triangle or cross of size ``r`` centred at (cx, cy), rotated by ``angle``.

    Proportions keep every shape's area within 2.4-3.1 r^2 (a circle's is 3.1 r^2), so area alone does
    not give the class away.
    """
    name = CLASS_NAMES[cls]
    if name == "square":
        s = 0.85 * r
        pts = np.array([[-s, -s], [s, -s], [s, s], [-s, s]])
    elif name == "triangle":
        big = 1.35 * r
        a = np.deg2rad([90.0, 210.0, 330.0])
        pts = np.stack([big * np.cos(a), big * np.sin(a)], axis=1)
    elif name == "cross":
        arm, t = 1.1 * r, max(2.5, 0.35 * r)
        pts = np.array(
            [
                [-t, -arm],
                [t, -arm],
                [t, -t],
                [arm, -t],
                [arm, t],
                [t, t],
                [t, arm],
                [-t, arm],
                [-t, t],
                [-arm, t],
                [-arm, -t],
                [-t, -t],
            ]
        )
    else:
        raise ValueError(f"no polygon for class {name!r}")
    c, s_ = np.cos(angle), np.sin(angle)
    rotated = pts @ np.array([[c, s_], [-s_, c]]) + np.array([cx, cy])
    return [np.round(rotated * (1 << _SHIFT)).astype(np.int32)]


def _shape_mask(cls: int, height: int, width: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Binary mask (0/1 uint8) of one object."""
    mask = np.zeros((height, width), np.uint8)
    if CLASS_NAMES[cls] == "circle":
        scale = 1 << _SHIFT
        cv2.circle(mask, (round(cx * scale), round(cy * scale)), round(r * scale), 1, -1, cv2.LINE_8, _SHIFT)
    else:
        cv2.fillPoly(mask, _shape_polygon(cls, cx, cy, r, angle), 1, cv2.LINE_8, _SHIFT)
    return mask


def _smooth_field(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """Low-frequency noise in roughly [-1, 1]: a coarse random grid upsampled bicubically."""
    gh, gw = rng.integers(3, 8, size=2)
    coarse = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return field.reshape(height, width, channels)


def _background(
    rng: np.random.Generator, height: int, width: int, texture_strength: float, background_chroma: float
) -> np.ndarray:
    """A textured float32 RGB background: gradient + low-frequency noise + faint stripes or checker.

    ``background_chroma`` scales every pixel's distance from its own grey level (0: a grey background).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    proj = np.cos(theta) * xx + np.sin(theta) * yy
    t = ((proj - proj.min()) / max(float(np.ptp(proj)), 1.0))[..., None]
    c0, c1 = rng.uniform(30, 225, size=(2, 3))
    img = c0 * (1 - t) + c1 * t
    img = img + 40.0 * texture_strength * _smooth_field(rng, height, width, 3)
    pattern = rng.choice(["none", "stripes", "checker"])
    if pattern != "none":
        period = rng.uniform(5, 16)
        phi = rng.uniform(0, np.pi)
        u = np.cos(phi) * xx + np.sin(phi) * yy
        if pattern == "stripes":
            on = np.floor(u / period) % 2
        else:
            v = -np.sin(phi) * xx + np.cos(phi) * yy
            on = (np.floor(u / period) + np.floor(v / period)) % 2
        colour = rng.uniform(0, 255, size=3)
        alpha = rng.uniform(0.2, 0.5) * texture_strength
        img = img * (1 - alpha * on[..., None]) + colour * alpha * on[..., None]
    grey = img.mean(axis=2, keepdims=True)
    return (grey + background_chroma * (img - grey)).astype(np.float32)


def _object_fill(rng: np.random.Generator, height: int, width: int, colour: np.ndarray) -> np.ndarray:
    """An object's texture: its colour with a gentle shading gradient and mild pixel noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gx, gy = rng.uniform(-0.3, 0.3, size=2)
    shade = (gx * (xx - width / 2) + gy * (yy - height / 2))[..., None]
    noise = rng.normal(0, 6, size=(height, width, 3))
    return (colour + shade + noise).astype(np.float32)


def render_sample(seed: int, split: str, index: int, knobs: Knobs = Knobs()) -> tuple[np.ndarray, ...]:
    """Draw one sample, with its own generator seeded by (seed, split, index).

    Returns:
        (image HxWx3 uint8 RGB, label HxW uint8 with 255 on boundaries, instance HxW uint8: 0 background,
        a distinct id per object, without the ignore band).
    """
    rng = np.random.default_rng([seed, SPLITS[split], index])
    height = size = knobs.size
    width = int(rng.integers(size, round(size * knobs.max_aspect) + 1))
    image = _background(rng, height, width, knobs.texture_strength, knobs.background_chroma)
    label = np.zeros((height, width), np.uint8)
    instance = np.zeros((height, width), np.uint8)
    r_min, r_max = size * 8 / 96, size * 22 / 96
    num_objects = int(rng.integers(knobs.min_objects, knobs.max_objects + 1))
    for obj in range(1, num_objects + 1):
        for _ in range(30):
            cls = int(rng.integers(1, len(CLASS_NAMES)))
            r = rng.uniform(r_min, r_max)
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            angle = rng.uniform(0, 2 * np.pi)
            mask = _shape_mask(cls, height, width, cx, cy, r, angle).astype(bool)
            if _placement_ok(mask, cls, label, instance, obj):
                break
        else:
            continue  # crowded image: skip this object rather than draw a confusing occlusion
        hue = CLASS_HUES[cls] if rng.random() < knobs.colour_hint else None
        colour = _pick_colour(rng, image[mask], knobs.min_contrast, hue, knobs.hue_spread)
        fill = _object_fill(rng, height, width, colour)
        image[mask] = fill[mask]
        label[mask] = cls
        instance[mask] = obj
    image = 127.5 + knobs.contrast * (image - 127.5) + rng.normal(0, 2.0, size=image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    # Morphological gradient of the instance map: a 2-px band on every visible object edge (one pixel
    # each side), also between touching objects, but not along the image border.
    border = cv2.dilate(instance, _KERNEL3) != cv2.erode(instance, _KERNEL3)
    label[border] = IGNORE_LABEL
    return image, label, instance


def _placement_ok(mask: np.ndarray, cls: int, label: np.ndarray, instance: np.ndarray, obj: int) -> bool:
    """Accept an object that overlaps others only partly and never touches another of its own class.

    Same-class objects stay apart so every ignored pixel separates two different classes (as in VOC's
    class boundaries); earlier objects keep most of their area so their shape stays recognisable.
    """
    area = int(mask.sum())
    if area == 0 or int((mask & (instance > 0)).sum()) > 0.3 * area:
        return False
    near = cv2.dilate(mask.astype(np.uint8), _KERNEL3, iterations=3).astype(bool)
    if (near & (label == cls)).any():
        return False
    for prev in range(1, obj):
        visible = instance == prev
        if int((visible & ~mask).sum()) < 0.6 * int(visible.sum()):
            return False
    return True


def _draw_colour(rng: np.random.Generator, hue: float | None, spread: float) -> np.ndarray:
    """Uniform RGB, or a saturated colour within +-``spread`` degrees of ``hue`` (degrees)."""
    if hue is None:
        return rng.uniform(0, 255, size=3)
    hsv = np.uint8([[[(hue + rng.uniform(-spread, spread)) % 360 / 2, rng.uniform(150, 255), rng.uniform(120, 255)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _pick_colour(
    rng: np.random.Generator,
    covered: np.ndarray,
    min_contrast: float,
    hue: float | None = None,
    hue_spread: float = 30.0,
) -> np.ndarray:
    """An object colour (see :func:`_draw_colour`), redrawn until it stands out from ``covered``."""
    under = covered.reshape(-1, 3).mean(axis=0)
    best, best_dist = None, -1.0
    for _ in range(20):
        colour = _draw_colour(rng, hue, hue_spread)
        dist = float(np.linalg.norm(colour - under))
        if dist >= min_contrast:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write an RGB image or a 2-D index map as PNG (cv2 expects BGR, so colour images are converted)."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array):
        raise UserError(f"could not write {path}: check that the folder is writable")


def _list_lines(split: str, count: int) -> list[str]:
    return [f"image/{split}/{i:05d}.png label/{split}/{i:05d}.png" for i in range(count)]


def _up_to_date(root: Path, params: dict) -> bool:
    """True when ``root`` holds a complete dataset generated with ``params``; UserError when it holds another."""
    params_path = root / PARAMS_FILE
    lists = [root / "list" / f"{split}.txt" for split in SPLITS]
    if not params_path.exists():
        if any(p.exists() for p in lists):
            raise UserError(
                f"{root} already has list files but no {PARAMS_FILE}; pass --overwrite to "
                f"regenerate the synthetic dataset there, or choose another --root"
            )
        if root.is_dir() and any(path.name not in OWN_FILES for path in root.iterdir()):
            raise UserError(
                f"{root} is not empty and holds no synthetic dataset ({PARAMS_FILE}); choose an empty or "
                f"new --root, or pass --overwrite to write the dataset among its files"
            )
        return False
    try:
        old = json.loads(params_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {params_path} ({err}); pass --overwrite or choose another --root") from err
    if old != params:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {v!r}" for k, v in params.items() if old.get(k) != v)
        raise UserError(
            f"{root} holds a synthetic dataset generated with other parameters ({diff}); "
            f"pass --overwrite to regenerate it, or choose another --root"
        )
    for split, path in zip(SPLITS, lists, strict=True):
        if not path.exists() or path.read_text().splitlines() != _list_lines(split, params[f"num_{split}"]):
            return False
        for line in path.read_text().splitlines():
            if not all((root / rel).exists() for rel in line.split()):
                return False
    return True


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete files named by our own previous list files that the new lists no longer name."""
    for split in SPLITS:
        path = root / "list" / f"{split}.txt"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            for rel in line.split():
                if rel not in keep and rel.startswith(("image/", "label/")):
                    (root / rel).unlink(missing_ok=True)


def _write_dataset(root: Path, seed: int, params: dict, counts: dict, knobs: Knobs) -> None:
    """Render and write every image and label, then the lists, then the parameters file (last: a complete set)."""
    lines = {split: _list_lines(split, counts[split]) for split in SPLITS}
    if (root / PARAMS_FILE).exists():
        _remove_stale(root, {rel for split in SPLITS for line in lines[split] for rel in line.split()})
        (root / PARAMS_FILE).unlink()  # written last again, so an interrupted run is never taken as complete
    for split in SPLITS:
        (root / "image" / split).mkdir(parents=True, exist_ok=True)
        (root / "label" / split).mkdir(parents=True, exist_ok=True)
        for index in range(counts[split]):
            image, label, _ = render_sample(seed, split, index, knobs)
            _write_png(root / "image" / split / f"{index:05d}.png", image)
            _write_png(root / "label" / split / f"{index:05d}.png", label)
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (root / "list" / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
    (root / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")


def generate(
    root: str | Path, seed: int = 0, num_train: int = 400, num_val: int = 50, overwrite: bool = False, **knobs
) -> dict:
    """Write the synthetic dataset under ``root``, or leave it alone when it is already up to date.

    Args:
        root: dataset folder (created if needed); only the files listed in the module docstring are written.
        seed: dataset seed; same parameters give byte-identical files.
        num_train: number of training images.
        num_val: number of validation images.
        overwrite: regenerate even when ``root`` holds a dataset made with other parameters.
        knobs: fields of :class:`Knobs` (how the images are drawn).

    Returns:
        Summary dict: root, list paths, counts, classes, whether files were written, and seconds taken.

    Raises:
        UserError: bad parameters, or ``root`` holds other data and ``overwrite`` is False.
    """
    if num_train < 1 or num_val < 1:
        raise UserError(f"--num-train and --num-val must be at least 1 (got {num_train}, {num_val})")
    drawing = Knobs(**knobs)
    drawing.check()
    check_creatable(str(root), "--root")
    root = Path(root)
    params = {"version": GENERATOR_VERSION, "seed": seed, "num_train": num_train, "num_val": num_val}
    params.update(asdict(drawing))
    counts = {"train": num_train, "val": num_val}
    summary = {
        "root": str(root),
        "train_list": str(root / "list" / "train.txt"),
        "val_list": str(root / "list" / "val.txt"),
        "num_train": num_train,
        "num_val": num_val,
        "classes": len(CLASS_NAMES),
    }
    start = time.perf_counter()
    if not overwrite and _up_to_date(root, params):
        logger.info("synthetic dataset in %s is up to date", root)
        return {**summary, "generated": False, "seconds": time.perf_counter() - start}

    _write_dataset(root, seed, params, counts, drawing)
    seconds = time.perf_counter() - start
    logger.info("wrote %d train and %d val images to %s in %.1f s", num_train, num_val, root, seconds)
    return {**summary, "generated": True, "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point; prints one summary line."""
    parser = ArgumentParser(description="Generate the built-in synthetic segmentation dataset.")
    parser.add_argument("--root", default="dataset/synthetic", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--num-val", type=int, default=50, help="validation images (default: %(default)s)")
    parser.add_argument("--size", type=int, default=96, help="image height in pixels (default: %(default)s)")
    parser.add_argument(
        "--texture-strength", type=float, default=0.5, help="background difficulty in [0, 1] (default: %(default)s)"
    )
    parser.add_argument("--min-objects", type=int, default=2, help="fewest objects per image (default: %(default)s)")
    parser.add_argument("--max-objects", type=int, default=4, help="most objects per image (default: %(default)s)")
    parser.add_argument(
        "--colour-hint",
        type=float,
        default=1.0,
        help="probability that an object takes its class hue, 0 = shape only (default: %(default)s)",
    )
    parser.add_argument(
        "--hue-spread",
        type=float,
        default=DEMO_HUE_SPREAD,
        help="largest hue offset of an object from its class hue, degrees (default: %(default)s)",
    )
    parser.add_argument(
        "--background-chroma",
        type=float,
        default=DEMO_BACKGROUND_CHROMA,
        help="background colourfulness in [0, 1], 0 = grey (default: %(default)s)",
    )
    parser.add_argument(
        "--contrast", type=float, default=DEMO_CONTRAST, help="image contrast in (0, 1] (default: %(default)s)"
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate over a dataset made with other parameters")
    args = parser.parse_args(argv)
    drawing = {f.name: getattr(args, f.name) for f in fields(Knobs) if hasattr(args, f.name)}
    summary = generate(args.root, args.seed, args.num_train, args.num_val, args.overwrite, **drawing)
    state = "generated" if summary["generated"] else "up to date"
    print(
        f"synthetic dataset {state}: {summary['num_train']} train + {summary['num_val']} val images, "
        f"{summary['classes']} classes, lists in {Path(summary['root']) / 'list'} ({summary['seconds']:.1f} s)"
    )
    return summary


if __name__ == "__main__":
    run_main(main)
