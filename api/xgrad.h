/* xgrad: train neural networks in C on any GPU vendor, or on the CPU.
 *
 * One backend-neutral API. Tensors live on a device (CPU, OpenCL or Vulkan,
 * picked with XGRAD_BACKEND); ops queue work there and the host waits only
 * when it reads values.
 *
 * Conventions that hold for every function below:
 * - Functions that do something return xg_status: XG_OK (0) or a negative
 *   code. Functions that make a tensor or object return it, or NULL on error.
 *   In both cases xg_last_error() then says what went wrong and where.
 * - An op given NULL returns NULL and keeps the error that produced the NULL,
 *   so a chain such as xg_relu(xg_add(xg_matmul(x, w), b)) needs one check.
 * - Ownership: ops never free their inputs. A tensor made while a scope is
 *   open (xg_scope_begin) belongs to that scope and is freed by
 *   xg_scope_end; otherwise the caller owns it and frees it with
 *   xg_tensor_free. Tensors and modules registered on a module belong to it.
 *   Pointers described as "borrowed" must not be freed by the caller.
 * - Nothing here aborts or exits on input from a caller or a file.
 * - Threads: a device may be used by several threads at once (the default
 *   device that threads without a device of their own share, or one a
 *   program opened): every call into its backend holds the device's lock,
 *   so their work is serialised on it. Errors, scopes, the grad mode, the
 *   autocast dtype, the random generator and the current device are per
 *   thread. Tensors, modules, optimizers, loss scalers, loaders and files
 *   are not: use each from one thread at a time (two threads training one
 *   model need their own synchronisation).
 */
#ifndef XGRAD_H
#define XGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XGRAD_VERSION "0.1.0"

/* ===== Errors ============================================================ */

/* Every status: X(NAME, code, description). The enum and xg_status_str()
 * are both made from this one list. */
#define XG_STATUS_LIST(X)                                                    \
    X(OK, 0, "ok")                                                           \
    /* a bad value: NULL, out-of-range axis, ... */                          \
    X(ERR_INVALID_ARG, -1, "invalid argument")                               \
    /* shapes that do not fit together */                                    \
    X(ERR_SHAPE, -2, "shape mismatch")                                       \
    /* wrong element type for this use */                                    \
    X(ERR_DTYPE, -3, "wrong element type")                                   \
    /* host memory exhausted */                                              \
    X(ERR_OUT_OF_MEMORY, -4, "out of host memory")                           \
    /* device memory exhausted; the process goes on */                       \
    X(ERR_DEVICE_OOM, -5, "device out of memory")                            \
    /* the device stopped working; sticky */                                 \
    X(ERR_DEVICE_LOST, -6, "device lost")                                    \
    /* no driver, platform or device */                                      \
    X(ERR_NO_DEVICE, -7, "no device")                                        \
    /* unknown backend name, device index, file */                           \
    X(ERR_NOT_FOUND, -8, "not found")                                        \
    /* the backend has no kernel for this op and dtype */                    \
    X(ERR_UNSUPPORTED, -9, "not supported by this backend")                  \
    /* reading or writing a file failed */                                   \
    X(ERR_IO, -10, "input/output error")                                     \
    /* a file's contents are malformed */                                    \
    X(ERR_FORMAT, -11, "malformed file")                                     \
    /* a size past what the device or format allows */                       \
    X(ERR_TOO_LARGE, -12, "too large")                                       \
    /* any other driver error; the message has details */                    \
    X(ERR_BACKEND, -13, "backend error")                                     \
    /* call not valid now (e.g. scope misuse) */                             \
    X(ERR_STATE, -14, "invalid state")

typedef enum xg_status {
#define XG_STATUS_ENUM(name, code, text) XG_##name = code,
    XG_STATUS_LIST(XG_STATUS_ENUM)
#undef XG_STATUS_ENUM
} xg_status;

/* A static, human-readable name for a status code ("device out of memory").
 * Unknown codes give "unknown status". */
const char *xg_status_str(xg_status status);

/* The calling thread's last error message, e.g.
 * "matmul: inner dimensions differ: [64,784] x [128,10]". Empty string if
 * none. Borrowed; valid until the thread's next xgrad call. */
const char *xg_last_error(void);

/* The status that went with xg_last_error(); XG_OK if none. */
xg_status xg_last_status(void);

/* Forgets the calling thread's last error. */
void xg_clear_error(void);

/* Sets the thread's error status and message (printf-style) and returns
 * `status`, so code built on xgrad (data loaders, user-defined modules,
 * backends) can report errors the way the library does:
 * `return xg_set_error(XG_ERR_FORMAT, "%s: bad header", path);`. */
