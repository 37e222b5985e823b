#!/usr/bin/env bash
# Builds / fetches the real VST3 plugins the tests use, into build/plugins/ (git-ignored):
#   build/plugins/DLSine.vst3, build/plugins/DLSine12.vst3   our DPF test instruments (plugins/dlsine)
#   build/plugins/Dragonfly{Room,Hall,Plate,EarlyReflections}Reverb.vst3
#                                   symlinks into Debian 13's dragonfly-reverb-vst3, unpacked
#                                   under build/plugins/dragonfly/ (fetched with a private apt set-up)
# Idempotent: a bundle newer than its sources is not rebuilt; dragonfly is not fetched again.
# Usage: bash plugins/build.sh [--no-dragonfly]      (run as root when packages are missing)
# Exits non-zero with a one-line "plugins/build.sh: ..." message when a step fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/plugins/dlsine
OUT=$ROOT/build/plugins
DPF=/usr/share/dpf
WANT_DRAGONFLY=1
for arg in "$@"; do
    case $arg in
        --no-dragonfly) WANT_DRAGONFLY=0 ;;
        *) echo "plugins/build.sh: unknown argument '$arg' (usage: plugins/build.sh [--no-dragonfly])" >&2; exit 2 ;;
    esac
done

fail() { echo "plugins/build.sh: $*" >&2; exit 1; }
log() { echo "plugins/build.sh: $*" >&2; }

export DEBIAN_FRONTEND=noninteractive

# apt_install PKG... : installs missing system packages (root only).
apt_install() {
    [ "$(id -u)" -eq 0 ] || fail "missing system packages: $* (run as root, or install them)"
    log "installing $*"
    apt-get update -qq >/dev/null 2>&1 || fail "apt-get update failed (needed to install $*)"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || fail "apt-get install $* failed"
}

# ---------------------------------------------------------------------------------------------
# Tools
need=()
[ -f "$DPF/distrho/DistrhoPluginMain.cpp" ] || need+=(dpf-source)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

case "$(uname -m)" in
    x86_64) VST3_ARCH=x86_64-linux ;;
    aarch64) VST3_ARCH=aarch64-linux ;;
    i?86) VST3_ARCH=i386-linux ;;
    *) VST3_ARCH="$(uname -m)-linux" ;;
esac

mkdir -p "$OUT" || fail "cannot create $OUT"

# ---------------------------------------------------------------------------------------------
# 1. DLSine / DLSine12 (DPF).
#
# DPF's VST3 wrapper (1.6, and upstream at the time of writing) has an off-by-one for synths:
# with MIDI input it exposes 16*130 hidden "MIDI Ch. x CC y" parameters (ids 0..2079) ahead of
# the plugin's own, and getParameterNormalized/setParameterNormalized test
# "rindex <= kVst3InternalParameterMidiCC_end" (2080), so the plugin's first parameter (Gain)
# reads as 0 in the host and cannot be set through the edit controller. We compile against a
# copy of DPF's distrho/ folder (in build/plugins/obj/dpf) with that comparison made "<".
DPF_COPY=$OUT/obj/dpf
if [ ! -f "$DPF_COPY/.patched" ] || [ "$DPF/distrho/src/DistrhoPluginVST3.cpp" -nt "$DPF_COPY/.patched" ]; then
    rm -rf "$DPF_COPY"
    mkdir -p "$DPF_COPY"
    cp -a "$DPF/distrho" "$DPF_COPY/distrho" || fail "cannot copy $DPF/distrho"
    sed -i 's/rindex <= kVst3InternalParameterMidiCC_end)/rindex < kVst3InternalParameterMidiCC_end)/' \
        "$DPF_COPY/distrho/src/DistrhoPluginVST3.cpp" || fail "cannot patch DPF's DistrhoPluginVST3.cpp"
    if grep -q 'rindex <= kVst3InternalParameterMidiCC_end' "$DPF_COPY/distrho/src/DistrhoPluginVST3.cpp"; then
        fail "patching DPF's DistrhoPluginVST3.cpp left an off-by-one comparison"
    fi
    touch "$DPF_COPY/.patched"
fi

# Flags follow DPF's Makefile.base.mk / Makefile.plugins.mk for a Linux release build, minus
# -ffast-math (the output must follow the documented formula).
CXXFLAGS_DPF=(-std=gnu++11 -O2 -fPIC -DPIC -DNDEBUG -fvisibility=hidden -fdata-sections
              -ffunction-sections -fno-gnu-unique -Wall -Wextra -pipe
              -I"$SRC" -I"$DPF_COPY/distrho" -DDISTRHO_PLUGIN_TARGET_VST3)
LDFLAGS_DPF=(-shared -fdata-sections -ffunction-sections -Wl,-O1,--as-needed,--gc-sections
             -Wl,--no-undefined -Wl,--version-script="$DPF/utils/symbols/vst3.version" -ldl)

