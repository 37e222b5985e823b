"""A chain of plugins as a discoLink device: rendering, link taps, parameters and state.

:class:`PluginChain` is an instrument for :class:`~bridge.adapters.instrument.InstrumentDevice`:
each block it gathers that block's MIDI, calls each stage exactly once (``reset=False``),
and writes the selected tap to the rings. An effect chain's input is the host's dry signal
from the return ring, a looping audio file, or silence.

Taps (``--tap``, and the Route command) choose what feeds the link: ``out`` (the last
stage), a stage by name or by number (``Reverb``, ``1``), optionally narrowed to some of its
channels (``DLSine12:3-4``, ``out:1,3``; channels count from 1). Multi-out stages offer one
tap per channel pair. Whatever a tap yields is mapped to the device's channel count with
:func:`~bridge.adapters.plugin.map_channels`.

Commands: SetParameter / GetParameter / ParameterList by index or name, GetState / SetState
(JSON, fragmented), LoadPreset (.vstpreset) and Route. The device handles commands between
blocks, so every change applies from the next block on, never within one. A block with NaN
or Inf in it never reaches the link: it is replaced by silence, counted and reported.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..midi.event import MidiEvent
from ..transport import commands as cmd
from ..transport.commands import ErrorCode
from ..transport.device import Device
from ..transport.message import Message
from ..transport.shm import shown
from .persist import FileLock, InUseError, atomic_write_text
from .stage import Parameter, Stage, map_channels

STATE_FORMAT = "discolink-bridge plugin state"
STATE_VERSION = 1
REPORT_INTERVAL_S = 1.0  # at most one non-finite-audio report per second
AUTOSAVE_INTERVAL_S = 1.0  # state snapshots after changes, at most this often
SAVE_WARN_INTERVAL_S = 10.0  # failed state saves are said at most this often (the first at once)

T = cmd.T


@dataclass(frozen=True)
class Tap:
    """What feeds the link: a stage's output (-1: the last stage), some of its channels."""

    name: str
    stage: int
    channels: tuple[int, ...] | None  # 0-based; None: all


def match_parameter(parameters: Sequence[tuple[str, Parameter]], name: str) -> int | None:
    """Which of ``parameters`` ((stage name, parameter) pairs, first stage first) ``name``
    means: a key or display name, bare or as ``Stage.name``, ignoring case; the first match
    wins. None when nothing matches. The one rule for --param, the rack's params and
    SetParameter by name."""
    want = name.lower()
    for i, (stage, p) in enumerate(parameters):
        qualified = f"{stage}.".lower()
        for candidate in (p.key, p.name):
            c = candidate.lower()
            if want in (c, qualified + c):
                return i
    return None


