"""The model zoo (zoo/zoo.yaml): each public checkpoint the framework reads, the config it runs with, where to get
it and its paper's own numbers. Read and checked here; :class:`ModelSource` finds an entry's file in a folder or
in a release's zip and checks its size and SHA-256 before anything loads it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evaluation.protocols import names as protocol_names
from util.errors import UserError

REQUIRED = ("name", "paper", "dataset", "config", "file", "url", "protocol")


@dataclass(frozen=True)
class Claim:
    """One number a paper reports: mIoU (a fraction) clean (``attack`` None) or under an attack at ``eps``."""

    source: str
    mIoU: float
    attack: str | None = None
    norm: str = "linf"
    eps: float = 0.0  # in [0, 1] pixels
    steps: int | None = None

    @property
    def label(self) -> str:
        if self.attack is None:
            return "clean"
        eps = f"{self.eps * 255:g}/255" if self.norm == "linf" else f"{self.eps:g}"
        return f"{self.attack}{f'-{self.steps}' if self.steps else ''} {self.norm} {eps}"


@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint of the zoo (fields: zoo/zoo.yaml's header)."""

    name: str
    paper: str
    dataset: str
    config: str
    file: str
    url: str
    protocol: str  # the paper's own evaluation (config/protocols/), or none
    overrides: dict = field(default_factory=dict)
    size: int | None = None
    sha256: str | None = None
    claims: tuple[Claim, ...] = ()  # the paper's own numbers
    claims_elsewhere: tuple[Claim, ...] = ()  # another paper's numbers for this checkpoint
    note: str = ""

    def opts(self) -> list[str]:
        """The entry's ``overrides`` as ``key value`` pairs."""
        return [
            s for k, v in self.overrides.items() for s in (k, yaml.safe_dump(v).strip().removesuffix("...").strip())
        ]


