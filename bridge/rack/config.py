"""Rack configs: one YAML file lists the discoLink devices a rack runs.

:func:`load_rack` reads the file, validates it with pydantic and a few static checks of its
own, and returns a :class:`RackConfig`; or it raises :class:`ConfigError` holding *every*
problem found, each with the file, line and column it comes from, the field's path
(``devices[2].plugin``) and a message that names the allowed values::

    rack.yaml:14:11: devices[2].plugin: file not found: /x/y.vst3

Positions come from PyYAML's node tree (``yaml.compose``): a map from each data path to the
position of its key and of its value translates pydantic's error locations. Bad values are
reported at the value, unknown and misplaced keys at the key, a missing field at the mapping
that lacks it.

No VST3 or LV2 plugin is loaded to validate: plugin files must exist and end in
``.vst3``/``.component``, ``builtin:NAME`` must be one of
:func:`bridge.adapters.plugin.builtin_names`, and ``lv2:URI``/``lv2:NAME`` must name an
installed LV2 plugin (lilv reads the LV2 path's Turtle; nothing is instantiated), with
did-you-mean when it doesn't. Built-ins, which load in milliseconds, are loaded to check
parameter values; LV2 values are checked against their Turtle ranges. Beyond the schema, the
loader refuses what would stop the rack at start (see :func:`parse_rack`). Relative paths
(plugin, plugins, preset, state, input, state_dir) resolve against the YAML file's folder, and
the validated config holds them absolute.

The reference for the file format is docs/configuration.md.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..adapters.plugin import PLUGIN_SUFFIXES, builtin_names
from ..adapters.plugin_device import parse_channels
from ..adapters.stage import BUILTIN_PREFIX, LV2_PREFIX, Parameter, PluginError
from ..transport.layout import (
    BLOCK_SIZE_MAX,
    BLOCK_SIZE_MIN,
    FILL_DEFAULT,
    FILL_MAX,
    FILL_MIN,
    MAX_CHANNELS,
    REGISTRY_SLOTS,
    SAMPLE_RATE_MAX,
    SAMPLE_RATE_MIN,
)
from ..transport.registry import validate_device_id
from ..transport.shm import NAMESPACE_ENV, namespace_from_env

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "DeviceConfig",
    "RackConfig",
    "device_argv",
    "device_fingerprint",
    "json_schema",
    "load_rack",
    "parse_rack",
    "resolve_tap",
]

Mode = Literal["audio+midi", "audio", "midi"]
Clock = Literal["demand", "realtime"]
Kind = Literal["synth", "plugin", "chain", "jack"]
Restart = Literal["always", "on-failure", "never"]

KINDS: tuple[str, ...] = get_args(Kind)
RESTART_POLICIES: tuple[str, ...] = get_args(Restart)
PRESET_SUFFIX = ".vstpreset"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A rack file larger than this is refused before it is parsed: a full 16-device rack is a few
# KiB, and PyYAML parses about 70 KiB/s on a loaded 2-core machine, so the cap bounds a check
# or a reload to a few seconds (docs/configuration.md, docs/performance.md).
RACK_FILE_MAX_BYTES = 256 << 10
# Deepest nesting of lists and mappings read; a rack needs about 5 levels. Deeper YAML is
# refused at the node that goes too deep (PyYAML's composer recurses once per level).
YAML_DEPTH_MAX = 64
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_PLUGIN_KINDS = ("plugin", "chain")
_LOCAL_KINDS = ("synth", "plugin", "chain")  # devices run by `bridge device`
# what each choice field allows, for messages
_CHOICES: dict[str, tuple[str, ...]] = {
    "kind": KINDS, "restart": RESTART_POLICIES, "mode": get_args(Mode), "clock": get_args(Clock)}
# how a range is named in messages, by field
_RANGES = {
    "sample_rate": f"{SAMPLE_RATE_MIN}..{SAMPLE_RATE_MAX} (Hz)",
    "block_size": f"{BLOCK_SIZE_MIN}..{BLOCK_SIZE_MAX} (frames)",
    "fill": f"{FILL_MIN}..{FILL_MAX} (blocks)",
    "channels": "1..12",
    "rt_priority": "0..99 (0: normal scheduling)",
    "sysex_limit": "at least 1 (bytes)",
}


# ---- issues ---------------------------------------------------------------------------------


@dataclass
class ConfigIssue:
    """One problem in a rack file. ``line`` and ``column`` are 1-based; 0 when the problem
    has no place in the file (it can't be read). ``path`` is the field's path in the data,
    ``devices[2].plugin``; empty for the file as a whole."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else \
            f"{where}: {self.message}"


class ConfigError(Exception):
    """A rack file that can't be used; ``issues`` lists every problem, in file order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)


def _fail(message: str) -> PydanticCustomError:
    # the message goes in the context, so braces in a user's value can't break the template
    return PydanticCustomError("rack", "{message}", {"message": message})


def _describe(value: Any) -> str:
    """A YAML value as the user wrote it, for 'expected X, got Y'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value:g})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _did_you_mean(word: Any, choices: list[str] | tuple[str, ...]) -> str:
    if not isinstance(word, str):
        return ""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


# ---- field checks -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _builtins() -> tuple[str, ...]:
    return tuple(builtin_names())


def _lv2_plugin(spec: str) -> int:
    """The lilv plugin an ``lv2:`` spec names; UnknownPluginError (did-you-mean) if none."""
    from ..adapters import lv2

    return lv2.world().find(spec)


def _base_dir(info: ValidationInfo) -> Path:
    ctx = info.context or {}
    return Path(ctx.get("base_dir") or Path.cwd())


