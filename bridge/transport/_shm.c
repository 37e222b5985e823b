/*
 * bridge.transport._shm: the memory-ordering primitives of the discoLink transport.
 *
 * Every function takes a writable buffer (the segment's mmap) and byte offsets, checks
 * bounds and alignment, and never touches memory outside the buffer, so a corrupt or
 * hostile index in shared memory can never crash the process.
 *
 * Ring rules (docs/protocol.md, "Rings"): each ring has a control block with two
 * free-running uint32 indices, write_index at +0 and read_index at +64 (separate cache
 * lines). Only the producer stores write_index, only the consumer stores read_index.
 * The producer copies data, then publishes write_index with a RELEASE store; the
 * consumer loads write_index with ACQUIRE before reading data, and publishes
 * read_index with RELEASE after it has finished reading; the producer loads
 * read_index with ACQUIRE before overwriting. fill = write_index - read_index
 * (mod 2^32); capacity is a power of two; position = index & (capacity - 1).
 * These are C11 __atomic operations, so the rules hold on arm64 as on x86-64.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define READ_INDEX_OFFSET 64
#define MESSAGE_SIZE 256

/* Get a writable, C-contiguous view of obj. Returns 0 on success. */
static int get_view(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
}

static int check_range(Py_buffer *view, Py_ssize_t off, Py_ssize_t size, Py_ssize_t align)
{
    if (off < 0 || size < 0 || off > view->len - size) {
        PyErr_Format(PyExc_IndexError, "offset %zd (+%zd bytes) outside buffer of %zd bytes",
                     off, size, view->len);
        return -1;
    }
    if (align > 1 && (((uintptr_t)view->buf + (uintptr_t)off) % (uintptr_t)align) != 0) {
        PyErr_Format(PyExc_ValueError, "offset %zd is not %zd-byte aligned", off, align);
        return -1;
    }
    return 0;
}

static int parse_ssize(PyObject *o, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(o);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

#define NEED_ARGS(n, name)                                                         \
    if (nargs != (n)) {                                                            \
        PyErr_Format(PyExc_TypeError, name "() takes exactly %d arguments", (n)); \
        return NULL;                                                               \
    }

/* ---- scalar atomics ---------------------------------------------------- */

static PyObject *load_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(2, "load_u32");
    Py_buffer v; Py_ssize_t off;
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 4, 4) < 0) { PyBuffer_Release(&v); return NULL; }
    uint32_t x = __atomic_load_n((uint32_t *)((char *)v.buf + off), __ATOMIC_ACQUIRE);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(x);
}

static PyObject *store_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(3, "store_u32");
    Py_buffer v; Py_ssize_t off;
    unsigned long val = PyLong_AsUnsignedLong(args[2]);
    if (val == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (val > 0xFFFFFFFFUL) { PyErr_SetString(PyExc_OverflowError, "value exceeds uint32"); return NULL; }
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 4, 4) < 0) { PyBuffer_Release(&v); return NULL; }
    __atomic_store_n((uint32_t *)((char *)v.buf + off), (uint32_t)val, __ATOMIC_RELEASE);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyObject *load_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(2, "load_u64");
    Py_buffer v; Py_ssize_t off;
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 8, 8) < 0) { PyBuffer_Release(&v); return NULL; }
    uint64_t x = __atomic_load_n((uint64_t *)((char *)v.buf + off), __ATOMIC_ACQUIRE);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLongLong(x);
}

static PyObject *store_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(3, "store_u64");
    Py_buffer v; Py_ssize_t off;
    unsigned long long val = PyLong_AsUnsignedLongLong(args[2]);
    if (val == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 8, 8) < 0) { PyBuffer_Release(&v); return NULL; }
    __atomic_store_n((uint64_t *)((char *)v.buf + off), (uint64_t)val, __ATOMIC_RELEASE);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

