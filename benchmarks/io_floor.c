/* The I/O floor: the least work any prepare must do.
 *
 * Walks a tree with N threads and opens, reads and closes every `*.json` file (hidden names skipped, as
 * Python's glob does), parsing nothing. Its wall time is the bar `jenova-fast prepare` is measured against.
 *
 *   io_floor [--threads N] DIR          read every file; prints {"files":..,"bytes":..,"dirs":..}
 *   io_floor [--threads N] --evict DIR  posix_fadvise(POSIX_FADV_DONTNEED) every file instead of reading
 *   io_floor --measure REPORT -- CMD..  run CMD, write {"wall_s","cpu_s","maxrss_kb","exit"} to REPORT
 *
 * --measure exists because ru_maxrss is inherited through exec: a command forked straight from the harness
 * (a Python process holding the records check) would report the harness's RSS as its own peak. Forked from
 * this small program instead, the peak is the command's own (the largest process of its tree).
 *
 * Work items are directories and batches of up to BATCH file names from one directory, so a single huge
 * directory still spreads over every thread, and a high thread count keeps that many reads in flight on a
 * cold cache. Files are opened relative to a shared directory fd (openat), as a native walker would.
 * Built by benchmarks/harness.py (for compare.py) with `cc -O2 -pthread`.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define BUF_SIZE (1 << 20)

typedef struct dirref {
    int fd;
    atomic_int refs;
} dirref;

typedef struct item {
    struct item *next;
    char *dir_path;    /* a directory to list, or NULL for a batch of files */
    dirref *dir;       /* the batch's directory */
    int count;
    char *names[BATCH];
} item;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static item *head, *tail;
static int busy;       /* threads holding an item; the walk ends when the queue is empty and busy == 0 */
static int done;
static int evict;
static atomic_uint_fast64_t n_files, n_bytes, n_dirs, n_errors;

static void push(item *it) {
    pthread_mutex_lock(&lock);
    it->next = NULL;
    if (tail) tail->next = it; else head = it;
    tail = it;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
}

static item *pop(void) {
    pthread_mutex_lock(&lock);
    while (!head && !done) {
        if (busy == 0) {
            done = 1;
            pthread_cond_broadcast(&wake);
            break;
        }
        pthread_cond_wait(&wake, &lock);
    }
    item *it = NULL;
    if (head) {
        it = head;
        head = it->next;
        if (!head) tail = NULL;
        busy++;
    }
    pthread_mutex_unlock(&lock);
    return it;
}

static void finished(void) {
    pthread_mutex_lock(&lock);
    busy--;
    if (busy == 0 && !head) pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}

static void release(dirref *d) {
    if (atomic_fetch_sub(&d->refs, 1) == 1) {
        close(d->fd);
        free(d);
    }
}

static int is_json(const char *name) {
    size_t len = strlen(name);
    return name[0] != '.' && len >= 5 && memcmp(name + len - 5, ".json", 5) == 0;
}

static void list_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { atomic_fetch_add(&n_errors, 1); return; }
    DIR *dir = fdopendir(dup(fd));
    if (!dir) { close(fd); atomic_fetch_add(&n_errors, 1); return; }
    atomic_fetch_add(&n_dirs, 1);
    dirref *ref = malloc(sizeof *ref);
    ref->fd = fd;
    atomic_init(&ref->refs, 1);  /* held by this lister until it is done */
    item *batch = NULL;
    struct dirent *e;
    while ((e = readdir(dir))) {
        const char *name = e->d_name;
        if (name[0] == '.') continue;  /* ".", ".." and hidden names, as glob skips them */
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
            item *sub = calloc(1, sizeof *sub);
            size_t len = strlen(path) + strlen(name) + 2;
            sub->dir_path = malloc(len);
            snprintf(sub->dir_path, len, "%s/%s", path, name);
            push(sub);
        } else if (type == DT_REG && is_json(name)) {
            if (!batch) {
                batch = calloc(1, sizeof *batch);
                batch->dir = ref;
                atomic_fetch_add(&ref->refs, 1);
            }
            batch->names[batch->count++] = strdup(name);
            if (batch->count == BATCH) { push(batch); batch = NULL; }
        }
    }
    if (batch) push(batch);
    closedir(dir);
    release(ref);
}

static void read_files(item *it, char *buf) {
    for (int i = 0; i < it->count; i++) {
        int fd = openat(it->dir->fd, it->names[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) { atomic_fetch_add(&n_errors, 1); free(it->names[i]); continue; }
        uint64_t total = 0;
        if (evict) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        } else {
            ssize_t got;
            /* A short read of a regular file on a local file system is its end: stop there rather than pay
             * a second read() for the 0, as a tuned reader with a large buffer would. */
            while ((got = read(fd, buf, BUF_SIZE)) > 0) {
                total += (uint64_t)got;
                if (got < BUF_SIZE) break;
            }
            if (got < 0) atomic_fetch_add(&n_errors, 1);
        }
        close(fd);
        atomic_fetch_add(&n_files, 1);
        atomic_fetch_add(&n_bytes, total);
        free(it->names[i]);
    }
    release(it->dir);
}

static void *worker(void *arg) {
    (void)arg;
    char *buf = malloc(BUF_SIZE);
    item *it;
    while ((it = pop())) {
        if (it->dir_path) {
            list_dir(it->dir_path);
            free(it->dir_path);
        } else {
            read_files(it, buf);
        }
        free(it);
        finished();
    }
    free(buf);
    return NULL;
}

static int measure(const char *report, char **cmd) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("io_floor: fork"); return 127; }
    if (pid == 0) {
        execvp(cmd[0], cmd);
        fprintf(stderr, "io_floor: cannot run %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0)
        if (errno != EINTR) { perror("io_floor: wait4"); return 127; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    FILE *f = fopen(report, "w");
    if (!f) { fprintf(stderr, "io_floor: cannot write %s: %s\n", report, strerror(errno)); return 127; }
    double cpu = (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                 (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;  /* the whole tree's */
    fprintf(f, "{\"wall_s\": %.6f, \"cpu_s\": %.6f, \"maxrss_kb\": %ld, \"exit\": %d}\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, cpu, usage.ru_maxrss, code);
    fclose(f);
    return code >= 0 ? code : 128 - code;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--measure") == 0 && strcmp(argv[3], "--") == 0 && argc >= 5)
        return measure(argv[2], argv + 4);
    int threads = 2;
    const char *root = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--evict") == 0) evict = 1;
        else if (argv[i][0] == '-') { fprintf(stderr, "io_floor: unknown option %s\n", argv[i]); return 2; }
        else root = argv[i];
    }
    if (!root || threads < 1) {
        fprintf(stderr, "usage: io_floor [--threads N] [--evict] DIR\n");
        return 2;
    }
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "io_floor: %s is not a directory; pass the insight store's root\n", root);
        return 2;
    }
    item *first = calloc(1, sizeof *first);
    first->dir_path = strdup(root);
    push(first);
    pthread_t *tids = malloc(sizeof *tids * (size_t)threads);
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
    printf("{\"files\": %llu, \"bytes\": %llu, \"dirs\": %llu, \"errors\": %llu, \"threads\": %d, \"evict\": %s}\n",
           (unsigned long long)n_files, (unsigned long long)n_bytes, (unsigned long long)n_dirs,
           (unsigned long long)n_errors, threads, evict ? "true" : "false");
    return 0;
}
