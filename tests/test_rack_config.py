"""Rack configs (bridge/rack/config.py): loading, every validation message with its exact
file:line:column, the JSON Schema, fingerprints, and the example configs in configs/."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.rack.config import (
    ConfigError,
    ConfigIssue,
    DeviceConfig,
    RackConfig,
    device_argv,
    device_fingerprint,
    json_schema,
    load_rack,
    parse_rack,
    resolve_tap,
)

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
PLUGINS = REPO / "build" / "plugins"
NOENV: dict[str, str] = {}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    """The issue lines parse_rack reports for ``text`` (dedented), as rack.yaml."""
    with pytest.raises(ConfigError) as info:
        parse_rack(textwrap.dedent(text), "rack.yaml", base_dir=REPO,
                   environ=NOENV if environ is None else environ)
    assert str(info.value) == "\n".join(str(i) for i in info.value.issues)
    return [str(i) for i in info.value.issues]


def rack(text: str, environ: dict[str, str] | None = None, **kw) -> RackConfig:
    return parse_rack(textwrap.dedent(text), "rack.yaml", environ=NOENV if environ is None
                      else environ, **kw)


# Each case: a small rack file and the one line it must produce.
INVALID = {
    "wrong type: a quoted number": ("""\
        name: r
        defaults:
          sample_rate: "48000"
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:16: defaults.sample_rate: expected an integer, got a string "
             "('48000')"),
    "wrong type: a list for a string": ("""\
        name: [a, b]
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:1:7: name: expected a string, got a list"),
    "wrong type: a boolean for a count": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            fill: true
        """, "rack.yaml:5:11: devices[0].fill: expected an integer, got a boolean (true)"),
    "wrong type: a string for a list": ("""\
        name: r
        devices:
          - id: J
            kind: jack
            connect: "metro:*"
        """, "rack.yaml:5:14: devices[0].connect: expected a list, got a string ('metro:*')"),
    "wrong type: a parameter value": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            params: {room_size: big}
        """, "rack.yaml:6:25: devices[0].params.room_size: expected a number, got a string "
             "('big')"),
    "unknown key at the top": ("""\
        name: r
        devices: [{id: S, kind: synth}]
        device: []
        """, "rack.yaml:3:1: device: unknown key 'device' (did you mean devices?)"),
    "unknown key in defaults": ("""\
        name: r
        defaults:
          samplerate: 44100
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:3: defaults.samplerate: unknown key 'samplerate' (did you mean "
             "sample_rate?)"),
    "unknown key in a device": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugn: builtin:Reverb
            plugin: builtin:Reverb
        """, "rack.yaml:5:5: devices[0].plugn: unknown key 'plugn' (did you mean plugin?)"),
    "a plugin file that does not exist": ("""\
        name: r
        devices:
          - id: S
            kind: synth
          - id: V
            kind: plugin
            plugin: /nonexistent/y.vst3
        """, "rack.yaml:7:13: devices[1].plugin: file not found: /nonexistent/y.vst3"),
    "a missing plugin inside a chain": ("""\
        name: r
        devices:
          - id: C
            kind: chain
            plugins: [builtin:Sine, /nonexistent/fx.vst3]
        """, "rack.yaml:5:29: devices[0].plugins[1]: file not found: /nonexistent/fx.vst3"),
    "a file that is not a plugin": ("""\
        name: r
        devices:
          - id: V
            kind: plugin
            plugin: /usr/lib/libfoo.so
        """, "rack.yaml:5:13: devices[0].plugin: not a plugin: '/usr/lib/libfoo.so' "
             "(expected a .vst3 bundle, a .component, lv2:URI or builtin:NAME)"),
    "an unknown built-in": ("""\
        name: r
        devices:
          - id: V
            kind: plugin
            plugin: builtin:Reverbb
        """, "rack.yaml:5:13: devices[0].plugin: no built-in plugin 'Reverbb' (did you mean "
             "Reverb?); built-ins: Sine, "),
    "duplicate device ids (at the second)": ("""\
        name: r
        devices:
          - id: Sine
            kind: synth
          - id: Sine
            kind: synth
        """, "rack.yaml:5:9: devices[1].id: duplicate device id 'Sine': devices[0] (line 3) "
             "has it already; ids must be unique in a rack"),
    "channels 13": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            channels: 13
        """, "rack.yaml:5:15: devices[0].channels: must be 1..12, got 13"),
    "a malformed channel list": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            channels: 4-3
        """, "rack.yaml:6:15: devices[0].channels: channel list '4-3': '4-3' must count up "
             "from 1 (give a count 1..12, or a channel list like 3-4 or 1,3)"),
    "a channel list on a synth": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            channels: 3-4
        """, "rack.yaml:5:15: devices[0].channels: a channel list is for plugin and chain "
             "devices; kind synth takes a count 1..12"),
    "sample rate 0": ("""\
        name: r
        defaults:
          sample_rate: 0
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:16: defaults.sample_rate: must be 8000..384000 (Hz), got 0"),
    "sample rate 0 on a device": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            sample_rate: 0
        """, "rack.yaml:5:18: devices[0].sample_rate: must be 8000..384000 (Hz), got 0"),
    "block size too small": ("""\
        name: r
        defaults:
          block_size: 8
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:15: defaults.block_size: must be 16..4096 (frames), got 8"),
    "block size too large": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            block_size: 8192
        """, "rack.yaml:5:17: devices[0].block_size: must be 16..4096 (frames), got 8192"),
    "fill out of range": ("""\
        name: r
        defaults: {fill: 5}
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:2:18: defaults.fill: must be 1..4 (blocks), got 5"),
    "YAML syntax: bad indentation": ("""\
        name: r
        devices:
          - id: S
           kind: synth
        """, "rack.yaml:4:4: YAML syntax error: expected <block end>, but found '<block "
             "mapping start>' (while parsing a block collection at line 3, column 3); is the "
             "indentation consistent?"),
    "YAML syntax: an unclosed quote": ("""\
        name: 'r
        devices: []
        """, "rack.yaml:3:1: YAML syntax error: found unexpected end of stream (while "
             "scanning a quoted scalar at line 1, column 7)"),
    "YAML syntax: a tab": (
        "name: r\ndevices:\n\t- id: S\n",
        "rack.yaml:3:1: YAML syntax error: found character '\\t' that cannot start any "
        "token (while scanning for the next token)"),
    "YAML: two documents": ("""\
        name: r
        devices: [{id: S, kind: synth}]
        ---
        name: s
        """, "rack.yaml:3:1: YAML syntax error: a rack file holds one YAML document; this "
             "starts a second"),
    "YAML: a python tag": ("""\
        name: !!python/object/apply:os.system [true]
        devices: []
        """, "rack.yaml:1:7: YAML error: could not determine a constructor for the tag "
             "'tag:yaml.org,2002:python/object/apply:os.system'; only plain YAML is allowed, "
             "no tags"),
    "an empty file": ("", "rack.yaml:1:1: the file is empty: a rack needs at least name: and "
                          "devices:"),
    "a file of comments": ("# nothing yet\n", "rack.yaml:1:1: the file is empty: a rack needs "
                                              "at least name: and devices:"),
    "a list at the top": ("""\
        - id: S
          kind: synth
        """, "rack.yaml:1:1: the top level must be a mapping (name: ..., devices: ...), got a "
             "list"),
    "a list for defaults": ("""\
        name: r
        defaults:
          - sample_rate: 44100
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:3: defaults: expected a mapping (key: value), got a list"),
    "a list for a device": ("""\
        name: r
        devices:
          - [S, synth]
        """, "rack.yaml:3:5: devices[0]: expected a mapping (id: ..., kind: ...), got a list"),
    "a mapping for devices": ("""\
        name: r
        devices:
          Sine: {kind: synth}
        """, "rack.yaml:3:3: devices: expected a list of devices (- id: ...), got a mapping"),
    "no devices": ("""\
        name: r
        devices: []
        """, "rack.yaml:2:10: devices: no devices: a rack needs at least one (list them under "
             "devices:)"),
    "devices left out": ("""\
        name: r
        """, "rack.yaml:1:1: devices: required field missing (the list of devices)"),
    "a device without id (at its mapping)": ("""\
        name: r
        devices:
          - kind: synth
            channels: 2
        """, "rack.yaml:3:5: devices[0].id: required field missing (the device id, Name or "
             "Name:N)"),
    "a tap that does not exist": ("""\
        name: r
        devices:
          - id: Pad
            kind: chain
            plugins: [builtin:Sine, builtin:Chorus, builtin:Reverb]
            tap: Delay
        """, "rack.yaml:6:10: devices[0].tap: no tap 'Delay'; taps: out, a stage number 1..3 "
             "or name (Sine, Chorus, Reverb), optionally with channels like out:3-4"),
    "a tap by a stage number out of range": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            tap: 2
        """, "rack.yaml:6:10: devices[0].tap: no tap '2'; taps: out, a stage number 1 or name "
             "(Reverb), optionally with channels like out:3-4"),
    "a tap with bad channels": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            tap: Reverb:0-1
        """, "rack.yaml:6:10: devices[0].tap: tap 'Reverb:0-1': channel list '0-1': '0-1' "
             "must count up from 1"),
    "an ambiguous tap": ("""\
        name: r
        devices:
          - id: P
            kind: chain
            plugins: [builtin:Reverb, builtin:Reverb]
            tap: reverb
        """, "rack.yaml:6:10: devices[0].tap: tap 'reverb' is ambiguous: stages 1 and 2 are "
             "both Reverb; use the stage's number"),
    "a tap on a synth": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            tap: out
        """, "rack.yaml:5:5: devices[0].tap: a tap picks a stage of a plugin or chain device; "
             "kind synth has no stages"),
    "a tap on a jack device": ("""\
        name: r
        devices:
          - id: J
            kind: jack
            tap: out
        """, "rack.yaml:5:5: devices[0].tap: a tap picks a stage of a plugin or chain device; "
             "kind jack has no stages"),
    "a tap with a channel list": ("""\
        name: r
        devices:
          - id: P
            kind: chain
            plugins: [builtin:Sine, builtin:Reverb]
            channels: 1-2
            tap: Sine
        """, "rack.yaml:7:10: devices[0].tap: channels '1-2' is a list, which taps the last "
             "stage; give channels as a count when tap chooses the source"),
    "restart misspelled": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            restart: on_failure
        """, "rack.yaml:5:14: devices[0].restart: must be one of always, on-failure, never; "
             "got 'on_failure' (did you mean on-failure?)"),
    "an unknown kind": ("""\
        name: r
        devices:
          - id: S
            kind: vst3
        """, "rack.yaml:4:11: devices[0].kind: must be one of synth, plugin, chain, jack; got "
             "'vst3'"),
    "a mode misspelled": ("""\
        name: r
        defaults:
          mode: audio-midi
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:3:9: defaults.mode: must be one of audio+midi, audio, midi; got "
             "'audio-midi' (did you mean audio+midi?)"),
    "plugin without kind plugin": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            plugin: builtin:Reverb
        """, "rack.yaml:5:5: devices[0].plugin: plugin is for kind plugin devices, not kind "
             "synth"),
    "plugin on a chain": ("""\
        name: r
        devices:
          - id: C
            kind: chain
            plugin: builtin:Reverb
            plugins: [builtin:Sine, builtin:Reverb]
        """, "rack.yaml:5:5: devices[0].plugin: a chain lists its plugins under plugins:, not "
             "plugin:"),
    "kind plugin without plugin (at the mapping)": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
        """, "rack.yaml:3:5: devices[0].plugin: kind plugin needs plugin: a .vst3 path, lv2:URI or "
             "builtin:NAME"),
    "plugins on kind plugin": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            plugins: [builtin:Sine, builtin:Reverb]
        """, "rack.yaml:6:5: devices[0].plugins: kind plugin runs one plugin: give plugin: "
             "SPEC (or use kind chain)"),
    "a chain of one": ("""\
        name: r
        devices:
          - id: C
            kind: chain
            plugins: [builtin:Reverb]
        """, "rack.yaml:5:14: devices[0].plugins: a chain needs at least 2 plugins, got 1 (for "
             "one, use kind plugin with plugin: SPEC)"),
    "a chain without plugins": ("""\
        name: r
        devices:
          - id: C
            kind: chain
        """, "rack.yaml:3:5: devices[0].plugins: kind chain needs plugins: a list of 2 or more "
             "plugin specs"),
    "an instrument after the first stage": ("""\
        name: r
        devices:
          - id: C
            kind: chain
            plugins: [builtin:Reverb, builtin:Sine]
        """, "rack.yaml:5:31: devices[0].plugins[1]: builtin:Sine is an instrument: only the "
             "first plugin of a chain may be one"),
    "connect on a non-jack device": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            connect: ["metro:*"]
        """, "rack.yaml:5:5: devices[0].connect: connect is for kind jack devices, not kind "
             "synth"),
    "params on a synth": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            params: {gain: 0.5}
        """, "rack.yaml:5:5: devices[0].params: params are for plugin and chain devices; the "
             "built-in synth has no parameters"),
    "a sample rate on a jack device": ("""\
        name: r
        devices:
          - id: J
            kind: jack
            sample_rate: 44100
        """, "rack.yaml:5:5: devices[0].sample_rate: sample_rate does not apply to kind jack: "
             "a jack device runs at the JACK server's sample rate and period"),
    "more connect patterns than channels": ("""\
        name: r
        devices:
          - id: J
            kind: jack
            channels: 1
            connect: ["a:out_1", "a:out_2"]
        """, "rack.yaml:6:14: devices[0].connect: 2 connect patterns for 1 input port(s): each "
             "pattern feeds one port; set channels to 2 or more"),
    "a preset that is not a .vstpreset": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            preset: configs/demo.yaml
        """, "rack.yaml:6:13: devices[0].preset: not a preset: 'configs/demo.yaml' (expected a "
             ".vstpreset file, an LV2 preset .ttl file, or an LV2 plugin's preset name)"),
    "a preset that does not exist": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            preset: /nonexistent/a.vstpreset
        """, "rack.yaml:6:13: devices[0].preset: file not found: /nonexistent/a.vstpreset"),
    "a duplicate key": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            id: T
        """, "rack.yaml:5:5: devices[0].id: duplicate key 'id': it is already set on line 3 (a "
             "key may appear once per mapping)"),
    "a bad device id": ("""\
        name: r
        devices:
          - id: a/b
            kind: synth
        """, "rack.yaml:3:9: devices[0].id: device id 'a/b' contains '/'"),
    "a bad rack name": ("""\
        name: my rack
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:1:7: name: rack name 'my rack': use letters, digits and _ . - only (it "
             "names the state folder)"),
    "a bad namespace": ("""\
        name: r
        defaults: {namespace: "a b"}
        devices: [{id: S, kind: synth}]
        """, "rack.yaml:2:23: defaults.namespace: invalid namespace 'a b': use 1 to "),
    "a number that is not finite": ("""\
        name: r
        devices:
          - id: P
            kind: plugin
            plugin: builtin:Reverb
            params: {room_size: .nan}
        """, "rack.yaml:6:25: devices[0].params.room_size: must be a finite number"),
    "a key that is not text": ("""\
        name: r
        devices:
          - id: S
            kind: synth
            1: 2
        """, "rack.yaml:5:5: devices[0].1: unknown key 1: keys here are field names (text)"),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=list(INVALID))
