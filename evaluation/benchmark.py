"""One benchmark over a model zoo: every checkpoint found, clean, under its paper's own evaluation and under ours
(SEA at L-inf 4/255 and 8/255 with the worst case; L2 where the paper used it), into a leaderboard that puts each
paper's claimed number beside the measured one.

    python -m evaluation.benchmark --zoo zoo/zoo.yaml --models-dir DIR [--only NAME[,NAME]] [--out exp/benchmark]
        [--images N] [--attacks FILE] [key value ...]
    torchrun --nproc_per_node=N -m evaluation.benchmark ...   # each model's images sharded over N processes

Results go to OUT/<model>/<protocol>/ (test.py's layout: stored predictions, results.json); a stopped run resumes
per model, per attack and per image. A model whose file is missing, truncated, of another format or for another
dataset gets one line in the report, and the benchmark goes on. OUT/leaderboard.{md,csv,json,png} are rewritten
after each model (docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from attack.registry import AttackSpec, parse_specs
from evaluation.protocols import EvalProtocol, load_protocol
from evaluation.rows import ResultRow, markdown_table
from evaluation.specs import distinct_labels, expand_ensembles
from evaluation.suite import run_suite
from evaluation.zoo import Claim, ModelSource, ZooEntry, load_zoo
from model import check_names
from util import dist
from util.config import load_config
from util.device import select_device
from util.errors import ArgumentParser, UserError, check_creatable, run_main
from util.log import setup_logging

logger = logging.getLogger(__name__)
OURS = "ours"
ROBUST_EPS = (4 / 255, 8 / 255)  # the leaderboard's columns: ours, L-inf


def protocols_for(entry: ZooEntry, attacks: str | None = None) -> list[EvalProtocol]:
    """The paper's own protocol (unless ``none``), then ours, with our L2 attacks where the paper reports L2;
    ``attacks`` replaces our attack list (a reduced budget, as make benchmark-demo runs)."""
    ours = load_protocol(OURS)
    if attacks:
        ours = dataclasses.replace(ours, attacks=(attacks,))
    if ours.l2_attacks and any(c.norm == "l2" for c in entry.claims if c.attack):
        ours = dataclasses.replace(ours, attacks=(*ours.attacks, ours.l2_attacks))
    return ([] if entry.protocol == "none" else [load_protocol(entry.protocol)]) + [ours]


def mode_cost(spec: AttackSpec | None) -> int:
    """A mode's cost in forward-backward passes per image, for the ETA: 1 clean, 1 + steps an attack."""
    if spec is None:
        return 1
    steps = spec.params.get("steps", spec.attack_class.defaults.get("steps", 1))
    return 1 + int(steps or 1) * int(spec.params.get("restarts", 1) or 1)


@dataclass
class Progress:
    """One model's progress over its protocols' modes, with an ETA from the rate of the modes computed so far
    (a mode whose predictions were all stored costs nothing and does not enter the rate)."""

    name: str
    position: str
    costs: list[int]
    done: int = 0
    measured_cost: int = 0
    measured_seconds: float = 0.0
    started: float = field(default_factory=time.time)

    def __call__(self, spec: AttackSpec | None, seconds: float) -> None:
        cost = self.costs[self.done]
        self.done += 1
        if seconds > 0.5:
            self.measured_cost, self.measured_seconds = self.measured_cost + cost, self.measured_seconds + seconds
        left = sum(self.costs[self.done :])
        eta = f"{self.measured_seconds / self.measured_cost * left:.0f} s" if self.measured_cost else "unknown"
        logger.info(
            f"benchmark {self.position} {self.name}: {self.done}/{len(self.costs)} modes "
            f"({spec.label if spec else 'clean'} done), {time.time() - self.started:.0f} s so far, ETA {eta}"
        )


def model_config(entry: ZooEntry, protocol: EvalProtocol, checkpoint: Path, out: Path, opts: list[str]):
    """The entry's config with its overrides, the protocol's keys and attacks, the checkpoint, the result folder
    and the command line's ``key value`` pairs, in that order."""
    folder = out / entry.name / protocol.name
    cfg = load_config(
        entry.config,
        [*entry.opts(), *protocol.opts(), "model_path", str(checkpoint), "save_folder", str(folder), *opts],
    )
    check_names(cfg, f"zoo model '{entry.name}' (config '{entry.config}')")
    return cfg


