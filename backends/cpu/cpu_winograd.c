/* 3x3 convolution by Winograd's minimal filtering, for the CPU backend's
 * conv2d: F(2x2, 3x3) for the forward pass and the input gradient,
 * F(3x3, 2x2) for the weight gradient.
 *
 * reference: Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks", CVPR 2016. Each 2x2 tile of the output is
 *   Y = A^T [ sum over input channels c of U_c (.) V_c ] A,
 *   U_c = G g_c G^T (the 3x3 filter), V_c = B^T d_c B (the tile's 4x4
 *   input patch, zero outside the image),
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
 *   A^T = [1 1 1 0; 0 1 -1 -1],
 * so the sum over channels becomes 16 independent GEMMs, one per element
 * xi of the transformed 4x4 tile: M_xi [m, tiles] = U_xi [m, c_in]
 * V_xi [c_in, tiles]. That is 16 multiply-adds a tile per (output, input)
 * channel pair where the direct convolution takes 36. The input gradient
 * is itself such a convolution: of dy, zero-padded by 2 - pad, with each
 * filter turned 180 degrees and the channel axes swapped. The weight
 * gradient's F(3x3, 2x2) is described above its pass, below.
 *
 * Used for stride-1, undilated, ungrouped 3x3 convolutions with at least
 * WINO_MIN_CHANNELS channels on each side, on x86-64 CPUs with AVX-512
 * (within XGRAD_CPU_KERNELS), unless XGRAD_CPU_WINOGRAD=0. The transforms
 * are written for AVX-512 only: compiled for AVX2 by the compiler they
 * cost as much as the products they save, so elsewhere every convolution
 * runs directly (cpu_conv.c).
 *
 * A work item of the forward pass and the input gradient is (sample,
 * panel of nr consecutive tiles, row-major over the output's tiles). A
 * panel is a few segments, each a run of at most 16 tiles of one tile
 * row, one vector of 16 lanes. For each input channel, each segment's
 * 4x4 patches are read with masked loads (zero outside the image) and
 * transformed into the 16 packed B panels; the 16 products run on the
 * GEMM micro-kernel into the thread's buffer; the output transform writes
 * the tiles, adding the bias and applying the ReLU of conv2d_bias(_relu).
 * Each output is one fixed sequence of operations: results do not depend
 * on the thread count. They differ from the direct convolution's by
 * rounding, since the transforms add terms of both signs. */
#include "cpu_impl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define WINO_AVX512 __attribute__((target("avx512f")))

enum {
    WINO_MIN_CHANNELS = 16,
    WINO_SEG = 16,           /* most tiles in a segment */
    WINO_WEIGHT_CHUNKS = 8,  /* chunks of samples of the weight gradient */
    WINO_WEIGHT_TILES = 32,  /* tiles in one block of its sums */
};

/* A run of tiles of one tile row within a panel: lanes [l0, l0 + len) of
 * the panel hold tiles (ti, j0 .. j0 + len - 1). */
typedef struct wino_seg {
    int32_t l0, len, ti, j0;
    /* for the AVX-512 loads at columns 2 j0 - pw + {0, 16, 2, 18}: the
     * lanes that lie inside the row and that the segment reads */
    uint16_t load_mask[4];
} wino_seg;

