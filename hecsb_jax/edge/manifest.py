"""The manifest of an exported edge head: what the files are and how to
feed them, so a device needs nothing but the export folder.

    manifest = load_manifest("runs/export/hecsb_beta0.0003")
    manifest.input.size, manifest.normalization.mean, manifest.symbols.shape
    manifest.path("tflite")  # Path of head.tflite next to manifest.json

manifest.json (format 1, written by `python -m hecsb_jax.export`):

    {"format": 1, "model": "hecsb_beta0.0003", "method": "hecsb",
     "setting": {"beta": 0.0003}, "model_id": "<16 hex chars>",
     "backbone": "efficientnet_lite0", "split": "block4",
     "input": {"size": 224, "resize": 256, "interpolation": "bicubic",
               "layout": "NHWC", "dtype": "float32", "range": [0, 255]},
     "normalization": {"mean": [...], "std": [...]},
     "symbols": {"shape": [28, 28, 32], "dtype": "int32"},
     "files": {"tflite": "head.tflite", "stablehlo": "head.stablehlo",
               "tables": "tables.npz"},
     "versions": {...}, "training": {...}}

The head takes float32 [1, size, size, 3] RGB values in `range` (the
resized centre crop cast to float32) and applies `normalization` itself;
it returns int32 [1, *symbols.shape]. `model_id` is the hex of
`coding.model_id(tables)`, the id every container of this model carries.

JSON only (no numpy, no JAX): the edge device imports this.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import re
from typing import Any, Mapping

FORMAT = 1
FILENAME = "manifest.json"
# Entropy-coded split methods whose head ends in integer symbols.
METHODS = ("hecsb", "svb")
FILE_KINDS = ("tflite", "stablehlo", "tables")
_HEX_ID = re.compile(r"[0-9a-f]{16}")


class ManifestError(ValueError):
  """A missing or invalid manifest; the message names the path and field."""


def _field(d: Mapping[str, Any], key: str, kind, where: str):
  """d[key], checked to be of `kind`; ManifestError naming where.key."""
  if not isinstance(d, Mapping):
    raise ManifestError(f"{where}: expected an object, got"
                        f" {type(d).__name__}")
  if key not in d:
    raise ManifestError(f"{where}.{key}: missing")
  value = d[key]
  # bool is an int in Python; a flag is never a valid number here.
  if isinstance(value, bool) and bool not in (
      kind if isinstance(kind, tuple) else (kind,)):
    raise ManifestError(f"{where}.{key}: expected {_kind_name(kind)}, got"
                        f" {value!r}")
  if not isinstance(value, kind):
    raise ManifestError(f"{where}.{key}: expected {_kind_name(kind)}, got"
                        f" {value!r}")
  return value


def _kind_name(kind) -> str:
  kinds = kind if isinstance(kind, tuple) else (kind,)
  return " or ".join(k.__name__ for k in kinds)


def _numbers(d, key: str, where: str, length: int) -> tuple[float, ...]:
  values = _field(d, key, list, where)
  if len(values) != length or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool)
      for v in values):
    raise ManifestError(f"{where}.{key}: expected {length} numbers, got"
                        f" {values!r}")
  return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What the head takes: float32 [1, size, size, 3] NHWC, values in
  `range`, from a centre crop of an image whose shorter side was resized
  to `resize` with `interpolation` (`imagenet_pipeline.resize_center_crop`).
  """

  size: int = 224
  resize: int = 256
  interpolation: str = "bicubic"
  layout: str = "NHWC"
  dtype: str = "float32"
  range: tuple[float, float] = (0.0, 255.0)

  @classmethod
  def from_dict(cls, d, where: str = "input") -> "InputSpec":
    size = _field(d, "size", int, where)
    resize = _field(d, "resize", int, where)
    if not 0 < size <= resize:
      raise ManifestError(f"{where}: expected 0 < size <= resize, got size"
                          f" {size}, resize {resize}")
    interpolation = _field(d, "interpolation", str, where)
    if interpolation not in ("bicubic", "bilinear"):
      raise ManifestError(f"{where}.interpolation: expected 'bicubic' or"
                          f" 'bilinear', got {interpolation!r}")
    for key, want in (("layout", "NHWC"), ("dtype", "float32")):
      if _field(d, key, str, where) != want:
        raise ManifestError(f"{where}.{key}: expected {want!r}, got"
                            f" {d[key]!r}")
    low, high = _numbers(d, "range", where, 2)
    if not low < high:
      raise ManifestError(f"{where}.range: expected [low, high] with low <"
                          f" high, got {d['range']!r}")
    return cls(size, resize, interpolation, "NHWC", "float32", (low, high))

  def to_dict(self) -> dict:
    return {"size": self.size, "resize": self.resize,
            "interpolation": self.interpolation, "layout": self.layout,
            "dtype": self.dtype, "range": list(self.range)}


