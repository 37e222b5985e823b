/* discolink.h - discoLink 1.1 in one C header: registry, devices, hosts, messages, MIDI.

   discoLink carries real-time audio and 256-byte command messages between processes through
   POSIX shared memory: a DEVICE writes audio into lock-free rings and answers commands; a
   HOST finds it in a registry, claims it, negotiates the format, sends MIDI and reads the
   audio. The wire format is docs/protocol.md (normative) of discolink-bridge; this header
   is an independent implementation of it for C (C11) and C++ (C++17), on Linux.

   USE: in exactly ONE C or C++ file of your program,

       #define DISCOLINK_IMPLEMENTATION
       #include "discolink.h"

   and include it plainly everywhere else. In that one file, include discolink.h before any
   other header when you compile strict C (-std=c11): it asks for POSIX and BSD declarations
   (shm_open, flock, kill) with _DEFAULT_SOURCE. C++ compilers declare them anyway. Link
   nothing extra on glibc 2.34 and later (older: -lrt -lpthread).

   A DEVICE that plays a 440 Hz sine to whoever claims it:

       dl_device_config config = dl_device_config_init();
       config.id = "Sine";                       // registers as Sine:0 (or Sine:1, ...)
       dl_device *device;
       dl_device_create(&config, &device);
       if (dl_device_start(device) != DL_SUCCESS) { puts(dl_device_error(device)); return 1; }
       float left[256], right[256]; const float *out[2] = {left, right}; double phase = 0;
       while (running) {
           dl_device_process_commands(device);   // handshake, ping, MIDI (config.on_midi), ...
           for (uint32_t n = dl_device_blocks_wanted(device); n > 0; n--) {  // demand clock
               for (int i = 0; i < 256; i++) left[i] = right[i] = 0.2f * (float)sin(phase += 2 * M_PI * 440 / 48000);
               dl_device_write_audio(device, out, 256);
           }
           dl_sleep_ns(1000000);
       }
       dl_device_destroy(device);                // deregisters, removes its shared memory

   A HOST that claims it, plays a note and reads one second of audio:

       dl_host_config config = dl_host_config_init();
       config.link_tag = "MyDAW:track1";         // saved with the session, for recall
       dl_host *host;
       dl_host_create(&config, &host);
       if (dl_host_connect(host, "Sine:0") != DL_SUCCESS) { puts(dl_host_error(host)); return 1; }
       dl_message note;
       dl_cmd_note_on(&note, 0, 69, 100, 0);     // channel 0, A4, velocity 100, sample offset 0
       dl_host_send(host, &note);
       float left[256], right[256]; float *in[2] = {left, right};
       for (int block = 0; block < 188; block++) {
           dl_host_read_audio(host, in, 2, 256);  // any frame count; zero-fills what is missing
           dl_sleep_ns(5333333);                  // a DAW's callback would be the clock
       }
       dl_host_destroy(host);                    // sends Disconnect, releases the claim

   RULES
   - Functions return dl_result (DL_SUCCESS is 0); dl_result_name() names a code and
     dl_device_error()/dl_host_error() say what went wrong in one line that names the fault.
   - REAL-TIME functions never allocate, lock, block or print: dl_device_process_commands,
     dl_device_write_audio, dl_device_read_return, dl_device_blocks_wanted, dl_device_respond*,
     dl_host_read_audio, dl_host_write_return, dl_host_send*, dl_host_process_responses,
     dl_host_connected, the ring and message functions and the dl_cmd_* builders. They may
     make one non-blocking kill(pid, 0) now and then (liveness, as protocol.md section 9 says).
     Callbacks (on_command, on_midi, on_event, on_response) run inside them: keep them
     real-time safe too.
   - Everything else (create, start, stop, connect, recall, disconnect, scan, request, ping,
     destroy) may allocate, take the registry lock and wait: call it from a non-audio thread.
     A dl_host or dl_device may be connected, reconnected, started or stopped on such a
     thread WHILE the audio thread keeps calling its real-time functions: the SDK hands the
     endpoint over between the two (the real-time side zero-fills or does nothing meanwhile).
     Otherwise an endpoint is used by one thread at a time; in particular dl_host_request
     reads the response ring itself, so don't run it while another thread calls
     dl_host_process_responses.
   - The generated block below (constants, enums, shared-memory structs with their offsets,
     the command table) is written by `python -m bridge.transport.docgen` from the Python
     package's layout.py and commands.py: edit those, never the block.

   docs/native.md has the full tour; native/tools/ has complete programs (cli_device,
   cli_host, cli_master). MIT licence, like discolink-bridge. */

#ifndef DISCOLINK_H
#define DISCOLINK_H

#if defined(DISCOLINK_IMPLEMENTATION) && !defined(__cplusplus)
#  ifndef _DEFAULT_SOURCE
#    define _DEFAULT_SOURCE 1 /* shm_open, flock, kill, nanosleep with -std=c11 */
#  endif
#endif

#include <stddef.h>
#include <stdint.h>

#if defined(__cplusplus)
#  define DL_STATIC_ASSERT(cond, text) static_assert(cond, text)
#else
#  define DL_STATIC_ASSERT(cond, text) _Static_assert(cond, text)
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#  error "discolink.h: discoLink shared memory is little-endian; this target is not"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* How the last field of a payload layout runs (used by the command table below). */
enum { DL_TAIL_NONE = 0, DL_TAIL_BYTES = 1, DL_TAIL_UTF8 = 2 };

/* BEGIN GENERATED: protocol (python -m bridge.transport.docgen rewrites this block) */
/* Constants (layout.CONSTANTS) */
#define DL_PROTOCOL_MAJOR 1 /* protocol major version; peers with another major refuse each other */
#define DL_PROTOCOL_MINOR 1 /* protocol minor version; informational */
#define DL_REGISTRY_SLOTS 16 /* slots in a registry */
#define DL_MESSAGE_SIZE 256 /* bytes per message */
#define DL_MESSAGE_HEADER_SIZE 32 /* bytes of message header */
#define DL_MESSAGE_PAYLOAD_SIZE 224 /* payload bytes per message */
#define DL_MESSAGE_RING_SLOTS 1024 /* messages per command or response ring */
#define DL_AUDIO_RING_FRAMES 16384 /* frames per channel in an audio ring */
#define DL_MAX_CHANNELS 12 /* most channels in an audio ring */
#define DL_ID_MAX_BYTES 63 /* most UTF-8 bytes in a device id (plus a NUL) */
#define DL_ID_NAME_MAX_BYTES 57 /* most UTF-8 bytes in the Name of an id, so that Name:65535 fits */
#define DL_ID_INSTANCE_MAX 65535 /* largest instance N of an id Name:N */
#define DL_LINK_TAG_MAX_BYTES 63 /* most UTF-8 bytes in a link tag (plus a NUL) */
#define DL_NAMESPACE_MAX_CHARS 32 /* most characters in a namespace */
#define DL_RING_CONTROL_SIZE 128 /* bytes of ring control block before a ring's data */
#define DL_SEGMENT_ALIGN 64 /* alignment of every ring within a transport segment */
#define DL_REGISTRY_SIZE 4160 /* bytes of the registry segment */
#define DL_SAMPLE_RATE_MIN 8000 /* lowest valid sample rate, Hz */
#define DL_SAMPLE_RATE_MAX 384000 /* highest valid sample rate, Hz */
#define DL_BLOCK_SIZE_MIN 16 /* smallest valid block size, frames (any integer in range is valid) */
#define DL_BLOCK_SIZE_MAX 4096 /* largest valid block size, frames (a quarter of an audio ring) */
#define DL_FILL_MIN 1 /* demand clock: fewest blocks a device keeps queued */
#define DL_FILL_MAX 4 /* demand clock: most blocks a device keeps queued */
#define DL_FILL_DEFAULT 2 /* demand clock: blocks queued unless configured otherwise */
#define DL_FRAGMENT_LIMIT_BYTES 67108864 /* largest reassembled transfer on the wire (a receiver may set less) */
#define DL_OPEN_TRANSFERS_MAX 16 /* open transfers a receiver keeps per sender before discarding */
#define DL_HANDSHAKE_TIMEOUT_S 2.0 /* seconds: a host gives up on a Handshake unanswered this long */
#define DL_HANDSHAKE_TIMEOUT_NS 2000000000ull /* the same, in nanoseconds */
#define DL_HEARTBEAT_INTERVAL_S 0.05 /* seconds: a running device refreshes its heartbeat at least this often */
#define DL_HEARTBEAT_INTERVAL_NS 50000000ull /* the same, in nanoseconds */
#define DL_HEARTBEAT_STALE_S 3.0 /* seconds: a registry scan reclaims a slot whose heartbeat is older */
#define DL_HEARTBEAT_STALE_NS 3000000000ull /* the same, in nanoseconds */
#define DL_LINK_STALE_S 1.0 /* seconds: a connected host gives up on a live but silent device */
#define DL_LINK_STALE_NS 1000000000ull /* the same, in nanoseconds */
#define DL_LINK_CHECK_INTERVAL_S 0.05 /* seconds: how often a connected host re-checks liveness */
#define DL_LINK_CHECK_INTERVAL_NS 50000000ull /* the same, in nanoseconds */
#define DL_REGISTRY_MAGIC 0x47524C44u /* the bytes "DLRG" */
#define DL_SEGMENT_MAGIC 0x4B4E4C44u /* the bytes "DLNK" */

/* Enums (layout, commands.ErrorCode) */
typedef enum dl_slot_state {
    DL_SLOT_FREE = 0,
    DL_SLOT_BUSY = 1,
    DL_SLOT_ACTIVE = 2,
} dl_slot_state;
typedef enum dl_device_state {
    DL_DEVICE_STARTING = 0,
    DL_DEVICE_RUNNING = 1,
    DL_DEVICE_STOPPED = 2,
} dl_device_state;
typedef enum dl_mode {
    DL_MODE_AUDIO_MIDI = 0,
    DL_MODE_AUDIO = 1,
    DL_MODE_MIDI = 2,
} dl_mode;
typedef enum dl_capability {
    DL_CAP_AUDIO = 0x1,
    DL_CAP_MIDI = 0x2,
    DL_CAP_RETURN_AUDIO = 0x4,
    DL_CAP_FRAGMENTS = 0x8,
    DL_CAP_PARAMETERS = 0x10,
    DL_CAP_STATE = 0x20,
    DL_CAP_ROUTING = 0x40,
    DL_CAP_UMP = 0x80,
    DL_CAP_FLEXIBLE_FORMAT = 0x100,
    DL_CAP_FILE_TRANSFER = 0x200,
} dl_capability;
typedef enum dl_message_flag {
    DL_FLAG_RESPONSE = 0x1,
    DL_FLAG_FRAGMENT = 0x2,
} dl_message_flag;
typedef enum dl_error_code {
    DL_ERRCODE_UNKNOWN_COMMAND = 1,
    DL_ERRCODE_MALFORMED = 2,
    DL_ERRCODE_VERSION_MISMATCH = 3,
    DL_ERRCODE_NOT_SUPPORTED = 4,
    DL_ERRCODE_FRAGMENT_ERROR = 5,
    DL_ERRCODE_WRONG_MODE = 6,
    DL_ERRCODE_INVALID_ARGUMENT = 7,
    DL_ERRCODE_INTERNAL = 8,
} dl_error_code;
#define DL_MODE_LABELS {"audio+midi", "audio", "midi"} /* indexed by dl_mode */

/* Shared-memory structures (layout.STRUCTS): every offset is checked at compile time. */
typedef struct dl_registry_header {
    uint32_t magic;              /* @0 (creator): 0x47524C44, the bytes "DLRG" */
    uint16_t version_major;      /* @4 (creator): protocol major version */
    uint16_t version_minor;      /* @6 (creator): protocol minor version */
    uint32_t header_size;        /* @8 (creator): size of this header in bytes (64) */
    uint32_t slot_size;          /* @12 (creator): size of one slot in bytes (256) */
    uint32_t slot_count;         /* @16 (creator): number of slots (16) */
    char reserved[44];           /* @20: zero */
} dl_registry_header;
#define DL_REGISTRY_HEADER_BYTES 64
#define DL_REGISTRY_HEADER_MAGIC_OFFSET 0
#define DL_REGISTRY_HEADER_VERSION_MAJOR_OFFSET 4
#define DL_REGISTRY_HEADER_VERSION_MINOR_OFFSET 6
#define DL_REGISTRY_HEADER_HEADER_SIZE_OFFSET 8
#define DL_REGISTRY_HEADER_SLOT_SIZE_OFFSET 12
#define DL_REGISTRY_HEADER_SLOT_COUNT_OFFSET 16
#define DL_REGISTRY_HEADER_RESERVED_OFFSET 20
DL_STATIC_ASSERT(sizeof(dl_registry_header) == DL_REGISTRY_HEADER_BYTES, "dl_registry_header size");
DL_STATIC_ASSERT(offsetof(dl_registry_header, magic) == DL_REGISTRY_HEADER_MAGIC_OFFSET, "dl_registry_header.magic offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, version_major) == DL_REGISTRY_HEADER_VERSION_MAJOR_OFFSET, "dl_registry_header.version_major offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, version_minor) == DL_REGISTRY_HEADER_VERSION_MINOR_OFFSET, "dl_registry_header.version_minor offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, header_size) == DL_REGISTRY_HEADER_HEADER_SIZE_OFFSET, "dl_registry_header.header_size offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, slot_size) == DL_REGISTRY_HEADER_SLOT_SIZE_OFFSET, "dl_registry_header.slot_size offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, slot_count) == DL_REGISTRY_HEADER_SLOT_COUNT_OFFSET, "dl_registry_header.slot_count offset");
DL_STATIC_ASSERT(offsetof(dl_registry_header, reserved) == DL_REGISTRY_HEADER_RESERVED_OFFSET, "dl_registry_header.reserved offset");

typedef struct dl_registry_slot {
    uint32_t state;              /* @0 (locker; release store after the other fields; acquire load): SlotState: 0 free, 1 busy (being written), 2 active */
    uint32_t device_pid;         /* @4 (locker): pid of the device process */
    uint64_t heartbeat_ns;       /* @8 (device; release store; acquire load): CLOCK_MONOTONIC of the device's last sign of life, in ns */
    uint32_t channels;           /* @16 (locker): output channels (1..12; 0 in midi mode) */
    uint32_t sample_rate;        /* @20 (locker; then the device; relaxed store by the device (§3.2); relaxed load): sample rate in Hz (advisory mirror of the header's) */
    uint32_t block_size;         /* @24 (locker; then the device; relaxed store by the device (§3.2); relaxed load): block size in frames (advisory mirror of the header's) */
    uint32_t mode;               /* @28 (locker; then the device; relaxed store by the device (§3.2); relaxed load): Mode: 0 audio+midi, 1 audio, 2 midi (advisory mirror) */
    uint32_t capabilities;       /* @32 (locker): Capability flags */
    uint32_t instance;           /* @36 (locker): N of the id "Name:N" */
    uint32_t host_pid;           /* @40 (locker): claiming host's pid, 0 when unclaimed (mirror of the header's) */
    uint32_t generation;         /* @44 (locker): incremented on every registration in this slot */
    char device_id[64];          /* @48 (locker): device id "Name:N", UTF-8, NUL-terminated */
    char link_tag[64];           /* @112 (locker): last claiming host's link tag, UTF-8, NUL-terminated */
    uint64_t xruns;              /* @176 (device; relaxed): xruns of the device's audio clock (a JACK device's), 0 if none */
    uint64_t nonfinite_blocks;   /* @184 (device; relaxed): output blocks the device replaced by silence because they held NaN or infinity (a plugin's), 0 if none (since 1.1) */
    char reserved[64];           /* @192: zero */
} dl_registry_slot;
#define DL_REGISTRY_SLOT_BYTES 256
#define DL_REGISTRY_SLOT_STATE_OFFSET 0
#define DL_REGISTRY_SLOT_DEVICE_PID_OFFSET 4
#define DL_REGISTRY_SLOT_HEARTBEAT_NS_OFFSET 8
#define DL_REGISTRY_SLOT_CHANNELS_OFFSET 16
#define DL_REGISTRY_SLOT_SAMPLE_RATE_OFFSET 20
#define DL_REGISTRY_SLOT_BLOCK_SIZE_OFFSET 24
#define DL_REGISTRY_SLOT_MODE_OFFSET 28
#define DL_REGISTRY_SLOT_CAPABILITIES_OFFSET 32
#define DL_REGISTRY_SLOT_INSTANCE_OFFSET 36
#define DL_REGISTRY_SLOT_HOST_PID_OFFSET 40
#define DL_REGISTRY_SLOT_GENERATION_OFFSET 44
#define DL_REGISTRY_SLOT_DEVICE_ID_OFFSET 48
#define DL_REGISTRY_SLOT_LINK_TAG_OFFSET 112
#define DL_REGISTRY_SLOT_XRUNS_OFFSET 176
#define DL_REGISTRY_SLOT_NONFINITE_BLOCKS_OFFSET 184
#define DL_REGISTRY_SLOT_RESERVED_OFFSET 192
DL_STATIC_ASSERT(sizeof(dl_registry_slot) == DL_REGISTRY_SLOT_BYTES, "dl_registry_slot size");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, state) == DL_REGISTRY_SLOT_STATE_OFFSET, "dl_registry_slot.state offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, device_pid) == DL_REGISTRY_SLOT_DEVICE_PID_OFFSET, "dl_registry_slot.device_pid offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, heartbeat_ns) == DL_REGISTRY_SLOT_HEARTBEAT_NS_OFFSET, "dl_registry_slot.heartbeat_ns offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, channels) == DL_REGISTRY_SLOT_CHANNELS_OFFSET, "dl_registry_slot.channels offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, sample_rate) == DL_REGISTRY_SLOT_SAMPLE_RATE_OFFSET, "dl_registry_slot.sample_rate offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, block_size) == DL_REGISTRY_SLOT_BLOCK_SIZE_OFFSET, "dl_registry_slot.block_size offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, mode) == DL_REGISTRY_SLOT_MODE_OFFSET, "dl_registry_slot.mode offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, capabilities) == DL_REGISTRY_SLOT_CAPABILITIES_OFFSET, "dl_registry_slot.capabilities offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, instance) == DL_REGISTRY_SLOT_INSTANCE_OFFSET, "dl_registry_slot.instance offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, host_pid) == DL_REGISTRY_SLOT_HOST_PID_OFFSET, "dl_registry_slot.host_pid offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, generation) == DL_REGISTRY_SLOT_GENERATION_OFFSET, "dl_registry_slot.generation offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, device_id) == DL_REGISTRY_SLOT_DEVICE_ID_OFFSET, "dl_registry_slot.device_id offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, link_tag) == DL_REGISTRY_SLOT_LINK_TAG_OFFSET, "dl_registry_slot.link_tag offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, xruns) == DL_REGISTRY_SLOT_XRUNS_OFFSET, "dl_registry_slot.xruns offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, nonfinite_blocks) == DL_REGISTRY_SLOT_NONFINITE_BLOCKS_OFFSET, "dl_registry_slot.nonfinite_blocks offset");
DL_STATIC_ASSERT(offsetof(dl_registry_slot, reserved) == DL_REGISTRY_SLOT_RESERVED_OFFSET, "dl_registry_slot.reserved offset");

typedef struct dl_transport_header {
    uint32_t magic;              /* @0 (device): 0x4B4E4C44, the bytes "DLNK" */
    uint16_t version_major;      /* @4 (device): protocol major version */
    uint16_t version_minor;      /* @6 (device): protocol minor version */
    uint32_t header_size;        /* @8 (device): size of this header in bytes (256) */
    uint32_t total_size;         /* @12 (device): size of the whole segment in bytes */
    uint32_t sample_rate;        /* @16 (device; release store before the HandshakeAck; acquire load): current sample rate in Hz */
    uint32_t block_size;         /* @20 (device; release store before the HandshakeAck; acquire load): current block size in frames */
    uint32_t channels;           /* @24 (device): channels of the output audio ring (0 in midi mode) */
    uint32_t mode;               /* @28 (device; release store; acquire load): current Mode */
    uint32_t capabilities;       /* @32 (device): Capability flags the device offers */
    uint32_t audio_frames;       /* @36 (device): frames per channel in each audio ring (16384) */
    uint32_t message_slots;      /* @40 (device): 256-byte slots in each message ring (1024) */
    uint32_t return_channels;    /* @44 (device): channels of the return ring, 0 when absent */
    uint32_t audio_ring_offset;  /* @48 (device): offset of the output audio ring, 0 when absent */
    uint32_t return_ring_offset; /* @52 (device): offset of the return audio ring, 0 when absent */
    uint32_t command_ring_offset; /* @56 (device): offset of the command ring (host to device) */
    uint32_t response_ring_offset; /* @60 (device): offset of the response ring (device to host) */
    uint32_t device_pid;         /* @64 (device): pid of the device process */
    uint32_t host_pid;           /* @68 (host; compare-and-swap (acq_rel); acquire load): claiming host's pid, 0 when unclaimed */
    uint32_t device_state;       /* @72 (device; release store; acquire load): DeviceState: 0 starting, 1 running, 2 stopped */
    uint32_t claim_generation;   /* @76 (host; release store after link_tag; acquire load): incremented by a host after each successful claim */
    char link_tag[64];           /* @80 (host): claiming host's link tag, UTF-8, NUL-terminated */
    uint64_t underruns;          /* @144 (host; relaxed): host reads that found less than a block */
    uint64_t overruns;           /* @152 (device; relaxed): device blocks dropped because the ring was full */
    uint64_t commands_dropped;   /* @160 (host; relaxed): commands lost because the command ring was full */
    uint64_t responses_dropped;  /* @168 (device; relaxed): responses lost because the response ring was full */
    uint64_t bad_messages;       /* @176 (device; relaxed): malformed or unknown commands received */
    uint64_t return_underruns;   /* @184 (device; relaxed): device reads of the return ring that came up short */
    uint64_t return_overruns;    /* @192 (host; relaxed): return blocks dropped because the ring was full */
    uint64_t blocks_written;     /* @200 (device; relaxed): audio blocks the device has written */
    uint64_t blocks_read;        /* @208 (host; relaxed): audio blocks the host has read */
    uint32_t fill_blocks;        /* @216 (device; relaxed): blocks the device's demand clock keeps queued (1..4); 0: unknown, or its own or an external clock (since 1.1) */
    uint32_t latency_frames;     /* @220 (device; relaxed): processing latency the audio carries beyond the ring's queue (a plugin's), frames at the current rate (since 1.1) */
    uint32_t session_start;      /* @224 (device; release store; acquire load): the audio ring's write_index where the current claim's audio begins: stored when the device sees a new claim, before any block for it (since 1.1) */
    char reserved[28];           /* @228: zero */
} dl_transport_header;
#define DL_TRANSPORT_HEADER_BYTES 256
#define DL_TRANSPORT_HEADER_MAGIC_OFFSET 0
#define DL_TRANSPORT_HEADER_VERSION_MAJOR_OFFSET 4
#define DL_TRANSPORT_HEADER_VERSION_MINOR_OFFSET 6
#define DL_TRANSPORT_HEADER_HEADER_SIZE_OFFSET 8
#define DL_TRANSPORT_HEADER_TOTAL_SIZE_OFFSET 12
#define DL_TRANSPORT_HEADER_SAMPLE_RATE_OFFSET 16
#define DL_TRANSPORT_HEADER_BLOCK_SIZE_OFFSET 20
#define DL_TRANSPORT_HEADER_CHANNELS_OFFSET 24
#define DL_TRANSPORT_HEADER_MODE_OFFSET 28
#define DL_TRANSPORT_HEADER_CAPABILITIES_OFFSET 32
#define DL_TRANSPORT_HEADER_AUDIO_FRAMES_OFFSET 36
#define DL_TRANSPORT_HEADER_MESSAGE_SLOTS_OFFSET 40
#define DL_TRANSPORT_HEADER_RETURN_CHANNELS_OFFSET 44
#define DL_TRANSPORT_HEADER_AUDIO_RING_OFFSET_OFFSET 48
#define DL_TRANSPORT_HEADER_RETURN_RING_OFFSET_OFFSET 52
#define DL_TRANSPORT_HEADER_COMMAND_RING_OFFSET_OFFSET 56
#define DL_TRANSPORT_HEADER_RESPONSE_RING_OFFSET_OFFSET 60
#define DL_TRANSPORT_HEADER_DEVICE_PID_OFFSET 64
#define DL_TRANSPORT_HEADER_HOST_PID_OFFSET 68
#define DL_TRANSPORT_HEADER_DEVICE_STATE_OFFSET 72
#define DL_TRANSPORT_HEADER_CLAIM_GENERATION_OFFSET 76
#define DL_TRANSPORT_HEADER_LINK_TAG_OFFSET 80
#define DL_TRANSPORT_HEADER_UNDERRUNS_OFFSET 144
#define DL_TRANSPORT_HEADER_OVERRUNS_OFFSET 152
#define DL_TRANSPORT_HEADER_COMMANDS_DROPPED_OFFSET 160
#define DL_TRANSPORT_HEADER_RESPONSES_DROPPED_OFFSET 168
#define DL_TRANSPORT_HEADER_BAD_MESSAGES_OFFSET 176
#define DL_TRANSPORT_HEADER_RETURN_UNDERRUNS_OFFSET 184
#define DL_TRANSPORT_HEADER_RETURN_OVERRUNS_OFFSET 192
#define DL_TRANSPORT_HEADER_BLOCKS_WRITTEN_OFFSET 200
#define DL_TRANSPORT_HEADER_BLOCKS_READ_OFFSET 208
#define DL_TRANSPORT_HEADER_FILL_BLOCKS_OFFSET 216
#define DL_TRANSPORT_HEADER_LATENCY_FRAMES_OFFSET 220
#define DL_TRANSPORT_HEADER_SESSION_START_OFFSET 224
#define DL_TRANSPORT_HEADER_RESERVED_OFFSET 228
DL_STATIC_ASSERT(sizeof(dl_transport_header) == DL_TRANSPORT_HEADER_BYTES, "dl_transport_header size");
DL_STATIC_ASSERT(offsetof(dl_transport_header, magic) == DL_TRANSPORT_HEADER_MAGIC_OFFSET, "dl_transport_header.magic offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, version_major) == DL_TRANSPORT_HEADER_VERSION_MAJOR_OFFSET, "dl_transport_header.version_major offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, version_minor) == DL_TRANSPORT_HEADER_VERSION_MINOR_OFFSET, "dl_transport_header.version_minor offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, header_size) == DL_TRANSPORT_HEADER_HEADER_SIZE_OFFSET, "dl_transport_header.header_size offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, total_size) == DL_TRANSPORT_HEADER_TOTAL_SIZE_OFFSET, "dl_transport_header.total_size offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, sample_rate) == DL_TRANSPORT_HEADER_SAMPLE_RATE_OFFSET, "dl_transport_header.sample_rate offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, block_size) == DL_TRANSPORT_HEADER_BLOCK_SIZE_OFFSET, "dl_transport_header.block_size offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, channels) == DL_TRANSPORT_HEADER_CHANNELS_OFFSET, "dl_transport_header.channels offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, mode) == DL_TRANSPORT_HEADER_MODE_OFFSET, "dl_transport_header.mode offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, capabilities) == DL_TRANSPORT_HEADER_CAPABILITIES_OFFSET, "dl_transport_header.capabilities offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, audio_frames) == DL_TRANSPORT_HEADER_AUDIO_FRAMES_OFFSET, "dl_transport_header.audio_frames offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, message_slots) == DL_TRANSPORT_HEADER_MESSAGE_SLOTS_OFFSET, "dl_transport_header.message_slots offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, return_channels) == DL_TRANSPORT_HEADER_RETURN_CHANNELS_OFFSET, "dl_transport_header.return_channels offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, audio_ring_offset) == DL_TRANSPORT_HEADER_AUDIO_RING_OFFSET_OFFSET, "dl_transport_header.audio_ring_offset offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, return_ring_offset) == DL_TRANSPORT_HEADER_RETURN_RING_OFFSET_OFFSET, "dl_transport_header.return_ring_offset offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, command_ring_offset) == DL_TRANSPORT_HEADER_COMMAND_RING_OFFSET_OFFSET, "dl_transport_header.command_ring_offset offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, response_ring_offset) == DL_TRANSPORT_HEADER_RESPONSE_RING_OFFSET_OFFSET, "dl_transport_header.response_ring_offset offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, device_pid) == DL_TRANSPORT_HEADER_DEVICE_PID_OFFSET, "dl_transport_header.device_pid offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, host_pid) == DL_TRANSPORT_HEADER_HOST_PID_OFFSET, "dl_transport_header.host_pid offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, device_state) == DL_TRANSPORT_HEADER_DEVICE_STATE_OFFSET, "dl_transport_header.device_state offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, claim_generation) == DL_TRANSPORT_HEADER_CLAIM_GENERATION_OFFSET, "dl_transport_header.claim_generation offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, link_tag) == DL_TRANSPORT_HEADER_LINK_TAG_OFFSET, "dl_transport_header.link_tag offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, underruns) == DL_TRANSPORT_HEADER_UNDERRUNS_OFFSET, "dl_transport_header.underruns offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, overruns) == DL_TRANSPORT_HEADER_OVERRUNS_OFFSET, "dl_transport_header.overruns offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, commands_dropped) == DL_TRANSPORT_HEADER_COMMANDS_DROPPED_OFFSET, "dl_transport_header.commands_dropped offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, responses_dropped) == DL_TRANSPORT_HEADER_RESPONSES_DROPPED_OFFSET, "dl_transport_header.responses_dropped offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, bad_messages) == DL_TRANSPORT_HEADER_BAD_MESSAGES_OFFSET, "dl_transport_header.bad_messages offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, return_underruns) == DL_TRANSPORT_HEADER_RETURN_UNDERRUNS_OFFSET, "dl_transport_header.return_underruns offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, return_overruns) == DL_TRANSPORT_HEADER_RETURN_OVERRUNS_OFFSET, "dl_transport_header.return_overruns offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, blocks_written) == DL_TRANSPORT_HEADER_BLOCKS_WRITTEN_OFFSET, "dl_transport_header.blocks_written offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, blocks_read) == DL_TRANSPORT_HEADER_BLOCKS_READ_OFFSET, "dl_transport_header.blocks_read offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, fill_blocks) == DL_TRANSPORT_HEADER_FILL_BLOCKS_OFFSET, "dl_transport_header.fill_blocks offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, latency_frames) == DL_TRANSPORT_HEADER_LATENCY_FRAMES_OFFSET, "dl_transport_header.latency_frames offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, session_start) == DL_TRANSPORT_HEADER_SESSION_START_OFFSET, "dl_transport_header.session_start offset");
DL_STATIC_ASSERT(offsetof(dl_transport_header, reserved) == DL_TRANSPORT_HEADER_RESERVED_OFFSET, "dl_transport_header.reserved offset");

