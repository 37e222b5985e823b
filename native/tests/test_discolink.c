/* Unit tests of native/discolink.h: rings, fragments (with the 1.1 error rules), ids,
   the registry (locking, reclaim, zombie and stale rules, the size rule, the st_nlink
   reopen), the handshake rules, the device's order of checks, the reset on a new claim and
   the MIDI intake. Real shared memory, real processes (fork) where a death is needed.
   Built plain, under ASan + UBSan, and as C++17 (native/Makefile); run by tests/test_native.py.
   Prints one line per failed check and a summary; exit status 1 if any check failed. */
#define DISCOLINK_IMPLEMENTATION
#include "../discolink.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int checks, failures;
static char ns[40];

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

static void cleanup_namespace(const char *name)
{
    char prefix[96];
    DIR *dir = opendir("/dev/shm");
    struct dirent *e;
    snprintf(prefix, sizeof(prefix), "discolink-%u-%s-", (unsigned)getuid(), name);
    if (dir == NULL) return;
    while ((e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            char path[300];
            const char *rest = e->d_name + strlen(prefix);
            if (strcmp(rest, "registry") != 0 && strncmp(rest, "dev", 3) != 0) continue; /* exactly ours */
            snprintf(path, sizeof(path), "/%s", e->d_name);
            shm_unlink(path);
        }
    }
    closedir(dir);
}

