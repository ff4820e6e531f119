/* Tensors, storage, scopes and the random generator. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

/* ---- scopes --------------------------------------------------------------- */

struct xg_scope {
    xg_scope *parent;
    xg_tensor **items; /* slots; NULL where a tensor left the scope */
    int n, cap;
};

static _Thread_local xg_scope *scope_top;

xg_scope *xg_scope_begin(void)
{
    xg_scope *s = calloc(1, sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "scope_begin: out of memory");
        return NULL;
    }
    s->parent = scope_top;
    scope_top = s;
    return s;
}

static void scope_close(xg_scope *s)
{
    scope_top = s->parent;
    for (int i = 0; i < s->n; i++) {
        xg_tensor *t = s->items[i];
        if (t) {
            t->scope = NULL;
            xg__tensor_release(t);
        }
    }
    free(s->items);
    free(s);
}

void xg_scope_end(xg_scope *scope)
{
    if (!scope)
        return;
    xg_scope *s = scope_top;
    while (s && s != scope)
        s = s->parent;
    if (!s) {
        xg_set_error(XG_ERR_STATE, "scope_end: scope is not open on this "
                                   "thread");
        return;
    }
    while (scope_top != scope)
        scope_close(scope_top);
    scope_close(scope);
}

/* Hands `t` (holding one reference) to the open scope, if any. */
static bool scope_adopt(xg_tensor *t)
{
    xg_scope *s = scope_top;
    if (!s)
        return true;
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        xg_tensor **items = realloc(s->items, (size_t)cap * sizeof *items);
        if (!items)
            return false;
        s->items = items;
        s->cap = cap;
    }
    t->scope = s;
    t->scope_slot = s->n;
    s->items[s->n++] = t;
    return true;
}

static void scope_forget(xg_tensor *t)
{
    if (t->scope) {
        t->scope->items[t->scope_slot] = NULL;
        t->scope = NULL;
    }
}

xg_scope *xg__composite_begin(void)
{
    return xg_scope_begin();
}

xg_tensor *xg__composite_end(xg_scope *scope, xg_tensor *result)
{
    if (!scope)
        return result;
    xg_tensor_keep(result);
    xg_scope_end(scope);
    if (result && !scope_adopt(result)) {
        xg_tensor_free(result);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "out of host memory");
        return NULL;
    }
    return result;
}

/* ---- storage -------------------------------------------------------------- */

static xg_storage *storage_new(xg_device *dev, size_t bytes, const char *who)
{
    if (xg__device_check(dev, who) != XG_OK)
        return NULL;
    xg_storage *s = calloc(1, sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        return NULL;
    }
    xg__device_lock(dev);
    xg_status st = xg__device_alloc(dev, bytes, &s->buf, who);
    xg__device_unlock(dev);
    if (st != XG_OK) {
        free(s);
        return NULL;
    }
    s->refs = 1;
    s->dev = dev;
    s->bytes = bytes;
    xg__device_retain(dev);
    return s;
}

static void storage_release(xg_storage *s)
{
    if (!s || --s->refs > 0)
        return;
    xg__device_lock(s->dev);
    xg__device_free(s->dev, s->buf, s->bytes);
    xg__device_unlock(s->dev);
    xg__device_release(s->dev);
    free(s);
}

/* ---- tensor objects --------------------------------------------------- */

/* Validates a shape and returns its element count, or -1 with the error. */
static int64_t shape_numel(const int64_t *shape, int ndim, const char *who)
{
    if (ndim < 0 || ndim > XG_MAX_DIMS) {
        xg_set_error(XG_ERR_SHAPE, "%s: %d dimensions (0 to %d allowed)", who,
                     ndim, XG_MAX_DIMS);
        return -1;
    }
    if (ndim > 0 && !shape) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: shape is NULL", who);
        return -1;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1 || shape[i] > (INT64_C(1) << 40) / n) {
            char s[160];
            xg__shape_str(shape, ndim, s, sizeof s);
            xg_set_error(XG_ERR_SHAPE, "%s: bad shape %s: every size must be "
                         ">= 1 and the total below 2^40", who, s);
            return -1;
        }
        n *= shape[i];
    }
    return n;
}