def _resolve(text: str, base: Path) -> Path:
    """``text`` as an absolute, normalised path (``~`` expanded, relative to ``base``)."""
    path = Path(text).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _check_spec(value: str, info: ValidationInfo) -> str:
    """A plugin spec: ``builtin:NAME`` (canonical spelling), ``lv2:URI`` or ``lv2:NAME`` of
    an installed LV2 plugin (read from the LV2 path's Turtle, nothing instantiated), or an
    existing .vst3/.component path, made absolute."""
    if value.startswith(LV2_PREFIX):
        from ..adapters import lv2

        try:
            info = lv2.describe_plugin(lv2.world(), _lv2_plugin(value))
        except (PluginError, ValueError) as exc:
            raise _fail(str(exc).removeprefix(f"{value}: ")) from None
        refusal = info.refusal()  # a feature this host lacks, broken Turtle: from the Turtle
        if refusal:
            raise _fail(f"{info.name} {refusal}")
        return value
    if value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX):]
        names = _builtins()
        match = next((n for n in names if n.lower() == name.lower()), None)
        if match is None:
            raise _fail(f"no built-in plugin {name!r}{_did_you_mean(name, names)}; "
                        f"built-ins: {', '.join(names)}")
        return BUILTIN_PREFIX + match
    if not value.strip():
        raise _fail("empty plugin spec: give a .vst3 path, lv2:URI or builtin:NAME")
    path = _resolve(value, _base_dir(info))
    if path.suffix.lower() not in PLUGIN_SUFFIXES:
        raise _fail(f"not a plugin: {_short(value)} (expected a .vst3 bundle, a .component, "
                    "lv2:URI or builtin:NAME)")
    if not path.exists():
        raise _fail(f"file not found: {path}")
    return str(path)


