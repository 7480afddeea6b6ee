/* LD_PRELOAD shim for tests: the agent process's wall clock set off, its monotonic clock left alone, as NTP or a
 * person stepping the clock leaves a box (the clock-step tests of a real `edge run`, e.g. after a kill).
 *
 *   WALLCLOCK_OFFSET_S=N     the wall clock reads N seconds later (negative: earlier) than the system's
 *
 * Only CLOCK_REALTIME (and its coarse twin), gettimeofday and time() move; CLOCK_MONOTONIC and CLOCK_BOOTTIME do not.
 * Built by the tests (edge/sim/powercut.py build_shim): cc -shared -fPIC -O2 -o wallclock.so wallclock.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long offset_s;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
    const char *off = getenv("WALLCLOCK_OFFSET_S");
    offset_s = off ? atol(off) : 0;
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    pthread_once(&once, setup);
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && ts && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset_s;
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    pthread_once(&once, setup);
    int rc = real_gettimeofday(tv, tz);
    if (rc == 0 && tv) tv->tv_sec += offset_s;
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
