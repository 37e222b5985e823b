"""LV2 plugins through lilv: ``lv2:URI`` or ``lv2:NAME`` as a :class:`~.stage.Stage`.

lilv (Debian's liblilv-0-0, the reference LV2 host library) is called through ctypes: it
reads the plugins' Turtle, instantiates them and saves and restores their state, none of
which happens per block. What plugins call back into, and the block call itself, is C
(bridge/adapters/_lv2host.c): the URID map, the log, the worker (its own thread, lock-free
rings) and ``run()``, so no plugin ever calls Python and a block neither allocates nor locks.

The host follows jalv, the reference host: the features are built before instantiation,
every port is connected (CV ports and control outputs too), and every optional descriptor
function (``activate``, ``deactivate``, ``extension_data``, ``cleanup``) is checked before it
is called. A plugin that requires a feature this host lacks, or has a port of a kind it
can't connect, is refused with a PluginError naming it.

Plugins are found on ``$LV2_PATH`` (lilv's default, ``~/.lv2:/usr/local/lib/lv2:
/usr/lib/lv2``, when it is unset). ``lv2:NAME`` matches a plugin's name, ignoring case;
an ambiguous name lists the candidates, an unknown one suggests the nearest.

Ports: audio ports map to the stage's channels; an atom input that supports
``midi:MidiEvent`` takes the block's MIDI at its frame offsets, and an atom output that
does passes its MIDI on to the next stage; control inputs are parameters (range, default,
enumeration, toggled, integer, logarithmic, ranges in units of the sample rate), control
outputs are read-only parameters, the ``lv2:latency`` output is the stage's latency; CV
inputs get silence. State: lilv's state (port values and the plugin's own properties, file
paths mapped by lilv) as Turtle text in the stage's state document, with the files the
plugin made through state:makePath carried inside it (so the document stands alone: a
restart, another device, SetState); presets by name or URI.
"""

from __future__ import annotations

import atexit
import ctypes
import difflib
import os
import re
import shutil
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin

import numpy as np

from ..midi.event import MidiEvent
from . import _lv2host
from .stage import LV2_PREFIX, Parameter, PluginError, Stage, UnknownPluginError, state_bytes

# ---- URIs -----------------------------------------------------------------------------------

_LV2 = "http://lv2plug.in/ns/lv2core#"
_EXT = "http://lv2plug.in/ns/ext/"
ATOM_SEQUENCE = _EXT + "atom#Sequence"
ATOM_CHUNK = _EXT + "atom#Chunk"
ATOM_FLOAT = _EXT + "atom#Float"
ATOM_INT = _EXT + "atom#Int"
MIDI_EVENT = _EXT + "midi#MidiEvent"
WORKER_INTERFACE = _EXT + "worker#interface"
PRESET = _EXT + "presets#Preset"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_UNITS = "http://lv2plug.in/ns/extensions/units#"

# The features this host provides: what a plugin may require. Those with data are built per
# instance (_Features); the rest are flags with NULL data.
PROVIDED_FEATURES = frozenset({
    _EXT + "urid#map", _EXT + "urid#unmap", _EXT + "options#options",
    _EXT + "buf-size#boundedBlockLength", _EXT + "log#log", _EXT + "worker#schedule",
    _EXT + "state#makePath", _EXT + "state#freePath", _EXT + "state#mapPath",
    _EXT + "state#loadDefaultState",
    _LV2 + "isLive", _LV2 + "inPlaceBroken", _LV2 + "hardRTCapable",
})
_FLAG_FEATURES = (_EXT + "buf-size#boundedBlockLength", _LV2 + "isLive",
                  _EXT + "state#loadDefaultState")
MAX_BLOCK = 4096  # the largest block a device runs (rack: 16..4096); buffers are this big
ATOM_BUFFER = 32768  # bytes per atom port (more if the plugin asks, rsz:minimumSize)
WORKER_RING = 1 << 16

# ---- lilv through ctypes --------------------------------------------------------------------

_p = ctypes.c_void_p
_s = ctypes.c_char_p
_u32 = ctypes.c_uint32

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "lilv_world_new": (_p, []),
    "lilv_world_load_all": (None, [_p]),
    "lilv_world_load_bundle": (None, [_p, _p]),
    "lilv_world_load_resource": (ctypes.c_int, [_p, _p]),
    "lilv_world_set_option": (None, [_p, _s, _p]),
    "lilv_world_get_all_plugins": (_p, [_p]),
    "lilv_world_get": (_p, [_p, _p, _p, _p]),
    "lilv_new_uri": (_p, [_p, _s]),
    "lilv_new_string": (_p, [_p, _s]),
    "lilv_new_file_uri": (_p, [_p, _s, _s]),
    "lilv_node_free": (None, [_p]),
    "lilv_node_as_string": (_s, [_p]),
    "lilv_node_as_uri": (_s, [_p]),
    "lilv_node_as_float": (ctypes.c_float, [_p]),
    "lilv_node_is_float": (ctypes.c_bool, [_p]),
    "lilv_node_is_int": (ctypes.c_bool, [_p]),
    "lilv_node_is_bool": (ctypes.c_bool, [_p]),
    "lilv_node_is_uri": (ctypes.c_bool, [_p]),
    "lilv_node_as_bool": (ctypes.c_bool, [_p]),
    "lilv_node_get_path": (_p, [_p, _p]),
    "lilv_free": (None, [_p]),
    "lilv_plugins_size": (ctypes.c_uint, [_p]),
    "lilv_plugins_begin": (_p, [_p]),
    "lilv_plugins_next": (_p, [_p, _p]),
    "lilv_plugins_is_end": (ctypes.c_bool, [_p, _p]),
    "lilv_plugins_get": (_p, [_p, _p]),
    "lilv_plugins_get_by_uri": (_p, [_p, _p]),
    "lilv_nodes_size": (ctypes.c_uint, [_p]),
    "lilv_nodes_begin": (_p, [_p]),
    "lilv_nodes_next": (_p, [_p, _p]),
    "lilv_nodes_is_end": (ctypes.c_bool, [_p, _p]),
    "lilv_nodes_get": (_p, [_p, _p]),
    "lilv_nodes_free": (None, [_p]),
    "lilv_scale_points_size": (ctypes.c_uint, [_p]),
    "lilv_scale_points_begin": (_p, [_p]),
    "lilv_scale_points_next": (_p, [_p, _p]),
    "lilv_scale_points_is_end": (ctypes.c_bool, [_p, _p]),
    "lilv_scale_points_get": (_p, [_p, _p]),
    "lilv_scale_points_free": (None, [_p]),
    "lilv_scale_point_get_label": (_p, [_p]),
    "lilv_scale_point_get_value": (_p, [_p]),
    "lilv_plugin_get_uri": (_p, [_p]),
    "lilv_plugin_get_bundle_uri": (_p, [_p]),
    "lilv_plugin_get_name": (_p, [_p]),
    "lilv_plugin_get_author_name": (_p, [_p]),
    "lilv_plugin_get_class": (_p, [_p]),
    "lilv_plugin_class_get_label": (_p, [_p]),
    "lilv_plugin_get_num_ports": (_u32, [_p]),
    "lilv_plugin_get_port_by_index": (_p, [_p, _u32]),
    "lilv_plugin_get_required_features": (_p, [_p]),
    "lilv_plugin_has_extension_data": (ctypes.c_bool, [_p, _p]),
    "lilv_plugin_get_related": (_p, [_p, _p]),
    "lilv_plugin_get_port_by_designation": (_p, [_p, _p, _p]),
    "lilv_plugin_verify": (ctypes.c_bool, [_p]),
    "lilv_plugin_instantiate": (_p, [_p, ctypes.c_double, _p]),
    "lilv_instance_free": (None, [_p]),
    "lilv_port_get_symbol": (_p, [_p, _p]),
    "lilv_port_get_name": (_p, [_p, _p]),
    "lilv_port_is_a": (ctypes.c_bool, [_p, _p, _p]),
    "lilv_port_supports_event": (ctypes.c_bool, [_p, _p, _p]),
    "lilv_port_has_property": (ctypes.c_bool, [_p, _p, _p]),
    "lilv_port_get_range": (None, [_p, _p, _p, _p, _p]),
    "lilv_port_get_scale_points": (_p, [_p, _p]),
    "lilv_port_get": (_p, [_p, _p, _p]),
    "lilv_state_new_from_instance": (_p, [_p, _p, _p, _s, _s, _s, _s, _p, _p, _u32, _p]),
    "lilv_state_restore": (None, [_p, _p, _p, _p, _u32, _p]),
    "lilv_state_to_string": (_p, [_p, _p, _p, _p, _s, _s]),
    "lilv_state_new_from_string": (_p, [_p, _p, _s]),
    "lilv_state_new_from_world": (_p, [_p, _p, _p]),
    "lilv_state_new_from_file": (_p, [_p, _p, _p, _s]),
    "lilv_state_free": (None, [_p]),
}

