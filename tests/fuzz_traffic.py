"""Structure-aware fuzzing of real device processes, shared by tests/test_fuzz.py (a bounded
run in the suite) and tests/fuzz_long.py (a long run, 100k messages and more).

:class:`Traffic` builds well-formed messages with the project's own builders
(bridge/transport/commands.py, bridge/midi/ump.py) — MIDI, MidiRaw with every status byte,
running status and truncation, fragmented SysEx, UMP of every message type, good and broken
fragment sequences, handshakes with rates and blocks in and out of range, transport modes,
parameters, state — and then, one time in five, mutates one header field or payload byte.

:class:`FuzzSession` sends that traffic to a device process through a real Host, reads its
audio meanwhile (so the device renders what it was sent), and after every batch checks that
the device is alive, answers Ping, has answered nothing with Error INTERNAL (a handler
raised), and is still rendering. A failure raises :class:`FuzzFailure` with the last
messages sent, the seed, and the device's stderr, so that the cause can be replayed.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.midi import ump
from bridge.transport import Host, Message, cmd
from bridge.transport.commands import ErrorCode
from bridge.transport.host import CommandError, HostError
from bridge.transport.layout import (
    AUDIO_RING_FRAMES,
    BLOCK_SIZE_MAX,
    BLOCK_SIZE_MIN,
    MESSAGE_PAYLOAD_SIZE,
    MESSAGE_RING_SLOTS,
    SAMPLE_RATE_MAX,
    SAMPLE_RATE_MIN,
)

REPO = Path(__file__).resolve().parent.parent
POP_MAX = 64  # a device pops at most this many commands at once (Device's BATCH_MESSAGES)
KEEP_LAST = MESSAGE_RING_SLOTS + 256  # what may still be queued, and what came before it
OUR_SEQ_BIT = 0x80000000  # fuzz messages carry it: never the seq of one of our own requests
# A swallowed exception in a device's monitor output: "ERROR render: ValueError: ..."
SWALLOWED = re.compile(r"ERROR [^:]+: (?:[A-Za-z_]+: )?[A-Z]\w*(?:Error|Exception)\b")

RATES = [SAMPLE_RATE_MIN - 1, SAMPLE_RATE_MIN, 11025, 22050, 44100, 44123, 48000, 88200,
         96000, 192000, SAMPLE_RATE_MAX, SAMPLE_RATE_MAX + 1, 0, 1, 0xFFFFFFFF]
BLOCKS = [0, 1, BLOCK_SIZE_MIN - 1, BLOCK_SIZE_MIN, 17, 64, 100, 128, 256, 257, 1000, 1024,
          BLOCK_SIZE_MAX, BLOCK_SIZE_MAX + 1, 0xFFFFFFFF]
# Every status byte, with the data bytes it takes (None: SysEx framing, or undefined).
DATA_BYTES = {**{s: 2 for s in range(0x80, 0xC0)}, **{s: 1 for s in range(0xC0, 0xE0)},
              **{s: 2 for s in range(0xE0, 0xF0)}, 0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0,
              **{s: 0 for s in (0xF4, 0xF5, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF)}}


class FuzzFailure(AssertionError):
    """The device died, hung, or a handler failed; the message names the cause and lists
    the messages sent just before."""


def describe(index: int, msg: Message) -> str:
    """One line per message: enough to rebuild it."""
    payload = bytes(msg.buf[32:32 + min(msg.payload_len, MESSAGE_PAYLOAD_SIZE)])
    return (f"#{index} {cmd.name_of(msg.type)} flags={msg.flags:#x} "
            f"offset={msg.sample_offset} len={msg.payload_len} "
            f"frag={msg.frag_index}/{msg.frag_count} tid={msg.transfer_id} "
            f"payload={payload[:48].hex(' ')}{' ...' if len(payload) > 48 else ''}")


class Traffic:
    """Batches of messages, well-formed first and mutated sometimes. Deterministic per seed.

    ``parameters`` are the device's parameter names (from ParameterList), so that most
    SetParameter/GetParameter requests hit real parameters.
    """

    def __init__(self, seed: int, parameters: list[str] | None = None) -> None:
        self.rng = random.Random(seed)
        self.parameters = parameters or []
        self._tid = 1
        kinds = [(self.small_midi, 14), (self.midi_raw, 16), (self.sysex, 6), (self.ump, 14),
                 (self.fragments, 6), (self.handshake, 6), (self.transport_mode, 2),
                 (self.parameter, 8), (self.misc, 4), (self.raw_bytes, 2)]
        self._kinds = [k for k, _ in kinds]
        self._weights = [w for _, w in kinds]

    # -- one kind of traffic each; every one returns a list of messages --------------------
    def small_midi(self) -> list[Message]:
        r = self.rng
        ch, a, b = r.randrange(16), r.randrange(128), r.randrange(128)
        off = self.offset()
        pick = r.randrange(7)
        if pick == 0:
            return [cmd.midi_note_on(ch, a, b, off)]
        if pick == 1:
            return [cmd.midi_note_off(ch, a, b, off)]
        if pick == 2:
            controller = r.choice([0, 1, 6, 7, 38, 64, 74, 100, 101, 120, 121, 123, a])
            return [cmd.midi_cc(ch, controller, b, off)]
        if pick == 3:
            return [cmd.midi_pitch_bend(ch, r.choice([0, 8192, 16383, r.randrange(16384)]), off)]
        if pick == 4:
            return [cmd.midi_program_change(ch, a, off)]
        if pick == 5:
            return [cmd.midi_aftertouch(ch, b, r.choice([None, a]), off)]
        m = cmd.midi_note_on(ch, a, b, off)  # fields MIDI can't carry
        m.buf[32 + r.randrange(3)] = r.randrange(128, 256)
        return [m]

    def midi_raw(self) -> list[Message]:
        """MIDI 1.0 bytes as on a cable: whole messages, running status, real-time bytes
        inside messages, undefined statuses (F4 F5 F9 FD), truncated and stray data."""
        r = self.rng
        out = bytearray()
        running = None
        while len(out) < r.choice([1, 3, 8, 30, MESSAGE_PAYLOAD_SIZE]):
            status = r.choice([*DATA_BYTES, *DATA_BYTES, 0xF0, 0xF7])
            n = DATA_BYTES.get(status, 0)
            if status == 0xF0:  # a SysEx inside MidiRaw, maybe cut short
                out += bytes([0xF0, *(r.randrange(128) for _ in range(r.randrange(12)))])
                if r.random() < 0.7:
                    out.append(0xF7)
                continue
            if running is not None and status < 0xF0 and r.random() < 0.3:
                status = running  # running status: data bytes only
            else:
                out.append(status)
            running = status if status < 0xF0 else running if status >= 0xF8 else None
            data = [r.randrange(128) for _ in range(n)]
            if data and r.random() < 0.1:
                data = data[:r.randrange(len(data))]  # truncated
            if data and r.random() < 0.05:
                data.insert(r.randrange(len(data)), r.choice([0xF8, 0xFE, 0xF9, 0xFD]))
            out += bytes(data)
        if r.random() < 0.05:
            out = bytearray(r.randrange(256) for _ in range(r.randrange(1, 40)))
        return [cmd.midi_raw(bytes(out[:MESSAGE_PAYLOAD_SIZE]), self.offset())]

    def sysex(self) -> list[Message]:
        r = self.rng
        size = r.choice([0, 1, 5, 100, MESSAGE_PAYLOAD_SIZE - 2, MESSAGE_PAYLOAD_SIZE - 1,
                         MESSAGE_PAYLOAD_SIZE, 500, 2000, r.randrange(6000)])
        body = bytes(r.randrange(128) for _ in range(size))
        data = b"\xf0" + body + b"\xf7"
        pick = r.randrange(5)
        if pick == 1:  # no F7
            data = data[:-1] + bytes([r.randrange(128)])
        elif pick == 2 and size:  # a status byte inside
            k = r.randrange(1, len(data) - 1)
            data = data[:k] + bytes([r.randrange(0x80, 0x100)]) + data[k + 1:]
        if pick and data[0] == 0xF0 and data[-1] == 0xF7:
            return cmd.sysex(data, self.offset())
        return cmd.fragments("SysEx", data)

    def ump(self) -> list[Message]:
        """UMP of every message type: built with bridge.midi.ump, or random words with a
        chosen message type (and the packet size of that type, or not)."""
        r = self.rng
        words: list[int] = []
        for _ in range(r.choice([1, 1, 2, 4, 12, 56])):
            g, ch, note = r.randrange(16), r.randrange(16), r.randrange(128)
            u32 = r.choice([0, 0x80000000, 0xFFFFFFFF, r.getrandbits(32)])
            built = r.randrange(12)
            if built == 0:
                p = ump.midi2_note_on(ch, note, r.randrange(65536), group=g)
            elif built == 1:
                p = ump.midi2_note_off(ch, note, r.randrange(65536), group=g)
            elif built == 2:
                p = ump.midi2_per_note_pitch_bend(ch, note, u32, group=g)
            elif built == 3:
                p = ump.midi2_registered_per_note_controller(ch, note, r.randrange(256), u32,
                                                             group=g)
            elif built == 4:
                p = ump.midi2_pitch_bend(ch, u32, group=g)
            elif built == 5:
                p = ump.midi2_control_change(ch, r.randrange(128), u32, group=g)
            elif built == 6:
                p = ump.midi1_note_on(ch, note, r.randrange(128), group=g)
            elif built == 7:
                p = ump.midi2_per_note_management(ch, note, detach=r.random() < 0.5)
            elif built == 8:
                words.extend(w for pk in ump.sysex7_packets(
                    bytes(r.randrange(128) for _ in range(r.randrange(30))), group=g)
                    for w in pk)
                continue
            elif built == 9:
                words.extend(w for pk in ump.sysex8_packets(
                    bytes(r.randrange(256) for _ in range(r.randrange(40)))) for w in pk)
                continue
            else:  # any message type, random content
                mt = r.randrange(16)
                n = ump.PACKET_WORDS[mt] if r.random() < 0.8 else r.randrange(1, 5)
                p = ((mt << 28) | r.getrandbits(28), *(r.getrandbits(32) for _ in range(n - 1)))
            words.extend(p)
        raw = struct.pack(f"<{len(words)}I", *words)
        if r.random() < 0.1:
            raw = raw[:r.randrange(len(raw) + 1)]  # not whole words, or not whole packets
        if not raw:
            raw = b"\0\0\0\0"
        msgs = cmd.fragments("UMP", raw, transfer_id=self.tid())
        for m in msgs:
            m.sample_offset = self.offset()
        return msgs

    def fragments(self) -> list[Message]:
        """A fragmented transfer, whole, or broken: a fragment lost, repeated, swapped, its
        count or type changed, or transfer id 0; sometimes two transfers interleaved."""
        r = self.rng
        name = r.choice(["SysEx", "UMP", "SetState", "FileTransfer", "NoteOn"])
        size = r.choice([MESSAGE_PAYLOAD_SIZE + 1, 2 * MESSAGE_PAYLOAD_SIZE, 1000, 5000])
        data = bytearray(r.randrange(128) for _ in range(size))
        if name == "SysEx":
            data[0], data[-1] = 0xF0, 0xF7
        elif name == "UMP":
            data = data[:len(data) // 4 * 4]
        elif name == "FileTransfer":
            data[:128] = b"fuzz.bin".ljust(128, b"\0")
        msgs = [*self._split(name, bytes(data))]
        if r.random() < 0.3:
            other = self._split("SysEx", b"\xf0" + bytes(300) + b"\xf7")
            merged = []
            while msgs or other:
                src = msgs if (msgs and (not other or r.random() < 0.5)) else other
                merged.append(src.pop(0))
            msgs = merged
        damage = r.randrange(8)
        k = r.randrange(len(msgs))
        if damage == 1:
            del msgs[k]
        elif damage == 2:
            msgs.insert(k, msgs[k].copy())
        elif damage == 3 and len(msgs) > 1:
            msgs[0], msgs[-1] = msgs[-1], msgs[0]
        elif damage == 4:
            msgs[k].frag_count = r.choice([0, 1, msgs[k].frag_count + 1, 0xFFFFFFFF])
        elif damage == 5:
            msgs[k].transfer_id = 0
        elif damage == 6:
            msgs[k].type = r.choice([int(cmd.T.Ping), int(cmd.T.UMP), int(cmd.T.SysEx), 0x7777])
        elif damage == 7:
            msgs[k].payload_len = r.choice([0, 1, MESSAGE_PAYLOAD_SIZE + 1])
        return msgs

    def _split(self, name: str, data: bytes) -> list[Message]:
        """``cmd.fragments`` for any type (NoteOn is not fragmentable: build it by hand)."""
        if cmd.BY_NAME[name].fragmentable:
            return cmd.fragments(name, data, transfer_id=self.tid())
        msgs = cmd.fragments("SysEx", data, transfer_id=self.tid())
        for m in msgs:
            m.type = cmd.BY_NAME[name].code
        return msgs

    def handshake(self) -> list[Message]:
        r = self.rng
        return [cmd.handshake(
            r.choice(RATES) if r.random() < 0.8 else r.randrange(SAMPLE_RATE_MAX * 2),
            r.choice(BLOCKS) if r.random() < 0.8 else r.randrange(BLOCK_SIZE_MAX * 2),
            r.choice([0, 1, 2, 12, 0xFFFFFFFF]), mode=r.choice([0, 1, 2, 3, 0xFFFFFFFF]),
            capabilities=r.getrandbits(r.choice([0, 4, 32])),
            return_channels=r.choice([0, 1, 2, 0xFFFFFFFF]),
            version=r.choice([(1, 0), (1, 1), (1, 99), (2, 0), (0, 0), (0xFFFF, 0xFFFF)]))]

    def transport_mode(self) -> list[Message]:
        return [cmd.set_transport_mode(self.rng.choice([0, 1, 2, 3, 0xFFFFFFFF]))]

    def parameter(self) -> list[Message]:
        r = self.rng
        value = r.choice([0.0, 0.5, 1.0, -1.0, 1e9, -1e9, float("nan"), float("inf"),
                          float("-inf"), r.uniform(-2, 2)])
        name = (r.choice(self.parameters) if self.parameters and r.random() < 0.7
                else r.choice(["", "nope", "x" * 63, "gain", "Gain", "room_size", "ü"]))
        index = r.choice([-2, 0, 1, 2, len(self.parameters), 9999, -(2 ** 31)])
        pick = r.randrange(5)
        if pick == 0:
            return [cmd.set_parameter(name, value)]
        if pick == 1:
            return [cmd.build("SetParameter", index=index, value=value)]
        if pick == 2:
            return [cmd.get_parameter(r.choice([name, index]))]
        if pick == 3:
            return cmd.fragments("ParameterList", b"")
        return [cmd.build("GetState")] if r.random() < 0.7 else self._split(
            "SetState", bytes(r.randrange(256) for _ in range(r.choice([0, 10, 300]))))

    def misc(self) -> list[Message]:
        r = self.rng
        pick = r.randrange(6)
        if pick == 0:
            return [cmd.ping(r.getrandbits(64))]
        if pick == 1:
            return [cmd.route(r.choice(["", "out", "nope", "plugin:0", "\u00e9" * 40]))]
        if pick == 2:
            return [cmd.build("LoadPreset", path=r.choice(["", "/nonexistent/p.vstpreset",
                                                           "/dev/null", "/tmp", "rel.json"]))]
        if pick == 3:
            return [cmd.build(r.choice(["Pong", "HandshakeAck", "Error"]))]
        if pick == 4:
            return [cmd.disconnect("fuzz")]
        return [cmd.build("FileTransfer", name="f.bin", data=bytes(r.randrange(16)))]

    def raw_bytes(self) -> list[Message]:
        return [Message(bytes(self.rng.getrandbits(8) for _ in range(256)))]

    # -- helpers ---------------------------------------------------------------------------
    def tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    def offset(self) -> int:
        r = self.rng
        return r.choice([0, 0, 0, 1, 100, 255, 256, 4095, 0xFFFFFFFF, r.randrange(512)])

    def mutate(self, msg: Message) -> None:
        """Change one header field or one payload byte of a well-formed message."""
        r = self.rng
        what = r.randrange(7)
        if what == 0:
            msg.flags = r.choice([0, 1, 2, 3, r.getrandbits(16)])
        elif what == 1:
            msg.payload_len = r.choice([0, 1, msg.payload_len - 1, msg.payload_len + 1,
                                        MESSAGE_PAYLOAD_SIZE, MESSAGE_PAYLOAD_SIZE + 1,
                                        0xFFFFFFFF]) & 0xFFFFFFFF
        elif what == 2:
            msg.frag_count = r.choice([0, 1, 2, 0xFFFFFFFF])
            msg.frag_index = r.choice([0, 1, 0xFFFFFFFF])
        elif what == 3:
            msg.type = r.choice([*cmd.BY_CODE, r.getrandbits(16)])
        elif what == 4:
            msg.sample_offset = r.getrandbits(32)
        else:
            k = 32 + r.randrange(max(1, min(msg.payload_len, MESSAGE_PAYLOAD_SIZE)))
            msg.buf[k] = r.getrandbits(8)

    def batch(self, size: int) -> list[Message]:
        """About ``size`` messages (a transfer is never cut)."""
        out: list[Message] = []
        r = self.rng
        while len(out) < size:
            kind = r.choices(self._kinds, self._weights)[0]
            msgs = kind()
            if msgs and r.random() < 0.2:
                self.mutate(r.choice(msgs))
            out.extend(msgs)
        for m in out:
            m.seq = m.seq | OUR_SEQ_BIT
        return out


# ---- device processes --------------------------------------------------------------------


@dataclass
class FuzzTarget:
    """A device program to fuzz: its command line and how it says it is ready."""

    name: str
    args: list[str]
    ready_prefix: str = "device "
    audio: bool = True  # it renders audio a host reads (midi-monitor does not)
    ready_on_stderr: bool = False  # midi-monitor keeps stdout for the events it prints


TARGETS = {
    "sine": FuzzTarget("sine", ["device", "--id", "FuzzSine", "--channels", "2", "--monitor"]),
    "sine-fast": FuzzTarget("sine-fast", ["device", "--id", "FuzzFast", "--channels", "2"]),
    "reverb": FuzzTarget("reverb", ["device", "--id", "FuzzVerb", "--plugin", "lv2:DLSine",
                                    "--plugin", "builtin:Reverb", "--monitor"]),
    "lv2": FuzzTarget("lv2", ["device", "--id", "FuzzLv2", "--plugin",
                              "lv2:urn:discolink-bridge:lv2test:gain", "--monitor"]),
    "midi-monitor": FuzzTarget("midi-monitor", ["midi-monitor", "--id", "FuzzMon"],
                               ready_prefix="midi-monitor ", audio=False,
                               ready_on_stderr=True),
}


@dataclass
class FuzzReport:
    target: str
    messages: int = 0
    batches: int = 0
    seconds: float = 0.0
    bad_messages: int = 0
    errors_received: int = 0
    failures: list[str] = field(default_factory=list)


class _Pipe:
    """Drains one of the device's pipes in a thread (the monitor and midi-monitor print a
    line per event; a full pipe would stall the device), keeping the text."""

    def __init__(self, stream) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=20000)
        self.swallowed: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if " ERROR " in line and SWALLOWED.search(line):
                self.swallowed.append(line.strip())

    def tail(self, n: int = 15) -> str:
        return "\n".join(list(self.lines)[-n:])


class FuzzSession:
    """One device process under fuzz, with a connected host in this process."""

    def __init__(self, target: FuzzTarget, env: dict, *, seed: int = 1) -> None:
        self.target = target
        self.seed = seed
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge", *target.args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=REPO)
        line = (self.proc.stderr if target.ready_on_stderr else self.proc.stdout).readline()
        if not line.startswith(target.ready_prefix):
            self.proc.kill()
            raise RuntimeError(f"{target.name} did not start: {line!r} "
                               f"{self.proc.stderr.read()[-2000:]}")
        self.device_id = line.split()[1]
        self.stdout = _Pipe(self.proc.stdout)
        self.stderr = _Pipe(self.proc.stderr)
        self.host = Host(env["DISCOLINK_NAMESPACE"])
        self.host.set_local_buffer_info(48000, 256)
        self.connection = self.host.connect(self.device_id, timeout=20)
        self.recent: collections.deque[tuple[int, str]] = collections.deque(maxlen=KEEP_LAST)
        self.sent = 0
        self.internal: list[str] = []
        self.host.on_response(self._on_response)
        params = []
        if self.target.name != "midi-monitor":
            try:
                reply = self.host.request(cmd.fragments("ParameterList", b""), timeout=10)
                params = [p["name"] for p in json.loads(cmd.decode(reply)["parameters"])]
            except (HostError, ValueError):
                params = []
        self.traffic = Traffic(seed, params)
        self._audio = np.zeros((max(self.connection.channels, 1), 256), np.float32)

    def _on_response(self, msg: Message, _host: Host) -> None:
        if msg.type == cmd.T.Error:
            try:
                err = cmd.decode(msg)
            except cmd.MalformedMessage:
                return
            if err["code"] == ErrorCode.INTERNAL:
                self.internal.append(f"Error INTERNAL to seq {msg.request_seq:#x}: "
                                     f"{err['text']}")

    def fail(self, why: str) -> FuzzFailure:
        """The failure, with the messages the device read last: the ring tells how many it
        had taken when it failed, and it takes at most POP_MAX at a time, so the cause is
        among the last POP_MAX it read (or just before, for a delayed effect)."""
        if self.proc.poll() is not None and "died" not in why:
            why += f" (the device died, exit {self.proc.returncode})"
        try:
            unread = self.host._commands.fill()
        except Exception:
            unread = 0
        read = self.sent - unread
        shown = [line for i, line in self.recent if read - POP_MAX <= i < read]
        lines = "\n  ".join(shown)
        return FuzzFailure(
            f"{self.target.name} ({' '.join(self.target.args)}): {why}\n"
            f"seed {self.seed}; {self.sent} messages sent, {read} read by the device; the "
            f"last {len(shown)} it read, oldest first (the cause is among them):\n  {lines}\n"
            f"device stderr (last lines):\n{self.stderr.tail()}")

    def _restore(self) -> None:
        """Back to the format and mode of the connection, so that the next batch reaches
        the MIDI intake again (a fuzzed handshake or mode may have changed them)."""
        c = self.connection
        for m in (cmd.set_transport_mode({"audio+midi": 0, "audio": 1, "midi": 2}[c.mode]),
                  cmd.handshake(c.sample_rate, c.block_size, c.channels)):
            try:
                self.host.request(m, timeout=10)
            except CommandError:
                pass  # refused (midi-monitor has no audio mode to go back to): fine
            except HostError as exc:
                raise self.fail(f"no answer to {cmd.name_of(m.type)}: {exc}") from None

    def run_batch(self, size: int) -> int:
        """Send one batch, reading audio as a host does; then check the device."""
        host, audio = self.host, self._audio
        blocks_before = host.counters().get("blocks_written", 0)
        for i, msg in enumerate(self.traffic.batch(size)):
            deadline = time.monotonic() + 10
            while host.free_command_slots() == 0:
                host.process_responses()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise self.fail("the device stopped reading commands"
                                    if self.proc.poll() is None else
                                    f"the device died (exit {self.proc.returncode})")
                time.sleep(0.0005)
            host.send_command(msg)
            self.recent.append((self.sent, describe(self.sent, msg)))
            self.sent += 1
            if i % 8 == 7:
                host.process_responses()
                if self.target.audio:
                    host.receive_audio(audio)
        self.check(blocks_before)
        return size

    def check(self, blocks_before: int | None = None) -> None:
        """Alive, answering Ping, no handler failure, still rendering."""
        if self.proc.poll() is not None:
            time.sleep(0.2)  # let the stderr thread read the last words
            raise self.fail(f"the device died (exit {self.proc.returncode})")
        try:
            self.host.ping(timeout=10)
        except HostError as exc:
            raise self.fail(f"no Pong: {exc}") from None
        self.host.process_responses()
        if self.internal:
            raise self.fail("a handler failed: " + "; ".join(self.internal[:3]))
        if self.stderr.swallowed:
            raise self.fail("the device swallowed an exception: "
                            + "; ".join(self.stderr.swallowed[:3]))
        self._restore()
        if self.target.audio and blocks_before is not None:
            # A fuzzed handshake may have left a large block's worth queued: read until the
            # device renders again (a ring holds at most AUDIO_RING_FRAMES).
            out = self._audio
            for _ in range(AUDIO_RING_FRAMES // 256 + 16):
                if self.host.counters().get("blocks_written", 0) > blocks_before:
                    break
                self.host.receive_audio(out)
                time.sleep(0.001)
            else:
                raise self.fail(f"the device stopped rendering audio ({self.host.counters()})")

    def close(self) -> str:
        """Disconnect, SIGTERM, and check a clean exit; returns the device's stdout tail."""
        try:
            bad = self.host.counters().get("bad_messages", 0)
            self.errors_received = self.host.stats.errors_received
            self.bad_messages = bad
        finally:
            self.host.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise self.fail("the device did not exit within 10 s of SIGTERM") from None
        time.sleep(0.1)
        if self.proc.returncode != 0:
            raise self.fail(f"the device exited {self.proc.returncode} on SIGTERM")
        return self.stdout.tail(2)


def fuzz(target: FuzzTarget, env: dict, *, seconds: float = 0.0, messages: int = 0,
         seed: int = 1, batch: int = 200) -> FuzzReport:
    """Fuzz one device process until ``seconds`` or ``messages`` run out (whichever is
    given; both: the first reached). Raises FuzzFailure on the first problem."""
    report = FuzzReport(target.name)
    t0 = time.monotonic()
    session = FuzzSession(target, env, seed=seed)
    try:
        session.check()
        while True:
            if seconds and time.monotonic() - t0 >= seconds:
                break
            if messages and session.sent >= messages:
                break
            session.run_batch(batch)
            report.batches += 1
    except BaseException:
        session.proc.kill()
        session.host.close()
        raise
    session.close()
    report.messages = session.sent
    report.seconds = time.monotonic() - t0
    report.bad_messages = session.bad_messages
    report.errors_received = session.errors_received
    return report


def environment(namespace: str) -> dict:
    env = dict(os.environ)
    env["DISCOLINK_NAMESPACE"] = namespace
    env["PYTHONUNBUFFERED"] = "1"
    return env