typedef struct dl_ring_control {
    uint32_t write_index;        /* @0 (producer; release store after the data; acquire load): free-running count of items ever written */
    char reserved0[60];          /* @4: zero (keeps the two indices on separate cache lines) */
    uint32_t read_index;         /* @64 (consumer; release store after reading; acquire load): free-running count of items ever read */
    char reserved1[60];          /* @68: zero */
} dl_ring_control;
#define DL_RING_CONTROL_BYTES 128
#define DL_RING_CONTROL_WRITE_INDEX_OFFSET 0
#define DL_RING_CONTROL_RESERVED0_OFFSET 4
#define DL_RING_CONTROL_READ_INDEX_OFFSET 64
#define DL_RING_CONTROL_RESERVED1_OFFSET 68
DL_STATIC_ASSERT(sizeof(dl_ring_control) == DL_RING_CONTROL_BYTES, "dl_ring_control size");
DL_STATIC_ASSERT(offsetof(dl_ring_control, write_index) == DL_RING_CONTROL_WRITE_INDEX_OFFSET, "dl_ring_control.write_index offset");
DL_STATIC_ASSERT(offsetof(dl_ring_control, reserved0) == DL_RING_CONTROL_RESERVED0_OFFSET, "dl_ring_control.reserved0 offset");
DL_STATIC_ASSERT(offsetof(dl_ring_control, read_index) == DL_RING_CONTROL_READ_INDEX_OFFSET, "dl_ring_control.read_index offset");
DL_STATIC_ASSERT(offsetof(dl_ring_control, reserved1) == DL_RING_CONTROL_RESERVED1_OFFSET, "dl_ring_control.reserved1 offset");

typedef struct dl_message_header {
    uint16_t type;               /* @0: command type code (see the command table) */
    uint16_t flags;              /* @2: MessageFlag bits */
    uint32_t seq;                /* @4: sender's sequence number, +1 per message, starting at 1 */
    uint32_t sample_offset;      /* @8: frame within the block at which the event applies */
    uint32_t payload_len;        /* @12: bytes of payload used (0..224) */
    uint32_t frag_index;         /* @16: index of this fragment (0 when not fragmented) */
    uint32_t frag_count;         /* @20: fragments in the transfer (0 or 1: not fragmented) */
    uint32_t transfer_id;        /* @24: sender-unique id shared by a transfer's fragments */
    uint32_t request_seq;        /* @28: in a response: seq of the request answered, else 0 */
} dl_message_header;
#define DL_MESSAGE_HEADER_BYTES 32
#define DL_MESSAGE_HEADER_TYPE_OFFSET 0
#define DL_MESSAGE_HEADER_FLAGS_OFFSET 2
#define DL_MESSAGE_HEADER_SEQ_OFFSET 4
#define DL_MESSAGE_HEADER_SAMPLE_OFFSET_OFFSET 8
#define DL_MESSAGE_HEADER_PAYLOAD_LEN_OFFSET 12
#define DL_MESSAGE_HEADER_FRAG_INDEX_OFFSET 16
#define DL_MESSAGE_HEADER_FRAG_COUNT_OFFSET 20
#define DL_MESSAGE_HEADER_TRANSFER_ID_OFFSET 24
#define DL_MESSAGE_HEADER_REQUEST_SEQ_OFFSET 28
DL_STATIC_ASSERT(sizeof(dl_message_header) == DL_MESSAGE_HEADER_BYTES, "dl_message_header size");
DL_STATIC_ASSERT(offsetof(dl_message_header, type) == DL_MESSAGE_HEADER_TYPE_OFFSET, "dl_message_header.type offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, flags) == DL_MESSAGE_HEADER_FLAGS_OFFSET, "dl_message_header.flags offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, seq) == DL_MESSAGE_HEADER_SEQ_OFFSET, "dl_message_header.seq offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, sample_offset) == DL_MESSAGE_HEADER_SAMPLE_OFFSET_OFFSET, "dl_message_header.sample_offset offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, payload_len) == DL_MESSAGE_HEADER_PAYLOAD_LEN_OFFSET, "dl_message_header.payload_len offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, frag_index) == DL_MESSAGE_HEADER_FRAG_INDEX_OFFSET, "dl_message_header.frag_index offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, frag_count) == DL_MESSAGE_HEADER_FRAG_COUNT_OFFSET, "dl_message_header.frag_count offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, transfer_id) == DL_MESSAGE_HEADER_TRANSFER_ID_OFFSET, "dl_message_header.transfer_id offset");
DL_STATIC_ASSERT(offsetof(dl_message_header, request_seq) == DL_MESSAGE_HEADER_REQUEST_SEQ_OFFSET, "dl_message_header.request_seq offset");

/* Commands (commands.COMMANDS) */
typedef enum dl_command_type {
    DL_CMD_PING = 0x0001, /* host→device: Liveness and latency probe; the device answers Pong. */
    DL_CMD_PONG = 0x0002, /* device→host: Answer to Ping: echoes sent_ns and adds the device's CLOCK_MONOTONIC. */
    DL_CMD_HANDSHAKE = 0x0003, /* host→device: Host's protocol version, capabilities and preferred format (0 = no preference). */
    DL_CMD_HANDSHAKE_ACK = 0x0004, /* device→host: Device's answer: the format and capabilities it accepts; in effect from now on. */
    DL_CMD_ERROR = 0x0005, /* device→host: Failure report; request_seq names the failed request. */
    DL_CMD_DISCONNECT = 0x0006, /* host→device: The host is leaving (it then releases its claim). */
    DL_CMD_SET_TRANSPORT_MODE = 0x0007, /* host→device: Switch among modes the segment supports; the response gives the mode now. */
    DL_CMD_ROUTE = 0x0008, /* host→device: Select the link-routing tap; empty tap = query. Response: JSON {tap, taps}. */
    DL_CMD_MIDI_RAW = 0x0100, /* host→device: MIDI 1.0 bytes: one or more complete messages; running status allowed (§7.4). */
    DL_CMD_NOTE_ON = 0x0101, /* host→device: Note on; channel 0..15, note and velocity 0..127. */
    DL_CMD_NOTE_OFF = 0x0102, /* host→device: Note off. */
    DL_CMD_CONTROL_CHANGE = 0x0103, /* host→device: Control change. */
    DL_CMD_PITCH_BEND = 0x0104, /* host→device: 14-bit pitch bend 0..16383, centre 8192. */
    DL_CMD_PROGRAM_CHANGE = 0x0105, /* host→device: Program change. */
    DL_CMD_AFTERTOUCH = 0x0106, /* host→device: Channel pressure (poly=0, note ignored) or polyphonic key pressure (poly=1). */
    DL_CMD_SYSEX = 0x0107, /* host→device: One complete SysEx message, F0 .. F7, fragmented when longer than one payload. */
    DL_CMD_UMP = 0x0108, /* host→device: Universal MIDI Packets: whole packets of uint32 words, little-endian (§7.4). */
    DL_CMD_SET_PARAMETER = 0x0200, /* host→device: Set a parameter by index, or by name when index is -1; applies at the next block. */
    DL_CMD_GET_PARAMETER = 0x0201, /* host→device: Read a parameter by index, or by name when index is -1. */
    DL_CMD_PARAMETER_LIST = 0x0202, /* host→device: Response: JSON list of {index, name, display_name, stage, min, max, default, value, unit}; min/max/default null when unknown. */
    DL_CMD_LOAD_PRESET = 0x0203, /* host→device: Load a preset file (path on the device's machine). */
    DL_CMD_GET_STATE = 0x0204, /* host→device: Response: the device's opaque state blob. */
    DL_CMD_SET_STATE = 0x0205, /* host→device: Restore an opaque state blob from GetState. */
    DL_CMD_FILE_TRANSFER = 0x0206, /* host→device: Deliver a named file's bytes to the device. */
} dl_command_type;
/* The command table: X(code, NAME, "Name", request fixed bytes, request tail,
   response fixed bytes (-1: answered with its own type), response tail,
   fragmentable, MIDI command) */
#define DL_COMMAND_TABLE(X) \
    X(0x0001, PING, "Ping", 8, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0002, PONG, "Pong", 16, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0003, HANDSHAKE, "Handshake", 28, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0004, HANDSHAKE_ACK, "HandshakeAck", 28, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0005, ERROR, "Error", 8, DL_TAIL_UTF8, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0006, DISCONNECT, "Disconnect", 0, DL_TAIL_UTF8, -1, DL_TAIL_NONE, 0, 0) \
    X(0x0007, SET_TRANSPORT_MODE, "SetTransportMode", 4, DL_TAIL_NONE, 4, DL_TAIL_NONE, 0, 0) \
    X(0x0008, ROUTE, "Route", 0, DL_TAIL_UTF8, 0, DL_TAIL_UTF8, 0, 0) \
    X(0x0100, MIDI_RAW, "MidiRaw", 0, DL_TAIL_BYTES, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0101, NOTE_ON, "NoteOn", 3, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0102, NOTE_OFF, "NoteOff", 3, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0103, CONTROL_CHANGE, "ControlChange", 3, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0104, PITCH_BEND, "PitchBend", 4, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0105, PROGRAM_CHANGE, "ProgramChange", 2, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0106, AFTERTOUCH, "Aftertouch", 4, DL_TAIL_NONE, -1, DL_TAIL_NONE, 0, 1) \
    X(0x0107, SYSEX, "SysEx", 0, DL_TAIL_BYTES, -1, DL_TAIL_NONE, 1, 1) \
    X(0x0108, UMP, "UMP", 0, DL_TAIL_BYTES, -1, DL_TAIL_NONE, 1, 1) \
    X(0x0200, SET_PARAMETER, "SetParameter", 72, DL_TAIL_NONE, 72, DL_TAIL_NONE, 0, 0) \
    X(0x0201, GET_PARAMETER, "GetParameter", 68, DL_TAIL_NONE, 72, DL_TAIL_NONE, 0, 0) \
    X(0x0202, PARAMETER_LIST, "ParameterList", 0, DL_TAIL_NONE, 0, DL_TAIL_UTF8, 1, 0) \
    X(0x0203, LOAD_PRESET, "LoadPreset", 0, DL_TAIL_UTF8, -1, DL_TAIL_NONE, 1, 0) \
    X(0x0204, GET_STATE, "GetState", 0, DL_TAIL_NONE, 0, DL_TAIL_BYTES, 1, 0) \
    X(0x0205, SET_STATE, "SetState", 0, DL_TAIL_BYTES, -1, DL_TAIL_NONE, 1, 0) \
    X(0x0206, FILE_TRANSFER, "FileTransfer", 128, DL_TAIL_BYTES, -1, DL_TAIL_NONE, 1, 0)
/* Payload layouts: byte offsets of each field within the payload, and the size of the
   fixed fields (a last bytes/utf8 field runs from its offset to payload_len). */
#define DL_PAYLOAD_PING_SENT_NS_OFFSET 0 /* u64 */
#define DL_PAYLOAD_PING_FIXED_SIZE 8
#define DL_PAYLOAD_PONG_PING_SENT_NS_OFFSET 0 /* u64 */
#define DL_PAYLOAD_PONG_RECEIVED_NS_OFFSET 8 /* u64 */
#define DL_PAYLOAD_PONG_FIXED_SIZE 16
#define DL_PAYLOAD_HANDSHAKE_VERSION_MAJOR_OFFSET 0 /* u16 */
#define DL_PAYLOAD_HANDSHAKE_VERSION_MINOR_OFFSET 2 /* u16 */
#define DL_PAYLOAD_HANDSHAKE_CAPABILITIES_OFFSET 4 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_SAMPLE_RATE_OFFSET 8 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_BLOCK_SIZE_OFFSET 12 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_CHANNELS_OFFSET 16 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_MODE_OFFSET 20 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_RETURN_CHANNELS_OFFSET 24 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_FIXED_SIZE 28
#define DL_PAYLOAD_HANDSHAKE_ACK_VERSION_MAJOR_OFFSET 0 /* u16 */
#define DL_PAYLOAD_HANDSHAKE_ACK_VERSION_MINOR_OFFSET 2 /* u16 */
#define DL_PAYLOAD_HANDSHAKE_ACK_CAPABILITIES_OFFSET 4 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_SAMPLE_RATE_OFFSET 8 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_BLOCK_SIZE_OFFSET 12 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_CHANNELS_OFFSET 16 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_MODE_OFFSET 20 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_RETURN_CHANNELS_OFFSET 24 /* u32 */
#define DL_PAYLOAD_HANDSHAKE_ACK_FIXED_SIZE 28
#define DL_PAYLOAD_ERROR_CODE_OFFSET 0 /* u32 */
#define DL_PAYLOAD_ERROR_REQUEST_TYPE_OFFSET 4 /* u16 */
#define DL_PAYLOAD_ERROR_RESERVED_OFFSET 6 /* u16 */
#define DL_PAYLOAD_ERROR_TEXT_OFFSET 8 /* utf8 */
#define DL_PAYLOAD_ERROR_FIXED_SIZE 8
#define DL_PAYLOAD_DISCONNECT_REASON_OFFSET 0 /* utf8 */
#define DL_PAYLOAD_DISCONNECT_FIXED_SIZE 0
#define DL_PAYLOAD_SET_TRANSPORT_MODE_MODE_OFFSET 0 /* u32 */
#define DL_PAYLOAD_SET_TRANSPORT_MODE_FIXED_SIZE 4
#define DL_RESPONSE_SET_TRANSPORT_MODE_MODE_OFFSET 0 /* u32 */
#define DL_RESPONSE_SET_TRANSPORT_MODE_FIXED_SIZE 4
#define DL_PAYLOAD_ROUTE_TAP_OFFSET 0 /* utf8 */
#define DL_PAYLOAD_ROUTE_FIXED_SIZE 0
#define DL_RESPONSE_ROUTE_ROUTING_OFFSET 0 /* utf8 */
#define DL_RESPONSE_ROUTE_FIXED_SIZE 0
#define DL_PAYLOAD_MIDI_RAW_DATA_OFFSET 0 /* bytes */
#define DL_PAYLOAD_MIDI_RAW_FIXED_SIZE 0
#define DL_PAYLOAD_NOTE_ON_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_NOTE_ON_NOTE_OFFSET 1 /* u8 */
#define DL_PAYLOAD_NOTE_ON_VELOCITY_OFFSET 2 /* u8 */
#define DL_PAYLOAD_NOTE_ON_FIXED_SIZE 3
#define DL_PAYLOAD_NOTE_OFF_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_NOTE_OFF_NOTE_OFFSET 1 /* u8 */
#define DL_PAYLOAD_NOTE_OFF_VELOCITY_OFFSET 2 /* u8 */
#define DL_PAYLOAD_NOTE_OFF_FIXED_SIZE 3
#define DL_PAYLOAD_CONTROL_CHANGE_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_CONTROL_CHANGE_CONTROLLER_OFFSET 1 /* u8 */
#define DL_PAYLOAD_CONTROL_CHANGE_VALUE_OFFSET 2 /* u8 */
#define DL_PAYLOAD_CONTROL_CHANGE_FIXED_SIZE 3
#define DL_PAYLOAD_PITCH_BEND_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_PITCH_BEND_RESERVED_OFFSET 1 /* u8 */
#define DL_PAYLOAD_PITCH_BEND_VALUE_OFFSET 2 /* u16 */
#define DL_PAYLOAD_PITCH_BEND_FIXED_SIZE 4
#define DL_PAYLOAD_PROGRAM_CHANGE_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_PROGRAM_CHANGE_PROGRAM_OFFSET 1 /* u8 */
#define DL_PAYLOAD_PROGRAM_CHANGE_FIXED_SIZE 2
#define DL_PAYLOAD_AFTERTOUCH_CHANNEL_OFFSET 0 /* u8 */
#define DL_PAYLOAD_AFTERTOUCH_POLY_OFFSET 1 /* u8 */
#define DL_PAYLOAD_AFTERTOUCH_NOTE_OFFSET 2 /* u8 */
#define DL_PAYLOAD_AFTERTOUCH_PRESSURE_OFFSET 3 /* u8 */
#define DL_PAYLOAD_AFTERTOUCH_FIXED_SIZE 4
#define DL_PAYLOAD_SYSEX_DATA_OFFSET 0 /* bytes */
#define DL_PAYLOAD_SYSEX_FIXED_SIZE 0
#define DL_PAYLOAD_UMP_WORDS_OFFSET 0 /* bytes */
#define DL_PAYLOAD_UMP_FIXED_SIZE 0
#define DL_PAYLOAD_SET_PARAMETER_INDEX_OFFSET 0 /* i32 */
#define DL_PAYLOAD_SET_PARAMETER_VALUE_OFFSET 4 /* f32 */
#define DL_PAYLOAD_SET_PARAMETER_NAME_OFFSET 8 /* char[64] */
#define DL_PAYLOAD_SET_PARAMETER_FIXED_SIZE 72
#define DL_RESPONSE_SET_PARAMETER_INDEX_OFFSET 0 /* i32 */
#define DL_RESPONSE_SET_PARAMETER_VALUE_OFFSET 4 /* f32 */
#define DL_RESPONSE_SET_PARAMETER_NAME_OFFSET 8 /* char[64] */
#define DL_RESPONSE_SET_PARAMETER_FIXED_SIZE 72
#define DL_PAYLOAD_GET_PARAMETER_INDEX_OFFSET 0 /* i32 */
#define DL_PAYLOAD_GET_PARAMETER_NAME_OFFSET 4 /* char[64] */
#define DL_PAYLOAD_GET_PARAMETER_FIXED_SIZE 68
#define DL_RESPONSE_GET_PARAMETER_INDEX_OFFSET 0 /* i32 */
#define DL_RESPONSE_GET_PARAMETER_VALUE_OFFSET 4 /* f32 */
#define DL_RESPONSE_GET_PARAMETER_NAME_OFFSET 8 /* char[64] */
#define DL_RESPONSE_GET_PARAMETER_FIXED_SIZE 72
#define DL_PAYLOAD_PARAMETER_LIST_FIXED_SIZE 0
#define DL_RESPONSE_PARAMETER_LIST_PARAMETERS_OFFSET 0 /* utf8 */
#define DL_RESPONSE_PARAMETER_LIST_FIXED_SIZE 0
#define DL_PAYLOAD_LOAD_PRESET_PATH_OFFSET 0 /* utf8 */
#define DL_PAYLOAD_LOAD_PRESET_FIXED_SIZE 0
#define DL_PAYLOAD_GET_STATE_FIXED_SIZE 0
#define DL_RESPONSE_GET_STATE_STATE_OFFSET 0 /* bytes */
#define DL_RESPONSE_GET_STATE_FIXED_SIZE 0
#define DL_PAYLOAD_SET_STATE_STATE_OFFSET 0 /* bytes */
#define DL_PAYLOAD_SET_STATE_FIXED_SIZE 0
#define DL_PAYLOAD_FILE_TRANSFER_NAME_OFFSET 0 /* char[128] */
#define DL_PAYLOAD_FILE_TRANSFER_DATA_OFFSET 128 /* bytes */
#define DL_PAYLOAD_FILE_TRANSFER_FIXED_SIZE 128
/* END GENERATED: protocol */

DL_STATIC_ASSERT(DL_MESSAGE_HEADER_BYTES == DL_MESSAGE_HEADER_SIZE, "message header size");
DL_STATIC_ASSERT(DL_RING_CONTROL_BYTES == DL_RING_CONTROL_SIZE, "ring control size");

/* ==== Results =============================================================================== */

typedef enum dl_result {
    DL_SUCCESS = 0,
    DL_ERROR = -1,             /* unspecified failure; the object's error text says more */
    DL_INVALID_ARGS = -2,      /* a bad argument or configuration value (a usage error) */
    DL_OUT_OF_MEMORY = -3,
    DL_SYSTEM_ERROR = -4,      /* a system call failed (shm_open, mmap, ftruncate, ...) */
    DL_NOT_FOUND = -5,         /* no such device (or no registry in the namespace) */
    DL_ID_TAKEN = -6,          /* the requested Name:N is registered by a live device */
    DL_REGISTRY_FULL = -7,     /* all 16 slots hold live devices */
    DL_BAD_REGISTRY = -8,      /* a registry of the wrong size, magic, version or shape */
    DL_BAD_SEGMENT = -9,       /* a transport segment that fails validation (section 4.2) */
    DL_CLAIMED = -10,          /* another live host holds the device */
    DL_TIMEOUT = -11,          /* no answer in time */
    DL_REFUSED = -12,          /* the device answered with an Error */
    DL_VERSION_MISMATCH = -13, /* the peer speaks another protocol major version */
    DL_NOT_CONNECTED = -14,    /* host not connected, or device not started */
    DL_RING_FULL = -15,        /* no room in a ring; the item was dropped (and counted) */
    DL_CORRUPT = -16,          /* impossible ring indices (fill > capacity) */
    DL_WRONG_STATE = -17,      /* e.g. start on a device that is running */
    DL_STALE_BLOCK = -18,      /* a new claim arrived: the block rendered before it was dropped */
    DL_SLOT_LOST = -19         /* the device's registry slot was reclaimed (it stalled) */
} dl_result;

/* "DL_SUCCESS", "DL_NOT_FOUND", ... */
const char *dl_result_name(dl_result result);

/* ==== Time ================================================================================= */

uint64_t dl_now_ns(void);          /* CLOCK_MONOTONIC in ns (comparable across processes) */
void dl_sleep_ns(uint64_t ns);     /* sleeps (returns early on a signal) */

/* ==== Messages ============================================================================= */

/* One 256-byte message: the header, then the payload (payload_len bytes of it used). */
typedef struct dl_message {
    dl_message_header header;
    uint8_t payload[DL_MESSAGE_PAYLOAD_SIZE];
} dl_message;
DL_STATIC_ASSERT(sizeof(dl_message) == DL_MESSAGE_SIZE, "dl_message is one ring slot");

/* One row of the command table. */
typedef struct dl_command_info {
    uint16_t code;
    const char *name;      /* "NoteOn" */
    int request_fixed;     /* bytes of fixed request fields */
    int request_tail;      /* DL_TAIL_* */
    int response_fixed;    /* bytes of fixed response fields; -1: the response has its own type */
    int response_tail;
    int fragmentable;
    int midi;              /* a MIDI command (refused with WRONG_MODE in audio-only mode) */
} dl_command_info;

const dl_command_info *dl_command_find(uint16_t type);  /* NULL for an unknown type */
const char *dl_command_name(uint16_t type);             /* "NoteOn", or "Unknown" */
const char *dl_mode_label(uint32_t mode);               /* "audio+midi", "audio", "midi", "?" */

uint32_t dl_next_seq(void);          /* process-wide: 1, 2, ... (skips 0 when it wraps) */
uint32_t dl_next_transfer_id(void);  /* process-wide, never 0 */

/* Zero *m, set its type and a fresh seq. */
void dl_message_init(dl_message *m, uint16_t type);
/* Copy len (0..224) payload bytes in and set payload_len; the rest of the payload is zeroed. */
dl_result dl_message_set_payload(dl_message *m, const void *data, uint32_t len);

/* Little-endian field access inside payloads (offsets from the generated DL_PAYLOAD_*). */
static inline uint16_t dl_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t dl_get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t dl_get_u64(const uint8_t *p) {
    return (uint64_t)dl_get_u32(p) | ((uint64_t)dl_get_u32(p + 4) << 32);
}
static inline void dl_put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void dl_put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void dl_put_u64(uint8_t *p, uint64_t v) { dl_put_u32(p, (uint32_t)v); dl_put_u32(p + 4, (uint32_t)(v >> 32)); }

/* ---- builders: fill *m completely (header and payload) ------------------------------------
   Every MIDI builder takes the event's sample offset within the block it belongs to. They
   refuse (DL_INVALID_ARGS, *m untouched) values that MIDI cannot carry. */
dl_result dl_cmd_note_on(dl_message *m, uint8_t channel, uint8_t note, uint8_t velocity, uint32_t sample_offset);
dl_result dl_cmd_note_off(dl_message *m, uint8_t channel, uint8_t note, uint8_t velocity, uint32_t sample_offset);
dl_result dl_cmd_control_change(dl_message *m, uint8_t channel, uint8_t controller, uint8_t value, uint32_t sample_offset);
dl_result dl_cmd_pitch_bend(dl_message *m, uint8_t channel, uint16_t value /* 0..16383, centre 8192 */, uint32_t sample_offset);
dl_result dl_cmd_program_change(dl_message *m, uint8_t channel, uint8_t program, uint32_t sample_offset);
dl_result dl_cmd_channel_pressure(dl_message *m, uint8_t channel, uint8_t pressure, uint32_t sample_offset);
dl_result dl_cmd_poly_pressure(dl_message *m, uint8_t channel, uint8_t note, uint8_t pressure, uint32_t sample_offset);
/* 1..224 bytes of complete MIDI 1.0 messages (running status allowed). */
dl_result dl_cmd_midi_raw(dl_message *m, const uint8_t *data, uint32_t len, uint32_t sample_offset);
/* One SysEx F0 .. F7 that fits one message (<= 224 bytes); longer ones: dl_host_send_sysex. */
dl_result dl_cmd_sysex(dl_message *m, const uint8_t *data, uint32_t len, uint32_t sample_offset);
/* Whole UMP packets, at most 56 words; more: dl_host_send_ump. */
dl_result dl_cmd_ump(dl_message *m, const uint32_t *words, uint32_t count, uint32_t sample_offset);
dl_result dl_cmd_ping(dl_message *m, uint64_t sent_ns);
dl_result dl_cmd_set_transport_mode(dl_message *m, uint32_t mode);
dl_result dl_cmd_disconnect(dl_message *m, const char *reason);
dl_result dl_cmd_set_parameter(dl_message *m, int32_t index, const char *name /* index -1: by name */, float value);
dl_result dl_cmd_get_parameter(dl_message *m, int32_t index, const char *name);

/* Fragmentation: a payload longer than 224 bytes goes as dl_fragment_count(len) messages.
   dl_cmd_fragment fills message `index` of such a transfer (one plain message when len fits
   in one). Every fragment carries the same sample offset and transfer id. */
uint32_t dl_fragment_count(uint32_t len);
dl_result dl_cmd_fragment(dl_message *m, uint16_t type, const void *data, uint32_t len, uint32_t index,
                          uint32_t transfer_id, uint32_t sample_offset);

/* The Handshake / HandshakeAck payload. */
typedef struct dl_handshake {
    uint16_t version_major, version_minor;
    uint32_t capabilities, sample_rate, block_size, channels, mode, return_channels;
} dl_handshake;
dl_result dl_cmd_handshake(dl_message *m, const dl_handshake *handshake);
dl_result dl_handshake_decode(const uint8_t *payload, uint32_t len, dl_handshake *out);

/* UMP words for the commonest MIDI 2.0 messages (write 2 words; return 2). */
uint32_t dl_ump_midi1(uint8_t group, uint8_t status, uint8_t data1, uint8_t data2); /* 1 word, MT 0x2 */
uint32_t dl_ump_note_on(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t note, uint16_t velocity);
uint32_t dl_ump_note_off(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t note, uint16_t velocity);
uint32_t dl_ump_control_change(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t index, uint32_t value);
uint32_t dl_ump_pitch_bend(uint32_t words[2], uint8_t group, uint8_t channel, uint32_t value /* centre 0x80000000 */);

/* Bytes in a MIDI 1.0 message with this status (0: SysEx or undefined). */
uint32_t dl_midi_message_length(uint8_t status);

/* ==== Rings (section 5) ======================================================================
   Lock-free single-producer single-consumer queues in shared memory. The endpoints use them;
   they are public for tests and for peers that bring their own endpoint logic. */

typedef struct dl_audio_ring {
    dl_ring_control *control;
    float *data;         /* planar: channel c at data + c * capacity */
    uint32_t channels;
    uint32_t capacity;   /* frames per channel, a power of two */
} dl_audio_ring;

typedef struct dl_message_ring {
    dl_ring_control *control;
    dl_message *slots;
    uint32_t capacity;   /* messages, a power of two */
} dl_message_ring;

/* Producer: all `frames` or nothing. `channels` planes (NULL planes, and ring channels past
   `channels`, are written as silence). Returns frames written, 0 when it does not fit,
   DL_CORRUPT. */
int32_t dl_audio_ring_write(dl_audio_ring *ring, const float *const *planes, uint32_t channels, uint32_t frames);
/* Consumer: up to `frames` frames, zero-filling the rest of every plane (planes past the
   ring's channels are zeroed; ring channels past `channels` are consumed unseen). Returns
   frames read or DL_CORRUPT (planes zeroed). */
