"""MIDI 1.0, UMP and MPE codecs and helpers (pure functions; no I/O). Filled in by issue 3."""
