"""The discoLink protocol: layout, rings, messages, command table, registry, endpoints.

Depends only on the standard library, numpy and our C extension ``_shm``; it never imports
an adapter. docs/protocol.md is the normative description; ``layout`` and ``commands`` are
its single sources of truth in code.
"""

from . import commands as cmd
from .clock import DeviceRunner
from .commands import COMMANDS, ErrorCode, MalformedMessage, T
from .device import Device, DeviceStats
from .host import (
    CommandError,
    Connection,
    DeviceClaimed,
    DeviceNotFound,
    HandshakeError,
    Host,
    HostError,
    HostStats,
)
from .layout import PROTOCOL_MAJOR, PROTOCOL_MINOR, Capability, Mode
from .message import Message
from .monitor import DebugMonitor, make_console_monitor
from .registry import DeviceInfo, Registry, RegistryError, RegistryFullError
from .shm import SegmentError

__all__ = [
    "COMMANDS", "PROTOCOL_MAJOR", "PROTOCOL_MINOR", "Capability", "CommandError", "Connection",
    "DebugMonitor", "Device", "DeviceClaimed", "DeviceInfo", "DeviceNotFound", "DeviceRunner",
    "DeviceStats", "ErrorCode", "HandshakeError", "Host", "HostError", "HostStats",
    "MalformedMessage", "Message", "Mode", "Registry", "RegistryError", "RegistryFullError",
    "SegmentError", "T", "cmd", "make_console_monitor",
]