int32_t dl_audio_ring_read(dl_audio_ring *ring, float *const *planes, uint32_t channels, uint32_t frames);
uint32_t dl_ring_fill(const dl_ring_control *control);     /* items queued */
uint32_t dl_ring_discard(dl_ring_control *control);        /* consumer: drop all; returns how many */
/* consumer: drop what came before write index `index`, keep the rest (all if `index` is not
   between the read and write indices); returns how many were dropped */
uint32_t dl_ring_discard_to(dl_ring_control *control, uint32_t index);
int32_t dl_message_ring_push(dl_message_ring *ring, const dl_message *m);  /* 1, 0 full, DL_CORRUPT */
int32_t dl_message_ring_pop(dl_message_ring *ring, dl_message *m);         /* 1, 0 empty, DL_CORRUPT */
uint32_t dl_message_ring_space(const dl_message_ring *ring);               /* free slots */

/* ==== Registry (section 3) ================================================================= */

typedef struct dl_device_info {
    char id[64];            /* "Name:N" */
    char link_tag[64];      /* last claiming host's tag (kept after it leaves: session recall) */
    char namespace_name[DL_NAMESPACE_MAX_CHARS + 1];
    uint32_t pid, slot, generation, instance;
    uint32_t channels, sample_rate, block_size, mode, capabilities;
    uint32_t host_pid;      /* as recorded; see `claimed` */
    int claimed;            /* host_pid is set and that process is alive */
    uint64_t xruns;
} dl_device_info;

/* The namespace to use: `requested`, else $DISCOLINK_NAMESPACE, else "default"; checked. */
dl_result dl_namespace_resolve(const char *requested, char out[DL_NAMESPACE_MAX_CHARS + 1], char *error, size_t error_size);
/* Device ids: "Name" or "Name:N" (section 1.1 grammar); link tags: <= 63 bytes of UTF-8. */
dl_result dl_validate_device_id(const char *id, char *error, size_t error_size);
dl_result dl_validate_link_tag(const char *tag, char *error, size_t error_size);
/* List the live devices of a namespace (NULL: the environment's), sorted by name and
   instance, reclaiming dead slots first. A namespace without a registry has no devices:
   DL_SUCCESS with *count 0 (nothing is created). */
dl_result dl_scan(const char *namespace_name, dl_device_info *out, uint32_t max, uint32_t *count, char *error, size_t error_size);
/* "alive" as protocol 1.1 defines it: kill(pid, 0) succeeds or says EPERM, and on Linux the
   process is not a zombie. Reads /proc: not for the audio thread. */
int dl_pid_alive(uint32_t pid);

/* ==== Device ================================================================================ */

typedef struct dl_device dl_device;

/* A received command after the checks of section 7.3 (fragments joined, payload decoded and
   validated): `payload` holds payload_len bytes (a whole reassembled transfer), valid during
   the callback only. seq and sample_offset are the LAST fragment's. */
typedef struct dl_command {
    uint16_t type;
    uint16_t flags;
    uint32_t seq;
    uint32_t sample_offset;
    const uint8_t *payload;
    uint32_t payload_len;
} dl_command;

typedef enum dl_command_status {
    DL_COMMAND_DEFAULT = 0,  /* not mine: give it the default handling */
    DL_COMMAND_HANDLED = 1   /* done (answer with dl_device_respond* if it expects one) */
} dl_command_status;

typedef enum dl_device_event_kind {
    DL_EVENT_CLAIMED = 1,        /* a new host claimed the device: its state was reset; silence your renderer */
    DL_EVENT_HANDSHAKE,          /* the host's Handshake was answered; format in the event */
    DL_EVENT_HOST_LEFT,          /* the host sent Disconnect */
    DL_EVENT_HOST_DIED,          /* the claiming host's process is gone: end sounding notes */
    DL_EVENT_FORMAT_CHANGED,     /* a Handshake changed sample_rate/block_size (before the Ack) */
    DL_EVENT_MODE_CHANGED,       /* SetTransportMode switched the mode */
    DL_EVENT_BAD_MESSAGE,        /* a command was refused with an Error (text says why) */
    DL_EVENT_SLOT_LOST           /* the registry reclaimed our slot: hosts cannot find us; restart */
} dl_device_event_kind;

typedef struct dl_device_event {
    dl_device_event_kind kind;
    uint32_t host_pid;
    uint32_t sample_rate, block_size, mode;
    const char *text;            /* a line for people (link tag, refusal reason, ...) */
} dl_device_event;

typedef dl_command_status (*dl_command_fn)(dl_device *device, const dl_command *command, void *user_data);
/* One complete MIDI 1.0 message for the next block, at `sample_offset` frames into it. Every
   MIDI command arrives this way: note/CC/bend/... as their bytes, MidiRaw parsed as a cable
   (running status, real-time bytes), SysEx whole, UMP translated to MIDI 1.0 (section 7.4). */
typedef void (*dl_midi_fn)(dl_device *device, uint32_t sample_offset, const uint8_t *data, uint32_t size, void *user_data);
typedef void (*dl_device_event_fn)(dl_device *device, const dl_device_event *event, void *user_data);

typedef struct dl_device_config {
    const char *namespace_name;  /* NULL: $DISCOLINK_NAMESPACE, else "default" */
    const char *id;              /* "Name" (lowest free Name:N) or "Name:N" (exactly; session recall) */
    uint32_t channels;           /* output channels 1..12 (ignored in DL_MODE_MIDI); default 2 */
    uint32_t sample_rate;        /* default 48000 */
    uint32_t block_size;         /* default 256; any 16..4096 */
    uint32_t mode;               /* DL_MODE_AUDIO_MIDI (default), DL_MODE_AUDIO, DL_MODE_MIDI */
    uint32_t capabilities;       /* extra DL_CAP_* bits you serve: FLEXIBLE_FORMAT, PARAMETERS, STATE, ... */
    int return_audio;            /* add a host-to-device return ring (effect insert) */
    uint32_t fill_blocks;        /* demand clock: blocks kept queued (1..4, default 2); 0: your own
                                    or an external clock (published in the header either way) */
    uint32_t latency_frames;     /* processing latency beyond the ring's queue (a plugin's) */
    uint32_t sysex_limit;        /* longest SysEx accepted, bytes (default 65536) */
    uint32_t max_transfer_bytes; /* largest reassembled command (default 1 MiB; up to 64 MiB) */
    uint32_t max_open_transfers; /* fragmented transfers open at once (default 16) */
    dl_command_fn on_command;    /* first look at every command (may be NULL) */
    dl_midi_fn on_midi;          /* MIDI intake (may be NULL: MIDI is validated and dropped);
                                    with it the device offers DL_CAP_UMP */
    dl_device_event_fn on_event; /* connection news (may be NULL) */
    void *user_data;
} dl_device_config;

dl_device_config dl_device_config_init(void);

/* Allocate a device (nothing is shared yet). Non-real-time. */
dl_result dl_device_create(const dl_device_config *config, dl_device **out);
/* Register in the namespace and create the transport segment. Non-real-time. */
dl_result dl_device_start(dl_device *device);
/* Store STOPPED (hosts disconnect at once), deregister, remove the segment. Idempotent. */
void dl_device_stop(dl_device *device);
void dl_device_destroy(dl_device *device);   /* stop, then free */

/* While stopped (a plugin restoring its state, or a DAW changing rate): the id and format
   the next dl_device_start registers with. DL_WRONG_STATE while running. */
dl_result dl_device_set_id(dl_device *device, const char *id);
dl_result dl_device_set_format(dl_device *device, uint32_t sample_rate, uint32_t block_size);

const char *dl_device_error(const dl_device *device);   /* the last failure, one line */
const char *dl_device_id(const dl_device *device);      /* "Name:N" once started */
int dl_device_running(const dl_device *device);
int dl_device_registered(const dl_device *device);     /* 0 once a scan reclaimed our slot */
uint32_t dl_device_channels(const dl_device *device);
uint32_t dl_device_return_channels(const dl_device *device);
uint32_t dl_device_sample_rate(const dl_device *device); /* current (a Handshake may change it) */
uint32_t dl_device_block_size(const dl_device *device);
uint32_t dl_device_mode(const dl_device *device);
uint32_t dl_device_negotiated_capabilities(const dl_device *device);
uint32_t dl_device_host_pid(const dl_device *device);   /* 0 when unclaimed */
/* Copy the current link tag (<= 63 bytes + NUL) into out. */
void dl_device_link_tag(const dl_device *device, char out[64]);

/* -- real time -- */
/* Stamp the heartbeat, handle every queued command (user callback first, then the default
   handling), flush queued response fragments. Returns the number of messages taken. */
uint32_t dl_device_process_commands(dl_device *device);
int dl_device_claimed(const dl_device *device);          /* a host holds the claim */
/* Demand clock: blocks to render now so that fill_blocks x block_size frames are queued
   (0 when unclaimed, in midi mode, or with fill_blocks 0). */
uint32_t dl_device_blocks_wanted(const dl_device *device);
uint32_t dl_device_queued_frames(const dl_device *device);  /* frames the host has not read */
/* Write `frames` (any count up to 16384) of the device's channels. DL_RING_FULL: an overrun
   (counted while a live host holds the claim); DL_STALE_BLOCK: a new claim came in since
   the last dl_device_process_commands, so this block (rendered for the previous host) was
   dropped; DL_NOT_CONNECTED in midi mode or when not started. */
dl_result dl_device_write_audio(dl_device *device, const float *const *planes, uint32_t frames);
/* Read the host's return audio (zero-filled where missing); frames read. */
uint32_t dl_device_read_return(dl_device *device, float *const *planes, uint32_t channels, uint32_t frames);
/* Answer the host. `dl_device_respond` sends one message as it is (set RESPONSE and
   request_seq yourself, or use the helpers). */
dl_result dl_device_respond(dl_device *device, const dl_message *m);
dl_result dl_device_reply_error(dl_device *device, const dl_command *request, uint32_t code, const char *text);
/* A response payload of any length to `request`, fragmented as needed; fragments that do not
   fit the ring now are queued (inside the device's preallocated outbox) and sent by later
   dl_device_process_commands calls. Fragments leave the ring's last 64 slots free, so that
   single answers (Pong, Error, ...) still go out while a long transfer streams. */
dl_result dl_device_respond_blob(dl_device *device, const dl_command *request, uint16_t type, const void *data, uint32_t len);
void dl_device_set_latency(dl_device *device, uint32_t latency_frames);  /* header, relaxed */
void dl_device_set_xruns(dl_device *device, uint64_t xruns);             /* registry slot, relaxed */
void dl_device_heartbeat(dl_device *device);   /* for loops that skip process_commands */

/* The transport header's shared counters. */
typedef struct dl_counters {
    uint64_t underruns, overruns, commands_dropped, responses_dropped, bad_messages;
    uint64_t return_underruns, return_overruns, blocks_written, blocks_read;
} dl_counters;
void dl_device_counters(const dl_device *device, dl_counters *out);

/* The device's own counters (not shared). */
typedef struct dl_device_stats {
    uint64_t commands_received, responses_sent, errors;
    uint64_t midi_events;        /* delivered to on_midi */
    uint64_t midi_damaged;       /* MidiRaw/UMP damage dropped (no Error, as on a cable) */
    uint64_t midi_untranslatable;/* UMP with no MIDI 1.0 form (dropped) */
} dl_device_stats;
void dl_device_stats_get(const dl_device *device, dl_device_stats *out);

/* ==== Host ================================================================================== */

typedef struct dl_host dl_host;

typedef void (*dl_response_fn)(dl_host *host, const dl_command *response, void *user_data);

typedef struct dl_host_config {
    const char *namespace_name;  /* NULL: $DISCOLINK_NAMESPACE, else "default" */
    const char *link_tag;        /* stored with the claim, for session recall ("" default) */
    uint32_t sample_rate;        /* preferences sent in the Handshake; 0 = no preference */
    uint32_t block_size;
    uint32_t channels;           /* informational */
    uint32_t capabilities;       /* the features this host will use (default AUDIO|MIDI|FRAGMENTS|UMP);
                                    0 = "whatever the device offers" (1.0 behaviour) */
    int return_audio;            /* will write the return ring: adds DL_CAP_RETURN_AUDIO */
    int force;                   /* take a device another live host holds */
    uint32_t handshake_timeout_ms; /* default 2000 */
    uint32_t prime_timeout_ms;   /* after the handshake, wait this long for the first block (500) */
    uint32_t max_transfer_bytes; /* largest reassembled response (default 1 MiB) */
    uint32_t max_open_transfers; /* default 16 */
    dl_response_fn on_response;  /* every response, from dl_host_process_responses (may be NULL) */
    void *user_data;
} dl_host_config;

dl_host_config dl_host_config_init(void);

/* What the handshake settled: the format in effect. */
typedef struct dl_connection {
    char device_id[64];
    char link_tag[64];
    uint32_t device_pid;
    uint32_t sample_rate, block_size, channels, mode, capabilities, return_channels;
    uint16_t version_major, version_minor;
} dl_connection;

typedef enum dl_link_state {
    DL_LINK_CONNECTED = 0,
    DL_LINK_NEVER = 1,           /* not connected yet */
    DL_LINK_HOST_DISCONNECTED,   /* this host disconnected */
    DL_LINK_DEVICE_STOPPED,      /* the device stopped cleanly */
    DL_LINK_CLAIM_TAKEN,         /* another host took the claim over */
    DL_LINK_CLAIM_RELEASED,      /* our claim was released under us */
    DL_LINK_DEVICE_LEFT,         /* the slot no longer holds the device */
    DL_LINK_DEVICE_DIED,         /* the device process is gone (or a zombie) */
    DL_LINK_DEVICE_SILENT        /* the device's heartbeat stopped for LINK_STALE_S */
} dl_link_state;

dl_result dl_host_create(const dl_host_config *config, dl_host **out);
void dl_host_destroy(dl_host *host);                  /* disconnect, then free */
const char *dl_host_error(const dl_host *host);

/* -- non-real-time -- */
/* What the next connect asks for and stores (a DAW's new rate or block size; a restored
   session's tag). They do not touch a link in progress. */
void dl_host_set_format(dl_host *host, uint32_t sample_rate, uint32_t block_size);
dl_result dl_host_set_link_tag(dl_host *host, const char *link_tag);
dl_result dl_host_scan(dl_host *host, dl_device_info *out, uint32_t max, uint32_t *count);
/* Claim `device_id` ("Name:N", or a bare "Name" for its lowest instance), handshake, wait for
   the first block. */
dl_result dl_host_connect(dl_host *host, const char *device_id);
dl_result dl_host_connect_info(dl_host *host, const dl_device_info *device);
/* Session recall (section 8.4): the device whose slot carries `link_tag` and is unclaimed (a
   dead host's claim counts as unclaimed) or ours; else `device_id` (may be NULL). NULL
   link_tag: the configured one. */
dl_result dl_host_recall(dl_host *host, const char *link_tag, const char *device_id);
/* Recall the last device by this host's link tag and the id it last connected to (for a
   reconnect loop on a worker thread while the audio thread keeps reading). */
dl_result dl_host_reconnect(dl_host *host);
/* Send Disconnect, release the claim (the link tag stays for recall), unmap. Idempotent. */
void dl_host_disconnect(dl_host *host);
/* Send a command (fragmented if needed, waiting for ring space) and wait for the response
   whose request_seq names it. DL_REFUSED when the answer is an Error (its text is the
   host's error). *reply gets the response's first message; a longer reassembled payload
   is at dl_host_reply_payload() until the next call. */
dl_result dl_host_request(dl_host *host, uint16_t type, const void *payload, uint32_t len, dl_message *reply, uint32_t timeout_ms);
const uint8_t *dl_host_reply_payload(const dl_host *host, uint32_t *len);
dl_result dl_host_ping(dl_host *host, uint64_t *round_trip_ns);
const dl_connection *dl_host_connection(const dl_host *host);   /* NULL when never connected */
dl_link_state dl_host_link_state(const dl_host *host);
/* Why the link ended: "device process 1234 died", "device stopped", ... ("" while connected). */
const char *dl_host_disconnect_reason(dl_host *host);

/* -- real time -- */
/* Read `frames` (any count) into `channels` planes; zero-fills what the device has not
   provided (and everything while disconnected). Re-checks the device's liveness every
   LINK_CHECK_INTERVAL_S. Returns frames read. */
uint32_t dl_host_read_audio(dl_host *host, float *const *planes, uint32_t channels, uint32_t frames);
/* Write one block to the return ring (only when RETURN_AUDIO was negotiated). */
dl_result dl_host_write_return(dl_host *host, const float *const *planes, uint32_t channels, uint32_t frames);
int dl_host_connected(dl_host *host);   /* also re-checks liveness when a check is due */
dl_result dl_host_send(dl_host *host, const dl_message *m);
/* One MIDI 1.0 message as the most specific command (NoteOn, ..., SysEx fragmented,
   MidiRaw for system messages), at `sample_offset`. */
dl_result dl_host_send_midi(dl_host *host, const uint8_t *data, uint32_t len, uint32_t sample_offset);
/* A payload of any length, fragmented; all fragments or none (DL_RING_FULL). */
dl_result dl_host_send_fragments(dl_host *host, uint16_t type, const void *data, uint32_t len, uint32_t sample_offset);
dl_result dl_host_send_sysex(dl_host *host, const uint8_t *data, uint32_t len, uint32_t sample_offset);
dl_result dl_host_send_ump(dl_host *host, const uint32_t *words, uint32_t count, uint32_t sample_offset);
uint32_t dl_host_process_responses(dl_host *host);
uint32_t dl_host_available_frames(dl_host *host);
uint32_t dl_host_command_space(dl_host *host);    /* commands that fit now */
/* The device's latency as the host hears it: fill_blocks x block_size + latency_frames. */
uint32_t dl_host_latency_frames(dl_host *host);

typedef struct dl_host_stats {
    uint64_t blocks_read, underruns;          /* this connection's reads, and short ones */
    uint64_t commands_sent, commands_dropped;
    uint64_t responses_received, errors_received;
    uint64_t return_overruns;
    uint64_t errors;                          /* local failures (corrupt rings, bad fragments) */
} dl_host_stats;
void dl_host_stats_get(const dl_host *host, dl_host_stats *out);
void dl_host_counters(const dl_host *host, dl_counters *out);  /* the device's shared counters */

#ifdef __cplusplus
}
#endif
#endif /* DISCOLINK_H */

/* =============================================================================================
   IMPLEMENTATION
   ============================================================================================= */
#ifdef DISCOLINK_IMPLEMENTATION
#ifndef DISCOLINK_IMPLEMENTATION_INCLUDED
#define DISCOLINK_IMPLEMENTATION_INCLUDED

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#if !defined(__cplusplus) && defined(__GLIBC__) && !defined(__USE_MISC)
#  error "discolink.h: the implementation needs POSIX and BSD declarations (shm_open, flock, kill): include discolink.h before any other header in the file that defines DISCOLINK_IMPLEMENTATION, or compile it with -D_DEFAULT_SOURCE or -std=gnu11"
#endif
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Memory orderings exactly as the layout tables name them. */
#define DL__LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define DL__LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define DL__STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define DL__STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define DL__COUNT(p) ((void)__atomic_add_fetch((p), 1, __ATOMIC_RELAXED)) /* single-writer counters */

#define DL__HOST_CHECK_INTERVAL_NS 250000000ull  /* a device re-checks its host's pid this often */
#define DL__HEARTBEAT_EVERY_NS (DL_HEARTBEAT_INTERVAL_NS / 5)  /* stamp well inside the limit */
#define DL__ZOMBIE_CHECK_NS (2 * DL_HEARTBEAT_INTERVAL_NS)     /* heartbeat age before /proc is read */
#define DL__OUTBOX_ITEMS 16
/* Queued response fragments never take the last slots of the response ring, so that a
   single answer (Pong, HandshakeAck, Error) still finds room while a long transfer streams. */
#define DL__RESPONSE_HEADROOM 64
#define DL__RETIRED_MAPS 8

#if defined(__GNUC__)
#  define DL__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#  define DL__PRINTF(f, a)
#endif

static void dl__fmt(char *buf, size_t size, const char *fmt, ...) DL__PRINTF(3, 4);
static void dl__fmt(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    if (buf == NULL || size == 0) return;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

/* Copy a NUL-padded char[N] field out, always terminated. */
static void dl__field_str(char *out, size_t out_size, const char *field, size_t field_size)
{
    size_t n = 0;
    while (n < field_size && n + 1 < out_size && field[n]) n++;
    memcpy(out, field, n);
    out[n] = 0;
}

/* ==== Results, time ========================================================================= */

const char *dl_result_name(dl_result result)
{
    switch (result) {
    case DL_SUCCESS: return "DL_SUCCESS";
    case DL_ERROR: return "DL_ERROR";
    case DL_INVALID_ARGS: return "DL_INVALID_ARGS";
    case DL_OUT_OF_MEMORY: return "DL_OUT_OF_MEMORY";
    case DL_SYSTEM_ERROR: return "DL_SYSTEM_ERROR";
    case DL_NOT_FOUND: return "DL_NOT_FOUND";
    case DL_ID_TAKEN: return "DL_ID_TAKEN";
    case DL_REGISTRY_FULL: return "DL_REGISTRY_FULL";
    case DL_BAD_REGISTRY: return "DL_BAD_REGISTRY";
    case DL_BAD_SEGMENT: return "DL_BAD_SEGMENT";
    case DL_CLAIMED: return "DL_CLAIMED";
    case DL_TIMEOUT: return "DL_TIMEOUT";
    case DL_REFUSED: return "DL_REFUSED";
    case DL_VERSION_MISMATCH: return "DL_VERSION_MISMATCH";
    case DL_NOT_CONNECTED: return "DL_NOT_CONNECTED";
    case DL_RING_FULL: return "DL_RING_FULL";
    case DL_CORRUPT: return "DL_CORRUPT";
    case DL_WRONG_STATE: return "DL_WRONG_STATE";
    case DL_STALE_BLOCK: return "DL_STALE_BLOCK";
    case DL_SLOT_LOST: return "DL_SLOT_LOST";
    }
    return "DL_UNKNOWN_RESULT";
}

uint64_t dl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void dl_sleep_ns(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    nanosleep(&ts, NULL);
}

/* ==== Command table, messages, builders ===================================================== */

static const dl_command_info dl__commands[] = {
#define DL__ROW(code, upper, name, rf, rt, sf, st, frag, midi) {code, name, rf, rt, sf, st, frag, midi},
    DL_COMMAND_TABLE(DL__ROW)
#undef DL__ROW
};

const dl_command_info *dl_command_find(uint16_t type)
{
    size_t i;
    for (i = 0; i < sizeof(dl__commands) / sizeof(dl__commands[0]); i++)
        if (dl__commands[i].code == type) return &dl__commands[i];
    return NULL;
}

const char *dl_command_name(uint16_t type)
{
    const dl_command_info *info = dl_command_find(type);
    return info ? info->name : "Unknown";
}

const char *dl_mode_label(uint32_t mode)
{
    static const char *const labels[] = DL_MODE_LABELS;
    return mode < sizeof(labels) / sizeof(labels[0]) ? labels[mode] : "?";
}

static uint32_t dl__seq_counter;
static uint32_t dl__transfer_counter;

uint32_t dl_next_seq(void)
{
    uint32_t s;
    do s = __atomic_add_fetch(&dl__seq_counter, 1, __ATOMIC_RELAXED); while (s == 0);
    return s;
}

uint32_t dl_next_transfer_id(void)
{
    uint32_t s;
    do s = __atomic_add_fetch(&dl__transfer_counter, 1, __ATOMIC_RELAXED); while (s == 0);
    return s;
}

void dl_message_init(dl_message *m, uint16_t type)
{
    memset(m, 0, sizeof(*m));
    m->header.type = type;
    m->header.seq = dl_next_seq();
}

dl_result dl_message_set_payload(dl_message *m, const void *data, uint32_t len)
{
    if (len > DL_MESSAGE_PAYLOAD_SIZE || (len && data == NULL)) return DL_INVALID_ARGS;
    if (len) memmove(m->payload, data, len);
    memset(m->payload + len, 0, DL_MESSAGE_PAYLOAD_SIZE - len);
    m->header.payload_len = len;
    return DL_SUCCESS;
}

static void dl__small(dl_message *m, uint16_t type, uint32_t sample_offset, const uint8_t *p, uint32_t n)
{
    dl_message_init(m, type);
    m->header.sample_offset = sample_offset;
    memcpy(m->payload, p, n);
    m->header.payload_len = n;
}

/* NoteOn, NoteOff and ControlChange share one layout: u8 channel, u8 data1, u8 data2. */
DL_STATIC_ASSERT(DL_PAYLOAD_NOTE_OFF_NOTE_OFFSET == DL_PAYLOAD_NOTE_ON_NOTE_OFFSET &&
                 DL_PAYLOAD_NOTE_OFF_VELOCITY_OFFSET == DL_PAYLOAD_NOTE_ON_VELOCITY_OFFSET &&
                 DL_PAYLOAD_CONTROL_CHANGE_CONTROLLER_OFFSET == DL_PAYLOAD_NOTE_ON_NOTE_OFFSET &&
                 DL_PAYLOAD_CONTROL_CHANGE_VALUE_OFFSET == DL_PAYLOAD_NOTE_ON_VELOCITY_OFFSET &&
                 DL_PAYLOAD_NOTE_OFF_FIXED_SIZE == DL_PAYLOAD_NOTE_ON_FIXED_SIZE &&
                 DL_PAYLOAD_CONTROL_CHANGE_FIXED_SIZE == DL_PAYLOAD_NOTE_ON_FIXED_SIZE,
                 "channel voice commands with two data bytes share a layout");

static dl_result dl__channel_data2(dl_message *m, uint16_t type, uint8_t channel, uint8_t data1, uint8_t data2,
                                   uint32_t sample_offset)
{
    uint8_t p[DL_PAYLOAD_NOTE_ON_FIXED_SIZE];
    if (channel > 15 || data1 > 127 || data2 > 127) return DL_INVALID_ARGS;
    p[DL_PAYLOAD_NOTE_ON_CHANNEL_OFFSET] = channel;
    p[DL_PAYLOAD_NOTE_ON_NOTE_OFFSET] = data1;
    p[DL_PAYLOAD_NOTE_ON_VELOCITY_OFFSET] = data2;
    dl__small(m, type, sample_offset, p, sizeof(p));
    return DL_SUCCESS;
}

dl_result dl_cmd_note_on(dl_message *m, uint8_t channel, uint8_t note, uint8_t velocity, uint32_t sample_offset)
{
    return dl__channel_data2(m, DL_CMD_NOTE_ON, channel, note, velocity, sample_offset);
}

dl_result dl_cmd_note_off(dl_message *m, uint8_t channel, uint8_t note, uint8_t velocity, uint32_t sample_offset)
{
    return dl__channel_data2(m, DL_CMD_NOTE_OFF, channel, note, velocity, sample_offset);
}

dl_result dl_cmd_control_change(dl_message *m, uint8_t channel, uint8_t controller, uint8_t value, uint32_t sample_offset)
{
    return dl__channel_data2(m, DL_CMD_CONTROL_CHANGE, channel, controller, value, sample_offset);
}

dl_result dl_cmd_pitch_bend(dl_message *m, uint8_t channel, uint16_t value, uint32_t sample_offset)
{
    uint8_t p[DL_PAYLOAD_PITCH_BEND_FIXED_SIZE];
    if (channel > 15 || value > 16383) return DL_INVALID_ARGS;
    p[DL_PAYLOAD_PITCH_BEND_CHANNEL_OFFSET] = channel;
    p[DL_PAYLOAD_PITCH_BEND_RESERVED_OFFSET] = 0;
    dl_put_u16(p + DL_PAYLOAD_PITCH_BEND_VALUE_OFFSET, value);
    dl__small(m, DL_CMD_PITCH_BEND, sample_offset, p, sizeof(p));
    return DL_SUCCESS;
}

dl_result dl_cmd_program_change(dl_message *m, uint8_t channel, uint8_t program, uint32_t sample_offset)
{
    uint8_t p[DL_PAYLOAD_PROGRAM_CHANGE_FIXED_SIZE];
    if (channel > 15 || program > 127) return DL_INVALID_ARGS;
    p[DL_PAYLOAD_PROGRAM_CHANGE_CHANNEL_OFFSET] = channel;
    p[DL_PAYLOAD_PROGRAM_CHANGE_PROGRAM_OFFSET] = program;
    dl__small(m, DL_CMD_PROGRAM_CHANGE, sample_offset, p, sizeof(p));
    return DL_SUCCESS;
}

static dl_result dl__aftertouch(dl_message *m, uint8_t channel, uint8_t poly, uint8_t note, uint8_t pressure, uint32_t sample_offset)
{
    uint8_t p[DL_PAYLOAD_AFTERTOUCH_FIXED_SIZE];
    if (channel > 15 || note > 127 || pressure > 127) return DL_INVALID_ARGS;
    p[DL_PAYLOAD_AFTERTOUCH_CHANNEL_OFFSET] = channel;
    p[DL_PAYLOAD_AFTERTOUCH_POLY_OFFSET] = poly;
    p[DL_PAYLOAD_AFTERTOUCH_NOTE_OFFSET] = note;
    p[DL_PAYLOAD_AFTERTOUCH_PRESSURE_OFFSET] = pressure;
    dl__small(m, DL_CMD_AFTERTOUCH, sample_offset, p, sizeof(p));
    return DL_SUCCESS;
}

dl_result dl_cmd_channel_pressure(dl_message *m, uint8_t channel, uint8_t pressure, uint32_t sample_offset)
{
    return dl__aftertouch(m, channel, 0, 0, pressure, sample_offset);
}

dl_result dl_cmd_poly_pressure(dl_message *m, uint8_t channel, uint8_t note, uint8_t pressure, uint32_t sample_offset)
{
    return dl__aftertouch(m, channel, 1, note, pressure, sample_offset);
}

dl_result dl_cmd_midi_raw(dl_message *m, const uint8_t *data, uint32_t len, uint32_t sample_offset)
{
    if (data == NULL || len == 0 || len > DL_MESSAGE_PAYLOAD_SIZE) return DL_INVALID_ARGS;
    dl__small(m, DL_CMD_MIDI_RAW, sample_offset, data, len);
    return DL_SUCCESS;
}

static int dl__sysex_ok(const uint8_t *data, uint32_t len)
{
    uint32_t i;
    if (data == NULL || len < 2 || data[0] != 0xF0 || data[len - 1] != 0xF7) return 0;
    for (i = 1; i + 1 < len; i++)
        if (data[i] >= 0x80) return 0;
    return 1;
}

dl_result dl_cmd_sysex(dl_message *m, const uint8_t *data, uint32_t len, uint32_t sample_offset)
{
    if (!dl__sysex_ok(data, len) || len > DL_MESSAGE_PAYLOAD_SIZE) return DL_INVALID_ARGS;
    dl__small(m, DL_CMD_SYSEX, sample_offset, data, len);
    return DL_SUCCESS;
}

dl_result dl_cmd_ump(dl_message *m, const uint32_t *words, uint32_t count, uint32_t sample_offset)
{
    uint32_t i;
    if (words == NULL || count == 0 || count > DL_MESSAGE_PAYLOAD_SIZE / 4) return DL_INVALID_ARGS;
    dl_message_init(m, DL_CMD_UMP);
    m->header.sample_offset = sample_offset;
    for (i = 0; i < count; i++) dl_put_u32(m->payload + 4 * i, words[i]);
    m->header.payload_len = 4 * count;
    return DL_SUCCESS;
}

dl_result dl_cmd_ping(dl_message *m, uint64_t sent_ns)
{
    dl_message_init(m, DL_CMD_PING);
    dl_put_u64(m->payload + DL_PAYLOAD_PING_SENT_NS_OFFSET, sent_ns);
    m->header.payload_len = DL_PAYLOAD_PING_FIXED_SIZE;
    return DL_SUCCESS;
}

dl_result dl_cmd_set_transport_mode(dl_message *m, uint32_t mode)
{
    dl_message_init(m, DL_CMD_SET_TRANSPORT_MODE);
    dl_put_u32(m->payload + DL_PAYLOAD_SET_TRANSPORT_MODE_MODE_OFFSET, mode);
    m->header.payload_len = DL_PAYLOAD_SET_TRANSPORT_MODE_FIXED_SIZE;
    return DL_SUCCESS;
}

dl_result dl_cmd_disconnect(dl_message *m, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    if (n > DL_MESSAGE_PAYLOAD_SIZE) n = DL_MESSAGE_PAYLOAD_SIZE;
    dl_message_init(m, DL_CMD_DISCONNECT);
    if (n) memcpy(m->payload, reason, n);
    m->header.payload_len = (uint32_t)n;
    return DL_SUCCESS;
}

static dl_result dl__parameter(dl_message *m, uint16_t type, int32_t index, const char *name, float value,
                               uint32_t name_offset, uint32_t size)
{
    size_t n = name ? strlen(name) : 0;
    if (n > 63 || (index == -1 && n == 0)) return DL_INVALID_ARGS;
    dl_message_init(m, type);
    dl_put_u32(m->payload, (uint32_t)index);
    if (type == DL_CMD_SET_PARAMETER) {
        uint32_t bits;
        memcpy(&bits, &value, 4);
        dl_put_u32(m->payload + DL_PAYLOAD_SET_PARAMETER_VALUE_OFFSET, bits);
    }
    if (n) memcpy(m->payload + name_offset, name, n);
    m->header.payload_len = size;
    return DL_SUCCESS;
}

dl_result dl_cmd_set_parameter(dl_message *m, int32_t index, const char *name, float value)
{
    return dl__parameter(m, DL_CMD_SET_PARAMETER, index, name, value, DL_PAYLOAD_SET_PARAMETER_NAME_OFFSET,
                         DL_PAYLOAD_SET_PARAMETER_FIXED_SIZE);
}

dl_result dl_cmd_get_parameter(dl_message *m, int32_t index, const char *name)
{
    return dl__parameter(m, DL_CMD_GET_PARAMETER, index, name, 0.0f, DL_PAYLOAD_GET_PARAMETER_NAME_OFFSET,
                         DL_PAYLOAD_GET_PARAMETER_FIXED_SIZE);
}

uint32_t dl_fragment_count(uint32_t len)
{
    return len <= DL_MESSAGE_PAYLOAD_SIZE ? 1 : (len + DL_MESSAGE_PAYLOAD_SIZE - 1) / DL_MESSAGE_PAYLOAD_SIZE;
}

dl_result dl_cmd_fragment(dl_message *m, uint16_t type, const void *data, uint32_t len, uint32_t index,
                          uint32_t transfer_id, uint32_t sample_offset)
{
    uint32_t count = dl_fragment_count(len), start, n;
    if (index >= count || (len && data == NULL)) return DL_INVALID_ARGS;
    dl_message_init(m, type);
    m->header.sample_offset = sample_offset;
    if (count == 1) {
        if (len) memcpy(m->payload, data, len);
        m->header.payload_len = len;
        return DL_SUCCESS;
    }
    if (transfer_id == 0) return DL_INVALID_ARGS;
    start = index * DL_MESSAGE_PAYLOAD_SIZE;
    n = len - start < DL_MESSAGE_PAYLOAD_SIZE ? len - start : DL_MESSAGE_PAYLOAD_SIZE;
    memcpy(m->payload, (const uint8_t *)data + start, n);
    m->header.payload_len = n;
    m->header.flags = DL_FLAG_FRAGMENT;
    m->header.frag_index = index;
    m->header.frag_count = count;
    m->header.transfer_id = transfer_id;
    return DL_SUCCESS;
}

static void dl__handshake_put(uint8_t *p, const dl_handshake *h)
{
    dl_put_u16(p + DL_PAYLOAD_HANDSHAKE_VERSION_MAJOR_OFFSET, h->version_major);
    dl_put_u16(p + DL_PAYLOAD_HANDSHAKE_VERSION_MINOR_OFFSET, h->version_minor);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_CAPABILITIES_OFFSET, h->capabilities);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_SAMPLE_RATE_OFFSET, h->sample_rate);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_BLOCK_SIZE_OFFSET, h->block_size);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_CHANNELS_OFFSET, h->channels);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_MODE_OFFSET, h->mode);
    dl_put_u32(p + DL_PAYLOAD_HANDSHAKE_RETURN_CHANNELS_OFFSET, h->return_channels);
}
DL_STATIC_ASSERT(DL_PAYLOAD_HANDSHAKE_ACK_SAMPLE_RATE_OFFSET == DL_PAYLOAD_HANDSHAKE_SAMPLE_RATE_OFFSET &&
                 DL_PAYLOAD_HANDSHAKE_ACK_FIXED_SIZE == DL_PAYLOAD_HANDSHAKE_FIXED_SIZE,
                 "Handshake and HandshakeAck share one layout");

