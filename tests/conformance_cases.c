/* Kernel-level conformance cases: data tables per op family.
 *
 * Every op of api/core/ops.def gets the cases of its FAMILY (sizes,
 * broadcast patterns, transposes...), with the element types its row
 * declares, instantiated for f32. What else differs between ops of one
 * family (input domains, tolerances) is in op_props[], indexed by op; an op
 * with no entry gets the defaults, so a new line in ops.def is tested
 * without new code here. */
#include "conformance.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- per-op properties ----------------------------------------------------- */

typedef struct conf_op_props {
    conf_domain in_domain[XG_KERNEL_MAX_IN];
    double tol;         /* nMSE bound; 0 means CONF_NMSE_TOL */
    bool per_row_out;   /* ROWS: out[0] holds one value per row */
    bool labels;        /* ROWS: in[1] are class labels (invalid-label case) */
    bool no_special;    /* UNARY/SCALAR: skip the special-values case */
    bool exact;         /* f32 outputs must equal the CPU's bit for bit */
} conf_op_props;

/* Zero-initialised entries are the defaults: inputs uniform in [-3, 3), the
 * global tolerance. */
static const conf_op_props op_props[XG_OP_COUNT] = {
    [XG_OP_log] = {.in_domain = {DOM_POSITIVE}},
    [XG_OP_sqrt] = {.in_domain = {DOM_POSITIVE}},
    [XG_OP_div] = {.in_domain = {DOM_SIGNED, DOM_NONZERO}},
    [XG_OP_same_value] = {.in_domain = {DOM_TIES, DOM_TIES}, .exact = true},
    [XG_OP_max] = {.in_domain = {DOM_DISTINCT}},
    [XG_OP_argmax] = {.in_domain = {DOM_DISTINCT}},
    [XG_OP_max_backward] = {.in_domain = {DOM_SIGNED, DOM_CLASS}},
    [XG_OP_cross_entropy] = {.in_domain = {DOM_SIGNED, DOM_CLASS},
                             .per_row_out = true, .labels = true},
    [XG_OP_cross_entropy_backward] = {
        .in_domain = {DOM_SIGNED, DOM_CLASS, DOM_SIGNED}, .labels = true},
    [XG_OP_max_pool2d] = {.in_domain = {DOM_DISTINCT}},
    [XG_OP_max_pool2d_backward] = {.in_domain = {DOM_SIGNED, DOM_POOL_INDEX}},
    [XG_OP_index_select] = {.in_domain = {DOM_SIGNED, DOM_CLASS}, .exact = true},
    [XG_OP_index_select_backward] = {.in_domain = {DOM_SIGNED, DOM_CLASS},
                                     .exact = true},
    [XG_OP_gather] = {.in_domain = {DOM_SIGNED, DOM_CLASS}, .exact = true},
    [XG_OP_gather_backward] = {.in_domain = {DOM_SIGNED, DOM_CLASS},
                               .exact = true},
    [XG_OP_where] = {.exact = true},
    /* the column sums run in one fixed order on every backend */
    [XG_OP_layer_norm_backward_affine] = {.exact = true},
    [XG_OP_masked_fill] = {.exact = true},
    [XG_OP_cast] = {.in_domain = {DOM_SPECIAL}, .exact = true},
};

_Static_assert(sizeof op_props / sizeof op_props[0] == XG_OP_COUNT,
               "op_props must have one entry per op of ops.def");

static const conf_op_props *props_of(xg_op op) { return &op_props[op]; }

static double tol_of(xg_op op)
{
    return op_props[op].tol > 0 ? op_props[op].tol : CONF_NMSE_TOL;
}

/* ---- building cases -------------------------------------------------------- */

static conf_case *add_case(conf_case_list *list, xg_op op, const char *fmt,
                           ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static conf_case *add_case(conf_case_list *list, xg_op op, const char *fmt,
                           ...)
{
    if (list->n == list->cap) {
        int cap = list->cap ? list->cap * 2 : 64;
        conf_case *v = realloc(list->v, (size_t)cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "conformance: out of host memory\n");
            abort();
        }
        list->v = v;
        list->cap = cap;
    }
    conf_case *c = &list->v[list->n++];
    memset(c, 0, sizeof *c);
    c->call.op = op;
    c->tol = tol_of(op);
    c->exact = op_props[op].exact;
    va_list ap;
    va_start(ap, fmt);
    int len = snprintf(c->desc, sizeof c->desc, "%s ", xg_op_table[op].name);
    vsnprintf(c->desc + len, sizeof c->desc - (size_t)len, fmt, ap);
    va_end(ap);
    return c;
}

/* Inputs 0..n_in-1 of the op with `count` elements and the op's types and
 * domains; outputs likewise. */
static void set_ins(conf_case *c, int64_t count)
{
    const conf_op_props *p = props_of(c->call.op);
    const xg_op_info *info = &xg_op_table[c->call.op];
    for (int i = 0; i < info->n_in; i++)
        c->in[i] = (conf_buf){count, xg_op_rule_dtype(info->in_rule[i], XG_F32),
                              p->in_domain[i], 0};
}

static void set_outs(conf_case *c, int64_t count)
{
    const xg_op_info *info = &xg_op_table[c->call.op];
    for (int i = 0; i < info->n_out; i++)
        c->out[i] = (conf_buf){count,
                               xg_op_rule_dtype(info->out_rule[i], XG_F32),
                               DOM_ZERO, 0};
}

static void add_poison_f(conf_case *c, int buf, int64_t at, float v)
{
    assert(c->n_poison < CONF_MAX_POISON);
    c->poison[c->n_poison++] = (conf_poison){buf, at, v, 0};
}

static void add_poison_i(conf_case *c, int buf, int64_t at, int32_t v)
{
    assert(c->n_poison < CONF_MAX_POISON);
    c->poison[c->n_poison++] = (conf_poison){buf, at, 0, v};
}

/* Elementwise sizes: 1, odd, just over one work-group of 256, several
 * groups, and one past 2^24 elements (more than 65535 groups of 256: the
 * usual limit of one dispatch dimension). */
#define CONF_HUGE_N ((int64_t)(1 << 24) + 5)
static const int64_t ew_sizes[] = {1, 3, 17, 257, 4099, 65537};
/* Rows longer than 65535 x 256: see gen_reduce and gen_rows. */
#define CONF_LONG_DIM ((int64_t)16777000)
#define CONF_LONG_COLS ((int64_t)9000000)

/* ---- UNARY, UNARY_BACKWARD, SCALAR ----------------------------------------- */

