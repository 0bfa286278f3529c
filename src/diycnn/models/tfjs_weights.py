"""Read TensorFlow.js weights: a `*-weights_manifest.json` and the binary shard files it names.

The mirror image of exports/tfjs_format.py (which writes this format). A manifest is a list of
groups, each `{"paths": [shard files], "weights": [{"name", "shape", "dtype", "quantization"?}]}`;
a group's shards are one byte stream holding its weights in order. Quantised weights store
`uint8`/`uint16` codes q with a per-tensor `scale` and `min` (value = q * scale + min) or
`float16` halves. A manifest may come from anyone, so shard names must be plain files beside it
and every size is checked against the bytes actually there before anything is allocated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

_BYTES = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "float16": 2}
MAX_TENSORS = 10_000


class TfjsWeightsError(ValueError):
    """A manifest or shard that cannot be read; the message names the file."""


def _entry_bytes(entry: dict, where: Path) -> tuple[int, str]:
    try:
        shape = [int(d) for d in entry["shape"]]
        dtype = entry["dtype"]
        stored = (entry.get("quantization") or {}).get("dtype", dtype)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TfjsWeightsError(f"'{where}': malformed weight entry {entry!r:.120} ({exc}).") from None
    if dtype not in ("float32", "int32") or stored not in _BYTES or any(d < 0 for d in shape):
        raise TfjsWeightsError(f"'{where}': weight {entry.get('name')!r} has unsupported dtype {dtype}/{stored} "
                               f"or shape {shape}.")
    return math.prod(shape) * _BYTES[stored], stored


def read_tfjs_weights(manifest: str | Path) -> dict[str, np.ndarray]:
    """Every weight of a TF.js manifest as a float32 (or int32) NumPy array, dequantised.

    Raises:
        FileNotFoundError: the manifest or one of its shards is missing.
        TfjsWeightsError: malformed manifest, a shard path leaving the folder, sizes that disagree.

    Example:
        >>> w = read_tfjs_weights("model/face_recognition_model-weights_manifest.json")
        >>> w["fc"].shape
        (256, 128)
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise FileNotFoundError(f"TF.js weights manifest '{manifest}' does not exist.")
    try:
        groups = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise TfjsWeightsError(f"'{manifest}' is not a TF.js weights manifest ({exc}).") from None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise TfjsWeightsError(f"'{manifest}' is not a TF.js weights manifest (expected a list of groups).")
    out: dict[str, np.ndarray] = {}
    for group in groups:
        paths, entries = group.get("paths"), group.get("weights")
        if not isinstance(paths, list) or not isinstance(entries, list) or len(entries) > MAX_TENSORS:
            raise TfjsWeightsError(f"'{manifest}': a group lacks 'paths' or 'weights'.")
        shards = []
        for name in paths:
            if not isinstance(name, str) or name != Path(name).name or name in ("", ".", ".."):
                raise TfjsWeightsError(f"'{manifest}' names shard {name!r}: shards must be plain files beside it.")
            path = manifest.parent / name
            if not path.is_file() or path.is_symlink():
                raise FileNotFoundError(f"Weights shard '{path}' (named in '{manifest}') is missing.")
            shards.append(path)
        sizes = [_entry_bytes(e, manifest) for e in entries]
        have = sum(p.stat().st_size for p in shards)
        if sum(n for n, _ in sizes) != have:
            raise TfjsWeightsError(f"'{manifest}' describes {sum(n for n, _ in sizes)} bytes of weights but its "
                                   f"shards hold {have}: the files do not belong together or are damaged.")
        blob = b"".join(p.read_bytes() for p in shards)
        offset = 0
        for entry, (n, stored) in zip(entries, sizes):
            raw = np.frombuffer(blob, dtype=np.dtype(stored).newbyteorder("<"), count=n // _BYTES[stored],
                                offset=offset)
            offset += n
            q = entry.get("quantization") or {}
            if stored in ("uint8", "uint16"):
                try:
                    scale, low = float(q["scale"]), float(q["min"])
                except (KeyError, TypeError, ValueError):
                    raise TfjsWeightsError(f"'{manifest}': {entry['name']!r} is quantised without scale/min.") from None
                # as TF.js does it: in double precision, then stored as float32
                value = (raw.astype(np.float64) * scale + low).astype(np.float32)
            else:
                value = raw.astype(np.float32 if entry["dtype"] == "float32" else np.int32)
            name = entry.get("name")
            if not isinstance(name, str) or name in out:
                raise TfjsWeightsError(f"'{manifest}': weight name {name!r} is missing or repeated.")
            out[name] = value.reshape([int(d) for d in entry["shape"]])
    return out
