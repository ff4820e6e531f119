/* The distributed API under mpirun (tests/dist.sh runs it with 1 and with
 * 2 ranks; a plain run is a world of one). A plain program, not Criterion:
 * Criterion forks each test, and an MPI process must not fork. Every rank
 * checks and reports; the exit status is nonzero when any check failed on
 * this rank. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

static int passed, failed;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (cond) {                                                           \
            passed++;                                                         \
        } else {                                                              \
            failed++;                                                         \
            fprintf(stderr, "dist_ops: rank %d: line %d: ", xg_dist_rank(),   \
                    __LINE__);                                                \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " (%s)\n", xg_last_error());                      \
        }                                                                     \
    } while (0)

static int rank, world;

/* The launcher's own count of processes: 1 without one. */
static int launcher_world(void)
{
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    return s ? atoi(s) : 1;
}

static void check_job(void)
{
    CHECK(world == launcher_world(), "world %d, mpirun started %d", world,
          launcher_world());
    CHECK(rank >= 0 && rank < world, "rank %d of %d", rank, world);
    CHECK(xg_dist_local_rank() >= 0 &&
              xg_dist_local_rank() < xg_dist_local_size() &&
              xg_dist_local_size() <= world,
          "local rank %d of %d", xg_dist_local_rank(), xg_dist_local_size());
    CHECK(xg_dist_init(NULL, NULL) == XG_OK && xg_dist_rank() == rank,
          "a second init changes nothing");
    double v[2] = {rank + 1, 1};
    CHECK(xg_dist_sum(v, 2) == XG_OK && v[0] == world * (world + 1) / 2.0 &&
              v[1] == world,
          "sum: %g %g", v[0], v[1]);
    CHECK(xg_dist_sum(NULL, 1) == XG_ERR_INVALID_ARG, "sum of NULL");
}

/* A tensor of n values all equal to v. */
static xg_tensor *filled(int64_t n, float v)
{
    return xg_full(XG_SHAPE(n), v);
}

/* Element 0 of a tensor of at most 1000 floats. */
static float first(xg_tensor *t)
{
    float v[1000] = {NAN};
    size_t n = (size_t)xg_tensor_numel(t);
    if (n > 1000 || xg_tensor_read(t, v, n * sizeof *v) != XG_OK)
        return NAN;
    return v[0];
}

static void check_broadcast(void)
{
    int root = world - 1;
    xg_tensor *t = filled(1000, (float)rank + 1);
    CHECK(xg_dist_broadcast(t, root) == XG_OK && first(t) == root + 1,
          "broadcast from %d gave %g", root, first(t));
    /* ranks that disagree on the size fail, all of them, without hanging */
    xg_tensor *u = filled(10 + (world > 1 ? rank : 0), 1.0f);
    xg_status st = xg_dist_broadcast(u, 0);
    CHECK(world == 1 ? st == XG_OK : st == XG_ERR_SHAPE,
          "sizes that differ: status %d", (int)st);
    CHECK(xg_dist_broadcast(t, world) == XG_ERR_INVALID_ARG,
          "root past the world");
    CHECK(xg_dist_broadcast(NULL, 0) == XG_ERR_INVALID_ARG, "NULL tensor");
    xg_tensor_free(t);
    xg_tensor_free(u);
}