def parse_channels(text: str) -> tuple[int, ...]:
    """``3-4`` / ``1,3,5`` / ``2`` (1-based) as 0-based indices; ValueError names the fault."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"channel list {text!r}: {part!r} is not N or N-M")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if a < 1 or b < a:
            raise ValueError(f"channel list {text!r}: {part!r} must count up from 1")
        out.extend(range(a - 1, b))
    return tuple(out)


class PluginChain:
    """Stages in series, rendered block by block, with taps, parameters and state."""

    takes_input = True  # InstrumentDevice hands us the return ring's audio, not a mix-in

    def __init__(self, stages: Sequence[Stage], sample_rate: int, block_size: int, *,
                 channels: int | None = None, tap: str = "out",
                 input_audio: np.ndarray | None = None,
                 report: Callable[[str, str], None] | None = None) -> None:
        if not stages:
            raise ValueError("no plugin given")
        for i, st in enumerate(stages):
            if st.is_instrument and not all(s.is_midi_effect for s in stages[:i]):
                raise ValueError(f"{st.name} is an instrument: it takes no audio input, so it "
                                 f"can only be the first stage of a chain, after MIDI effects "
                                 f"only (it is stage {i + 1})")
        if all(st.is_midi_effect for st in stages):
            raise ValueError(f"{stages[-1].name} is a MIDI effect: a chain needs a stage that "
                             "makes audio (add an instrument after it)")
        first_audio = next(st for st in stages if not st.is_midi_effect)
        if input_audio is not None and first_audio.is_instrument:
            raise ValueError(f"{first_audio.name} is an instrument: it can't process the "
                             "--input audio; use an effect")
        self.stages = list(stages)
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.report = report or (lambda where, text: None)
        self._input = input_audio  # (channels, frames) looped, or None
        self._input_pos = 0
        self._outputs: list[np.ndarray | None] = [None] * len(self.stages)
        self.nonfinite_blocks = 0
        self._last_report = 0.0
        # Said once, for the user (the CLI prints it on stderr; a rack's log keeps it): the
        # first non-finite block. ``report`` goes on counting them for the debug monitor.
        self.warn: Callable[[str], None] | None = None
        self.parameters: list[tuple[int, Parameter]] = [
            (i, p) for i, st in enumerate(self.stages) for p in st.parameters]
        self._named_parameters = [(self.stages[i].name, p) for i, p in self.parameters]
        self._release: list[MidiEvent] = []
        # Persistence: after a change, snapshot_idle (which the device loop calls when it has
        # nothing to render) hands a state snapshot to on_state_change (at most once per
        # AUTOSAVE_INTERVAL_S); the callee writes it away from the audio thread.
        self.on_state_change: Callable[[dict], None] | None = None
        self.on_snapshot_error: Callable[[str], None] | None = None  # the plugin's save failed
        self._changed = False  # a change no snapshot after a render has caught yet
        self._caught_up = False  # a block has run since that change
        self._idle_saved = False  # the idle loop has saved it once, before any block ran
        self._last_snapshot = 0.0
        self._stage_outputs = [self.stage_outputs(i) for i in range(len(self.stages))]
        self._instrument_first = next(st for st in self.stages
                                      if not st.is_midi_effect).is_instrument
        self.tap = self.resolve_tap(tap)
        natural = self.tap_channels(self.tap)
        if channels is None:
            channels = natural
        if not 1 <= channels <= 12:
            raise ValueError(f"channels must be 1..12, got {channels}")
        self.channels = channels

    # -- shape --------------------------------------------------------------------------
    @property
    def is_effect(self) -> bool:
        return not next(st for st in self.stages if not st.is_midi_effect).is_instrument

    def stage_outputs(self, i: int) -> int:
        """Channels that stage ``i`` produces (built-ins follow what they are given; a MIDI
        effect passes on what it was given, nothing before the instrument)."""
        st = self.stages[i]
        if st.is_midi_effect:
            return self.stage_outputs(i - 1) if i > 0 else 0
        if st.outputs is not None:
            return st.outputs
        if i == 0:
            return 2 if st.is_instrument or self._input is None else self._input.shape[0]
        return self.stage_outputs(i - 1)

    def tap_channels(self, tap: Tap) -> int:
        return len(tap.channels) if tap.channels else self.stage_outputs(
            tap.stage if tap.stage >= 0 else len(self.stages) - 1)

    def taps(self) -> list[str]:
        """Every tap name this chain offers: ``out``, each stage, each multi-out pair."""
        names = ["out"]
        for i, st in enumerate(self.stages):
            names.append(st.name if self._unique(st.name) else str(i + 1))
            n = self.stage_outputs(i)
            if n > 2:
                base = names[-1]
                names += [f"{base}:{c}-{c + 1}" for c in range(1, n, 2)]
        return names

    def _unique(self, name: str) -> bool:
        return sum(st.name == name for st in self.stages) == 1

    def resolve_tap(self, text: str) -> Tap:
        """A tap by name; ValueError lists the taps there are."""
        source, _, chans = text.strip().partition(":")
        stage = -2
        if source in ("", "out"):
            stage = -1
        elif source.isdigit() and 1 <= int(source) <= len(self.stages):
            stage = int(source) - 1
        else:
            matches = [i for i, st in enumerate(self.stages) if st.name.lower() == source.lower()]
            if len(matches) == 1:
                stage = matches[0]
        if stage == -2:
            raise ValueError(f"no tap {text!r}; taps: {', '.join(self.taps())}")
        channels = parse_channels(chans) if chans else None
        available = self.stage_outputs(stage if stage >= 0 else len(self.stages) - 1)
        if channels and max(channels) >= available:
            raise ValueError(f"tap {text!r}: the stage has {available} output channel(s), "
                             f"not {max(channels) + 1}")
        return Tap(text.strip() or "out", stage, channels)

    # -- rendering (the audio thread) ---------------------------------------------------
    def all_notes_off(self) -> None:
        """A new host starts in silence: the notes still sounding get note-offs (and their
        channels All Sound Off) at the start of the next block. Not a plugin reset: for a
        VST3, pedalboard's reset() reloads the plugin, which stalls the loop for ms."""
        for st in self.stages:
            if st.is_instrument:
                self._release = st.release_events()

    def reset(self) -> None:
        """A new host claimed the device (protocol.md §8.2): its notes end, and every stage
        forgets its tails (reverb, delay) so the new host hears nothing of the previous
        session. A VST3's reset costs pedalboard a few ms (it re-activates the plugin); a
        claim is the moment that can afford it, as the new host is still in its handshake.
        A looping input file starts again from its beginning."""
        self.all_notes_off()
        self._input_pos = 0
        for stage in self.stages:
            try:
                stage.reset()
            except Exception as exc:
                self.report("plugin", f"{stage.name}: reset failed: {type(exc).__name__}: {exc}")

    def render(self, out: np.ndarray, events: list[MidiEvent],
               inp: np.ndarray | None = None) -> None:
        """One block into ``out`` (channels, frames): each stage once, then the tap. Never
        raises: a failing plugin gives silence, reported."""
        frames = out.shape[1]
        rate = self.sample_rate
        if self._release:
            events = [*self._release, *events]
            self._release = []
        try:
            x = None if self._instrument_first else self._effect_input(inp, frames)
            outputs = self._stage_outputs
            for i, st in enumerate(self.stages):
                if st.is_instrument:
                    x = st.render(events, frames, rate, outputs[i])
                elif st.is_midi_effect:
                    st.process(None, rate, events)
                else:
                    if st.inputs is not None and x.shape[0] != st.inputs:
                        x = map_channels(x, st.inputs)
                    x = st.process(np.ascontiguousarray(x, np.float32), rate, events)
                if st.midi_out:  # the MIDI the stage made goes on to the stages after it
                    events = st.midi_output
                self._outputs[i] = x
            tap = self.tap
            y = self._outputs[tap.stage]
            if tap.channels:
                y = y[list(tap.channels)]
            y = map_channels(y, out.shape[0])
            if not math.isfinite(float(y.sum())):  # NaN or Inf anywhere in the block
                self._nonfinite()
                out.fill(0.0)
                return
            out[:] = y
            if self._changed:
                self._caught_up = True  # the plugins have run since the change
        except Exception as exc:
            out.fill(0.0)
            self.report("plugin", f"render failed: {type(exc).__name__}: {exc}")

    def _effect_input(self, inp: np.ndarray | None, frames: int) -> np.ndarray:
        if self._input is not None:
            src = self._input
            idx = (self._input_pos + np.arange(frames)) % src.shape[1]
            self._input_pos = (self._input_pos + frames) % src.shape[1]
            return src[:, idx]
        if inp is not None and inp.shape[0]:
            return inp
        return np.zeros((self.channels, frames), np.float32)

    def snapshot_idle(self) -> None:
        """From the device loop when it has nothing to render: the block just rendered is
        in the ring, so the host has the most audio in hand, and with no host reading a
        kill -9 still loses no change. A plugin's own state may follow a parameter only when
        it next runs: before that, one snapshot is taken and the change stays pending; once a
        block has run since the change, the snapshot settles it."""
        if not self._changed or self.on_state_change is None:
            return
        if self._caught_up:
            if self._snapshot():
                self._changed = False
        elif not self._idle_saved and self._snapshot():
            self._idle_saved = True

    def _snapshot(self) -> bool:
        """Take and hand over a snapshot unless the last one is too recent; True when one
        was handed over (or failed, said through on_snapshot_error)."""
        now = time.monotonic()
        if now - self._last_snapshot < AUTOSAVE_INTERVAL_S:
            return False
        self._last_snapshot = now
        try:
            self.on_state_change(self.get_state())
        except Exception as exc:
            self.report("plugin", f"state snapshot failed: {type(exc).__name__}: {exc}")
            if self.on_snapshot_error is not None:
                self.on_snapshot_error(str(exc))
        return True

    def _mark_changed(self) -> None:
        self._changed = True
        self._caught_up = False
        self._idle_saved = False

    def _nonfinite(self) -> None:
        self.nonfinite_blocks += 1
        if self.nonfinite_blocks == 1 and self.warn is not None:
            try:  # one short write, once per session: acceptable on the audio path
                stage = self.stages[self.tap.stage if self.tap.stage >= 0 else -1]
                self.warn(f"{stage.name}: NaN or Inf in the plugin output; such blocks "
                          "are replaced by silence (counted in the stopped line)")
            except Exception:
                pass
        now = time.monotonic()
        if now - self._last_report >= REPORT_INTERVAL_S:
            self._last_report = now
            self.report("plugin", f"NaN or Inf in the plugin output: block replaced by "
                        f"silence ({self.nonfinite_blocks} block(s) so far)")

    def latency(self) -> int:
        """Frames the tap's signal lags its input by: the latencies the stages up to the
        tap report (an LV2 plugin's latency port, a VST3's reported latency)."""
        last = self.tap.stage if self.tap.stage >= 0 else len(self.stages) - 1
        return sum(st.current_latency() for st in self.stages[:last + 1])

    def close(self) -> None:
        """Free the stages (an LV2 instance and its worker thread)."""
        for st in self.stages:
            st.close()

    # -- parameters ---------------------------------------------------------------------
    def parameter_name(self, i: int) -> str:
        stage, p = self.parameters[i]
        return p.key if len(self.stages) == 1 else f"{self.stages[stage].name}.{p.key}"

    def find_parameter(self, index: int, name: str,
                       listed_by: str = "; ParameterList lists them") -> int:
        """Global index of a parameter by index, or by name when index is -1. An unknown
        name with nothing close ends its error with ``listed_by`` (IPC's way to list them)."""
        if index >= 0:
            if index >= len(self.parameters):
                raise KeyError(f"no parameter {index}; there are {len(self.parameters)}")
            return index
        found = match_parameter(self._named_parameters, name)
        if found is None:
            names = [self.parameter_name(i) for i in range(len(self.parameters))]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            raise KeyError(f"no parameter {shown(name)}"
                           + (f"; did you mean {', '.join(close)}?" if close else listed_by))
        return found

    def value(self, i: int) -> float:
        stage, p = self.parameters[i]
        return self.stages[stage].get(p.key)

    def set_parameter(self, i: int, value: float) -> float:
        """Check ``value`` and set it; call between blocks (it applies from the next one)."""
        stage, p = self.parameters[i]
        value = p.check(value)
        self.stages[stage].set(p.key, value)
        self._mark_changed()
        return value

    def parameter_list(self) -> list[dict]:
        return [{"index": i, "name": self.parameter_name(i), "display_name": p.name,
                 "stage": self.stages[s].name, **p.describe(), "value": self.value(i)}
                for i, (s, p) in enumerate(self.parameters)]

    # -- state --------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"format": STATE_FORMAT, "version": STATE_VERSION,
                "stages": [st.spec for st in self.stages],
                "state": [st.get_state() for st in self.stages]}

    def check_state(self, data: dict) -> list[dict]:
        """The per-stage states of a state document, ready to restore (each stage has checked
        and decoded its own part); ValueError says why it doesn't fit."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} document")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r} is not {STATE_VERSION}")
        states = data.get("state")
        if not isinstance(states, list) or len(states) != len(self.stages):
            raise ValueError(f"the state has {len(states or [])} stage(s), the chain "
                             f"{len(self.stages)}")
        checked = []
        for st, s in zip(self.stages, states, strict=True):
            if s.get("name") != st.name:
                raise ValueError(f"the state is for {s.get('name')!r}, not {st.name!r}")
            checked.append(st.check_format_state(s))
        return checked

    def set_state(self, data: dict) -> None:
        """Restore a state document from get_state (checked whole before anything changes)."""
        states = self.check_state(data)
        for st, s in zip(self.stages, states, strict=True):
            st.set_state(s)
        self._mark_changed()

    def load_preset(self, preset: str) -> str:
        """Load a preset into the first stage that takes presets (a .vstpreset file for a
        VST3, a preset name, URI or file for an LV2 plugin); returns the stage's name."""
        for st in self.stages:
            if st.load_preset(preset):
                self._mark_changed()
                return st.name
        if preset.lower().endswith(".vstpreset") and not Path(preset).is_file():
            raise FileNotFoundError(f"no such preset file: {preset}")
        raise ValueError("no stage of this chain loads presets (VST3 and LV2 plugins do)")

    # -- commands (called from Device.process_commands) ---------------------------------
    def handle(self, msg: Message, device: Device) -> bool:
        t = msg.type
        try:
            if t == T.SetParameter:
                f = cmd.decode(msg)
                i = self.find_parameter(f["index"], f["name"])
                value = self.set_parameter(i, f["value"])
                device.respond(cmd.build("SetParameter", response_to=msg, index=i,
                                         value=value, name=self.parameter_name(i)[:63]))
            elif t == T.GetParameter:
                f = cmd.decode(msg)
                i = self.find_parameter(f["index"], f["name"])
                device.respond(cmd.build("GetParameter", response_to=msg, index=i,
                                         value=self.value(i),
                                         name=self.parameter_name(i)[:63]))
            elif t == T.ParameterList:
                device.respond_blob(msg, "ParameterList",
                                    cmd.parameter_list_payload(self.parameter_list()))
            elif t == T.GetState:
                device.respond_blob(msg, "GetState", state_json(self.get_state()).encode())
            elif t == T.SetState:
                self.set_state(json.loads(bytes(cmd.decode(msg)["state"])))
            elif t == T.LoadPreset:
                self.load_preset(cmd.decode(msg)["path"])
            elif t == T.Route:
                tap = cmd.decode(msg)["tap"]
                if tap:
                    self.tap = self.resolve_tap(tap)
                device.respond(cmd.build("Route", response_to=msg, routing=json.dumps(
                    {"tap": self.tap.name, "taps": self.taps(), "latency": self.latency()})))
            else:
                return False
        except (KeyError, ValueError, FileNotFoundError) as exc:
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            device.reply_error(msg, ErrorCode.INVALID_ARGUMENT, str(text))
        return True


