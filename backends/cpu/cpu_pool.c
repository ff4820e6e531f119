/* A small persistent thread pool for the CPU backend.
 *
 * One job at a time. The caller publishes (fn, ctx, ranges), wakes the
 * workers and claims ranges itself from a shared counter; each worker that
 * wakes in time joins the job and claims ranges too. When no range is left,
 * the caller closes the job and waits only for the workers that joined. A
 * worker that is not scheduled (a loaded machine) thus never holds the
 * caller up: the caller simply does the ranges itself.
 *
 * Protocol: `state` counts the workers inside the job; JOB_CLOSED is set
 * while no job is open. Job fields are written only while JOB_CLOSED is set
 * and no worker is inside, and read only by workers inside. Workers spin
 * briefly on the generation counter before sleeping, so back-to-back jobs
 * skip the futex round trip; a sleeping side is signalled under the mutex
 * (Dekker-style handshake on seq_cst atomics), an awake one is not.
 */
#include "cpu_impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum {
    SPIN_POLLS = 1000,        /* polls before sleeping: about 20 us */
    RANGES_PER_THREAD = 4,    /* finer ranges balance uneven threads */
    JOB_CLOSED = 1 << 30,
};

typedef struct cpu_worker {
    cpu_pool *pool;
    int index; /* 1 .. threads - 1; the caller is 0 */
    pthread_t thread;
} cpu_worker;

struct cpu_pool {
    int threads; /* workers + the caller */
    cpu_worker *workers;

    pthread_mutex_t lock;
    pthread_cond_t wake; /* workers sleep here between jobs */
    pthread_cond_t done; /* the caller sleeps here for joined workers */
    atomic_uint generation;
    atomic_int state;    /* workers inside the job, | JOB_CLOSED */
    atomic_llong next;   /* the next range to claim */
    atomic_int sleeping_workers;
    atomic_bool caller_sleeping;
    atomic_bool stop;

    /* The current job. */
    cpu_range_fn fn;
    const void *ctx;
    int64_t n, chunk, ranges;
};

/* Claims and runs ranges until none is left. */
static void run_ranges(cpu_pool *p, int thread)
{
    for (;;) {
        int64_t r = atomic_fetch_add(&p->next, 1);
        if (r >= p->ranges)
            return;
        int64_t begin = r * p->chunk;
        int64_t end = begin + p->chunk < p->n ? begin + p->chunk : p->n;
        p->fn(p->ctx, begin, end, thread);
    }
}

/* Returns the first generation other than `seen`. */
static unsigned wait_for_job(cpu_pool *p, unsigned seen)
{
    for (int i = 0; i < SPIN_POLLS; i++) {
        unsigned g = atomic_load(&p->generation);
        if (g != seen)
            return g;
        CPU_RELAX();
    }
    unsigned g;
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add(&p->sleeping_workers, 1);
    while ((g = atomic_load(&p->generation)) == seen)
        pthread_cond_wait(&p->wake, &p->lock);
    atomic_fetch_sub(&p->sleeping_workers, 1);
    pthread_mutex_unlock(&p->lock);
    return g;
}

static bool join_job(cpu_pool *p)
{
    int s = atomic_load(&p->state);
    while (!(s & JOB_CLOSED))
        if (atomic_compare_exchange_weak(&p->state, &s, s + 1))
            return true;
    return false;
}

static void leave_job(cpu_pool *p)
{
    if (atomic_fetch_sub(&p->state, 1) == (JOB_CLOSED | 1) &&
        atomic_load(&p->caller_sleeping)) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
}

static void *worker_main(void *arg)
{
    cpu_worker *w = arg;
    cpu_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        if (join_job(p)) {
            run_ranges(p, w->index);
            leave_job(p);
        }
    }
}

/* Opens the job already written to the pool and wakes the workers. */
static void open_job(cpu_pool *p)
{
    atomic_store(&p->next, 0);
    atomic_store(&p->state, 0);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleeping_workers) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
}

/* Closes the job and waits for the workers still inside it. */
static void close_job(cpu_pool *p)
{
    atomic_fetch_or(&p->state, JOB_CLOSED);
    for (int i = 0; i < SPIN_POLLS; i++) {
        if (atomic_load(&p->state) == JOB_CLOSED)
            return;
        CPU_RELAX();
    }
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->caller_sleeping, true);
    while (atomic_load(&p->state) != JOB_CLOSED)
        pthread_cond_wait(&p->done, &p->lock);
    atomic_store(&p->caller_sleeping, false);
    pthread_mutex_unlock(&p->lock);
}

cpu_pool *cpu_pool_new(int threads)
{
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->workers = calloc(threads > 1 ? (size_t)threads - 1 : 1,
                        sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->state, JOB_CLOSED);
    p->threads = 1;
    for (int i = 1; i < threads; i++) {
        cpu_worker *w = &p->workers[i - 1];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        p->threads++;
    }
    return p;
}

void cpu_pool_free(cpu_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, true);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->threads - 1; i++)
        pthread_join(pool->workers[i].thread, NULL);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free(pool);
}

int cpu_pool_threads(const cpu_pool *pool) { return pool->threads; }

void cpu_parallel_for(cpu_pool *pool, int64_t n, int64_t item_cost,
                      int64_t align, cpu_range_fn fn, const void *ctx)
{
    /* Ranges of at least half the serial threshold of work each. */
    int64_t work = n * item_cost;
    int64_t ranges = work / (CPU_PARALLEL_MIN_WORK / 2);
    if (ranges > (int64_t)pool->threads * RANGES_PER_THREAD)
        ranges = (int64_t)pool->threads * RANGES_PER_THREAD;
    if (ranges > n)
        ranges = n;
    if (work < CPU_PARALLEL_MIN_WORK || pool->threads == 1 || ranges < 2) {
        fn(ctx, 0, n, 0);
        return;
    }
    int64_t chunk = (n + ranges - 1) / ranges;
    pool->chunk = (chunk + align - 1) / align * align;
    pool->ranges = (n + pool->chunk - 1) / pool->chunk;
    pool->n = n;
    pool->fn = fn;
    pool->ctx = ctx;
    open_job(pool);
    run_ranges(pool, 0);
    close_job(pool);
}
