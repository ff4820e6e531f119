/* Data-parallel training over MPI: joining the job, broadcasts, and the
 * gradient sync that averages gradients in buckets while the backward pass
 * runs. Built without MPI (XGRAD_HAVE_MPI undefined), the same API is a
 * world of one process. Device memory is staged through host buffers, so
 * any MPI and any backend work together. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core_impl.h"

#ifdef XGRAD_HAVE_MPI
#include <mpi.h>
#endif

/* ===== The job =========================================================== */

static struct {
    bool joined;   /* xg_dist_init ran */
    bool started;  /* xg_dist_init called MPI_Init_thread (so finalizes) */
    bool active;   /* inside an MPI job: collectives go through `comm` */
    int rank, world, local_rank, local_world;
#ifdef XGRAD_HAVE_MPI
    MPI_Comm comm; /* a copy of MPI_COMM_WORLD that returns its errors */
#endif
} job = {.world = 1, .local_world = 1};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether a launcher started this process: Open MPI's and the PMI/PMIx
 * process managers' (MPICH's hydra, Slurm) variables. A plain run does not
 * start MPI at all, so it pays nothing for it. */
static bool launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                       "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

#ifdef XGRAD_HAVE_MPI

/* XG_ERR_BACKEND with MPI's text for `code`. */
static xg_status mpi_error(const char *what, int code)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "error %d", code);
    return xg_set_error(XG_ERR_BACKEND, "%s: MPI: %s", what, text);
}