def _as_text(value: Any) -> Any:
    """An integer where a name belongs (``tap: 2``) counts as its text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_channels(value: Any) -> Any:
    """A count 1..12 (``"2"`` counts too), or a channel list such as ``3-4`` or ``1,3``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_CHANNELS:
            raise _fail(f"must be {_RANGES['channels']}, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _check_channels(int(text))
        try:
            chans = parse_channels(text)
        except ValueError as exc:
            raise _fail(f"{exc} (give a count 1..12, or a channel list like 3-4 or 1,3)") \
                from None
        if len(chans) > MAX_CHANNELS:
            raise _fail(f"channel list {text!r} selects {len(chans)} channels; a device has "
                        f"at most {MAX_CHANNELS}")
        return text
    raise _fail("expected a channel count 1..12 or a channel list like 3-4, got "
                f"{_describe(value)}")


PluginSpec = Annotated[str, AfterValidator(_check_spec),
                      Field(description="a .vst3 path, lv2:URI, lv2:NAME or builtin:NAME")]


def _specs_so_far(info: ValidationInfo) -> list[str]:
    """The device's plugin specs validated before this field (plugin, plugins)."""
    data = info.data or {}
    specs = [data.get("plugin"), *(data.get("plugins") or [])]
    return [s for s in specs if isinstance(s, str)]


def _check_lv2_preset(name: str, specs: list[str]) -> str:
    """An LV2 preset name (or URI) that one of ``specs`` has."""
    from ..adapters import lv2

    problems = []
    for spec in specs:
        try:
            lv2.world().find_preset(_lv2_plugin(spec), name)
            return name
        except (PluginError, ValueError) as exc:
            problems.append(str(exc))
    raise _fail(problems[0])
Channels = Annotated[int | str | None, BeforeValidator(_check_channels)]
TapText = Annotated[str | None, BeforeValidator(_as_text)]


# ---- the models ---------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Defaults(_Model):
    """Settings every device of the rack gets unless it sets its own."""

    sample_rate: int = Field(48000, ge=SAMPLE_RATE_MIN, le=SAMPLE_RATE_MAX,
                             description=f"sample rate in Hz, {_RANGES['sample_rate']}")
    block_size: int = Field(256, ge=BLOCK_SIZE_MIN, le=BLOCK_SIZE_MAX,
                            description=f"block size in frames, any integer "
                                        f"{BLOCK_SIZE_MIN}..{BLOCK_SIZE_MAX}")
    mode: Mode = Field("audio+midi", description="transport mode: audio+midi, audio or midi")
    namespace: str | None = Field(
        None, description="registry namespace the devices register in (1 to 32 of A-Z a-z "
        "0-9 _ . -); $DISCOLINK_NAMESPACE overrides it; default 'default'")
    clock: Clock = Field("demand", description="demand: render when the host's ring runs "
                         "low; realtime: render on the device's own clock")
    fill: int = Field(FILL_DEFAULT, ge=FILL_MIN, le=FILL_MAX,
                      description=f"demand clock: blocks kept queued ahead of the host, "
                                  f"{FILL_MIN}..{FILL_MAX} (latency is at most fill x block)")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                namespace_from_env(value)
            except ValueError as exc:
                raise _fail(str(exc)) from None
        return value


class DeviceConfig(_Model):
    """One device of the rack, run in its own process."""

    id: str = Field(description="device id: Name (the lowest free Name:N) or Name:N (exactly "
                    "that instance)")
    kind: Kind = Field(description="synth: the built-in sine synth; plugin: one plugin; "
                       "chain: plugins in series; jack: a JACK client as a device")
    plugin: str | None = Field(None, description="kind plugin: a .vst3 path (relative to the "
                               "rack file's folder) or builtin:NAME")
    plugins: list[PluginSpec] | None = Field(
        None, description="kind chain: two or more plugin specs, first to last; only the "
        "first may be an instrument")
    plugin_name: str | None = Field(None, description="plugin and chain: which plugin of a "
                                    "bundle that holds several")
    params: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, description="plugin and chain: parameter values set at start, "
        "by key or display name; in a chain Stage.key")
    preset: str | None = Field(None, description="plugin and chain: a .vstpreset file loaded "
                               "at start (it must exist)")
    state: str | None = Field(None, description="plugin and chain: the state file to use "
                              "instead of the one in the rack's state folder")
    input: str | None = Field(None, description="effect plugin or chain: loop this audio file "
                              "as the input instead of the host's return audio")
    channels: Channels = Field(
        None, description="output channels: a count 1..12, or for plugin and chain a list of "
        "the last stage's channels such as 3-4 or 1,3 (jack: input ports 1..12)")
    tap: TapText = Field(None, description="plugin and chain: what feeds the link: out, a "
                         "stage number or name, optionally with channels: DLSine12:3-4")
    sample_rate: int | None = Field(None, ge=SAMPLE_RATE_MIN, le=SAMPLE_RATE_MAX,
                                    description="overrides defaults.sample_rate")
    block_size: int | None = Field(None, ge=BLOCK_SIZE_MIN, le=BLOCK_SIZE_MAX,
                                   description="overrides defaults.block_size")
    mode: Mode | None = Field(None, description="overrides defaults.mode")
    clock: Clock | None = Field(None, description="overrides defaults.clock")
    fill: int | None = Field(None, ge=FILL_MIN, le=FILL_MAX, description="overrides defaults.fill")
    midi_in: list[str] = Field(default_factory=list, description="also play live MIDI from "
                               "the input ports whose names match (glob or substring)")
    connect: list[str] = Field(default_factory=list, description="jack: JACK output ports "
                               "feeding input port N (the Nth pattern; glob)")
    midi_out: list[str] = Field(default_factory=list, description="jack: JACK MIDI input "
                                "ports the device's MIDI output connects to (glob)")
    jack_server: str | None = Field(None, description="jack: JACK server name (default "
                                    "$JACK_DEFAULT_SERVER or 'default')")
    client_name: str | None = Field(None, description="jack: JACK client name (default "
                                    "discolink-NAME)")
    return_audio: bool = Field(False, alias="return", description="add a host-to-device "
                               "return ring (effects get one anyway)")
    fixed_format: bool = Field(False, description="keep sample rate and block size even if "
                               "a host asks for others")
    rt_priority: int | None = Field(None, ge=0, le=99, description="SCHED_FIFO priority of "
                                    "the audio loop, 0..99 (0: normal; default 10)")
    sysex_limit: int | None = Field(None, ge=1, description="longest SysEx accepted, in bytes "
                                    "(default 65536)")
    restart: Restart = Field("on-failure", description="when the supervisor restarts the "
                             "device: always, on-failure (exit status not 0) or never")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        try:
            validate_device_id(value)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        return value

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_spec(value, info)

    @field_validator("preset", "input")
    @classmethod
    def _existing_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.field_name == "preset":
            lv2_specs = [s for s in _specs_so_far(info) if s.startswith(LV2_PREFIX)]
            if lv2_specs and not value.lower().endswith((PRESET_SUFFIX, ".ttl")):
                return _check_lv2_preset(value, lv2_specs)
        path = _resolve(value, _base_dir(info))
        if info.field_name == "preset" and path.suffix.lower() not in (PRESET_SUFFIX, ".ttl"):
            raise _fail(f"not a preset: {_short(value)} (expected a {PRESET_SUFFIX} file, an "
                        "LV2 preset .ttl file, or an LV2 plugin's preset name)")
        if not path.is_file():
            raise _fail(f"file not found: {path}")
        return str(path)

    @field_validator("state")
    @classmethod
    def _state(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else str(_resolve(value, _base_dir(info)))

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> DeviceConfig:
        if (info.context or {}).get("located"):
            return self  # the loader runs the same rules with positions
        problems = _device_rules(self.model_dump(by_alias=True), ())
        if problems:
            raise _fail("; ".join(f"{_path_text(loc) or 'device'}: {msg}"
                                  for loc, _, msg in problems))
        return self

    def stages(self) -> list[str]:
        """The plugin specs this device runs, first to last (empty for synth and jack)."""
        if self.kind == "plugin" and self.plugin:
            return [self.plugin]
        if self.kind == "chain" and self.plugins:
            return list(self.plugins)
        return []


class RackConfig(_Model):
    """A rack: the devices one supervisor runs, each in its own process."""

    name: str = Field(description="the rack's name; names its state folder "
                      "(A-Z a-z 0-9 _ . -)",
                      json_schema_extra={"pattern": "^[A-Za-z0-9_.-]+$"})
    defaults: Defaults = Field(default_factory=Defaults,
                               description="settings every device gets unless it sets its own")
    state_dir: str | None = Field(
        None, description="where device ids and plugin states are kept (relative to the rack "
        "file's folder); default $XDG_STATE_HOME/discolink-bridge/NAME, "
        "~/.local/state/discolink-bridge/NAME without XDG_STATE_HOME")
    devices: list[DeviceConfig] = Field(description="the devices, at least one; ids unique",
                                        json_schema_extra={"minItems": 1})

    _state_home: str | None = PrivateAttr(default=None)  # $XDG_STATE_HOME when loaded
    _namespace_overridden: bool = PrivateAttr(default=False)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value) or set(value) == {"."}:
            raise _fail(f"rack name {_short(value)}: use letters, digits and _ . - only (it "
                        "names the state folder)")
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise _fail("empty path: leave state_dir out for the default folder")
        return str(_resolve(value, _base_dir(info)))

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> RackConfig:
        if (info.context or {}).get("located"):
            return self
        problems = _rack_rules(self.model_dump(by_alias=True))
        if problems:
            raise _fail("; ".join(f"{_path_text(loc)}: {msg}" for loc, _, msg in problems))
        return self

    # -- queries --------------------------------------------------------------------------
    @property
    def namespace_overridden(self) -> bool:
        """True when $DISCOLINK_NAMESPACE replaced the file's defaults.namespace."""
        return self._namespace_overridden

    def device(self, id: str) -> DeviceConfig:
        """The device with this id; KeyError lists the ids there are."""
        for dev in self.devices:
            if dev.id == id:
                return dev
        raise KeyError(f"no device {id!r} in rack {self.name!r}; devices: "
                       f"{', '.join(d.id for d in self.devices)}")

    @property
    def namespace(self) -> str:
        """The namespace every device registers in: $DISCOLINK_NAMESPACE (when load_rack saw
        it), else defaults.namespace, else ``default``."""
        return self.defaults.namespace or "default"

    def effective(self, dev: DeviceConfig) -> dict[str, Any]:
        """The device's resolved settings: sample_rate, block_size, mode, clock and fill,
        its own where it sets them, else the rack's defaults. A jack device ignores them all
        (it runs at the JACK server's rate and period)."""
        d = self.defaults
        return {
            "sample_rate": d.sample_rate if dev.sample_rate is None else dev.sample_rate,
            "block_size": d.block_size if dev.block_size is None else dev.block_size,
            "mode": dev.mode or d.mode,
            "clock": dev.clock or d.clock,
            "fill": d.fill if dev.fill is None else dev.fill,
        }

    def state_folder(self) -> Path:
        """state_dir, else $XDG_STATE_HOME/discolink-bridge/<name> (~/.local/state without
        XDG_STATE_HOME; the environment load_rack was given)."""
        if self.state_dir:
            return Path(self.state_dir)
        home = self._state_home if self._state_home is not None else \
            os.environ.get("XDG_STATE_HOME")
        base = Path(home) if home else Path.home() / ".local" / "state"
        return base / "discolink-bridge" / self.name

    def state_file(self, dev: DeviceConfig) -> Path:
        """Where the device's id and (plugin and chain) state are kept: its ``state``, else
        ``<state folder>/<id>.json``."""
        return Path(dev.state) if dev.state else self.state_folder() / f"{dev.id}.json"


# ---- static rules (kinds, taps, ids) ------------------------------------------------------------