/* Relaxed fetch-add for single-writer statistics counters. Returns the new value. */
static PyObject *add_u64(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(3, "add_u64");
    Py_buffer v; Py_ssize_t off;
    unsigned long long val = PyLong_AsUnsignedLongLong(args[2]);
    if (val == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 8, 8) < 0) { PyBuffer_Release(&v); return NULL; }
    uint64_t x = __atomic_add_fetch((uint64_t *)((char *)v.buf + off), (uint64_t)val,
                                    __ATOMIC_RELAXED);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLongLong(x);
}

/* Strong compare-and-swap, acq_rel on success, acquire on failure.
 * Returns (swapped: bool, observed: int). */
static PyObject *cas_u32(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(4, "cas_u32");
    Py_buffer v; Py_ssize_t off;
    unsigned long expected = PyLong_AsUnsignedLong(args[2]);
    if (expected == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    unsigned long desired = PyLong_AsUnsignedLong(args[3]);
    if (desired == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (expected > 0xFFFFFFFFUL || desired > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "value exceeds uint32");
        return NULL;
    }
    if (parse_ssize(args[1], &off) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, off, 4, 4) < 0) { PyBuffer_Release(&v); return NULL; }
    uint32_t exp32 = (uint32_t)expected;
    int ok = __atomic_compare_exchange_n((uint32_t *)((char *)v.buf + off), &exp32,
                                         (uint32_t)desired, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE);
    PyBuffer_Release(&v);
    return Py_BuildValue("(Ok)", ok ? Py_True : Py_False, (unsigned long)exp32);
}

/* ---- rings ------------------------------------------------------------- */

typedef struct {
    uint32_t *write_index;
    uint32_t *read_index;
    char *data;
} ring_t;

/* Validate a ring at ctl_off with data_bytes of data right after its 128-byte control block. */
static int ring_at(Py_buffer *v, Py_ssize_t ctl_off, Py_ssize_t data_off, Py_ssize_t data_bytes,
                   ring_t *r)
{
    if (check_range(v, ctl_off, READ_INDEX_OFFSET + 4, 64) < 0) return -1;
    if (check_range(v, data_off, data_bytes, 4) < 0) return -1;
    r->write_index = (uint32_t *)((char *)v->buf + ctl_off);
    r->read_index = (uint32_t *)((char *)v->buf + ctl_off + READ_INDEX_OFFSET);
    r->data = (char *)v->buf + data_off;
    return 0;
}

static int check_capacity(Py_ssize_t capacity)
{
    if (capacity <= 0 || capacity > (1 << 30) || (capacity & (capacity - 1)) != 0) {
        PyErr_Format(PyExc_ValueError, "ring capacity %zd is not a power of two", capacity);
        return -1;
    }
    return 0;
}

/* channels * capacity * 4 must not overflow (a hostile or corrupt count must not crash us). */
static int check_channels(Py_ssize_t channels, Py_ssize_t capacity)
{
    if (channels <= 0 || channels > PY_SSIZE_T_MAX / 4 / capacity) {
        PyErr_Format(PyExc_ValueError, "channel count %zd is out of range", channels);
        return -1;
    }
    return 0;
}

/* Optional statistics counter at off (-1: none), bumped with a relaxed fetch-add. Callers
 * validate off with counter_ok() before copying, so nothing can fail after the copy. */
static int counter_ok(Py_buffer *v, Py_ssize_t off)
{
    return off < 0 ? 0 : check_range(v, off, 8, 8);
}

static void bump(Py_buffer *v, Py_ssize_t off)
{
    if (off >= 0) __atomic_add_fetch((uint64_t *)((char *)v->buf + off), 1, __ATOMIC_RELAXED);
}