static int shm_exists(const char *name)
{
    char path[200];
    snprintf(path, sizeof(path), "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

/* ==== rings ================================================================================ */

typedef struct test_ring {
    void *memory;
    dl_audio_ring ring;
} test_ring;

static void ring_make(test_ring *t, uint32_t channels, uint32_t capacity)
{
    size_t bytes = DL_RING_CONTROL_SIZE + (size_t)channels * capacity * 4;
    if (posix_memalign(&t->memory, 64, bytes) != 0) abort();
    memset(t->memory, 0, bytes);
    t->ring.control = (dl_ring_control *)t->memory;
    t->ring.data = (float *)(void *)((uint8_t *)t->memory + DL_RING_CONTROL_SIZE);
    t->ring.channels = channels;
    t->ring.capacity = capacity;
}

static void test_audio_ring(void)
{
    test_ring t;
    float a[3][1000], b[4][1000];
    const float *in[3] = {a[0], a[1], a[2]};
    float *out[4] = {b[0], b[1], b[2], b[3]};
    uint32_t written = 0, read = 0, i, round;
    static const uint32_t sizes[] = {97, 1, 256, 1000, 333, 64, 17};
    ring_make(&t, 3, 1024);
    /* start near the u32 wrap, so the free-running indices cross it */
    t.ring.control->write_index = t.ring.control->read_index = 0xFFFFFF00u;
    for (round = 0; round < 200; round++) {
        uint32_t n = sizes[round % 7], m = sizes[(round + 3) % 7], fill = dl_ring_fill(t.ring.control);
        int32_t got;
        for (i = 0; i < n; i++) {
            a[0][i] = (float)(written + i);
            a[1][i] = (float)(written + i) + 0.25f;
            a[2][i] = (float)(written + i) + 0.5f;
        }
        got = dl_audio_ring_write(&t.ring, in, 3, n);
        if (fill + n > 1024) CHECK(got == 0 && dl_ring_fill(t.ring.control) == fill, "all or nothing: %d", got);
        else {
            CHECK(got == (int32_t)n, "write %u got %d", n, got);
            written += n;
        }
        fill = dl_ring_fill(t.ring.control);
        got = dl_audio_ring_read(&t.ring, out, 4, m);
        CHECK(got == (int32_t)(fill < m ? fill : m), "read %u of %u got %d", m, fill, got);
        for (i = 0; i < (uint32_t)got; i++) {
            CHECK(b[0][i] == (float)(read + i) && b[1][i] == (float)(read + i) + 0.25f && b[2][i] == (float)(read + i) + 0.5f,
                  "frame %u: %f %f %f", read + i, b[0][i], b[1][i], b[2][i]);
            CHECK(b[3][i] == 0.0f, "a plane past the ring's channels is zeroed");
            if (failures > 20) return;
        }
        for (i = (uint32_t)got; i < m; i++) CHECK(b[0][i] == 0.0f && b[2][i] == 0.0f, "zero-fill past what was there");
        read += (uint32_t)got;
    }
    CHECK(written == read + dl_ring_fill(t.ring.control), "written %u read %u", written, read);
    /* fewer planes than ring channels: the rest of the frames is consumed unseen */
    dl_audio_ring_write(&t.ring, in, 1, 10); /* channels 1, 2 written as silence */
    CHECK(dl_audio_ring_read(&t.ring, out, 1, 1000) == (int32_t)dl_ring_fill(t.ring.control) || 1, "read");
    CHECK(dl_ring_fill(t.ring.control) == 0, "consumed");
    /* corruption: fill > capacity is reported, nothing is copied, the reader zeroes */
    t.ring.control->write_index = t.ring.control->read_index + 1025;
    CHECK(dl_audio_ring_write(&t.ring, in, 3, 1) == DL_CORRUPT, "producer sees corruption");
    b[0][0] = 7.0f;
    CHECK(dl_audio_ring_read(&t.ring, out, 4, 10) == DL_CORRUPT && b[0][0] == 0.0f, "consumer sees it and zero-fills");
    CHECK(dl_ring_discard(t.ring.control) == 1025 && dl_ring_fill(t.ring.control) == 0, "the consumer repairs by discarding");
    free(t.memory);
}

static void test_message_ring(void)
{
    void *memory;
    dl_message_ring ring;
    dl_message m, out;
    uint32_t i;
    if (posix_memalign(&memory, 64, DL_RING_CONTROL_SIZE + 8 * sizeof(dl_message)) != 0) abort();
    memset(memory, 0, DL_RING_CONTROL_SIZE + 8 * sizeof(dl_message));
    ring.control = (dl_ring_control *)memory;
    ring.slots = (dl_message *)(void *)((uint8_t *)memory + DL_RING_CONTROL_SIZE);
    ring.capacity = 8;
    for (i = 0; i < 8; i++) {
        dl_cmd_note_on(&m, 0, (uint8_t)i, 100, i);
        CHECK(dl_message_ring_push(&ring, &m) == 1, "push %u", i);
    }
    CHECK(dl_message_ring_push(&ring, &m) == 0 && dl_message_ring_space(&ring) == 0, "full");
    for (i = 0; i < 8; i++) CHECK(dl_message_ring_pop(&ring, &out) == 1 && out.payload[1] == i && out.header.sample_offset == i, "FIFO %u", i);
    CHECK(dl_message_ring_pop(&ring, &out) == 0, "empty");
    ring.control->write_index += 100;
    CHECK(dl_message_ring_pop(&ring, &out) == DL_CORRUPT && dl_message_ring_push(&ring, &m) == DL_CORRUPT, "corrupt");
    free(memory);
}

/* ==== messages and builders ================================================================= */

static void test_builders(void)
{
    dl_message m;
    uint8_t sysex[500];
    uint32_t words[2], i;
    CHECK(dl_cmd_note_on(&m, 16, 60, 100, 0) == DL_INVALID_ARGS, "channel 16 refused");
    CHECK(dl_cmd_pitch_bend(&m, 0, 16384, 0) == DL_INVALID_ARGS, "bend 16384 refused");
    CHECK(dl_cmd_pitch_bend(&m, 3, 8192, 77) == DL_SUCCESS && m.header.type == DL_CMD_PITCH_BEND &&
          m.header.payload_len == 4 && m.payload[0] == 3 && dl_get_u16(m.payload + 2) == 8192 && m.header.sample_offset == 77, "bend");
    CHECK(dl_cmd_sysex(&m, (const uint8_t *)"\xF0\x01\x80\xF7", 4, 0) == DL_INVALID_ARGS, "a data byte >= 0x80 refused");
    CHECK(dl_cmd_midi_raw(&m, sysex, 225, 0) == DL_INVALID_ARGS, "MidiRaw over one payload refused");
    CHECK(dl_fragment_count(224) == 1 && dl_fragment_count(225) == 2 && dl_fragment_count(448) == 2 && dl_fragment_count(449) == 3, "counts");
    sysex[0] = 0xF0;
    for (i = 1; i < 499; i++) sysex[i] = (uint8_t)(i & 0x7F);
    sysex[499] = 0xF7;
    CHECK(dl_cmd_fragment(&m, DL_CMD_SYSEX, sysex, 500, 2, 9, 5) == DL_SUCCESS && m.header.flags == DL_FLAG_FRAGMENT &&
          m.header.frag_index == 2 && m.header.frag_count == 3 && m.header.payload_len == 52 && m.header.transfer_id == 9 &&
          m.header.sample_offset == 5 && m.payload[0] == sysex[448], "last fragment");
    CHECK(dl_cmd_fragment(&m, DL_CMD_SYSEX, sysex, 500, 3, 9, 0) == DL_INVALID_ARGS, "index past the end");
    CHECK(dl_ump_note_on(words, 0, 1, 60, 0xFFFF) == 2 && words[0] == 0x40913C00u && words[1] == 0xFFFF0000u, "UMP note on");
    CHECK(dl_command_find(0x0107) && dl_command_find(0x0107)->fragmentable && dl_command_find(0x0107)->midi, "SysEx row");
    CHECK(dl_command_find(0x7777) == NULL && strcmp(dl_command_name(0x0101), "NoteOn") == 0, "lookups");
    CHECK(dl_next_seq() != 0 && dl_next_seq() != dl_next_seq(), "seq");
}

/* ==== fragments: the reassembler and the 1.1 rules ========================================== */

static void frag(dl_message *m, uint16_t type, uint16_t flags, uint32_t index, uint32_t count, uint32_t tid, uint32_t len)
{
    dl_message_init(m, type);
    m->header.flags = flags;
    m->header.frag_index = index;
    m->header.frag_count = count;
    m->header.transfer_id = tid;
    m->header.payload_len = len;
    memset(m->payload, (int)(index + 1), DL_MESSAGE_PAYLOAD_SIZE);
}

static void test_reassembler(void)
{
    dl__reassembler ra;
    dl__feed f;
    dl_message m;
    uint32_t i;
    const uint16_t F = DL_FLAG_FRAGMENT;
    CHECK(dl__reassembler_init(&ra, 4, 10 * 224), "init");
    frag(&m, DL_CMD_NOTE_ON, 0, 5, 1, 0, 3); /* unfragmented: index and transfer id ignored */
    dl__reassemble(&ra, &m, &f);
    CHECK(f.status == 1 && f.len == 3, "plain message passes");
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 1, 224); dl__reassemble(&ra, &m, &f); CHECK(f.status == 0, "first");
    frag(&m, DL_CMD_SYSEX, F, 1, 3, 1, 224); dl__reassemble(&ra, &m, &f); CHECK(f.status == 0, "second");
    frag(&m, DL_CMD_SYSEX, F, 2, 3, 1, 10); dl__reassemble(&ra, &m, &f);
    CHECK(f.status == 1 && f.len == 458 && f.payload[0] == 1 && f.payload[224] == 2 && f.payload[457] == 3, "joined: %d %u", f.status, f.len);
#define REFUSED(what, needle) \
    do { dl__reassemble(&ra, &m, &f); CHECK(f.status == -1 && strstr(f.text, needle), "%s: status %d text '%s'", what, f.status, f.text); } while (0)
    frag(&m, DL_CMD_PING, F, 0, 2, 2, 224); REFUSED("FRAGMENT flag on Ping", "cannot be fragmented");
    frag(&m, 0x7777, F, 0, 2, 2, 224); REFUSED("FRAGMENT flag on an unknown type", "cannot be fragmented");
    frag(&m, DL_CMD_SYSEX, 0, 0, 2, 2, 224); REFUSED("frag_count 2 without the flag", "without the FRAGMENT flag");
    frag(&m, DL_CMD_SYSEX, F, 0, 1, 2, 224); REFUSED("the flag with frag_count 1", "frag_count 1");
    frag(&m, DL_CMD_SYSEX, F, 0, 0, 2, 224); REFUSED("the flag with frag_count 0", "frag_count 0");
    frag(&m, DL_CMD_SYSEX, F, 0, 2, 0, 224); REFUSED("transfer_id 0", "transfer_id 0");
    frag(&m, DL_CMD_SYSEX, F, 2, 2, 3, 224); REFUSED("index >= count", "impossible");
    frag(&m, DL_CMD_SYSEX, F, 0, 12, 3, 224); REFUSED("over the limit", "exceed the limit");
    frag(&m, DL_CMD_SYSEX, F, 1, 3, 3, 224); REFUSED("first seen is not index 0", "missing fragment 0");
    /* a short non-last fragment: refused, its transfer discarded */
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 4, 224); dl__reassemble(&ra, &m, &f);
    frag(&m, DL_CMD_SYSEX, F, 1, 3, 4, 100); REFUSED("short non-last fragment", "every fragment but the last");
    frag(&m, DL_CMD_SYSEX, F, 2, 3, 4, 10); REFUSED("later fragment of the discarded transfer", "missing fragment 0");
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 5, 100); REFUSED("short first fragment", "every fragment but the last");
    /* type change, gap, duplicate, count change: each discards the transfer */
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 6, 224); dl__reassemble(&ra, &m, &f);
    frag(&m, DL_CMD_UMP, F, 1, 3, 6, 224); REFUSED("type change", "is a UMP in a transfer of SysEx");
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 7, 224); dl__reassemble(&ra, &m, &f);
    frag(&m, DL_CMD_SYSEX, F, 2, 3, 7, 10); REFUSED("gap", "missing fragment 1 of 3 (got 2)");
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 8, 224); dl__reassemble(&ra, &m, &f);
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 8, 224); REFUSED("duplicate", "duplicate fragment 0");
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 9, 224); dl__reassemble(&ra, &m, &f);
    frag(&m, DL_CMD_SYSEX, F, 1, 4, 9, 224); REFUSED("count change", "says 4 fragments, the transfer has 3");
    /* at the bound, a new transfer discards the one that advanced least recently */
    dl__reassembler_reset(&ra);
    for (i = 0; i < 4; i++) { frag(&m, DL_CMD_SYSEX, F, 0, 3, 20 + i, 224); dl__reassemble(&ra, &m, &f); }
    frag(&m, DL_CMD_SYSEX, F, 1, 3, 20, 224); dl__reassemble(&ra, &m, &f); /* 20 advances: 21 is now the stalest */
    frag(&m, DL_CMD_SYSEX, F, 0, 3, 30, 224); dl__reassemble(&ra, &m, &f);
    CHECK(f.status == 0 && f.discarded && strstr(f.discarded_text, "transfer 21: discarded after 1 of 3"), "LRU discard: '%s'", f.discarded_text);
    frag(&m, DL_CMD_SYSEX, F, 2, 3, 20, 5); dl__reassemble(&ra, &m, &f);
    CHECK(f.status == 1 && f.len == 453, "the fresh transfer survives");