def test_each_invalid_file_reports_its_line(text, expected):
    lines = problems(text)
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]


def test_every_problem_is_reported_in_file_order():
    lines = problems("""\
        name: r
        devices:
          - id: S
            kind: synth
            channels: 13
          - id: V
            kind: plugin
            plugin: /nonexistent/y.vst3
          - id: S
            kind: synth
            restart: sometimes
        """)
    assert [ln.split(": ")[0] for ln in lines] == ["rack.yaml:5:15", "rack.yaml:8:13",
                                                   "rack.yaml:9:9", "rack.yaml:11:14"]
    assert "devices[0].channels: must be 1..12, got 13" in lines[0]
    assert "devices[1].plugin: file not found: /nonexistent/y.vst3" in lines[1]
    assert "devices[2].id: duplicate device id 'S'" in lines[2]
    assert "devices[2].restart: must be one of always, on-failure, never; got 'sometimes'" \
        in lines[3]


def test_three_different_errors_in_one_device_are_all_reported():
    lines = problems("""\
        name: r
        devices:
          - id: S
            kind: synth
            sample_rate: 0
            colour: red
            params: {gain: 1}
        """)
    assert lines == [
        "rack.yaml:5:18: devices[0].sample_rate: must be 8000..384000 (Hz), got 0",
        "rack.yaml:6:5: devices[0].colour: unknown key 'colour'; allowed keys: id, kind, "
        "plugin, plugins, plugin_name, params, preset, state, input, channels, tap, "
        "sample_rate, block_size, mode, clock, fill, midi_in, connect, midi_out, jack_server, "
        "client_name, return, fixed_format, rt_priority, sysex_limit, restart",
        "rack.yaml:7:5: devices[0].params: params are for plugin and chain devices; the "
        "built-in synth has no parameters",
    ]


