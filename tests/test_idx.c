/* IDX files (valid and hostile), MNIST-format folders and the batch
 * loader. Files are written by the tests into a fresh temporary folder,
 * plain or gzip-compressed with zlib. */
#include "test_util.h"
#include "xgrad_data.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[64];

static void idx_init(void)
{
    tu_init_scope();
    tu_tmpdir_new(tmpdir, sizeof tmpdir, "xgrad-test");
}

static void idx_fini(void)
{
    tu_rm_tree(tmpdir);
    tu_fini_scope();
}

TestSuite(idx, .init = idx_init, .fini = idx_fini);
TestSuite(mnist, .init = idx_init, .fini = idx_fini);
TestSuite(loader, .init = tu_init_scope, .fini = tu_fini_scope);

/* ---- building files ---------------------------------------------------- */

typedef struct bytes {
    uint8_t b[4096];
    size_t n;
} bytes;

static void put(bytes *o, const void *p, size_t n)
{
    cr_assert_leq(o->n + n, sizeof o->b);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_u8(bytes *o, uint8_t v) { put(o, &v, 1); }

static void put_be32(bytes *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8),
                    (uint8_t)v};
    put(o, b, 4);
}

static void put_be16(bytes *o, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(o, b, 2);
}

static void put_be64(bytes *o, uint64_t v)
{
    put_be32(o, (uint32_t)(v >> 32));
    put_be32(o, (uint32_t)v);
}

/* magic 0x00 0x00 type ndim, then ndim big-endian u32 sizes */
static void idx_header(bytes *o, uint8_t type, int ndim, const uint32_t *dims)
{
    put_u8(o, 0);
    put_u8(o, 0);
    put_u8(o, type);
    put_u8(o, (uint8_t)ndim);
    for (int i = 0; i < ndim; i++)
        put_be32(o, dims[i]);
}

static const char *path_of(const char *name)
{
    return tu_path_in(tmpdir, name);
}

static const char *write_plain(const char *name, const bytes *o)
{
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "cannot write %s", p);
    cr_assert_eq(fwrite(o->b, 1, o->n, f), o->n);
    fclose(f);
    return p;
}

static const char *write_gz(const char *name, const bytes *o)
{
    const char *p = path_of(name);
    gzFile f = gzopen(p, "wb");
    cr_assert_not_null(f, "cannot write %s", p);
    if (o->n)
        cr_assert_eq(gzwrite(f, o->b, (unsigned)o->n), (int)o->n);
    cr_assert_eq(gzclose(f), Z_OK);
    return p;
}

/* u8 file with dims and values 0, 1, 2, ... */
static bytes u8_file(int ndim, const uint32_t *dims)
{
    bytes o = {.n = 0};
    idx_header(&o, 0x08, ndim, dims);
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    for (uint64_t i = 0; i < n; i++)
        put_u8(&o, (uint8_t)(i * 7 + 1));
    return o;
}

static void assert_u8_idx(const xg_idx *x, int ndim, const uint32_t *dims,
                          const char *what)
{
    cr_assert_eq(x->type, 0x08, "%s: type 0x%02x", what, x->type);
    cr_assert_eq(x->ndim, ndim, "%s: ndim %d", what, x->ndim);
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        cr_expect_eq(x->dims[i], (int64_t)dims[i], "%s: dims[%d] = %" PRId64,
                     what, i, x->dims[i]);
        n *= dims[i];
    }
    cr_assert_eq(x->bytes, n, "%s: %zu bytes, expected %" PRIu64, what,
                 x->bytes, n);
    cr_assert_not_null(x->data);
    const uint8_t *d = x->data;
    for (uint64_t i = 0; i < n; i++)
        cr_assert_eq(d[i], (uint8_t)(i * 7 + 1), "%s: byte %" PRIu64, what,
                     i);
}

/* ---- valid files ------------------------------------------------------- */

Test(idx, u8_3d_plain)
{
    const uint32_t dims[3] = {2, 3, 4};
    bytes o = u8_file(3, dims);
    xg_idx x;
    memset(&x, 0, sizeof x);
    xg_status st = xg_idx_read(write_plain("a-idx3-ubyte", &o), &x);
    cr_assert_eq(st, XG_OK, "%s: %s", xg_status_str(st), xg_last_error());
    assert_u8_idx(&x, 3, dims, "u8 [2,3,4]");
    xg_idx_free(&x);
}

Test(idx, u8_1d_plain_and_gz)
{
    const uint32_t dims[1] = {5};
    bytes o = u8_file(1, dims);
    xg_idx x;
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("l-idx1-ubyte", &o), &x), XG_OK,
                 "%s", xg_last_error());
    assert_u8_idx(&x, 1, dims, "u8 [5] plain");
    xg_idx_free(&x);
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_gz("l-idx1-ubyte.gz", &o), &x), XG_OK,
                 "%s", xg_last_error());
    assert_u8_idx(&x, 1, dims, "u8 [5] gzip");
    xg_idx_free(&x);
}

Test(idx, u8_3d_gz)
{
    const uint32_t dims[3] = {3, 5, 7};
    bytes o = u8_file(3, dims);
    xg_idx x;
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_gz("img.gz", &o), &x), XG_OK, "%s",
                 xg_last_error());
    assert_u8_idx(&x, 3, dims, "u8 [3,5,7] gzip");
    xg_idx_free(&x);
}

Test(idx, u8_6d_is_the_maximum)
{
    const uint32_t dims[6] = {1, 2, 1, 3, 1, 2};
    bytes o = u8_file(6, dims);
    xg_idx x;
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("six", &o), &x), XG_OK, "%s",
                 xg_last_error());
    assert_u8_idx(&x, 6, dims, "u8 6-D");
    xg_idx_free(&x);
}

