"""The shared-memory layout of discoLink: the single source of truth for every offset.

Every structure that lives in shared memory is declared here once, as data: its fields in
order, their types, who writes them and what they mean. Offsets, sizes, the ``struct``
formats used by the code and the tables in docs/protocol.md are all derived from these
declarations (``python -m bridge.transport.docgen`` rewrites the doc; a test fails if the
doc and this module disagree). All integers are little-endian and naturally aligned.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

# ---- protocol constants ----------------------------------------------------------------

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 1

REGISTRY_MAGIC = 0x47524C44  # bytes "DLRG"
SEGMENT_MAGIC = 0x4B4E4C44  # bytes "DLNK"

REGISTRY_SLOTS = 16
MESSAGE_SIZE = 256
MESSAGE_HEADER_SIZE = 32
MESSAGE_PAYLOAD_SIZE = MESSAGE_SIZE - MESSAGE_HEADER_SIZE
MESSAGE_RING_SLOTS = 1024
AUDIO_RING_FRAMES = 16384
MAX_CHANNELS = 12
ID_MAX_BYTES = 63
ID_INSTANCE_MAX = 65535
ID_NAME_MAX_BYTES = ID_MAX_BYTES - len(f":{ID_INSTANCE_MAX}")  # 57: any Name:N fits
LINK_TAG_MAX_BYTES = 63
NAMESPACE_MAX_CHARS = 32
RING_CONTROL_SIZE = 128
RING_READ_INDEX_OFFSET = 64  # read_index sits on its own cache line, away from write_index
SEGMENT_ALIGN = 64
FRAGMENT_LIMIT_BYTES = 64 << 20  # a reassembled transfer may be this large
OPEN_TRANSFERS_MAX = 16  # open transfers per receiver before the stalest is discarded
HANDSHAKE_TIMEOUT_S = 2.0

HEARTBEAT_INTERVAL_S = 0.050  # a device refreshes its heartbeat at least this often while running
HEARTBEAT_STALE_S = 3.0  # a registry scan reclaims a slot whose heartbeat is older than this
LINK_STALE_S = 1.0  # a connected host declares a live-but-silent device gone after this
LINK_CHECK_INTERVAL_S = 0.050  # how often a host re-checks device liveness

SAMPLE_RATE_MIN, SAMPLE_RATE_MAX = 8000, 384000  # Hz
# Any block size in range is valid, not only powers of two (DAWs use 96, 192, 1000, ...);
# the largest still leaves room for 4 blocks in an audio ring.
BLOCK_SIZE_MIN, BLOCK_SIZE_MAX = 16, AUDIO_RING_FRAMES // 4
FILL_MIN, FILL_MAX, FILL_DEFAULT = 1, 4, 2  # demand clock: blocks kept queued for the host

# Every constant above that a peer needs, with its meaning: the doc's table and the C header
# are generated from this list.
CONSTANTS: list[tuple[str, str]] = [
    ("PROTOCOL_MAJOR", "protocol major version; peers with another major refuse each other"),
    ("PROTOCOL_MINOR", "protocol minor version; informational"),
    ("REGISTRY_SLOTS", "slots in a registry"),
    ("MESSAGE_SIZE", "bytes per message"),
    ("MESSAGE_HEADER_SIZE", "bytes of message header"),
    ("MESSAGE_PAYLOAD_SIZE", "payload bytes per message"),
    ("MESSAGE_RING_SLOTS", "messages per command or response ring"),
    ("AUDIO_RING_FRAMES", "frames per channel in an audio ring"),
    ("MAX_CHANNELS", "most channels in an audio ring"),
    ("ID_MAX_BYTES", "most UTF-8 bytes in a device id (plus a NUL)"),
    ("ID_NAME_MAX_BYTES", "most UTF-8 bytes in the Name of an id, so that Name:65535 fits"),
    ("ID_INSTANCE_MAX", "largest instance N of an id Name:N"),
    ("LINK_TAG_MAX_BYTES", "most UTF-8 bytes in a link tag (plus a NUL)"),
    ("NAMESPACE_MAX_CHARS", "most characters in a namespace"),
    ("RING_CONTROL_SIZE", "bytes of ring control block before a ring's data"),
    ("SEGMENT_ALIGN", "alignment of every ring within a transport segment"),
    ("REGISTRY_SIZE", "bytes of the registry segment"),
    ("SAMPLE_RATE_MIN", "lowest valid sample rate, Hz"),
    ("SAMPLE_RATE_MAX", "highest valid sample rate, Hz"),
    ("BLOCK_SIZE_MIN", "smallest valid block size, frames (any integer in range is valid)"),
    ("BLOCK_SIZE_MAX", "largest valid block size, frames (a quarter of an audio ring)"),
    ("FILL_MIN", "demand clock: fewest blocks a device keeps queued"),
    ("FILL_MAX", "demand clock: most blocks a device keeps queued"),
    ("FILL_DEFAULT", "demand clock: blocks queued unless configured otherwise"),
    ("FRAGMENT_LIMIT_BYTES", "largest reassembled transfer on the wire (a receiver may set less)"),
    ("OPEN_TRANSFERS_MAX", "open transfers a receiver keeps per sender before discarding"),
    ("HANDSHAKE_TIMEOUT_S", "seconds: a host gives up on a Handshake unanswered this long"),
    ("HEARTBEAT_INTERVAL_S", "seconds: a running device refreshes its heartbeat at least "
                             "this often"),
    ("HEARTBEAT_STALE_S", "seconds: a registry scan reclaims a slot whose heartbeat is older"),
    ("LINK_STALE_S", "seconds: a connected host gives up on a live but silent device"),
    ("LINK_CHECK_INTERVAL_S", "seconds: how often a connected host re-checks liveness"),
]


class SlotState(enum.IntEnum):
    """Registry slot ``state``: the slot's life cycle."""

    FREE = 0  # unused; may be taken
    BUSY = 1  # being written under the registry lock; readers skip it
    ACTIVE = 2  # a registered device