/* Producer: fill as seen by the producer (acquire on the consumer's read_index). */
static PyObject *ring_fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(2, "ring_fill");
    Py_buffer v; Py_ssize_t ctl;
    if (parse_ssize(args[1], &ctl) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, ctl, READ_INDEX_OFFSET + 4, 64) < 0) { PyBuffer_Release(&v); return NULL; }
    uint32_t *w = (uint32_t *)((char *)v.buf + ctl);
    uint32_t *r = (uint32_t *)((char *)v.buf + ctl + READ_INDEX_OFFSET);
    uint32_t fill = __atomic_load_n(w, __ATOMIC_ACQUIRE) - __atomic_load_n(r, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(fill);
}

/* Consumer: drop everything queued (read_index := write_index). Returns frames dropped. */
static PyObject *ring_discard(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(2, "ring_discard");
    Py_buffer v; Py_ssize_t ctl;
    if (parse_ssize(args[1], &ctl) < 0 || get_view(args[0], &v) < 0) return NULL;
    if (check_range(&v, ctl, READ_INDEX_OFFSET + 4, 64) < 0) { PyBuffer_Release(&v); return NULL; }
    uint32_t *w = (uint32_t *)((char *)v.buf + ctl);
    uint32_t *r = (uint32_t *)((char *)v.buf + ctl + READ_INDEX_OFFSET);
    uint32_t wi = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    uint32_t ri = __atomic_load_n(r, __ATOMIC_RELAXED);
    __atomic_store_n(r, wi, __ATOMIC_RELEASE);
    PyBuffer_Release(&v);
    return PyLong_FromUnsignedLong(wi - ri);
}

/* audio_write(buf, ctl_off, data_off, channels, capacity, src[, written_off]) -> frames
 * written, or -1 when the ring indices are corrupt. src: C-contiguous float32, channels *
 * frames values (planar, channel-major). All or nothing: returns 0 when the block does not
 * fit. written_off (optional, -1 = none): u64 counter bumped after a successful write. */
static PyObject *audio_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "audio_write() takes 6 or 7 arguments");
        return NULL;
    }
    Py_ssize_t ctl, doff, channels, capacity, written_off = -1;
    if (parse_ssize(args[1], &ctl) < 0 || parse_ssize(args[2], &doff) < 0 ||
        parse_ssize(args[3], &channels) < 0 || parse_ssize(args[4], &capacity) < 0 ||
        (nargs == 7 && parse_ssize(args[6], &written_off) < 0))
        return NULL;
    if (check_capacity(capacity) < 0) return NULL;
    if (check_channels(channels, capacity) < 0) return NULL;
    Py_buffer src;
    if (PyObject_GetBuffer(args[5], &src, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (src.itemsize != 4 || src.format == NULL || strcmp(src.format, "f") != 0 ||
        src.len % (4 * channels) != 0) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "source must be C-contiguous float32 of channels x frames");
        return NULL;
    }
    Py_ssize_t frames = src.len / (4 * channels);
    Py_buffer v;
    if (get_view(args[0], &v) < 0) { PyBuffer_Release(&src); return NULL; }
    ring_t r;
    if (ring_at(&v, ctl, doff, channels * capacity * 4, &r) < 0 ||
        counter_ok(&v, written_off) < 0) {
        PyBuffer_Release(&v); PyBuffer_Release(&src); return NULL;
    }
    uint32_t wi = __atomic_load_n(r.write_index, __ATOMIC_RELAXED); /* we own it */
    uint32_t ri = __atomic_load_n(r.read_index, __ATOMIC_ACQUIRE);
    uint32_t fill = wi - ri;
    long result;
    if (fill > (uint32_t)capacity) {
        result = -1;
    } else if ((Py_ssize_t)(capacity - fill) < frames) {
        result = 0;
    } else {
        uint32_t pos = wi & (uint32_t)(capacity - 1);
        Py_ssize_t first = capacity - pos;
        if (first > frames) first = frames;
        const float *in = (const float *)src.buf;
        for (Py_ssize_t c = 0; c < channels; c++) {
            float *ring = (float *)r.data + c * capacity;
            const float *chan = in + c * frames;
            memcpy(ring + pos, chan, (size_t)first * 4);
            if (frames > first) memcpy(ring, chan + first, (size_t)(frames - first) * 4);
        }
        __atomic_store_n(r.write_index, wi + (uint32_t)frames, __ATOMIC_RELEASE);
        bump(&v, written_off);
        result = (long)frames;
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&src);
    return PyLong_FromLong(result);
}

