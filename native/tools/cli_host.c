/* cli_host: a discoLink host. Claims a device, plays one note, reads its audio in real time
   and writes it to a WAV (32-bit float) or raw file as it comes. `cli_host --help`. */
#define DISCOLINK_IMPLEMENTATION
#include "tool_common.h"

#include <fcntl.h>
#include <sys/stat.h>

/* ---- the recording, written as it comes: a kill -9 loses at most the last 0.25 s ---------- */

typedef struct recording {
    int fd;
    int wav;
    uint32_t channels, sample_rate, header_bytes;
    uint64_t frames;
    const char *path;
} recording;

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

/* RIFF/WAVE, IEEE float; WAVE_FORMAT_EXTENSIBLE for more than two channels. */
static int wav_header(recording *r)
{
    uint8_t h[80];
    uint32_t data_bytes = (uint32_t)(r->frames * r->channels * 4), fmt_size = r->channels > 2 ? 40 : 16;
    static const uint8_t float_guid[16] = {0x03, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71};
    memset(h, 0, sizeof(h));
    r->header_bytes = 20 + fmt_size + 8;
    memcpy(h, "RIFF", 4);
    put32(h + 4, r->header_bytes - 8 + data_bytes);
    memcpy(h + 8, "WAVEfmt ", 8);
    put32(h + 16, fmt_size);
    put16(h + 20, r->channels > 2 ? 0xFFFE : 3);
    put16(h + 22, (uint16_t)r->channels);
    put32(h + 24, r->sample_rate);
    put32(h + 28, r->sample_rate * r->channels * 4);
    put16(h + 32, (uint16_t)(r->channels * 4));
    put16(h + 34, 32);
    if (r->channels > 2) {
        put16(h + 36, 22);
        put16(h + 38, 32);
        put32(h + 40, 0); /* no speaker positions: channel i is just channel i */
        memcpy(h + 44, float_guid, 16);
    }
    memcpy(h + 20 + fmt_size, "data", 4);
    put32(h + 24 + fmt_size, data_bytes);
    return pwrite(r->fd, h, r->header_bytes, 0) == (ssize_t)r->header_bytes ? 0 : -1;
}

static int recording_open(recording *r, const char *path)
{
    size_t n = strlen(path);
    r->path = path;
    r->wav = !(n >= 4 && strcmp(path + n - 4, ".raw") == 0);
    r->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    return r->fd < 0 ? -1 : 0;
}

static int recording_start(recording *r, uint32_t channels, uint32_t sample_rate)
{
    r->channels = channels;
    r->sample_rate = sample_rate;
    r->frames = 0;
    if (!r->wav) return 0;
    if (wav_header(r) != 0) return -1;
    return lseek(r->fd, r->header_bytes, SEEK_SET) < 0 ? -1 : 0;
}