def test_a_duplicate_keys_last_value_is_the_one_checked():
    lines = problems("""\
        name: r
        devices:
          - id: S
            kind: synth
            channels: 2
            channels: 20
        """)
    assert lines == [
        "rack.yaml:6:5: devices[0].channels: duplicate key 'channels': it is already set on "
        "line 5 (a key may appear once per mapping)",
        "rack.yaml:6:15: devices[0].channels: must be 1..12, got 20"]


def test_a_preset_needs_a_stage_that_loads_presets(tmp_path):
    (tmp_path / "warm.vstpreset").write_bytes(b"VST3")
    with pytest.raises(ConfigError) as info:
        parse_rack("name: r\ndevices:\n  - {id: P, kind: plugin, plugin: builtin:Reverb,\n"
                   "     preset: warm.vstpreset}\n", "rack.yaml", base_dir=tmp_path,
                   environ=NOENV)
    assert str(info.value) == "rack.yaml:4:14: devices[0].preset: no stage of this device " \
                              "loads presets (VST3 and LV2 plugins do, built-ins don't)"


def test_issue_and_error_text():
    issue = ConfigIssue("rack.yaml", 14, 11, "devices[2].plugin", "file not found: /x/y.vst3")
    assert str(issue) == "rack.yaml:14:11: devices[2].plugin: file not found: /x/y.vst3"
    assert str(ConfigIssue("rack.yaml", 1, 1, "", "the file is empty")) == \
        "rack.yaml:1:1: the file is empty"
    err = ConfigError([issue, issue])
    assert str(err) == f"{issue}\n{issue}" and err.issues == [issue, issue]