static void gen_unary(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof ew_sizes / sizeof ew_sizes[0]; i++) {
        conf_case *c = add_case(l, op, "n=%" PRId64, ew_sizes[i]);
        c->call.p.ew.n = ew_sizes[i];
        set_ins(c, ew_sizes[i]);
        set_outs(c, ew_sizes[i]);
    }
    conf_case *c = add_case(l, op, "n=%" PRId64 " (huge)", CONF_HUGE_N);
    c->call.p.ew.n = CONF_HUGE_N;
    set_ins(c, CONF_HUGE_N);
    set_outs(c, CONF_HUGE_N);
    if (!props_of(op)->no_special) {
        c = add_case(l, op, "n=61 special values (0, -0, +-Inf, NaN, ...)");
        c->call.p.ew.n = 61;
        set_ins(c, 61);
        set_outs(c, 61);
        c->in[0].domain = DOM_SPECIAL;
    }
}

static void gen_unary_backward(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof ew_sizes / sizeof ew_sizes[0]; i++) {
        conf_case *c = add_case(l, op, "n=%" PRId64, ew_sizes[i]);
        c->call.p.ew.n = ew_sizes[i];
        set_ins(c, ew_sizes[i]);
        set_outs(c, ew_sizes[i]);
    }
}

static void gen_scalar(xg_op op, conf_case_list *l)
{
    static const float scalars[] = {1.5f, -0.375f};
    for (size_t i = 0; i < sizeof ew_sizes / sizeof ew_sizes[0]; i++) {
        float s = scalars[i % 2];
        conf_case *c = add_case(l, op, "n=%" PRId64 " scalar=%g", ew_sizes[i],
                                (double)s);
        c->call.p.ew.n = ew_sizes[i];
        c->call.p.ew.scalar = s;
        set_ins(c, ew_sizes[i]);
        set_outs(c, ew_sizes[i]);
    }
    if (!props_of(op)->no_special) {
        conf_case *c = add_case(l, op, "n=61 scalar=-2.5 special values");
        c->call.p.ew.n = 61;
        c->call.p.ew.scalar = -2.5f;
        set_ins(c, 61);
        set_outs(c, 61);
        c->in[0].domain = DOM_SPECIAL;
    }
}

/* ---- BINARY ---------------------------------------------------------------- */

typedef struct binary_shape {
    const char *what;
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    int64_t sa[XG_MAX_DIMS], sb[XG_MAX_DIMS];
} binary_shape;

static const binary_shape binary_shapes[] = {
    {"same shape", 1, {1}, {1}, {1}},
    {"same shape", 1, {3}, {1}, {1}},
    {"same shape", 1, {17}, {1}, {1}},
    {"same shape", 1, {257}, {1}, {1}},
    {"same shape", 1, {65537}, {1}, {1}},
    {"scalar b", 1, {257}, {1}, {0}},
    {"scalar a", 1, {17}, {0}, {1}},
    {"row broadcast b[33]", 2, {17, 33}, {33, 1}, {0, 1}},
    {"column broadcast b[17,1]", 2, {17, 33}, {33, 1}, {1, 0}},
    {"outer a[17,1] b[1,33]", 2, {17, 33}, {1, 0}, {0, 1}},
    {"transposed a", 2, {5, 7}, {1, 5}, {7, 1}},
    {"4-D a[2,3,4,5] b[2,1,4,1]", 4, {2, 3, 4, 5}, {60, 20, 5, 1},
     {4, 0, 1, 0}},
    {"4-D a[1,3,1,5] b[2,1,4,5]", 4, {2, 3, 4, 5}, {0, 5, 0, 1},
     {20, 0, 5, 1}},
    {"6-D mixed", 6, {2, 1, 3, 2, 3, 2}, {36, 36, 12, 6, 2, 1},
     {0, 0, 2, 0, 1, 0}},
};

static int64_t strided_count(int ndim, const int64_t *shape,
                             const int64_t *stride)
{
    int64_t last = 0;
    for (int k = 0; k < ndim; k++)
        last += (shape[k] - 1) * stride[k];
    return last + 1;
}

static void gen_binary(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof binary_shapes / sizeof binary_shapes[0];
         i++) {
        const binary_shape *s = &binary_shapes[i];
        char dims[96] = "";
        for (int k = 0, len = 0; k < s->ndim; k++)
            len += snprintf(dims + len, sizeof dims - (size_t)len, "%s%" PRId64,
                            k ? "," : "", s->shape[k]);
        conf_case *c = add_case(l, op, "%s out=[%s]", s->what, dims);
        xg_binary_args *b = &c->call.p.binary;
        b->ndim = s->ndim;
        b->n = 1;
        for (int k = 0; k < s->ndim; k++) {
            b->shape[k] = s->shape[k];
            b->stride_a[k] = s->sa[k];
            b->stride_b[k] = s->sb[k];
            b->n *= s->shape[k];
        }
        set_ins(c, 0);
        c->in[0].count = strided_count(s->ndim, s->shape, s->sa);
        c->in[1].count = strided_count(s->ndim, s->shape, s->sb);
        set_outs(c, b->n);
    }
}

/* ---- REDUCE, REDUCE_BACKWARD ----------------------------------------------- */

static const int64_t reduce_shapes[][3] = {
    {1, 1, 1},  {1, 3, 1},   {1, 17, 1},   {1, 257, 1}, {7, 1, 1},
    {1, 1, 9},  {3, 1, 5},   {5, 33, 1},   {1, 33, 7},  {3, 17, 5},
    {2, 1000, 3}, {1, 65537, 1}, {300, 7, 3},
};

static void set_reduce(conf_case *c, const int64_t *s)
{
    c->call.p.reduce = (xg_reduce_args){s[0], s[1], s[2]};
}

static void gen_reduce(xg_op op, conf_case_list *l)
{
    size_t n = sizeof reduce_shapes / sizeof reduce_shapes[0];
    for (size_t i = 0; i < n; i++) {
        const int64_t *s = reduce_shapes[i];
        conf_case *c = add_case(l, op, "outer=%" PRId64 " dim=%" PRId64
                                " inner=%" PRId64, s[0], s[1], s[2]);
        set_reduce(c, s);
        set_ins(c, s[0] * s[1] * s[2]);
        set_outs(c, s[0] * s[2]);
    }
    /* A NaN in the middle of one reduced row, off the first position. */
    static const int64_t s[3] = {3, 17, 5};
    conf_case *c = add_case(l, op, "outer=3 dim=17 inner=5 with a NaN at "
                            "[1,6,2]");
    set_reduce(c, s);
    set_ins(c, 3 * 17 * 5);
    set_outs(c, 3 * 5);
    add_poison_f(c, 0, (1 * 17 + 6) * 5 + 2, NAN);
    /* Many equal values: max/argmax must return the first index. */
    static const int64_t t[3] = {3, 257, 5};
    c = add_case(l, op, "outer=3 dim=257 inner=5 with ties");
    set_reduce(c, t);
    set_ins(c, 3 * 257 * 5);
    set_outs(c, 3 * 5);
    c->in[0].domain = DOM_TIES;
    /* One very long row with a unique maximum near its start. A kernel
     * that gives each invocation dim/256 loop trips silently loses lanes
     * on lavapipe, which ends every shader loop after 65535 iterations in
     * total (Mesa's LP_MAX_TGSI_LOOP_ITERATIONS). */
    c = add_case(l, op, "outer=1 dim=%" PRId64 " inner=1 (long row, ties, "
                 "max 7 at 5)", CONF_LONG_DIM);
    set_reduce(c, (const int64_t[3]){1, CONF_LONG_DIM, 1});
    set_ins(c, CONF_LONG_DIM);
    set_outs(c, 1);
    c->in[0].domain = DOM_TIES;
    add_poison_f(c, 0, 5, 7.0f);
}

