/*
 * bridge.adapters._lv2host: the parts of an LV2 host that plugins call back into, in C.
 *
 * lilv itself is reached through ctypes (bridge/adapters/lv2.py). What a plugin calls from
 * its own threads, and what runs on the audio thread every block, lives here instead, so no
 * plugin ever calls into Python and the block path neither allocates nor takes a lock:
 *
 *   - the URID map and unmap features (a mutex-protected hash table: plugins map at
 *     instantiation and in non-real-time threads, as the URID spec allows);
 *   - the log feature (printf-style, which ctypes cannot implement), written to stderr;
 *   - the worker: schedule_work() from run() (or from a state restore or preset load, which
 *     the host calls between blocks on the same thread as run(), so the ring keeps one
 *     producer) puts the request into a lock-free ring and
 *     posts a semaphore; a worker thread of our own calls the plugin's work(), whose
 *     respond() puts the answer into a second lock-free ring; after run() the audio thread
 *     hands every queued response to work_response(), then calls end_run();
 *   - dl_lv2_run(): one block (reset the atom output buffers' sizes, run, deliver worker
 *     responses, end_run), so a block costs one foreign call.
 *
 * Ring rules (as in bridge/transport/_shm.c and docs/protocol.md): two free-running uint32
 * indices, a power-of-two capacity, the mask applied when indexing. The producer copies the
 * data and then stores its write index with RELEASE; the consumer loads it with ACQUIRE
 * before reading, and publishes its read index with RELEASE when done; the producer loads
 * the read index with ACQUIRE before overwriting. Each ring has exactly one producer
 * thread and one consumer thread: requests go audio thread -> worker, responses worker ->
 * audio thread.
 *
 * The LV2 structures are declared here (their ABI is fixed by the LV2 specification), so
 * building this needs no LV2 headers.
 *
 * Also a CPython module: run(runner_address, frames) is the same block call through
 * METH_FASTCALL, which costs less than a ctypes call.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- LV2 ABI (lv2/core/lv2.h, urid.h, log.h, worker.h) -------------------------------- */

typedef void *LV2_Handle;
typedef uint32_t LV2_URID;

typedef struct {
    const char *URI;
    LV2_Handle (*instantiate)(const void *descriptor, double rate, const char *bundle_path,
                              const void *const *features);
    void (*connect_port)(LV2_Handle instance, uint32_t port, void *data);
    void (*activate)(LV2_Handle instance);
    void (*run)(LV2_Handle instance, uint32_t sample_count);
    void (*deactivate)(LV2_Handle instance);
    void (*cleanup)(LV2_Handle instance);
    const void *(*extension_data)(const char *uri);
} LV2_Descriptor;

typedef struct {
    void *handle;
    LV2_URID (*map)(void *handle, const char *uri);
} LV2_URID_Map;

typedef struct {
    void *handle;
    const char *(*unmap)(void *handle, LV2_URID urid);
} LV2_URID_Unmap;

typedef struct {
    void *handle;
    int (*printf)(void *handle, LV2_URID type, const char *fmt, ...);
    int (*vprintf)(void *handle, LV2_URID type, const char *fmt, va_list ap);
} LV2_Log_Log;

typedef enum {
    LV2_WORKER_SUCCESS = 0,
    LV2_WORKER_ERR_UNKNOWN = 1,
    LV2_WORKER_ERR_NO_SPACE = 2
} LV2_Worker_Status;

typedef LV2_Worker_Status (*LV2_Worker_Respond_Function)(void *handle, uint32_t size,
                                                         const void *data);

typedef struct {
    LV2_Worker_Status (*work)(LV2_Handle instance, LV2_Worker_Respond_Function respond,
                              void *handle, uint32_t size, const void *data);
    LV2_Worker_Status (*work_response)(LV2_Handle instance, uint32_t size, const void *body);
    LV2_Worker_Status (*end_run)(LV2_Handle instance);
} LV2_Worker_Interface;

typedef struct {
    void *handle;
    LV2_Worker_Status (*schedule_work)(void *handle, uint32_t size, const void *data);
} LV2_Worker_Schedule;

typedef struct {
    uint32_t size; /* LV2_Atom: the body's size in bytes, then its type */
    uint32_t type;
} LV2_Atom_Header;

