/* Modules through the public interface only: the residual network of
 * tests/residual_model.h (user-defined module classes inside a ModuleDict,
 * a ModuleList and a Sequential) trains, saves and reloads; names and
 * their order are PyTorch's; bad calls return errors; freezing and
 * training mode reach into user modules; checkpoints of a user-module tree
 * resume exactly; parameter groups apply weight decay only where asked.
 * tests/modules_torch.py checks the same network against torch.nn. */
#include <unistd.h>

#include "residual_model.h"
#include "test_util.h"

TestSuite(modules, .init = tu_init_scope, .fini = tu_fini_scope);

/* ---- helpers ------------------------------------------------------------- */

static xg_module *net(uint64_t seed)
{
    xg_module *m = rm_net_new(seed);
    cr_assert_not_null(m, "rm_net_new: %s", xg_last_error());
    return m;
}

static xg_module *sub(const xg_module *m, const char *path)
{
    xg_module *s = xg_module_child(m, path);
    cr_assert_not_null(s, "module_child(%s): %s", path, xg_last_error());
    return s;
}

/* The toy batch: x [RM_BATCH, RM_IN] and its labels. */
static void data(xg_tensor **x, xg_tensor **y)
{
    float xv[RM_BATCH * RM_IN];
    int32_t yv[RM_BATCH];
    rm_data(5, xv, yv);
    *x = tu_f32(xv, XG_SHAPE(RM_BATCH, RM_IN));
    *y = tu_i32(yv, XG_SHAPE(RM_BATCH));
}

static float step(xg_module *m, xg_optim *opt, xg_tensor *x, xg_tensor *y)
{
    float loss = NAN;
    xg_status st = rm_train_step(m, opt, x, y, &loss);
    cr_assert_eq(st, XG_OK, "train step: %s", xg_last_error());
    return loss;
}

/* Every parameter value (then every buffer value) of m, concatenated. */
static float *snapshot(const xg_module *m, int64_t *n)
{
    int np = xg_module_param_count(m), nb = xg_module_buffer_count(m);
    int64_t total = 0;
    for (int i = 0; i < np + nb; i++)
        total += xg_tensor_numel(i < np ? xg_module_param(m, i, NULL)
                                        : xg_module_buffer(m, i - np, NULL));
    float *v = malloc((size_t)total * sizeof *v);
    cr_assert_not_null(v);
    int64_t at = 0;
    for (int i = 0; i < np + nb; i++) {
        xg_tensor *t = i < np ? xg_module_param(m, i, NULL)
                              : xg_module_buffer(m, i - np, NULL);
        float *part = tu_read(t);
        memcpy(v + at, part, (size_t)xg_tensor_numel(t) * sizeof *v);
        at += xg_tensor_numel(t);
        free(part);
    }
    *n = total;
    return v;
}

static bool same_tensor_values(const xg_tensor *a, const xg_tensor *b)
{
    int64_t n = xg_tensor_numel(a);
    float *va = tu_read(a), *vb = tu_read(b);
    bool same = n == xg_tensor_numel(b) &&
                memcmp(va, vb, (size_t)n * sizeof *va) == 0;
    free(va);
    free(vb);
    return same;
}

/* A file name of this test process's own. */
static const char *tmp_path(const char *tag)
{
    static char bufs[4][96];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof bufs[0], "/tmp/xg-modules-%d-%s.safetensors",
             (int)getpid(), tag);
    return b;
}

/* ---- training, saving, reloading ------------------------------------------ */

Test(modules, residual_net_trains_saves_and_reloads)
{
    xg_tensor *x, *y;
    data(&x, &y);
    xg_module *m = net(3);
    xg_optim *opt = xg_optim_for_module(m, "adamw", 0.01f);
    cr_assert_not_null(opt, "%s", xg_last_error());
    float first = step(m, opt, x, y), loss = first;
    for (int i = 0; i < 15; i++)
        loss = step(m, opt, x, y);
    cr_assert(loss < 0.7f * first, "loss %g -> %g: did not go down",
              (double)first, (double)loss);

    const float mean[RM_IN] = {0.5f, -0.25f, 0.0f, 1.0f};
    cr_assert_eq(xg_tensor_write(xg_module_find_buffer(m, "in_mean"), mean,
                                 sizeof mean), XG_OK);
    const char *path = tmp_path("model");
    cr_assert_eq(xg_module_save(m, path), XG_OK, "%s", xg_last_error());

    xg_module *fresh = net(77);
    xg_module_set_training(m, false);
    xg_module_set_training(fresh, false);
    xg_tensor *want = xg_module_forward(m, x);
    cr_assert(!same_tensor_values(want, xg_module_forward(fresh, x)),
              "a differently seeded net gives the same outputs");
    cr_assert_eq(xg_module_load(fresh, path), XG_OK, "%s", xg_last_error());
    cr_assert(same_tensor_values(want, xg_module_forward(fresh, x)),
              "the reloaded net gives other outputs");
    int64_t na, nb;
    float *a = snapshot(m, &na), *b = snapshot(fresh, &nb);
    cr_assert(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0,
              "reloaded parameters or buffers differ");
    free(a);
    free(b);
    unlink(path);
    xg_optim_free(opt);
    xg_module_free(fresh);
    xg_module_free(m);
}