typedef struct wino_job {
    const cpu_micro *mk;
    const float *in;     /* [n, cin, h, w] */
    int64_t n;           /* samples */
    int64_t cin, h, w;   /* input channels (the GEMMs' depth) and plane */
    int64_t ph, pw;      /* zero padding of the input */
    int64_t m, mp;       /* output channels, and rounded up to mr */
    int64_t oh, ow;      /* output plane */
    int64_t lanes;       /* tiles a panel: nr; for the weight gradient
                            WINO_WEIGHT_TILES, so that its sums are blocked
                            alike on every micro-kernel */
    int64_t panels;      /* panels of `lanes` tiles, a sample */
    int64_t vld, mld;    /* floats from one B panel (C tile) to the next:
                            cin * lanes (mp * nr) and 64 bytes more, so that
                            the 16 are not 4 KiB apart (the same cache
                            set) */
    const float *u;      /* U_xi [m, cin] packed: mp * cin floats each */
    const wino_seg *seg; /* per panel: up to `lanes` segments, */
    const int32_t *nseg; /* nseg[pn] of them */
    const float *bias;   /* NULL, or [m] */
    bool relu;
    float *out;          /* [n, m, oh, ow] */
    float *scratch;      /* per thread: 16 B panels, 16 C tiles (the
                            weight gradient: 16 A, 16 B panels) */
    int64_t per_thread;
    /* the weight gradient (in: x, m: c_out, out: dweight) */
    const float *dy;     /* [n, m, oh, ow] */
    int64_t opanels;     /* panels of nr output channels */
    int64_t uld;         /* floats from one (xi, panel) B block to the
                            next: lanes * nr and 64 bytes more */
    int64_t chunks, parts; /* chunks of samples; parts of the 16 xi */
    float *partial;      /* per chunk: S_xi [cin, m] for the 16 xi */
} wino_job;

bool cpu_winograd_fits(const cpu_device *dev, const xg_kernel_call *call)
{
    const xg_conv_args *a = &call->p.conv;
    bool input_grad = call->op == XG_OP_conv2d_backward_input;
    return dev->winograd && dev->kernels >= CPU_KERNELS_AVX512 &&
           __builtin_cpu_supports("avx512f") && a->kh == 3 && a->kw == 3 &&
           a->stride_h == 1 && a->stride_w == 1 && a->dil_h == 1 &&
           a->dil_w == 1 && a->groups == 1 && a->c_in >= WINO_MIN_CHANNELS &&
           a->c_out >= WINO_MIN_CHANNELS &&
           (!input_grad || (a->pad_h <= 2 && a->pad_w <= 2)) &&
           a->h < INT32_MAX / 4 && a->w < INT32_MAX / 4 &&
           a->oh < INT32_MAX / 4 && a->ow < INT32_MAX / 4 &&
           /* the weight gradient gathers dy across the channels' planes */
           a->c_out * a->oh * a->ow < INT32_MAX / 2;
}

static int64_t round_up(int64_t x, int64_t unit)
{
    return (x + unit - 1) / unit * unit;
}

/* U_xi = G g G^T of every (output o, input c) filter into its packed
 * panel; `flip`: the input gradient's filters, g[o][c] = w[c][o] turned
 * 180 degrees (w is [cin, m, 3, 3]), else g[o][c] = w[o][c] ([m, cin, 3,
 * 3]). Rows o in [m, mp) are zero. */
static void wino_weights(float *u, const float *w, int64_t m, int64_t mp,
                         int64_t cin, int64_t mr, bool flip)
{
    for (int64_t o = 0; o < mp; o++)
        for (int64_t c = 0; c < cin; c++) {
            float g[3][3] = {{0}}, gg[4][3], t[16];
            for (int r = 0; r < 3 && o < m; r++)
                for (int s = 0; s < 3; s++)
                    g[r][s] = flip ? w[((c * m + o) * 3 + 2 - r) * 3 + 2 - s]
                                   : w[((o * cin + c) * 3 + r) * 3 + s];
            for (int s = 0; s < 3; s++) {
                gg[0][s] = g[0][s];
                gg[1][s] = (g[0][s] + g[1][s] + g[2][s]) * 0.5f;
                gg[2][s] = (g[0][s] - g[1][s] + g[2][s]) * 0.5f;
                gg[3][s] = g[2][s];
            }
            for (int k = 0; k < 4; k++) {
                t[4 * k] = gg[k][0];
                t[4 * k + 1] = (gg[k][0] + gg[k][1] + gg[k][2]) * 0.5f;
                t[4 * k + 2] = (gg[k][0] - gg[k][1] + gg[k][2]) * 0.5f;
                t[4 * k + 3] = gg[k][2];
            }
            float *panel = u + o / mr * mr * cin + c * mr + o % mr;
            for (int xi = 0; xi < 16; xi++)
                panel[xi * mp * cin] = t[xi];
        }
}

