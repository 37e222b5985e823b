"""Generate the tables of docs/protocol.md and the protocol block of native/discolink.h from
``layout`` and ``commands``.

The doc holds hand-written prose around generated blocks delimited by
``<!-- BEGIN GENERATED: key -->`` and ``<!-- END GENERATED: key -->``; the C header holds one
block between ``/* BEGIN GENERATED: protocol ... */`` and ``/* END GENERATED: protocol */``
(constants, enums, the shared-memory structs with their offsets, the command table). Run
``python -m bridge.transport.docgen`` to rewrite them, or with ``--check`` to exit 1 when
either file has drifted from the code (tests/test_protocol_doc.py and tests/test_native.py
run the check).
"""

from __future__ import annotations

import argparse
import enum
import re
import struct
import sys
from pathlib import Path

from . import commands, layout

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
HEADER = ROOT / "native" / "discolink.h"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<key>[\w-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- END GENERATED: (?P=key) -->)", re.S)


def _struct_table(s: layout.Struct) -> str:
    rows = ["| Offset | Size | Type | Field | Written by | Atomic access | Meaning |",
            "|---:|---:|---|---|---|---|---|"]
    for f in s.fields:
        rows.append(f"| {s.offset(f.name)} | {f.size} | `{f.type}` | `{f.name}` | {f.writer} | "
                    f"{f.atomic or '-'} | {f.meaning} |")
    rows.append(f"\nTotal size: **{s.size} bytes**.")
    return "\n".join(rows)


def _enum_table(e: type[enum.Enum], what: str = "Value") -> str:
    rows = [f"| {what} | Name |", "|---:|---|"]
    for m in e:
        value = f"0x{int(m.value):x}" if issubclass(e, enum.IntFlag) else str(int(m.value))
        rows.append(f"| {value} | `{m.name}` |")
    return "\n".join(rows)


def _constants() -> str:
    rows = ["| Constant | Value | Meaning |", "|---|---:|---|"]
    for name, meaning in layout.CONSTANTS:
        v = getattr(layout, name)
        rows.append(f"| `{name}` | {v} | {meaning} |")
    rows.append(f"| `REGISTRY_MAGIC` | 0x{layout.REGISTRY_MAGIC:08X} | registry magic, the "
                "bytes \"DLRG\" |")
    rows.append(f"| `SEGMENT_MAGIC` | 0x{layout.SEGMENT_MAGIC:08X} | transport magic, the "
                "bytes \"DLNK\" |")
    return "\n".join(rows)


def _command_table() -> str:
    rows = ["| Code | Name | Direction | Request payload | Response payload | Fragmentable | "
            "Meaning |", "|---:|---|---|---|---|---|---|"]
    for c in commands.COMMANDS:
        resp = c.response.describe() if c.response else "-"
        rows.append(f"| 0x{c.code:04X} | `{c.name}` | {c.direction} | {c.request.describe()} | "
                    f"{resp} | {'yes' if c.fragmentable else 'no'} | {c.summary} |")
    return "\n".join(rows)


def _segment_example() -> str:
    rows = ["| Channels | Return ring | Command ring | Response ring | Audio ring | "
            "Return ring offset | Total bytes |", "|---:|---|---:|---:|---:|---:|---:|"]
    for ch, ret in ((0, False), (1, False), (2, False), (2, True), (12, False), (12, True)):
        s = layout.SegmentLayout.compute(ch, ch if ret else 0)
        rows.append(f"| {ch} | {'yes' if ret else 'no'} | {s.command_ring_offset} | "
                    f"{s.response_ring_offset} | {s.audio_ring_offset} | "
                    f"{s.return_ring_offset} | {s.total_size} |")
    return "\n".join(rows)


def generated_blocks() -> dict[str, str]:
    """Every generated block of the doc, by key."""
    blocks = {
        "constants": _constants(),
        "commands": _command_table(),
        "segment-examples": _segment_example(),
        "enum-slot-state": _enum_table(layout.SlotState),
        "enum-device-state": _enum_table(layout.DeviceState),
        "enum-mode": _enum_table(layout.Mode),
        "enum-capability": _enum_table(layout.Capability, "Bit"),
        "enum-message-flag": _enum_table(layout.MessageFlag, "Bit"),
        "enum-error-code": _enum_table(commands.ErrorCode),
    }
    for s in layout.STRUCTS:
        blocks[f"struct-{s.name}"] = _struct_table(s)
    return blocks


# ---- the C header's generated block ------------------------------------------------------

