/* 16-bit elements on a GPU backend, at the kernel level: the cast kernel
 * gives the host conversions' bits (xg_f32_to_bf16 etc., api/core/half.c)
 * on every bf16 and f16 pattern and on the f32 values where rounding is
 * delicate (ties, subnormals, overflow, NaN with its sign); fill, copy and
 * copy_strided on 16-bit elements copy bits and leave alone every element
 * they do not address, also the other half of a 32-bit word (the Vulkan
 * backend without 16-bit storage, XGRAD_VK_16BIT=0); matmul on 16-bit
 * operands runs in the backend's own kernel (never widened by the core),
 * within rounding of a double-precision product and with the widened
 * sequence's bits where the f32 GEMM sums in the same order; the
 * elementwise families (UNARY, UNARY_BACKWARD, SCALAR, BINARY) run natively
 * where the backend has 16-bit forms of them (elementwise_native) and give
 * the widened sequence's bits; and supports() answers true for exactly
 * these 16-bit kernels.
 *
 * The backend is XGRAD_TEST_BACKEND (opencl or vulkan); skipped when it is
 * unset or has no device, unless XGRAD_REQUIRE_BACKENDS=1. Under Vulkan
 * every test also fails on any validation message. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"
#ifdef XGRAD_HAVE_VULKAN
#include "vulkan_backend.h"
#endif

/* The device under test, its backend device and backend. */
typedef struct gpu {
    xg_device *dev;
    xg_backend_device *bdev;
    const xg_backend *be;
} gpu;

static gpu gpu_open(void)
{
    const char *name = getenv("XGRAD_TEST_BACKEND");
    const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
    bool required = req && strcmp(req, "1") == 0;
    gpu g = {0};
    if (!name || !*name) {
        if (required)
            cr_assert_fail("XGRAD_TEST_BACKEND is not set");
        cr_skip_test("XGRAD_TEST_BACKEND is not set");
    }
    if (xg_device_open(name, &g.dev) != XG_OK) {
        if (required)
            cr_assert_fail("no %s device: %s", name, xg_last_error());
        cr_skip_test("no %s device: %s", name, xg_last_error());
    }
    g.bdev = g.dev->bdev;
    g.be = g.bdev->backend;
    return g;
}

static void gpu_close(gpu *g)
{
    bool vulkan = strcmp(g->be->name, "vulkan") == 0;
    xg_device_close(g->dev);
#ifdef XGRAD_HAVE_VULKAN
    if (vulkan)
        cr_assert_eq(xg_vulkan_validation_messages(), 0,
                     "the Vulkan validation layer reported messages");
#else
    (void)vulkan;
#endif
}

static xg_buffer *upload(gpu *g, const void *src, size_t bytes)
{
    xg_buffer *b = NULL;
    cr_assert_eq(g->be->alloc(g->bdev, bytes, &b), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(g->be->upload(g->bdev, b, 0, src, bytes), XG_OK, "%s",
                 xg_last_error());
    return b;
}

static void download(gpu *g, xg_buffer *b, void *dst, size_t bytes)
{
    cr_assert_eq(g->be->download(g->bdev, b, 0, dst, bytes), XG_OK, "%s",
                 xg_last_error());
}

/* Runs cast of n elements from `src` (dtype from) and returns the result
 * (malloc'd, n elements of dtype to). */
static void *run_cast(gpu *g, const void *src, int64_t n, xg_dtype from,
                      xg_dtype to)
{
    xg_dtype sig[2] = {from, to};
    cr_assert(g->be->supports(g->bdev, XG_OP_cast, sig),
              "cast %s -> %s is not supported", xg_dtype_name(from),
              xg_dtype_name(to));
    size_t in_bytes = (size_t)n * xg_dtype_size(from);
    size_t out_bytes = (size_t)n * xg_dtype_size(to);
    xg_buffer *in = upload(g, src, in_bytes), *out = NULL;
    cr_assert_eq(g->be->alloc(g->bdev, out_bytes, &out), XG_OK);
    xg_kernel_call c = {.op = XG_OP_cast,
                        .in = {{in, from}},
                        .out = {{out, to}},
                        .p.cast = {n}};
    cr_assert_eq(g->be->kernels[XG_FAMILY_CAST](g->bdev, &c), XG_OK, "%s",
                 xg_last_error());
    void *result = malloc(out_bytes);
    cr_assert_not_null(result);
    download(g, out, result, out_bytes);
    g->be->free(g->bdev, in);
    g->be->free(g->bdev, out);
    return result;
}

/* Every 16-bit pattern, n = 65536 + 1 (an odd count: the last word of a
 * packed buffer is half used). */
#define PATTERNS 65537

static uint16_t *all_patterns(void)
{
    uint16_t *h = malloc(PATTERNS * sizeof *h);
    cr_assert_not_null(h);
    for (int i = 0; i < PATTERNS; i++)
        h[i] = (uint16_t)i;
    return h;
}

static void host_to_f32(xg_dtype t, const uint16_t *h, float *f, size_t n)
{
    if (t == XG_BF16)
        xg_bf16_to_f32(h, f, n);
    else
        xg_f16_to_f32(h, f, n);
}

static void host_from_f32(xg_dtype t, const float *f, uint16_t *h, size_t n)
{
    if (t == XG_BF16)
        xg_f32_to_bf16(f, h, n);
    else
        xg_f32_to_f16(f, h, n);
}

/* bf16 and f16 -> f32, and to each other, on every pattern. */
Test(gpu_half, cast_every_16bit_pattern)
{
    gpu g = gpu_open();
    uint16_t *h = all_patterns();
    float *ref = malloc(PATTERNS * sizeof *ref);
    uint16_t *ref16 = malloc(PATTERNS * sizeof *ref16);
    const xg_dtype types[2] = {XG_BF16, XG_F16};
    for (int a = 0; a < 2; a++) {
        xg_dtype t = types[a], other = types[1 - a];
        host_to_f32(t, h, ref, PATTERNS);
        uint32_t *got = run_cast(&g, h, PATTERNS, t, XG_F32);
        for (int i = 0; i < PATTERNS; i++) {
            uint32_t want;
            memcpy(&want, &ref[i], 4);
            cr_assert_eq(got[i], want, "%s 0x%04x -> f32: 0x%08x, want 0x%08x",
                         xg_dtype_name(t), h[i], got[i], want);
        }
        free(got);
        host_from_f32(other, ref, ref16, PATTERNS);
        uint16_t *got16 = run_cast(&g, h, PATTERNS, t, other);
        for (int i = 0; i < PATTERNS; i++)
            cr_assert_eq(got16[i], ref16[i], "%s 0x%04x -> %s: 0x%04x, want "
                         "0x%04x", xg_dtype_name(t), h[i],
                         xg_dtype_name(other), got16[i], ref16[i]);
        free(got16);
        got16 = run_cast(&g, h, PATTERNS, t, t); /* the same dtype: a copy */
        cr_assert_eq(memcmp(got16, h, PATTERNS * sizeof *h), 0,
                     "%s -> %s is not a bit copy", xg_dtype_name(t),
                     xg_dtype_name(t));
        free(got16);
    }
    free(ref16);
    free(ref);
    free(h);
    gpu_close(&g);
}

/* f32 -> bf16 and f16: every upper half with lower halves where rounding
 * is delicate for either type (exact, just below, at and above the tie of
 * bf16 and of f16, all ones), which covers zeros, both types' subnormals,
 * the overflow to Inf, Inf and NaN (quiet and signalling, both signs). */
Test(gpu_half, cast_f32_to_16bit_rounding)
{
    static const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001,
                                    0x1fff, 0x2000, 0x3000, 0x7fff, 0x8000,
                                    0x8001, 0xffff, 0x17ff, 0x1800, 0x5000};
    const size_t n_lows = sizeof lows / sizeof lows[0];
    const int64_t n = 65536 * (int64_t)n_lows + 1; /* odd */
    uint32_t *bits = malloc((size_t)n * 4);
    cr_assert_not_null(bits);
    for (int64_t hi = 0; hi < 65536; hi++)
        for (size_t j = 0; j < n_lows; j++)
            bits[hi * (int64_t)n_lows + (int64_t)j] =
                (uint32_t)hi << 16 | lows[j];
    bits[n - 1] = 0x33000001u; /* just above half f16's smallest subnormal */
    float *f = (float *)bits;
    uint16_t *ref = malloc((size_t)n * 2);
    gpu g = gpu_open();
    const xg_dtype types[2] = {XG_BF16, XG_F16};
    for (int a = 0; a < 2; a++) {
        host_from_f32(types[a], f, ref, (size_t)n);
        uint16_t *got = run_cast(&g, f, n, XG_F32, types[a]);
        for (int64_t i = 0; i < n; i++)
            cr_assert_eq(got[i], ref[i], "f32 0x%08x -> %s: 0x%04x, want "
                         "0x%04x", bits[i], xg_dtype_name(types[a]), got[i],
                         ref[i]);
        free(got);
    }
    free(ref);
    free(bits);
    gpu_close(&g);
}

