/* Model files: safetensors reading and writing, module state_dicts and
 * training checkpoints.
 *
 * Files the reader is tested on are built here byte by byte from the
 * format's description (8-byte little-endian header length, JSON header
 * padded with spaces, raw little-endian data), never by the code under
 * test; files the writer makes are checked the same way (the header is
 * parsed with jansson here). Every test works in a fresh temporary folder
 * that the fini removes. */
#include "test_util.h"
#include "io/safetensors_impl.h" /* xg__safetensors_parse */

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a temporary folder per test --------------------------------------- */

static char dir[64];

static void dir_init(void)
{
    tu_init();
    tu_tmpdir_new(dir, sizeof dir, "xg-safetensors");
}

static void dir_fini(void)
{
    tu_rm_tree(dir);
    tu_fini();
}

TestSuite(safetensors, .init = dir_init, .fini = dir_fini);
TestSuite(module_file, .init = dir_init, .fini = dir_fini);
TestSuite(checkpoint, .init = dir_init, .fini = dir_fini);

/* A path in the test's folder (tu_path_in). */
static const char *in_dir(const char *name)
{
    return tu_path_in(dir, name);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* The whole file in a new buffer; *len gets its size. */
static uint8_t *read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*len + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* Writes a safetensors file by the spec: the header length (little-endian,
 * header padded with spaces to a multiple of 8), the header, then `data`. */
static void write_st(const char *path, const char *header, const void *data,
                     size_t data_len)
{
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    size_t total = 8 + padded + data_len;
    uint8_t *b = calloc(1, total);
    cr_assert_not_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, header, hlen);
    memset(b + 8 + hlen, ' ', padded - hlen);
    if (data_len)
        memcpy(b + 8 + padded, data, data_len);
    write_bytes(path, b, total);
    free(b);
}

/* How many files in the test folder have ".tmp-" in their names. */
static int temp_files_left(const char *folder)
{
    DIR *d = opendir(folder);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

/* A stand-in for a handle, to see that a failed open sets *out to NULL. */
static char sentinel;
#define NOT_NULL ((xg_safetensors *)(void *)&sentinel)

static void expect_status(xg_status got, xg_status want, const char *needle,
                          const char *what)
{
    cr_expect_eq(got, want, "%s: got %s, expected %s (\"%s\")", what,
                 xg_status_str(got), xg_status_str(want), xg_last_error());
    cr_expect_eq(xg_last_status(), want, "%s: xg_last_status() is %s", what,
                 xg_status_str(xg_last_status()));
    cr_expect(strstr(xg_last_error(), needle) != NULL,
              "%s: message \"%s\" does not mention \"%s\"", what,
              xg_last_error(), needle);
}

/* ---- safetensors: round trip --------------------------------------------- */

static const float w_vals[6] = {1.5f, -2.25f, 0x1p-126f, 3.4e38f, -0.0f,
                                0.1f};
static const int32_t label_vals[4] = {3, -1, 7, INT32_MAX};

static void write_sample(const char *path)
{
    xg_scope *s = xg_scope_begin();
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    cr_assert_not_null(w);
    float scale = 2.5f;
    cr_assert_eq(xg_safetensors_writer_add(w, "layer.weight",
                                           tu_f32(w_vals, XG_SHAPE(2, 3))),
                 XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_safetensors_writer_add(w, "labels",
                                           tu_i32(label_vals, XG_SHAPE(4))),
                 XG_OK);
    cr_assert_eq(xg_safetensors_writer_add(
                     w, "scale", xg_tensor_from_data(&scale, XG_F32, NULL, 0)),
                 XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_safetensors_writer_add_i64(w, "big", INT64_C(9000000000)),
                 XG_OK);
    cr_assert_eq(xg_safetensors_writer_metadata(w, "framework", "xgrad"),
                 XG_OK);
    cr_assert_eq(xg_safetensors_writer_metadata(w, "note", "caf\xc3\xa9"),
                 XG_OK);
    xg_scope_end(s); /* the writer copied the values */
    cr_assert_eq(xg_safetensors_writer_save(w, path), XG_OK, "%s",
                 xg_last_error());
    xg_safetensors_writer_free(w);
}

Test(safetensors, round_trip)
{
    const char *path = in_dir("sample.safetensors");
    write_sample(path);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(xg_safetensors_count(st), 4);
    const char *order[] = {"layer.weight", "labels", "scale", "big"};
    for (int i = 0; i < 4; i++)
        cr_expect_str_eq(xg_safetensors_name(st, i), order[i]);
    cr_expect_null(xg_safetensors_name(st, 4));

    const char *dtype = NULL;
    int64_t shape[XG_MAX_DIMS];
    int ndim = -1;
    cr_assert_eq(xg_safetensors_info(st, "layer.weight", &dtype, shape,
                                     &ndim), XG_OK);
    cr_expect_str_eq(dtype, "F32");
    cr_expect(ndim == 2 && shape[0] == 2 && shape[1] == 3);
    cr_assert_eq(xg_safetensors_info(st, "big", &dtype, shape, &ndim), XG_OK);
    cr_expect(strcmp(dtype, "I64") == 0 && ndim == 0);

    xg_scope *s = xg_scope_begin();
    float *w = tu_read(xg_safetensors_tensor(st, "layer.weight"));
    cr_expect_eq(memcmp(w, w_vals, sizeof w_vals), 0, "weights differ");
    free(w);
    tu_assert_i32(xg_safetensors_tensor(st, "labels"), XG_SHAPE(4),
                  label_vals, "labels");
    xg_tensor *scale = xg_safetensors_tensor(st, "scale");
    cr_expect_eq(xg_tensor_ndim(scale), 0);
    cr_expect_eq(tu_item(scale), 2.5f);
    cr_expect_null(xg_safetensors_tensor(st, "big"));
    expect_status(xg_last_status(), XG_ERR_DTYPE, "does not fit in I32",
                  "I64 too big");
    cr_expect_null(xg_safetensors_tensor(st, "nope"));
    expect_status(xg_last_status(), XG_ERR_NOT_FOUND, "'nope'", "no tensor");
    xg_scope_end(s);

    cr_expect_str_eq(xg_safetensors_metadata(st, "framework"), "xgrad");
    cr_expect_str_eq(xg_safetensors_metadata(st, "note"), "caf\xc3\xa9");
    cr_expect_null(xg_safetensors_metadata(st, "absent"));
    expect_status(xg_safetensors_info(st, "nope", NULL, NULL, NULL),
                  XG_ERR_NOT_FOUND, "sample.safetensors: no tensor named "
                  "'nope'", "info");
    xg_safetensors_close(st);
}

/* The writer's bytes, read by hand: length, padding, JSON, data. */
Test(safetensors, writer_follows_the_format)
{
    const char *path = in_dir("sample.safetensors");
    write_sample(path);
    size_t len = 0;
    uint8_t *b = read_bytes(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b[i];
    cr_assert(n % 8 == 0 && 8 + n <= len, "header length %llu",
              (unsigned long long)n);
    cr_expect_eq(b[8], '{');
    json_error_t err;
    json_t *h = json_loadb((const char *)b + 8, n, 0, &err);
    cr_assert_not_null(h, "header: %s", err.text);
    json_t *md = json_object_get(h, "__metadata__");
    cr_expect_str_eq(json_string_value(json_object_get(md, "framework")),
                     "xgrad");
    json_t *e = json_object_get(h, "labels");
    cr_expect_str_eq(json_string_value(json_object_get(e, "dtype")), "I32");
    json_t *off = json_object_get(e, "data_offsets");
    int64_t begin = json_integer_value(json_array_get(off, 0));
    cr_expect_eq(json_integer_value(json_array_get(off, 1)) - begin, 16);
    cr_expect_eq(json_integer_value(json_array_get(
                     json_object_get(e, "shape"), 0)), 4);
    cr_expect_eq(memcmp(b + 8 + n + begin, label_vals, 16), 0,
                 "label bytes differ");
    e = json_object_get(h, "big");
    cr_expect_eq(json_array_size(json_object_get(e, "shape")), 0);
    off = json_object_get(e, "data_offsets");
    int64_t big = 0;
    memcpy(&big, b + 8 + n + json_integer_value(json_array_get(off, 0)), 8);
    cr_expect_eq(big, INT64_C(9000000000));
    cr_expect_eq(json_integer_value(json_array_get(off, 1)), (json_int_t)(len - 8 - n),
                 "the last tensor must end the file");
    json_decref(h);
    free(b);
    cr_expect_eq(temp_files_left(dir), 0);
}

Test(safetensors, writer_rejects_bad_names)
{
    xg_scope *s = xg_scope_begin();
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    xg_tensor *t = tu_f32(w_vals, XG_SHAPE(6));
    cr_assert_eq(xg_safetensors_writer_add(w, "a", t), XG_OK);
    expect_status(xg_safetensors_writer_add(w, "a", t), XG_ERR_INVALID_ARG,
                  "already added", "duplicate");
    expect_status(xg_safetensors_writer_add_i64(w, "a", 1),
                  XG_ERR_INVALID_ARG, "already added", "duplicate i64");
    expect_status(xg_safetensors_writer_add(w, "", t), XG_ERR_INVALID_ARG,
                  "empty", "empty name");
    expect_status(xg_safetensors_writer_add(w, "__metadata__", t),
                  XG_ERR_INVALID_ARG, "reserved", "__metadata__");
    expect_status(xg_safetensors_writer_add(w, "bad\xff", t),
                  XG_ERR_INVALID_ARG, "UTF-8", "bad UTF-8");
    expect_status(xg_safetensors_writer_metadata(w, "k", "\xc3"),
                  XG_ERR_INVALID_ARG, "UTF-8", "bad UTF-8 value");
    expect_status(xg_safetensors_writer_add(w, "n", NULL), XG_ERR_INVALID_ARG,
                  "NULL", "NULL tensor");
    xg_safetensors_writer_free(w);
    xg_scope_end(s);
}

/* ---- safetensors: a PyTorch-style file, written by hand ------------------ */

/* The bytes of little-endian IEEE floats and integers, spelled out. */
static const uint8_t fc_data[] = {
    0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x00, 0xbf,             /* bias .5 -.5 */
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x40, 0x40,
    0x00, 0x00, 0x80, 0x40, 0x00, 0x00, 0xa0, 0x40, 0x00, 0x00, 0xc0, 0x40,
};                                                   /* weight [[1,2,3],[4,5,6]] */

/* As torch + safetensors.torch.save_file write nn.Sequential(OrderedDict(
 * fc=nn.Linear(3, 2))): sorted names, Linear weight [out, in]. */
static const char fc_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],"
    "\"data_offsets\":[8,32]}}";

Test(safetensors, pytorch_layout_fixture)
{
    const char *path = in_dir("torch.safetensors");
    write_st(path, fc_header, fc_data, sizeof fc_data);

    xg_module *m = xg_sequential();
    cr_assert_eq(xg_sequential_add(m, "fc", xg_linear(3, 2, true)), XG_OK);
    cr_assert_eq(xg_module_load(m, path), XG_OK, "%s", xg_last_error());
    xg_scope *s = xg_scope_begin();
    const float ones[3] = {1, 1, 1};
    double want[2] = {1 + 2 + 3 + 0.5, 4 + 5 + 6 - 0.5};
    tu_assert_values(xg_module_forward(m, tu_f32(ones, XG_SHAPE(1, 3))),
                     XG_SHAPE(1, 2), want, 0, 0, "fc(1, 1, 1)");
    double w[6] = {1, 2, 3, 4, 5, 6};
    tu_assert_values(xg_module_param(m, 0, NULL), XG_SHAPE(2, 3), w, 0, 0,
                     "fc.weight");
    xg_scope_end(s);
    xg_module_free(m);
}

/* F16 and BF16 bit patterns and the float bits IEEE 754 gives them: zeros,
 * subnormals, the largest, infinities, NaNs (an F16 NaN becomes quiet, as
 * IEEE's conversion and PyTorch make it; a BF16 one keeps its bits, as
 * PyTorch does). Every pattern against PyTorch: safetensors_torch.py. */
Test(safetensors, half_floats_convert_exactly)
{
    static const uint16_t f16[] = {0x0000, 0x8000, 0x0001, 0x03ff, 0x0400,
                                   0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x7e00,
                                   0x7c01, 0xfd55};
    static const uint32_t f16_want[] = {
        0x00000000, 0x80000000, 0x33800000, /* 2^-24 */
        0x387fc000, /* 1023 x 2^-24 */ 0x38800000, /* 2^-14 */
        0x3f800000, 0x477fe000, /* 65504 */ 0x7f800000, 0xff800000,
        0x7fc00000, 0x7fc02000, /* signalling, made quiet */ 0xffeaa000};
    static const uint16_t bf16[] = {0x0001, 0x8080, 0x7f7f, 0x7f80, 0xff80,
                                    0x7fc0, 0x7f81, 0x3f80};
    uint8_t data[sizeof f16 + sizeof bf16];
    for (size_t i = 0; i < 12; i++) { /* little-endian */
        data[2 * i] = (uint8_t)f16[i];
        data[2 * i + 1] = (uint8_t)(f16[i] >> 8);
    }
    for (size_t i = 0; i < 8; i++) {
        data[24 + 2 * i] = (uint8_t)bf16[i];
        data[24 + 2 * i + 1] = (uint8_t)(bf16[i] >> 8);
    }
    const char *path = in_dir("halves.safetensors");
    write_st(path,
             "{\"f16\":{\"dtype\":\"F16\",\"shape\":[3,4],"
             "\"data_offsets\":[0,24]},"
             "\"bf16\":{\"dtype\":\"BF16\",\"shape\":[8],"
             "\"data_offsets\":[24,40]}}",
             data, sizeof data);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK, "%s",
                 xg_last_error());
    xg_tensor *a = xg_safetensors_tensor(st, "f16");
    xg_tensor *b = xg_safetensors_tensor(st, "bf16");
    cr_assert(a && b, "%s", xg_last_error());
    cr_assert(xg_tensor_dtype(a) == XG_F32 && xg_tensor_dtype(b) == XG_F32);
    cr_assert(xg_tensor_ndim(a) == 2 && xg_tensor_dim(a, 1) == 4);
    uint32_t got[12];
    cr_assert_eq(xg_tensor_read(a, got, sizeof got), XG_OK);
    for (size_t i = 0; i < 12; i++)
        cr_expect_eq(got[i], f16_want[i], "F16 %04x: %08x, expected %08x",
                     f16[i], got[i], f16_want[i]);
    cr_assert_eq(xg_tensor_read(b, got, 8 * sizeof *got), XG_OK);
    for (size_t i = 0; i < 8; i++)
        cr_expect_eq(got[i], (uint32_t)bf16[i] << 16, "BF16 %04x: %08x",
                     bf16[i], got[i]);
    xg_tensor_free(a);
    xg_tensor_free(b);
    xg_safetensors_close(st);
}