_Loc = tuple[Any, ...]
_Problem = tuple[_Loc, str, str]  # (loc, "key" | "value", message)

_NOT_JACK = ("sample_rate", "block_size", "mode", "clock", "fill", "midi_in", "return",
             "fixed_format", "rt_priority", "sysex_limit")
_FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "plugin": ("plugin",), "plugins": ("chain",),
    **dict.fromkeys(("plugin_name", "params", "preset", "state", "tap", "input"), _PLUGIN_KINDS),
    **dict.fromkeys(("connect", "midi_out", "jack_server", "client_name"), ("jack",)),
    **dict.fromkeys(_NOT_JACK, _LOCAL_KINDS),
}


def _misplaced(field: str, kind: str) -> str:
    """Why ``field`` is wrong on a device of ``kind``."""
    if field == "plugin":
        if kind == "chain":
            return "a chain lists its plugins under plugins:, not plugin:"
        return f"plugin is for kind plugin devices, not kind {kind}"
    if field == "plugins":
        if kind == "plugin":
            return "kind plugin runs one plugin: give plugin: SPEC (or use kind chain)"
        return f"plugins is for kind chain devices, not kind {kind}"
    if field == "params":
        what = "the built-in synth" if kind == "synth" else "a jack device"
        return f"params are for plugin and chain devices; {what} has no parameters"
    if field == "tap":
        return f"a tap picks a stage of a plugin or chain device; kind {kind} has no stages"
    if _FIELD_KINDS[field] == _PLUGIN_KINDS:
        return f"{field} is for plugin and chain devices, not kind {kind}"
    if _FIELD_KINDS[field] == ("jack",):
        return f"{field} is for kind jack devices, not kind {kind}"
    if field in ("sample_rate", "block_size", "clock", "fill", "fixed_format"):
        return (f"{field} does not apply to kind jack: a jack device runs at the JACK "
                "server's sample rate and period")
    return f"{field} does not apply to kind jack"


def _is_set(value: Any) -> bool:
    return value not in (None, [], {}, False)


def _stage_label(spec: str) -> str:
    if spec.startswith(LV2_PREFIX):  # the plugin's name, as the running chain shows it
        from ..adapters import lv2

        try:
            return lv2.world().plugin_name(_lv2_plugin(spec))
        except PluginError:
            return spec[len(LV2_PREFIX):]
    return spec[len(BUILTIN_PREFIX):] if spec.startswith(BUILTIN_PREFIX) else Path(spec).stem


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def resolve_tap(specs: list[str], tap: str) -> str:
    """``tap`` checked against a chain of ``specs`` and rewritten with the stage's number
    (``Reverb:1-2`` -> ``3:1-2``; ``out`` stays ``out``), so it resolves at run time whatever
    name the plugin itself reports. A stage name matches a spec's file stem or built-in name,
    ignoring case, spaces and punctuation. ValueError says what taps there are."""
    source, sep, chans = tap.strip().partition(":")
    labels = [_stage_label(s) for s in specs]
    if source.lower() in ("", "out"):
        stage = "out"
    elif source.isdigit() and 1 <= int(source) <= len(specs):
        stage = str(int(source))
    else:
        matches = [i for i, label in enumerate(labels) if _norm(label) == _norm(source)]
        if len(matches) > 1:
            raise ValueError(f"tap {tap!r} is ambiguous: stages "
                             f"{' and '.join(str(i + 1) for i in matches)} are both "
                             f"{labels[matches[0]]}; use the stage's number")
        if not matches:
            numbers = "1" if len(specs) == 1 else f"1..{len(specs)}"
            raise ValueError(f"no tap {tap!r}{_did_you_mean(source, labels)}; taps: out, a "
                             f"stage number {numbers} or name ({', '.join(labels)}), "
                             "optionally with channels like out:3-4")
        stage = str(matches[0] + 1)
    if sep:
        try:
            parse_channels(chans)
        except ValueError as exc:
            raise ValueError(f"tap {tap!r}: {exc}") from None
        return f"{stage}:{chans.strip()}"
    return stage


def _device_rules(d: dict, loc: _Loc, skip: frozenset = frozenset()) -> list[_Problem]:
    """Cross-field checks of one device's (raw or dumped) mapping. ``skip``: locs that
    already have an error (their values can't be trusted)."""
    kind = d.get("kind")
    if not isinstance(kind, str) or kind not in KINDS or (*loc, "kind") in skip:
        return []
    out: list[_Problem] = []
    values = dict(d)
    if "return_audio" in values:
        values.setdefault("return", values.pop("return_audio"))

    def ok(field: str) -> bool:
        return field in values and (*loc, field) not in skip

    for field, kinds in _FIELD_KINDS.items():
        if kind not in kinds and field in values and _is_set(values[field]):
            key = field if field in d else "return_audio"
            out.append(((*loc, key), "key", _misplaced(field, kind)))
    specs: list[str] | None = None
    if kind == "plugin":
        if values.get("plugin") is None:
            out.append(((*loc, "plugin"), "value",
                        "kind plugin needs plugin: a .vst3 path, lv2:URI or builtin:NAME"))
        elif ok("plugin") and isinstance(values["plugin"], str):
            specs = [values["plugin"]]
    elif kind == "chain":
        plugins = values.get("plugins")
        if plugins is None:
            out.append(((*loc, "plugins"), "value",
                        "kind chain needs plugins: a list of 2 or more plugin specs"))
        elif isinstance(plugins, list) and len(plugins) < 2:
            out.append(((*loc, "plugins"), "value",
                        f"a chain needs at least 2 plugins, got {len(plugins)} (for one, "
                        "use kind plugin with plugin: SPEC)"))
        elif isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            for i, spec in enumerate(plugins[1:], 1):
                if spec.lower() == "builtin:sine":
                    out.append(((*loc, "plugins", i), "value",
                                f"{spec} is an instrument: only the first plugin of a "
                                "chain may be one"))
            if ok("plugins"):
                specs = plugins
    channels = values.get("channels")
    channel_list = isinstance(channels, str) and not channels.strip().isdigit() \
        and ok("channels")
    if channel_list and kind not in _PLUGIN_KINDS:
        out.append(((*loc, "channels"), "value",
                    f"a channel list is for plugin and chain devices; kind {kind} takes a "
                    "count 1..12"))
    tap = values.get("tap")
    if kind in _PLUGIN_KINDS and isinstance(tap, str | int) and ok("tap"):
        tap = str(tap)
        if channel_list and tap.strip().partition(":")[0].lower() not in ("", "out"):
            out.append(((*loc, "tap"), "value",
                        f"channels {channels!r} is a list, which taps the last stage; give "
                        "channels as a count when tap chooses the source"))
        elif specs is not None:
            try:
                resolve_tap(specs, tap)
            except ValueError as exc:
                out.append(((*loc, "tap"), "value", str(exc)))
    if kind in _PLUGIN_KINDS and specs is not None:
        builtins_only = all(s.startswith(BUILTIN_PREFIX) for s in specs)
        if _is_set(values.get("preset")) and builtins_only:
            out.append(((*loc, "preset"), "value",
                        "no stage of this device loads presets (VST3 and LV2 plugins do, built-ins "
                        "don't)"))
        if _is_set(values.get("input")) and specs[0].lower() == "builtin:sine":
            out.append(((*loc, "input"), "value",
                        f"{specs[0]} is an instrument: it takes no input audio; input is "
                        "for effects"))
    if kind == "jack":
        connect = values.get("connect")
        if isinstance(connect, list) and isinstance(channels, int) and ok("connect") \
                and ok("channels") and len(connect) > channels:
            out.append(((*loc, "connect"), "value",
                        f"{len(connect)} connect patterns for {channels} input port(s): "
                        f"each pattern feeds one port; set channels to {len(connect)} or "
                        "more"))
    return out