/* ---- names -------------------------------------------------------------- */

/* torch's named_parameters() for the same structure (see the comment of
 * tests/residual_model.h; tests/modules_torch.py asks torch itself). */
static const char *const torch_param_names[] = {
    "logit_scale",
    "transformer.inp.weight", "transformer.inp.bias",
    "transformer.h.0.fc1.weight", "transformer.h.0.fc1.bias",
    "transformer.h.0.fc2.weight", "transformer.h.0.fc2.bias",
    "transformer.h.1.fc1.weight", "transformer.h.1.fc1.bias",
    "transformer.h.1.fc2.weight", "transformer.h.1.fc2.bias",
    "head.out.weight", "head.out.bias",
};

Test(modules, names_and_order_are_torchs)
{
    xg_module *m = net(1);
    int n = (int)(sizeof torch_param_names / sizeof *torch_param_names);
    cr_assert_eq(xg_module_param_count(m), n);
    for (int i = 0; i < n; i++) {
        const char *name = NULL;
        xg_tensor *p = xg_module_param(m, i, &name);
        cr_assert_not_null(p);
        cr_assert_str_eq(name, torch_param_names[i], "parameter %d", i);
        cr_assert_eq(xg_module_find_param(m, name), p, "find_param(%s)",
                     name);
        cr_assert(xg_tensor_requires_grad(p), "%s does not require grad",
                  name);
    }
    const char *name = NULL;
    cr_assert_eq(xg_module_buffer_count(m), 1);
    xg_tensor *mean = xg_module_buffer(m, 0, &name);
    cr_assert_str_eq(name, "in_mean");
    cr_assert_eq(xg_module_find_buffer(m, "in_mean"), mean);
    cr_assert(!xg_tensor_requires_grad(mean));
    tu_assert_shape(xg_module_find_param(m, "transformer.h.1.fc1.weight"),
                    XG_SHAPE(2 * RM_HID, RM_HID), "h.1.fc1.weight");

    /* Children: dotted lookup, order, the containers' own accessors. */
    xg_module *tr = sub(m, "transformer"), *blocks = sub(m, "transformer.h");
    cr_assert_eq(xg_module_child_count(m), 2);
    cr_assert_eq(xg_module_child_at(m, 1, &name), sub(m, "head"));
    cr_assert_str_eq(name, "head");
    cr_assert_eq(xg_module_child(tr, "h"), blocks);
    cr_assert_eq(xg_module_list_len(blocks), 2);
    cr_assert_eq(xg_module_list_get(blocks, 1), sub(m, "transformer.h.1"));
    cr_assert_eq(xg_module_class_of(sub(m, "transformer.h.0")),
                 &rm_block_class);
    cr_assert_str_eq(xg_module_class_of(sub(m, "head.out"))->name, "Linear");
    cr_assert_str_eq(xg_module_class_of(tr)->name, "ModuleDict");
    cr_assert_not_null(xg_module_state(sub(m, "transformer.h.0")));
    cr_assert_null(xg_module_state(m));

    /* The names of a subtree are relative to it. */
    xg_module_param(sub(m, "transformer.h.1"), 2, &name);
    cr_assert_str_eq(name, "fc2.weight");
    xg_module_free(m);
}

/* Embedding: GPT-2's names (transformer.wte.weight, transformer.wpe.weight),
 * weight [num, dim] from N(0, 1) drawn from the thread's generator, forward
 * picks rows, and the state_dict saves and reloads. */