/* ---- URID map ------------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t lock;
    char **uris;        /* uris[id - 1]; ids start at 1 (0 means "no URID") */
    uint32_t count, capacity;
    uint32_t *table;    /* open addressing: 0 = empty, else an id */
    uint32_t table_size; /* a power of two, kept at least twice count */
    LV2_URID_Map map;
    LV2_URID_Unmap unmap;
} UridMap;

static uint32_t hash_text(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; ++s)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int urid_grow(UridMap *m)
{
    uint32_t size = m->table_size ? m->table_size * 2 : 1024;
    uint32_t *table = calloc(size, sizeof *table);
    if (!table)
        return -1;
    for (uint32_t id = 1; id <= m->count; ++id) {
        uint32_t i = hash_text(m->uris[id - 1]) & (size - 1);
        while (table[i])
            i = (i + 1) & (size - 1);
        table[i] = id;
    }
    free(m->table);
    m->table = table;
    m->table_size = size;
    return 0;
}

static LV2_URID urid_map(void *handle, const char *uri)
{
    UridMap *m = handle;
    if (!uri)
        return 0;
    pthread_mutex_lock(&m->lock);
    LV2_URID found = 0;
    if (m->table_size) {
        uint32_t i = hash_text(uri) & (m->table_size - 1);
        for (; m->table[i]; i = (i + 1) & (m->table_size - 1))
            if (strcmp(m->uris[m->table[i] - 1], uri) == 0) {
                found = m->table[i];
                break;
            }
    }
    if (!found && (2 * (m->count + 1) <= m->table_size || urid_grow(m) == 0)) {
        if (m->count == m->capacity) {
            uint32_t cap = m->capacity ? m->capacity * 2 : 256;
            char **uris = realloc(m->uris, cap * sizeof *uris);
            if (!uris)
                goto out;
            m->uris = uris;
            m->capacity = cap;
        }
        char *copy = strdup(uri);
        if (!copy)
            goto out;
        m->uris[m->count++] = copy;
        found = m->count;
        uint32_t i = hash_text(uri) & (m->table_size - 1);
        while (m->table[i])
            i = (i + 1) & (m->table_size - 1);
        m->table[i] = found;
    }
out:
    pthread_mutex_unlock(&m->lock);
    return found;
}

static const char *urid_unmap(void *handle, LV2_URID id)
{
    UridMap *m = handle;
    const char *uri = NULL;
    pthread_mutex_lock(&m->lock);
    if (id >= 1 && id <= m->count)
        uri = m->uris[id - 1]; /* never freed while the map lives, so safe to hand out */
    pthread_mutex_unlock(&m->lock);
    return uri;
}

UridMap *dl_urid_new(void)
{
    UridMap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->map.handle = m;
    m->map.map = urid_map;
    m->unmap.handle = m;
    m->unmap.unmap = urid_unmap;
    return m;
}

LV2_URID_Map *dl_urid_map_feature(UridMap *m) { return &m->map; }
LV2_URID_Unmap *dl_urid_unmap_feature(UridMap *m) { return &m->unmap; }
LV2_URID dl_urid_map(UridMap *m, const char *uri) { return urid_map(m, uri); }
const char *dl_urid_unmap(UridMap *m, LV2_URID id) { return urid_unmap(m, id); }

/* ---- log ------------------------------------------------------------------------------ */

typedef struct {
    LV2_Log_Log log;
    UridMap *urids;
    LV2_URID trace;
    char label[120];
} Log;

static int log_vprintf(void *handle, LV2_URID type, const char *fmt, va_list ap)
{
    Log *lg = handle;
    if (type == lg->trace)
        return 0; /* trace messages are for plugin developers, and often come per block */
    char text[1024];
    int n = snprintf(text, sizeof text, "lv2 %s: ", lg->label);
    if (n < 0 || n >= (int)sizeof text)
        n = 0;
    int m = vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    if (m < 0)
        return m;
    size_t len = strnlen(text, sizeof text);
    if (len && text[len - 1] != '\n' && len < sizeof text - 1)
        text[len++] = '\n';
    ssize_t w = write(2, text, len); /* one write: lines from threads don't interleave */
    (void)w;
    return m;
}

static int log_printf(void *handle, LV2_URID type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = log_vprintf(handle, type, fmt, ap);
    va_end(ap);
    return n;
}