dl_result dl_cmd_handshake(dl_message *m, const dl_handshake *handshake)
{
    if (handshake == NULL) return DL_INVALID_ARGS;
    dl_message_init(m, DL_CMD_HANDSHAKE);
    dl__handshake_put(m->payload, handshake);
    m->header.payload_len = DL_PAYLOAD_HANDSHAKE_FIXED_SIZE;
    return DL_SUCCESS;
}

dl_result dl_handshake_decode(const uint8_t *p, uint32_t len, dl_handshake *out)
{
    if (p == NULL || out == NULL || len < DL_PAYLOAD_HANDSHAKE_FIXED_SIZE) return DL_INVALID_ARGS;
    out->version_major = dl_get_u16(p + DL_PAYLOAD_HANDSHAKE_VERSION_MAJOR_OFFSET);
    out->version_minor = dl_get_u16(p + DL_PAYLOAD_HANDSHAKE_VERSION_MINOR_OFFSET);
    out->capabilities = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_CAPABILITIES_OFFSET);
    out->sample_rate = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_SAMPLE_RATE_OFFSET);
    out->block_size = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_BLOCK_SIZE_OFFSET);
    out->channels = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_CHANNELS_OFFSET);
    out->mode = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_MODE_OFFSET);
    out->return_channels = dl_get_u32(p + DL_PAYLOAD_HANDSHAKE_RETURN_CHANNELS_OFFSET);
    return DL_SUCCESS;
}

uint32_t dl_ump_midi1(uint8_t group, uint8_t status, uint8_t data1, uint8_t data2)
{
    return (0x2u << 28) | ((uint32_t)(group & 15) << 24) | ((uint32_t)status << 16) |
           ((uint32_t)(data1 & 0x7F) << 8) | (uint32_t)(data2 & 0x7F);
}

static uint32_t dl__ump2(uint32_t words[2], uint8_t group, uint8_t opcode, uint8_t channel, uint8_t b2, uint8_t b3,
                         uint32_t word1)
{
    words[0] = (0x4u << 28) | ((uint32_t)(group & 15) << 24) | ((uint32_t)(opcode & 15) << 20) |
               ((uint32_t)(channel & 15) << 16) | ((uint32_t)b2 << 8) | b3;
    words[1] = word1;
    return 2;
}

uint32_t dl_ump_note_on(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t note, uint16_t velocity)
{
    return dl__ump2(words, group, 0x9, channel, note & 0x7F, 0, (uint32_t)velocity << 16);
}

uint32_t dl_ump_note_off(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t note, uint16_t velocity)
{
    return dl__ump2(words, group, 0x8, channel, note & 0x7F, 0, (uint32_t)velocity << 16);
}

uint32_t dl_ump_control_change(uint32_t words[2], uint8_t group, uint8_t channel, uint8_t index, uint32_t value)
{
    return dl__ump2(words, group, 0xB, channel, index & 0x7F, 0, value);
}

uint32_t dl_ump_pitch_bend(uint32_t words[2], uint8_t group, uint8_t channel, uint32_t value)
{
    return dl__ump2(words, group, 0xE, channel, 0, 0, value);
}

uint32_t dl_midi_message_length(uint8_t status)
{
    if (status < 0x80) return 0;
    if (status < 0xF0) return ((status & 0xF0) == 0xC0 || (status & 0xF0) == 0xD0) ? 2 : 3;
    switch (status) {
    case 0xF1: case 0xF3: return 2;
    case 0xF2: return 3;
    case 0xF6: case 0xF8: case 0xFA: case 0xFB: case 0xFC: case 0xFE: case 0xFF: return 1;
    default: return 0; /* F0 (SysEx: variable), F4 F5 F7 F9 FD (undefined) */
    }
}

/* ==== Rings ================================================================================= */

int32_t dl_audio_ring_write(dl_audio_ring *ring, const float *const *planes, uint32_t channels, uint32_t frames)
{
    uint32_t cap = ring->capacity, w, r, fill, pos, first, c;
    w = DL__LOAD_RLX(&ring->control->write_index); /* our own index */
    r = DL__LOAD_ACQ(&ring->control->read_index);
    fill = w - r;
    if (fill > cap) return DL_CORRUPT;
    if (frames == 0 || frames > cap - fill) return 0;
    pos = w & (cap - 1);
    first = cap - pos < frames ? cap - pos : frames;
    for (c = 0; c < ring->channels; c++) {
        float *dst = ring->data + (size_t)c * cap;
        const float *src = (planes != NULL && c < channels) ? planes[c] : NULL;
        if (src != NULL) {
            memcpy(dst + pos, src, (size_t)first * 4);
            if (frames > first) memcpy(dst, src + first, (size_t)(frames - first) * 4);
        } else {
            memset(dst + pos, 0, (size_t)first * 4);
            if (frames > first) memset(dst, 0, (size_t)(frames - first) * 4);
        }
    }
    DL__STORE_REL(&ring->control->write_index, w + frames); /* publishes the data above */
    return (int32_t)frames;
}

static void dl__zero_planes(float *const *planes, uint32_t channels, uint32_t from, uint32_t frames)
{
    uint32_t c;
    if (planes == NULL || from >= frames) return;
    for (c = 0; c < channels; c++)
        if (planes[c] != NULL) memset(planes[c] + from, 0, (size_t)(frames - from) * 4);
}

int32_t dl_audio_ring_read(dl_audio_ring *ring, float *const *planes, uint32_t channels, uint32_t frames)
{
    uint32_t cap = ring->capacity, w, r, avail, n, pos, first, c;
    w = DL__LOAD_ACQ(&ring->control->write_index); /* makes the producer's data visible */
    r = DL__LOAD_RLX(&ring->control->read_index);  /* our own index */
    avail = w - r;
    if (avail > cap) {
        dl__zero_planes(planes, channels, 0, frames);
        return DL_CORRUPT;
    }
    n = avail < frames ? avail : frames;
    pos = r & (cap - 1);
    first = cap - pos < n ? cap - pos : n;
    for (c = 0; c < channels && planes != NULL; c++) {
        float *dst = planes[c];
        if (dst == NULL) continue;
        if (c < ring->channels) {
            const float *src = ring->data + (size_t)c * cap;
            memcpy(dst, src + pos, (size_t)first * 4);
            if (n > first) memcpy(dst + first, src, (size_t)(n - first) * 4);
            if (frames > n) memset(dst + n, 0, (size_t)(frames - n) * 4);
        } else {
            memset(dst, 0, (size_t)frames * 4);
        }
    }
    if (n > 0) DL__STORE_REL(&ring->control->read_index, r + n); /* after the copy */
    return (int32_t)n;
}

uint32_t dl_ring_fill(const dl_ring_control *control)
{
    return DL__LOAD_ACQ(&control->write_index) - DL__LOAD_ACQ(&control->read_index);
}

uint32_t dl_ring_discard(dl_ring_control *control)
{
    uint32_t w = DL__LOAD_ACQ(&control->write_index), r = DL__LOAD_RLX(&control->read_index);
    DL__STORE_REL(&control->read_index, w);
    return w - r;
}

uint32_t dl_ring_discard_to(dl_ring_control *control, uint32_t index)
{
    uint32_t w = DL__LOAD_ACQ(&control->write_index), r = DL__LOAD_RLX(&control->read_index);
    if (index - r > w - r) return dl_ring_discard(control);
    DL__STORE_REL(&control->read_index, index);
    return index - r;
}

int32_t dl_message_ring_push(dl_message_ring *ring, const dl_message *m)
{
    uint32_t w = DL__LOAD_RLX(&ring->control->write_index), r = DL__LOAD_ACQ(&ring->control->read_index);
    uint32_t fill = w - r;
    if (fill > ring->capacity) return DL_CORRUPT;
    if (fill == ring->capacity) return 0;
    memcpy(&ring->slots[w & (ring->capacity - 1)], m, sizeof(dl_message));
    DL__STORE_REL(&ring->control->write_index, w + 1);
    return 1;
}

int32_t dl_message_ring_pop(dl_message_ring *ring, dl_message *m)
{
    uint32_t w = DL__LOAD_ACQ(&ring->control->write_index), r = DL__LOAD_RLX(&ring->control->read_index);
    uint32_t fill = w - r;
    if (fill > ring->capacity) return DL_CORRUPT;
    if (fill == 0) return 0;
    memcpy(m, &ring->slots[r & (ring->capacity - 1)], sizeof(dl_message));
    DL__STORE_REL(&ring->control->read_index, r + 1);
    return 1;
}

uint32_t dl_message_ring_space(const dl_message_ring *ring)
{
    uint32_t fill = dl_ring_fill(ring->control);
    return fill > ring->capacity ? 0 : ring->capacity - fill;
}

/* ==== Text checks: namespaces, ids, link tags ================================================ */

/* 0 if s[0..len) is valid UTF-8 without control characters (C0, DEL, C1) and without '/';
   else 1 and a description of the fault in why. */
static int dl__text_fault(const char *s, size_t len, char *why, size_t why_size)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t k, extra;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7F) {
                dl__fmt(why, why_size, "contains a control character (U+%04X) at byte %zu", c, i);
                return 1;
            }
            if (c == '/') {
                dl__fmt(why, why_size, "contains '/'");
                return 1;
            }
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) { extra = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { extra = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { extra = 3; cp = c & 0x07; }
        else { dl__fmt(why, why_size, "is not valid UTF-8 (byte %zu)", i); return 1; }
        if (i + extra >= len) { /* not enough bytes left */
            dl__fmt(why, why_size, "is not valid UTF-8 (cut at byte %zu)", i);
            return 1;
        }
        for (k = 1; k <= extra; k++) {
            unsigned char cc = (unsigned char)s[i + k];
            if ((cc & 0xC0) != 0x80) { dl__fmt(why, why_size, "is not valid UTF-8 (byte %zu)", i + k); return 1; }
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
            dl__fmt(why, why_size, "is not valid UTF-8 (byte %zu)", i);
            return 1;
        }
        if (cp >= 0x80 && cp <= 0x9F) {
            dl__fmt(why, why_size, "contains a control character (U+%04X) at byte %zu", cp, i);
            return 1;
        }
        i += extra + 1;
    }
    return 0;
}