def _rack_rules(data: dict, skip: frozenset = frozenset(),
                line_of: Callable[[_Loc], int] | None = None) -> list[_Problem]:
    """Device rules for every device, unique ids, and at least one device."""
    devices = data.get("devices")
    if not isinstance(devices, list) or ("devices",) in skip:
        return []
    out: list[_Problem] = []
    if not devices:
        out.append((("devices",), "value",
                    "no devices: a rack needs at least one (list them under devices:)"))
    if len(devices) > REGISTRY_SLOTS:
        out.append((("devices", REGISTRY_SLOTS), "value",
                    f"{len(devices)} devices, but a namespace's registry has "
                    f"{REGISTRY_SLOTS} slots: a rack runs at most {REGISTRY_SLOTS} devices "
                    f"(this is device {REGISTRY_SLOTS + 1}); split the rest into a rack in "
                    "another namespace"))

    def where(j: int) -> str:
        line = line_of(("devices", j, "id")) if line_of else None
        return f"devices[{j}]" + (f" (line {line})" if line else "")

    first: dict[tuple[str, int | None], int] = {}  # canonical (Name, N) -> device index
    bare: dict[str, int] = {}  # Name -> the first device whose id is a bare Name
    explicit: dict[str, int] = {}  # Name -> the first device whose id is Name:N
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or ("devices", i) in skip:
            continue
        out += _device_rules(d, ("devices", i), skip)
        dev_id = d.get("id")
        if not isinstance(dev_id, str) or ("devices", i, "id") in skip:
            continue
        try:
            name, instance = validate_device_id(dev_id)
        except ValueError:
            continue  # reported by the field's own check
        loc = ("devices", i, "id")
        if (name, instance) in first:
            same = "" if instance is None or dev_id == f"{name}:{instance}" else \
                f" (that is {name}:{instance})"
            out.append((loc, "value", f"duplicate device id {dev_id!r}{same}: "
                        f"{where(first[name, instance])} has it already; ids must be unique "
                        "in a rack"))
            continue
        first[name, instance] = i
        # A bare Name takes the lowest free Name:N when it starts, so next to a Name:N the
        # two race for one instance: which one wins would depend on start order.
        other = explicit.get(name) if instance is None else bare.get(name)
        if other is not None:
            other_id = devices[other]["id"]
            bare_id = dev_id if instance is None else other_id
            out.append((loc, "value",
                        f"id {dev_id!r} clashes with {other_id!r} of {where(other)}: "
                        f"{bare_id!r} takes the lowest free {name}:N, so the two race for "
                        f"one instance; give every {name} device an explicit instance "
                        f"({name}:0, {name}:1, ...)"))
        (bare if instance is None else explicit).setdefault(name, i)
    return out


def state_folder_problem(folder: Path) -> str | None:
    """Why a rack can't keep its state in ``folder``, or None when it can: the folder, or
    the nearest part of its path that exists, must be a folder this process can create
    entries in. Probed by creating and removing a temporary folder, which tells the truth
    for root too (os.access doesn't) and leaves nothing behind."""
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".discolink-check-", dir=probe))
    except OSError as exc:
        how = "write in it" if probe == Path(folder) else f"create it in {probe}"
        return f"cannot {how}: {exc.strerror or exc}"
    return None


# Files of the state folder that are the rack's own, not any device's.
RACK_IDS_FILE = "rack.json"
RACK_LOCK_FILE = "rack.lock"


def _start_rules(rack: RackConfig, state_dir_given: bool,
                 flagged: set[int]) -> list[tuple[_Loc | None, str, str]]:
    """What would stop a valid-looking rack when it starts: a state folder it can't write,
    a state file it can't write or that two devices (or a device and the rack) share, and
    parameter values (:func:`_stage_rules`). ``flagged``: devices that already have a
    problem, whose stages aren't checked. A problem whose loc is None isn't in the file (the
    default state folder, --state-dir)."""
    out: list[tuple[_Loc | None, str, str]] = []
    folder = rack.state_folder()
    problem = state_folder_problem(folder)
    if problem and rack.state_dir and not state_dir_given:
        out.append((("state_dir",), "value", f"{folder}: {problem}"))
    elif problem:
        what = "--state-dir" if state_dir_given else "the default state folder"
        out.append((None, "value", f"{what} {folder}: {problem}"))
    owners = {os.path.realpath(folder / RACK_IDS_FILE): -1,
              os.path.realpath(folder / RACK_LOCK_FILE): -1}
    for i, dev in enumerate(rack.devices[:REGISTRY_SLOTS]):
        if dev.kind not in _PLUGIN_KINDS:
            continue
        problem = _state_file_problem(rack, dev, owners, i)
        if problem:
            out.append((("devices", i, "state" if dev.state else "id"), "value", problem))
        if i not in flagged:
            out += _stage_rules(rack, dev, i)
    return out