static xg_tensor *tensor_wrap(xg_storage *s, xg_dtype dtype,
                              const int64_t *shape, int ndim, int64_t numel,
                              const char *who)
{
    xg_tensor *t = calloc(1, sizeof *t);
    if (!t || (t->refs = 1, !scope_adopt(t))) {
        free(t);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        return NULL;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    if (ndim > 0)
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    xg__row_major(t->shape, ndim, t->strides);
    t->storage = s;
    s->refs++;
    return t;
}

void xg__row_major(const int64_t *shape, int ndim, int64_t *strides)
{
    int64_t step = 1;
    for (int k = ndim - 1; k >= 0; k--) {
        strides[k] = step;
        step *= shape[k];
    }
}

bool xg__is_dense(const xg_tensor *t)
{
    if (t->offset != 0)
        return false;
    int64_t step = 1;
    for (int k = t->ndim - 1; k >= 0; k--) {
        if (t->shape[k] != 1 && t->strides[k] != step)
            return false;
        step *= t->shape[k];
    }
    return true;
}

xg_tensor *xg__tensor_new(xg_device *dev, xg_dtype dtype,
                          const int64_t *shape, int ndim, const char *who)
{
    int64_t n = shape_numel(shape, ndim, who);
    if (n < 0 || !dev)
        return NULL;
    if ((unsigned)dtype >= XG_DTYPE_COUNT) {
        xg_set_error(XG_ERR_DTYPE, "%s: unknown dtype %d", who, (int)dtype);
        return NULL;
    }
    xg_storage *s = storage_new(dev, (size_t)n * xg_dtype_size(dtype), who);
    if (!s)
        return NULL;
    xg_tensor *t = tensor_wrap(s, dtype, shape, ndim, n, who);
    storage_release(s); /* the tensor holds it now, or nobody */
    return t;
}

xg_tensor *xg__tensor_view(xg_tensor *src, const int64_t *shape,
                           const int64_t *strides, int ndim, int64_t offset)
{
    int64_t n = 1;
    for (int k = 0; k < ndim; k++)
        n *= shape[k];
    xg_tensor *t = tensor_wrap(src->storage, src->dtype, shape, ndim, n,
                               "view");
    if (t) {
        if (ndim > 0)
            memcpy(t->strides, strides, (size_t)ndim * sizeof *strides);
        t->offset = offset;
    }
    return t;
}

xg_tensor *xg__tensor_alias(xg_tensor *src, const int64_t *shape, int ndim)
{
    if (ndim == src->ndim &&
        memcmp(shape, src->shape, (size_t)ndim * sizeof *shape) == 0)
        return xg__tensor_view(src, shape, src->strides, ndim, src->offset);
    assert(xg__is_dense(src));
    xg_tensor *t = tensor_wrap(src->storage, src->dtype, shape, ndim,
                               src->numel, "alias");
    if (t)
        t->offset = src->offset;
    return t;
}

xg_status xg__copy_strided(xg_tensor *src, xg_tensor *dst,
                           const int64_t *dst_strides, int64_t dst_offset)
{
    xg_kernel_call call = {.op = XG_OP_copy_strided,
                           .in = {{src->storage->buf, src->dtype,
                                   src->storage->bytes}},
                           .out = {{dst->storage->buf, dst->dtype,
                                    dst->storage->bytes}}};
    xg_strided_args *p = &call.p.strided;
    p->ndim = src->ndim ? src->ndim : 1;
    p->n = src->numel;
    p->shape[0] = 1;
    p->in_stride[0] = p->out_stride[0] = 1;
    for (int k = 0; k < src->ndim; k++) {
        p->shape[k] = src->shape[k];
        p->in_stride[k] = src->strides[k];
        p->out_stride[k] = dst_strides[k];
    }
    p->in_offset = src->offset;
    p->out_offset = dst_offset;
    xg__tensor_touched(dst);
    return xg__launch(dst->storage->dev, &call);
}

/* Makes t->dense, a contiguous copy of the view t, unless it is current. */
static xg_status make_dense(xg_tensor *t)
{
    if (t->dense && t->dense_version == t->storage->version)
        return XG_OK;
    xg_tensor *old = t->dense;
    t->dense = NULL;
    if (old)
        xg__tensor_release(old);
    xg_tensor *d = xg_tensor_keep(xg__tensor_new(
        t->storage->dev, t->dtype, t->shape, t->ndim, "contiguous"));
    if (!d)
        return xg_last_status();
    xg_status st = xg__copy_strided(t, d, d->strides, 0);
    if (st != XG_OK) {
        xg__tensor_release(d);
        return st;
    }
    t->dense = d;
    t->dense_version = t->storage->version;
    return XG_OK;
}

xg_operand xg__arg(xg_tensor *t)
{
    if (!t)
        return (xg_operand){0};
    if (xg__is_dense(t))
        return (xg_operand){t->storage->buf, t->dtype, t->storage->bytes};
    if (make_dense(t) != XG_OK)
        return (xg_operand){NULL, t->dtype, 0};
    return (xg_operand){t->dense->storage->buf, t->dtype,
                        t->dense->storage->bytes};
}

void xg__tensor_retain(xg_tensor *t)
{
    t->refs++;
}

void xg__tensor_release(xg_tensor *t)
{
    /* A worklist instead of recursion: a graph may be thousands deep. */
    xg_tensor **work = NULL;
    int n = 0, cap = 0;
    while (t) {
        if (--t->refs == 0) {
            if (t->node)
                xg__node_free(t->node, &work, &n, &cap);
            if (t->grad)
                xg__tensor_release(t->grad);
            if (t->dense)
                xg__tensor_release(t->dense);
            storage_release(t->storage);
            free(t);
        } else if (t->refs == t->edge_refs && t->storage) {
            /* Only graph edges hold it: its values can go (hollow). */
            if (t->dense)
                xg__tensor_release(t->dense);
            t->dense = NULL;
            storage_release(t->storage);
            t->storage = NULL;
        }
        t = n > 0 ? work[--n] : NULL;
    }
    free(work);
}

void xg_tensor_free(xg_tensor *t)
{
    if (!t)
        return;
    scope_forget(t);
    xg__tensor_release(t);
}

xg_tensor *xg_tensor_keep(xg_tensor *t)
{
    if (t)
        scope_forget(t);
    return t;
}

bool xg__check_arg(const char *op, int index, const xg_tensor *t,
                   xg_dtype dtype)
{
    if (!t) {
        if (xg_last_status() == XG_OK)
            xg_set_error(XG_ERR_INVALID_ARG, "%s: argument %d is NULL", op,
                         index);
        return false;
    }
    if (xg__device_check(t->storage->dev, op) != XG_OK)
        return false;
    if (t->dtype != dtype) {
        xg_set_error(XG_ERR_DTYPE, "%s: argument %d must be %s, not %s", op,
                     index, xg_dtype_name(dtype), xg_dtype_name(t->dtype));
        return false;
    }
    return true;
}

bool xg__check_float(const char *op, int index, const xg_tensor *t)
{
    if (!xg__check_arg(op, index, t, t ? t->dtype : XG_F32))
        return false;
    if (!xg_dtype_is_float(t->dtype)) {
        xg_set_error(XG_ERR_DTYPE, "%s: argument %d must be a float tensor "
                     "(f32, bf16, f16), not %s", op, index,
                     xg_dtype_name(t->dtype));
        return false;
    }
    return true;
}

bool xg__check_same_device(const char *op, const xg_tensor *a,
                           const xg_tensor *b)
{
    if (a->storage->dev == b->storage->dev)
        return true;
    xg_set_error(XG_ERR_INVALID_ARG, "%s: tensors are on different devices "
                 "(%s and %s); move one with xg_tensor_to", op,
                 a->storage->dev->backend->name,
                 b->storage->dev->backend->name);
    return false;
}

/* ---- queries -------------------------------------------------------------- */

int xg_tensor_ndim(const xg_tensor *t) { return t ? t->ndim : 0; }
int64_t xg_tensor_numel(const xg_tensor *t) { return t ? t->numel : 0; }
xg_dtype xg_tensor_dtype(const xg_tensor *t) { return t ? t->dtype : XG_F32; }
const int64_t *xg_tensor_shape(const xg_tensor *t) { return t ? t->shape : NULL; }

int64_t xg_tensor_dim(const xg_tensor *t, int axis)
{
    if (!t)
        return 0;
    if (axis < 0)
        axis += t->ndim;
    return axis >= 0 && axis < t->ndim ? t->shape[axis] : 0;
}

xg_device *xg_tensor_device(const xg_tensor *t)
{
    return t ? t->storage->dev : NULL;
}

/* ---- host transfers ----------------------------------------------------- */

static xg_status check_transfer(const xg_tensor *t, const void *host,
                                size_t bytes, const char *who)
{
    if (!t || !host)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", who);
    size_t size = xg_dtype_size(t->dtype);
    if (bytes != (size_t)t->numel * size)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: %zu bytes given, the "
                            "tensor holds %lld (%s)", who, bytes,
                            (long long)t->numel * (long long)size,
                            xg_dtype_name(t->dtype));
    return xg__device_check(t->storage->dev, who);
}