Test(safetensors, other_dtypes)
{
    /* I64 [3] = 1, -2, 3; I32 [2] = 7, -8; F16 [2]; BOOL [3]; F32 [0, 3] */
    static const uint8_t data[] = {
        1, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0xf8, 0xff, 0xff, 0xff,
        0x00, 0x3c, 0x00, 0xc0, 1, 0, 1};
    const char *path = in_dir("dtypes.safetensors");
    write_st(path,
             "{\"i64\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]},"
             "\"i32\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[24,32]},"
             "\"half\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[32,36]},"
             "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[36,39]},"
             "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,3],"
             "\"data_offsets\":[39,39]}}",
             data, sizeof data);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK, "%s",
                 xg_last_error());
    xg_scope *s = xg_scope_begin();
    tu_assert_i32(xg_safetensors_tensor(st, "i64"), XG_SHAPE(3),
                  (const int32_t[]){1, -2, 3}, "I64 as I32");
    tu_assert_i32(xg_safetensors_tensor(st, "i32"), XG_SHAPE(2),
                  (const int32_t[]){7, -8}, "I32");
    const char *dtype = NULL;
    int64_t shape[XG_MAX_DIMS];
    int ndim = 0;
    cr_assert_eq(xg_safetensors_info(st, "half", &dtype, shape, &ndim),
                 XG_OK);
    cr_expect(strcmp(dtype, "F16") == 0 && ndim == 1 && shape[0] == 2);
    tu_assert_values(xg_safetensors_tensor(st, "half"), XG_SHAPE(2),
                     (const double[]){1.0, -2.0}, 0, 0, "F16 as F32");
    cr_expect_null(xg_safetensors_tensor(st, "mask"));
    expect_status(xg_last_status(), XG_ERR_DTYPE,
                  "tensor 'mask' is BOOL; xgrad loads F32, F16, BF16, I32 and "
                  "I64", "BOOL");
    cr_assert_eq(xg_safetensors_info(st, "empty", &dtype, shape, &ndim),
                 XG_OK);
    cr_expect(ndim == 2 && shape[0] == 0 && shape[1] == 3);
    cr_expect_null(xg_safetensors_tensor(st, "empty"));
    expect_status(xg_last_status(), XG_ERR_SHAPE, "bad shape [0,3]",
                  "size-0 axis");
    xg_scope_end(s);
    xg_safetensors_close(st);
}