Test(modules, embedding_layer_names_init_and_state_dict)
{
    xg_manual_seed(11);
    xg_module *d = xg_module_dict();
    cr_assert_eq(xg_module_dict_add(d, "wte", xg_embedding_layer(1000, 64)),
                 XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_module_dict_add(d, "wpe", xg_embedding_layer(16, 64)),
                 XG_OK, "%s", xg_last_error());
    const char *name = NULL;
    cr_assert_eq(xg_module_param_count(d), 2);
    xg_tensor *wte = xg_module_param(d, 0, &name);
    cr_assert_str_eq(name, "wte.weight");
    xg_module_param(d, 1, &name);
    cr_assert_str_eq(name, "wpe.weight");
    cr_assert_str_eq(xg_module_class_of(sub(d, "wte"))->name, "Embedding");
    cr_assert_eq(xg_module_buffer_count(d), 0);
    tu_assert_shape(wte, XG_SHAPE(1000, 64), "wte.weight");
    cr_assert(xg_tensor_requires_grad(wte));

    /* N(0, 1): the same draw as xg_rand_normal from the same seed, with
     * the moments of 64000 standard normal values. */
    xg_manual_seed(11);
    xg_tensor *want = xg_rand_normal(XG_SHAPE(1000, 64), 0.0f, 1.0f);
    cr_assert(same_tensor_values(wte, want),
              "weight is not rand_normal(0, 1) from the thread's generator");
    float *v = tu_read(wte);
    double sum = 0, sq = 0;
    for (int i = 0; i < 64000; i++) {
        sum += v[i];
        sq += (double)v[i] * v[i];
    }
    free(v);
    double mean = sum / 64000, var = sq / 64000 - mean * mean;
    cr_expect(fabs(mean) < 0.02 && fabs(var - 1) < 0.03,
              "weight mean %g, variance %g: not N(0, 1)", mean, var);

    /* forward: the rows of the weight, index shape + [dim] */
    xg_tensor *idx = tu_i32((const int32_t[]){7, 999, 7}, XG_SHAPE(3));
    xg_tensor *rows = xg_module_forward(sub(d, "wte"), idx);
    tu_assert_shape(rows, XG_SHAPE(3, 64), "Embedding forward");
    cr_assert(same_tensor_values(
                  xg_narrow(rows, 0, 1, 1),
                  xg_narrow(wte, 0, 999, 1)),
              "row 1 of the output is not weight row 999");

    /* state_dict round trip into a differently seeded module */
    const char *path = tmp_path("embedding");
    cr_assert_eq(xg_module_save(d, path), XG_OK, "%s", xg_last_error());
    xg_manual_seed(12);
    xg_module *e = xg_module_dict();
    cr_assert_eq(xg_module_dict_add(e, "wte", xg_embedding_layer(1000, 64)),
                 XG_OK);
    cr_assert_eq(xg_module_dict_add(e, "wpe", xg_embedding_layer(16, 64)),
                 XG_OK);
    cr_assert(!same_tensor_values(wte, xg_module_find_param(e, "wte.weight")));
    cr_assert_eq(xg_module_load(e, path), XG_OK, "%s", xg_last_error());
    int64_t na, nb;
    float *a = snapshot(d, &na), *b = snapshot(e, &nb);
    cr_assert(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0,
              "reloaded embedding weights differ");
    free(a);
    free(b);
    unlink(path);
    xg_module_free(e);
    xg_module_free(d);
}

Test(modules, containers_keep_insertion_order)
{
    xg_module *d = xg_module_dict();
    cr_assert_eq(xg_module_dict_add(d, "zeta", xg_tanh_layer()), XG_OK);
    cr_assert_eq(xg_module_dict_add(d, "alpha", xg_linear(2, 3, false)),
                 XG_OK);
    cr_assert_eq(xg_module_dict_add(d, "mid", xg_linear(3, 1, true)), XG_OK);
    const char *want[] = {"zeta", "alpha", "mid"}, *name = NULL;
    for (int i = 0; i < 3; i++) {
        cr_assert_not_null(xg_module_child_at(d, i, &name));
        cr_assert_str_eq(name, want[i]);
    }
    const char *params[] = {"alpha.weight", "mid.weight", "mid.bias"};
    cr_assert_eq(xg_module_param_count(d), 3);
    for (int i = 0; i < 3; i++) {
        xg_module_param(d, i, &name);
        cr_assert_str_eq(name, params[i]);
    }
    /* Sequential still names unnamed children by index. */
    xg_module *s = xg_sequential();
    cr_assert_eq(xg_sequential_add(s, NULL, xg_linear(2, 2, true)), XG_OK);
    cr_assert_eq(xg_sequential_add(s, "act", xg_relu_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(s, NULL, xg_linear(2, 1, true)), XG_OK);
    xg_module_param(s, 2, &name);
    cr_assert_str_eq(name, "2.weight");
    xg_module_free(s);
    xg_module_free(d);
}

/* A user module whose forward is the identity, and whose state counts its
 * releases. */
static int identity_frees;

static xg_tensor *identity_forward(xg_module *self, xg_tensor *x)
{
    (void)self;
    return x;
}

static void identity_free(void *state)
{
    (void)state;
    identity_frees++;
}

static const xg_module_class identity_class = {
    .name = "Identity", .forward = identity_forward,
    .free_state = identity_free};

Test(modules, user_state_and_identity_forward)
{
    identity_frees = 0;
    int token = 42;
    xg_module *m = xg_module_new(&identity_class, &token);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_module_state(m), &token);
    xg_tensor *x = tu_rand(XG_SHAPE(2, 3), 1, -1, 1);
    xg_tensor *y = xg_module_forward(m, x);
    cr_assert(y && y != x, "the identity must come back as a new handle");
    xg_tensor_free(y); /* x stays valid */
    float *v = tu_read(x);
    free(v);
    xg_module_free(m);
    cr_assert_eq(identity_frees, 1);

    /* The state is released when making the module fails, too. */
    static const xg_module_class nameless = {.free_state = identity_free};
    cr_assert_null(xg_module_new(&nameless, &token));
    tu_assert_error(XG_ERR_INVALID_ARG, "name", "module_new, no name");
    cr_assert_eq(identity_frees, 2);
}

