"""Adapters turn an outside thing into a discoLink Device, or a Host into an outside thing.

They may import ``bridge.transport`` and ``bridge.midi``, never ``bridge.rack`` or the CLI.
Here now: the built-in sine synth (``sine``), the wiring every instrument device shares
(``instrument``), live MIDI input through rtmidi (``rtmidi_in``), the ``send`` and
``midi-monitor`` engines (``midi_tools``) and the WAV host session (``session``).
"""