class DeviceState(enum.IntEnum):
    """Transport header ``device_state``."""

    STARTING = 0
    RUNNING = 1
    STOPPED = 2  # the device deregistered cleanly; hosts disconnect at once


class Mode(enum.IntEnum):
    """Transport mode: which traffic a device carries."""

    AUDIO_MIDI = 0  # the default: audio rings and MIDI commands
    AUDIO = 1  # audio only: MIDI commands are refused with an Error
    MIDI = 2  # MIDI only: the segment has no audio rings

    @property
    def label(self) -> str:
        return {0: "audio+midi", 1: "audio", 2: "midi"}[int(self)]

    @classmethod
    def parse(cls, text: str) -> Mode:
        for mode in cls:
            if mode.label == text:
                return mode
        raise ValueError(f"unknown mode {text!r}; choose one of audio+midi, audio, midi")


class Capability(enum.IntFlag):
    """Capability flags, in the transport header and in Handshake/HandshakeAck."""

    AUDIO = 1 << 0  # the segment has an output audio ring
    MIDI = 1 << 1  # accepts MIDI commands
    RETURN_AUDIO = 1 << 2  # the segment has a host-to-device return ring (effect insert)
    FRAGMENTS = 1 << 3  # reassembles fragmented messages
    PARAMETERS = 1 << 4  # serves SetParameter/GetParameter/ParameterList
    STATE = 1 << 5  # serves GetState/SetState/LoadPreset
    ROUTING = 1 << 6  # serves Route
    UMP = 1 << 7  # accepts UMP packets
    FLEXIBLE_FORMAT = 1 << 8  # follows the host's sample rate and block size
    FILE_TRANSFER = 1 << 9  # accepts FileTransfer


# ---- declarative structures -------------------------------------------------------------

_SCALARS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i32": "i", "f32": "f", "f64": "d"}


@dataclass(frozen=True)
class Field:
    """One field of a shared-memory structure."""

    name: str
    type: str  # u8, u16, u32, u64, i32, f32, f64, or char[N] (UTF-8, NUL-padded)
    meaning: str
    writer: str = "-"  # who stores it: device, host, locker (under the registry lock), ...
    atomic: str = ""  # memory ordering used for it, if it is accessed atomically

    @property
    def size(self) -> int:
        if self.type.startswith("char["):
            return int(self.type[5:-1])
        return struct.calcsize("<" + _SCALARS[self.type])

    @property
    def align(self) -> int:
        return 1 if self.type.startswith("char[") else self.size

    @property
    def fmt(self) -> str:
        return f"{self.size}s" if self.type.startswith("char[") else _SCALARS[self.type]


