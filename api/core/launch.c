/* Kernel launches: what a device runs for each op and dtype (natively, or
 * widened: 16-bit operands through f32 twins and the device's casts), and
 * xg__launch, which every op's front-end calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

int xg_op_count(void)
{
    return XG_OP_COUNT;
}

const char *xg_op_name(int op)
{
    return op >= 0 && op < XG_OP_COUNT ? xg_op_table[op].name : NULL;
}

/* The rule letter of buffer k of op (inputs, then outputs). */
static char rule_of(const xg_op_info *info, int k)
{
    return k < info->n_in ? info->in_rule[k] : info->out_rule[k - info->n_in];
}

/* Whether the op's buffers include one of the element type T. */
static bool has_t(const xg_op_info *info)
{
    return strchr(info->in_rule, 'T') || strchr(info->out_rule, 'T');
}

/* Whether the backend casts between f32 and t both ways, and runs `op`
 * with `dtypes` once every t of a T position is f32: what the core's
 * widening of a 16-bit op needs. */
static bool widenable(const xg_backend *b, const xg_backend_device *bdev,
                      xg_op op, const xg_dtype *dtypes, xg_dtype t)
{
    const xg_op_info *info = &xg_op_table[op];
    if ((t != XG_BF16 && t != XG_F16) || op == XG_OP_cast ||
        !b->kernels[XG_FAMILY_CAST] || !b->kernels[info->family])
        return false;
    xg_dtype there[2] = {XG_F32, t}, back[2] = {t, XG_F32};
    if (!b->supports(bdev, XG_OP_cast, there) ||
        !b->supports(bdev, XG_OP_cast, back))
        return false;
    xg_dtype wide[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
    for (int k = 0; k < info->n_in + info->n_out; k++)
        wide[k] = rule_of(info, k) == 'T' ? XG_F32 : dtypes[k];
    return b->supports(bdev, op, wide);
}

/* The element type of a call: that of its first T buffer (f32 if none). */
static xg_dtype element_type(const xg_op_info *info, const xg_dtype *dtypes)
{
    for (int k = 0; k < info->n_in + info->n_out; k++)
        if (rule_of(info, k) == 'T')
            return dtypes[k];
    return XG_F32;
}

/* XGRAD_WIDEN=all: a 16-bit call that the device runs natively goes
 * through f32 all the same, when it can, except the ops that only move
 * values (FILL, STRIDED; cast is never widened). */
static bool forced_wide(const xg_device *dev, xg_op op, const xg_dtype *dtypes)
{
    const xg_op_info *info = &xg_op_table[op];
    if (!dev->widen_all || info->family == XG_FAMILY_FILL ||
        info->family == XG_FAMILY_STRIDED)
        return false;
    xg_dtype t = element_type(info, dtypes);
    return (t == XG_BF16 || t == XG_F16) &&
           widenable(dev->backend, dev->bdev, op, dtypes, t);
}

/* The signature of op instantiated with element type dtype. */
static void signature(const xg_op_info *info, xg_dtype dtype, xg_dtype *sig)
{
    for (int k = 0; k < info->n_in + info->n_out; k++)
        sig[k] = xg_op_rule_dtype(rule_of(info, k), dtype);
}

/* 0: unsupported, 1: native, 2: widened (16-bit T through f32). */
static int support_kind(const xg_device *dev, int op, xg_dtype dtype)
{
    if (!dev || dev->closed || op < 0 || op >= XG_OP_COUNT ||
        (unsigned)dtype >= XG_DTYPE_COUNT)
        return 0;
    const xg_op_info *info = &xg_op_table[op];
    const xg_backend *b = dev->backend;
    if (op == XG_OP_cast) { /* both directions between f32 and dtype */
        xg_dtype there[2] = {XG_F32, dtype}, back[2] = {dtype, XG_F32};
        return b->kernels[info->family] &&
               b->supports(dev->bdev, XG_OP_cast, there) &&
               b->supports(dev->bdev, XG_OP_cast, back);
    }
    /* An op without T buffers (the f32 optimizer updates) has one type. */
    if (!has_t(info) && dtype != XG_F32)
        return 0;
    xg_dtype sig[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
    signature(info, dtype, sig);
    if (b->kernels[info->family] && b->supports(dev->bdev, (xg_op)op, sig) &&
        !forced_wide(dev, (xg_op)op, sig))
        return 1;
    return widenable(b, dev->bdev, (xg_op)op, sig, dtype) ? 2 : 0;
}

bool xg_device_supports(const xg_device *dev, int op, xg_dtype dtype)
{
    return support_kind(dev, op, dtype) != 0;
}

bool xg_device_supports_natively(const xg_device *dev, int op,
                                 xg_dtype dtype)
{
    return support_kind(dev, op, dtype) == 1;
}

/* Writes "f32" when every buffer of the call is of the op's element type or
 * a fixed type of its signature, else the whole list, "f16, i32 -> f32". */
static void describe_dtypes(const xg_op_info *info, const xg_dtype *dtypes,
                            char *buf, size_t cap)
{
    int n = info->n_in + info->n_out;
    xg_dtype t = dtypes[0];
    bool plain = true;
    for (int i = 0; i < n; i++) {
        char rule = i < info->n_in ? info->in_rule[i]
                                   : info->out_rule[i - info->n_in];
        plain = plain && dtypes[i] == xg_op_rule_dtype(rule, t);
    }
    if (plain) {
        snprintf(buf, cap, "%s", xg_dtype_name(t));
        return;
    }
    size_t used = 0;
    for (int i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s",
                                 i == 0 ? "" : i == info->n_in ? " -> " : ", ",
                                 xg_dtype_name(dtypes[i]));
}

/* Casts n elements of `src` (of dtype from) into `dst` (of dtype to). */
static xg_status cast_buffer(xg_device *dev, xg_buffer *src, xg_dtype from,
                             xg_buffer *dst, xg_dtype to, int64_t n)
{
    xg_kernel_call c = {.op = XG_OP_cast, .in = {{src, from, 0}},
                        .out = {{dst, to, 0}}};
    c.p.cast.n = n;
    return dev->backend->kernels[XG_FAMILY_CAST](dev->bdev, &c);
}

/* Runs a call whose element type t is 16-bit through f32 (the device has
 * checked widenable): every T buffer gets an f32 twin of the same element
 * count, inputs (and outputs that the op updates in place: copy_strided's)
 * cast in, the op run on the twins, T outputs cast back: one rounding, at
 * the output. Under the device's lock. The twins count in the device's
 * memory account while they live (XGRAD_MEMORY_LIMIT can refuse them) and
 * are freed at once (work queued on them still completes). */
static xg_status launch_widened(xg_device *dev, const xg_kernel_call *call,
                                xg_dtype t)
{
    const xg_op_info *info = &xg_op_table[call->op];
    const xg_backend *b = dev->backend;
    size_t size = xg_dtype_size(t);
    xg_kernel_call wide = *call;
    xg_buffer *twins[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    size_t wide_bytes[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    bool in_place = info->family == XG_FAMILY_STRIDED;
    xg_status st = XG_OK;
    for (int k = 0; st == XG_OK && k < info->n_in + info->n_out; k++) {
        bool is_in = k < info->n_in;
        const xg_operand *o = is_in ? &call->in[k] : &call->out[k - info->n_in];
        xg_operand *w = is_in ? &wide.in[k] : &wide.out[k - info->n_in];
        if (rule_of(info, k) != 'T' || !o->buf)
            continue;
        /* an absent weight or bias passed as in[0] again shares its twin */
        if (is_in && k > 0 && o->buf == call->in[0].buf && twins[0]) {
            w->buf = twins[0];
            w->dtype = XG_F32;
            continue;
        }
        int64_t n = (int64_t)(o->bytes / size);
        if (n <= 0) {
            st = xg_set_error(XG_ERR_INVALID_ARG, "%s: buffer %d has no size "
                              "to widen", info->name, k);
            break;
        }
        st = xg__device_alloc(dev, (size_t)n * 4, &twins[k], info->name);
        if (st == XG_OK && (is_in || in_place))
            st = xg__device_result(dev, cast_buffer(dev, o->buf, t, twins[k],
                                                    XG_F32, n));
        wide_bytes[k] = (size_t)n * 4;
        w->buf = twins[k];
        w->dtype = XG_F32;
        w->bytes = (size_t)n * 4;
    }
    if (st == XG_OK)
        st = xg__device_result(dev, b->kernels[info->family](dev->bdev,
                                                              &wide));
    for (int j = 0; st == XG_OK && j < info->n_out; j++) {
        xg_buffer *twin = twins[info->n_in + j];
        if (twin)
            st = xg__device_result(
                dev, cast_buffer(dev, twin, XG_F32, call->out[j].buf, t,
                                 (int64_t)(call->out[j].bytes / size)));
    }
    for (int k = 0; k < info->n_in + info->n_out; k++)
        xg__device_free(dev, twins[k], wide_bytes[k]);
    return st;
}

/* Elements per pass of a chunked widening: 1 MiB of f32 in each twin. */
enum { WIDEN_CHUNK = 1 << 18 };

/* Whether a widened call is an elementwise one over more than a chunk
 * (UNARY, UNARY_BACKWARD, SCALAR: every buffer n elements of t) on a
 * backend that copies t between offsets (copy_strided), so that it can
 * run a chunk at a time (launch_widened_chunks). */
static bool chunkable(const xg_backend *b, const xg_backend_device *bdev,
                      const xg_kernel_call *call, xg_dtype t)
{
    xg_op_family f = xg_op_table[call->op].family;
    xg_dtype move[2] = {t, t};
    return (f == XG_FAMILY_UNARY || f == XG_FAMILY_UNARY_BACKWARD ||
            f == XG_FAMILY_SCALAR) &&
           call->p.ew.n > WIDEN_CHUNK && b->kernels[XG_FAMILY_STRIDED] &&
           b->supports(bdev, XG_OP_copy_strided, move);
}

/* Copies n elements of t from src[from] to dst[to] (copy_strided). */
static xg_status move_range(xg_device *dev, xg_buffer *src, int64_t from,
                            xg_buffer *dst, int64_t to, int64_t n,
                            xg_dtype t)
{
    xg_kernel_call c = {.op = XG_OP_copy_strided, .in = {{src, t, 0}},
                        .out = {{dst, t, 0}}};
    c.p.strided = (xg_strided_args){.ndim = 1, .n = n, .shape = {n},
                                    .in_stride = {1}, .out_stride = {1},
                                    .in_offset = from, .out_offset = to};
    return dev->backend->kernels[XG_FAMILY_STRIDED](dev->bdev, &c);
}

/* launch_widened for a chunkable call, WIDEN_CHUNK elements at a time, so
 * that its f32 temporaries stay small whatever n is: per chunk, each
 * input's range is copied into a 16-bit staging buffer and cast into its
 * f32 twin, the op runs on the twins, and the output twin is cast back
 * into staging and copied into its range. Elementwise, so an output that
 * shares its buffer with an input (a backward writing over its gradient)
 * is safe: a chunk's inputs are read before its output is written. The
 * values are those of launch_widened, bit for bit. Under the device's
 * lock; the buffers count in the memory account while they live. */
static xg_status launch_widened_chunks(xg_device *dev,
                                       const xg_kernel_call *call,
                                       xg_dtype t)
{
    const xg_op_info *info = &xg_op_table[call->op];
    const xg_backend *b = dev->backend;
    size_t size = xg_dtype_size(t);
    int64_t n = call->p.ew.n;
    int n_buf = info->n_in + info->n_out;
    xg_kernel_call wide = *call;
    xg_buffer *stage[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    xg_buffer *twin[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    xg_status st = XG_OK;
    for (int k = 0; st == XG_OK && k < n_buf; k++) {
        const xg_operand *o = k < info->n_in ? &call->in[k]
                                             : &call->out[k - info->n_in];
        if (o->bytes < (size_t)n * size)
            st = xg_set_error(XG_ERR_INVALID_ARG, "%s: buffer %d holds %zu "
                              "bytes, under %lld elements", info->name, k,
                              o->bytes, (long long)n);
        if (st == XG_OK)
            st = xg__device_alloc(dev, WIDEN_CHUNK * size, &stage[k],
                                  info->name);
        if (st == XG_OK)
            st = xg__device_alloc(dev, WIDEN_CHUNK * 4, &twin[k],
                                  info->name);
        xg_operand *w = k < info->n_in ? &wide.in[k]
                                       : &wide.out[k - info->n_in];
        *w = (xg_operand){twin[k], XG_F32, WIDEN_CHUNK * 4};
    }
    for (int64_t at = 0; st == XG_OK && at < n; at += WIDEN_CHUNK) {
        int64_t m = n - at < WIDEN_CHUNK ? n - at : WIDEN_CHUNK;
        for (int k = 0; st == XG_OK && k < info->n_in; k++) {
            st = xg__device_result(dev, move_range(dev, call->in[k].buf, at,
                                                   stage[k], 0, m, t));
            if (st == XG_OK)
                st = xg__device_result(dev, cast_buffer(dev, stage[k], t,
                                                        twin[k], XG_F32, m));
        }
        wide.p.ew.n = m;
        if (st == XG_OK)
            st = xg__device_result(dev, b->kernels[info->family](dev->bdev,
                                                                  &wide));
        for (int j = 0; st == XG_OK && j < info->n_out; j++) {
            int k = info->n_in + j;
            st = xg__device_result(dev, cast_buffer(dev, twin[k], XG_F32,
                                                    stage[k], t, m));
            if (st == XG_OK)
                st = xg__device_result(dev, move_range(dev, stage[k], 0,
                                                       call->out[j].buf, at,
                                                       m, t));
        }
    }
    for (int k = 0; k < n_buf; k++) {
        xg__device_free(dev, stage[k], stage[k] ? WIDEN_CHUNK * size : 0);
        xg__device_free(dev, twin[k], twin[k] ? WIDEN_CHUNK * 4 : 0);
    }
    return st;
}

/* Whether a widened BINARY call can run a band of output rows (its first
 * axis) at a time (launch_widened_rows): more than a chunk of elements,
 * more than one row, no input sharing the output's buffer, and
 * copy_strided for t. */
static bool row_chunkable(const xg_backend *b, const xg_backend_device *bdev,
                          const xg_kernel_call *call, xg_dtype t)
{
    const xg_binary_args *p = &call->p.binary;
    xg_dtype move[2] = {t, t};
    return xg_op_table[call->op].family == XG_FAMILY_BINARY &&
           p->n > WIDEN_CHUNK && p->ndim >= 1 && p->shape[0] > 1 &&
           call->in[0].buf != call->out[0].buf &&
           call->in[1].buf != call->out[0].buf &&
           b->kernels[XG_FAMILY_STRIDED] &&
           b->supports(bdev, XG_OP_copy_strided, move);
}

/* The elements that input `stride` reads for `rows` rows of the output
 * from its first: the span from the first row's start to the last
 * element of the last row. */
static int64_t row_span(const xg_binary_args *p, const int64_t *stride,
                        int64_t rows)
{
    int64_t last = (rows - 1) * stride[0];
    for (int k = 1; k < p->ndim; k++)
        last += (p->shape[k] - 1) * stride[k];
    return last + 1;
}

/* launch_widened for a BINARY call, a band of output rows at a time (as
 * many as make a chunk of WIDEN_CHUNK elements, at least one): per band,
 * the span of each input that the band reads (all of a broadcast input,
 * stride 0 on the first axis) is copied into a 16-bit staging buffer and
 * cast into its f32 twin, the op runs on the band with the same strides,
 * and the band's output is cast back and copied into place. The values
 * are those of launch_widened, bit for bit. Under the device's lock; the
 * buffers count in the memory account while they live. */
static xg_status launch_widened_rows(xg_device *dev,
                                     const xg_kernel_call *call, xg_dtype t)
{
    const xg_binary_args *p = &call->p.binary;
    const xg_backend *b = dev->backend;
    size_t size = xg_dtype_size(t);
    int64_t inner = p->n / p->shape[0];
    int64_t band = inner >= WIDEN_CHUNK ? 1 : WIDEN_CHUNK / inner;
    const int64_t *strides[2] = {p->stride_a, p->stride_b};
    /* elements of each buffer's staging: a band's span, the output's band */
    int64_t cap[3];
    for (int k = 0; k < 2; k++)
        cap[k] = row_span(p, strides[k], band < p->shape[0] ? band
                                                            : p->shape[0]);
    cap[2] = band * inner;
    xg_kernel_call wide = *call;
    xg_buffer *stage[3] = {0}, *twin[3] = {0};
    xg_status st = XG_OK;
    for (int k = 0; st == XG_OK && k < 3; k++) {
        const xg_operand *o = k < 2 ? &call->in[k] : &call->out[0];
        int64_t whole = k < 2 ? strides[k][0] * (p->shape[0] - 1) +
                                    row_span(p, strides[k], 1)
                              : p->n;
        if (o->bytes < (size_t)whole * size)
            st = xg_set_error(XG_ERR_INVALID_ARG, "%s: buffer %d holds %zu "
                              "bytes, under %lld elements",
                              xg_op_table[call->op].name, k, o->bytes,
                              (long long)whole);
        if (st == XG_OK)
            st = xg__device_alloc(dev, (size_t)cap[k] * size, &stage[k],
                                  xg_op_table[call->op].name);
        if (st == XG_OK)
            st = xg__device_alloc(dev, (size_t)cap[k] * 4, &twin[k],
                                  xg_op_table[call->op].name);
        xg_operand *w = k < 2 ? &wide.in[k] : &wide.out[0];
        *w = (xg_operand){twin[k], XG_F32, (size_t)cap[k] * 4};
    }
    for (int64_t r = 0; st == XG_OK && r < p->shape[0]; r += band) {
        int64_t rows = p->shape[0] - r < band ? p->shape[0] - r : band;
        for (int k = 0; st == XG_OK && k < 2; k++) {
            int64_t span = row_span(p, strides[k], rows);
            st = xg__device_result(
                dev, move_range(dev, call->in[k].buf, r * strides[k][0],
                                stage[k], 0, span, t));
            if (st == XG_OK)
                st = xg__device_result(dev, cast_buffer(dev, stage[k], t,
                                                        twin[k], XG_F32,
                                                        span));
        }
        wide.p.binary.shape[0] = rows;
        wide.p.binary.n = rows * inner;
        if (st == XG_OK)
            st = xg__device_result(
                dev, b->kernels[XG_FAMILY_BINARY](dev->bdev, &wide));
        if (st == XG_OK)
            st = xg__device_result(dev, cast_buffer(dev, twin[2], XG_F32,
                                                    stage[2], t,
                                                    rows * inner));
        if (st == XG_OK)
            st = xg__device_result(
                dev, move_range(dev, stage[2], 0, call->out[0].buf,
                                r * inner, rows * inner, t));
    }
    for (int k = 0; k < 3; k++) {
        xg__device_free(dev, stage[k], stage[k] ? (size_t)cap[k] * size : 0);
        xg__device_free(dev, twin[k], twin[k] ? (size_t)cap[k] * 4 : 0);
    }
    return st;
}

xg_status xg__launch(xg_device *dev, const xg_kernel_call *call)
{
    const xg_op_info *info = &xg_op_table[call->op];
    xg_status st = xg__device_check(dev, info->name);
    if (st != XG_OK)
        return st;
    xg_dtype dtypes[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
    for (int i = 0; i < info->n_in; i++) {
        if (!call->in[i].buf) /* xg__arg could not make a contiguous copy */
            return xg_last_status() != XG_OK
                       ? xg_last_status()
                       : xg_set_error(XG_ERR_INVALID_ARG,
                                      "%s: input %d has no buffer",
                                      info->name, i);
        dtypes[i] = call->in[i].dtype;
    }
    for (int j = 0; j < info->n_out; j++)
        dtypes[info->n_in + j] = call->out[j].dtype;
    const xg_backend *b = dev->backend;
    xg_kernel_fn fn = b->kernels[info->family];
    if (!fn || !b->supports(dev->bdev, call->op, dtypes) ||
        forced_wide(dev, call->op, dtypes)) {
        xg_dtype t = element_type(info, dtypes);
        if ((t == XG_BF16 || t == XG_F16) &&
            widenable(b, dev->bdev, call->op, dtypes, t)) {
            xg__device_lock(dev);
            st = chunkable(b, dev->bdev, call, t)
                     ? launch_widened_chunks(dev, call, t)
                 : row_chunkable(b, dev->bdev, call, t)
                     ? launch_widened_rows(dev, call, t)
                     : launch_widened(dev, call, t);
            xg__device_unlock(dev);
            return st;
        }
        char what[160];
        describe_dtypes(info, dtypes, what, sizeof what);
        return xg_set_error(XG_ERR_UNSUPPORTED,
                            "op %s with dtype %s is not implemented on "
                            "backend %s", info->name, what, b->name);
    }
    xg__device_lock(dev);
    st = xg__device_result(dev, fn(dev->bdev, call));
    xg__device_unlock(dev);
    return st;
}
