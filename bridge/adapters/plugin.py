"""Plugins through pedalboard: VST3 (and AU on macOS) files, pedalboard's built-in effects,
and the project's own built-in instrument, each a :class:`~bridge.adapters.stage.Stage` of a
chain (:class:`PedalboardStage`, :class:`SineStage`). Specs name them:

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

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..midi.event import MidiEvent
from .sine import SineSynth
from .stage import BUILTIN_PREFIX, Parameter, PluginError, Stage, UnknownPluginError, state_bytes

PLUGIN_SUFFIXES = (".vst3", ".component")
# DPF and other VST3 wrappers expose 2,048 "MIDI Ch. N CC M" parameters that exist only to map
# MIDI CCs onto VST3 parameters; hosts hide them, and so do we.
_HIDDEN_PARAMETER = re.compile(r"^MIDI Ch\. \d+ CC \d+$")
_BUS = re.compile(r"expects (\d+) input channels and (\d+) output channels")


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
class PedalboardStage(Stage):
    """A VST3 or AU plugin, or one of pedalboard's built-in effects."""

    plugin: object = None

    def render(self, events: Sequence[MidiEvent], frames: int, sample_rate: int,
               channels: int) -> np.ndarray:
        """One plugin call, ``reset=False``, with this block's MIDI at its sample offsets."""
        self.track_notes(events)
        midi = [(e.data, (e.offset + 0.5) / sample_rate) for e in events if e.data]
        return self.plugin(midi, duration=frames / sample_rate, sample_rate=sample_rate,
                           num_channels=channels, buffer_size=frames, reset=False)

    def process(self, audio: np.ndarray, sample_rate: int,
                events: Sequence[MidiEvent] = ()) -> np.ndarray:
        return self.plugin.process(audio, sample_rate, buffer_size=audio.shape[1],
                                   reset=False)

    def reset(self) -> None:
        self.plugin.reset()

    def current_latency(self) -> int:
        """The latency the plugin reports (``reported_latency_samples``), 0 if none."""
        try:
            return max(0, int(getattr(self.plugin, "reported_latency_samples", 0) or 0))
        except Exception:  # a plugin that fails to answer adds no known latency
            return 0

    def get(self, key: str) -> float:
        return float(getattr(self.plugin, key))

    def set(self, key: str, value: float) -> None:
        setattr(self.plugin, key, value)

    def _get_format_state(self) -> dict:
        raw = getattr(self.plugin, "raw_state", None)
        return {} if raw is None else {"raw_state": bytes(raw)}  # base64 when written

    def _set_format_state(self, state: dict) -> None:
        if "raw_state" in state:
            if not hasattr(self.plugin, "raw_state"):
                raise ValueError(f"{self.name} has no raw state to restore")
            raw = state_bytes(state["raw_state"], f"{self.name}: raw_state")
            try:
                self.plugin.raw_state = raw
            except Exception as exc:
                raise ValueError(f"{self.name} refused the raw state: {exc}") from None

    def load_preset(self, preset: str) -> bool:
        """A .vstpreset file (VST3 plugins; built-in effects take none)."""
        if not hasattr(self.plugin, "load_preset"):
            return False
        if not Path(preset).is_file():
            raise FileNotFoundError(f"no such preset file: {preset}")
        try:
            self.plugin.load_preset(preset)
        except Exception as exc:
            raise ValueError(f"{self.name} could not load {preset}: {exc}") from None
        return True


@dataclass
class SineStage(Stage):
    """The bridge's own sine synth (bridge/adapters/sine.py) as ``builtin:Sine``."""

    plugin: SineSynth | None = None

    def render(self, events: Sequence[MidiEvent], frames: int, sample_rate: int,
               channels: int) -> np.ndarray:
        out = np.empty((channels, frames), np.float32)
        self.plugin.sample_rate = sample_rate
        self.plugin.render(out, events)
        return out

    def release_events(self) -> list[MidiEvent]:
        """The synth is simply silenced."""
        self.plugin.all_notes_off()
        return []

    def reset(self) -> None:
        self.plugin.all_notes_off()


# ---- loading ------------------------------------------------------------------------------

INITIALIZATION_TIMEOUT_S = 0.25  # pedalboard.load_plugin's wait for an instrument to sound