@dataclass
class Struct:
    """A fixed-size structure: fields laid out in order, each naturally aligned.

    A declaration that would need hidden padding is an error at import time; gaps must be
    declared as ``reserved`` fields, so the table in the doc shows every byte.
    """

    name: str
    size: int
    fields: list[Field]
    offsets: dict[str, int] = field(init=False)
    _struct: struct.Struct = field(init=False, repr=False)
    _field_structs: dict[str, struct.Struct] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        offset = 0
        self.offsets = {}
        fmt = "<"
        for f in self.fields:
            if offset % f.align:
                raise AssertionError(f"{self.name}.{f.name} at {offset} is not {f.align}-aligned")
            if f.name in self.offsets:
                raise AssertionError(f"{self.name}.{f.name} declared twice")
            self.offsets[f.name] = offset
            offset += f.size
            fmt += f.fmt
        if offset != self.size:
            raise AssertionError(f"{self.name}: fields cover {offset} bytes, declared {self.size}")
        self._struct = struct.Struct(fmt)
        self._field_structs = {f.name: struct.Struct("<" + f.fmt) for f in self.fields}

    def offset(self, name: str) -> int:
        return self.offsets[name]

    @property
    def format(self) -> str:
        """The ``struct`` format of the whole structure (little-endian), for derived layouts."""
        return self._struct.format

    def unpack_from(self, buf, base: int = 0) -> dict:
        """Read the whole structure (non-atomically) into a dict of field values."""
        values = self._struct.unpack_from(buf, base)
        return {f.name: v for f, v in zip(self.fields, values, strict=True)}

    def pack_into(self, buf, base: int = 0, **values) -> None:
        """Write the whole structure; fields not given are zero."""
        unknown = set(values) - set(self.offsets)
        if unknown:
            raise KeyError(f"{self.name} has no field(s) {sorted(unknown)}")
        args = [values.get(f.name, b"" if f.type.startswith("char[") else 0) for f in self.fields]
        self._struct.pack_into(buf, base, *args)

    def write_field(self, buf, base: int, name: str, value) -> None:
        """Plain (non-atomic) store of one field."""
        self._field_structs[name].pack_into(buf, base + self.offsets[name], value)

    def read_field(self, buf, base: int, name: str):
        """Plain (non-atomic) load of one field."""
        return self._field_structs[name].unpack_from(buf, base + self.offsets[name])[0]


def _char(n: int) -> str:
    return f"char[{n}]"


REGISTRY_HEADER = Struct(
    "RegistryHeader",
    64,
    [
        Field("magic", "u32", "0x47524C44, the bytes \"DLRG\"", "creator"),
        Field("version_major", "u16", "protocol major version", "creator"),
        Field("version_minor", "u16", "protocol minor version", "creator"),
        Field("header_size", "u32", "size of this header in bytes (64)", "creator"),
        Field("slot_size", "u32", "size of one slot in bytes (256)", "creator"),
        Field("slot_count", "u32", "number of slots (16)", "creator"),
        Field("reserved", _char(44), "zero"),
    ],
)

