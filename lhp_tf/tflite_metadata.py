"""The ``lhp_tf`` JSON metadata carried inside every exported .tflite.

Reading is pure Python (``struct`` over the flatbuffer layout of the TFLite schema) so a
board with only numpy and an interpreter can tell the input size, the heatmap stride, the
flip permutation and the quantisation of a model without TensorFlow. Writing is a flatbuffer pass
(:mod:`lhp_tf.converters.passes`) and is only needed on the export machine.

The relevant part of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs)::

    table Model { version:uint; operator_codes; subgraphs; description:string;
                  buffers:[Buffer]; metadata_buffer:[int]; metadata:[Metadata]; ... }
    table Metadata { name:string; buffer:uint; }        // index into Model.buffers
    table Buffer { data:[ubyte]; offset:ulong; size:ulong; }  // offset from file start
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from lhp_tf.errors import LhpError

#: name of our entry in Model.metadata
METADATA_NAME = "lhp_tf"

_FILE_IDENTIFIER = b"TFL3"
# Field slots (declaration order) of the schema tables we read.
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


class _FlatBufferError(ValueError):
    """The bytes do not follow the flatbuffer layout (out of range offsets, bad vtables)."""


class _Reader:
    """Bounds-checked little-endian reads of flatbuffer tables, vectors and strings."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.buf):
            raise _FlatBufferError(f"read of {size} bytes at offset {pos} is past the end ({len(self.buf)} bytes)")
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def root(self) -> int:
        return self._unpack("<I", 0)

    def field_pos(self, table: int, slot: int) -> int | None:
        """Absolute position of a table field, or None when the field is absent (default)."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vtable_size:
            return None
        rel = self._unpack("<H", vtable + entry)
        return table + rel if rel else None

    def scalar(self, table: int, slot: int, fmt: str, default: int = 0) -> int:
        pos = self.field_pos(table, slot)
        return default if pos is None else self._unpack(fmt, pos)

    def indirect(self, pos: int) -> int:
        """Follow a uoffset stored at ``pos`` (offsets are relative to where they are stored)."""
        return pos + self._unpack("<I", pos)

    def vector(self, table: int, slot: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field, or None when absent."""
        pos = self.field_pos(table, slot)
        if pos is None:
            return None
        vec = self.indirect(pos)
        length = self._unpack("<I", vec)
        return vec + 4, length

    def table_at(self, elements: int, index: int) -> int:
        return self.indirect(elements + 4 * index)

    def bytes_of(self, table: int, slot: int) -> bytes | None:
        vec = self.vector(table, slot)
        if vec is None:
            return None
        start, length = vec
        if start + length > len(self.buf):
            raise _FlatBufferError(f"vector of {length} bytes at offset {start} is past the end")
        return self.buf[start:start + length]


def read_model_bytes(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<tflite bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise LhpError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc


def check_tflite(buf: bytes, name: str) -> None:
    """Raise LhpError unless ``buf`` starts like a TFLite flatbuffer (root offset + 'TFL3')."""
    if len(buf) < 8 or buf[4:8] != _FILE_IDENTIFIER:
        raise LhpError(f"{name}: not a TFLite model (no 'TFL3' flatbuffer identifier; "
                       f"{len(buf)} bytes)")


def _all_metadata(buf: bytes, name: str) -> dict[str, bytes]:
    """Every Model.metadata entry as name -> buffer contents."""
    check_tflite(buf, name)
    r = _Reader(buf)
    try:
        model = r.root()
        entries = r.vector(model, _MODEL_METADATA)
        buffers = r.vector(model, _MODEL_BUFFERS)
        out: dict[str, bytes] = {}
        if entries is None:
            return out
        for i in range(entries[1]):
            meta = r.table_at(entries[0], i)
            raw_name = r.bytes_of(meta, _METADATA_NAME)
            key = raw_name.decode("utf-8", "replace") if raw_name is not None else ""
            index = r.scalar(meta, _METADATA_BUFFER, "<I")
            if buffers is None or index >= buffers[1]:
                raise _FlatBufferError(f"metadata {key!r} points to buffer {index}, "
                                       f"the model has {0 if buffers is None else buffers[1]}")
            buffer = r.table_at(buffers[0], index)
            data = r.bytes_of(buffer, _BUFFER_DATA)
            if not data:
                # Models over 2 GB keep buffers after the flatbuffer: offset/size from file start.
                offset = r.scalar(buffer, _BUFFER_OFFSET, "<Q")
                size = r.scalar(buffer, _BUFFER_SIZE, "<Q")
                if offset > 1 and offset + size <= len(buf):
                    data = buf[offset:offset + size]
                elif offset > 1:
                    raise _FlatBufferError(f"metadata {key!r} data at offset {offset}+{size} is past the end")
                else:
                    data = b""
            out[key] = bytes(data)
        return out
    except _FlatBufferError as exc:
        raise LhpError(f"{name}: corrupt TFLite flatbuffer ({exc})") from exc


def metadata_names(path_or_bytes: str | os.PathLike[str] | bytes) -> list[str]:
    """Names of all metadata entries (e.g. ``min_runtime_version``, ``lhp_tf``)."""
    buf, name = read_model_bytes(path_or_bytes)
    return list(_all_metadata(buf, name))


def read_metadata(path_or_bytes: str | os.PathLike[str] | bytes) -> dict[str, Any]:
    """The ``lhp_tf`` JSON of a .tflite (path or bytes), without TensorFlow.

    Raises LhpError naming the file when it is not a TFLite flatbuffer, has no ``lhp_tf``
    entry, or the entry is not a JSON object.
    """
    buf, name = read_model_bytes(path_or_bytes)
    entries = _all_metadata(buf, name)
    if METADATA_NAME not in entries:
        found = ", ".join(sorted(entries)) or "none"
        raise LhpError(f"{name}: no '{METADATA_NAME}' metadata in this .tflite (metadata found: {found}); "
                       "was it exported by 'lhp convert'?")
    try:
        meta = json.loads(entries[METADATA_NAME].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LhpError(f"{name}: '{METADATA_NAME}' metadata is not UTF-8 JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise LhpError(f"{name}: '{METADATA_NAME}' metadata is a JSON {type(meta).__name__}, expected an object")
    return meta


def embed_metadata(tflite_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """Return ``tflite_bytes`` with ``meta`` stored as the ``lhp_tf`` metadata entry.

    An existing ``lhp_tf`` entry is replaced; other entries (``min_runtime_version``,
    ``CONVERSION_METADATA``) are kept. The flatbuffer pass
    (:func:`lhp_tf.converters.passes.metadata`) runs on the export machine, not on a board.
    """
    from lhp_tf.converters.passes import metadata, run_passes

    return run_passes(tflite_bytes, [metadata(meta)])
