"""Plugins through pedalboard: VST3 (and AU on macOS) files, pedalboard's built-in effects,
and the project's own built-in instrument, each wrapped as a :class:`Stage` of a chain.

A stage knows whether it is an instrument (MIDI in, audio out) or an effect (audio in and
out), its main bus's channel counts, its parameters, and its state. Specs name them:

- a path to a ``.vst3`` bundle (or ``.component`` on macOS), with ``plugin_name`` to pick one
  plugin inside a bundle that holds several;
- ``builtin:NAME`` for pedalboard's effects (``builtin:Reverb``, ``builtin:Chorus``, ...;
  :data:`BUILTIN_EFFECTS`), which need nothing installed;
- ``builtin:Sine``, the bridge's own sine synth (bridge/adapters/sine.py), so a chain can
  start with an instrument when no VST3 is installed.

pedalboard turns MIDI timestamps (seconds) into frames by truncation, so an event for frame
``k`` is passed at ``(k + 0.5) / rate``: it lands on exactly frame ``k`` whatever the
rounding of the division.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..midi.event import MidiEvent
from .sine import SineSynth

BUILTIN_PREFIX = "builtin:"
PLUGIN_SUFFIXES = (".vst3", ".component")
# DPF and other VST3 wrappers expose 2,048 "MIDI Ch. N CC M" parameters that exist only to map
# MIDI CCs onto VST3 parameters; hosts hide them, and so do we.
_HIDDEN_PARAMETER = re.compile(r"^MIDI Ch\. \d+ CC \d+$")
_BUS = re.compile(r"expects (\d+) input channels and (\d+) output channels")


class PluginError(Exception):
    """A plugin failed to load, or can't do what was asked of it. Names the plugin."""


def _builtin_effects() -> dict[str, type]:
    import pedalboard

    names = ["Bitcrush", "Chorus", "Clipping", "Compressor", "Delay", "Distortion", "Gain",
             "GSMFullRateCompressor", "HighShelfFilter", "HighpassFilter", "Invert",
             "LadderFilter", "Limiter", "LowShelfFilter", "LowpassFilter", "MP3Compressor",
             "NoiseGate", "PeakFilter", "Phaser", "PitchShift", "Resample", "Reverb"]
    return {n: getattr(pedalboard, n) for n in names if hasattr(pedalboard, n)}


BUILTIN_INSTRUMENTS = ("Sine",)


def builtin_names() -> list[str]:
    """Every ``builtin:NAME`` this machine offers, instruments first."""
    return [*BUILTIN_INSTRUMENTS, *_builtin_effects()]


@dataclass
class Parameter:
    """One parameter of a stage, as ParameterList reports it."""

    key: str  # pedalboard's attribute name (a Python identifier)
    name: str  # the plugin's own display name
    min: float | None
    max: float | None
    default: float | None
    unit: str

    def check(self, value: float) -> float:
        if not np.isfinite(value):
            raise ValueError(f"parameter {self.name!r}: {value} is not a finite number")
        if self.min is not None and self.max is not None and not \
                self.min <= value <= self.max:
            raise ValueError(f"parameter {self.name!r}: {value:g} is out of range "
                             f"{self.min:g}..{self.max:g}")
        return float(value)