/* ---- errors ------------------------------------------------------------- */

/* The call returned `got`; the thread's error must say `want`, mentioning
 * `needle`. */
static void expect_error(xg_status got, xg_status want, const char *needle,
                         const char *what)
{
    cr_assert_eq(got, want, "%s: returned %s", what, xg_status_str(got));
    tu_assert_error(want, needle, what);
    xg_clear_error();
}

Test(modules, bad_names_are_errors)
{
    const xg_status IA = XG_ERR_INVALID_ARG;
    xg_module *m = xg_module_new(&rm_net_class, NULL);
    cr_assert_not_null(m);
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    const char *bad[] = {"", "a.b", "has space", "caf\xc3\xa9", long_name};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        expect_error(xg_module_add_param(m, bad[i], xg_zeros(XG_SHAPE(2))),
                     IA, "name", bad[i]);
        expect_error(xg_module_add_child(m, bad[i], xg_relu_layer()), IA,
                     "name", bad[i]);
    }
    expect_error(xg_module_add_param(m, NULL, xg_zeros(XG_SHAPE(2))), IA,
                 "NULL", "param name NULL");
    expect_error(xg_module_add_child(m, NULL, xg_relu_layer()), IA, "NULL",
                 "child name NULL");

    /* One name per module, across parameters, buffers and children. */
    cr_assert_eq(xg_module_add_param(m, "w", xg_zeros(XG_SHAPE(2))), XG_OK);
    expect_error(xg_module_add_param(m, "w", xg_zeros(XG_SHAPE(2))), IA,
                 "'w'", "duplicate parameter");
    expect_error(xg_module_add_buffer(m, "w", xg_zeros(XG_SHAPE(2))), IA,
                 "'w'", "buffer named as a parameter");
    expect_error(xg_module_add_child(m, "w", xg_relu_layer()), IA, "'w'",
                 "child named as a parameter");
    cr_assert_eq(xg_module_add_child(m, "c", xg_relu_layer()), XG_OK);
    expect_error(xg_module_add_param(m, "c", xg_zeros(XG_SHAPE(2))), IA,
                 "'c'", "parameter named as a child");
    /* ... but the same name in two modules is fine. */
    cr_assert_eq(xg_module_add_child(m, "d", xg_linear(2, 2, true)), XG_OK);
    cr_assert_eq(xg_module_param_count(m), 3);
    xg_module_free(m);
}

Test(modules, bad_registrations_are_errors)
{
    const xg_status IA = XG_ERR_INVALID_ARG;
    xg_module *m = xg_module_new(&rm_net_class, NULL);
    cr_assert_not_null(m);
    xg_tensor *w = xg_zeros(XG_SHAPE(3));
    cr_assert_eq(xg_module_add_param(m, "w", w), XG_OK);

    expect_error(xg_module_add_param(NULL, "w", xg_zeros(XG_SHAPE(2))), IA,
                 "NULL", "NULL module");
    expect_error(xg_module_add_buffer(NULL, "b", xg_zeros(XG_SHAPE(2))), IA,
                 "NULL", "NULL module (buffer)");
    expect_error(xg_module_add_param(m, "x", NULL), IA, "NULL",
                 "NULL tensor");
    /* A NULL tensor keeps the error that made it. */
    expect_error(xg_module_add_param(m, "x", xg_zeros(XG_SHAPE(2, 0))),
                 XG_ERR_SHAPE, NULL, "failed tensor");
    expect_error(xg_module_add_param(m, "w2", w), IA, "already registered",
                 "the same tensor twice");
    cr_assert_eq(xg_module_find_param(m, "w"), w, "w was freed or moved");
    int32_t ints[2] = {1, 2};
    expect_error(xg_module_add_param(m, "i", tu_i32(ints, XG_SHAPE(2))),
                 XG_ERR_DTYPE, "f32", "an i32 parameter");
    xg_tensor *leaf = tu_param(tu_rand(XG_SHAPE(2), 2, -1, 1));
    expect_error(xg_module_add_param(m, "y", xg_mul_scalar(leaf, 2.0f)), IA,
                 "leaf", "a computed tensor");
    cr_assert_eq(xg_module_param_count(m), 1);
    cr_assert_eq(xg_module_buffer_count(m), 0);

    expect_error(xg_module_add_child(NULL, "c", xg_relu_layer()), IA, "NULL",
                 "NULL parent");
    expect_error(xg_module_add_child(m, "c", NULL), IA, "NULL",
                 "NULL child");
    expect_error(xg_module_add_child(m, "c", xg_linear(0, 1, true)), IA,
                 "linear", "failed child keeps its error");
    cr_assert_null(xg_module_new(NULL, NULL));
    tu_assert_error(IA, "NULL", "module_new(NULL)");
    xg_module_free(m);
}

