"""What every stage of a plugin chain is, whatever its format: one set of rules.

A :class:`Stage` is one plugin of a chain (bridge/adapters/plugin_device.py): an instrument
(MIDI in, audio out), an effect (audio in and out) or a MIDI effect (MIDI in and out, no
audio). It knows its main channel counts, its :class:`Parameter` list and its state; the
formats subclass it:

- :mod:`bridge.adapters.plugin`: VST3 and AU files through pedalboard, pedalboard's
  built-in effects (``builtin:NAME``) and the bridge's own sine synth (``builtin:Sine``);
- :mod:`bridge.adapters.lv2`: LV2 plugins through lilv (``lv2:URI`` or ``lv2:NAME``).

What is the same for every format lives here, once: the parameter rules (range, toggled,
integer, enumeration), the notes an instrument still sounds (released when a new host
claims the device), the state document of one stage (its parameter values, plus the
format's own data), the channel mapping between a stage and its neighbours, and
:func:`load_stage`, which picks the format from the spec.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..midi.event import MidiEvent

BUILTIN_PREFIX = "builtin:"
LV2_PREFIX = "lv2:"


def state_bytes(value: object, what: str) -> bytes:
    """Binary data of a stage's state: bytes as a snapshot holds them (encoded only when the
    document is written, off the audio thread: plugin_device.state_json), or base64 text as
    a JSON document holds them. ValueError naming ``what`` otherwise."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:  # binascii.Error is one
            pass
    raise ValueError(f"{what} is not base64 text")


class PluginError(Exception):
    """A plugin failed to load, or can't do what was asked of it. Names the plugin."""


class UnknownPluginError(PluginError, ValueError):
    """A spec that names no installed plugin: a usage error (exit 2), not a failure."""


@dataclass
class Parameter:
    """One parameter of a stage. ``min``/``max`` are None where the format publishes no
    range. ``choices`` are an enumeration's (value, label) pairs; ``output`` marks a value
    the plugin reports (a meter, its latency), which can be read but not set."""

    key: str  # an identifier: pedalboard's attribute name, an LV2 port symbol
    name: str  # the plugin's own display name
    min: float | None
    max: float | None
    default: float | None
    unit: str
    toggled: bool = False
    integer: bool = False
    logarithmic: bool = False
    choices: tuple[tuple[float, str], ...] = ()
    output: bool = False

    def check(self, value: float) -> float:
        """``value`` as the parameter takes it: toggles become 0 or 1, integers are rounded;
        ValueError for a non-finite number, one out of range or not among the choices, or
        an output."""
        if self.output:
            raise ValueError(f"parameter {self.name!r} is an output of the plugin: it can be "
                             "read, not set")
        if not np.isfinite(value):
            raise ValueError(f"parameter {self.name!r}: {value} is not a finite number")
        value = float(value)
        if self.toggled:
            return 1.0 if value >= 0.5 else 0.0
        if self.integer:
            value = float(round(value))
        if self.choices and not any(value == v for v, _ in self.choices):
            shown = ", ".join(f"{v:g} ({label})" for v, label in self.choices)
            raise ValueError(f"parameter {self.name!r}: {value:g} is not one of {shown}")
        if self.min is not None and self.max is not None and not \
                self.min <= value <= self.max:
            raise ValueError(f"parameter {self.name!r}: {value:g} is out of range "
                             f"{self.min:g}..{self.max:g}")
        return value

    def describe(self) -> dict:
        """The parameter's rules for ParameterList and ``plugin info`` (JSON-safe)."""
        return {"min": _number(self.min), "max": _number(self.max),
                "default": _number(self.default), "unit": self.unit,
                "toggled": self.toggled, "integer": self.integer,
                "logarithmic": self.logarithmic, "output": self.output,
                "choices": [{"value": v, "label": label} for v, label in self.choices]}


