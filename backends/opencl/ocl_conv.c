/* The CONV family: convolution lowered to GEMM (ocl_gemm: CLBlast or
 * xgrad's kernel).
 *
 * A chunk of nb samples is unfolded by xg_im2col (kernels/conv.cl) into a
 * column matrix col[K][nb * L] (K = c_in * kh * kw rows (c, p, q), L =
 * oh * ow; sample b's columns start at b * L). With G groups, group g owns
 * Kg = K / G rows of col and cog = c_out / G rows of the weight, viewed as
 * [c_out, Kg]. Per chunk and group:
 *   conv2d                  y_b = W_g col_b, a GEMM batched over the
 *                           chunk's samples (the weight broadcast);
 *                           conv2d_bias then adds the bias to each plane
 *                           (xg_conv_bias), conv2d_bias_relu also clamps
 *                           at 0 there
 *   conv2d_backward_input   dcol_b = W_g^T dy_b, batched likewise, then
 *                           xg_col2im gathers dcol into dx
 *   conv2d_backward_weight  dW_g (+)= dyT_g col_g^T, one GEMM whose inner
 *                           dimension runs over every pixel of the chunk;
 *                           dyT [c_out][nb * L] is dy regrouped by
 *                           xg_im2col as a 1x1 "convolution"; beta = 1
 *                           after the first chunk
 * ocl_gemm takes buffer offsets and leading dimensions, so no per-sample or
 * per-group copies are made. The column buffers come from the caching
 * allocator and go back to it when the call has been enqueued: the next
 * convolution of that size reuses them (the queue is in order).
 */
#include "ocl_impl.h"

#include <limits.h>
#include <stdbool.h>

/* Samples per chunk are capped so that the column buffers of a chunk take
 * at most this many bytes (at least one sample is always taken). */
#define OCL_CONV_SCRATCH ((size_t)64 << 20)

/* The sizes every step needs, from struct xg_conv_args. */
typedef struct conv_plan {
    const xg_conv_args *a;
    const char *what;  /* the op's name, for errors */
    cl_int16 geometry; /* the layout kernels/conv.cl reads */
    size_t k, kg, l;   /* rows of col, of one group, columns per sample */
    size_t cog;        /* output channels per group */
    size_t chunk;      /* samples per pass */
} conv_plan;

/* The geometry as kernels/conv.cl reads it. */
static cl_int16 geometry_of(const xg_conv_args *a)
{
    cl_int v[16] = {(cl_int)a->c_in, (cl_int)a->h,  (cl_int)a->w,
                    (cl_int)a->oh,   (cl_int)a->ow, a->kh,
                    a->kw,           a->stride_h,   a->stride_w,
                    a->pad_h,        a->pad_w,      a->dil_h,
                    a->dil_w};
    cl_int16 g;
    for (int i = 0; i < 16; i++)
        g.s[i] = v[i];
    return g;
}

/* The plan for call c, whose scratch holds, per sample, the L columns of
 * col's K rows and of extra_rows more. */
static conv_plan make_plan(const ocl_device *d, const xg_kernel_call *c,
                           size_t extra_rows)
{
    const xg_conv_args *a = &c->p.conv;
    conv_plan p = {.a = a, .what = xg_op_table[c->op].name,
                   .geometry = geometry_of(a)};
    p.k = (size_t)a->c_in * a->kh * a->kw;
    p.kg = p.k / a->groups;
    p.l = (size_t)a->oh * a->ow;
    p.cog = (size_t)a->c_out / a->groups;
    size_t budget = OCL_CONV_SCRATCH < d->max_alloc ? OCL_CONV_SCRATCH
                                                    : (size_t)d->max_alloc;
    p.chunk = budget / ((p.k + extra_rows) * p.l * sizeof(float));
    if (p.chunk < 1)
        p.chunk = 1;
    if (p.chunk > (size_t)a->n)
        p.chunk = (size_t)a->n;
    return p;
}