def _state_file_problem(rack: RackConfig, dev: DeviceConfig, owners: dict[str, int],
                        i: int) -> str | None:
    """Why device ``i`` can't keep its state file; ``owners`` maps each real path taken so
    far to its device (-1: the rack's own files)."""
    path = Path(rack.state_file(dev))
    if dev.state and path.is_dir():
        return f"{path} is a folder; give a file"
    if dev.state and path.parent != rack.state_folder():  # the rack makes only its own folder
        if not path.parent.is_dir():
            return f"the state file's folder {path.parent} does not exist; create it"
        problem = state_folder_problem(path.parent)
        if problem:
            return f"state file {path}: {problem}"
    j = owners.setdefault(os.path.realpath(path), i)
    if j == -1:
        return f"state file {path} is the rack's own file; give this device another id or state:"
    if j != i:
        return (f"state file {path} is devices[{j}]'s ({rack.devices[j].id!r}) too: the two "
                "would overwrite each other's plugin state; give each device its own state:")
    return None


def _stage_rules(rack: RackConfig, dev: DeviceConfig, i: int) -> list[_Problem]:
    """Check a device's ``params`` (and, for built-ins only, its chain) as its process would,
    where that is cheap: built-ins load in milliseconds, and are built and set like the
    device does (pedalboard checks their ranges); an LV2 plugin's parameters and ranges come
    from its Turtle through lilv, nothing instantiated. A device with a VST3 stage is left to
    its start: loading one runs the plugin's code and can take seconds."""
    specs = dev.stages()
    if not specs or not all(s.startswith((BUILTIN_PREFIX, LV2_PREFIX)) for s in specs):
        return []
    from ..adapters.plugin_device import build_chain, match_parameter
    from ..adapters.stage import load_stage

    s = rack.effective(dev)
    stages: list[tuple[str, list[Parameter], Any]] = []  # (name, parameters, loaded stage)
    try:
        if all(spec.startswith(BUILTIN_PREFIX) for spec in specs):
            chain = build_chain(specs, sample_rate=s["sample_rate"],
                                block_size=s["block_size"],
                                channels=None if dev.channels is None else str(dev.channels),
                                tap=resolve_tap(specs, dev.tap) if dev.tap else None)
            stages = [(st.name, st.parameters, st) for st in chain.stages]
        elif dev.params:
            for spec in specs:
                if spec.startswith(BUILTIN_PREFIX):
                    st = load_stage(spec, sample_rate=s["sample_rate"],
                                    block_size=s["block_size"])
                    stages.append((st.name, st.parameters, st))
                else:
                    from ..adapters import lv2

                    info = lv2.describe_plugin(lv2.world(), _lv2_plugin(spec))
                    stages.append((info.name, [p.parameter for p in info.ports if p.parameter],
                                   None))
    except (ValueError, PluginError) as exc:
        return [(("devices", i), "value", str(exc))]
    named = [(name, p) for name, params, _ in stages for p in params]
    owner = [st for _, params, st in stages for _ in params]
    out: list[_Problem] = []
    for key, value in dev.params.items():
        loc = ("devices", i, "params", key)
        index = match_parameter(named, key)
        if index is None:
            names = [p.key if len(stages) == 1 else f"{stage}.{p.key}" for stage, p in named]
            out.append((loc, "key", f"no parameter {key!r}{_did_you_mean(key, names)}; "
                        f"parameters: {', '.join(names)}"))
            continue
        try:
            checked = named[index][1].check(value)
            if owner[index] is not None:  # a built-in: pedalboard itself checks the range
                owner[index].set(named[index][1].key, checked)
        except ValueError as exc:
            out.append((loc, "value", str(exc)))
    return out