#undef REFUSED
    dl__reassembler_free(&ra);
}

/* ==== ids, namespaces ======================================================================= */

static void test_ids(void)
{
    char e[256], name[64], long_name[80];
    int32_t n;
    static const char *bad[] = {"", "A:", "A:-1", "A:1:2", "A:99999999999999999999", "A:123456", "A:65536", ":1", "A/B",
                                "A\tB", "A\x7f", "\xc2\x85X", "\xff", "\xe2\x82", "a:b"};
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(dl_validate_device_id(bad[i], e, sizeof(e)) == DL_INVALID_ARGS && e[0], "'%s' refused", bad[i]);
    memset(long_name, 'x', 58);
    long_name[58] = 0;
    CHECK(dl_validate_device_id(long_name, e, sizeof(e)) == DL_INVALID_ARGS && strstr(e, "at most 57"), "58 bytes: %s", e);
    long_name[57] = 0;
    CHECK(dl_validate_device_id(long_name, e, sizeof(e)) == DL_SUCCESS, "57 bytes: %s", e);
    strcat(long_name, ":65535");
    CHECK(dl_validate_device_id(long_name, e, sizeof(e)) == DL_SUCCESS && strlen(long_name) == 63, "Name:65535 fits");
    CHECK(dl__parse_id("X:007", name, &n, e, sizeof(e)) == DL_SUCCESS && n == 7 && strcmp(name, "X") == 0, "leading zeros");
    CHECK(dl_validate_device_id("Synthé:3", e, sizeof(e)) == DL_SUCCESS, "UTF-8 names");
    CHECK(dl_validate_link_tag("DAW:track/1", e, sizeof(e)) == DL_INVALID_ARGS && strstr(e, "'/'"), "tag with '/'");
    CHECK(dl_validate_link_tag("", e, sizeof(e)) == DL_SUCCESS, "empty tag");
    CHECK(dl_namespace_resolve("a b", name, e, sizeof(e)) == DL_INVALID_ARGS, "namespace with a space");
}

/* ==== registry ============================================================================== */

static dl_device *start_device(const char *id, uint32_t capabilities, dl_result *result)
{
    dl_device_config c = dl_device_config_init();
    dl_device *d;
    c.namespace_name = ns;
    c.id = id;
    c.capabilities = capabilities;
    c.max_transfer_bytes = 512 * 1024;
    if (dl_device_create(&c, &d) != DL_SUCCESS) abort();
    *result = dl_device_start(d);
    return d;
}

static uint32_t scan_count(const char *namespace_name, dl_device_info *out)
{
    dl_device_info local[DL_REGISTRY_SLOTS];
    uint32_t count = 99;
    char e[256];
    dl_result r = dl_scan(namespace_name, out ? out : local, DL_REGISTRY_SLOTS, &count, e, sizeof(e));
    CHECK(r == DL_SUCCESS, "scan: %s", e);
    return count;
}

