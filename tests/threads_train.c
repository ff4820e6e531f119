/* Several threads training at once on the default device they share: each
 * thread's model must end exactly where the same training run alone ends
 * (every kernel call holds the device's lock; generators, scopes, errors
 * and grad mode are per thread). A plain program rather than a Criterion
 * suite so that it also runs under ThreadSanitizer (the test command
 * builds it with -Db_sanitize=thread), where Criterion cannot start. Prints
 * one line per check and "N passed, N failed"; exits 1 on a failure. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "xgrad.h"

#define STEPS 25
#define BATCH 16
#define IN 12
#define HID 24
#define OUT 5

typedef struct run {
    uint64_t seed;
    float loss;
    float params[HID * IN + HID + OUT * HID + OUT];
    int status; /* 0 OK, else the failing step + 1 */
    char error[256];
} run;

/* A small MLP trained with Adam on data drawn from the thread's generator;
 * everything comes from `seed`, so a run is a function of it. */
static void *train(void *arg)
{
    run *r = arg;
    xg_manual_seed(r->seed);
    xg_module *m = xg_sequential();
    xg_sequential_add(m, "fc1", xg_linear(IN, HID, true));
    xg_sequential_add(m, "act", xg_gelu_layer());
    xg_sequential_add(m, "fc2", xg_linear(HID, OUT, true));
    xg_optim *opt = xg_optim_for_module(m, "adam", 1e-2f);
    int32_t labels[BATCH];
    for (int i = 0; i < BATCH; i++)
        labels[i] = (int32_t)((r->seed + (uint64_t)i) % OUT);
    for (int step = 0; step < STEPS && r->status == 0; step++) {
        xg_scope *scope = xg_scope_begin();
        xg_tensor *x = xg_rand_normal(XG_SHAPE(BATCH, IN), 0.0f, 1.0f);
        xg_tensor *y = xg_tensor_from_data(labels, XG_I32, XG_SHAPE(BATCH));
        xg_tensor *loss = xg_cross_entropy(xg_module_forward(m, x), y);
        if (!loss || xg_backward(loss) != XG_OK ||
            xg_optim_step(opt) != XG_OK ||
            xg_tensor_item(loss, &r->loss) != XG_OK) {
            r->status = step + 1;
            snprintf(r->error, sizeof r->error, "%s", xg_last_error());
        }
        xg_optim_zero_grad(opt);
        xg_scope_end(scope);
    }
    for (int i = 0, at = 0; r->status == 0 && i < xg_module_param_count(m);
         i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        int64_t n = xg_tensor_numel(p);
        if (xg_tensor_read(p, r->params + at, (size_t)n * 4) != XG_OK)
            r->status = -1;
        at += (int)n;
    }
    xg_optim_free(opt);
    xg_module_free(m);
    return NULL;
}

static int passed, failed;

static void check(bool ok, const char *what, int threads, int t)
{
    printf("%s: %d threads, thread %d: %s\n", ok ? "ok" : "FAIL", threads, t,
           what);
    ok ? passed++ : failed++;
}

static void train_together(int threads)
{
    run alone[4] = {{0}}, together[4] = {{0}};
    for (int t = 0; t < threads; t++) {
        alone[t].seed = together[t].seed = 100 + (uint64_t)t;
        train(&alone[t]);
        if (alone[t].status != 0)
            printf("alone, seed %d: %s\n", t, alone[t].error);
        check(alone[t].status == 0, "trains alone", threads, t);
    }
    pthread_t tid[4];
    int started = 0;
    for (int t = 0; t < threads; t++)
        started += pthread_create(&tid[t], NULL, train, &together[t]) == 0;
    check(started == threads, "threads started", threads, 0);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    for (int t = 0; t < started; t++) {
        if (together[t].status != 0)
            printf("thread %d failed at step %d: %s\n", t,
                   together[t].status, together[t].error);
        check(together[t].status == 0, "trains beside the others", threads,
              t);
        check(together[t].loss == alone[t].loss, "the same last loss",
              threads, t);
        check(memcmp(together[t].params, alone[t].params,
                     sizeof alone[t].params) == 0,
              "the same parameters", threads, t);
    }
}

int main(void)
{
    train_together(2);
    train_together(4);
    xg_shutdown();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