Log *dl_log_new(UridMap *urids, const char *label)
{
    Log *lg = calloc(1, sizeof *lg);
    if (!lg)
        return NULL;
    lg->log.handle = lg;
    lg->log.printf = log_printf;
    lg->log.vprintf = log_vprintf;
    lg->urids = urids;
    lg->trace = urid_map(urids, "http://lv2plug.in/ns/ext/log#Trace");
    snprintf(lg->label, sizeof lg->label, "%s", label ? label : "plugin");
    return lg;
}

LV2_Log_Log *dl_log_feature(Log *lg) { return &lg->log; }
void dl_log_free(Log *lg) { free(lg); }

/* ---- state paths at instantiation ----------------------------------------------------- */

/* state:mapPath and state:freePath for plugins that want them from instantiate() on (lilv
   gives its own mapPath to save and restore): paths stay absolute, strings are malloc'd. */
typedef struct {
    void *handle;
    char *(*abstract_path)(void *handle, const char *absolute_path);
    char *(*absolute_path)(void *handle, const char *abstract_path);
} LV2_State_Map_Path;

typedef struct {
    void *handle;
    void (*free_path)(void *handle, char *path);
} LV2_State_Free_Path;

static char *same_path(void *handle, const char *path)
{
    (void)handle;
    return path ? strdup(path) : NULL;
}

static void free_path(void *handle, char *path)
{
    (void)handle;
    free(path);
}

static LV2_State_Map_Path map_path = {NULL, same_path, same_path};
static LV2_State_Free_Path free_path_feature = {NULL, free_path};

LV2_State_Map_Path *dl_map_path_feature(void) { return &map_path; }
LV2_State_Free_Path *dl_free_path_feature(void) { return &free_path_feature; }

/* ---- lock-free single-producer single-consumer ring ----------------------------------- */

typedef struct {
    uint8_t *data;
    uint32_t capacity; /* a power of two */
    uint32_t write_index; /* stored by the producer only (RELEASE) */
    char pad[56];         /* the two indices on separate cache lines */
    uint32_t read_index;  /* stored by the consumer only (RELEASE) */
} Ring;

static int ring_init(Ring *r, uint32_t capacity)
{
    r->data = calloc(capacity, 1);
    r->capacity = capacity;
    r->write_index = r->read_index = 0;
    return r->data ? 0 : -1;
}

static void ring_copy_in(Ring *r, uint32_t at, const void *src, uint32_t size)
{
    uint32_t pos = at & (r->capacity - 1), first = r->capacity - pos;
    if (first > size)
        first = size;
    memcpy(r->data + pos, src, first);
    memcpy(r->data, (const uint8_t *)src + first, size - first);
}

static void ring_copy_out(const Ring *r, uint32_t at, void *dst, uint32_t size)
{
    uint32_t pos = at & (r->capacity - 1), first = r->capacity - pos;
    if (first > size)
        first = size;
    memcpy(dst, r->data + pos, first);
    memcpy((uint8_t *)dst + first, r->data, size - first);
}

/* Producer: one message (a uint32 size, then the bytes), whole or not at all. */
static int ring_push(Ring *r, uint32_t size, const void *data)
{
    uint32_t w = r->write_index; /* our own index: no ordering needed */
    uint32_t rd = __atomic_load_n(&r->read_index, __ATOMIC_ACQUIRE);
    if (r->capacity - (w - rd) < sizeof size + (uint64_t)size)
        return -1;
    ring_copy_in(r, w, &size, sizeof size);
    ring_copy_in(r, w + sizeof size, data, size);
    __atomic_store_n(&r->write_index, w + (uint32_t)sizeof size + size, __ATOMIC_RELEASE);
    return 0;
}

/* Consumer: the next message's size, or -1 when the ring is empty. */
static int64_t ring_peek(Ring *r)
{
    uint32_t rd = r->read_index;
    uint32_t w = __atomic_load_n(&r->write_index, __ATOMIC_ACQUIRE);
    if (w - rd < sizeof(uint32_t))
        return -1;
    uint32_t size;
    ring_copy_out(r, rd, &size, sizeof size);
    return size;
}

static void ring_pop(Ring *r, void *dst, uint32_t size)
{
    uint32_t rd = r->read_index;
    ring_copy_out(r, rd + sizeof size, dst, size);
    __atomic_store_n(&r->read_index, rd + (uint32_t)sizeof size + size, __ATOMIC_RELEASE);
}

