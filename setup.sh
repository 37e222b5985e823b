#!/usr/bin/env bash
# Sets up a fresh machine for discolink-bridge: system packages, the .venv, and the package
# with its C extension. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# System packages: a C compiler and Python headers build the transport's C extension.
need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
# The C SDK (native/discolink.h) builds its tools and tests with make, gcc and g++.
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
python3 -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
    || need_apt+=(python3-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# JACK (jackd2): the server and its example clients (jack_midiseq, jack_metro, ...) that the
# tests play against, and libjack, which python-rtmidi's JACK MIDI API needs where there is
# no ALSA sequencer (as on a machine with no sound card).
command -v jackd >/dev/null 2>&1 && command -v jack_midiseq >/dev/null 2>&1 || need_apt+=(jackd2)
# LV2: lilv (the host library, through ctypes), Debian's LV2 tools the tests compare with
# (lv2file renders offline, lv2ls/lv2info list, jalv hosts on JACK), the LV2 headers for the
# test plugins, and three plugin collections whose plugins the tests run (357 plugins).
for pkg in liblilv-0-0 lilv-utils lv2file jalv lv2-dev x42-plugins lsp-plugins-lv2 swh-lv2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: missing system packages: ${need_apt[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "setup.sh: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The virtual environment and the package (editable, so the C extension builds in place).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.discolink-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ bridge/transport/_shm.c -nt "$stamp" ] || [ bridge/adapters/_lv2host.c -nt "$stamp" ] \
    || ! .venv/bin/python -c "import bridge.transport._shm, bridge.adapters._lv2host" 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test,bench]'
    touch "$stamp"
fi

# The C tools (cli_device, cli_host, cli_master) and the C tests of native/discolink.h, into
# build/native (native/Makefile; quick when nothing changed).
make -s -C native all

# The plugins, into build/plugins (plugins/README.md): the discoLink DAW plugins (discoLink Host,
# Host 12, Host FX, Device; VST3 and LV2, docs/native.md), our DPF test instruments (DLSine,
# DLSine12) and Debian 13's Dragonfly reverbs. Quick when they are already there.
bash plugins/build.sh