def run_model(entry: ZooEntry, checkpoint: Path, protocols: list[EvalProtocol], out: Path, opts, device, position):
    """Every protocol of one model, resumed from what is stored; raises UserError when the model cannot be run."""
    configs = [model_config(entry, p, checkpoint, out, opts) for p in protocols]
    runs = [[None, *distinct_labels(parse_specs(cfg.attacks))] for cfg in configs]
    costs = [mode_cost(spec) for specs in runs for spec in expand_ensembles(specs)[0]]
    progress = Progress(entry.name, position, costs)
    for cfg, specs in zip(configs, runs):
        check_creatable(cfg.save_folder, "save_folder")
        run_suite(cfg, specs, device, on_mode=progress)


def read_rows(folder: Path) -> list[ResultRow]:
    """The modes of one protocol's results.json (none when it was not run to its end)."""
    path = folder / "results.json"
    if not path.is_file():
        return []
    modes = json.loads(path.read_text()).get("modes") or []
    return [ResultRow.from_json(m) for m in modes]


def matching(rows: list[ResultRow], claim: Claim) -> ResultRow | None:
    """The measured row a claim is about: clean, or the claimed attack (SEA's per-image worst case for sea) at its
    eps, norm and (when the claim gives them) steps."""
    for row in rows:
        if claim.attack is None:
            if row.kind == "clean":
                return row
        elif (
            row.name == claim.attack
            and row.threat_model == claim.norm
            and math.isclose(row.eps, claim.eps, abs_tol=1e-6)
            and (claim.steps is None or row.steps in (None, claim.steps))
        ):
            return row
    return None


def worst_at(rows: list[ResultRow], eps: float, norm: str = "linf") -> ResultRow | None:
    """Our worst case at one eps: the lowest of the per-image worst cases there (the suite's ``worst_case`` over all
    attacks, SEA's over its members), else the lowest attacked row."""
    at = [r for r in rows if r.kind != "clean" and r.threat_model == norm and math.isclose(r.eps, eps, abs_tol=1e-6)]
    return min([r for r in at if r.kind == "ensemble"] or at, key=lambda r: r.mIoU, default=None)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def leaderboard_row(entry: ZooEntry, out: Path, status: str) -> dict:
    """One model's line: our clean and worst-case mIoU, and each claim beside what was measured (percent)."""
    protocols = {p.name: p for p in protocols_for(entry)}
    ours = read_rows(out / entry.name / OURS)
    clean = next((r for r in ours if r.kind == "clean"), None)
    row = {"model": entry.name, "paper": entry.paper, "dataset": entry.dataset, "status": status}
    row["clean"], row["images"] = _pct(clean.mIoU if clean else None), clean.images if clean else None
    for eps in ROBUST_EPS:
        worst = worst_at(ours, eps)
        row[f"worst_{eps * 255:g}"] = _pct(worst.mIoU if worst else None)
    comparisons = []
    for claims, protocol in ((entry.claims, protocols.get(entry.protocol)), (entry.claims_elsewhere, None)):
        rows = read_rows(out / entry.name / protocol.name) if protocol else ours
        metric = protocol.metric if protocol else "mIoU"
        for claim in claims:
            found = matching(rows, claim)
            measured = getattr(found, metric) if found is not None else None
            comparisons.append(
                {
                    "claim": claim.label,
                    "protocol": protocol.name if protocol else OURS,
                    "source": claim.source,
                    "claimed": _pct(claim.mIoU),
                    "measured": _pct(measured),
                    "difference": _pct(measured - claim.mIoU) if measured is not None else None,
                }
            )
    row["comparisons"] = comparisons
    return row


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_leaderboard(out: Path, rows: list[dict]) -> None:
    """leaderboard.json, .csv, .md and .png in ``out``, each written whole (a stop never leaves half a file)."""
    robust = [f"worst_{eps * 255:g}" for eps in ROBUST_EPS]
    measured = sorted((r for r in rows if r["clean"] is not None), key=lambda r: -(r[robust[0]] or -1))
    others = [r for r in rows if r["clean"] is None]
    header = ["model", "paper", "dataset", "clean", *(f"SEA worst {k[6:]}/255" for k in robust)]
    header += ["claimed -> measured (difference)", "status"]
    body = []
    for r in measured + others:
        claims = "; ".join(
            f"{c['claim']} ({c['protocol']}): {_cell(c['claimed'])} -> {_cell(c['measured'])}"
            + (f" ({c['difference']:+.1f})" if c["difference"] is not None else "")
            for c in r["comparisons"]
        )
        body.append(
            [r["model"], r["paper"], r["dataset"], _cell(r["clean"]), *(_cell(r[k]) for k in robust), claims or "-"]
            + [r["status"].replace("|", "/")]
        )
    text = "\n".join(["# Leaderboard", "", "mIoU in percent.", "", *markdown_table(header, body)]) + "\n"
    _write(out / "leaderboard.md", text)
    _write(out / "leaderboard.json", json.dumps(rows, indent=2) + "\n")
    comparison = ["claim", "protocol", "claimed", "measured"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["model", "paper", "dataset", "clean", *robust, "claim", "protocol", "claimed", "measured", "status"]
    )
    for r in rows:
        base = [r["model"], r["paper"], r["dataset"], r["clean"], *(r[k] for k in robust)]
        for c in r["comparisons"] or [{}]:
            writer.writerow(base + [c.get(k) for k in comparison] + [r["status"]])
    _write(out / "leaderboard.csv", buffer.getvalue())
    draw_leaderboard(measured, out / "leaderboard.png")


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_text(text)
    partial.replace(path)


