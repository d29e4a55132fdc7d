"""Small I/O helpers shared by every stage: atomic writes, JSON, safe checkpoint loading.

Every file the package writes goes through :func:`atomic_path`: it is written to a temporary
name in the destination folder and renamed into place only when complete, so a killed job
never leaves a partial file that a later job could read. Beyond that:

- the temporary file is removed when the job ends with an error or is stopped by SIGTERM
  (the signal a scheduler or Snakemake sends first); after a SIGKILL, which no process can
  catch, the next write of the same file sweeps it (its name holds the writer's process id);
- the output gets the caller's umask (``tempfile.mkstemp`` creates files 0600, which would
  hide results from collaborators on a shared cluster);
- a full disk, a read-only folder or a name too long for the file system is an
  :class:`OutputError` naming the destination file;
- writers are deterministic: ``.npz`` archives carry their arrays in sorted order with a fixed
  zip timestamp, JSON is written with sorted keys, so identical inputs give identical bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (file, key or value); the message names the bad thing."""


class OutputError(InputError):
    """An output that cannot be written (disk full, read-only, name too long); names the file."""


# errors of the destination, reported as OutputError naming the file
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
     errno.ENAMETOOLONG}
)  # fmt: skip
MAX_NAME_BYTES = 255
_TMP_TAG = ".tmp"
# temporary files being written, with the process that owns them (forked workers inherit the
# set, and must not remove their parent's files)
_LIVE: dict[Path, int] = {}
_LIVE_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_stem(path: Path, sfx: str) -> str:
    """The destination's stem, cut so that ``.<stem>.<pid>.<8 random>.tmp<sfx>`` stays within
    the 255-byte name limit."""
    room = MAX_NAME_BYTES - len(f"..{2**22}.xxxxxxxx{_TMP_TAG}{sfx}".encode())
    stem = path.stem
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(path: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that no longer run (SIGKILL,
    power loss); returns what was removed. Live writers' files are kept."""
    path = Path(path)
    sfx = path.suffix if suffix is None else suffix
    pattern = re.compile(
        rf"^\.{re.escape(_tmp_stem(path, sfx))}\.(\d+)\.[A-Za-z0-9_]+{re.escape(_TMP_TAG + sfx)}$"
    )
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()
                removed.append(path.parent / name)
    return removed


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """Remove this process's temporary files, then die of the signal as before."""
    me = os.getpid()
    for tmp, owner in list(_LIVE.items()):
        if owner == me:
            with contextlib.suppress(OSError):
                tmp.unlink()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(me, signum)


def _install_sigterm_cleanup() -> None:
    """Clean temporaries on SIGTERM, unless the program already handles SIGTERM itself."""
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def _output_error(path: Path, e: OSError) -> OutputError:
    what = os.strerror(e.errno) if e.errno else str(e)
    hint = {errno.ENOSPC: " - the disk is full", errno.EDQUOT: " - disk quota exceeded"}
    return OutputError(f"{path}: cannot write the output ({what}{hint.get(e.errno, '')})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the destination's suffix (``suffix`` overrides it) because some
    writers (numpy, pandas) choose the format or append an extension from the name. It gets
    the umask's permissions; it is removed on error or SIGTERM, and swept by the next write
    of ``path`` after a SIGKILL.
    """
    path = Path(path)
    sfx = path.suffix if suffix is None else suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temporaries(path, sfx)
        _install_sigterm_cleanup()
        fd, tmp = tempfile.mkstemp(
            prefix=f".{_tmp_stem(path, sfx)}.{os.getpid()}.",
            suffix=f"{_TMP_TAG}{sfx}",
            dir=path.parent,
        )
    except OSError as e:
        if e.errno in WRITE_ERRNOS:
            raise _output_error(path, e) from e
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    with _LIVE_LOCK:
        _LIVE[tmp_path] = os.getpid()
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        named = {None, str(tmp_path), str(path)}
        if e.errno in WRITE_ERRNOS and (e.filename is None or str(e.filename) in named):
            raise _output_error(path, e) from e
        raise
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()
        with _LIVE_LOCK:
            _LIVE.pop(tmp_path, None)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


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
    """Write an uncompressed ``.npz`` atomically (pickles are never used).

    The archive ``numpy.savez`` would write, with the arrays in sorted order and a fixed zip
    timestamp: ``numpy.savez`` stamps every member with the current time, so two identical
    caches written a second apart would differ in their bytes (and their sha256).
    """
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member, np.asanyarray(arrays[key]), allow_pickle=False
                    )


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    """Read every array of an ``.npz`` with ``allow_pickle=False``; the error names the file."""
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an .npz file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a readable .npz file ({error_line(e)})") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single .npy array, not an .npz archive of named arrays")
    try:
        with data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # truncated member, bad CRC, pickled objects: one line naming the file
        raise InputError(f"{path}: not a readable .npz file ({error_line(e)})") from e


def error_line(e: BaseException) -> str:
    """``Type: first line of the message``: a library's error, shortened to one line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


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