# ---- YAML with positions ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers, so ``tap: 1:2`` stays text, and with
    a nesting limit (YAML_DEPTH_MAX) reported at the node that passes it."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > YAML_DEPTH_MAX:
                raise yaml.composer.ComposerError(
                    None, None, f"lists and mappings nested more than {YAML_DEPTH_MAX} deep "
                    "(a rack file needs about 5 levels)", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
               r"|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
               r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class _Positions:
    """Data path -> (key mark or None, value mark), 0-based as PyYAML keeps them."""

    marks: dict[_Loc, tuple[yaml.Mark | None, yaml.Mark]]

    def find(self, loc: _Loc, at: str) -> tuple[int, int]:
        """1-based (line, column): the key or value at ``loc``, else the nearest enclosing
        node that exists (a missing field: the mapping that lacks it)."""
        probe = loc
        while probe not in self.marks and probe:
            probe = probe[:-1]
        key, value = self.marks.get(probe, (None, None))
        mark = key if at == "key" and probe == loc and key is not None else value
        return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


_SCAN_LIMIT = 100_000  # nodes; aliases can make a small file a huge tree


def _scan(loader: _Loader, node: yaml.Node, loc: _Loc, pos: _Positions,
          dups: list[tuple[_Loc, yaml.Mark, str]], active: set[int]) -> None:
    """Record positions under ``node`` and every duplicate key. A duplicate's positions
    replace the first one's: the constructed data holds the last value."""
    if id(node) in active or len(pos.marks) > _SCAN_LIMIT or len(loc) > YAML_DEPTH_MAX:
        return  # a recursive alias, a bomb, or aliases nested deep: no positions needed
    active.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for knode, vnode in node.value:
                if knode.tag == _MERGE_TAG:
                    continue
                key = _key_of(loader, knode)
                try:
                    if key in seen:
                        dups.append(((*loc, key), knode.start_mark,
                                     f"duplicate key {key!r}: it is already set on line "
                                     f"{seen[key].line + 1} (a key may appear once per "
                                     "mapping)"))
                    seen.setdefault(key, knode.start_mark)
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
                pos.marks[(*loc, key)] = (knode.start_mark, vnode.start_mark)
                _scan(loader, vnode, (*loc, key), pos, dups, active)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                pos.marks[(*loc, i)] = (None, item.start_mark)
                _scan(loader, item, (*loc, i), pos, dups, active)
    finally:
        active.discard(id(node))


def _key_of(loader: _Loader, knode: yaml.Node) -> Any:
    if isinstance(knode, yaml.ScalarNode):
        try:
            return loader.construct_object(knode)
        except yaml.YAMLError:
            return knode.value
    return object()  # a complex key: never equal to a field name


def _yaml_issue(filename: str, text: str, exc: yaml.YAMLError) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:
        at = getattr(exc, "position", 0) or 0
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
    problem = getattr(exc, "problem", None)
    if problem is None:
        return ConfigIssue(filename, line, column, "", f"YAML error: {exc}")
    context = getattr(exc, "context", None)
    cmark = getattr(exc, "context_mark", None)
    if problem == "but found another document":
        problem, context = "a rack file holds one YAML document; this starts a second", None
    if context and cmark is not None and cmark is not mark:
        problem += f" ({context} at line {cmark.line + 1}, column {cmark.column + 1})"
    elif context:
        problem += f" ({context})"
    if "could not determine a constructor" in problem:
        problem += "; only plain YAML is allowed, no tags"
    if "expected <block end>" in problem:
        problem += "; is the indentation consistent?"
    nested = problem.startswith("lists and mappings nested")
    what = "YAML error" if nested or isinstance(exc, yaml.constructor.ConstructorError) else \
        "YAML syntax error"
    return ConfigIssue(filename, line, column, "", f"{what}: {problem}")


def _path_text(loc: _Loc, is_key: Callable[[_Loc], bool] | None = None) -> str:
    """``devices[2].plugin``; ``is_key`` tells a mapping's integer key from a list index."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and not (is_key and is_key(loc[:i + 1])):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_+-]+", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


# ---- pydantic errors as issues ---------------------------------------------------------------


_MAPPING = "a mapping (key: value)"
_TYPE_WORDS = {"int_type": "an integer", "string_type": "a string", "bool_type": "true or false",
               "float_type": "a number", "list_type": "a list", "dict_type": _MAPPING,
               "model_type": _MAPPING, "model_attributes_type": _MAPPING}


def _field_name(loc: _Loc) -> str:
    return next((p for p in reversed(loc) if isinstance(p, str)), "")


def _allowed_keys(loc: _Loc) -> list[str]:
    """The keys a mapping at ``loc`` (the parent of a bad key) accepts."""
    model: type[BaseModel] = RackConfig
    if loc == ("defaults",):
        model = Defaults
    elif len(loc) == 2 and loc[0] == "devices":
        model = DeviceConfig
    elif loc:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(err: dict) -> tuple[_Loc, str, str]:
    """(loc, "key" | "value", message) for one pydantic error."""
    loc = tuple(err["loc"])
    kind, value = err["type"], err.get("input")
    field = _field_name(loc)
    if loc and loc[-1] == "[key]":
        return loc[:-1], "key", f"expected a text key, got {_describe(value)}"
    if kind == "rack":
        return loc, "value", err["ctx"]["message"]
    if kind == "value_error":
        return loc, "value", str(err["ctx"]["error"])
    if kind == "missing":
        what = {"id": " (the device id, Name or Name:N)",
                "kind": f" (one of {', '.join(KINDS)})",
                "name": " (the rack's name)",
                "devices": " (the list of devices)"}.get(field, "")
        return loc, "value", f"required field missing{what}"
    if kind == "invalid_key":
        return loc, "key", f"unknown key {value!r}: keys here are field names (text)"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(field, allowed)
        text = f"unknown key {field!r}"
        if hint:
            return loc, "key", text + hint
        return loc, "key", text + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
    if kind == "literal_error":
        choices = _CHOICES.get(field, ())
        listed = ", ".join(choices) if choices else err["ctx"].get("expected", "")
        shown = _short(value) if isinstance(value, str) else _describe(value)
        return loc, "value", f"must be one of {listed}; got {shown}" + \
            _did_you_mean(value, choices)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        hint = _RANGES.get(field) or ", ".join(f"{k} {v}" for k, v in err["ctx"].items())
        return loc, "value", f"must be {hint}, got {value}"
    if kind in _TYPE_WORDS:
        want = _TYPE_WORDS[kind]
        if field == "devices" and kind == "list_type":
            want = "a list of devices (- id: ...)"
        elif kind in ("model_type", "model_attributes_type") and loc[:1] == ("devices",):
            want = "a mapping (id: ..., kind: ...)"
        return loc, "value", f"expected {want}, got {_describe(value)}"
    if kind == "finite_number":
        return loc, "value", "must be a finite number"
    return loc, "value", err["msg"]


# ---- loading ------------------------------------------------------------------------------------


def parse_rack(text: str, filename: str = "<string>", *, base_dir: Path | None = None,
               environ: Mapping[str, str] | None = None,
               state_dir: Path | None = None) -> RackConfig:
    """Validate rack YAML ``text``; ConfigError lists every problem. Relative paths resolve
    against ``base_dir`` (default: the current folder). ``environ`` (default os.environ):
    $DISCOLINK_NAMESPACE overrides defaults.namespace, $XDG_STATE_HOME places the default
    state folder. ``state_dir`` (``rack --state-dir``) replaces the file's state folder.

    Beyond the schema, it checks what would stop the rack from starting: the device count
    against the registry's slots, clashing ids and state files, a state folder that can't
    be written, and built-in plugins' parameter values (built-ins load in milliseconds)."""
    if len(text) > RACK_FILE_MAX_BYTES and len(text.encode()) > RACK_FILE_MAX_BYTES:
        raise ConfigError([_too_large(filename, len(text.encode()))])
    try:
        return _parse(text, filename, base_dir, environ, state_dir)
    except RecursionError:  # deep data through aliases that the depth limit can't see
        raise ConfigError([ConfigIssue(
            filename, 0, 0, "", f"YAML error: the data nests too deep to check (more than "
            f"{YAML_DEPTH_MAX} levels of lists and mappings, through aliases)")]) from None


def _too_large(filename: str, size: int) -> ConfigIssue:
    return ConfigIssue(filename, 0, 0, "", f"the file is {size:,} bytes; a rack file may be "
                       f"at most {RACK_FILE_MAX_BYTES:,} bytes ({RACK_FILE_MAX_BYTES >> 10} "
                       "KiB): is it the right file?")


def _parse(text: str, filename: str, base_dir: Path | None,
           environ: Mapping[str, str] | None, state_dir: Path | None) -> RackConfig:
    env = os.environ if environ is None else environ
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                raise ConfigError([ConfigIssue(
                    filename, 1, 1, "", "the file is empty: a rack needs at least name: and "
                    "devices:")])
            pos = _Positions({(): (None, root.start_mark)})
            dups: list[tuple[_Loc, yaml.Mark, str]] = []
            _scan(loader, root, (), pos, dups, set())
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise ConfigError([_yaml_issue(filename, text, exc)]) from None
    finally:
        loader.dispose()

    def issue(loc: _Loc, at: str, message: str) -> ConfigIssue:
        line, column = pos.find(loc, at)
        return ConfigIssue(filename, line, column, _path_text(loc, is_key), message)

    def is_key(loc: _Loc) -> bool:
        return pos.marks.get(loc, (None, None))[0] is not None

    issues = [ConfigIssue(filename, m.line + 1, m.column + 1, _path_text(loc, is_key), msg)
              for loc, m, msg in dups]
    if not isinstance(data, dict):
        issues.append(issue((), "value", "the top level must be a mapping (name: ..., "
                            f"devices: ...), got {_describe(data)}"))
        raise ConfigError(issues)

    rack: RackConfig | None = None
    bad: set[_Loc] = set()
    try:
        rack = RackConfig.model_validate(data, context={"base_dir": base, "located": True})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc, at, message = _message(err)
            bad.add(loc)
            issues.append(issue(loc, at, message))
    for loc, at, message in _rack_rules(data, frozenset(bad),
                                        lambda loc: pos.find(loc, "value")[0]):
        if loc not in bad:
            bad.add(loc)
            issues.append(issue(loc, at, message))

    env_ns = env.get(NAMESPACE_ENV) or None
    if env_ns is not None:
        try:
            namespace_from_env(env_ns)
        except ValueError as exc:
            issues.append(issue(("defaults", "namespace"), "value",
                                f"${NAMESPACE_ENV} overrides it, but: {exc}"))
    if rack is not None:
        rack._state_home = env.get("XDG_STATE_HOME") or ""
        if state_dir is not None:
            rack.state_dir = str(Path(state_dir).expanduser().resolve())
        flagged = {loc[1] for loc in bad if len(loc) > 1 and loc[0] == "devices"}
        for loc, at, message in _start_rules(rack, state_dir is not None, flagged):
            issues.append(issue(loc, at, message) if loc is not None else
                          ConfigIssue(filename, 0, 0, "", message))  # not from the file
    if issues:
        unique = {(i.line, i.column, i.path, i.message): i for i in issues}
        raise ConfigError(sorted(unique.values(), key=lambda i: (i.line, i.column)))
    assert rack is not None
    if env_ns is not None:
        rack.defaults = rack.defaults.model_copy(update={"namespace": env_ns})
        rack._namespace_overridden = True
    return rack


def load_rack(path: Path, *, environ: Mapping[str, str] | None = None,
              state_dir: Path | None = None) -> RackConfig:
    """Read and validate a rack file; relative paths in it resolve against its folder.
    ConfigError lists every problem, as ``file:line:column: path: message``. A file larger
    than RACK_FILE_MAX_BYTES is refused unread; one that isn't UTF-8 is refused at the line
    and column of its first bad byte."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(RACK_FILE_MAX_BYTES + 1)
            if len(raw) > RACK_FILE_MAX_BYTES:
                raise ConfigError([_too_large(str(path), os.fstat(f.fileno()).st_size)])
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 0, 0, "", "cannot read the rack file: "
                                       f"{exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError([ConfigIssue(
            str(path), raw.count(b"\n", 0, exc.start) + 1, column, "",
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} here can't be decoded; save the "
            "file as UTF-8")]) from None
    return parse_rack(text, str(path), base_dir=path.resolve().parent, environ=environ,
                      state_dir=state_dir)


# ---- schema, fingerprints, command lines ------------------------------------------------------


def json_schema() -> dict:
    """The JSON Schema of a rack file (for editors; `discolink-bridge rack schema`)."""
    schema = RackConfig.model_json_schema(by_alias=True)
    return {"$schema": SCHEMA_DIALECT, "title": "discolink-bridge rack",
            **{k: v for k, v in schema.items() if k != "title"}}


def device_fingerprint(rack: RackConfig, dev: DeviceConfig) -> str:
    """A stable hash of everything that affects how ``dev`` runs: its definition (paths
    resolved) and its settings after the rack's defaults, the namespace, and its state file.
    The restart policy is left out: changing it restarts nothing."""
    settings = {} if dev.kind == "jack" else rack.effective(dev)
    payload = {"device": dev.model_dump(mode="json", exclude={"restart"}),
               "settings": settings, "namespace": rack.namespace,
               "state_file": str(rack.state_file(dev))}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def device_argv(rack: RackConfig, dev: DeviceConfig, *, device_id: str | None = None,
                state_file: Path | None = None) -> list[str]:
    """The arguments after ``python -m bridge`` that run ``dev``: ``--namespace NS device
    ...`` or ``--namespace NS jack-device ...``. ``device_id`` replaces dev.id (a saved
    ``Name:N``); plugin and chain devices get ``--state`` (``state_file``, default
    :meth:`RackConfig.state_file`) and ``--preset`` (used when no saved state exists yet)."""
    s = rack.effective(dev)
    argv = ["--namespace", rack.namespace]
    dev_id = device_id or dev.id
    if dev.kind == "jack":
        argv += ["jack-device", "--id", dev_id]
        for pattern in dev.connect:
            argv += ["--connect", pattern]
        if dev.channels is not None:
            argv += ["--channels", str(dev.channels)]
        for pattern in dev.midi_out:
            argv += ["--midi-out", pattern]
        if dev.jack_server:
            argv += ["--jack-server", dev.jack_server]
        if dev.client_name:
            argv += ["--client-name", dev.client_name]
        return argv
    argv += ["device", "--id", dev_id, "--samplerate", str(s["sample_rate"]),
             "--blocksize", str(s["block_size"]), "--mode", s["mode"], "--clock", s["clock"],
             "--fill", str(s["fill"])]
    if dev.channels is not None:
        argv += ["--channels", str(dev.channels)]
    if dev.return_audio:
        argv.append("--return")
    specs = dev.stages()
    for spec in specs:
        argv += ["--plugin", spec]
    if specs:
        if dev.plugin_name:
            argv += ["--plugin-name", dev.plugin_name]
        if dev.tap:
            argv += ["--tap", resolve_tap(specs, dev.tap)]
        for key, value in dev.params.items():
            argv += ["--param", f"{key}={value!r}"]
        argv += ["--state", str(state_file or rack.state_file(dev))]
        if dev.preset:
            argv += ["--preset", str(dev.preset)]
        if dev.input:
            argv += ["--input", dev.input]
    if dev.fixed_format:
        argv.append("--fixed-format")
    for pattern in dev.midi_in:
        argv += ["--midi-in", pattern]
    if dev.sysex_limit is not None:
        argv += ["--sysex-limit", str(dev.sysex_limit)]
    if dev.rt_priority is not None:
        argv += ["--rt-priority", str(dev.rt_priority)]
    return argv