xg_status xg_tensor_read(const xg_tensor *t, void *dst, size_t bytes)
{
    xg_status st = check_transfer(t, dst, bytes, "tensor_read");
    if (st != XG_OK)
        return st;
    /* A view reads through its contiguous copy (a cache, hence the cast). */
    xg_operand src = xg__arg((xg_tensor *)t);
    if (!src.buf)
        return xg_last_status();
    xg_device *dev = t->storage->dev;
    xg__device_lock(dev);
    st = xg__device_result(
        dev, dev->backend->download(dev->bdev, src.buf, 0, dst, bytes));
    xg__device_unlock(dev);
    return st;
}

xg_status xg_tensor_write(xg_tensor *t, const void *src, size_t bytes)
{
    xg_status st = check_transfer(t, src, bytes, "tensor_write");
    if (st != XG_OK)
        return st;
    if (!xg__is_dense(t))
        return xg_set_error(XG_ERR_INVALID_ARG, "tensor_write: the tensor is "
                            "a view whose elements are not contiguous; write "
                            "to a contiguous tensor (xg_contiguous)");
    xg__tensor_touched(t);
    xg_device *dev = t->storage->dev;
    xg__device_lock(dev);
    st = xg__device_result(
        dev, dev->backend->upload(dev->bdev, xg__buf(t), 0, src, bytes));
    xg__device_unlock(dev);
    return st;
}

