/*
 * dltest.lv2 -- small LV2 test plugins of discolink-bridge (plugins/README.md):
 *
 *   urn:discolink-bridge:lv2test:gain          "DL Null Gain": stereo out = in * gain. Its
 *       descriptor leaves activate, deactivate and extension_data NULL, which a host must
 *       check before calling (calling a NULL one crashes the host).
 *   urn:discolink-bridge:lv2test:worker-probe  "DL Worker Probe": stereo out = in * level.
 *       When its "request" control changes, run() schedules work (worker extension); work()
 *       sleeps 50 ms, as a file load would, then responds with the requested level, which
 *       work_response() applies. It reports, on control outputs, how many responses it got,
 *       how many times work() ran on the thread that calls run() (the audio thread; must be
 *       0), and the kernel thread ids of both.
 *
 * The bad bundles (plugins/lv2test/bad.c) live in build/plugins/lv2-bad, away from LV2_PATH.
 */
#define _GNU_SOURCE
#include <lv2/core/lv2.h>
#include <lv2/urid/urid.h>
#include <lv2/worker/worker.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GAIN_URI "urn:discolink-bridge:lv2test:gain"
#define PROBE_URI "urn:discolink-bridge:lv2test:worker-probe"

/* ---- DL Null Gain -------------------------------------------------------------------- */

typedef struct {
    const float *in[2];
    float *out[2];
    const float *gain;
} Gain;

static LV2_Handle gain_instantiate(const LV2_Descriptor *d, double rate, const char *path,
                                   const LV2_Feature *const *features)
{
    (void)d; (void)rate; (void)path; (void)features;
    return calloc(1, sizeof(Gain));
}

static void gain_connect(LV2_Handle h, uint32_t port, void *data)
{
    Gain *g = h;
    switch (port) {
    case 0: case 1: g->in[port] = data; break;
    case 2: case 3: g->out[port - 2] = data; break;
    case 4: g->gain = data; break;
    }
}

static void gain_run(LV2_Handle h, uint32_t frames)
{
    Gain *g = h;
    const float k = *g->gain;
    for (int c = 0; c < 2; ++c)
        for (uint32_t i = 0; i < frames; ++i)
            g->out[c][i] = g->in[c][i] * k;
}

static void gain_cleanup(LV2_Handle h) { free(h); }

static const LV2_Descriptor gain_descriptor = {
    GAIN_URI, gain_instantiate, gain_connect, NULL /* activate */, gain_run,
    NULL /* deactivate */, gain_cleanup, NULL /* extension_data */,
};

/* ---- DL Worker Probe ----------------------------------------------------------------- */

enum { P_IN_L, P_IN_R, P_OUT_L, P_OUT_R, P_REQUEST, P_LEVEL, P_RESPONSES, P_ON_AUDIO,
       P_RUN_TID, P_WORK_TID, P_COUNT };

typedef struct {
    void *ports[P_COUNT];
    LV2_Worker_Schedule *schedule;
    float last_request;
    float level;
    uint32_t responses;
    int32_t run_tid;          /* written in run(), read in work(): atomics */
    int32_t work_tid;
    uint32_t work_on_audio;   /* work() calls on the thread that runs run() */
} Probe;

static LV2_Handle probe_instantiate(const LV2_Descriptor *d, double rate, const char *path,
                                    const LV2_Feature *const *features)
{
    (void)d; (void)rate; (void)path;
    LV2_Worker_Schedule *schedule = NULL;
    for (int i = 0; features && features[i]; ++i)
        if (!strcmp(features[i]->URI, LV2_WORKER__schedule))
            schedule = features[i]->data;
    if (!schedule)
        return NULL; /* required feature missing */
    Probe *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->schedule = schedule;
    p->level = 1.0f;
    return p;
}

static void probe_connect(LV2_Handle h, uint32_t port, void *data)
{
    Probe *p = h;
    if (port < P_COUNT)
        p->ports[port] = data;
}

static void probe_activate(LV2_Handle h) { ((Probe *)h)->last_request = 0.0f; }

static void probe_run(LV2_Handle h, uint32_t frames)
{
    Probe *p = h;
    __atomic_store_n(&p->run_tid, (int32_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    const float request = *(const float *)p->ports[P_REQUEST];
    if (request != p->last_request) {
        p->last_request = request;
        p->schedule->schedule_work(p->schedule->handle, sizeof request, &request);
    }
    for (int c = 0; c < 2; ++c) {
        const float *in = p->ports[P_IN_L + c];
        float *out = p->ports[P_OUT_L + c];
        for (uint32_t i = 0; i < frames; ++i)
            out[i] = in[i] * p->level;
    }
    *(float *)p->ports[P_LEVEL] = p->level;
    *(float *)p->ports[P_RESPONSES] = (float)p->responses;
    *(float *)p->ports[P_ON_AUDIO] = (float)__atomic_load_n(&p->work_on_audio, __ATOMIC_ACQUIRE);
    *(float *)p->ports[P_RUN_TID] = (float)__atomic_load_n(&p->run_tid, __ATOMIC_ACQUIRE);
    *(float *)p->ports[P_WORK_TID] = (float)__atomic_load_n(&p->work_tid, __ATOMIC_ACQUIRE);
}

static LV2_Worker_Status probe_work(LV2_Handle h, LV2_Worker_Respond_Function respond,
                                    LV2_Worker_Respond_Handle rh, uint32_t size,
                                    const void *data)
{
    Probe *p = h;
    int32_t me = (int32_t)syscall(SYS_gettid);
    __atomic_store_n(&p->work_tid, me, __ATOMIC_RELEASE);
    if (me == __atomic_load_n(&p->run_tid, __ATOMIC_ACQUIRE))
        __atomic_add_fetch(&p->work_on_audio, 1, __ATOMIC_ACQ_REL);
    struct timespec pause = {0, 50 * 1000 * 1000}; /* as slow as loading a file */
    nanosleep(&pause, NULL);
    return respond(rh, size, data);
}

static LV2_Worker_Status probe_work_response(LV2_Handle h, uint32_t size, const void *body)
{
    Probe *p = h;
    if (size == sizeof(float)) {
        memcpy(&p->level, body, sizeof(float));
        p->responses++;
    }
    return LV2_WORKER_SUCCESS;
}

static const void *probe_extension_data(const char *uri)
{
    static const LV2_Worker_Interface worker = {probe_work, probe_work_response, NULL};
    return strcmp(uri, LV2_WORKER__interface) ? NULL : &worker;
}

static const LV2_Descriptor probe_descriptor = {
    PROBE_URI, probe_instantiate, probe_connect, probe_activate, probe_run, NULL,
    gain_cleanup, probe_extension_data,
};

LV2_SYMBOL_EXPORT const LV2_Descriptor *lv2_descriptor(uint32_t index)
{
    switch (index) {
    case 0: return &gain_descriptor;
    case 1: return &probe_descriptor;
    default: return NULL;
    }
}