Test(idx, wider_types_become_native_endian)
{
    xg_idx x;
    /* i32 */
    bytes o = {.n = 0};
    idx_header(&o, 0x0C, 1, (const uint32_t[]){3});
    const int32_t iv[3] = {1, -2, 0x01020304};
    for (int i = 0; i < 3; i++)
        put_be32(&o, (uint32_t)iv[i]);
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("i32", &o), &x), XG_OK, "%s",
                 xg_last_error());
    cr_expect_eq(x.type, 0x0C);
    cr_assert_eq(x.bytes, sizeof iv);
    cr_expect_arr_eq(x.data, iv, sizeof iv, "i32 values");
    xg_idx_free(&x);
    /* f32 */
    bytes f = {.n = 0};
    idx_header(&f, 0x0D, 2, (const uint32_t[]){2, 2});
    const float fv[4] = {1.5f, -0.25f, 3e10f, -1e-20f};
    for (int i = 0; i < 4; i++) {
        uint32_t u;
        memcpy(&u, &fv[i], 4);
        put_be32(&f, u);
    }
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_gz("f32.gz", &f), &x), XG_OK, "%s",
                 xg_last_error());
    cr_expect_eq(x.type, 0x0D);
    cr_expect(x.ndim == 2 && x.dims[0] == 2 && x.dims[1] == 2);
    cr_assert_eq(x.bytes, sizeof fv);
    cr_expect_arr_eq(x.data, fv, sizeof fv, "f32 values");
    xg_idx_free(&x);
    /* i16, i8, f64 */
    bytes s = {.n = 0};
    idx_header(&s, 0x0B, 1, (const uint32_t[]){2});
    put_be16(&s, (uint16_t)-300);
    put_be16(&s, 0x1234);
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("i16", &s), &x), XG_OK, "%s",
                 xg_last_error());
    const int16_t sv[2] = {-300, 0x1234};
    cr_assert_eq(x.bytes, sizeof sv);
    cr_expect_arr_eq(x.data, sv, sizeof sv, "i16 values");
    xg_idx_free(&x);
    bytes b = {.n = 0};
    idx_header(&b, 0x09, 1, (const uint32_t[]){2});
    put_u8(&b, 0xFF);
    put_u8(&b, 0x05);
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("i8", &b), &x), XG_OK);
    const int8_t bv[2] = {-1, 5};
    cr_assert_eq(x.bytes, sizeof bv);
    cr_expect_arr_eq(x.data, bv, sizeof bv, "i8 values");
    xg_idx_free(&x);
    bytes d = {.n = 0};
    idx_header(&d, 0x0E, 1, (const uint32_t[]){2});
    const double dv[2] = {3.141592653589793, -2.5e-300};
    for (int i = 0; i < 2; i++) {
        uint64_t u;
        memcpy(&u, &dv[i], 8);
        put_be64(&d, u);
    }
    memset(&x, 0, sizeof x);
    cr_assert_eq(xg_idx_read(write_plain("f64", &d), &x), XG_OK);
    cr_assert_eq(x.bytes, sizeof dv);
    cr_expect_arr_eq(x.data, dv, sizeof dv, "f64 values");
    xg_idx_free(&x);
}

/* ---- hostile files ----------------------------------------------------- */

/* Reads `path` and expects the error to be one of `want` (0-terminated). */
static void expect_fail(const char *path, const xg_status *want,
                        const char *what)
{
    xg_idx x;
    memset(&x, 0, sizeof x);
    xg_clear_error();
    xg_status st = xg_idx_read(path, &x);
    if (st == XG_OK)
        xg_idx_free(&x);
    bool ok = false;
    for (const xg_status *w = want; *w; w++)
        ok |= st == *w;
    cr_expect(ok, "%s: xg_idx_read gave %d (%s), expected %s%s%s; \"%s\"",
              what, (int)st, xg_status_str(st), xg_status_str(want[0]),
              want[1] ? " or " : "", want[1] ? xg_status_str(want[1]) : "",
              xg_last_error());
    if (st != XG_OK) {
        cr_expect_eq(xg_last_status(), st, "%s: last status differs", what);
        cr_expect(xg_last_error()[0] != 0, "%s: no error message", what);
    }
}

static const xg_status FORMAT[] = {XG_ERR_FORMAT, 0};
static const xg_status FORMAT_OR_LARGE[] = {XG_ERR_FORMAT, XG_ERR_TOO_LARGE,
                                            0};

/* The same bytes as a plain file and gzip-compressed. */
static void expect_format_both(const char *name, const bytes *o,
                               const xg_status *want)
{
    char gz[80], what[120];
    snprintf(what, sizeof what, "%s (plain)", name);
    expect_fail(write_plain(name, o), want, what);
    snprintf(gz, sizeof gz, "%s.gz", name);
    snprintf(what, sizeof what, "%s (gzip)", name);
    expect_fail(write_gz(gz, o), want, what);
}

Test(idx, bad_magic)
{
    bytes o = u8_file(1, (const uint32_t[]){4});
    o.b[0] = 0x01;
    expect_format_both("magic0", &o, FORMAT);
    bytes p = u8_file(1, (const uint32_t[]){4});
    p.b[1] = 0x08;
    expect_format_both("magic1", &p, FORMAT);
}

Test(idx, unknown_type)
{
    const uint8_t types[] = {0x00, 0x07, 0x0A, 0x0F, 0xFF};
    for (size_t i = 0; i < sizeof types; i++) {
        bytes o = u8_file(1, (const uint32_t[]){4});
        o.b[2] = types[i];
        char name[32];
        snprintf(name, sizeof name, "type%02x", types[i]);
        expect_format_both(name, &o, FORMAT);
    }
}

