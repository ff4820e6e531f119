/* The dispatch table: what a backend must provide.
 *
 * This header is internal to libxgrad (it is not installed). The core in api/
 * checks every argument, computes shapes and strides, and then calls a
 * backend through one `struct xg_backend`. A backend therefore never sees a
 * malformed call: sizes are positive, buffers are large enough, axes are in
 * range. Kernels may assert such invariants; they must not re-validate them.
 *
 * Threading: the core calls a device from one thread at a time.
 * Ordering: calls on one device take effect in the order they are made.
 * A backend may queue work (it should: data stays on the device, and the host
 * waits only when it reads) and must make download() observe every earlier
 * call.
 * Aliasing: no buffer of a call overlaps another buffer of the same call
 * (but for a NORM call's unused weight and bias; see xg_norm_args).
 * Outputs are fresh allocations the kernel only writes, except in the ADAM
 * and SGD families, whose outputs (parameter and optimizer state) hold
 * values the kernel reads and updates in place, element by element, in
 * the STRIDED family, which writes only the elements it addresses, and in
 * the UNARY_BACKWARD family, whose out[0] may be its in[1] (the gradient,
 * which a backward rule no longer needs: each element is read before it is
 * overwritten, by the same work item).
 */
#ifndef XGRAD_BACKEND_H
#define XGRAD_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xgrad.h"

/* ---- the op list ------------------------------------------------------- */

typedef enum xg_op {
    XG_OP_none = -1, /* "no op": the BACKWARD column's empty value */
#define XG_OP(name, family, in, out, backward) XG_OP_##name,
#include "ops.def"
#undef XG_OP
    XG_OP_COUNT
} xg_op;

typedef enum xg_op_family {
#define XG_FAMILY(name, args) XG_FAMILY_##name,
#include "ops.def"
#undef XG_FAMILY
    XG_FAMILY_COUNT
} xg_op_family;

#define XG_KERNEL_MAX_IN 8
#define XG_KERNEL_MAX_OUT 8

/* Static facts about one op, from its row in ops.def. */
typedef struct xg_op_info {
    const char *name;
    xg_op_family family;
    int n_in, n_out;
    /* The dtype rule of each buffer ('T', 'f', 'i' or 'U'; see ops.def), inputs
     * then outputs; NUL-terminated. */
    const char *in_rule, *out_rule;
    xg_op backward; /* XG_OP_none when there is none */
} xg_op_info;

/* Indexed by xg_op; XG_OP_COUNT entries. Defined in api/core/op_table.c. */
extern const xg_op_info xg_op_table[XG_OP_COUNT];

/* The family names ("UNARY", ...), indexed by xg_op_family. */
extern const char *const xg_family_names[XG_FAMILY_COUNT];

/* The dtype that rule letter `rule` gives when the op's element type is
 * `t`: t for 'T' and 'U' (any dtype, given by the call), XG_F32 for 'f',
 * XG_I32 for 'i'. */
xg_dtype xg_op_rule_dtype(char rule, xg_dtype t);

/* True when `dtypes` (n_in inputs then n_out outputs) is op's signature
 * instantiated with element type `t`; a 'U' position accepts any dtype. */
bool xg_op_signature_is(xg_op op, const xg_dtype *dtypes, xg_dtype t);

/* The support a backend without 16-bit arithmetic answers: every op in f32,
 * a cast between any two dtypes, and the ops that only move bits (fill,
 * copy, copy_strided) in bf16 and f16; the core widens the rest. */
bool xg_op_f32_or_16bit_move(xg_op op, const xg_dtype *dtypes);

/* ---- kernel arguments, one struct per family --------------------------- */

/* UNARY, UNARY_BACKWARD, SCALAR: n elements; `scalar` for SCALAR only. */
typedef struct xg_ew_args {
    int64_t n;
    float scalar;
} xg_ew_args;

/* BINARY: out is contiguous with shape[0..ndim-1] (row-major, last axis
 * fastest). Element (i0..i{ndim-1}) of the output reads
 * a[sum_k i_k * stride_a[k]] and b[sum_k i_k * stride_b[k]]; a stride of 0
 * broadcasts. ndim is 1..XG_MAX_DIMS after the core merges axes that can be
 * merged, n is the product of shape. */
