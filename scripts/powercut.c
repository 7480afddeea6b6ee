/* LD_PRELOAD shim for the power-cut test: keeps, for each file in one directory, a copy of what its last successful
 * fsync made durable, so that after a SIGKILL the test can put the directory back as a power cut would have left it.
 *
 *   POWERCUT_DIR=D            the directory watched: the regular files directly in it (the agent's data directory)
 *   POWERCUT_SNAPSHOT_DIR=S   S/<name> is D/<name> as it was when its last successful fsync/fdatasync was called
 *   POWERCUT_SYNC_MS=N        each of those syncs takes N ms longer, as on an SD card (default 0): the time between a
 *                             commit and its durability, in which a cut must not lose what was already announced
 *
 * The model is the strict one: after a power cut a file holds what it held when its last successful fsync or fdatasync
 * was called, nothing written after, and a file never fsynced is gone (the test deletes a file that has no snapshot;
 * the -shm file is memory and never survives). This is what POSIX and SQLite promise and no more: SQLite's "Atomic
 * Commit In SQLite" (https://sqlite.org/atomiccommit.html, section 2, hardware assumptions) counts on fsync as the one
 * barrier that makes written data durable, and PRAGMA synchronous (https://sqlite.org/pragma.html#pragma_synchronous)
 * says a WAL commit at NORMAL may roll back after a power loss until it is synced. ALICE (Pillai et al., "All File
 * Systems Are Not Created Equal", OSDI 2014) explores crash states the same way: what was persisted by the
 * application's sync calls, with the rest free to be lost.
 *
 * The copy is taken when the sync is called, before the real one runs, and only up to the size the file had then: a
 * sync makes durable what was written before it was called, and SQLite appends the next commit's frames to the WAL
 * from another thread while the agent's own fdatasync of the WAL runs (edge/store/db.py, Database._sync). The copy is
 * kept only if the real sync succeeds. One mutex orders the snapshots, so a later sync's copy is never replaced by an
 * earlier one's.
 *
 * Not modelled (the model is stricter than a real disk in these, and nothing here uses them): sync(2), syncfs(2),
 * msync(2), files opened O_SYNC/O_DSYNC, and sync_file_range(2) (not a durability barrier: it flushes no metadata and
 * no drive cache). SQLite's unix VFS syncs with fdatasync (fsync for directories); Python's os.fsync and os.fdatasync
 * are the same libc calls. A file's directory entry is taken as durable once the file is fsynced, an unlink at once
 * (edge/sim/powercut.py leaves a deleted file deleted), a rename (rename(2), renameat(2)) into the directory at once:
 * the new name's snapshot is the source's, or an empty file when the source was never synced (ext4's zero-length file
 * after a rename without an fsync). renameat2(2) (coreutils mv calls it) is taken as a rename too, but for
 * RENAME_EXCHANGE, which is not modelled (nothing here swaps files).
 *
 * Built by edge/sim/powercut.py with the system's C compiler: cc -shared -fPIC -O2 -o powercut.so powercut.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char watched_dir[PATH_MAX];
static char snapshot_dir[PATH_MAX];
static int active;
static long delay_ms;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void setup(void) {
    const char *dir = getenv("POWERCUT_DIR");
    const char *snapshots = getenv("POWERCUT_SNAPSHOT_DIR");
    const char *ms = getenv("POWERCUT_SYNC_MS");
    delay_ms = ms ? atol(ms) : 0;
    /* /proc/self/fd names resolved paths: compare against the resolved directory */
    if (dir && snapshots && realpath(dir, watched_dir) && realpath(snapshots, snapshot_dir)) active = 1;
}

/* The file's name when fd is a regular file directly in the watched directory, else NULL. */
static const char *watched_name(int fd, char *path, size_t size) {
    char link[64];
    struct stat st;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, size - 1);
    if (n < 0) return NULL;
    path[n] = '\0';
    size_t len = strlen(watched_dir);
    if (strncmp(path, watched_dir, len) != 0 || path[len] != '/' || strchr(path + len + 1, '/') != NULL) return NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return NULL;
    return path + len + 1;
}

/* Copies the first `size` bytes of the file open as fd into `to`; 0 on success. Read through the caller's own
 * descriptor (pread: its offset stays where it is): closing any other descriptor of a file drops every POSIX lock this
 * process holds on it, and SQLite holds a shared lock on its database file while a connection is open (so that another
 * process's connection, closing, does not think itself the last one and checkpoint and delete the WAL). Only a
 * write-only descriptor (never SQLite's) is read through a descriptor of our own, opened by /proc/self/fd. */