/* Two linear layers and a third that the forward never uses. */
static xg_module *net(uint64_t seed)
{
    xg_manual_seed(seed);
    xg_module *m = xg_sequential();
    if (m && (xg_sequential_add(m, "a", xg_linear(5, 4, true)) != XG_OK ||
              xg_sequential_add(m, "b", xg_linear(4, 3, true)) != XG_OK ||
              xg_sequential_add(m, "unused", xg_linear(3, 2, true)) !=
                  XG_OK)) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* Rank r's input: its own batch of 2 rows. */
static xg_tensor *input_of(int r, int micro)
{
    float x[10];
    for (int i = 0; i < 10; i++)
        x[i] = sinf(1.0f + (float)i + 10.0f * (float)r + 0.5f * (float)micro);
    return xg_tensor_from_data(x, XG_F32, XG_SHAPE(2, 5));
}

static xg_tensor *loss_of(xg_module *m, int r, int micro)
{
    xg_tensor *x = input_of(r, micro);
    xg_module *a = xg_module_child(m, "a"), *b = xg_module_child(m, "b");
    xg_tensor *y = xg_module_forward(b, xg_relu(xg_module_forward(a, x)));
    return xg_mean_all(xg_mul(y, y));
}

/* The gradients a data-parallel step must give: every rank's own
 * (xg_backward on its inputs, `micros` micro-batches), averaged, computed
 * here in one process; parameters in xg_module_param order, back to
 * back, into ref. */
static int reference(uint64_t seed, int micros, float *ref, int n_ref)
{
    xg_module *m = net(seed);
    int at = 0;
    memset(ref, 0, (size_t)n_ref * sizeof *ref);
    for (int r = 0; r < world && m; r++) {
        for (int p = 0; p < xg_module_param_count(m); p++)
            xg_tensor_zero_grad(xg_module_param(m, p, NULL));
        for (int k = 0; k < micros; k++)
            if (xg_backward(loss_of(m, r, k)) != XG_OK)
                return 1;
        at = 0;
        for (int p = 0; p < xg_module_param_count(m); p++) {
            xg_tensor *w = xg_module_param(m, p, NULL);
            int64_t n = xg_tensor_numel(w);
            float g[32] = {0};
            if (xg_tensor_grad(w))
                xg_tensor_read(xg_tensor_grad(w), g, (size_t)n * sizeof *g);
            for (int64_t i = 0; i < n; i++)
                ref[at + i] += g[i] / (float)world;
            at += (int)n;
        }
    }
    xg_module_free(m);
    return m ? 0 : 1;
}

static void check_sync(size_t bucket, int micros)
{
    float ref[128], got[32];
    CHECK(reference(3, micros, ref, 128) == 0, "reference gradients");
    /* every rank starts from its own initialisation: the broadcast makes
     * them rank 0's, which is what the reference used */
    xg_module *m = net(rank == 0 ? 3 : 100 + (uint64_t)rank);
    CHECK(xg_dist_broadcast_module(m) == XG_OK, "broadcast_module");
    xg_grad_sync *s = xg_grad_sync_new(m, bucket);
    CHECK(s != NULL, "grad_sync_new");
    if (!s) {
        xg_module_free(m);
        return;
    }
    xg_status st = XG_OK;
    for (int k = 0; k + 1 < micros && st == XG_OK; k++)
        st = xg_backward(loss_of(m, rank, k));
    if (st == XG_OK)
        st = xg_grad_sync_backward(s, loss_of(m, rank, micros - 1));
    CHECK(st == XG_OK, "grad_sync_backward");
    int at = 0;
    double worst = 0;
    bool all_have = true;
    for (int p = 0; p < xg_module_param_count(m); p++) {
        xg_tensor *w = xg_module_param(m, p, NULL);
        int64_t n = xg_tensor_numel(w);
        all_have &= xg_tensor_grad(w) != NULL;
        if (xg_tensor_grad(w))
            xg_tensor_read(xg_tensor_grad(w), got, (size_t)n * sizeof *got);
        for (int64_t i = 0; i < n && xg_tensor_grad(w); i++)
            worst = fmax(worst, fabs((double)got[i] - (double)ref[at + i]));
        at += (int)n;
    }
    xg_grad_sync_stats stats;
    xg_grad_sync_get_stats(s, &stats);
    CHECK(all_have, "every parameter has a gradient (the unused: zeros)");
    CHECK(worst < 1e-6, "gradients differ from the averaged reference by %g "
          "(bucket %zu, %d micro-batches)", worst, bucket, micros);
    CHECK(stats.reductions == 1 && stats.buckets >= 1 &&
              stats.bytes == (world > 1 ? (uint64_t)at * 4 : 0),
          "stats: %lld reductions, %lld buckets, %llu bytes",
          (long long)stats.reductions, (long long)stats.buckets,
          (unsigned long long)stats.bytes);
    if (bucket == 16)
        CHECK(stats.buckets == 6, "16-byte buckets: one per parameter, "
              "%lld", (long long)stats.buckets);
    xg_grad_sync_free(s);
    xg_module_free(m);
}

static void check_errors(void)
{
    CHECK(xg_grad_sync_new(NULL, 0) == NULL &&
              xg_last_status() == XG_ERR_INVALID_ARG,
          "sync of NULL");
    xg_module *m = net(1);
    xg_module_set_frozen(m, true);
    CHECK(xg_grad_sync_new(m, 0) == NULL &&
              xg_last_status() == XG_ERR_INVALID_ARG,
          "sync of a frozen module");
    xg_module_free(m);
    CHECK(xg_grad_sync_backward(NULL, NULL) == XG_ERR_INVALID_ARG &&
              xg_grad_sync_reduce(NULL) == XG_ERR_INVALID_ARG,
          "NULL sync");
    CHECK(xg_dist_broadcast_module(NULL) == XG_ERR_INVALID_ARG,
          "broadcast of NULL");
}

/* Built without MPI, a process that a launcher started is refused rather
 * than left to train alone (checked before the real init). */
static void check_launched_without_mpi(void)
{
    if (xg_dist_built() || getenv("OMPI_COMM_WORLD_SIZE"))
        return;
    setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    xg_status st = xg_dist_init(NULL, NULL);
    unsetenv("OMPI_COMM_WORLD_SIZE");
    CHECK(st == XG_ERR_UNSUPPORTED && strstr(xg_last_error(), "without MPI"),
          "a launched process without MPI: status %d", (int)st);
}

int main(int argc, char **argv)
{
    check_launched_without_mpi();
    if (xg_dist_init(&argc, &argv) != XG_OK) {
        fprintf(stderr, "dist_ops: init: %s\n", xg_last_error());
        return 1;
    }
    rank = xg_dist_rank();
    world = xg_dist_world_size();
    check_job();
    xg_scope *scope = xg_scope_begin();
    check_broadcast();
    check_sync(0, 1);       /* one bucket */
    check_sync(16, 1);      /* a bucket per parameter */
    check_sync(16, 3);      /* accumulation over micro-batches */
    check_errors();
    xg_scope_end(scope);
    xg_shutdown();
    printf("dist_ops: rank %d of %d (%s): %d passed, %d failed\n", rank, world,
           xg_dist_built() ? "MPI" : "no MPI", passed, failed);
    xg_dist_finalize();
    return failed != 0;
}