dl_result dl_namespace_resolve(const char *requested, char out[DL_NAMESPACE_MAX_CHARS + 1], char *error, size_t error_size)
{
    const char *ns = requested ? requested : getenv("DISCOLINK_NAMESPACE");
    size_t i, n;
    if (ns == NULL) ns = "default";
    n = strlen(ns);
    for (i = 0; i < n; i++) {
        char c = ns[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            break;
    }
    if (n == 0 || n > DL_NAMESPACE_MAX_CHARS || i < n) {
        dl__fmt(error, error_size, "invalid namespace '%.40s': use 1 to %d characters from A-Z a-z 0-9 _ . -", ns,
                DL_NAMESPACE_MAX_CHARS);
        return DL_INVALID_ARGS;
    }
    memcpy(out, ns, n + 1);
    return DL_SUCCESS;
}

/* Split "Name" / "Name:N" (protocol 1.1 grammar). name gets the Name; *instance N or -1. */
static dl_result dl__parse_id(const char *id, char name[DL_ID_NAME_MAX_BYTES + 1], int32_t *instance, char *error, size_t error_size)
{
    const char *colon;
    size_t name_len, digits, i;
    char why[96];
    uint32_t value = 0;
    if (id == NULL || id[0] == 0) {
        dl__fmt(error, error_size, "device id is empty");
        return DL_INVALID_ARGS;
    }
    colon = strchr(id, ':');
    name_len = colon ? (size_t)(colon - id) : strlen(id);
    if (name_len == 0) {
        dl__fmt(error, error_size, "device id '%.70s': the name before ':' is empty", id);
        return DL_INVALID_ARGS;
    }
    if (name_len > DL_ID_NAME_MAX_BYTES) {
        dl__fmt(error, error_size, "device id '%.70s' is too long: its name is %zu bytes UTF-8, at most %d", id, name_len,
                DL_ID_NAME_MAX_BYTES);
        return DL_INVALID_ARGS;
    }
    if (dl__text_fault(id, name_len, why, sizeof(why))) {
        dl__fmt(error, error_size, "device id '%.70s' %s", id, why);
        return DL_INVALID_ARGS;
    }
    *instance = -1;
    if (colon) {
        const char *digits_text = colon + 1;
        digits = strlen(digits_text);
        for (i = 0; i < digits; i++)
            if (digits_text[i] < '0' || digits_text[i] > '9') break;
        if (digits == 0 || digits > 5 || i < digits) {
            dl__fmt(error, error_size, "device id '%.70s': the instance after ':' must be 1 to 5 decimal digits", id);
            return DL_INVALID_ARGS;
        }
        for (i = 0; i < digits; i++) value = value * 10 + (uint32_t)(digits_text[i] - '0');
        if (value > DL_ID_INSTANCE_MAX) {
            dl__fmt(error, error_size, "device id '%.70s': instance %u exceeds %d", id, value, DL_ID_INSTANCE_MAX);
            return DL_INVALID_ARGS;
        }
        *instance = (int32_t)value;
    }
    memcpy(name, id, name_len);
    name[name_len] = 0;
    return DL_SUCCESS;
}

dl_result dl_validate_device_id(const char *id, char *error, size_t error_size)
{
    char name[DL_ID_NAME_MAX_BYTES + 1];
    int32_t instance;
    return dl__parse_id(id, name, &instance, error, error_size);
}

dl_result dl_validate_link_tag(const char *tag, char *error, size_t error_size)
{
    char why[96];
    size_t n = tag ? strlen(tag) : 0;
    if (n > DL_LINK_TAG_MAX_BYTES) {
        dl__fmt(error, error_size, "link tag '%.40s...' is too long: %zu bytes UTF-8, at most %d", tag, n, DL_LINK_TAG_MAX_BYTES);
        return DL_INVALID_ARGS;
    }
    if (n && dl__text_fault(tag, n, why, sizeof(why))) {
        dl__fmt(error, error_size, "link tag '%.63s' %s", tag, why);
        return DL_INVALID_ARGS;
    }
    return DL_SUCCESS;
}

/* ==== Liveness ============================================================================= */

static int dl__pid_exists(uint32_t pid)
{
    if (pid == 0 || pid > (uint32_t)INT_MAX) return 0;
    if (kill((pid_t)pid, 0) == 0) return 1;
    return errno == EPERM; /* exists, owned by someone else */
}

int dl_pid_alive(uint32_t pid)
{
    if (!dl__pid_exists(pid)) return 0;
#ifdef __linux__
    {
        char path[48], stat_text[512];
        ssize_t n;
        int fd;
        char *paren;
        snprintf(path, sizeof(path), "/proc/%u/stat", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        n = read(fd, stat_text, sizeof(stat_text) - 1);
        close(fd);
        if (n <= 0) return 0;
        stat_text[n] = 0;
        paren = strrchr(stat_text, ')'); /* the command name may itself contain ')' or spaces */
        if (paren == NULL || paren[1] == 0 || paren[2] == 0) return 0;
        return paren[2] != 'Z' && paren[2] != 'X';
    }
#else
    return 1;
#endif
}

/* ==== Shared memory ========================================================================= */

static void dl__registry_name(char *out, size_t size, const char *ns)
{
    snprintf(out, size, "/discolink-%u-%s-registry", (unsigned)getuid(), ns);
}

static void dl__transport_name(char *out, size_t size, const char *ns, uint32_t slot, uint32_t pid)
{
    snprintf(out, size, "/discolink-%u-%s-dev%u-%u", (unsigned)getuid(), ns, slot, pid);
}

static void *dl__reserve(size_t bytes)
{
    void *p;
    if (bytes == 0) return NULL;
    p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

#ifndef MAP_POPULATE
#  define MAP_POPULATE 0
#endif

/* The four rings of a segment, where its header puts them (section 4.2): one place for the
   device that laid them out and the host that validated them. */
static void dl__bind_rings(uint8_t *seg, const dl_transport_header *h, dl_message_ring *commands, dl_message_ring *responses,
                           dl_audio_ring *audio, int *has_audio, dl_audio_ring *ret, int *has_return)
{
    commands->control = (dl_ring_control *)(void *)(seg + h->command_ring_offset);
    commands->slots = (dl_message *)(void *)(seg + h->command_ring_offset + DL_RING_CONTROL_SIZE);
    commands->capacity = h->message_slots;
    responses->control = (dl_ring_control *)(void *)(seg + h->response_ring_offset);
    responses->slots = (dl_message *)(void *)(seg + h->response_ring_offset + DL_RING_CONTROL_SIZE);
    responses->capacity = h->message_slots;
    *has_audio = h->audio_ring_offset != 0 && h->channels > 0;
    if (*has_audio) {
        audio->control = (dl_ring_control *)(void *)(seg + h->audio_ring_offset);
        audio->data = (float *)(void *)(seg + h->audio_ring_offset + DL_RING_CONTROL_SIZE);
        audio->channels = h->channels;
        audio->capacity = h->audio_frames;
    }
    *has_return = h->return_ring_offset != 0 && h->return_channels > 0;
    if (*has_return) {
        ret->control = (dl_ring_control *)(void *)(seg + h->return_ring_offset);
        ret->data = (float *)(void *)(seg + h->return_ring_offset + DL_RING_CONTROL_SIZE);
        ret->channels = h->return_channels;
        ret->capacity = h->audio_frames;
    }
}

/* ==== Registry ============================================================================== */

typedef struct dl__registry {
    char ns[DL_NAMESPACE_MAX_CHARS + 1];
    char name[96];
    int fd;                 /* -1 while not open; flock'ed for the registry lock */
    int creator;            /* 1: creates a missing registry (devices); 0: only looks (hosts) */
    uint8_t *map;
    /* Mappings of registries that a cleanup removed under us: kept mapped, because slot
       pointers into them may still be read by a real-time thread. */
    void *retired[DL__RETIRED_MAPS];
    int retired_count;
    pthread_mutex_t mutex;  /* the flock is per open file; threads of one handle queue here */
} dl__registry;

static void dl__registry_init(dl__registry *reg, const char *ns, int creator)
{
    memset(reg, 0, sizeof(*reg));
    snprintf(reg->ns, sizeof(reg->ns), "%s", ns);
    dl__registry_name(reg->name, sizeof(reg->name), ns);
    reg->fd = -1;
    reg->creator = creator;
    pthread_mutex_init(&reg->mutex, NULL);
}

static void dl__registry_close_fd(dl__registry *reg)
{
    if (reg->fd >= 0) close(reg->fd);
    reg->fd = -1;
    if (reg->map != NULL) {
        if (reg->retired_count < DL__RETIRED_MAPS) reg->retired[reg->retired_count++] = reg->map;
        /* else: left mapped for the life of the process (4 KiB each; it takes 8 removals) */
        reg->map = NULL;
    }
}

static void dl__registry_free(dl__registry *reg)
{
    int i;
    if (reg->fd >= 0) close(reg->fd);
    reg->fd = -1;
    if (reg->map) munmap(reg->map, DL_REGISTRY_SIZE);
    reg->map = NULL;
    for (i = 0; i < reg->retired_count; i++) munmap(reg->retired[i], DL_REGISTRY_SIZE);
    reg->retired_count = 0;
    pthread_mutex_destroy(&reg->mutex);
}

/* Open and map the registry (section 2 and the 1.1 size rule). A reader that finds none gets
   DL_NOT_FOUND and creates nothing. */
static dl_result dl__registry_open(dl__registry *reg, char *error, size_t error_size)
{
    struct stat st;
    void *map;
    int fd = shm_open(reg->name, O_RDWR | (reg->creator ? O_CREAT : 0), 0600);
    if (fd < 0) {
        if (errno == ENOENT && !reg->creator) return DL_NOT_FOUND;
        dl__fmt(error, error_size, "cannot open registry %s: %s", reg->name, strerror(errno));
        return DL_SYSTEM_ERROR;
    }
    if (reg->creator) fchmod(fd, 0600); /* the umask may have narrowed it; never let it be wider */
    if (fstat(fd, &st) != 0) {
        dl__fmt(error, error_size, "cannot stat registry %s: %s", reg->name, strerror(errno));
        close(fd);
        return DL_SYSTEM_ERROR;
    }
    if (st.st_size == 0) {
        if (!reg->creator) { close(fd); return DL_NOT_FOUND; } /* being created: no devices yet */
        if (ftruncate(fd, DL_REGISTRY_SIZE) != 0) {
            dl__fmt(error, error_size, "cannot size registry %s: %s", reg->name, strerror(errno));
            close(fd);
            return DL_SYSTEM_ERROR;
        }
    } else if (st.st_size != DL_REGISTRY_SIZE) {
        dl__fmt(error, error_size, "registry %s is %lld bytes, expected %d: not a discoLink %d.x registry "
                "(discolink-bridge cleanup --force removes it when no process uses it)",
                reg->name, (long long)st.st_size, DL_REGISTRY_SIZE, DL_PROTOCOL_MAJOR);
        close(fd);
        return DL_BAD_REGISTRY;
    }
    map = mmap(NULL, DL_REGISTRY_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        dl__fmt(error, error_size, "cannot map registry %s: %s", reg->name, strerror(errno));
        close(fd);
        return DL_SYSTEM_ERROR;
    }
    reg->fd = fd;
    reg->map = (uint8_t *)map;
    return DL_SUCCESS;
}

static dl_registry_slot *dl__slot(const dl__registry *reg, uint32_t index)
{
    return (dl_registry_slot *)(void *)(reg->map + DL_REGISTRY_HEADER_BYTES + (size_t)index * DL_REGISTRY_SLOT_BYTES);
}

static void dl__registry_unlock(dl__registry *reg)
{
    flock(reg->fd, LOCK_UN);
    pthread_mutex_unlock(&reg->mutex);
}

/* Take the registry lock (section 3.2): flock, then the st_nlink rule (a registry removed by
   a cleanup is replaced by the one under its name), then the header check. */
static dl_result dl__registry_lock(dl__registry *reg, char *error, size_t error_size)
{
    dl_registry_header *h;
    dl_result r;
    struct stat st;
    pthread_mutex_lock(&reg->mutex);
    for (;;) {
        if (reg->fd < 0 && (r = dl__registry_open(reg, error, error_size)) != DL_SUCCESS) {
            pthread_mutex_unlock(&reg->mutex);
            return r;
        }
        while (flock(reg->fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                dl__fmt(error, error_size, "cannot lock registry %s: %s", reg->name, strerror(errno));
                pthread_mutex_unlock(&reg->mutex);
                return DL_SYSTEM_ERROR;
            }
        }
        if (fstat(reg->fd, &st) == 0 && st.st_nlink != 0) break;
        flock(reg->fd, LOCK_UN);
        dl__registry_close_fd(reg); /* removed by a cleanup: open the one under its name */
    }
    h = (dl_registry_header *)(void *)reg->map;
    if (DL__LOAD_ACQ(&h->magic) == 0) {
        h->version_major = DL_PROTOCOL_MAJOR;
        h->version_minor = DL_PROTOCOL_MINOR;
        h->header_size = DL_REGISTRY_HEADER_BYTES;
        h->slot_size = DL_REGISTRY_SLOT_BYTES;
        h->slot_count = DL_REGISTRY_SLOTS;
        DL__STORE_REL(&h->magic, DL_REGISTRY_MAGIC);
    } else if (h->magic != DL_REGISTRY_MAGIC) {
        dl__fmt(error, error_size, "registry %s has bad magic 0x%08x", reg->name, h->magic);
        dl__registry_unlock(reg);
        return DL_BAD_REGISTRY;
    } else if (h->version_major != DL_PROTOCOL_MAJOR) {
        dl__fmt(error, error_size, "registry %s has protocol version %u.%u; this program speaks %d.%d", reg->name,
                h->version_major, h->version_minor, DL_PROTOCOL_MAJOR, DL_PROTOCOL_MINOR);
        dl__registry_unlock(reg);
        return DL_BAD_REGISTRY;
    } else if (h->slot_count != DL_REGISTRY_SLOTS || h->slot_size != DL_REGISTRY_SLOT_BYTES ||
               h->header_size != DL_REGISTRY_HEADER_BYTES) {
        dl__fmt(error, error_size, "registry %s has %u slots of %u bytes; expected %d of %d", reg->name, h->slot_count,
                h->slot_size, DL_REGISTRY_SLOTS, DL_REGISTRY_SLOT_BYTES);
        dl__registry_unlock(reg);
        return DL_BAD_REGISTRY;
    }
    return DL_SUCCESS;
}

/* Zero a slot except its generation and publish it FREE. Caller holds the lock. */
static void dl__slot_clear(dl_registry_slot *s)
{
    uint32_t generation = s->generation;
    DL__STORE_REL(&s->state, (uint32_t)DL_SLOT_BUSY); /* lock-free readers skip it meanwhile */
    memset((uint8_t *)s + 4, 0, DL_REGISTRY_SLOT_BYTES - 4);
    s->generation = generation;
    DL__STORE_REL(&s->state, (uint32_t)DL_SLOT_FREE);
}

/* Section 3.4, with the 1.1 zombie rule and signed heartbeat age. Caller holds the lock. */
static void dl__reclaim_dead(dl__registry *reg)
{
    uint32_t i;
    for (i = 0; i < DL_REGISTRY_SLOTS; i++) {
        dl_registry_slot *s = dl__slot(reg, i);
        uint32_t state = DL__LOAD_ACQ(&s->state);
        int dead = 0;
        if (state == DL_SLOT_BUSY) {
            dead = 1; /* slots are only BUSY inside the lock we hold: its writer died */
        } else if (state == DL_SLOT_ACTIVE) {
            uint64_t now = dl_now_ns();
            int64_t age = (int64_t)(now - DL__LOAD_ACQ(&s->heartbeat_ns));
            dead = !dl_pid_alive(s->device_pid) || age > (int64_t)DL_HEARTBEAT_STALE_NS;
        }
        if (dead) {
            if (s->device_pid) {
                char name[128];
                dl__transport_name(name, sizeof(name), reg->ns, i, s->device_pid);
                shm_unlink(name);
            }
            dl__slot_clear(s);
        }
    }
}

static void dl__info_from_slot(dl_device_info *d, const dl_registry_slot *s, uint32_t index, const char *ns)
{
    memset(d, 0, sizeof(*d));
    dl__field_str(d->id, sizeof(d->id), s->device_id, sizeof(s->device_id));
    dl__field_str(d->link_tag, sizeof(d->link_tag), s->link_tag, sizeof(s->link_tag));
    snprintf(d->namespace_name, sizeof(d->namespace_name), "%s", ns);
    d->pid = s->device_pid;
    d->slot = index;
    d->generation = s->generation;
    d->instance = s->instance;
    d->channels = s->channels;
    d->sample_rate = DL__LOAD_RLX(&s->sample_rate);
    d->block_size = DL__LOAD_RLX(&s->block_size);
    d->mode = DL__LOAD_RLX(&s->mode);
    d->capabilities = s->capabilities;
    d->host_pid = s->host_pid;
    d->xruns = DL__LOAD_RLX(&s->xruns);
}

static int dl__info_before(const dl_device_info *a, const dl_device_info *b)
{
    size_t la = strcspn(a->id, ":"), lb = strcspn(b->id, ":");
    int c = strncmp(a->id, b->id, la < lb ? la : lb);
    if (c == 0 && la != lb) return la < lb;
    if (c != 0) return c < 0;
    return a->instance < b->instance;
}

static dl_result dl__registry_scan(dl__registry *reg, dl_device_info *out, uint32_t max, uint32_t *count,
                                   char *error, size_t error_size)
{
    uint32_t i, n = 0, j;
    dl_result r = dl__registry_lock(reg, error, error_size);
    *count = 0;
    if (r != DL_SUCCESS) return r;
    dl__reclaim_dead(reg);
    for (i = 0; i < DL_REGISTRY_SLOTS && n < max; i++) {
        dl_registry_slot *s = dl__slot(reg, i);
        if (DL__LOAD_ACQ(&s->state) == DL_SLOT_ACTIVE) dl__info_from_slot(&out[n++], s, i, reg->ns);
    }
    dl__registry_unlock(reg);
    for (i = 0; i < n; i++) out[i].claimed = out[i].host_pid != 0 && dl_pid_alive(out[i].host_pid);
    for (i = 1; i < n; i++) /* insertion sort by name, then instance */
        for (j = i; j > 0 && dl__info_before(&out[j], &out[j - 1]); j--) {
            dl_device_info t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    *count = n;
    return DL_SUCCESS;
}

dl_result dl_scan(const char *namespace_name, dl_device_info *out, uint32_t max, uint32_t *count, char *error, size_t error_size)
{
    char ns[DL_NAMESPACE_MAX_CHARS + 1];
    dl__registry reg;
    dl_result r;
    if (count == NULL || (out == NULL && max)) return DL_INVALID_ARGS;
    *count = 0;
    if ((r = dl_namespace_resolve(namespace_name, ns, error, error_size)) != DL_SUCCESS) return r;
    dl__registry_init(&reg, ns, 0);
    r = dl__registry_scan(&reg, out, max, count, error, error_size);
    dl__registry_free(&reg);
    return r == DL_NOT_FOUND ? DL_SUCCESS : r;
}

/* ==== Fragment reassembly (section 6.2 with the 1.1 rules) =================================== */

typedef struct dl__transfer {
    uint32_t id;          /* 0: slot free */
    uint32_t count, next, len, first_seq;
    uint16_t type;
    uint64_t touched;     /* LRU clock of its last fragment */
    uint8_t *data;
} dl__transfer;

typedef struct dl__reassembler {
    dl__transfer *transfers;
    uint32_t max_open, max_bytes;
    uint64_t clock;
} dl__reassembler;

typedef struct dl__feed {
    int status;                       /* 1 complete, 0 pending, -1 refused */
    const uint8_t *payload;
    uint32_t len;                     /* reassembled (or this message's) payload bytes */
    char text[200];                   /* why it was refused */
    int discarded;                    /* a stale transfer was discarded to make room */
    uint32_t discarded_seq;
    uint16_t discarded_type;
    char discarded_text[200];
} dl__feed;

static int dl__reassembler_init(dl__reassembler *ra, uint32_t max_open, uint32_t max_bytes)
{
    uint32_t i;
    uint8_t *arena;
    ra->max_open = max_open;
    ra->max_bytes = max_bytes;
    ra->clock = 0;
    ra->transfers = (dl__transfer *)calloc(max_open, sizeof(dl__transfer));
    arena = (uint8_t *)dl__reserve((size_t)max_open * max_bytes);
    if (ra->transfers == NULL || arena == NULL) {
        free(ra->transfers);
        ra->transfers = NULL;
        if (arena) munmap(arena, (size_t)max_open * max_bytes);
        return 0;
    }
    for (i = 0; i < max_open; i++) ra->transfers[i].data = arena + (size_t)i * max_bytes;
    return 1;
}

static void dl__reassembler_free(dl__reassembler *ra)
{
    if (ra->transfers) {
        munmap(ra->transfers[0].data, (size_t)ra->max_open * ra->max_bytes);
        free(ra->transfers);
    }
    ra->transfers = NULL;
}

static void dl__reassembler_reset(dl__reassembler *ra)
{
    uint32_t i;
    for (i = 0; i < ra->max_open; i++) ra->transfers[i].id = 0;
}

/* Feed one message. Unfragmented messages complete at once (their payload as it is). */
static void dl__reassemble(dl__reassembler *ra, const dl_message *m, dl__feed *out)
{
    const dl_message_header *h = &m->header;
    uint32_t count = h->frag_count, index = h->frag_index, tid = h->transfer_id, i, n;
    int flagged = (h->flags & DL_FLAG_FRAGMENT) != 0;
    const dl_command_info *info;
    dl__transfer *t = NULL, *free_slot = NULL, *stalest = NULL;
    out->status = -1;
    out->discarded = 0;
    out->text[0] = 0;
    if (!flagged && count <= 1) { /* unfragmented: frag_index and transfer_id are ignored */
        out->status = 1;
        out->payload = m->payload;
        out->len = h->payload_len < DL_MESSAGE_PAYLOAD_SIZE ? h->payload_len : DL_MESSAGE_PAYLOAD_SIZE;
        return;
    }
    info = dl_command_find(h->type);
    if (flagged && (info == NULL || !info->fragmentable)) {
        if (info) dl__fmt(out->text, sizeof(out->text), "%s cannot be fragmented (FRAGMENT flag set)", info->name);
        else dl__fmt(out->text, sizeof(out->text), "command type 0x%04x cannot be fragmented (FRAGMENT flag set)", h->type);
        return;
    }
    if (!flagged) {
        dl__fmt(out->text, sizeof(out->text), "frag_count %u without the FRAGMENT flag", count);
        return;
    }
    if (count < 2) {
        dl__fmt(out->text, sizeof(out->text), "FRAGMENT flag with frag_count %u (a transfer has 2 or more)", count);
        return;
    }
    if (tid == 0) {
        dl__fmt(out->text, sizeof(out->text), "fragment %u of %u has transfer_id 0", index, count);
        return;
    }
    if (index >= count) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: fragment %u of %u is impossible", tid, index, count);
        return;
    }
    if ((uint64_t)count * DL_MESSAGE_PAYLOAD_SIZE > (uint64_t)ra->max_bytes + DL_MESSAGE_PAYLOAD_SIZE) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: %u fragments exceed the limit of %u bytes", tid, count, ra->max_bytes);
        return;
    }
    for (i = 0; i < ra->max_open; i++) {
        dl__transfer *x = &ra->transfers[i];
        if (x->id == tid) t = x;
        else if (x->id == 0) { if (free_slot == NULL) free_slot = x; }
        else if (stalest == NULL || x->touched < stalest->touched) stalest = x;
    }
    if (t == NULL) {
        if (index != 0) {
            dl__fmt(out->text, sizeof(out->text), "transfer %u: missing fragment 0 of %u (first seen was %u)", tid, count, index);
            return;
        }
        if (free_slot == NULL) { /* full: discard the one that advanced least recently */
            out->discarded = 1;
            out->discarded_seq = stalest->first_seq;
            out->discarded_type = stalest->type;
            dl__fmt(out->discarded_text, sizeof(out->discarded_text),
                    "transfer %u: discarded after %u of %u fragments: %u transfers were open and transfer %u started "
                    "(this one advanced least recently)", stalest->id, stalest->next, stalest->count, ra->max_open, tid);
            stalest->id = 0;
            free_slot = stalest;
        }
        t = free_slot;
        t->id = tid;
        t->count = count;
        t->next = 0;
        t->len = 0;
        t->first_seq = h->seq;
        t->type = h->type;
    } else if (count != t->count) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: fragment %u says %u fragments, the transfer has %u", tid, index, count, t->count);
        t->id = 0;
        return;
    } else if (h->type != t->type) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: fragment %u is a %s in a transfer of %s", tid, index,
                dl_command_name(h->type), dl_command_name(t->type));
        t->id = 0;
        return;
    } else if (index != t->next) {
        if (index < t->next)
            dl__fmt(out->text, sizeof(out->text), "transfer %u: duplicate fragment %u of %u (expected %u)", tid, index, count, t->next);
        else
            dl__fmt(out->text, sizeof(out->text), "transfer %u: missing fragment %u of %u (got %u)", tid, t->next, count, index);
        t->id = 0;
        return;
    }
    if (index + 1 < count && h->payload_len < DL_MESSAGE_PAYLOAD_SIZE) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: fragment %u of %u has %u payload bytes; every fragment but "
                "the last carries %d", tid, index, count, h->payload_len, DL_MESSAGE_PAYLOAD_SIZE);
        t->id = 0;
        return;
    }
    n = h->payload_len < DL_MESSAGE_PAYLOAD_SIZE ? h->payload_len : DL_MESSAGE_PAYLOAD_SIZE;
    if ((uint64_t)t->len + n > ra->max_bytes) {
        dl__fmt(out->text, sizeof(out->text), "transfer %u: more than the limit of %u bytes", tid, ra->max_bytes);
        t->id = 0;
        return;
    }
    memcpy(t->data + t->len, m->payload, n);
    t->len += n;
    t->next++;
    t->touched = ++ra->clock;
    if (t->next == count) {
        t->id = 0; /* done; its data stays intact until the next transfer takes the slot */
        out->status = 1;
        out->payload = t->data;
        out->len = t->len;
        return;
    }
    out->status = 0;
}

/* ==== The hand-over between a non-audio thread and the audio thread ========================
   Real-time entry points enter the gate (two atomic increments, never a wait); start, stop,
   connect and disconnect close it, wait until the audio thread is out, change the endpoint,
   and open it again. */

typedef struct dl__gate {
    int ready;
    int busy;
} dl__gate;

static int dl__enter(dl__gate *g)
{
    __atomic_add_fetch(&g->busy, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g->ready, __ATOMIC_SEQ_CST)) return 1;
    __atomic_sub_fetch(&g->busy, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void dl__leave(dl__gate *g) { __atomic_sub_fetch(&g->busy, 1, __ATOMIC_RELEASE); }

static void dl__gate_close(dl__gate *g)
{
    __atomic_store_n(&g->ready, 0, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&g->busy, __ATOMIC_SEQ_CST) != 0) dl_sleep_ns(20000);
}

static void dl__gate_open(dl__gate *g) { __atomic_store_n(&g->ready, 1, __ATOMIC_SEQ_CST); }

/* ==== A device's MIDI intake (section 7.4) ================================================== */

typedef struct dl__midi_in {
    /* MidiRaw as a cable: running status carries over from one MidiRaw to the next */
    uint8_t running, expected, len, in_sysex, sysex_overflow;
    uint8_t msg[3];
    uint32_t sysex_len;
    uint8_t sysex[DL_MESSAGE_PAYLOAD_SIZE + 2];  /* a SysEx inside one MidiRaw fits one payload */
    /* UMP SysEx7, reassembled per group into F0 .. F7 */
    uint8_t *ump_sysex;                           /* 16 x (sysex_limit + 2) */
    uint32_t ump_len[16];
    uint8_t ump_state[16];                        /* 0 idle, 1 collecting, 2 discarding */
    /* MPE zones (section 7.4: "MPE on"), followed from RPN 6 on channel 1 or 16 */
    uint8_t rpn_msb[16], rpn_lsb[16], nrpn[16];
    uint8_t lower_members, upper_members;
} dl__midi_in;

static void dl__midi_reset(dl__midi_in *in)
{
    in->running = in->expected = in->len = in->in_sysex = in->sysex_overflow = 0;
    in->sysex_len = 0;
    memset(in->ump_len, 0, sizeof(in->ump_len));
    memset(in->ump_state, 0, sizeof(in->ump_state));
    memset(in->rpn_msb, 0x7F, sizeof(in->rpn_msb));
    memset(in->rpn_lsb, 0x7F, sizeof(in->rpn_lsb));
    memset(in->nrpn, 0, sizeof(in->nrpn));
    in->lower_members = in->upper_members = 0;
}

/* Follow the MPE Configuration Message (RPN 0/6 on channel 0 or 15). */
static void dl__mpe_feed(dl__midi_in *in, uint8_t ch, uint8_t controller, uint8_t value)
{
    switch (controller) {
    case 101: in->rpn_msb[ch] = value; in->nrpn[ch] = 0; break;
    case 100: in->rpn_lsb[ch] = value; in->nrpn[ch] = 0; break;
    case 99: case 98: in->nrpn[ch] = 1; break;
    case 121: in->rpn_msb[ch] = in->rpn_lsb[ch] = 0x7F; break; /* reset all controllers deselects */
    case 6:
        if (!in->nrpn[ch] && in->rpn_msb[ch] == 0 && in->rpn_lsb[ch] == 6 && (ch == 0 || ch == 15)) {
            uint8_t members = value > 15 ? 15 : value;
            if (ch == 0) {
                in->lower_members = members;
                if (in->lower_members + in->upper_members > 14) in->upper_members = members >= 14 ? 0 : (uint8_t)(14 - members);
            } else {
                in->upper_members = members;
                if (in->lower_members + in->upper_members > 14) in->lower_members = members >= 14 ? 0 : (uint8_t)(14 - members);
            }
        }
        break;
    default: break;
    }
}

static int dl__mpe_on(const dl__midi_in *in) { return in->lower_members > 0 || in->upper_members > 0; }

/* ==== Device ================================================================================ */

typedef struct dl__outbox_item {
    uint16_t type;
    uint32_t request_seq, transfer_id, start, len, next, count;
} dl__outbox_item;

struct dl_device {
    dl_device_config config;
    char config_id[128];
    char config_ns[64];
    char ns[DL_NAMESPACE_MAX_CHARS + 1];
    char id[DL_ID_MAX_BYTES + 1];
    char error[256];
    char event_text[256];
    char link_tag[DL_LINK_TAG_MAX_BYTES + 1];
    dl__gate gate;
    dl__registry reg;
    int reg_ready;
    int running, registered;
    uint32_t pid, slot, generation;
    char seg_name[128];
    uint8_t *seg;
    size_t seg_size;
    dl_transport_header *hdr;
    dl_registry_slot *rslot;
    dl_message_ring commands, responses;
    dl_audio_ring audio, ret;
    int has_audio, has_return;
    uint32_t channels, return_channels, sample_rate, block_size, mode, capabilities, negotiated;
    uint32_t claim_seen, claimed_by;
    int host_alive, host_died_reported;
    uint64_t next_heartbeat, next_host_check;
    dl__reassembler rx;
    uint8_t *outbox;
    uint32_t outbox_cap, outbox_used, out_head, out_count;
    dl__outbox_item out_items[DL__OUTBOX_ITEMS];
    dl__midi_in midi;
    dl_message scratch;
    dl_device_stats stats;
};

dl_device_config dl_device_config_init(void)
{
    dl_device_config c;
    memset(&c, 0, sizeof(c));
    c.id = "discoLink";
    c.channels = 2;
    c.sample_rate = 48000;
    c.block_size = 256;
    c.mode = DL_MODE_AUDIO_MIDI;
    c.fill_blocks = DL_FILL_DEFAULT;
    c.sysex_limit = 65536;
    c.max_transfer_bytes = 1u << 20;
    c.max_open_transfers = DL_OPEN_TRANSFERS_MAX;
    return c;
}

static void dl__device_free_buffers(dl_device *d)
{
    dl__reassembler_free(&d->rx);
    if (d->outbox) munmap(d->outbox, d->outbox_cap);
    if (d->midi.ump_sysex) munmap(d->midi.ump_sysex, (size_t)16 * (d->config.sysex_limit + 2));
    d->outbox = NULL;
    d->midi.ump_sysex = NULL;
}

dl_result dl_device_create(const dl_device_config *config, dl_device **out)
{
    dl_device *d;
    if (out == NULL) return DL_INVALID_ARGS;
    *out = NULL;
    if (config == NULL || config->max_transfer_bytes < DL_MESSAGE_PAYLOAD_SIZE ||
        config->max_transfer_bytes > DL_FRAGMENT_LIMIT_BYTES || config->max_open_transfers == 0 ||
        config->max_open_transfers > 1024 || config->sysex_limit < 2 || config->sysex_limit > DL_FRAGMENT_LIMIT_BYTES)
        return DL_INVALID_ARGS;
    d = (dl_device *)calloc(1, sizeof(dl_device));
    if (d == NULL) return DL_OUT_OF_MEMORY;
    d->config = *config;
    snprintf(d->config_id, sizeof(d->config_id), "%s", config->id ? config->id : "");
    d->config.id = d->config_id;
    if (config->namespace_name) {
        snprintf(d->config_ns, sizeof(d->config_ns), "%s", config->namespace_name);
        d->config.namespace_name = d->config_ns;
    }
    d->outbox_cap = config->max_transfer_bytes;
    d->outbox = (uint8_t *)dl__reserve(d->outbox_cap);
    d->midi.ump_sysex = (uint8_t *)dl__reserve((size_t)16 * (config->sysex_limit + 2));
    if (!dl__reassembler_init(&d->rx, config->max_open_transfers, config->max_transfer_bytes) || d->outbox == NULL ||
        d->midi.ump_sysex == NULL) {
        dl__device_free_buffers(d);
        free(d);
        return DL_OUT_OF_MEMORY;
    }
    d->pid = (uint32_t)getpid();
    *out = d;
    return DL_SUCCESS;
}

dl_result dl_device_set_id(dl_device *d, const char *id)
{
    dl_result r;
    if (d->running) return DL_WRONG_STATE;
    if ((r = dl_validate_device_id(id, d->error, sizeof(d->error))) != DL_SUCCESS) return r;
    snprintf(d->config_id, sizeof(d->config_id), "%s", id);
    return DL_SUCCESS;
}

dl_result dl_device_set_format(dl_device *d, uint32_t sample_rate, uint32_t block_size)
{
    if (d->running) return DL_WRONG_STATE;
    d->config.sample_rate = sample_rate; /* checked by dl_device_start, which names the fault */
    d->config.block_size = block_size;
    return DL_SUCCESS;
}

const char *dl_device_error(const dl_device *d) { return d ? d->error : "no device"; }
const char *dl_device_id(const dl_device *d) { return d->id; }
int dl_device_running(const dl_device *d) { return __atomic_load_n(&d->running, __ATOMIC_ACQUIRE); }
int dl_device_registered(const dl_device *d) { return __atomic_load_n(&d->registered, __ATOMIC_ACQUIRE); }
uint32_t dl_device_channels(const dl_device *d) { return d->channels; }
uint32_t dl_device_return_channels(const dl_device *d) { return d->return_channels; }
uint32_t dl_device_sample_rate(const dl_device *d) { return __atomic_load_n(&d->sample_rate, __ATOMIC_ACQUIRE); }
uint32_t dl_device_block_size(const dl_device *d) { return __atomic_load_n(&d->block_size, __ATOMIC_ACQUIRE); }
uint32_t dl_device_mode(const dl_device *d) { return __atomic_load_n(&d->mode, __ATOMIC_ACQUIRE); }
uint32_t dl_device_negotiated_capabilities(const dl_device *d) { return d->negotiated; }

static void dl__device_event(dl_device *d, dl_device_event_kind kind, const char *text)
{
    dl_device_event e;
    if (d->config.on_event == NULL) return;
    e.kind = kind;
    e.host_pid = d->claimed_by;
    e.sample_rate = d->sample_rate;
    e.block_size = d->block_size;
    e.mode = d->mode;
    e.text = text ? text : "";
    d->config.on_event(d, &e, d->config.user_data);
}

static uint32_t dl__align64(uint32_t n) { return (n + DL_SEGMENT_ALIGN - 1) / DL_SEGMENT_ALIGN * DL_SEGMENT_ALIGN; }

/* Create and initialise the transport segment (section 4); under the registry lock. */
static dl_result dl__device_create_segment(dl_device *d, uint32_t audio_channels, uint32_t return_channels)
{
    uint32_t offset = DL_TRANSPORT_HEADER_BYTES, message_ring = DL_RING_CONTROL_SIZE + DL_MESSAGE_RING_SLOTS * DL_MESSAGE_SIZE;
    uint32_t command_off, response_off, audio_off = 0, return_off = 0;
    dl_transport_header *h;
    void *map;
    int fd;
    command_off = offset;
    offset = dl__align64(offset + message_ring);
    response_off = offset;
    offset = dl__align64(offset + message_ring);
    if (audio_channels) {
        audio_off = offset;
        offset = dl__align64(offset + DL_RING_CONTROL_SIZE + audio_channels * DL_AUDIO_RING_FRAMES * 4);
    }
    if (return_channels) {
        return_off = offset;
        offset = dl__align64(offset + DL_RING_CONTROL_SIZE + return_channels * DL_AUDIO_RING_FRAMES * 4);
    }
    dl__transport_name(d->seg_name, sizeof(d->seg_name), d->ns, d->slot, d->pid);
    shm_unlink(d->seg_name); /* a leftover of an earlier process that had our pid */
    fd = shm_open(d->seg_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        dl__fmt(d->error, sizeof(d->error), "cannot create segment %s: %s", d->seg_name, strerror(errno));
        return DL_SYSTEM_ERROR;
    }
    fchmod(fd, 0600);
    if (ftruncate(fd, offset) != 0) { /* zero-fills */
        dl__fmt(d->error, sizeof(d->error), "cannot size segment %s to %u bytes: %s", d->seg_name, offset, strerror(errno));
        close(fd);
        shm_unlink(d->seg_name);
        return DL_SYSTEM_ERROR;
    }
    /* MAP_POPULATE: the audio thread should never take the first-touch page faults */
    map = mmap(NULL, offset, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        dl__fmt(d->error, sizeof(d->error), "cannot map segment %s: %s", d->seg_name, strerror(errno));
        shm_unlink(d->seg_name);
        return DL_SYSTEM_ERROR;
    }
    d->seg = (uint8_t *)map;
    d->seg_size = offset;
    h = d->hdr = (dl_transport_header *)map;
    h->magic = DL_SEGMENT_MAGIC;
    h->version_major = DL_PROTOCOL_MAJOR;
    h->version_minor = DL_PROTOCOL_MINOR;
    h->header_size = DL_TRANSPORT_HEADER_BYTES;
    h->total_size = offset;
    h->sample_rate = d->sample_rate;
    h->block_size = d->block_size;
    h->channels = audio_channels;
    h->mode = d->mode;
    h->capabilities = d->capabilities;
    h->audio_frames = DL_AUDIO_RING_FRAMES;
    h->message_slots = DL_MESSAGE_RING_SLOTS;
    h->return_channels = return_channels;
    h->audio_ring_offset = audio_off;
    h->return_ring_offset = return_off;
    h->command_ring_offset = command_off;
    h->response_ring_offset = response_off;
    h->device_pid = d->pid;
    h->fill_blocks = d->config.fill_blocks;
    h->latency_frames = d->config.latency_frames;
    DL__STORE_REL(&h->device_state, (uint32_t)DL_DEVICE_RUNNING);
    dl__bind_rings(d->seg, h, &d->commands, &d->responses, &d->audio, &d->has_audio, &d->ret, &d->has_return);
    return DL_SUCCESS;
}