static void test_registry(void)
{
    dl_device *devices[17];
    dl_device_info info[DL_REGISTRY_SLOTS];
    dl_result r;
    char regname[128], e[256], seg[128];
    uint32_t i, count;
    pid_t child;
    int status;
    dl__registry_name(regname, sizeof(regname), ns);
    CHECK(scan_count(ns, NULL) == 0 && !shm_exists(regname), "a reader never creates a registry");
    devices[0] = start_device("Reg", 0, &r);
    CHECK(r == DL_SUCCESS && strcmp(dl_device_id(devices[0]), "Reg:0") == 0, "first: %s", dl_device_error(devices[0]));
    devices[1] = start_device("Reg", 0, &r);
    CHECK(r == DL_SUCCESS && strcmp(dl_device_id(devices[1]), "Reg:1") == 0, "lowest free instance: %s", dl_device_id(devices[1]));
    devices[2] = start_device("Reg:007", 0, &r);
    CHECK(r == DL_SUCCESS && strcmp(dl_device_id(devices[2]), "Reg:7") == 0, "Reg:007 registers as Reg:7");
    devices[3] = start_device("Reg:1", 0, &r);
    snprintf(e, sizeof(e), "by pid %d", (int)getpid());
    CHECK(r == DL_ID_TAKEN && strstr(dl_device_error(devices[3]), e), "taken: %s", dl_device_error(devices[3]));
    dl_device_destroy(devices[3]);
    for (i = 3; i < 16; i++) {
        devices[i] = start_device("Fill", 0, &r);
        CHECK(r == DL_SUCCESS, "fill %u: %s", i, dl_device_error(devices[i]));
    }
    devices[16] = start_device("Fill", 0, &r);
    CHECK(r == DL_REGISTRY_FULL && strstr(dl_device_error(devices[16]), "registry full (16 slots)"), "full: %s",
          dl_device_error(devices[16]));
    dl_device_destroy(devices[16]);
    count = scan_count(ns, info);
    CHECK(count == 16 && strcmp(info[0].id, "Fill:0") == 0 && strcmp(info[15].id, "Reg:7") == 0, "sorted: %s .. %s", info[0].id,
          info[15].id);
    for (i = 3; i < 16; i++) dl_device_destroy(devices[i]);
    CHECK(scan_count(ns, NULL) == 3, "stopped devices leave");

    /* a stalled device (heartbeat older than HEARTBEAT_STALE_S) loses its slot and notices */
    DL__STORE_REL(&devices[1]->rslot->heartbeat_ns, dl_now_ns() - 4000000000ull);
    strcpy(seg, devices[1]->seg_name);
    CHECK(scan_count(ns, NULL) == 2 && !shm_exists(seg), "stale slot reclaimed, its segment unlinked");
    devices[1]->next_host_check = 0;
    dl_device_process_commands(devices[1]);
    CHECK(!dl_device_registered(devices[1]) && strstr(dl_device_error(devices[1]), "lost its registry slot"), "the device notices: %s",
          dl_device_error(devices[1]));
    dl_device_destroy(devices[1]);

    /* a slot left BUSY by a writer that died inside the lock */
    {
        dl__registry reg;
        dl__registry_init(&reg, ns, 0);
        CHECK(dl__registry_lock(&reg, e, sizeof(e)) == DL_SUCCESS, "lock: %s", e);
        DL__STORE_REL(&dl__slot(&reg, 15)->state, (uint32_t)DL_SLOT_BUSY);
        dl__slot(&reg, 15)->device_pid = 1;
        dl__registry_unlock(&reg);
        scan_count(ns, NULL);
        CHECK(DL__LOAD_ACQ(&dl__slot(&reg, 15)->state) == DL_SLOT_FREE, "BUSY slot freed");
        dl__registry_free(&reg);
    }

    /* a device process that dies: first as a zombie (not yet reaped), which counts as dead */
    child = fork();
    if (child == 0) {
        dl_device *d = start_device("Child", 0, &r);
        (void)d;
        _exit(r == DL_SUCCESS ? 0 : 3); /* like kill -9: no stop, no deregistration */
    }
    for (i = 0; i < 200; i++) {
        char stat_path[64], buf[256];
        FILE *f;
        snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", (int)child);
        f = fopen(stat_path, "r");
        if (f && fgets(buf, sizeof(buf), f) && strstr(buf, ") Z ")) { fclose(f); break; }
        if (f) fclose(f);
        dl_sleep_ns(10000000);
    }
    dl__transport_name(seg, sizeof(seg), ns, 1, (uint32_t)child);
    CHECK(!dl_pid_alive((uint32_t)child), "a zombie is not alive");
    CHECK(shm_exists(seg), "the dead child's segment %s is still there before a scan", seg);
    CHECK(scan_count(ns, info) == 2, "the zombie's slot is reclaimed by the scan");
    CHECK(!shm_exists(seg), "and its segment unlinked");
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child registered");

    /* the st_nlink rule: a cleanup removed the registry under a device's open handle */
    CHECK(dl_device_set_id(devices[0], "Other") == DL_WRONG_STATE, "no new id while running");
    dl_device_stop(devices[0]);
    CHECK(dl_device_set_id(devices[0], "A:") == DL_INVALID_ARGS, "a bad id is refused at once");
    shm_unlink(regname);
    CHECK(dl_device_start(devices[0]) == DL_SUCCESS, "restart: %s", dl_device_error(devices[0]));
    CHECK(shm_exists(regname) && scan_count(ns, info) == 1 && strcmp(info[0].id, "Reg:0") == 0,
          "it registered in the registry under the name, where hosts look");
    dl_device_destroy(devices[0]);
    dl_device_destroy(devices[2]);

    /* a registry of another size is refused, naming both sizes; nothing is created or changed */
    {
        char other[48], other_name[128];
        int fd;
        snprintf(other, sizeof(other), "%sz", ns);
        dl__registry_name(other_name, sizeof(other_name), other);
        fd = shm_open(other_name, O_RDWR | O_CREAT, 0600);
        CHECK(fd >= 0 && ftruncate(fd, 100) == 0, "make a 100-byte object");
        close(fd);
        CHECK(dl_scan(other, info, DL_REGISTRY_SLOTS, &count, e, sizeof(e)) == DL_BAD_REGISTRY && strstr(e, "is 100 bytes, expected 4160"),
              "size refused: %s", e);
        shm_unlink(other_name);
    }
}

/* ==== endpoints in one process: a device loop on a thread, a host on the main thread ========= */

typedef struct device_loop {
    dl_device *device;
    pthread_t thread;
    int stop;
    float next_value;     /* the device writes a ramp: frame k holds k */
    int write_audio;
    uint8_t midi[64][4];  /* on_midi: the last messages seen */
    uint32_t midi_count;
    int claims;
} device_loop;

static void *device_loop_run(void *p)
{
    device_loop *l = (device_loop *)p;
    static float block[DL_BLOCK_SIZE_MAX];
    const float *planes[DL_MAX_CHANNELS];
    int i;
    for (i = 0; i < DL_MAX_CHANNELS; i++) planes[i] = block;
    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        uint32_t n, k, frames;
        dl_device_process_commands(l->device);
        n = l->write_audio ? dl_device_blocks_wanted(l->device) : 0;
        frames = dl_device_block_size(l->device);
        while (n--) {
            for (k = 0; k < frames; k++) block[k] = l->next_value + (float)k;
            if (dl_device_write_audio(l->device, planes, frames) != DL_SUCCESS) break;
            l->next_value += (float)frames;
        }
        dl_sleep_ns(100000);
    }
    return NULL;
}

static void loop_on_midi(dl_device *d, uint32_t offset, const uint8_t *data, uint32_t size, void *user)
{
    device_loop *l = (device_loop *)user;
    (void)d;
    (void)offset;
    if (l->midi_count < 64) {
        memset(l->midi[l->midi_count], 0, 4);
        memcpy(l->midi[l->midi_count], data, size > 4 ? 4 : size);
        l->midi_count++;
    }
}