static void gen_reduce_backward(xg_op op, conf_case_list *l)
{
    size_t n = sizeof reduce_shapes / sizeof reduce_shapes[0];
    for (size_t i = 0; i < n; i++) {
        const int64_t *s = reduce_shapes[i];
        conf_case *c = add_case(l, op, "outer=%" PRId64 " dim=%" PRId64
                                " inner=%" PRId64, s[0], s[1], s[2]);
        set_reduce(c, s);
        set_ins(c, s[0] * s[2]);
        for (int k = 0; k < XG_KERNEL_MAX_IN; k++)
            c->in[k].classes = (int32_t)s[1];
        set_outs(c, s[0] * s[1] * s[2]);
    }
}

/* ---- ROWS ------------------------------------------------------------------ */

static const int64_t rows_shapes[][2] = {
    {1, 1}, {17, 1}, {1, 10}, {3, 10}, {64, 10}, {3, 1000}, {2, 4099},
};

/* in[0] is [rows, cols]; further inputs (labels, g) have one value per row.
 * out[0] is [rows, cols], or [rows] for per-row ops. */
static conf_case *rows_case(xg_op op, conf_case_list *l, int64_t rows,
                            int64_t cols, const char *extra)
{
    conf_case *c = add_case(l, op, "rows=%" PRId64 " cols=%" PRId64 "%s",
                            rows, cols, extra);
    c->call.p.rows = (xg_rows_args){rows, cols, XG_IGNORE_INDEX};
    set_ins(c, rows);
    c->in[0].count = rows * cols;
    for (int k = 0; k < XG_KERNEL_MAX_IN; k++)
        c->in[k].classes = (int32_t)cols;
    set_outs(c, props_of(op)->per_row_out ? rows : rows * cols);
    return c;
}

/* cross_entropy's ignore_index (struct xg_rows_args): ignored rows give
 * loss 0, counted 0 and dx 0 on every backend, whatever g holds. */
static void gen_rows_ignored(xg_op op, conf_case_list *l)
{
    int64_t len = props_of(op)->per_row_out ? 1 : 10;
    /* The default, -100, in rows 0 and 2. */
    conf_case *c = rows_case(op, l, 4, 10, " label -100 ignored in rows 0, 2");
    add_poison_i(c, 1, 0, XG_IGNORE_INDEX);
    add_poison_i(c, 1, 2, XG_IGNORE_INDEX);
    /* A class as ignore_index: about a tenth of the random labels; -100
     * is then an invalid label like any other (NaN in row 5). */
    c = rows_case(op, l, 64, 10, " ignore_index 3, label -100 in row 5");
    c->call.p.rows.ignore_index = 3;
    add_poison_i(c, 1, 5, XG_IGNORE_INDEX);
    c->nan_rows[0] = 5;
    c->n_nan_rows = 1;
    c->nan_row_len = len;
    /* Every row ignored: one class only, and both rows poisoned. */
    c = rows_case(op, l, 17, 1, " ignore_index 0: every row ignored");
    c->call.p.rows.ignore_index = 0;
    c = rows_case(op, l, 2, 10, " ignore_index 7 in every row");
    c->call.p.rows.ignore_index = 7;
    add_poison_i(c, 1, 0, 7);
    add_poison_i(c, 1, 1, 7);
}

static void gen_rows(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof rows_shapes / sizeof rows_shapes[0]; i++)
        rows_case(op, l, rows_shapes[i][0], rows_shapes[i][1], "");
    conf_case *c = rows_case(op, l, 5, 10, " logits in [-80, 80)");
    c->in[0].domain = DOM_WIDE;
    /* One long row: 2-3 passes of cols/256 loop trips per invocation
     * exceed lavapipe's 65535-iteration shader loop budget (gen_reduce). */
    rows_case(op, l, 1, CONF_LONG_COLS, " (long row)");
    if (props_of(op)->labels) {
        /* Labels cols and -1 in rows 1 and 3: NaN in exactly those rows. */
        c = rows_case(op, l, 4, 10, " invalid labels 10 and -1 in rows 1, 3");
        add_poison_i(c, 1, 1, 10);
        add_poison_i(c, 1, 3, -1);
        c->nan_rows[0] = 1;
        c->nan_rows[1] = 3;
        c->n_nan_rows = 2;
        c->nan_row_len = props_of(op)->per_row_out ? 1 : 10;
        gen_rows_ignored(op, l);
    }
}

/* ---- GEMM ------------------------------------------------------------------ */

static void gemm_case(xg_op op, conf_case_list *l, xg_gemm_args g,
                      const char *what)
{
    conf_case *c = add_case(l, op, "%strans_a=%d trans_b=%d m=%" PRId64
                            " n=%" PRId64 " k=%" PRId64 " batch=%" PRId64
                            " stride_a=%" PRId64 " stride_b=%" PRId64
                            " alpha=%g", what, g.trans_a, g.trans_b, g.m, g.n,
                            g.k, g.batch, g.stride_a, g.stride_b,
                            (double)g.alpha);
    g.stride_c = g.m * g.n;
    c->call.p.gemm = g;
    set_ins(c, 0);
    c->in[0].count = (g.batch - 1) * g.stride_a + g.m * g.k;
    c->in[1].count = (g.batch - 1) * g.stride_b + g.k * g.n;
    set_outs(c, g.batch * g.stride_c);
}