/* C_b = opA(A_b) opB(B_b) + beta C_b for b < batch, row-major. */
static xg_status gemm(ocl_device *d, const char *what, bool ta, bool tb,
                      size_t m, size_t n, size_t k, ocl_mat a, ocl_mat b,
                      float beta, ocl_mat c, size_t batch)
{
    return ocl_gemm(d, what, ta, tb, m, n, k, 1.0f, a, b, beta, c, batch);
}

/* Runs helper kernel h (im2col, col2im or conv_bias) for op `what` from
 * `src` to `dst` for samples b0 .. b0 + nb - 1 over `rows` rows of `cols`
 * elements:
 * work-groups of (lx, ly) take ly rows, their lx work-items striding along
 * each row. Short rows share a group, so that groups keep OCL_MIN_GROUP
 * work-items. */
static xg_status run_helper(ocl_device *d, ocl_helper h, const char *what,
                            xg_buffer *src, xg_buffer *dst, size_t rows,
                            size_t cols, cl_long b0, cl_int nb,
                            cl_int16 geometry)
{
    size_t wg = d->helper_wg_size[h];
    size_t lx = ocl_pow2_at_least((int64_t)cols, 1, wg);
    size_t ly = ocl_pow2_at_least(OCL_MIN_GROUP / (int64_t)lx, 1, wg / lx);
    size_t local[2] = {lx, ly}, global[2] = {lx, (rows + ly - 1) / ly * ly};
    const xg_buffer *bufs[] = {src, dst};
    return ocl_enqueue(d, d->helpers[h], what, bufs, 2,
                       OCL_ARGS(OCL_ARG(b0), OCL_ARG(nb), OCL_ARG(geometry)),
                       2, global, local);
}

/* im2col of x's samples b0 .. b0 + nb - 1 into col. */
static xg_status unfold(ocl_device *d, const conv_plan *p, xg_buffer *x,
                        xg_buffer *col, size_t b0, size_t nb)
{
    return run_helper(d, OCL_HELPER_im2col, p->what, x, col, nb * p->k, p->l,
                      (cl_long)b0, (cl_int)nb, p->geometry);
}

/* y = W col (+ bias) for one chunk. */
static xg_status forward_chunk(ocl_device *d, const conv_plan *p,
                               const xg_kernel_call *c, xg_buffer *col,
                               size_t b0, size_t nb)
{
    xg_status st = unfold(d, p, c->in[0].buf, col, b0, nb);
    size_t row = nb * p->l, c_out = (size_t)p->a->c_out;
    for (int g = 0; st == XG_OK && g < p->a->groups; g++) {
        ocl_mat w = {c->in[1].buf, g * p->cog * p->kg, p->kg, 0};
        ocl_mat cols = {col, g * p->kg * row, row, p->l};
        ocl_mat y = {c->out[0].buf, (b0 * c_out + g * p->cog) * p->l, p->l,
                     c_out * p->l};
        st = gemm(d, p->what, false, false, p->cog, p->l, p->kg, w, cols,
                  0.0f, y, nb);
    }
    if (st != XG_OK || c->op == XG_OP_conv2d)
        return st;
    cl_int16 planes = {{(cl_int)p->a->c_out, (cl_int)p->l,
                        c->op == XG_OP_conv2d_bias_relu}};
    return run_helper(d, OCL_HELPER_conv_bias, p->what, c->in[2].buf,
                      c->out[0].buf, nb * c_out, p->l, (cl_long)b0,
                      (cl_int)nb, planes);
}

