/* Internals shared by the backend-neutral core (the api folder). Not installed. */
#ifndef XGRAD_CORE_IMPL_H
#define XGRAD_CORE_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "xgrad.h"

/* ---- devices ------------------------------------------------------------ */

/* A device as the core sees it: the backend's device plus bookkeeping. It is
 * reference counted: the opener holds one reference and every storage on it
 * holds one, so closing a device with live tensors is safe. Several threads
 * may use one device: every call into the backend holds `lock` (backends
 * keep unsynchronised state: allocator lists, queues, scratch). */
struct xg_device {
    const xg_backend *backend;
    xg_backend_device *bdev;
    pthread_mutex_t lock;
    _Atomic int refs;
    /* Bytes of live storage, and the most there may be (0: no limit): the
     * device's reported memory, lowered by XGRAD_MEMORY_LIMIT. Under lock. */
    uint64_t in_use, limit;
    uint64_t peak; /* the most in_use has been since open or the last reset */
    bool widen_all; /* XGRAD_WIDEN=all: 16-bit ops through f32 (launch.c) */
    bool closed; /* the opener closed it; tensors on it are unusable */
    xg_status lost; /* XG_ERR_DEVICE_LOST once the device is lost, else OK */
};

void xg__device_retain(xg_device *dev);

/* Makes a device spec without ":INDEX" open device (index mod the
 * backend's device count) instead of device 0 (xg_dist_init: the local
 * rank). */
void xg__device_set_default_index(int index);
void xg__device_release(xg_device *dev);

/* Hold the device's lock around a call into its backend. */
static inline void xg__device_lock(xg_device *dev)
{
    pthread_mutex_lock(&dev->lock);
}

static inline void xg__device_unlock(xg_device *dev)
{
    pthread_mutex_unlock(&dev->lock);
}

/* XG_OK when the device can take work; else XG_ERR_STATE (closed) or
 * XG_ERR_DEVICE_LOST, with the error set for `what`. */
xg_status xg__device_check(const xg_device *dev, const char *what);

/* Passes a backend's status through, remembering a device loss. */
xg_status xg__device_result(xg_device *dev, xg_status st);

/* Allocates a device buffer of `bytes` in the device's memory account:
 * refused with XG_ERR_DEVICE_OOM (naming `who`) when in_use would pass the
 * limit, else in_use (and the peak) grow by bytes. Every device buffer the
 * core makes goes through here (tensor storage, and the f32 twins of a
 * widened 16-bit call), so XGRAD_MEMORY_LIMIT and xg_device_memory see
 * them all. Under the device's lock. */
xg_status xg__device_alloc(xg_device *dev, size_t bytes, xg_buffer **out,
                           const char *who);

/* Frees a buffer of xg__device_alloc (NULL ignored) and takes its bytes
 * off the account. Under the device's lock. */
void xg__device_free(xg_device *dev, xg_buffer *buf, size_t bytes);

/* Runs one kernel on `dev`: checks the device is usable and the slot is
 * filled, then calls it. A lost device stays lost. */
xg_status xg__launch(xg_device *dev, const xg_kernel_call *call);

/* ---- tensors ------------------------------------------------------------ */

/* Device memory shared by a tensor and its views. */
typedef struct xg_storage {
    int refs;
    xg_device *dev;
    xg_buffer *buf;
    size_t bytes;
    uint64_t version; /* counts in-place writes; see xg__tensor_touched */
} xg_storage;

typedef struct xg_node xg_node;

struct xg_tensor {
    int refs; /* the owner (scope or caller) + graph nodes + grads holders */
    /* Of refs, those of nodes that hold t only as a graph edge (their rule
     * never reads its values: xg_record.values_unused). When every
     * reference left is one of these, nothing can read t's values any
     * more: xg__tensor_release frees its storage and sets it to NULL (a
     * "hollow" tensor, still a node of the graph: shape, grad, node). */
    int edge_refs;
    xg_dtype dtype;
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    int64_t numel;
    xg_storage *storage;
    /* Element (i_0 .. i_{ndim-1}) is storage element offset + sum_k i_k
     * strides[k]. A new tensor is row-major from 0; views (permute, narrow,
     * select, expand, squeeze) share the storage with other strides. */
    int64_t strides[XG_MAX_DIMS];
    int64_t offset;
    /* A contiguous copy of a view's elements, made when a kernel first
     * needs them (one reference), valid while the storage's version is
     * dense_version. */
    xg_tensor *dense;
    uint64_t dense_version;

    bool requires_grad; /* leaf that wants a gradient, or a graph result */
    xg_node *node;      /* how this tensor was made; NULL for leaves */
    xg_tensor *grad;    /* accumulated gradient of a leaf (one reference) */

