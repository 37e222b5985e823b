"""MIDI for the bridge: codecs and a device's MIDI intake.

- ``event``: ``MidiEvent`` (sample offset + MIDI 1.0 bytes or one UMP packet), mido conversion.
- ``parser``: the MIDI 1.0 byte-stream parser (running status, real-time, SysEx, damage).
- ``ump`` and ``translate``: Universal MIDI Packets and MIDI 2.0 <-> 1.0 translation.
- ``mpe``: MPE zones, the host-side note allocator and the device-side zone tracker.
- ``ipc`` and ``stream``: MIDI events as discoLink commands, and the per-block merge of IPC
  and live input that instruments render from.

May import the standard library, mido and ``bridge.transport`` (for the command table);
never an adapter, the rack or the CLI. No I/O: live ports are an adapter's job.
"""