/* audio_read(buf, ctl_off, data_off, channels, capacity, dst[, read_off, short_off]) ->
 * frames read, or -1 when the ring indices are corrupt. Reads min(available, dst frames) and
 * zero-fills the rest of dst. Optional u64 counters (-1 = none): read_off is bumped on every
 * read, short_off when the read came up short (an underrun). */
static PyObject *audio_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "audio_read() takes 6 or 8 arguments");
        return NULL;
    }
    Py_ssize_t ctl, doff, channels, capacity, read_off = -1, short_off = -1;
    if (parse_ssize(args[1], &ctl) < 0 || parse_ssize(args[2], &doff) < 0 ||
        parse_ssize(args[3], &channels) < 0 || parse_ssize(args[4], &capacity) < 0 ||
        (nargs == 8 && (parse_ssize(args[6], &read_off) < 0 ||
                        parse_ssize(args[7], &short_off) < 0)))
        return NULL;
    if (check_capacity(capacity) < 0) return NULL;
    if (check_channels(channels, capacity) < 0) return NULL;
    Py_buffer dst;
    if (PyObject_GetBuffer(args[5], &dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (dst.itemsize != 4 || dst.format == NULL || strcmp(dst.format, "f") != 0 ||
        dst.len % (4 * channels) != 0) {
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "destination must be C-contiguous float32 of channels x frames");
        return NULL;
    }
    Py_ssize_t frames = dst.len / (4 * channels);
    Py_buffer v;
    if (get_view(args[0], &v) < 0) { PyBuffer_Release(&dst); return NULL; }
    ring_t r;
    if (ring_at(&v, ctl, doff, channels * capacity * 4, &r) < 0 ||
        counter_ok(&v, read_off) < 0 || counter_ok(&v, short_off) < 0) {
        PyBuffer_Release(&v); PyBuffer_Release(&dst); return NULL;
    }
    uint32_t wi = __atomic_load_n(r.write_index, __ATOMIC_ACQUIRE);
    uint32_t ri = __atomic_load_n(r.read_index, __ATOMIC_RELAXED); /* we own it */
    uint32_t avail = wi - ri;
    float *out = (float *)dst.buf;
    long result;
    if (avail > (uint32_t)capacity) {
        memset(out, 0, (size_t)dst.len);
        result = -1;
    } else {
        Py_ssize_t n = (Py_ssize_t)avail < frames ? (Py_ssize_t)avail : frames;
        uint32_t pos = ri & (uint32_t)(capacity - 1);
        Py_ssize_t first = capacity - pos;
        if (first > n) first = n;
        for (Py_ssize_t c = 0; c < channels; c++) {
            const float *ring = (const float *)r.data + c * capacity;
            float *chan = out + c * frames;
            memcpy(chan, ring + pos, (size_t)first * 4);
            if (n > first) memcpy(chan + first, ring, (size_t)(n - first) * 4);
            if (frames > n) memset(chan + n, 0, (size_t)(frames - n) * 4);
        }
        if (n > 0) __atomic_store_n(r.read_index, ri + (uint32_t)n, __ATOMIC_RELEASE);
        bump(&v, read_off);
        if (n < frames) bump(&v, short_off);
        result = (long)n;
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&dst);
    return PyLong_FromLong(result);
}

