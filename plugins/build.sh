#!/usr/bin/env bash
# Builds / fetches the real plugins the tests use, into build/plugins/ (git-ignored):
#   build/plugins/DLSine.vst3, build/plugins/DLSine12.vst3   our DPF test instruments (plugins/dlsine)
#   build/plugins/lv2/DLSine.lv2, build/plugins/lv2/DLSine12.lv2   the same, as LV2 (DPF)
#   build/plugins/discoLink {Host,Host 12,Host FX,Device}.vst3, build/plugins/lv2/discoLink{Host,
#                                   Host12,HostFX,Device}.lv2: the discoLink DAW plugins
#                                   (plugins/discolink, on native/discolink.h; docs/native.md)
#   build/bench-plugins/DLEmpty.vst3  discoLink Host's DPF shell, empty (bench/native.py (d))
#   build/plugins/lv2/dltest.lv2    small LV2 test plugins (plugins/lv2test/dltest.c)
#                                   (build/plugins/lv2 is a folder of LV2_PATH: plugins/README.md)
#   build/lv2-bad/*.lv2             deliberately broken LV2 bundles (plugins/lv2test/bad.c), kept
#                                   out of build/plugins and off LV2_PATH: tests name the folder
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
[ -f /usr/include/lv2/worker/worker.h ] || need+=(lv2-dev)
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
# We compile against a copy of DPF's distrho/ folder (build/plugins/obj/dpf/distrho) with four
# small changes to its VST3 wrapper and one to its LV2 wrapper (DPF 1.6 as shipped by Debian
# 12 and 13), each checked:
#  1. Synths (MIDI input) get 16*130 hidden "MIDI Ch. x CC y" parameters (ids 0..2079) ahead of
#     the plugin's own; getParameterNormalized/setParameterNormalized test
#     "rindex <= kVst3InternalParameterMidiCC_end" (2080), so the first real parameter (Gain)
#     read as 0 in the host and could not be set through the edit controller. "<" fixes it.
#  2. portCountToSpeaker() knows bus widths 1..11 only; for 12 it returned arrangement 0, and
#     hosts (pedalboard/JUCE) then saw a 0-channel main bus. For 12..18 ports it now returns the
#     speaker bits 0..N-1 (L R C LFE Ls Rs Lc Rc Cs Sl Sr Tc for 12), whose VST3 order equals
#     JUCE's channel order, so channel i of the plugin is channel i in pedalboard.
#  3. Those 2080 hidden MIDI-CC proxy parameters are cut down: pedalboard lists every one of
#     them and took ~14 s to load the plugin and ~15 s more for .parameters. VST3 has no CC
#     events of its own: a host sends CC, pitch bend and channel pressure as changes of these
#     parameters, and the IMidiMapping names the parameter for (channel, cc). DLSine needs no
#     MIDI CC and keeps none (build/plugins/obj/dpf). discoLink Host forwards them, so its
#     copy (build/plugins/obj/dpf-cc1) keeps the 130 of MIDI channel 1 (CC 0..127, channel
#     pressure, pitch bend; pedalboard loads it in about a second); the mapping answers "no
#     mapping" for the other channels, whose CC hosts then drop.
#  4. pedalboard (JUCE) calls setActive(true) on an active component (each prepare), and the
#     wrapper's activate() then printed 'assertion failure: "! fIsActive"' on every start; it
#     now activates only an inactive plugin. JUCE also releases the component before its audio
#     processor and edit controller: DPF keeps such a component for cleanup at unload (as it
#     should) but said so on stderr each time; those "DPF warning: asked to delete component
#     while ..." lines are now debug-build messages (d_debug), the cleanup unchanged.
DPF_COPY=$OUT/obj/dpf
DPF_COPY_CC1=$OUT/obj/dpf-cc1
patch_dpf() { # TREE CC_CHANNELS(0|1)
    local DPF_COPY=$1 cc_channels=$2
    local f=$DPF_COPY/distrho/src/DistrhoPluginVST3.cpp
    rm -rf "$DPF_COPY"
    mkdir -p "$DPF_COPY"
    cp -a "$DPF/distrho" "$DPF_COPY/distrho" || fail "cannot copy $DPF/distrho"
    sed -i 's/rindex <= kVst3InternalParameterMidiCC_end)/rindex < kVst3InternalParameterMidiCC_end)/' "$f" \
        || fail "cannot patch $f"
    ! grep -q 'rindex <= kVst3InternalParameterMidiCC_end' "$f" \
        || fail "patching DPF (parameter id off-by-one) left a '<=' comparison in DistrhoPluginVST3.cpp"
    sed -i 's|^\( *\)d_stderr("portCountToSpeaker error: got weirdly big|\1if (portCount <= 18) return (static_cast<v3_speaker_arrangement>(1) << portCount) - 1; // discolink-bridge\n&|' "$f" \
        || fail "cannot patch $f"
    grep -q 'portCount <= 18) return' "$f" \
        || fail "patching DPF (12-channel bus arrangement) found no portCountToSpeaker error branch in DistrhoPluginVST3.cpp"
    local h=$DPF_COPY/distrho/src/DistrhoPluginVST.hpp
    sed -i "s|kVst3InternalParameterMidiCC_start + 130\\*16,|kVst3InternalParameterMidiCC_start + 130*$cc_channels, // discolink-bridge: was 130*16|" "$h" \
        || fail "cannot patch $h"
    sed -i 's|^\( *\)\*id = kVst3InternalParameterMidiCC_start + channel \* 130 + cc;|\1if (channel * 130 + cc >= kVst3InternalParameterMidiCC_end - kVst3InternalParameterMidiCC_start) return V3_FALSE; // discolink-bridge\n&|' "$f" \
        || fail "cannot patch $f"
    grep -q "MidiCC_start + 130\*$cc_channels, // discolink-bridge" "$h" && grep -q 'return V3_FALSE; // discolink-bridge' "$f" \
        || fail "patching DPF (fewer MIDI-CC proxy parameters) did not apply to DistrhoPluginVST.hpp / DistrhoPluginVST3.cpp"
    sed -i '/v3_result setActive(const bool active)/,/return V3_OK;/s|^\( *\)fPlugin.activate();$|\1if (! fPlugin.isActive()) fPlugin.activate(); // discolink-bridge|' "$f" \
        || fail "cannot patch $f"
    sed -i 's|d_stderr("DPF warning: asked to delete component while|d_debug("DPF warning: asked to delete component while|' "$f" \
        || fail "cannot patch $f"
    grep -q 'if (! fPlugin.isActive()) fPlugin.activate(); // discolink-bridge' "$f" \
        && ! grep -q 'd_stderr("DPF warning: asked to delete component' "$f" \
        || fail "patching DPF (quiet activation and release) did not apply to DistrhoPluginVST3.cpp"
    # 5. LV2: DPF requires the host's worker feature whenever a plugin has state, but uses it
    #    only to pass state changes from a UI (and checks for NULL there). The discoLink plugins
    #    have state and no UI, and lv2file gives no worker (it crashed instantiating them), so
    #    the worker is no longer a required feature (lv2file also crashed with it listed as an
    #    optional one, so it is not listed): state save/restore (LV2 state) is unchanged.
    local l=$DPF_COPY/distrho/src/DistrhoPluginLV2.cpp e=$DPF_COPY/distrho/src/DistrhoPluginLV2export.cpp
    sed -i 's|^\( *\)if (worker == nullptr)$|\1if (worker == nullptr \&\& DISTRHO_PLUGIN_HAS_UI) // discolink-bridge: optional without a UI|' "$l" \
        || fail "cannot patch $l"
    sed -i '/^static const char\* const lv2ManifestPluginRequiredFeatures/,/nullptr/ s|^    LV2_WORKER__schedule,$|    // discolink-bridge: the worker is not required (used when given)|' "$e" \
        || fail "cannot patch $e"
    grep -q 'DISTRHO_PLUGIN_HAS_UI) // discolink-bridge' "$l" \
        && grep -q '// discolink-bridge: the worker is not required' "$e" \
        || fail "patching DPF (optional LV2 worker) did not apply to DistrhoPluginLV2.cpp / DistrhoPluginLV2export.cpp"
    touch "$DPF_COPY/.patched"
}
for tree in "$DPF_COPY:0" "$DPF_COPY_CC1:1"; do
    dir=${tree%:*}
    if [ ! -f "$dir/.patched" ] || [ "$DPF/distrho/src/DistrhoPluginVST3.cpp" -nt "$dir/.patched" ] \
        || [ "$ROOT/plugins/build.sh" -nt "$dir/.patched" ]; then
        patch_dpf "$dir" "${tree##*:}"
    fi
