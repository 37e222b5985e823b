"""Checks the plugins built by plugins/build.sh in pedalboard (not part of the test suite).

Usage: .venv/bin/python plugins/verify.py   (needs `pip install pedalboard mido numpy`)
Prints one line per check and exits non-zero if any fails.
"""

import os
import sys

import mido
import numpy as np
import pedalboard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGINS = os.path.join(ROOT, "build", "plugins")
SR = 48000
failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(name)


def expected(notes, n_frames, gain=0.5, tune=0.0, harmonic=1):
    """The documented formula. notes: (note, velocity, on_frame, off_frame or None)."""
    y = np.zeros(n_frames)
    for note, vel, on, off in notes:
        f = 440.0 * 2.0 ** ((note - 69 + tune) / 12.0)
        end = n_frames if off is None else off
        j = np.arange(end - on)
        y[on:end] += gain * vel / 127.0 * np.sin(2 * np.pi * harmonic * f * j / SR)
    return y


def frame(t):
    return round(t * SR)


def render(p, msgs, duration, channels=2, buffer_size=256):
    return p(msgs, duration=duration, sample_rate=SR, num_channels=channels,
             buffer_size=buffer_size, reset=True)


# --- DLSine ------------------------------------------------------------------------------------
p = pedalboard.load_plugin(os.path.join(PLUGINS, "DLSine.vst3"))
own = [k for k in p.parameters if not k.startswith("midi_ch_")]
check("DLSine loads as instrument", p.is_instrument and not p.is_effect, f"name={p.name!r}")
check("DLSine parameter keys", own == ["gain", "tune_st", "fault"],
      f"{own} (+{len(p.parameters) - len(own)} hidden midi_ch_*_cc_* keys)")
check("DLSine defaults", abs(p.gain - 0.5) < 1e-6 and abs(p.tune_st) < 1e-6,
      f"gain={p.gain} tune_st={p.tune_st}")

out = render(p, [mido.Message("note_on", note=69, velocity=127, time=0.01)], 0.1)
ref = expected([(69, 127, frame(0.01), None)], out.shape[1])
err = max(np.abs(out[c] - ref).max() for c in range(2))
check("DLSine note 69 matches formula", out.shape == (2, 4800) and err < 1e-6,
      f"shape={out.shape} max_err={err:.2e} first_nonzero={np.flatnonzero(out[0])[0]}")

msgs = [mido.Message("note_on", note=60, velocity=100, time=0.0123),
        mido.Message("note_on", note=64, velocity=50, time=0.02),
        mido.Message("note_off", note=60, velocity=0, time=0.05),
        mido.Message("note_on", note=64, velocity=0, time=0.07)]
notes = [(60, 100, frame(0.0123), frame(0.05)), (64, 50, frame(0.02), frame(0.07))]
for bs in (64, 256, 1000, 8192):
    out = render(p, msgs, 0.1, buffer_size=bs)
    err = np.abs(out - expected(notes, out.shape[1])).max()
    check(f"DLSine chord + note-offs, buffer_size={bs}", err < 1e-6, f"max_err={err:.2e}")

p.gain, p.tune_st = 0.8, 3.0  # pedalboard snaps floats to 1000 steps: 3.0 is on the grid
out = render(p, [mido.Message("note_on", note=57, velocity=90, time=0.001)], 0.05)
err = np.abs(out - expected([(57, 90, frame(0.001), None)], out.shape[1], 0.8, 3.0)).max()
check("DLSine Gain=0.8 Tune=3.0", err < 1e-6, f"max_err={err:.2e}")

# state: pedalboard's raw_state holds the parameters the plugin has processed with
state = p.raw_state
q = pedalboard.load_plugin(os.path.join(PLUGINS, "DLSine.vst3"))
q.raw_state = state
out_q = render(q, [mido.Message("note_on", note=57, velocity=90, time=0.001)], 0.05)
check("DLSine raw_state round trip", abs(q.gain - 0.8) < 1e-6 and abs(q.tune_st - 3.0) < 1e-6
      and np.abs(out_q - out).max() == 0, f"restored gain={q.gain:.4f} tune_st={q.tune_st:.4f}")

# --- DLSine12 ----------------------------------------------------------------------------------
p12 = pedalboard.load_plugin(os.path.join(PLUGINS, "DLSine12.vst3"))
check("DLSine12 loads as instrument", p12.is_instrument, f"name={p12.name!r}")
out = render(p12, [mido.Message("note_on", note=45, velocity=127, time=0.005)], 0.05, channels=12)
errs = [np.abs(out[c] - expected([(45, 127, frame(0.005), None)], out.shape[1],
                                 harmonic=c // 2 + 1)).max()
        for c in range(12)]
check("DLSine12 12 channels, pair k = harmonic k+1", out.shape[0] == 12 and max(errs) < 1e-6,
      f"shape={out.shape} max_err={max(errs):.2e}")

# --- Dragonfly (third-party effects) -----------------------------------------------------------
t = np.arange(SR) / SR
sine = np.stack([0.5 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
sine[1] *= 0.8
for name in ("DragonflyRoomReverb", "DragonflyHallReverb", "DragonflyPlateReverb",
             "DragonflyEarlyReflections"):
    path = os.path.join(PLUGINS, name + ".vst3")
    if not os.path.isdir(path):
        check(f"{name} present", False, path)
        continue
    fx = pedalboard.load_plugin(path)
    y = fx(sine, SR, buffer_size=512, reset=True)
    nan = int(np.isnan(y).sum())
    rms = float(np.sqrt(np.nanmean(y.astype(np.float64) ** 2)))
    diff = float(np.nanmax(np.abs(y - sine)))
    check(f"{name} processes a stereo sine", fx.is_effect and y.shape == sine.shape and nan == 0
          and rms > 1e-3 and diff > 1e-3,
          f"params={len(fx.parameters)} shape={y.shape} nan={nan} rms={rms:.4f} "
          f"max|y-x|={diff:.4f}")

print(f"{len(failures)} failed" if failures else "all checks passed")
sys.exit(1 if failures else 0)