static xg_status join(int *argc, char ***argv)
{
    int inited = 0, rc = MPI_Initialized(&inited);
    if (rc == MPI_SUCCESS && !inited) {
        if (!launched())
            return XG_OK;
        int provided = 0;
        rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return xg_set_error(XG_ERR_BACKEND, "dist_init: MPI_Init_thread "
                                "failed (%d)", rc);
        job.started = true;
    }
    MPI_Comm local = MPI_COMM_NULL;
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_dup(MPI_COMM_WORLD, &job.comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_set_errhandler(job.comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(job.comm, &job.rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(job.comm, &job.world);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_split_type(job.comm, MPI_COMM_TYPE_SHARED, job.rank,
                                 MPI_INFO_NULL, &local);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_rank(local, &job.local_rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(local, &job.local_world);
    if (local != MPI_COMM_NULL)
        MPI_Comm_free(&local);
    if (rc != MPI_SUCCESS) {
        job.rank = job.local_rank = 0;
        job.world = job.local_world = 1;
        return mpi_error("dist_init", rc);
    }
    job.active = true;
    return XG_OK;
}
#endif

xg_status xg_dist_init(int *argc, char ***argv)
{
    if (job.joined)
        return XG_OK;
#ifdef XGRAD_HAVE_MPI
    xg_status st = join(argc, argv);
    if (st != XG_OK)
        return st;
#else
    (void)argc;
    (void)argv;
    /* N copies each training alone and writing the same files would be
     * wrong quietly: say so instead. */
    if (launched())
        return xg_set_error(XG_ERR_UNSUPPORTED, "dist_init: started by an "
                            "MPI launcher, but this xgrad was built without "
                            "MPI (install Open MPI and rebuild: meson "
                            "configure -Dmpi=enabled)");
#endif
    job.joined = true;
    xg__device_set_default_index(job.local_rank);
    return XG_OK;
}

xg_status xg_dist_finalize(void)
{
    xg_status st = XG_OK;
#ifdef XGRAD_HAVE_MPI
    if (job.active)
        MPI_Comm_free(&job.comm);
    if (job.started) {
        int rc = MPI_Finalize();
        if (rc != MPI_SUCCESS)
            st = xg_set_error(XG_ERR_BACKEND, "dist_finalize: MPI_Finalize "
                              "failed (%d)", rc);
    }
#endif
    job.joined = job.started = job.active = false;
    job.rank = job.local_rank = 0;
    job.world = job.local_world = 1;
    xg__device_set_default_index(0);
    return st;
}

void xg_dist_abort(int code)
{
#ifdef XGRAD_HAVE_MPI
    if (job.active && job.world > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
}

int xg_dist_rank(void)
{
    return job.rank;
}

int xg_dist_world_size(void)
{
    return job.world;
}

int xg_dist_local_rank(void)
{
    return job.local_rank;
}

int xg_dist_local_size(void)
{
    return job.local_world;
}

bool xg_dist_built(void)
{
#ifdef XGRAD_HAVE_MPI
    return true;
#else
    return false;
#endif
}

/* ===== Collectives ======================================================= */

/* Whether collectives have anyone to talk to. */
static bool multi(void)
{
    return job.active && job.world > 1;
}

#ifdef XGRAD_HAVE_MPI
/* MPI counts are ints: larger buffers go in pieces of 1 GiB. */
enum { PIECE = 1 << 30 };

static xg_status bcast_bytes(void *buf, size_t bytes, int root)
{
    for (size_t at = 0; at < bytes; at += PIECE) {
        size_t n = bytes - at < PIECE ? bytes - at : PIECE;
        int rc = MPI_Bcast((char *)buf + at, (int)n, MPI_BYTE, root, job.comm);
        if (rc != MPI_SUCCESS)
            return mpi_error("dist_broadcast", rc);
    }
    return XG_OK;
}
#endif

xg_status xg_dist_sum(double *values, int n)
{
    if (!values || n < 0)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "dist_sum: values NULL or n < 0");
#ifdef XGRAD_HAVE_MPI
    if (multi() && n > 0) {
        int rc = MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM,
                               job.comm);
        if (rc != MPI_SUCCESS)
            return mpi_error("dist_sum", rc);
    }
#endif
    return XG_OK;
}

xg_status xg_dist_broadcast(xg_tensor *t, int root)
{
    if (!t)
        return xg_set_error(XG_ERR_INVALID_ARG, "dist_broadcast: NULL tensor");
    if (root < 0 || root >= job.world)
        return xg_set_error(XG_ERR_INVALID_ARG, "dist_broadcast: root %d is "
                            "not a rank of this world of %d", root, job.world);
    if (!multi())
        return XG_OK;
#ifdef XGRAD_HAVE_MPI
    /* Sizes first, so ranks that disagree fail instead of hanging or
     * overrunning. */
    uint64_t size = (uint64_t)xg_tensor_numel(t) * xg_dtype_size(t->dtype);
    uint64_t root_size = size;
    xg_status st = bcast_bytes(&root_size, sizeof root_size, root);
    if (st != XG_OK)
        return st;
    int differs = root_size != size, any = 0;
    int rc = MPI_Allreduce(&differs, &any, 1, MPI_INT, MPI_MAX, job.comm);
    if (rc != MPI_SUCCESS)
        return mpi_error("dist_broadcast", rc);
    if (any)
        return xg_set_error(XG_ERR_SHAPE, "dist_broadcast: the ranks' tensors "
                            "differ in size (rank %d has %llu bytes, rank %d "
                            "%llu)", job.rank, (unsigned long long)size, root,
                            (unsigned long long)root_size);
    void *buf = malloc(size ? (size_t)size : 1);
    if (!buf)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "dist_broadcast: out of "
                            "host memory for %llu bytes",
                            (unsigned long long)size);
    if (job.rank == root)
        st = xg_tensor_read(t, buf, (size_t)size);
    /* A failed read still joins the broadcast, or the others would hang;
     * the data then is garbage, and the error is returned. */
    xg_status sent = bcast_bytes(buf, (size_t)size, root);
    if (st == XG_OK)
        st = sent;
    if (st == XG_OK && job.rank != root)
        st = xg_tensor_write(t, buf, (size_t)size);
    free(buf);
    return st;
#else
    return XG_OK;
#endif
}

xg_status xg_dist_broadcast_module(xg_module *m)
{
    if (!m)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "dist_broadcast_module: NULL module");
    if (!multi())
        return XG_OK;
    int n_params = xg_module_param_count(m);
    int n = n_params + xg_module_buffer_count(m);
    double counts[2] = {n, -n}; /* equal everywhere iff max == -min */
    xg_status st = XG_OK;
#ifdef XGRAD_HAVE_MPI
    int rc = MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_DOUBLE, MPI_MAX,
                           job.comm);
    if (rc != MPI_SUCCESS)
        return mpi_error("dist_broadcast_module", rc);
#endif
    if (counts[0] != -counts[1])
        return xg_set_error(XG_ERR_SHAPE, "dist_broadcast_module: the ranks' "
                            "modules differ (this rank has %d tensors)", n);
    for (int i = 0; i < n && st == XG_OK; i++) {
        xg_tensor *t = i < n_params ? xg_module_param(m, i, NULL)
                                    : xg_module_buffer(m, i - n_params, NULL);
        st = xg_dist_broadcast(t, 0);
    }
    return st;
}

/* ===== Gradient sync ===================================================== */

typedef struct bucket {
    int first, count;  /* its parameters: order[first .. first + count) */
    int ready;         /* of them with a complete gradient in this pass */
    size_t elems;
    float *host;       /* staging: the gradients back to back */
    bool launched;
#ifdef XGRAD_HAVE_MPI
    MPI_Request req;
#endif
} bucket;

struct xg_grad_sync {
    int n;              /* trainable parameters */
    xg_tensor **order;  /* them, last registered first (borrowed) */
    size_t *at;         /* each one's offset in its bucket, in floats */
    int *bucket_of;
    bool *ready;        /* its gradient is complete in this pass */
    int n_buckets;
    bucket *buckets;
    xg_grad_sync_stats stats;
};