Test(safetensors, empty_file_and_paths)
{
    const char *path = in_dir("empty.safetensors");
    write_st(path, "{}", NULL, 0);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK, "%s",
                 xg_last_error());
    cr_expect_eq(xg_safetensors_count(st), 0);
    cr_expect_null(xg_safetensors_metadata(st, "format"));
    xg_safetensors_close(st);

    st = NOT_NULL;
    expect_status(xg_safetensors_open(in_dir("absent"), &st),
                  XG_ERR_NOT_FOUND, "No such file", "missing file");
    cr_expect_null(st, "*out must be NULL on error");
    expect_status(xg_safetensors_open(dir, &st), XG_ERR_IO,
                  "not a regular file", "a folder");
    cr_assert_eq(mkfifo(in_dir("fifo"), 0600), 0);
    expect_status(xg_safetensors_open(in_dir("fifo"), &st), XG_ERR_IO,
                  "not a regular file", "a FIFO (must not hang)");
    expect_status(xg_safetensors_open(NULL, &st), XG_ERR_INVALID_ARG, "NULL",
                  "NULL path");
}

/* ---- safetensors: hostile files ------------------------------------------- */

typedef struct hostile {
    const char *what;
    const char *header; /* padded and prefixed by write_st; NULL: raw */
    size_t data_len;    /* zero bytes after the header */
    const char *raw;    /* the whole file, when header is NULL */
    size_t raw_len;
    xg_status want;
    const char *needle;
} hostile;

#define RAW(s) .raw = (s), .raw_len = sizeof(s) - 1
/* A tensor entry: F32 of `shape` at `offsets`. */
#define F32(name, shape, offsets)                                            \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape                       \
    ",\"data_offsets\":" offsets "}"

