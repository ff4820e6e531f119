/* Data-parallel training against one process (tests/dist.sh runs it).
 *
 *   dist_train train MODEL OUT [--emulate W]
 *       20 Adam steps of MODEL (mlp, or cnn: conv without bias (BatchNorm
 *       cancels it, so its gradient is rounding noise that Adam would
 *       blow up), BatchNorm, ReLU, pool,
 *       linear; no dropout) on Fashion-MNIST, batch 32 per rank, then
 *       writes the parameters to OUT (rank 0). Under mpirun each rank
 *       trains on its shard and the gradients go through xg_grad_sync
 *       (with 64 KiB buckets, so a step has several and the overlap with
 *       backward runs). With --emulate W one process plays W ranks in
 *       turn: it runs each rank's share of the step through the model on
 *       its own, so BatchNorm takes each share's statistics as a rank
 *       would, and averages the W losses: the single-process run that a
 *       data-parallel run with per-rank BatchNorm statistics must match.
 *   dist_train compare A B TOL
 *       Exit 0 when every parameter of A is within TOL of B's, relative
 *       (||a - b|| / ||b||, the 2-norm over the tensor), printing each
 *       one's relative difference and its largest elementwise one. BatchNorm's
 *       running statistics are left out: each rank keeps its own (the file
 *       has rank 0's), and the emulation updates them once per share.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"
#include "xgrad_data.h"

enum { STEPS = 20, BATCH = 32, MAX_RANKS = 8 };

static int fail(const char *what)
{
    fprintf(stderr, "dist_train: rank %d: %s: %s\n", xg_dist_rank(), what,
            xg_last_error());
    return 1;
}

static xg_module *model_new(const char *name)
{
    xg_module *m = xg_sequential();
    bool ok = m != NULL;
    if (strcmp(name, "mlp") == 0) {
        ok = ok && xg_sequential_add(m, NULL, xg_flatten_layer()) == XG_OK &&
             xg_sequential_add(m, NULL, xg_linear(784, 64, true)) == XG_OK &&
             xg_sequential_add(m, NULL, xg_relu_layer()) == XG_OK &&
             xg_sequential_add(m, NULL, xg_linear(64, 10, true)) == XG_OK;
    } else {
        ok = ok &&
             xg_sequential_add(m, NULL, xg_conv2d_layer(1, 8, 3, NULL, false)) ==
                 XG_OK &&
             xg_sequential_add(m, NULL, xg_batch_norm2d_layer(8)) == XG_OK &&
             xg_sequential_add(m, NULL, xg_relu_layer()) == XG_OK &&
             xg_sequential_add(m, NULL, xg_max_pool2d_layer(2, 0, 0)) ==
                 XG_OK &&
             xg_sequential_add(m, NULL, xg_flatten_layer()) == XG_OK &&
             xg_sequential_add(m, NULL, xg_linear(8 * 13 * 13, 10, true)) ==
                 XG_OK;
    }
    if (!ok) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* One step's loss: the mean over the `n` shares of their mean losses. */
static xg_tensor *step_loss(xg_module *m, xg_loader **loaders, int n)
{
    xg_tensor *total = NULL;
    for (int r = 0; r < n; r++) {
        xg_tensor *x, *y;
        if (xg_loader_next(loaders[r], &x, &y) != 1)
            return NULL;
        xg_tensor *l = xg_cross_entropy(xg_module_forward(m, x), y);
        total = total ? xg_add(total, l) : l;
    }
    return n > 1 ? xg_div_scalar(total, (float)n) : total;
}

static int train(const char *name, const char *out, int emulate)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    int world = emulate ? emulate : xg_dist_world_size();
    xg_dataset *d = NULL;
    if (xg_mnist_load(dir, "train", 0.2860f, 0.3530f, &d) != XG_OK)
        return fail("loading Fashion-MNIST");
    xg_manual_seed(7);
    xg_module *m = model_new(name);
    xg_loader *loaders[MAX_RANKS] = {0};
    int n = emulate ? emulate : 1, rc = m ? 0 : fail("model");
    for (int r = 0; r < n && rc == 0; r++) {
        int rank = emulate ? r : xg_dist_rank();
        loaders[r] = xg_loader_new(d, BATCH, true, false, 11,
                                   (int64_t)STEPS * BATCH * world);
        if (!loaders[r] ||
            xg_loader_set_shard(loaders[r], rank, world, true) != XG_OK)
            rc = fail("loader");
    }
    if (rc == 0 && xg_dist_broadcast_module(m) != XG_OK)
        rc = fail("broadcast");
    xg_optim *opt = rc ? NULL : xg_optim_for_module(m, "adam", 1e-3f);
    xg_grad_sync *sync = opt ? xg_grad_sync_new(m, 64 << 10) : NULL;
    if (rc == 0 && !sync)
        rc = fail("optimizer");
    for (int step = 0; step < STEPS && rc == 0; step++) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *loss = step_loss(m, loaders, n);
        if (!loss || xg_grad_sync_backward(sync, loss) != XG_OK ||
            xg_optim_step(opt) != XG_OK)
            rc = fail("step");
        xg_optim_zero_grad(opt);
        xg_scope_end(s);
    }
    if (rc == 0 && xg_dist_rank() == 0 && xg_module_save(m, out) != XG_OK)
        rc = fail("saving");
    if (rc == 0 && xg_dist_rank() == 0) {
        xg_grad_sync_stats st;
        xg_grad_sync_get_stats(sync, &st);
        printf("dist_train: %s, %d rank(s)%s, %lld buckets, %lld reductions\n",
               name, world, emulate ? " emulated" : "",
               (long long)st.buckets, (long long)st.reductions);
    }
    xg_grad_sync_free(sync);
    xg_optim_free(opt);
    for (int r = 0; r < n; r++)
        xg_loader_free(loaders[r]);
    xg_module_free(m);
    xg_dataset_free(d);
    return rc;
}