/* msg_write(buf, ctl_off, data_off, slots, src256) -> 1 written, 0 full, -1 corrupt. */
static PyObject *msg_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(5, "msg_write");
    Py_ssize_t ctl, doff, slots;
    if (parse_ssize(args[1], &ctl) < 0 || parse_ssize(args[2], &doff) < 0 ||
        parse_ssize(args[3], &slots) < 0)
        return NULL;
    if (check_capacity(slots) < 0) return NULL;
    Py_buffer src;
    if (PyObject_GetBuffer(args[4], &src, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (src.len != MESSAGE_SIZE) {
        PyBuffer_Release(&src);
        PyErr_Format(PyExc_ValueError, "message must be %d bytes, got %zd", MESSAGE_SIZE, src.len);
        return NULL;
    }
    Py_buffer v;
    if (get_view(args[0], &v) < 0) { PyBuffer_Release(&src); return NULL; }
    ring_t r;
    if (ring_at(&v, ctl, doff, slots * MESSAGE_SIZE, &r) < 0) {
        PyBuffer_Release(&v); PyBuffer_Release(&src); return NULL;
    }
    uint32_t wi = __atomic_load_n(r.write_index, __ATOMIC_RELAXED);
    uint32_t ri = __atomic_load_n(r.read_index, __ATOMIC_ACQUIRE);
    uint32_t fill = wi - ri;
    long result;
    if (fill > (uint32_t)slots) {
        result = -1;
    } else if (fill == (uint32_t)slots) {
        result = 0;
    } else {
        memcpy(r.data + (size_t)(wi & (uint32_t)(slots - 1)) * MESSAGE_SIZE, src.buf, MESSAGE_SIZE);
        __atomic_store_n(r.write_index, wi + 1, __ATOMIC_RELEASE);
        result = 1;
    }
    PyBuffer_Release(&v);
    PyBuffer_Release(&src);
    return PyLong_FromLong(result);
}

/* Consumer core of msg_read and msg_read_many: copy up to max_count messages (no more than
 * dst_len holds, in whole 256-byte slots) in order, then release them all with one release
 * store of read_index. Returns the count, or -1 when the indices are corrupt. */
static long msg_pop(ring_t *r, Py_ssize_t slots, char *dst, Py_ssize_t dst_len,
                    Py_ssize_t max_count)
{
    uint32_t wi = __atomic_load_n(r->write_index, __ATOMIC_ACQUIRE);
    uint32_t ri = __atomic_load_n(r->read_index, __ATOMIC_RELAXED);
    uint32_t avail = wi - ri;
    if (avail > (uint32_t)slots) return -1;
    Py_ssize_t n = (Py_ssize_t)avail;
    if (n > max_count) n = max_count < 0 ? 0 : max_count;
    if (n > dst_len / MESSAGE_SIZE) n = dst_len / MESSAGE_SIZE;
    uint32_t mask = (uint32_t)(slots - 1);
    for (Py_ssize_t k = 0; k < n;) {
        uint32_t at = (ri + (uint32_t)k) & mask;
        Py_ssize_t run = (Py_ssize_t)((uint32_t)slots - at);  /* up to the wrap */
        if (run > n - k) run = n - k;
        memcpy(dst + k * MESSAGE_SIZE, r->data + (size_t)at * MESSAGE_SIZE,
               (size_t)run * MESSAGE_SIZE);
        k += run;
    }
    if (n > 0) __atomic_store_n(r->read_index, ri + (uint32_t)n, __ATOMIC_RELEASE);
    return (long)n;
}

/* The shared start of both readers: the ring (bounds-checked) and the writable destination.
 * On success the caller releases both views. */
static int msg_reader_args(PyObject *const *args, Py_ssize_t *slots, Py_buffer *v,
                           Py_buffer *dst, ring_t *r)
{
    Py_ssize_t ctl, doff;
    if (parse_ssize(args[1], &ctl) < 0 || parse_ssize(args[2], &doff) < 0 ||
        parse_ssize(args[3], slots) < 0)
        return -1;
    if (check_capacity(*slots) < 0) return -1;
    if (PyObject_GetBuffer(args[4], dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (get_view(args[0], v) < 0) { PyBuffer_Release(dst); return -1; }
    if (ring_at(v, ctl, doff, *slots * MESSAGE_SIZE, r) < 0) {
        PyBuffer_Release(v); PyBuffer_Release(dst); return -1;
    }
    return 0;
}

/* msg_read(buf, ctl_off, data_off, slots, dst256) -> 1 read, 0 empty, -1 corrupt. */
static PyObject *msg_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(5, "msg_read");
    Py_ssize_t slots;
    Py_buffer v, dst;
    ring_t r;
    if (msg_reader_args(args, &slots, &v, &dst, &r) < 0) return NULL;
    if (dst.len != MESSAGE_SIZE) {
        PyBuffer_Release(&v); PyBuffer_Release(&dst);
        PyErr_Format(PyExc_ValueError, "message buffer must be %d bytes, got %zd", MESSAGE_SIZE, dst.len);
        return NULL;
    }
    long result = msg_pop(&r, slots, dst.buf, dst.len, 1);
    PyBuffer_Release(&v);
    PyBuffer_Release(&dst);
    return PyLong_FromLong(result);
}

/* msg_read_many(buf, ctl_off, data_off, slots, dst, max_count) -> messages read (0..), or -1
 * corrupt: one call per batch instead of one per message. */
static PyObject *msg_read_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    NEED_ARGS(6, "msg_read_many");
    Py_ssize_t slots, max_count;
    if (parse_ssize(args[5], &max_count) < 0) return NULL;
    Py_buffer v, dst;
    ring_t r;
    if (msg_reader_args(args, &slots, &v, &dst, &r) < 0) return NULL;
    long result = msg_pop(&r, slots, dst.buf, dst.len, max_count);
    PyBuffer_Release(&v);
    PyBuffer_Release(&dst);
    return PyLong_FromLong(result);
}

static PyMethodDef methods[] = {
    {"load_u32", (PyCFunction)(void (*)(void))load_u32, METH_FASTCALL, "load_u32(buf, off): acquire load."},
    {"store_u32", (PyCFunction)(void (*)(void))store_u32, METH_FASTCALL, "store_u32(buf, off, v): release store."},
    {"load_u64", (PyCFunction)(void (*)(void))load_u64, METH_FASTCALL, "load_u64(buf, off): acquire load."},
    {"store_u64", (PyCFunction)(void (*)(void))store_u64, METH_FASTCALL, "store_u64(buf, off, v): release store."},
    {"add_u64", (PyCFunction)(void (*)(void))add_u64, METH_FASTCALL, "add_u64(buf, off, d): relaxed fetch-add, returns new value."},
    {"cas_u32", (PyCFunction)(void (*)(void))cas_u32, METH_FASTCALL, "cas_u32(buf, off, expected, desired) -> (swapped, observed)."},
    {"ring_fill", (PyCFunction)(void (*)(void))ring_fill, METH_FASTCALL, "ring_fill(buf, ctl_off) -> write_index - read_index."},
    {"ring_discard", (PyCFunction)(void (*)(void))ring_discard, METH_FASTCALL, "ring_discard(buf, ctl_off): consumer drops all queued items."},
    {"audio_write", (PyCFunction)(void (*)(void))audio_write, METH_FASTCALL, "Producer: copy a planar float32 block into an audio ring."},
    {"audio_read", (PyCFunction)(void (*)(void))audio_read, METH_FASTCALL, "Consumer: copy from an audio ring, zero-fill the rest."},
    {"msg_write", (PyCFunction)(void (*)(void))msg_write, METH_FASTCALL, "Producer: push one 256-byte message."},
    {"msg_read", (PyCFunction)(void (*)(void))msg_read, METH_FASTCALL, "Consumer: pop one 256-byte message."},
    {"msg_read_many", (PyCFunction)(void (*)(void))msg_read_many, METH_FASTCALL, "Consumer: pop up to max_count messages into one buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_shm",
    "Acquire/release atomics, CAS and SPSC ring copies over shared memory.", -1, methods,
};

PyMODINIT_FUNC PyInit__shm(void) { return PyModule_Create(&module); }
