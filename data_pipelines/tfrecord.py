"""TFRecord files and tf.train.Example messages without TensorFlow (numpy and the stdlib only).

The shards (`shards.py`) are TFRecord files of tf.train.Example protos. Where TensorFlow is not
installed (the GPU machines' fixed image, docs/design.md §6) they are still written and read
here, byte for byte as TensorFlow writes and reads them (tests/test_data_tfrecord.py compares
the bytes):

  Example   the protobuf wire format of example.proto / feature.proto for the three value
            kinds, encoded as `SerializeToString(deterministic=True)` does (map entries sorted
            by key, packed floats and int64s) and decoded from any valid encoding.
  framing   uint64 length, uint32 masked crc32c of it, the data, uint32 masked crc32c of it.

crc32c (Castagnoli) in numpy: the data is cut into N chunks of L bytes; one loop of L steps
runs the table-driven CRC register of every chunk at once (a vector of N registers), and the
registers are combined in order with the linear map "advance the register over L zero bytes"
(4 lookup tables). About 100 MB/s on one core, against ~GB/s for TensorFlow's C++: the
TensorFlow writer is used where it is installed.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable

import numpy as np

from issf_common import paths

_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8


def _make_table() -> np.ndarray:
  t = np.arange(256, dtype=np.uint32)
  for _ in range(8):
    t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
  return t


_TABLE = _make_table()
_TABLE_LIST = _TABLE.tolist()


@functools.cache
def _zeros_tables(length: int) -> tuple[list[int], ...]:
  """4 tables: byte k of a register -> its contribution after `length` zero bytes (linear)."""
  regs = np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None]
  regs = regs.reshape(-1)
  for _ in range(length):
    regs = _TABLE[regs & 0xFF] ^ (regs >> 8)
  return tuple(regs.reshape(4, 256).tolist())


def _chunk_length(n: int) -> int:
  """A power of two near sqrt(n) (>= 64): the two loops cost about the same."""
  return max(64, 1 << max(0, int(np.ceil(np.log2(max(n, 1)) / 2))))


def crc32c(data: bytes) -> int:
  """CRC-32C of `data` (as TensorFlow's crc32c::Value)."""
  n = len(data)
  if n < 4:
    crc = 0xFFFFFFFF
    for b in data:
      crc = _TABLE_LIST[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
  size = _chunk_length(n)
  pad = (-n) % size
  # The initial register 0xFFFFFFFF is the same as complementing the first 4 bytes with a zero
  # register; leading zero bytes leave a zero register unchanged.
  buf = np.zeros(n + pad, np.uint8)
  buf[pad:] = np.frombuffer(data, np.uint8)
  buf[pad : pad + 4] ^= 0xFF
  chunks = np.ascontiguousarray(buf.reshape(-1, size).T)  # [L, N]: row i = byte i of each chunk
  regs = np.zeros(chunks.shape[1], np.uint32)
  for row in chunks:
    regs = _TABLE[(regs ^ row) & 0xFF] ^ (regs >> 8)
  t0, t1, t2, t3 = _zeros_tables(size)
  crc = 0
  for r in regs.tolist():
    crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ r
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One TFRecord: length, masked crc of the length, data, masked crc of the data."""
  header = struct.pack('<Q', len(data))
  return b''.join(
    [header, struct.pack('<I', masked_crc32c(header)), data, struct.pack('<I', masked_crc32c(data))]
  )


def write_records(path: str, records: Iterable[bytes]) -> None:
  """A TFRecord file of `records` (uncompressed), as tf.io.TFRecordWriter writes it."""
  with paths.path(path).open('wb') as f:  # local, or a URL (issf_common/paths.py)
    for data in records:
      f.write(frame(data))


# ------------------------------------------------------------------------------ tf.train.Example

_LEN, _VARINT, _I32, _I64 = 2, 0, 5, 1
# Feature's oneof: field number -> kind.
_KINDS = {1: 'bytes', 2: 'float', 3: 'int64'}
_FIELDS = {kind: number for number, kind in _KINDS.items()}


def _varint(value: int) -> bytes:
  value &= 0xFFFFFFFFFFFFFFFF  # int64: two's complement, 10 bytes when negative
  out = bytearray()
  while True:
    low = value & 0x7F
    value >>= 7
    if value:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def encode_example(features: dict[str, tuple[str, list | bytes | np.ndarray]]) -> bytes:
  """A serialized tf.train.Example; features: name -> (kind, values), kind 'bytes' (a list of
  bytes), 'float' (float32 values) or 'int64'. As SerializeToString(deterministic=True)."""
  entries = []
  for name in sorted(features):
    kind, values = features[name]
    if kind == 'bytes':
      inner = b''.join(_field(1, bytes(v)) for v in values)
    elif kind == 'float':
      packed = np.asarray(values, '<f4').tobytes()
      inner = _field(1, packed) if packed else b''
    elif kind == 'int64':
      packed = b''.join(_varint(int(v)) for v in values)
      inner = _field(1, packed) if packed else b''
    else:
      raise ValueError(f'feature {name!r}: unknown kind {kind!r}')
    feature = _field(_FIELDS[kind], inner)
    entries.append(_field(1, _field(1, name.encode('utf-8')) + _field(2, feature)))
  return _field(1, b''.join(entries))


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    b = buf[pos]
    pos += 1
    value |= (b & 0x7F) << shift
    if not b & 0x80:
      return value, pos
    shift += 7


def _fields(buf: memoryview):
  """(field number, wire type, value) of a message: value is a memoryview (LEN), an int
  (VARINT) or the raw bytes (I32, I64)."""
  pos, end = 0, len(buf)
  while pos < end:
    key, pos = _read_varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == _VARINT:
      value, pos = _read_varint(buf, pos)
    elif wire == _LEN:
      size, pos = _read_varint(buf, pos)
      value, pos = buf[pos : pos + size], pos + size
    elif wire in (_I32, _I64):
      size = 4 if wire == _I32 else 8
      value, pos = buf[pos : pos + size], pos + size
    else:
      raise ValueError(f'not a tf.train.Example: wire type {wire}')
    if pos > end:
      raise ValueError('not a tf.train.Example: truncated')
    yield number, wire, value


def _signed64(value: int) -> int:
  return value - (1 << 64) if value >= 1 << 63 else value


def _values(kind: str, buf: memoryview) -> list | np.ndarray:
  if kind == 'bytes':
    return [bytes(v) for n, _, v in _fields(buf) if n == 1]
  if kind == 'float':
    parts = [np.frombuffer(v, '<f4') for n, _, v in _fields(buf) if n == 1]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
  out = []
  for n, wire, v in _fields(buf):
    if n != 1:
      continue
    if wire == _VARINT:
      out.append(_signed64(v))
      continue
    pos = 0
    while pos < len(v):  # packed
      value, pos = _read_varint(v, pos)
      out.append(_signed64(value))
  return out


def decode_example(serialized: bytes) -> dict[str, tuple[str, list | np.ndarray]]:
  """name -> (kind, values) of a serialized tf.train.Example: 'bytes' a list of bytes (each a
  copy), 'float' a float32 array (read-only, over `serialized`), 'int64' a list of ints."""
  out = {}
  for n, _, features in _fields(memoryview(serialized)):
    if n != 1:
      continue
    for m, _, entry in _fields(features):
      if m != 1:
        continue
      name, feature = '', None
      for k, _, value in _fields(entry):
        if k == 1:
          name = bytes(value).decode('utf-8')
        elif k == 2:
          feature = value
      kind, values = 'bytes', []
      for k, _, value in _fields(feature if feature is not None else memoryview(b'')):
        if k in _KINDS:
          kind, values = _KINDS[k], _values(_KINDS[k], value)
      out[name] = (kind, values)
  return out