Test(idx, ndim_zero_and_too_many)
{
    bytes z = {.n = 0};
    idx_header(&z, 0x08, 0, NULL);
    put_u8(&z, 1);
    expect_format_both("ndim0", &z, FORMAT);
    const uint32_t dims[7] = {1, 1, 1, 1, 1, 1, 2};
    bytes o = u8_file(7, dims);
    expect_format_both("ndim7", &o, FORMAT);
    bytes big = {.n = 0};
    idx_header(&big, 0x08, 0, NULL);
    big.b[3] = 0xFF; /* 255 dims claimed, none present */
    expect_format_both("ndim255", &big, FORMAT);
}

Test(idx, zero_dimension)
{
    bytes o = {.n = 0};
    idx_header(&o, 0x08, 3, (const uint32_t[]){2, 0, 3});
    expect_format_both("zerodim", &o, FORMAT);
}

Test(idx, truncated_data_and_trailing_bytes)
{
    bytes t = u8_file(2, (const uint32_t[]){3, 4});
    t.n -= 1;
    expect_format_both("short", &t, FORMAT);
    bytes t2 = {.n = 0};
    idx_header(&t2, 0x0C, 1, (const uint32_t[]){2});
    put_be32(&t2, 1);
    put_u8(&t2, 0); /* 5 of the 8 data bytes of two i32 */
    expect_format_both("short_i32", &t2, FORMAT);
    bytes x = u8_file(2, (const uint32_t[]){3, 4});
    put_u8(&x, 0xAB);
    expect_format_both("trailing", &x, FORMAT);
    bytes h = u8_file(1, (const uint32_t[]){4});
    h.n = 6; /* cut inside the first dimension */
    expect_format_both("cut_dims", &h, FORMAT);
    bytes m = {.n = 0};
    put_u8(&m, 0);
    put_u8(&m, 0);
    put_u8(&m, 8);
    expect_format_both("cut_magic", &m, FORMAT);
    bytes e = {.n = 0};
    expect_format_both("empty", &e, FORMAT);
}

Test(idx, huge_or_overflowing_dimensions)
{
    /* 4 x 0xFFFFFFFF: the product overflows 64 bits */
    bytes o = {.n = 0};
    idx_header(&o, 0x0E, 4,
               (const uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu,
                                  0xFFFFFFFFu});
    put_u8(&o, 1);
    expect_format_both("overflow", &o, FORMAT_OR_LARGE);
    /* 2^32 - 1 by 2^32 - 1 f64 values, 2^67 bytes: too large or short */
    bytes l = {.n = 0};
    idx_header(&l, 0x0E, 2, (const uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu});
    put_u8(&l, 1);
    expect_format_both("huge", &l, FORMAT_OR_LARGE);
    /* 6 dims of 2^16: 2^96 elements */
    bytes s = {.n = 0};
    idx_header(&s, 0x08, 6,
               (const uint32_t[]){65536, 65536, 65536, 65536, 65536, 65536});
    expect_format_both("overflow6", &s, FORMAT_OR_LARGE);
}

Test(idx, corrupt_gzip_stream)
{
    /* a valid gzip file cut in the middle of its deflate stream */
    const uint32_t dims[2] = {20, 30};
    bytes o = u8_file(2, dims);
    const char *p = write_gz("cut.gz", &o);
    FILE *f = fopen(p, "rb");
    cr_assert_not_null(f);
    bytes z = {.n = 0};
    z.n = fread(z.b, 1, sizeof z.b, f);
    fclose(f);
    cr_assert_gt(z.n, 30);
    z.n = 24;
    static const xg_status want[] = {XG_ERR_FORMAT, XG_ERR_IO, 0};
    expect_fail(write_plain("cut2.gz", &z), want, "truncated gzip stream");
}

Test(idx, fifo_is_refused, .timeout = 10)
{
    /* opening a FIFO for reading waits for a writer; the reader must not */
    const char *p = path_of("fifo");
    cr_assert_eq(mkfifo(p, 0600), 0, "mkfifo: %s", strerror(errno));
    static const xg_status want[] = {XG_ERR_IO, XG_ERR_FORMAT, 0};
    expect_fail(p, want, "a FIFO");
    cr_expect(strstr(xg_last_error(), p) != NULL &&
                  strstr(xg_last_error(), "not a regular file") != NULL,
              "the message names the path and the reason: \"%s\"",
              xg_last_error());
}

/* Appends `n` bytes to the file at `path`. */
static void append(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "ab");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

Test(idx, garbage_after_the_gzip_stream)
{
    bytes o = u8_file(2, (const uint32_t[]){3, 4});
    const char *p = write_gz("garbage.gz", &o);
    append(p, "garbage!", 8);
    expect_fail(p, FORMAT, "bytes after the gzip stream");
    /* a second gzip member is gzip's own way to append: its data counts */
    bytes h = {.n = 0};
    idx_header(&h, 0x08, 1, (const uint32_t[]){4});
    const char *q = write_gz("two.gz", &h);
    bytes d = {.b = {1, 2, 3, 4}, .n = 4};
    write_gz("part2.gz", &d);
    FILE *f = fopen(path_of("part2.gz"), "rb");
    bytes z2 = {.n = 0};
    z2.n = fread(z2.b, 1, sizeof z2.b, f);
    fclose(f);
    append(q, z2.b, z2.n);
    xg_idx x;
    cr_expect_eq(xg_idx_read(q, &x), XG_OK, "two members: %s",
                 xg_last_error());
    cr_expect(x.bytes == 4 && memcmp(x.data, d.b, 4) == 0);
    xg_idx_free(&x);
}

