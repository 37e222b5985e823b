"""The C SDK (native/discolink.h) on its own: one source of truth with layout.py and
commands.py, warning-free in C11 and C++17, its C unit tests (plain, ASan + UBSan, C++), and
the C tools' command-line behaviour (help, exit codes, nothing left in /dev/shm)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from helpers_ipc import by_id, wait_until
from native_helpers import HEADER, build_native, c_device, cli_host, tool

from bridge.transport import commands, docgen, layout, shm


@pytest.fixture(scope="module", autouse=True)
def native_build():
    build_native()


def compile_c(tmp_path, source: str, compiler: str, std: str,
              *extra: str) -> subprocess.CompletedProcess:
    suffix = ".cpp" if compiler == "g++" else ".c"
    src = tmp_path / f"probe{suffix}"
    src.write_text(source)
    return subprocess.run([compiler, f"-std={std}", "-Wall", "-Wextra", "-Werror", *extra,
                           f"-I{HEADER.parent}", str(src), "-o", str(tmp_path / "probe"), "-lm",
                           "-lpthread"], capture_output=True, text=True, timeout=300)


# ---- one source of truth ------------------------------------------------------------------

def test_the_header_block_is_what_docgen_generates_from_layout_and_commands():
    assert docgen.main(["--check"]) == 0, "run: python -m bridge.transport.docgen"


def test_a_drifted_header_fails_the_check_and_docgen_rewrites_it(tmp_path):
    copy = tmp_path / "discolink.h"
    good = HEADER.read_text()
    copy.write_text(good.replace("#define DL_REGISTRY_SLOTS 16 ",
                                 "#define DL_REGISTRY_SLOTS 17 ", 1))
    assert copy.read_text() != good
    assert docgen.main(["--check", "--header", str(copy)]) == 1
    assert docgen.main(["--header", str(copy)]) == 0
    assert copy.read_text() == good


def test_a_header_without_its_generated_block_is_refused(tmp_path):
    copy = tmp_path / "discolink.h"
    copy.write_text("/* no block */\n")
    assert docgen.main(["--check", "--header", str(copy)]) == 1


def test_the_c_compilers_layout_of_every_struct_matches_layout_py(tmp_path):
    lines = []
    for s in layout.STRUCTS:
        cname = "dl_" + docgen.c_upper(s.name).lower()
        lines.append(f'printf("{s.name} size %zu\\n", sizeof({cname}));')
        for f in s.fields:
            lines.append(f'printf("{s.name} {f.name} %zu %zu\\n", offsetof({cname}, {f.name}), '
                         f'sizeof((({cname} *)0)->{f.name}));')
    source = ('#include <stdio.h>\n#include "discolink.h"\nint main(void) {\n'
              + "\n".join(lines) + "\nreturn 0;\n}\n")
    done = compile_c(tmp_path, source, "gcc", "c11")
    assert done.returncode == 0, done.stderr
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True).stdout
    expected = []
    for s in layout.STRUCTS:
        expected.append(f"{s.name} size {s.size}")
        expected += [f"{s.name} {f.name} {s.offset(f.name)} {f.size}" for f in s.fields]
    assert out.splitlines() == expected


def test_the_command_table_in_the_header_matches_commands_py(tmp_path):
    source = ('#define DISCOLINK_IMPLEMENTATION\n#include "discolink.h"\n#include <stdio.h>\n'
              "int main(void) {\n"
              "#define ROW(code, up, name, rf, rt, sf, st, frag, midi) "
              'printf("%d %s %d %d %d %d %d %d\\n", code, name, rf, rt, sf, st, frag, midi);\n'
              "DL_COMMAND_TABLE(ROW)\nreturn 0;\n}\n")
    done = compile_c(tmp_path, source, "gcc", "c11")
    assert done.returncode == 0, done.stderr
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True).stdout
    tails = {None: 0, "bytes": 1, "utf8": 2}  # DL_TAIL_NONE, DL_TAIL_BYTES, DL_TAIL_UTF8
    expected = [f"{code} {name} {rf} {tails[rt]} {sf} {tails[st]} {frag} {midi}"
                for code, _, name, rf, rt, sf, st, frag, midi in docgen.c_command_rows()]
    assert [row[0] for row in docgen.c_command_rows()] == [c.code for c in commands.COMMANDS]
    assert out.splitlines() == expected


@pytest.mark.parametrize(("compiler", "std"), [("gcc", "c11"), ("g++", "c++17")])
@pytest.mark.parametrize("implementation", [False, True], ids=["declarations", "implementation"])
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
def test_the_header_compiles_warning_free(tmp_path, compiler, std, implementation, opt):
    source = ("#define DISCOLINK_IMPLEMENTATION\n" if implementation else "") + \
        '#include "discolink.h"\n#include <stdio.h>\nint main(void) {\n' \
        '    dl_device_config c = dl_device_config_init();\n' \
        '    printf("%s %u\\n", dl_result_name(DL_SUCCESS), c.channels);\n    return 0;\n}\n'
    if not implementation:  # declarations only: nothing to link, so just compile
        done = compile_c(tmp_path, source, compiler, std, opt, "-c")
    else:
        done = compile_c(tmp_path, source, compiler, std, opt)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def first_screen_examples() -> tuple[str, str]:
    """The device and host examples of the header's first screen, as code."""
    text = HEADER.read_text().split("#ifndef DISCOLINK_H", 1)[0]
    device = text.split("A DEVICE that", 1)[1].split("A HOST that", 1)[0]
    host = text.split("A HOST that", 1)[1].split("RULES", 1)[0]

    def code(block: str) -> str:
        return "\n".join(line[7:] for line in block.splitlines()[1:] if line.startswith("       "))

    return code(device), code(host)