static void gen_gemm(xg_op op, conf_case_list *l)
{
    static const int64_t sizes[] = {1, 3, 17, 65};
    const int ns = sizeof sizes / sizeof sizes[0];
    for (int t = 0; t < 4; t++)
        for (int im = 0; im < ns; im++)
            for (int in = 0; in < ns; in++)
                for (int ik = 0; ik < ns; ik++) {
                    int64_t m = sizes[im], n = sizes[in], k = sizes[ik];
                    xg_gemm_args g = {1, m, n, k, m * k, k * n, 0, t & 1,
                                      t >> 1, 1.0f};
                    gemm_case(op, l, g, "");
                }
    /* Batched, with stride-0 broadcast of one operand, and alpha. */
    static const struct {
        int64_t batch, m, n, k;
        int bcast_a, bcast_b, ta, tb;
        float alpha;
    } batched[] = {
        {3, 17, 3, 65, 0, 0, 0, 0, 1.0f},  {4, 17, 5, 9, 1, 0, 0, 0, 1.0f},
        {4, 3, 17, 65, 0, 1, 0, 0, 0.5f},  {2, 65, 17, 3, 0, 1, 1, 1, 1.0f},
        {5, 9, 17, 3, 1, 0, 1, 0, -2.0f},  {3, 1, 65, 17, 0, 0, 0, 1, 1.0f},
    };
    for (size_t i = 0; i < sizeof batched / sizeof batched[0]; i++) {
        xg_gemm_args g = {batched[i].batch, batched[i].m, batched[i].n,
                          batched[i].k, 0, 0, 0, batched[i].ta, batched[i].tb,
                          batched[i].alpha};
        g.stride_a = batched[i].bcast_a ? 0 : g.m * g.k;
        g.stride_b = batched[i].bcast_b ? 0 : g.k * g.n;
        gemm_case(op, l, g, "batched ");
    }
    xg_gemm_args big = {1, 512, 512, 512, 512 * 512, 512 * 512, 0, 0, 0, 1.0f};
    gemm_case(op, l, big, "large ");
    big.trans_a = big.trans_b = 1;
    big.m = 257;
    big.n = 129;
    big.k = 300;
    big.stride_a = big.m * big.k;
    big.stride_b = big.k * big.n;
    gemm_case(op, l, big, "large ");
}

/* ---- STRIDED --------------------------------------------------------------- */

/* Permutations of a row-major input gathered into a contiguous output (what
 * a permuted view's contiguous copy is). */
static const struct {
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    int perm[XG_MAX_DIMS];
} permute_cases[] = {
    {1, {17}, {0}},
    {2, {3, 17}, {1, 0}},
    {2, {1, 5}, {1, 0}},
    {2, {65, 33}, {1, 0}},
    {3, {2, 3, 4}, {2, 0, 1}},
    {3, {2, 3, 4}, {1, 2, 0}},
    {3, {17, 33, 5}, {0, 2, 1}},
    {4, {2, 3, 5, 7}, {3, 1, 0, 2}},
    {4, {2, 3, 5, 7}, {0, 1, 3, 2}},
    {4, {8, 16, 9, 5}, {0, 2, 3, 1}},
    {6, {2, 1, 3, 2, 1, 4}, {5, 3, 1, 0, 2, 4}},
};

/* One copy_strided case: index space `shape`, input and output strides
 * and offsets; the buffers are sized to the largest element addressed. */
static void strided_case(xg_op op, conf_case_list *l, const char *what,
                         int nd, const int64_t *shape, const int64_t *is,
                         int64_t io, const int64_t *os, int64_t oo,
                         bool scatter)
{
    conf_case *c = add_case(l, op, "%s", what);
    xg_strided_args *p = &c->call.p.strided;
    int64_t n = 1, in_last = io, out_last = oo;
    p->ndim = nd;
    for (int k = 0; k < nd; k++) {
        p->shape[k] = shape[k];
        p->in_stride[k] = is[k];
        p->out_stride[k] = os[k];
        n *= shape[k];
        in_last += (shape[k] - 1) * is[k];
        out_last += (shape[k] - 1) * os[k];
    }
    p->n = n;
    p->in_offset = io;
    p->out_offset = oo;
    set_ins(c, in_last + 1);
    set_outs(c, out_last + 1 + (scatter ? 5 : 0));
    if (scatter) /* the elements not addressed must keep these values */
        c->out[0].domain = DOM_SIGNED;
}

static void gen_strided(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof permute_cases / sizeof permute_cases[0];
         i++) {
        int nd = permute_cases[i].ndim;
        int64_t rm[XG_MAX_DIMS], shape[XG_MAX_DIMS], is[XG_MAX_DIMS],
            os[XG_MAX_DIMS];
        int64_t step = 1;
        for (int k = nd - 1; k >= 0; k--) {
            rm[k] = step;
            step *= permute_cases[i].shape[k];
        }
        for (int k = 0; k < nd; k++) {
            shape[k] = permute_cases[i].shape[permute_cases[i].perm[k]];
            is[k] = rm[permute_cases[i].perm[k]];
        }
        step = 1;
        for (int k = nd - 1; k >= 0; k--) {
            os[k] = step;
            step *= shape[k];
        }
        char desc[128];
        int len = snprintf(desc, sizeof desc, "permute ndim=%d case %zu", nd,
                           i);
        (void)len;
        strided_case(op, l, desc, nd, shape, is, 0, os, 0, false);
    }
    /* A narrow view (offset, rows of a wider matrix) made contiguous. */
    strided_case(op, l, "narrow rows 3..9 cols 5..37 of [12,50]", 2,
                 (const int64_t[]){7, 33}, (const int64_t[]){50, 1},
                 3 * 50 + 5, (const int64_t[]){33, 1}, 0, false);
    /* A broadcast (stride-0) input, as an expanded view. */
    strided_case(op, l, "expand [1,17] to [9,17]", 2,
                 (const int64_t[]){9, 17}, (const int64_t[]){0, 1}, 4,
                 (const int64_t[]){17, 1}, 0, false);
    /* A piece written into its slot of a larger output (concat, the
     * backward of narrow and select). */
    strided_case(op, l, "scatter [5,3,7] into axis 1 of [5,8,7] at 4", 3,
                 (const int64_t[]){5, 3, 7}, (const int64_t[]){21, 7, 1}, 0,
                 (const int64_t[]){56, 7, 1}, 4 * 7, true);
    strided_case(op, l, "transposed scatter, large", 2,
                 (const int64_t[]){300, 257}, (const int64_t[]){1, 300}, 11,
                 (const int64_t[]){600, 1}, 3, true);
}

/* ---- FILL (fill, copy) ----------------------------------------------------- */

static void gen_fill(xg_op op, conf_case_list *l)
{
    static const float values[] = {2.5f, -0.0f, 1e-3f};
    for (size_t i = 0; i < sizeof ew_sizes / sizeof ew_sizes[0]; i++) {
        float v = values[i % 3];
        conf_case *c = add_case(l, op, "n=%" PRId64 " value=%g", ew_sizes[i],
                                (double)v);
        c->call.p.fill = (xg_fill_args){ew_sizes[i], v};
        set_ins(c, ew_sizes[i]);
        set_outs(c, ew_sizes[i]);
    }
    conf_case *c = add_case(l, op, "n=%" PRId64 " (huge) value=-7",
                            CONF_HUGE_N);
    c->call.p.fill = (xg_fill_args){CONF_HUGE_N, -7.0f};
    set_ins(c, CONF_HUGE_N);
    set_outs(c, CONF_HUGE_N);
}

/* ---- casts ------------------------------------------------------------------ */

/* f32 -> f32 here (a copy); the 16-bit pairs are added by the runner from
 * what the backends support. */
static void gen_cast(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof ew_sizes / sizeof ew_sizes[0]; i++) {
        conf_case *c = add_case(l, op, "n=%" PRId64, ew_sizes[i]);
        c->call.p.cast = (xg_cast_args){ew_sizes[i]};
        set_ins(c, ew_sizes[i]);
        set_outs(c, ew_sizes[i]);
    }
}