    xg_scope *scope; /* the scope owning it, or NULL (caller or nobody) */
    int scope_slot;

    /* Scratch used by xg_backward only. */
    xg_tensor *bw_grad;
    int bw_pending;
};

/* A new tensor with fresh (uninitialised) storage on `dev`, owned by the
 * open scope or the caller. `who` names the operation for errors. */
xg_tensor *xg__tensor_new(xg_device *dev, xg_dtype dtype,
                          const int64_t *shape, int ndim, const char *who);

/* Ops built from other ops run between these two calls, so that their
 * intermediate tensors are freed even when the caller has no scope open:
 * composite_end frees everything made since composite_begin except
 * `result` (NULL passes through), which goes to the caller's scope or to
 * the caller. */
xg_scope *xg__composite_begin(void);
xg_tensor *xg__composite_end(xg_scope *scope, xg_tensor *result);

/* A new tensor object sharing `src`'s storage, not part of any graph: with
 * src's own shape, the same view; with another shape of the same numel (a
 * reshape), row-major from src's offset, which needs xg__is_dense(src). */
xg_tensor *xg__tensor_alias(xg_tensor *src, const int64_t *shape, int ndim);

/* A new tensor object viewing src's storage with the given shape, element
 * strides and offset (the caller keeps them inside the storage); not part
 * of any graph. */
xg_tensor *xg__tensor_view(xg_tensor *src, const int64_t *shape,
                           const int64_t *strides, int ndim, int64_t offset);

/* Row-major element strides of `shape`. */
void xg__row_major(const int64_t *shape, int ndim, int64_t *strides);

/* True when t's elements lie row-major from storage element 0, as every
 * kernel reads them. */
bool xg__is_dense(const xg_tensor *t);

/* Copies src's elements, read through its own strides and offset, into
 * dst's storage at dst_offset + sum_k i_k dst_strides[k] (src->ndim
 * strides), leaving dst's other elements as they are (the copy_strided
 * kernel; no graph). */
xg_status xg__copy_strided(xg_tensor *src, xg_tensor *dst,
                           const int64_t *dst_strides, int64_t dst_offset);

/* Marks an in-place write to t's storage, so views' contiguous copies are
 * made again. */
static inline void xg__tensor_touched(xg_tensor *t)
{
    t->storage->version++;
}

/* Reference counting; release frees at zero, along with the tensor's graph
 * node and gradient (iteratively, so long graphs cannot overflow the stack). */
void xg__tensor_retain(xg_tensor *t);
void xg__tensor_release(xg_tensor *t);

/* Checks a tensor argument of an op: not NULL, on an open device, of the
 * given dtype. Sets the error ("<op>: argument <i> is NULL") and returns
 * false otherwise. A NULL argument keeps an earlier error. */
bool xg__check_arg(const char *op, int index, const xg_tensor *t,
                   xg_dtype dtype);

/* xg__check_arg for an argument of any float dtype (f32, bf16, f16): the
 * ops' element type T. XG_ERR_DTYPE otherwise. */
bool xg__check_float(const char *op, int index, const xg_tensor *t);

/* Both tensors on the same device. */
bool xg__check_same_device(const char *op, const xg_tensor *a,
                           const xg_tensor *b);

/* Fills buf with "[2,3,4]" (api/core/shape.c). */
void xg__shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

static inline xg_buffer *xg__buf(const xg_tensor *t)
{
    return t->storage->buf;
}

/* The tensor as a kernel operand (buffer and dtype): its storage when it is
 * dense, else its contiguous copy, made (copy_strided) on first use. {NULL,
 * 0} for NULL, an unused position; {NULL, dtype} with the error set when
 * the copy cannot be made (xg__launch then fails). */
xg_operand xg__arg(xg_tensor *t);

/* Copies src's values into dst's storage (same device and numel; dst
 * dense; no graph): in-place updates such as running statistics. */
xg_status xg__assign(xg_tensor *dst, xg_tensor *src);

/* Makes a tensor of `shape` on `dev` filled with `value` (no graph):
 * f32, or of `dtype` (the value rounded to it). */
xg_tensor *xg__fill(xg_device *dev, const int64_t *shape, int ndim,
                    float value, const char *who);
xg_tensor *xg__fill_dtype(xg_device *dev, xg_dtype dtype,
                          const int64_t *shape, int ndim, float value,
                          const char *who);

/* The shape that a and b broadcast to, or false with the error for `op`
 * (api/core/shape.c). */
bool xg__broadcast_shape(const char *op, const xg_tensor *a,
                         const xg_tensor *b, int64_t *shape, int *ndim);

/* ---- autograd ----------------------------------------------------------- */