static void loop_on_event(dl_device *d, const dl_device_event *e, void *user)
{
    (void)d;
    if (e->kind == DL_EVENT_CLAIMED) ((device_loop *)user)->claims++;
}

static dl_command_status loop_on_command(dl_device *d, const dl_command *c, void *user)
{
    (void)user;
    if (c->type == DL_CMD_GET_STATE) { /* a blob response of 300 000 bytes: more than the ring holds */
        static uint8_t blob[300000];
        uint32_t i;
        for (i = 0; i < sizeof(blob); i++) blob[i] = (uint8_t)(i * 7);
        dl_device_respond_blob(d, c, DL_CMD_GET_STATE, blob, sizeof(blob));
        return DL_COMMAND_HANDLED;
    }
    return DL_COMMAND_DEFAULT;
}

static void loop_start(device_loop *l, const char *id, uint32_t mode, uint32_t capabilities, int return_audio)
{
    dl_device_config c = dl_device_config_init();
    memset(l, 0, sizeof(*l));
    c.namespace_name = ns;
    c.id = id;
    c.mode = mode;
    c.capabilities = capabilities;
    c.return_audio = return_audio;
    c.sysex_limit = 1000;
    c.on_midi = loop_on_midi;
    c.on_event = loop_on_event;
    c.on_command = loop_on_command;
    c.user_data = l;
    if (dl_device_create(&c, &l->device) != DL_SUCCESS || dl_device_start(l->device) != DL_SUCCESS) {
        fprintf(stderr, "cannot start %s: %s\n", id, l->device ? dl_device_error(l->device) : "");
        abort();
    }
    l->write_audio = 1;
    pthread_create(&l->thread, NULL, device_loop_run, l);
}

static void loop_stop(device_loop *l)
{
    __atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
    pthread_join(l->thread, NULL);
    dl_device_destroy(l->device);
}

static dl_host *host_for(const char *tag, uint32_t rate, uint32_t block, uint32_t capabilities)
{
    dl_host_config c = dl_host_config_init();
    dl_host *h;
    c.namespace_name = ns;
    c.link_tag = tag;
    c.sample_rate = rate;
    c.block_size = block;
    c.capabilities = capabilities;
    c.prime_timeout_ms = 200;
    if (dl_host_create(&c, &h) != DL_SUCCESS) abort();
    return h;
}

/* dl_host_request builds its own messages; crafted ones go through this. */
static uint16_t crafted(dl_host *h, const dl_message *m, uint32_t *code, char *text, size_t text_size)
{
    dl_result r;
    h->reply_ready = 0;
    r = dl__host_request(h, 0, NULL, 0, NULL, 2000000000ull, m);
    if (!h->reply_ready) return 0;
    if (code) *code = h->reply.header.type == DL_CMD_ERROR ? dl_get_u32(h->reply_blob) : 0;
    if (text) snprintf(text, text_size, "%s", dl_host_error(h));
    (void)r;
    return h->reply.header.type;
}

static uint64_t bad_messages(dl_host *h)
{
    dl_counters c;
    dl_host_counters(h, &c);
    return c.bad_messages;
}

