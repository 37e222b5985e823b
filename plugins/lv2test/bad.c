/*
 * Deliberately broken LV2 plugins, for the tests of plugin scan, devices and racks (built by
 * plugins/build.sh into build/plugins/lv2-bad, with Turtle written by the script):
 *   -DDL_CRASH_IN_INSTANTIATE  instantiate() dereferences NULL (SIGSEGV)
 *   -DDL_CRASH_IN_RUN          run() dereferences NULL (SIGSEGV)
 *   neither                    a working stereo pass-through (for the bundles whose fault is
 *                              their Turtle, or a required feature no host has)
 * DL_URI is the plugin's URI.
 */
#include <lv2/core/lv2.h>

#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const float *in[2];
    float *out[2];
} Thru;

static LV2_Handle instantiate(const LV2_Descriptor *d, double rate, const char *path,
                              const LV2_Feature *const *features)
{
    (void)d; (void)rate; (void)path; (void)features;
#ifdef DL_CRASH_IN_INSTANTIATE
    *(volatile int *)0 = 1;
#endif
    return calloc(1, sizeof(Thru));
}

static void connect_port(LV2_Handle h, uint32_t port, void *data)
{
    Thru *t = h;
    if (port < 2)
        t->in[port] = data;
    else if (port < 4)
        t->out[port - 2] = data;
}

static void run(LV2_Handle h, uint32_t frames)
{
    Thru *t = h;
#ifdef DL_CRASH_IN_RUN
    *(volatile int *)0 = 1;
#endif
    for (int c = 0; c < 2; ++c)
        for (uint32_t i = 0; i < frames; ++i)
            t->out[c][i] = t->in[c][i];
}

static void cleanup(LV2_Handle h) { free(h); }

static const LV2_Descriptor descriptor = {
    DL_URI, instantiate, connect_port, NULL, run, NULL, cleanup, NULL,
};

LV2_SYMBOL_EXPORT const LV2_Descriptor *lv2_descriptor(uint32_t index)
{
    return index == 0 ? &descriptor : NULL;
}
