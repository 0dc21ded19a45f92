"""Safe reading, and numpy-1-compatible writing, of the pickled object array inside HumanSD pose `.npz` files.

MMPose 0.x results were saved with `np.savez(path, results)`: `arr_0.npy` holds a pickled object array of dicts of
numpy arrays and scalars. Reading goes through an unpickler that only rebuilds those numpy objects, so a crafted
file cannot run code. Writing names numpy's globals `numpy.core.multiarray.*` (what numpy 1.x wrote; numpy 2 reads
both) instead of numpy 2's `numpy._core.multiarray.*`, which older numpy 1.x installs, such as the original
HumanSD environment, cannot import.

References:
    NumPy `.npy` format, https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

# The only globals a pickled MMPose result (object array of dicts of arrays / numpy scalars) needs.
ALLOWED_GLOBALS = frozenset(
    [(module, name) for module in _MULTIARRAY_MODULES for name in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)

_UNPICKLE_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, AttributeError, TypeError, ValueError)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `ALLOWED_GLOBALS`; anything else raises `pickle.UnpicklingError`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_header(f: IO[bytes], path: Path, member: str) -> tuple[tuple[int, ...], np.dtype]:
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = readers[version](f)
    except ValueError as err:
        raise ValueError(f"{path}: '{member}' is not a valid .npy array ({err}).") from None
    return shape, dtype


def load_npz_member(path: Path, member: str = "arr_0") -> np.ndarray:
    """Read one array of an .npz; object arrays are unpickled with `RestrictedUnpickler`.

    Args:
        path: the .npz file.
        member: array name inside the archive.

    Returns:
        The array (any dtype and shape).

    Raises:
        ValueError: not a zip, member missing, bad .npy header or a disallowed / corrupt pickle (message starts
            with the path).
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err}).") from None
    with archive:
        names = [n.removesuffix(".npy") for n in archive.namelist()]
        if member not in names:
            raise ValueError(f"{path}: no '{member}' array (found {names}); expected np.savez(path, person_results).")
        with archive.open(f"{member}.npy") as f:
            shape, dtype = _read_header(f, path, member)
            if not dtype.hasobject:
                return np.lib.format.read_array(io.BytesIO(archive.read(f"{member}.npy")), allow_pickle=False)
            try:
                array = RestrictedUnpickler(f).load()
            except _UNPICKLE_ERRORS as err:
                raise ValueError(f"{path}: '{member}' is not a plain array of pose dicts ({err}).") from None
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{path}: '{member}' did not unpickle to an array of shape {shape}.")
    return array


def _object_npy_bytes(array: np.ndarray) -> bytes:
    """.npy bytes of an object array whose pickle names numpy 1.x's `numpy.core.multiarray` globals."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    # Protocol 3 writes globals as text lines after the GLOBAL opcode "c", so the module is renamed in place.
    body = pickle.dumps(array, protocol=3)
    body = body.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy._core" not in body, "unexpected numpy 2 global left in the pickle"
    return header.getvalue() + body


_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: Path, records: np.ndarray, **arrays: np.ndarray) -> None:
    """Write an .npz like `np.savez(path, records, **arrays)`, loadable by numpy 1.x and 2.x.

    Args:
        path: destination (written as given, no ".npz" appended).
        records: 1-D object array stored as `arr_0`.
        **arrays: extra numeric arrays stored under their names.
    """
    members = {"arr_0.npy": _object_npy_bytes(records)}
    for name, value in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
        members[f"{name}.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            # Fixed member timestamps: equal content gives byte-identical files (reproducible datasets).
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