def test_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_rack(tmp_path / "missing.yaml")
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: cannot read the rack file: No " \
                              "such file or directory"


def test_the_file_name_is_the_path_given(tmp_path):
    path = tmp_path / "rack.yaml"
    path.write_text("name: r\ndevices:\n  - id: S\n    kind: synth\n    channels: 13\n")
    with pytest.raises(ConfigError) as info:
        load_rack(path)
    assert str(info.value) == f"{path}:5:15: devices[0].channels: must be 1..12, got 13"


# ---- what a valid file gives ------------------------------------------------------------------


def test_defaults_fill_in_and_overrides_win():
    r = rack("""\
        name: r
        defaults: {sample_rate: 44100, clock: realtime}
        devices:
          - {id: A, kind: synth}
          - {id: B, kind: synth, sample_rate: 96000, block_size: 64, fill: 3, mode: midi}
        """)
    assert r.effective(r.device("A")) == {"sample_rate": 44100, "block_size": 256,
                                          "mode": "audio+midi", "clock": "realtime", "fill": 2}
    assert r.effective(r.device("B")) == {"sample_rate": 96000, "block_size": 64,
                                          "mode": "midi", "clock": "realtime", "fill": 3}
    assert r.namespace == "default"
    with pytest.raises(KeyError, match="no device 'C' in rack 'r'; devices: A, B"):
        r.device("C")


def test_the_return_alias_and_field_defaults():
    r = rack("""\
        name: r
        devices:
          - {id: A, kind: synth, return: true, midi_in: [Keystation]}
        """)
    dev = r.devices[0]
    assert dev.return_audio is True and dev.midi_in == ["Keystation"]
    assert dev.restart == "on-failure" and dev.params == {} and dev.connect == []
    assert dev.stages() == []