typedef struct xg_binary_args {
    int ndim;
    int64_t n;
    int64_t shape[XG_MAX_DIMS];
    int64_t stride_a[XG_MAX_DIMS];
    int64_t stride_b[XG_MAX_DIMS];
} xg_binary_args;

/* REDUCE, REDUCE_BACKWARD: the input is viewed as [outer, dim, inner],
 * contiguous; the reduced output is [outer, inner]. All three are >= 1. */
typedef struct xg_reduce_args {
    int64_t outer, dim, inner;
} xg_reduce_args;

/* ROWS: [rows, cols], contiguous; rows, cols >= 1.
 * ignore_index (cross_entropy and its backward only; the other ops leave
 * it unread): a row whose label equals it is ignored, with loss 0,
 * counted 0 and dx 0 whatever g holds; it may lie outside [0, cols)
 * (PyTorch's default, XG_IGNORE_INDEX = -100). A label that is neither
 * ignore_index nor in [0, cols) gives NaN. */
typedef struct xg_rows_args {
    int64_t rows, cols;
    int32_t ignore_index;
} xg_rows_args;

/* GEMM: for b in [0, batch):
 *   C_b[m, n] = alpha * sum_k opA(A_b)[m, k] * opB(B_b)[k, n]
 * A_b starts at element b * stride_a of in[0] (stride 0 broadcasts one
 * matrix over the batch), likewise B_b (in[1]) and C_b (out[0],
 * stride_c = M * N). opA(A) = A, stored [M, K] row-major, when trans_a is 0;
 * A^T with A stored [K, M] when trans_a is 1. Likewise B: [K, N] or, with
 * trans_b, stored [N, K]. C is overwritten (no beta). */
typedef struct xg_gemm_args {
    int64_t batch, m, n, k;
    int64_t stride_a, stride_b, stride_c;
    int trans_a, trans_b;
    float alpha;
} xg_gemm_args;

/* STRIDED (copy_strided): for every index (i_0 .. i_{ndim-1}) of shape,
 *   out[out_offset + sum_k i_k out_stride[k]]
 *       = in[in_offset + sum_k i_k in_stride[k]]
 * Strides and offsets count elements and are >= 0; an input stride of 0
 * repeats an element (broadcast). The addressed output elements are
 * distinct, and the others keep their values: out[0] is updated in place.
 * This is how a view becomes contiguous, and how a piece is written into
 * its slot of a larger tensor. ndim 1..XG_MAX_DIMS, n = product of shape. */
typedef struct xg_strided_args {
    int ndim;
    int64_t n;
    int64_t shape[XG_MAX_DIMS];
    int64_t in_stride[XG_MAX_DIMS], out_stride[XG_MAX_DIMS];
    int64_t in_offset, out_offset;
} xg_strided_args;

/* FILL (fill, copy): n elements; `value` for fill. */
typedef struct xg_fill_args {
    int64_t n;
    float value;
} xg_fill_args;

/* RNG: element i of the output is drawn from Philox4x32-10 with
 * key = (seed low 32 bits, seed high 32 bits) and counter
 * (c0, c1, c2, c3) = (low 32 bits of (offset + i/4), high 32 bits, 0, 0);
 * it takes output word (i % 4) of that block. Uniform: u = (word >> 8) *
 * 2^-24 in [0, 1), out = a + (b - a) * u. Normal (Box-Muller): for the pair
 * (2j, 2j+1) of one block, u1 = ((w[2j] >> 8) + 1) * 2^-24 in (0, 1],
 * u2 = (w[2j+1] >> 8) * 2^-24, r = sqrt(-2 ln u1), out[2j] = a + b * r *
 * cos(2 pi u2), out[2j+1] = a + b * r * sin(2 pi u2). `a`, `b` are
 * (low, high) for uniform and (mean, std) for normal. The reference is
 * backends/cpu; float rounding of cos/sin/log may differ slightly between
 * backends, the bits fed to them may not. */
typedef struct xg_rng_args {
    int64_t n;
    uint64_t seed, offset;
    float a, b;
} xg_rng_args;

/* ADAM: PyTorch's Adam/AdamW for one parameter, step t >= 1:
 *   g = grad; if (!decoupled && weight_decay) g += weight_decay * p
 *   if (decoupled) p *= 1 - lr * weight_decay
 *   m = beta1 * m + (1 - beta1) * g
 *   v = beta2 * v + (1 - beta2) * g * g
 *   p -= lr / bias1 * m / (sqrt(v) / sqrt(bias2) + eps)
 * with bias1 = 1 - beta1^t and bias2 = 1 - beta2^t computed by the core. */