dl_result dl_device_start(dl_device *d)
{
    const dl_device_config *c = &d->config;
    char name[DL_ID_NAME_MAX_BYTES + 1], taken_ids[DL_REGISTRY_SLOTS][64], candidate[80]; /* Name (<= 57) + :N (<= 6) */
    uint32_t taken_pids[DL_REGISTRY_SLOTS], n_taken = 0, i, audio_channels, return_channels, free_index = DL_REGISTRY_SLOTS;
    int32_t instance;
    dl_registry_slot *s;
    dl_result r;
    if (d->running) {
        dl__fmt(d->error, sizeof(d->error), "device %s is already started", d->id);
        return DL_WRONG_STATE;
    }
    if ((r = dl__parse_id(c->id, name, &instance, d->error, sizeof(d->error))) != DL_SUCCESS) return r;
    if (c->mode > DL_MODE_MIDI) {
        dl__fmt(d->error, sizeof(d->error), "unknown transport mode %u; choose audio+midi (0), audio (1) or midi (2)", c->mode);
        return DL_INVALID_ARGS;
    }
    if (c->mode != DL_MODE_MIDI && (c->channels < 1 || c->channels > DL_MAX_CHANNELS)) {
        dl__fmt(d->error, sizeof(d->error), "channels must be 1..%d, got %u", DL_MAX_CHANNELS, c->channels);
        return DL_INVALID_ARGS;
    }
    if (c->sample_rate < DL_SAMPLE_RATE_MIN || c->sample_rate > DL_SAMPLE_RATE_MAX) {
        dl__fmt(d->error, sizeof(d->error), "sample rate must be %d..%d Hz, got %u", DL_SAMPLE_RATE_MIN, DL_SAMPLE_RATE_MAX, c->sample_rate);
        return DL_INVALID_ARGS;
    }
    if (c->block_size < DL_BLOCK_SIZE_MIN || c->block_size > DL_BLOCK_SIZE_MAX) {
        dl__fmt(d->error, sizeof(d->error), "block size must be %d..%d frames, got %u", DL_BLOCK_SIZE_MIN, DL_BLOCK_SIZE_MAX, c->block_size);
        return DL_INVALID_ARGS;
    }
    if (c->fill_blocks > DL_FILL_MAX) {
        dl__fmt(d->error, sizeof(d->error), "fill must be %d..%d blocks (or 0 for your own clock), got %u", DL_FILL_MIN, DL_FILL_MAX, c->fill_blocks);
        return DL_INVALID_ARGS;
    }
    if ((r = dl_namespace_resolve(c->namespace_name, d->ns, d->error, sizeof(d->error))) != DL_SUCCESS) return r;
    if (d->reg_ready && strcmp(d->reg.ns, d->ns) != 0) {
        dl__registry_free(&d->reg);
        d->reg_ready = 0;
    }
    if (!d->reg_ready) {
        dl__registry_init(&d->reg, d->ns, 1);
        d->reg_ready = 1;
    }
    audio_channels = c->mode == DL_MODE_MIDI ? 0 : c->channels;
    return_channels = c->return_audio ? audio_channels : 0;
    d->sample_rate = c->sample_rate;
    d->block_size = c->block_size;
    d->mode = c->mode;
    d->channels = audio_channels;
    d->return_channels = return_channels;
    d->capabilities = (c->capabilities | DL_CAP_FRAGMENTS) & ~(uint32_t)(DL_CAP_AUDIO | DL_CAP_MIDI | DL_CAP_RETURN_AUDIO);
    if (audio_channels) d->capabilities |= DL_CAP_AUDIO;
    if (c->mode != DL_MODE_AUDIO) d->capabilities |= DL_CAP_MIDI;
    if (c->mode != DL_MODE_AUDIO && c->on_midi != NULL) d->capabilities |= DL_CAP_UMP; /* the intake translates UMP (1.1: MUST say so) */
    if (return_channels) d->capabilities |= DL_CAP_RETURN_AUDIO;
    d->negotiated = d->capabilities;

    if ((r = dl__registry_lock(&d->reg, d->error, sizeof(d->error))) != DL_SUCCESS) return r;
    dl__reclaim_dead(&d->reg);
    for (i = 0; i < DL_REGISTRY_SLOTS; i++) {
        s = dl__slot(&d->reg, i);
        if (DL__LOAD_ACQ(&s->state) == DL_SLOT_ACTIVE) {
            dl__field_str(taken_ids[n_taken], sizeof(taken_ids[0]), s->device_id, sizeof(s->device_id));
            taken_pids[n_taken++] = s->device_pid;
        } else if (DL__LOAD_ACQ(&s->state) == DL_SLOT_FREE && free_index == DL_REGISTRY_SLOTS) {
            free_index = i;
        }
    }
    if (instance >= 0) {
        snprintf(candidate, sizeof(candidate), "%s:%d", name, (int)instance); /* X:007 registers as X:7 */
        for (i = 0; i < n_taken; i++)
            if (strcmp(taken_ids[i], candidate) == 0) {
                dl__fmt(d->error, sizeof(d->error), "device id '%s' is already registered by pid %u in namespace '%s'",
                        candidate, taken_pids[i], d->ns);
                dl__registry_unlock(&d->reg);
                return DL_ID_TAKEN;
            }
    } else {
        for (instance = 0;; instance++) {
            snprintf(candidate, sizeof(candidate), "%s:%d", name, (int)instance);
            for (i = 0; i < n_taken && strcmp(taken_ids[i], candidate) != 0; i++) {}
            if (i == n_taken) break;
        }
    }
    if (free_index == DL_REGISTRY_SLOTS) {
        size_t used = 0;
        used += (size_t)snprintf(d->error, sizeof(d->error), "registry full (%d slots) in namespace '%s':", DL_REGISTRY_SLOTS, d->ns);
        for (i = 0; i < n_taken && used < sizeof(d->error); i++)
            used += (size_t)snprintf(d->error + used, sizeof(d->error) - used, "%s %s", i ? "," : "", taken_ids[i]);
        dl__registry_unlock(&d->reg);
        return DL_REGISTRY_FULL;
    }
    d->slot = free_index;
    s = dl__slot(&d->reg, free_index);
    d->generation = s->generation + 1;
    DL__STORE_REL(&s->state, (uint32_t)DL_SLOT_BUSY);
    memset((uint8_t *)s + 4, 0, DL_REGISTRY_SLOT_BYTES - 4);
    s->device_pid = d->pid;
    DL__STORE_REL(&s->heartbeat_ns, dl_now_ns());
    s->channels = audio_channels;
    s->sample_rate = d->sample_rate;
    s->block_size = d->block_size;
    s->mode = d->mode;
    s->capabilities = d->capabilities;
    s->instance = (uint32_t)instance;
    s->generation = d->generation;
    memcpy(s->device_id, candidate, strlen(candidate));
    if ((r = dl__device_create_segment(d, audio_channels, return_channels)) != DL_SUCCESS) {
        dl__slot_clear(s);
        dl__registry_unlock(&d->reg);
        return r;
    }
    DL__STORE_REL(&s->state, (uint32_t)DL_SLOT_ACTIVE); /* published last: whoever sees it finds the segment */
    dl__registry_unlock(&d->reg);

    memcpy(d->id, candidate, strlen(candidate) + 1); /* <= 63 bytes by the id grammar */
    d->rslot = s;
    d->claim_seen = 0;
    d->claimed_by = 0;
    d->host_alive = 0;
    d->host_died_reported = 0;
    d->next_heartbeat = d->next_host_check = 0;
    d->out_head = d->out_count = d->outbox_used = 0;
    d->link_tag[0] = 0;
    dl__reassembler_reset(&d->rx);
    dl__midi_reset(&d->midi);
    memset(&d->stats, 0, sizeof(d->stats));
    d->error[0] = 0;
    __atomic_store_n(&d->registered, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&d->running, 1, __ATOMIC_RELEASE);
    dl__gate_open(&d->gate);
    return DL_SUCCESS;
}

void dl_device_stop(dl_device *d)
{
    char error[256];
    if (d == NULL || !d->running) return;
    dl__gate_close(&d->gate);
    __atomic_store_n(&d->running, 0, __ATOMIC_RELEASE);
    DL__STORE_REL(&d->hdr->device_state, (uint32_t)DL_DEVICE_STOPPED); /* hosts see the stop at once */
    if (dl__registry_lock(&d->reg, error, sizeof(error)) == DL_SUCCESS) {
        dl_registry_slot *s = dl__slot(&d->reg, d->slot);
        if (s->device_pid == d->pid && s->generation == d->generation) dl__slot_clear(s);
        dl__registry_unlock(&d->reg);
    }
    shm_unlink(d->seg_name);
    munmap(d->seg, d->seg_size);
    d->seg = NULL;
    d->hdr = NULL;
    d->rslot = NULL;
    d->has_audio = d->has_return = 0;
    __atomic_store_n(&d->registered, 0, __ATOMIC_RELEASE);
}

void dl_device_destroy(dl_device *d)
{
    if (d == NULL) return;
    dl_device_stop(d);
    if (d->reg_ready) dl__registry_free(&d->reg);
    dl__device_free_buffers(d);
    free(d);
}

/* -- claim state -------------------------------------------------------------------------- */

uint32_t dl_device_host_pid(const dl_device *cd)
{
    dl_device *d = (dl_device *)(uintptr_t)cd;
    uint32_t pid = 0;
    if (dl__enter(&d->gate)) {
        pid = DL__LOAD_ACQ(&d->hdr->host_pid);
        dl__leave(&d->gate);
    }
    return pid;
}

int dl_device_claimed(const dl_device *d) { return dl_device_host_pid(d) != 0; }

void dl_device_link_tag(const dl_device *cd, char out[64])
{
    dl_device *d = (dl_device *)(uintptr_t)cd;
    out[0] = 0;
    if (dl__enter(&d->gate)) {
        dl__field_str(out, 64, d->hdr->link_tag, sizeof(d->hdr->link_tag));
        dl__leave(&d->gate);
    }
}

static int dl__device_owns_slot(const dl_device *d)
{
    const dl_registry_slot *s = d->rslot;
    return DL__LOAD_ACQ(&s->state) == DL_SLOT_ACTIVE && DL__LOAD_RLX(&s->device_pid) == d->pid &&
           DL__LOAD_RLX(&s->generation) == d->generation;
}

/* Reset on a new claim (1.1, normative): before any further command or block. */
static void dl__device_check_claim(dl_device *d)
{
    uint32_t generation = DL__LOAD_ACQ(&d->hdr->claim_generation);
    if (generation == d->claim_seen) return;
    d->claim_seen = generation;
    dl__reassembler_reset(&d->rx);
    d->out_head = d->out_count = d->outbox_used = 0; /* half-sent transfers were the previous host's */
    if (d->has_return) dl_ring_discard(d->ret.control);
    /* the new host's audio starts here: stored before any block for it (1.1, §8.2) */
    if (d->has_audio) DL__STORE_REL(&d->hdr->session_start, DL__LOAD_ACQ(&d->audio.control->write_index));
    dl__midi_reset(&d->midi);
    d->claimed_by = DL__LOAD_ACQ(&d->hdr->host_pid);
    d->host_alive = dl__pid_exists(d->claimed_by);
    d->host_died_reported = 0;
    d->negotiated = d->capabilities;
    dl__field_str(d->link_tag, sizeof(d->link_tag), d->hdr->link_tag, sizeof(d->hdr->link_tag));
    dl__fmt(d->event_text, sizeof(d->event_text), "host pid %u, link tag '%s'", d->claimed_by, d->link_tag);
    dl__device_event(d, DL_EVENT_CLAIMED, d->event_text);
}

/* -- responses ---------------------------------------------------------------------------- */

static dl_result dl__device_push(dl_device *d, const dl_message *m)
{
    int32_t got = dl_message_ring_push(&d->responses, m);
    if (got == 1) {
        d->stats.responses_sent++;
        return DL_SUCCESS;
    }
    DL__COUNT(&d->hdr->responses_dropped);
    d->stats.errors++;
    dl__fmt(d->error, sizeof(d->error), "%s", got == 0 ? "response ring full; response dropped" : "response ring indices are corrupt");
    return got == 0 ? DL_RING_FULL : DL_CORRUPT;
}

static dl_result dl__device_error_reply(dl_device *d, uint32_t request_seq, uint16_t request_type, uint32_t code, const char *text)
{
    dl_message m;
    size_t n = text ? strlen(text) : 0;
    const size_t room = DL_MESSAGE_PAYLOAD_SIZE - DL_PAYLOAD_ERROR_FIXED_SIZE;
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--; /* never cut a UTF-8 sequence */
    }
    dl_message_init(&m, DL_CMD_ERROR);
    m.header.flags = DL_FLAG_RESPONSE;
    m.header.request_seq = request_seq;
    dl_put_u32(m.payload + DL_PAYLOAD_ERROR_CODE_OFFSET, code);
    dl_put_u16(m.payload + DL_PAYLOAD_ERROR_REQUEST_TYPE_OFFSET, request_type);
    if (n) memcpy(m.payload + DL_PAYLOAD_ERROR_TEXT_OFFSET, text, n);
    m.header.payload_len = (uint32_t)(DL_PAYLOAD_ERROR_FIXED_SIZE + n);
    return dl__device_push(d, &m);
}

/* Refuse a command: count it (bad_messages for protocol faults), answer Error, tell on_event. */
static void dl__refuse(dl_device *d, uint32_t seq, uint16_t type, uint32_t code, int bad, const char *fmt, ...) DL__PRINTF(6, 7);
static void dl__refuse(dl_device *d, uint32_t seq, uint16_t type, uint32_t code, int bad, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->event_text, sizeof(d->event_text), fmt, ap);
    va_end(ap);
    if (bad) DL__COUNT(&d->hdr->bad_messages);
    d->stats.errors++;
    snprintf(d->error, sizeof(d->error), "%s", d->event_text);
    dl__device_error_reply(d, seq, type, code, d->event_text);
    dl__device_event(d, DL_EVENT_BAD_MESSAGE, d->event_text);
}

dl_result dl_device_respond(dl_device *d, const dl_message *m)
{
    dl_result r;
    if (!dl__enter(&d->gate)) return DL_NOT_CONNECTED;
    r = dl__device_push(d, m);
    dl__leave(&d->gate);
    return r;
}

dl_result dl_device_reply_error(dl_device *d, const dl_command *request, uint32_t code, const char *text)
{
    dl_result r;
    if (request == NULL) return DL_INVALID_ARGS;
    if (!dl__enter(&d->gate)) return DL_NOT_CONNECTED;
    if (code == DL_ERRCODE_MALFORMED || code == DL_ERRCODE_UNKNOWN_COMMAND || code == DL_ERRCODE_FRAGMENT_ERROR)
        DL__COUNT(&d->hdr->bad_messages);
    r = dl__device_error_reply(d, request->seq, request->type, code, text);
    dl__leave(&d->gate);
    return r;
}

static void dl__outbox_flush(dl_device *d)
{
    dl_message m;
    while (d->out_count) {
        dl__outbox_item *it = &d->out_items[d->out_head];
        int32_t got;
        if (dl_message_ring_space(&d->responses) <= DL__RESPONSE_HEADROOM) break;
        dl_cmd_fragment(&m, it->type, d->outbox + it->start, it->len, it->next, it->transfer_id, 0);
        m.header.flags |= DL_FLAG_RESPONSE;
        m.header.request_seq = it->request_seq;
        got = dl_message_ring_push(&d->responses, &m);
        if (got != 1) {
            if (got < 0) { /* corrupt: nothing more can go out */
                d->out_count = 0;
                d->stats.errors++;
            }
            break;
        }
        d->stats.responses_sent++;
        if (++it->next == it->count) {
            d->out_head = (d->out_head + 1) % DL__OUTBOX_ITEMS;
            d->out_count--;
        }
    }
    if (d->out_count == 0) d->outbox_used = 0;
}

dl_result dl_device_respond_blob(dl_device *d, const dl_command *request, uint16_t type, const void *data, uint32_t len)
{
    uint32_t count = dl_fragment_count(len), i, tid;
    dl_result r = DL_SUCCESS;
    dl_message m;
    if (request == NULL || (len && data == NULL)) return DL_INVALID_ARGS;
    if (!dl__enter(&d->gate)) return DL_NOT_CONNECTED;
    tid = count > 1 ? dl_next_transfer_id() : 0;
    if (len > d->outbox_cap) {
        r = DL_INVALID_ARGS;
    } else if (d->out_count == 0 && (count == 1 || dl_message_ring_space(&d->responses) >= count + DL__RESPONSE_HEADROOM)) {
        for (i = 0; i < count; i++) {
            dl_cmd_fragment(&m, type, data, len, i, tid, 0);
            m.header.flags |= DL_FLAG_RESPONSE;
            m.header.request_seq = request->seq;
            if ((r = dl__device_push(d, &m)) != DL_SUCCESS) break;
        }
    } else if (d->out_count < DL__OUTBOX_ITEMS && d->outbox_used + len <= d->outbox_cap) {
        dl__outbox_item *it = &d->out_items[(d->out_head + d->out_count) % DL__OUTBOX_ITEMS];
        memcpy(d->outbox + d->outbox_used, data, len);
        it->type = type;
        it->request_seq = request->seq;
        it->transfer_id = tid;
        it->start = d->outbox_used;
        it->len = len;
        it->next = 0;
        it->count = count;
        d->outbox_used += len;
        d->out_count++;
        dl__outbox_flush(d);
    } else {
        DL__COUNT(&d->hdr->responses_dropped);
        r = DL_RING_FULL;
    }
    dl__leave(&d->gate);
    return r;
}

/* -- MIDI: validation (check 5) and delivery ---------------------------------------------- */

static void dl__midi_emit(dl_device *d, uint32_t offset, const uint8_t *data, uint32_t size)
{
    if (size == 3 && (data[0] & 0xF0) == 0xB0) dl__mpe_feed(&d->midi, data[0] & 0x0F, data[1], data[2]);
    d->stats.midi_events++;
    if (d->config.on_midi) d->config.on_midi(d, offset, data, size, d->config.user_data);
}

/* Returns 1 when the command is good; otherwise it has been refused. */
static int dl__midi_valid(dl_device *d, const dl_command *c)
{
    const uint8_t *p = c->payload;
    switch (c->type) {
    case DL_CMD_NOTE_ON: case DL_CMD_NOTE_OFF: case DL_CMD_CONTROL_CHANGE:
        if (p[0] > 15 || p[1] > 127 || p[2] > 127) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_MALFORMED, 1, "%s with fields out of range (channel 0..15, data "
                       "0..127): %02x %02x %02x", dl_command_name(c->type), p[0], p[1], p[2]);
            return 0;
        }
        return 1;
    case DL_CMD_PITCH_BEND: {
        uint16_t value = dl_get_u16(p + DL_PAYLOAD_PITCH_BEND_VALUE_OFFSET);
        if (p[0] > 15 || value > 16383) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_MALFORMED, 1, "PitchBend channel %u value %u out of range (0..15, "
                       "0..16383)", p[0], value);
            return 0;
        }
        return 1;
    }
    case DL_CMD_PROGRAM_CHANGE:
        if (p[0] > 15 || p[1] > 127) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_MALFORMED, 1, "ProgramChange with fields out of range (channel "
                       "0..15, program 0..127): %02x %02x", p[0], p[1]);
            return 0;
        }
        return 1;
    case DL_CMD_AFTERTOUCH:
        if (p[0] > 15 || p[1] > 1 || p[2] > 127 || p[3] > 127) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_MALFORMED, 1, "Aftertouch with fields out of range (channel 0..15, "
                       "poly 0..1, note and pressure 0..127)");
            return 0;
        }
        return 1;
    case DL_CMD_SYSEX:
        if (c->payload_len > d->config.sysex_limit) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_INVALID_ARGUMENT, 1, "SysEx of %u bytes is over the limit of %u; "
                       "dropped", c->payload_len, d->config.sysex_limit);
            return 0;
        }
        if (!dl__sysex_ok(p, c->payload_len)) {
            dl__refuse(d, c->seq, c->type, DL_ERRCODE_MALFORMED, 1, "SysEx must be F0, data bytes below 0x80, F7; got %u "
                       "bytes starting %02x", c->payload_len, c->payload_len ? p[0] : 0);
            return 0;
        }
        return 1;
    default:
        return 1; /* MidiRaw and UMP: damage inside is dropped and counted, as on a cable */
    }
}

/* MidiRaw as a MIDI 1.0 cable (section 7.4). */
static void dl__midi_raw(dl_device *d, const uint8_t *p, uint32_t n, uint32_t offset)
{
    dl__midi_in *in = &d->midi;
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (b >= 0xF8) { /* real time: anywhere, even inside another message */
            if (b == 0xF9 || b == 0xFD) d->stats.midi_damaged++;
            else dl__midi_emit(d, offset, &b, 1);
            continue;
        }
        if (in->in_sysex) {
            if (b < 0x80) {
                if (in->sysex_len < sizeof(in->sysex) && in->sysex_len < d->config.sysex_limit) in->sysex[in->sysex_len++] = b;
                else in->sysex_overflow = 1;
                continue;
            }
            in->in_sysex = 0;
            if (b == 0xF7) {
                if (in->sysex_overflow || in->sysex_len + 1 > d->config.sysex_limit) {
                    d->stats.midi_damaged++;
                } else {
                    in->sysex[in->sysex_len++] = 0xF7;
                    dl__midi_emit(d, offset, in->sysex, in->sysex_len);
                }
                continue;
            }
            d->stats.midi_damaged++; /* a SysEx ended by anything but F7; b is handled below */
        }
        if (b >= 0x80) {
            if (in->expected) d->stats.midi_damaged++; /* a message cut short by a status byte */
            in->expected = 0;
            in->len = 0;
            if (b == 0xF0) {
                in->in_sysex = 1;
                in->sysex_overflow = 0;
                in->sysex[0] = 0xF0;
                in->sysex_len = 1;
                in->running = 0;
            } else if (b >= 0xF0) { /* system common: cancels running status */
                uint32_t size = dl_midi_message_length(b);
                in->running = 0;
                if (size == 0) d->stats.midi_damaged++; /* F4 F5, a lone F7 */
                else if (size == 1) dl__midi_emit(d, offset, &b, 1);
                else { in->msg[0] = b; in->len = 1; in->expected = (uint8_t)(size - 1); }
            } else {
                in->running = b;
                in->msg[0] = b;
                in->len = 1;
                in->expected = (uint8_t)(dl_midi_message_length(b) - 1);
            }
            continue;
        }
        if (in->expected == 0) {
            if (in->running == 0) { d->stats.midi_damaged++; continue; } /* data byte with no status */
            in->msg[0] = in->running;
            in->len = 1;
            in->expected = (uint8_t)(dl_midi_message_length(in->running) - 1);
        }
        in->msg[in->len++] = b;
        if (--in->expected == 0) {
            dl__midi_emit(d, offset, in->msg, in->len);
            in->len = 0;
        }
    }
    if (in->expected || in->in_sysex) d->stats.midi_damaged++; /* incomplete at the end of the payload */
    in->expected = 0;
    in->len = 0;
    in->in_sysex = 0;
}

static void dl__emit3(dl_device *d, uint32_t offset, uint8_t a, uint8_t b, uint8_t c, uint32_t n)
{
    uint8_t m[3];
    m[0] = a; m[1] = b; m[2] = c;
    dl__midi_emit(d, offset, m, n);
}

static void dl__ump_sysex7(dl_device *d, uint32_t w0, uint32_t w1, uint32_t offset)
{
    dl__midi_in *in = &d->midi;
    uint8_t group = (uint8_t)((w0 >> 24) & 15), status = (uint8_t)((w0 >> 20) & 15), count = (uint8_t)((w0 >> 16) & 15);
    uint8_t data[6];
    uint32_t limit = d->config.sysex_limit, i;
    uint8_t *buf = in->ump_sysex + (size_t)group * (limit + 2);
    data[0] = (uint8_t)(w0 >> 8); data[1] = (uint8_t)w0;
    data[2] = (uint8_t)(w1 >> 24); data[3] = (uint8_t)(w1 >> 16); data[4] = (uint8_t)(w1 >> 8); data[5] = (uint8_t)w1;
    if (status > 3 || count > 6) { d->stats.midi_damaged++; return; }
    for (i = 0; i < count; i++)
        if (data[i] > 0x7F) { d->stats.midi_damaged++; return; }
    if (status == 0 || status == 1) { /* complete / start */
        if (in->ump_state[group] != 0) d->stats.midi_damaged++; /* cuts off one in progress */
        in->ump_state[group] = 0;
        if (count > limit) {
            d->stats.midi_damaged++;
            if (status == 1) in->ump_state[group] = 2;
            return;
        }
        buf[0] = 0xF0;
        memcpy(buf + 1, data, count);
        in->ump_len[group] = count;
        if (status == 0) {
            buf[1 + count] = 0xF7;
            dl__midi_emit(d, offset, buf, count + 2);
        } else {
            in->ump_state[group] = 1;
        }
        return;
    }
    if (in->ump_state[group] == 2) { /* the rest of an oversized message */
        if (status == 3) in->ump_state[group] = 0;
        return;
    }
    if (in->ump_state[group] != 1) { d->stats.midi_damaged++; return; }
    if (in->ump_len[group] + count > limit) {
        d->stats.midi_damaged++;
        in->ump_state[group] = status == 2 ? 2 : 0;
        return;
    }
    memcpy(buf + 1 + in->ump_len[group], data, count);
    in->ump_len[group] += count;
    if (status == 3) {
        buf[1 + in->ump_len[group]] = 0xF7;
        in->ump_state[group] = 0;
        dl__midi_emit(d, offset, buf, in->ump_len[group] + 2);
    }
}

/* MIDI 2.0 channel voice -> MIDI 1.0 (M2-104-UM appendix D.2; values scaled by shifting). */
static void dl__ump_midi2(dl_device *d, uint32_t w0, uint32_t v, uint32_t offset)
{
    uint8_t op = (uint8_t)((w0 >> 20) & 15), ch = (uint8_t)((w0 >> 16) & 15), b2 = (uint8_t)(w0 >> 8), b3 = (uint8_t)w0;
    uint32_t v14 = v >> 18;
    uint8_t v7 = (uint8_t)(v >> 25);
    if (op == 0x7 || (b2 > 0x7F && op != 0xD && op != 0xE && op != 0xC)) { d->stats.midi_damaged++; return; }
    switch (op) {
    case 0x9: { uint8_t vel = (uint8_t)((v >> 16) >> 9); dl__emit3(d, offset, (uint8_t)(0x90 | ch), b2, vel ? vel : 1, 3); return; }
    case 0x8: dl__emit3(d, offset, (uint8_t)(0x80 | ch), b2, (uint8_t)((v >> 16) >> 9), 3); return;
    case 0xA:
        if (dl__mpe_on(&d->midi)) dl__emit3(d, offset, (uint8_t)(0xD0 | ch), v7, 0, 2);
        else dl__emit3(d, offset, (uint8_t)(0xA0 | ch), b2, v7, 3);
        return;
    case 0xB: dl__emit3(d, offset, (uint8_t)(0xB0 | ch), b2, v7, 3); return;
    case 0xD: dl__emit3(d, offset, (uint8_t)(0xD0 | ch), v7, 0, 2); return;
    case 0xE: dl__emit3(d, offset, (uint8_t)(0xE0 | ch), (uint8_t)(v14 & 0x7F), (uint8_t)(v14 >> 7), 3); return;
    case 0x2: case 0x3:
        if (b3 > 0x7F) { d->stats.midi_damaged++; return; }
        dl__emit3(d, offset, (uint8_t)(0xB0 | ch), op == 0x2 ? 101 : 99, b2, 3);
        dl__emit3(d, offset, (uint8_t)(0xB0 | ch), op == 0x2 ? 100 : 98, b3, 3);
        dl__emit3(d, offset, (uint8_t)(0xB0 | ch), 6, (uint8_t)(v14 >> 7), 3);
        dl__emit3(d, offset, (uint8_t)(0xB0 | ch), 38, (uint8_t)(v14 & 0x7F), 3);
        return;
    case 0xC: {
        uint8_t program = (uint8_t)(v >> 24), msb = (uint8_t)(v >> 8), lsb = (uint8_t)v;
        int bank = b3 & 1;
        if (program > 0x7F || (bank && (msb > 0x7F || lsb > 0x7F))) { d->stats.midi_damaged++; return; }
        if (bank) {
            dl__emit3(d, offset, (uint8_t)(0xB0 | ch), 0, msb, 3);
            dl__emit3(d, offset, (uint8_t)(0xB0 | ch), 32, lsb, 3);
        }
        dl__emit3(d, offset, (uint8_t)(0xC0 | ch), program, 0, 2);
        return;
    }
    case 0x6:
        if (dl__mpe_on(&d->midi)) dl__emit3(d, offset, (uint8_t)(0xE0 | ch), (uint8_t)(v14 & 0x7F), (uint8_t)(v14 >> 7), 3);
        else d->stats.midi_untranslatable++;
        return;
    case 0x0: case 0x1:
        if (dl__mpe_on(&d->midi) && b3 == 74) dl__emit3(d, offset, (uint8_t)(0xB0 | ch), 74, v7, 3);
        else d->stats.midi_untranslatable++;
        return;
    default: /* relative RPN/NRPN, per-note management */
        d->stats.midi_untranslatable++;
        return;
    }
}

static void dl__ump(dl_device *d, const uint8_t *p, uint32_t len, uint32_t offset)
{
    static const uint8_t words_of[16] = {1, 1, 1, 2, 2, 4, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4};
    uint32_t count = len / 4, i = 0;
    if (len % 4) d->stats.midi_damaged++; /* bytes short of a word */
    while (i < count) {
        uint32_t w0 = dl_get_u32(p + 4 * i), mt = w0 >> 28, size = words_of[mt];
        uint32_t w1 = 0;
        if (i + size > count) { d->stats.midi_damaged++; return; } /* cut short by the payload's end */
        if (size > 1) w1 = dl_get_u32(p + 4 * (i + 1));
        i += size;
        switch (mt) {
        case 0x1: {
            uint8_t status = (uint8_t)(w0 >> 16), d1 = (uint8_t)(w0 >> 8), d2 = (uint8_t)w0;
            uint32_t n = dl_midi_message_length(status);
            if (status < 0xF0 || n == 0 || (n >= 2 && d1 > 0x7F) || (n >= 3 && d2 > 0x7F)) { d->stats.midi_damaged++; break; }
            dl__emit3(d, offset, status, d1, d2, n);
            break;
        }
        case 0x2: {
            uint8_t status = (uint8_t)(w0 >> 16), d1 = (uint8_t)(w0 >> 8), d2 = (uint8_t)w0;
            uint32_t n = dl_midi_message_length(status);
            if (status < 0x80 || status >= 0xF0 || d1 > 0x7F || (n == 3 && d2 > 0x7F)) { d->stats.midi_damaged++; break; }
            dl__emit3(d, offset, status, d1, d2, n);
            break;
        }
        case 0x3: dl__ump_sysex7(d, w0, w1, offset); break;
        case 0x4: dl__ump_midi2(d, w0, w1, offset); break;
        default: d->stats.midi_untranslatable++; break; /* utility, data 128, flex data, stream, reserved */
        }
    }
}