/* ---- the runner: one instance's block call and its worker ----------------------------- */

#define MAX_ATOM_OUTPUTS 16

typedef struct {
    const LV2_Descriptor *desc;
    LV2_Handle handle;
    const LV2_Worker_Interface *iface; /* NULL: the plugin has no worker interface */
    LV2_Worker_Schedule schedule;      /* the worker:schedule feature */
    Ring requests;                     /* audio thread -> worker thread */
    Ring responses;                    /* worker thread -> audio thread */
    uint8_t *request_buffer;           /* the worker thread's copy of one request */
    uint8_t *response_buffer;          /* the audio thread's copy of one response */
    sem_t pending;                     /* posted once per request (and to stop) */
    pthread_mutex_t work_lock;         /* work() never overlaps a state save or restore */
    pthread_t thread;
    int thread_started;
    int stopping;
    LV2_Atom_Header *atom_out[MAX_ATOM_OUTPUTS];
    uint32_t atom_out_capacity[MAX_ATOM_OUTPUTS];
    uint32_t atom_outputs;
    /* counters, for tests and status (written by one thread each, read anywhere) */
    uint64_t blocks, work_calls, responses_delivered, dropped_requests, dropped_responses;
    int32_t worker_tid; /* the worker thread's kernel thread id, once it runs */
} Runner;

static LV2_Worker_Status schedule_work(void *handle, uint32_t size, const void *data)
{
    Runner *r = handle;
    if (ring_push(&r->requests, size, data) != 0) {
        __atomic_add_fetch(&r->dropped_requests, 1, __ATOMIC_RELAXED);
        return LV2_WORKER_ERR_NO_SPACE;
    }
    sem_post(&r->pending); /* lock-free: an atomic increment, a futex wake if one waits */
    return LV2_WORKER_SUCCESS;
}

static LV2_Worker_Status respond(void *handle, uint32_t size, const void *data)
{
    Runner *r = handle;
    if (ring_push(&r->responses, size, data) != 0) {
        __atomic_add_fetch(&r->dropped_responses, 1, __ATOMIC_RELAXED);
        return LV2_WORKER_ERR_NO_SPACE;
    }
    return LV2_WORKER_SUCCESS;
}

static void *worker_main(void *arg)
{
    Runner *r = arg;
    pthread_setname_np(pthread_self(), "lv2 worker");
    __atomic_store_n(&r->worker_tid, (int32_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    for (;;) {
        while (sem_wait(&r->pending) != 0) {
        } /* EINTR: wait again */
        if (__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE))
            break;
        int64_t size = ring_peek(&r->requests);
        if (size < 0)
            continue;
        ring_pop(&r->requests, r->request_buffer, (uint32_t)size);
        pthread_mutex_lock(&r->work_lock);
        __atomic_add_fetch(&r->work_calls, 1, __ATOMIC_RELAXED);
        r->iface->work(r->handle, respond, r, (uint32_t)size, r->request_buffer);
        pthread_mutex_unlock(&r->work_lock);
    }
    return NULL;
}

Runner *dl_runner_new(uint32_t ring_capacity)
{
    Runner *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (ring_capacity < 4096 || (ring_capacity & (ring_capacity - 1)))
        ring_capacity = 1u << 16;
    if (ring_init(&r->requests, ring_capacity) || ring_init(&r->responses, ring_capacity)
        || !(r->request_buffer = malloc(ring_capacity))
        || !(r->response_buffer = malloc(ring_capacity))) {
        free(r->requests.data);
        free(r->responses.data);
        free(r->request_buffer);
        free(r);
        return NULL;
    }
    sem_init(&r->pending, 0, 0);
    pthread_mutex_init(&r->work_lock, NULL);
    r->schedule.handle = r;
    r->schedule.schedule_work = schedule_work;
    return r;
}

LV2_Worker_Schedule *dl_runner_schedule_feature(Runner *r) { return &r->schedule; }

/* After instantiate: the instance, and its worker interface (or NULL). Starts the worker
   thread when there is one. Returns 0, or an errno from pthread_create. */
int dl_runner_bind(Runner *r, const LV2_Descriptor *desc, LV2_Handle handle,
                   const LV2_Worker_Interface *iface)
{
    r->desc = desc;
    r->handle = handle;
    r->iface = (iface && iface->work) ? iface : NULL;
    if (r->iface && !r->thread_started) {
        int err = pthread_create(&r->thread, NULL, worker_main, r);
        if (err)
            return err;
        r->thread_started = 1;
    }
    return 0;
}

/* An atom output port's buffer: its size is set back to the capacity before each run. */
int dl_runner_add_atom_output(Runner *r, void *buffer, uint32_t capacity)
{
    if (r->atom_outputs == MAX_ATOM_OUTPUTS)
        return -1;
    r->atom_out[r->atom_outputs] = buffer;
    r->atom_out_capacity[r->atom_outputs++] = capacity;
    return 0;
}

void dl_runner_lock_work(Runner *r) { pthread_mutex_lock(&r->work_lock); }
void dl_runner_unlock_work(Runner *r) { pthread_mutex_unlock(&r->work_lock); }

/* Stops the worker thread (the requests still queued are dropped). Idempotent. */
void dl_runner_stop(Runner *r)
{
    if (r->thread_started) {
        __atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE);
        sem_post(&r->pending);
        pthread_join(r->thread, NULL);
        r->thread_started = 0;
    }
}

