"""Dataset rows by reference: both sides of the channel have the job's dataset (the job reads it, the
sidecar is trusted with it), so a request for rows of it names them (a range, or an index array)
instead of carrying their bytes. In every runtime; under gVisor, where every byte sent crosses the
sandbox boundary through a host socket, this is what makes evaluation fast.

Job side: `load()` returns the features as a read-only `DatasetRows` array that remembers which
dataset rows it (and every slice or row index of it) holds; `reference(x)` says which, or None for
anything else (a copy, a computed array, a column selection). Read-only, so the rows a request names
are exactly the rows the job holds: to change them, copy them first (`x.copy()`), and the copy goes
by value.

Sidecar side: `Features` opens the same file (mapped, when the array is stored uncompressed), and
`Features.select(header, index)` resolves a request's reference, checked against the dataset's size.
Budgets, batching and pacing are charged exactly as for the same rows sent by value.
"""

from __future__ import annotations

import threading
import zipfile
from typing import Any

import numpy as np

from .contract import ErrorCode, ModelError

NAME = "x"  # the features array of a dataset file
INDEX = "rows"  # the tensor an index request carries


class DatasetRows(np.ndarray):
    """Rows of the job's dataset, knowing which: `_rows` is a range or an int64 array of row numbers
    of the dataset (None once an operation made it something else)."""

    _rows: range | np.ndarray | None

    def __array_finalize__(self, obj: object) -> None:
        self._rows = None  # anything derived (arithmetic, a copy, a cast) is no longer dataset rows

    def __getitem__(self, key: Any) -> Any:
        out = super().__getitem__(key)
        rows = self._rows
        if rows is None or not isinstance(out, DatasetRows):
            return out
        first = _rows_key(key, self.ndim)
        if first is None:
            return out  # columns were selected, or a single row taken: not a batch of dataset rows
        if isinstance(first, slice):
            out._rows = rows[first]
        else:
            picked = np.asarray(first)
            if picked.dtype == bool:
                picked = np.flatnonzero(picked)
            as_array = np.asarray(rows, dtype=np.int64) if isinstance(rows, range) else rows
            out._rows = as_array[picked.astype(np.int64, copy=False)]
        return out


def _rows_key(key: Any, ndim: int) -> Any:
    """The part of an index that picks rows, when it leaves every other axis whole; else None."""
    parts = key if isinstance(key, tuple) else (key,)
    if not parts or any(p is None or p is Ellipsis for p in parts):
        return None
    rest = parts[1:]
    if any(not (isinstance(p, slice) and p == slice(None)) for p in rest):
        return None
    first = parts[0]
    if isinstance(first, slice):
        return first
    if isinstance(first, list | np.ndarray):
        arr = np.asarray(first)
        if arr.ndim == 1 and (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
            return arr
    return None  # a single row (an int), or something numpy will say is wrong


def load(path: str) -> DatasetRows:
    """The job's features, read-only, as dataset rows 0..n."""
    with np.load(path, allow_pickle=False) as npz:
        x = np.ascontiguousarray(npz[NAME])
    out = x.view(DatasetRows)
    out._rows = range(len(x)) if x.ndim >= 1 else None
    out.flags.writeable = False
    return out


def reference(x: object) -> range | np.ndarray | None:
    """The dataset rows `x` holds, if it is a batch of them (at least one row); else None."""
    if not isinstance(x, DatasetRows) or x._rows is None or x.ndim < 2 or len(x) == 0:
        return None
    return x._rows


def header(rows: range | np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
    """The request fields naming `rows`, and the index tensor to send with them (None for a range)."""
    if isinstance(rows, range) and rows.step == 1:
        return {"rows": {"start": rows.start, "stop": rows.stop}}, None
    return {"rows": {"index": INDEX}}, np.ascontiguousarray(np.asarray(rows), dtype=np.int64)


class Features:
    """The sidecar's view of the job's dataset features, opened on first use: mapped read-only when
    the file stores them uncompressed (its pages are the page cache's, reclaimable), else read into
    memory once, charged to the job's memory allowance for good (`take`)."""

    def __init__(self, path: str | None, take: Any = None):
        self.path = path
        self._take = take
        self._x: np.ndarray | None = None
        self._lock = threading.Lock()

    def array(self) -> np.ndarray:
        with self._lock:
            if self._x is None:
                if not self.path:
                    raise ModelError(ErrorCode.BAD_FRAME, "this sidecar has no dataset to take rows from")
                try:
                    self._x = _mapped(self.path)
                except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                    self._x = None
                if self._x is None:
                    self._x = self._loaded(self.path)
            return self._x

    def _loaded(self, path: str) -> np.ndarray:
        try:
            with np.load(path, allow_pickle=False) as npz:
                x: np.ndarray = npz[NAME]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            raise ModelError(ErrorCode.BAD_FRAME, "the dataset cannot be read") from None
        if self._take is not None:
            self._take(x.nbytes)  # busy if it does not fit: the job then sends its rows by value
        return x

    def select(self, spec: object, index: np.ndarray | None) -> np.ndarray:
        """The rows a request names: a view for a range, a copy for an index."""
        x = self.array()
        n = len(x)
        if not isinstance(spec, dict):
            raise ModelError(ErrorCode.BAD_FRAME, "rows must name a range or an index")
        if "start" in spec:
            start, stop = spec.get("start"), spec.get("stop")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop)):
                raise ModelError(ErrorCode.BAD_FRAME, "a row range needs integer start and stop")
            assert isinstance(start, int) and isinstance(stop, int)
            if not 0 <= start <= stop <= n:
                raise ModelError(ErrorCode.BAD_FRAME, f"rows {start}..{stop} are outside the dataset's {n} rows")
            return x[start:stop]
        if index is None or index.ndim != 1 or index.dtype != np.int64:
            raise ModelError(ErrorCode.BAD_FRAME, f"a row index is one int64 tensor named {INDEX!r}")
        if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ModelError(ErrorCode.BAD_FRAME, f"a row index is outside the dataset's {n} rows")
        gathered: np.ndarray = x[index]
        return gathered


def _mapped(path: str) -> np.ndarray | None:
    """The features array mapped from the file, if it is stored uncompressed in C order."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{NAME}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                return None
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(f)
            if fortran or dtype.hasobject:
                return None
            offset = f.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
    # A plain array over the mapping: slicing a memmap costs several times a plain view's (the
    # profile of one request said so), and a request slices it every time.
    plain: np.ndarray = mapped.view(np.ndarray)
    return plain