/* i32 <-> the float types: through f32, rounding to nearest even; float ->
 * i32 truncates (values in range only: the rest is unspecified). */
Test(gpu_half, cast_i32)
{
    static const int32_t ints[] = {0, 1, -1, 7, -255, 65504, 65520, 65536,
                                   16777217, -16777217, 33554435,
                                   2147483647, -2147483647 - 1, 123456789};
    const int64_t n = sizeof ints / sizeof ints[0];
    gpu g = gpu_open();
    const xg_dtype types[3] = {XG_F32, XG_BF16, XG_F16};
    for (int a = 0; a < 3; a++) {
        xg_dtype t = types[a];
        float wide[sizeof ints / sizeof ints[0]];
        for (int64_t i = 0; i < n; i++)
            wide[i] = (float)ints[i];
        uint16_t want16[sizeof ints / sizeof ints[0]];
        if (t != XG_F32)
            host_from_f32(t, wide, want16, (size_t)n);
        void *got = run_cast(&g, ints, n, XG_I32, t);
        for (int64_t i = 0; i < n; i++) {
            if (t == XG_F32)
                cr_assert_eq(((float *)got)[i], wide[i], "i32 %d -> f32",
                             ints[i]);
            else
                cr_assert_eq(((uint16_t *)got)[i], want16[i],
                             "i32 %d -> %s: 0x%04x, want 0x%04x", ints[i],
                             xg_dtype_name(t), ((uint16_t *)got)[i],
                             want16[i]);
        }
        free(got);
    }
    static const float floats[] = {0.0f, -0.0f, 0.5f, -0.5f, 1.75f, -1.75f,
                                   65504.0f, -3.0e9f / 2.0f, 1.0e9f, 7.0f};
    const int64_t nf = sizeof floats / sizeof floats[0];
    int32_t *got = run_cast(&g, floats, nf, XG_F32, XG_I32);
    for (int64_t i = 0; i < nf; i++)
        cr_assert_eq(got[i], (int32_t)floats[i], "f32 %g -> i32: %d",
                     (double)floats[i], got[i]);
    free(got);
    uint16_t h[3];
    const float small[3] = {-2.5f, 300.0f, 65504.0f};
    xg_f32_to_f16(small, h, 3);
    got = run_cast(&g, h, 3, XG_F16, XG_I32);
    cr_assert(got[0] == -2 && got[1] == 300 && got[2] == 65504,
              "f16 -> i32: %d %d %d", got[0], got[1], got[2]);
    free(got);
    gpu_close(&g);
}

/* fill and copy of n 16-bit elements, n odd and even. */
Test(gpu_half, fill_and_copy)
{
    gpu g = gpu_open();
    static const int64_t sizes[] = {1, 2, 3, 255, 256, 257, 100001};
    const xg_dtype types[2] = {XG_BF16, XG_F16};
    for (int a = 0; a < 2; a++) {
        xg_dtype t = types[a];
        xg_dtype sig[2] = {t, t};
        cr_assert(g.be->supports(g.bdev, XG_OP_fill, sig));
        cr_assert(g.be->supports(g.bdev, XG_OP_copy, sig));
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            int64_t n = sizes[s];
            size_t bytes = (size_t)n * 2;
            uint16_t *host = malloc(bytes), *back = malloc(bytes);
            for (int64_t i = 0; i < n; i++)
                host[i] = (uint16_t)(i * 2654435761u >> 16);
            xg_buffer *x = upload(&g, host, bytes), *y = NULL, *z = NULL;
            cr_assert_eq(g.be->alloc(g.bdev, bytes, &y), XG_OK);
            cr_assert_eq(g.be->alloc(g.bdev, bytes, &z), XG_OK);
            xg_kernel_call copy = {.op = XG_OP_copy, .in = {{x, t}},
                                   .out = {{y, t}}, .p.fill = {n, 0.0f}};
            const float value = 0.1f; /* rounds in both types */
            xg_kernel_call fill = {.op = XG_OP_fill, .out = {{z, t}},
                                   .p.fill = {n, value}};
            cr_assert_eq(g.be->kernels[XG_FAMILY_FILL](g.bdev, &copy), XG_OK);
            cr_assert_eq(g.be->kernels[XG_FAMILY_FILL](g.bdev, &fill), XG_OK);
            download(&g, y, back, bytes);
            cr_assert_eq(memcmp(back, host, bytes), 0, "%s copy of %lld",
                         xg_dtype_name(t), (long long)n);
            uint16_t want;
            host_from_f32(t, &value, &want, 1);
            download(&g, z, back, bytes);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(back[i], want, "%s fill of %lld: [%lld] 0x%04x",
                             xg_dtype_name(t), (long long)n, (long long)i,
                             back[i]);
            g.be->free(g.bdev, x);
            g.be->free(g.bdev, y);
            g.be->free(g.bdev, z);
            free(host);
            free(back);
        }
    }
    gpu_close(&g);
}