/* Checks the f32 host transfers of a float tensor. */
static xg_status check_transfer_f32(const xg_tensor *t, const void *host,
                                    size_t count, const char *who)
{
    if (!t || !host)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", who);
    if (!xg_dtype_is_float(t->dtype))
        return xg_set_error(XG_ERR_DTYPE, "%s: needs a float tensor, got %s",
                            who, xg_dtype_name(t->dtype));
    if (count != (size_t)t->numel)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: %zu elements given, the "
                            "tensor holds %lld", who, count,
                            (long long)t->numel);
    return XG_OK;
}

xg_status xg_tensor_read_f32(const xg_tensor *t, float *dst, size_t count)
{
    xg_status st = check_transfer_f32(t, dst, count, "tensor_read_f32");
    if (st != XG_OK || t->dtype == XG_F32)
        return st != XG_OK ? st : xg_tensor_read(t, dst, count * 4);
    uint16_t *half = malloc(count * 2);
    if (!half)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "tensor_read_f32: out of "
                            "host memory");
    st = xg_tensor_read(t, half, count * 2);
    if (st == XG_OK && t->dtype == XG_BF16)
        xg_bf16_to_f32(half, dst, count);
    else if (st == XG_OK)
        xg_f16_to_f32(half, dst, count);
    free(half);
    return st;
}

xg_status xg_tensor_write_f32(xg_tensor *t, const float *src, size_t count)
{
    xg_status st = check_transfer_f32(t, src, count, "tensor_write_f32");
    if (st != XG_OK || t->dtype == XG_F32)
        return st != XG_OK ? st : xg_tensor_write(t, src, count * 4);
    uint16_t *half = malloc(count * 2);
    if (!half)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "tensor_write_f32: out of "
                            "host memory");
    if (t->dtype == XG_BF16)
        xg_f32_to_bf16(src, half, count);
    else
        xg_f32_to_f16(src, half, count);
    st = xg_tensor_write(t, half, count * 2);
    free(half);
    return st;
}

xg_status xg_tensor_item(const xg_tensor *t, float *out)
{
    if (!t || !out)
        return xg_set_error(XG_ERR_INVALID_ARG, "tensor_item: NULL argument");
    if (t->numel != 1 || !xg_dtype_is_float(t->dtype))
        return xg_set_error(XG_ERR_INVALID_ARG, "tensor_item: needs a "
                            "one-element float tensor, got %lld elements "
                            "of %s", (long long)t->numel,
                            xg_dtype_name(t->dtype));
    return xg_tensor_read_f32(t, out, 1);
}

/* ---- creation --------------------------------------------------------- */

xg_tensor *xg_tensor_from_data(const void *data, xg_dtype dtype,
                               const int64_t *shape, int ndim)
{
    if (!data) {
        xg_set_error(XG_ERR_INVALID_ARG, "tensor_from_data: data is NULL");
        return NULL;
    }
    xg_tensor *t = xg__tensor_new(xg_device_current(), dtype, shape, ndim,
                                  "tensor_from_data");
    if (t && xg_tensor_write(t, data,
                             (size_t)t->numel * xg_dtype_size(dtype)) !=
                 XG_OK) {
        xg_tensor_free(t);
        return NULL;
    }
    return t;
}

xg_tensor *xg__fill(xg_device *dev, const int64_t *shape, int ndim,
                    float value, const char *who)
{
    return xg__fill_dtype(dev, XG_F32, shape, ndim, value, who);
}