def parse_param_assignments(items: Sequence[str]) -> list[tuple[str, float]]:
    """``--param name=value`` items; ValueError names the bad one."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            out.append((name.strip(), float(value)))
        except ValueError:
            raise ValueError(f"--param {item!r}: {value!r} is not a number") from None
    return out


def read_state_file(path: Path) -> dict | None:
    """A ``--state`` file's contents (None when it doesn't exist yet)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--state {path}: not readable as JSON: {exc}") from None
    if not isinstance(data, dict) or "device_id" not in data or "chain" not in data:
        raise ValueError(f"--state {path}: not a discolink-bridge device state file")
    return data


def state_lock_path(path: Path) -> Path:
    """The lock file that guards a state file: ``F.lock`` beside ``F`` (``F`` itself is
    replaced at every save, so a lock on it would not last)."""
    return path.with_name(path.name + ".lock")


def lock_state_file(path: Path) -> FileLock:
    """Check that ``--state`` ``path`` can be written, and lock it for this process's life.
    ValueError (exit 2) for a path that can't serve: a folder, a missing or unwritable
    folder; InUseError (exit 1) when another live process holds it."""
    if path.is_dir():
        raise ValueError(f"--state {path} is a folder; give a file such as {path}/state.json")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ValueError(f"--state {path}: its folder {folder} {what}; create it first")
    lock = FileLock(state_lock_path(path))
    try:
        # creating the lock file proves the folder is writable, before any work is done
        return lock.acquire(f"--state {path}")
    except InUseError as exc:
        raise InUseError(f"{exc}; two devices must not share a state file") from None
    except OSError as exc:
        raise ValueError(f"--state {path}: cannot write in {folder}: "
                         f"{exc.strerror or exc}") from None