def load_pedalboard_stage(spec: str, *, plugin_name: str | None = None,
                          sample_rate: int = 48000, block_size: int = 256) -> Stage:
    """Load a plugin file or a built-in (see :func:`bridge.adapters.stage.load_stage`);
    PluginError names the plugin and the reason."""
    if spec.startswith(BUILTIN_PREFIX):
        if plugin_name is not None:
            raise UnknownPluginError(f"{spec}: --plugin-name {plugin_name!r} is for a bundle "
                                     "file that holds several plugins, not a built-in")
        return _load_builtin(spec[len(BUILTIN_PREFIX):], sample_rate)
    path = Path(spec).expanduser()
    if not path.exists():  # usage errors (exit 2): nothing by that name to load
        raise UnknownPluginError(f"{spec}: no such file or directory")
    if path.suffix.lower() not in PLUGIN_SUFFIXES:
        raise UnknownPluginError(
            f"{spec}: not a plugin (expected a .vst3 bundle"
            f"{' or .component' if os.uname().sysname == 'Darwin' else ''}, or builtin:NAME)")
    import pedalboard

    if plugin_name is not None:
        _check_plugin_name(spec, plugin_name)
    try:
        # pedalboard plays an instrument a note at load and waits up to initialization_timeout
        # (10 s by default) for it to sound; an instrument that sounds only when something
        # else is there (discoLink Host without a device) would cost the full wait every load.
        plugin = pedalboard.load_plugin(str(path), plugin_name=plugin_name,
                                        initialization_timeout=INITIALIZATION_TIMEOUT_S)
    except Exception as exc:  # pedalboard raises ImportError, ValueError, RuntimeError
        text = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip()) \
            or type(exc).__name__
        raise PluginError(f"{spec}: could not load the plugin: {text}") from None
    try:
        kind = "instrument" if plugin.is_instrument else "effect"
        inputs, outputs = probe_bus(plugin, kind, sample_rate, block_size)
        fmt = "AU" if path.suffix.lower() == ".component" else "VST3"
        latency = int(getattr(plugin, "reported_latency_samples", 0) or 0)
        return PedalboardStage(spec, plugin.name, kind, inputs, outputs,
                               vendor=plugin.manufacturer_name or "", format=fmt,
                               parameters=_external_parameters(plugin), latency=latency,
                               midi_in=kind == "instrument", plugin=plugin)
    except PluginError:
        raise
    except Exception as exc:  # whatever an odd plugin does, the user gets one clear line
        raise PluginError(f"{spec}: could not inspect the plugin: "
                          f"{type(exc).__name__}: {exc}") from None


def plugin_names_in_file(path: str) -> list[str]:
    """The names of the plugins a .vst3 (or .component) bundle holds."""
    import pedalboard

    cls = pedalboard.AudioUnitPlugin if path.lower().endswith(".component") \
        else pedalboard.VST3Plugin
    return list(cls.get_plugin_names_for_file(str(Path(path).expanduser())))


def _check_plugin_name(spec: str, plugin_name: str) -> None:
    """--plugin-name must name a plugin of the bundle (pedalboard ignores a wrong name when
    the file holds one plugin); UnknownPluginError lists what it holds."""
    try:
        names = plugin_names_in_file(spec)
    except Exception:  # the load that follows says what is wrong with the file
        return
    if plugin_name in names:
        return
    held = (f"the file holds one plugin, {names[0]!r}" if len(names) == 1 else
            f"it holds {', '.join(repr(n) for n in names)}" if names else "it holds none")
    raise UnknownPluginError(f"{spec}: no plugin named {plugin_name!r} (--plugin-name); "
                             f"{held}")


def _load_builtin(name: str, sample_rate: int) -> Stage:
    if name in BUILTIN_INSTRUMENTS:
        synth = SineSynth(sample_rate)
        return SineStage(BUILTIN_PREFIX + name, name, "instrument", 0, None,
                         vendor="discolink-bridge", format="builtin", midi_in=True,
                         plugin=synth)
    effects = _builtin_effects()
    cls = effects.get(name) or next((c for n, c in effects.items()
                                     if n.lower() == name.lower()), None)
    if cls is None:
        raise UnknownPluginError(f"builtin:{name}: no such built-in; choose from "
                          f"{', '.join(builtin_names())}")
    plugin = cls()
    return PedalboardStage(BUILTIN_PREFIX + cls.__name__, cls.__name__, "effect", None, None,
                           vendor="pedalboard", format="builtin",
                           parameters=_builtin_parameters(plugin), plugin=plugin)


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