/* The lanes of 16 floats from column `col` on that lie in [0, w) and
 * among the `need` columns read. */
static uint16_t load_mask(int64_t w, int64_t col, int64_t need)
{
    int64_t lo = col < 0 ? -col : 0, hi = w - col < need ? w - col : need;
    if (hi > 16)
        hi = 16;
    return lo >= hi ? 0 : (uint16_t)(((1u << (hi - lo)) - 1u) << lo);
}

/* The segments of every panel of j->lanes tiles (tw tiles to a tile
 * row). */
static void wino_segments(const wino_job *j, int64_t tiles, int64_t tw,
                          wino_seg *seg, int32_t *nseg)
{
    int64_t nr = j->lanes, panels = j->panels;
    for (int64_t pn = 0; pn < panels; pn++) {
        int n = 0;
        for (int64_t l = 0, t = pn * nr; l < nr && t < tiles; n++) {
            int64_t j0 = t % tw, len = tw - j0;
            if (len > WINO_SEG)
                len = WINO_SEG;
            if (len > nr - l)
                len = nr - l;
            if (len > tiles - t)
                len = tiles - t;
            wino_seg *g = &seg[pn * nr + n];
            *g = (wino_seg){(int32_t)l, (int32_t)len, (int32_t)(t / tw),
                            (int32_t)j0, {0}};
            static const int offset[4] = {0, 16, 2, 18};
            for (int k = 0; k < 4; k++)
                g->load_mask[k] = load_mask(j->w, 2 * j0 - j->pw + offset[k],
                                            2 * len + 2 - offset[k]);
            l += len;
            t += len;
        }
        nseg[pn] = n;
    }
}

/* ---- the transforms ----------------------------------------------------------
 * A segment's 16 tiles are the lanes of a vector: its patch columns come
 * from masked loads of its image rows (zero outside the image) by
 * permutes into even and odd columns, and its output rows go back
 * interleaved. */

/* 16 floats from column `col` of `row` on, lanes outside `mask` 0: the
 * masked lanes are never read, and the address is formed on integers, so
 * that no pointer leaves the row when col < 0. */
WINO_AVX512 static inline __m512 wino_load(const float *row, int64_t col,
                                           uint16_t mask)
{
    return _mm512_maskz_loadu_ps(
        (__mmask16)mask,
        (const void *)((uintptr_t)row + (uintptr_t)(col * 4)));
}

WINO_AVX512 static void wino_input(const wino_job *j,
                                          const wino_seg *seg, int nseg,
                                          const float *x, float *v)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16,
                                           18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    int64_t ld = j->vld;
    for (int s = 0; s < nseg; s++) {
        int64_t r0 = 2 * (int64_t)seg[s].ti - j->ph;
        int64_t c0 = 2 * (int64_t)seg[s].j0 - j->pw;
        __m512 d[4][4], t[4][4];
        for (int a = 0; a < 4; a++) {
            __m512 lo, hi, lo2, hi2;
            if (r0 + a < 0 || r0 + a >= j->h) {
                lo = hi = lo2 = hi2 = _mm512_setzero_ps();
            } else {
                const float *row = x + (r0 + a) * j->w;
                lo = wino_load(row, c0, seg[s].load_mask[0]);
                hi = wino_load(row, c0 + 16, seg[s].load_mask[1]);
                lo2 = wino_load(row, c0 + 2, seg[s].load_mask[2]);
                hi2 = wino_load(row, c0 + 18, seg[s].load_mask[3]);
            }
            d[a][0] = _mm512_permutex2var_ps(lo, even, hi);
            d[a][1] = _mm512_permutex2var_ps(lo, odd, hi);
            d[a][2] = _mm512_permutex2var_ps(lo2, even, hi2);
            d[a][3] = _mm512_permutex2var_ps(lo2, odd, hi2);
        }
        for (int b = 0; b < 4; b++) {
            t[0][b] = _mm512_sub_ps(d[0][b], d[2][b]);
            t[1][b] = _mm512_add_ps(d[1][b], d[2][b]);
            t[2][b] = _mm512_sub_ps(d[2][b], d[1][b]);
            t[3][b] = _mm512_sub_ps(d[1][b], d[3][b]);
        }
        __mmask16 k = (__mmask16)((1u << seg[s].len) - 1u);
        float *o = v + seg[s].l0;
        for (int a = 0; a < 4; a++) {
            _mm512_mask_storeu_ps(o + (4 * a) * ld, k,
                                  _mm512_sub_ps(t[a][0], t[a][2]));
            _mm512_mask_storeu_ps(o + (4 * a + 1) * ld, k,
                                  _mm512_add_ps(t[a][1], t[a][2]));
            _mm512_mask_storeu_ps(o + (4 * a + 2) * ld, k,
                                  _mm512_sub_ps(t[a][2], t[a][1]));
            _mm512_mask_storeu_ps(o + (4 * a + 3) * ld, k,
                                  _mm512_sub_ps(t[a][1], t[a][3]));
        }
    }
}