static void dl__midi_deliver(dl_device *d, const dl_command *c)
{
    const uint8_t *p = c->payload;
    uint32_t off = c->sample_offset;
    switch (c->type) {
    case DL_CMD_NOTE_ON: dl__emit3(d, off, (uint8_t)(0x90 | p[0]), p[1], p[2], 3); break;
    case DL_CMD_NOTE_OFF: dl__emit3(d, off, (uint8_t)(0x80 | p[0]), p[1], p[2], 3); break;
    case DL_CMD_CONTROL_CHANGE: dl__emit3(d, off, (uint8_t)(0xB0 | p[0]), p[1], p[2], 3); break;
    case DL_CMD_PITCH_BEND: {
        uint16_t v = dl_get_u16(p + DL_PAYLOAD_PITCH_BEND_VALUE_OFFSET);
        dl__emit3(d, off, (uint8_t)(0xE0 | p[0]), (uint8_t)(v & 0x7F), (uint8_t)(v >> 7), 3);
        break;
    }
    case DL_CMD_PROGRAM_CHANGE: dl__emit3(d, off, (uint8_t)(0xC0 | p[0]), p[1], 0, 2); break;
    case DL_CMD_AFTERTOUCH:
        if (p[1]) dl__emit3(d, off, (uint8_t)(0xA0 | p[0]), p[2], p[3], 3);
        else dl__emit3(d, off, (uint8_t)(0xD0 | p[0]), p[3], 0, 2);
        break;
    case DL_CMD_SYSEX: dl__midi_emit(d, off, p, c->payload_len); break;
    case DL_CMD_MIDI_RAW: dl__midi_raw(d, p, c->payload_len, off); break;
    case DL_CMD_UMP: dl__ump(d, p, c->payload_len, off); break;
    default: break;
    }
}

/* -- default handling (section 7.3) -------------------------------------------------------- */

static void dl__device_mirror_format(dl_device *d)
{
    /* 1.1: the owning device writes its slot's format mirror without the lock, after
       checking that the slot is still its own; readers treat it as advisory. */
    if (!dl__device_owns_slot(d)) return;
    DL__STORE_RLX(&d->rslot->sample_rate, d->sample_rate);
    DL__STORE_RLX(&d->rslot->block_size, d->block_size);
    DL__STORE_RLX(&d->rslot->mode, d->mode);
}

static void dl__device_handshake(dl_device *d, const dl_command *c)
{
    dl_handshake req, ack;
    dl_message m;
    dl_handshake_decode(c->payload, c->payload_len, &req);
    if (req.version_major != DL_PROTOCOL_MAJOR) {
        char text[160];
        snprintf(text, sizeof(text), "protocol version mismatch: host speaks %u.%u, device %s speaks %d.%d",
                 req.version_major, req.version_minor, d->id, DL_PROTOCOL_MAJOR, DL_PROTOCOL_MINOR);
        dl__device_error_reply(d, c->seq, c->type, DL_ERRCODE_VERSION_MISMATCH, text);
        return;
    }
    if (d->capabilities & DL_CAP_FLEXIBLE_FORMAT) {
        /* 1.1: each non-zero value in range is adopted on its own; one out of range is ignored */
        uint32_t rate = d->sample_rate, block = d->block_size;
        if (req.sample_rate >= DL_SAMPLE_RATE_MIN && req.sample_rate <= DL_SAMPLE_RATE_MAX) rate = req.sample_rate;
        if (req.block_size >= DL_BLOCK_SIZE_MIN && req.block_size <= DL_BLOCK_SIZE_MAX) block = req.block_size;
        if (rate != d->sample_rate || block != d->block_size) {
            __atomic_store_n(&d->sample_rate, rate, __ATOMIC_RELEASE);
            __atomic_store_n(&d->block_size, block, __ATOMIC_RELEASE);
            DL__STORE_REL(&d->hdr->sample_rate, rate); /* before the HandshakeAck is pushed */
            DL__STORE_REL(&d->hdr->block_size, block);
            dl__device_mirror_format(d);
            dl__fmt(d->event_text, sizeof(d->event_text), "%u Hz, %u frames", rate, block);
            dl__device_event(d, DL_EVENT_FORMAT_CHANGED, d->event_text);
        }
    }
    d->negotiated = req.capabilities ? (d->capabilities & req.capabilities) : d->capabilities;
    ack.version_major = DL_PROTOCOL_MAJOR;
    ack.version_minor = DL_PROTOCOL_MINOR;
    ack.capabilities = d->negotiated;
    ack.sample_rate = d->sample_rate;
    ack.block_size = d->block_size;
    ack.channels = d->channels;
    ack.mode = d->mode;
    ack.return_channels = (d->negotiated & DL_CAP_RETURN_AUDIO) ? d->return_channels : 0;
    dl_message_init(&m, DL_CMD_HANDSHAKE_ACK);
    m.header.flags = DL_FLAG_RESPONSE;
    m.header.request_seq = c->seq;
    dl__handshake_put(m.payload, &ack);
    m.header.payload_len = DL_PAYLOAD_HANDSHAKE_ACK_FIXED_SIZE;
    dl__device_push(d, &m);
    dl__fmt(d->event_text, sizeof(d->event_text), "host pid %u: %u Hz, %u frames, %u ch", d->claimed_by, d->sample_rate,
            d->block_size, d->channels);
    dl__device_event(d, DL_EVENT_HANDSHAKE, d->event_text);
}

static void dl__device_set_mode(dl_device *d, const dl_command *c)
{
    uint32_t mode = dl_get_u32(c->payload + DL_PAYLOAD_SET_TRANSPORT_MODE_MODE_OFFSET);
    dl_message m;
    if (mode > DL_MODE_MIDI) {
        dl__refuse(d, c->seq, c->type, DL_ERRCODE_INVALID_ARGUMENT, 0, "unknown transport mode %u", mode);
        return;
    }
    if (!d->has_audio && mode != DL_MODE_MIDI) {
        dl__refuse(d, c->seq, c->type, DL_ERRCODE_INVALID_ARGUMENT, 0, "cannot switch to %s: device %s was started in "
                   "midi mode and has no audio rings", dl_mode_label(mode), d->id);
        return;
    }
    if (d->has_audio && mode == DL_MODE_MIDI) {
        dl__refuse(d, c->seq, c->type, DL_ERRCODE_INVALID_ARGUMENT, 0, "cannot switch to midi: device %s has audio "
                   "rings (it supports audio+midi and audio)", d->id);
        return;
    }
    if (mode != d->mode) {
        __atomic_store_n(&d->mode, mode, __ATOMIC_RELEASE);
        DL__STORE_REL(&d->hdr->mode, mode);
        dl__device_mirror_format(d);
        dl__fmt(d->event_text, sizeof(d->event_text), "%s", dl_mode_label(mode));
        dl__device_event(d, DL_EVENT_MODE_CHANGED, d->event_text);
    }
    dl_message_init(&m, DL_CMD_SET_TRANSPORT_MODE);
    m.header.flags = DL_FLAG_RESPONSE;
    m.header.request_seq = c->seq;
    dl_put_u32(m.payload + DL_RESPONSE_SET_TRANSPORT_MODE_MODE_OFFSET, mode);
    m.header.payload_len = DL_RESPONSE_SET_TRANSPORT_MODE_FIXED_SIZE;
    dl__device_push(d, &m);
}

static void dl__device_default(dl_device *d, const dl_command *c, const dl_command_info *info)
{
    dl_message m;
    switch (c->type) {
    case DL_CMD_PING:
        dl_message_init(&m, DL_CMD_PONG);
        m.header.flags = DL_FLAG_RESPONSE;
        m.header.request_seq = c->seq;
        dl_put_u64(m.payload + DL_PAYLOAD_PONG_PING_SENT_NS_OFFSET, dl_get_u64(c->payload + DL_PAYLOAD_PING_SENT_NS_OFFSET));
        dl_put_u64(m.payload + DL_PAYLOAD_PONG_RECEIVED_NS_OFFSET, dl_now_ns());
        m.header.payload_len = DL_PAYLOAD_PONG_FIXED_SIZE;
        dl__device_push(d, &m);
        return;
    case DL_CMD_HANDSHAKE: dl__device_handshake(d, c); return;
    case DL_CMD_SET_TRANSPORT_MODE: dl__device_set_mode(d, c); return;
    case DL_CMD_DISCONNECT: {
        uint32_t n = c->payload_len < sizeof(d->event_text) - 1 ? c->payload_len : (uint32_t)sizeof(d->event_text) - 1;
        memcpy(d->event_text, c->payload, n);
        d->event_text[n] = 0;
        dl__device_event(d, DL_EVENT_HOST_LEFT, n ? d->event_text : "host left");
        return;
    }
    case DL_CMD_PONG: case DL_CMD_HANDSHAKE_ACK: case DL_CMD_ERROR:
        return; /* informational when sent to a device */
    default:
        if (info->midi) {
            dl__midi_deliver(d, c);
            return;
        }
        dl__refuse(d, c->seq, c->type, DL_ERRCODE_NOT_SUPPORTED, 0, "%s is not supported by device %s", info->name, d->id);
        return;
    }
}

/* Every received message, in the 1.1 order of checks. */
static void dl__device_dispatch(dl_device *d, const dl_message *m)
{
    dl__feed f;
    dl_command c;
    const dl_command_info *info;
    uint32_t need;
    d->stats.commands_received++;
    dl__device_check_claim(d);
    /* (1) fragment structure and reassembly */
    dl__reassemble(&d->rx, m, &f);
    if (f.discarded)
        dl__refuse(d, f.discarded_seq, f.discarded_type, DL_ERRCODE_FRAGMENT_ERROR, 1, "%s", f.discarded_text);
    if (f.status < 0) {
        dl__refuse(d, m->header.seq, m->header.type, DL_ERRCODE_FRAGMENT_ERROR, 1, "%s", f.text);
        return;
    }
    if (f.status == 0) return;
    c.type = m->header.type; /* the LAST fragment's header: its seq and sample_offset */
    c.flags = m->header.flags;
    c.seq = m->header.seq;
    c.sample_offset = m->header.sample_offset;
    c.payload = f.payload;
    c.payload_len = f.len;
    /* (2) payload_len */
    if (m->header.payload_len > DL_MESSAGE_PAYLOAD_SIZE) {
        dl__refuse(d, c.seq, c.type, DL_ERRCODE_MALFORMED, 1, "payload_len %u exceeds %d", m->header.payload_len,
                   DL_MESSAGE_PAYLOAD_SIZE);
        return;
    }
    /* (3) known type */
    info = dl_command_find(c.type);
    if (info == NULL) {
        dl__refuse(d, c.seq, c.type, DL_ERRCODE_UNKNOWN_COMMAND, 1, "unknown command type 0x%04x", c.type);
        return;
    }
    /* (4) mode, before the payload is looked at */
    if (info->midi && d->mode == DL_MODE_AUDIO) {
        dl__refuse(d, c.seq, c.type, DL_ERRCODE_WRONG_MODE, 0, "%s refused: device %s is in audio-only mode", info->name, d->id);
        return;
    }
    /* (5) payload decoding */
    need = (uint32_t)(((c.flags & DL_FLAG_RESPONSE) && info->response_fixed >= 0) ? info->response_fixed : info->request_fixed);
    if (c.payload_len < need) {
        dl__refuse(d, c.seq, c.type, DL_ERRCODE_MALFORMED, 1, "%s payload is %u bytes, needs %u", info->name, c.payload_len, need);
        return;
    }
    if (info->midi && !dl__midi_valid(d, &c)) return;
    /* (6) handling */
    if (d->config.on_command && d->config.on_command(d, &c, d->config.user_data) == DL_COMMAND_HANDLED) return;
    dl__device_default(d, &c, info);
}

/* -- the real-time loop ------------------------------------------------------------------- */

uint32_t dl_device_process_commands(dl_device *d)
{
    uint32_t handled = 0;
    uint64_t now;
    if (!dl__enter(&d->gate)) return 0;
    now = dl_now_ns();
    if (now >= d->next_heartbeat && d->registered) {
        if (dl__device_owns_slot(d)) DL__STORE_REL(&d->rslot->heartbeat_ns, now); /* never stamp a slot we lost */
        d->next_heartbeat = now + DL__HEARTBEAT_EVERY_NS;
    }
    if (now >= d->next_host_check) {
        uint32_t host = DL__LOAD_ACQ(&d->hdr->host_pid);
        d->next_host_check = now + DL__HOST_CHECK_INTERVAL_NS;
        d->host_alive = dl__pid_exists(host); /* kill(pid, 0) only: no /proc on the audio path */
        if (host != 0 && host == d->claimed_by && !d->host_alive && !d->host_died_reported) {
            d->host_died_reported = 1;
            dl__fmt(d->event_text, sizeof(d->event_text), "host pid %u died", host);
            dl__device_event(d, DL_EVENT_HOST_DIED, d->event_text);
        }
        if (d->registered && !dl__device_owns_slot(d)) {
            __atomic_store_n(&d->registered, 0, __ATOMIC_RELEASE);
            dl__fmt(d->error, sizeof(d->error), "device %s lost its registry slot (reclaimed after its heartbeat "
                    "stalled for over %.0f s); hosts can no longer find it: restart it", d->id, DL_HEARTBEAT_STALE_S);
            dl__device_event(d, DL_EVENT_SLOT_LOST, d->error);
        }
    }
    if (d->out_count) dl__outbox_flush(d);
    dl__device_check_claim(d);
    while (handled < d->commands.capacity) {
        int32_t got = dl_message_ring_pop(&d->commands, &d->scratch);
        if (got == 0) break;
        if (got < 0) {
            d->stats.errors++;
            dl__fmt(d->error, sizeof(d->error), "command ring indices are corrupt; discarding queued commands");
            dl_ring_discard(d->commands.control);
            break;
        }
        handled++;
        dl__device_dispatch(d, &d->scratch);
    }
    dl__leave(&d->gate);
    return handled;
}

uint32_t dl_device_queued_frames(const dl_device *cd)
{
    dl_device *d = (dl_device *)(uintptr_t)cd;
    uint32_t fill = 0;
    if (dl__enter(&d->gate)) {
        if (d->has_audio) fill = dl_ring_fill(d->audio.control);
        dl__leave(&d->gate);
    }
    return fill;
}

uint32_t dl_device_blocks_wanted(const dl_device *cd)
{
    dl_device *d = (dl_device *)(uintptr_t)cd;
    uint32_t wanted = 0;
    if (dl__enter(&d->gate)) {
        uint32_t block = d->block_size, target = d->config.fill_blocks * block;
        if (d->has_audio && d->mode != DL_MODE_MIDI && target && DL__LOAD_ACQ(&d->hdr->host_pid) != 0) {
            uint32_t queued = dl_ring_fill(d->audio.control);
            if (queued < target) wanted = (target - queued + block - 1) / block;
        }
        dl__leave(&d->gate);
    }
    return wanted;
}

dl_result dl_device_write_audio(dl_device *d, const float *const *planes, uint32_t frames)
{
    dl_result r;
    int32_t n;
    if (!dl__enter(&d->gate)) return DL_NOT_CONNECTED;
    if (!d->has_audio || d->mode == DL_MODE_MIDI) {
        dl__leave(&d->gate);
        return DL_NOT_CONNECTED;
    }
    if (DL__LOAD_ACQ(&d->hdr->claim_generation) != d->claim_seen) {
        dl__leave(&d->gate); /* rendered for the previous host: never written (1.1) */
        return DL_STALE_BLOCK;
    }
    if (frames > d->audio.capacity) {
        dl__leave(&d->gate);
        return DL_INVALID_ARGS;
    }
    n = dl_audio_ring_write(&d->audio, planes, d->channels, frames);
    if (n > 0 || frames == 0) {
        if (n > 0) DL__COUNT(&d->hdr->blocks_written);
        r = DL_SUCCESS;
    } else if (n == 0) {
        /* an overrun counts only while the live host whose claim we saw is reading */
        if (d->host_alive && d->claimed_by && DL__LOAD_ACQ(&d->hdr->host_pid) == d->claimed_by)
            DL__COUNT(&d->hdr->overruns);
        r = DL_RING_FULL;
    } else {
        d->stats.errors++;
        dl__fmt(d->error, sizeof(d->error), "audio ring indices are corrupt");
        r = DL_CORRUPT; /* only the consumer may repair it; the host discards it */
    }
    dl__leave(&d->gate);
    return r;
}

uint32_t dl_device_read_return(dl_device *d, float *const *planes, uint32_t channels, uint32_t frames)
{
    int32_t n;
    if (!dl__enter(&d->gate)) {
        dl__zero_planes(planes, channels, 0, frames);
        return 0;
    }
    if (!d->has_return) {
        dl__zero_planes(planes, channels, 0, frames);
        dl__leave(&d->gate);
        return 0;
    }
    n = dl_audio_ring_read(&d->ret, planes, channels, frames);
    if (n < 0) {
        dl_ring_discard(d->ret.control);
        d->stats.errors++;
        n = 0;
    }
    if ((uint32_t)n < frames && (d->negotiated & DL_CAP_RETURN_AUDIO) && DL__LOAD_ACQ(&d->hdr->host_pid) != 0)
        DL__COUNT(&d->hdr->return_underruns);
    dl__leave(&d->gate);
    return (uint32_t)n;
}

void dl_device_set_latency(dl_device *d, uint32_t latency_frames)
{
    d->config.latency_frames = latency_frames;
    if (dl__enter(&d->gate)) {
        DL__STORE_RLX(&d->hdr->latency_frames, latency_frames);
        dl__leave(&d->gate);
    }
}

void dl_device_set_xruns(dl_device *d, uint64_t xruns)
{
    if (dl__enter(&d->gate)) {
        if (d->registered && dl__device_owns_slot(d)) DL__STORE_RLX(&d->rslot->xruns, xruns);
        dl__leave(&d->gate);
    }
}

void dl_device_heartbeat(dl_device *d)
{
    if (dl__enter(&d->gate)) {
        if (d->registered && dl__device_owns_slot(d)) DL__STORE_REL(&d->rslot->heartbeat_ns, dl_now_ns());
        dl__leave(&d->gate);
    }
}

static void dl__counters(const dl_transport_header *h, dl_counters *out)
{
    out->underruns = DL__LOAD_RLX(&h->underruns);
    out->overruns = DL__LOAD_RLX(&h->overruns);
    out->commands_dropped = DL__LOAD_RLX(&h->commands_dropped);
    out->responses_dropped = DL__LOAD_RLX(&h->responses_dropped);
    out->bad_messages = DL__LOAD_RLX(&h->bad_messages);
    out->return_underruns = DL__LOAD_RLX(&h->return_underruns);
    out->return_overruns = DL__LOAD_RLX(&h->return_overruns);
    out->blocks_written = DL__LOAD_RLX(&h->blocks_written);
    out->blocks_read = DL__LOAD_RLX(&h->blocks_read);
}

void dl_device_counters(const dl_device *cd, dl_counters *out)
{
    dl_device *d = (dl_device *)(uintptr_t)cd;
    memset(out, 0, sizeof(*out));
    if (dl__enter(&d->gate)) {
        dl__counters(d->hdr, out);
        dl__leave(&d->gate);
    }
}

void dl_device_stats_get(const dl_device *d, dl_device_stats *out) { *out = d->stats; }

/* ==== Host ================================================================================== */

struct dl_host {
    dl_host_config config;
    char config_ns[64];
    char link_tag[DL_LINK_TAG_MAX_BYTES + 1];
    char last_device_id[DL_ID_MAX_BYTES + 1];
    char error[256];
    char reason_text[160];
    uint32_t pid;
    dl__gate gate;
    dl__registry reg;
    int reg_ready;
    char ns[DL_NAMESPACE_MAX_CHARS + 1];
    /* the link */
    uint8_t *seg;
    size_t seg_size;
    dl_transport_header *hdr;
    dl_registry_slot *rslot;
    dl_device_info info;
    dl_message_ring commands, responses;
    dl_audio_ring audio, ret;
    int has_audio, has_return;
    dl_connection conn;
    int ever_connected;
    int connected;              /* atomic: the liveness verdict */
    int link_state;             /* dl_link_state, with reason_pid */
    uint32_t reason_pid;
    uint64_t next_check;
    uint64_t base_blocks_read, base_underruns;
    dl__reassembler rx;
    dl_message scratch;
    /* a request waiting for its answer */
    uint32_t waiting_seq;
    int reply_ready;
    dl_message reply;
    uint8_t *reply_blob;
    uint32_t reply_len;
    dl_host_stats stats;
};

dl_host_config dl_host_config_init(void)
{
    dl_host_config c;
    memset(&c, 0, sizeof(c));
    c.link_tag = "";
    c.capabilities = DL_CAP_AUDIO | DL_CAP_MIDI | DL_CAP_FRAGMENTS | DL_CAP_UMP;
    c.handshake_timeout_ms = (uint32_t)(DL_HANDSHAKE_TIMEOUT_NS / 1000000ull);
    c.prime_timeout_ms = 500;
    c.max_transfer_bytes = 1u << 20;
    c.max_open_transfers = DL_OPEN_TRANSFERS_MAX;
    return c;
}

dl_result dl_host_create(const dl_host_config *config, dl_host **out)
{
    dl_host *h;
    if (out == NULL) return DL_INVALID_ARGS;
    *out = NULL;
    if (config == NULL || config->max_transfer_bytes < DL_MESSAGE_PAYLOAD_SIZE ||
        config->max_transfer_bytes > DL_FRAGMENT_LIMIT_BYTES || config->max_open_transfers == 0 || config->max_open_transfers > 1024)
        return DL_INVALID_ARGS;
    h = (dl_host *)calloc(1, sizeof(dl_host));
    if (h == NULL) return DL_OUT_OF_MEMORY;
    h->config = *config;
    if (config->namespace_name) {
        snprintf(h->config_ns, sizeof(h->config_ns), "%s", config->namespace_name);
        h->config.namespace_name = h->config_ns;
    }
    snprintf(h->link_tag, sizeof(h->link_tag), "%s", config->link_tag ? config->link_tag : "");
    h->config.link_tag = NULL; /* h->link_tag holds it (validated at connect) */
    h->reply_blob = (uint8_t *)dl__reserve(config->max_transfer_bytes);
    if (h->reply_blob == NULL || !dl__reassembler_init(&h->rx, config->max_open_transfers, config->max_transfer_bytes)) {
        if (h->reply_blob) munmap(h->reply_blob, config->max_transfer_bytes);
        free(h);
        return DL_OUT_OF_MEMORY;
    }
    h->pid = (uint32_t)getpid();
    h->link_state = DL_LINK_NEVER;
    *out = h;
    return DL_SUCCESS;
}

const char *dl_host_error(const dl_host *h) { return h ? h->error : "no host"; }

void dl_host_set_format(dl_host *h, uint32_t sample_rate, uint32_t block_size)
{
    h->config.sample_rate = sample_rate;
    h->config.block_size = block_size;
}

dl_result dl_host_set_link_tag(dl_host *h, const char *link_tag)
{
    dl_result r = dl_validate_link_tag(link_tag, h->error, sizeof(h->error));
    if (r == DL_SUCCESS) snprintf(h->link_tag, sizeof(h->link_tag), "%s", link_tag ? link_tag : "");
    return r;
}

/* Open the namespace's registry if one exists (a host never creates one). */
static dl_result dl__host_registry(dl_host *h)
{
    dl_result r;
    if (h->reg_ready) return DL_SUCCESS;
    if ((r = dl_namespace_resolve(h->config.namespace_name, h->ns, h->error, sizeof(h->error))) != DL_SUCCESS) return r;
    dl__registry_init(&h->reg, h->ns, 0);
    h->reg_ready = 1;
    return DL_SUCCESS;
}

dl_result dl_host_scan(dl_host *h, dl_device_info *out, uint32_t max, uint32_t *count)
{
    dl_result r;
    if (count == NULL || (out == NULL && max)) return DL_INVALID_ARGS;
    *count = 0;
    if ((r = dl__host_registry(h)) != DL_SUCCESS) return r;
    r = dl__registry_scan(&h->reg, out, max, count, h->error, sizeof(h->error));
    return r == DL_NOT_FOUND ? DL_SUCCESS : r; /* no registry: no devices */
}

/* -- liveness (section 9, with the 1.1 definition of alive) -------------------------------- */

static void dl__host_check_link(dl_host *h, uint64_t now)
{
    int state = DL_LINK_CONNECTED;
    uint32_t who = 0, owner;
    h->next_check = now + DL_LINK_CHECK_INTERVAL_NS;
    if (DL__LOAD_ACQ(&h->hdr->device_state) == DL_DEVICE_STOPPED) {
        state = DL_LINK_DEVICE_STOPPED;
    } else if ((owner = DL__LOAD_ACQ(&h->hdr->host_pid)) != h->pid) {
        state = owner ? DL_LINK_CLAIM_TAKEN : DL_LINK_CLAIM_RELEASED;
        who = owner;
    } else {
        const dl_registry_slot *s = h->rslot;
        uint32_t slot_state = DL__LOAD_ACQ(&s->state);
        uint32_t pid = DL__LOAD_RLX(&s->device_pid), generation = DL__LOAD_RLX(&s->generation);
        int64_t age = (int64_t)(dl_now_ns() - DL__LOAD_ACQ(&s->heartbeat_ns)); /* negative: fresh */
        if (slot_state != DL_SLOT_ACTIVE || pid != h->info.pid || generation != h->info.generation) {
            state = DL_LINK_DEVICE_LEFT;
        } else if (!dl__pid_exists(pid) || (age > (int64_t)DL__ZOMBIE_CHECK_NS && !dl_pid_alive(pid))) {
            /* kill(pid, 0) always; /proc (a zombie) only once the heartbeat has stalled */
            state = DL_LINK_DEVICE_DIED;
            who = pid;
        } else if (age > (int64_t)DL_LINK_STALE_NS) {
            state = DL_LINK_DEVICE_SILENT;
        }
    }
    if (state != DL_LINK_CONNECTED && state != DL_LINK_CLAIM_TAKEN && state != DL_LINK_CLAIM_RELEASED &&
        DL__LOAD_ACQ(&h->hdr->device_state) == DL_DEVICE_STOPPED)
        state = DL_LINK_DEVICE_STOPPED; /* a stop that raced the check is reported as a stop */
    if (state != DL_LINK_CONNECTED) {
        h->reason_pid = who;
        h->link_state = state;
        __atomic_store_n(&h->connected, 0, __ATOMIC_RELEASE);
    }
}

const char *dl_host_disconnect_reason(dl_host *h)
{
    switch ((dl_link_state)h->link_state) {
    case DL_LINK_CONNECTED: return "";
    case DL_LINK_NEVER: return "not connected";
    case DL_LINK_HOST_DISCONNECTED: return "host disconnected";
    case DL_LINK_DEVICE_STOPPED: return "device stopped";
    case DL_LINK_CLAIM_TAKEN: snprintf(h->reason_text, sizeof(h->reason_text), "claim taken over by host pid %u", h->reason_pid); return h->reason_text;
    case DL_LINK_CLAIM_RELEASED: return "claim released";
    case DL_LINK_DEVICE_LEFT: return "device left the registry";
    case DL_LINK_DEVICE_DIED: snprintf(h->reason_text, sizeof(h->reason_text), "device process %u died", h->reason_pid); return h->reason_text;
    case DL_LINK_DEVICE_SILENT: snprintf(h->reason_text, sizeof(h->reason_text), "device silent for more than %.1f s", DL_LINK_STALE_S); return h->reason_text;
    }
    return "";
}

dl_link_state dl_host_link_state(const dl_host *h) { return (dl_link_state)h->link_state; }

/* -- responses ---------------------------------------------------------------------------- */

static uint32_t dl__host_responses(dl_host *h)
{
    uint32_t handled = 0;
    dl__feed f;
    while (handled < h->responses.capacity) {
        int32_t got = dl_message_ring_pop(&h->responses, &h->scratch);
        dl_command c;
        if (got == 0) break;
        if (got < 0) {
            h->stats.errors++;
            dl__fmt(h->error, sizeof(h->error), "response ring indices are corrupt");
            dl_ring_discard(h->responses.control);
            break;
        }
        handled++;
        h->stats.responses_received++;
        dl__reassemble(&h->rx, &h->scratch, &f);
        if (f.discarded) h->stats.errors++;
        if (f.status < 0) {
            h->stats.errors++;
            dl__fmt(h->error, sizeof(h->error), "bad response: %s", f.text);
            continue;
        }
        if (f.status == 0) continue;
        c.type = h->scratch.header.type;
        c.flags = h->scratch.header.flags;
        c.seq = h->scratch.header.seq;
        c.sample_offset = h->scratch.header.sample_offset;
        c.payload = f.payload;
        c.payload_len = f.len;
        if (c.type == DL_CMD_ERROR) h->stats.errors_received++;
        if (h->waiting_seq != 0 && h->scratch.header.request_seq == h->waiting_seq) {
            h->reply = h->scratch;
            memcpy(h->reply_blob, f.payload, f.len);
            h->reply_len = f.len;
            h->reply_ready = 1;
        }
        if (h->config.on_response) h->config.on_response(h, &c, h->config.user_data);
    }
    return handled;
}

uint32_t dl_host_process_responses(dl_host *h)
{
    uint32_t n = 0;
    if (!dl__enter(&h->gate)) return 0;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) n = dl__host_responses(h);
    dl__leave(&h->gate);
    return n;
}

/* -- sending ------------------------------------------------------------------------------- */

static dl_result dl__host_push(dl_host *h, const dl_message *m)
{
    int32_t got = dl_message_ring_push(&h->commands, m);
    if (got == 1) {
        h->stats.commands_sent++;
        return DL_SUCCESS;
    }
    if (got == 0) {
        h->stats.commands_dropped++;
        DL__COUNT(&h->hdr->commands_dropped);
        return DL_RING_FULL;
    }
    h->stats.errors++;
    dl__fmt(h->error, sizeof(h->error), "command ring indices are corrupt");
    return DL_CORRUPT;
}

