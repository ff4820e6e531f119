/* Writes the files tests/modules_torch.py compares with PyTorch, using the
 * model of tests/residual_model.h.
 *
 *   modules_export train DIR
 *     trains a Net a few steps with AdamW and writes DIR/model.safetensors
 *     (xg_module_save) and DIR/io.safetensors: "x", the Net's output "y"
 *     in evaluation mode, and as metadata the parameter and buffer names in
 *     enumeration order ("params", "buffers": space-separated) and the
 *     first and last training losses.
 *   modules_export forward MODEL IN OUT
 *     loads MODEL into a new Net, runs it in evaluation mode on IN's "x"
 *     and writes "y" to OUT.
 *
 * Exits 0 on success, 1 with the error on stderr. */
#include <stdio.h>
#include <string.h>

#include "residual_model.h"

static int fail(const char *what)
{
    fprintf(stderr, "modules_export: %s: %s\n", what, xg_last_error());
    return 1;
}

/* Names of the parameters (or buffers), space-separated, into buf. */
static void names(const xg_module *m, bool buffers, char *buf, size_t cap)
{
    int n = buffers ? xg_module_buffer_count(m) : xg_module_param_count(m);
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && at < cap; i++) {
        const char *name = NULL;
        if (buffers)
            xg_module_buffer(m, i, &name);
        else
            xg_module_param(m, i, &name);
        at += (size_t)snprintf(buf + at, cap - at, "%s%s", i ? " " : "",
                               name);
    }
}

/* Writes x, m(x) in evaluation mode and (optional) metadata to `path`. */
static int write_io(xg_module *m, xg_tensor *x, const char *path,
                    const char *const *meta)
{
    xg_module_set_training(m, false);
    xg_tensor *y = xg_module_forward(m, x);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    xg_status st = y && w ? XG_OK : xg_last_status();
    if (st == XG_OK)
        st = xg_safetensors_writer_add(w, "x", x);
    if (st == XG_OK)
        st = xg_safetensors_writer_add(w, "y", y);
    for (int i = 0; meta && meta[i] && st == XG_OK; i += 2)
        st = xg_safetensors_writer_metadata(w, meta[i], meta[i + 1]);
    if (st == XG_OK)
        st = xg_safetensors_writer_save(w, path);
    xg_safetensors_writer_free(w);
    xg_tensor_free(y);
    return st == XG_OK ? 0 : fail(path);
}

static int train(const char *dir)
{
    float xv[RM_BATCH * RM_IN], loss0 = 0.0f, loss = 0.0f;
    int32_t yv[RM_BATCH];
    rm_data(5, xv, yv);
    xg_module *m = rm_net_new(3);
    xg_optim *opt = m ? xg_optim_for_module(m, "adamw", 0.01f) : NULL;
    xg_tensor *x = xg_tensor_from_data(xv, XG_F32, XG_SHAPE(RM_BATCH, RM_IN));
    xg_tensor *y = xg_tensor_from_data(yv, XG_I32, XG_SHAPE(RM_BATCH));
    const float mean[RM_IN] = {0.25f, -0.5f, 0.125f, 0.0f};
    int rc = m && opt && x && y ? 0 : fail("setup");
    if (!rc && xg_tensor_write(xg_module_find_buffer(m, "in_mean"), mean,
                               sizeof mean) != XG_OK)
        rc = fail("in_mean");
    for (int step = 0; step < 8 && !rc; step++) {
        if (rm_train_step(m, opt, x, y, &loss) != XG_OK)
            rc = fail("train");
        if (step == 0)
            loss0 = loss;
    }
    char path[4096], params[4096], buffers[512], l0[32], l1[32];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!rc && xg_module_save(m, path) != XG_OK)
        rc = fail(path);
    names(m, false, params, sizeof params);
    names(m, true, buffers, sizeof buffers);
    snprintf(l0, sizeof l0, "%.9g", (double)loss0);
    snprintf(l1, sizeof l1, "%.9g", (double)loss);
    const char *meta[] = {"params", params, "buffers", buffers,
                          "loss_first", l0, "loss_last", l1, NULL};
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    if (!rc)
        rc = write_io(m, x, path, meta);
    xg_tensor_free(x);
    xg_tensor_free(y);
    xg_optim_free(opt);
    xg_module_free(m);
    return rc;
}

static int forward(const char *model, const char *in, const char *out)
{
    xg_module *m = rm_net_new(99);
    xg_safetensors *st = NULL;
    xg_tensor *x = NULL;
    int rc = m ? 0 : fail("net");
    if (!rc && xg_module_load(m, model) != XG_OK)
        rc = fail(model);
    if (!rc && (xg_safetensors_open(in, &st) != XG_OK ||
                !(x = xg_safetensors_tensor(st, "x"))))
        rc = fail(in);
    if (!rc)
        rc = write_io(m, x, out, NULL);
    xg_tensor_free(x);
    xg_safetensors_close(st);
    xg_module_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc == 3 && strcmp(argv[1], "train") == 0)
        rc = train(argv[2]);
    else if (argc == 5 && strcmp(argv[1], "forward") == 0)
        rc = forward(argv[2], argv[3], argv[4]);
    else
        fprintf(stderr, "usage: modules_export train DIR | forward MODEL IN "
                        "OUT\n");
    xg_shutdown();
    return rc;
}