/* Writes an IDX header, then `zeros` zero bytes, gzip-compressed. */
static const char *write_gz_zeros(const char *name, const bytes *header,
                                  size_t zeros)
{
    const char *p = path_of(name);
    gzFile f = gzopen(p, "wb9");
    cr_assert_not_null(f);
    cr_assert_eq(gzwrite(f, header->b, (unsigned)header->n), (int)header->n);
    static const uint8_t block[1 << 16];
    for (size_t left = zeros; left > 0;) {
        unsigned n = left < sizeof block ? (unsigned)left : sizeof block;
        cr_assert_eq(gzwrite(f, block, n), (int)n);
        left -= n;
    }
    cr_assert_eq(gzclose(f), Z_OK);
    return p;
}

Test(idx, gzip_bombs_fail_fast)
{
    /* the header says 4 bytes; the stream holds 64 MiB of zeros */
    bytes h = {.n = 0};
    idx_header(&h, 0x08, 1, (const uint32_t[]){4});
    expect_fail(write_gz_zeros("bomb1.gz", &h, (size_t)64 << 20), FORMAT,
                "more data than the header says");
    /* the header says 4 GiB - 1 bytes; the default limit refuses it before
     * reading any data */
    bytes big = {.n = 0};
    idx_header(&big, 0x08, 2, (const uint32_t[]){65535, 65537});
    static const xg_status large[] = {XG_ERR_TOO_LARGE, 0};
    const char *p = write_gz_zeros("bomb2.gz", &big, 1 << 20);
    expect_fail(p, large, "4 GiB announced");
    cr_expect(strstr(xg_last_error(), "xg_idx_set_max_bytes") != NULL,
              "the message says how to raise the limit: \"%s\"",
              xg_last_error());
    /* with the limit raised, the buffer grows only with the data that
     * arrives: 1 MiB of data costs nowhere near 4 GiB */
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    xg_idx_set_max_bytes((uint64_t)4 << 30);
    expect_fail(p, FORMAT, "4 GiB announced, 1 MiB present");
    xg_idx_set_max_bytes(0);
    getrusage(RUSAGE_SELF, &after);
    cr_expect_lt(after.ru_maxrss - before.ru_maxrss, 256 * 1024,
                 "peak memory grew by %ld KiB",
                 after.ru_maxrss - before.ru_maxrss);
}

Test(idx, size_limit_is_the_callers)
{
    cr_expect_eq(XG_IDX_DEFAULT_MAX_BYTES, (uint64_t)1 << 30);
    bytes o = u8_file(2, (const uint32_t[]){10, 10});
    const char *p = write_plain("limit", &o);
    cr_expect_eq(xg_idx_set_max_bytes(99), XG_IDX_DEFAULT_MAX_BYTES);
    static const xg_status large[] = {XG_ERR_TOO_LARGE, 0};
    expect_fail(p, large, "100 bytes over a limit of 99");
    cr_expect(strstr(xg_last_error(), p) != NULL, "\"%s\"", xg_last_error());
    cr_expect_eq(xg_idx_set_max_bytes(100), 99);
    xg_idx x;
    cr_expect_eq(xg_idx_read(p, &x), XG_OK, "%s", xg_last_error());
    xg_idx_free(&x);
    cr_expect_eq(xg_idx_set_max_bytes(0), 100);
    cr_expect_eq(xg_idx_set_max_bytes(0), XG_IDX_DEFAULT_MAX_BYTES,
                 "0 restores the default");
}

Test(idx, missing_file)
{
    static const xg_status want[] = {XG_ERR_IO, 0};
    expect_fail(path_of("no-such-file"), want, "missing file");
    expect_fail(tmpdir, want, "a directory");
}

Test(idx, free_of_zeroed_struct_is_harmless)
{
    xg_idx x;
    memset(&x, 0, sizeof x);
    xg_idx_free(&x);
    xg_idx_free(NULL);
    cr_expect_null(x.data);
}

/* ---- MNIST folders ----------------------------------------------------- */

enum { MN = 4, MH = 3, MW = 2 };
static const uint8_t mn_labels[MN] = {0, 9, 3, 1};

static uint8_t mn_pixel(int i) { return (uint8_t)(i * 11 % 256); }

/* Writes <prefix>-images-idx3-ubyte and <prefix>-labels-idx1-ubyte
 * (".gz" when gz) with n_img images and n_lab labels. */
static void write_mnist(const char *dir, const char *prefix, bool gz,
                        int n_img, int n_lab, const uint8_t *labels)
{
    bytes im = {.n = 0};
    idx_header(&im, 0x08, 3, (const uint32_t[]){(uint32_t)n_img, MH, MW});
    for (int i = 0; i < n_img * MH * MW; i++)
        put_u8(&im, mn_pixel(i));
    bytes lb = {.n = 0};
    idx_header(&lb, 0x08, 1, (const uint32_t[]){(uint32_t)n_lab});
    for (int i = 0; i < n_lab; i++)
        put_u8(&lb, labels[i % MN]);
    char a[128], b[128];
    snprintf(a, sizeof a, "%s%s-images-idx3-ubyte%s", dir, prefix,
             gz ? ".gz" : "");
    snprintf(b, sizeof b, "%s%s-labels-idx1-ubyte%s", dir, prefix,
             gz ? ".gz" : "");
    if (gz) {
        write_gz(a, &im);
        write_gz(b, &lb);
    } else {
        write_plain(a, &im);
        write_plain(b, &lb);
    }
}