def test_relative_paths_resolve_against_the_files_folder(tmp_path):
    folder = tmp_path / "racks"
    (tmp_path / "plugins" / "Fx.vst3").mkdir(parents=True)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "warm.vstpreset").write_bytes(b"VST3")
    folder.mkdir()
    (folder / "r.yaml").write_text(textwrap.dedent("""\
        name: r
        state_dir: state
        devices:
          - id: Fx
            kind: chain
            plugins: [builtin:sine, ../plugins/Fx.vst3]
            preset: ../presets/warm.vstpreset
            state: ../fx.json
            tap: fx
        """))
    r = load_rack(folder / "r.yaml", environ=NOENV)
    dev = r.devices[0]
    assert dev.plugins == ["builtin:Sine", str(tmp_path / "plugins" / "Fx.vst3")]
    assert dev.preset == str(tmp_path / "presets" / "warm.vstpreset")
    assert dev.state == str(tmp_path / "fx.json")
    assert r.state_folder() == folder / "state"
    assert r.state_file(dev) == tmp_path / "fx.json"
    assert resolve_tap(dev.plugins, dev.tap) == "2"


def test_state_folder_follows_xdg_state_home(tmp_path):
    text = "name: r\ndevices: [{id: 'S:1', kind: synth}]\n"
    r = rack(text, {"XDG_STATE_HOME": str(tmp_path)})
    assert r.state_folder() == tmp_path / "discolink-bridge" / "r"
    assert r.state_file(r.devices[0]) == tmp_path / "discolink-bridge" / "r" / "S:1.json"
    assert rack(text, {}).state_folder() == \
        Path.home() / ".local" / "state" / "discolink-bridge" / "r"


def test_the_namespace_variable_overrides_the_file():
    text = "name: r\ndefaults: {namespace: studio}\ndevices: [{id: S, kind: synth}]\n"
    r = rack(text)
    assert r.defaults.namespace == "studio" and not r.namespace_overridden
    r = rack(text, {"DISCOLINK_NAMESPACE": "test-1"})
    assert r.defaults.namespace == "test-1" and r.namespace_overridden
    assert r.namespace == "test-1"
    assert device_argv(r, r.devices[0])[:2] == ["--namespace", "test-1"]
    lines = problems(text, {"DISCOLINK_NAMESPACE": "no good"})
    assert len(lines) == 1 and lines[0].startswith(
        "rack.yaml:2:23: defaults.namespace: $DISCOLINK_NAMESPACE overrides it, but: invalid "
        "namespace 'no good'")


def test_taps_resolve_to_stage_numbers():
    specs = ["builtin:Sine", "/p/DragonflyPlateReverb.vst3", "builtin:Reverb"]
    assert resolve_tap(specs, "out") == "out"
    assert resolve_tap(specs, "out:1-2") == "out:1-2"
    assert resolve_tap(specs, "2") == "2"
    assert resolve_tap(specs, "Dragonfly Plate Reverb:1,2") == "2:1,2"
    assert resolve_tap(specs, "dragonflyplatereverb") == "2"
    assert resolve_tap(specs, "REVERB") == "3"
    with pytest.raises(ValueError, match="no tap 'Plate'"):
        resolve_tap(specs, "Plate")


def test_yaml_base_60_numbers_stay_text():
    r = rack("""\
        name: r
        devices:
          - {id: P, kind: plugin, plugin: builtin:Reverb, tap: 1:2, channels: "2"}
        """)
    assert r.devices[0].tap == "1:2" and r.devices[0].channels == 2


def test_direct_construction_checks_the_same_rules():
    with pytest.raises(ValidationError, match="params are for plugin and chain devices"):
        DeviceConfig(id="S", kind="synth", params={"gain": 0.5})
    with pytest.raises(ValidationError, match="duplicate device id 'S'"):
        RackConfig(name="r", devices=[DeviceConfig(id="S", kind="synth"),
                                      DeviceConfig(id="S", kind="synth")])
    dev = DeviceConfig(id="P", kind="plugin", plugin="builtin:reverb", return_audio=True)
    assert dev.plugin == "builtin:Reverb" and dev.stages() == ["builtin:Reverb"]


# ---- the example configs ----------------------------------------------------------------------


def test_demo_config_loads():
    r = load_rack(CONFIGS / "demo.yaml", environ=NOENV)
    assert r.name == "demo"
    sine, pad = r.devices
    assert (sine.id, sine.kind) == ("Sine", "synth")
    assert (pad.id, pad.kind) == ("Pad", "chain")
    assert pad.plugins == ["builtin:Sine", "builtin:Chorus", "builtin:Reverb"]
    assert pad.params


def test_jack_config_loads():
    r = load_rack(CONFIGS / "jack.yaml", environ=NOENV)
    jack = next(d for d in r.devices if d.kind == "jack")
    assert jack.connect == ["metro:*"]
    assert {d.kind for d in r.devices} == {"jack", "synth"}
    assert device_argv(r, jack) == ["--namespace", "default", "jack-device", "--id",
                                    jack.id, "--connect", "metro:*", "--channels", "2"]