/* Computes the gradients of a node's inputs from the gradient of its output.
 * grads_in[i] is set to a new tensor or left NULL (no gradient for that
 * input). Runs with grad recording off inside a scope of its own that
 * xg_backward closes as soon as the rule returns, so it need not free
 * anything; the tensors it sets in grads_in are taken out of that scope
 * (or, when the rule did not make them, such as grad_out passed through,
 * referenced once more). */
typedef xg_status (*xg_backward_fn)(xg_node *node, xg_tensor *grad_out,
                                    xg_tensor **grads_in);

/* How a tensor was made: the op, its inputs, what its backward rule needs.
 * One allocation holds the node, its two tensor lists and its arguments. */
struct xg_node {
    const char *name;        /* for errors: the op's name */
    xg_op op;                /* the kernel op it ran, or XG_OP_none */
    xg_backward_fn backward;
    int n_inputs, n_saved;
    unsigned values_unused;  /* inputs held as edges only (xg_record) */
    xg_tensor **inputs;      /* n_inputs, one reference each */
    xg_tensor **saved;       /* n_saved, one reference each */
    const void *args;        /* the op's parameter struct, or NULL */
    /* Set by the walk while the rule runs: the node is freed right after
     * it (xg_backward_ex without retain_graph); see xg__node_drop_saved. */
    bool frees_after;
};

/* For a backward rule done with saved tensor k before the rule ends (a
 * fused op's saved output, once the gradient through it is taken):
 * releases it at once when the walk frees the node after this rule, so
 * that it is not held through the rest of the rule; keeps it when the
 * graph is retained for another backward. */
void xg__node_drop_saved(xg_node *node, int k);

/* True when grad recording is on and one of the inputs requires grad. */
bool xg__needs_grad(xg_tensor *const *inputs, int n);

/* True when a backward rule may write its result over its grad_out g
 * instead of into a new tensor: g is a dense f32 tensor that nothing but
 * the walk's pending gradient holds (one reference, no scope, no node, no
 * other tensor on its storage), so no one can read its values after the
 * rule. Gradients that a rule made fresh are such; one passed through to
 * several inputs, a view, or a tensor a node or the caller holds is not. */
static inline bool xg__grad_reusable(const xg_tensor *g)
{
    return g && g->refs == 1 && g->edge_refs == 0 && !g->scope && !g->node &&
           !g->requires_grad && g->dtype == XG_F32 && g->storage &&
           g->storage->refs == 1 && !g->dense && xg__is_dense(g);
}

/* What an op records for its backward rule; see xg__record. */
typedef struct xg_record {
    xg_op op;                /* the kernel op, or XG_OP_none (composite) */
    const char *name;        /* NULL: the op's name */
    xg_backward_fn backward;
    xg_tensor *const *inputs; /* the tensors gradients flow to (no NULLs) */
    int n_inputs;
    /* Bit i set: the rule never reads input i's values or storage, only
     * its shape, dtype and requires_grad (add's inputs, a pool's input), so
     * the node need not keep them: the input's storage is freed once no
     * other holder remains (see xg_tensor.edge_refs). Inputs 0..31. */
    unsigned values_unused;
    xg_tensor *const *saved; /* other tensors the rule reads: indices, */
    int n_saved;             /* labels; the node takes a reference each */
    bool save_output;        /* also keep out's values, as the last saved */
    const void *args;        /* the op's parameter struct, copied into the */
    size_t args_size;        /* node (read back through node->args) */
} xg_record;

/* The recording helper every op front-end uses: when grad recording is on
 * and an input requires grad, attaches a node to `out` (which becomes a
 * non-leaf requiring grad). The node holds a reference on every input and
 * saved tensor; with save_output it keeps an alias of out (not out itself,
 * which would keep itself alive). Returns out; NULL passes through; on host
 * OOM out is freed and NULL returned with the error set. */
xg_tensor *xg__record(xg_tensor *out, const xg_record *r);

/* Appends t to a growable list (*list, *n used, *cap allocated); false on
 * host OOM, with the list unchanged. */
bool xg__tensor_list_push(xg_tensor ***list, int *n, int *cap, xg_tensor *t);

/* Frees a node: each reference it holds goes onto the caller's release
 * worklist (or is released at once when the list cannot grow). Ignores
 * xg__graph_freed. */
void xg__node_free(xg_node *node, xg_tensor ***pending, int *n, int *cap);

/* The node of a graph result whose own node a backward that does not keep
 * the graph has freed (xg_backward_ex(loss, false)): no inputs, and a rule
 * that fails with XG_ERR_STATE, so a second backward through it is an
 * error rather than a silently missing gradient. Never freed. */
extern xg_node xg__graph_freed;

/* Thread-local random generator: reserves `blocks` Philox counters and
 * returns the first. */
uint64_t xg__rng_take(uint64_t blocks, uint64_t *seed);

#endif