WINO_AVX512 static void wino_output(const wino_job *j,
                                           const wino_seg *seg, int nseg,
                                           const float *mt, float bias,
                                           float *y)
{
    const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4,
                                             20, 5, 21, 6, 22, 7, 23);
    const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
    const __m512 vb = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    int64_t ld = j->mld;
    for (int s = 0; s < nseg; s++) {
        const float *p = mt + seg[s].l0;
        __mmask16 k = (__mmask16)((1u << seg[s].len) - 1u);
        __m512 a[4], b[4], r[4];
        for (int q = 0; q < 4; q++) {
            __m512 m0 = _mm512_maskz_loadu_ps(k, p + q * ld),
                   m1 = _mm512_maskz_loadu_ps(k, p + (4 + q) * ld),
                   m2 = _mm512_maskz_loadu_ps(k, p + (8 + q) * ld),
                   m3 = _mm512_maskz_loadu_ps(k, p + (12 + q) * ld);
            a[q] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            b[q] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        r[0] = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), a[2]);
        r[1] = _mm512_sub_ps(_mm512_sub_ps(a[1], a[2]), a[3]);
        r[2] = _mm512_add_ps(_mm512_add_ps(b[0], b[1]), b[2]);
        r[3] = _mm512_sub_ps(_mm512_sub_ps(b[1], b[2]), b[3]);
        for (int e = 0; e < 4; e++) {
            if (j->bias)
                r[e] = _mm512_add_ps(r[e], vb);
            if (j->relu) /* lanes < 0 become 0; NaN compares false */
                r[e] = _mm512_mask_blend_ps(
                    _mm512_cmp_ps_mask(r[e], zero, _CMP_LT_OQ), r[e], zero);
        }
        int64_t i = 2 * (int64_t)seg[s].ti, c = 2 * (int64_t)seg[s].j0;
        int64_t width = j->ow - c < 2 * seg[s].len ? j->ow - c
                                                    : 2 * seg[s].len;
        __mmask16 k0 = (__mmask16)(width >= 16 ? 0xffffu
                                               : (1u << width) - 1u);
        __mmask16 k1 = (__mmask16)(width <= 16 ? 0u
                                               : (1u << (width - 16)) - 1u);
        for (int half = 0; half < 2 && i + half < j->oh; half++) {
            float *row = y + (i + half) * j->ow + c;
            __m512 e0 = r[2 * half], e1 = r[2 * half + 1];
            _mm512_mask_storeu_ps(row, k0,
                                  _mm512_permutex2var_ps(e0, lo_idx, e1));
            _mm512_mask_storeu_ps(row + 16, k1,
                                  _mm512_permutex2var_ps(e0, hi_idx, e1));
        }
    }
}