static const hostile hostile_files[] = {
    {"empty file", RAW(""), .want = XG_ERR_FORMAT, .needle = "too short"},
    {"5 bytes", RAW("\x02\0\0\0\0"), .want = XG_ERR_FORMAT,
     .needle = "5 bytes: too short"},
    {"header length past the end", RAW("\xe8\x03\0\0\0\0\0\0{}"),
     .want = XG_ERR_FORMAT,
     .needle = "header length 1000 runs past the end of the file (10 bytes)"},
    {"header length over 100 MB", RAW("\x01\xe1\xf5\x05\0\0\0\0{}      "),
     .want = XG_ERR_TOO_LARGE, .needle = "100000001 is over the 100 MB"},
    {"header length 2^64-1", RAW("\xff\xff\xff\xff\xff\xff\xff\xff{}"),
     .want = XG_ERR_TOO_LARGE, .needle = "over the 100 MB limit"},
    {"empty header", RAW("\0\0\0\0\0\0\0\0"), .want = XG_ERR_FORMAT,
     .needle = "does not start with '{'"},
    {"header not JSON", "{nope", .want = XG_ERR_FORMAT,
     .needle = "not valid JSON"},
    {"header a JSON array", "[{}]", .want = XG_ERR_FORMAT,
     .needle = "does not start with '{'"},
    {"header after whitespace", " {}", .want = XG_ERR_FORMAT,
     .needle = "does not start with '{'"},
    {"NUL in the padding", RAW("\x08\0\0\0\0\0\0\0{}\0     "),
     .want = XG_ERR_FORMAT, .needle = "not valid JSON"},
    {"invalid UTF-8", "{\"\xff\":{}}", .want = XG_ERR_FORMAT,
     .needle = "not valid JSON"},
    {"duplicate names", "{" F32("t", "[1]", "[0,4]") ","
     F32("t", "[1]", "[4,8]") "}", 8, .want = XG_ERR_FORMAT,
     .needle = "duplicate"},
    {"duplicate __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}",
     .want = XG_ERR_FORMAT, .needle = "duplicate"},
    {"__metadata__ not an object", "{\"__metadata__\":[]}",
     .want = XG_ERR_FORMAT, .needle = "__metadata__ is not an object"},
    {"object nested in __metadata__",
     "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", .want = XG_ERR_FORMAT,
     .needle = "__metadata__ 'k' is not a string"},
    {"number in __metadata__", "{\"__metadata__\":{\"k\":1}}",
     .want = XG_ERR_FORMAT, .needle = "__metadata__ 'k' is not a string"},
    {"object nested in a tensor entry",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
     "\"x\":{\"y\":{}}}}", 4, .want = XG_ERR_FORMAT,
     .needle = "tensor 't': unknown key 'x'"},
    {"entry not an object", "{\"t\":5}", .want = XG_ERR_FORMAT,
     .needle = "tensor 't': the entry is not an object"},
    {"no dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     .want = XG_ERR_FORMAT, .needle = "tensor 't': no 'dtype'"},
    {"no data_offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
     .want = XG_ERR_FORMAT, .needle = "no 'data_offsets'"},
    {"unknown dtype",
     "{\"t\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     .want = XG_ERR_FORMAT, .needle = "tensor 't': unknown dtype 'F17'"},
    {"dtype not a string",
     "{\"t\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     .want = XG_ERR_FORMAT, .needle = "unknown dtype '(not a string)'"},
    {"shape not an array", "{" F32("t", "4", "[0,16]") "}", 16,
     .want = XG_ERR_FORMAT, .needle = "shape is not an array"},
    {"negative shape", "{" F32("t", "[2,-1]", "[0,4]") "}", 4,
     .want = XG_ERR_FORMAT,
     .needle = "shape[1] is not a non-negative integer"},
    {"fractional shape", "{" F32("t", "[1.5]", "[0,4]") "}", 4,
     .want = XG_ERR_FORMAT, .needle = "shape[0] is not a non-negative"},
    {"overflowing shape",
     "{" F32("t", "[4294967296,4294967296,0]", "[0,0]") "}",
     .want = XG_ERR_FORMAT,
     .needle = "shape [4294967296,4294967296,0] overflows 64 bits"},
    {"shape past JSON integers", "{" F32("t", "[18446744073709551616]",
     "[0,4]") "}", 4, .want = XG_ERR_FORMAT, .needle = "not valid JSON"},
    {"7 dimensions", "{" F32("t", "[1,1,1,1,1,1,1]", "[0,4]") "}", 4,
     .want = XG_ERR_TOO_LARGE, .needle = "7 dimensions; xgrad handles at most"},
    {"packed dtype, partial byte",
     "{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
     .want = XG_ERR_FORMAT, .needle = "12 bits of F4"},
    {"data_offsets reversed", "{" F32("t", "[1]", "[8,4]") "}", 8,
     .want = XG_ERR_FORMAT, .needle = "data_offsets [8, 4) are reversed"},
    {"data_offsets negative", "{" F32("t", "[1]", "[-4,0]") "}", 4,
     .want = XG_ERR_FORMAT, .needle = "not a pair of non-negative integers"},
    {"data_offsets of three", "{" F32("t", "[1]", "[0,4,8]") "}", 4,
     .want = XG_ERR_FORMAT, .needle = "not a pair"},
    {"data_offsets as strings", "{" F32("t", "[1]", "[\"0\",\"4\"]") "}", 4,
     .want = XG_ERR_FORMAT, .needle = "not a pair"},
    {"data_offsets past the end", "{" F32("t", "[1]", "[0,4]") "," F32("u",
     "[1]", "[4,8]") "}", 6, .want = XG_ERR_FORMAT,
     .needle = "tensor 'u': data_offsets [4, 8) run past the end of the data "
               "section (6 bytes"},
    {"truncated data", "{" F32("fc1.weight", "[256,784]", "[0,802816]") "}",
     4096, .want = XG_ERR_FORMAT, .needle = "is the file truncated?"},
    {"data_offsets not matching shape x dtype",
     "{" F32("fc1.weight", "[256,784]", "[0,100]") "}", 100,
     .want = XG_ERR_FORMAT,
     .needle = "tensor 'fc1.weight': data_offsets [0, 100) do not match "
               "shape [256,784] x F32 = 802816 bytes"},
    {"overlapping tensors", "{" F32("a", "[2]", "[0,8]") "," F32("b", "[2]",
     "[4,12]") "}", 12, .want = XG_ERR_FORMAT,
     .needle = "tensor 'b': data_offsets [4, 12) overlap tensor 'a'"},
    {"two tensors at one place", "{" F32("a", "[1]", "[0,4]") "," F32("b",
     "[1]", "[0,4]") "}", 4, .want = XG_ERR_FORMAT, .needle = "overlap"},
    {"a hole between tensors", "{" F32("a", "[1]", "[0,4]") "," F32("b",
     "[1]", "[8,12]") "}", 12, .want = XG_ERR_FORMAT,
     .needle = "bytes [4, 8) of the data section belong to no tensor"},
    {"a hole at the start", "{" F32("a", "[1]", "[4,8]") "}", 8,
     .want = XG_ERR_FORMAT, .needle = "bytes [0, 4) of the data section"},
    {"trailing bytes", "{" F32("a", "[1]", "[0,4]") "}", 7,
     .want = XG_ERR_FORMAT, .needle = "3 bytes after the last tensor"},
    {"data but no tensors", "{}", 8, .want = XG_ERR_FORMAT,
     .needle = "8 bytes after the last tensor"},
};

/* {"a": [[[[...]]]]}, `depth` brackets deep. */
static char *deep_header(int depth, char open, char close)
{
    char *h = malloc((size_t)depth * 2 + 16);
    cr_assert_not_null(h);
    size_t n = (size_t)sprintf(h, "{\"a\":");
    memset(h + n, open, (size_t)depth);
    memset(h + n + (size_t)depth, close, (size_t)depth);
    strcpy(h + n + 2 * (size_t)depth, "}");
    return h;
}

static void expect_refused(const char *path, xg_status want,
                           const char *needle, const char *what)
{
    xg_safetensors *st = NOT_NULL;
    expect_status(xg_safetensors_open(path, &st), want, needle, what);
    cr_expect_null(st, "%s: *out must be NULL on error", what);
    cr_expect(strstr(xg_last_error(), path) == xg_last_error(),
              "%s: the message must start with the path: %s", what,
              xg_last_error());
}

Test(safetensors, hostile_files_are_refused)
{
    size_t n = sizeof hostile_files / sizeof *hostile_files;
    for (size_t i = 0; i < n; i++) {
        const hostile *h = &hostile_files[i];
        char name[32];
        snprintf(name, sizeof name, "hostile%02zu.safetensors", i);
        const char *path = in_dir(name);
        if (h->header) {
            void *zeros = calloc(1, h->data_len + 1);
            write_st(path, h->header, zeros, h->data_len);
            free(zeros);
        } else {
            write_bytes(path, h->raw, h->raw_len);
        }
        xg_clear_error();
        expect_refused(path, h->want, h->needle, h->what);
    }
}

Test(safetensors, deep_nesting_is_refused)
{
    const char *path = in_dir("deep.safetensors");
    char *h = deep_header(100000, '[', ']');
    write_st(path, h, NULL, 0);
    free(h);
    expect_refused(path, XG_ERR_FORMAT, "maximum parsing depth",
                   "100000 nested arrays");
    h = deep_header(3, '[', ']');
    write_st(path, h, NULL, 0);
    free(h);
    expect_refused(path, XG_ERR_FORMAT, "tensor 'a': the entry is not an "
                   "object", "3 nested arrays");
}

Test(safetensors, hostile_bytes_from_memory)
{
    /* The same checks run on a buffer (the path the fuzzer takes). */
    xg_safetensors *st = NULL;
    expect_status(xg__safetensors_parse("\x02\0\0", 3, "mem", &st),
                  XG_ERR_FORMAT, "mem: 3 bytes: too short", "3 bytes");
    static const char ok[] = "\x08\0\0\0\0\0\0\0{}      ";
    cr_assert_eq(xg__safetensors_parse(ok, sizeof ok - 1, "mem", &st), XG_OK,
                 "%s", xg_last_error());
    cr_expect_eq(xg_safetensors_count(st), 0);
    xg_safetensors_close(st);
}

/* ---- safetensors: atomic writes ------------------------------------------ */

/* Saves one f32 tensor of n values, all equal to v, under "t". */
static xg_status save_filled(const char *path, int64_t n, float v)
{
    xg_scope *s = xg_scope_begin();
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    cr_assert_eq(xg_safetensors_writer_add(w, "t", xg_full(&n, 1, v)), XG_OK);
    xg_status st = xg_safetensors_writer_save(w, path);
    xg_safetensors_writer_free(w);
    xg_scope_end(s);
    return st;
}

/* The previous file is still there, byte for byte. */
static void expect_unchanged(const char *path, const uint8_t *old,
                             size_t old_len)
{
    size_t len = 0;
    uint8_t *now = read_bytes(path, &len);
    cr_expect(len == old_len && memcmp(now, old, len) == 0,
              "%s changed after a failed save", path);
    free(now);
}

Test(safetensors, failed_write_leaves_the_old_file)
{
    /* RLIMIT_FSIZE makes write() fail part-way with EFBIG, as a full disk
     * does with ENOSPC; it works for root too. */
    const char *path = in_dir("model.safetensors");
    cr_assert_eq(save_filled(path, 4, 1.0f), XG_OK, "%s", xg_last_error());
    size_t old_len = 0;
    uint8_t *old = read_bytes(path, &old_len);
    struct rlimit saved, small = {1 << 16, 1 << 16};
    getrlimit(RLIMIT_FSIZE, &saved);
    void (*handler)(int) = signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    xg_status st = save_filled(path, 1 << 16, 2.0f); /* 256 KiB */
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, handler);
    expect_status(st, XG_ERR_IO, "File too large", "file size limit");
    cr_expect(strstr(xg_last_error(), path) == xg_last_error(),
              "the message names the file: %s", xg_last_error());
    expect_unchanged(path, old, old_len);
    cr_expect_eq(temp_files_left(dir), 0, "the temporary file is left");
    free(old);
}

Test(safetensors, unwritable_targets)
{
    /* A folder where the file should be: the rename fails. */
    const char *sub = in_dir("taken");
    cr_assert_eq(mkdir(sub, 0700), 0);
    expect_status(save_filled(sub, 4, 1.0f), XG_ERR_IO, "Is a directory",
                  "target is a folder");
    struct stat sb;
    cr_expect(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));
    cr_expect_eq(temp_files_left(dir), 0, "the temporary file is left");
    expect_status(save_filled(in_dir("missing/model.safetensors"), 4, 1.0f),
                  XG_ERR_IO, "No such file or directory", "no folder");
}

Test(safetensors, read_only_folder)
{
    if (geteuid() == 0) {
        tu_rm_tree(dir); /* a skipped test's fini does not run */
        cr_skip_test("root writes to read-only folders");
    }
    const char *path = in_dir("ro/model.safetensors");
    cr_assert_eq(mkdir(in_dir("ro"), 0700), 0);
    cr_assert_eq(save_filled(path, 4, 1.0f), XG_OK);
    size_t old_len = 0;
    uint8_t *old = read_bytes(path, &old_len);
    chmod(in_dir("ro"), 0500);
    expect_status(save_filled(path, 4, 2.0f), XG_ERR_IO, "Permission denied",
                  "read-only folder");
    chmod(in_dir("ro"), 0700);
    expect_unchanged(path, old, old_len);
    cr_expect_eq(temp_files_left(in_dir("ro")), 0);
    free(old);
}

/* A module file can carry metadata of the caller's, beside "format". */
Test(safetensors, module_save_with_metadata)
{
    const char *path = in_dir("meta.safetensors");
    xg_module *m = xg_linear(3, 2, true);
    const char *meta[] = {"input", "pixels / 255", "model", "mlp", NULL};
    cr_assert_eq(xg_module_save_with(m, path, meta), XG_OK, "%s",
                 xg_last_error());
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    cr_expect_str_eq(xg_safetensors_metadata(st, "input"), "pixels / 255");
    cr_expect_str_eq(xg_safetensors_metadata(st, "model"), "mlp");
    cr_expect_str_eq(xg_safetensors_metadata(st, "format"), "pt");
    xg_safetensors_close(st);
    const char *own[] = {"format", "mine", NULL};
    cr_expect_eq(xg_module_save_with(m, path, own), XG_ERR_INVALID_ARG);
    const char *odd[] = {"input", NULL};
    cr_expect_eq(xg_module_save_with(m, path, odd), XG_ERR_INVALID_ARG);
    xg_module_free(m);
}

/* A file name near the 255-byte limit still saves: the temporary name
 * beside it keeps only as much of it as fits. */
Test(safetensors, long_file_names_save)
{
    char name[256];
    memset(name, 'm', 250);
    strcpy(name + 250, ".st"); /* 253 bytes */
    xg_module *m = xg_linear(3, 2, true);
    cr_assert_eq(xg_module_save(m, in_dir(name)), XG_OK, "%s",
                 xg_last_error());
    xg_module *back = xg_linear(3, 2, true);
    cr_assert_eq(xg_module_load(back, in_dir(name)), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(xg_module_save(m, in_dir(name)), XG_OK, "again: %s",
                 xg_last_error());
    xg_module_free(back);
    xg_module_free(m);
}

Test(safetensors, stale_temp_files_of_the_target_are_removed)
{
    char path[600], stale[600];
    snprintf(path, sizeof path, "%s", in_dir("model.safetensors"));
    snprintf(stale, sizeof stale, "%s", in_dir("model.safetensors.tmp-a1B2c3"));
    write_bytes(stale, "x", 1);
    static const char *const others[] = {
        "model.safetensors.tmp-a1B2c",   "model.safetensors.tmp-a1B2c3d",
        "model.safetensors.tmp-a1B2c!",  "model.safetensors.tmp-a1B2c3.x",
        "other.safetensors.tmp-a1B2c3",  "xmodel.safetensors.tmp-a1B2c3",
        "model.safetensorstmp-a1B2c3",   "model.safetensors.bak",
        "notes.txt",
    };
    size_t n = sizeof others / sizeof *others;
    for (size_t i = 0; i < n; i++)
        write_bytes(in_dir(others[i]), "y", 1);
    cr_assert_eq(mkdir(in_dir("model.safetensors.tmp-Dir123"), 0700), 0);
    /* a writer at work holds a lock on its temporary file */
    char live[600];
    snprintf(live, sizeof live, "%s", in_dir("model.safetensors.tmp-Live12"));
    write_bytes(live, "z", 1);
    int fd = open(live, O_RDONLY);
    cr_assert(fd >= 0 && flock(fd, LOCK_EX) == 0);
    cr_assert_eq(save_filled(path, 4, 1.0f), XG_OK, "%s", xg_last_error());
    cr_expect_eq(access(live, F_OK), 0, "a locked temporary file was removed");
    close(fd);
    cr_expect_eq(access(stale, F_OK), -1, "the stale temporary file stays");
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(access(in_dir(others[i]), F_OK), 0, "%s was removed",
                     others[i]);
    cr_expect_eq(access(in_dir("model.safetensors.tmp-Dir123"), F_OK), 0,
                 "a folder was removed");
    cr_expect_eq(rmdir(in_dir("model.safetensors.tmp-Dir123")), 0);
}

Test(safetensors, replaces_the_file_with_usual_permissions)
{
    const char *path = in_dir("model.safetensors");
    mode_t old_mask = umask(022);
    cr_assert_eq(save_filled(path, 4, 1.0f), XG_OK);
    cr_assert_eq(save_filled(path, 8, 3.0f), XG_OK);
    umask(old_mask);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0644, "mode %o", sb.st_mode & 0777);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    int64_t shape[XG_MAX_DIMS];
    cr_assert_eq(xg_safetensors_info(st, "t", NULL, shape, NULL), XG_OK);
    cr_expect_eq(shape[0], 8, "the new file replaced the old one");
    xg_safetensors_close(st);
    cr_expect_eq(temp_files_left(dir), 0);
}

/* ---- module files ---------------------------------------------------------- */

/* fc1: Linear(4, hidden), ReLU, fc2: Linear(hidden, out), from `seed`. */
static xg_module *mlp(uint64_t seed, int64_t hidden, int64_t out)
{
    xg_manual_seed(seed);
    xg_module *m = xg_sequential();
    cr_assert_not_null(m);
    cr_assert_eq(xg_sequential_add(m, "fc1", xg_linear(4, hidden, true)),
                 XG_OK);
    cr_assert_eq(xg_sequential_add(m, NULL, xg_relu_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(m, "fc2", xg_linear(hidden, out, true)),
                 XG_OK);
    return m;
}

/* All parameter values, concatenated, in a new buffer; *n gets the count. */
static float *snapshot(const xg_module *m, size_t *n)
{
    size_t total = 0;
    for (int i = 0; i < xg_module_param_count(m); i++)
        total += (size_t)xg_tensor_numel(xg_module_param(m, i, NULL));
    float *all = malloc(total * sizeof *all), *at = all;
    cr_assert_not_null(all);
    for (int i = 0; i < xg_module_param_count(m); i++) {
        const xg_tensor *p = xg_module_param(m, i, NULL);
        size_t k = (size_t)xg_tensor_numel(p);
        cr_assert_eq(xg_tensor_read(p, at, k * sizeof *at), XG_OK);
        at += k;
    }
    *n = total;
    return all;
}

static void expect_same_params(const xg_module *a, const xg_module *b,
                               const char *what)
{
    size_t na = 0, nb = 0;
    float *pa = snapshot(a, &na), *pb = snapshot(b, &nb);
    cr_expect(na == nb && memcmp(pa, pb, na * sizeof *pa) == 0,
              "%s: parameters differ", what);
    free(pa);
    free(pb);
}

Test(module_file, round_trip)
{
    const char *path = in_dir("mlp.safetensors");
    xg_module *a = mlp(1, 8, 3), *b = mlp(2, 8, 3);
    cr_assert_eq(xg_module_save(a, path), XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_module_load(b, path), XG_OK, "%s", xg_last_error());
    expect_same_params(a, b, "after load");
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    const char *names[] = {"fc1.weight", "fc1.bias", "fc2.weight",
                           "fc2.bias"};
    cr_assert_eq(xg_safetensors_count(st), 4);
    for (int i = 0; i < 4; i++)
        cr_expect_str_eq(xg_safetensors_name(st, i), names[i]);
    int64_t shape[XG_MAX_DIMS];
    int ndim = 0;
    xg_safetensors_info(st, "fc1.weight", NULL, shape, &ndim);
    cr_expect(ndim == 2 && shape[0] == 8 && shape[1] == 4,
              "Linear weight is [out, in]");
    cr_expect_str_eq(xg_safetensors_metadata(st, "format"), "pt");
    xg_safetensors_close(st);
    xg_module_free(a);
    xg_module_free(b);
}

/* Loading `path` into m fails with `want` and leaves m as it was. */
static void expect_load_fails(xg_module *m, const char *path, xg_status want,
                              const char *needle, const char *what)
{
    size_t n0 = 0, n1 = 0;
    float *before = snapshot(m, &n0);
    expect_status(xg_module_load(m, path), want, needle, what);
    float *after = snapshot(m, &n1);
    cr_expect(memcmp(before, after, n0 * sizeof *before) == 0,
              "%s: the module changed", what);
    free(before);
    free(after);
}

Test(module_file, mismatches_change_nothing)
{
    const char *path = in_dir("mlp.safetensors");
    xg_module *saved = mlp(1, 8, 3);
    cr_assert_eq(xg_module_save(saved, path), XG_OK);
    xg_module *wider = mlp(2, 8, 4);
    expect_load_fails(wider, path, XG_ERR_SHAPE, "tensor 'fc2.weight' has "
                      "shape [3,8]; the model expects [4,8]", "shape");
    xg_module *deeper = mlp(2, 8, 3);
    cr_assert_eq(xg_sequential_add(deeper, "fc3", xg_linear(3, 2, true)),
                 XG_OK);
    expect_load_fails(deeper, path, XG_ERR_NOT_FOUND, "tensor 'fc3.weight' "
                      "is missing", "missing tensor");
    xg_module *shallow = xg_sequential();
    xg_manual_seed(3);
    cr_assert_eq(xg_sequential_add(shallow, "fc1", xg_linear(4, 8, true)),
                 XG_OK);
    expect_load_fails(shallow, path, XG_ERR_FORMAT, "unexpected tensor "
                      "'fc2.weight'", "extra tensor");
    const char *i32 = in_dir("i32.safetensors");
    write_st(i32, "{\"weight\":{\"dtype\":\"I32\",\"shape\":[1,1],"
             "\"data_offsets\":[0,4]}}", "\0\0\0\0", 4);
    xg_module *tiny = xg_linear(1, 1, false);
    expect_load_fails(tiny, i32, XG_ERR_DTYPE, "tensor 'weight' is I32; the "
                      "model expects F32", "dtype");
    expect_load_fails(tiny, in_dir("absent"), XG_ERR_NOT_FOUND, "absent",
                      "no file");
    xg_module_free(saved);
    xg_module_free(wider);
    xg_module_free(deeper);
    xg_module_free(shallow);
    xg_module_free(tiny);
}

/* ---- checkpoints ------------------------------------------------------------ */

enum { BATCH = 6 };

/* One optimizer step on a batch that depends on `step` only. */
static void train_step(xg_module *m, xg_optim *opt, int step)
{
    float x[BATCH * 4];
    int32_t y[BATCH];
    tu_fill(x, BATCH * 4, 7000 + (uint64_t)step, -1, 1);
    for (int i = 0; i < BATCH; i++)
        y[i] = (i + step) % 3;
    xg_scope *s = xg_scope_begin();
    xg_optim_zero_grad(opt);
    xg_tensor *loss = xg_cross_entropy(
        xg_module_forward(m, tu_f32(x, XG_SHAPE(BATCH, 4))),
        tu_i32(y, XG_SHAPE(BATCH)));
    cr_assert_eq(xg_backward(loss), XG_OK, "backward: %s", xg_last_error());
    cr_assert_eq(xg_optim_step(opt), XG_OK, "step: %s", xg_last_error());
    xg_scope_end(s);
}

static xg_optim *make_optim(xg_module *m, const char *kind, float lr)
{
    xg_tensor *p[8];
    int n = xg_module_param_count(m);
    cr_assert(n <= 8);
    for (int i = 0; i < n; i++)
        p[i] = xg_module_param(m, i, NULL);
    xg_optim *o = NULL;
    if (strcmp(kind, "sgd") == 0) {
        xg_sgd_options so = {.lr = lr, .momentum = 0.9f,
                             .weight_decay = 1e-3f};
        o = xg_optim_sgd(p, n, &so);
    } else {
        bool w = strcmp(kind, "adamw") == 0;
        xg_adam_options ao = w ? xg_adamw_defaults() : xg_adam_defaults();
        ao.lr = lr;
        o = w ? xg_optim_adamw(p, n, &ao) : xg_optim_adam(p, n, &ao);
    }
    cr_assert_not_null(o, "%s: %s", kind, xg_last_error());
    return o;
}

static const char *const hparams[] = {"batch_size", "6", "model", "mlp",
                                      NULL};

/* Train 3 steps, save, train 2 more; a different model and optimizer
 * (which has state of its own) loaded from the checkpoint and trained the
 * same 2 steps ends with bit-identical parameters. */
static void resume_is_exact(const char *kind, bool freeze_fc1)
{
    const char *path = in_dir("ckpt.safetensors");
    xg_module *a = mlp(1, 8, 3);
    for (int i = 0; freeze_fc1 && i < 2; i++)
        xg_tensor_set_requires_grad(xg_module_param(a, i, NULL), false);
    xg_optim *oa = make_optim(a, kind, 0.05f);
    for (int k = 0; k < 3; k++)
        train_step(a, oa, k);
    xg_train_state saved = {.epoch = 1, .step = 3, .rng_seed = 42,
                            .rng_offset = UINT64_C(18446744073709551615)};
    cr_assert_eq(xg_checkpoint_save(path, a, oa, &saved, hparams), XG_OK,
                 "%s", xg_last_error());
    for (int k = 3; k < 5; k++)
        train_step(a, oa, k);

    xg_module *b = mlp(2, 8, 3);
    for (int i = 0; freeze_fc1 && i < 2; i++)
        xg_tensor_set_requires_grad(xg_module_param(b, i, NULL), false);
    xg_optim *ob = make_optim(b, kind, 0.5f);
    train_step(b, ob, 99); /* state that the load must replace */
    xg_train_state got = {0};
    cr_assert_eq(xg_checkpoint_load(path, b, ob, &got), XG_OK, "%s",
                 xg_last_error());
    cr_expect(memcmp(&got, &saved, sizeof got) == 0, "train state differs");
    cr_expect_eq(xg_optim_lr(ob), 0.05f);
    cr_expect_eq(xg_optim_steps(ob), 3);
    for (int k = 3; k < 5; k++)
        train_step(b, ob, k);
    expect_same_params(a, b, kind);
    xg_optim_free(oa);
    xg_optim_free(ob);
    xg_module_free(a);
    xg_module_free(b);
}

Test(checkpoint, resume_is_exact_adam) { resume_is_exact("adam", false); }
Test(checkpoint, resume_is_exact_adamw) { resume_is_exact("adamw", false); }
Test(checkpoint, resume_is_exact_sgd_momentum) { resume_is_exact("sgd", false); }
Test(checkpoint, resume_is_exact_frozen_fc1) { resume_is_exact("adam", true); }

Test(checkpoint, contents)
{
    const char *path = in_dir("ckpt.safetensors");
    xg_module *m = mlp(1, 8, 3);
    for (int i = 0; i < 2; i++) /* fc1 frozen: no optimizer state */
        xg_tensor_set_requires_grad(xg_module_param(m, i, NULL), false);
    xg_optim *o = make_optim(m, "adamw", 0.1f);
    train_step(m, o, 0);
    train_step(m, o, 1);
    xg_train_state state = {.epoch = 7, .step = 2, .rng_seed = 5,
                            .rng_offset = 1234};
    cr_assert_eq(xg_checkpoint_save(path, m, o, &state, hparams), XG_OK,
                 "%s", xg_last_error());
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    const char *want[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                          "optim.fc2.weight.step", "optim.fc2.weight.exp_avg",
                          "optim.fc2.weight.exp_avg_sq", "optim.fc2.bias.step",
                          "optim.fc2.bias.exp_avg", "optim.fc2.bias.exp_avg_sq"};
    cr_assert_eq(xg_safetensors_count(st), 10);
    for (int i = 0; i < 10; i++)
        cr_expect_str_eq(xg_safetensors_name(st, i), want[i]);
    const char *dtype = NULL;
    int ndim = -1;
    xg_safetensors_info(st, "optim.fc2.bias.step", &dtype, NULL, &ndim);
    cr_expect(strcmp(dtype, "I64") == 0 && ndim == 0);
    const char *meta[][2] = {
        {"format", "xgrad-checkpoint-1"}, {"optimizer", "adamw"},
        {"lr", "0.100000001"}, {"optimizer_steps", "2"}, {"epoch", "7"},
        {"step", "2"}, {"rng_seed", "5"}, {"rng_offset", "1234"},
        {"batch_size", "6"}, {"model", "mlp"}};
    for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) {
        const char *v = xg_safetensors_metadata(st, meta[i][0]);
        cr_expect(v && strcmp(v, meta[i][1]) == 0, "metadata %s: %s",
                  meta[i][0], v ? v : "missing");
    }
    xg_safetensors_close(st);
    xg_optim_free(o);
    xg_module_free(m);
}

/* Loading fails with `want` and changes neither module nor optimizer. */
static void expect_ckpt_fails(const char *path, xg_module *m, xg_optim *o,
                              xg_status want, const char *needle,
                              const char *what)
{
    size_t n0 = 0, n1 = 0;
    float *before = snapshot(m, &n0);
    float lr = xg_optim_lr(o);
    int64_t steps = xg_optim_steps(o);
    xg_train_state state = {.epoch = -5};
    expect_status(xg_checkpoint_load(path, m, o, &state), want, needle, what);
    float *after = snapshot(m, &n1);
    cr_expect(memcmp(before, after, n0 * sizeof *before) == 0,
              "%s: the module changed", what);
    cr_expect(xg_optim_lr(o) == lr && xg_optim_steps(o) == steps,
              "%s: the optimizer changed", what);
    cr_expect_eq(state.epoch, -5, "%s: *state changed", what);
    free(before);
    free(after);
}

Test(checkpoint, mismatches_change_nothing)
{
    const char *path = in_dir("ckpt.safetensors");
    xg_module *m = mlp(1, 8, 3);
    xg_optim *o = make_optim(m, "adam", 0.1f);
    train_step(m, o, 0);
    cr_assert_eq(xg_checkpoint_save(path, m, o, NULL, NULL), XG_OK);

    xg_module *m2 = mlp(2, 8, 3);
    xg_optim *sgd = make_optim(m2, "sgd", 0.1f);
    expect_ckpt_fails(path, m2, sgd, XG_ERR_INVALID_ARG, "the checkpoint "
                      "holds 'adam' optimizer state; the optimizer is 'sgd'",
                      "kind");
    xg_module *m3 = mlp(2, 5, 3);
    xg_optim *o3 = make_optim(m3, "adam", 0.2f);
    train_step(m3, o3, 0);
    expect_ckpt_fails(path, m3, o3, XG_ERR_SHAPE, "tensor 'fc1.weight' has "
                      "shape [8,4]; the model expects [5,4]", "shape");
    const char *plain = in_dir("plain.safetensors");
    cr_assert_eq(xg_module_save(m, plain), XG_OK);
    xg_optim *o2 = make_optim(m2, "adam", 0.3f);
    expect_ckpt_fails(plain, m2, o2, XG_ERR_FORMAT, "not an xgrad "
                      "checkpoint (metadata 'format' is pt", "module file");
    xg_module *m4 = mlp(2, 8, 3);
    cr_assert_eq(xg_sequential_add(m4, "fc3", xg_linear(3, 3, true)), XG_OK);
    xg_optim *o4 = make_optim(m4, "adam", 0.3f);
    cr_assert_eq(xg_checkpoint_save(path, m4, o4, NULL, NULL), XG_OK);
    expect_ckpt_fails(path, m2, o2, XG_ERR_FORMAT, "unexpected tensor "
                      "'fc3.weight'", "extra tensor");
    xg_optim_free(o);
    xg_optim_free(sgd);
    xg_optim_free(o2);
    xg_optim_free(o3);
    xg_optim_free(o4);
    xg_module_free(m);
    xg_module_free(m2);
    xg_module_free(m3);
    xg_module_free(m4);
}

/* A checkpoint records the optimizer's options beside its rate, and loads
 * only into an optimizer with the same ones. */
Test(checkpoint, optimizer_options_must_match)
{
    const char *path = in_dir("options.safetensors");
    xg_module *m = mlp(1, 8, 3);
    xg_optim *o = make_optim(m, "adam", 0.1f);
    train_step(m, o, 0);
    cr_assert_eq(xg_checkpoint_save(path, m, o, NULL, NULL), XG_OK);
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK);
    cr_expect_str_eq(xg_safetensors_metadata(st, "optimizer_options"),
                     "beta1=0.899999976 beta2=0.999000013 eps=9.99999994e-09 "
                     "weight_decay=0", "Adam's defaults, as floats");
    xg_safetensors_close(st);

    xg_module *m2 = mlp(2, 8, 3);
    xg_tensor *p[8];
    int n = xg_module_param_count(m2);
    for (int i = 0; i < n; i++)
        p[i] = xg_module_param(m2, i, NULL);
    xg_adam_options a = xg_adam_defaults();
    a.beta1 = 0.8f;
    xg_optim *other = xg_optim_adam(p, n, &a);
    expect_ckpt_fails(path, m2, other, XG_ERR_INVALID_ARG,
                      "written by adam with beta1=0.899999976", "beta1");
    xg_optim_free(other);
    xg_sgd_options so = {.lr = 0.1f, .momentum = 0.5f, .weight_decay = 1e-3f};
    xg_module *m3 = mlp(3, 8, 3);
    xg_optim *sgd = make_optim(m3, "sgd", 0.1f); /* momentum 0.9 */
    train_step(m3, sgd, 0);
    cr_assert_eq(xg_checkpoint_save(path, m3, sgd, NULL, NULL), XG_OK);
    for (int i = 0; i < n; i++)
        p[i] = xg_module_param(m2, i, NULL);
    xg_optim *slow = xg_optim_sgd(p, n, &so);
    expect_ckpt_fails(path, m2, slow, XG_ERR_INVALID_ARG, "momentum=0.5",
                      "momentum");
    xg_optim_free(slow);
    xg_optim_free(sgd);
    xg_optim_free(o);
    xg_module_free(m);
    xg_module_free(m2);
    xg_module_free(m3);
}