/* ---- RNG ------------------------------------------------------------------- */

static void gen_rng(xg_op op, conf_case_list *l)
{
    /* Offsets that start mid-block, and that carry into the counter's high
     * word; seeds with both key words set. */
    static const struct {
        int64_t n;
        uint64_t seed, offset;
        float a, b;
    } cases[] = {
        {1, 0, 0, 0.0f, 1.0f},
        {3, 42, 7, -2.0f, 3.0f},
        {17, 0x0123456789abcdefULL, 0xfffffffeULL, 0.5f, 2.0f},
        {257, 7, (uint64_t)1 << 40, 0.0f, 1.0f},
        {4099, 0xffffffffffffffffULL, 123, -1.0f, 1.0f},
        {65537, 1234, 99999, 1.0f, 0.25f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_case *c = add_case(l, op, "n=%" PRId64 " seed=0x%" PRIx64
                                " offset=0x%" PRIx64 " a=%g b=%g", cases[i].n,
                                cases[i].seed, cases[i].offset,
                                (double)cases[i].a, (double)cases[i].b);
        c->call.p.rng = (xg_rng_args){cases[i].n, cases[i].seed,
                                      cases[i].offset, cases[i].a, cases[i].b};
        set_outs(c, cases[i].n);
    }
}

/* ---- ADAM, SGD --------------------------------------------------------------- */

/* Learning rates are large so that the update is a visible part of the
 * parameter: an error in the update then moves the nMSE of out[0]. */
static void gen_adam(xg_op op, conf_case_list *l)
{
    static const struct {
        int t;
        float wd;
        int decoupled;
    } cfg[] = {{1, 0, 0}, {10, 0, 0}, {3, 0.05f, 0}, {7, 0.05f, 1}};
    static const int64_t sizes[] = {1, 17, 4099};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            int64_t n = sizes[s];
            conf_case *c = add_case(l, op, "n=%" PRId64 " step=%d "
                                    "weight_decay=%g decoupled=%d", n,
                                    cfg[i].t, (double)cfg[i].wd,
                                    cfg[i].decoupled);
            xg_adam_args *a = &c->call.p.adam;
            *a = (xg_adam_args){n, 0.25f, 0.9f, 0.999f, 1e-8f, cfg[i].wd,
                                0, 0, cfg[i].decoupled};
            a->bias1 = 1.0f - powf(a->beta1, (float)cfg[i].t);
            a->bias2 = 1.0f - powf(a->beta2, (float)cfg[i].t);
            set_ins(c, n);
            set_outs(c, n);
            c->out_has_state = true;
            c->out[0].domain = DOM_SIGNED;
            bool first = cfg[i].t == 1;
            c->out[1].domain = first ? DOM_ZERO : DOM_SMALL;
            c->out[2].domain = first ? DOM_ZERO : DOM_POSITIVE;
        }
}

static void gen_sgd(xg_op op, conf_case_list *l)
{
    static const struct {
        float momentum, dampening, wd;
        int nesterov, first;
    } cfg[] = {
        {0, 0, 0, 0, 1},        {0, 0, 0.05f, 0, 0},  {0.9f, 0, 0, 0, 1},
        {0.9f, 0, 0, 0, 0},     {0.9f, 0.1f, 0, 0, 0}, {0.9f, 0, 0, 1, 1},
        {0.9f, 0, 0.05f, 1, 0},
    };
    static const int64_t sizes[] = {1, 17, 4099};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            int64_t n = sizes[s];
            conf_case *c = add_case(l, op, "n=%" PRId64 " momentum=%g "
                                    "dampening=%g weight_decay=%g nesterov=%d "
                                    "first=%d", n, (double)cfg[i].momentum,
                                    (double)cfg[i].dampening,
                                    (double)cfg[i].wd, cfg[i].nesterov,
                                    cfg[i].first);
            c->call.p.sgd = (xg_sgd_args){n, 0.5f, cfg[i].momentum,
                                          cfg[i].dampening, cfg[i].wd,
                                          cfg[i].nesterov, cfg[i].first};
            set_ins(c, n);
            set_outs(c, n);
            c->out_has_state = true;
            c->out[0].domain = DOM_SIGNED;
            /* The momentum buffer: absent without momentum, stale garbage
             * on the first step (it must be overwritten), else state. */
            if (cfg[i].momentum == 0)
                c->out[1].count = 0;
            else
                c->out[1].domain = DOM_SIGNED;
        }
}

/* ---- convolution, pooling, dropout ------------------------------------------ */

/* n, c_in, h, w, c_out, k, stride, pad, dilation, groups: a single pixel,
 * strides, padding, dilation, groups (also 1x1 and depthwise), a kernel as
 * large as the padded image, and the MNIST network's shapes (batch cut).
 * The last two have GEMMs deeper than lavapipe's 65535-trip loop budget
 * covers in one go (about 95k terms): a 320x320 output plane (the depth of
 * the weight gradient's GEMM) and c_in * kh * kw = 98,304 (the depth of the
 * forward's and the input gradient's). */
static const int conv_shapes[][10] = {
    {1, 1, 5, 5, 1, 3, 1, 0, 1, 1},   {2, 3, 7, 7, 4, 3, 2, 1, 1, 1},
    {3, 4, 9, 8, 6, 3, 1, 1, 2, 2},   {2, 6, 5, 7, 6, 1, 1, 0, 1, 3},
    {1, 4, 6, 6, 4, 3, 1, 1, 1, 4},   {1, 3, 5, 5, 2, 5, 1, 2, 1, 1},
    {4, 1, 28, 28, 32, 3, 1, 0, 1, 1}, {2, 32, 26, 26, 64, 3, 1, 0, 1, 1},
    {1, 1, 320, 320, 1, 1, 1, 0, 1, 1}, {1, 1536, 8, 8, 2, 8, 1, 0, 1, 1},
};

static void gen_conv(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof conv_shapes / sizeof conv_shapes[0]; i++) {
        const int *s = conv_shapes[i];
        int k = s[5], st = s[6], pad = s[7], dil = s[8], g = s[9];
        xg_conv_args a = {.n = s[0], .c_in = s[1], .h = s[2], .w = s[3],
                          .c_out = s[4], .kh = k, .kw = k, .stride_h = st,
                          .stride_w = st, .pad_h = pad, .pad_w = pad,
                          .dil_h = dil, .dil_w = dil, .groups = g};
        a.oh = (a.h + 2 * pad - dil * (k - 1) - 1) / st + 1;
        a.ow = (a.w + 2 * pad - dil * (k - 1) - 1) / st + 1;
        conf_case *c = add_case(l, op, "x=[%d,%d,%d,%d] c_out=%d k=%d "
                                "stride=%d pad=%d dil=%d groups=%d", s[0],
                                s[1], s[2], s[3], s[4], k, st, pad, dil, g);
        c->call.p.conv = a;
        int64_t nx = a.n * a.c_in * a.h * a.w;
        int64_t nw = a.c_out * (a.c_in / g) * k * k;
        int64_t ny = a.n * a.c_out * a.oh * a.ow;
        int64_t in0 = op == XG_OP_conv2d_backward_input ? ny : nx;
        int64_t in1 = op == XG_OP_conv2d_backward_weight ? ny : nw;
        bool forward = op == XG_OP_conv2d || op == XG_OP_conv2d_bias ||
                       op == XG_OP_conv2d_bias_relu;
        int64_t out = forward                             ? ny
                      : op == XG_OP_conv2d_backward_input ? nx
                                                          : nw;
        set_ins(c, in0);
        c->in[1].count = in1;
        if (op == XG_OP_conv2d_bias || op == XG_OP_conv2d_bias_relu)
            c->in[2].count = a.c_out;
        set_outs(c, out);
    }
}