/* copy_strided into every other element of a 16-bit buffer, at even and at
 * odd offsets, and a transposed read: the elements it does not address
 * keep their bits, including the other half of each 32-bit word. */
Test(gpu_half, copy_strided_leaves_neighbours)
{
    gpu g = gpu_open();
    const int64_t rows = 37, cols = 19, n = rows * cols; /* odd sizes */
    const xg_dtype types[2] = {XG_BF16, XG_F16};
    for (int a = 0; a < 2; a++) {
        xg_dtype t = types[a];
        xg_dtype sig[2] = {t, t};
        cr_assert(g.be->supports(g.bdev, XG_OP_copy_strided, sig));
        uint16_t *src = malloc((size_t)n * 2);
        uint16_t *dst = malloc((size_t)(2 * n + 1) * 2);
        uint16_t *back = malloc((size_t)(2 * n + 1) * 2);
        for (int64_t i = 0; i < n; i++)
            src[i] = (uint16_t)(0x1000 + i);
        for (int offset = 0; offset < 2; offset++) {
            for (int64_t i = 0; i < 2 * n + 1; i++)
                dst[i] = (uint16_t)(0xf000 | (i & 0xfff));
            xg_buffer *x = upload(&g, src, (size_t)n * 2);
            xg_buffer *y = upload(&g, dst, (size_t)(2 * n + 1) * 2);
            /* out[offset + 2 (r cols + c)] = in[c rows + r]: reads the
             * source transposed (as [cols, rows]) */
            xg_kernel_call c = {
                .op = XG_OP_copy_strided,
                .in = {{x, t}},
                .out = {{y, t}},
                .p.strided = {.ndim = 2,
                              .n = n,
                              .shape = {rows, cols},
                              .in_stride = {1, rows},
                              .out_stride = {2 * cols, 2},
                              .in_offset = 0,
                              .out_offset = offset}};
            cr_assert_eq(g.be->kernels[XG_FAMILY_STRIDED](g.bdev, &c), XG_OK,
                         "%s", xg_last_error());
            download(&g, y, back, (size_t)(2 * n + 1) * 2);
            for (int64_t i = 0; i < 2 * n + 1; i++) {
                int64_t k = i - offset;
                uint16_t want = dst[i];
                if (k >= 0 && k % 2 == 0 && k / 2 < n) {
                    int64_t r = k / 2 / cols, col = k / 2 % cols;
                    want = src[col * rows + r];
                }
                cr_assert_eq(back[i], want, "%s offset %d: [%lld] 0x%04x, "
                             "want 0x%04x", xg_dtype_name(t), offset,
                             (long long)i, back[i], want);
            }
            g.be->free(g.bdev, x);
            g.be->free(g.bdev, y);
        }
        free(src);
        free(dst);
        free(back);
    }
    gpu_close(&g);
}

/* The elementwise families (UNARY, UNARY_BACKWARD, SCALAR, BINARY). */
static bool is_elementwise_family(xg_op_family f)
{
    return f == XG_FAMILY_UNARY || f == XG_FAMILY_UNARY_BACKWARD ||
           f == XG_FAMILY_SCALAR || f == XG_FAMILY_BINARY;
}

/* Whether the backend runs the elementwise families on 16-bit elements in
 * kernels of its own: OpenCL does (kernels/elementwise.cl, binary.cl), and
 * Vulkan with 16-bit storage (unary.comp, binary.comp; in words the core
 * widens them). */
static bool elementwise_native(const gpu *g)
{
#ifdef XGRAD_HAVE_VULKAN
    if (strcmp(g->be->name, "vulkan") == 0)
        return xg_vulkan_16bit_storage(g->bdev);
#endif
    return strcmp(g->be->name, "opencl") == 0;
}

/* supports() answers true for the 16-bit kernels above, matmul and (where
 * elementwise_native) the elementwise families, and no other op on 16-bit
 * elements (the core widens those through casts). */
