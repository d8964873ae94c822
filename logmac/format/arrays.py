"""A file's arrays checked against what its writer puts there, before any of them is used.

``.npz`` readers (emulator traces, cocotb vector files) call :func:`check_arrays` first, so a file with a
key of the wrong kind or rank (a string where a width belongs, a matrix flattened) is refused with a
FormatError naming the key instead of failing later inside numpy with a message about something else.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from logmac.format.errors import FormatError

# kind letters (numpy dtype.kind) each role accepts
KINDS = {"int": "iu", "uint": "u", "bool": "b", "float": "f", "str": "U", "intlike": "iub"}


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles); anything unreadable (missing, empty, not a zip, a damaged
    member) is a FormatError naming the file and ``what`` it should be."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy file loads as a bare array
        raise FormatError(f"{path}: not a readable {what} (an .npy array, not an .npz archive)")
    try:
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:  # a damaged member
        raise FormatError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc


def check_arrays(arrays: dict[str, np.ndarray], schema: dict[str, tuple[str, tuple[int, ...]]], source: str) -> None:
    """Raise FormatError unless each present key of ``schema`` has an allowed kind and rank.

    ``schema`` maps a key to (role in :data:`KINDS`, allowed ranks); keys absent from ``arrays`` are the
    caller's business (required keys are checked where their meaning is known).
    """
    for key, (role, ranks) in schema.items():
        if key not in arrays:
            continue
        arr = np.asarray(arrays[key])
        if arr.dtype.kind not in KINDS[role] or arr.ndim not in ranks:
            raise FormatError(f"{source}: {key} is {arr.dtype} with {arr.ndim} dimension(s), expected {role} "
                              f"with {' or '.join(map(str, ranks))}")
        if role == "str":
            continue
        if 0 in arr.shape and ranks != (1,):
            raise FormatError(f"{source}: {key} is empty {arr.shape}")
