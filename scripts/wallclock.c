/* LD_PRELOAD shim for tests: the agent process's wall clock set off, its monotonic clock left alone, as NTP or a
 * person stepping the clock leaves a box (the clock-step tests of a real `edge run`, e.g. after a kill); or the box
 * suspended before the process started.
 *
 *   WALLCLOCK_OFFSET_S=N     the wall clock reads N seconds later (negative: earlier) than the system's
 *   SUSPENDED_S=N            the box slept N seconds since the system's clocks were read (by the test, by an earlier
 *                            run): the wall clock and CLOCK_BOOTTIME read N seconds later, CLOCK_MONOTONIC does not
 *                            (clock_gettime(2): it does not count a suspend), so it is N seconds behind CLOCK_BOOTTIME
 *
 * Only CLOCK_REALTIME, CLOCK_BOOTTIME (and their twins), gettimeofday and time() move; CLOCK_MONOTONIC does not.
 * A clock set off is not one NTP set: with an offset, adjtimex says the clock is not synchronized (STA_UNSYNC),
 * whatever the test host's kernel says (edge/clock.py Clock.synchronized).
 * Built by the tests (edge/sim/powercut.py build_shim): cc -shared -fPIC -O2 -o wallclock.so wallclock.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>

static long offset_s, suspended_s;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);
static int (*real_adjtimex)(struct timex *);
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
    const char *off = getenv("WALLCLOCK_OFFSET_S");
    const char *slept = getenv("SUSPENDED_S");
    suspended_s = slept ? atol(slept) : 0;
    offset_s = (off ? atol(off) : 0) + suspended_s;
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
    real_adjtimex = dlsym(RTLD_NEXT, "adjtimex");
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    pthread_once(&once, setup);
    int rc = real_clock_gettime(id, ts);
    if (rc == 0 && ts && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += offset_s;
    if (rc == 0 && ts && (id == CLOCK_BOOTTIME || id == CLOCK_BOOTTIME_ALARM)) ts->tv_sec += suspended_s;
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

int adjtimex(struct timex *buf) {
    pthread_once(&once, setup);
    int rc = real_adjtimex(buf);
    if (rc != -1 && offset_s) {
        buf->status |= STA_UNSYNC;
        rc = TIME_ERROR;
    }
    return rc;
}
