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
 *   urn:discolink-bridge:lv2test:file-state    "DL File State": stereo pass-through whose state
 *       lives in a file. save() makes "take/mark.txt" through state:makePath, writes the
 *       "mark" control's value into it, and stores the file's path (state:mapPath) as an
 *       atom:Path property. restore() maps the path back, reads the file, and shows what it
 *       found on control outputs: "restored" (the mark read from the file) and "file_status"
 *       (1 read, 0 never restored, -1 no path in the state, -2 the file is gone). The
 *       "pad_mib" control pads the file with that many MiB of zeros (a big state).
 *   urn:discolink-bridge:lv2test:options-probe "DL Options Probe": stereo pass-through that
 *       shows on control outputs the options (LV2 options feature) it got at instantiate:
 *       sample rate, nominal, minimum and maximum block length, sequence size (-1 absent);
 *       and "cv_peak", the largest |sample| its CV input had in the last block (-1 if the
 *       host left it unconnected). It fills its CV output with 0.5, which no host should
 *       take for audio.
 *
 * The bad bundles (plugins/lv2test/bad.c) live in build/plugins/lv2-bad, away from LV2_PATH.
 */
#define _GNU_SOURCE
#include <lv2/atom/atom.h>
#include <lv2/buf-size/buf-size.h>
#include <lv2/core/lv2.h>
#include <lv2/options/options.h>
#include <lv2/parameters/parameters.h>
#include <lv2/state/state.h>
#include <lv2/urid/urid.h>
#include <lv2/worker/worker.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GAIN_URI "urn:discolink-bridge:lv2test:gain"
#define PROBE_URI "urn:discolink-bridge:lv2test:worker-probe"
#define FILE_STATE_URI "urn:discolink-bridge:lv2test:file-state"
#define OPTIONS_URI "urn:discolink-bridge:lv2test:options-probe"

/* The data of the feature ``uri`` in a host's NULL-terminated list, NULL if it isn't there. */
static const void *feature(const LV2_Feature *const *features, const char *uri)
{
    for (int i = 0; features && features[i]; ++i)
        if (!strcmp(features[i]->URI, uri))
            return features[i]->data;
    return NULL;
}

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
    LV2_Worker_Schedule *schedule = (LV2_Worker_Schedule *)feature(features, LV2_WORKER__schedule);
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

/* ---- DL File State ------------------------------------------------------------------- */

enum { F_IN_L, F_IN_R, F_OUT_L, F_OUT_R, F_MARK, F_RESTORED, F_STATUS, F_PAD, F_COUNT };

typedef struct {
    void *ports[F_COUNT];
    LV2_State_Make_Path *make_path; /* from instantiate; save() prefers its own */
    LV2_URID take, atom_path;
    float mark;                     /* the "mark" control at the last run() */
    float pad_mib;                  /* the "pad_mib" control at the last run() */
    float restored, status;
} FileState;

static LV2_Handle fs_instantiate(const LV2_Descriptor *d, double rate, const char *path,
                                 const LV2_Feature *const *features)
{
    (void)d; (void)rate; (void)path;
    const LV2_URID_Map *map = feature(features, LV2_URID__map);
    if (!map)
        return NULL;
    FileState *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->make_path = (LV2_State_Make_Path *)feature(features, LV2_STATE__makePath);
    p->take = map->map(map->handle, FILE_STATE_URI "#take");
    p->atom_path = map->map(map->handle, LV2_ATOM__Path);
    return p;
}

static void fs_connect(LV2_Handle h, uint32_t port, void *data)
{
    FileState *p = h;
    if (port < F_COUNT)
        p->ports[port] = data;
}

static void fs_run(LV2_Handle h, uint32_t frames)
{
    FileState *p = h;
    p->mark = *(const float *)p->ports[F_MARK];
    p->pad_mib = *(const float *)p->ports[F_PAD];
    for (int c = 0; c < 2; ++c)
        memcpy(p->ports[F_OUT_L + c], p->ports[F_IN_L + c], frames * sizeof(float));
    *(float *)p->ports[F_RESTORED] = p->restored;
    *(float *)p->ports[F_STATUS] = p->status;
}

static void free_path(const LV2_Feature *const *features, char *path)
{
    const LV2_State_Free_Path *fp = feature(features, LV2_STATE__freePath);
    if (fp)
        fp->free_path(fp->handle, path);
    else
        free(path);
}

static LV2_State_Status fs_save(LV2_Handle h, LV2_State_Store_Function store,
                                LV2_State_Handle sh, uint32_t flags,
                                const LV2_Feature *const *features)
{
    (void)flags;
    FileState *p = h;
    const LV2_State_Map_Path *map_path = feature(features, LV2_STATE__mapPath);
    const LV2_State_Make_Path *make_path = feature(features, LV2_STATE__makePath);
    if (!make_path)
        make_path = p->make_path;
    if (!map_path || !make_path)
        return LV2_STATE_ERR_NO_FEATURE;
    char *path = make_path->path(make_path->handle, "take/mark.txt");
    if (!path)
        return LV2_STATE_ERR_UNKNOWN;
    FILE *f = fopen(path, "w");
    int ok = f && fprintf(f, "mark=%.9g\n", p->mark) > 0;
    static const char mib[1 << 20];
    for (int i = 0; ok && i < (int)p->pad_mib; ++i)
        ok = fwrite(mib, sizeof mib, 1, f) == 1;
    if (f && fclose(f))
        ok = 0;
    char *apath = ok ? map_path->abstract_path(map_path->handle, path) : NULL;
    if (apath)
        store(sh, p->take, apath, strlen(apath) + 1, p->atom_path,
              LV2_STATE_IS_POD | LV2_STATE_IS_PORTABLE);
    if (apath)
        free_path(features, apath);
    free_path(features, path);
    return apath ? LV2_STATE_SUCCESS : LV2_STATE_ERR_UNKNOWN;
}