static void check_dataset(const xg_dataset *ds, float mean, float sd)
{
    cr_assert_not_null(ds);
    cr_expect_eq(ds->n, MN);
    cr_expect_eq(ds->channels, 1);
    cr_expect_eq(ds->height, MH);
    cr_expect_eq(ds->width, MW);
    cr_expect_eq(ds->num_classes, 10, "labels 0..9 give 10 classes, got %d",
                 ds->num_classes);
    for (int i = 0; i < MN; i++)
        cr_expect_eq(ds->labels[i], mn_labels[i], "label %d", i);
    for (int i = 0; i < MN * MH * MW; i++) {
        double v = mn_pixel(i) / 255.0;
        if (sd > 0)
            v = (v - mean) / sd;
        cr_expect(tu_close(ds->images[i], v, 1e-6, 1e-5),
                  "pixel %d: %.7g, expected %.7g", i, ds->images[i], v);
    }
}

Test(mnist, train_split_plain)
{
    write_mnist("", "train", false, MN, MN, mn_labels);
    xg_dataset *ds = NULL;
    xg_status st = xg_mnist_load(tmpdir, "train", 0, 0, &ds);
    cr_assert_eq(st, XG_OK, "%s: %s", xg_status_str(st), xg_last_error());
    check_dataset(ds, 0, 0);
    xg_dataset_free(ds);
}

Test(mnist, test_split_gz_normalised)
{
    write_mnist("", "t10k", true, MN, MN, mn_labels);
    xg_dataset *ds = NULL;
    xg_status st = xg_mnist_load(tmpdir, "test", 0.2860f, 0.3530f, &ds);
    cr_assert_eq(st, XG_OK, "%s: %s", xg_status_str(st), xg_last_error());
    check_dataset(ds, 0.2860f, 0.3530f);
    xg_dataset_free(ds);
    xg_dataset_free(NULL);
}

static void expect_load_fails(const char *split, xg_status want,
                              const char *what)
{
    xg_dataset *ds = NULL;
    xg_clear_error();
    xg_status st = xg_mnist_load(tmpdir, split, 0, 0, &ds);
    if (st == XG_OK)
        xg_dataset_free(ds);
    cr_expect_eq(st, want, "%s: got %d (%s), expected %s; \"%s\"", what,
                 (int)st, xg_status_str(st), xg_status_str(want),
                 xg_last_error());
    cr_expect(xg_last_error()[0], "%s: empty message", what);
}

Test(mnist, mismatched_counts)
{
    write_mnist("", "train", false, MN, MN - 1, mn_labels);
    expect_load_fails("train", XG_ERR_FORMAT, "4 images, 3 labels");
}

Test(mnist, label_out_of_range)
{
    const uint8_t bad[MN] = {0, 10, 3, 1};
    write_mnist("", "train", false, MN, MN, bad);
    expect_load_fails("train", XG_ERR_FORMAT, "label 10");
    const uint8_t bad2[MN] = {0, 255, 3, 1};
    write_mnist("", "t10k", true, MN, MN, bad2);
    expect_load_fails("test", XG_ERR_FORMAT, "label 255");
}

Test(mnist, missing_files)
{
    expect_load_fails("train", XG_ERR_NOT_FOUND, "empty folder");
    /* images present, labels missing */
    write_mnist("", "train", false, MN, MN, mn_labels);
    unlink(path_of("train-labels-idx1-ubyte"));
    expect_load_fails("train", XG_ERR_NOT_FOUND, "labels file missing");
    xg_dataset *ds = NULL;
    cr_expect_eq(xg_mnist_load("/nonexistent/xgrad", "train", 0, 0, &ds),
                 XG_ERR_NOT_FOUND, "missing folder");
}

Test(mnist, fifo_in_the_folder_is_refused, .timeout = 10)
{
    write_mnist("", "train", false, MN, MN, mn_labels);
    unlink(path_of("train-labels-idx1-ubyte"));
    cr_assert_eq(mkfifo(path_of("train-labels-idx1-ubyte"), 0600), 0);
    expect_load_fails("train", XG_ERR_IO, "labels file is a FIFO");
}

Test(mnist, wrong_file_shapes)
{
    /* images given as a 1-D file */
    bytes im = u8_file(1, (const uint32_t[]){MN * MH * MW});
    write_plain("train-images-idx3-ubyte", &im);
    bytes lb = {.n = 0};
    idx_header(&lb, 0x08, 1, (const uint32_t[]){MN});
    put(&lb, mn_labels, MN);
    write_plain("train-labels-idx1-ubyte", &lb);
    expect_load_fails("train", XG_ERR_FORMAT, "1-D images file");
}

Test(mnist, unknown_split)
{
    write_mnist("", "train", false, MN, MN, mn_labels);
    xg_dataset *ds = NULL;
    xg_status st = xg_mnist_load(tmpdir, "validation", 0, 0, &ds);
    if (st == XG_OK)
        xg_dataset_free(ds);
    cr_expect_neq(st, XG_OK, "split \"validation\" accepted");
}

/* ---- the loader -------------------------------------------------------- */

enum { LN = 23, LC = 5 };

/* A dataset built by hand: image i is [1,1,2] = {i, -i}, label i % 5. */
typedef struct hand_ds {
    xg_dataset ds;
    float images[LN * 2];
    int32_t labels[LN];
} hand_ds;

static void hand_init(hand_ds *h)
{
    memset(h, 0, sizeof *h);
    for (int i = 0; i < LN; i++) {
        h->images[2 * i] = (float)i;
        h->images[2 * i + 1] = (float)-i;
        h->labels[i] = i % LC;
    }
    h->ds = (xg_dataset){.n = LN, .channels = 1, .height = 1, .width = 2,
                         .images = h->images, .labels = h->labels,
                         .num_classes = LC};
}

/* Runs one epoch; writes the sample ids in visiting order to ids and the
 * batch sizes to sizes; returns the number of samples. Checks shapes and
 * that labels travel with their images. */