WINO_AVX512 static void wino_dy(const wino_job *j,
                                       const wino_seg *seg, int nseg,
                                       const float *dy, float *u)
{
    int64_t nr = j->mk->nr, plane = j->oh * j->ow;
    int64_t step = j->opanels * j->uld;
    const __m512i across = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                          15),
        _mm512_set1_epi32((int)plane));
    const __m512 half = _mm512_set1_ps(0.5f);
    for (int s = 0; s < nseg; s++)
        for (int32_t k = 0; k < seg[s].len; k++) {
            int64_t i = 2 * (int64_t)seg[s].ti, c = 2 * (int64_t)(seg[s].j0 + k);
            int64_t lane = seg[s].l0 + k;
            for (int64_t o0 = 0; o0 < j->m; o0 += 16) {
                int64_t left = j->m - o0;
                __mmask16 km = (__mmask16)(left >= 16 ? 0xffffu
                                                      : (1u << left) - 1u);
                __m512 g[2][2], t[4][2];
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                        g[a][b] = i + a < j->oh && c + b < j->ow
                                      ? _mm512_mask_i32gather_ps(
                                            _mm512_setzero_ps(), km, across,
                                            dy + o0 * plane +
                                                (i + a) * j->ow + c + b,
                                            4)
                                      : _mm512_setzero_ps();
                for (int b = 0; b < 2; b++) {
                    t[0][b] = g[0][b];
                    t[1][b] = _mm512_mul_ps(_mm512_add_ps(g[0][b], g[1][b]),
                                            half);
                    t[2][b] = _mm512_mul_ps(_mm512_sub_ps(g[0][b], g[1][b]),
                                            half);
                    t[3][b] = g[1][b];
                }
                float *out = u + (o0 / nr) * j->uld + lane * nr + o0 % nr;
                for (int a = 0; a < 4; a++) {
                    _mm512_storeu_ps(out + (4 * a) * step, t[a][0]);
                    _mm512_storeu_ps(
                        out + (4 * a + 1) * step,
                        _mm512_mul_ps(_mm512_add_ps(t[a][0], t[a][1]), half));
                    _mm512_storeu_ps(
                        out + (4 * a + 2) * step,
                        _mm512_mul_ps(_mm512_sub_ps(t[a][0], t[a][1]), half));
                    _mm512_storeu_ps(out + (4 * a + 3) * step, t[a][1]);
                }
            }
        }
}

/* ---- the passes ------------------------------------------------------------ */

/* Asks for the cache lines of floats p[0 .. n - 1]. */
static inline void prefetch_span(const float *p, int64_t n)
{
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t i = 0; i < n; i += 16)
        __builtin_prefetch(p + i);
    __builtin_prefetch(p + n - 1);
#else
    (void)p, (void)n;
#endif
}

/* V of every input channel of sample image x (cin planes) for one panel's
 * tiles: channel c in lanes of rows xi * vld + c * lanes of v. */
static void wino_patches(const wino_job *j, const float *x,
                         const wino_seg *seg, int nseg, float *v)
{
    /* the image rows the panel reads, the same in every channel */
    int64_t r0 = 2 * (int64_t)seg[0].ti - j->ph;
    int64_t r1 = 2 * (int64_t)seg[nseg - 1].ti - j->ph + 4;
    r0 = r0 < 0 ? 0 : r0;
    r1 = r1 > j->h ? j->h : r1;
    for (int64_t c = 0; c < j->cin; c++) {
        /* the rows two channels ahead, into the cache meanwhile */
        if (c + 2 < j->cin && r0 < r1)
            prefetch_span(x + (c + 2) * j->h * j->w + r0 * j->w,
                          (r1 - r0) * j->w);
        wino_input(j, seg, nseg, x + c * j->h * j->w, v + c * j->lanes);
    }
}