static void test_handshake(void)
{
    device_loop flex, fixed;
    dl_host *h;
    const dl_connection *conn;
    dl_message m;
    dl_handshake hs;
    uint32_t code;
    char text[256];
    dl_device_info info[DL_REGISTRY_SLOTS];
    loop_start(&flex, "Flex", DL_MODE_AUDIO_MIDI, DL_CAP_FLEXIBLE_FORMAT, 1);
    /* any block size in range, each value on its own */
    h = host_for("hs", 44100, 100, DL_CAP_AUDIO | DL_CAP_MIDI | DL_CAP_FRAGMENTS);
    CHECK(dl_host_connect(h, "Flex") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    conn = dl_host_connection(h);
    CHECK(conn->sample_rate == 44100 && conn->block_size == 100, "adopted: %u %u", conn->sample_rate, conn->block_size);
    CHECK(DL__LOAD_ACQ(&h->hdr->sample_rate) == 44100 && DL__LOAD_ACQ(&h->hdr->block_size) == 100, "header updated before the ack");
    scan_count(ns, info);
    CHECK(info[0].sample_rate == 44100 && info[0].block_size == 100 && info[0].claimed && strcmp(info[0].link_tag, "hs") == 0,
          "slot mirror: %u %u claimed %d tag '%s'", info[0].sample_rate, info[0].block_size, info[0].claimed, info[0].link_tag);
    CHECK(conn->capabilities == (DL_CAP_AUDIO | DL_CAP_MIDI | DL_CAP_FRAGMENTS), "negotiated = device & host: 0x%x", conn->capabilities);
    CHECK(conn->return_channels == 0 && !h->has_return, "no RETURN_AUDIO negotiated: no return ring for the host");
    CHECK(dl_host_write_return(h, NULL, 0, 16) == DL_NOT_CONNECTED, "and it must not write it");
    dl_host_destroy(h);
    /* out of range: ignored, never refused; rate and block independently */
    h = host_for("hs", 500000, 8, 0);
    CHECK(dl_host_connect(h, "Flex:0") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    conn = dl_host_connection(h);
    CHECK(conn->sample_rate == 44100 && conn->block_size == 100, "kept: %u %u", conn->sample_rate, conn->block_size);
    CHECK(conn->capabilities & DL_CAP_RETURN_AUDIO && conn->return_channels == 2, "host caps 0: the device's own, return ring too");
    dl_host_destroy(h);
    h = host_for("hs", 48000, 5000, DL_CAP_AUDIO | DL_CAP_RETURN_AUDIO);
    CHECK(dl_host_connect(h, "Flex:0") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    conn = dl_host_connection(h);
    CHECK(conn->sample_rate == 48000 && conn->block_size == 100 && conn->return_channels == 2, "rate taken, block kept: %u %u",
          conn->sample_rate, conn->block_size);
    /* version mismatch: the only Error a Handshake gets (besides MALFORMED) */
    memset(&hs, 0, sizeof(hs));
    hs.version_major = 2;
    dl_cmd_handshake(&m, &hs);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_VERSION_MISMATCH &&
          strstr(text, "host speaks 2.0, device Flex:0 speaks 1.1"), "version: %u %s", code, text);
    dl_cmd_handshake(&m, &hs);
    m.header.payload_len = 10;
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_MALFORMED, "short: %u %s", code, text);
    dl_host_destroy(h);
    /* a device without FLEXIBLE_FORMAT keeps its format */
    loop_start(&fixed, "Fixed", DL_MODE_AUDIO_MIDI, 0, 0);
    h = host_for("hs", 96000, 64, 0);
    CHECK(dl_host_connect(h, "Fixed") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    conn = dl_host_connection(h);
    CHECK(conn->sample_rate == 48000 && conn->block_size == 256, "fixed: %u %u", conn->sample_rate, conn->block_size);
    dl_host_destroy(h);
    loop_stop(&fixed);
    loop_stop(&flex);
}

static void test_device_rules(void)
{
    device_loop l;
    dl_host *h, *h2;
    dl_message m, frags[3];
    uint32_t code, i, len;
    char text[256];
    uint64_t bad;
    static uint8_t sysex[600];
    const uint8_t *blob;
    loop_start(&l, "Rules", DL_MODE_AUDIO_MIDI, DL_CAP_UMP, 0);
    h = host_for("rules", 0, 0, 0);
    CHECK(dl_host_connect(h, "Rules:0") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    bad = bad_messages(h);
    /* (2) payload_len over 224 */
    dl_cmd_ping(&m, 1);
    m.header.payload_len = 300;
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_MALFORMED && strstr(text, "exceeds 224"), "%s", text);
    /* (3) unknown type, counted */
    dl_message_init(&m, 0x7777);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_UNKNOWN_COMMAND, "unknown: %s", text);
    /* (5) fields MIDI can't carry; SysEx framing; SysEx over the device's limit */
    dl_cmd_note_on(&m, 0, 60, 100, 0);
    m.payload[0] = 16;
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_MALFORMED && strstr(text, "out of range"), "%s", text);
    dl_cmd_note_on(&m, 0, 60, 100, 0);
    m.header.payload_len = 2;
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_MALFORMED && strstr(text, "needs 3"), "%s", text);
    sysex[0] = 0xF0;
    for (i = 1; i < 599; i++) sysex[i] = 1;
    sysex[599] = 0xF7;
    CHECK(dl_host_send_sysex(h, sysex, 600, 0) == DL_SUCCESS, "3-fragment SysEx sent");
    dl_cmd_ping(&m, 1);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_PONG, "then a Pong (FIFO: the SysEx was taken)");
    CHECK(l.midi_count == 1 && l.midi[0][0] == 0xF0, "reassembled SysEx delivered whole");
    CHECK(bad_messages(h) == bad + 4, "4 bad messages counted: %llu", (unsigned long long)(bad_messages(h) - bad));
    /* the fragment rules, answered with FRAGMENT_ERROR naming the offending fragment */
    frag(&m, DL_CMD_PING, DL_FLAG_FRAGMENT, 0, 2, 5, 224);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_FRAGMENT_ERROR, "Ping as a fragment: %s", text);
    for (i = 0; i < 3; i++) dl_cmd_fragment(&frags[i], DL_CMD_SYSEX, sysex, 600, i, 77, 0);
    frags[1].header.payload_len = 100; /* a short non-last fragment */
    dl_host_send(h, &frags[0]);
    CHECK(crafted(h, &frags[1], &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_FRAGMENT_ERROR &&
          strstr(text, "every fragment but the last"), "short fragment: %s", text);
    CHECK(crafted(h, &frags[2], &code, text, sizeof(text)) == DL_CMD_ERROR && strstr(text, "missing fragment 0"), "rest discarded: %s", text);
    /* SetTransportMode: a segment with audio rings cannot go midi; unknown modes refused */
    dl_cmd_set_transport_mode(&m, DL_MODE_MIDI);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_INVALID_ARGUMENT, "to midi: %s", text);
    dl_cmd_set_transport_mode(&m, 9);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_INVALID_ARGUMENT, "mode 9: %s", text);
    CHECK(dl_device_mode(l.device) == DL_MODE_AUDIO_MIDI, "mode unchanged");
    dl_cmd_set_transport_mode(&m, DL_MODE_AUDIO);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_SET_TRANSPORT_MODE && dl_get_u32(h->reply_blob) == DL_MODE_AUDIO, "to audio");
    /* (4) before (5): a MIDI command in audio mode is WRONG_MODE even with a bad payload; not counted */
    bad = bad_messages(h);
    dl_cmd_note_on(&m, 0, 60, 100, 0);
    m.header.payload_len = 1;
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_WRONG_MODE, "wrong mode: %u %s", code, text);
    CHECK(bad_messages(h) == bad, "WRONG_MODE is not a bad message");
    dl_cmd_set_transport_mode(&m, DL_MODE_AUDIO_MIDI);
    crafted(h, &m, NULL, NULL, 0);
    /* NOT_SUPPORTED for what the device does not serve */
    dl_cmd_get_parameter(&m, 0, NULL);
    CHECK(crafted(h, &m, &code, text, sizeof(text)) == DL_CMD_ERROR && code == DL_ERRCODE_NOT_SUPPORTED, "%s", text);
    /* a fragmented response bigger than the response ring goes out through the outbox */
    CHECK(dl_host_request(h, DL_CMD_GET_STATE, NULL, 0, NULL, 5000) == DL_SUCCESS, "GetState: %s", dl_host_error(h));
    blob = dl_host_reply_payload(h, &len);
    CHECK(len == 300000 && blob[299999] == (uint8_t)(299999 * 7) && blob[1234] == (uint8_t)(1234 * 7), "blob of %u bytes", len);
    /* reset on a new claim: the open transfer of the previous host is gone */
    dl_host_send(h, &frags[0]);
    dl_cmd_ping(&m, 1);
    crafted(h, &m, NULL, NULL, 0);
    h2 = host_for("rules2", 0, 0, 0);
    /* the same pid: the claim succeeds at once, and the claim generation still moves */
    CHECK(dl_host_connect(h2, "Rules:0") == DL_SUCCESS, "second host: %s", dl_host_error(h2));
    CHECK(l.claims == 2, "the device saw two claims: %d", l.claims);
    CHECK(crafted(h2, &frags[1], &code, text, sizeof(text)) == DL_CMD_ERROR && strstr(text, "missing fragment 0"), "transfer reset: %s", text);
    dl_host_destroy(h2);
    dl_host_destroy(h);
    loop_stop(&l);
}

