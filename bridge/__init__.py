"""discolink-bridge: the discoLink shared-memory audio/MIDI protocol for Python.

Layers, each importing only those below it:
``bridge.cli`` -> ``bridge.rack`` -> ``bridge.adapters`` ->
``bridge.transport`` and ``bridge.midi``.
"""

__version__ = "0.1.0"