typedef struct xg_adam_args {
    int64_t n;
    float lr, beta1, beta2, eps, weight_decay;
    float bias1, bias2;
    int decoupled;
} xg_adam_args;

/* SGD: PyTorch's SGD for one parameter:
 *   g = grad + weight_decay * p
 *   if (momentum != 0) {
 *       buf = first ? g : momentum * buf + (1 - dampening) * g
 *       g = nesterov ? g + momentum * buf : buf
 *   }
 *   p -= lr * g
 * out[1] (buf) is NULL and untouched when momentum is 0. */
typedef struct xg_sgd_args {
    int64_t n;
    float lr, momentum, dampening, weight_decay;
    int nesterov, first;
} xg_sgd_args;

/* CONV: PyTorch's conv2d without bias. x [n, c_in, h, w], weight
 * [c_out, c_in / groups, kh, kw], y [n, c_out, oh, ow], all contiguous, with
 *   y[b, o, i, j] = sum over c in o's group, p < kh, q < kw of
 *       x[b, c, i * stride_h - pad_h + p * dil_h, j * stride_w - pad_w + q * dil_w]
 *       * weight[o, c - group_start, p, q]
 * where x outside the image is 0, and oh = (h + 2 pad_h - dil_h (kh - 1)
 * - 1) / stride_h + 1 (likewise ow). The backward kernels compute dx
 * (shape of x) from dy and weight, and dweight (shape of weight) from x and
 * dy, overwriting their output. All sizes >= 1; c_in and c_out are
 * multiples of groups; h + 2 pad_h and dil_h (kh - 1) + 1 stay below 2^31
 * (likewise w), so window coordinates fit an int. */
typedef struct xg_conv_args {
    int64_t n, c_in, h, w, c_out, oh, ow;
    int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} xg_conv_args;

/* POOL: x [n, c, h, w] -> y [n, c, oh, ow] over kh x kw windows at
 * (i * stride_h - pad_h, j * stride_w - pad_w), oh = (h + 2 pad_h - kh) /
 * stride_h + 1 (floor; likewise ow); pad <= kernel / 2 so every window
 * holds at least one pixel of x; h + 2 pad_h < 2^31 (likewise w), and for
 * max_pool2d h * w < 2^31.
 * max_pool2d: positions outside x never win; out[1] gets the winner's index
 * in its input plane (row * w + col), the first one on ties; NaN wins.
 * max_pool2d_backward: dx[b, c, k] = sum of dy over the windows whose index
 * is k (windows may overlap).
 * avg_pool2d: sum over the window / (kh * kw), padding counted as zeros
 * (PyTorch's count_include_pad=True); avg_pool2d_backward spreads
 * dy / (kh * kw) back over each window, overwriting dx. The divisor is the
 * float product (float)kh * (float)kw: kh * kw may pass INT_MAX. */
typedef struct xg_pool_args {
    int64_t n, c, h, w, oh, ow;
    int kh, kw, stride_h, stride_w, pad_h, pad_w;
} xg_pool_args;

/* DROPOUT: out[i] = u_i < p ? 0 : in[i] * (1 / (1 - p)), where u_i is
 * element i of rand_uniform(low 0, high 1) with this seed and offset (see
 * xg_rng_args); 0 <= p < 1. */
typedef struct xg_dropout_args {
    int64_t n;
    uint64_t seed, offset;
    float p;
} xg_dropout_args;

/* INDEX: selection along axis `axis` of x by i32 indices. x is contiguous
 * with shape x_shape[0..ndim-1]; the selection (the forward's output, the
 * backward's g) is contiguous with shape shape[0..ndim-1], where shape[k]
 * <= x_shape[k] for every k != axis. The index entry that serves selection
 * element c = (c_0..c_{ndim-1}) is index[sum_k c_k * index_stride[k]]
 * (gather: the index has the selection's shape; index_select: stride 1
 * along the axis, 0 elsewhere), and its value v(c) lies in [0,
 * x_shape[axis]): the core checks every index before the launch.
 *   index_select, gather: in x, index; out[c] = x[c with c_axis := v(c)].
 *   *_backward: in g (the selection's shape), index; out dx (x_shape):
 *     dx[d] = the sum of g[c] over the c with c_k = d_k for k != axis and
 *     v(c) = d_axis, added in increasing c_axis to 0.0f; 0 where no index
 *     points. A line of dx along the axis (its elements sharing every
 *     other coordinate) gets its contributions from one line of g only,
 *     so the kernels give each line to one thread: no atomics, and every
 *     backend forms the same sums in the same order (identical bits).
 * n is the number of elements of out[0]. ndim is 1..XG_MAX_DIMS after the
 * core merges axes that can be merged. */
