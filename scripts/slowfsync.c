/* LD_PRELOAD shim for the benchmark: makes storage behave like an SD card and counts what it costs.
 *
 *   SLOWFSYNC_MS=N           every fsync/fdatasync takes N ms longer (0: no delay, only counting)
 *   SLOWFSYNC_COUNT_FILE=F   an 8-byte file; each call adds 1 to the little-endian counter in it, shared
 *                            through mmap so the benchmark reads it while the agent runs
 *   SLOWFSYNC_STALL_FILE=F   while F exists, every fsync/fdatasync waits (a card that stops finishing writes, as a
 *                            worn SD card does for seconds or for good); a test creates and removes F
 *
 * Built by scripts/bench.py with the system's C compiler: cc -shared -fPIC -O2 -o slowfsync.so slowfsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static long delay_ms;
static uint64_t *counter;
static const char *stall_file;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
    const char *ms = getenv("SLOWFSYNC_MS");
    delay_ms = ms ? atol(ms) : 10;
    stall_file = getenv("SLOWFSYNC_STALL_FILE");
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

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    before_sync();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    before_sync();
    return real(fd);
}
