"""The router file: one JSON document, versioned, with arrays stored as base64 little-endian bytes.

Layout (``format_version`` 3; version 1, still read, had no ``representation``: its routers
embed the first 254 word pieces of a prompt and nothing else; version 2, still read, had no
``static_weighting``: its static bag is a plain mean)::

    {
      "format": "modelyard-learned-router", "format_version": 1,
      "strong": "<model>", "weak": "<model>",
      "embedding": {"model": "...all-MiniLM-L6-v2...", "dimensions": 768,
                    "representation": {"window": {"head": 48, "tail": 14}, "static": "...",
                                       "static_weighting": "idf"}},
      "features": {"length": [names], "length_mean": A, "length_scale": A,
                   "static_idf": A},                                  # with "idf" only
      "components": {"linear": {"weights": A, "bias": A},
                     "clusters": {"centroids": A, "gains": A},
                     "knn": {"bank": A, "gains": A, "k": 50}},        # each optional
      "blend": {"components": ["linear", ...], "weights": A, "bias": 0.0, "length_prior": 0.0},
      "calibration": {"strong_share": A, "threshold": A},             # 101 points, share 0..1
      "training": {...metadata: data, counts, config, cross-fitted metrics...}
    }

where ``A`` is ``{"dtype": "float32", "shape": [...], "base64": "..."}``. The writer sorts keys and
records no wall-clock time, so the same data and configuration give a byte-identical file.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["FORMAT", "FORMAT_VERSION", "RouterFileError", "decode_array", "encode_array", "read_router_file"]

FORMAT = "modelyard-learned-router"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_DTYPES = {"float16", "float32", "float64", "int32", "int64"}


class RouterFileError(ValueError):
    """A router file is missing, damaged, of another format or of an unsupported version."""


def encode_array(array: npt.ArrayLike, dtype: str = "float32") -> dict[str, Any]:
    data = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode()}


def decode_array(value: Any, where: str) -> npt.NDArray[Any]:
    if not isinstance(value, dict) or value.get("dtype") not in _DTYPES or "base64" not in value:
        raise RouterFileError(f"{where} is not an encoded array")
    dtype = np.dtype(value["dtype"]).newbyteorder("<")
    try:
        raw = base64.b64decode(value["base64"], validate=True)
        array = np.frombuffer(raw, dtype=dtype).reshape([int(n) for n in value["shape"]])
    except (ValueError, TypeError) as exc:
        raise RouterFileError(f"{where} is damaged ({exc})") from None
    return array.astype(dtype.newbyteorder("="))


def _decode_tree(node: Any, where: str) -> Any:
    if isinstance(node, dict):
        if "base64" in node and "dtype" in node:
            return decode_array(node, where)
        return {k: (v if k == "training" else _decode_tree(v, f"{where}.{k}")) for k, v in node.items()}
    return node


def write_router_file(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` (arrays already encoded) atomically, keys sorted."""
    data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data + b"\n")
    partial.replace(path)


def read_router_file(path: Path) -> dict[str, Any]:
    """The decoded document; :class:`RouterFileError` says what is wrong and how to fix it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RouterFileError(
            f"router file {path} does not exist; train one with `modelyard router train`"
        ) from None
    except OSError as exc:
        raise RouterFileError(f"router file {path} cannot be read: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RouterFileError(f"router file {path} is not valid JSON ({exc}); retrain it") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RouterFileError(
            f'{path} is not a modelyard router file (no "format": "{FORMAT}"); '
            "train one with `modelyard router train`"
        )
    version = document.get("format_version")
    if version not in READABLE_VERSIONS:
        raise RouterFileError(
            f"router file {path} has format_version {version!r}; this modelyard reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}: retrain it with this version's "
            "`modelyard router train`"
        )
    try:
        decoded: dict[str, Any] = _decode_tree(document, "router")
        for key in ("strong", "weak", "embedding", "features", "components", "blend", "calibration"):
            if key not in decoded:
                raise RouterFileError(f"router file {path} lacks {key!r}; retrain it")
        _check(decoded, path)
    except RouterFileError as exc:
        if str(path) in str(exc):
            raise
        raise RouterFileError(f"router file {path}: {exc}; retrain it") from None
    return decoded


def _check(document: dict[str, Any], path: Path) -> None:
    dims = document["embedding"].get("dimensions")
    parts = document["components"]
    blend = document["blend"]
    names = list(blend.get("components", []))
    weights = blend.get("weights")
    if not names or not isinstance(weights, np.ndarray) or weights.shape != (len(names),):
        raise RouterFileError(f"router file {path}: 'blend' needs one weight per component")
    for name in names:
        if name not in parts:
            raise RouterFileError(f"router file {path}: the blend uses component {name!r}, which is absent")
    linear = parts.get("linear")
    n_length = len(document["features"].get("length", []))
    if linear is not None and linear["weights"].shape[1:] != (int(dims) + n_length,):
        raise RouterFileError(f"router file {path}: linear weights do not match {dims} + {n_length} features")
    for name, key in (("clusters", "centroids"), ("knn", "bank")):
        part = parts.get(name)
        if part is not None and (part[key].ndim != 2 or part[key].shape[1] != dims):
            raise RouterFileError(f"router file {path}: {name}.{key} is not a (n, {dims}) array")
    calibration = document["calibration"]
    if calibration["strong_share"].shape != calibration["threshold"].shape:
        raise RouterFileError(f"router file {path}: calibration arrays differ in length")