Test(modules, tree_misuse_is_an_error)
{
    const xg_status IA = XG_ERR_INVALID_ARG;
    xg_module *a = net(1), *b = net(2);
    xg_module *block = sub(a, "transformer.h.0");
    /* A child that has a parent stays where it is. */
    expect_error(xg_module_add_child(b, "stolen", block), IA,
                 "already has a parent", "adopting a child");
    cr_assert_eq(sub(a, "transformer.h.0"), block);
    expect_error(xg_module_add_child(a, "self", a), IA, "own child",
                 "itself");
    expect_error(xg_module_add_child(block, "loop", a), IA, "cycle",
                 "an ancestor");
    xg_module_free(block);
    tu_assert_error(XG_ERR_STATE, "root", "freeing a child");
    xg_clear_error();
    cr_assert_eq(xg_module_param_count(a), 13, "the tree lost a part");

    /* Containers check their kind and their names. */
    xg_module *list = xg_module_list(), *dict = xg_module_dict();
    expect_error(xg_module_add_child(list, "first", xg_relu_layer()), IA,
                 "'0'", "a named ModuleList entry");
    cr_assert_eq(xg_module_add_child(list, "0", xg_relu_layer()), XG_OK);
    expect_error(xg_module_list_append(dict, xg_relu_layer()), IA,
                 "ModuleDict", "list_append to a dict");
    expect_error(xg_module_dict_add(list, "a", xg_relu_layer()), IA,
                 "ModuleList", "dict_add to a list");
    expect_error(xg_sequential_add(dict, "a", xg_relu_layer()), IA,
                 "Sequential", "sequential_add to a dict");
    cr_assert_eq(xg_module_dict_add(dict, "a", xg_relu_layer()), XG_OK);
    expect_error(xg_module_dict_add(dict, "a", xg_relu_layer()), IA, "'a'",
                 "duplicate dict key");
    cr_assert_null(xg_module_list_get(list, 1));
    tu_assert_error(IA, "index 1", "list_get out of range");
    cr_assert_null(xg_module_list_get(dict, 0));
    tu_assert_error(IA, "ModuleList", "list_get on a dict");
    cr_assert_eq(xg_module_list_len(dict), -1);
    cr_assert_null(xg_module_child_at(dict, 1, NULL));
    tu_assert_error(IA, NULL, "child_at out of range");

    /* Lookups and forward. */
    xg_tensor *x = tu_rand(XG_SHAPE(2, RM_IN), 3, -1, 1);
    cr_assert_null(xg_module_forward(list, x));
    tu_assert_error(IA, "no forward", "forward on a ModuleList");
    cr_assert_null(xg_module_forward(NULL, x));
    tu_assert_error(IA, "NULL", "forward on NULL");
    cr_assert_null(xg_module_child(a, "transformer.h.7"));
    tu_assert_error(XG_ERR_NOT_FOUND, "'7'", "missing child");
    cr_assert_null(xg_module_child(a, NULL));
    tu_assert_error(IA, NULL, "child path NULL");
    cr_assert_null(xg_module_find_param(a, "transformer.inp.gain"));
    tu_assert_error(XG_ERR_NOT_FOUND, "gain", "missing parameter");
    cr_assert_null(xg_module_find_param(a, "head.nope.weight"));
    tu_assert_error(XG_ERR_NOT_FOUND, "nope", "missing submodule");
    cr_assert_null(xg_module_find_buffer(a, "logit_scale"));
    tu_assert_error(XG_ERR_NOT_FOUND, "buffer", "a parameter as buffer");
    cr_assert_not_null(xg_module_forward(a, x), "%s", xg_last_error());
    xg_module_free(list);
    xg_module_free(dict);
    xg_module_free(a);
    xg_module_free(b);
}

/* ---- freezing and training mode ------------------------------------------ */

