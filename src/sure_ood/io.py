"""Small I/O helpers shared by every stage: atomic writes, JSON, safe checkpoint loading.

Every file the package writes goes through :func:`atomic_path`: it is written to a temporary
name in the destination folder and renamed into place only when complete, so a killed job
never leaves a partial file that a later job could read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (file, key or value); the message names the bad thing."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the destination's suffix (``suffix`` overrides it) because some
    writers (numpy, pandas) choose the format or append an extension from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write an uncompressed ``.npz`` atomically (pickles are never used)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Read every array of an ``.npz`` with ``allow_pickle=False``; the error names the file."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e


def save_state_dict(path: str | os.PathLike, state: dict[str, Any], metadata: dict | None = None):
    """Save a tensor state dict as safetensors, atomically; the same input gives the same bytes.

    safetensors writes its ``__metadata__`` map in a per-process random order (a Rust
    HashMap), so two saves of the same weights differ and a checkpoint's sha256 says nothing.
    The header is rewritten with the metadata keys sorted (tensor entries keep their order).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        header, n = _sorted_safetensors_header(tmp)
        with open(tmp, "r+b") as fh:
            if len(header) == n:  # the usual case: the same bytes in another order
                fh.seek(8)
                fh.write(header)
            else:  # other JSON escaping than safetensors': a longer or shorter header
                fh.seek(8 + n)
                data = fh.read()
                fh.seek(0)
                fh.write(len(header).to_bytes(8, "little") + header + data)
                fh.truncate()


def _sorted_safetensors_header(path: Path) -> tuple[bytes, int]:
    """(the header of a safetensors file with its ``__metadata__`` keys sorted, the length of
    the header now). The header is 8 bytes of little-endian length, then JSON padded with
    spaces to a multiple of 8; tensor offsets count from the end of the header."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return text + b" " * (-len(text) % 8), n


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load weights without ever unpickling code.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and
    plain containers. Errors name the path.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every loader error becomes one clear message
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")
    return obj


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (provenance, run fingerprints)."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