/* Checkpoints edited by hand, for a Linear(1, 1, no bias) with Adam. */
typedef struct edited {
    const char *what;
    const char *meta;    /* the __metadata__ pairs */
    const char *entries; /* after "weight" (F32 [1,1] at [0,4]) */
    size_t data_len;     /* a prefix of edited_data */
    const char *needle;
    xg_status want; /* XG_ERR_FORMAT when not given */
} edited;

#define META_HEAD "\"format\":\"xgrad-checkpoint-1\",\"optimizer\":\"adam\","
#define META_TAIL "\"epoch\":\"0\",\"step\":\"1\",\"rng_seed\":\"0\"," \
                  "\"rng_offset\":\"0\""
#define META_OK META_HEAD "\"lr\":\"0.1\",\"optimizer_steps\":\"1\"," META_TAIL
#define ENTRY(name, dtype, shape, offsets)                                   \
    ",\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape               \
    ",\"data_offsets\":" offsets "}"

/* weight 1.0, then an I64 1, then F32 0.5 and 0.25 */
static const uint8_t edited_data[] = {
    0, 0, 0x80, 0x3f, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x3f, 0, 0, 0x80, 0x3e};

static const edited edited_files[] = {
    {"exp_avg without exp_avg_sq", META_OK,
     ENTRY("optim.weight.step", "I64", "[]", "[4,12]")
     ENTRY("optim.weight.exp_avg", "F32", "[1,1]", "[12,16]"), 16,
     "parameter 'weight' has exp_avg but not exp_avg_sq"},
    {"state without a step", META_OK,
     ENTRY("optim.weight.exp_avg", "F32", "[1,1]", "[4,8]")
     ENTRY("optim.weight.exp_avg_sq", "F32", "[1,1]", "[8,12]"), 12,
     "parameter 'weight' has optimizer state but no step count"},
    {"step of shape [1]", META_OK,
     ENTRY("optim.weight.step", "I64", "[1]", "[4,12]"), 12,
     "tensor 'optim.weight.step' must be an I64 scalar in [0, "
     "9007199254740992]"},
    {"step as F32", META_OK,
     ENTRY("optim.weight.step", "F32", "[]", "[4,8]"), 8,
     "tensor 'optim.weight.step' must be an I64 scalar"},
    {"exp_avg of the wrong shape", META_OK,
     ENTRY("optim.weight.step", "I64", "[]", "[4,12]")
     ENTRY("optim.weight.exp_avg", "F32", "[1]", "[12,16]")
     ENTRY("optim.weight.exp_avg_sq", "F32", "[1,1]", "[16,20]"), 20,
     "tensor 'optim.weight.exp_avg' has shape [1]; the model expects [1,1]",
     XG_ERR_SHAPE},
    {"state of an unknown parameter", META_OK,
     ENTRY("optim.ghost.step", "I64", "[]", "[4,12]"), 12,
     "unexpected tensor 'optim.ghost.step'"},
    {"negative lr", META_HEAD "\"lr\":\"-1\",\"optimizer_steps\":\"1\","
     META_TAIL, "", 4, "metadata 'lr' is \"-1\", not a finite number >= 0"},
    {"lr not a number", META_HEAD "\"lr\":\"fast\",\"optimizer_steps\":\"1\","
     META_TAIL, "", 4, "metadata 'lr' is \"fast\""},
    {"steps not an integer", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"1x\"," META_TAIL, "", 4,
     "metadata 'optimizer_steps' is \"1x\", not an integer in [0, "
     "9007199254740992]"},
    {"negative steps", META_HEAD "\"lr\":\"0.1\",\"optimizer_steps\":\"-1\","
     META_TAIL, "", 4, "metadata 'optimizer_steps' is \"-1\""},
    {"steps past int64", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"9223372036854775808\"," META_TAIL, "", 4,
     "not an integer in [0, 9007199254740992]"},
    {"steps at int64's maximum", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"9223372036854775807\"," META_TAIL, "", 4,
     "metadata 'optimizer_steps' is \"9223372036854775807\", not an integer "
     "in [0, 9007199254740992]"},
    {"steps just past 2^53", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"9007199254740993\"," META_TAIL, "", 4,
     "metadata 'optimizer_steps' is \"9007199254740993\""},
    {"training step at int64's maximum", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"1\",\"epoch\":\"0\","
     "\"step\":\"9223372036854775807\",\"rng_seed\":\"0\","
     "\"rng_offset\":\"0\"", "", 4, "metadata 'step' is "
     "\"9223372036854775807\", not an integer in [0, 9007199254740992]"},
    {"epoch at int64's maximum", META_HEAD "\"lr\":\"0.1\","
     "\"optimizer_steps\":\"1\",\"epoch\":\"9223372036854775807\","
     "\"step\":\"1\",\"rng_seed\":\"0\",\"rng_offset\":\"0\"", "", 4,
     "metadata 'epoch' is \"9223372036854775807\""},
    {"no optimizer_steps", META_HEAD "\"lr\":\"0.1\"," META_TAIL, "", 4,
     "the checkpoint's metadata has no 'optimizer_steps'"},
    {"no optimizer", "\"format\":\"xgrad-checkpoint-1\"", "", 4,
     "the checkpoint's metadata has no 'optimizer'"},
};