_GET_VALUE = ctypes.CFUNCTYPE(_p, _s, _p, ctypes.POINTER(_u32), ctypes.POINTER(_u32))
_SET_VALUE = ctypes.CFUNCTYPE(None, _s, _p, _p, _u32, _u32)


class _Descriptor(ctypes.Structure):
    """LV2_Descriptor: the plugin's entry points. Optional ones may be NULL."""

    _fields_ = [("URI", _s), ("instantiate", _p), ("connect_port", _p), ("activate", _p),
                ("run", _p), ("deactivate", _p), ("cleanup", _p), ("extension_data", _p)]


class _Instance(ctypes.Structure):
    """LilvInstance: lilv's instance functions are inline in lilv.h, so we read this."""

    _fields_ = [("descriptor", ctypes.POINTER(_Descriptor)), ("handle", _p), ("pimpl", _p)]


class _Feature(ctypes.Structure):
    _fields_ = [("URI", _s), ("data", _p)]


class _Option(ctypes.Structure):
    """LV2_Options_Option."""

    _fields_ = [("context", _u32), ("subject", _u32), ("key", _u32), ("size", _u32),
                ("type", _u32), ("value", _p)]


_CONNECT = ctypes.CFUNCTYPE(None, _p, _u32, _p)
_HANDLE_FN = ctypes.CFUNCTYPE(None, _p)
_EXTENSION = ctypes.CFUNCTYPE(_p, _s)

_lib: ctypes.CDLL | None = None
_host: ctypes.CDLL | None = None
_lock = threading.RLock()


def lilv() -> ctypes.CDLL:
    """liblilv-0, with the signatures of what we call; PluginError when it is missing."""
    global _lib, _host
    with _lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL("liblilv-0.so.0")
            except OSError:
                raise PluginError("LV2 needs liblilv-0 (Debian: apt-get install "
                                  "liblilv-0-0; ./setup.sh installs it)") from None
            for name, (res, args) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            host = ctypes.CDLL(_lv2host.__file__)
            for name, res, args in (
                    ("dl_urid_new", _p, []), ("dl_urid_map_feature", _p, [_p]),
                    ("dl_urid_unmap_feature", _p, [_p]), ("dl_urid_map", _u32, [_p, _s]),
                    ("dl_urid_unmap", _s, [_p, _u32]), ("dl_log_new", _p, [_p, _s]),
                    ("dl_log_feature", _p, [_p]), ("dl_log_free", None, [_p]),
                    ("dl_runner_new", _p, [_u32]), ("dl_runner_schedule_feature", _p, [_p]),
                    ("dl_runner_bind", ctypes.c_int, [_p, _p, _p, _p]),
                    ("dl_runner_add_atom_output", ctypes.c_int, [_p, _p, _u32]),
                    ("dl_runner_lock_work", None, [_p]), ("dl_runner_unlock_work", None, [_p]),
                    ("dl_runner_stop", None, [_p]), ("dl_runner_free", None, [_p]),
                    ("dl_runner_run", None, [_p, _u32]),
                    ("dl_runner_counters", None, [_p, ctypes.POINTER(ctypes.c_uint64)]),
                    ("dl_map_path_feature", _p, []), ("dl_free_path_feature", _p, [])):
                fn = getattr(host, name)
                fn.restype, fn.argtypes = res, args
            _lib, _host = lib, host
        return _lib


def host_lib() -> ctypes.CDLL:
    lilv()
    assert _host is not None
    return _host


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


# ---- the world: every plugin's Turtle, loaded once per process -------------------------------