def state_json(doc: dict, **options: Any) -> str:
    """A state document as JSON: binary data in it (a VST3's raw state, an LV2 plugin's files,
    kept as bytes by the snapshot on the audio thread) is written as base64 text here."""
    return json.dumps(doc, default=_json_bytes, **options)


def _json_bytes(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON data")


def write_state_file(path: Path, device_id: str, state: dict) -> None:
    """Save the device id and a chain state, atomically and durably (a crash leaves the old
    file or the new one)."""
    atomic_write_text(path, state_json({"device_id": device_id, "chain": state}, indent=1))


class StateSaver:
    """Writes the snapshots a chain hands over (``chain.on_state_change``) to a ``--state``
    file, from a thread of its own: the audio thread only stores a reference.

    A failed save is said at once through ``warn`` (then at most every
    ``SAVE_WARN_INTERVAL_S``, with a count of the ones in between) and counted in
    ``failures``; the CLI turns a nonzero count into exit code 1, so a state that was not
    kept never passes for saved."""

    def __init__(self, path: Path, device_id: Callable[[], str],
                 warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.device_id = device_id
        self.warn = warn or (lambda text: None)
        self.saves = 0
        self.failures = 0
        self.last_failure = ""
        self._unsaid = 0  # failures not yet said (rate limit)
        self._last_warn = -math.inf
        self._latest: dict | None = None
        self._due = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="state saver", daemon=True)
        self._thread.start()

    def __call__(self, state: dict) -> None:
        self._latest = state
        self._due.set()

    def save(self, state: dict, *, final: bool = False) -> bool:
        """Write ``state`` now; False (said, counted) when it fails. ``final``: the save on
        stop, whose failure is always said."""
        try:
            write_state_file(self.path, self.device_id(), state)
        except OSError as exc:
            self.failed(exc.strerror or str(exc), final=final)
            return False
        self.saves += 1
        return True

    def failed(self, why: str, *, final: bool = False) -> None:
        """Count a save that did not happen (the file, or the plugin's state, failed) and
        say it: at once, then at most every SAVE_WARN_INTERVAL_S, always when ``final``."""
        self.failures += 1
        self.last_failure = f"could not save --state {self.path}: {why}"
        self._unsaid += 1
        now = time.monotonic()
        if final or now - self._last_warn >= SAVE_WARN_INTERVAL_S:
            more = f" ({self._unsaid - 1} more failed since the last report)" \
                if self._unsaid > 1 else ""
            self.warn(self.last_failure + more)
            self._unsaid, self._last_warn = 0, now

    def _run(self) -> None:
        while not self._stop:
            self._due.wait()
            self._due.clear()
            state, self._latest = self._latest, None
            if state is not None:
                self.save(state)

    def close(self) -> None:
        self._stop = True
        self._due.set()
        self._thread.join(timeout=5)


def load_input_file(path: Path, sample_rate: int) -> np.ndarray:
    """An ``--input`` file as (channels, frames) float32; ValueError when it can't serve."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ValueError(f"--input {path}: cannot read it as audio: {exc}") from None
    if rate != sample_rate:
        raise ValueError(f"--input {path} is {rate} Hz but the device runs at {sample_rate} "
                         f"Hz; pass --samplerate {rate} or resample the file")
    if len(data) == 0:
        raise ValueError(f"--input {path} has no audio")
    return np.ascontiguousarray(data.T)


def build_chain(specs: Sequence[str], *, sample_rate: int, block_size: int,
                plugin_name: str | None = None, channels: str | None = None,
                tap: str | None = None, params: Sequence[str] = (),
                input_file: Path | None = None, state: dict | None = None,
                state_source: str = "the saved state", preset: Path | None = None,
                report: Callable[[str, str], None] | None = None) -> PluginChain:
    """Load ``specs`` and assemble the chain a device runs.

    ``channels`` is a count (``2``: the tap mapped to 2 channels) or a channel list of the
    last stage (``3-4``, ``1,3``: those channels, as the default tap). ``state`` is a saved
    chain state to restore (``state_source`` names it in errors; else ``preset``, a
    .vstpreset, is loaded); ``params``
    (``NAME=VALUE``) are applied after either. Raises
    PluginError when a plugin can't load (exit 1 at the CLI) and ValueError for a request
    that can't be met (exit 2).
    """
    from .stage import load_stage

    assignments = parse_param_assignments(params)
    count: int | None = None
    if channels is not None:
        text = channels.strip()
        if text.isdigit():
            count = int(text)
            if not 1 <= count <= 12:
                raise ValueError(f"--channels {count}: a device has 1 to 12 channels")
        else:
            parse_channels(text)  # a clear error for a malformed list, before loading
            if tap not in (None, "out"):
                raise ValueError("give --channels as a count when --tap chooses the source")
            tap = f"out:{text}"
    audio = load_input_file(input_file, sample_rate) if input_file else None
    stages = [load_stage(s, plugin_name=plugin_name, sample_rate=sample_rate,
                         block_size=block_size) for s in specs]
    chain = PluginChain(stages, sample_rate, block_size, channels=count, tap=tap or "out",
                        input_audio=audio, report=report)
    if state is not None:
        try:
            chain.set_state(state)
        except ValueError as exc:
            raise ValueError(f"{state_source}: {exc}") from None
    elif preset is not None:  # a saved state is newer than the preset it started from
        try:
            chain.load_preset(str(preset))
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"--preset {preset}: {exc}") from None
    for name, value in assignments:
        try:
            i = chain.find_parameter(-1, name, listed_by="")  # the CLI's hint follows
        except KeyError as exc:
            raise ValueError(f"--param: {exc.args[0]} ('discolink-bridge plugin info "
                             f"{specs[-1] if len(specs) == 1 else 'PLUGIN'}' lists them)"
                             ) from None
        try:
            chain.set_parameter(i, value)
        except ValueError as exc:
            raise ValueError(f"--param {name}: {exc}") from None
    return chain