Test(modules, freezing_a_submodule)
{
    xg_tensor *x, *y;
    data(&x, &y);
    xg_module *m = net(4);
    xg_module *frozen = sub(m, "transformer.h.0");
    xg_optim *opt = xg_optim_for_module(m, "adam", 0.01f);
    xg_module_set_frozen(frozen, true);
    for (int i = 0; i < xg_module_param_count(m); i++) {
        const char *name = NULL;
        xg_tensor *p = xg_module_param(m, i, &name);
        bool in_frozen = strncmp(name, "transformer.h.0.", 16) == 0;
        cr_assert_eq(xg_tensor_requires_grad(p), !in_frozen, "%s", name);
    }
    int64_t n0, n1;
    float *before = snapshot(frozen, &n0);
    float *all_before = snapshot(m, &n1);
    for (int i = 0; i < 3; i++)
        step(m, opt, x, y);
    int64_t k;
    float *after = snapshot(frozen, &k);
    cr_assert(k == n0 && memcmp(before, after, (size_t)k * sizeof *after) == 0,
              "a frozen parameter moved");
    free(after);
    float *all_after = snapshot(m, &k);
    cr_assert_eq(k, n1);
    int64_t changed = 0;
    for (int64_t i = 0; i < k; i++)
        changed += all_after[i] != all_before[i];
    cr_assert_gt(changed, k / 2, "only %lld of %lld values trained",
                 (long long)changed, (long long)k);
    free(all_after);

    xg_module_set_frozen(frozen, false);
    cr_assert(xg_tensor_requires_grad(
        xg_module_find_param(m, "transformer.h.0.fc2.bias")));
    step(m, opt, x, y);
    after = snapshot(frozen, &k);
    cr_assert(memcmp(before, after, (size_t)k * sizeof *after) != 0,
              "an unfrozen parameter did not train");
    free(after);
    free(before);
    free(all_before);
    xg_optim_free(opt);
    xg_module_free(m);
}

static void assert_mode(const xg_module *m, const char *path, bool training)
{
    cr_assert_eq(xg_module_training(path ? sub(m, path) : m), training,
                 "%s: training is %d", path ? path : "root", !training);
}

Test(modules, training_mode_reaches_user_modules)
{
    xg_module *m = net(5);
    rm_block_state *b0 = xg_module_state(sub(m, "transformer.h.0"));
    rm_block_state *b1 = xg_module_state(sub(m, "transformer.h.1"));
    const char *paths[] = {NULL, "transformer", "transformer.h",
                           "transformer.h.0", "transformer.h.1.fc2",
                           "head", "head.out"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
        assert_mode(m, paths[i], true);
    cr_assert_eq(b0->hook_calls, 0);

    xg_tensor *x = tu_rand(XG_SHAPE(2, RM_IN), 3, -1, 1);
    xg_module_set_training(m, false);
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++)
        assert_mode(m, paths[i], false);
    cr_assert(b0->hook_calls == 1 && !b0->hook_training);
    cr_assert(b1->hook_calls == 1 && !b1->hook_training);
    cr_assert_not_null(xg_module_forward(m, x));
    cr_assert(b0->eval_forwards == 1 && b0->train_forwards == 0);

    xg_module_set_training(m, true);
    cr_assert(b1->hook_calls == 2 && b1->hook_training);
    cr_assert_not_null(xg_module_forward(m, x));
    cr_assert(b1->train_forwards == 1 && b1->eval_forwards == 1);

    /* One subtree alone. */
    xg_module_set_training(sub(m, "transformer.h.1"), false);
    assert_mode(m, "transformer.h.1.fc1", false);
    assert_mode(m, "transformer.h.0", true);
    assert_mode(m, NULL, true);

    /* A new child takes its parent's mode. */
    xg_module *blocks = sub(m, "transformer.h");
    xg_module_set_training(blocks, false);
    cr_assert_eq(xg_module_list_append(blocks, rm_block_new(RM_HID)), XG_OK);
    rm_block_state *b2 = xg_module_state(sub(m, "transformer.h.2"));
    assert_mode(m, "transformer.h.2.fc1", false);
    cr_assert(b2->hook_calls == 1 && !b2->hook_training);
    xg_module_free(m);
}

/* ---- parameter groups and checkpoints ------------------------------------- */

/* AdamW over m: matrices in group 0 with weight decay 0.1, vectors (biases,
 * logit_scale) in group 1 without, as GPT-2 training splits them. */
static xg_optim *grouped_adamw(xg_module *m)
{
    int n = xg_module_param_count(m), nd = 0, nn = 0;
    xg_tensor **decay = calloc((size_t)n, sizeof *decay);
    xg_tensor **no_decay = calloc((size_t)n, sizeof *no_decay);
    cr_assert(decay && no_decay);
    for (int i = 0; i < n; i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        if (xg_tensor_ndim(p) >= 2)
            decay[nd++] = p;
        else
            no_decay[nn++] = p;
    }
    xg_adam_options o = xg_adamw_defaults();
    o.lr = 0.01f;
    o.weight_decay = 0.1f;
    xg_optim *opt = xg_optim_adamw(decay, nd, &o);
    cr_assert_not_null(opt, "%s", xg_last_error());
    cr_assert_eq(xg_optim_add_group(opt, no_decay, nn, 0.0f), XG_OK, "%s",
                 xg_last_error());
    free(decay);
    free(no_decay);
    return opt;
}

