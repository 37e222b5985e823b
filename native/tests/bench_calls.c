/* bench/native.py section (b): what a host's per-block calls cost without any scheduling in
   them. One process: a device (driven inline) and a host connected to it; per block the
   device writes a block (untimed), then the host's dl_host_read_audio and
   dl_host_process_responses are timed together (what discolink-bridge host's loop calls). Prints one JSON object.
   Usage: bench_calls NAMESPACE FRAMES BLOCKS */
#define DISCOLINK_IMPLEMENTATION
#include "../discolink.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static int serving = 1;

static void *serve(void *p)
{
    while (__atomic_load_n(&serving, __ATOMIC_ACQUIRE)) {
        dl_device_process_commands((dl_device *)p);
        dl_sleep_ns(200000);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    dl_device_config dc = dl_device_config_init();
    dl_host_config hc = dl_host_config_init();
    dl_device *d;
    dl_host *h;
    pthread_t t;
    static float in[2][4096], out[2][4096];
    const float *src[2] = {in[0], in[1]};
    float *dst[2] = {out[0], out[1]};
    uint32_t frames, blocks, i, short_reads = 0;
    uint64_t *ns;
    if (argc != 4) {
        fprintf(stderr, "usage: bench_calls NAMESPACE FRAMES BLOCKS\n");
        return 2;
    }
    frames = (uint32_t)atoi(argv[2]);
    blocks = (uint32_t)atoi(argv[3]);
    ns = (uint64_t *)calloc(blocks, sizeof(uint64_t));
    dc.namespace_name = hc.namespace_name = argv[1];
    dc.id = "Calls";
    dc.block_size = hc.block_size = frames;
    dc.fill_blocks = 0; /* driven inline below */
    hc.prime_timeout_ms = 0;
    if (ns == NULL || dl_device_create(&dc, &d) != DL_SUCCESS || dl_device_start(d) != DL_SUCCESS ||
        dl_host_create(&hc, &h) != DL_SUCCESS) {
        fprintf(stderr, "bench_calls: cannot start\n");
        return 1;
    }
    pthread_create(&t, NULL, serve, d);
    if (dl_host_connect(h, "Calls:0") != DL_SUCCESS) {
        fprintf(stderr, "bench_calls: %s\n", dl_host_error(h));
        return 1;
    }
    __atomic_store_n(&serving, 0, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    for (i = 0; i < blocks + 1000; i++) {
        uint64_t t0, t1;
        dl_device_process_commands(d);
        dl_device_write_audio(d, src, frames);
        t0 = dl_now_ns();
        if (dl_host_read_audio(h, dst, 2, frames) != frames) short_reads++;
        dl_host_process_responses(h);
        t1 = dl_now_ns();
        if (i >= 1000) ns[i - 1000] = t1 - t0; /* after a warm-up */
    }
    qsort(ns, blocks, sizeof(uint64_t), cmp);
    printf("{\"frames\": %u, \"blocks\": %u, \"median_ns\": %llu, \"p95_ns\": %llu, \"short_reads\": %u}\n", frames,
           blocks, (unsigned long long)ns[blocks / 2], (unsigned long long)ns[blocks * 95 / 100], short_reads);
    dl_host_destroy(h);
    dl_device_destroy(d);
    free(ns);
    return 0;
}