typedef struct xg_index_args {
    int ndim, axis;
    int64_t n;
    int64_t x_shape[XG_MAX_DIMS];
    int64_t shape[XG_MAX_DIMS];
    int64_t index_stride[XG_MAX_DIMS];
} xg_index_args;

/* WHERE: out is contiguous with shape[0..ndim-1] (n elements); in[i] is
 * read at element sum_k i_k * stride[i][k] (0 broadcasts), as in
 * xg_binary_args. A mask element is true when it is nonzero.
 *   where: in a, b, cond; out = cond ? a : b.
 *   masked_fill: in x, mask; out = mask ? value : x. */
typedef struct xg_where_args {
    int ndim;
    int64_t n;
    int64_t shape[XG_MAX_DIMS];
    int64_t stride[3][XG_MAX_DIMS];
    float value;
} xg_where_args;

/* ATTENTION: bh = B * H independent heads; q, out, dout, dq [bh, tq, d],
 * k, v, dk, dv [bh, tk, d], lse and delta [bh, tq] (f32), all contiguous;
 * all sizes >= 1. Query i sees key j iff !causal or j <= i + causal_offset,
 * and the core clamps causal_offset to [-tq, tk] (beyond that nothing
 * changes). With s_ij = scale * q_i . k_j over the keys query i sees:
 *   attention: lse_i = log sum_j exp(s_ij) (-inf when i sees no key),
 *     out_i = sum_j pdrop_ij v_j (0 when i sees no key), where
 *     p_ij = exp(s_ij - lse_i) and pdrop_ij = p_ij * m_ij / (1 - p).
 *   attention_backward_q: delta_i = dout_i . out_i, and
 *     dq_i = scale * sum_j ds_ij k_j, with dp_ij = (dout_i . v_j) m_ij /
 *     (1 - p) and ds_ij = p_ij (dp_ij - delta_i), p_ij recomputed from
 *     lse (0 where lse_i is -inf).
 *   attention_backward_kv: dk_j = scale * sum_i ds_ij q_i and
 *     dv_j = sum_i pdrop_ij dout_i, over the queries that see key j.
 * Dropout: m_ij = 1 when p is 0; otherwise m_ij = 0 iff u < p, where u is
 * element (bh_index * tq + i) * tk + j of rand_uniform(0, 1) with this
 * seed and offset (struct xg_rng_args), so every backend draws the same
 * mask; 0 <= p < 1. The kernels keep no [tq, tk] scores: the forward runs
 * an online softmax over tiles of keys, the backward recomputes p_ij from
 * lse, the dq pass looping over keys per query row and the dk/dv pass over
 * queries per key row (no atomics: fixed summation orders). */
typedef struct xg_attention_args {
    int64_t bh, tq, tk, d;
    float scale;
    int causal;
    int64_t causal_offset;
    float p;
    uint64_t seed, offset;
} xg_attention_args;
/* NORM: layer norm over the last axis of x [rows, cols], contiguous;
 * rows, cols >= 1; eps >= 0 and finite.
 *   layer_norm: in x, weight [cols], bias [cols]; out y [rows, cols],
 *     mean [rows], rstd [rows] (f32):
 *       mean = sum_j x_j / cols, var = sum_j (x_j - mean)^2 / cols
 *       (two passes, the biased variance), rstd = 1 / sqrt(var + eps),
 *       y_j = (x_j - mean) * rstd * w_j + b_j
 *     with w_j = 1 when has_weight is 0 and b_j = 0 when has_bias is 0.
 *   layer_norm_backward: in x, weight, g [rows, cols], mean, rstd; out dx:
 *     with xhat_j = (x_j - mean) * rstd and gw_j = g_j * w_j,
 *       dx_j = rstd * (gw_j - mean_k(gw_k) - xhat_j * mean_k(gw_k xhat_k)).
 *   layer_norm_backward_affine: in x, g, mean, rstd; out dweight [cols] =
 *     sum_r g[r, j] * xhat[r, j], dbias [cols] = sum_r g[r, j]. Each column
 *     is one sum over rows 0, 1, ... in increasing order, starting from
 *     0.0f, with xhat = (x - mean[r]) * rstd[r] and no fused multiply-add:
 *     every backend gives the same bits (no float atomics).
 * An absent weight or bias (has_weight or has_bias 0) is passed as in[0]
 * again (every binding then holds a valid buffer) and never read; this is
 * the one place where buffers of a call coincide, read-only. */