@pytest.mark.skipif(not (PLUGINS / "DLSine.vst3").exists(),
                    reason="the test plugins are not built (plugins/build.sh)")
def test_vst3_config_loads():
    r = load_rack(CONFIGS / "vst3.yaml", environ=NOENV)
    by_file = {Path(d.stages()[0]).name: d for d in r.devices if d.kind == "plugin"}
    assert by_file["DLSine.vst3"].params
    assert by_file["DLSine12.vst3"].channels == "3-4"
    chain = next(d for d in r.devices if d.kind == "chain")
    assert [Path(p).name for p in chain.plugins] == ["DLSine.vst3",
                                                     "DragonflyPlateReverb.vst3"]
    assert chain.plugins[0] == str(PLUGINS / "DLSine.vst3")


def test_the_documented_example_is_valid_but_for_its_preset():
    doc = (REPO / "docs" / "configuration.md").read_text()
    example = re.search(r"## A complete example\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    with pytest.raises(ConfigError) as info:
        parse_rack(example, "studio.yaml", base_dir=CONFIGS, environ=NOENV)
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("devices[2].preset", f"file not found: {CONFIGS / 'presets' / 'low.vstpreset'}")]


def test_device_argv_maps_the_schema_to_the_device_command(tmp_path):
    r = rack("""\
        name: r
        defaults: {sample_rate: 44100, namespace: ns}
        devices:
          - id: Pad
            kind: chain
            plugins: [builtin:Sine, builtin:Reverb]
            params: {Reverb.room_size: 0.5}
            tap: reverb:1-2
            channels: 2
            return: true
            midi_in: [Keys]
            rt_priority: 0
            block_size: 128
        """, {"XDG_STATE_HOME": str(tmp_path)})
    assert device_argv(r, r.devices[0], device_id="Pad:3") == [
        "--namespace", "ns", "device", "--id", "Pad:3", "--samplerate", "44100",
        "--blocksize", "128", "--mode", "audio+midi", "--clock", "demand", "--fill", "2",
        "--channels", "2", "--return", "--plugin", "builtin:Sine", "--plugin",
        "builtin:Reverb", "--tap", "2:1-2", "--param", "Reverb.room_size=0.5", "--state",
        str(tmp_path / "discolink-bridge" / "r" / "Pad.json"), "--midi-in", "Keys",
        "--rt-priority", "0"]


# ---- JSON Schema ------------------------------------------------------------------------------


def test_json_schema():
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == "discolink-bridge rack"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "devices"}
    device = schema["$defs"]["DeviceConfig"]
    defaults = schema["$defs"]["Defaults"]
    for obj in (schema, device, defaults):
        assert obj["additionalProperties"] is False
        for name, prop in obj["properties"].items():
            assert prop.get("description"), name
    props = device["properties"]
    assert {"id", "kind", "plugin", "plugins", "params", "channels", "tap", "connect",
            "return", "restart", "midi_in"} <= set(props)
    assert "return_audio" not in props
    assert props["kind"]["enum"] == ["synth", "plugin", "chain", "jack"]
    assert props["restart"]["enum"] == ["always", "on-failure", "never"]
    assert set(device["required"]) == {"id", "kind"}
    assert defaults["properties"]["sample_rate"]["minimum"] == 8000
    assert schema["properties"]["devices"]["minItems"] == 1


def test_json_schema_is_valid_and_checks_files():
    """A meta-schema check, where the jsonschema package is installed."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    data = {"name": "r", "devices": [{"id": "S", "kind": "synth", "return": True}]}
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "colour": "red"}, schema)


# ---- fingerprints -------------------------------------------------------------------------------

BASE = """\
name: r
defaults: {sample_rate: 48000}
devices:
  - {id: Sine, kind: synth}
  - {id: Fixed, kind: synth, sample_rate: 44100}
  - id: Pad
    kind: chain
    plugins: [builtin:Sine, builtin:Reverb]
    params: {Reverb.room_size: 0.5}
  - {id: Metro, kind: jack, connect: ["metro:*"]}