xg_tensor *xg__fill_dtype(xg_device *dev, xg_dtype dtype,
                          const int64_t *shape, int ndim, float value,
                          const char *who)
{
    xg_tensor *t = xg__tensor_new(dev, dtype, shape, ndim, who);
    if (!t)
        return NULL;
    xg_kernel_call call = {.op = XG_OP_fill, .out = {xg__arg(t)}};
    call.p.fill = (xg_fill_args){.n = t->numel, .value = value};
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(t);
        return NULL;
    }
    return t;
}

xg_status xg__assign(xg_tensor *dst, xg_tensor *src)
{
    assert(xg__is_dense(dst));
    xg__tensor_touched(dst);
    xg_kernel_call call = {.op = XG_OP_copy, .in = {xg__arg(src)},
                           .out = {xg__arg(dst)}};
    call.p.fill.n = dst->numel;
    return xg__launch(dst->storage->dev, &call);
}

xg_tensor *xg_full(const int64_t *shape, int ndim, float value)
{
    return xg__fill(xg_device_current(), shape, ndim, value, "full");
}

xg_tensor *xg_zeros(const int64_t *shape, int ndim)
{
    return xg__fill(xg_device_current(), shape, ndim, 0.0f, "zeros");
}

xg_tensor *xg_ones(const int64_t *shape, int ndim)
{
    return xg__fill(xg_device_current(), shape, ndim, 1.0f, "ones");
}

/* ---- random numbers ---------------------------------------------------- */

static _Thread_local uint64_t rng_seed, rng_offset;

void xg_manual_seed(uint64_t seed)
{
    rng_seed = seed;
    rng_offset = 0;
}

void xg_rng_state(uint64_t *seed, uint64_t *offset)
{
    if (seed)
        *seed = rng_seed;
    if (offset)
        *offset = rng_offset;
}

void xg_rng_set_state(uint64_t seed, uint64_t offset)
{
    rng_seed = seed;
    rng_offset = offset;
}

uint64_t xg__rng_take(uint64_t blocks, uint64_t *seed)
{
    uint64_t first = rng_offset;
    rng_offset += blocks;
    *seed = rng_seed;
    return first;
}

static xg_tensor *rand_tensor(xg_op op, const int64_t *shape, int ndim,
                              float a, float b, const char *who)
{
    xg_device *dev = xg_device_current();
    xg_tensor *t = xg__tensor_new(dev, XG_F32, shape, ndim, who);
    if (!t)
        return NULL;
    xg_kernel_call call = {.op = op, .out = {xg__arg(t)}};
    xg_rng_args *r = &call.p.rng;
    *r = (xg_rng_args){.n = t->numel, .a = a, .b = b};
    r->offset = xg__rng_take(((uint64_t)t->numel + 3) / 4, &r->seed);
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(t);
        return NULL;
    }
    return t;
}

xg_tensor *xg_rand_uniform(const int64_t *shape, int ndim, float low,
                           float high)
{
    if (!(low <= high)) {
        xg_set_error(XG_ERR_INVALID_ARG, "rand_uniform: low %g > high %g",
                     (double)low, (double)high);
        return NULL;
    }
    return rand_tensor(XG_OP_rand_uniform, shape, ndim, low, high,
                       "rand_uniform");
}

xg_tensor *xg_rand_normal(const int64_t *shape, int ndim, float mean,
                          float std)
{
    if (!(std >= 0)) {
        xg_set_error(XG_ERR_INVALID_ARG, "rand_normal: std %g < 0",
                     (double)std);
        return NULL;
    }
    return rand_tensor(XG_OP_rand_normal, shape, ndim, mean, std,
                       "rand_normal");
}

/* ---- moving between devices ---------------------------------------------- */

xg_tensor *xg_tensor_to(xg_tensor *t, xg_device *dev)
{
    if (!xg__check_arg("tensor_to", 0, t, t ? t->dtype : XG_F32))
        return NULL;
    if (!dev) {
        xg_set_error(XG_ERR_INVALID_ARG, "tensor_to: device is NULL");
        return NULL;
    }
    size_t bytes = (size_t)t->numel * xg_dtype_size(t->dtype);
    void *host = malloc(bytes);
    if (!host) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "tensor_to: out of host memory");
        return NULL;
    }
    xg_tensor *out = NULL;
    if (xg_tensor_read(t, host, bytes) == XG_OK) {
        out = xg__tensor_new(dev, t->dtype, t->shape, t->ndim, "tensor_to");
        if (out && xg_tensor_write(out, host, bytes) != XG_OK) {
            xg_tensor_free(out);
            out = NULL;
        }
    }
    free(host);
    return out;
}
