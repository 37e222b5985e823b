/* The device loop shared by cli_device (a sine synth) and cli_master (the same, with a status
   line): options, registration, the demand (or real-time) clock, a clean stop. */
#ifndef DL_DEVICE_TOOL_H
#define DL_DEVICE_TOOL_H

#include "tool_common.h"

#include <sys/time.h>

static uint32_t parse_mode(const char *text)
{
    if (strcmp(text, "audio+midi") == 0) return DL_MODE_AUDIO_MIDI;
    if (strcmp(text, "audio") == 0) return DL_MODE_AUDIO;
    if (strcmp(text, "midi") == 0) return DL_MODE_MIDI;
    usage_error("--mode '%s' is unknown; choose one of audio+midi, audio, midi", text);
}

/* ---- the sine synth (as discolink-bridge's: note n at 440 * 2^((n - 69) / 12) Hz, amplitude
   0.25 * velocity / 127 from phase 0 on its sample, 5 ms linear release, +-2 semitone bend,
   CC 120/123 silence the channel, CC 121 resets its bend; every channel the same mix) ----- */

#define SYNTH_VOICES 32
#define SYNTH_EVENTS 4096

typedef struct synth_voice {
    int note, channel, release_left; /* release_left -1: sustaining */
    double phase, inc, amp, base_hz;
} synth_voice;

typedef struct synth_event {
    uint32_t offset;
    uint8_t size, data[3];
} synth_event;

typedef struct synth {
    double sample_rate;
    synth_voice voices[SYNTH_VOICES];
    uint16_t bend[16];
    synth_event events[SYNTH_EVENTS]; /* MIDI received for the next block */
    uint32_t event_count;
    uint64_t events_total, events_dropped;
} synth;

static void synth_silence(synth *s)
{
    int i;
    for (i = 0; i < SYNTH_VOICES; i++) s->voices[i].note = -1;
    for (i = 0; i < 16; i++) s->bend[i] = 8192;
    s->event_count = 0;
}

static void synth_init(synth *s, double sample_rate)
{
    memset(s, 0, sizeof(*s));
    s->sample_rate = sample_rate;
    synth_silence(s);
}

static double synth_inc(const synth *s, double base_hz, int channel)
{
    double semitones = (s->bend[channel] - 8192) / 8192.0 * 2.0;
    return 2.0 * M_PI * base_hz * pow(2.0, semitones / 12.0) / s->sample_rate;
}

/* on_midi: queue what the next block plays (real-time safe: a fixed array). */
static void synth_on_midi(dl_device *device, uint32_t offset, const uint8_t *data, uint32_t size, void *user)
{
    synth *s = (synth *)user;
    synth_event *e;
    (void)device;
    if (size == 0 || size > 3) return; /* SysEx: nothing for a sine synth */
    if (s->event_count >= SYNTH_EVENTS) {
        s->events_dropped++;
        return;
    }
    e = &s->events[s->event_count++];
    e->offset = offset;
    e->size = (uint8_t)size;
    memcpy(e->data, data, size);
    s->events_total++;
}