REGISTRY_SLOT = Struct(
    "RegistrySlot",
    256,
    [
        Field("state", "u32", "SlotState: 0 free, 1 busy (being written), 2 active",
              "locker", "release store after the other fields; acquire load"),
        Field("device_pid", "u32", "pid of the device process", "locker"),
        Field("heartbeat_ns", "u64", "CLOCK_MONOTONIC of the device's last sign of life, in ns",
              "device", "release store; acquire load"),
        Field("channels", "u32", "output channels (1..12; 0 in midi mode)", "locker"),
        Field("sample_rate", "u32", "sample rate in Hz (advisory mirror of the header's)",
              "locker; then the device", "relaxed store by the device (§3.2); relaxed load"),
        Field("block_size", "u32", "block size in frames (advisory mirror of the header's)",
              "locker; then the device", "relaxed store by the device (§3.2); relaxed load"),
        Field("mode", "u32", "Mode: 0 audio+midi, 1 audio, 2 midi (advisory mirror)",
              "locker; then the device", "relaxed store by the device (§3.2); relaxed load"),
        Field("capabilities", "u32", "Capability flags", "locker"),
        Field("instance", "u32", "N of the id \"Name:N\"", "locker"),
        Field("host_pid", "u32", "claiming host's pid, 0 when unclaimed (mirror of the header's)",
              "locker"),
        Field("generation", "u32", "incremented on every registration in this slot", "locker"),
        Field("device_id", _char(64), "device id \"Name:N\", UTF-8, NUL-terminated", "locker"),
        Field("link_tag", _char(64), "last claiming host's link tag, UTF-8, NUL-terminated",
              "locker"),
        Field("xruns", "u64", "xruns of the device's audio clock (a JACK device's), 0 if none",
              "device", "relaxed"),
        Field("nonfinite_blocks", "u64", "output blocks the device replaced by silence because "
              "they held NaN or infinity (a plugin's), 0 if none (since 1.1)", "device",
              "relaxed"),
        Field("reserved", _char(64), "zero"),
    ],
)

TRANSPORT_HEADER = Struct(
    "TransportHeader",
    256,
    [
        Field("magic", "u32", "0x4B4E4C44, the bytes \"DLNK\"", "device"),
        Field("version_major", "u16", "protocol major version", "device"),
        Field("version_minor", "u16", "protocol minor version", "device"),
        Field("header_size", "u32", "size of this header in bytes (256)", "device"),
        Field("total_size", "u32", "size of the whole segment in bytes", "device"),
        Field("sample_rate", "u32", "current sample rate in Hz", "device",
              "release store before the HandshakeAck; acquire load"),
        Field("block_size", "u32", "current block size in frames", "device",
              "release store before the HandshakeAck; acquire load"),
        Field("channels", "u32", "channels of the output audio ring (0 in midi mode)", "device"),
        Field("mode", "u32", "current Mode", "device", "release store; acquire load"),
        Field("capabilities", "u32", "Capability flags the device offers", "device"),
        Field("audio_frames", "u32", "frames per channel in each audio ring (16384)", "device"),
        Field("message_slots", "u32", "256-byte slots in each message ring (1024)", "device"),
        Field("return_channels", "u32", "channels of the return ring, 0 when absent", "device"),
        Field("audio_ring_offset", "u32", "offset of the output audio ring, 0 when absent",
              "device"),
        Field("return_ring_offset", "u32", "offset of the return audio ring, 0 when absent",
              "device"),
        Field("command_ring_offset", "u32", "offset of the command ring (host to device)",
              "device"),
        Field("response_ring_offset", "u32", "offset of the response ring (device to host)",
              "device"),
        Field("device_pid", "u32", "pid of the device process", "device"),
        Field("host_pid", "u32", "claiming host's pid, 0 when unclaimed",
              "host", "compare-and-swap (acq_rel); acquire load"),
        Field("device_state", "u32", "DeviceState: 0 starting, 1 running, 2 stopped",
              "device", "release store; acquire load"),
        Field("claim_generation", "u32", "incremented by a host after each successful claim",
              "host", "release store after link_tag; acquire load"),
        Field("link_tag", _char(64), "claiming host's link tag, UTF-8, NUL-terminated", "host"),
        Field("underruns", "u64", "host reads that found less than a block", "host",
              "relaxed"),
        Field("overruns", "u64", "device blocks dropped because the ring was full", "device",
              "relaxed"),
        Field("commands_dropped", "u64", "commands lost because the command ring was full",
              "host", "relaxed"),
        Field("responses_dropped", "u64", "responses lost because the response ring was full",
              "device", "relaxed"),
        Field("bad_messages", "u64", "malformed or unknown commands received", "device",
              "relaxed"),
        Field("return_underruns", "u64", "device reads of the return ring that came up short",
              "device", "relaxed"),
        Field("return_overruns", "u64", "return blocks dropped because the ring was full",
              "host", "relaxed"),
        Field("blocks_written", "u64", "audio blocks the device has written", "device",
              "relaxed"),
        Field("blocks_read", "u64", "audio blocks the host has read", "host", "relaxed"),
        Field("fill_blocks", "u32", "blocks the device's demand clock keeps queued (1..4); "
              "0: unknown, or its own or an external clock (since 1.1)", "device", "relaxed"),
        Field("latency_frames", "u32", "processing latency the audio carries beyond the "
              "ring's queue (a plugin's), frames at the current rate (since 1.1)", "device",
              "relaxed"),
        Field("session_start", "u32", "the audio ring's write_index where the current "
              "claim's audio begins: stored when the device sees a new claim, before any "
              "block for it (since 1.1)", "device", "release store; acquire load"),
        Field("reserved", _char(28), "zero"),
    ],
)