@dataclass
class Stage:
    """One plugin of a chain. ``inputs``/``outputs`` are main-bus channel counts; ``None``
    means any count works (pedalboard's built-in effects process each channel)."""

    spec: str
    name: str
    kind: str  # "instrument" or "effect"
    plugin: object
    inputs: int | None
    outputs: int | None
    vendor: str = ""
    format: str = ""  # "VST3", "AU", "builtin"
    parameters: list[Parameter] = field(default_factory=list)
    _sounding: set[tuple[int, int]] = field(default_factory=set, repr=False)

    @property
    def is_instrument(self) -> bool:
        return self.kind == "instrument"

    @property
    def latency(self) -> int:
        """The processing latency the plugin reports, in frames (0 when it reports none)."""
        try:
            return max(0, int(getattr(self.plugin, "reported_latency_samples", 0) or 0))
        except Exception:  # a plugin that fails to answer adds no known latency
            return 0

    # -- audio --------------------------------------------------------------------------
    def render(self, events: Sequence[MidiEvent], frames: int, sample_rate: int,
               channels: int) -> np.ndarray:
        """An instrument's next block, (channels, frames) float32: one plugin call,
        ``reset=False``, with this block's MIDI at its sample offsets."""
        if isinstance(self.plugin, SineSynth):
            out = np.empty((channels, frames), np.float32)
            self.plugin.sample_rate = sample_rate
            self.plugin.render(out, events)
            return out
        midi = []
        sounding = self._sounding
        for e in events:
            data = e.data
            if not data:
                continue
            midi.append((data, (e.offset + 0.5) / sample_rate))
            kind = data[0] & 0xF0
            if kind == 0x90 and len(data) == 3 and data[2]:
                sounding.add((data[0] & 0x0F, data[1]))
            elif (kind == 0x80 or kind == 0x90) and len(data) == 3:
                sounding.discard((data[0] & 0x0F, data[1]))
        return self.plugin(midi, duration=frames / sample_rate, sample_rate=sample_rate,
                           num_channels=channels, buffer_size=frames, reset=False)

    def release_events(self) -> list[MidiEvent]:
        """Note-offs for every note this instrument still sounds, then All Sound Off and All
        Notes Off on their channels; the built-in synth is simply silenced."""
        if isinstance(self.plugin, SineSynth):
            self.plugin.all_notes_off()
            return []
        out = [MidiEvent(0, bytes((0x80 | ch, note, 0))) for ch, note in sorted(self._sounding)]
        for ch in sorted({ch for ch, _ in self._sounding}):
            out += [MidiEvent(0, bytes((0xB0 | ch, 120, 0))),
                    MidiEvent(0, bytes((0xB0 | ch, 123, 0)))]
        self._sounding.clear()
        return out

    def process(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """An effect's next block from ``audio`` (channels, frames), ``reset=False``."""
        return self.plugin.process(audio, sample_rate, buffer_size=audio.shape[1],
                                   reset=False)

    def reset(self) -> None:
        if isinstance(self.plugin, SineSynth):
            self.plugin.all_notes_off()
        else:
            self.plugin.reset()

    # -- parameters ---------------------------------------------------------------------
    def get(self, key: str) -> float:
        return float(getattr(self.plugin, key))

    def set(self, key: str, value: float) -> None:
        setattr(self.plugin, key, value)

    # -- state --------------------------------------------------------------------------
    def get_state(self) -> dict:
        """The stage's state as JSON-able data: its parameter values, and the plugin's raw
        state when it has one. The values are kept as well because a VST3 plugin's raw state
        catches up with a parameter change only when it next renders."""
        values = {}
        for p in self.parameters:
            try:
                values[p.key] = self.get(p.key)
            except (TypeError, ValueError):  # a switch or choice: the raw state has it
                pass
        state: dict = {"name": self.name, "parameters": values}
        raw = getattr(self.plugin, "raw_state", None)
        if raw is not None:
            state["raw_state"] = base64.b64encode(raw).decode()
        return state

    def set_state(self, state: dict) -> None:
        """Restore get_state's data: the raw state first, then the parameter values."""
        if "raw_state" in state:
            if not hasattr(self.plugin, "raw_state"):
                raise ValueError(f"{self.name} has no raw state to restore")
            try:
                self.plugin.raw_state = base64.b64decode(state["raw_state"])
            except Exception as exc:
                raise ValueError(f"{self.name} refused the raw state: {exc}") from None
        for key, value in state.get("parameters", {}).items():
            p = self.parameter(key)
            self.set(p.key, p.check(float(value)) if p.min is not None else float(value))

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


# ---- loading ------------------------------------------------------------------------------


def load_stage(spec: str, *, plugin_name: str | None = None, sample_rate: int = 48000,
               block_size: int = 256) -> Stage:
    """Load one plugin by spec; PluginError names the plugin and the reason."""
    if spec.startswith(BUILTIN_PREFIX):
        return _load_builtin(spec[len(BUILTIN_PREFIX):], sample_rate)
    path = Path(spec).expanduser()
    if not path.exists():
        raise PluginError(f"{spec}: no such file or directory")
    if path.suffix.lower() not in PLUGIN_SUFFIXES:
        raise PluginError(f"{spec}: not a plugin (expected a .vst3 bundle"
                          f"{' or .component' if os.uname().sysname == 'Darwin' else ''}, "
                          "or builtin:NAME)")
    import pedalboard

    try:
        plugin = pedalboard.load_plugin(str(path), plugin_name=plugin_name)
    except Exception as exc:  # pedalboard raises ImportError, ValueError, RuntimeError
        text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) \
            or type(exc).__name__
        raise PluginError(f"{spec}: could not load the plugin: {text}") from None
    try:
        kind = "instrument" if plugin.is_instrument else "effect"
        inputs, outputs = probe_bus(plugin, kind, sample_rate, block_size)
        fmt = "AU" if path.suffix.lower() == ".component" else "VST3"
        return Stage(spec, plugin.name, kind, plugin, inputs, outputs,
                     vendor=plugin.manufacturer_name or "", format=fmt,
                     parameters=_external_parameters(plugin))
    except PluginError:
        raise
    except Exception as exc:  # whatever an odd plugin does, the user gets one clear line
        raise PluginError(f"{spec}: could not inspect the plugin: "
                          f"{type(exc).__name__}: {exc}") from None