def _number(value: float | None) -> float | None:
    """A JSON-safe number: NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Stage:
    """One plugin of a chain. ``inputs``/``outputs`` are main audio channel counts; ``None``
    means any count works (pedalboard's built-in effects process each channel).

    Subclasses implement render (instruments), process (effects), reset, get and set, and
    add their own data to the state (``_get_format_state``/``_set_format_state``).
    ``midi_in`` says whether the stage takes the block's MIDI; ``midi_out`` whether it
    passes MIDI on to the next stage (:attr:`midi_output` then holds this block's).
    """

    spec: str
    name: str
    kind: str  # "instrument", "effect" or "midi"
    inputs: int | None
    outputs: int | None
    vendor: str = ""
    format: str = ""  # "VST3", "AU", "builtin", "LV2"
    parameters: list[Parameter] = field(default_factory=list)
    latency: int = 0  # frames the stage delays its input by, as the plugin reports it
    midi_in: bool = False
    midi_out: bool = False
    midi_output: list[MidiEvent] = field(default_factory=list, repr=False)
    _sounding: set[tuple[int, int]] = field(default_factory=set, repr=False)

    @property
    def is_instrument(self) -> bool:
        return self.kind == "instrument"

    @property
    def is_midi_effect(self) -> bool:
        return self.kind == "midi"

    # -- audio --------------------------------------------------------------------------
    def render(self, events: Sequence[MidiEvent], frames: int, sample_rate: int,
               channels: int) -> np.ndarray:
        """An instrument's next block, (channels, frames) float32, with this block's MIDI
        at its sample offsets."""
        raise NotImplementedError

    def process(self, audio: np.ndarray, sample_rate: int,
                events: Sequence[MidiEvent] = ()) -> np.ndarray:
        """An effect's next block from ``audio`` (channels, frames); a MIDI effect's gets
        ``audio`` None and returns None."""
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the stage holds outside Python (a no-op for most formats)."""

    def current_latency(self) -> int:
        """The stage's latency in frames now (an LV2 plugin reports it after each block)."""
        return self.latency

    def track_notes(self, events: Sequence[MidiEvent]) -> None:
        """Remember which notes sound, for :meth:`release_events`."""
        sounding = self._sounding
        for e in events:
            data = e.data
            if len(data) != 3:
                continue
            kind = data[0] & 0xF0
            if kind == 0x90 and data[2]:
                sounding.add((data[0] & 0x0F, data[1]))
            elif kind == 0x80 or kind == 0x90:
                sounding.discard((data[0] & 0x0F, data[1]))

    def release_events(self) -> list[MidiEvent]:
        """Note-offs for every note this instrument still sounds, then All Sound Off and All
        Notes Off on their channels."""
        out = [MidiEvent(0, bytes((0x80 | ch, note, 0))) for ch, note in sorted(self._sounding)]
        for ch in sorted({ch for ch, _ in self._sounding}):
            out += [MidiEvent(0, bytes((0xB0 | ch, 120, 0))),
                    MidiEvent(0, bytes((0xB0 | ch, 123, 0)))]
        self._sounding.clear()
        return out

    # -- parameters ---------------------------------------------------------------------
    def get(self, key: str) -> float:
        raise NotImplementedError

    def set(self, key: str, value: float) -> None:
        raise NotImplementedError

    def parameter(self, key_or_name: str) -> Parameter:
        """A parameter by its key or display name (case-insensitive); KeyError names the
        choices."""
        want = key_or_name.lower()
        for p in self.parameters:
            if p.key.lower() == want or p.name.lower() == want:
                return p
        shown = ", ".join(p.key for p in self.parameters[:20])
        more = "" if len(self.parameters) <= 20 else f", ... ({len(self.parameters)} in all)"
        raise KeyError(f"{self.name} has no parameter {key_or_name!r}; it has {shown}{more}")

    # -- state --------------------------------------------------------------------------
    def get_state(self) -> dict:
        """The stage's state as JSON-able data (bytes too, which state_json writes as base64):
        its parameter values, and the format's own state where it has one. The values are
        kept as well because a VST3 plugin's raw state catches up with a parameter change
        only when it next renders."""
        values = {}
        for p in self.parameters:
            if p.output:
                continue
            try:
                values[p.key] = self.get(p.key)
            except (TypeError, ValueError):  # a switch or choice: the raw state has it
                pass
        return {"name": self.name, "parameters": values, **self._get_format_state()}

    def set_state(self, state: dict) -> None:
        """Restore get_state's data: the format's own state first, then the values."""
        self._set_format_state(state)
        for key, value in state.get("parameters", {}).items():
            p = self.parameter(key)
            self.set(p.key, p.check(float(value)) if p.min is not None else float(value))

    def check_format_state(self, state: dict) -> dict:
        """``state`` ready to restore (binary data decoded, so the restore doesn't decode it
        again); ValueError when the format's own part of it can't be restored (checked for
        every stage before any changes)."""
        return state

    def _get_format_state(self) -> dict:
        return {}

    def _set_format_state(self, state: dict) -> None:
        pass

    def load_preset(self, preset: str) -> bool:
        """Load a preset (a file, or for LV2 a preset's name or URI); False when this stage
        takes no presets, ValueError when it can't load this one."""
        return False


# ---- loading ------------------------------------------------------------------------------


def load_stage(spec: str, *, plugin_name: str | None = None, sample_rate: int = 48000,
               block_size: int = 256) -> Stage:
    """Load one plugin by spec (``lv2:...``, ``builtin:NAME`` or a file); PluginError
    names the plugin and the reason (UnknownPluginError when nothing has that name)."""
    if spec.startswith(LV2_PREFIX):
        from .lv2 import load_lv2_stage

        if plugin_name is not None:
            raise UnknownPluginError(f"{spec}: --plugin-name {plugin_name!r} is for a bundle "
                                     "file that holds several plugins; an LV2 URI or name "
                                     "already names one")

        return load_lv2_stage(spec, sample_rate=sample_rate, block_size=block_size)
    from .plugin import load_pedalboard_stage

    return load_pedalboard_stage(spec, plugin_name=plugin_name, sample_rate=sample_rate,
                                 block_size=block_size)


# ---- channel mapping ----------------------------------------------------------------------


def map_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``audio`` (n, frames) as ``channels`` channels, by the documented mapping:

    - n == channels: unchanged;
    - fewer to more: the inputs repeat in order (mono to every channel; L R L R ...);
    - more to fewer: output channel k is the mean of inputs k, k + channels, k + 2 channels,
      ... (a mono downmix averages everything; 4 to 2 averages 1+3 and 2+4).
    """
    n = audio.shape[0]
    if n == channels:
        return audio
    if n < channels:
        return audio[np.arange(channels) % n]
    out = np.zeros((channels, audio.shape[1]), np.float32)
    counts = np.zeros(channels)
    for k in range(n):
        out[k % channels] += audio[k]
        counts[k % channels] += 1
    out /= counts[:, None]
    return out