_C_BLOCK = re.compile(r"(/\* BEGIN GENERATED: protocol[^\n]*\n)(?P<body>.*?)"
                      r"(/\* END GENERATED: protocol \*/)", re.S)
_C_TYPES = {"u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
            "i32": "int32_t", "f32": "float", "f64": "double"}
# C names of the enums: (prefix of each value, typedef name)
_C_ENUMS = ((layout.SlotState, "DL_SLOT_", "dl_slot_state"),
            (layout.DeviceState, "DL_DEVICE_", "dl_device_state"),
            (layout.Mode, "DL_MODE_", "dl_mode"),
            (layout.Capability, "DL_CAP_", "dl_capability"),
            (layout.MessageFlag, "DL_FLAG_", "dl_message_flag"),
            (commands.ErrorCode, "DL_ERRCODE_", "dl_error_code"))
_C_NAME_EXCEPTIONS = {"SysEx": "SYSEX"}  # one word in MIDI, not "SYS_EX"
_TAIL_KIND = {None: "DL_TAIL_NONE", "bytes": "DL_TAIL_BYTES", "utf8": "DL_TAIL_UTF8"}


def c_upper(name: str) -> str:
    """A CamelCase name as a C macro name: NoteOn -> NOTE_ON, TransportHeader ->
    TRANSPORT_HEADER."""
    return _C_NAME_EXCEPTIONS.get(name) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def _c_comment(text: str) -> str:
    return text.replace("*/", "* /")


def _c_constants() -> list[str]:
    out = []
    for name, meaning in layout.CONSTANTS:
        value = getattr(layout, name)
        if isinstance(value, float):
            out.append(f"#define DL_{name} {value!r} /* {_c_comment(meaning)} */")
            ns = round(value * 1e9)
            out.append(f"#define DL_{name[:-2]}_NS {ns}ull /* the same, in nanoseconds */")
        else:
            out.append(f"#define DL_{name} {value} /* {_c_comment(meaning)} */")
    out.append(f"#define DL_REGISTRY_MAGIC 0x{layout.REGISTRY_MAGIC:08X}u /* the bytes \"DLRG\" */")
    out.append(f"#define DL_SEGMENT_MAGIC 0x{layout.SEGMENT_MAGIC:08X}u /* the bytes \"DLNK\" */")
    return out


def _c_enums() -> list[str]:
    out = []
    for e, prefix, cname in _C_ENUMS:
        out.append(f"typedef enum {cname} {{")
        for m in e:
            value = f"0x{int(m.value):x}" if issubclass(e, enum.IntFlag) else str(int(m.value))
            out.append(f"    {prefix}{m.name} = {value},")
        out.append(f"}} {cname};")
    labels = ", ".join(f'"{m.label}"' for m in layout.Mode)
    out.append(f"#define DL_MODE_LABELS {{{labels}}} /* indexed by dl_mode */")
    return out


def _c_struct(s: layout.Struct) -> list[str]:
    cname = "dl_" + c_upper(s.name).lower()
    macro = "DL_" + c_upper(s.name)
    out = [f"typedef struct {cname} {{"]
    for f in s.fields:
        if f.type.startswith("char["):
            decl = f"char {f.name}[{f.size}];"
        else:
            decl = f"{_C_TYPES[f.type]} {f.name};"
        access = f"; {f.atomic}" if f.atomic else ""
        writer = f" ({f.writer}{access})" if f.writer != "-" or access else ""
        out.append(f"    {decl:<28} /* @{s.offset(f.name)}{writer}: {_c_comment(f.meaning)} */")
    out.append(f"}} {cname};")
    out.append(f"#define {macro}_BYTES {s.size}")
    for f in s.fields:
        out.append(f"#define {macro}_{f.name.upper()}_OFFSET {s.offset(f.name)}")
    out.append(f"DL_STATIC_ASSERT(sizeof({cname}) == {macro}_BYTES, \"{cname} size\");")
    for f in s.fields:
        out.append(f"DL_STATIC_ASSERT(offsetof({cname}, {f.name}) == "
                   f"{macro}_{f.name.upper()}_OFFSET, \"{cname}.{f.name} offset\");")
    return out


def _c_layout_defines(prefix: str, lay: commands.Layout) -> list[str]:
    out, offset = [], 0
    for name, kind in lay.fields:
        out.append(f"#define {prefix}_{name.upper()}_OFFSET {offset} /* {kind} */")
        if kind not in ("bytes", "utf8"):
            offset += struct.calcsize("<" + (f"{kind[5:-1]}s" if kind.startswith("char[")
                                             else commands._FIXED[kind]))
    out.append(f"#define {prefix}_FIXED_SIZE {lay.fixed_size}")
    return out