static int recording_write(recording *r, const float *interleaved, uint32_t frames)
{
    size_t bytes = (size_t)frames * r->channels * 4, done = 0;
    while (done < bytes) {
        ssize_t n = write(r->fd, (const char *)interleaved + done, bytes - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    r->frames += frames;
    return 0;
}

/* ---- the session ------------------------------------------------------------------------ */

static void help(void)
{
    printf("usage: cli_host --id ID [--link-tag TAG] [--recall] [--seconds S] [--note N] [--velocity V]\n"
           "                [--record FILE.wav|FILE.raw] [--samplerate HZ] [--blocksize FRAMES] [--force]\n"
           "                [--rt-priority N] [--json]\n\n"
           "A discoLink host: claim a device, play one note on MIDI channel 1, read its audio in real\n"
           "time (a block every blocksize/samplerate seconds) and record it.\n\n"
           "options:\n"
           "  --id ID             device id (NAME:N, or NAME for its lowest instance)\n"
           "  --link-tag TAG      tag stored with the claim, for session recall\n"
           "  --recall            session recall: take the device whose registry slot carries\n"
           "                      --link-tag (unclaimed, or its host is dead), else --id\n"
           "  --seconds S         how long to run (default 2)\n"
           "  --note N            MIDI note to play, 0..127 (default 69, A4); note off 0.25 s before the end\n"
           "  --velocity V        note velocity 1..127 (default 100)\n"
           "  --record FILE       write the audio here as it comes: 32-bit float WAV, or raw\n"
           "                      interleaved float32 when FILE ends in .raw\n"
           "  --samplerate HZ     sample rate to ask for in the handshake (default 48000)\n"
           "  --blocksize FRAMES  block size to ask for in the handshake (default 256)\n"
           "  --force             take the device even if another live host holds it\n"
           "  --rt-priority N     SCHED_FIFO priority of the loop, 0..99 (default 10; 0: normal)\n"
           "  --json              print only one JSON object with the stats\n"
           "  -h, --help          show this help and exit\n\n"
           "Environment: DISCOLINK_NAMESPACE (default 'default'). SIGINT/SIGTERM end the session early\n"
           "(the recording is kept). Exit codes: 0 ok, 1 runtime failure (not found, refused, or the\n"
           "device was lost during the session), 2 usage error, 130/143 stopped by SIGINT/SIGTERM.\n");
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"id", required_argument, NULL, 'i'},        {"link-tag", required_argument, NULL, 't'},
        {"recall", no_argument, NULL, 'a'},          {"seconds", required_argument, NULL, 's'},
        {"note", required_argument, NULL, 'n'},      {"velocity", required_argument, NULL, 'V'},
        {"record", required_argument, NULL, 'o'},    {"samplerate", required_argument, NULL, 'r'},
        {"blocksize", required_argument, NULL, 'b'}, {"force", no_argument, NULL, 'f'},
        {"rt-priority", required_argument, NULL, 'p'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0}};
    static float planes_data[DL_MAX_CHANNELS][DL_BLOCK_SIZE_MAX];
    static float interleaved[DL_MAX_CHANNELS * DL_BLOCK_SIZE_MAX];
    const char *device_id = NULL, *record_path = NULL, *rt_refused;
    char error[256], ns[DL_NAMESPACE_MAX_CHARS + 1], reason[160] = "";
    dl_host_config config = dl_host_config_init();
    dl_host *host;
    dl_host_stats stats;
    const dl_connection *conn;
    recording rec;
    float *planes[DL_MAX_CHANNELS];
    double seconds = 2.0, peak = 0.0, note_ms = -1.0, lost_at = 0.0;
    int c, recall = 0, json = 0, note = 69, velocity = 100, rt_priority = 10, was_connected = 1, code = 0;
    uint64_t start, k, n_blocks, note_off_frame, onset = 0, period_num;
    uint32_t rate, block, channels, i, ch;
    dl_result r;
    dl_message m;
    struct timespec wake;

    tool_name = "cli_host";
    memset(&rec, 0, sizeof(rec));
    rec.fd = -1;
    config.sample_rate = 48000;
    config.block_size = 256;
    while ((c = next_option(argc, argv, options)) != -1) {
        switch (c) {
        case 'i': device_id = optarg; break;
        case 't': config.link_tag = optarg; break;
        case 'a': recall = 1; break;
        case 's': seconds = parse_seconds("--seconds", optarg); break;
        case 'n': note = (int)parse_int("--note", optarg, 0, 127); break;
        case 'V': velocity = (int)parse_int("--velocity", optarg, 1, 127); break;
        case 'o': record_path = optarg; break;
        case 'r': config.sample_rate = (uint32_t)parse_int("--samplerate", optarg, DL_SAMPLE_RATE_MIN, DL_SAMPLE_RATE_MAX); break;
        case 'b': config.block_size = (uint32_t)parse_int("--blocksize", optarg, DL_BLOCK_SIZE_MIN, DL_BLOCK_SIZE_MAX); break;
        case 'f': config.force = 1; break;
        case 'p': rt_priority = (int)parse_int("--rt-priority", optarg, 0, 99); break;
        case 'j': json = 1; break;
        case 'h': help(); return 0;
        default: usage_error("unknown option");
        }
    }
    no_positional(argc, argv);
    if (device_id == NULL && !recall) usage_error("--id is required");
    if (recall && (config.link_tag == NULL || !config.link_tag[0])) usage_error("--recall needs --link-tag");
    if (device_id && dl_validate_device_id(device_id, error, sizeof(error)) != DL_SUCCESS) usage_error("--id: %s", error);
    if (config.link_tag && dl_validate_link_tag(config.link_tag, error, sizeof(error)) != DL_SUCCESS)
        usage_error("--link-tag: %s", error);
    if (dl_namespace_resolve(NULL, ns, error, sizeof(error)) != DL_SUCCESS) usage_error("%s", error);
    if (record_path && recording_open(&rec, record_path) != 0) usage_error("cannot write --record %s: %s", record_path, strerror(errno));

    if (dl_host_create(&config, &host) != DL_SUCCESS) {
        runtime_error("out of memory");
        return 1;
    }
    install_stop_signals();
    r = recall ? dl_host_recall(host, NULL, device_id) : dl_host_connect(host, device_id);
    if (r != DL_SUCCESS) {
        runtime_error("%s", dl_host_error(host));
        dl_host_destroy(host);
        if (rec.fd >= 0) {
            close(rec.fd);
            unlink(record_path); /* nothing was recorded */
        }
        return 1;
    }
    conn = dl_host_connection(host);
    rate = conn->sample_rate;
    block = conn->block_size;
    channels = conn->channels ? conn->channels : 1;
    if (!json)
        printf("connected to %s: %u Hz, %u frames, %u ch, %s, protocol %u.%u, link tag '%s'\n", conn->device_id, rate, block,
               conn->channels, dl_mode_label(conn->mode), conn->version_major, conn->version_minor, conn->link_tag);
    fflush(stdout);
    rt_refused = realtime_priority(rt_priority);
    if (rt_refused[0] && !json) fprintf(stderr, "cli_host: normal scheduling: %s\n", rt_refused);
    if (rec.fd >= 0 && recording_start(&rec, channels, rate) != 0) {
        runtime_error("cannot write %s: %s", record_path, strerror(errno));
        dl_host_destroy(host);
        return 1;
    }
    for (ch = 0; ch < DL_MAX_CHANNELS; ch++) planes[ch] = planes_data[ch];

    n_blocks = (uint64_t)ceil(seconds * rate / block);
    if (n_blocks == 0) n_blocks = 1;
    note_off_frame = seconds > 0.25 ? (uint64_t)((seconds - 0.25) * rate) : 0;
    if (dl_cmd_note_on(&m, 0, (uint8_t)note, (uint8_t)velocity, 0) == DL_SUCCESS) dl_host_send(host, &m);
    start = dl_now_ns();
    for (k = 0; k < n_blocks && !stop_signal; k++) {
        uint32_t got;
        uint64_t block_start = k * block, wake_ns;
        if (note_off_frame >= block_start && note_off_frame < block_start + block &&
            dl_cmd_note_off(&m, 0, (uint8_t)note, 0, (uint32_t)(note_off_frame - block_start)) == DL_SUCCESS)
            dl_host_send(host, &m);
        got = dl_host_read_audio(host, planes, channels, block);
        (void)got;
        dl_host_process_responses(host);
        for (i = 0; i < block; i++) {
            for (ch = 0; ch < channels; ch++) {
                float x = planes_data[ch][i];
                double a = fabs((double)x);
                interleaved[i * channels + ch] = x;
                if (a > peak) peak = a;
                if (ch == 0 && !onset && a > 1e-4) onset = block_start + i + 1; /* +1: 0 means none */
            }
        }
        if (rec.fd >= 0) {
            if (recording_write(&rec, interleaved, block) != 0) {
                runtime_error("cannot write %s: %s", record_path, strerror(errno));
                code = 1;
                break;
            }
            if (rec.wav && (k + 1) % ((uint64_t)rate / 4 / block + 1) == 0) wav_header(&rec); /* sizes so far */
        }
        if (was_connected && !dl_host_connected(host)) {
            was_connected = 0;
            lost_at = (double)(k * block) / rate;
            snprintf(reason, sizeof(reason), "%s", dl_host_disconnect_reason(host));
            fprintf(stderr, "cli_host: disconnected from %s after %.2f s: %s; zero-filling\n", conn->device_id, lost_at, reason);
        }
        period_num = (k + 1) * (uint64_t)block * 1000000000ull / rate;
        wake_ns = start + period_num;
        wake.tv_sec = (time_t)(wake_ns / 1000000000ull);
        wake.tv_nsec = (long)(wake_ns % 1000000000ull);
        while (!stop_signal && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &wake, NULL) == EINTR) {}
    }
    if (dl_host_connected(host) && dl_cmd_control_change(&m, 0, 123, 0, 0) == DL_SUCCESS) dl_host_send(host, &m); /* all notes off */
    dl_host_stats_get(host, &stats);
    dl_host_disconnect(host);
    if (rec.fd >= 0) {
        if (rec.wav) wav_header(&rec);
        close(rec.fd);
    }
    if (onset) note_ms = (double)(onset - 1) / rate * 1000.0;
    if (json) {
        printf("{\"device\": ");
        json_string(conn->device_id);
        printf(", \"sample_rate\": %u, \"block_size\": %u, \"channels\": %u, \"blocks\": %llu, \"underruns\": %llu, "
               "\"note_to_sound_ms\": ", rate, block, conn->channels, (unsigned long long)stats.blocks_read,
               (unsigned long long)stats.underruns);
        if (note_ms >= 0) printf("%.3f", note_ms);
        else printf("null");
        printf(", \"link_tag\": ");
        json_string(conn->link_tag);
        printf(", \"commands_sent\": %llu, \"commands_dropped\": %llu, \"peak\": %.6f, \"disconnected\": ",
               (unsigned long long)stats.commands_sent, (unsigned long long)stats.commands_dropped, peak);
        json_string(reason);
        printf(", \"record\": ");
        if (record_path) json_string(record_path);
        else printf("null");
        printf("}\n");
    } else {
        printf("%s: %llu blocks, %llu underruns, note-to-sound ", conn->device_id, (unsigned long long)stats.blocks_read,
               (unsigned long long)stats.underruns);
        if (note_ms >= 0) printf("%.2f ms", note_ms);
        else printf("n/a");
        printf(", peak %.3f", peak);
        if (reason[0]) printf(", disconnected: %s", reason);
        if (record_path) printf(", recorded %.2f s to %s", (double)rec.frames / rate, record_path);
        printf("\n");
    }
    fflush(stdout);
    dl_host_destroy(host);
    if (code) return code;
    if (stop_signal) return 128 + stop_signal;
    return reason[0] ? 1 : 0;
}