static void wino_range(const void *ctx, int64_t begin, int64_t end,
                       int thread)
{
    const wino_job *j = ctx;
    const cpu_micro *mk = j->mk;
    int64_t nr = mk->nr, vsize = j->vld, msize = j->mld;
    float *v = j->scratch + (size_t)thread * (size_t)j->per_thread;
    float *mt = v + 16 * vsize;
    for (int64_t item = begin; item < end; item++) {
        int64_t b = item / j->panels, pn = item % j->panels;
        const wino_seg *seg = j->seg + pn * j->lanes;
        int nseg = j->nseg[pn];
        wino_patches(j, j->in + b * j->cin * j->h * j->w, seg, nseg, v);
        for (int xi = 0; xi < 16; xi++)
            for (int64_t r = 0; r < j->m; r += mk->mr)
                mk->kernel(j->cin, j->u + xi * j->mp * j->cin + r * j->cin,
                           v + xi * vsize, mt + xi * msize + r * nr, nr, 1.0f,
                           0, j->m - r < mk->mr ? j->m - r : mk->mr, nr);
        float *y = j->out + b * j->m * j->oh * j->ow;
        for (int64_t o = 0; o < j->m; o++)
            wino_output(j, seg, nseg, mt + o * nr, j->bias ? j->bias[o] : 0.0f,
                      y + o * j->oh * j->ow);
    }
}

/* ---- the weight gradient: F(3x3, 2x2) --------------------------------------
 * dweight[o][c] is the sum over samples and 2x2 tiles of dy of the
 * correlation of the tile's 4x4 input patch d (the forward's) with its
 * 2x2 block g of dy: a 3x3 output from a 2x2 filter,
 *   Y = A'^T [(G' g G'^T) (.) (B'^T d B')] A',
 *   B'^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 -1 0 1],
 *   G'   = [1 0; 1/2 1/2; 1/2 -1/2; 0 1],
 *   A'^T = [1 1 1 0; 0 1 -1 0; 0 1 1 1].
 * B'^T is the forward's B^T with its last row negated, so the patches go
 * through the forward's input transform and the sign, - for elements in
 * exactly one of row 3 and column 3, is applied to the sums (exact). The
 * sums over tiles are 16 GEMMs a block of WINO_WEIGHT_TILES tiles,
 * S_xi [c_in, m] += V_xi [c_in, tiles] U_xi [tiles, m]: A is the
 * transformed patches read in place (kernel_rows), B the transformed dy
 * blocks with the output channels in the lanes (wino_dy). The blocks are
 * the same on every micro-kernel and the samples are cut into
 * WINO_WEIGHT_CHUNKS chunks whatever the thread count, their sums added
 * in chunk order, so the bits depend on neither. */

/* Item (chunk, part): S_xi summed over the chunk's samples and every
 * panel of their tiles, for the part's xi. */
static void wino_weight_range(const void *ctx, int64_t begin,
                                         int64_t end, int thread)
{
    const wino_job *j = ctx;
    const cpu_micro *mk = j->mk;
    int64_t nr = mk->nr, plane = j->oh * j->ow;
    float *v = j->scratch + (size_t)thread * (size_t)j->per_thread;
    float *u = v + 16 * j->vld;
    for (int64_t item = begin; item < end; item++) {
        int64_t chunk = item / j->parts, part = item % j->parts;
        int x0 = (int)(part * 16 / j->parts);
        int x1 = (int)((part + 1) * 16 / j->parts);
        float *acc = j->partial + chunk * 16 * j->cin * j->m;
        int add = 0;
        for (int64_t b = chunk * j->n / j->chunks;
             b < (chunk + 1) * j->n / j->chunks; b++)
            for (int64_t pn = 0; pn < j->panels; pn++) {
                const wino_seg *seg = j->seg + pn * j->lanes;
                int nseg = j->nseg[pn];
                int64_t count = seg[nseg - 1].l0 + seg[nseg - 1].len;
                wino_patches(j, j->in + b * j->cin * j->h * j->w, seg, nseg,
                             v);
                wino_dy(j, seg, nseg, j->dy + b * j->m * plane, u);
                for (int xi = x0; xi < x1; xi++)
                    for (int64_t c = 0; c < j->cin; c += mk->mr)
                        for (int64_t op = 0; op < j->opanels; op++)
                            mk->kernel_rows(
                                count, v + xi * j->vld + c * j->lanes,
                                j->lanes,
                                u + (xi * j->opanels + op) * j->uld,
                                acc + (xi * j->cin + c) * j->m + op * nr,
                                j->m, 1.0f, add,
                                j->cin - c < mk->mr ? j->cin - c : mk->mr,
                                j->m - op * nr < nr ? j->m - op * nr : nr);
                add = 1;
            }
    }
}