static dl_result dl__host_push_fragments(dl_host *h, uint16_t type, const void *data, uint32_t len, uint32_t offset)
{
    uint32_t count = dl_fragment_count(len), i, tid;
    dl_message m;
    if (count > dl_message_ring_space(&h->commands)) { /* all fragments or none: one lost loses the transfer */
        h->stats.commands_dropped++;
        DL__COUNT(&h->hdr->commands_dropped);
        return DL_RING_FULL;
    }
    tid = count > 1 ? dl_next_transfer_id() : 0;
    for (i = 0; i < count; i++) {
        dl_result r;
        dl_cmd_fragment(&m, type, data, len, i, tid, offset);
        if ((r = dl__host_push(h, &m)) != DL_SUCCESS) return r;
    }
    return DL_SUCCESS;
}

dl_result dl_host_send(dl_host *h, const dl_message *m)
{
    dl_result r = DL_NOT_CONNECTED;
    if (!dl__enter(&h->gate)) return DL_NOT_CONNECTED;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) r = dl__host_push(h, m);
    dl__leave(&h->gate);
    return r;
}

dl_result dl_host_send_fragments(dl_host *h, uint16_t type, const void *data, uint32_t len, uint32_t sample_offset)
{
    dl_result r = DL_NOT_CONNECTED;
    if (len && data == NULL) return DL_INVALID_ARGS;
    if (len > DL_FRAGMENT_LIMIT_BYTES) return DL_INVALID_ARGS;
    if (!dl__enter(&h->gate)) return DL_NOT_CONNECTED;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) r = dl__host_push_fragments(h, type, data, len, sample_offset);
    dl__leave(&h->gate);
    return r;
}

dl_result dl_host_send_sysex(dl_host *h, const uint8_t *data, uint32_t len, uint32_t sample_offset)
{
    if (!dl__sysex_ok(data, len)) return DL_INVALID_ARGS;
    return dl_host_send_fragments(h, DL_CMD_SYSEX, data, len, sample_offset);
}

dl_result dl_host_send_ump(dl_host *h, const uint32_t *words, uint32_t count, uint32_t sample_offset)
{
    dl_message m;
    if (words == NULL || count == 0) return DL_INVALID_ARGS;
    if (count <= DL_MESSAGE_PAYLOAD_SIZE / 4) {
        dl_cmd_ump(&m, words, count, sample_offset);
        return dl_host_send(h, &m);
    }
    /* words are little-endian on the wire, as in memory here (the header requires it) */
    return dl_host_send_fragments(h, DL_CMD_UMP, words, count * 4, sample_offset);
}

dl_result dl_host_send_midi(dl_host *h, const uint8_t *data, uint32_t len, uint32_t sample_offset)
{
    dl_message m;
    dl_result r;
    uint8_t status;
    if (data == NULL || len == 0) return DL_INVALID_ARGS;
    status = data[0];
    if (status == 0xF0) return dl_host_send_sysex(h, data, len, sample_offset);
    if (status >= 0x80 && status < 0xF0 && len == dl_midi_message_length(status)) {
        uint8_t ch = status & 0x0F, d1 = data[1], d2 = len > 2 ? data[2] : 0;
        switch (status & 0xF0) {
        case 0x90: r = dl_cmd_note_on(&m, ch, d1, d2, sample_offset); break;
        case 0x80: r = dl_cmd_note_off(&m, ch, d1, d2, sample_offset); break;
        case 0xB0: r = dl_cmd_control_change(&m, ch, d1, d2, sample_offset); break;
        case 0xE0: r = d1 > 127 || d2 > 127 ? DL_INVALID_ARGS : dl_cmd_pitch_bend(&m, ch, (uint16_t)(d1 | (d2 << 7)), sample_offset); break;
        case 0xC0: r = dl_cmd_program_change(&m, ch, d1, sample_offset); break;
        case 0xD0: r = dl_cmd_channel_pressure(&m, ch, d1, sample_offset); break;
        default: r = dl_cmd_poly_pressure(&m, ch, d1, d2, sample_offset); break;
        }
        if (r != DL_SUCCESS) return r;
        return dl_host_send(h, &m);
    }
    if ((r = dl_cmd_midi_raw(&m, data, len, sample_offset)) != DL_SUCCESS) return r;
    return dl_host_send(h, &m);
}

/* -- audio --------------------------------------------------------------------------------- */

uint32_t dl_host_read_audio(dl_host *h, float *const *planes, uint32_t channels, uint32_t frames)
{
    int32_t n;
    if (!dl__enter(&h->gate)) {
        dl__zero_planes(planes, channels, 0, frames);
        return 0;
    }
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) {
        uint64_t now = dl_now_ns();
        if (now >= h->next_check) dl__host_check_link(h, now);
    }
    if (!__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE) || !h->has_audio) {
        dl__zero_planes(planes, channels, 0, frames);
        dl__leave(&h->gate);
        return 0;
    }
    n = dl_audio_ring_read(&h->audio, planes, channels, frames);
    if (n < 0) {
        h->stats.errors++;
        dl__fmt(h->error, sizeof(h->error), "audio ring indices are corrupt; discarding");
        dl_ring_discard(h->audio.control);
        n = 0;
    }
    DL__COUNT(&h->hdr->blocks_read);
    if ((uint32_t)n < frames) DL__COUNT(&h->hdr->underruns);
    dl__leave(&h->gate);
    return (uint32_t)n;
}

dl_result dl_host_write_return(dl_host *h, const float *const *planes, uint32_t channels, uint32_t frames)
{
    dl_result r = DL_NOT_CONNECTED;
    int32_t n;
    if (!dl__enter(&h->gate)) return DL_NOT_CONNECTED;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE) && h->has_return) {
        n = dl_audio_ring_write(&h->ret, planes, channels, frames);
        if (n > 0 || frames == 0) {
            r = DL_SUCCESS;
        } else if (n == 0) {
            h->stats.return_overruns++;
            DL__COUNT(&h->hdr->return_overruns);
            r = DL_RING_FULL;
        } else {
            h->stats.errors++;
            r = DL_CORRUPT;
        }
    }
    dl__leave(&h->gate);
    return r;
}

int dl_host_connected(dl_host *h)
{
    int connected = 0;
    if (!dl__enter(&h->gate)) return 0;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) {
        uint64_t now = dl_now_ns();
        if (now >= h->next_check) dl__host_check_link(h, now);
        connected = __atomic_load_n(&h->connected, __ATOMIC_ACQUIRE);
    }
    dl__leave(&h->gate);
    return connected;
}

uint32_t dl_host_available_frames(dl_host *h)
{
    uint32_t n = 0;
    if (!dl__enter(&h->gate)) return 0;
    if (h->has_audio && __atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) n = dl_ring_fill(h->audio.control);
    dl__leave(&h->gate);
    return n;
}

uint32_t dl_host_command_space(dl_host *h)
{
    uint32_t n = 0;
    if (!dl__enter(&h->gate)) return 0;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) n = dl_message_ring_space(&h->commands);
    dl__leave(&h->gate);
    return n;
}

uint32_t dl_host_latency_frames(dl_host *h)
{
    uint32_t n = 0;
    if (!dl__enter(&h->gate)) return 0;
    n = DL__LOAD_RLX(&h->hdr->fill_blocks) * h->conn.block_size + DL__LOAD_RLX(&h->hdr->latency_frames);
    dl__leave(&h->gate);
    return n;
}

/* -- connect and disconnect (non-real-time) ------------------------------------------------- */

/* Release the claim (1.1): CAS our pid to 0; only if that worked, clear the slot's mirror
   under the lock, and only if the slot still holds the device we claimed and our pid. */
static void dl__host_release(dl_host *h)
{
    uint32_t expected = h->pid;
    char error[256];
    if (!__atomic_compare_exchange_n(&h->hdr->host_pid, &expected, 0u, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return;
    if (dl__registry_lock(&h->reg, error, sizeof(error)) == DL_SUCCESS) {
        dl_registry_slot *s = dl__slot(&h->reg, h->info.slot);
        if (DL__LOAD_ACQ(&s->state) == DL_SLOT_ACTIVE && s->device_pid == h->info.pid &&
            s->generation == h->info.generation && s->host_pid == h->pid)
            s->host_pid = 0; /* the link tag stays, for session recall */
        dl__registry_unlock(&h->reg);
    }
}

static void dl__host_unlink(dl_host *h, int notify)
{
    if (h->seg == NULL) return;
    if (notify && __atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) {
        dl_message m;
        dl_cmd_disconnect(&m, "host disconnect");
        dl_message_ring_push(&h->commands, &m);
    }
    dl__host_release(h);
    h->base_blocks_read = DL__LOAD_RLX(&h->hdr->blocks_read) - h->base_blocks_read; /* keep this link's numbers */
    h->base_underruns = DL__LOAD_RLX(&h->hdr->underruns) - h->base_underruns;
    h->stats.blocks_read = h->base_blocks_read;
    h->stats.underruns = h->base_underruns;
    munmap(h->seg, h->seg_size);
    h->seg = NULL;
    h->hdr = NULL;
    h->has_audio = h->has_return = 0;
    if (__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) h->link_state = DL_LINK_HOST_DISCONNECTED;
    __atomic_store_n(&h->connected, 0, __ATOMIC_RELEASE);
}

void dl_host_disconnect(dl_host *h)
{
    if (h == NULL) return;
    dl__gate_close(&h->gate);
    dl__host_unlink(h, 1);
}

void dl_host_destroy(dl_host *h)
{
    if (h == NULL) return;
    dl_host_disconnect(h);
    if (h->reg_ready) dl__registry_free(&h->reg);
    dl__reassembler_free(&h->rx);
    munmap(h->reply_blob, h->config.max_transfer_bytes);
    free(h);
}

/* Map and validate a device's segment (section 4.2 and the 1.1 additions). */
static dl_result dl__host_attach(dl_host *h, const dl_device_info *info)
{
    char name[128];
    struct stat st;
    void *map;
    int fd;
    const dl_transport_header *t;
    uint32_t regions[4][2], n_regions = 0, i, frames, slots;
    dl__transport_name(name, sizeof(name), h->ns, info->slot, info->pid);
    fd = shm_open(name, O_RDWR, 0600);
    if (fd < 0) {
        dl__fmt(h->error, sizeof(h->error), errno == ENOENT ? "segment %s does not exist" : "segment %s: %s", name, strerror(errno));
        return errno == ENOENT ? DL_NOT_FOUND : DL_SYSTEM_ERROR;
    }
    if (fstat(fd, &st) != 0 || st.st_size < DL_TRANSPORT_HEADER_BYTES) {
        dl__fmt(h->error, sizeof(h->error), "segment %s is truncated: %lld bytes, the header alone is %d", name,
                (long long)st.st_size, DL_TRANSPORT_HEADER_BYTES);
        close(fd);
        return DL_BAD_SEGMENT;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        dl__fmt(h->error, sizeof(h->error), "cannot map segment %s: %s", name, strerror(errno));
        return DL_SYSTEM_ERROR;
    }
    t = (const dl_transport_header *)map;
    frames = t->audio_frames;
    slots = t->message_slots;
#define DL__BAD(...) do { dl__fmt(h->error, sizeof(h->error), __VA_ARGS__); munmap(map, (size_t)st.st_size); return DL_BAD_SEGMENT; } while (0)
    if (t->magic != DL_SEGMENT_MAGIC)
        DL__BAD("segment %s has bad magic 0x%08x (expected 0x%08x): not a discoLink transport segment", name, t->magic, DL_SEGMENT_MAGIC);
    if (t->version_major != DL_PROTOCOL_MAJOR)
        DL__BAD("segment %s has protocol version %u.%u; this host speaks %d.%d", name, t->version_major, t->version_minor,
                DL_PROTOCOL_MAJOR, DL_PROTOCOL_MINOR);
    if (t->total_size > (uint64_t)st.st_size)
        DL__BAD("segment %s is truncated: %lld bytes, header says %u", name, (long long)st.st_size, t->total_size);
    if (frames == 0 || (frames & (frames - 1)) || slots == 0 || (slots & (slots - 1)) || frames > (1u << 24) || slots > (1u << 20))
        DL__BAD("segment %s: ring sizes %u/%u are not powers of two", name, frames, slots);
    if (t->channels > DL_MAX_CHANNELS || t->return_channels > DL_MAX_CHANNELS)
        DL__BAD("segment %s: %u channels, %u return channels (at most %d)", name, t->channels, t->return_channels, DL_MAX_CHANNELS);
    if (DL__LOAD_ACQ(&t->device_state) != DL_DEVICE_RUNNING)
        DL__BAD("segment %s: device is not running (state %u)", name, DL__LOAD_ACQ(&t->device_state));
    if (t->device_pid != info->pid)
        DL__BAD("segment %s belongs to pid %u, the registry says %u", name, t->device_pid, info->pid);
    regions[n_regions][0] = t->command_ring_offset; regions[n_regions++][1] = slots * DL_MESSAGE_SIZE;
    regions[n_regions][0] = t->response_ring_offset; regions[n_regions++][1] = slots * DL_MESSAGE_SIZE;
    if (t->audio_ring_offset) { regions[n_regions][0] = t->audio_ring_offset; regions[n_regions++][1] = t->channels * frames * 4; }
    if (t->return_ring_offset) { regions[n_regions][0] = t->return_ring_offset; regions[n_regions++][1] = t->return_channels * frames * 4; }
    for (i = 0; i < n_regions; i++)
        if (regions[i][0] < t->header_size || regions[i][0] % DL_SEGMENT_ALIGN ||
            (uint64_t)regions[i][0] + DL_RING_CONTROL_SIZE + regions[i][1] > (uint64_t)st.st_size)
            DL__BAD("segment %s: ring at offset %u lies outside the %lld-byte segment", name, regions[i][0], (long long)st.st_size);
#undef DL__BAD
    h->seg = (uint8_t *)map;
    h->seg_size = (size_t)st.st_size;
    h->hdr = (dl_transport_header *)map;
    dl__bind_rings(h->seg, t, &h->commands, &h->responses, &h->audio, &h->has_audio, &h->ret, &h->has_return);
    return DL_SUCCESS;
}

/* Claim (section 8.1 step 2): CAS 0 -> our pid; a dead holder's claim (or, forced, a live
   one's) is taken over by a second CAS. */
static dl_result dl__host_claim(dl_host *h)
{
    int attempt;
    for (attempt = 0; attempt < 8; attempt++) {
        uint32_t current = 0;
        if (__atomic_compare_exchange_n(&h->hdr->host_pid, &current, h->pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) ||
            current == h->pid)
            return DL_SUCCESS;
        if (!h->config.force && dl_pid_alive(current)) {
            char tag[64];
            dl__field_str(tag, sizeof(tag), h->hdr->link_tag, sizeof(h->hdr->link_tag));
            dl__fmt(h->error, sizeof(h->error), "device %s is claimed by host pid %u (link tag '%s'); disconnect that "
                    "host, or use force", h->info.id, current, tag);
            return DL_CLAIMED;
        }
        if (__atomic_compare_exchange_n(&h->hdr->host_pid, &current, h->pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return DL_SUCCESS;
    }
    dl__fmt(h->error, sizeof(h->error), "device %s: could not take the claim (contended)", h->info.id);
    return DL_CLAIMED;
}

/* Send (fragments waiting for room) and wait for the answer; gate closed or owned. */
static dl_result dl__host_request(dl_host *h, uint16_t type, const void *payload, uint32_t len, dl_message *reply,
                                  uint64_t timeout_ns, const dl_message *prebuilt)
{
    uint64_t deadline = dl_now_ns() + timeout_ns, spin_until;
    uint32_t count = prebuilt ? 1 : dl_fragment_count(len), i, tid = count > 1 ? dl_next_transfer_id() : 0;
    dl_message m;
    h->reply_ready = 0;
    h->waiting_seq = 0;
    for (i = 0; i < count; i++) {
        if (prebuilt) m = *prebuilt;
        else dl_cmd_fragment(&m, type, payload, len, i, tid, 0);
        if (i + 1 == count) h->waiting_seq = m.header.seq;
        for (;;) {
            int32_t got;
            if (!__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) {
                dl__fmt(h->error, sizeof(h->error), "disconnected: %s", dl_host_disconnect_reason(h));
                return DL_NOT_CONNECTED;
            }
            got = dl_message_ring_push(&h->commands, &m);
            if (got == 1) break;
            if (got < 0) {
                dl__fmt(h->error, sizeof(h->error), "command ring indices are corrupt");
                return DL_CORRUPT;
            }
            if (dl_now_ns() > deadline) {
                dl__fmt(h->error, sizeof(h->error), "command ring stayed full for %.1f s", (double)timeout_ns / 1e9);
                return DL_TIMEOUT;
            }
            dl__host_responses(h);
            dl_sleep_ns(500000);
        }
        h->stats.commands_sent++;
    }
    spin_until = dl_now_ns() + 2000000; /* answers usually take microseconds */
    for (;;) {
        uint64_t now;
        dl__host_responses(h);
        if (h->reply_ready) {
            h->waiting_seq = 0;
            if (reply) *reply = h->reply;
            if (h->reply.header.type == DL_CMD_ERROR) {
                uint32_t code = h->reply_len >= 4 ? dl_get_u32(h->reply_blob) : 0, n = h->reply_len > 8 ? h->reply_len - 8 : 0;
                dl__fmt(h->error, sizeof(h->error), "%.*s", (int)(n > 200 ? 200 : n), (const char *)h->reply_blob + 8);
                return code == DL_ERRCODE_VERSION_MISMATCH ? DL_VERSION_MISMATCH : DL_REFUSED;
            }
            return DL_SUCCESS;
        }
        now = dl_now_ns();
        if (now >= h->next_check) dl__host_check_link(h, now);
        if (!__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE)) {
            h->waiting_seq = 0;
            dl__fmt(h->error, sizeof(h->error), "disconnected: %s", dl_host_disconnect_reason(h));
            return DL_NOT_CONNECTED;
        }
        if (now > deadline) {
            h->waiting_seq = 0;
            dl__fmt(h->error, sizeof(h->error), "no answer to %s within %.1f s", dl_command_name(prebuilt ? prebuilt->header.type : type),
                    (double)timeout_ns / 1e9);
            return DL_TIMEOUT;
        }
        if (now > spin_until) dl_sleep_ns(200000);
    }
}

dl_result dl_host_connect_info(dl_host *h, const dl_device_info *info)
{
    dl_result r;
    dl_message hs_msg, reply;
    dl_handshake hs, ack;
    char error[256];
    uint64_t deadline;
    if (info == NULL) return DL_INVALID_ARGS;
    dl__gate_close(&h->gate);
    dl__host_unlink(h, 1);
    if ((r = dl_validate_link_tag(h->link_tag, h->error, sizeof(h->error))) != DL_SUCCESS) return r;
    if ((r = dl__host_registry(h)) != DL_SUCCESS) return r;
    h->info = *info;
    if ((r = dl__host_attach(h, info)) != DL_SUCCESS) return r;
    if ((r = dl__host_claim(h)) != DL_SUCCESS) {
        munmap(h->seg, h->seg_size);
        h->seg = NULL;
        h->hdr = NULL;
        return r;
    }
    /* step 3: link tag, then a fresh audio ring (we are its consumer now: the device never
       takes the old full ring for an overrun), then the new claim generation */
    memset(h->hdr->link_tag, 0, sizeof(h->hdr->link_tag));
    memcpy(h->hdr->link_tag, h->link_tag, strlen(h->link_tag));
    if (h->has_audio) dl_ring_discard(h->audio.control);
    DL__STORE_REL(&h->hdr->claim_generation, DL__LOAD_ACQ(&h->hdr->claim_generation) + 1);
    /* step 4: the slot's claim mirror, under the lock, if the slot still holds that device */
    if (dl__registry_lock(&h->reg, error, sizeof(error)) == DL_SUCCESS) {
        dl_registry_slot *s = dl__slot(&h->reg, info->slot);
        if (DL__LOAD_ACQ(&s->state) == DL_SLOT_ACTIVE && s->device_pid == info->pid && s->generation == info->generation) {
            s->host_pid = h->pid;
            memset(s->link_tag, 0, sizeof(s->link_tag));
            memcpy(s->link_tag, h->link_tag, strlen(h->link_tag));
        }
        h->rslot = s; /* this mapping stays valid as long as the host lives */
        dl__registry_unlock(&h->reg);
    } else {
        h->rslot = dl__slot(&h->reg, info->slot);
    }
    /* step 5: start from fresh responses (the audio ring was discarded in step 3; again now
       could drop the new session's first blocks, which step 7 keeps) */
    dl_ring_discard(h->responses.control);
    dl__reassembler_reset(&h->rx);
    memset(&h->stats, 0, sizeof(h->stats));
    h->base_blocks_read = DL__LOAD_RLX(&h->hdr->blocks_read);
    h->base_underruns = DL__LOAD_RLX(&h->hdr->underruns);
    h->link_state = DL_LINK_CONNECTED;
    h->next_check = 0;
    __atomic_store_n(&h->connected, 1, __ATOMIC_RELEASE);
    /* step 6: the handshake */
    memset(&hs, 0, sizeof(hs));
    hs.version_major = DL_PROTOCOL_MAJOR;
    hs.version_minor = DL_PROTOCOL_MINOR;
    hs.capabilities = h->config.capabilities ? (h->config.capabilities | (h->config.return_audio ? DL_CAP_RETURN_AUDIO : 0)) : 0;
    hs.sample_rate = h->config.sample_rate;
    hs.block_size = h->config.block_size;
    hs.channels = h->config.channels;
    dl_cmd_handshake(&hs_msg, &hs);
    r = dl__host_request(h, DL_CMD_HANDSHAKE, NULL, 0, &reply, (uint64_t)h->config.handshake_timeout_ms * 1000000ull, &hs_msg);
    if (r == DL_SUCCESS && (reply.header.type != DL_CMD_HANDSHAKE_ACK ||
                            dl_handshake_decode(h->reply_blob, h->reply_len, &ack) != DL_SUCCESS)) {
        dl__fmt(h->error, sizeof(h->error), "device answered the Handshake with a %s", dl_command_name(reply.header.type));
        r = DL_REFUSED;
    }
    if (r != DL_SUCCESS) {
        char why[256];
        snprintf(why, sizeof(why), "%s", h->error);
        if (r == DL_REFUSED || r == DL_VERSION_MISMATCH)
            dl__fmt(h->error, sizeof(h->error), "device %s refused the handshake: %s", info->id, why);
        else
            dl__fmt(h->error, sizeof(h->error), "handshake with %s failed: %s", info->id, why);
        dl__host_unlink(h, 0);
        h->link_state = DL_LINK_NEVER;
        return r;
    }
    memset(&h->conn, 0, sizeof(h->conn));
    snprintf(h->conn.device_id, sizeof(h->conn.device_id), "%s", info->id);
    snprintf(h->conn.link_tag, sizeof(h->conn.link_tag), "%s", h->link_tag);
    h->conn.device_pid = info->pid;
    h->conn.sample_rate = ack.sample_rate;
    h->conn.block_size = ack.block_size;
    h->conn.channels = ack.channels;
    h->conn.mode = ack.mode;
    h->conn.capabilities = ack.capabilities;
    h->conn.return_channels = ack.return_channels;
    h->conn.version_major = ack.version_major;
    h->conn.version_minor = ack.version_minor;
    if (!(ack.capabilities & DL_CAP_RETURN_AUDIO)) h->has_return = 0; /* must not write it unless negotiated */
    /* step 7: keep the audio from where the device says our session starts; drop what came
       before (a device that had not yet seen our claim). A 1.0 device publishes no start. */
    if (h->has_audio) {
        if (ack.version_minor >= 1)
            dl_ring_discard_to(h->audio.control, DL__LOAD_ACQ(&h->hdr->session_start));
        else
            dl_ring_discard(h->audio.control);
    }
    h->ever_connected = 1;
    snprintf(h->last_device_id, sizeof(h->last_device_id), "%s", info->id);
    /* Give the device a moment to queue its first block, so the first real-time read does
       not underrun. A device on a DAW's clock may take longer: not an error. */
    deadline = dl_now_ns() + (uint64_t)h->config.prime_timeout_ms * 1000000ull;
    while (h->has_audio && ack.mode != DL_MODE_MIDI && dl_ring_fill(h->audio.control) < ack.block_size && dl_now_ns() < deadline)
        dl_sleep_ns(200000);
    h->error[0] = 0;
    dl__gate_open(&h->gate);
    return DL_SUCCESS;
}

static int dl__id_name_is(const char *id, const char *name)
{
    size_t n = strlen(name);
    return strncmp(id, name, n) == 0 && id[n] == ':';
}

dl_result dl_host_connect(dl_host *h, const char *device_id)
{
    dl_device_info devices[DL_REGISTRY_SLOTS];
    uint32_t count = 0, i;
    dl_result r;
    char running[200];
    size_t used = 0;
    if (device_id == NULL || device_id[0] == 0) {
        dl__fmt(h->error, sizeof(h->error), "device id is empty");
        return DL_INVALID_ARGS;
    }
    if ((r = dl_host_scan(h, devices, DL_REGISTRY_SLOTS, &count)) != DL_SUCCESS) return r;
    for (i = 0; i < count; i++)
        if (strcmp(devices[i].id, device_id) == 0) return dl_host_connect_info(h, &devices[i]);
    for (i = 0; i < count; i++) /* a bare Name: its lowest instance (the list is sorted) */
        if (dl__id_name_is(devices[i].id, device_id)) return dl_host_connect_info(h, &devices[i]);
    running[0] = 0;
    for (i = 0; i < count && used < sizeof(running); i++)
        used += (size_t)snprintf(running + used, sizeof(running) - used, "%s%s", i ? ", " : "", devices[i].id);
    dl__fmt(h->error, sizeof(h->error), "no device '%s' in namespace '%s'; running: %s", device_id, h->ns, count ? running : "none");
    return DL_NOT_FOUND;
}

dl_result dl_host_recall(dl_host *h, const char *link_tag, const char *device_id)
{
    dl_device_info devices[DL_REGISTRY_SLOTS];
    uint32_t count = 0, i;
    dl_result r;
    char tag[DL_LINK_TAG_MAX_BYTES + 1];
    snprintf(tag, sizeof(tag), "%s", link_tag ? link_tag : h->link_tag);
    if ((r = dl_validate_link_tag(tag, h->error, sizeof(h->error))) != DL_SUCCESS) return r;
    if ((r = dl_host_scan(h, devices, DL_REGISTRY_SLOTS, &count)) != DL_SUCCESS) return r;
    snprintf(h->link_tag, sizeof(h->link_tag), "%s", tag);
    if (tag[0])
        for (i = 0; i < count; i++)
            if (strcmp(devices[i].link_tag, tag) == 0 && (!devices[i].claimed || devices[i].host_pid == h->pid))
                return dl_host_connect_info(h, &devices[i]);
    if (device_id != NULL && device_id[0])
        for (i = 0; i < count; i++)
            if (strcmp(devices[i].id, device_id) == 0) return dl_host_connect_info(h, &devices[i]);
    dl__fmt(h->error, sizeof(h->error), "no device with link tag '%s'%s%s%s in namespace '%s'", tag,
            device_id && device_id[0] ? " or id '" : "", device_id && device_id[0] ? device_id : "",
            device_id && device_id[0] ? "'" : "", h->ns);
    return DL_NOT_FOUND;
}

dl_result dl_host_reconnect(dl_host *h)
{
    return dl_host_recall(h, h->link_tag, h->last_device_id[0] ? h->last_device_id : NULL);
}

dl_result dl_host_request(dl_host *h, uint16_t type, const void *payload, uint32_t len, dl_message *reply, uint32_t timeout_ms)
{
    dl_result r;
    if (len && payload == NULL) return DL_INVALID_ARGS;
    if (len > DL_FRAGMENT_LIMIT_BYTES) return DL_INVALID_ARGS;
    if (!dl__enter(&h->gate)) {
        dl__fmt(h->error, sizeof(h->error), "not connected");
        return DL_NOT_CONNECTED;
    }
    r = dl__host_request(h, type, payload, len, reply, (uint64_t)timeout_ms * 1000000ull, NULL);
    dl__leave(&h->gate);
    return r;
}

const uint8_t *dl_host_reply_payload(const dl_host *h, uint32_t *len)
{
    if (len) *len = h->reply_len;
    return h->reply_blob;
}

dl_result dl_host_ping(dl_host *h, uint64_t *round_trip_ns)
{
    dl_message m;
    dl_result r;
    uint64_t t0 = dl_now_ns();
    if (!dl__enter(&h->gate)) return DL_NOT_CONNECTED;
    dl_cmd_ping(&m, t0);
    r = dl__host_request(h, DL_CMD_PING, NULL, 0, NULL, 1000000000ull, &m);
    dl__leave(&h->gate);
    if (r == DL_SUCCESS && round_trip_ns) *round_trip_ns = dl_now_ns() - t0;
    return r;
}

const dl_connection *dl_host_connection(const dl_host *h) { return h->ever_connected ? &h->conn : NULL; }

void dl_host_stats_get(const dl_host *ch, dl_host_stats *out)
{
    dl_host *h = (dl_host *)(uintptr_t)ch;
    *out = h->stats;
    if (dl__enter(&h->gate)) {
        out->blocks_read = DL__LOAD_RLX(&h->hdr->blocks_read) - h->base_blocks_read;
        out->underruns = DL__LOAD_RLX(&h->hdr->underruns) - h->base_underruns;
        dl__leave(&h->gate);
    }
}

void dl_host_counters(const dl_host *ch, dl_counters *out)
{
    dl_host *h = (dl_host *)(uintptr_t)ch;
    memset(out, 0, sizeof(*out));
    if (dl__enter(&h->gate)) {
        dl__counters(h->hdr, out);
        dl__leave(&h->gate);
    }
}

#ifdef __cplusplus
}
#endif
#endif /* DISCOLINK_IMPLEMENTATION_INCLUDED */
#endif /* DISCOLINK_IMPLEMENTATION */