Test(modules, checkpoint_of_a_user_module_tree_resumes_exactly)
{
    xg_tensor *x, *y;
    data(&x, &y);
    xg_module *m = net(6);
    xg_module_set_frozen(sub(m, "transformer.inp"), true);
    xg_optim *opt = grouped_adamw(m);
    for (int i = 0; i < 3; i++)
        step(m, opt, x, y);
    const char *path = tmp_path("ckpt");
    xg_train_state state = {.epoch = 1, .step = 3, .rng_seed = 9};
    cr_assert_eq(xg_checkpoint_save(path, m, opt, &state, NULL), XG_OK, "%s",
                 xg_last_error());
    for (int i = 0; i < 3; i++)
        step(m, opt, x, y);
    int64_t n, k;
    float *want = snapshot(m, &n);

    /* A fresh tree and optimizer built the same way continue identically. */
    xg_module *r = net(60);
    xg_module_set_frozen(sub(r, "transformer.inp"), true);
    xg_optim *ropt = grouped_adamw(r);
    xg_train_state got = {0};
    cr_assert_eq(xg_checkpoint_load(path, r, ropt, &got), XG_OK, "%s",
                 xg_last_error());
    cr_assert(got.epoch == 1 && got.step == 3 && got.rng_seed == 9);
    cr_assert_eq(xg_optim_steps(ropt), 3);
    for (int i = 0; i < 3; i++)
        step(r, ropt, x, y);
    float *resumed = snapshot(r, &k);
    cr_assert(k == n && memcmp(want, resumed, (size_t)n * sizeof *want) == 0,
              "the resumed run differs from the uninterrupted one");

    /* The file records the groups by parameter name... */
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    const char *groups = xg_safetensors_metadata(st, "param_groups");
    cr_assert(groups && strstr(groups, "\"params\":[\"logit_scale\","),
              "param_groups: %s", groups ? groups : "(none)");
    xg_safetensors_close(st);
    /* ... and refuses an optimizer with other groups, changing nothing. */
    xg_module *o = net(61);
    xg_optim *oopt = xg_optim_for_module(o, "adamw", 0.01f);
    float *o_before = snapshot(o, &k);
    cr_assert_eq(xg_checkpoint_load(path, o, oopt, NULL),
                 XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "groups", "other groups");
    float *o_after = snapshot(o, &k);
    cr_assert(memcmp(o_before, o_after, (size_t)k * sizeof *o_after) == 0,
              "a refused checkpoint changed the module");
    free(o_before);
    free(o_after);
    free(want);
    free(resumed);
    unlink(path);
    xg_optim_free(oopt);
    xg_optim_free(ropt);
    xg_optim_free(opt);
    xg_module_free(o);
    xg_module_free(r);
    xg_module_free(m);
}

Test(modules, param_groups_decay_only_where_asked)
{
    /* Linear(2, 2): weight with weight decay 0.1, bias without. */
    const float w0[4] = {0.5f, -1.0f, 2.0f, 0.25f}, b0[2] = {1.0f, -2.0f};
    xg_module *lin = xg_linear(2, 2, true);
    xg_tensor *w = xg_module_find_param(lin, "weight");
    xg_tensor *b = xg_module_find_param(lin, "bias");
    cr_assert_eq(xg_tensor_write(w, w0, sizeof w0), XG_OK);
    cr_assert_eq(xg_tensor_write(b, b0, sizeof b0), XG_OK);
    xg_adam_options o = xg_adamw_defaults();
    o.lr = 0.1f;
    o.weight_decay = 0.1f;
    xg_optim *opt = xg_optim_adamw(&w, 1, &o);
    cr_assert_eq(xg_optim_add_group(opt, &b, 1, 0.0f), XG_OK);

    const float xv[6] = {1, 2, -1, 0.5f, 3, -2}, tv[6] = {0, 1, 1, 0, -1, 2};
    xg_tensor *x = tu_f32(xv, XG_SHAPE(3, 2)), *t = tu_f32(tv, XG_SHAPE(3, 2));
    cr_assert_eq(xg_backward(xg_mse_loss(xg_module_forward(lin, x), t)),
                 XG_OK);
    float *gw = tu_read(xg_tensor_grad(w)), *gb = tu_read(xg_tensor_grad(b));
    cr_assert_eq(xg_optim_step(opt), XG_OK, "%s", xg_last_error());

    /* torch.optim.AdamW, step 1: m = (1-b1) g, v = (1-b2) g^2, so
     * m_hat = g and v_hat = g^2; p <- p (1 - lr wd) - lr g / (|g| + eps). */
    double ww[4], wb[2];
    for (int i = 0; i < 4; i++)
        ww[i] = w0[i] * (1.0 - 0.1 * 0.1) -
                0.1 * gw[i] / (fabs((double)gw[i]) + 1e-8);
    for (int i = 0; i < 2; i++)
        wb[i] = b0[i] - 0.1 * gb[i] / (fabs((double)gb[i]) + 1e-8);
    tu_assert_values(w, XG_SHAPE(2, 2), ww, 1e-6, 1e-6, "decayed weight");
    tu_assert_values(b, XG_SHAPE(2), wb, 1e-6, 1e-6, "bias without decay");
    free(gw);
    free(gb);

    /* Bad groups change nothing. */
    const xg_status IA = XG_ERR_INVALID_ARG;
    expect_error(xg_optim_add_group(opt, &b, 1, 0.0f), IA,
                 "already in the optimizer", "a parameter twice");
    xg_tensor *extra = tu_param(tu_rand(XG_SHAPE(2), 7, -1, 1));
    xg_tensor *twice[2] = {extra, extra};
    expect_error(xg_optim_add_group(opt, twice, 2, 0.0f), IA, "twice",
                 "listed twice");
    expect_error(xg_optim_add_group(opt, &extra, 1, -1.0f), IA,
                 "weight_decay", "negative weight decay");
    expect_error(xg_optim_add_group(opt, NULL, 1, 0.0f), IA, NULL,
                 "NULL list");
    expect_error(xg_optim_add_group(NULL, &extra, 1, 0.0f), IA, "NULL",
                 "NULL optimizer");
    cr_assert_eq(xg_optim_step(opt), XG_OK, "%s", xg_last_error());
    xg_optim_free(opt);
    xg_module_free(lin);
}