class World:
    """A lilv world with every bundle on the LV2 path loaded, and the process's URID map.

    One per process (:func:`world`): URIDs must agree between all instances, and loading the
    Turtle of a few hundred plugins takes a while.
    """

    def __init__(self, extra_dirs: Sequence[str | os.PathLike] = ()) -> None:
        lib = lilv()
        host = host_lib()
        self.lib = lib
        self.ptr = lib.lilv_world_new()
        # Always our own path, of absolute folders: lilv turns a relative $LV2_PATH entry
        # into an invalid bundle URI and then crashes (a segfault in lilv 0.24).
        dirs = [os.path.abspath(os.path.expanduser(str(d))) for d in extra_dirs]
        path = os.pathsep.join([*dirs, *search_path()])
        node = lib.lilv_new_string(self.ptr, path.encode())
        lib.lilv_world_set_option(self.ptr, b"http://drobilla.net/ns/lilv#lv2-path", node)
        lib.lilv_node_free(node)
        lib.lilv_world_load_all(self.ptr)
        self.plugins = lib.lilv_world_get_all_plugins(self.ptr)
        self.urids = host.dl_urid_new()
        self.map_feature = host.dl_urid_map_feature(self.urids)
        self.unmap_feature = host.dl_urid_unmap_feature(self.urids)
        self._nodes: dict[str, int] = {}

    def uri(self, text: str) -> int:
        """A URI node, kept for the world's life (so callers never free it)."""
        node = self._nodes.get(text)
        if node is None:
            node = self._nodes[text] = self.lib.lilv_new_uri(self.ptr, text.encode())
        return node

    def map(self, uri: str) -> int:
        return host_lib().dl_urid_map(self.urids, uri.encode())

    def unmap(self, urid: int) -> str:
        return _text(host_lib().dl_urid_unmap(self.urids, urid))

    def all_plugins(self) -> Iterator[int]:
        lib = self.lib
        it = lib.lilv_plugins_begin(self.plugins)
        while not lib.lilv_plugins_is_end(self.plugins, it):
            yield lib.lilv_plugins_get(self.plugins, it)
            it = lib.lilv_plugins_next(self.plugins, it)

    def nodes(self, nodes: int, free: bool = True) -> list[str]:
        """A LilvNodes collection as strings (freed unless ``free`` is False)."""
        lib = self.lib
        out = []
        if nodes:
            it = lib.lilv_nodes_begin(nodes)
            while not lib.lilv_nodes_is_end(nodes, it):
                out.append(_text(lib.lilv_node_as_string(lib.lilv_nodes_get(nodes, it))))
                it = lib.lilv_nodes_next(nodes, it)
            if free:
                lib.lilv_nodes_free(nodes)
        return out

    def take_string(self, node: int) -> str:
        """The text of a node lilv gave us to own, which is then freed."""
        if not node:
            return ""
        text = _text(self.lib.lilv_node_as_string(node))
        self.lib.lilv_node_free(node)
        return text

    def plugin_uri(self, plugin: int) -> str:
        return _text(self.lib.lilv_node_as_uri(self.lib.lilv_plugin_get_uri(plugin)))

    def plugin_name(self, plugin: int) -> str:
        return self.take_string(self.lib.lilv_plugin_get_name(plugin)) or self.plugin_uri(plugin)

    def bundle_path(self, plugin: int) -> str:
        node = self.lib.lilv_plugin_get_bundle_uri(plugin)
        raw = self.lib.lilv_node_get_path(node, None)
        if not raw:
            return ""
        path = ctypes.string_at(raw).decode("utf-8", "replace")
        self.lib.lilv_free(raw)
        return path.rstrip("/")

    def presets(self, plugin: int) -> list[tuple[str, str]]:
        """(URI, label) of a plugin's presets, from lilv (its bundles and ~/.lv2), by label."""
        lib = self.lib
        out = []
        for uri in self.nodes(lib.lilv_plugin_get_related(plugin, self.uri(PRESET))):
            node = self.uri(uri)
            lib.lilv_world_load_resource(self.ptr, node)
            label = self.take_string(lib.lilv_world_get(self.ptr, node, self.uri(RDFS_LABEL),
                                                        None))
            out.append((uri, label or uri.rsplit("#", 1)[-1].rsplit("/", 1)[-1]))
        return sorted(out, key=lambda t: t[1].casefold())

    def find_preset(self, plugin: int, preset: str) -> str:
        """The URI of a plugin's preset by label (ignoring case) or URI; ValueError lists
        the presets there are, nearest first."""
        presets = self.presets(plugin)
        for uri, label in presets:
            if preset == uri or label.casefold() == preset.casefold():
                return uri
        labels = [label for _, label in presets]
        close = difflib.get_close_matches(preset, labels, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = ", ".join(repr(label) for label in labels[:30]) or "none"
        raise ValueError(f"{self.plugin_name(plugin)} has no preset {preset!r}{hint}; its "
                         f"presets: {shown}")

    def catalogue(self) -> list[tuple[str, str, int]]:
        """(uri, name, plugin pointer) of every plugin, sorted by name."""
        return sorted(((self.plugin_uri(p), self.plugin_name(p), p)
                       for p in self.all_plugins()), key=lambda t: (t[1].casefold(), t[0]))

    def find(self, spec: str) -> int:
        """The plugin ``lv2:URI`` or ``lv2:NAME`` names; UnknownPluginError (with did-you-
        mean, or the candidates of an ambiguous name) when there is not exactly one."""
        text = spec[len(LV2_PREFIX):] if spec.startswith(LV2_PREFIX) else spec
        if not text.strip():
            raise UnknownPluginError(f"{spec}: give a plugin URI or name after lv2: "
                                     "(`lv2ls` or `plugin scan` lists them)")
        if ":" in text:  # a URI
            node = self.lib.lilv_new_uri(self.ptr, text.encode())
            plugin = self.lib.lilv_plugins_get_by_uri(self.plugins, node)
            self.lib.lilv_node_free(node)
            if plugin:
                return plugin
        entries = self.catalogue()
        matches = [e for e in entries if e[1].casefold() == text.casefold()]
        if len(matches) == 1:
            return matches[0][2]
        if len(matches) > 1:
            raise UnknownPluginError(
                f"{spec}: {len(matches)} LV2 plugins are named {text!r}; give one's URI: "
                + ", ".join(f"lv2:{uri}" for uri, _, _ in matches))
        raise UnknownPluginError(f"{spec}: no such LV2 plugin{did_you_mean(text, entries)} "
                                 f"(searched {os.pathsep.join(search_path())})")


def did_you_mean(text: str, entries: Sequence[tuple[str, str, Any]]) -> str:
    """`` (did you mean lv2:X?)`` for the nearest plugin URI or name, or nothing."""
    words = {uri.casefold(): uri for uri, _, _ in entries}
    words.update({name.casefold(): name for _, name, _ in entries})
    close = difflib.get_close_matches(text.casefold(), list(words), n=1, cutoff=0.6)
    return f" (did you mean lv2:{words[close[0]]}?)" if close else ""


def search_path() -> list[str]:
    """Where lilv looks for bundles: ``$LV2_PATH`` (each entry made absolute, as lilv needs),
    else its default folders."""
    env = os.environ.get("LV2_PATH")
    if env:
        return [os.path.abspath(os.path.expanduser(p)) for p in env.split(os.pathsep) if p]
    return [str(Path.home() / ".lv2"), "/usr/local/lib/lv2", "/usr/lib/lv2"]


_world: World | None = None


def world() -> World:
    """The process's lilv world (created on first use)."""
    global _world
    if _world is None:
        with _lock:
            if _world is None:
                _world = World()
    return _world


# ---- what a plugin is, from its Turtle -------------------------------------------------------


@dataclass
class Port:
    """One port of a plugin, as its Turtle describes it."""

    index: int
    symbol: str
    name: str
    kind: str  # "audio", "control", "cv", "atom" or "unknown"
    output: bool
    midi: bool = False  # an atom port that carries MIDI events
    optional: bool = False  # lv2:connectionOptional
    latency: bool = False  # the lv2:latency output
    min_size: int = 0  # rsz:minimumSize of an atom port
    parameter: Parameter | None = None  # control ports


@dataclass
class PluginInfo:
    """A plugin's description from its Turtle (nothing is loaded to make it)."""

    uri: str
    name: str
    vendor: str
    plugin_class: str
    bundle: str
    ports: list[Port]
    required_features: list[str]
    has_worker: bool
    valid: bool = True  # lilv_plugin_verify: the Turtle has what a plugin needs

    @property
    def audio_inputs(self) -> int:
        return sum(p.kind == "audio" and not p.output for p in self.ports)

    @property
    def audio_outputs(self) -> int:
        return sum(p.kind == "audio" and p.output for p in self.ports)

    @property
    def midi_inputs(self) -> int:
        return sum(p.midi and not p.output for p in self.ports)

    @property
    def midi_outputs(self) -> int:
        return sum(p.midi and p.output for p in self.ports)

    @property
    def kind(self) -> str:
        """instrument (no audio in: a synth or generator), effect, or midi (no audio)."""
        if self.audio_inputs:
            return "effect"
        if self.audio_outputs:
            return "instrument"
        return "midi"

    def missing_features(self) -> list[str]:
        return [f for f in self.required_features if f not in PROVIDED_FEATURES]

    def unsupported_ports(self) -> list[Port]:
        return [p for p in self.ports if p.kind == "unknown" and not p.optional]

    def refusal(self) -> str | None:
        """Why this host can't run the plugin, or None."""
        if not self.valid:
            return ("has invalid Turtle data (lilv could not verify it: a syntax error, or "
                    "a port without index or symbol)")
        missing = self.missing_features()
        if missing:
            return (f"needs the LV2 feature{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)}, which this host does not provide")
        bad = self.unsupported_ports()
        if bad:
            return (f"has port {bad[0].symbol!r} of a kind this host can't connect (only "
                    "audio, control, CV and atom ports)")
        return None


def describe_plugin(w: World, plugin: int, sample_rate: float = 48000.0) -> PluginInfo:
    """The :class:`PluginInfo` of one plugin of world ``w``."""
    lib = w.lib
    valid = bool(lib.lilv_plugin_verify(plugin))
    cls = lib.lilv_plugin_get_class(plugin)
    label = _text(lib.lilv_node_as_string(lib.lilv_plugin_class_get_label(cls))) if cls else ""
    ports = [_describe_port(w, plugin, i, sample_rate)
             for i in range(lib.lilv_plugin_get_num_ports(plugin))]
    return PluginInfo(
        uri=w.plugin_uri(plugin), name=w.plugin_name(plugin),
        vendor=w.take_string(lib.lilv_plugin_get_author_name(plugin)),
        plugin_class=label, bundle=w.bundle_path(plugin), ports=ports,
        required_features=w.nodes(lib.lilv_plugin_get_required_features(plugin)),
        has_worker=bool(lib.lilv_plugin_has_extension_data(plugin, w.uri(WORKER_INTERFACE))),
        valid=valid and all(p.symbol for p in ports))


def _describe_port(w: World, plugin: int, index: int, sample_rate: float) -> Port:
    lib = w.lib
    port = lib.lilv_plugin_get_port_by_index(plugin, index)

    def is_a(uri: str) -> bool:
        return bool(lib.lilv_port_is_a(plugin, port, w.uri(uri)))

    def has(uri: str) -> bool:
        return bool(lib.lilv_port_has_property(plugin, port, w.uri(uri)))

    symbol = _text(lib.lilv_node_as_string(lib.lilv_port_get_symbol(plugin, port)))
    name = w.take_string(lib.lilv_port_get_name(plugin, port)) or symbol
    output = is_a(_LV2 + "OutputPort")
    if is_a(_LV2 + "AudioPort"):
        kind = "audio"
    elif is_a(_LV2 + "ControlPort"):
        kind = "control"
    elif is_a(_LV2 + "CVPort"):
        kind = "cv"
    elif is_a(_EXT + "atom#AtomPort"):
        kind = "atom"
    else:
        kind = "unknown"
    p = Port(index, symbol, name, kind, output, optional=has(_LV2 + "connectionOptional"))
    if kind == "atom":
        p.midi = bool(lib.lilv_port_supports_event(plugin, port, w.uri(MIDI_EVENT)))
        size = lib.lilv_port_get(plugin, port, w.uri(_EXT + "resize-port#minimumSize"))
        if size:
            p.min_size = int(lib.lilv_node_as_float(size))
            lib.lilv_node_free(size)
    if kind == "control":
        designation = lib.lilv_port_get(plugin, port, w.uri(_LV2 + "designation"))
        p.latency = output and (has(_LV2 + "reportsLatency") or (
            bool(designation) and _text(lib.lilv_node_as_string(designation))
            == _LV2 + "latency"))
        if designation:
            lib.lilv_node_free(designation)
        p.parameter = _control_parameter(w, plugin, port, symbol, name, output, sample_rate,
                                         has)
    return p


def _control_parameter(w: World, plugin: int, port: int, symbol: str, name: str,
                       output: bool, sample_rate: float, has: Any) -> Parameter:
    lib = w.lib
    nodes = [_p(), _p(), _p()]
    lib.lilv_port_get_range(plugin, port, *(ctypes.byref(n) for n in nodes))
    values: list[float | None] = []
    for n in nodes:
        if n.value:
            values.append(float(lib.lilv_node_as_float(n.value)))
            lib.lilv_node_free(n.value)
        else:
            values.append(None)
    default, lo, hi = values
    if has(_LV2 + "sampleRate"):  # the range is in units of the sample rate
        lo, hi, default = (None if v is None else v * sample_rate for v in (lo, hi, default))
    choices = []
    points = lib.lilv_port_get_scale_points(plugin, port)
    if points:
        it = lib.lilv_scale_points_begin(points)
        while not lib.lilv_scale_points_is_end(points, it):
            sp = lib.lilv_scale_points_get(points, it)
            value = lib.lilv_node_as_float(lib.lilv_scale_point_get_value(sp))
            label = _text(lib.lilv_node_as_string(lib.lilv_scale_point_get_label(sp)))
            choices.append((float(value), label))
            it = lib.lilv_scale_points_next(points, it)
        lib.lilv_scale_points_free(points)
    unit = ""
    unit_node = lib.lilv_port_get(plugin, port, w.uri(_UNITS + "unit"))
    if unit_node:  # a unit of the units ontology (units:db), or one of the plugin's own
        unit = w.take_string(lib.lilv_world_get(w.ptr, unit_node, w.uri(_UNITS + "symbol"),
                                                None))
        if not unit and lib.lilv_node_is_uri(unit_node):
            unit = _text(lib.lilv_node_as_string(unit_node)).rsplit("#", 1)[-1]
        lib.lilv_node_free(unit_node)
    toggled = has(_LV2 + "toggled")
    return Parameter(
        key=symbol, name=name, min=lo, max=hi, default=default, unit=unit, toggled=toggled,
        integer=has(_LV2 + "integer") and not toggled,
        logarithmic=has(_EXT + "port-props#logarithmic"),
        # an enumeration restricts the values to its points; other scale points are labels
        choices=tuple(sorted(choices)) if has(_LV2 + "enumeration") else (),
        output=output)


# ---- an instance ------------------------------------------------------------------------------


_EVENT = struct.Struct("<qII")  # LV2_Atom_Event: time in frames, then the body's atom header
_MESSAGE = [struct.Struct(f"{n}s") for n in range(4)]  # MIDI bodies of 0-3 bytes, no slicing
_SEQUENCE = struct.Struct("<IIII")  # LV2_Atom_Sequence: atom header, unit, pad

_live: weakref.WeakSet[Lv2Stage] = weakref.WeakSet()


_FOLDER_PREFIX = "discolink-lv2-"  # + the owner's pid + "-" + mkdtemp's letters
_swept = False


def _sweep_orphan_folders() -> None:
    """Remove the instance folders of processes that are gone (killed -9, so they could not
    clean up), once per process, when its first LV2 stage loads (never on the audio
    thread). A folder whose pid is alive, or not ours to remove, is left alone."""
    global _swept
    if _swept:
        return
    _swept = True
    for path in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*-*"):
        pid = path.name[len(_FOLDER_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive, another user's
            pass


@atexit.register
def _close_all() -> None:
    """Stop the worker threads and free the instances still open when Python exits."""
    for st in list(_live):
        st.close()


class Lv2Stage(Stage):
    """An LV2 plugin instance as a stage of a chain (see the module's docstring)."""

    __hash__ = object.__hash__  # an instance is itself, whatever its fields (WeakSet)
    __eq__ = object.__eq__

    def __init__(self, spec: str, w: World, plugin: int, info: PluginInfo, sample_rate: int,
                 block_size: int, warm_up: bool = False) -> None:
        super().__init__(spec, info.name, info.kind, info.audio_inputs, info.audio_outputs,
                         vendor=info.vendor, format="LV2",
                         parameters=[p.parameter for p in info.ports if p.parameter],
                         midi_in=info.midi_inputs > 0, midi_out=info.midi_outputs > 0)
        refusal = info.refusal()
        if refusal:
            raise PluginError(f"{spec}: {info.name} {refusal}")
        self.world = w
        self.plugin = plugin
        self.info = info
        self.uri = info.uri
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.block_frames = block_size  # a MIDI effect's block (it gets no audio to count)
        self.max_block = max(block_size, MAX_BLOCK)
        self._instance: ctypes.POINTER(_Instance) | None = None  # type: ignore[valid-type]
        self._runner = 0
        self._log = 0
        self._closed = False
        # The instance's folder (state:makePath, lilv's save directory), made when first
        # needed: a plugin that never makes a file, or one that fails or crashes before,
        # leaves nothing in $TMPDIR.
        self._files_dir: str | None = None
        self._files_lock = threading.Lock()
        _sweep_orphan_folders()
        try:
            self._build_buffers()
            self._instantiate()
        except BaseException:
            self.close()
            raise
        _live.add(self)
        self._load_default_state()
        if warm_up:
            self.warm_up()

    def _load_default_state(self) -> None:
        """The plugin's default state (``state:state`` in its Turtle), if it has one, as
        state:loadDefaultState promises and jalv does."""
        w = self.world
        state = w.lib.lilv_state_new_from_world(w.ptr, w.map_feature, w.uri(self.uri))
        if state:
            try:
                self._restore(state)
            finally:
                w.lib.lilv_state_free(state)

    def warm_up(self) -> None:
        """One short block of silence: the latency port gets its value, and a plugin that
        crashes in run() does so now (the scan's probe does this). A device doesn't: the
        plugin's first block is then the first real one, with the parameters already set,
        as in an offline render (smoothing plugins would otherwise glide from defaults)."""
        self.run_block(min(self.block_size, 64))
        self.latency = self._read_latency()

    # -- set-up (jalv's order: features, instantiate, connect every port, activate) ------
    def _build_buffers(self) -> None:
        info = self.info
        ports = info.ports
        self._controls = np.zeros(max(1, len(ports)), np.float32)
        for p in ports:
            if p.parameter is not None:
                default = p.parameter.default
                lo = p.parameter.min
                self._controls[p.index] = default if default is not None else (lo or 0.0)
        audio_in = [p for p in ports if p.kind == "audio" and not p.output]
        audio_out = [p for p in ports if p.kind == "audio" and p.output]
        self._audio_in = np.zeros((max(1, len(audio_in)), self.max_block), np.float32)
        self._audio_out = np.zeros((max(1, len(audio_out)), self.max_block), np.float32)
        self._audio_in_ports = audio_in
        self._audio_out_ports = audio_out
        self._in_views: dict[int, np.ndarray] = {}  # by block size (see _view)
        self._out_views: dict[int, np.ndarray] = {}
        self._cv = np.zeros(self.max_block, np.float32)  # CV inputs: silence
        cv_out = [p for p in ports if p.kind == "cv" and p.output]
        self._cv_out = np.zeros((max(1, len(cv_out)), self.max_block), np.float32)
        self._cv_out_ports = cv_out
        # atom buffers, 8-byte aligned: uint64 storage viewed as bytes
        self._atoms: dict[int, np.ndarray] = {}
        for p in ports:
            if p.kind == "atom":
                size = max(ATOM_BUFFER, p.min_size)
                size += -size % 8
                self._atoms[p.index] = np.zeros(size // 8, np.uint64).view(np.uint8)
        self._midi_in = [p.index for p in ports if p.kind == "atom" and p.midi and not p.output]
        self._atom_in = [p.index for p in ports if p.kind == "atom" and not p.output]
        self._midi_out = [p.index for p in ports if p.kind == "atom" and p.midi and p.output]
        self._atom_views = {i: memoryview(buf) for i, buf in self._atoms.items()}
        w = self.world
        self._urid_sequence = w.map(ATOM_SEQUENCE)
        self._urid_midi = w.map(MIDI_EVENT)
        self._latency_port = next((p.index for p in ports if p.latency), None)
        self._by_key = {p.parameter.key: p.index for p in ports if p.parameter is not None}
        for i in self._atom_in:
            self._empty_sequence(i)

    def _features(self) -> tuple[Any, list[Any]]:
        """The NULL-terminated LV2_Feature* array, and what must stay alive with it."""
        w, host = self.world, host_lib()
        keep: list[Any] = []
        self._log = host.dl_log_new(w.urids, self.name.encode()[:100])
        self._runner = host.dl_runner_new(WORKER_RING)
        if not self._log or not self._runner:
            raise PluginError(f"{self.spec}: out of memory")
        rate = ctypes.c_float(self.sample_rate)
        nominal = ctypes.c_int32(min(self.max_block, max(1, self.block_size)))
        maximum = ctypes.c_int32(self.max_block)
        minimum = ctypes.c_int32(1)
        sequence = ctypes.c_int32(ATOM_BUFFER)  # every atom buffer is at least this big
        keep += [rate, nominal, maximum, minimum, sequence]
        options = (_Option * 6)()
        for o, (key, typ, value) in zip(options, (
                (_EXT + "parameters#sampleRate", ATOM_FLOAT, rate),
                (_EXT + "buf-size#nominalBlockLength", ATOM_INT, nominal),
                (_EXT + "buf-size#maxBlockLength", ATOM_INT, maximum),
                (_EXT + "buf-size#minBlockLength", ATOM_INT, minimum),
                (_EXT + "buf-size#sequenceSize", ATOM_INT, sequence)), strict=False):
            o.context, o.subject, o.key = 0, 0, w.map(key)  # LV2_OPTIONS_INSTANCE
            o.size, o.type, o.value = 4, w.map(typ), ctypes.addressof(value)
        keep.append(options)
        self._make_path = _MakePath(self._folder)
        keep.append(self._make_path)
        data = [
            (_EXT + "urid#map", w.map_feature), (_EXT + "urid#unmap", w.unmap_feature),
            (_EXT + "options#options", ctypes.addressof(options)),
            (_EXT + "log#log", host.dl_log_feature(self._log)),
            (_EXT + "worker#schedule", host.dl_runner_schedule_feature(self._runner)),
            (_EXT + "state#makePath", ctypes.addressof(self._make_path.struct)),
            (_EXT + "state#mapPath", host.dl_map_path_feature()),
            (_EXT + "state#freePath", host.dl_free_path_feature()),
            *((uri, None) for uri in _FLAG_FEATURES)]
        feats = (_Feature * len(data))()
        for f, (uri, ptr) in zip(feats, data, strict=True):
            f.URI, f.data = uri.encode(), ptr
        array = (ctypes.POINTER(_Feature) * (len(data) + 1))()
        for i in range(len(data)):
            array[i] = ctypes.pointer(feats[i])
        array[len(data)] = None
        keep += [feats, array]
        return array, keep

    def _instantiate(self) -> None:
        lib, host = self.world.lib, host_lib()
        features, self._keep = self._features()
        inst = lib.lilv_plugin_instantiate(self.plugin, float(self.sample_rate),
                                           ctypes.cast(features, _p))
        if not inst:
            raise PluginError(f"{self.spec}: {self.name} failed to instantiate (see the "
                              "plugin's messages above)")
        self._instance = ctypes.cast(inst, ctypes.POINTER(_Instance))
        desc = self._instance.contents.descriptor.contents
        self._handle = self._instance.contents.handle
        self._desc = desc
        if not desc.run or not desc.connect_port:
            raise PluginError(f"{self.spec}: {self.name}'s descriptor has no "
                              f"{'run' if not desc.run else 'connect_port'} function")
        worker_iface = None
        if self.info.has_worker and desc.extension_data:
            worker_iface = _EXTENSION(desc.extension_data)(WORKER_INTERFACE.encode())
        err = host.dl_runner_bind(self._runner, ctypes.cast(self._instance.contents.descriptor,
                                                            _p), self._handle, worker_iface)
        if err:
            raise PluginError(f"{self.spec}: cannot start the worker thread ({os.strerror(err)})")
        self._connect_all()
        if desc.activate:  # optional: calling a NULL one would crash the process
            _HANDLE_FN(desc.activate)(self._handle)
        self._active = True

    def _connect_all(self) -> None:
        connect = _CONNECT(self._desc.connect_port)
        host = host_lib()
        handle = self._handle
        controls = self._controls.ctypes.data
        row_in = {p.index: k for k, p in enumerate(self._audio_in_ports)}
        row_out = {p.index: k for k, p in enumerate(self._audio_out_ports)}
        row_cv = {p.index: k for k, p in enumerate(self._cv_out_ports)}
        for p in self.info.ports:
            if p.kind == "audio":
                buf = self._audio_out[row_out[p.index]] if p.output \
                    else self._audio_in[row_in[p.index]]
                ptr = buf.ctypes.data
            elif p.kind == "control":
                ptr = controls + 4 * p.index
            elif p.kind == "cv":
                ptr = self._cv_out[row_cv[p.index]].ctypes.data if p.output \
                    else self._cv.ctypes.data
            elif p.kind == "atom":
                ptr = self._atoms[p.index].ctypes.data
                if p.output:
                    host.dl_runner_add_atom_output(self._runner, ptr, len(self._atoms[p.index]))
            else:  # an optional port of a kind we don't know
                ptr = None
            connect(handle, p.index, ptr)
        self._run_address = int(self._runner)

    # -- the block ------------------------------------------------------------------------
    def _empty_sequence(self, index: int) -> None:
        _SEQUENCE.pack_into(self._atom_views[index], 0, 8, self._urid_sequence, 0, 0)

    def _write_midi(self, events: Sequence[MidiEvent], frames: int) -> None:
        """This block's MIDI into every MIDI input, as an atom sequence (frame offsets)."""
        for index in self._midi_in:
            view = self._atom_views[index]
            limit = len(view) - 16
            pos = 16
            for e in events:
                data = e.data
                n = len(data)
                if not n or pos + 16 + n > limit:
                    continue
                offset = e.offset if 0 <= e.offset < frames else (frames - 1 if e.offset >=
                                                                   frames else 0)
                _EVENT.pack_into(view, pos, offset, n, self._urid_midi)
                if n < 4:
                    _MESSAGE[n].pack_into(view, pos + 16, data)
                else:  # SysEx
                    view[pos + 16:pos + 16 + n] = data
                pos += 16 + n + (-n % 8)
            _SEQUENCE.pack_into(view, 0, pos - 8, self._urid_sequence, 0, 0)

    def _read_midi(self) -> list[MidiEvent]:
        out: list[MidiEvent] = []
        for index in self._midi_out:
            view = self._atom_views[index]
            size, typ = struct.unpack_from("<II", view, 0)
            if typ != self._urid_sequence:
                continue
            end = min(8 + size, len(view))
            pos = 16
            while pos + 16 <= end:
                frames, n, kind = _EVENT.unpack_from(view, pos)
                if kind == self._urid_midi and pos + 16 + n <= end:
                    out.append(MidiEvent(int(frames), bytes(view[pos + 16:pos + 16 + n])))
                pos += 16 + n + (-n % 8)
        return out

    def run_block(self, frames: int) -> None:
        """One plugin block of ``frames`` frames, with the port buffers as they are."""
        _lv2host.run(self._run_address, frames)
        if self._midi_out:
            self.midi_output = self._read_midi()

    def render(self, events: Sequence[MidiEvent], frames: int, sample_rate: int,
               channels: int) -> np.ndarray:
        if sample_rate != self.sample_rate:
            self._follow_rate(sample_rate)
        if self._midi_in:
            self.track_notes(events)
            self._write_midi(events, frames)
        _lv2host.run(self._run_address, frames)
        if self._midi_out:
            self.midi_output = self._read_midi()
        out = self._out_views.get(frames)
        return out if out is not None else self._view(self._out_views, self._audio_out,
                                                      self.outputs, frames)

    @staticmethod
    def _view(cache: dict, buffer: np.ndarray, rows: int, frames: int) -> np.ndarray:
        """A port buffer's (rows, frames) view, made once per block size and kept: a block
        reuses it rather than slicing anew."""
        view = cache[frames] = buffer[:rows, :frames]
        return view

    def process(self, audio: np.ndarray | None, sample_rate: int,
                events: Sequence[MidiEvent] = ()) -> np.ndarray | None:
        frames = self.block_frames if audio is None else audio.shape[1]
        if sample_rate != self.sample_rate:
            self._follow_rate(sample_rate)
        if audio is None:
            if self._midi_in:
                self._write_midi(events, frames)
            _lv2host.run(self._run_address, frames)
            if self._midi_out:
                self.midi_output = self._read_midi()
            return None
        # the chain maps the audio to our input count first
        into = self._in_views.get(frames)
        if into is None:
            into = self._view(self._in_views, self._audio_in, self.inputs, frames)
        np.copyto(into, audio)
        if self._midi_in:
            self._write_midi(events, frames)
        _lv2host.run(self._run_address, frames)
        if self._midi_out:
            self.midi_output = self._read_midi()
        out = self._out_views.get(frames)
        return out if out is not None else self._view(self._out_views, self._audio_out,
                                                      self.outputs, frames)

    def reset(self) -> None:
        """Deactivate and activate again: the plugin's own reset (all voices silent)."""
        desc = self._desc
        if desc.deactivate:
            _HANDLE_FN(desc.deactivate)(self._handle)
        if desc.activate:
            _HANDLE_FN(desc.activate)(self._handle)

    def current_latency(self) -> int:
        """The latency port's value after the last block (0 without one)."""
        self.latency = self._read_latency()
        return self.latency

    def _read_latency(self) -> int:
        if self._latency_port is None:
            return 0
        value = float(self._controls[self._latency_port])
        return max(0, round(value)) if np.isfinite(value) else 0

    # -- parameters -------------------------------------------------------------------------
    def get(self, key: str) -> float:
        return float(self._controls[self._by_key[key]])

    def set(self, key: str, value: float) -> None:
        self._controls[self._by_key[key]] = value

    # -- state ------------------------------------------------------------------------------
    def _get_format_state(self) -> dict:
        """lilv's state of the instance (port values and the plugin's properties) as Turtle,
        and the files in the instance's folder that it names, as ``lv2_files`` (relative
        path: data). The folder is the state's directory (lilv's save_dir and scratch_dir),
        so paths in it are written relative to it and paths elsewhere stay absolute."""
        w, lib, host = self.world, self.world.lib, host_lib()
        get_value = _GET_VALUE(self._port_value)
        root = Path(self._folder())
        base = root.as_uri() + "/"  # the Turtle names files in the folder relative to it
        folder = str(root).encode()
        host.dl_runner_lock_work(self._runner)  # work() never overlaps the plugin's save()
        try:
            state = lib.lilv_state_new_from_instance(
                self.plugin, ctypes.cast(self._instance, _p), w.map_feature, folder, None, None,
                folder, get_value, None, 0, ctypes.cast(self._state_features(), _p))
        finally:
            host.dl_runner_unlock_work(self._runner)
        if not state:
            raise ValueError(f"{self.name}: lilv could not save the plugin's state")
        try:
            raw = lib.lilv_state_to_string(w.ptr, w.map_feature, w.unmap_feature, state,
                                           STATE_SUBJECT.encode(), base.encode())
            text = ctypes.string_at(raw).decode("utf-8") if raw else ""
            if raw:
                lib.lilv_free(raw)
        finally:
            lib.lilv_state_free(state)
        files = self._state_files(text, root, base)
        return {"lv2_state": text, "lv2_files": files} if files else {"lv2_state": text}

    def _state_files(self, text: str, root: Path, base: str) -> dict[str, bytes]:
        """The files (or every file of the folders) in the instance's folder ``root`` (URI
        ``base``) that the state's Turtle names by a relative IRI, by path relative to the
        folder (bytes: base64 when the document is written, away from the audio thread)."""
        found: dict[str, bytes] = {}
        total = 0
        for iri in _IRI.findall(text):
            full = urljoin(base, iri)
            if not full.startswith(base):
                continue
            top = root / unquote(full[len(base):])
            paths = sorted(top.rglob("*")) if top.is_dir() else [top]
            for path in paths:
                rel = path.relative_to(root).as_posix()
                if rel in found or not path.is_file() or rel.startswith(_STATE_TTL_PREFIX):
                    continue
                data = path.read_bytes()
                total += len(data)
                if total > STATE_FILES_MAX:
                    raise ValueError(
                        f"{self.name}: the files of its state pass {STATE_FILES_MAX >> 20} "
                        "MiB, more than a state document carries")
                found[rel] = data
        return found

    def _port_value(self, symbol: bytes, _user: int, size: Any, typ: Any) -> int | None:
        index = self._by_key.get(_text(symbol))
        port = self.info.ports[index] if index is not None else None
        if port is None or port.output:
            size[0] = 0
            typ[0] = 0
            return None
        size[0] = 4
        typ[0] = self.world.map(ATOM_FLOAT)
        return self._controls.ctypes.data + 4 * index

    def _set_port(self, symbol: bytes, _user: int, value: int, size: int, typ: int) -> None:
        index = self._by_key.get(_text(symbol))
        if index is None or not value or self.info.ports[index].output:
            return
        w = self.world
        if typ == w.map(ATOM_FLOAT) and size == 4:
            self._controls[index] = ctypes.c_float.from_address(value).value
        elif typ == w.map(ATOM_INT) and size == 4:
            self._controls[index] = ctypes.c_int32.from_address(value).value
        elif typ == w.map(_EXT + "atom#Double") and size == 8:
            self._controls[index] = ctypes.c_double.from_address(value).value

    def _state_features(self) -> Any:
        """Features for save and restore: the map, makePath and the worker's schedule. The
        host restores between blocks on the thread that calls run(), so a file the plugin
        loads for its new state (an impulse response) is loaded by the worker thread, and
        the audio thread never waits for it."""
        w, host = self.world, host_lib()
        data = [(_EXT + "urid#map", w.map_feature), (_EXT + "urid#unmap", w.unmap_feature),
                (_EXT + "state#makePath", ctypes.addressof(self._make_path.struct)),
                (_EXT + "worker#schedule", host.dl_runner_schedule_feature(self._runner))]
        feats = (_Feature * len(data))()
        array = (ctypes.POINTER(_Feature) * (len(data) + 1))()
        for i, (f, (uri, ptr)) in enumerate(zip(feats, data, strict=True)):
            f.URI, f.data = uri.encode(), ptr
            array[i] = ctypes.pointer(f)
        array[len(data)] = None
        self._state_keep = (feats, array)
        return array

    def check_format_state(self, state: dict) -> dict:
        """``state`` with ``lv2_files`` decoded; ValueError when it is not a map of relative
        paths inside the instance's folder to file data (a state document from elsewhere is
        checked before use)."""
        return {**state, "lv2_files": self._checked_files(state)} if "lv2_files" in state \
            else state

    def _checked_files(self, state: dict) -> dict[str, bytes]:
        files = state.get("lv2_files", {})
        if not isinstance(files, dict):
            raise ValueError(f"{self.name}: lv2_files is not a map of file names to data")
        out = {}
        for rel, data in files.items():
            if (not rel or not isinstance(rel, str) or Path(rel).is_absolute()
                    or ".." in Path(rel).parts or "\0" in rel):
                raise ValueError(f"{self.name}: lv2_files names {rel!r}, not a path inside "
                                 "the plugin's folder")
            out[rel] = state_bytes(data, f"{self.name}: lv2_files[{rel!r}]")
        return out

    def _set_format_state(self, state: dict) -> None:
        text = state.get("lv2_state")
        if not text:
            return
        files = self._checked_files(state)
        w, lib = self.world, self.world.lib
        if files:
            lv2_state = self._state_with_files(str(text), files)
        else:
            lv2_state = lib.lilv_state_new_from_string(w.ptr, w.map_feature, str(text).encode())
        if not lv2_state:
            raise ValueError(f"{self.name}: the LV2 state is not valid Turtle")
        try:
            self._restore(lv2_state)
        finally:
            lib.lilv_state_free(lv2_state)

    def _state_with_files(self, text: str, files: dict[str, bytes]) -> int:
        """A lilv state whose files are put back into this instance's folder: each file is
        written whole under its relative path (replacing, never rewriting, a file a plugin
        may still hold open), then the Turtle is read from a file in that folder, which its
        relative IRIs resolve against."""
        root = Path(self._folder())
        for rel, data in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".restore-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        fd, ttl = tempfile.mkstemp(dir=root, prefix=_STATE_TTL_PREFIX, suffix=".ttl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_STATE_PREFIXES + text)
            w = self.world
            return w.lib.lilv_state_new_from_file(w.ptr, w.map_feature, w.uri(STATE_SUBJECT),
                                                  ttl.encode())
        finally:
            os.unlink(ttl)

    def _restore(self, lv2_state: int) -> None:
        lib, host = self.world.lib, host_lib()
        set_value = _SET_VALUE(self._set_port)
        host.dl_runner_lock_work(self._runner)  # work() never overlaps the plugin's restore()
        try:
            lib.lilv_state_restore(lv2_state, ctypes.cast(self._instance, _p), set_value, None,
                                   0, ctypes.cast(self._state_features(), _p))
        finally:
            host.dl_runner_unlock_work(self._runner)
        self.latency = self._read_latency()

    def presets(self) -> list[tuple[str, str]]:
        """(URI, label) of the plugin's presets."""
        return self.world.presets(self.plugin)

    def load_preset(self, preset: str) -> bool:
        """A preset by label (case-insensitive) or URI, or a preset .ttl file."""
        w, lib = self.world, self.world.lib
        state = 0
        if preset.endswith(".ttl") and Path(preset).is_file():
            state = lib.lilv_state_new_from_file(w.ptr, w.map_feature, None,
                                                 os.path.abspath(preset).encode())
            if not state:
                raise ValueError(f"{self.name} could not read the preset file {preset}")
        else:
            uri = w.find_preset(self.plugin, preset)
            state = lib.lilv_state_new_from_world(w.ptr, w.map_feature, w.uri(uri))
            if not state:
                raise ValueError(f"{self.name}: lilv could not load the preset {preset!r}")
        try:
            self._restore(state)
        finally:
            lib.lilv_state_free(state)
        return True

    # -- the worker and the end --------------------------------------------------------------
    def worker_counters(self) -> dict[str, int]:
        """The worker's counters: work calls, responses delivered, dropped requests and
        responses, and the worker thread's kernel thread id (0 before it first ran)."""
        out = (ctypes.c_uint64 * 6)()
        host_lib().dl_runner_counters(self._runner, out)
        return {"blocks": out[0], "work_calls": out[1], "responses": out[2],
                "dropped_requests": out[3], "dropped_responses": out[4],
                "worker_tid": out[5]}

    def close(self) -> None:
        """Stop the worker, deactivate and free the instance. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._free_instance()
        with self._files_lock:
            if self._files_dir is not None:
                shutil.rmtree(self._files_dir, ignore_errors=True)
                self._files_dir = None

    def _folder(self) -> str:
        """The instance's own folder, made on first use (from whichever thread needs it:
        the plugin's makePath may come from its worker)."""
        with self._files_lock:
            if self._files_dir is None:
                self._files_dir = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
            return self._files_dir

    def _free_instance(self) -> None:
        host = host_lib()
        if self._runner:
            host.dl_runner_stop(self._runner)
        if self._instance is not None:
            desc = self._desc
            if getattr(self, "_active", False) and desc.deactivate:
                _HANDLE_FN(desc.deactivate)(self._handle)
            if desc.cleanup:  # lilv_instance_free calls cleanup unchecked
                self.world.lib.lilv_instance_free(ctypes.cast(self._instance, _p))
            self._instance = None
        if self._runner:
            host.dl_runner_free(self._runner)
            self._runner = 0
        if self._log:
            host.dl_log_free(self._log)
            self._log = 0
        self._active = False

    def _follow_rate(self, sample_rate: int) -> None:
        """A host's handshake changed the sample rate: LV2 fixes it at instantiation, so the
        plugin is instantiated again at the new rate and given its state back. Once per
        handshake, between blocks; the worker thread is restarted with it."""
        state = self._get_format_state()
        values = {p.key: self.get(p.key) for p in self.parameters if not p.output}
        self._free_instance()
        self.sample_rate = sample_rate
        self._build_buffers()
        self._instantiate()
        self._set_format_state(state)
        for key, value in values.items():
            self.set(key, value)


STATE_SUBJECT = "urn:discolink-bridge:state"
STATE_FILES_MAX = 32 << 20  # a state's files, before base64: well inside a 64 MiB transfer
_STATE_TTL_PREFIX = ".discolink-state-"
_IRI = re.compile(r"<([^<>\"{}|^`\\\s]*)>")  # an IRIREF of Turtle
# lilv_state_to_string writes with these prefixes but not their declarations
_STATE_PREFIXES = "".join(f"@prefix {k}: <{v}> .\n" for k, v in (
    ("atom", _EXT + "atom#"), ("lv2", _LV2), ("pset", _EXT + "presets#"),
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"), ("state", _EXT + "state#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#")))


class _MakePathStruct(ctypes.Structure):
    _fields_ = [("handle", _p), ("path", _p)]


_MAKE_PATH = ctypes.CFUNCTYPE(_p, _p, _s)


class _MakePath:
    """state:makePath: files a plugin creates go into a folder of the instance's own. The
    returned string is malloc'd (the plugin frees it, with free() or state:freePath)."""

    def __init__(self, folder: Callable[[], str]) -> None:
        self.folder = folder  # the instance's folder, made on first use
        libc = ctypes.CDLL(None)
        self._strdup = libc.strdup
        self._strdup.restype, self._strdup.argtypes = _p, [_s]
        self.fn = _MAKE_PATH(self._make)
        self.struct = _MakePathStruct(None, ctypes.cast(self.fn, _p))

    def _make(self, _handle: int, path: bytes) -> int:
        full = os.path.join(self.folder(), _text(path).lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return self._strdup(full.encode())


def load_lv2_stage(spec: str, *, sample_rate: int = 48000, block_size: int = 256,
                   warm_up: bool = False) -> Lv2Stage:
    """Instantiate the plugin ``spec`` names (and with ``warm_up`` run one block); Unknown-
    PluginError when none does, PluginError when it can't run here (a missing feature, a
    failed instantiation)."""
    w = world()
    plugin = w.find(spec)
    return Lv2Stage(spec, w, plugin, describe_plugin(w, plugin, sample_rate), sample_rate,
                    block_size, warm_up)