Test(gpu_half, supports_exactly_the_16bit_kernels)
{
    gpu g = gpu_open();
    for (int op = 0; op < XG_OP_COUNT; op++) {
        const xg_op_info *info = &xg_op_table[op];
        if (!strchr(info->in_rule, 'T') && !strchr(info->out_rule, 'T'))
            continue; /* f32 whatever the type (optimizer updates) */
        for (xg_dtype t = XG_BF16; t <= XG_F16; t++) {
            xg_dtype sig[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
            int k = 0;
            for (const char *r = info->in_rule; *r; r++)
                sig[k++] = xg_op_rule_dtype(*r, t);
            for (const char *r = info->out_rule; *r; r++)
                sig[k++] = xg_op_rule_dtype(*r, t);
            bool want = op == XG_OP_cast || op == XG_OP_fill ||
                        op == XG_OP_copy || op == XG_OP_copy_strided ||
                        op == XG_OP_matmul ||
                        (elementwise_native(&g) &&
                         is_elementwise_family(info->family));
            cr_expect_eq(g.be->supports(g.bdev, (xg_op)op, sig), want,
                         "%s on %s: supports() says %d", info->name,
                         xg_dtype_name(t), !want);
        }
    }
    gpu_close(&g);
}

/* ---- matmul on 16-bit elements: native kernels ------------------------ */

/* matmul on bf16 and f16 runs in the backend's own kernel: the core must
 * not widen it (a silent fallback to f32 temporaries fails here). */
Test(gpu_half, matmul_runs_natively)
{
    gpu g = gpu_open();
    for (xg_dtype t = XG_BF16; t <= XG_F16; t++) {
        cr_expect(xg_device_supports_natively(g.dev, XG_OP_matmul, t),
                  "matmul on %s is widened on %s", xg_dtype_name(t),
                  g.be->name);
        cr_expect(xg_device_supports(g.dev, XG_OP_matmul, t));
    }
    gpu_close(&g);
}

/* Shapes: odd sizes around the kernels' tiles (OpenCL 8 x 16 and 4 x 4
 * blocks, 16-wide k slices; Vulkan 64 x 64 x 16 tiles, 32 x 64 subgroup
 * tiles), every layout, batches with a broadcast operand, alpha, and a K
 * past XG_GEMM_K_CHUNK (16384: Vulkan splits K, sums f32 partials and then
 * rounds). */
static const struct {
    int64_t batch, m, n, k;
    int bcast_a, bcast_b, ta, tb;
    float alpha;
} mm16_cases[] = {
    {1, 1, 1, 1, 0, 0, 0, 0, 1.0f},     {1, 17, 33, 65, 0, 0, 0, 0, 1.0f},
    {1, 17, 33, 65, 0, 0, 0, 1, 1.0f},  {1, 17, 33, 65, 0, 0, 1, 0, 1.0f},
    {1, 17, 33, 65, 0, 0, 1, 1, 1.0f},  {1, 70, 131, 37, 0, 0, 0, 0, 1.0f},
    {1, 70, 131, 37, 0, 0, 1, 1, 1.0f}, {1, 65, 3, 300, 0, 0, 0, 1, 1.0f},
    {3, 9, 19, 21, 0, 0, 0, 0, -0.5f},  {4, 5, 17, 9, 1, 0, 0, 0, 1.0f},
    {4, 3, 17, 33, 0, 1, 1, 0, 2.0f},   {2, 33, 7, 5, 0, 1, 0, 1, 1.0f},
    {2, 3, 5, 16411, 0, 0, 0, 0, 1.0f}, {1, 5, 3, 16411, 0, 0, 1, 1, 1.0f},
};

/* Guard elements after C, which must keep their bits. */
#define MM16_GUARD 3
#define MM16_SENTINEL 0x7fa1u

/* Runs matmul g on the device with A, B (host 16-bit elements of t) and
 * returns C with its guard (malloc'd). `widened`: as the core widens an op
 * (A and B cast to f32 on the device, the f32 kernel, C cast back to t),
 * else the backend's 16-bit kernel. */
static uint16_t *run_matmul16(gpu *g, xg_dtype t, const xg_gemm_args *ga,
                              const uint16_t *a, int64_t na,
                              const uint16_t *b, int64_t nb, bool widened)
{
    int64_t nc = ga->batch * ga->m * ga->n;
    uint16_t *c = malloc((size_t)(nc + MM16_GUARD) * 2);
    cr_assert_not_null(c);
    for (int64_t i = 0; i < nc + MM16_GUARD; i++)
        c[i] = MM16_SENTINEL;
    xg_buffer *ba = upload(g, a, (size_t)na * 2);
    xg_buffer *bb = upload(g, b, (size_t)nb * 2);
    xg_buffer *bc = upload(g, c, (size_t)(nc + MM16_GUARD) * 2);
    xg_kernel_call call = {.op = XG_OP_matmul, .p.gemm = *ga};
    xg_buffer *tmp[3] = {NULL, NULL, NULL};
    if (widened) {
        const int64_t n[3] = {na, nb, nc};
        for (int i = 0; i < 3; i++)
            cr_assert_eq(g->be->alloc(g->bdev, (size_t)n[i] * 4, &tmp[i]),
                         XG_OK);
        for (int i = 0; i < 2; i++) {
            xg_kernel_call cast = {.op = XG_OP_cast,
                                   .in = {{i ? bb : ba, t}},
                                   .out = {{tmp[i], XG_F32}},
                                   .p.cast = {n[i]}};
            cr_assert_eq(g->be->kernels[XG_FAMILY_CAST](g->bdev, &cast),
                         XG_OK, "%s", xg_last_error());
        }
        call.in[0] = (xg_operand){tmp[0], XG_F32, 0};
        call.in[1] = (xg_operand){tmp[1], XG_F32, 0};
        call.out[0] = (xg_operand){tmp[2], XG_F32, 0};
    } else {
        xg_dtype sig[3] = {t, t, t};
        cr_assert(g->be->supports(g->bdev, XG_OP_matmul, sig));
        call.in[0] = (xg_operand){ba, t, 0};
        call.in[1] = (xg_operand){bb, t, 0};
        call.out[0] = (xg_operand){bc, t, 0};
    }
    cr_assert_eq(g->be->kernels[XG_FAMILY_GEMM](g->bdev, &call), XG_OK, "%s",
                 xg_last_error());
    if (widened) {
        xg_kernel_call cast = {.op = XG_OP_cast,
                               .in = {{tmp[2], XG_F32}},
                               .out = {{bc, t}},
                               .p.cast = {nc}};
        cr_assert_eq(g->be->kernels[XG_FAMILY_CAST](g->bdev, &cast), XG_OK,
                     "%s", xg_last_error());
    }
    download(g, bc, c, (size_t)(nc + MM16_GUARD) * 2);
    for (int i = 0; i < 3; i++)
        if (tmp[i])
            g->be->free(g->bdev, tmp[i]);
    g->be->free(g->bdev, ba);
    g->be->free(g->bdev, bb);
    g->be->free(g->bdev, bc);
    return c;
}

/* One unit in the last place of t at |x| (subnormal spacing below). */
static double ulp16(xg_dtype t, double x)
{
    int e;
    frexp(fabs(x), &e); /* |x| in [2^(e-1), 2^e) */
    int bits = t == XG_BF16 ? 8 : 11, min_e = t == XG_BF16 ? -125 : -13;
    return ldexp(1.0, (e > min_e ? e : min_e) - bits);
}

/* The 16-bit kernels against a double-precision product of the same
 * 16-bit inputs: within one unit of t plus the f32 accumulation's bound;
 * and against the widened sequence (cast, f32 kernel, cast) on the same
 * device: the same bits wherever the f32 GEMM is the same kernel with the
 * same summation order (Vulkan; OpenCL with xgrad's GEMM, the default on
 * CPU devices, but not CLBlast). Guards after C keep their bits. */
Test(gpu_half, matmul_16bit_kernels, .timeout = 600)
{
    gpu g = gpu_open();
    const char *name = xg_device_name(g.dev);
    const char *own = "xgrad GEMM)";
    size_t len = strlen(name), own_len = strlen(own);
    bool same_order = strcmp(g.be->name, "vulkan") == 0 ||
                      (len >= own_len &&
                       strcmp(name + len - own_len, own) == 0);
    cr_log_info("%s: 16-bit matmul %s the widened one's bits", name,
                same_order ? "must give" : "need not give");
    uint64_t s = 42;
    for (size_t ci = 0; ci < sizeof mm16_cases / sizeof mm16_cases[0]; ci++) {
        xg_gemm_args ga = {mm16_cases[ci].batch, mm16_cases[ci].m,
                           mm16_cases[ci].n, mm16_cases[ci].k, 0, 0, 0,
                           mm16_cases[ci].ta, mm16_cases[ci].tb,
                           mm16_cases[ci].alpha};
        ga.stride_a = mm16_cases[ci].bcast_a ? 0 : ga.m * ga.k;
        ga.stride_b = mm16_cases[ci].bcast_b ? 0 : ga.k * ga.n;
        ga.stride_c = ga.m * ga.n;
        int64_t na = (ga.batch - 1) * ga.stride_a + ga.m * ga.k;
        int64_t nb = (ga.batch - 1) * ga.stride_b + ga.k * ga.n;
        int64_t nc = ga.batch * ga.m * ga.n;
        for (xg_dtype t = XG_BF16; t <= XG_F16; t++) {
            float *fa = malloc((size_t)(na + nb) * sizeof *fa), *fb = fa + na;
            uint16_t *h = malloc((size_t)(na + nb) * 2);
            cr_assert(fa && h);
            for (int64_t i = 0; i < na + nb; i++) {
                s = s * 6364136223846793005u + 1442695040888963407u;
                fa[i] = ((float)(s >> 40) / (float)(1u << 24) - 0.5f) * 4.0f;
            }
            host_from_f32(t, fa, h, (size_t)(na + nb));
            host_to_f32(t, h, fa, (size_t)(na + nb)); /* the exact inputs */
            uint16_t *got = run_matmul16(&g, t, &ga, h, na, h + na, nb, false);
            uint16_t *wide = run_matmul16(&g, t, &ga, h, na, h + na, nb, true);
            float *fgot = malloc((size_t)nc * sizeof *fgot);
            cr_assert_not_null(fgot);
            host_to_f32(t, got, fgot, (size_t)nc);
            int bad = 0;
            for (int64_t e = 0; e < nc && bad < 5; e++) {
                int64_t bi = e / (ga.m * ga.n), r = e / ga.n % ga.m,
                        col = e % ga.n;
                const float *A = fa + bi * ga.stride_a;
                const float *B = fb + bi * ga.stride_b;
                double ref = 0, mag = 0;
                for (int64_t kk = 0; kk < ga.k; kk++) {
                    double x = ga.trans_a ? A[kk * ga.m + r]
                                          : A[r * ga.k + kk];
                    double y = ga.trans_b ? B[col * ga.k + kk]
                                          : B[kk * ga.n + col];
                    ref += x * y;
                    mag += fabs(x * y);
                }
                ref *= ga.alpha;
                mag *= fabs(ga.alpha);
                double tol =
                    ulp16(t, ref) + (double)(ga.k + 2) * 0x1p-23 * mag;
                bool ok = fabs(fgot[e] - ref) <= tol;
                bool same = got[e] == wide[e];
                if (!ok || (same_order && !same)) {
                    bad++;
                    cr_expect_fail("case %zu (%s, batch %" PRId64 " m %" PRId64
                                   " n %" PRId64 " k %" PRId64 " ta %d tb %d)"
                                   " element %" PRId64 ": 0x%04x (%g), "
                                   "widened 0x%04x, exact %g (tolerance %g)",
                                   ci, xg_dtype_name(t), ga.batch, ga.m, ga.n,
                                   ga.k, ga.trans_a, ga.trans_b, e, got[e],
                                   (double)fgot[e], wide[e], ref, tol);
                }
            }
            for (int64_t e = nc; e < nc + MM16_GUARD; e++)
                cr_expect_eq(got[e], MM16_SENTINEL,
                             "case %zu (%s): guard %" PRId64 " written", ci,
                             xg_dtype_name(t), e - nc);
            free(fgot);
            free(got);
            free(wide);
            free(fa);
            free(h);
        }
    }
    gpu_close(&g);
}

/* Every 16-bit pattern through each way the kernels load and store
 * elements: times 1 (an exact product), as op(B)'s row (B not transposed:
 * the 16-wide loads of OpenCL's kernel and its last columns), as op(A)'s
 * column with A transposed and not, and as column 0 of a transposed B with
 * k = 16 (OpenCL's 16-wide dot products; the other 15 products are 0 * 0).
 * The result must be the pattern's value: the loads widen every pattern
 * exactly (subnormals, Inf; NaN stays a NaN) and the store rounds nothing
 * away. Zeros may lose their sign where a + 0 is summed. */
Test(gpu_half, matmul_16bit_every_pattern, .timeout = 600)
{
    gpu g = gpu_open();
    uint16_t *pat = all_patterns();
    const int64_t P = PATTERNS;
    for (xg_dtype t = XG_BF16; t <= XG_F16; t++) {
        uint16_t one = t == XG_BF16 ? 0x3f80 : 0x3c00;
        uint16_t *wide = calloc((size_t)P * 16, 2), e0[16] = {one};
        cr_assert_not_null(wide);
        for (int64_t i = 0; i < P; i++)
            wide[i * 16] = pat[i];
        struct {
            const char *what;
            xg_gemm_args ga;
            const uint16_t *a, *b;
            int64_t na, nb;
        } ways[] = {
            {"row of B", {1, 1, P, 1, 1, P, P, 0, 0, 1.0f}, &one, pat, 1, P},
            {"column of A", {1, P, 1, 1, P, 1, P, 0, 0, 1.0f}, pat, &one, P,
             1},
            {"column of A transposed", {1, P, 1, 1, P, 1, P, 1, 0, 1.0f}, pat,
             &one, P, 1},
            {"k = 16, B transposed", {1, 1, P, 16, 16, P * 16, P, 0, 1, 1.0f},
             e0, wide, 16, P * 16},
        };
        for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
            uint16_t *got = run_matmul16(&g, t, &ways[w].ga, ways[w].a,
                                         ways[w].na, ways[w].b, ways[w].nb,
                                         false);
            float fg[1], fp[1];
            int bad = 0;
            for (int64_t i = 0; i < P && bad < 5; i++) {
                host_to_f32(t, &got[i], fg, 1);
                host_to_f32(t, &pat[i], fp, 1);
                /* bf16 subnormals are f32 subnormals, which a device
                 * may flush in its arithmetic (f16's are normal in f32) */
                bool flushable = t == XG_BF16 && fpclassify(fp[0]) ==
                                                     FP_SUBNORMAL;
                bool ok = isnan(fp[0]) ? isnan(fg[0])
                                       : fg[0] == fp[0] ||
                                             (flushable && fg[0] == 0.0f);
                if (!ok) {
                    bad++;
                    cr_expect_fail("%s, %s: pattern 0x%04x gave 0x%04x",
                                   xg_dtype_name(t), ways[w].what, pat[i],
                                   got[i]);
                }
            }
            for (int64_t e = P; e < P + MM16_GUARD; e++)
                cr_expect_eq(got[e], MM16_SENTINEL, "%s, %s: guard written",
                             xg_dtype_name(t), ways[w].what);
            free(got);
        }
        free(wide);
    }
    free(pat);
    gpu_close(&g);
}