/* dweight[o] from the chunks' sums, for output channels [begin, end): the
 * sums added in chunk order, the sign of B'^T against the forward's B^T
 * (rows and columns 3 negated) applied, then Y = A'^T M A'. */
static void wino_weight_out_range(const void *ctx, int64_t begin,
                                  int64_t end, int thread)
{
    (void)thread;
    const wino_job *j = ctx;
    int64_t per_chunk = 16 * j->cin * j->m;
    for (int64_t o = begin; o < end; o++)
        for (int64_t c = 0; c < j->cin; c++) {
            float m[4][4], t[3][4];
            for (int xi = 0; xi < 16; xi++) {
                const float *p = j->partial + (xi * j->cin + c) * j->m + o;
                float sum = p[0];
                for (int64_t ch = 1; ch < j->chunks; ch++)
                    sum += p[ch * per_chunk];
                m[xi / 4][xi % 4] = (xi / 4 == 3) != (xi % 4 == 3) ? -sum
                                                                    : sum;
            }
            for (int q = 0; q < 4; q++) {
                t[0][q] = m[0][q] + m[1][q] + m[2][q];
                t[1][q] = m[1][q] - m[2][q];
                t[2][q] = m[1][q] + m[2][q] + m[3][q];
            }
            float *w = j->out + (o * j->cin + c) * 9;
            for (int r = 0; r < 3; r++) {
                w[3 * r] = t[r][0] + t[r][1] + t[r][2];
                w[3 * r + 1] = t[r][1] - t[r][2];
                w[3 * r + 2] = t[r][1] + t[r][2] + t[r][3];
            }
        }
}