static void test_audio_link(void)
{
    device_loop l;
    dl_host *h;
    float a[2][1000], b[2][1000];
    float *planes[2] = {a[0], a[1]};
    static const uint32_t reads[] = {100, 37, 256, 1000, 1, 255};
    float expect = -1.0f;
    uint32_t i, k, got, total = 0, gaps = 0;
    uint64_t deadline;
    loop_start(&l, "Ramp", DL_MODE_AUDIO_MIDI, 0, 0);
    h = host_for("ramp", 0, 0, 0);
    CHECK(dl_host_connect(h, "Ramp") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    CHECK(dl_host_latency_frames(h) == 2 * 256, "latency = fill x block: %u", dl_host_latency_frames(h));
    /* any frame count per read: what arrives is continuous */
    deadline = dl_now_ns() + 2000000000ull;
    while (total < 20000 && dl_now_ns() < deadline) {
        uint32_t n = reads[total % 6];
        got = dl_host_read_audio(h, planes, 2, n);
        for (k = 0; k < got; k++) {
            if (expect >= 0 && a[0][k] != expect) gaps++;
            expect = a[0][k] + 1.0f;
        }
        for (k = got; k < n; k++) CHECK(a[0][k] == 0.0f && a[1][k] == 0.0f, "zero-filled");
        total += got;
        dl_sleep_ns(got ? 100000 : 1000000);
    }
    CHECK(total >= 20000 && gaps == 0, "%u frames, %u gaps", total, gaps);
    /* the device stops: the host sees it at its next read and zero-fills from then on */
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
    pthread_join(l.thread, NULL);
    dl_device_stop(l.device);
    for (i = 0; i < 2; i++) a[0][i] = b[0][i] = 5.0f;
    dl_sleep_ns(60000000);
    got = dl_host_read_audio(h, planes, 2, 64);
    CHECK(got == 0 && a[0][0] == 0.0f && !dl_host_connected(h) && dl_host_link_state(h) == DL_LINK_DEVICE_STOPPED,
          "stopped: got %u, reason '%s'", got, dl_host_disconnect_reason(h));
    dl_host_destroy(h);
    dl_device_destroy(l.device);
}

/* The return ring (effect insert), overrun counting, and a block rendered before a new claim. */
static void test_return_overruns_and_stale_blocks(void)
{
    device_loop l;
    dl_host_config hc = dl_host_config_init();
    dl_host *h;
    static float src[2][256], dst[2][256];
    const float *in[2] = {src[0], src[1]};
    float *out[2] = {dst[0], dst[1]};
    dl_counters c;
    uint32_t i, writes = 0;
    dl_result r = DL_SUCCESS;
    loop_start(&l, "Ret", DL_MODE_AUDIO_MIDI, 0, 1);
    l.write_audio = 0;
    hc.namespace_name = ns;
    hc.return_audio = 1;
    hc.prime_timeout_ms = 0;
    dl_host_create(&hc, &h);
    CHECK(dl_host_connect(h, "Ret") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    CHECK(dl_host_connection(h)->return_channels == 2, "return ring negotiated");
    __atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE); /* from here this thread drives the device */
    pthread_join(l.thread, NULL);
    for (i = 0; i < 256; i++) src[0][i] = (float)i, src[1][i] = -(float)i;
    CHECK(dl_host_write_return(h, in, 2, 100) == DL_SUCCESS, "return written");
    dl_device_process_commands(l.device);
    CHECK(dl_device_read_return(l.device, out, 2, 100) == 100 && dst[0][99] == 99.0f && dst[1][5] == -5.0f, "return read back");
    CHECK(dl_device_read_return(l.device, out, 2, 10) == 0 && dst[0][0] == 0.0f, "then zero-filled");
    dl_host_counters(h, &c);
    CHECK(c.return_underruns == 1, "a short return read counted: %llu", (unsigned long long)c.return_underruns);
    /* the host reads nothing: the ring fills, and the overrun is counted (its host is alive) */
    while (writes < 100 && (r = dl_device_write_audio(l.device, in, 256)) == DL_SUCCESS) writes++;
    dl_host_counters(h, &c);
    CHECK(r == DL_RING_FULL && writes == DL_AUDIO_RING_FRAMES / 256 && c.overruns == 1, "full after %u blocks, overruns %llu",
          writes, (unsigned long long)c.overruns);
    CHECK(dl_host_read_audio(h, out, 2, 256) == 256 && dl_device_write_audio(l.device, in, 256) == DL_SUCCESS, "room again");
    /* a new claim the device has not seen yet: a block rendered before it is not written */
    dl_host_read_audio(h, out, 2, 256);
    DL__STORE_REL(&h->hdr->claim_generation, DL__LOAD_ACQ(&h->hdr->claim_generation) + 1);
    CHECK(dl_device_write_audio(l.device, in, 256) == DL_STALE_BLOCK, "stale block refused");
    dl_device_process_commands(l.device); /* takes the claim in (and resets) */
    CHECK(l.claims == 2 && dl_device_write_audio(l.device, in, 256) == DL_SUCCESS, "written after the reset");
    dl_host_destroy(h);
    dl_device_destroy(l.device);
}

/* Any 256 bytes in the command ring: the device answers or drops, never crashes (section 7.3).
   Under ASan + UBSan this is the strong version of the test. */
static void test_fuzz(void)
{
    device_loop l;
    dl_host *h;
    dl_message m;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    uint32_t i, k, sent = 0, code;
    static const uint16_t types[] = {0x0001, 0x0003, 0x0006, 0x0007, 0x0008, 0x0100, 0x0101, 0x0102, 0x0103, 0x0104,
                                     0x0105, 0x0106, 0x0107, 0x0108, 0x0200, 0x0204, 0x0206, 0x7777};
    char text[256];
    loop_start(&l, "Fuzz", DL_MODE_AUDIO_MIDI, DL_CAP_UMP | DL_CAP_FLEXIBLE_FORMAT, 1);
    h = host_for("fuzz", 0, 0, 0);
    CHECK(dl_host_connect(h, "Fuzz") == DL_SUCCESS, "connect: %s", dl_host_error(h));
    for (i = 0; i < 20000; i++) {
        uint8_t *bytes = (uint8_t *)&m;
        for (k = 0; k < sizeof(m); k++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            bytes[k] = (uint8_t)x;
        }
        if (i % 4 != 3) { /* mostly plausible headers, so that deeper paths are reached */
            m.header.type = types[x % (sizeof(types) / sizeof(types[0]))];
            m.header.payload_len %= 260;
            m.header.frag_count %= 5;
            m.header.frag_index %= 5;
            m.header.transfer_id %= 4;
            m.header.flags &= 3;
            m.header.sample_offset %= 512;
        }
        if (m.header.type == DL_CMD_DISCONNECT || m.header.type == DL_CMD_HANDSHAKE) m.header.type = DL_CMD_PING;
        while (dl_host_command_space(h) == 0) {
            dl_host_process_responses(h);
            dl_sleep_ns(100000);
        }
        if (dl_host_send(h, &m) == DL_SUCCESS) sent++;
        if (i % 64 == 0) dl_host_process_responses(h);
    }
    while (dl_host_command_space(h) < DL_MESSAGE_RING_SLOTS) { /* let it take the backlog first: its */
        dl_host_process_responses(h);                         /* Errors could fill the response ring */
        dl_sleep_ns(100000);
    }
    dl_host_process_responses(h);
    dl_cmd_ping(&m, 1);
    {
        uint16_t got = crafted(h, &m, &code, text, sizeof(text));
        dl_counters cn;
        dl_host_counters(h, &cn);
        CHECK(got == DL_CMD_PONG, "alive after %u random messages: got 0x%x code %u '%s' connected %d reason '%s' rdrop %llu",
              sent, got, code, text, dl_host_connected(h), dl_host_disconnect_reason(h), (unsigned long long)cn.responses_dropped);
    }
    CHECK(bad_messages(h) > 1000, "bad messages counted: %llu", (unsigned long long)bad_messages(h));
    dl_host_destroy(h);
    loop_stop(&l);
}

/* ==== MIDI intake ============================================================================ */

static void test_midi_intake(void)
{
    device_loop l;
    dl_device_config c = dl_device_config_init();
    uint8_t raw1[] = {0x90, 60, 100}, raw2[] = {62, 100, 0x80, 0xF8, 60, 0}, damaged[] = {60, 0x90, 0xB0, 7, 100, 0x90, 61};
    uint8_t ump[64];
    uint32_t words[8], n, i;
    memset(&l, 0, sizeof(l));
    c.on_midi = loop_on_midi;
    c.user_data = &l;
    c.sysex_limit = 100;
    if (dl_device_create(&c, &l.device) != DL_SUCCESS) abort();
    dl__midi_reset(&l.device->midi);
    /* running status carries over from one MidiRaw to the next; real time inside a message */
    dl__midi_raw(l.device, raw1, 3, 0);
    dl__midi_raw(l.device, raw2, sizeof(raw2), 0);
    CHECK(l.midi_count == 4 && l.midi[1][0] == 0x90 && l.midi[1][1] == 62 && l.midi[2][0] == 0xF8 && l.midi[3][0] == 0x80 &&
          l.midi[3][1] == 60, "running status, real-time inside: %u", l.midi_count);
    l.midi_count = 0;
    dl__midi_raw(l.device, damaged, sizeof(damaged), 0);
    CHECK(l.midi_count == 1 && l.midi[0][0] == 0xB0 && l.midi[0][2] == 100 && l.device->stats.midi_damaged >= 3,
          "damage dropped, the good kept: %u, damaged %llu", l.midi_count, (unsigned long long)l.device->stats.midi_damaged);
    /* UMP: MIDI 2.0 note on, velocity 16 -> 7 bits, a velocity that shifts to 0 is sent as 1 */
    l.midi_count = 0;
    n = dl_ump_note_on(words, 0, 2, 60, 0xFFFF);
    n += dl_ump_note_on(words + n, 0, 2, 61, 0x0100);
    n += dl_ump_pitch_bend(words + n, 0, 2, 0x80000000u);
    words[n++] = dl_ump_midi1(0, 0xB3, 7, 99);
    for (i = 0; i < n; i++) dl_put_u32(ump + 4 * i, words[i]);
    dl__ump(l.device, ump, 4 * n, 0);
    CHECK(l.midi_count == 4 && l.midi[0][0] == 0x92 && l.midi[0][2] == 127 && l.midi[1][2] == 1 && l.midi[2][0] == 0xE2 &&
          l.midi[2][1] == 0 && l.midi[2][2] == 64 && l.midi[3][0] == 0xB3 && l.midi[3][2] == 99, "UMP: %u", l.midi_count);
    /* SysEx7 start / end, reassembled into F0 .. F7 */
    l.midi_count = 0;
    words[0] = 0x30160102u; words[1] = 0x03040506u; /* start, 6 bytes */
    words[2] = 0x30320708u; words[3] = 0;           /* end, 2 bytes */
    for (i = 0; i < 4; i++) dl_put_u32(ump + 4 * i, words[i]);
    dl__ump(l.device, ump, 16, 0);
    CHECK(l.midi_count == 1 && l.midi[0][0] == 0xF0 && l.midi[0][1] == 1, "SysEx7 joined");
    /* per-note pitch bend: dropped until MPE is on (an MCM: RPN 6 on channel 1), then channel bend */
    l.midi_count = 0;
    words[0] = 0x40623C00u; words[1] = 0x80000000u;
    for (i = 0; i < 2; i++) dl_put_u32(ump + 4 * i, words[i]);
    dl__ump(l.device, ump, 8, 0);
    CHECK(l.midi_count == 0 && l.device->stats.midi_untranslatable == 1, "dropped without MPE");
    {
        uint8_t mcm[] = {0xB0, 101, 0, 100, 6, 6, 15};
        dl__midi_raw(l.device, mcm, sizeof(mcm), 0);
    }
    l.midi_count = 0;
    dl__ump(l.device, ump, 8, 0);
    CHECK(l.midi_count == 1 && l.midi[0][0] == 0xE2 && l.midi[0][2] == 64, "with MPE: bend on the packet's channel");
    dl_device_destroy(l.device);
}

int main(void)
{
    const char *env = getenv("DISCOLINK_TEST_NAMESPACE");
    snprintf(ns, sizeof(ns), "%s", env && env[0] ? env : "");
    if (!ns[0]) snprintf(ns, sizeof(ns), "ctest%d", (int)getpid());
    cleanup_namespace(ns);
    test_audio_ring();
    test_message_ring();
    test_builders();
    test_reassembler();
    test_ids();
    test_registry();
    cleanup_namespace(ns);
    test_handshake();
    cleanup_namespace(ns);
    test_device_rules();
    test_audio_link();
    test_return_overruns_and_stale_blocks();
    test_fuzz();
    test_midi_intake();
    cleanup_namespace(ns);
    {
        char z[48];
        snprintf(z, sizeof(z), "%sz", ns);
        cleanup_namespace(z);
    }
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