/* ---- the elementwise families on 16-bit elements -------------------- */

/* Whether 16-bit bits h are a NaN of type t. */
static bool is_nan16(xg_dtype t, uint16_t h)
{
    return t == XG_BF16 ? (h & 0x7fffu) > 0x7f80u : (h & 0x7fffu) > 0x7c00u;
}

/* Whether a NaN's sign and payload may differ from the widened op's: SPIR-V
 * leaves the NaN that arithmetic makes unspecified, and lavapipe's two
 * compilations of one expression (f32 and 16-bit forms) may give NaNs of
 * different signs. OpenCL (PoCL) gives the same bits throughout. */
static bool nan_bits_free(void)
{
    const char *name = getenv("XGRAD_TEST_BACKEND");
    return name && strcmp(name, "vulkan") == 0;
}

/* Asserts that got and ref (16-bit tensors) hold the same bits (a NaN for
 * a NaN where nan_bits_free). */
static void expect_same_bits(xg_tensor *got, xg_tensor *ref, const char *what,
                             xg_dtype t)
{
    cr_assert_not_null(got, "%s: %s", what, xg_last_error());
    cr_assert_not_null(ref, "%s: %s", what, xg_last_error());
    cr_assert_eq(xg_tensor_dtype(got), t, "%s", what);
    cr_assert_eq(xg_tensor_dtype(ref), t, "%s", what);
    int64_t n = xg_tensor_numel(got);
    cr_assert_eq(n, xg_tensor_numel(ref), "%s", what);
    uint16_t *a = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
    cr_assert(a && b);
    cr_assert_eq(xg_tensor_read(got, a, (size_t)n * 2), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(xg_tensor_read(ref, b, (size_t)n * 2), XG_OK, "%s",
                 xg_last_error());
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i] &&
            !(nan_bits_free() && is_nan16(t, a[i]) && is_nan16(t, b[i])) &&
            bad++ == 0)
            first = i;
    cr_expect_eq(bad, 0,
                 "%s (%s): %" PRId64 " of %" PRId64 " elements differ from "
                 "the widened op's, first [%" PRId64 "]: 0x%04x, want 0x%04x",
                 what, xg_dtype_name(t), bad, n, first,
                 first >= 0 ? a[first] : 0, first >= 0 ? b[first] : 0);
    free(a);
    free(b);
}