static void synth_apply(synth *s, const synth_event *e)
{
    uint8_t kind = e->data[0] & 0xF0, channel = e->data[0] & 0x0F;
    int i;
    if (e->data[0] >= 0xF0 || e->size < 2) return;
    if (kind == 0x90 && e->size == 3 && e->data[2] > 0) {
        synth_voice *v = NULL;
        for (i = 0; i < SYNTH_VOICES && v == NULL; i++)
            if (s->voices[i].note < 0) v = &s->voices[i];
        if (v == NULL) { /* steal: a releasing voice first, the one closest to its end */
            v = &s->voices[0];
            for (i = 1; i < SYNTH_VOICES; i++) {
                synth_voice *x = &s->voices[i];
                int xr = x->release_left >= 0, vr = v->release_left >= 0;
                if ((xr && !vr) || (xr == vr && x->release_left < v->release_left)) v = x;
            }
        }
        v->note = e->data[1];
        v->channel = channel;
        v->phase = 0.0;
        v->base_hz = 440.0 * pow(2.0, (e->data[1] - 69) / 12.0);
        v->inc = synth_inc(s, v->base_hz, channel);
        v->amp = 0.25 * e->data[2] / 127.0;
        v->release_left = -1;
    } else if (kind == 0x80 || kind == 0x90) {
        int release = (int)(0.005 * s->sample_rate);
        for (i = 0; i < SYNTH_VOICES; i++) {
            synth_voice *v = &s->voices[i];
            if (v->note == e->data[1] && v->channel == channel && v->release_left < 0) v->release_left = release > 0 ? release : 1;
        }
    } else if (kind == 0xE0 && e->size == 3) {
        s->bend[channel] = (uint16_t)(e->data[1] | (e->data[2] << 7));
        for (i = 0; i < SYNTH_VOICES; i++)
            if (s->voices[i].note >= 0 && s->voices[i].channel == channel)
                s->voices[i].inc = synth_inc(s, s->voices[i].base_hz, channel);
    } else if (kind == 0xB0 && e->size == 3) {
        if (e->data[1] == 120 || e->data[1] == 123) {
            for (i = 0; i < SYNTH_VOICES; i++)
                if (s->voices[i].channel == channel) s->voices[i].note = -1;
        } else if (e->data[1] == 121) {
            s->bend[channel] = 8192;
        }
    }
}

static void synth_span(synth *s, float *mix, uint32_t start, uint32_t end)
{
    int release_len = (int)(0.005 * s->sample_rate);
    int i;
    uint32_t k;
    if (release_len < 1) release_len = 1;
    for (i = 0; i < SYNTH_VOICES; i++) {
        synth_voice *v = &s->voices[i];
        if (v->note < 0) continue;
        for (k = start; k < end; k++) {
            double gain = v->amp;
            if (v->release_left >= 0) {
                if (v->release_left == 0) {
                    v->note = -1;
                    break;
                }
                gain = v->amp * v->release_left / release_len;
                v->release_left--;
            }
            mix[k] += (float)(gain * sin(v->phase));
            v->phase += v->inc;
        }
        v->phase = fmod(v->phase, 2.0 * M_PI);
        if (v->release_left == 0) v->note = -1;
    }
}

/* Render one block into mix[0..frames) from the queued events (offsets past the block play
   on its last frame), then empty the queue. */
static void synth_render(synth *s, float *mix, uint32_t frames)
{
    uint32_t i, j, pos = 0;
    memset(mix, 0, frames * sizeof(float));
    for (i = 1; i < s->event_count; i++) /* stable: equal offsets keep their order */
        for (j = i; j > 0 && s->events[j].offset < s->events[j - 1].offset; j--) {
            synth_event t = s->events[j];
            s->events[j] = s->events[j - 1];
            s->events[j - 1] = t;
        }
    for (i = 0; i < s->event_count; i++) {
        uint32_t at = s->events[i].offset < frames ? s->events[i].offset : frames - 1;
        if (at > pos) {
            synth_span(s, mix, pos, at);
            pos = at;
        }
        synth_apply(s, &s->events[i]);
    }
    if (pos < frames) synth_span(s, mix, pos, frames);
    s->event_count = 0;
}

static int synth_sounding(const synth *s)
{
    int i, n = 0;
    for (i = 0; i < SYNTH_VOICES; i++) n += s->voices[i].note >= 0;
    return n;
}


typedef struct device_tool {
    synth synth;
    dl_device *device;
    int verbose;
    int claimed_news;  /* status line: something happened */
} device_tool;

/* Connection news (runs inside dl_device_process_commands, on our own loop's thread). */
static void device_tool_event(dl_device *device, const dl_device_event *e, void *user)
{
    device_tool *t = (device_tool *)user;
    const char *what = "";
    (void)device;
    switch (e->kind) {
    case DL_EVENT_CLAIMED: /* a new host: nothing of the previous session may sound (1.1) */
        synth_silence(&t->synth);
        what = "claimed";
        break;
    case DL_EVENT_HOST_DIED: synth_silence(&t->synth); what = "host died"; break;
    case DL_EVENT_HOST_LEFT: what = "host left"; break;
    case DL_EVENT_HANDSHAKE: what = "handshake"; break;
    case DL_EVENT_FORMAT_CHANGED: t->synth.sample_rate = e->sample_rate; what = "format"; break;
    case DL_EVENT_MODE_CHANGED: what = "mode"; break;
    case DL_EVENT_BAD_MESSAGE: what = "refused"; break;
    case DL_EVENT_SLOT_LOST: what = "slot lost"; break;
    }
    t->claimed_news = 1;
    if (t->verbose) fprintf(stderr, "%s %s: %s: %s\n", tool_name, dl_device_id(device), what, e->text);
}