xg_status xg_set_error(xg_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ===== Devices and backends ============================================== */

typedef struct xg_device xg_device;

/* Opens a device. `spec` is "cpu", "opencl", "vulkan" or "auto", with an
 * optional ":INDEX" (e.g. "vulkan:1"); NULL means the XGRAD_BACKEND
 * environment variable, or "auto" when it is unset. "auto" picks a hardware
 * GPU through Vulkan, else through OpenCL, else the CPU; software devices
 * (lavapipe, PoCL) are used only when named. The caller owns *out and closes
 * it with xg_device_close.
 * Memory: the device keeps its own account of the bytes its live tensors
 * hold, and refuses an allocation past the memory the driver reports (some
 * drivers hand out more and fail later, or let the system kill the
 * process) with XG_ERR_DEVICE_OOM; XGRAD_MEMORY_LIMIT (bytes, optionally
 * with K, M or G) lowers that limit.
 * 16-bit ops: a bf16 or f16 op that the backend has no kernel for runs on
 * f32 copies of its buffers, the output rounded once (widening; see
 * xg_device_supports_natively); XGRAD_WIDEN=all widens every 16-bit op
 * that could be (for testing that path and comparing it; "native" or unset:
 * only what must be).
 * Start-up: GPU backends compile their kernels on first use and keep what
 * the driver compiled in $XDG_CACHE_HOME/xgrad ($HOME/.cache/xgrad when
 * XDG_CACHE_HOME is unset): vulkan-*.bin (the pipeline cache) and
 * opencl-*.bin (the OpenCL kernel program's binary), one file per device
 * and driver, so later runs start faster. A file from another driver or
 * xgrad version, or a damaged one, is ignored and rewritten; deleting the
 * directory is always safe. OpenCL matrix products and convolutions run
 * on xgrad's own GEMM kernel on CPU devices such as PoCL (it is in the
 * cached program) and on CLBlast on GPUs, whose drivers cache the kernels
 * CLBlast compiles in every new process (without such a cache: seconds
 * to a minute); XGRAD_OPENCL_GEMM=xgrad or clblast picks one for every
 * device, and the device's name (xg_device_name) says which is in use.
 * The CPU backend keeps freed buffers for reuse, but holds at most the most
 * bytes its tensors held at once plus a slack: XGRAD_CPU_CACHE bytes
 * (optionally with K, M or G; 0 returns every block that a new request
 * cannot reuse), by default an eighth of that peak and at least 64 MiB.
 * Errors: XG_ERR_NOT_FOUND for an unknown name or index (the message lists
 * what exists), XG_ERR_NO_DEVICE when the backend has no driver or device,
 * XG_ERR_INVALID_ARG for a malformed XGRAD_MEMORY_LIMIT, XGRAD_WIDEN,
 * XGRAD_OPENCL_GEMM or (CPU) XGRAD_CPU_CACHE. */
xg_status xg_device_open(const char *spec, xg_device **out);

/* The device memory that tensors hold, in bytes: what live tensors hold
 * now (in_use), the most they held at once since the device was opened or
 * since xg_device_reset_peak_memory (peak), and the limit allocations are
 * refused past (limit; 0 when the driver reports none and
 * XGRAD_MEMORY_LIMIT is unset). The f32 temporaries of a 16-bit op that the
 * backend runs through f32 (xg_device_supports_natively false) count while
 * the op runs. Backends may keep freed blocks for reuse beyond this. */
typedef struct xg_device_memory_info {
    uint64_t in_use, peak, limit;
} xg_device_memory_info;

/* Fills *out for dev. Errors: XG_ERR_INVALID_ARG (NULL argument). */
xg_status xg_device_memory(xg_device *dev, xg_device_memory_info *out);

/* Starts a new peak: sets it to what is in use now. NULL is ignored. */
void xg_device_reset_peak_memory(xg_device *dev);

/* Closes a device. Tensors still alive on it become unusable (reading them
 * fails with XG_ERR_STATE) but may still be freed. NULL is ignored. */
void xg_device_close(xg_device *dev);

/* The calling thread's current device: the one new tensors are made on.
 * When none was set, the first call opens the default device (spec NULL
 * above); it stays open until xg_shutdown. Returns NULL, with the error, if
 * it cannot be opened; that failure is remembered, and returned at once by
 * later calls, until xg_shutdown (which forgets it, so a program that
 * changed XGRAD_BACKEND can try again). Borrowed. */
xg_device *xg_device_current(void);

/* Makes `dev` the calling thread's current device (NULL: back to the
 * default device). The caller keeps ownership. */
void xg_device_set_current(xg_device *dev);

/* The backend's name ("cpu", "opencl", "vulkan"). Static string. */
const char *xg_device_backend(const xg_device *dev);

/* The driver's device name, e.g. "NVIDIA H100" or "llvmpipe (LLVM 15)".
 * Borrowed; valid while the device is open. */
const char *xg_device_name(const xg_device *dev);

/* Waits until all queued work on the device is done. */
xg_status xg_device_sync(xg_device *dev);

/* Closes the default device opened by xg_device_current, if any. Call at
 * exit for a clean leak report; harmless when nothing is open. */
void xg_shutdown(void);

/* One device as a backend reports it (for listings such as xgrad-info). */
typedef struct xg_device_info {
    char name[256];
    bool is_software;      /* CPU implementation: lavapipe, PoCL, xgrad cpu */
    uint64_t memory_bytes; /* 0 when unknown */
    /* The device's 16-bit float capabilities as its backend names them,
     * space-separated; "" when it reports none. cpu: "f16c" and
     * "avx512_bf16", the conversion instructions it has; opencl:
     * "cl_khr_fp16", half arithmetic in kernels; vulkan:
     * "storageBuffer16BitAccess" and "shaderFloat16". */
    char features[128];
} xg_device_info;

/* Names of the backends built into this library, in "auto" preference
 * order reversed: "cpu" first. Returns the count; writes up to `cap` static
 * names to `names`. */
int xg_backends(const char **names, int cap);

/* Lists the devices of one backend: up to `cap` entries to `out`, the total
 * to *count. Errors: XG_ERR_NOT_FOUND for a backend not built in,
 * XG_ERR_NO_DEVICE (with the reason) when its driver is missing. */
xg_status xg_backend_devices(const char *backend, xg_device_info *out,
                             int cap, int *count);

/* ===== Tensors =========================================================== */

#define XG_MAX_DIMS 6

typedef enum xg_dtype {
    XG_F32 = 0,  /* 32-bit float: values, parameters, gradients */
    XG_I32 = 1,  /* 32-bit signed integer: labels, argmax results */
    XG_BF16 = 2, /* bfloat16: f32's sign and exponent, 7 mantissa bits */
    XG_F16 = 3,  /* IEEE 754 binary16 (half): 5 exponent, 10 mantissa bits */
} xg_dtype;

/* The dtypes are 0 .. XG_DTYPE_COUNT - 1. */
#define XG_DTYPE_COUNT 4

/* "f32", "i32", "bf16", "f16"; "unknown" for a value outside the enum.
 * Static. */
const char *xg_dtype_name(xg_dtype dtype);

/* Bytes per element: 4 for f32 and i32, 2 for bf16 and f16; 0 for a value
 * outside the enum. */
size_t xg_dtype_size(xg_dtype dtype);

/* True for the floating-point dtypes: f32, bf16 and f16. */
bool xg_dtype_is_float(xg_dtype dtype);

/* Host conversions between f32 and the 16-bit float formats, n elements
 * from src to dst (which must not overlap). Round to nearest, ties to
 * even; a NaN stays a quiet NaN with its sign (its payload's top bits
 * kept); f16 overflow gives +-Inf, and f16 subnormals are produced and
 * read exactly; bf16 keeps f32's subnormals (no flush to zero). The 16-bit
 * values are the formats' bit patterns in host byte order. The same bits on
 * every CPU (hardware conversion instructions are used where present). */
void xg_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void xg_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void xg_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void xg_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/* The kernel ops that backends implement (the rows of the library's op
 * list: "matmul", "conv2d_backward_input", ...), numbered 0 ..
 * xg_op_count() - 1. xg_op_name gives a static name, or NULL out of
 * range. */
int xg_op_count(void);
const char *xg_op_name(int op);

/* Whether `dev` runs kernel op `op` with element type `dtype` (the op's
 * index buffers stay i32 and its f32-only buffers f32; an op with only
 * f32 buffers, such as adam_update, answers for f32 alone). For "cast",
 * whether casts f32 -> dtype and dtype -> f32 both run. A bf16 or f16 op
 * that the backend has no kernel for runs widened (through f32
 * temporaries, rounded once at the output) when the device casts that
 * dtype and runs the op in f32; such ops are answered true too. False for
 * a NULL or closed device and for an op or dtype out of range; never sets
 * an error. Ops answered false fail with XG_ERR_UNSUPPORTED on that
 * device. */
bool xg_device_supports(const xg_device *dev, int op, xg_dtype dtype);

/* Whether `dev` runs op `op` with element type `dtype` in a kernel of its
 * own (true for xg_device_supports' answers but the widened ones). */
bool xg_device_supports_natively(const xg_device *dev, int op,
                                 xg_dtype dtype);

typedef struct xg_tensor xg_tensor;

/* XG_SHAPE(64, 784) expands to the (shape, ndim) argument pair. */
#define XG_SHAPE(...)                                                        \
    ((const int64_t[]){__VA_ARGS__}),                                        \
        ((int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

/* New tensors on the current device. `shape` holds `ndim` (0..XG_MAX_DIMS)
 * sizes, each >= 1; ndim 0 is a scalar (shape may then be NULL). Owned by the open scope, or the
 * caller. Errors: XG_ERR_SHAPE, XG_ERR_INVALID_ARG, XG_ERR_DEVICE_OOM. */

/* Copies numel elements of `dtype` from host `data`. */
xg_tensor *xg_tensor_from_data(const void *data, xg_dtype dtype,
                               const int64_t *shape, int ndim);
xg_tensor *xg_zeros(const int64_t *shape, int ndim);
xg_tensor *xg_ones(const int64_t *shape, int ndim);
xg_tensor *xg_full(const int64_t *shape, int ndim, float value);

/* Random tensors from the thread's generator (see xg_manual_seed): the same
 * seed gives the same values on every backend. Uniform in [low, high);
 * normal with the given mean and standard deviation (std >= 0). */
xg_tensor *xg_rand_uniform(const int64_t *shape, int ndim, float low,
                           float high);
xg_tensor *xg_rand_normal(const int64_t *shape, int ndim, float mean,
                          float std);

/* Seeds the calling thread's random generator (Philox4x32-10) and resets
 * its counter. The default seed is 0. */
void xg_manual_seed(uint64_t seed);

/* The generator's state, for checkpoints: seed and counter. */
void xg_rng_state(uint64_t *seed, uint64_t *offset);
void xg_rng_set_state(uint64_t seed, uint64_t offset);

/* Shape queries. `t` must not be NULL (they return 0 / XG_F32 if it is).
 * xg_tensor_dim accepts a negative axis counted from the end; out of range
 * gives 0. xg_tensor_shape is borrowed, valid while `t` lives. */
int xg_tensor_ndim(const xg_tensor *t);
int64_t xg_tensor_dim(const xg_tensor *t, int axis);
const int64_t *xg_tensor_shape(const xg_tensor *t);
int64_t xg_tensor_numel(const xg_tensor *t);
xg_dtype xg_tensor_dtype(const xg_tensor *t);
xg_device *xg_tensor_device(const xg_tensor *t);

/* Copies the tensor's values to host memory (waits for queued work), in
 * the tensor's own dtype: `bytes` must equal numel * xg_dtype_size(dtype)
 * (2 per element for bf16 and f16, their bit patterns). Errors:
 * XG_ERR_INVALID_ARG, device errors. */
xg_status xg_tensor_read(const xg_tensor *t, void *dst, size_t bytes);

/* Overwrites the tensor's values from host memory, in the tensor's own
 * dtype; `bytes` must equal numel * xg_dtype_size(dtype). Not recorded by
 * autograd. XG_ERR_INVALID_ARG for a view that is not contiguous (write to
 * xg_contiguous(t) instead). */
xg_status xg_tensor_write(xg_tensor *t, const void *src, size_t bytes);

/* xg_tensor_read and xg_tensor_write through f32 host values for a tensor
 * of any float dtype: `count` must equal numel; 16-bit values are widened
 * exactly on read and rounded to nearest even on write (as
 * xg_f32_to_bf16 / xg_f32_to_f16). Errors: XG_ERR_DTYPE (i32),
 * XG_ERR_INVALID_ARG (NULL, count, a view that is not contiguous for
 * write), XG_ERR_OUT_OF_MEMORY, device errors. */
xg_status xg_tensor_read_f32(const xg_tensor *t, float *dst, size_t count);
xg_status xg_tensor_write_f32(xg_tensor *t, const float *src, size_t count);

/* Reads a one-element tensor of any float dtype into *out (widened to
 * f32). */
xg_status xg_tensor_item(const xg_tensor *t, float *out);

/* The same values with a new shape (one size may be -1: inferred). Shares
 * the storage when t is contiguous (a view's values are copied first);
 * differentiable. Errors: XG_ERR_SHAPE if numel differs. */
xg_tensor *xg_reshape(xg_tensor *t, const int64_t *shape, int ndim);

/* A copy of the values on another device (host round-trip). */
xg_tensor *xg_tensor_to(xg_tensor *t, xg_device *dev);

/* The same values, cut off from autograd (shares storage). */
xg_tensor *xg_detach(xg_tensor *t);

/* Releases the caller's (or the scope's) hold on `t`. Memory is returned
 * when nothing else (an autograd graph, a module) still uses it. NULL is
 * ignored. */
void xg_tensor_free(xg_tensor *t);

/* Takes `t` out of its scope: the caller now owns it and frees it with
 * xg_tensor_free. Returns `t` (NULL stays NULL). */
xg_tensor *xg_tensor_keep(xg_tensor *t);

/* ===== Scopes ============================================================ */

typedef struct xg_scope xg_scope;

/* Opens a scope on the calling thread: tensors made until the matching
 * xg_scope_end belong to it. Scopes nest. NULL on host OOM. */
xg_scope *xg_scope_begin(void);

/* Frees every tensor the scope owns and closes it; inner scopes still open
 * are closed first. NULL is ignored. */
void xg_scope_end(xg_scope *scope);

/* ===== Ops ===============================================================
 * Each returns a new tensor (owned as above) or NULL with the error.
 * Binary ops broadcast as NumPy and PyTorch do. Axes may be negative. */

xg_tensor *xg_add(xg_tensor *a, xg_tensor *b);
xg_tensor *xg_sub(xg_tensor *a, xg_tensor *b);
xg_tensor *xg_mul(xg_tensor *a, xg_tensor *b);
xg_tensor *xg_div(xg_tensor *a, xg_tensor *b);

xg_tensor *xg_add_scalar(xg_tensor *a, float s);
xg_tensor *xg_sub_scalar(xg_tensor *a, float s); /* a - s */
xg_tensor *xg_mul_scalar(xg_tensor *a, float s);
xg_tensor *xg_div_scalar(xg_tensor *a, float s); /* a / s */

xg_tensor *xg_neg(xg_tensor *x);
xg_tensor *xg_exp(xg_tensor *x);
xg_tensor *xg_log(xg_tensor *x);
xg_tensor *xg_sqrt(xg_tensor *x);
xg_tensor *xg_relu(xg_tensor *x);
xg_tensor *xg_sigmoid(xg_tensor *x);
xg_tensor *xg_tanh(xg_tensor *x);
xg_tensor *xg_gelu(xg_tensor *x); /* exact (erf) form, as PyTorch's default */
xg_tensor *xg_silu(xg_tensor *x); /* x * sigmoid(x) (SiLU, swish) */
/* GELU's tanh approximation, PyTorch's gelu(approximate='tanh') and GPT-2's
 * gelu_new: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
xg_tensor *xg_gelu_tanh(xg_tensor *x);

/* Matrix product. 1-D and 2-D operands as torch.matmul; with more axes the
 * leading (batch) axes broadcast. xg_matmul_t multiplies op(a) by op(b),
 * where op transposes the last two axes when its flag is set, without
 * making a transposed copy. */
xg_tensor *xg_matmul(xg_tensor *a, xg_tensor *b);
xg_tensor *xg_matmul_t(xg_tensor *a, xg_tensor *b, bool trans_a,
                       bool trans_b);

/* Reductions over one axis (the axis is removed unless keepdim) or over
 * all elements (a scalar). max and argmax return the first maximum; their
 * indices are i32, so an axis longer than 2^31 - 1 elements fails with
 * XG_ERR_TOO_LARGE (max_all, which reduces all of x, likewise). The
 * gradient of max(x, axis) goes to that one index (as torch.max(x, dim));
 * the gradient of max_all is split evenly among tied maxima (as
 * torch.max(x) and torch.amax): x = [1, 3, 3] gives [0, 0.5, 0.5]. */
xg_tensor *xg_sum(xg_tensor *x, int axis, bool keepdim);
xg_tensor *xg_mean(xg_tensor *x, int axis, bool keepdim);
xg_tensor *xg_max(xg_tensor *x, int axis, bool keepdim);
xg_tensor *xg_sum_all(xg_tensor *x);
xg_tensor *xg_mean_all(xg_tensor *x);
xg_tensor *xg_max_all(xg_tensor *x);
xg_tensor *xg_argmax(xg_tensor *x, int axis, bool keepdim); /* XG_I32 */

/* Over the last axis. */
xg_tensor *xg_softmax(xg_tensor *x);
xg_tensor *xg_log_softmax(xg_tensor *x);

/* ===== Views =============================================================
 * A view shares its input's storage: no copy is made, and kernels that need
 * contiguous data copy a view once, when they first read it (again only if
 * the storage was written in place since). Views are differentiable, with
 * PyTorch's gradients. Axes may be negative (counted from the end). Each
 * returns a new tensor owned like any op result, or NULL with
 * XG_ERR_INVALID_ARG (axis or range) or XG_ERR_SHAPE. */

/* Axis reordering. xg_permute: output axis i is input axis perm[i]; perm
 * holds each of 0..ndim-1 once. xg_transpose swaps two axes. */
xg_tensor *xg_transpose(xg_tensor *x, int axis0, int axis1);
xg_tensor *xg_permute(xg_tensor *x, const int *perm, int ndim);

/* Elements start .. start + length - 1 of `axis` (torch.narrow, or
 * x[..., start:start+length, ...]); 0 <= start, 1 <= length,
 * start + length <= the axis' size. */
xg_tensor *xg_narrow(xg_tensor *x, int axis, int64_t start, int64_t length);

/* Element `index` of `axis`, which the result no longer has (torch.select,
 * x[..., index, ...]); a negative index counts from the end. */
xg_tensor *xg_select(xg_tensor *x, int axis, int64_t index);

/* x broadcast to `shape` (torch.Tensor.expand): axes of size 1, and new
 * leading axes, repeat without copying. The gradient sums over them. */
xg_tensor *xg_expand(xg_tensor *x, const int64_t *shape, int ndim);

/* Removes `axis`, which must have size 1 / inserts an axis of size 1 before
 * position `axis` (0 .. ndim). */
xg_tensor *xg_squeeze(xg_tensor *x, int axis);
xg_tensor *xg_unsqueeze(xg_tensor *x, int axis);

/* ===== Joining and splitting =============================================
 * Along `axis` (negative: from the end). Differentiable. */

/* The n tensors (n >= 1; same device, f32, same shape except on `axis`)
 * one after the other along `axis` (torch.cat), in a new tensor. Any
 * number of inputs. Errors: XG_ERR_INVALID_ARG (n, NULL, axis),
 * XG_ERR_SHAPE. */
xg_tensor *xg_concat(xg_tensor *const *xs, int n, int axis);

/* The n tensors (1 <= n <= 4096, same shape) along a new axis at position
 * `axis` (0 .. ndim) (torch.stack). */
xg_tensor *xg_stack(xg_tensor *const *xs, int n, int axis);

/* Views of consecutive pieces of `axis` with the given sizes, which must
 * add up to the axis' size (torch.split with a list of sizes): out[0 ..
 * n-1] get new tensors, owned like op results. On error nothing is left in
 * out. Errors: XG_ERR_INVALID_ARG, XG_ERR_SHAPE. */
xg_status xg_split(xg_tensor *x, int axis, const int64_t *sizes, int n,
                   xg_tensor **out);

/* torch.chunk: `chunks` pieces of ceil(size / chunks) along `axis`, the
 * last smaller, fewer when the size runs out; *n_out gets the count (at
 * most XG_CHUNK_MAX), out must have room for `chunks` tensors. */
#define XG_CHUNK_MAX 1024
xg_status xg_chunk(xg_tensor *x, int chunks, int axis, xg_tensor **out,
                   int *n_out);

/* The same values laid out row-major: a new handle on x's storage when x is
 * contiguous already, else a copy. Differentiable. */
xg_tensor *xg_contiguous(xg_tensor *x);

/* t's values converted to `dtype` (the "cast" kernel): between float
 * dtypes, rounding to nearest even (f16 overflow gives +-Inf), and between
 * i32 and a float dtype (float -> i32 truncates toward zero; NaN and
 * values out of range give an unspecified i32; no gradient). Between float
 * dtypes it is differentiable: the gradient is cast back to t's dtype.
 * With dtype equal to t's, a new handle on the same values (as
 * xg_contiguous of a contiguous tensor). Errors: XG_ERR_INVALID_ARG (NULL,
 * dtype out of range), XG_ERR_UNSUPPORTED (the device has no such cast),
 * device errors. */
xg_tensor *xg_to_dtype(xg_tensor *t, xg_dtype dtype);

/* True when t's elements lie row-major in its storage from element 0 (every
 * tensor an op makes; views may not). False for NULL. */
bool xg_tensor_is_contiguous(const xg_tensor *t);

/* Losses, mean over the batch as PyTorch's defaults.
 * cross_entropy: logits [N, C] f32, labels [N] XG_I32 in [0, C), or -100
 * for a row that is ignored; any other label out of range makes the loss
 * NaN (checking it would cost a device read).
 * mse_loss: mean((pred - target)^2), shapes broadcast. */
xg_tensor *xg_cross_entropy(xg_tensor *logits, xg_tensor *labels);
/* cross_entropy whose rows labelled `ignore_index` add nothing: the mean
 * is over the other rows, NaN when every row is ignored (as PyTorch's
 * ignore_index). xg_cross_entropy is this with PyTorch's default, -100. */
#define XG_IGNORE_INDEX (-100)
xg_tensor *xg_cross_entropy_ignore(xg_tensor *logits, xg_tensor *labels,
                                   int32_t ignore_index);
xg_tensor *xg_mse_loss(xg_tensor *pred, xg_tensor *target);

/* ---- indexing and selection ----
 * Indices and masks are XG_I32 tensors on the data's device. The index
 * ops read their indices back to the host to check them before any work
 * is queued, so each call waits for the device's queued work. Their
 * gradients scatter-add into zeros, summing the contributions of repeated
 * indices in increasing position along the axis: the same bits on every
 * backend. */

/* torch.index_select: the slices of x at positions index[0..k-1] along
 * `axis` (negative counts from the end), in that order, repeats allowed.
 * x: f32 with at least one axis; index: 1-D i32, every value in [0, size
 * of x along the axis). The result has x's shape with that axis of size k;
 * a new tensor owned as above (the caller keeps x and index).
 * Errors: XG_ERR_INVALID_ARG (a NULL argument, the axis out of range, an
 * index out of range: the message names the op, the index, its position
 * and the range), XG_ERR_DTYPE (x not f32 or index not i32), XG_ERR_SHAPE
 * (x 0-D, index not 1-D), device errors. */
xg_tensor *xg_index_select(xg_tensor *x, int axis, xg_tensor *index);

/* torch.gather: out[i][j][k] = x[index[i][j][k]][j][k] for axis 0 (and
 * likewise for the other axes): the result has the index's shape. x: f32
 * with at least one axis; index: i32 with x's number of axes, sizes no
 * larger than x's except along the axis, every value in [0, size of x
 * along the axis). Ownership and errors as xg_index_select (XG_ERR_SHAPE:
 * the index's axes or sizes do not fit x). */
xg_tensor *xg_gather(xg_tensor *x, int axis, xg_tensor *index);

/* torch.where: cond ? a : b elementwise, where cond is an i32 tensor whose
 * nonzero elements are true (0/1, or any nonzero value). cond, a and b (a,
 * b f32) broadcast together; the result has the broadcast shape. The
 * gradient reaches a where cond is true and b where it is false (summed
 * over broadcast axes). Returns a new tensor owned as above, or NULL:
 * XG_ERR_INVALID_ARG (NULL, different devices), XG_ERR_DTYPE, XG_ERR_SHAPE
 * (shapes that do not broadcast). */
xg_tensor *xg_where(xg_tensor *cond, xg_tensor *a, xg_tensor *b);

/* torch.Tensor.masked_fill: `value` where the i32 mask is nonzero, x
 * elsewhere. x (f32) and mask broadcast together, as PyTorch's
 * out-of-place masked_fill does: the result has the broadcast shape
 * (x's own when the mask broadcasts to it). The gradient reaches x where
 * the mask is 0. Ownership and errors as xg_where. */
xg_tensor *xg_masked_fill(xg_tensor *x, xg_tensor *mask, float value);

/* ===== Transformer ops ===================================================
 * Forward and backward on every backend, f32. */

/* torch.nn.functional.embedding: the rows of weight [num, dim] picked by
 * an i32 index of any shape; the result has the index's shape plus a last
 * axis of size dim. The gradient adds the rows of the output's gradient
 * into zeros in increasing position of the index (repeated indices
 * accumulate with the same bits on every backend). The indices are read
 * back and checked, as xg_index_select does. Errors: XG_ERR_INVALID_ARG
 * (NULL, an index outside [0, num): the message gives the index and its
 * position), XG_ERR_DTYPE (weight not f32, index not i32), XG_ERR_SHAPE
 * (weight not 2-D, an index with XG_MAX_DIMS axes). */
xg_tensor *xg_embedding(xg_tensor *weight, xg_tensor *index);

/* torch.nn.functional.layer_norm over the last axis (size C):
 *   y = (x - mean) / sqrt(var + eps) * weight + bias
 * with the biased variance (divided by C). weight and bias are [C] or NULL
 * (no scale, no shift). One fused kernel forward, one backward (which
 * reuses the mean and 1/sqrt(var + eps) kept from the forward). Under a
 * 16-bit autocast: computed in f32, output in the autocast dtype (see
 * xg_set_autocast).
 * Errors: XG_ERR_INVALID_ARG (NULL x, eps < 0 or not finite, different
 * devices), XG_ERR_DTYPE, XG_ERR_SHAPE (x 0-D, weight or bias not [C]). */
xg_tensor *xg_layer_norm(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                         float eps);

/* Options of xg_attention. */
typedef struct xg_attention_params {
    float scale;      /* factor on q.k; 0 means 1 / sqrt(head size) */
    bool causal;      /* query i sees key j only when j <= i + causal_offset */
    int64_t causal_offset; /* 0: PyTorch's is_causal (top-left aligned);
                              Tk - Tq: the queries are the last Tq
                              positions (a KV cache) */
    float dropout_p;  /* probability of zeroing an attention weight */
    bool training;    /* dropout applies only when true */
} xg_attention_params;

/* causal, offset 0, scale 0 (1 / sqrt(D)), no dropout. */
xg_attention_params xg_attention_defaults(void);

/* Scaled dot-product attention, fused (torch's
 * scaled_dot_product_attention): q [B, H, Tq, D], k and v [B, H, Tk, D] ->
 * [B, H, Tq, D], out[i] = sum_j dropout(softmax_j(scale q_i.k_j, masked))
 * v_j. Dropout keeps a weight with probability 1 - p and scales it by
 * 1 / (1 - p), the mask drawn from the thread's generator (the backward
 * draws the same one again). A query that sees no key (causal with a
 * negative offset) gets zeros, and a zero gradient. No [Tq, Tk] tensor is
 * kept between forward and backward: the forward keeps each query's
 * log-sum-exp and the backward recomputes the weights from it, so memory
 * grows with B H T D, not T^2, on every backend. params NULL means
 * xg_attention_defaults(). Errors: XG_ERR_INVALID_ARG (NULL, p outside
 * [0, 1), scale not finite, different devices), XG_ERR_DTYPE,
 * XG_ERR_SHAPE (not 4-D, B, H or D differing, k and v of different
 * shapes). */
xg_tensor *xg_attention(xg_tensor *q, xg_tensor *k, xg_tensor *v,
                        const xg_attention_params *params);

/* ===== Convolutional ops =================================================
 * NCHW images; weights [out, in / groups, kh, kw] as in PyTorch. */

/* Stride, zero padding, dilation (each per axis, height then width) and
 * groups of a convolution. */
typedef struct xg_conv2d_params {
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} xg_conv2d_params;

/* stride 1, padding 0, dilation 1, groups 1. */
xg_conv2d_params xg_conv2d_defaults(void);

/* torch.nn.functional.conv2d. bias [out] or NULL; params NULL means the
 * defaults. Errors: XG_ERR_SHAPE (channels, groups, an output smaller than
 * one pixel), XG_ERR_INVALID_ARG (stride or dilation < 1, padding < 0, a
 * padded input size + 2 x padding or a dilated kernel span
 * dilation x (kernel - 1) + 1 of 2^31 or more). */
xg_tensor *xg_conv2d(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                     const xg_conv2d_params *params);

/* xg_relu(xg_conv2d(x, weight, bias, params)) with the same values, bit for
 * bit, and the same gradients, as one op when bias is given: the output is
 * clamped while it is written, so the pass over it and the tensor between
 * the two are saved (a Sequential runs a Conv2d with bias followed by a
 * ReLU this way). Same arguments and errors as xg_conv2d. */
xg_tensor *xg_conv2d_relu(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                          const xg_conv2d_params *params);

/* Pooling over kernel x kernel windows; stride 0 means stride = kernel;
 * padding <= kernel / 2. Max pooling pads with -infinity, average pooling
 * with zeros counted in the mean (PyTorch's defaults). Errors:
 * XG_ERR_INVALID_ARG (those bounds, or a padded input size + 2 x padding of
 * 2^31 or more), XG_ERR_SHAPE (not 4-D, a window larger than the padded
 * input), XG_ERR_TOO_LARGE (max pooling: a plane of 2^31 or more pixels,
 * which its i32 indices cannot address). */
xg_tensor *xg_max_pool2d(xg_tensor *x, int kernel, int stride, int padding);
xg_tensor *xg_avg_pool2d(xg_tensor *x, int kernel, int stride, int padding);

/* Zeroes each element with probability p (0 <= p < 1) and scales the rest
 * by 1 / (1 - p), drawing the mask from the thread's generator. When
 * `training` is false (or p is 0) it returns a new tensor object that shares
 * x's storage: x's values, no copy, as PyTorch's eval-mode dropout returns
 * its input; an in-place write to x shows through it. */
xg_tensor *xg_dropout(xg_tensor *x, float p, bool training);

/* Merges axes start_axis..end into one (torch.flatten(x, start_axis)). */
xg_tensor *xg_flatten(xg_tensor *x, int start_axis);

/* Batch normalisation over (N, H, W) for each channel of x [N, C, H, W].
 * Training: normalises with the batch's statistics and updates
 * running_mean / running_var in place (running = (1 - momentum) * running +
 * momentum * batch, the variance unbiased), as PyTorch. Evaluation:
 * normalises with the running statistics. weight/bias [C] (NULL: 1 and 0);
 * running_mean/var [C] (required in evaluation). */
xg_tensor *xg_batch_norm2d(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                           xg_tensor *running_mean, xg_tensor *running_var,
                           bool training, float momentum, float eps);

/* ===== Autograd ==========================================================
 * Define-by-run: ops on tensors that require grad record how to
 * differentiate themselves. */

/* Marks a tensor as a leaf that collects gradients (f32 only). */
xg_status xg_tensor_set_requires_grad(xg_tensor *t, bool requires_grad);
bool xg_tensor_requires_grad(const xg_tensor *t);

/* The gradient accumulated in `t` by xg_backward, or NULL if none yet.
 * Borrowed: owned by `t`. */
xg_tensor *xg_tensor_grad(const xg_tensor *t);

/* Drops t's gradient (the next backward starts from zero). */
void xg_tensor_zero_grad(xg_tensor *t);

/* Back-propagates from a one-element f32 tensor: adds d(loss)/d(leaf) to the
 * gradient of every leaf that requires grad. Gradients accumulate across
 * calls until zeroed. The graph is kept (PyTorch's retain_graph=True): a
 * later backward may go through it again. Each intermediate gradient is
 * freed as soon as it has been used, so the memory a backward needs on top
 * of the graph is its working set, not every gradient of the pass.
 * Errors: XG_ERR_INVALID_ARG (not a scalar, or no graph), XG_ERR_STATE
 * (the graph was freed by an earlier xg_backward_ex(..., false)), device
 * errors. */
xg_status xg_backward(xg_tensor *loss);

/* xg_backward, keeping the graph or not. With retain_graph false (PyTorch's
 * default) each node of the graph is freed once its gradient has been
 * passed back, with what it holds for its backward rule: tensors that only
 * the graph still uses (the intermediate results of a forward run inside
 * xg_module_forward, values saved for the rules) are freed as the backward
 * walks, which lowers its peak memory. Tensors a scope or the caller owns
 * stay valid, values unchanged; they remain results that require grad, but
 * a backward that reaches them again fails with XG_ERR_STATE. On an error
 * part of the graph may already be freed. xg_backward(loss) is
 * xg_backward_ex(loss, true). Errors as xg_backward. */
xg_status xg_backward_ex(xg_tensor *loss, bool retain_graph);

/* Called by xg_backward_hooked once the gradient of `leaf` for this pass is
 * complete: xg_tensor_grad(leaf) holds its final value (plus what earlier
 * passes accumulated) and no later node of the pass adds to it. Runs with
 * grad recording off; tensors it makes belong to the caller's open scope,
 * as any. A status other than XG_OK stops the pass and is returned by it. */
typedef xg_status (*xg_grad_hook)(void *ctx, xg_tensor *leaf);

/* xg_backward_ex, calling hook(ctx, leaf) for each leaf as its gradient
 * completes, in the order the pass finishes them (the last layers of a
 * network first): what data-parallel training uses to start reducing
 * gradients while the pass goes on. hook NULL: xg_backward_ex. Errors:
 * those of xg_backward, and the hook's. */
xg_status xg_backward_hooked(xg_tensor *loss, bool retain_graph,
                             xg_grad_hook hook, void *ctx);

/* Turns graph recording on or off for the calling thread (off for
 * evaluation); returns the previous setting. On by default. */
bool xg_set_grad_enabled(bool enabled);
bool xg_grad_enabled(void);

/* Autocast (mixed precision, as torch.autocast): while the calling
 * thread's autocast dtype is XG_BF16 or XG_F16, the compute-heavy ops
 * xg_matmul, xg_matmul_t, the Linear layer (and GPT's), xg_conv2d (and
 * its layer) and xg_attention cast their float inputs to that dtype
 * (xg_to_dtype: recorded, so an f32 parameter's gradient arrives in f32;
 * a matmul operand that is a float leaf collecting a gradient, a master
 * weight, is cast again in the backward instead of the graph keeping its
 * 16-bit copy) and give outputs of that dtype; xg_softmax, xg_log_softmax, the
 * cross-entropy losses and xg_batch_norm2d (and their layers) cast 16-bit
 * inputs to f32 and compute and give f32; xg_layer_norm (and its layer)
 * computes its statistics and affine map in f32 (a 16-bit x cast to f32)
 * and gives its output rounded once to the autocast dtype, the dtype the
 * matmul after it reads (PyTorch's CPU autocast leaves layer_norm alone:
 * f32 in, f32 out, cast by that matmul: the same values; the graph keeps
 * only the 16-bit output). Other ops run in their inputs' dtypes (an f32
 * and a 16-bit input give f32).
 * Parameters, gradients and optimizer state stay f32. Run the forward
 * pass and the loss under autocast; backward needs no autocast (each op
 * of the graph differentiates in the dtypes it recorded). bf16 keeps
 * f32's range; with f16 scale the loss (xg_grad_scaler_*).
 * xg_set_autocast sets the dtype (XG_F32: autocast off, the default) and
 * returns the previous one, for nesting:
 *     xg_dtype was = xg_set_autocast(XG_BF16);
 *     xg_tensor *loss = xg_cross_entropy(xg_module_forward(m, x), y);
 *     xg_set_autocast(was);
 * Another dtype is refused with XG_ERR_DTYPE, the setting unchanged (and
 * returned). */
xg_dtype xg_set_autocast(xg_dtype dtype);
xg_dtype xg_autocast_dtype(void);

/* ===== nn: modules =======================================================
 * A module is a piece of a network: a forward function, the parameters it
 * trains, buffers it saves without training (BatchNorm's running
 * statistics) and child modules, each under a name. Names follow PyTorch:
 * a tensor's full name joins the child names on its path with '.', as in
 * "h.0.attn.c_attn.weight", and files saved by xg_module_save load into the
 * equivalent torch.nn.Module with load_state_dict(strict=True).
 *
 * The built-in layers below are modules made with the same public calls a
 * program uses to define its own (xg_module_new, xg_module_add_param, ...).
 *
 * Ownership: a module owns what is registered on it (parameters, buffers,
 * children) and frees it with itself; the registering calls take ownership
 * even when they fail, except where noted. Every xg_module pointer and
 * tensor handed out by the queries below is borrowed from the module.
 *
 * Names of parameters, buffers and children: 1 to 63 ASCII letters, digits
 * or '_' (so never '.'), unique within one module across its parameters,
 * buffers and children. A bad or taken name gives XG_ERR_INVALID_ARG
 * naming it. */

typedef struct xg_module xg_module;

/* What a kind of module does; usually a static const object, which must
 * outlive the modules made with it.
 * - name: the type's name for messages ("ResidualBlock"); required.
 * - forward: computes the output from x, reading the module's state,
 *   parameters and children; returns a new tensor made by ops during the
 *   call (x itself is also accepted), or NULL with the error set. It runs
 *   inside a scope that xg_module_forward closes, so the other tensors it
 *   makes need no freeing; x is never NULL there. NULL for
 *   modules that are not called (ModuleList, ModuleDict): forwarding them
 *   fails with XG_ERR_INVALID_ARG.
 * - free_state: optional; called by xg_module_free with the state pointer
 *   given to xg_module_new, before the module's tensors and children go.
 * - set_training: optional; called by xg_module_set_training after the
 *   module's flag and its children have been set. */
typedef struct xg_module_class {
    const char *name;
    xg_tensor *(*forward)(xg_module *self, xg_tensor *x);
    void (*free_state)(void *state);
    void (*set_training)(xg_module *self, bool training);
} xg_module_class;

/* A new module of class `cls` with no parameters, buffers or children, in
 * training mode. `state` (any pointer, may be NULL) is the caller's data,
 * returned by xg_module_state; the module owns it when cls->free_state is
 * set, and then releases it on error too. The caller owns the module and
 * frees it with xg_module_free (or gives it to a parent).
 * Errors: XG_ERR_INVALID_ARG (cls or cls->name NULL), XG_ERR_OUT_OF_MEMORY. */
xg_module *xg_module_new(const xg_module_class *cls, void *state);

/* The state pointer given to xg_module_new; NULL for m NULL. */
void *xg_module_state(const xg_module *m);

/* The module's class (compare it with yours before using the state);
 * NULL for m NULL. */
const xg_module_class *xg_module_class_of(const xg_module *m);

/* True in training mode (the default), false in evaluation mode; see
 * xg_module_set_training. False for m NULL. */
bool xg_module_training(const xg_module *m);

/* Registers `param` as the module's parameter `name` (a torch
 * nn.Parameter): the module takes ownership of the caller's hold on it
 * (taking it out of its scope) and turns requires_grad on. It is listed by
 * xg_module_param after the module's earlier parameters, and the pointer
 * stays valid while the module lives, so a forward function may keep it in
 * its state. `param` must be an f32 leaf tensor (no graph: xg_detach a
 * computed one) that the caller owns and has not given to a module.
 * On error the tensor is freed, except when it is already registered in
 * m's module tree (then nothing changes).
 * Errors: XG_ERR_INVALID_ARG (NULL module, bad or taken name, a tensor
 * already registered in m's tree, not a leaf), XG_ERR_DTYPE (not f32),
 * XG_ERR_OUT_OF_MEMORY. A NULL `param` returns the error that produced
 * it (XG_ERR_INVALID_ARG when none was set), so
 * xg_module_add_param(m, "w", xg_zeros(...)) needs one check. */
xg_status xg_module_add_param(xg_module *m, const char *name,
                              xg_tensor *param);

/* Registers `buffer` as the module's buffer `name` (torch's
 * register_buffer): state that is saved and loaded with the parameters but
 * not trained; requires_grad is left as it is. Same ownership, rules and
 * errors as xg_module_add_param. A buffer called "num_batches_tracked" is
 * stored in files as an I64 scalar, as PyTorch's BatchNorm does. */
xg_status xg_module_add_buffer(xg_module *m, const char *name,
                               xg_tensor *buffer);

/* Makes `child` the module's child `name` (a torch submodule): its
 * parameters and buffers appear under "name." after m's own, and when its
 * mode differs from m's it is put in m's mode (xg_module_set_training).
 * m takes ownership of child. On error child is freed,
 * unless it already belongs to a tree (it has a parent, or it is m or one
 * of m's ancestors): then nothing changes. A ModuleList accepts only its
 * next index as name ("0", "1", ...).
 * Errors: XG_ERR_INVALID_ARG (NULL module or name, bad or taken name, a
 * child that already has a parent, a cycle, a tree deeper than
 * XG_MODULE_MAX_DEPTH levels), XG_ERR_OUT_OF_MEMORY. A NULL child returns
 * the error that produced it. */
#define XG_MODULE_MAX_DEPTH 64
xg_status xg_module_add_child(xg_module *m, const char *name,
                              xg_module *child);

/* The submodule at a dotted path below m: "attn" is a child, "h.0.attn" a
 * grandchild's child. Borrowed. Errors (NULL returned): XG_ERR_NOT_FOUND
 * naming the missing part, XG_ERR_INVALID_ARG for NULL arguments. */
xg_module *xg_module_child(const xg_module *m, const char *path);

/* Number of direct children, in the order they were added. */
int xg_module_child_count(const xg_module *m);

/* Child i (0 <= i < count); *name (optional) gets its name. Both borrowed.
 * NULL with XG_ERR_INVALID_ARG when out of range. */
xg_module *xg_module_child_at(const xg_module *m, int i, const char **name);

/* The parameter (or buffer) with this dotted name, as xg_module_param
 * lists it: "weight" is m's own, "h.0.fc1.weight" a submodule's. Borrowed.
 * Errors (NULL returned): XG_ERR_NOT_FOUND, XG_ERR_INVALID_ARG for NULL
 * arguments. */
xg_tensor *xg_module_find_param(const xg_module *m, const char *name);
xg_tensor *xg_module_find_buffer(const xg_module *m, const char *name);

/* ---- containers ---- */

/* An empty Sequential: its forward runs the children in order, each on
 * the previous one's output. Two patterns run in a cheaper form with the
 * same values and gradients, bit for bit: a ReLU followed by a MaxPool2d
 * runs the pooling first (the ReLU then covers a quarter of the values for
 * 2x2 windows), and any other Conv2d with bias followed by a ReLU runs as
 * one op (xg_conv2d_relu). */
xg_module *xg_sequential(void);

/* Appends `child` to a Sequential, which takes ownership of it (also on
 * error, as xg_module_add_child). `name` (NULL: its index, "0", "1", ...)
 * prefixes the child's parameter names: "fc1.weight". Errors:
 * XG_ERR_INVALID_ARG for a module that is not a Sequential and those of
 * xg_module_add_child. */
xg_status xg_sequential_add(xg_module *seq, const char *name,
                            xg_module *child);

/* An empty ModuleList: children named by their index ("0", "1", ...),
 * with no forward of its own (a parent's forward calls them). */
xg_module *xg_module_list(void);

/* Appends `child` under the next index; ownership and errors as
 * xg_module_add_child, plus XG_ERR_INVALID_ARG for a module that is not a
 * ModuleList. */
xg_status xg_module_list_append(xg_module *list, xg_module *child);

/* Entry i of a ModuleList (0 <= i < len; borrowed), or NULL with
 * XG_ERR_INVALID_ARG (not a ModuleList, i out of range). */
xg_module *xg_module_list_get(const xg_module *list, int i);

/* The number of entries of a ModuleList; -1 with XG_ERR_INVALID_ARG for
 * anything else. */
int xg_module_list_len(const xg_module *list);

/* An empty ModuleDict: named children kept in insertion order, with no
 * forward of its own. Look entries up with xg_module_child and iterate
 * with xg_module_child_at. */
xg_module *xg_module_dict(void);

/* Adds `child` under `name`; ownership and errors as xg_module_add_child
 * (a taken name is an error), plus XG_ERR_INVALID_ARG for a module that is
 * not a ModuleDict. */
xg_status xg_module_dict_add(xg_module *dict, const char *name,
                             xg_module *child);

/* ---- built-in layers (names and layouts as PyTorch's) ---- */

/* Linear: y = x W^T + b, parameters weight [out, in] and bias [out];
 * PyTorch's initialisation (uniform in +-1/sqrt(in) for both) drawn from
 * the thread's generator. */
xg_module *xg_linear(int64_t in_features, int64_t out_features, bool bias);

/* Parameter-free activation layers. */
xg_module *xg_relu_layer(void);
xg_module *xg_sigmoid_layer(void);
xg_module *xg_tanh_layer(void);
xg_module *xg_gelu_layer(void);
xg_module *xg_silu_layer(void);
xg_module *xg_gelu_tanh_layer(void); /* GELU(approximate='tanh') */

/* Conv2d(in, out, kernel) with the given stride, padding, dilation and
 * groups (params NULL: defaults), weight and bias initialised as PyTorch
 * does (uniform in +-1/sqrt(in / groups * kernel^2)). Errors:
 * XG_ERR_INVALID_ARG (sizes < 1, channels not divisible by groups, the
 * parameters xg_conv2d refuses for any input), XG_ERR_TOO_LARGE (a weight
 * of 2^40 elements or more). */
xg_module *xg_conv2d_layer(int64_t in_channels, int64_t out_channels,
                           int kernel, const xg_conv2d_params *params,
                           bool bias);
xg_module *xg_max_pool2d_layer(int kernel, int stride, int padding);
xg_module *xg_avg_pool2d_layer(int kernel, int stride, int padding);
/* Dropout(p): active in training mode only. */
xg_module *xg_dropout_layer(float p);
/* Flatten(start_dim = 1). */
xg_module *xg_flatten_layer(void);
/* BatchNorm2d(channels, eps = 1e-5, momentum = 0.1): parameters weight and
 * bias, buffers running_mean, running_var, num_batches_tracked. */
xg_module *xg_batch_norm2d_layer(int64_t channels);
/* Embedding(num, dim): parameter weight [num, dim] drawn from N(0, 1) as
 * PyTorch does; forward takes an i32 index (xg_embedding). Errors:
 * XG_ERR_INVALID_ARG (a size < 1), XG_ERR_TOO_LARGE (a weight of 2^40
 * elements or more). */
xg_module *xg_embedding_layer(int64_t num, int64_t dim);
/* LayerNorm(dim, eps): parameters weight [dim] (ones) and, when `bias`,
 * bias [dim] (zeros); none when `affine` is false. */
xg_module *xg_layer_norm_layer(int64_t dim, float eps, bool affine,
                               bool bias);

/* ---- using modules ---- */

/* Runs the module's forward on x and returns its output, a new tensor
 * owned as any op's result. Errors: XG_ERR_INVALID_ARG (NULL module, a
 * module without forward), those of x and of the forward itself. */
xg_tensor *xg_module_forward(xg_module *m, xg_tensor *x);

/* Number of parameters (tensors) in the module and all its submodules. */
int xg_module_param_count(const xg_module *m);

/* Parameter i (0 <= i < count) in PyTorch's named_parameters() order: the
 * module's own in registration order, then each child's, recursively, in
 * the order the children were added. *name (optional) gets its dotted
 * name. Both borrowed, valid until the tree changes. NULL if out of
 * range. */
xg_tensor *xg_module_param(const xg_module *m, int i, const char **name);

/* Buffers, listed as parameters are (torch's named_buffers() order).
 * BatchNorm's num_batches_tracked is a one-element f32 tensor here (exact
 * up to 2^24 batches) and an I64 scalar in files, as PyTorch writes it. */
int xg_module_buffer_count(const xg_module *m);
xg_tensor *xg_module_buffer(const xg_module *m, int i, const char **name);

/* Freezes (requires_grad off) or unfreezes every parameter of m and its
 * submodules; on a submodule (xg_module_child) it freezes just that part.
 * Optimizers skip frozen parameters. NULL is ignored. */
void xg_module_set_frozen(xg_module *m, bool frozen);

/* Training (true) or evaluation mode for m and all its submodules, as
 * torch's train() / eval(): sets each module's flag (xg_module_training),
 * children before their parent's set_training hook runs. Matters for
 * dropout, batch norm and any module that reads its flag. NULL is
 * ignored. */
void xg_module_set_training(xg_module *m, bool training);

/* Frees a module with its state (through its class's free_state), its
 * parameters, buffers and children. NULL is ignored. A module that has a
 * parent belongs to it and is not freed: the call sets XG_ERR_STATE and
 * does nothing (free the root instead). */
void xg_module_free(xg_module *m);

/* ===== Optimizers ========================================================
 * PyTorch's formulas. An optimizer holds borrowed parameter pointers (they
 * must outlive it) and its own state, made at the first step that sees a
 * gradient for a parameter; frozen parameters get no state. */

typedef struct xg_optim xg_optim;

typedef struct xg_sgd_options {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
} xg_sgd_options;

typedef struct xg_adam_options {
    float lr, beta1, beta2, eps, weight_decay;
} xg_adam_options;

/* PyTorch's defaults: SGD lr 1e-3 (PyTorch requires one; give yours),
 * momentum 0; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0;
 * AdamW the same with weight decay 1e-2. */
xg_sgd_options xg_sgd_defaults(void);
xg_adam_options xg_adam_defaults(void);
xg_adam_options xg_adamw_defaults(void);

/* New optimizers over `n` parameters (f32 leaf tensors, each given once).
 * Errors: XG_ERR_INVALID_ARG for bad hyperparameters (negative lr, beta
 * outside [0, 1), nesterov without momentum...), a NULL or non-leaf
 * parameter, or one given twice; XG_ERR_DTYPE for a bf16 or f16
 * parameter (the updates are f32: keep f32 master weights and cast them
 * with xg_to_dtype for a 16-bit forward). */
xg_optim *xg_optim_sgd(xg_tensor *const *params, int n,
                       const xg_sgd_options *options);
xg_optim *xg_optim_adam(xg_tensor *const *params, int n,
                        const xg_adam_options *options);
xg_optim *xg_optim_adamw(xg_tensor *const *params, int n,
                         const xg_adam_options *options);

/* The same over every parameter of a module (xg_module_param order, so
 * any module tree, built-in or not), with the kind's default options and
 * this lr. Frozen parameters are included and skipped while frozen.
 * Errors: XG_ERR_INVALID_ARG (NULL argument, unknown kind, bad lr),
 * XG_ERR_OUT_OF_MEMORY. */
xg_optim *xg_optim_for_module(xg_module *m, const char *kind /* "sgd",
                              "adam", "adamw" */, float lr);

/* Parameter groups, as torch's optimizer.add_param_group: adds `n` more
 * parameters (borrowed, as above) to the optimizer as a new group whose
 * weight decay is `weight_decay`; every other option (lr, betas,
 * momentum...) is the optimizer's own and shared by all groups. The
 * parameters the optimizer was made with are group 0, with the options'
 * weight_decay. GPT-2's AdamW setup, for example: make the optimizer over
 * the matrices (weight decay 0.1), then add the biases and LayerNorm
 * weights as a group with weight decay 0. Checkpoints record the groups
 * and load only into an optimizer with the same ones.
 * Errors: XG_ERR_INVALID_ARG (NULL optimizer, n < 0, weight_decay < 0 or
 * not finite, a parameter that is NULL, not an f32 leaf, listed twice or
 * already in the optimizer), XG_ERR_OUT_OF_MEMORY. Nothing changes on
 * error. */
xg_status xg_optim_add_group(xg_optim *opt, xg_tensor *const *params, int n,
                             float weight_decay);

/* Applies one update to every parameter that has a gradient. */
xg_status xg_optim_step(xg_optim *opt);

/* Drops the gradients of all its parameters. */
void xg_optim_zero_grad(xg_optim *opt);

/* The learning rate (0 for NULL). */
float xg_optim_lr(const xg_optim *opt);

/* Sets the learning rate of the next steps, shared by all parameter
 * groups. A NULL optimizer or a negative or non-finite lr leaves the rate
 * as it was and sets the thread's error to XG_ERR_INVALID_ARG (see
 * xg_last_status); the function returns nothing, so a caller that wants
 * to know calls xg_clear_error before and xg_last_status after. */
void xg_optim_set_lr(xg_optim *opt, float lr);

/* Number of steps taken. */
int64_t xg_optim_steps(const xg_optim *opt);

/* Frees the optimizer and its state (not the parameters). NULL is
 * ignored. */
void xg_optim_free(xg_optim *opt);

/* Learning-rate schedules, as pure functions of the step (or epoch).
 * StepLR: base * gamma^(floor(step / step_size)).
 * Cosine with linear warmup: base * (step + 1) / warmup during the first
 * `warmup` steps, then min_lr + (base - min_lr) * (1 + cos(pi * p)) / 2 with
 * p = (step - warmup) / (total - warmup) clamped to [0, 1].
 * Both count a negative step as step 0, so they never return more than
 * base_lr (for gamma <= 1) nor a negative or NaN rate from finite,
 * non-negative arguments. */
float xg_lr_step(float base_lr, int64_t step, int64_t step_size, float gamma);
float xg_lr_cosine(float base_lr, int64_t step, int64_t warmup,
                   int64_t total, float min_lr);

/* Scales the gradients so their global L2 norm is at most max_norm, as
 * torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6)).
 * *total_norm (optional) gets the norm before clipping. Reads one value
 * from the device. */
xg_status xg_clip_grad_norm(xg_tensor *const *params, int n, float max_norm,
                            float *total_norm);

/* ===== Mixed precision: the loss scaler ==================================
 * Training with f16 activations needs the loss scaled up before backward,
 * or small gradients round to 0 in f16, and scaled down again before the
 * step: a dynamic loss scaler with the semantics of PyTorch's
 * torch.cuda.amp.GradScaler. Each step:
 *     loss = ...;                                     (f32)
 *     xg_backward(xg_grad_scaler_scale(scaler, loss));
 *     xg_grad_scaler_unscale(scaler, opt);            (optional: to clip)
 *     xg_clip_grad_norm(params, n, 1.0f, NULL);       (optional)
 *     xg_grad_scaler_step(scaler, opt, NULL);         (skipped on inf/NaN)
 *     xg_grad_scaler_update(scaler);
 *     xg_optim_zero_grad(opt);
 * A step whose gradients hold an inf or NaN is skipped and the scale
 * multiplied by backoff_factor; after growth_interval steps in a row
 * without one it is multiplied by growth_factor (unless that would make it
 * inf). The check costs one value read from the device per optimizer and
 * step, not a read of the gradients. bf16 has f32's range and needs no
 * scaler. A scaler serves one or more optimizers (each unscaled and
 * stepped once per step; update looks at all of them). */

typedef struct xg_grad_scaler xg_grad_scaler;

typedef struct xg_grad_scaler_options {
    float init_scale;        /* the first scale (65536) */
    float growth_factor;     /* > 1 (2) */
    float backoff_factor;    /* in (0, 1) (0.5) */
    int64_t growth_interval; /* clean steps before growing, >= 1 (2000) */
} xg_grad_scaler_options;

/* PyTorch's defaults, in parentheses above. */
xg_grad_scaler_options xg_grad_scaler_defaults(void);

/* A new scaler; options NULL: the defaults. Free with
 * xg_grad_scaler_free. Errors: XG_ERR_INVALID_ARG (an option out of its
 * range), XG_ERR_OUT_OF_MEMORY. */
xg_grad_scaler *xg_grad_scaler_new(const xg_grad_scaler_options *options);

/* loss * scale, differentiable (a new tensor, owned as ops' results are);
 * backward from it gives gradients multiplied by the scale. NULL on a NULL
 * scaler (XG_ERR_INVALID_ARG) or loss (its error kept). */
xg_tensor *xg_grad_scaler_scale(xg_grad_scaler *scaler, xg_tensor *loss);

/* Divides the gradients of opt's parameters by the scale, in place (each
 * .grad replaced by grad / scale; no graph), and checks them for inf and
 * NaN on the device (nothing is read yet). At most once per optimizer per
 * step, before xg_grad_scaler_step; call it to clip or read the true
 * gradients before the step. Errors: XG_ERR_INVALID_ARG (NULL argument),
 * XG_ERR_STATE (called again for opt, or after its step, before
 * xg_grad_scaler_update), device errors. */
xg_status xg_grad_scaler_unscale(xg_grad_scaler *scaler, xg_optim *opt);

/* Unscales opt's gradients unless xg_grad_scaler_unscale did, reads the
 * check (one float from the device) and runs xg_optim_step(opt) if every
 * gradient is finite; otherwise skips it (the optimizer's state and step
 * count are unchanged). *stepped (optional) says whether it stepped.
 * Errors: XG_ERR_INVALID_ARG (NULL argument), XG_ERR_STATE (a second
 * step for opt before xg_grad_scaler_update), those of the unscale and
 * of xg_optim_step. */
xg_status xg_grad_scaler_step(xg_grad_scaler *scaler, xg_optim *opt,
                              bool *stepped);

/* Ends the step: backs the scale off if any optimizer unscaled in this
 * step had an inf or NaN, else counts a clean step and grows the scale
 * after growth_interval of them. Errors: XG_ERR_INVALID_ARG (NULL),
 * XG_ERR_STATE (no optimizer was unscaled or stepped since the last
 * update), device errors. */
xg_status xg_grad_scaler_update(xg_grad_scaler *scaler);

/* The current scale (0 for NULL), and the clean steps counted towards the
 * next growth (0 for NULL): the state a checkpoint keeps
 * (xg_train_state.loss_scale, .loss_scale_growth). */
float xg_grad_scaler_get_scale(const xg_grad_scaler *scaler);
int64_t xg_grad_scaler_growth_tracker(const xg_grad_scaler *scaler);

/* Restores that state (to resume a run) and forgets the current step's.
 * Errors: XG_ERR_INVALID_ARG (NULL scaler, a scale that is not finite and
 * > 0, a growth tracker outside [0, growth_interval)). */
xg_status xg_grad_scaler_set_state(xg_grad_scaler *scaler, float scale,
                                   int64_t growth_tracker);

/* Frees the scaler (not the optimizers). NULL is ignored. */
void xg_grad_scaler_free(xg_grad_scaler *scaler);

/* ===== Data-parallel training over MPI ===================================
 * One process per device, on one machine or many, each training the same
 * model on its own share of every batch; the gradients are averaged over
 * the processes before every optimizer step, so all of them keep the same
 * parameters. Processes are started by MPI's launcher:
 *   mpirun -np 4 ./train ...          (one machine)
 *   mpirun -np 8 --host a:4,b:4 ./train ...   (two machines)
 * A program that is not started by mpirun, or a library built without MPI
 * (meson option mpi=disabled, or no MPI installed), runs as a world of one
 * process: rank 0 of 1, every call below then does nothing and succeeds,
 * so the same program runs both ways.
 * Rules: every process must make the same calls in the same order (the
 * same model, the same number of steps, the same sequence of collective
 * calls); a process that fails should call xg_dist_abort so the others do
 * not wait for it. Collective calls are made from the thread that called
 * xg_dist_init. */

/* Joins the MPI job this process was started in (MPI_Init_thread, unless
 * the program initialised MPI itself), and makes the devices opened
 * without an index after this call per-process: a backend named without
 * ":INDEX" (XGRAD_BACKEND=opencl) opens device (local rank mod the
 * backend's device count) and "auto" the (local rank mod count)-th
 * hardware GPU, so the processes of a machine spread over its GPUs.
 * argc and argv may be NULL. Call it before the first device is opened.
 * Calling it again does nothing. Errors: XG_ERR_BACKEND (MPI failed to
 * start; the message has MPI's text), XG_ERR_UNSUPPORTED (started by an
 * MPI launcher, but the library was built without MPI: the processes would
 * each train alone). */
xg_status xg_dist_init(int *argc, char ***argv);

/* Leaves the MPI job (MPI_Finalize, when xg_dist_init started MPI); the
 * process is a world of one afterwards. Every process must call it before
 * exiting normally: a process that exits without it is taken by mpirun
 * as failed. Errors: XG_ERR_BACKEND. */
xg_status xg_dist_finalize(void);

/* Ends the whole job at once: every process exits with `code` (MPI_Abort),
 * and mpirun reports which one asked. In a world of one it returns and does
 * nothing, so the caller goes on to its own error exit. */
void xg_dist_abort(int code);

/* This process's rank in [0, world size), its number of processes, its rank
 * among the processes on its machine, and their number. 0, 1, 0, 1 in a
 * world of one. */
int xg_dist_rank(void);
int xg_dist_world_size(void);
int xg_dist_local_rank(void);
int xg_dist_local_size(void);

/* Whether the library was built with MPI. */
bool xg_dist_built(void);

/* Sends the contents of `t` on rank `root` to the same tensor (same dtype
 * and shape) on every other rank, staged through host memory. Errors:
 * XG_ERR_INVALID_ARG (NULL, a root outside the world), XG_ERR_SHAPE (the
 * ranks' tensors differ in size), XG_ERR_OUT_OF_MEMORY, XG_ERR_BACKEND (MPI),
 * device errors. */
xg_status xg_dist_broadcast(xg_tensor *t, int root);

/* Broadcasts every parameter and buffer of a module tree from rank 0, so
 * all ranks start from rank 0's values whatever each initialised. Errors:
 * those of xg_dist_broadcast; XG_ERR_SHAPE when the ranks' trees differ in
 * their number of tensors. */
xg_status xg_dist_broadcast_module(xg_module *m);

/* Sums `n` doubles over all ranks in place (for counts, loss sums and
 * timings; every rank gets the same sums). Errors: XG_ERR_INVALID_ARG,
 * XG_ERR_BACKEND. */
xg_status xg_dist_sum(double *values, int n);

/* The default size of a gradient bucket: 25 MiB, as PyTorch's DDP. */
#define XG_DIST_BUCKET_BYTES ((size_t)25 << 20)

/* Gradient averaging for one module's trainable parameters. */
typedef struct xg_grad_sync xg_grad_sync;

/* Groups the parameters of `m` that require grad into buckets of at most
 * bucket_bytes (0: XG_DIST_BUCKET_BYTES; a larger parameter gets a bucket
 * of its own), in the reverse of xg_module_param order, which is roughly
 * the order a backward pass finishes their gradients. The module is
 * borrowed and must outlive the sync; its set of trainable parameters
 * must not change. The caller owns the result (xg_grad_sync_free).
 * Returns NULL on error: XG_ERR_INVALID_ARG (NULL module, no trainable
 * parameter), XG_ERR_DTYPE (a parameter not f32), XG_ERR_OUT_OF_MEMORY. */
xg_grad_sync *xg_grad_sync_new(xg_module *m, size_t bucket_bytes);

/* Runs xg_backward_ex(loss, false) (the graph is freed as the pass walks
 * it) and averages the gradients over all ranks: as
 * soon as a bucket's gradients are complete, they are copied to host
 * memory and their sum is started (MPI_Iallreduce) while the pass goes on;
 * at the end the sums are awaited, divided by the world size and written
 * back. On return every rank holds the same gradients: the mean over
 * ranks of each rank's gradient (so with equal per-rank batches and a
 * mean loss, the gradient of the global batch). A parameter that got no
 * gradient in the pass counts as zeros and gets a zero gradient, in a
 * world of one too, so runs of any size treat it alike. With
 * gradient accumulation, call xg_backward_ex for all micro-batches but
 * the last, and this for the last one: what is averaged is the accumulated
 * gradient. In a world of one this is xg_backward_ex (plus those zero
 * gradients), with no copies. Errors: those of
 * xg_backward, XG_ERR_OUT_OF_MEMORY, XG_ERR_BACKEND (MPI), device errors;
 * after an error the gradients are undefined and the job should be
 * aborted (xg_dist_abort): the other ranks wait for this one. */
xg_status xg_grad_sync_backward(xg_grad_sync *s, xg_tensor *loss);

/* Averages the gradients over all ranks after a plain xg_backward or
 * xg_backward_ex, with no overlap: the same result as
 * xg_grad_sync_backward. Errors: as above. */
xg_status xg_grad_sync_reduce(xg_grad_sync *s);

/* What a sync has done since it was made or its stats were reset. */
typedef struct xg_grad_sync_stats {
    int64_t reductions;  /* averaging calls (steps) */
    int64_t buckets;     /* buckets per averaging call */
    uint64_t bytes;      /* gradient bytes each rank sent into sums, in all */
    double stage_s;      /* seconds copying gradients to and from the host */
    double wait_s;       /* seconds waiting for sums after the pass: the
                            communication the pass did not hide */
    double backward_s;   /* seconds in the backward passes, with the
                            staging done during them */
} xg_grad_sync_stats;

/* Fills *out (NULL arguments are ignored). */
void xg_grad_sync_get_stats(const xg_grad_sync *s, xg_grad_sync_stats *out);
void xg_grad_sync_reset_stats(xg_grad_sync *s);

/* NULL is ignored. */
void xg_grad_sync_free(xg_grad_sync *s);

/* ===== Models: GPT =======================================================
 * GPT-2's architecture (pre-LayerNorm transformer blocks, learned position
 * embeddings, GELU with the tanh approximation, the output projection tied
 * to the token embedding) under GPT-2's parameter names, as Hugging Face's
 * GPT2LMHeadModel names them without the "transformer." prefix:
 *   wte.weight [vocab, embd]            wpe.weight [context, embd]
 *   h.{i}.ln_1.weight, .bias [embd]
 *   h.{i}.attn.c_attn.weight [embd, 3 embd], .bias [3 embd]
 *   h.{i}.attn.c_proj.weight [embd, embd], .bias [embd]
 *   h.{i}.ln_2.weight, .bias [embd]
 *   h.{i}.mlp.c_fc.weight [embd, 4 embd], .bias [4 embd]
 *   h.{i}.mlp.c_proj.weight [4 embd, embd], .bias [embd]
 *   ln_f.weight, .bias [embd]
 * The projections are GPT-2's Conv1D: weight [in, out], y = x W + b, so a
 * saved model has GPT-2's layout. There is no lm_head.weight: the logits
 * are x wte^T. Without bias, the Conv1D layers and LayerNorms have no
 * .bias entries. */

typedef struct xg_gpt_config {
    int64_t vocab_size; /* tokens (256 for bytes, 50257 for GPT-2's BPE) */
    int64_t context;    /* longest sequence (GPT-2: n_positions, 1024) */
    int64_t n_layer, n_head, n_embd; /* n_embd a multiple of n_head */
    float dropout;      /* embedding, attention and residual dropout */
    bool bias;          /* biases in the Conv1D layers and LayerNorms */
    float layer_norm_eps;
} xg_gpt_config;

/* GPT-2 small (124M): vocab 50257, context 1024, 12 layers, 12 heads, 768
 * wide, dropout 0.1, bias, eps 1e-5. */
xg_gpt_config xg_gpt_config_gpt2(void);

/* A new GPT on the current device, initialised as GPT-2 was, from the
 * thread's generator: every weight N(0, 0.02), except the two c_proj
 * weights of each block, N(0, 0.02 / sqrt(2 n_layer)); biases 0;
 * LayerNorm weights 1. Its forward (xg_module_forward) takes token ids
 * [B, T] XG_I32 (0 <= id < vocab_size, 1 <= T <= context) and returns the
 * logits [B, T, vocab_size]; a token out of range is an error, as in
 * xg_embedding. Dropout applies in training mode (xg_module_set_training).
 * The caller owns the module. Errors: XG_ERR_INVALID_ARG (NULL, a size < 1,
 * n_embd not a multiple of n_head, dropout outside [0, 1), eps < 0),
 * XG_ERR_TOO_LARGE, device errors. */
xg_module *xg_gpt(const xg_gpt_config *config);

/* True when m is a module made by xg_gpt; *config (optional) gets its
 * configuration. */
bool xg_gpt_config_of(const xg_module *m, xg_gpt_config *config);

/* AdamW over a GPT's parameters with GPT-2's grouping: group 0 holds the
 * Conv1D weights (the matrices) with options->weight_decay; group 1 holds
 * the biases, the LayerNorm weights and both embeddings with weight decay
 * 0. options NULL: xg_adamw_defaults(). The optimizer borrows the
 * parameters: free it before the model. Errors: XG_ERR_INVALID_ARG (not a
 * GPT, bad options), XG_ERR_OUT_OF_MEMORY. */
xg_optim *xg_gpt_adamw(xg_module *gpt, const xg_adam_options *options);

/* ---- GPT-2 checkpoints in Hugging Face's folder layout ----
 * A folder holding config.json (GPT2Config) and model.safetensors
 * (GPT2LMHeadModel's weights), as transformers' save_pretrained writes
 * them for GPT-2 and as the models on the Hugging Face hub come. */

/* A new GPT on the current device with the weights of the folder `dir`.
 * From config.json: n_layer, n_head, n_embd, n_positions (the context) and
 * vocab_size (each required, an integer >= 1), layer_norm_epsilon (default
 * 1e-5), dropout from resid_pdrop (default 0.1, GPT2Config's), bias on.
 * model_type, when present, must be "gpt2"; activation_function, when
 * present, "gelu_new" or "gelu_pytorch_tanh" (both the tanh GELU); n_inner
 * null or 4 n_embd; scale_attn_weights true; scale_attn_by_inverse_
 * layer_idx, add_cross_attention false; tie_word_embeddings true. Other
 * keys are ignored. `dropout` (NULL: config.json's) replaces the dropout,
 * e.g. 0 for fine-tuning without it.
 * From model.safetensors: every weight of the GPT above under its name
 * (see "Models: GPT"), all with the "transformer." prefix or all without,
 * in F32, F16 or BF16 (converted to f32 exactly), of the exact shape
 * (the Conv1D weights [in, out] as GPT-2 stores them); the attention mask
 * buffers h.N.attn.bias and h.N.attn.masked_bias are skipped whatever
 * their dtype; lm_head.weight, when present, must have wte's shape and,
 * converted to f32, be bit for bit wte (the model ties them). Anything
 * else is refused: nothing is returned unless the whole folder fits.
 * The caller owns the module (in training mode, as xg_gpt's). The
 * thread's generator is not used.
 * Errors, each naming the file and the key: XG_ERR_INVALID_ARG (NULL dir,
 * dropout outside [0, 1)), XG_ERR_NOT_FOUND (no config.json or
 * model.safetensors, a weight missing), XG_ERR_FORMAT (config.json not
 * JSON, a size missing or not an integer >= 1, another model_type or
 * architecture setting, an unexpected tensor, lm_head.weight not wte, a
 * model.safetensors too small for config.json's sizes: checked before
 * the model is built),
 * XG_ERR_SHAPE, XG_ERR_DTYPE (a weight not F32/F16/BF16), those of
 * xg_safetensors_open (a truncated or malformed file), XG_ERR_TOO_LARGE,
 * XG_ERR_IO, device errors. */
xg_module *xg_gpt_load_hf(const char *dir, const float *dropout);

/* Writes `gpt` (made by xg_gpt or xg_gpt_load_hf) into the folder `dir`
 * (created with any missing parent) as transformers' GPT2LMHeadModel
 * loads it: config.json (model_type "gpt2", architectures
 * ["GPT2LMHeadModel"], the sizes as n_layer, n_head, n_embd, n_positions
 * and n_ctx (both the context), vocab_size, layer_norm_epsilon,
 * activation_function "gelu_new", the dropout as resid_pdrop, embd_pdrop
 * and attn_pdrop, tie_word_embeddings true; bos/eos_token_id 50256 for
 * GPT-2's 50257-token vocabulary) and model.safetensors (F32, metadata
 * format "pt", keys "transformer." + the GPT's names, no lm_head.weight:
 * it is tied). Each file is replaced atomically (model.safetensors
 * first); xg_gpt_load_hf reads the folder back bit for bit. Errors:
 * XG_ERR_INVALID_ARG (NULL, not a GPT, a GPT without biases: GPT-2 has
 * them), XG_ERR_IO (with the path and reason), device errors. */
xg_status xg_gpt_save_hf(const xg_module *gpt, const char *dir);

/* ---- generation with a KV cache ----
 * A cache keeps each layer's keys and values of the tokens seen so far, so
 * that each new token costs one pass over the cached positions (O(length)
 * per token), not a forward of the whole sequence. */
typedef struct xg_gpt_cache xg_gpt_cache;

/* An empty cache for `gpt` (borrowed: it must outlive the cache), for
 * sequences of `batch` rows. The caller frees it with xg_gpt_cache_free.
 * Errors: XG_ERR_INVALID_ARG (not a GPT, batch < 1),
 * XG_ERR_OUT_OF_MEMORY. */
xg_gpt_cache *xg_gpt_cache_new(xg_module *gpt, int64_t batch);

/* Runs the next t tokens, ids [batch, t] XG_I32, at positions length ..
 * length + t - 1 after those already cached, in evaluation mode and
 * without recording a graph, and returns their logits [batch, t,
 * vocab_size] (owned as any op's result); the cache then holds length + t
 * positions. Errors: XG_ERR_INVALID_ARG (NULL, a token out of range),
 * XG_ERR_SHAPE (ids not [batch, t]), XG_ERR_TOO_LARGE (length + t past the
 * model's context: reset the cache and run the last tokens again), device
 * errors. On error the cache is unchanged. */
xg_tensor *xg_gpt_forward_cached(xg_gpt_cache *cache, xg_tensor *ids);

/* Positions held (0 for NULL). */
int64_t xg_gpt_cache_length(const xg_gpt_cache *cache);

/* Empties the cache (the memory is released). NULL is ignored. */
void xg_gpt_cache_reset(xg_gpt_cache *cache);
void xg_gpt_cache_free(xg_gpt_cache *cache);

/* ===== Model files: safetensors ==========================================
 * The format of PyTorch and Hugging Face: an 8-byte little-endian header
 * length, a JSON header naming each tensor's dtype, shape and byte range,
 * then the raw little-endian data. Files are written atomically (temporary
 * file, fsync, rename, fsync of the folder): a failure leaves the previous
 * file intact. Loading checks everything before trusting it; a hostile file
 * gets XG_ERR_FORMAT (or XG_ERR_TOO_LARGE) naming what is wrong. */

typedef struct xg_safetensors xg_safetensors;

/* Reads and validates a whole file into host memory. Errors: XG_ERR_IO,
 * XG_ERR_FORMAT, XG_ERR_TOO_LARGE (header over 100 MB). Close with
 * xg_safetensors_close. */
xg_status xg_safetensors_open(const char *path, xg_safetensors **out);
void xg_safetensors_close(xg_safetensors *st);

/* Number of tensors, and the name of tensor i (borrowed; file order). */
int xg_safetensors_count(const xg_safetensors *st);
const char *xg_safetensors_name(const xg_safetensors *st, int i);

/* A tensor's dtype name ("F32", "I64", ...; borrowed) and shape; *ndim gets
 * the axis count (shape needs XG_MAX_DIMS entries). XG_ERR_NOT_FOUND for an
 * unknown name. */
xg_status xg_safetensors_info(const xg_safetensors *st, const char *name,
                              const char **dtype, int64_t *shape, int *ndim);

/* The named tensor on the current device, owned as any new tensor. F32 and
 * I32 load as they are; I64 loads as XG_I32 when every value fits; F16
 * and BF16 load as XG_F32, converted exactly (every half and bfloat16 value
 * is a float: subnormals, zeros' signs, infinities and NaNs are kept).
 * The conversion gives PyTorch's tensor.float() bits: an F16 NaN keeps
 * its sign and payload and becomes quiet (IEEE 754's conversion), a BF16
 * value becomes the upper half of the float's bits, NaN payloads as they
 * are. Errors: XG_ERR_NOT_FOUND, XG_ERR_DTYPE for other dtypes. */
xg_tensor *xg_safetensors_tensor(const xg_safetensors *st, const char *name);

/* As xg_safetensors_tensor, but F16 and BF16 load into XG_F16 and XG_BF16
 * tensors with the stored bits (no conversion); the other dtypes load as
 * xg_safetensors_tensor loads them. */
xg_tensor *xg_safetensors_tensor_as_stored(const xg_safetensors *st,
                                           const char *name);

/* The value of a __metadata__ key (borrowed), or NULL. */
const char *xg_safetensors_metadata(const xg_safetensors *st,
                                    const char *key);

/* Collects named tensors and metadata, then writes them in one go. */
typedef struct xg_safetensors_writer xg_safetensors_writer;

xg_safetensors_writer *xg_safetensors_writer_new(void);
/* Adds a tensor (copied to the host now, so it may be freed after) under
 * `name` (unique, non-empty), in its own dtype: F32, I32, BF16 or F16. */
xg_status xg_safetensors_writer_add(xg_safetensors_writer *w,
                                    const char *name, const xg_tensor *t);
/* Adds a scalar I64 tensor (e.g. BatchNorm's num_batches_tracked). */
xg_status xg_safetensors_writer_add_i64(xg_safetensors_writer *w,
                                        const char *name, int64_t value);
/* Sets a __metadata__ string pair. */
xg_status xg_safetensors_writer_metadata(xg_safetensors_writer *w,
                                         const char *key, const char *value);
/* Writes the file atomically: into `path`.tmp-XXXXXX (six letters or
 * digits) beside it, then renamed over `path`. Temporary files of `path`
 * left by writers that were killed (regular files of exactly that name
 * pattern that no writer holds locked) are removed first. Errors:
 * XG_ERR_IO with the reason. */
xg_status xg_safetensors_writer_save(xg_safetensors_writer *w,
                                     const char *path);
void xg_safetensors_writer_free(xg_safetensors_writer *w);

/* Writes a module's parameters and buffers under their dotted names (a
 * state_dict, loadable by torch's load_state_dict), for any module tree,
 * user-defined modules included, atomically. Errors: XG_ERR_INVALID_ARG
 * (NULL argument), XG_ERR_IO, device errors. */
xg_status xg_module_save(const xg_module *m, const char *path);

/* xg_module_save with extra __metadata__: `metadata` holds key, value
 * pairs ended by NULL (NULL: none), e.g. how the inputs were normalised.
 * Errors: those of xg_module_save, XG_ERR_INVALID_ARG for a key without
 * value or the key "format" (the file's own). */
xg_status xg_module_save_with(const xg_module *m, const char *path,
                              const char *const *metadata);

/* Loads a state_dict saved by xg_module_save or PyTorch onto the module's
 * device: every parameter and buffer must be in the file with its exact
 * shape, and the file must hold nothing else. Errors: XG_ERR_NOT_FOUND (missing tensor),
 * XG_ERR_SHAPE, XG_ERR_FORMAT (unexpected tensor), those of opening. On
 * error the module is unchanged. */
xg_status xg_module_load(xg_module *m, const char *path);

/* Training progress stored in a checkpoint beside model and optimizer. */
typedef struct xg_train_state {
    int64_t epoch; /* epochs completed */
    int64_t step;  /* optimizer steps taken */
    uint64_t rng_seed, rng_offset; /* xg_rng_state() */
    /* Mixed precision with a loss scaler: xg_grad_scaler_get_scale and
     * xg_grad_scaler_growth_tracker; loss_scale 0 when there is none. */
    float loss_scale;
    int64_t loss_scale_growth;
} xg_train_state;

/* Saves the module's parameters and buffers (any module tree, under the
 * names of xg_module_param), optimizer state (moments, momentum buffers,
 * step counts, lr, parameter groups), `state` (NULL: zeros; its loss
 * scale only when > 0), and `hparams`
 * (NULL or a NULL-ended list of key, value strings) as __metadata__,
 * atomically. Errors: XG_ERR_INVALID_ARG (NULL argument, an optimizer
 * parameter that is not one of the module's, a parameter name longer than
 * 255 characters, an epoch or step outside [0, 2^53], a hyperparameter
 * without value or with a key the checkpoint uses, a loss scale that is
 * negative or not finite), XG_ERR_IO, device errors. */
xg_status xg_checkpoint_save(const char *path, const xg_module *m,
                             const xg_optim *opt, const xg_train_state *state,
                             const char *const *hparams);

/* Restores what xg_checkpoint_save wrote into a module and optimizer built
 * the same way (same kind, same options: betas, eps, weight decay,
 * momentum, dampening, nesterov; same parameters, same parameter groups),
 * sets the optimizer's learning rate to the checkpoint's, and fills *state
 * (optional; loss_scale 0 when the file has none). Nothing is changed on error. Errors: those of
 * xg_module_load, XG_ERR_FORMAT (not a checkpoint, bad metadata, a step
 * or epoch count outside [0, 2^53], an optimizer moment or momentum that
 * is not finite, a negative second moment; the message names the key and
 * the file), XG_ERR_INVALID_ARG (NULL argument, another optimizer kind or
 * other options, other parameter groups, a parameter name longer than 255
 * characters). */
xg_status xg_checkpoint_load(const char *path, xg_module *m, xg_optim *opt,
                             xg_train_state *state);

/* ===== LoRA: low-rank adapters ===========================================
 * LoRA (Hu et al., 2021) fine-tunes a model by training, beside each
 * frozen target layer y = base(x), a low-rank update:
 *   y = base(x) + scale * dropout(x) A^T B^T,   scale = alpha / r,
 * with A [r, in] and B [out, r]; dropout applies to the branch's input
 * only, in training mode only. It works on any module tree. A module is a
 * candidate when its class is named "Linear" (weight [out, in],
 * y = x W^T + b: xg_linear, or a user class of that name) or "Conv1D"
 * (GPT-2's: weight [in, out], y = x W + b, as xg_gpt's projections) and it
 * has a 2-D parameter "weight". A candidate is a target when its dotted
 * path below the root equals one of the targets or ends with "." and a
 * target, as PEFT matches target_modules: "c_attn" selects every
 * h.{i}.attn.c_attn of a GPT, "attn.c_proj" only the attention's c_proj.
 *
 * Design. Each target gets two child modules, "lora_A" (a Linear in -> r
 * without bias, weight [r, in]) and "lora_B" (a Linear r -> out without
 * bias, weight [out, r]), so the adapter's parameters are named
 * "h.0.attn.c_attn.lora_A.weight" (PEFT's names less its adapter name)
 * and are listed, saved, loaded, checkpointed and optimised as any
 * others. The target keeps its class, parameters and forward; it carries
 * a LoRA record, and xg_module_forward adds scale * lora_B(lora_A(
 * dropout(x))) to the output of the module's own forward whenever the
 * module carries one, whoever calls it (a Sequential, the GPT and its KV
 * cache, a user's forward). The branch is made of existing ops (dropout,
 * matmul, mul_scalar, add), so it runs on every backend and autograd
 * differentiates it. The root passed to xg_lora_apply records the
 * configuration and every parameter's requires_grad from before. */

typedef struct xg_lora_config {
    int r;                      /* rank, >= 1 */
    float alpha;                /* scale = alpha / r; finite */
    float dropout;              /* branch input dropout, in [0, 1) */
    const char *const *targets; /* names or dotted-path suffixes */
    int n_targets;              /* >= 1 */
} xg_lora_config;

/* PEFT's LoraConfig defaults with its default target for GPT-2: r 8,
 * alpha 8, dropout 0, targets {"c_attn"} (the fused query, key, value
 * projection; the array is static). */
xg_lora_config xg_lora_config_default(void);

/* Adds LoRA to every target below `root` (see above): A uniform in
 * +-1/sqrt(in) (torch's kaiming_uniform_ with a = sqrt(5), as PEFT
 * initialises lora_A) from the thread's generator, one target after the
 * other in xg_module_param order; B zeros, so the model's outputs are
 * unchanged until B is trained. Then freezes every parameter of the tree
 * (xg_tensor_requires_grad false: optimizers skip them and keep no state
 * for them, so the base weights stay bit for bit) except the new A and B,
 * and records the flags it found for xg_lora_merge. cfg is copied.
 * Errors (nothing changed, though the generator may have advanced on a
 * device error): XG_ERR_INVALID_ARG (NULL argument, r < 1, alpha not
 * finite, dropout outside [0, 1), n_targets < 1, a NULL or empty target, a
 * target that selects a module that is neither a Linear nor a Conv1D
 * (named with its path), LoRA already applied in the tree (merge it
 * first), a target with a child "lora_A" or "lora_B" already),
 * XG_ERR_NOT_FOUND (a target that selects no module; PEFT only refuses
 * when all select nothing), XG_ERR_OUT_OF_MEMORY, device errors. */
xg_status xg_lora_apply(xg_module *root, const xg_lora_config *cfg);

/* Writes the adapter of `root` (a tree xg_lora_apply was called on, with
 * root that module) into the folder `dir` (made when missing; its parent
 * must exist), as PEFT's save_pretrained does, both files atomically:
 *   adapter_model.safetensors  for each LoRA'd layer at dotted path P:
 *       "base_model.model." PREFIX P ".lora_A.weight"  F32 [r, in]
 *       "base_model.model." PREFIX P ".lora_B.weight"  F32 [out, r]
 *     with __metadata__ {"format": "pt"}. PREFIX is "transformer." when
 *     root is a GPT (xg_gpt): its names are those of Hugging Face's
 *     GPT2LMHeadModel below "transformer", so the adapter loads with
 *     PeftModel.from_pretrained over GPT2LMHeadModel; for any other root
 *     it is empty (root is the model PEFT wraps).
 *   adapter_config.json  LoraConfig's fields as PEFT 0.10 writes them
 *     (indented, keys sorted): peft_type "LORA", r, lora_alpha (an integer
 *     when alpha is one), lora_dropout, target_modules (the targets),
 *     fan_in_fan_out (true when every LoRA'd layer is a Conv1D),
 *     base_model_name_or_path (NULL: null), bias "none", task_type
 *     "CAUSAL_LM" for a GPT (else null), inference_mode true,
 *     init_lora_weights true, use_rslora and use_dora false, rank_pattern
 *     and alpha_pattern {}, loftq_config {}, megatron_core "megatron.core",
 *     and null for auto_mapping, revision, modules_to_save,
 *     layers_to_transform, layers_pattern, megatron_config and
 *     layer_replication.
 * Errors: XG_ERR_INVALID_ARG (NULL root or dir), XG_ERR_STATE (root has
 * no LoRA of its own: xg_lora_apply was not called on it, or it was
 * merged), XG_ERR_IO, XG_ERR_OUT_OF_MEMORY, device errors. */
xg_status xg_lora_save_peft(const xg_module *root, const char *dir,
                            const char *base_model_name_or_path);

/* Loads the adapter in folder `dir` written by xg_lora_save_peft or by
 * PEFT's save_pretrained (adapter_config.json and
 * adapter_model.safetensors; adapter_model.bin is not read). When the
 * tree has no LoRA yet, applies it as xg_lora_apply with the file's r,
 * lora_alpha, lora_dropout and target_modules, and the file's A and B as
 * the initial values (the generator is not used); when it has, the LoRA
 * applied on root must have the same r, alpha and layers (its dropout is
 * kept), and A and B are overwritten. Keys are read with the PREFIX of
 * xg_lora_save_peft, with or without PEFT's adapter name
 * (".lora_A.weight" or ".lora_A.default.weight"). Fields a config may
 * hold that xgrad does not implement are refused, not ignored: use_dora
 * or use_rslora true, a non-empty rank_pattern or alpha_pattern,
 * layers_to_transform or modules_to_save not null, bias other than
 * "none", target_modules given as a regular expression (a string).
 * Everything is checked before anything changes; each refusal names the
 * key or field and the file: XG_ERR_FORMAT (peft_type not "LORA", r,
 * lora_alpha, lora_dropout or target_modules missing or malformed, an
 * unsupported feature, a key missing, a key that is not one of the
 * adapter's, e.g. for a layer that is not in the tree), XG_ERR_SHAPE (a
 * tensor of another shape), XG_ERR_DTYPE (not F32), XG_ERR_INVALID_ARG
 * (NULL argument, an applied LoRA that differs), XG_ERR_IO (a file
 * missing or unreadable), and those of xg_lora_apply (a target that
 * selects nothing or a module that is not a Linear or Conv1D). */
xg_status xg_lora_load_peft(xg_module *root, const char *dir);

/* Folds each LoRA'd layer below root into its weight, W += scale B A for
 * a Linear ([out, in]) and W += scale (B A)^T for a Conv1D ([in, out]),
 * then removes the lora_A and lora_B children and the records, so the
 * tree has the names, forward and file layout it had before the apply.
 * When root is the module xg_lora_apply was called on, every parameter
 * gets back the requires_grad it had before the apply; merging a subtree
 * leaves its parameters frozen (merge the root later to restore them).
 * The merged weights hold the sums rounded to f32, so outputs equal the
 * adapted model's to rounding, not bit for bit. Optimizers over the
 * adapter's parameters must be freed first (the tensors go). Errors
 * (nothing changed): XG_ERR_INVALID_ARG (NULL), XG_ERR_STATE (no LoRA
 * below root), XG_ERR_OUT_OF_MEMORY, device errors. */
xg_status xg_lora_merge(xg_module *root);

#ifdef __cplusplus
}
#endif
#endif