typedef struct xg_norm_args {
    int64_t rows, cols;
    float eps;
    int has_weight, has_bias;
} xg_norm_args;

/* CAST: out[i] = in[i] converted from in's dtype to out's, n elements,
 * both contiguous. Float to float rounds to nearest even (f16 overflow
 * gives +-Inf, NaN stays a quiet NaN with its sign; the host conversions
 * xg_f32_to_bf16 etc. are the reference, bit for bit); float to i32
 * truncates toward zero (NaN or out of range: unspecified); i32 to float
 * rounds to nearest even. Same dtype: a copy. */
typedef struct xg_cast_args {
    int64_t n;
} xg_cast_args;

/* One buffer of a kernel call: a whole device allocation made by the same
 * backend's alloc(), element 0 at offset 0, holding elements of `dtype`
 * (the op's rule for this position, instantiated; see ops.def). Unused
 * positions are {NULL, 0}. */
typedef struct xg_buffer xg_buffer;
typedef struct xg_operand {
    xg_buffer *buf;
    xg_dtype dtype;
    /* The buffer's size in bytes when the core made the operand (xg__arg;
     * the core's widening of 16-bit ops reads it); kernels ignore it. */
    size_t bytes;
} xg_operand;

/* One kernel call: the op, its buffers (in[0 .. n_in-1], out[0 ..
 * n_out-1] as ops.def declares them) and its family's parameters. */
typedef struct xg_kernel_call {
    xg_op op;
    xg_operand in[XG_KERNEL_MAX_IN];
    xg_operand out[XG_KERNEL_MAX_OUT];
    union {
        xg_ew_args ew;
        xg_binary_args binary;
        xg_reduce_args reduce;
        xg_rows_args rows;
        xg_gemm_args gemm;
        xg_strided_args strided;
        xg_fill_args fill;
        xg_rng_args rng;
        xg_adam_args adam;
        xg_sgd_args sgd;
        xg_conv_args conv;
        xg_pool_args pool;
        xg_dropout_args dropout;
        xg_index_args index;
        xg_where_args where;
        xg_attention_args attention;
        xg_norm_args norm;
        xg_cast_args cast;
    } p;
} xg_kernel_call;

/* ---- devices ----------------------------------------------------------- */

/* What a backend reports about one of its devices. */
typedef struct xg_device_desc {
    char name[256];        /* the driver's device name */
    int is_software;       /* 1 for CPU implementations (lavapipe, PoCL) */
    uint64_t memory_bytes; /* device memory, 0 if unknown */
    /* 16-bit float capabilities, space-separated names (xgrad-info shows
     * them); "" for none. */
    char features[128];
} xg_device_desc;

/* A backend's open device. Backends embed this as the first member of their
 * own device struct and cast. */
typedef struct xg_backend_device {
    const struct xg_backend *backend;
    int index;
    xg_device_desc desc;
} xg_backend_device;

typedef xg_status (*xg_kernel_fn)(xg_backend_device *dev,
                                  const xg_kernel_call *call);

/* A backend. Every function returns XG_OK or a negative xg_status and, on
 * error, sets the message with xg_set_error() (api/core_impl.h). */
