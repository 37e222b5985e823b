/* Shared by the C tools (cli_device, cli_master, cli_host): option parsing with the exit codes
   of discolink-bridge (0 ok, 1 runtime failure, 2 usage error, one line on stderr), signal
   handling and real-time scheduling. Each tool is one .c file that includes
   this (static functions only), and discolink.h with DISCOLINK_IMPLEMENTATION. */
#ifndef DL_TOOL_COMMON_H
#define DL_TOOL_COMMON_H

#include "../discolink.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef M_PI
#  define M_PI 3.14159265358979323846
#endif

static const char *tool_name = "tool";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: error: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see --help)\n");
    exit(2);
}

/* One line naming what failed; the caller has already cleaned up. */
static void runtime_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void runtime_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", tool_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static long parse_int(const char *option, const char *text, long lo, long hi)
{
    char *end;
    long value;
    errno = 0;
    value = strtol(text, &end, 10);
    if (errno || end == text || *end != 0) usage_error("%s '%s' is not an integer", option, text);
    if (value < lo || value > hi) usage_error("%s %ld is out of range %ld..%ld", option, value, lo, hi);
    return value;
}

static double parse_seconds(const char *option, const char *text)
{
    char *end;
    double value;
    errno = 0;
    value = strtod(text, &end);
    if (errno || end == text || *end != 0) usage_error("%s '%s' is not a number of seconds", option, text);
    if (!(value > 0 && value <= 86400)) usage_error("%s %g s is out of range (0, 86400]", option, value);
    return value;
}

/* getopt_long with our error format: an unknown option or a missing value is one line, exit 2. */
static int next_option(int argc, char **argv, const struct option *options)
{
    int c;
    opterr = 0;
    c = getopt_long(argc, argv, ":h", options, NULL);
    if (c == '?') {
        if (optopt) usage_error("unknown option '-%c'", optopt);
        usage_error("unknown option '%s'", argv[optind - 1]);
    }
    if (c == ':') usage_error("option '%s' needs a value", argv[optind - 1]);
    return c;
}

static void no_positional(int argc, char **argv)
{
    if (optind < argc) usage_error("unexpected argument '%s'", argv[optind]);
}

/* ---- signals: SIGINT/SIGTERM ask the main loop to stop; it cleans up and exits --------- */

static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int signum) { stop_signal = signum; }

static void install_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);  /* no SA_RESTART: sleeps end at once */
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* SCHED_FIFO for the calling thread, as JACK does; "" when granted, else why not. */
static const char *realtime_priority(int priority)
{
    static char why[160];
    struct sched_param sp;
    if (priority <= 0) return "";
    memset(&sp, 0, sizeof(sp));
    sp.sched_priority = priority;
    if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) return "";
    snprintf(why, sizeof(why), "SCHED_FIFO priority %d refused: %s", priority, strerror(errno));
    return why;
}

#endif