xg_status cpu_winograd(cpu_device *dev, const xg_kernel_call *call)
{
    const xg_conv_args *a = &call->p.conv;
    const char *name = xg_op_table[call->op].name;
    bool input_grad = call->op == XG_OP_conv2d_backward_input;
    bool weight_grad = call->op == XG_OP_conv2d_backward_weight;
    /* the input gradient convolves dy [n, c_out, oh, ow], padded by
     * 2 - pad, into dx [n, c_in, h, w]; the weight gradient reads x (in[0])
     * in the forward's tiles */
    wino_job j = {.in = cpu_f32(call->in[0].buf), .n = a->n,
                  .cin = input_grad ? a->c_out : a->c_in,
                  .h = input_grad ? a->oh : a->h,
                  .w = input_grad ? a->ow : a->w,
                  .ph = input_grad ? 2 - a->pad_h : a->pad_h,
                  .pw = input_grad ? 2 - a->pad_w : a->pad_w,
                  .m = input_grad ? a->c_in : a->c_out,
                  .oh = input_grad ? a->h : a->oh,
                  .ow = input_grad ? a->w : a->ow,
                  .out = cpu_f32(call->out[0].buf),
                  .relu = call->op == XG_OP_conv2d_bias_relu};
    if (call->op == XG_OP_conv2d_bias || call->op == XG_OP_conv2d_bias_relu)
        j.bias = cpu_f32(call->in[2].buf);
    if (weight_grad) {
        j.dy = cpu_f32(call->in[1].buf);
        if (a->n == 0) { /* no samples: a zero gradient */
            memset(j.out, 0, (size_t)(a->c_out * a->c_in * 9) * sizeof(float));
            return XG_OK;
        }
    }
    /* the micro-tile's rows: output channels, or for the weight gradient
     * input channels (its A is the patches) */
    j.mk = cpu_micro_pick(dev, weight_grad ? j.cin : j.m);
    int64_t nr = j.mk->nr, tw = (j.ow + 1) / 2;
    int64_t tiles = (j.oh + 1) / 2 * tw;
    j.mp = round_up(j.m, j.mk->mr);
    j.lanes = weight_grad ? WINO_WEIGHT_TILES : nr;
    j.panels = (tiles + j.lanes - 1) / j.lanes;
    int threads = cpu_pool_threads(dev->pool);
    int64_t seg_floats =
        j.panels * j.lanes * (int64_t)(sizeof(wino_seg) / 4);
    int64_t shared, items, cost;
    j.vld = j.cin * j.lanes + 16;
    if (weight_grad) {
        j.chunks = WINO_WEIGHT_CHUNKS < a->n ? WINO_WEIGHT_CHUNKS : a->n;
        j.parts = 1; /* more when chunks leave threads idle: 16 / parts xi */
        while (j.parts < 16 && j.chunks * j.parts < 2 * (int64_t)threads)
            j.parts *= 2;
        j.opanels = (j.m + nr - 1) / nr;
        j.uld = j.lanes * nr + 16;
        shared = round_up(seg_floats + j.panels +
                              j.chunks * 16 * j.cin * j.m, 16);
        j.per_thread = 16 * (j.vld + j.opanels * j.uld);
        items = j.chunks * j.parts;
        cost = 16 / j.parts * j.cin * j.m * tiles *
               ((a->n + j.chunks - 1) / j.chunks);
    } else {
        shared = round_up(16 * j.mp * j.cin + seg_floats + j.panels, 16);
        j.mld = j.mp * nr + 16;
        j.per_thread = 16 * (j.vld + j.mld);
        items = a->n * j.panels;
        cost = 16 * j.m * j.cin * nr;
    }
    if (j.per_thread > (INT64_MAX / 4 - shared) / threads / 4)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: the kernel's buffers are "
                            "too large", name);
    size_t floats = (size_t)(shared + threads * j.per_thread);
    float *s = cpu_conv_scratch(dev, floats);
    if (!s)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory for"
                            " %zu floats of transformed operands", name,
                            floats);
    float *tables = weight_grad ? s : s + 16 * j.mp * j.cin;
    wino_seg *seg = (wino_seg *)tables;
    int32_t *nseg = (int32_t *)(tables + seg_floats);
    wino_segments(&j, tiles, tw, seg, nseg);
    j.seg = seg, j.nseg = nseg;
    j.scratch = s + shared;
    if (weight_grad) {
        j.partial = tables + seg_floats + j.panels;
        cpu_parallel_for(dev->pool, items, cost, 1, wino_weight_range, &j);
        cpu_parallel_for(dev->pool, j.m, 16 * j.cin * j.chunks, 1,
                         wino_weight_out_range, &j);
        return XG_OK;
    }
    wino_weights(s, cpu_f32(call->in[1].buf), j.m, j.mp, j.cin, j.mk->mr,
                 input_grad);
    j.u = s;
    cpu_parallel_for(dev->pool, items, cost, 1, wino_range, &j);
    return XG_OK;
}

#else /* no AVX-512 transforms: every convolution runs directly */

bool cpu_winograd_fits(const cpu_device *dev, const xg_kernel_call *call)
{
    (void)dev, (void)call;
    return false;
}

xg_status cpu_winograd(cpu_device *dev, const xg_kernel_call *call)
{
    (void)dev;
    return xg_set_error(XG_ERR_UNSUPPORTED, "%s: Winograd convolution needs "
                        "x86-64 AVX-512", xg_op_table[call->op].name);
}
#endif

xg_status cpu_winograd_from_env(bool *out)
{
    static const char *const names[] = {"0", "1"};
    int k;
    xg_status st = xg__env_choice("XGRAD_CPU_WINOGRAD", names, 2, 1, &k);
    *out = k == 1;
    return st;
}