static void device_tool_help(int master)
{
    printf("usage: %s [--id NAME] [--channels N] [--samplerate HZ] [--blocksize FRAMES]\n"
           "       %*s [--mode audio+midi|audio|midi] [--clock demand|realtime] [--fill N]\n"
           "       %*s [--return] [--fixed-format] [--rt-priority N] [--verbose]%s\n\n"
           "%s\n\n"
           "options:\n"
           "  --id NAME           device id: NAME takes the lowest free NAME:N, NAME:N asks for\n"
           "                      exactly that (session recall). Default: Sine\n"
           "  --channels N        output channels 1..12 (default 2)\n"
           "  --samplerate HZ     sample rate, 8000..384000 (default 48000)\n"
           "  --blocksize FRAMES  block size, 16..4096 (default 256)\n"
           "  --mode MODE         audio+midi (default), audio or midi\n"
           "  --clock CLOCK       demand: render while the host's queue holds fewer than fill blocks\n"
           "                      (default); realtime: one block per block period of our own clock\n"
           "  --fill N            demand clock: blocks kept queued, 1..4 (default 2)\n"
           "  --return            add a host-to-device return ring (mixed into the output)\n"
           "  --fixed-format      keep this rate and block size whatever a host asks for\n"
           "  --rt-priority N     SCHED_FIFO priority of the loop, 0..99 (default 10; 0: normal)\n"
           "  --verbose           print connection events on stderr\n"
           "%s"
           "  -h, --help          show this help and exit\n\n"
           "Environment: DISCOLINK_NAMESPACE (default 'default'). Stops cleanly on SIGINT/SIGTERM.\n"
           "Exit codes: 0 ok, 1 runtime failure, 2 usage error.\n",
           tool_name, (int)strlen(tool_name), "", (int)strlen(tool_name), "", master ? " [--interval S]" : "",
           master ? "A discoLink device (a polyphonic sine synth that plays the MIDI it receives) with a\n"
                    "status line: claim, format, blocks, overruns, underruns, bad messages, notes."
                  : "A discoLink device: a polyphonic sine synth that plays the MIDI it receives.",
           master ? "  --interval S        status line period (default 0.25 s on a terminal, else 1 s)\n" : "");
}

static void device_tool_status(device_tool *t, int on_tty)
{
    dl_counters c;
    char tag[64], claim[96];
    uint32_t host = dl_device_host_pid(t->device);
    dl_device_counters(t->device, &c);
    dl_device_link_tag(t->device, tag);
    if (host) snprintf(claim, sizeof(claim), "host %u '%s'", host, tag);
    else snprintf(claim, sizeof(claim), "unclaimed");
    fprintf(stderr, "%s%s | %s | %u Hz %u fr | blocks %llu | overruns %llu | host underruns %llu | bad %llu | notes %d%s",
            on_tty ? "\r\033[K" : "", dl_device_id(t->device), claim, dl_device_sample_rate(t->device),
            dl_device_block_size(t->device), (unsigned long long)c.blocks_written, (unsigned long long)c.overruns,
            (unsigned long long)c.underruns, (unsigned long long)c.bad_messages, synth_sounding(&t->synth),
            on_tty ? "" : "\n");
    fflush(stderr);
}