RING_CONTROL = Struct(
    "RingControl",
    RING_CONTROL_SIZE,
    [
        Field("write_index", "u32", "free-running count of items ever written", "producer",
              "release store after the data; acquire load"),
        Field("reserved0", _char(60), "zero (keeps the two indices on separate cache lines)"),
        Field("read_index", "u32", "free-running count of items ever read", "consumer",
              "release store after reading; acquire load"),
        Field("reserved1", _char(60), "zero"),
    ],
)
assert RING_CONTROL.offset("read_index") == RING_READ_INDEX_OFFSET

MESSAGE_HEADER = Struct(
    "MessageHeader",
    MESSAGE_HEADER_SIZE,
    [
        Field("type", "u16", "command type code (see the command table)"),
        Field("flags", "u16", "MessageFlag bits"),
        Field("seq", "u32", "sender's sequence number, +1 per message, starting at 1"),
        Field("sample_offset", "u32", "frame within the block at which the event applies"),
        Field("payload_len", "u32", "bytes of payload used (0..224)"),
        Field("frag_index", "u32", "index of this fragment (0 when not fragmented)"),
        Field("frag_count", "u32", "fragments in the transfer (0 or 1: not fragmented)"),
        Field("transfer_id", "u32", "sender-unique id shared by a transfer's fragments"),
        Field("request_seq", "u32", "in a response: seq of the request answered, else 0"),
    ],
)


class MessageFlag(enum.IntFlag):
    """Message header ``flags``."""

    RESPONSE = 1 << 0  # sent device to host in answer to (or about) a command
    FRAGMENT = 1 << 1  # part of a fragmented transfer


# ---- derived layouts ----------------------------------------------------------------------


def _align(n: int, a: int = SEGMENT_ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class SegmentLayout:
    """Where each ring of one device's transport segment lives."""

    channels: int
    return_channels: int
    command_ring_offset: int
    response_ring_offset: int
    audio_ring_offset: int  # 0 when absent
    return_ring_offset: int  # 0 when absent
    total_size: int

    @staticmethod
    def compute(channels: int, return_channels: int = 0) -> SegmentLayout:
        """Lay out a segment: header, command ring, response ring, audio ring, return ring."""
        offset = TRANSPORT_HEADER.size
        message_ring = RING_CONTROL_SIZE + MESSAGE_RING_SLOTS * MESSAGE_SIZE
        command = offset
        offset = _align(offset + message_ring)
        response = offset
        offset = _align(offset + message_ring)
        audio = ret = 0
        if channels:
            audio = offset
            offset = _align(offset + RING_CONTROL_SIZE + channels * AUDIO_RING_FRAMES * 4)
        if return_channels:
            ret = offset
            offset = _align(offset + RING_CONTROL_SIZE + return_channels * AUDIO_RING_FRAMES * 4)
        return SegmentLayout(channels, return_channels, command, response, audio, ret, offset)


REGISTRY_SIZE = REGISTRY_HEADER.size + REGISTRY_SLOTS * REGISTRY_SLOT.size


def registry_slot_base(index: int) -> int:
    """Byte offset of registry slot ``index``."""
    return REGISTRY_HEADER.size + index * REGISTRY_SLOT.size


STRUCTS = [REGISTRY_HEADER, REGISTRY_SLOT, TRANSPORT_HEADER, RING_CONTROL, MESSAGE_HEADER]