/* ||a - b|| / ||b|| of tensor `name` into *rel, max |a - b| into *worst. */
static int diff(xg_safetensors *a, xg_safetensors *b, const char *name,
                double *rel, double *worst)
{
    xg_tensor *ta = xg_safetensors_tensor(a, name);
    xg_tensor *tb = xg_safetensors_tensor(b, name);
    int64_t n = ta && tb ? xg_tensor_numel(ta) : 0;
    float *va = n ? malloc((size_t)n * sizeof *va) : NULL;
    float *vb = n ? malloc((size_t)n * sizeof *vb) : NULL;
    int rc = !va || !vb || xg_tensor_numel(tb) != n ||
             xg_tensor_read(ta, va, (size_t)n * sizeof *va) != XG_OK ||
             xg_tensor_read(tb, vb, (size_t)n * sizeof *vb) != XG_OK;
    double d2 = 0, b2 = 0;
    *worst = 0;
    for (int64_t i = 0; !rc && i < n; i++) {
        double e = (double)va[i] - (double)vb[i];
        d2 += e * e;
        b2 += (double)vb[i] * (double)vb[i];
        *worst = fabs(e) > *worst || isnan(e) ? fabs(e) : *worst;
    }
    *rel = b2 > 0 ? sqrt(d2 / b2) : sqrt(d2);
    free(va);
    free(vb);
    xg_tensor_free(ta);
    xg_tensor_free(tb);
    return rc ? fail(name) : 0;
}

static int compare(const char *pa, const char *pb, double tol)
{
    xg_safetensors *a = NULL, *b = NULL;
    if (xg_safetensors_open(pa, &a) != XG_OK ||
        xg_safetensors_open(pb, &b) != XG_OK) {
        xg_safetensors_close(a);
        return fail("opening");
    }
    int rc = xg_safetensors_count(a) != xg_safetensors_count(b);
    if (rc)
        fprintf(stderr, "dist_train: %s and %s hold different tensors\n", pa,
                pb);
    for (int i = 0; i < xg_safetensors_count(a) && rc == 0; i++) {
        const char *name = xg_safetensors_name(a, i);
        if (strstr(name, "running_") || strstr(name, "num_batches_tracked"))
            continue;
        double rel = 0, worst = 0;
        rc = diff(a, b, name, &rel, &worst);
        if (rc == 0 && !(rel <= tol)) {
            fprintf(stderr, "dist_train: %s differs by %.3g (limit %.3g)\n",
                    name, rel, tol);
            rc = 1;
        } else if (rc == 0) {
            printf("%s: relative difference %.3g (largest element %.3g)\n",
                   name, rel, worst);
        }
    }
    xg_safetensors_close(a);
    xg_safetensors_close(b);
    return rc;
}

int main(int argc, char **argv)
{
    if (xg_dist_init(&argc, &argv) != XG_OK)
        return fail("joining the job");
    int rc = 2;
    if (argc >= 4 && strcmp(argv[1], "train") == 0) {
        int emulate = argc == 6 && strcmp(argv[4], "--emulate") == 0
                          ? atoi(argv[5])
                          : 0;
        rc = emulate < 0 || emulate > MAX_RANKS ? 2
                                                : train(argv[2], argv[3],
                                                        emulate);
    } else if (argc == 5 && strcmp(argv[1], "compare") == 0) {
        rc = compare(argv[2], argv[3], atof(argv[4]));
    } else {
        fprintf(stderr, "usage: dist_train train mlp|cnn OUT [--emulate W] "
                "| compare A B TOL\n");
    }
    xg_shutdown();
    if (rc != 0)
        xg_dist_abort(rc);
    xg_dist_finalize();
    return rc;
}
