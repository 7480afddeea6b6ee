/* LD_PRELOAD shim for the benchmark: makes storage behave like an SD card and counts what it costs.
 *
 *   SLOWFSYNC_MS=N           every fsync/fdatasync takes N ms longer (0: no delay, only counting)
 *   SLOWFSYNC_COUNT_FILE=F   an 8-byte file; each call adds 1 to the little-endian counter in it, shared
 *                            through mmap so the benchmark reads it while the agent runs
 *   SLOWFSYNC_STALL_FILE=F   while F exists, every fsync/fdatasync waits (a card that stops finishing writes, as a
 *                            worn SD card does for seconds or for good); a test creates and removes F
 *   SLOWFSYNC_FAIL_FILE=F    while F exists, the fsync/fdatasync of a write-ahead log (a file whose name ends in -wal)
 *                            answers EIO without syncing (a card that fails its writes, as a worn one does now and
 *                            then); a test creates and removes F
 *
 * Built by scripts/bench.py with the system's C compiler: cc -shared -fPIC -O2 -o slowfsync.so slowfsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long delay_ms;
static uint64_t *counter;
static const char *stall_file;
static const char *fail_file;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
    const char *ms = getenv("SLOWFSYNC_MS");
    delay_ms = ms ? atol(ms) : 10;
    stall_file = getenv("SLOWFSYNC_STALL_FILE");
    fail_file = getenv("SLOWFSYNC_FAIL_FILE");
    const char *path = getenv("SLOWFSYNC_COUNT_FILE");
    if (path) {
        int fd = open(path, O_RDWR);
        if (fd >= 0) {
            void *p = mmap(NULL, sizeof *counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) counter = p;
            close(fd);
        }
    }
}

static void before_sync(void) {
    pthread_once(&once, setup);
    if (counter) __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    struct timespec t = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    if (delay_ms > 0)
        while (nanosleep(&t, &t) != 0) {
        }
    struct timespec poll = {0, 10 * 1000000L};
    while (stall_file && access(stall_file, F_OK) == 0) nanosleep(&poll, NULL);
}

/* Whether this sync fails: SLOWFSYNC_FAIL_FILE exists and fd is a write-ahead log (its name, from /proc). */
static int failing(int fd) {
    if (!fail_file || access(fail_file, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 4) return 0;
    path[n] = 0;
    return strcmp(path + n - 4, "-wal") == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    before_sync();
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    before_sync();
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