def c_command_rows() -> list[tuple]:
    """The C command table's rows: (code, NAME, Name, request fixed bytes, request tail kind,
    response fixed bytes or -1, response tail kind, fragmentable, MIDI), tails being None,
    "bytes" or "utf8"."""
    rows = []
    for c in commands.COMMANDS:
        req, resp = c.request, c.response
        rows.append((c.code, c_upper(c.name), c.name, req.fixed_size,
                     req.tail[1] if req.tail else None, resp.fixed_size if resp else -1,
                     resp.tail[1] if resp and resp.tail else None, int(c.fragmentable),
                     int(c.code in commands.MIDI_TYPES)))
    return rows


def _c_commands() -> list[str]:
    out = ["typedef enum dl_command_type {"]
    for c in commands.COMMANDS:
        out.append(f"    DL_CMD_{c_upper(c.name)} = 0x{c.code:04X}, /* {c.direction}: "
                   f"{_c_comment(c.summary)} */")
    out.append("} dl_command_type;")
    out.append("/* The command table: X(code, NAME, \"Name\", request fixed bytes, request tail,")
    out.append("   response fixed bytes (-1: answered with its own type), response tail,")
    out.append("   fragmentable, MIDI command) */")
    out.append("#define DL_COMMAND_TABLE(X) \\")
    rows = []
    for code, upper, name, *rest in c_command_rows():
        args = ", ".join(_TAIL_KIND[v] if i in (1, 3) else str(v) for i, v in enumerate(rest))
        rows.append(f"    X(0x{code:04X}, {upper}, \"{name}\", {args})")
    out.append(" \\\n".join(rows))
    out.append("/* Payload layouts: byte offsets of each field within the payload, and the size "
               "of the")
    out.append("   fixed fields (a last bytes/utf8 field runs from its offset to payload_len). */")
    for c in commands.COMMANDS:
        out += _c_layout_defines(f"DL_PAYLOAD_{c_upper(c.name)}", c.request)
        if c.response is not None:
            out += _c_layout_defines(f"DL_RESPONSE_{c_upper(c.name)}", c.response)
    return out


def c_header_block() -> str:
    """The generated block of native/discolink.h: constants, enums, structs, command table."""
    parts = ["/* Constants (layout.CONSTANTS) */", *_c_constants(), "",
             "/* Enums (layout, commands.ErrorCode) */", *_c_enums(), "",
             "/* Shared-memory structures (layout.STRUCTS): every offset is checked at compile "
             "time. */"]
    for s in layout.STRUCTS:
        parts += _c_struct(s)
        parts.append("")
    parts += ["/* Commands (commands.COMMANDS) */", *_c_commands()]
    return "\n".join(parts) + "\n"


def render_header(text: str) -> str:
    """The header with its generated block refreshed; KeyError if it has none."""
    if not _C_BLOCK.search(text):
        raise KeyError("native/discolink.h has no '/* BEGIN GENERATED: protocol' block")
    return _C_BLOCK.sub(lambda m: f"{m.group(1)}{c_header_block()}{m.group(3)}", text, count=1)


def render(text: str) -> tuple[str, list[str]]:
    """The doc with every generated block refreshed, and the keys the doc lacks."""
    blocks = generated_blocks()
    seen = set()

    def sub(m: re.Match) -> str:
        key = m.group("key")
        if key not in blocks:
            raise KeyError(f"docs/protocol.md has a generated block {key!r} that docgen "
                           "does not know")
        seen.add(key)
        return f"{m.group(1)}{blocks[key]}\n{m.group(4)}"

    out = _BLOCK.sub(sub, text)
    return out, sorted(set(blocks) - seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    p.add_argument("--doc", type=Path, default=DOC)
    p.add_argument("--header", type=Path, default=HEADER)
    args = p.parse_args(argv)
    text = args.doc.read_text()
    new, missing = render(text)
    if missing:
        print(f"{args.doc}: missing generated blocks: {', '.join(missing)}", file=sys.stderr)
        return 1
    header = args.header.read_text()
    try:
        new_header = render_header(header)
    except KeyError as exc:
        print(f"{args.header}: {exc.args[0]}", file=sys.stderr)
        return 1
    stale = [(path, old, fresh) for path, old, fresh in ((args.doc, text, new),
                                                         (args.header, header, new_header))
             if fresh != old]
    if args.check:
        for path, _, _ in stale:
            print(f"{path} is out of date: run python -m bridge.transport.docgen",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, _, fresh in stale:
        path.write_text(fresh)
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