static int run_epoch(xg_loader *ld, int64_t epoch, int *ids, int *sizes,
                     int *nbatches)
{
    xg_loader_start(ld, epoch);
    int n = 0, b = 0;
    for (;;) {
        xg_tensor *im = NULL, *lb = NULL;
        int r = xg_loader_next(ld, &im, &lb);
        cr_assert_geq(r, 0, "loader_next: %s", xg_last_error());
        if (r == 0)
            break;
        cr_assert_not_null(im);
        cr_assert_not_null(lb);
        int64_t bs = xg_tensor_dim(im, 0);
        tu_assert_shape(im, XG_SHAPE(bs, 1, 1, 2), "batch images");
        tu_assert_shape(lb, XG_SHAPE(bs), "batch labels");
        cr_assert_eq(xg_tensor_dtype(lb), XG_I32);
        float *iv = tu_read(im);
        int32_t *lv = tu_read_i32(lb);
        for (int64_t i = 0; i < bs; i++) {
            int id = (int)iv[2 * i];
            cr_assert_eq(iv[2 * i + 1], (float)-id, "image %d mangled", id);
            cr_assert_eq(lv[i], id % LC, "label of sample %d", id);
            cr_assert_lt(n, LN);
            ids[n++] = id;
        }
        free(iv);
        free(lv);
        sizes[b++] = (int)bs;
        cr_assert_leq(b, LN);
        xg_tensor_free(im);
        xg_tensor_free(lb);
    }
    *nbatches = b;
    return n;
}

static void check_batches(bool shuffle, bool drop_last, int64_t limit,
                          int64_t bs, const int *want_sizes, int want_n)
{
    hand_ds h;
    hand_init(&h);
    xg_loader *ld = xg_loader_new(&h.ds, bs, shuffle, drop_last, 1, limit);
    cr_assert_not_null(ld, "%s", xg_last_error());
    cr_expect_eq(xg_loader_batches(ld), want_n,
                 "batches: %" PRId64 ", expected %d (bs %" PRId64
                 ", limit %" PRId64 ", drop_last %d)",
                 xg_loader_batches(ld), want_n, bs, limit, drop_last);
    int ids[LN], sizes[LN], nb = 0;
    int n = run_epoch(ld, 0, ids, sizes, &nb);
    cr_assert_eq(nb, want_n, "batches made: %d, expected %d", nb, want_n);
    int total = 0;
    for (int i = 0; i < nb; i++) {
        cr_expect_eq(sizes[i], want_sizes[i], "batch %d has %d samples, "
                     "expected %d", i, sizes[i], want_sizes[i]);
        total += want_sizes[i];
    }
    cr_assert_eq(n, total);
    int64_t pool = limit && limit < LN ? limit : LN;
    int seen[LN] = {0};
    for (int i = 0; i < n; i++) {
        cr_assert_lt(ids[i], pool, "sample %d is past the limit", ids[i]);
        cr_assert_eq(seen[ids[i]]++, 0, "sample %d visited twice", ids[i]);
    }
    if (!drop_last)
        cr_expect_eq(n, pool, "every sample visited once");
    if (!shuffle)
        for (int i = 0; i < n; i++)
            cr_expect_eq(ids[i], i, "unshuffled order");
    /* after the end, next keeps saying 0 */
    xg_tensor *im = NULL, *lb = NULL;
    cr_expect_eq(xg_loader_next(ld, &im, &lb), 0);
    xg_loader_free(ld);
}

Test(loader, batch_shapes_and_counts)
{
    check_batches(false, false, 0, 5, (const int[]){5, 5, 5, 5, 3}, 5);
    check_batches(false, true, 0, 5, (const int[]){5, 5, 5, 5}, 4);
    check_batches(true, false, 0, 5, (const int[]){5, 5, 5, 5, 3}, 5);
    check_batches(true, true, 0, 5, (const int[]){5, 5, 5, 5}, 4);
    check_batches(false, false, 0, 23, (const int[]){23}, 1);
    check_batches(false, false, 0, 100, (const int[]){23}, 1);
    check_batches(false, true, 0, 100, (const int[]){0}, 0);
    check_batches(false, false, 0, 1, (const int[]){1, 1, 1, 1, 1, 1, 1, 1,
                                                    1, 1, 1, 1, 1, 1, 1, 1,
                                                    1, 1, 1, 1, 1, 1, 1},
                  23);
}

Test(loader, limit)
{
    check_batches(false, false, 12, 5, (const int[]){5, 5, 2}, 3);
    check_batches(false, true, 12, 5, (const int[]){5, 5}, 2);
    check_batches(true, false, 12, 5, (const int[]){5, 5, 2}, 3);
    check_batches(true, false, 100, 10, (const int[]){10, 10, 3}, 3);
}

static void epoch_order(uint64_t seed, int64_t epoch, int *ids)
{
    hand_ds h;
    hand_init(&h);
    xg_loader *ld = xg_loader_new(&h.ds, 4, true, false, seed, 0);
    cr_assert_not_null(ld);
    int sizes[LN], nb;
    cr_assert_eq(run_epoch(ld, epoch, ids, sizes, &nb), LN);
    xg_loader_free(ld);
}

static int same_positions(const int *a, const int *b)
{
    int s = 0;
    for (int i = 0; i < LN; i++)
        s += a[i] == b[i];
    return s;
}