Test(checkpoint, edited_files_change_nothing)
{
    const char *path = in_dir("edited.safetensors");
    xg_module *m = xg_linear(1, 1, false);
    xg_optim *o = make_optim(m, "adam", 0.2f);
    for (size_t i = 0; i < sizeof edited_files / sizeof *edited_files; i++) {
        const edited *e = &edited_files[i];
        char header[1024];
        snprintf(header, sizeof header, "{\"__metadata__\":{%s},"
                 "\"weight\":{\"dtype\":\"F32\",\"shape\":[1,1],"
                 "\"data_offsets\":[0,4]}%s}", e->meta, e->entries);
        write_st(path, header, edited_data, e->data_len);
        expect_ckpt_fails(path, m, o, e->want ? e->want : XG_ERR_FORMAT,
                          e->needle, e->what);
    }
    xg_optim_free(o);
    xg_module_free(m);
}

/* A checkpoint of a Linear(1, 1, no bias) with weight 1 and Adam state:
 * the given step count and moments. */
static void write_adam_state(const char *path, int64_t step, float avg,
                             float sq)
{
    uint8_t data[20];
    const float w = 1.0f;
    memcpy(data, &w, 4); /* the tests run on little-endian hosts */
    memcpy(data + 4, &step, 8);
    memcpy(data + 12, &avg, 4);
    memcpy(data + 16, &sq, 4);
    write_st(path, "{\"__metadata__\":{" META_OK "},\"weight\":{\"dtype\":"
             "\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]}"
             ENTRY("optim.weight.step", "I64", "[]", "[4,12]")
             ENTRY("optim.weight.exp_avg", "F32", "[1,1]", "[12,16]")
             ENTRY("optim.weight.exp_avg_sq", "F32", "[1,1]", "[16,20]") "}",
             data, sizeof data);
}

