"""Adapters turn an outside thing into a discoLink Device, or a Host into an outside thing.

They may import ``bridge.transport`` and ``bridge.midi``, never ``bridge.rack`` or the CLI.
Here now: the built-in sine synth (``sine``), the wiring every instrument device shares
(``instrument``), live MIDI input through rtmidi (``rtmidi_in``), the ``send`` and
``midi-monitor`` engines (``midi_tools``), the WAV host session (``session``), and plugin
devices: what every stage of a chain is (``stage``), pedalboard's VST3 and built-ins
(``plugin``), LV2 through lilv (``lv2``, with the C side in ``_lv2host.c``), chains
(``plugin_device``), discovery (``plugin_scan``), and atomic writes and locks for the files
they keep (``persist``). JACK both ways is ``jack_bridge``.
"""