Test(loader, shuffle_is_seeded_and_per_epoch)
{
    int a[LN], b[LN], c[LN], d[LN];
    epoch_order(9, 0, a);
    epoch_order(9, 0, b);
    cr_expect_arr_eq(a, b, sizeof a, "same seed and epoch, same order");
    epoch_order(9, 1, c);
    cr_expect_lt(same_positions(a, c), LN,
                 "epochs 0 and 1 visit in the same order");
    epoch_order(10, 0, d);
    cr_expect_lt(same_positions(a, d), LN,
                 "seeds 9 and 10 visit in the same order");
    int ident = 0;
    for (int i = 0; i < LN; i++)
        ident += a[i] == i;
    cr_expect_lt(ident, LN, "shuffle left the order unchanged");
    /* one loader: restarting an epoch replays it */
    hand_ds h;
    hand_init(&h);
    xg_loader *ld = xg_loader_new(&h.ds, 4, true, false, 9, 0);
    int e0[LN], e1[LN], e0b[LN], sizes[LN], nb;
    run_epoch(ld, 0, e0, sizes, &nb);
    run_epoch(ld, 1, e1, sizes, &nb);
    run_epoch(ld, 0, e0b, sizes, &nb);
    cr_expect_arr_eq(e0, a, sizeof a, "loader order matches a fresh one");
    cr_expect_arr_eq(e1, c, sizeof c, "epoch 1 matches a fresh loader's");
    cr_expect_arr_eq(e0, e0b, sizeof e0, "restarting epoch 0 replays it");
    xg_loader_free(ld);
}

Test(loader, bad_arguments)
{
    hand_ds h;
    hand_init(&h);
    xg_clear_error();
    xg_loader *ld = xg_loader_new(&h.ds, 0, false, false, 0, 0);
    cr_expect_null(ld, "batch size 0 accepted");
    xg_loader_free(ld);
    cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    ld = xg_loader_new(NULL, 4, false, false, 0, 0);
    cr_expect_null(ld, "NULL dataset accepted");
    xg_loader_free(ld);
    ld = xg_loader_new(&h.ds, 4, false, false, 0, -1);
    cr_expect_null(ld, "negative limit accepted");
    xg_loader_free(ld);
    xg_loader_free(NULL);
}

/* ---- augmentation -------------------------------------------------------- */

enum { AN = 200, AC = 2, AH = 5, AW = 6 };
#define AFILL (-1000.0f)

/* AN images [AC, AH, AW] whose pixels are all different:
 * 100000 * (id + 1) + 1000 * c + 10 * y + x; label id % 7. */
typedef struct aug_ds {
    xg_dataset ds;
    float images[AN * AC * AH * AW];
    int32_t labels[AN];
} aug_ds;

static void aug_init(aug_ds *a)
{
    memset(a, 0, sizeof *a);
    float *p = a->images;
    for (int i = 0; i < AN; i++) {
        for (int c = 0; c < AC; c++)
            for (int y = 0; y < AH; y++)
                for (int x = 0; x < AW; x++)
                    *p++ = 100000.0f * (float)(i + 1) + 1000.0f * (float)c +
                           10.0f * (float)y + (float)x;
        a->labels[i] = i % 7;
    }
    a->ds = (xg_dataset){.n = AN, .channels = AC, .height = AH, .width = AW,
                         .images = a->images, .labels = a->labels,
                         .num_classes = 7};
}

/* Pixel (c, y, x) of image `id` moved by (dx, dy) and then mirrored when
 * `flip`, written from the definition: the output pixel (y, x) shows the
 * source pixel (y + dy, x' + dx) with x' = w - 1 - x under a flip, or
 * AFILL where that falls outside the image. */
static float aug_expected(int id, int c, int y, int x, bool flip, int dx,
                          int dy)
{
    int sy = y + dy, sx = (flip ? AW - 1 - x : x) + dx;
    if (sy < 0 || sy >= AH || sx < 0 || sx >= AW)
        return AFILL;
    return 100000.0f * (float)(id + 1) + 1000.0f * (float)c +
           10.0f * (float)sy + (float)sx;
}

/* Which transform (flip, dx, dy) with |dx|, |dy| <= shift turns image `id`
 * into `img`: its index flip * 100 + (dy + 4) * 10 + (dx + 4), or -1 when
 * none does. Only one can: the pixels are all different. */
static int aug_match(const float *img, int id, bool may_flip, int shift)
{
    for (int f = 0; f <= (may_flip ? 1 : 0); f++)
        for (int dy = -shift; dy <= shift; dy++)
            for (int dx = -shift; dx <= shift; dx++) {
                bool ok = true;
                const float *p = img;
                for (int c = 0; c < AC && ok; c++)
                    for (int y = 0; y < AH && ok; y++)
                        for (int x = 0; x < AW && ok; x++)
                            ok = *p++ == aug_expected(id, c, y, x, f, dx, dy);
                if (ok)
                    return f * 100 + (dy + 4) * 10 + (dx + 4);
            }
    return -1;
}

/* One epoch through `ld`: each image must be an allowed transform of the
 * source its label and contents name; counts[transform]++; the transform
 * of every position goes to `seq`. */
static void aug_epoch(xg_loader *ld, int64_t epoch, bool flip, int shift,
                      int *counts, int *seq)
{
    xg_loader_start(ld, epoch);
    int n = 0;
    xg_tensor *im = NULL, *lb = NULL;
    while (xg_loader_next(ld, &im, &lb) == 1) {
        int64_t b = xg_tensor_dim(im, 0);
        tu_assert_shape(im, XG_SHAPE(b, AC, AH, AW), "augmented batch");
        float *iv = tu_read(im);
        int32_t *lv = tu_read_i32(lb);
        for (int64_t i = 0; i < b; i++, n++) {
            const float *img = iv + i * AC * AH * AW;
            /* the centre pixel survives any shift <= 2: it names the image */
            int id = (int)(img[2 * AW + 2] / 100000.0f + 0.5f) - 1;
            if (id < 0 || id >= AN)
                id = 0;
            int t = aug_match(img, id, flip, shift);
            cr_assert_geq(t, 0, "image at position %d (source %d) is not an "
                          "allowed transform (flip %d, shift %d)", n, id,
                          flip, shift);
            cr_assert_eq(lv[i], id % 7, "label left its image");
            counts[t]++;
            seq[n] = t;
        }
        free(iv);
        free(lv);
        xg_tensor_free(im);
        xg_tensor_free(lb);
    }
    cr_assert_eq(n, AN);
}