void dl_runner_free(Runner *r)
{
    if (!r)
        return;
    dl_runner_stop(r);
    sem_destroy(&r->pending);
    pthread_mutex_destroy(&r->work_lock);
    free(r->requests.data);
    free(r->responses.data);
    free(r->request_buffer);
    free(r->response_buffer);
    free(r);
}

/* Deliver the queued worker responses (audio thread); end_run after a block. */
static void deliver_responses(Runner *r, int end_of_run)
{
    if (!r->iface)
        return;
    int64_t size;
    while ((size = ring_peek(&r->responses)) >= 0) {
        ring_pop(&r->responses, r->response_buffer, (uint32_t)size);
        if (r->iface->work_response)
            r->iface->work_response(r->handle, (uint32_t)size, r->response_buffer);
        r->responses_delivered++;
    }
    if (end_of_run && r->iface->end_run)
        r->iface->end_run(r->handle);
}

/* One block: no allocation, no lock, no system call but the worker's sem_post. Responses
   that arrived before the block are delivered first, so work done between blocks (a state
   restore's, say) takes effect in this block. */
void dl_runner_run(Runner *r, uint32_t frames)
{
    if (r->iface && ring_peek(&r->responses) >= 0)
        deliver_responses(r, 0);
    for (uint32_t i = 0; i < r->atom_outputs; ++i) {
        r->atom_out[i]->type = 0;
        r->atom_out[i]->size = r->atom_out_capacity[i] - (uint32_t)sizeof(LV2_Atom_Header);
    }
    if (r->desc && r->desc->run)
        r->desc->run(r->handle, frames);
    deliver_responses(r, 1);
    r->blocks++;
}

/* Counters: blocks, work calls, responses delivered, dropped requests, dropped responses,
   worker thread id (0 before it runs). */
void dl_runner_counters(Runner *r, uint64_t out[6])
{
    out[0] = __atomic_load_n(&r->blocks, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&r->work_calls, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&r->responses_delivered, __ATOMIC_RELAXED);
    out[3] = __atomic_load_n(&r->dropped_requests, __ATOMIC_RELAXED);
    out[4] = __atomic_load_n(&r->dropped_responses, __ATOMIC_RELAXED);
    out[5] = (uint64_t)__atomic_load_n(&r->worker_tid, __ATOMIC_ACQUIRE);
}

/* ---- the CPython module ---------------------------------------------------------------- */

static PyObject *py_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "run(runner_address, frames)");
        return NULL;
    }
    void *runner = PyLong_AsVoidPtr(args[0]);
    unsigned long frames = PyLong_AsUnsignedLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!runner) {
        PyErr_SetString(PyExc_ValueError, "run(): no runner");
        return NULL;
    }
    /* The GIL is released while the plugin runs: other Python threads (the state saver,
       live MIDI input) go on, and nothing here touches Python objects. */
    Py_BEGIN_ALLOW_THREADS
    dl_runner_run(runner, (uint32_t)frames);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run", (PyCFunction)(void (*)(void))py_run, METH_FASTCALL,
     "run(runner_address, frames): one block of an LV2 instance (run, worker responses, "
     "end_run)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lv2host",
    "The C side of the LV2 host: URID map, log, worker and the block call.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__lv2host(void) { return PyModule_Create(&module); }
