"""docs/protocol.md and the code cannot drift apart.

1. Every generated block in the doc equals what the code generates now.
2. Independently of our layout engine, every structure table in the doc, laid out by ctypes
   with C's own rules for the listed types, gives the offsets and sizes the doc states: a C
   or C++ peer that declares the struct from the table gets the same memory layout.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from bridge.transport import commands, docgen, layout

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
CTYPES = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32,
          "u64": ctypes.c_uint64, "i32": ctypes.c_int32, "f32": ctypes.c_float}


def doc_block(key: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- BEGIN GENERATED: {key} -->\n(.*?)<!-- END GENERATED: {key} -->",
                  text, re.S)
    assert m, f"docs/protocol.md lacks the generated block {key!r}"
    return m.group(1)


def test_every_generated_block_of_the_doc_matches_the_code():
    assert docgen.main(["--check"]) == 0, "run: python -m bridge.transport.docgen"


def test_the_doc_has_every_block_the_code_generates():
    _, missing = docgen.render(DOC.read_text())
    assert missing == []


@pytest.mark.parametrize("struct", layout.STRUCTS, ids=lambda s: s.name)
def test_doc_struct_table_matches_a_c_compilers_layout(struct):
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `([^`]+)` \| `(\w+)` \|", doc_block(
        f"struct-{struct.name}"), re.M)
    assert rows, f"no rows parsed for {struct.name}"
    fields = []
    for _, _, ctype, name in rows:
        if ctype.startswith("char["):
            fields.append((name, ctypes.c_char * int(ctype[5:-1])))
        else:
            fields.append((name, CTYPES[ctype]))
    cstruct = type(struct.name, (ctypes.LittleEndianStructure,), {"_fields_": fields})
    for offset, size, _, name in rows:
        assert getattr(cstruct, name).offset == int(offset), f"{struct.name}.{name} offset"
        assert getattr(cstruct, name).size == int(size), f"{struct.name}.{name} size"
    total = re.search(r"Total size: \*\*(\d+) bytes\*\*", doc_block(f"struct-{struct.name}"))
    assert ctypes.sizeof(cstruct) == int(total.group(1)) == struct.size


def test_doc_command_table_lists_every_command_with_its_code():
    rows = re.findall(r"^\| 0x([0-9A-F]{4}) \| `(\w+)` \|", doc_block("commands"), re.M)
    assert [(int(code, 16), name) for code, name in rows] == [
        (c.code, c.name) for c in commands.COMMANDS]


def test_doc_constants_match_the_layout_module():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", doc_block("constants"), re.M))
    for name in ("REGISTRY_SLOTS", "MESSAGE_SIZE", "AUDIO_RING_FRAMES", "MAX_CHANNELS",
                 "MESSAGE_RING_SLOTS", "ID_MAX_BYTES", "PROTOCOL_MAJOR"):
        assert rows[name].strip() == str(getattr(layout, name))
    assert layout.MESSAGE_HEADER.size + layout.MESSAGE_PAYLOAD_SIZE == layout.MESSAGE_SIZE
    assert layout.REGISTRY_SIZE == layout.REGISTRY_HEADER.size + 16 * layout.REGISTRY_SLOT.size