def _load_builtin(name: str, sample_rate: int) -> Stage:
    if name in BUILTIN_INSTRUMENTS:
        synth = SineSynth(sample_rate)
        return Stage(BUILTIN_PREFIX + name, name, "instrument", synth, 0, None,
                     vendor="discolink-bridge", format="builtin")
    effects = _builtin_effects()
    cls = effects.get(name) or next((c for n, c in effects.items()
                                     if n.lower() == name.lower()), None)
    if cls is None:
        raise PluginError(f"builtin:{name}: no such built-in; choose from "
                          f"{', '.join(builtin_names())}")
    plugin = cls()
    return Stage(BUILTIN_PREFIX + cls.__name__, cls.__name__, "effect", plugin, None, None,
                 vendor="pedalboard", format="builtin", parameters=_builtin_parameters(plugin))


def probe_bus(plugin, kind: str, sample_rate: int, block_size: int) -> tuple[int, int]:
    """(input, output) channels of the plugin's main bus, learned by one tiny render.

    pedalboard has no query for it, but its refusal names the bus ("Main bus currently
    expects 0 input channels and 12 output channels"); a stereo render that works means 2.
    """
    frames = min(block_size, 64)
    try:
        if kind == "instrument":
            plugin([], duration=frames / sample_rate, sample_rate=sample_rate,
                   num_channels=2, buffer_size=frames, reset=True)
            return 0, 2
        plugin.process(np.zeros((2, frames), np.float32), sample_rate, buffer_size=frames,
                       reset=True)
        return 2, 2
    except Exception as exc:
        m = _BUS.search(str(exc))
        if m is None:
            raise PluginError(f"{plugin.name}: cannot render: {exc}") from None
        return int(m.group(1)), int(m.group(2))
    finally:
        try:
            plugin.reset()
        except Exception:
            pass


def _external_parameters(plugin) -> list[Parameter]:
    out = []
    for key, p in plugin.parameters.items():
        if _HIDDEN_PARAMETER.match(p.name):
            continue
        try:  # numeric parameters; switches and choices have no float range
            lo, hi = float(p.min_value), float(p.max_value)
            default = lo + float(p.default_raw_value) * (hi - lo)
        except (TypeError, ValueError):
            lo = hi = default = None
        out.append(Parameter(key, p.name, lo, hi, default, p.units or p.label or ""))
    return out


def _builtin_parameters(plugin) -> list[Parameter]:
    """pedalboard's built-in effects: their numeric properties (no ranges are published)."""
    out = []
    for key in dir(type(plugin)):
        if key.startswith("_") or not isinstance(getattr(type(plugin), key, None), property):
            continue
        value = getattr(plugin, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append(Parameter(key, key, None, None, float(value), ""))
    return out


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