def _claims(raw, at: str) -> tuple[Claim, ...]:
    """A ``claims`` mapping (source, clean, attacked) as :class:`Claim` s; numbers in percent become fractions."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise UserError(f"{at}: claims must be a mapping with source, clean and attacked")
    source = str(raw.get("source", ""))
    out = [Claim(source, raw["clean"] / 100)] if isinstance(raw.get("clean"), (int, float)) else []
    for item in raw.get("attacked") or []:
        if not isinstance(item, Mapping) or "attack" not in item:
            raise UserError(f"{at}: each attacked claim needs attack, eps and mIoU, got {item!r}")
        if not isinstance(item.get("mIoU"), (int, float)):
            continue  # a number the source does not give (null): nothing to compare
        unit = item.get("unit", 255)
        out.append(
            Claim(
                source,
                item["mIoU"] / 100,
                item["attack"],
                item.get("norm", "linf"),
                item["eps"] / unit,
                item.get("steps"),
            )
        )
    return tuple(out)


def _entry(raw, index: int, path: str) -> ZooEntry:
    at = f"zoo '{path}', model {index + 1}"
    if not isinstance(raw, Mapping):
        raise UserError(f"{at}: expected a mapping with {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if not raw.get(k)]
    if missing:
        raise UserError(f"{at}: lacks {', '.join(missing)}; every model needs {', '.join(REQUIRED)}")
    at = f"zoo '{path}', model '{raw['name']}'"
    if not re.fullmatch(r"[a-z0-9_]+", str(raw["name"])):
        raise UserError(f"{at}: a name is lower-case letters, digits and _ (it names the result folder)")
    if raw["protocol"] != "none" and raw["protocol"] not in protocol_names():
        raise UserError(f"{at}: unknown protocol '{raw['protocol']}'; known: none, {', '.join(protocol_names())}")
    if not isinstance(raw.get("overrides") or {}, Mapping):
        raise UserError(f"{at}: overrides must be a mapping of config keys to values")
    elsewhere = raw.get("claims_elsewhere") or []
    return ZooEntry(
        name=str(raw["name"]),
        paper=str(raw["paper"]),
        dataset=str(raw["dataset"]),
        config=str(raw["config"]),
        file=str(raw["file"]),
        url=str(raw["url"]),
        protocol=str(raw["protocol"]),
        overrides=dict(raw.get("overrides") or {}),
        size=raw.get("size"),
        sha256=raw.get("sha256"),
        claims=_claims(raw.get("claims"), at),
        claims_elsewhere=tuple(c for item in elsewhere for c in _claims(item, at)),
        note=str(raw.get("note") or ""),
    )


def load_zoo(path: str) -> list[ZooEntry]:
    """The models of a zoo file.

    Raises:
        UserError: a missing or non-YAML file, a model without a required field, a bad or repeated name.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"zoo file '{path}' not found; give --zoo zoo/zoo.yaml or a file of the same layout")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError:
        raise UserError(f"zoo file '{path}' is not valid YAML; fix the syntax") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
        raise UserError(f"zoo file '{path}' has no 'models' list (see zoo/zoo.yaml)")
    entries = [_entry(raw, i, path) for i, raw in enumerate(data["models"])]
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise UserError(f"zoo '{path}': model '{entry.name}' is listed twice; names must be unique")
        seen.add(entry.name)
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelSource:
    """The checkpoints of ``--models-dir``: a folder (the release's layout, or the files side by side) or the
    release's zip itself, whose members are extracted into ``cache`` when first needed."""

    def __init__(self, path: str, cache: Path) -> None:
        self.path, self.cache = Path(path), cache
        self.zip: zipfile.ZipFile | None = None
        self.zip_problem = ""
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as err:
                self.zip_problem = (
                    f"--models-dir '{path}' is a file Python's zipfile cannot read ({err}); extract it "
                    f"(docs/benchmark.md) and give the folder"
                )
        elif not self.path.is_dir():
            raise UserError(f"--models-dir '{path}' is neither a folder nor a zip file; give where the checkpoints are")

    def find(self, entry: ZooEntry) -> tuple[Path | None, str]:
        """(the checkpoint's path, '') or (None, the reason it cannot be used, with where to get it)."""
        if self.zip_problem:
            return None, self.zip_problem
        found = self._from_zip(entry) if self.zip is not None else self._from_folder(entry)
        if found is None:
            return None, f"missing: no '{entry.file}' in '{self.path}'; where to get it: {entry.url}"
        size = found.stat().st_size
        if entry.size and size != entry.size:
            return None, (
                f"'{found}' is {size} bytes, the zoo says {entry.size} (truncated or another file); download it again "
                f"from {entry.url}"
            )
        if entry.sha256 and self._checksum(found) != entry.sha256.lower():
            return None, f"'{found}' does not have the zoo's SHA-256 (damaged or another file); download it again"
        return found, ""

    def _from_folder(self, entry: ZooEntry) -> Path | None:
        for candidate in (self.path / entry.file, self.path / Path(entry.file).name):
            if candidate.is_file():
                return candidate
        return None

    def _from_zip(self, entry: ZooEntry) -> Path | None:
        """The member ``entry.file`` (also below a top folder, or alone by its base name), extracted once."""
        members = [m for m in self.zip.infolist() if not m.is_dir()]
        base = Path(entry.file).name
        match = next((m for m in members if m.filename == entry.file or m.filename.endswith("/" + entry.file)), None)
        by_name = [m for m in members if Path(m.filename).name == base]
        match = match or (by_name[0] if len(by_name) == 1 else None)
        if match is None:
            return None
        target = self.cache / entry.name / base
        if not target.is_file() or target.stat().st_size != match.file_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            with self.zip.open(match) as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            partial.replace(target)
        return target

    def _checksum(self, path: Path) -> str:
        """The file's SHA-256, remembered beside the cache by (size, mtime) so a resumed run does not re-read it."""
        memo = self.cache / "sha256.json"
        known = json.loads(memo.read_text()) if memo.is_file() else {}
        key = f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        if key not in known:
            known[key] = _sha256(path)
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps(known, indent=1))
        return known[key]