/* Trees are at most XG_MODULE_MAX_DEPTH levels deep, whichever way they are
 * built (a chain grown downwards, or a deep tree put under another), so
 * walking them cannot exhaust the stack. */
Test(modules, depth_is_bounded)
{
    xg_module *root = xg_sequential(), *leaf = root;
    for (int level = 2; level <= XG_MODULE_MAX_DEPTH; level++) {
        xg_module *next = xg_sequential();
        cr_assert_eq(xg_sequential_add(leaf, "s", next), XG_OK,
                     "level %d: %s", level, xg_last_error());
        leaf = next;
    }
    cr_assert_eq(xg_sequential_add(leaf, "fc", xg_linear(2, 2, true)),
                 XG_ERR_INVALID_ARG, "a level past the bound");
    cr_expect(strstr(xg_last_error(), "XG_MODULE_MAX_DEPTH") != NULL, "%s",
              xg_last_error());
    cr_assert_eq(xg_module_child_count(leaf), 0, "the tree is unchanged");
    /* The whole chain under one more parent is refused too (and freed, as
     * any child an add refuses that belongs to no tree). */
    xg_module *top = xg_sequential();
    cr_assert_eq(xg_sequential_add(top, "chain", root), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_module_child_count(top), 0);
    xg_module_free(top);
}

Test(modules, layer_norm_layer_params_forward_and_gradients)
{
    /* LayerNorm(5): weight ones and bias zeros, as torch.nn.LayerNorm;
     * without affine, none. Its forward is xg_layer_norm with them, and
     * backward reaches both (tests/layer_norm_torch.py checks the values
     * and state_dicts against PyTorch). */
    xg_module *m = xg_layer_norm_layer(5, 1e-5f, true, true);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_str_eq(xg_module_class_of(m)->name, "LayerNorm");
    cr_assert_eq(xg_module_param_count(m), 2);
    const char *name = NULL;
    xg_tensor *w = xg_module_param(m, 0, &name);
    cr_assert_str_eq(name, "weight");
    tu_assert_values(w, XG_SHAPE(5), (const double[]){1, 1, 1, 1, 1}, 0, 0,
                     "weight");
    xg_tensor *b = xg_module_param(m, 1, &name);
    cr_assert_str_eq(name, "bias");
    tu_assert_values(b, XG_SHAPE(5), (const double[]){0, 0, 0, 0, 0}, 0, 0,
                     "bias");

    float xv[10];
    tu_fill(xv, 10, 31, -2, 2);
    xg_tensor *x = tu_f32(xv, XG_SHAPE(2, 5));
    xg_tensor *y = xg_module_forward(m, x);
    cr_assert_not_null(y, "%s", xg_last_error());
    float *want = tu_read(xg_layer_norm(x, NULL, NULL, 1e-5f));
    double wd[10];
    for (int i = 0; i < 10; i++)
        wd[i] = want[i];
    free(want);
    tu_assert_values(y, XG_SHAPE(2, 5), wd, 0, 0, "LayerNorm forward");
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(y, y))), XG_OK, "%s",
                 xg_last_error());
    cr_assert_not_null(xg_tensor_grad(w), "weight has no gradient");
    cr_assert_not_null(xg_tensor_grad(b), "bias has no gradient");
    xg_module_free(m);

    m = xg_layer_norm_layer(5, 1e-5f, false, true);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_module_param_count(m), 0, "affine false: no parameters");
    xg_module_free(m);
    m = xg_layer_norm_layer(5, 1e-5f, true, false);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_module_param_count(m), 1, "bias false: weight only");
    xg_module_free(m);
}