def draw_leaderboard(rows: list[dict], path: Path) -> None:
    """Left: clean against robust mIoU (SEA's worst case at 4/255 and 8/255), one point per model; right: each
    model's mIoU against eps (0, 4/255, 8/255)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (scatter, curves) = plt.subplots(1, 2, figsize=(13, 5.6), dpi=100)
    for k, r in enumerate(rows):
        color = f"C{k % 10}"
        points = [(0.0, r["clean"])] + [(e * 255, r[f"worst_{e * 255:g}"]) for e in ROBUST_EPS]
        points = [(e, v) for e, v in points if v is not None]
        for (eps, value), marker in zip(points[1:], ("o", "s")):
            scatter.scatter(r["clean"], value, color=color, marker=marker, label=f"{r['model']} {eps:g}/255"[:48])
        curves.plot(*zip(*points), color=color, marker="o", label=r["model"][:40])
    lim = (0, 100)
    scatter.plot(lim, lim, color="0.8", linewidth=1)
    scatter.set(xlabel="clean mIoU (%)", ylabel="robust mIoU (%, SEA worst case)", xlim=lim, ylim=lim)
    curves.set(xlabel="eps (L-inf, /255)", ylabel="mIoU (%)", ylim=lim)
    for axes in (scatter, curves):
        axes.grid(True, color="0.9")
        if rows:
            axes.legend(fontsize="x-small", frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Benchmark every checkpoint of a model zoo (docs/benchmark.md)")
    parser.add_argument("--zoo", default="zoo/zoo.yaml", help="the zoo file (default zoo/zoo.yaml)")
    parser.add_argument("--models-dir", required=True, help="the folder (or a release's zip) holding the checkpoints")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="benchmark this zoo model only (repeat it, or NAME,NAME)"
    )
    parser.add_argument("--out", default="exp/benchmark", help="results and leaderboard (default exp/benchmark)")
    parser.add_argument("--images", type=int, default=0, help="the first N images of each val list (0: all)")
    parser.add_argument("--attacks", help="our attack list instead of config/attacks_benchmark.yaml (a reduced budget)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model, 'key value' pairs")
    return parser


def select(entries: list[ZooEntry], only: list[str] | None, zoo: str) -> list[ZooEntry]:
    """The entries ``--only`` names (all without it), refusing a name the zoo does not hold."""
    if not only:
        return entries
    only = [name for item in only for name in item.split(",") if name]
    known = {e.name for e in entries}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise UserError(f"--only: zoo '{zoo}' has no model '{unknown[0]}'; its models: {', '.join(sorted(known))}")
    return [e for e in entries if e.name in only]


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = get_parser().parse_args(argv)
    entries = select(load_zoo(args.zoo), args.only, args.zoo)
    if args.attacks and not Path(args.attacks).is_file():
        raise UserError(f"--attacks '{args.attacks}' not found; give a YAML attack list (config/attacks_*.yaml)")
    out = Path(args.out)
    check_creatable(str(out), "--out")
    opts = [*(["index_step", str(args.images)] if args.images else []), *args.opts]
    source = ModelSource(args.models_dir, out / "extracted")
    device = dist.setup(select_device(args.device, []))
    if not dist.is_main_process():
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs the progress and writes the leaderboard
    else:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, entry in enumerate(entries):
        position = f"{index + 1}/{len(entries)}"
        found = source.find(entry) if dist.is_main_process() else None
        checkpoint, problem = dist.broadcast_object(found)
        if checkpoint is not None:
            try:
                run_model(entry, checkpoint, protocols_for(entry, args.attacks), out, opts, device, position)
            except UserError as err:
                problem = str(err)
        status = problem or "measured"
        if dist.is_main_process():
            if problem:
                logger.warning(f"benchmark {position} {entry.name}: {problem}")
            rows.append(leaderboard_row(entry, out, status))
            write_leaderboard(out, rows)
    if dist.is_main_process():
        logger.info(f"leaderboard of {len(rows)} models: {out / 'leaderboard.md'}")
    dist.cleanup()


if __name__ == "__main__":
    run_main(main)