/* n values in about [-scale, scale], a few special ones among them: NaN,
 * +-Inf, -0, tiny values (subnormal in f16, and their products in
 * bf16), values past f16's range when scale is large. */
static void ew_values(float *v, int n, float scale, uint64_t seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        v[i] = scale * ((float)(seed >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
    }
    const float special[] = {NAN, INFINITY, -INFINITY, -0.0f, 3e-7f, -5e-8f,
                             1e-30f, 60000.0f, -0.5f, 0.5f};
    for (int i = 0; i < (int)(sizeof special / sizeof *special); i++)
        if (i * 37 + 11 < n)
            v[i * 37 + 11] = special[i];
}

/* On the device under test, every op of the elementwise families on bf16
 * and f16 runs natively (elementwise_native) and gives the bits of the f32
 * op on the widened values, rounded once: odd lengths (not a multiple of
 * any work-group or of two, so the last 16-bit element of a 32-bit word is
 * written alone), broadcast binaries (a row, a column, a scalar, both
 * sides), a transposed operand, and the backward ops with the output in
 * place of the gradient (in[1]), as autograd may call them. */
Test(gpu_half, elementwise_native_matches_widened, .timeout = 300)
{
    gpu g = gpu_open();
    xg_device_set_current(g.dev);
    xg_scope *scope = xg_scope_begin();
    for (int op = 0; op < XG_OP_COUNT; op++)
        if (is_elementwise_family(xg_op_table[op].family))
            for (xg_dtype t = XG_BF16; t <= XG_F16; t++)
                cr_expect_eq(xg_device_supports_natively(g.dev, op, t),
                             elementwise_native(&g), "%s on %s: native %d",
                             xg_op_table[op].name, xg_dtype_name(t),
                             !elementwise_native(&g));
    enum { R = 5, C = 1001, N = R * C }; /* odd */
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    cr_assert(a && b);
    typedef xg_tensor *(*unary_fn)(xg_tensor *);
    typedef xg_tensor *(*binary_fn)(xg_tensor *, xg_tensor *);
    static const struct { const char *name; unary_fn f; } unary[] = {
        {"neg", xg_neg},         {"exp", xg_exp},   {"log", xg_log},
        {"sqrt", xg_sqrt},       {"relu", xg_relu}, {"sigmoid", xg_sigmoid},
        {"tanh", xg_tanh},       {"gelu", xg_gelu}, {"silu", xg_silu},
        {"gelu_tanh", xg_gelu_tanh}};
    static const struct { const char *name; binary_fn f; } binary[] = {
        {"add", xg_add}, {"sub", xg_sub}, {"mul", xg_mul}, {"div", xg_div}};
    static const struct { const char *name; unary_fn f; } grads[] = {
        {"relu_backward", xg_relu}, {"gelu_backward", xg_gelu},
        {"silu_backward", xg_silu}, {"gelu_tanh_backward", xg_gelu_tanh}};
    const float scales[2] = {3.0f, 400.0f}; /* the second overflows f16 */
    for (xg_dtype t = XG_BF16; t <= XG_F16; t++)
        for (int sc = 0; sc < 2; sc++) {
            ew_values(a, N, scales[sc], 1 + (uint64_t)sc);
            ew_values(b, N, scales[sc], 7 + (uint64_t)sc);
            xg_tensor *fa = xg_tensor_from_data(a, XG_F32, XG_SHAPE(R, C));
            xg_tensor *fb = xg_tensor_from_data(b, XG_F32, XG_SHAPE(R, C));
            xg_tensor *ha = xg_to_dtype(fa, t), *hb = xg_to_dtype(fb, t);
            cr_assert(ha && hb, "%s", xg_last_error());
            xg_tensor *wa = xg_to_dtype(ha, XG_F32);
            xg_tensor *wb = xg_to_dtype(hb, XG_F32);
            for (size_t k = 0; k < sizeof unary / sizeof *unary; k++)
                expect_same_bits(unary[k].f(ha),
                                 xg_to_dtype(unary[k].f(wa), t),
                                 unary[k].name, t);
            static const struct {
                const char *name;
                xg_tensor *(*f)(xg_tensor *, float);
            } scalar_ops[] = {{"add_scalar", xg_add_scalar},
                              {"sub_scalar", xg_sub_scalar},
                              {"mul_scalar", xg_mul_scalar},
                              {"div_scalar", xg_div_scalar}};
            const float scalars[2] = {0.3f, -3.0f};
            for (int k = 0; k < 2; k++)
                for (size_t o = 0; o < sizeof scalar_ops / sizeof *scalar_ops;
                     o++)
                    expect_same_bits(
                        scalar_ops[o].f(ha, scalars[k]),
                        xg_to_dtype(scalar_ops[o].f(wa, scalars[k]), t),
                        scalar_ops[o].name, t);
            /* b whole, a row [1, C], a column [R, 1], a scalar [1, 1] */
            xg_tensor *row = xg_narrow(hb, 0, 2, 1);
            xg_tensor *col = xg_narrow(hb, 1, 3, 1);
            xg_tensor *one = xg_narrow(row, 1, 5, 1);
            xg_tensor *operands[4] = {hb, row, col, one};
            for (int o = 0; o < 4; o++) {
                xg_tensor *wo = xg_to_dtype(operands[o], XG_F32);
                for (size_t k = 0; k < sizeof binary / sizeof *binary; k++) {
                    char what[64];
                    snprintf(what, sizeof what, "%s, operand %d",
                             binary[k].name, o);
                    expect_same_bits(binary[k].f(ha, operands[o]),
                                     xg_to_dtype(binary[k].f(wa, wo), t),
                                     what, t);
                    expect_same_bits(binary[k].f(operands[o], ha),
                                     xg_to_dtype(binary[k].f(wo, wa), t),
                                     what, t);
                }
            }
            /* a transposed operand (strided) */
            xg_tensor *sq = xg_narrow(ha, 1, 0, R);
            xg_tensor *wsq = xg_to_dtype(sq, XG_F32);
            expect_same_bits(
                xg_sub(xg_transpose(sq, 0, 1), sq),
                xg_to_dtype(xg_sub(xg_transpose(wsq, 0, 1), wsq), t),
                "transposed operand", t);
            /* backward: d/dx sum(f(x) * b) = f'(x) b */
            for (size_t k = 0; k < sizeof grads / sizeof *grads; k++) {
                xg_tensor *x16 = xg_to_dtype(fa, t);
                xg_tensor *x32 = xg_to_dtype(x16, XG_F32);
                cr_assert_eq(xg_tensor_set_requires_grad(x16, true), XG_OK);
                cr_assert_eq(xg_tensor_set_requires_grad(x32, true), XG_OK);
                cr_assert_eq(
                    xg_backward(xg_sum_all(xg_mul(grads[k].f(x16), hb))),
                    XG_OK, "%s", xg_last_error());
                cr_assert_eq(
                    xg_backward(xg_sum_all(xg_mul(grads[k].f(x32), wb))),
                    XG_OK, "%s", xg_last_error());
                expect_same_bits(xg_tensor_grad(x16),
                                 xg_to_dtype(xg_tensor_grad(x32), t),
                                 grads[k].name, t);
            }
        }
    xg_scope_end(scope);
    xg_device_set_current(NULL);
    free(a);
    free(b);
    gpu_close(&g);
}

/* UNARY_BACKWARD at the kernel level with out[0] the gradient buffer
 * (in[1]), as backend.h allows: the result is the kernel's with separate
 * buffers, on an odd count. */
Test(gpu_half, unary_backward_in_place)
{
    gpu g = gpu_open();
    enum { N = 4099 };
    float x[N], gr[N];
    ew_values(x, N, 3.0f, 3);
    ew_values(gr, N, 2.0f, 5);
    const xg_op ops[] = {XG_OP_relu_backward, XG_OP_gelu_backward,
                         XG_OP_silu_backward, XG_OP_gelu_tanh_backward};
    for (xg_dtype t = XG_BF16; t <= XG_F16; t++) {
        uint16_t hx[N], hg[N], sep[N], inplace[N];
        host_from_f32(t, x, hx, N);
        host_from_f32(t, gr, hg, N);
        for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
            xg_dtype sig[3] = {t, t, t};
            if (!g.be->supports(g.bdev, ops[k], sig))
                continue; /* widened by the core on this backend */
            xg_buffer *bx = upload(&g, hx, sizeof hx);
            xg_buffer *bg = upload(&g, hg, sizeof hg), *out = NULL;
            cr_assert_eq(g.be->alloc(g.bdev, sizeof sep, &out), XG_OK);
            xg_kernel_call c = {.op = ops[k],
                                .in = {{bx, t}, {bg, t}},
                                .out = {{out, t}},
                                .p.ew = {.n = N}};
            xg_kernel_fn run = g.be->kernels[XG_FAMILY_UNARY_BACKWARD];
            cr_assert_eq(run(g.bdev, &c), XG_OK, "%s", xg_last_error());
            download(&g, out, sep, sizeof sep);
            c.out[0].buf = bg;
            cr_assert_eq(run(g.bdev, &c), XG_OK, "%s", xg_last_error());
            download(&g, bg, inplace, sizeof inplace);
            cr_expect_arr_eq(inplace, sep, sizeof sep, "%s on %s in place",
                             xg_op_table[ops[k]].name, xg_dtype_name(t));
            g.be->free(g.bdev, bx);
            g.be->free(g.bdev, bg);
            g.be->free(g.bdev, out);
        }
    }
    gpu_close(&g);
}