# the files a bundle is built from: rebuilt when any is newer than the bundle's .so
sources=("$SRC"/*.cpp "$SRC"/*.h "$ROOT/plugins/build.sh" "$DPF_COPY/.patched")

up_to_date() { # BUNDLE_SO
    local so=$1 f
    [ -f "$so" ] || return 1
    for f in "${sources[@]}"; do
        [ "$so" -nt "$f" ] || return 1
    done
    return 0
}

pids=()
names=()
start_variant() { # NAME NUM_OUTPUTS  -> compiles in the background
    local name=$1 outs=$2
    local obj=$OUT/obj/$name
    mkdir -p "$obj"
    (
        set -e
        flags=("${CXXFLAGS_DPF[@]}" -DDLSINE_NUM_OUTPUTS="$outs")
        g++ "${flags[@]}" -c "$SRC/DLSine.cpp" -o "$obj/DLSine.cpp.o" &
        p1=$!
        g++ "${flags[@]}" -c "$DPF_COPY/distrho/DistrhoPluginMain.cpp" -o "$obj/DistrhoPluginMain_VST3.cpp.o" &
        p2=$!
        wait $p1
        wait $p2
        dir=$OUT/$name.vst3/Contents/$VST3_ARCH
        mkdir -p "$dir"
        g++ "$obj/DLSine.cpp.o" "$obj/DistrhoPluginMain_VST3.cpp.o" "${LDFLAGS_DPF[@]}" -o "$dir/$name.so.tmp"
        mv -f "$dir/$name.so.tmp" "$dir/$name.so"
    ) >"$obj/build.log" 2>&1 &
    pids+=($!)
    names+=("$name")
}

for variant in DLSine:2 DLSine12:12; do
    name=${variant%%:*}
    if up_to_date "$OUT/$name.vst3/Contents/$VST3_ARCH/$name.so"; then
        log "$name.vst3 is up to date"
    else
        log "building $name.vst3"
        start_variant "$name" "${variant##*:}"
    fi
done
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        tail -n 30 "$OUT/obj/${names[$i]}/build.log" >&2 || true
        fail "building ${names[$i]}.vst3 failed (full log: build/plugins/obj/${names[$i]}/build.log)"
    fi
done

# ---------------------------------------------------------------------------------------------
# 2. Dragonfly Reverb (VST3) from Debian 13 "trixie", a third-party effect. Fetched with
#    apt-get download through a private apt configuration (own sources list, lists, cache,
#    preferences, no update hooks), so the machine's apt set-up and /var/lib/apt/lists are
#    untouched; the package is only unpacked (dpkg -x), never installed.
DRAGONFLY_NAMES=(DragonflyRoomReverb DragonflyHallReverb DragonflyPlateReverb DragonflyEarlyReflections)

dragonfly_ready() {
    local n
    for n in "${DRAGONFLY_NAMES[@]}"; do
        [ -d "$OUT/$n.vst3" ] || return 1
    done
    return 0
}

if [ "$WANT_DRAGONFLY" -eq 1 ]; then
    if dragonfly_ready; then
        log "dragonfly-reverb-vst3 is already unpacked"
    else
        log "fetching dragonfly-reverb-vst3 from Debian trixie"
        APT=$OUT/apt
        mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.list.d" \
                 "$APT/preferences.d" "$APT/debs"
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        [ -f "$keyring" ] || apt_install debian-archive-keyring
        echo "deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" >"$APT/sources.list"
        cat >"$APT/apt.conf" <<EOF
// Private apt configuration of plugins/build.sh: read after the system's, it points every
// path apt writes to (and the sources and preferences it reads) into build/plugins/apt/.
Dir::Etc::SourceList "$APT/sources.list";
Dir::Etc::SourceParts "$APT/sources.list.d";
Dir::Etc::Preferences "$APT/preferences";
Dir::Etc::PreferencesParts "$APT/preferences.d";
Dir::State::Lists "$APT/lists";
Dir::Cache "$APT/cache";
Dir::Cache::Archives "$APT/cache/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
EOF
        aptp=(-c "$APT/apt.conf")
        apt-get "${aptp[@]}" update -qq >"$APT/update.log" 2>&1 \
            || { tail -n 5 "$APT/update.log" >&2; fail "apt-get update of the private trixie source failed (log: build/plugins/apt/update.log)"; }
        rm -f "$APT/debs"/dragonfly-reverb-vst3_*.deb
        (cd "$APT/debs" && apt-get "${aptp[@]}" download -qq dragonfly-reverb-vst3) >"$APT/download.log" 2>&1 \
            || { tail -n 5 "$APT/download.log" >&2; fail "apt-get download dragonfly-reverb-vst3 failed (log: build/plugins/apt/download.log)"; }
        deb=$(ls "$APT/debs"/dragonfly-reverb-vst3_*.deb 2>/dev/null | head -n 1)
        [ -n "$deb" ] || fail "apt-get download left no dragonfly-reverb-vst3 .deb in build/plugins/apt/debs"
        rm -rf "$OUT/dragonfly"
        dpkg -x "$deb" "$OUT/dragonfly" || fail "dpkg -x $deb failed"
        for n in "${DRAGONFLY_NAMES[@]}"; do
            bundle=$(find "$OUT/dragonfly" -type d -name "$n.vst3" -print -quit)
            if [ -z "$bundle" ]; then
                # tolerate a renamed bundle (e.g. "Dragonfly Room Reverb.vst3")
                pattern=$(echo "$n" | sed 's/\([a-z]\)\([A-Z]\)/\1*\2/g')
                bundle=$(find "$OUT/dragonfly" -type d -iname "$pattern.vst3" -print -quit)
            fi
            [ -n "$bundle" ] || fail "no $n.vst3 bundle in $(basename "$deb")"
            ln -sfn "${bundle#"$OUT"/}" "$OUT/$n.vst3"
        done
    fi
    # the shared libraries the dragonfly plugins link against (X11/OpenGL for their UI)
    missing_libs=$(find -L "$OUT"/Dragonfly*.vst3 -name '*.so' -exec ldd {} + 2>/dev/null \
                   | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    [ -z "$missing_libs" ] || fail "dragonfly plugins need libraries that are missing: $missing_libs"
fi

log "done: $(cd "$OUT" && ls -d *.vst3 | tr '\n' ' ')"