def test_the_first_screen_shows_a_device_and_a_host_in_about_twenty_lines_that_compile(tmp_path):
    device, host = first_screen_examples()
    assert 10 <= len(device.splitlines()) <= 22 and 10 <= len(host.splitlines()) <= 22
    source = ('#define DISCOLINK_IMPLEMENTATION\n#include "discolink.h"\n#include <math.h>\n'
              "#include <stdio.h>\nstatic volatile int running;\n"
              f"static int device_example(void) {{\n{device}\nreturn 0;\n}}\n"
              f"static int host_example(void) {{\n{host}\nreturn 0;\n}}\n"
              "int main(void) { return device_example() + host_example(); }\n")
    for compiler, std in (("gcc", "c11"), ("g++", "c++17")):
        done = compile_c(tmp_path, source, compiler, std)
        assert done.returncode == 0, f"{compiler}:\n{source}\n{done.stderr}"


def test_strict_c_that_includes_another_header_first_is_told_why_first(tmp_path):
    source = ('#include <stdio.h>\n#define DISCOLINK_IMPLEMENTATION\n#include "discolink.h"\n'
              "int main(void) { return 0; }\n")
    done = compile_c(tmp_path, source, "gcc", "c11")
    assert done.returncode != 0
    first_error = next(line for line in done.stderr.splitlines() if "error" in line)
    assert "include discolink.h before any other header" in first_error, done.stderr
    assert compile_c(tmp_path, source, "gcc", "c11", "-D_DEFAULT_SOURCE").returncode == 0


# ---- the C unit tests ---------------------------------------------------------------------

@pytest.mark.parametrize("binary", ["test_discolink", "test_discolink_san", "test_discolink_cxx"],
                         ids=["plain", "asan+ubsan", "c++17"])