done

# Flags follow DPF's Makefile.base.mk / Makefile.plugins.mk for a Linux release build, minus
# -ffast-math (the output must follow the documented formula).
CXXFLAGS_DPF=(-std=gnu++11 -O2 -fPIC -DPIC -DNDEBUG -fvisibility=hidden -fdata-sections
              -ffunction-sections -fno-gnu-unique -Wall -Wextra -pipe
              -DDISTRHO_PLUGIN_TARGET_VST3)
LDFLAGS_DPF=(-shared -fdata-sections -ffunction-sections -Wl,-O1,--as-needed,--gc-sections
             -Wl,--no-undefined -Wl,--version-script="$DPF/utils/symbols/vst3.version" -ldl)

# the files a bundle is built from: rebuilt when any is newer than the bundle's .so
sources=("$SRC"/*.cpp "$SRC"/*.h "$ROOT/plugins/build.sh" "$DPF_COPY/.patched")
DLSRC=$ROOT/plugins/discolink
dl_sources=("$DLSRC"/* "$ROOT/native/discolink.h" "$ROOT/plugins/build.sh" "$DPF_COPY_CC1/.patched")

up_to_date() { # BUNDLE_SO [SOURCE...]  (default sources: DLSine's)
    local so=$1 f
    shift
    [ $# -gt 0 ] || set -- "${sources[@]}"
    [ -f "$so" ] || return 1
    for f in "$@"; do
        [ "$so" -nt "$f" ] || return 1
    done
    return 0
}

LDFLAGS_LV2=(-shared -Wl,-O1,--as-needed,--no-undefined
             -Wl,--version-script="$DPF/utils/symbols/lv2.version" -ldl)
TTL_GEN=$OUT/obj/lv2_ttl_generator
LV2OUT=$OUT/lv2  # only LV2 bundles here: lilv complains about every other folder on its path
mkdir -p "$LV2OUT"

pids=()
names=()
# start_variant NAME TARGET(vst3|lv2) SRCDIR "DEFINES" SOURCE... -> compiles in the background.
# NAME is the VST3 bundle's name (spaces allowed); the LV2 bundle's is NAME without spaces
# (an LV2 manifest names its binary by a relative URI). Extra objects: $EXTRA_OBJECTS; the
# DPF copy: $DPF_TREE (default build/plugins/obj/dpf).
start_variant() {
    local name=$1 target=$2 srcdir=$3 defines=$4
    shift 4
    local lv2name=${name// /}
    local obj=$OUT/obj/$lv2name-$target  # not NAME.vst3: a scan would take it for a bundle
    local extra=("${EXTRA_OBJECTS[@]}") tree=${DPF_TREE:-$DPF_COPY}
    mkdir -p "$obj"
    (
        set -e
        TARGET=$(echo "$target" | tr a-z A-Z)
        # shellcheck disable=SC2206  # DEFINES is a list of -D words
        flags=("${CXXFLAGS_DPF[@]/-DDISTRHO_PLUGIN_TARGET_VST3/-DDISTRHO_PLUGIN_TARGET_$TARGET}"
               "-I$srcdir" "-I$tree/distrho" $defines)
        objects=()
        cpids=()
        for src in "$@" "$tree/distrho/DistrhoPluginMain.cpp"; do
            o=$obj/$(basename "$src").o
            g++ "${flags[@]}" -c "$src" -o "$o" &
            cpids+=($!)
            objects+=("$o")
        done
        for p in "${cpids[@]}"; do wait "$p"; done
        objects+=("${extra[@]}")
        if [ "$target" = vst3 ]; then
            dir=${VST3_DIR:-$OUT}/$name.vst3/Contents/$VST3_ARCH
            mkdir -p "$dir"
            g++ "${objects[@]}" "${LDFLAGS_DPF[@]}" -lpthread -o "$dir/$name.so.tmp"
            mv -f "$dir/$name.so.tmp" "$dir/$name.so"
        else
            # DPF writes the bundle's Turtle from the binary (its utils/lv2-ttl-generator)
            stage=$obj/bundle
            rm -rf "$stage"
            mkdir -p "$stage"
            g++ "${objects[@]}" "${LDFLAGS_LV2[@]}" -lpthread -o "$stage/$lv2name.so"
            (cd "$stage" && "$TTL_GEN" "./$lv2name.so")
            rm -rf "$LV2OUT/$lv2name.lv2"
            mv "$stage" "$LV2OUT/$lv2name.lv2"
        fi
    ) >"$obj/build.log" 2>&1 &
    pids+=($!)
    names+=("$lv2name-$target")
}

if [ ! -x "$TTL_GEN" ] || [ "$DPF/utils/lv2-ttl-generator/lv2_ttl_generator.c" -nt "$TTL_GEN" ]; then
    gcc -O2 "$DPF/utils/lv2-ttl-generator/lv2_ttl_generator.c" -ldl -o "$TTL_GEN" \
        || fail "building DPF's lv2_ttl_generator failed"
fi
EXTRA_OBJECTS=()
for variant in DLSine:2 DLSine12:12; do
    name=${variant%%:*}
    if up_to_date "$OUT/$name.vst3/Contents/$VST3_ARCH/$name.so"; then
        log "$name.vst3 is up to date"
    else
        log "building $name.vst3"
        start_variant "$name" vst3 "$SRC" "-DDLSINE_NUM_OUTPUTS=${variant##*:}" "$SRC/DLSine.cpp"
    fi
    if up_to_date "$LV2OUT/$name.lv2/$name.so" && [ -f "$LV2OUT/$name.lv2/manifest.ttl" ]; then
        log "$name.lv2 is up to date"
    else
        log "building $name.lv2"
        start_variant "$name" lv2 "$SRC" "-DDLSINE_NUM_OUTPUTS=${variant##*:}" "$SRC/DLSine.cpp"
    fi
done

# 1a. The discoLink DAW plugins (plugins/discolink, docs/native.md): one source, VST3 and LV2.
#     native/discolink.h's implementation is one C object (discolink_impl.c) linked into each.
#     Every symbol but the plugin entry points stays hidden (-fvisibility=hidden and DPF's
#     version scripts), so two of them in one DAW process never share SDK code or state.
DL_IMPL=$OUT/obj/discolink_impl.o
if ! up_to_date "$DL_IMPL" "${dl_sources[@]}"; then
    gcc -std=gnu11 -O2 -fPIC -fvisibility=hidden -Wall -Wextra -Werror -I"$ROOT/native" \
        -c "$DLSRC/discolink_impl.c" -o "$DL_IMPL" \
        || fail "compiling native/discolink.h for the discoLink plugins failed"
fi
EXTRA_OBJECTS=("$DL_IMPL")
DPF_TREE=$DPF_COPY_CC1  # discoLink Host forwards channel 1's CC (patch 3 above)
DL_VARIANTS=("discoLink Host|-DDL_PLUGIN_HOST -DDL_CHANNELS=2|DiscoLinkHost.cpp"
             "discoLink Host 12|-DDL_PLUGIN_HOST -DDL_CHANNELS=12|DiscoLinkHost.cpp"
             "discoLink Host FX|-DDL_PLUGIN_HOST -DDL_CHANNELS=2 -DDL_INSERT=1|DiscoLinkHost.cpp"
             "discoLink Device|-DDL_PLUGIN_DEVICE -DDL_CHANNELS=2|DiscoLinkDevice.cpp"
)
for variant in "${DL_VARIANTS[@]}"; do
    IFS='|' read -r name defines cpp <<<"$variant"
    lv2name=${name// /}
    if up_to_date "$OUT/$name.vst3/Contents/$VST3_ARCH/$name.so" "${dl_sources[@]}"; then
        log "$name.vst3 is up to date"
    else
        log "building $name.vst3"
        start_variant "$name" vst3 "$DLSRC" "$defines -I$ROOT/native" "$DLSRC/$cpp"
    fi
    if up_to_date "$LV2OUT/$lv2name.lv2/$lv2name.so" "${dl_sources[@]}" \
        && [ -f "$LV2OUT/$lv2name.lv2/manifest.ttl" ]; then
        log "$lv2name.lv2 is up to date"
    else
        log "building $lv2name.lv2"
        start_variant "$name" lv2 "$DLSRC" "$defines -I$ROOT/native" "$DLSRC/$cpp"
    fi
done
# DLEmpty, bench/native.py's baseline: discoLink Host's DPF shell with an empty run(). Kept
# out of build/plugins (it is no plugin anyone should scan or load): build/bench-plugins/.
BENCH_OUT=$ROOT/build/bench-plugins
if up_to_date "$BENCH_OUT/DLEmpty.vst3/Contents/$VST3_ARCH/DLEmpty.so" "${dl_sources[@]}"; then
    log "bench-plugins/DLEmpty.vst3 is up to date"
else
    log "building bench-plugins/DLEmpty.vst3"
    VST3_DIR=$BENCH_OUT start_variant DLEmpty vst3 "$DLSRC" \
        "-DDL_PLUGIN_HOST -DDL_CHANNELS=2 -DDL_EMPTY=1 -I$ROOT/native" "$DLSRC/DiscoLinkHost.cpp"
fi
failed=()
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        tail -n 30 "$OUT/obj/${names[$i]}/build.log" >&2 || true
        failed+=("${names[$i]}")
    fi
done
[ ${#failed[@]} -eq 0 ] \
    || fail "building ${failed[*]} failed (full logs: build/plugins/obj/<name>-<format>/build.log)"

# ---------------------------------------------------------------------------------------------
# 1b. LV2 test plugins (plugins/lv2test): dltest.lv2 (a gain whose optional descriptor
#     functions are NULL, a worker probe, a plugin whose state is a file, an options probe) on
#     the LV2 path, and broken bundles in build/lv2-bad/.
LV2SRC=$ROOT/plugins/lv2test
BADOUT=$ROOT/build/lv2-bad  # not under build/plugins, which a scan of it would then report
CFLAGS_LV2=(-std=gnu11 -O2 -fPIC -Wall -Wextra -shared -Wl,--no-undefined)
lv2_sources=("$LV2SRC"/* "$ROOT/plugins/build.sh")
lv2_up_to_date() { # SO
    local f
    [ -f "$1" ] || return 1
    for f in "${lv2_sources[@]}"; do [ "$1" -nt "$f" ] || return 1; done
}

# bad_bundle NAME URI DEFINE TTL_EXTRA BROKEN : a stereo pass-through bundle built from bad.c
bad_bundle() {
    local name=$1 uri=$2 define=$3 extra=$4 broken=$5 dir=$BADOUT/$1.lv2
    rm -rf "$dir"
    mkdir -p "$dir"
    gcc "${CFLAGS_LV2[@]}" ${define:+-D$define} -DDL_URI="\"$uri\"" "$LV2SRC/bad.c" -o "$dir/$name.so" \
        || fail "building $name.lv2 failed"
    printf '%s\n' "@prefix lv2:  <http://lv2plug.in/ns/lv2core#> ." \
        "@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> ." \
        "<$uri> a lv2:Plugin ; lv2:binary <$name.so> ; rdfs:seeAlso <$name.ttl> ." \
        >"$dir/manifest.ttl"
    printf '%s\n' "@prefix lv2:  <http://lv2plug.in/ns/lv2core#> ." \
        "@prefix doap: <http://usefulinc.com/ns/doap#> ." \
        "<$uri> a lv2:Plugin ; doap:name \"$name\" ; $extra" \
        "    lv2:port [ a lv2:InputPort, lv2:AudioPort ; lv2:index 0 ; lv2:symbol \"in_l\" ; lv2:name \"In L\" ] ," \
        "             [ a lv2:InputPort, lv2:AudioPort ; lv2:index 1 ; lv2:symbol \"in_r\" ; lv2:name \"In R\" ] ," \
        "             [ a lv2:OutputPort, lv2:AudioPort ; lv2:index 2 ; lv2:symbol \"out_l\" ; lv2:name \"Out L\" ] ," \
        "             [ a lv2:OutputPort, lv2:AudioPort ; lv2:index 3 ; lv2:symbol \"out_r\" ; lv2:name \"Out R\" ] $broken." \
        >"$dir/$name.ttl"
}

if lv2_up_to_date "$LV2OUT/dltest.lv2/dltest.so" && lv2_up_to_date "$BADOUT/DLBrokenTurtle.lv2/DLBrokenTurtle.so"; then
    log "dltest.lv2 and build/lv2-bad/ are up to date"
else
    log "building dltest.lv2 and the broken bundles in build/lv2-bad/"
    rm -rf "$LV2OUT/dltest.lv2" "$BADOUT"
    mkdir -p "$LV2OUT/dltest.lv2" "$BADOUT"
    gcc "${CFLAGS_LV2[@]}" "$LV2SRC/dltest.c" -o "$LV2OUT/dltest.lv2/dltest.so" \
        || fail "building dltest.lv2 failed"
    cp "$LV2SRC/manifest.ttl" "$LV2SRC/dltest.ttl" "$LV2OUT/dltest.lv2/"
    bad_bundle DLCrashInstantiate urn:discolink-bridge:lv2bad:crash-instantiate DL_CRASH_IN_INSTANTIATE "" ""
    bad_bundle DLCrashRun urn:discolink-bridge:lv2bad:crash-run DL_CRASH_IN_RUN "" ""
    bad_bundle DLNeedsFeature urn:discolink-bridge:lv2bad:needs-feature "" \
        "lv2:requiredFeature <http://example.org/ns/imaginary#feature> ;" ""
    # a Turtle syntax error: a port description that never closes
    bad_bundle DLBrokenTurtle urn:discolink-bridge:lv2bad:broken-turtle "" "" ", [ a lv2:InputPort ;; lv2:index"
fi

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
    # the shared libraries the dragonfly plugins link against besides libc/libstdc++ (X11 and
    # OpenGL, for their UI; the package's Depends): Debian 12 packages of the same names serve
    missing_pkgs=()
    for pkg in libgl1 libx11-6 libxext6 libxrandr2; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing_pkgs+=("$pkg")
    done
    [ ${#missing_pkgs[@]} -eq 0 ] || apt_install "${missing_pkgs[@]}"
    missing_libs=$(find -L "$OUT"/Dragonfly*.vst3 -name '*.so' -exec ldd {} + 2>/dev/null \
                   | awk '/not found/ {print $1}' | sort -u | tr '\n' ' ')
    [ -z "$missing_libs" ] || fail "dragonfly plugins need libraries that are missing: $missing_libs"
fi

log "done: $(cd "$OUT" && ls -d *.vst3 lv2/*.lv2 ../lv2-bad/*.lv2 | tr '\n' ' ')"