Test(checkpoint, bad_values_change_nothing)
{
    const char *path = in_dir("values.safetensors");
    xg_module *m = xg_linear(1, 1, false);
    xg_optim *o = make_optim(m, "adam", 0.2f);
    write_adam_state(path, (int64_t)1 << 53, -0.5f, 0.0f);
    xg_module *ok = xg_linear(1, 1, false);
    xg_optim *ok_opt = make_optim(ok, "adam", 0.2f);
    cr_expect_eq(xg_checkpoint_load(path, ok, ok_opt, NULL), XG_OK,
                 "the largest step and a zero exp_avg_sq load: %s",
                 xg_last_error());
    const struct {
        int64_t step;
        float avg, sq;
        const char *needle;
    } c[] = {
        {INT64_MAX, 0.5f, 0.25f, "tensor 'optim.weight.step' must be an I64 "
         "scalar in [0, 9007199254740992]"},
        {((int64_t)1 << 53) + 1, 0.5f, 0.25f, "'optim.weight.step' must be"},
        {1, 0.5f, -0.25f, "tensor 'optim.weight.exp_avg_sq' holds -0.25 at "
         "index 0; it must be finite and >= 0"},
        {1, 0.5f, NAN, "'optim.weight.exp_avg_sq' holds nan"},
        {1, 0.5f, INFINITY, "'optim.weight.exp_avg_sq' holds inf"},
        {1, NAN, 0.25f, "tensor 'optim.weight.exp_avg' holds nan at index 0; "
         "it must be finite"},
        {1, -INFINITY, 0.25f, "'optim.weight.exp_avg' holds -inf"},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        write_adam_state(path, c[i].step, c[i].avg, c[i].sq);
        char what[64];
        snprintf(what, sizeof what, "case %zu", i);
        expect_ckpt_fails(path, m, o, XG_ERR_FORMAT, c[i].needle, what);
        cr_expect(strstr(xg_last_error(), path) != NULL,
                  "%s: the message names the file: \"%s\"", what,
                  xg_last_error());
    }
    xg_optim_free(o);
    xg_optim_free(ok_opt);
    xg_module_free(m);
    xg_module_free(ok);
}