def test_c_unit_tests_pass(namespace, binary):
    env = {"DISCOLINK_TEST_NAMESPACE": namespace, "PATH": "/usr/bin:/bin",
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    done = subprocess.run([tool(binary)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith(", 0 failed"), done.stdout
    assert "runtime error" not in done.stderr and "AddressSanitizer" not in done.stderr, done.stderr
    assert shm.namespace_names(namespace) == []


# ---- the tools' command lines -------------------------------------------------------------

@pytest.mark.parametrize("name", ["cli_device", "cli_host", "cli_master"])
def test_every_tool_has_help(name):
    done = subprocess.run([tool(name), "--help"], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: {name}")
    assert "Exit codes" in done.stdout


@pytest.mark.parametrize(("name", "args", "needle"), [
    ("cli_device", ["--channels", "13"], "--channels 13 is out of range 1..12"),
    ("cli_device", ["--blocksize", "8"], "--blocksize 8 is out of range 16..4096"),
    ("cli_device", ["--samplerate", "lots"], "--samplerate 'lots' is not an integer"),
    ("cli_device", ["--id", "A:"], "instance after ':' must be 1 to 5 decimal digits"),
    ("cli_device", ["--id", "x" * 58], "at most 57"),
    ("cli_device", ["--fill", "5"], "--fill 5 is out of range 1..4"),
    ("cli_device", ["--mode", "loud"], "--mode 'loud' is unknown"),
    ("cli_device", ["--bogus"], "unknown option '--bogus'"),
    ("cli_master", ["--interval", "0"], "--interval 0 s is out of range"),
    ("cli_host", [], "--id is required"),
    ("cli_host", ["--id", "Sine:0", "--link-tag", "a/b"], "contains '/'"),
    ("cli_host", ["--id", "Sine:0", "--seconds", "-1"], "--seconds -1 s is out of range"),
    ("cli_host", ["--recall"], "--recall needs --link-tag"),
    ("cli_host", ["--id", "Sine:0", "--record", "/nonexistent/dir/x.wav"],
     "cannot write --record /nonexistent/dir/x.wav"),
    ("cli_host", ["--id"], "option '--id' needs a value"),
    ("cli_host", ["--id", "Sine:0", "extra"], "unexpected argument 'extra'"),
])
def test_usage_errors_exit_2_with_one_line_and_leave_nothing(spawn, name, args, needle):
    done = subprocess.run([tool(name), *args], env=spawn.env(), capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith(f"{name}: error: "), lines
    assert lines[0].endswith("(see --help)")
    assert shm.namespace_names(spawn.namespace) == []


@pytest.mark.parametrize("name", ["cli_device", "cli_host"])
def test_a_bad_namespace_is_a_usage_error(spawn, name):
    env = dict(spawn.env(), DISCOLINK_NAMESPACE="no spaces")
    done = subprocess.run([tool(name), "--id", "Sine:0"], env=env, capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 2
    assert "invalid namespace 'no spaces'" in done.stderr


def test_cli_host_without_a_device_exits_1_and_creates_no_registry(spawn, tmp_path):
    done = cli_host(spawn, "--id", "Missing:0", "--record", str(tmp_path / "x.wav"))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"cli_host: no device 'Missing:0' in namespace '{spawn.namespace}'; running: none"]
    assert shm.namespace_names(spawn.namespace) == []  # a host never creates a registry
    assert not (tmp_path / "x.wav").exists()  # nothing recorded: no empty file left


def test_an_id_taken_by_a_live_device_is_refused_with_exit_1(spawn):
    first = c_device(spawn, device_id="Taken:2")
    done = subprocess.run([tool("cli_device"), "--id", "Taken:2"], env=spawn.env(),
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"cli_device: device id 'Taken:2' is already registered by pid "
                                   f"{first.pid} in namespace '{spawn.namespace}'")
    first.stop()


@pytest.mark.parametrize("name", ["cli_device", "cli_master"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_c_device_deregisters_and_removes_its_segment_on_a_signal(spawn, name, signum):
    dev = c_device(spawn, name=name, device_id="Sig")
    info = by_id(spawn.namespace)[dev.id]
    segment = shm.transport_name(spawn.namespace, info.slot, info.pid)
    assert segment in shm.namespace_names(spawn.namespace)
    dev.proc.send_signal(signum)
    out, err = dev.proc.communicate(timeout=10)
    assert dev.proc.returncode == 0, err
    assert f"device {dev.id} stopped: " in out
    # Only the registry is left (a device never removes it; `discolink-bridge cleanup` does),
    # and no slot in it.
    assert shm.namespace_names(spawn.namespace) == [shm.registry_name(spawn.namespace)]
    assert by_id(spawn.namespace) == {}


def test_cli_master_shows_a_status_line_with_the_claim(spawn):
    dev = c_device(spawn, "--interval", "0.1", name="cli_master", device_id="Master")
    host = subprocess.Popen([tool("cli_host"), "--id", dev.id, "--seconds", "1.5", "--link-tag",
                             "desk"], env=spawn.env(), stdout=subprocess.PIPE, text=True)
    spawn.procs.append(host)
    deadline = time.monotonic() + 10
    seen = ""
    while time.monotonic() < deadline:
        seen = dev.proc.stderr.readline()
        if f"host {host.pid} 'desk'" in seen and "notes 1" in seen:
            break
    assert f"{dev.id} | host {host.pid} 'desk' | 48000 Hz 256 fr | blocks " in seen, seen
    assert "notes 1" in seen
    host.wait(timeout=10)
    wait_until(lambda: "unclaimed" in dev.proc.stderr.readline(), 5, "the claim released")
    dev.stop()