/* n, c, h, w, kernel, stride, pad: non-overlapping, overlapping and padded
 * windows, a 1x1 image, and the MNIST pooling (batch cut). */
static const int pool_shapes[][7] = {
    {1, 1, 4, 4, 2, 2, 0}, {2, 3, 7, 7, 3, 2, 1}, {2, 2, 5, 6, 2, 1, 0},
    {3, 2, 9, 9, 3, 3, 1}, {1, 1, 1, 1, 1, 1, 0}, {2, 64, 24, 24, 2, 2, 0},
};

static void gen_pool(xg_op op, conf_case_list *l)
{
    bool backward = op == XG_OP_max_pool2d_backward ||
                    op == XG_OP_avg_pool2d_backward;
    for (size_t i = 0; i < sizeof pool_shapes / sizeof pool_shapes[0]; i++) {
        const int *s = pool_shapes[i];
        xg_pool_args a = {.n = s[0], .c = s[1], .h = s[2], .w = s[3],
                          .kh = s[4], .kw = s[4], .stride_h = s[5],
                          .stride_w = s[5], .pad_h = s[6], .pad_w = s[6]};
        a.oh = (a.h + 2 * a.pad_h - a.kh) / a.stride_h + 1;
        a.ow = (a.w + 2 * a.pad_w - a.kw) / a.stride_w + 1;
        for (int ties = 0; ties <= (op == XG_OP_max_pool2d); ties++) {
            conf_case *c = add_case(l, op, "x=[%d,%d,%d,%d] k=%d stride=%d "
                                    "pad=%d%s", s[0], s[1], s[2], s[3], s[4],
                                    s[5], s[6], ties ? " ties" : "");
            c->call.p.pool = a;
            int64_t nx = a.n * a.c * a.h * a.w, ny = a.n * a.c * a.oh * a.ow;
            set_ins(c, backward ? ny : nx);
            c->in[1].pool = a;
            if (ties)
                c->in[0].domain = DOM_TIES;
            set_outs(c, backward ? nx : ny);
        }
    }
}

