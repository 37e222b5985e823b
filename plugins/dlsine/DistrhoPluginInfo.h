/*
 * DPF-side configuration of DLSine, the deterministic test instrument of discolink-bridge.
 * One source builds two variants, chosen at compile time with -DDLSINE_NUM_OUTPUTS=2 or 12
 * (see plugins/build.sh and plugins/README.md).
 */
#ifndef DISTRHO_PLUGIN_INFO_H_INCLUDED
#define DISTRHO_PLUGIN_INFO_H_INCLUDED

#ifndef DLSINE_NUM_OUTPUTS
# define DLSINE_NUM_OUTPUTS 2
#endif

#if DLSINE_NUM_OUTPUTS == 2
# define DISTRHO_PLUGIN_NAME "DLSine"
# define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:dlsine"
#elif DLSINE_NUM_OUTPUTS == 12
# define DISTRHO_PLUGIN_NAME "DLSine12"
# define DISTRHO_PLUGIN_URI  "urn:discolink-bridge:dlsine12"
#else
# error DLSINE_NUM_OUTPUTS must be 2 or 12
#endif

#define DISTRHO_PLUGIN_BRAND          "discolink-bridge"
#define DISTRHO_PLUGIN_HAS_UI         0
#define DISTRHO_PLUGIN_IS_RT_SAFE     1
#define DISTRHO_PLUGIN_IS_SYNTH       1
#define DISTRHO_PLUGIN_NUM_INPUTS     0
#define DISTRHO_PLUGIN_NUM_OUTPUTS    DLSINE_NUM_OUTPUTS
#define DISTRHO_PLUGIN_WANT_MIDI_INPUT 1
#define DISTRHO_PLUGIN_WANT_PROGRAMS  0
#define DISTRHO_PLUGIN_WANT_STATE     0
#define DISTRHO_PLUGIN_VST3_CATEGORIES "Instrument|Synth"

#endif // DISTRHO_PLUGIN_INFO_H_INCLUDED
