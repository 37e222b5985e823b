"""The 256-byte discoLink message: a 32-byte header (``layout.MESSAGE_HEADER``) and payload."""

from __future__ import annotations

import struct
from collections.abc import Callable

from .layout import MESSAGE_HEADER, MESSAGE_HEADER_SIZE, MESSAGE_PAYLOAD_SIZE, MESSAGE_SIZE
from .layout import MessageFlag as Flag

_H = {name: MESSAGE_HEADER.offset(name) for name in MESSAGE_HEADER.offsets}
# Plain ints: `int & IntFlag` goes through enum machinery (~1 µs); this is the hot path.
RESPONSE = int(Flag.RESPONSE)
FRAGMENT = int(Flag.FRAGMENT)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<" + "".join(f.fmt for f in MESSAGE_HEADER.fields))


def _type_code(code: int) -> str:
    return f"0x{code:04x}"


class Message:
    """One fixed-size message, backed by a reusable 256-byte buffer.

    A reassembled fragmented transfer is also a Message: its header is the last fragment's
    and ``payload`` returns the whole blob.
    """

    __slots__ = ("_blob", "buf")

    # How repr() names a type code. The command table builds on this module, so commands.py
    # installs its name_of here when it loads (bridge.transport loads it with this module).
    name_of: Callable[[int], str] = staticmethod(_type_code)

    def __init__(self, data: bytes | bytearray | memoryview | None = None) -> None:
        self.buf = bytearray(MESSAGE_SIZE)
        self._blob: bytes | None = None
        if data is not None:
            if len(data) != MESSAGE_SIZE:
                raise ValueError(f"a message is {MESSAGE_SIZE} bytes, got {len(data)}")
            self.buf[:] = data

    # -- header fields ------------------------------------------------------------------
    type = property(lambda s: _U16.unpack_from(s.buf, _H["type"])[0],
                    lambda s, v: _U16.pack_into(s.buf, _H["type"], v))
    flags = property(lambda s: _U16.unpack_from(s.buf, _H["flags"])[0],
                     lambda s, v: _U16.pack_into(s.buf, _H["flags"], v))
    seq = property(lambda s: _U32.unpack_from(s.buf, _H["seq"])[0],
                   lambda s, v: _U32.pack_into(s.buf, _H["seq"], v))
    sample_offset = property(lambda s: _U32.unpack_from(s.buf, _H["sample_offset"])[0],
                             lambda s, v: _U32.pack_into(s.buf, _H["sample_offset"], v))
    payload_len = property(lambda s: _U32.unpack_from(s.buf, _H["payload_len"])[0],
                           lambda s, v: _U32.pack_into(s.buf, _H["payload_len"], v))
    frag_index = property(lambda s: _U32.unpack_from(s.buf, _H["frag_index"])[0],
                          lambda s, v: _U32.pack_into(s.buf, _H["frag_index"], v))
    frag_count = property(lambda s: _U32.unpack_from(s.buf, _H["frag_count"])[0],
                          lambda s, v: _U32.pack_into(s.buf, _H["frag_count"], v))
    transfer_id = property(lambda s: _U32.unpack_from(s.buf, _H["transfer_id"])[0],
                           lambda s, v: _U32.pack_into(s.buf, _H["transfer_id"], v))
    request_seq = property(lambda s: _U32.unpack_from(s.buf, _H["request_seq"])[0],
                           lambda s, v: _U32.pack_into(s.buf, _H["request_seq"], v))

    @property
    def is_response(self) -> bool:
        return bool(self.flags & RESPONSE)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & FRAGMENT)

    def header(self) -> dict:
        """All header fields as a dict (for monitors and debugging)."""
        values = _HEADER.unpack_from(self.buf, 0)
        return {f.name: v for f, v in zip(MESSAGE_HEADER.fields, values, strict=True)}

    # -- payload -----------------------------------------------------------------------
    @property
    def payload(self) -> memoryview | bytes:
        """The used payload bytes (the whole blob for a reassembled transfer)."""
        if self._blob is not None:
            return self._blob
        n = min(self.payload_len, MESSAGE_PAYLOAD_SIZE)  # never trust the length field
        return memoryview(self.buf)[MESSAGE_HEADER_SIZE : MESSAGE_HEADER_SIZE + n]

    def set_payload(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if n > MESSAGE_PAYLOAD_SIZE:
            raise ValueError(f"payload of {n} bytes exceeds {MESSAGE_PAYLOAD_SIZE}; fragment it")
        self.buf[MESSAGE_HEADER_SIZE : MESSAGE_HEADER_SIZE + n] = data
        self.buf[MESSAGE_HEADER_SIZE + n :] = bytes(MESSAGE_PAYLOAD_SIZE - n)
        self.payload_len = n
        self._blob = None

    def with_blob(self, blob: bytes) -> Message:
        """A copy of this header carrying a reassembled payload."""
        m = self.copy()
        m._blob = blob
        return m

    def copy(self) -> Message:
        m = Message(self.buf)
        m._blob = self._blob
        return m

    def clear(self) -> None:
        self.buf[:] = bytes(MESSAGE_SIZE)
        self._blob = None

    def __bytes__(self) -> bytes:
        return bytes(self.buf)

    def __repr__(self) -> str:
        h = self.header()
        extra = " response" if self.is_response else ""
        return (f"<Message {self.name_of(h['type'])}{extra} seq={h['seq']} "
                f"offset={h['sample_offset']} len={h['payload_len']}>")