static void gen_dropout(xg_op op, conf_case_list *l)
{
    static const struct {
        int64_t n;
        uint64_t seed, offset;
        float p;
    } cases[] = {
        {1, 0, 0, 0.5f},         {3, 42, 7, 0.25f},
        {17, 5, 0xfffffffeULL, 0.9f}, {257, 7, (uint64_t)1 << 40, 0.0f},
        {4099, 0xffffffffffffffffULL, 123, 0.5f}, {65537, 1234, 99999, 0.1f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_case *c = add_case(l, op, "n=%" PRId64 " seed=0x%" PRIx64
                                " offset=0x%" PRIx64 " p=%g", cases[i].n,
                                cases[i].seed, cases[i].offset,
                                (double)cases[i].p);
        c->call.p.dropout = (xg_dropout_args){cases[i].n, cases[i].seed,
                                              cases[i].offset, cases[i].p};
        set_ins(c, cases[i].n);
        set_outs(c, cases[i].n);
    }
}

/* ---- INDEX ------------------------------------------------------------------ */

/* x's shape, the axis and the selection's shape (index_select: x's with
 * the axis resized; gather: the index's shape). Indices are drawn in [0,
 * x's size along the axis), with many repeats; the cases include size-1
 * and unmerged axes, a gather index smaller than x off the axis, more
 * lines and elements than one work-group holds, and an axis longer than
 * two of the Vulkan backward's chunks (XG_INDEX_CHUNK, 65536). */
typedef struct index_shape {
    int ndim, axis;
    int64_t x[XG_MAX_DIMS], sel[XG_MAX_DIMS];
} index_shape;

static const index_shape index_select_shapes[] = {
    {1, 0, {5}, {3}},
    {2, 0, {7, 3}, {17, 3}},
    {3, 1, {4, 5, 6}, {4, 9, 6}},
    {3, 2, {4, 5, 6}, {4, 5, 1}},
    {6, 3, {2, 1, 3, 4, 1, 5}, {2, 1, 3, 7, 1, 5}},
    {3, 1, {3, 300, 37}, {3, 2001, 37}},
    {2, 1, {70000, 3}, {70000, 5}},
    {2, 0, {5, 2}, {131077, 2}},
};

static const index_shape gather_shapes[] = {
    {1, 0, {5}, {9}},
    {2, 1, {4, 5}, {4, 7}},
    {2, 0, {4, 5}, {3, 2}},
    {3, 2, {3, 4, 5}, {2, 3, 8}},
    {4, 1, {2, 3, 4, 5}, {2, 6, 4, 5}},
    {6, 4, {2, 3, 1, 4, 2, 3}, {2, 2, 1, 3, 5, 3}},
    {3, 1, {65, 40, 33}, {65, 100, 33}},
    {2, 1, {2, 4}, {2, 131077}},
};

static void index_case(xg_op op, conf_case_list *l, const index_shape *s,
                       bool gather)
{
    char xs[96] = "", ss[96] = "";
    int64_t nx = 1, nsel = 1, stride = 1;
    for (int k = 0, a = 0, b = 0; k < s->ndim; k++) {
        a += snprintf(xs + a, sizeof xs - (size_t)a, "%s%" PRId64,
                      k ? "," : "", s->x[k]);
        b += snprintf(ss + b, sizeof ss - (size_t)b, "%s%" PRId64,
                      k ? "," : "", s->sel[k]);
        nx *= s->x[k];
        nsel *= s->sel[k];
    }
    conf_case *c = add_case(l, op, "x=[%s] axis=%d selection=[%s]", xs,
                            s->axis, ss);
    xg_index_args *p = &c->call.p.index;
    p->ndim = s->ndim;
    p->axis = s->axis;
    for (int k = s->ndim - 1; k >= 0; k--) {
        p->x_shape[k] = s->x[k];
        p->shape[k] = s->sel[k];
        p->index_stride[k] = gather ? stride : k == s->axis;
        stride *= s->sel[k];
    }
    bool backward = op == XG_OP_index_select_backward ||
                    op == XG_OP_gather_backward;
    p->n = backward ? nx : nsel;
    set_ins(c, backward ? nsel : nx);
    c->in[1].count = gather ? nsel : s->sel[s->axis];
    c->in[1].classes = (int32_t)s->x[s->axis];
    set_outs(c, p->n);
}

static void gen_index(xg_op op, conf_case_list *l)
{
    bool gather = op == XG_OP_gather || op == XG_OP_gather_backward;
    const index_shape *v = gather ? gather_shapes : index_select_shapes;
    size_t n = gather ? sizeof gather_shapes / sizeof gather_shapes[0]
                      : sizeof index_select_shapes /
                            sizeof index_select_shapes[0];
    for (size_t i = 0; i < n; i++)
        index_case(op, l, &v[i], gather);
}

/* ---- WHERE ------------------------------------------------------------------ */

/* The output shape and the strides of a, b and cond (masked_fill: x reads
 * as a, the mask as cond). Masks are 0/1 with a -7 and a 2 written in,
 * which must count as true. */
typedef struct where_shape {
    const char *what;
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    int64_t s[3][XG_MAX_DIMS];
} where_shape;

static const where_shape where_shapes[] = {
    {"same shape", 1, {1}, {{1}, {1}, {1}}},
    {"same shape", 1, {17}, {{1}, {1}, {1}}},
    {"same shape", 1, {65537}, {{1}, {1}, {1}}},
    {"scalar b", 1, {257}, {{1}, {0}, {1}}},
    {"scalar cond", 1, {33}, {{1}, {1}, {0}}},
    {"cond row [33]", 2, {17, 33}, {{33, 1}, {33, 1}, {0, 1}}},
    {"cond column [17,1]", 2, {17, 33}, {{33, 1}, {33, 1}, {1, 0}}},
    {"a[17,1] b[1,33] cond[17,33]", 2, {17, 33}, {{1, 0}, {0, 1}, {33, 1}}},
    {"transposed a", 2, {5, 7}, {{1, 5}, {7, 1}, {7, 1}}},
    {"4-D a[2,3,4,5] b[1,3,1,5] cond[2,1,4,1]", 4, {2, 3, 4, 5},
     {{60, 20, 5, 1}, {0, 5, 0, 1}, {4, 0, 1, 0}}},
    {"6-D mixed", 6, {2, 1, 3, 2, 3, 2},
     {{36, 36, 12, 6, 2, 1}, {0, 0, 2, 0, 1, 0}, {6, 6, 2, 1, 0, 0}}},
};

static void where_case(xg_op op, conf_case_list *l, const where_shape *s,
                       float value)
{
    bool where = op == XG_OP_where;
    char dims[96] = "";
    for (int k = 0, len = 0; k < s->ndim; k++)
        len += snprintf(dims + len, sizeof dims - (size_t)len, "%s%" PRId64,
                        k ? "," : "", s->shape[k]);
    char val[32] = "";
    if (!where)
        snprintf(val, sizeof val, " value=%g", (double)value);
    conf_case *c = add_case(l, op, "%s out=[%s]%s", s->what, dims, val);
    xg_where_args *p = &c->call.p.where;
    p->ndim = s->ndim;
    p->n = 1;
    p->value = value;
    for (int k = 0; k < s->ndim; k++) {
        p->shape[k] = s->shape[k];
        p->n *= s->shape[k];
    }
    /* in[] in ops.def order: where (a, b, cond), masked_fill (x, mask) */
    const int from[3] = {0, where ? 1 : 2, 2};
    set_ins(c, 0);
    for (int i = 0; i < xg_op_table[op].n_in; i++) {
        memcpy(p->stride[i], s->s[from[i]], sizeof p->stride[i]);
        c->in[i].count = strided_count(s->ndim, s->shape, s->s[from[i]]);
    }
    int m = where ? 2 : 1;
    c->in[m].domain = DOM_CLASS;
    c->in[m].classes = 2;
    if (c->in[m].count > 5) {
        add_poison_i(c, m, 3, -7);
        add_poison_i(c, m, 5, 2);
    }
    set_outs(c, p->n);
}

static void gen_where(xg_op op, conf_case_list *l)
{
    for (size_t i = 0; i < sizeof where_shapes / sizeof where_shapes[0]; i++)
        where_case(op, l, &where_shapes[i], i % 2 ? -1.5f : -0.0f);
    where_shape huge = {"same shape (huge)", 1, {CONF_HUGE_N}, {{1}, {1}, {1}}};
    where_case(op, l, &huge, 4.0f);
    /* NaN and Inf in the data: the unselected side must not leak. */
    where_shape special = {"special values", 1, {61}, {{1}, {1}, {1}}};
    where_case(op, l, &special, 2.0f);
    l->v[l->n - 1].in[0].domain = DOM_SPECIAL;
    if (op == XG_OP_where)
        l->v[l->n - 1].in[1].domain = DOM_SPECIAL;
}

/* ---- ATTENTION -------------------------------------------------------------- */

/* Heads, lengths and head sizes: one of everything, D = 1, 5, 64 and 128,
 * lengths that are not multiples of any tile (7, 65, 130), a KV cache
 * (offset Tk - Tq), rows that see no key (a negative offset), dropout (the
 * mask bits must be the CPU's; an offset whose low word carries), and more
 * rows than one dispatch has workgroups (72000 query or key rows). The
 * backward kernels get random lse and delta (any values must give the same
 * results) with -inf written into two lse entries: those rows get no
 * gradient. */
static void gen_attention(xg_op op, conf_case_list *l)
{
    static const struct {
        int64_t bh, tq, tk, d;
        int causal;
        int64_t off;
        float p, scale;
        uint64_t seed, offset;
    } cases[] = {
        {1, 1, 1, 1, 1, 0, 0.0f, 1.0f, 0, 0},
        {3, 7, 7, 5, 1, 0, 0.0f, 0.4472136f, 0, 0},
        {2, 7, 7, 5, 0, 0, 0.0f, 0.4472136f, 0, 0},
        {3, 7, 7, 1, 1, 0, 0.0f, 1.0f, 0, 0},
        {2, 65, 65, 64, 1, 0, 0.0f, 0.125f, 0, 0},
        {2, 130, 130, 32, 0, 0, 0.0f, 0.1767767f, 0, 0},
        {1, 17, 17, 128, 1, 0, 0.0f, 0.0883883f, 0, 0},
        {2, 7, 20, 8, 1, 13, 0.0f, 0.3535534f, 0, 0},
        {2, 9, 9, 4, 1, -3, 0.0f, 0.5f, 0, 0},
        {2, 33, 40, 16, 1, 7, 0.3f, 0.25f, 42, 7},
        {1, 65, 65, 64, 0, 0, 0.1f, 0.125f, 0xffffffffffffffffULL,
         0xfffffff0ULL},
        {1, 130, 130, 32, 1, 0, 0.5f, 0.1767767f, 1234, (uint64_t)1 << 40},
        {600, 120, 5, 2, 0, 0, 0.0f, 0.7f, 0, 0},
        {600, 5, 120, 2, 1, 115, 0.2f, 0.7f, 9, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conf_case *c = add_case(l, op, "bh=%" PRId64 " tq=%" PRId64 " tk=%"
                                PRId64 " d=%" PRId64 " causal=%d offset=%"
                                PRId64 " p=%g", cases[i].bh, cases[i].tq,
                                cases[i].tk, cases[i].d, cases[i].causal,
                                cases[i].off, (double)cases[i].p);
        c->call.p.attention = (xg_attention_args){
            cases[i].bh, cases[i].tq, cases[i].tk, cases[i].d,
            cases[i].scale, cases[i].causal, cases[i].off, cases[i].p,
            cases[i].seed, cases[i].offset};
        int64_t nq = cases[i].bh * cases[i].tq * cases[i].d;
        int64_t nk = cases[i].bh * cases[i].tk * cases[i].d;
        int64_t rows = cases[i].bh * cases[i].tq;
        set_ins(c, nq);
        c->in[1].count = c->in[2].count = nk;
        if (op == XG_OP_attention) {
            set_outs(c, nq);
            c->out[1].count = rows;
            continue;
        }
        int lse = op == XG_OP_attention_backward_q ? 5 : 4;
        c->in[lse].count = rows;
        if (op == XG_OP_attention_backward_kv)
            c->in[5].count = rows;
        add_poison_f(c, lse, 0, -INFINITY);
        add_poison_f(c, lse, rows / 2, -INFINITY);
        if (op == XG_OP_attention_backward_q) {
            set_outs(c, nq);
            c->out[1].count = rows;
        } else {
            set_outs(c, nk);
        }
    }
}

/* ---- NORM ------------------------------------------------------------------ */

/* Rows short and long (1 to 50000 columns: one lane per row up to whole
 * workgroups looping over the row) and row counts that leave workgroups
 * partly empty. */
static const int64_t norm_shapes[][2] = {
    {1, 1}, {5, 1}, {333, 1}, {1, 3}, {333, 3}, {5, 127}, {1, 768},
    {5, 768}, {333, 768}, {5, 4099}, {2, 50000},
};

/* x and g are [rows, cols]; weight and bias [cols]; mean and rstd [rows]
 * (rstd positive). With has_weight or has_bias 0 the slot still holds a
 * buffer of random values, which the kernel must not read. */
static void norm_case(xg_op op, conf_case_list *l, int64_t rows,
                      int64_t cols, int has_weight, int has_bias,
                      const char *extra)
{
    conf_case *c = add_case(l, op, "rows=%" PRId64 " cols=%" PRId64
                            " weight=%d bias=%d%s", rows, cols, has_weight,
                            has_bias, extra);
    c->call.p.norm = (xg_norm_args){rows, cols, 1e-5f, has_weight, has_bias};
    set_ins(c, rows * cols);
    set_outs(c, rows * cols);
    switch (op) {
    case XG_OP_layer_norm: /* x, weight, bias -> y, mean, rstd */
        c->in[1].count = c->in[2].count = cols;
        c->out[1].count = c->out[2].count = rows;
        break;
    case XG_OP_layer_norm_backward: /* x, weight, g, mean, rstd -> dx */
        c->in[1].count = cols;
        c->in[3].count = c->in[4].count = rows;
        c->in[4].domain = DOM_POSITIVE;
        break;
    default: /* x, g, mean, rstd -> dweight, dbias */
        c->in[2].count = c->in[3].count = rows;
        c->in[3].domain = DOM_POSITIVE;
        c->out[0].count = c->out[1].count = cols;
        break;
    }
}

static void gen_norm(xg_op op, conf_case_list *l)
{
    size_t n = sizeof norm_shapes / sizeof norm_shapes[0];
    for (size_t i = 0; i < n; i++) {
        /* every shape with weight and bias, and one of the three other
         * combinations in turn */
        int k = (int)(i % 3);
        norm_case(op, l, norm_shapes[i][0], norm_shapes[i][1], 1, 1, "");
        norm_case(op, l, norm_shapes[i][0], norm_shapes[i][1], k == 1,
                  k == 2, "");
    }
    if (op == XG_OP_layer_norm_backward_affine) {
        /* more rows than one Vulkan dispatch walks (XG_NORM_ROW_CHUNK) */
        norm_case(op, l, 140000, 3, 1, 1, " (long columns)");
        return;
    }
    /* A row far past the workgroup: cols / 256 elements per lane. */
    norm_case(op, l, 1, CONF_LONG_COLS, 1, 0, " (long row)");
}

/* ---- dispatch by family ------------------------------------------------------ */

typedef void (*family_gen)(xg_op op, conf_case_list *l);

static const family_gen family_gens[] = {
    [XG_FAMILY_UNARY] = gen_unary,
    [XG_FAMILY_UNARY_BACKWARD] = gen_unary_backward,
    [XG_FAMILY_SCALAR] = gen_scalar,
    [XG_FAMILY_BINARY] = gen_binary,
    [XG_FAMILY_REDUCE] = gen_reduce,
    [XG_FAMILY_REDUCE_BACKWARD] = gen_reduce_backward,
    [XG_FAMILY_ROWS] = gen_rows,
    [XG_FAMILY_GEMM] = gen_gemm,
    [XG_FAMILY_STRIDED] = gen_strided,
    [XG_FAMILY_FILL] = gen_fill,
    [XG_FAMILY_RNG] = gen_rng,
    [XG_FAMILY_ADAM] = gen_adam,
    [XG_FAMILY_SGD] = gen_sgd,
    [XG_FAMILY_CONV] = gen_conv,
    [XG_FAMILY_POOL] = gen_pool,
    [XG_FAMILY_DROPOUT] = gen_dropout,
    [XG_FAMILY_INDEX] = gen_index,
    [XG_FAMILY_WHERE] = gen_where,
    [XG_FAMILY_ATTENTION] = gen_attention,
    [XG_FAMILY_NORM] = gen_norm,
    [XG_FAMILY_CAST] = gen_cast,
};

_Static_assert(sizeof family_gens / sizeof family_gens[0] ==
                   XG_FAMILY_COUNT,
               "every op family needs a case generator");

void conf_cases_for_op(xg_op op, conf_case_list *list)
{
    list->v = NULL;
    list->n = list->cap = 0;
    xg_op_family f = xg_op_table[op].family;
    if ((size_t)f < sizeof family_gens / sizeof family_gens[0] &&
        family_gens[f])
        family_gens[f](op, list);
}

int conf_case_count_all(void)
{
    int total = 0;
    for (int op = 0; op < XG_OP_COUNT; op++) {
        conf_case_list l;
        conf_cases_for_op((xg_op)op, &l);
        total += l.n;
        free(l.v);
    }
    return total;
}