@dataclasses.dataclass(frozen=True)
class Normalization:
  """Per-channel (x - mean) / std on 0..255 RGB, applied inside the head
  (recorded so other runtimes can check or reproduce it)."""

  mean: tuple[float, float, float]
  std: tuple[float, float, float]

  @classmethod
  def from_dict(cls, d, where: str = "normalization") -> "Normalization":
    mean = _numbers(d, "mean", where, 3)
    std = _numbers(d, "std", where, 3)
    if not all(s > 0 for s in std):
      raise ManifestError(f"{where}.std: expected positive values, got"
                          f" {list(std)}")
    return cls(mean, std)

  def to_dict(self) -> dict:
    return {"mean": list(self.mean), "std": list(self.std)}


@dataclasses.dataclass(frozen=True)
class SymbolSpec:
  """What the head returns for one image: int32 [1, *shape]."""

  shape: tuple[int, ...]
  dtype: str = "int32"

  @classmethod
  def from_dict(cls, d, where: str = "symbols") -> "SymbolSpec":
    shape = _field(d, "shape", list, where)
    if not shape or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0
        for n in shape):
      raise ManifestError(f"{where}.shape: expected positive integers, got"
                          f" {shape!r}")
    if _field(d, "dtype", str, where) != "int32":
      raise ManifestError(f"{where}.dtype: expected 'int32', got"
                          f" {d['dtype']!r}")
    return cls(tuple(shape), "int32")

  def to_dict(self) -> dict:
    return {"shape": list(self.shape), "dtype": self.dtype}