/* dcol = W^T dy, then dx = col2im(dcol), for one chunk. */
static xg_status backward_input_chunk(ocl_device *d, const conv_plan *p,
                                      const xg_kernel_call *c,
                                      xg_buffer *col, size_t b0, size_t nb)
{
    xg_status st = XG_OK;
    size_t row = nb * p->l, c_out = (size_t)p->a->c_out;
    for (int g = 0; st == XG_OK && g < p->a->groups; g++) {
        ocl_mat w = {c->in[1].buf, g * p->cog * p->kg, p->kg, 0};
        ocl_mat dy = {c->in[0].buf, (b0 * c_out + g * p->cog) * p->l, p->l,
                      c_out * p->l};
        ocl_mat cols = {col, g * p->kg * row, row, p->l};
        st = gemm(d, p->what, true, false, p->kg, p->l,
                  p->cog, w, dy, 0.0f, cols, nb);
    }
    if (st == XG_OK)
        st = run_helper(d, OCL_HELPER_col2im, p->what, col, c->out[0].buf,
                        nb * (size_t)p->a->c_in,
                        (size_t)(p->a->h * p->a->w), (cl_long)b0, (cl_int)nb,
                        p->geometry);
    return st;
}

/* dW (+)= dyT col^T for one chunk; dyT is dy regrouped as [c_out][nb L]. */
static xg_status backward_weight_chunk(ocl_device *d, const conv_plan *p,
                                       const xg_kernel_call *c,
                                       xg_buffer *col, xg_buffer *dyt,
                                       size_t b0, size_t nb)
{
    const xg_conv_args *a = p->a;
    const xg_conv_args regroup = {.c_in = a->c_out, .h = a->oh, .w = a->ow,
                                  .oh = a->oh, .ow = a->ow, .kh = 1, .kw = 1,
                                  .stride_h = 1, .stride_w = 1, .dil_h = 1,
                                  .dil_w = 1};
    xg_status st = unfold(d, p, c->in[0].buf, col, b0, nb);
    if (st == XG_OK)
        st = run_helper(d, OCL_HELPER_im2col, p->what, c->in[1].buf, dyt,
                        nb * (size_t)a->c_out, p->l, (cl_long)b0, (cl_int)nb,
                        geometry_of(&regroup));
    size_t row = nb * p->l;
    for (int g = 0; st == XG_OK && g < a->groups; g++) {
        ocl_mat dy = {dyt, g * p->cog * row, row, 0};
        ocl_mat cols = {col, g * p->kg * row, row, 0};
        ocl_mat dw = {c->out[0].buf, g * p->cog * p->kg, p->kg, 0};
        st = gemm(d, p->what, false, true, p->cog, p->kg,
                  row, dy, cols, b0 ? 1.0f : 0.0f, dw, 1);
    }
    return st;
}

xg_status ocl_run_conv(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    const xg_conv_args *a = &c->p.conv;
    bool weight = c->op == XG_OP_conv2d_backward_weight;
    conv_plan p = make_plan(d, c, weight ? (size_t)a->c_out : 0);
    if (p.k > INT_MAX || (uint64_t)a->h * a->w > INT_MAX || p.l > INT_MAX)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "opencl: %s: planes and c_in * kh * kw must be "
                            "below 2^31 elements",
                            p.what);
    xg_buffer *col = NULL, *dyt = NULL;
    xg_status st = ocl_alloc(dev, p.chunk * p.k * p.l * sizeof(float), &col);
    if (st == XG_OK && weight)
        st = ocl_alloc(dev, p.chunk * (size_t)a->c_out * p.l * sizeof(float),
                       &dyt);
    for (size_t b0 = 0; st == XG_OK && b0 < (size_t)a->n; b0 += p.chunk) {
        size_t nb = (size_t)a->n - b0 < p.chunk ? (size_t)a->n - b0 : p.chunk;
        if (c->op == XG_OP_conv2d || c->op == XG_OP_conv2d_bias ||
            c->op == XG_OP_conv2d_bias_relu)
            st = forward_chunk(d, &p, c, col, b0, nb);
        else if (c->op == XG_OP_conv2d_backward_input)
            st = backward_input_chunk(d, &p, c, col, b0, nb);
        else
            st = backward_weight_chunk(d, &p, c, col, dyt, b0, nb);
    }
    ocl_free(dev, col);
    ocl_free(dev, dyt);
    return st;
}