void xg_grad_sync_free(xg_grad_sync *s)
{
    if (!s)
        return;
    for (int b = 0; b < s->n_buckets; b++)
        free(s->buckets[b].host);
    free(s->buckets);
    free(s->order);
    free(s->at);
    free(s->bucket_of);
    free(s->ready);
    free(s);
}

/* The module's trainable parameters, last first, into s->order. */
static xg_status collect(xg_grad_sync *s, xg_module *m)
{
    int total = xg_module_param_count(m);
    s->order = malloc((size_t)(total ? total : 1) * sizeof *s->order);
    if (!s->order)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_sync_new: out of "
                            "memory");
    for (int i = total - 1; i >= 0; i--) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        if (!p || !p->requires_grad)
            continue;
        if (p->dtype != XG_F32)
            return xg_set_error(XG_ERR_DTYPE, "grad_sync_new: parameter %d "
                                "is not f32", i);
        s->order[s->n++] = p;
    }
    if (s->n == 0)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_sync_new: the module "
                            "has no parameter that requires grad");
    return XG_OK;
}

/* Cuts s->order into buckets of at most `cap` bytes. */
static xg_status cut(xg_grad_sync *s, size_t cap)
{
    s->at = malloc((size_t)s->n * sizeof *s->at);
    s->bucket_of = malloc((size_t)s->n * sizeof *s->bucket_of);
    s->ready = calloc((size_t)s->n, sizeof *s->ready);
    s->buckets = calloc((size_t)s->n, sizeof *s->buckets); /* at most n */
    if (!s->at || !s->bucket_of || !s->ready || !s->buckets)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_sync_new: out of "
                            "memory");
    bucket *b = NULL;
    for (int i = 0; i < s->n; i++) {
        size_t elems = (size_t)xg_tensor_numel(s->order[i]);
        if (!b || (b->elems + elems) * sizeof(float) > cap) {
            b = &s->buckets[s->n_buckets++];
            b->first = i;
        }
        if (b->elems + elems > INT_MAX) /* MPI counts are ints */
            return xg_set_error(XG_ERR_TOO_LARGE, "grad_sync_new: a "
                                "parameter of %zu elements is past MPI's "
                                "count limit", elems);
        s->at[i] = b->elems;
        s->bucket_of[i] = (int)(b - s->buckets);
        b->elems += elems;
        b->count++;
    }
    for (int k = 0; k < s->n_buckets; k++) {
        b = &s->buckets[k];
        if (!(b->host = malloc(b->elems * sizeof(float))))
            return xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_sync_new: out of "
                                "host memory for a %zu-byte bucket",
                                b->elems * sizeof(float));
    }
    return XG_OK;
}

xg_grad_sync *xg_grad_sync_new(xg_module *m, size_t bucket_bytes)
{
    if (!m) {
        xg_set_error(XG_ERR_INVALID_ARG, "grad_sync_new: NULL module");
        return NULL;
    }
    xg_grad_sync *s = calloc(1, sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_sync_new: out of memory");
        return NULL;
    }
    xg_status st = collect(s, m);
    if (st == XG_OK)
        st = cut(s, bucket_bytes ? bucket_bytes : XG_DIST_BUCKET_BYTES);
    if (st != XG_OK) {
        xg_grad_sync_free(s);
        return NULL;
    }
    s->stats.buckets = s->n_buckets;
    return s;
}

/* Copies bucket b's gradients to its host buffer (zeros for a parameter
 * without one) and starts their sum. */
static xg_status launch(xg_grad_sync *s, bucket *b)
{
    double t0 = now();
    xg_status st = XG_OK;
    for (int i = b->first; i < b->first + b->count && st == XG_OK; i++) {
        const xg_tensor *g = s->order[i]->grad;
        size_t elems = (size_t)xg_tensor_numel(s->order[i]);
        if (g)
            st = xg_tensor_read(g, b->host + s->at[i], elems * sizeof(float));
        else
            memset(b->host + s->at[i], 0, elems * sizeof(float));
    }
    s->stats.stage_s += now() - t0;
    b->launched = true;
#ifdef XGRAD_HAVE_MPI
    /* Started even after a failed read: the other ranks take part in this
     * sum whatever happened here, so it must be matched. */
    int rc = MPI_Iallreduce(MPI_IN_PLACE, b->host, (int)b->elems, MPI_FLOAT,
                            MPI_SUM, job.comm, &b->req);
    if (rc != MPI_SUCCESS) {
        b->req = MPI_REQUEST_NULL;
        if (st == XG_OK)
            st = mpi_error("grad_sync", rc);
    }
    s->stats.bytes += b->elems * sizeof(float);
#endif
    return st;
}