static int device_tool_main(int argc, char **argv, int master)
{
    static const struct option options[] = {
        {"id", required_argument, NULL, 'i'},       {"channels", required_argument, NULL, 'c'},
        {"samplerate", required_argument, NULL, 'r'}, {"blocksize", required_argument, NULL, 'b'},
        {"mode", required_argument, NULL, 'm'},     {"clock", required_argument, NULL, 'k'},
        {"fill", required_argument, NULL, 'f'},     {"return", no_argument, NULL, 'R'},
        {"fixed-format", no_argument, NULL, 'F'},   {"rt-priority", required_argument, NULL, 'p'},
        {"verbose", no_argument, NULL, 'v'},        {"interval", required_argument, NULL, 'I'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    static float mix[DL_BLOCK_SIZE_MAX], ret[DL_MAX_CHANNELS][DL_BLOCK_SIZE_MAX];
    static device_tool t;
    dl_device_config config = dl_device_config_init();
    const float *planes[DL_MAX_CHANNELS];
    float *ret_planes[DL_MAX_CHANNELS];
    char error[256];
    const char *rt_refused;
    int c, realtime_clock = 0, rt_priority = 10, on_tty = isatty(2);
    double interval = on_tty ? 0.25 : 1.0;
    uint64_t fast_until = 0, next_status = 0, next_block = 0;
    uint32_t ch;
    dl_result r;
    dl_counters counters;
    dl_device_stats stats;

    config.id = "Sine";
    config.capabilities = DL_CAP_FLEXIBLE_FORMAT | DL_CAP_UMP;
    while ((c = next_option(argc, argv, options)) != -1) {
        switch (c) {
        case 'i':
            if (dl_validate_device_id(optarg, error, sizeof(error)) != DL_SUCCESS) usage_error("--id: %s", error);
            config.id = optarg;
            break;
        case 'c': config.channels = (uint32_t)parse_int("--channels", optarg, 1, DL_MAX_CHANNELS); break;
        case 'r': config.sample_rate = (uint32_t)parse_int("--samplerate", optarg, DL_SAMPLE_RATE_MIN, DL_SAMPLE_RATE_MAX); break;
        case 'b': config.block_size = (uint32_t)parse_int("--blocksize", optarg, DL_BLOCK_SIZE_MIN, DL_BLOCK_SIZE_MAX); break;
        case 'm': config.mode = parse_mode(optarg); break;
        case 'k':
            if (strcmp(optarg, "demand") == 0) realtime_clock = 0;
            else if (strcmp(optarg, "realtime") == 0) realtime_clock = 1;
            else usage_error("--clock '%s' is unknown; choose demand or realtime", optarg);
            break;
        case 'f': config.fill_blocks = (uint32_t)parse_int("--fill", optarg, DL_FILL_MIN, DL_FILL_MAX); break;
        case 'R': config.return_audio = 1; break;
        case 'F': config.capabilities &= ~(uint32_t)DL_CAP_FLEXIBLE_FORMAT; break;
        case 'p': rt_priority = (int)parse_int("--rt-priority", optarg, 0, 99); break;
        case 'v': t.verbose = 1; break;
        case 'I':
            if (!master) usage_error("unknown option '--interval'");
            interval = parse_seconds("--interval", optarg);
            break;
        case 'h': device_tool_help(master); return 0;
        default: usage_error("unknown option");
        }
    }
    no_positional(argc, argv);
    if (realtime_clock) config.fill_blocks = 0; /* published: the device runs on its own clock */
    {
        char ns[DL_NAMESPACE_MAX_CHARS + 1];
        if (dl_namespace_resolve(NULL, ns, error, sizeof(error)) != DL_SUCCESS) usage_error("%s", error);
    }

    synth_init(&t.synth, config.sample_rate);
    config.on_midi = synth_on_midi;
    config.on_event = device_tool_event;
    config.user_data = &t; /* synth_on_midi takes it as its synth: the tool's first member */
    if (dl_device_create(&config, &t.device) != DL_SUCCESS) {
        runtime_error("out of memory");
        return 1;
    }
    install_stop_signals();
    r = dl_device_start(t.device);
    if (r != DL_SUCCESS) {
        runtime_error("%s", dl_device_error(t.device));
        dl_device_destroy(t.device);
        return r == DL_INVALID_ARGS ? 2 : 1;
    }
    rt_refused = realtime_priority(rt_priority);
    {
        char ns[DL_NAMESPACE_MAX_CHARS + 1];
        dl_namespace_resolve(NULL, ns, NULL, 0);
        printf("device %s ready: %u ch, %u Hz, %u frames, %s, %s clock", dl_device_id(t.device), dl_device_channels(t.device),
               dl_device_sample_rate(t.device), dl_device_block_size(t.device), dl_mode_label(dl_device_mode(t.device)),
               realtime_clock ? "realtime" : "demand");
        if (!realtime_clock) printf(" (fill %u)", config.fill_blocks);
        if (rt_priority) printf(", %s", rt_refused[0] ? rt_refused : "SCHED_FIFO");
        if (rt_priority && !rt_refused[0]) printf(" %d", rt_priority);
        printf(", namespace '%s', pid %d\n", ns, (int)getpid());
        fflush(stdout);
    }
    for (ch = 0; ch < DL_MAX_CHANNELS; ch++) {
        planes[ch] = mix;
        ret_planes[ch] = ret[ch];
    }
    next_block = dl_now_ns();
    while (!stop_signal) {
        uint32_t wanted, rendered = 0, block;
        uint64_t now;
        dl_device_process_commands(t.device);
        if (!dl_device_registered(t.device)) break;
        block = dl_device_block_size(t.device);
        now = dl_now_ns();
        if (realtime_clock) {
            wanted = now >= next_block && dl_device_mode(t.device) != DL_MODE_MIDI ? 1 : 0;
            if (now >= next_block) {
                next_block += (uint64_t)block * 1000000000ull / dl_device_sample_rate(t.device);
                if (now > next_block + 250000000ull) next_block = now; /* fell far behind: resynchronise */
            }
        } else {
            wanted = dl_device_blocks_wanted(t.device);
        }
        while (rendered < wanted) {
            synth_render(&t.synth, mix, block);
            if (dl_device_return_channels(t.device)) {
                uint32_t k, got = dl_device_read_return(t.device, ret_planes, 1, block);
                for (k = 0; k < got; k++) mix[k] += ret[0][k];
            }
            r = dl_device_write_audio(t.device, planes, block);
            rendered++;
            if (r != DL_SUCCESS) break; /* full, or a new claim to take in first */
        }
        if (master && now >= next_status) {
            device_tool_status(&t, on_tty);
            next_status = now + (uint64_t)(interval * 1e9);
        }
        if (rendered >= 2) fast_until = now + 8ull * block * 1000000000ull / dl_device_sample_rate(t.device);
        if (realtime_clock) {
            uint64_t after = dl_now_ns();
            if (next_block > after) dl_sleep_ns(next_block - after < 500000 ? next_block - after : 500000);
        } else if (rendered == 0) {
            if (!dl_device_claimed(t.device)) dl_sleep_ns(20000000); /* idle: below the heartbeat limit */
            else if (now < fast_until) dl_sleep_ns(100000); /* a host catching up: poll fast */
            else {
                uint64_t fifth = (uint64_t)block * 200000000ull / dl_device_sample_rate(t.device);
                dl_sleep_ns(fifth > 100000 ? fifth : 100000);
            }
        }
    }
    if (master && on_tty) fputc('\n', stderr);
    dl_device_process_commands(t.device); /* what came before the stop (a Disconnect, say) */
    dl_device_counters(t.device, &counters);
    dl_device_stats_get(t.device, &stats);
    if (!dl_device_registered(t.device)) {
        snprintf(error, sizeof(error), "%s", dl_device_error(t.device));
        dl_device_destroy(t.device);
        runtime_error("%s", error);
        return 1;
    }
    printf("device %s stopped: %llu blocks, %llu overruns, %llu host underruns, %llu commands, %llu bad messages, "
           "%llu MIDI events\n", dl_device_id(t.device), (unsigned long long)counters.blocks_written,
           (unsigned long long)counters.overruns, (unsigned long long)counters.underruns,
           (unsigned long long)stats.commands_received, (unsigned long long)counters.bad_messages,
           (unsigned long long)stats.midi_events);
    fflush(stdout);
    dl_device_destroy(t.device);
    return 0;
}

#endif