static LV2_State_Status fs_restore(LV2_Handle h, LV2_State_Retrieve_Function retrieve,
                                   LV2_State_Handle sh, uint32_t flags,
                                   const LV2_Feature *const *features)
{
    (void)flags;
    FileState *p = h;
    size_t size;
    uint32_t type, vflags;
    const char *apath = retrieve(sh, p->take, &size, &type, &vflags);
    const LV2_State_Map_Path *map_path = feature(features, LV2_STATE__mapPath);
    if (!apath || type != p->atom_path || !map_path) {
        p->status = -1.0f;
        return LV2_STATE_SUCCESS;
    }
    char *path = map_path->absolute_path(map_path->handle, apath);
    FILE *f = path ? fopen(path, "r") : NULL;
    float mark;
    if (f && fscanf(f, "mark=%f", &mark) == 1) {
        p->restored = mark;
        p->status = 1.0f;
    } else {
        p->status = -2.0f;
    }
    if (f)
        fclose(f);
    if (path)
        free_path(features, path);
    return LV2_STATE_SUCCESS;
}

static const void *fs_extension_data(const char *uri)
{
    static const LV2_State_Interface state = {fs_save, fs_restore};
    return strcmp(uri, LV2_STATE__interface) ? NULL : &state;
}

static const LV2_Descriptor file_state_descriptor = {
    FILE_STATE_URI, fs_instantiate, fs_connect, NULL, fs_run, NULL, gain_cleanup,
    fs_extension_data,
};

/* ---- DL Options Probe ---------------------------------------------------------------- */

enum { O_IN_L, O_IN_R, O_OUT_L, O_OUT_R, O_RATE, O_NOMINAL, O_MIN, O_MAX, O_SEQUENCE,
       O_CV_IN, O_CV_PEAK, O_CV_OUT, O_COUNT };

typedef struct {
    void *ports[O_COUNT];
    float seen[O_COUNT]; /* by port index, for the option ports */
} Options;

static LV2_Handle op_instantiate(const LV2_Descriptor *d, double rate, const char *path,
                                 const LV2_Feature *const *features)
{
    (void)d; (void)rate; (void)path;
    const LV2_URID_Map *map = feature(features, LV2_URID__map);
    if (!map)
        return NULL;
    Options *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    const char *keys[O_COUNT] = {
        [O_RATE] = LV2_PARAMETERS__sampleRate, [O_NOMINAL] = LV2_BUF_SIZE__nominalBlockLength,
        [O_MIN] = LV2_BUF_SIZE__minBlockLength, [O_MAX] = LV2_BUF_SIZE__maxBlockLength,
        [O_SEQUENCE] = LV2_BUF_SIZE__sequenceSize};
    const LV2_URID t_float = map->map(map->handle, LV2_ATOM__Float);
    const LV2_URID t_int = map->map(map->handle, LV2_ATOM__Int);
    for (int k = O_RATE; k <= O_SEQUENCE; ++k) {
        p->seen[k] = -1.0f;
        const LV2_URID key = map->map(map->handle, keys[k]);
        const LV2_Options_Option *o = feature(features, LV2_OPTIONS__options);
        for (; o && o->key; ++o) {
            if (o->key != key || o->size != 4)
                continue;
            if (o->type == t_float)
                p->seen[k] = *(const float *)o->value;
            else if (o->type == t_int)
                p->seen[k] = (float)*(const int32_t *)o->value;
        }
    }
    return p;
}

static void op_connect(LV2_Handle h, uint32_t port, void *data)
{
    Options *p = h;
    if (port < O_COUNT)
        p->ports[port] = data;
}

static void op_run(LV2_Handle h, uint32_t frames)
{
    Options *p = h;
    for (int c = 0; c < 2; ++c)
        memcpy(p->ports[O_OUT_L + c], p->ports[O_IN_L + c], frames * sizeof(float));
    for (int k = O_RATE; k <= O_SEQUENCE; ++k)
        *(float *)p->ports[k] = p->seen[k];
    const float *cv = p->ports[O_CV_IN];
    float peak = cv ? 0.0f : -1.0f;
    for (uint32_t i = 0; cv && i < frames; ++i) {
        const float a = cv[i] < 0.0f ? -cv[i] : cv[i];
        peak = a > peak ? a : peak;
    }
    *(float *)p->ports[O_CV_PEAK] = peak;
    float *cv_out = p->ports[O_CV_OUT];
    for (uint32_t i = 0; cv_out && i < frames; ++i)
        cv_out[i] = 0.5f;
}

static const LV2_Descriptor options_descriptor = {
    OPTIONS_URI, op_instantiate, op_connect, NULL, op_run, NULL, gain_cleanup, NULL,
};

LV2_SYMBOL_EXPORT const LV2_Descriptor *lv2_descriptor(uint32_t index)
{
    switch (index) {
    case 0: return &gain_descriptor;
    case 1: return &probe_descriptor;
    case 2: return &file_state_descriptor;
    case 3: return &options_descriptor;
    default: return NULL;
    }
}