"""


def prints(text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    r = rack(text, environ)
    return {d.id: device_fingerprint(r, d) for d in r.devices}


def changed(text: str, environ: dict[str, str] | None = None) -> set[str]:
    before, after = prints(BASE), prints(text, environ)
    return {k for k in before if before[k] != after.get(k)}


def test_fingerprints_are_stable_and_distinct():
    assert prints(BASE) == prints(BASE)
    assert len(set(prints(BASE).values())) == 4


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace("room_size: 0.5", "room_size: 0.6"), {"Pad"}),
    (lambda t: t.replace("{id: Sine, kind: synth}", "{id: Sine, kind: synth, channels: 1}"),
     {"Sine"}),
    (lambda t: t.replace("sample_rate: 48000}", "sample_rate: 96000}"), {"Sine", "Pad"}),
    (lambda t: t.replace("sample_rate: 48000}", "sample_rate: 48000, fill: 3}"),
     {"Sine", "Fixed", "Pad"}),
    (lambda t: t.replace('"metro:*"', '"system:*"'), {"Metro"}),
    (lambda t: t.replace("name: r", "name: s"), {"Sine", "Fixed", "Pad", "Metro"}),
    # nothing that affects how a device runs:
    (lambda t: t.replace("kind: synth}", "kind: synth, restart: never}"), set()),
    (lambda t: "# a comment\n" + t.replace("{sample_rate: 48000}", "{sample_rate: 48000,"
                                           " mode: audio+midi}"), set()),
    (lambda t: t.replace("  - {id: Sine, kind: synth}\n", "") + "  - {id: Sine, kind: synth}\n",
     set()),
    (lambda t: t.replace("builtin:Reverb", "builtin:reverb"), set()),
])
def test_fingerprints_change_when_and_only_when_relevant(edit, expected):
    assert changed(edit(BASE)) == expected


def test_the_namespace_is_part_of_the_fingerprint():
    assert changed(BASE, {"DISCOLINK_NAMESPACE": "other"}) == {"Sine", "Fixed", "Pad",
                                                               "Metro"}


# ---- what `rack` would refuse, `rack check` refuses (issue 11, items 5, 8 and 10) -----------

def synths(count: int) -> str:
    return "name: r\ndevices:\n" + "".join(f"  - {{id: S{i}, kind: synth}}\n"
                                            for i in range(count))


def test_more_devices_than_registry_slots_are_refused_at_the_first_extra_one():
    from bridge.transport.layout import REGISTRY_SLOTS

    rack(synths(REGISTRY_SLOTS))  # a full registry is fine
    assert problems(synths(REGISTRY_SLOTS + 1)) == [
        f"rack.yaml:{REGISTRY_SLOTS + 3}:5: devices[{REGISTRY_SLOTS}]: {REGISTRY_SLOTS + 1} "
        f"devices, but a namespace's registry has {REGISTRY_SLOTS} slots: a rack runs at "
        f"most {REGISTRY_SLOTS} devices (this is device {REGISTRY_SLOTS + 1}); split the rest "
        "into a rack in another namespace"]


@pytest.mark.parametrize("first, second", [("Sine", "Sine:0"), ("Sine:0", "Sine"),
                                           ("Sine", "Sine:3")])
def test_a_bare_id_next_to_an_explicit_instance_of_its_name_is_refused(first, second):
    """A bare Name takes the lowest free Name:N at start, so it races a Name:N for one
    instance: which device fails would depend on start order."""
    lines = problems(f"""\
        name: r
        devices:
          - {{id: {first}, kind: synth}}
          - {{id: {second}, kind: synth}}
        """)
    assert len(lines) == 1 and lines[0].startswith("rack.yaml:4:10: devices[1].id: id "
                                                   f"'{second}' clashes with '{first}' of "
                                                   "devices[0] (line 3)"), lines
    assert "give every Sine device an explicit instance (Sine:0, Sine:1, ...)" in lines[0]
    rack("name: r\ndevices:\n  - {id: Sine:0, kind: synth}\n  - {id: Sine:1, kind: synth}\n"
         "  - {id: Other, kind: synth}\n")


def test_ids_are_compared_as_the_protocol_reads_them():
    assert problems("""\
        name: r
        devices:
          - {id: X:7, kind: synth}
          - {id: X:007, kind: synth}
        """) == ["rack.yaml:4:10: devices[1].id: duplicate device id 'X:007' (that is X:7): "
                 "devices[0] (line 3) has it already; ids must be unique in a rack"]


def test_two_devices_with_one_state_file_are_refused(tmp_path):
    assert problems(f"""\
        name: r
        devices:
          - {{id: A, kind: plugin, plugin: builtin:Reverb, state: {tmp_path}/s.json}}
          - {{id: B, kind: plugin, plugin: builtin:Delay, state: {tmp_path}/./s.json}}
        """, {"XDG_STATE_HOME": str(tmp_path)}) == [
        f"rack.yaml:4:57: devices[1].state: state file {tmp_path}/s.json is devices[0]'s ('A') "
        "too: the two would overwrite each other's plugin state; give each device its own "
        "state:"]


def test_a_device_state_file_can_not_be_the_racks_own_file(tmp_path):
    lines = problems("""\
        name: r
        devices:
          - {id: rack, kind: plugin, plugin: builtin:Reverb}
        """, {"XDG_STATE_HOME": str(tmp_path)})
    assert lines == [f"rack.yaml:3:10: devices[0].id: state file {tmp_path}/discolink-bridge/"
                     "r/rack.json is the rack's own file; give this device another id or "
                     "state:"]


def test_a_state_folder_that_can_not_be_written_is_refused_where_it_is_set(tmp_path):
    assert problems("""\
        name: r
        state_dir: /proc/1/nope
        devices: [{id: S, kind: synth}]
        """) == ["rack.yaml:2:12: state_dir: /proc/1/nope: cannot create it in /proc/1: No "
                 "such file or directory"]
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert problems(f"name: r\nstate_dir: {a_file}/sub\ndevices: [{{id: S, kind: synth}}]\n"
                    ) == [f"rack.yaml:2:12: state_dir: {a_file}/sub: {a_file} is not a folder"]
    # the default folder and --state-dir are checked too (not at a place in the file), and
    # checking creates nothing
    text = "name: r\ndevices: [{id: S, kind: synth}]\n"
    home = tmp_path / "home"
    home.mkdir()
    rack(text, {"XDG_STATE_HOME": str(home)})
    assert list(home.iterdir()) == []
    assert problems(text, {"XDG_STATE_HOME": "/proc/1/x"}) == [
        "rack.yaml: the default state folder /proc/1/x/discolink-bridge/r: cannot create it in "
        "/proc/1: No such file or directory"]
    with pytest.raises(ConfigError) as info:
        parse_rack(text, "rack.yaml", environ=NOENV, state_dir=Path("/proc/1/nope"))
    assert str(info.value) == ("rack.yaml: --state-dir /proc/1/nope: cannot create it in "
                               "/proc/1: No such file or directory")


def test_a_state_file_in_a_missing_folder_is_refused(tmp_path):
    assert problems(f"""\
        name: r
        devices:
          - {{id: A, kind: plugin, plugin: builtin:Reverb, state: {tmp_path}/no/s.json}}
        """, {"XDG_STATE_HOME": str(tmp_path)}) == [
        f"rack.yaml:3:58: devices[0].state: the state file's folder {tmp_path}/no does not "
        "exist; create it"]


def test_a_builtin_parameter_out_of_its_range_is_refused_at_the_parameter():
    assert problems("""\
        name: r
        devices:
          - id: Pad
            kind: chain
            plugins: [builtin:Sine, builtin:Reverb]
            params:
              Reverb.room_size: 7
              Reverb.wet_level: 0.5
              room_sise: 0.5
        """) == [
        'rack.yaml:7:25: devices[0].params["Reverb.room_size"]: Room Size value must be '
        "between 0.0 and 1.0.",
        "rack.yaml:9:7: devices[0].params.room_sise: no parameter 'room_sise' (did you mean "
        "Reverb.room_size?); parameters: Reverb.damping, Reverb.dry_level, "
        "Reverb.freeze_mode, Reverb.room_size, Reverb.wet_level, Reverb.width"]


def test_a_5000_deep_nested_list_is_refused_where_it_gets_too_deep():
    from bridge.rack.config import YAML_DEPTH_MAX

    text = "name: r\ndevices: " + "[" * 5000 + "]" * 5000 + "\n"
    assert problems(text) == [
        f"rack.yaml:2:{9 + YAML_DEPTH_MAX}: YAML error: lists and mappings nested more than "
        f"{YAML_DEPTH_MAX} deep (a rack file needs about 5 levels)"]


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path):
    from bridge.rack.config import RACK_FILE_MAX_BYTES

    path = tmp_path / "huge.yaml"
    path.write_text(synths(1) + "# padding\n" * (RACK_FILE_MAX_BYTES // 10))
    with pytest.raises(ConfigError) as info:
        load_rack(path, environ=NOENV)
    size = path.stat().st_size
    assert str(info.value) == (f"{path}: the file is {size:,} bytes; a rack file may be at "
                               f"most {RACK_FILE_MAX_BYTES:,} bytes (256 KiB): is it the right "
                               "file?")


def test_a_file_that_is_not_utf8_is_refused_at_line_and_column(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: r\ndevices:\n  - {id: Séquence, kind: synth}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_rack(path, environ=NOENV)
    assert str(info.value) == (f"{path}:3:11: not UTF-8 text: byte 0xe9 here can't be "
                               "decoded; save the file as UTF-8")


def test_the_documented_limits_are_the_codes():
    """docs/configuration.md's limits table states each limit's constant and its value."""
    from bridge.rack.config import RACK_FILE_MAX_BYTES, YAML_DEPTH_MAX
    from bridge.transport.layout import REGISTRY_SLOTS

    doc = (REPO / "docs" / "configuration.md").read_text()
    table = re.search(r"### Limits\n\n(.*?)\n\n", doc, re.S).group(1)
    for name, value in (("REGISTRY_SLOTS", f"{REGISTRY_SLOTS}"),
                        ("RACK_FILE_MAX_BYTES", f"{RACK_FILE_MAX_BYTES:,} bytes"),
                        ("YAML_DEPTH_MAX", f"{YAML_DEPTH_MAX} levels")):
        row = next(ln for ln in table.splitlines() if f"`{name}`" in ln)
        assert f"| {value}" in row, row


@pytest.mark.skipif(not (PLUGINS / "lv2" / "DLSine.lv2").exists(),
                    reason="run ./setup.sh: it builds the LV2 test plugins")
def test_lv2_parameter_values_are_checked_against_their_turtle_ranges():
    """LV2 ranges come from the plugin's Turtle (nothing instantiated), in a chain mixed with
    built-ins too; the device's own check says the same at start."""
    assert problems("""\
        name: r
        devices:
          - id: Keys
            kind: chain
            plugins: [lv2:DLSine, builtin:Reverb]
            params:
              DLSine.gain: 4
              Reverb.room_size: 3
              Reverb.wet_level: 0.5
        """) == [
        "rack.yaml:7:20: devices[0].params[\"DLSine.gain\"]: parameter 'Gain': 4 is out of "
        "range 0..1",
        "rack.yaml:8:25: devices[0].params[\"Reverb.room_size\"]: Room Size value must be "
        "between 0.0 and 1.0."]