#ifdef XGRAD_HAVE_VULKAN
/* XGRAD_VK_16BIT=0 keeps 16-bit elements in words; the meson test that
 * sets it (gpu-half-vulkan-words) checks that it took effect. */
Test(gpu_half, vulkan_16bit_storage_setting)
{
    gpu g = gpu_open();
    const char *v = getenv("XGRAD_VK_16BIT");
    if (strcmp(g.be->name, "vulkan") == 0 && v && strcmp(v, "0") == 0)
        cr_expect_eq(xg_vulkan_16bit_storage(g.bdev), 0);
    if (strcmp(g.be->name, "vulkan") == 0)
        cr_log_info("vulkan: 16-bit storage %s",
                    xg_vulkan_16bit_storage(g.bdev) ? "on" : "off");
    gpu_close(&g);
}
#endif

/* ---- through the front-ends: ops on 16-bit tensors (native or widened by
 * the core) agree with the CPU's within the 16-bit type's rounding */

/* Values of a small mixed-precision step on the current device: f32 master
 * weights cast to t, matmul, bias, gelu, a transposed copy (copy_strided),
 * softmax and cross-entropy in t; the loss and the weights' f32 gradient
 * come back. out gets the softmax [8, 10] then the loss, grad_w the
 * gradient [16, 10]. */