/* Lets MPI move the sums already started (MPI progresses a nonblocking
 * collective only inside MPI calls). */
static void progress(xg_grad_sync *s)
{
#ifdef XGRAD_HAVE_MPI
    for (int k = 0; k < s->n_buckets; k++) {
        bucket *b = &s->buckets[k];
        int done = 0;
        if (b->launched && b->req != MPI_REQUEST_NULL)
            MPI_Test(&b->req, &done, MPI_STATUS_IGNORE);
    }
#else
    (void)s;
#endif
}

/* The backward hook: marks the leaf's gradient complete and starts its
 * bucket's sum when the bucket is full. */
static xg_status on_grad(void *ctx, xg_tensor *leaf)
{
    xg_grad_sync *s = ctx;
    int i = 0;
    while (i < s->n && s->order[i] != leaf)
        i++;
    if (i == s->n || s->ready[i]) /* not ours (an input), or seen */
        return XG_OK;
    s->ready[i] = true;
    bucket *b = &s->buckets[s->bucket_of[i]];
    xg_status st = XG_OK;
    if (++b->ready == b->count)
        st = launch(s, b);
    progress(s);
    return st;
}

/* Gives p a zero gradient when it has none, as a rank whose pass did not
 * reach p contributes zeros to the mean. */
static xg_status zero_grad_if_none(xg_tensor *p)
{
    if (p->grad)
        return XG_OK;
    xg_tensor *z = xg__fill(p->storage->dev, p->shape, p->ndim, 0.0f,
                            "grad_sync");
    return (p->grad = xg_tensor_keep(z)) ? XG_OK : xg_last_status();
}

/* Starts the buckets the pass left (parameters it gave no gradient), in
 * bucket order on every rank; awaits all sums; writes the means back. */
static xg_status finish(xg_grad_sync *s, xg_status st)
{
    for (int k = 0; k < s->n_buckets; k++) {
        bucket *b = &s->buckets[k];
        if (!b->launched) {
            xg_status ls = launch(s, b);
            st = st == XG_OK ? ls : st;
        }
    }
    double t0 = now();
#ifdef XGRAD_HAVE_MPI
    for (int k = 0; k < s->n_buckets; k++) {
        bucket *b = &s->buckets[k];
        int rc = b->req == MPI_REQUEST_NULL
                     ? MPI_SUCCESS
                     : MPI_Wait(&b->req, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS && st == XG_OK)
            st = mpi_error("grad_sync", rc);
    }
#endif
    double t1 = now();
    s->stats.wait_s += t1 - t0;
    float scale = 1.0f / (float)job.world;
    for (int k = 0; k < s->n_buckets && st == XG_OK; k++) {
        bucket *b = &s->buckets[k];
        for (size_t e = 0; e < b->elems; e++)
            b->host[e] *= scale;
        for (int i = b->first; i < b->first + b->count && st == XG_OK; i++) {
            xg_tensor *p = s->order[i];
            st = zero_grad_if_none(p);
            if (st == XG_OK)
                st = xg_tensor_write(p->grad, b->host + s->at[i],
                                     (size_t)xg_tensor_numel(p) *
                                         sizeof(float));
        }
    }
    s->stats.stage_s += now() - t1;
    for (int k = 0; k < s->n_buckets; k++) {
        s->buckets[k].launched = false;
        s->buckets[k].ready = 0;
    }
    memset(s->ready, 0, (size_t)s->n * sizeof *s->ready);
    s->stats.reductions++;
    return st;
}

xg_status xg_grad_sync_backward(xg_grad_sync *s, xg_tensor *loss)
{
    if (!s)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_sync_backward: NULL "
                            "sync");
    double t0 = now();
    if (!multi()) {
        xg_status st = xg_backward_ex(loss, false);
        s->stats.backward_s += now() - t0;
        return st == XG_OK ? xg_grad_sync_reduce(s) : st;
    }
    xg_status st = xg_backward_hooked(loss, false, on_grad, s);
    s->stats.backward_s += now() - t0;
    return finish(s, st);
}

xg_status xg_grad_sync_reduce(xg_grad_sync *s)
{
    if (!s)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_sync_reduce: NULL sync");
    if (!multi()) { /* the mean of one: only the missing gradients */
        xg_status st = XG_OK;
        for (int i = 0; i < s->n && st == XG_OK; i++)
            st = zero_grad_if_none(s->order[i]);
        s->stats.reductions++;
        return st;
    }
    return finish(s, XG_OK);
}

void xg_grad_sync_get_stats(const xg_grad_sync *s, xg_grad_sync_stats *out)
{
    if (s && out)
        *out = s->stats;
}

void xg_grad_sync_reset_stats(xg_grad_sync *s)
{
    if (s)
        s->stats = (xg_grad_sync_stats){.buckets = s->n_buckets};
}