Test(checkpoint, momentum_buffer_must_be_finite)
{
    const char *path = in_dir("sgd.safetensors");
    xg_module *m = xg_linear(1, 1, false);
    xg_optim *o = make_optim(m, "sgd", 0.2f);
    uint8_t data[16];
    const float w = 1.0f, buf = NAN;
    const int64_t step = 1;
    memcpy(data, &w, 4);
    memcpy(data + 4, &step, 8);
    memcpy(data + 12, &buf, 4);
    write_st(path, "{\"__metadata__\":{\"format\":\"xgrad-checkpoint-1\","
             "\"optimizer\":\"sgd\",\"lr\":\"0.1\",\"optimizer_steps\":\"1\","
             META_TAIL "},\"weight\":{\"dtype\":\"F32\",\"shape\":[1,1],"
             "\"data_offsets\":[0,4]}"
             ENTRY("optim.weight.step", "I64", "[]", "[4,12]")
             ENTRY("optim.weight.momentum_buffer", "F32", "[1,1]", "[12,16]")
             "}", data, sizeof data);
    expect_ckpt_fails(path, m, o, XG_ERR_FORMAT, "tensor "
                      "'optim.weight.momentum_buffer' holds nan", "NaN "
                      "momentum");
    xg_optim_free(o);
    xg_module_free(m);
}

/* Linear(1, 1, no bias) under `depth` Sequentials named `name`. */
static xg_module *nested_linear(const char *name, int depth)
{
    xg_module *m = xg_linear(1, 1, false);
    for (int i = 0; i < depth; i++) {
        xg_module *seq = xg_sequential();
        cr_assert_eq(xg_sequential_add(seq, name, m), XG_OK, "%s",
                     xg_last_error());
        m = seq;
    }
    return m;
}

Test(checkpoint, long_parameter_names)
{
    const char *path = in_dir("long.safetensors");
    char name[61];
    for (int depth = 4; depth <= 5; depth++) {
        /* depth 4: 4 * 61 + "weight" = 250 characters; depth 5: 311 */
        memset(name, 'a' + depth, 60);
        name[60] = '\0';
        xg_module *m = nested_linear(name, depth);
        xg_optim *o = make_optim(m, "adam", 0.1f);
        xg_scope *s = xg_scope_begin();
        xg_tensor *y = xg_module_forward(m, tu_f32((const float[]){1},
                                                   XG_SHAPE(1, 1)));
        cr_assert_eq(xg_backward(xg_sum_all(y)), XG_OK, "%s",
                     xg_last_error());
        cr_assert_eq(xg_optim_step(o), XG_OK);
        xg_scope_end(s);
        xg_status st = xg_checkpoint_save(path, m, o, NULL, NULL);
        if (depth == 4) {
            cr_expect_eq(st, XG_OK, "250 characters: %s", xg_last_error());
            xg_module *m2 = nested_linear(name, depth);
            xg_optim *o2 = make_optim(m2, "adam", 0.1f);
            cr_expect_eq(xg_checkpoint_load(path, m2, o2, NULL), XG_OK, "%s",
                         xg_last_error());
            cr_expect_eq(xg_optim_steps(o2), 1);
            xg_optim_free(o2);
            xg_module_free(m2);
        } else {
            expect_status(st, XG_ERR_INVALID_ARG, "is 311 characters long; "
                          "checkpoints support names of up to 255",
                          "311 characters");
        }
        xg_optim_free(o);
        xg_module_free(m);
    }
}

Test(checkpoint, bad_save_arguments)
{
    const char *path = in_dir("ckpt.safetensors");
    xg_module *m = mlp(1, 8, 3);
    xg_optim *o = make_optim(m, "adam", 0.1f);
    const char *reserved[] = {"lr", "1", NULL};
    expect_status(xg_checkpoint_save(path, m, o, NULL, reserved),
                  XG_ERR_INVALID_ARG, "'lr' is a name the checkpoint itself "
                  "uses", "reserved key");
    const char *odd[] = {"batch_size", NULL};
    expect_status(xg_checkpoint_save(path, m, o, NULL, odd),
                  XG_ERR_INVALID_ARG, "'batch_size' has no value", "no value");
    xg_module *other = mlp(2, 8, 3);
    xg_optim *stranger = make_optim(other, "adam", 0.1f);
    expect_status(xg_checkpoint_save(path, m, stranger, NULL, NULL),
                  XG_ERR_INVALID_ARG, "parameter 0 is not a parameter of the "
                  "module", "optimizer of another module");
    cr_expect_eq(access(path, F_OK), -1, "nothing may be written");
    xg_optim_free(o);
    xg_optim_free(stranger);
    xg_module_free(m);
    xg_module_free(other);
}