static int copy_prefix(int fd, off_t size, const char *to) {
    char link[64], buf[65536];
    int in = fd;
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        in = open(link, O_RDONLY | O_CLOEXEC);
        if (in < 0) return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = out < 0 ? -1 : 0;
    for (off_t done = 0; done < size && rc == 0;) {
        size_t want = (size_t)(size - done) < sizeof buf ? (size_t)(size - done) : sizeof buf;
        ssize_t got = pread(in, buf, want, done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* truncated meanwhile: keep what there is */
        for (ssize_t put = 0; put < got;) {
            ssize_t w = write(out, buf + put, (size_t)(got - put));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                rc = -1;
                break;
            }
            put += w;
        }
        done += got;
    }
    if (in != fd) close(in);
    if (out >= 0 && close(out) != 0) rc = -1;
    return rc;
}

/* Runs the real sync; when fd is watched, snapshots the file as it was at the call, kept only if the sync succeeds. */
static int synced(int fd, int (*real)(int)) {
    char path[PATH_MAX], temp[2 * PATH_MAX + 16], final[2 * PATH_MAX + 16];
    struct stat st;
    pthread_once(&once, setup);
    const char *name = active ? watched_name(fd, path, sizeof path) : NULL;
    if (name == NULL) return real(fd);
    int saved = errno;
    pthread_mutex_lock(&lock);
    snprintf(temp, sizeof temp, "%s/.%s.partial", snapshot_dir, name);
    snprintf(final, sizeof final, "%s/%s", snapshot_dir, name);
    int copied = fstat(fd, &st) == 0 && copy_prefix(fd, st.st_size, temp) == 0;
    struct timespec t = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
    while (delay_ms > 0 && nanosleep(&t, &t) != 0) {
    }
    errno = saved;
    int rc = real(fd);
    saved = errno;
    if (rc == 0 && copied) {
        if (rename(temp, final) != 0) {
            fprintf(stderr, "powercut: cannot keep the snapshot of %s: %s\n", name, strerror(errno));
            abort(); /* a silently missing snapshot would make the test pass on a file it never saw */
        }
    } else {
        unlink(temp);
        if (rc == 0) {
            fprintf(stderr, "powercut: cannot snapshot %s\n", name);
            abort();
        }
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return synced(fd, real);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return synced(fd, real);
}

/* The name of `p` (relative to the directory open as dirfd, or to the working directory for AT_FDCWD) when it is
 * directly in the watched directory, else NULL. The file itself may not exist (a rename's target, a source gone). */
static const char *watched_path(int dirfd, const char *p, char *out, size_t size) {
    char joined[PATH_MAX], dir[PATH_MAX], resolved[PATH_MAX];
    if (p[0] == '/' || dirfd == AT_FDCWD) {
        snprintf(joined, sizeof joined, "%s", p);
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, dir, sizeof dir - 1);
        if (n < 0) return NULL;
        dir[n] = '\0';
        snprintf(joined, sizeof joined, "%s/%s", dir, p);
    }
    const char *slash = strrchr(joined, '/');
    const char *base = slash ? slash + 1 : joined;
    if (slash == joined) snprintf(dir, sizeof dir, "/");
    else if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - joined), joined);
    else snprintf(dir, sizeof dir, ".");
    if (*base == '\0' || realpath(dir, resolved) == NULL || strcmp(resolved, watched_dir) != 0) return NULL;
    snprintf(out, size, "%s", base);
    return out;
}

/* A rename into a name of the watched directory: the new name's durable content is the source's snapshot (taken as
 * durable at once, like an unlink: the model does not ask for the directory's fsync), or, when the source was never
 * synced, an empty file: what ext4 can leave of a file renamed into place without an fsync (the rename reached the
 * journal, the data did not). */
static void renamed(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    char oldname[PATH_MAX], newname[PATH_MAX], from[2 * PATH_MAX + 16], to[2 * PATH_MAX + 16];
    pthread_once(&once, setup);
    if (!active || watched_path(newdirfd, newpath, newname, sizeof newname) == NULL) return;
    int saved = errno;
    pthread_mutex_lock(&lock);
    snprintf(to, sizeof to, "%s/%s", snapshot_dir, newname);
    int moved = 0;
    if (watched_path(olddirfd, oldpath, oldname, sizeof oldname) != NULL) {
        snprintf(from, sizeof from, "%s/%s", snapshot_dir, oldname);
        moved = rename(from, to) == 0;
    }
    if (!moved) {
        int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out < 0) {
            fprintf(stderr, "powercut: cannot record the rename to %s: %s\n", newname, strerror(errno));
            abort();
        }
        close(out);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

int rename(const char *oldpath, const char *newpath) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int rc = real(oldpath, newpath);
    if (rc == 0) renamed(AT_FDCWD, oldpath, AT_FDCWD, newpath);
    return rc;
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    static int (*real)(int, const char *, int, const char *);
    if (!real) real = (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
    int rc = real(olddirfd, oldpath, newdirfd, newpath);
    if (rc == 0) renamed(olddirfd, oldpath, newdirfd, newpath);
    return rc;
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int);
    if (!real) real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(RTLD_NEXT, "renameat2");
    int rc = real(olddirfd, oldpath, newdirfd, newpath, flags);
    if (rc == 0 && !(flags & RENAME_EXCHANGE)) renamed(olddirfd, oldpath, newdirfd, newpath);
    return rc;
}