typedef struct xg_backend {
    const char *name; /* "cpu", "opencl", "vulkan" */

    /* Lists devices: writes up to `cap` descriptions to `out` and the total
     * count to *count. XG_ERR_NO_DEVICE (with a message saying why: no
     * driver, no platform) when the backend cannot enumerate at all. */
    xg_status (*enumerate)(xg_device_desc *out, int cap, int *count);

    /* Opens device `index` (0-based, as enumerate lists them). The caller
     * owns *out and releases it with close(). */
    xg_status (*open)(int index, xg_backend_device **out);
    /* Waits for queued work and releases the device and everything cached on
     * it. Every buffer must already have been freed. */
    void (*close)(xg_backend_device *dev);

    /* Allocates `bytes` (> 0) of device memory; contents undefined.
     * XG_ERR_DEVICE_OOM when the device is out of memory,
     * XG_ERR_TOO_LARGE when one allocation of that size is impossible. */
    xg_status (*alloc)(xg_backend_device *dev, size_t bytes, xg_buffer **out);
    /* Returns a buffer (NULL is ignored). Work already queued on it still
     * completes correctly. */
    void (*free)(xg_backend_device *dev, xg_buffer *buf);
    /* Copies `bytes` from host memory into the buffer at byte `offset`. The
     * host memory may be reused as soon as this returns. */
    xg_status (*upload)(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                        const void *src, size_t bytes);
    /* Waits for every earlier call, then copies `bytes` from byte `offset`
     * of the buffer to host memory. */
    xg_status (*download)(xg_backend_device *dev, xg_buffer *buf,
                          size_t offset, void *dst, size_t bytes);
    /* Waits for every earlier call to finish. */
    xg_status (*sync)(xg_backend_device *dev);

    /* Whether the device runs `op` on buffers of these dtypes (n_in inputs
     * then n_out outputs, as ops.def orders them). The core asks before
     * every launch and refuses a combination answered false with "op X
     * with dtype Y is not implemented on backend Z"; the conformance suite
     * tests every combination answered true, and fails when an f32 op is
     * answered false. Must not fail or block. */
    bool (*supports)(const xg_backend_device *dev, xg_op op,
                     const xg_dtype *dtypes);

    /* One kernel per op family, indexed by xg_op_family (generated from
     * the XG_FAMILY rows of ops.def, so no backend lists ops). It runs any
     * op of its family that supports() accepted; work may be queued. */
    xg_kernel_fn kernels[XG_FAMILY_COUNT];
} xg_backend;

/* The backends built into this library; a backend that was not built (meson
 * option off, or no driver headers) is not declared. */
extern const xg_backend xg_backend_cpu;
#ifdef XGRAD_HAVE_OPENCL
extern const xg_backend xg_backend_opencl;
#endif
#ifdef XGRAD_HAVE_VULKAN
extern const xg_backend xg_backend_vulkan;
#endif

/* xg_set_error (api/xgrad.h) is how a backend reports an error:
 * `return xg_set_error(XG_ERR_DEVICE_OOM, "...")`. */

/* ---- host files and settings (api/core/host_files.c) ------------------- */

/* The path of cache file `name` ("vulkan-....bin") in $XDG_CACHE_HOME/xgrad,
 * or $HOME/.cache/xgrad when XDG_CACHE_HOME is unset or relative. False
 * when neither is set or the path does not fit in `cap`. */
bool xg__cache_file_path(const char *name, char *path, size_t cap);

/* The contents of the file at `path` (malloc'd; the caller frees them), or
 * NULL when it is missing, empty, unreadable or larger than max_bytes;
 * *size gets their length. */
void *xg__cache_file_read(const char *path, size_t max_bytes, size_t *size);

/* Writes the n_parts pieces back to back as the file at `path` (from
 * xg__cache_file_path), making the cache folder if needed: through a
 * temporary file renamed into place, so a concurrent reader never sees
 * half a file. False on any failure, nothing left behind. */
bool xg__cache_file_write(const char *path, const void *const *parts,
                          const size_t *sizes, int n_parts);

/* Environment variable `name` as a byte count: digits with an optional K,
 * M or G (powers of 1024). XG_OK with *out set; XG_ERR_NOT_FOUND (no error
 * set) when it is unset or empty; XG_ERR_INVALID_ARG, with the error set,
 * when it is malformed, too large, or 0 and !allow_zero. */
xg_status xg__env_bytes(const char *name, bool allow_zero, uint64_t *out);

/* *out = the index among names[0 .. count - 1] of environment variable
 * `name`'s value, or `fallback` when it is unset or empty. Any other
 * value is XG_ERR_INVALID_ARG, with the error set naming the variable and
 * the values it takes (*out is then fallback). */
xg_status xg__env_choice(const char *name, const char *const *names,
                         int count, int fallback, int *out);

#endif