#define MP_N 8
#define MP_K 16
#define MP_C 10

static void mixed_step(xg_dtype t, const float *x, const float *w,
                       const float *b, const int32_t *labels, float *out,
                       float *grad_w)
{
    xg_scope *scope = xg_scope_begin();
    xg_tensor *X = xg_to_dtype(xg_tensor_from_data(x, XG_F32,
                                                   XG_SHAPE(MP_N, MP_K)),
                               t);
    xg_tensor *W = xg_tensor_from_data(w, XG_F32, XG_SHAPE(MP_K, MP_C));
    cr_assert_eq(xg_tensor_set_requires_grad(W, true), XG_OK);
    xg_tensor *B = xg_to_dtype(xg_tensor_from_data(b, XG_F32, XG_SHAPE(MP_C)),
                               t);
    xg_tensor *L = xg_tensor_from_data(labels, XG_I32, XG_SHAPE(MP_N));
    xg_tensor *h = xg_gelu(xg_add(xg_matmul(X, xg_to_dtype(W, t)), B));
    xg_tensor *ht = xg_contiguous(xg_transpose(h, 0, 1)); /* [C, N] */
    xg_tensor *logits = xg_contiguous(xg_transpose(ht, 0, 1));
    xg_tensor *s = xg_softmax(logits);
    xg_tensor *loss = xg_cross_entropy(logits, L);
    cr_assert_not_null(loss, "%s", xg_last_error());
    cr_assert_eq(xg_tensor_dtype(s), t);
    cr_assert_eq(xg_tensor_read_f32(s, out, MP_N * MP_C), XG_OK, "%s",
                 xg_last_error());
    xg_tensor *loss32 = xg_to_dtype(loss, XG_F32);
    cr_assert_eq(xg_tensor_item(loss32, &out[MP_N * MP_C]), XG_OK);
    cr_assert_eq(xg_backward(loss32), XG_OK, "%s", xg_last_error());
    xg_tensor *g = xg_tensor_grad(W);
    cr_assert_not_null(g);
    cr_assert_eq(xg_tensor_dtype(g), XG_F32);
    cr_assert_eq(xg_tensor_read(g, grad_w, MP_K * MP_C * sizeof(float)),
                 XG_OK);
    xg_scope_end(scope);
}

static void expect_close(const char *what, xg_dtype t, const float *got,
                         const float *ref, int n, float rtol)
{
    for (int i = 0; i < n; i++)
        cr_expect(fabsf(got[i] - ref[i]) <= 1e-4f + rtol * fabsf(ref[i]),
                  "%s (%s) [%d]: %g, the CPU %g", what, xg_dtype_name(t), i,
                  (double)got[i], (double)ref[i]);
}

Test(gpu_half, mixed_precision_step_matches_cpu)
{
    float x[MP_N * MP_K], w[MP_K * MP_C], b[MP_C];
    int32_t labels[MP_N];
    uint64_t s = 12345;
    for (int i = 0; i < MP_N * MP_K + MP_K * MP_C + MP_C; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        float v = (float)(s >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
        if (i < MP_N * MP_K)
            x[i] = v;
        else if (i < MP_N * MP_K + MP_K * MP_C)
            w[i - MP_N * MP_K] = v * 0.5f;
        else
            b[i - MP_N * MP_K - MP_K * MP_C] = v * 0.1f;
    }
    for (int i = 0; i < MP_N; i++)
        labels[i] = (i * 7) % MP_C;
    gpu g = gpu_open();
    xg_device *cpu = NULL;
    cr_assert_eq(xg_device_open("cpu", &cpu), XG_OK);
    const xg_dtype types[2] = {XG_BF16, XG_F16};
    /* a few roundings of t apart at most: 2^-8 relative for bf16, 2^-11
     * for f16, times the steps that round */
    const float rtol[2] = {0x1p-5f, 0x1p-8f};
    for (int a = 0; a < 2; a++) {
        float out[2][MP_N * MP_C + 1], grad[2][MP_K * MP_C];
        xg_device *devs[2] = {cpu, g.dev};
        for (int d = 0; d < 2; d++) {
            xg_device_set_current(devs[d]);
            mixed_step(types[a], x, w, b, labels, out[d], grad[d]);
        }
        xg_device_set_current(NULL);
        expect_close("softmax", types[a], out[1], out[0], MP_N * MP_C,
                     rtol[a]);
        expect_close("loss", types[a], &out[1][MP_N * MP_C],
                     &out[0][MP_N * MP_C], 1, rtol[a]);
        expect_close("weight gradient", types[a], grad[1], grad[0],
                     MP_K * MP_C, rtol[a]);
    }
    xg_device_close(cpu);
    gpu_close(&g);
}