@dataclasses.dataclass(frozen=True)
class Files:
  """File names, relative to the manifest's folder (no directories, so a
  manifest cannot point outside its export)."""

  tflite: str = "head.tflite"
  stablehlo: str = "head.stablehlo"
  tables: str = "tables.npz"

  @classmethod
  def from_dict(cls, d, where: str = "files") -> "Files":
    names = {}
    for kind in FILE_KINDS:
      name = _field(d, kind, str, where)
      if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ManifestError(f"{where}.{kind}: expected a plain file name in"
                            f" the export folder, got {name!r}")
      names[kind] = name
    return cls(**names)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """An export's manifest.json (module docstring).

  Attributes:
    model: the trained model's folder name, e.g. "hecsb_beta0.0003".
    method: "hecsb" or "svb".
    setting: the method's setting, e.g. {"beta": 0.0003}.
    model_id: 16 lowercase hex chars, `coding.model_id(tables).hex()`.
    backbone: e.g. "efficientnet_lite0".
    split: e.g. "block4".
    input: `InputSpec`.
    normalization: `Normalization` (inside the head).
    symbols: `SymbolSpec`.
    files: `Files`.
    versions: library versions that wrote the export (informational).
    training: the training record's summary (informational).
    format: manifest format, `FORMAT`.
  """

  model: str
  method: str
  setting: dict
  model_id: str
  backbone: str
  split: str
  input: InputSpec
  normalization: Normalization
  symbols: SymbolSpec
  files: Files = Files()
  versions: dict = dataclasses.field(default_factory=dict)
  training: dict = dataclasses.field(default_factory=dict)
  format: int = FORMAT
  # Set by load_manifest: the folder the files are relative to.
  directory: Path | None = dataclasses.field(default=None, compare=False)

  @property
  def model_id_bytes(self) -> bytes:
    """The 8 bytes containers of this model carry (`coding.read_header`)."""
    return bytes.fromhex(self.model_id)

  def path(self, kind: str) -> Path:
    """Path of file `kind` ("tflite", "stablehlo", "tables")."""
    if kind not in FILE_KINDS:
      raise ValueError(f"unknown file kind {kind!r}: expected one of"
                       f" {FILE_KINDS}")
    if self.directory is None:
      raise ValueError("this manifest was not loaded from a folder: use"
                       " load_manifest(dir)")
    return self.directory / getattr(self.files, kind)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Manifest":
    """Validates a parsed manifest.json.

    Raises:
      ManifestError: a missing or invalid field, named (e.g.
        "input.size: missing").
    """
    where = "manifest"
    fmt = _field(d, "format", int, where)
    if fmt != FORMAT:
      raise ManifestError(f"format: this code reads format {FORMAT}, got"
                          f" {fmt!r}")
    method = _field(d, "method", str, where)
    if method not in METHODS:
      raise ManifestError(f"method: expected one of {METHODS}, got"
                          f" {method!r}")
    setting = _field(d, "setting", dict, where)
    for key, value in setting.items():
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"setting.{key}: expected a number, got"
                            f" {value!r}")
    model_id = _field(d, "model_id", str, where)
    if not _HEX_ID.fullmatch(model_id):
      raise ManifestError("model_id: expected 16 lowercase hex characters,"
                          f" got {model_id!r}")
    strings = {k: _field(d, k, str, where)
               for k in ("model", "backbone", "split")}
    for key, value in strings.items():
      if not value:
        raise ManifestError(f"{key}: expected a non-empty string")
    return cls(
        method=method, setting=dict(setting), model_id=model_id,
        input=InputSpec.from_dict(_field(d, "input", dict, where)),
        normalization=Normalization.from_dict(
            _field(d, "normalization", dict, where)),
        symbols=SymbolSpec.from_dict(_field(d, "symbols", dict, where)),
        files=Files.from_dict(_field(d, "files", dict, where)),
        versions=dict(d.get("versions") or {}),
        training=dict(d.get("training") or {}), format=fmt, **strings)

  def to_dict(self) -> dict:
    """The JSON object of manifest.json (`from_dict` reads it back)."""
    return {
        "format": self.format, "model": self.model, "method": self.method,
        "setting": dict(self.setting), "model_id": self.model_id,
        "backbone": self.backbone, "split": self.split,
        "input": self.input.to_dict(),
        "normalization": self.normalization.to_dict(),
        "symbols": self.symbols.to_dict(), "files": self.files.to_dict(),
        "versions": dict(self.versions), "training": dict(self.training),
    }

  def save(self, directory: str | os.PathLike) -> Path:
    """Writes ``directory/manifest.json``; returns its path."""
    path = Path(directory) / FILENAME
    path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
    return path


def load_manifest(directory: str | os.PathLike) -> Manifest:
  """Reads and validates ``directory/manifest.json``.

  Args:
    directory: an export folder.

  Returns:
    the `Manifest`, with ``directory`` set (see `Manifest.path`).

  Raises:
    FileNotFoundError: no manifest.json there (the message names it).
    ManifestError: not JSON, or a missing or invalid field; the message
      names the file and the field.
  """
  directory = Path(directory)
  path = directory / FILENAME
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no manifest; expected an export folder"
                            " written by `python -m hecsb_jax.export`")
  try:
    d = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ManifestError(f"{path}: not valid JSON ({e})") from None
  try:
    manifest = Manifest.from_dict(d)
  except ManifestError as e:
    raise ManifestError(f"{path}: {e}") from None
  return dataclasses.replace(manifest, directory=directory)
