/*
 * DPF-side configuration of the discoLink DAW plugins (plugins/discolink). One folder, four
 * builds, chosen at compile time by plugins/build.sh:
 *   -DDL_PLUGIN_HOST   -DDL_CHANNELS=2              discoLink Host     (instrument, 2 outputs)
 *   -DDL_PLUGIN_HOST   -DDL_CHANNELS=12             discoLink Host 12  (instrument, 12 outputs)
 *   -DDL_PLUGIN_HOST   -DDL_CHANNELS=2 -DDL_INSERT  discoLink Host FX  (effect insert: the track's
 *                                                   input goes out on the return ring)
 *   -DDL_PLUGIN_DEVICE -DDL_CHANNELS=2              discoLink Device   (effect, MIDI out)
 *   -DDL_PLUGIN_HOST -DDL_EMPTY=1                   DLEmpty: discoLink Host's DPF shell with an
 *                                                   empty run() (bench/native.py's baseline)
 * docs/native.md says how each one picks its device and what its state holds.
 */
#ifndef DISTRHO_PLUGIN_INFO_H_INCLUDED
#define DISTRHO_PLUGIN_INFO_H_INCLUDED

#ifndef DL_CHANNELS
# define DL_CHANNELS 2
#endif
#ifndef DL_INSERT
# define DL_INSERT 0
#endif

#define DISTRHO_PLUGIN_BRAND          "discolink-bridge"
#define DISTRHO_PLUGIN_HAS_UI         0
#define DISTRHO_PLUGIN_IS_RT_SAFE     1
#define DISTRHO_PLUGIN_WANT_PROGRAMS  0
#define DISTRHO_PLUGIN_WANT_STATE     1
#define DISTRHO_PLUGIN_WANT_FULL_STATE 1
#define DISTRHO_PLUGIN_NUM_OUTPUTS    DL_CHANNELS
#define DISTRHO_PLUGIN_CLAP_ID        DISTRHO_PLUGIN_URI  /* builds; not shipped (docs/native.md) */

#if defined(DL_PLUGIN_HOST)
# define DISTRHO_PLUGIN_WANT_MIDI_INPUT 1
# define DISTRHO_PLUGIN_WANT_LATENCY    1
# if defined(DL_EMPTY) && DL_EMPTY
#  define DISTRHO_PLUGIN_NAME "DLEmpty"
#  define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:dlempty"
# elif DL_INSERT
#  define DISTRHO_PLUGIN_NAME "discoLink Host FX"
#  define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:discolink-host-fx"
#  define DISTRHO_PLUGIN_IS_SYNTH 0
#  define DISTRHO_PLUGIN_NUM_INPUTS DL_CHANNELS
#  define DISTRHO_PLUGIN_VST3_CATEGORIES "Fx|Tools"
# elif DL_CHANNELS == 2
#  define DISTRHO_PLUGIN_NAME "discoLink Host"
#  define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:discolink-host"
# elif DL_CHANNELS == 12
#  define DISTRHO_PLUGIN_NAME "discoLink Host 12"
#  define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:discolink-host12"
# else
#  error DL_CHANNELS must be 2 or 12 for discoLink Host
# endif
# if !DL_INSERT
#  define DISTRHO_PLUGIN_IS_SYNTH 1
#  define DISTRHO_PLUGIN_NUM_INPUTS 0
#  define DISTRHO_PLUGIN_VST3_CATEGORIES "Instrument|Synth"
# endif
#elif defined(DL_PLUGIN_DEVICE)
# define DISTRHO_PLUGIN_NAME "discoLink Device"
# define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:discolink-device"
# define DISTRHO_PLUGIN_IS_SYNTH 0
# define DISTRHO_PLUGIN_NUM_INPUTS DL_CHANNELS
# define DISTRHO_PLUGIN_WANT_MIDI_OUTPUT 1
# define DISTRHO_PLUGIN_VST3_CATEGORIES "Fx|Tools"
#else
# error define DL_PLUGIN_HOST or DL_PLUGIN_DEVICE
#endif

#endif // DISTRHO_PLUGIN_INFO_H_INCLUDED