Test(loader, augment_flip_and_shift_are_the_documented_transforms)
{
    aug_ds *a = malloc(sizeof *a);
    cr_assert_not_null(a);
    aug_init(a);
    xg_loader *ld = xg_loader_new(&a->ds, 16, true, false, 5, 0);
    cr_assert_not_null(ld, "%s", xg_last_error());
    int seq[AN];
    static const struct { bool flip; int shift; } cases[] = {
        {true, 0}, {false, 1}, {true, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        bool flip = cases[k].flip;
        int shift = cases[k].shift;
        xg_augment aug = {.hflip = flip, .shift = shift, .fill = AFILL};
        cr_assert_eq(xg_loader_set_augment(ld, &aug), XG_OK, "%s",
                     xg_last_error());
        int counts[200] = {0};
        for (int64_t e = 0; e < 5; e++)
            aug_epoch(ld, e, flip, shift, counts, seq);
        /* every allowed transform turns up in 1,000 draws (at most 50
         * transforms: each is expected 20 times) */
        for (int f = 0; f <= (flip ? 1 : 0); f++)
            for (int dy = -shift; dy <= shift; dy++)
                for (int dx = -shift; dx <= shift; dx++)
                    cr_expect_gt(counts[f * 100 + (dy + 4) * 10 + dx + 4], 0,
                                 "flip %d dx %d dy %d never drawn", f, dx, dy);
    }
    /* NULL: off again, every image exact */
    cr_assert_eq(xg_loader_set_augment(ld, NULL), XG_OK);
    int counts[200] = {0};
    aug_epoch(ld, 0, false, 0, counts, seq);
    cr_expect_eq(counts[44], AN, "images changed with augmentation off");
    xg_loader_free(ld);
    free(a);
}

Test(loader, augment_draws_depend_on_seed_epoch_and_position)
{
    aug_ds *a = malloc(sizeof *a);
    cr_assert_not_null(a);
    aug_init(a);
    xg_augment aug = {.hflip = true, .shift = 2, .fill = AFILL};
    int s0[AN], s0b[AN], s1[AN], s0c[AN], other[AN], counts[200] = {0};
    xg_loader *ld = xg_loader_new(&a->ds, 7, true, false, 5, 0);
    cr_assert_not_null(ld);
    cr_assert_eq(xg_loader_set_augment(ld, &aug), XG_OK);
    aug_epoch(ld, 0, true, 2, counts, s0);
    aug_epoch(ld, 1, true, 2, counts, s1);
    aug_epoch(ld, 0, true, 2, counts, s0b);
    cr_expect_arr_eq(s0, s0b, sizeof s0, "restarting epoch 0 changed draws");
    cr_expect_neq(memcmp(s0, s1, sizeof s0), 0, "epochs 0 and 1 drew alike");
    xg_loader_free(ld);
    /* a fresh loader, another batch size: the same draws (a resumed run) */
    ld = xg_loader_new(&a->ds, 64, true, false, 5, 0);
    cr_assert_not_null(ld);
    cr_assert_eq(xg_loader_set_augment(ld, &aug), XG_OK);
    aug_epoch(ld, 0, true, 2, counts, s0c);
    cr_expect_arr_eq(s0, s0c, sizeof s0, "a fresh loader drew otherwise");
    xg_loader_free(ld);
    ld = xg_loader_new(&a->ds, 7, true, false, 6, 0);
    cr_assert_not_null(ld);
    cr_assert_eq(xg_loader_set_augment(ld, &aug), XG_OK);
    aug_epoch(ld, 0, true, 2, counts, other);
    cr_expect_neq(memcmp(s0, other, sizeof s0), 0, "seeds 5 and 6 drew alike");
    xg_loader_free(ld);
    free(a);
}

Test(loader, augment_bad_arguments_leave_the_loader_as_it_was)
{
    aug_ds *a = malloc(sizeof *a);
    cr_assert_not_null(a);
    aug_init(a);
    xg_loader *ld = xg_loader_new(&a->ds, 16, false, false, 0, 0);
    cr_assert_not_null(ld);
    xg_augment ok = {.hflip = false, .shift = 1, .fill = AFILL};
    cr_expect_eq(xg_loader_set_augment(NULL, &ok), XG_ERR_INVALID_ARG);
    const xg_augment bad[] = {
        {.shift = -1, .fill = 0.0f},
        {.shift = AH, .fill = 0.0f}, /* the smaller side is the limit */
        {.shift = 1, .fill = NAN},
        {.shift = 1, .fill = INFINITY},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        xg_clear_error();
        cr_expect_eq(xg_loader_set_augment(ld, &bad[k]), XG_ERR_INVALID_ARG,
                     "bad augment %zu accepted", k);
        cr_expect_str_neq(xg_last_error(), "", "no message for case %zu", k);
    }
    /* still the unaugmented loader */
    int counts[200] = {0}, seq[AN];
    aug_epoch(ld, 0, false, 0, counts, seq);
    cr_expect_eq(counts[44], AN);
    /* shift = side - 1 is the largest allowed */
    xg_augment edge = {.shift = AH - 1, .fill = 0.0f};
    cr_expect_eq(xg_loader_set_augment(ld, &edge), XG_OK, "%s",
                 xg_last_error());
    xg_loader_free(ld);
    free(a);
}
