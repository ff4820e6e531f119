/* Model files in the safetensors format of PyTorch and Hugging Face: a
 * reader that checks everything before trusting it, and an atomic writer.
 *
 * Layout (reference: github.com/huggingface/safetensors, "Format"):
 *   8 bytes  N, the length of the header, unsigned little-endian
 *   N bytes  a JSON object, padded with spaces:
 *              {"__metadata__": {"key": "value", ...},
 *               "fc1.weight": {"dtype": "F32", "shape": [256, 784],
 *                              "data_offsets": [0, 802816]}, ...}
 *   the rest the data section: row-major little-endian values. Offsets
 *            count from its start; the tensors cover it exactly, with no
 *            hole, no overlap and nothing after the last one.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "safetensors_impl.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is copied as it is"
#endif

/* The reference reader's limit on the header (HeaderTooLarge). */
#define MAX_HEADER_BYTES UINT64_C(100000000)

typedef unsigned long long ull; /* for printing sizes with %llu */

typedef struct dtype_info {
    const char *name;
    int bits;
} dtype_info;

/* The dtypes of the reference implementation; sub-byte ones are packed. */
static const dtype_info dtypes[] = {
    {"BOOL", 8},    {"U8", 8},      {"I8", 8},      {"F8_E5M2", 8},
    {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},    {"U16", 16},
    {"F16", 16},    {"BF16", 16},   {"I32", 32},    {"U32", 32},
    {"F32", 32},    {"I64", 64},    {"U64", 64},    {"F64", 64},
    {"C64", 64},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},
};

static const dtype_info *dtype_find(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return &dtypes[i];
    return NULL;
}

typedef struct name_index {
    const char *name;
    int index;
} name_index;

struct xg_safetensors {
    char *label;           /* the path, for messages */
    json_t *header;        /* owns the names and the metadata strings */
    json_t *metadata;      /* borrowed from header; NULL if none */
    xg__st_entry *entries; /* in data order */
    name_index *by_name;   /* sorted by name */
    int count;
    uint8_t *data;         /* the data section */
    size_t data_len;
};

/* ==== Reading: the header ================================================ */

/* Checks one "shape" array; sets e->ndim, e->shape and *bytes, the size of
 * shape x dtype. */
static xg_status parse_shape(const char *label, const char *name,
                             const json_t *shape, const dtype_info *dt,
                             xg__st_entry *e, uint64_t *bytes)
{
    if (!json_is_array(shape))
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': shape is not "
                            "an array", label, name);
    size_t nd = json_array_size(shape);
    if (nd > XG_MAX_DIMS)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: tensor '%s': %zu "
                            "dimensions; xgrad handles at most %d", label,
                            name, nd, XG_MAX_DIMS);
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': shape[%zu] "
                                "is not a non-negative integer", label, name,
                                i);
        e->shape[i] = (int64_t)json_integer_value(d);
    }
    e->ndim = (int)nd;
    uint64_t bits = (uint64_t)dt->bits;
    for (int i = 0; i < e->ndim; i++) {
        uint64_t size = (uint64_t)e->shape[i];
        if (size != 0 && bits > UINT64_MAX / size) {
            char s[160];
            xg__shape_str(e->shape, e->ndim, s, sizeof s);
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': shape %s "
                                "overflows 64 bits", label, name, s);
        }
        bits *= size;
    }
    if (bits % 8 != 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': %llu bits of "
                            "%s are not a whole number of bytes", label, name,
                            (ull)bits, dt->name);
    *bytes = bits / 8;
    return XG_OK;
}

/* Checks a "data_offsets" pair against the tensor's byte size and the data
 * section; sets e->offset and e->bytes. */
static xg_status parse_offsets(const char *label, const char *name,
                               const json_t *pair, const dtype_info *dt,
                               uint64_t bytes, uint64_t data_len,
                               xg__st_entry *e)
{
    const json_t *b = json_array_get(pair, 0), *x = json_array_get(pair, 1);
    if (json_array_size(pair) != 2 || !json_is_integer(b) ||
        !json_is_integer(x) || json_integer_value(b) < 0 ||
        json_integer_value(x) < 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': data_offsets "
                            "is not a pair of non-negative integers", label,
                            name);
    uint64_t begin = (uint64_t)json_integer_value(b);
    uint64_t end = (uint64_t)json_integer_value(x);
    if (begin > end)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': data_offsets "
                            "[%llu, %llu) are reversed", label, name,
                            (ull)begin, (ull)end);
    if (end > data_len)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': data_offsets "
                            "[%llu, %llu) run past the end of the data "
                            "section (%llu bytes; is the file truncated?)",
                            label, name, (ull)begin, (ull)end,
                            (ull)data_len);
    if (end - begin != bytes) {
        char s[160];
        xg__shape_str(e->shape, e->ndim, s, sizeof s);
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': data_offsets "
                            "[%llu, %llu) do not match shape %s x %s = %llu "
                            "bytes", label, name, (ull)begin, (ull)end, s,
                            dt->name, (ull)bytes);
    }
    e->offset = (size_t)begin;
    e->bytes = (size_t)bytes;
    return XG_OK;
}

/* Checks one tensor entry of the header and fills e (but e->data). */
static xg_status parse_entry(const char *label, const char *name,
                             const json_t *v, uint64_t data_len,
                             xg__st_entry *e)
{
    if (!json_is_object(v))
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': the entry is "
                            "not an object", label, name);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0)
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': unknown key "
                                "'%s'", label, name, key);
    const json_t *dtype = json_object_get(v, "dtype");
    const json_t *shape = json_object_get(v, "shape");
    const json_t *offsets = json_object_get(v, "data_offsets");
    if (!dtype || !shape || !offsets)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': no '%s'", label,
                            name, !dtype ? "dtype" : !shape ? "shape"
                                                           : "data_offsets");
    const dtype_info *dt = json_is_string(dtype)
                               ? dtype_find(json_string_value(dtype)) : NULL;
    if (!dt)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': unknown dtype "
                            "'%s'", label, name, json_is_string(dtype)
                            ? json_string_value(dtype) : "(not a string)");
    e->name = name;
    e->dtype = dt->name;
    uint64_t bytes = 0;
    xg_status st = parse_shape(label, name, shape, dt, e, &bytes);
    return st != XG_OK ? st : parse_offsets(label, name, offsets, dt, bytes,
                                            data_len, e);
}

static xg_status check_metadata(const char *label, const json_t *md)
{
    if (!json_is_object(md))
        return xg_set_error(XG_ERR_FORMAT, "%s: __metadata__ is not an "
                            "object", label);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)md, key, val)
        if (!json_is_string(val))
            return xg_set_error(XG_ERR_FORMAT, "%s: __metadata__ '%s' is not "
                                "a string", label, key);
    return XG_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const xg__st_entry *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? -1 : 1;
    return strcmp(x->name, y->name); /* names are unique */
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const name_index *)a)->name,
                  ((const name_index *)b)->name);
}

/* The tensors, in data order, must cover the data section exactly. */
static xg_status check_layout(const xg_safetensors *st)
{
    uint64_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < st->count; i++) {
        const xg__st_entry *e = &st->entries[i];
        if (e->offset > at)
            return xg_set_error(XG_ERR_FORMAT, "%s: bytes [%llu, %llu) of "
                                "the data section belong to no tensor (a "
                                "hole before tensor '%s')", st->label,
                                (ull)at, (ull)e->offset, e->name);
        if (e->offset < at)
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s': data_offsets "
                                "[%llu, %llu) overlap tensor '%s'", st->label,
                                e->name, (ull)e->offset,
                                (ull)(e->offset + e->bytes), prev);
        at = e->offset + e->bytes;
        prev = e->name;
    }
    if (at != st->data_len)
        return xg_set_error(XG_ERR_FORMAT, "%s: %llu bytes after the last "
                            "tensor (the tensors cover %llu of the %llu bytes "
                            "of data)", st->label, (ull)(st->data_len - at),
                            (ull)at, (ull)st->data_len);
    return XG_OK;
}

/* Parses the entries of st->header, sorts them and indexes their names. */
static xg_status parse_entries(xg_safetensors *st)
{
    size_t n = json_object_size(st->header) - (st->metadata ? 1 : 0);
    st->entries = calloc(n ? n : 1, sizeof *st->entries);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    if (!st->entries || !st->by_name)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory "
                            "for %zu tensors", st->label, n);
    const char *key;
    const json_t *val;
    json_object_foreach(st->header, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        xg_status s = parse_entry(st->label, key, val, st->data_len,
                                  &st->entries[st->count]);
        if (s != XG_OK)
            return s;
        st->count++;
    }
    qsort(st->entries, (size_t)st->count, sizeof *st->entries, cmp_offset);
    for (int i = 0; i < st->count; i++)
        st->by_name[i] = (name_index){st->entries[i].name, i};
    qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_name);
    return check_layout(st);
}

/* Parses and checks the `len`-byte JSON header; the data section that
 * follows it is `data_len` bytes. */
static xg_status parse_header(xg_safetensors *st, const char *text,
                              size_t len, uint64_t data_len)
{
    if (len == 0 || text[0] != '{')
        return xg_set_error(XG_ERR_FORMAT, "%s: the header does not start "
                            "with '{'", st->label);
    json_error_t err;
    st->header = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!st->header)
        return xg_set_error(XG_ERR_FORMAT, "%s: the header is not valid "
                            "JSON: %s (at byte %d)", st->label, err.text,
                            err.position);
    if (!json_is_object(st->header))
        return xg_set_error(XG_ERR_FORMAT, "%s: the header is not a JSON "
                            "object", st->label);
    st->data_len = (size_t)data_len;
    st->metadata = json_object_get(st->header, "__metadata__");
    xg_status s = st->metadata ? check_metadata(st->label, st->metadata)
                               : XG_OK;
    return s != XG_OK ? s : parse_entries(st);
}

/* Decodes the header length from the first 8 bytes of a file of
 * `file_len` bytes and checks it before anything is allocated for it. */
static xg_status header_length(const uint8_t first[8], uint64_t file_len,
                               const char *label, uint64_t *n)
{
    if (file_len < 8)
        return xg_set_error(XG_ERR_FORMAT, "%s: %llu bytes: too short for "
                            "the 8-byte header length", label, (ull)file_len);
    *n = 0;
    for (int i = 7; i >= 0; i--)
        *n = *n << 8 | first[i];
    if (*n > MAX_HEADER_BYTES)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: header length %llu is "
                            "over the 100 MB limit", label, (ull)*n);
    if (*n > file_len - 8)
        return xg_set_error(XG_ERR_FORMAT, "%s: header length %llu runs past "
                            "the end of the file (%llu bytes)", label,
                            (ull)*n, (ull)file_len);
    return XG_OK;
}

static xg_status st_new(const char *label, xg_safetensors **out)
{
    xg_safetensors *st = calloc(1, sizeof *st);
    if (st && !(st->label = strdup(label))) {
        free(st);
        st = NULL;
    }
    *out = st;
    return st ? XG_OK : xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host "
                                     "memory", label);
}

/* Points the entries at the data section, now in st->data. */
static void st_finish(xg_safetensors *st)
{
    for (int i = 0; i < st->count; i++)
        st->entries[i].data = st->data + st->entries[i].offset;
}

/* ==== Reading: files and memory ========================================== */

static xg_status read_exact(int fd, void *buf, size_t len, const char *path)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t got = read(fd, p, len < (1u << 30) ? len : (1u << 30));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return xg_set_error(XG_ERR_IO, "%s: read error: %s", path,
                                strerror(errno));
        if (got == 0)
            return xg_set_error(XG_ERR_IO, "%s: the file ended early (did "
                                "it change while being read?)", path);
        p += got;
        len -= (size_t)got;
    }
    return XG_OK;
}

/* Reads `len` bytes into a new buffer (*out, freed by the caller). */
static xg_status read_alloc(int fd, uint64_t len, const char *path,
                            void **out)
{
    if (len > SIZE_MAX - 1 || !(*out = malloc(len ? (size_t)len : 1)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory "
                            "for %llu bytes", path, (ull)len);
    return read_exact(fd, *out, (size_t)len, path);
}

/* Opens a regular file for reading; *len gets its size. */
static xg_status open_file(const char *path, int *fd_out, uint64_t *len)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return xg_set_error(errno == ENOENT ? XG_ERR_NOT_FOUND : XG_ERR_IO,
                            "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    int failed = fstat(fd, &sb) != 0 ? errno : 0;
    if (failed || !S_ISREG(sb.st_mode)) {
        close(fd);
        return xg_set_error(XG_ERR_IO, "%s: %s", path, failed
                            ? strerror(failed) : "not a regular file");
    }
    *fd_out = fd;
    *len = (uint64_t)sb.st_size;
    return XG_OK;
}

xg_status xg_safetensors_open(const char *path, xg_safetensors **out)
{
    if (!path || !out)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_open: NULL "
                            "argument");
    *out = NULL;
    int fd = -1;
    uint64_t file_len = 0, n = 0;
    uint8_t first[8] = {0};
    void *header = NULL, *data = NULL;
    xg_safetensors *st = NULL;
    xg_status s = open_file(path, &fd, &file_len);
    if (s == XG_OK)
        s = read_exact(fd, first, file_len < 8 ? (size_t)file_len : 8, path);
    if (s == XG_OK)
        s = header_length(first, file_len, path, &n);
    if (s == XG_OK)
        s = read_alloc(fd, n, path, &header);
    if (s == XG_OK)
        s = st_new(path, &st);
    if (s == XG_OK)
        s = parse_header(st, header, (size_t)n, file_len - 8 - n);
    if (s == XG_OK)
        s = read_alloc(fd, st->data_len, path, &data);
    if (st)
        st->data = data; /* freed with st */
    if (s == XG_OK)
        st_finish(st);
    free(header);
    if (fd >= 0)
        close(fd);
    if (s != XG_OK)
        xg_safetensors_close(st);
    else
        *out = st;
    return s;
}

xg_status xg__safetensors_parse(const void *bytes, size_t len,
                                const char *label, xg_safetensors **out)
{
    if ((!bytes && len > 0) || !label || !out)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_parse: NULL "
                            "argument");
    *out = NULL;
    const uint8_t *b = bytes;
    uint8_t first[8] = {0};
    if (len > 0)
        memcpy(first, b, len < 8 ? len : 8);
    uint64_t n = 0;
    xg_safetensors *st = NULL;
    xg_status s = header_length(first, len, label, &n);
    if (s == XG_OK)
        s = st_new(label, &st);
    if (s == XG_OK)
        s = parse_header(st, (const char *)b + 8, (size_t)n, len - 8 - n);
    if (s == XG_OK && !(st->data = malloc(st->data_len ? st->data_len : 1)))
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                         label);
    if (s != XG_OK) {
        xg_safetensors_close(st);
        return s;
    }
    if (st->data_len > 0)
        memcpy(st->data, b + 8 + n, st->data_len);
    st_finish(st);
    *out = st;
    return XG_OK;
}

void xg_safetensors_close(xg_safetensors *st)
{
    if (!st)
        return;
    json_decref(st->header);
    free(st->entries);
    free(st->by_name);
    free(st->data);
    free(st->label);
    free(st);
}

/* ==== Reading: queries ==================================================== */

const char *xg__safetensors_label(const xg_safetensors *st)
{
    return st->label;
}

const xg__st_entry *xg__safetensors_entry(const xg_safetensors *st, int i)
{
    return st && i >= 0 && i < st->count ? &st->entries[i] : NULL;
}

int xg__safetensors_index(const xg_safetensors *st, const char *name)
{
    if (!st || !name || st->count == 0)
        return -1;
    name_index key = {name, -1};
    const name_index *hit = bsearch(&key, st->by_name, (size_t)st->count,
                                    sizeof key, cmp_name);
    return hit ? hit->index : -1;
}

/* The entry called `name`, or NULL with XG_ERR_NOT_FOUND set. */
static const xg__st_entry *find(const xg_safetensors *st, const char *name,
                                const char *who)
{
    if (!st || !name) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", who);
        return NULL;
    }
    const xg__st_entry *e = xg__safetensors_entry(
        st, xg__safetensors_index(st, name));
    if (!e)
        xg_set_error(XG_ERR_NOT_FOUND, "%s: no tensor named '%s'", st->label,
                     name);
    return e;
}

int xg_safetensors_count(const xg_safetensors *st)
{
    return st ? st->count : 0;
}

const char *xg_safetensors_name(const xg_safetensors *st, int i)
{
    const xg__st_entry *e = xg__safetensors_entry(st, i);
    return e ? e->name : NULL;
}

xg_status xg_safetensors_info(const xg_safetensors *st, const char *name,
                              const char **dtype, int64_t *shape, int *ndim)
{
    const xg__st_entry *e = find(st, name, "safetensors_info");
    if (!e)
        return xg_last_status();
    if (dtype)
        *dtype = e->dtype;
    if (shape && e->ndim > 0)
        memcpy(shape, e->shape, (size_t)e->ndim * sizeof *shape);
    if (ndim)
        *ndim = e->ndim;
    return XG_OK;
}

const char *xg_safetensors_metadata(const xg_safetensors *st,
                                    const char *key)
{
    if (!st || !key || !st->metadata)
        return NULL;
    return json_string_value(json_object_get(st->metadata, key));
}

/* The values of an I64 entry as int32, or NULL with XG_ERR_DTYPE when one
 * does not fit. */
static int32_t *narrow_i64(const xg__st_entry *e, const char *who)
{
    size_t n = e->bytes / 8;
    int32_t *out = malloc(n ? n * sizeof *out : 1);
    if (!out) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, e->data + 8 * i, sizeof v);
        if (v < INT32_MIN || v > INT32_MAX) {
            free(out);
            xg_set_error(XG_ERR_DTYPE, "%s: I64 value %lld at index %zu does "
                         "not fit in I32", who, (long long)v, i);
            return NULL;
        }
        out[i] = (int32_t)v;
    }
    return out;
}

/* IEEE half precision to single, exactly: every half is a float. A
 * subnormal half is normalised; a NaN keeps its sign and payload and
 * becomes quiet, as IEEE 754's conversion (and x86's F16C, which PyTorch
 * uses) makes it. */
static uint32_t f16_bits_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf (mant 0) or NaN */
        return sign | 0x7f800000u | (mant ? 0x400000u : 0) | mant << 13;
    if (exp != 0)
        return sign | (exp - 15 + 127) << 23 | mant << 13;
    if (mant == 0)
        return sign; /* +-0 */
    int e = -14; /* mant x 2^-24: shift its leading one into the implicit bit */
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return sign | (uint32_t)(e + 127) << 23 | (mant & 0x3ffu) << 13;
}

xg_status xg__safetensors_to_f32(const xg__st_entry *e, float *out)
{
    bool f16 = strcmp(e->dtype, "F16") == 0;
    bool bf16 = strcmp(e->dtype, "BF16") == 0;
    if (strcmp(e->dtype, "F32") == 0) {
        if (e->bytes > 0)
            memcpy(out, e->data, e->bytes);
        return XG_OK;
    }
    if (!f16 && !bf16)
        return xg_set_error(XG_ERR_DTYPE, "tensor '%s' is %s, not a float "
                            "dtype xgrad converts (F32, F16, BF16)", e->name,
                            e->dtype);
    size_t n = e->bytes / 2;
    for (size_t i = 0; i < n; i++) {
        /* little-endian, possibly unaligned */
        uint16_t h = (uint16_t)(e->data[2 * i] | e->data[2 * i + 1] << 8);
        uint32_t bits = f16 ? f16_bits_to_f32(h) : (uint32_t)h << 16;
        memcpy(&out[i], &bits, sizeof bits);
    }
    return XG_OK;
}

/* Entry e as a tensor on dev; F16 and BF16 as XG_F16 and XG_BF16 when
 * keep_16 (their bits as stored), else widened to XG_F32. */
static xg_tensor *load_entry(const xg_safetensors *st, const xg__st_entry *e,
                             xg_device *dev, bool keep_16)
{
    char who[320];
    snprintf(who, sizeof who, "%s: tensor '%s'", st->label, e->name);
    bool f32 = strcmp(e->dtype, "F32") == 0;
    bool i64 = strcmp(e->dtype, "I64") == 0;
    bool half = strcmp(e->dtype, "F16") == 0 || strcmp(e->dtype, "BF16") == 0;
    if (!f32 && !i64 && !half && strcmp(e->dtype, "I32") != 0) {
        xg_set_error(XG_ERR_DTYPE, "%s is %s; xgrad loads F32, F16, BF16, "
                     "I32 and I64", who, e->dtype);
        return NULL;
    }
    void *host = NULL; /* the values converted, when they need it */
    size_t bytes = e->bytes;
    if (i64) {
        if (!(host = narrow_i64(e, who)))
            return NULL;
        bytes = e->bytes / 2;
    } else if (half && keep_16) {
        size_t n = e->bytes / 2;
        uint16_t *h = malloc(e->bytes ? e->bytes : 1);
        if (!(host = h)) {
            xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
            return NULL;
        }
        for (size_t i = 0; i < n; i++) /* little-endian, maybe unaligned */
            h[i] = (uint16_t)(e->data[2 * i] | e->data[2 * i + 1] << 8);
    } else if (half) {
        bytes = e->bytes * 2;
        if (!(host = malloc(bytes ? bytes : 1))) {
            xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
            return NULL;
        }
        xg__safetensors_to_f32(e, host); /* cannot fail for F16 / BF16 */
    }
    xg_dtype dtype = f32 || half ? XG_F32 : XG_I32;
    if (half && keep_16)
        dtype = strcmp(e->dtype, "F16") == 0 ? XG_F16 : XG_BF16;
    xg_tensor *t = xg__tensor_new(dev, dtype, e->shape, e->ndim, who);
    if (t && xg_tensor_write(t, host ? host : (const void *)e->data, bytes) !=
                 XG_OK) {
        xg_tensor_free(t);
        t = NULL;
    }
    free(host);
    return t;
}

xg_tensor *xg__safetensors_load(const xg_safetensors *st,
                                const xg__st_entry *e, xg_device *dev)
{
    return load_entry(st, e, dev, false);
}

xg_tensor *xg_safetensors_tensor(const xg_safetensors *st, const char *name)
{
    const xg__st_entry *e = find(st, name, "safetensors_tensor");
    xg_device *dev = e ? xg_device_current() : NULL;
    return dev ? load_entry(st, e, dev, false) : NULL;
}

xg_tensor *xg_safetensors_tensor_as_stored(const xg_safetensors *st,
                                           const char *name)
{
    const xg__st_entry *e = find(st, name, "safetensors_tensor_as_stored");
    xg_device *dev = e ? xg_device_current() : NULL;
    return dev ? load_entry(st, e, dev, true) : NULL;
}

/* ==== Writing ============================================================= */

typedef struct wr_item {
    char *name;
    const char *dtype; /* "F32", "BF16", "F16", "I32" or "I64" */
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    void *data;        /* little-endian values */
    size_t bytes;
} wr_item;

struct xg_safetensors_writer {
    wr_item *items;
    int n, cap;
    json_t *metadata; /* string -> string */
};

xg_safetensors_writer *xg_safetensors_writer_new(void)
{
    xg_safetensors_writer *w = calloc(1, sizeof *w);
    if (w && !(w->metadata = json_object())) {
        free(w);
        w = NULL;
    }
    if (!w)
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "safetensors_writer_new: out of "
                     "host memory");
    return w;
}

void xg_safetensors_writer_free(xg_safetensors_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->items[i].name);
        free(w->items[i].data);
    }
    free(w->items);
    json_decref(w->metadata);
    free(w);
}

static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s); /* NULL for invalid UTF-8 */
    json_decref(j);
    return j != NULL;
}

static xg_status check_new_name(const xg_safetensors_writer *w,
                                const char *name)
{
    const char *bad = !name || !name[0] ? "the name is empty or NULL"
                      : strcmp(name, "__metadata__") == 0
                          ? "'__metadata__' is reserved for metadata"
                      : !valid_utf8(name) ? "the name is not valid UTF-8"
                                          : NULL;
    for (int i = 0; !bad && i < w->n; i++)
        if (strcmp(w->items[i].name, name) == 0)
            bad = "a tensor of that name was already added";
    if (bad)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_add: "
                            "'%s': %s", name ? name : "(null)", bad);
    return XG_OK;
}

/* Appends an item; takes ownership of `data` (freed on error too). */
static xg_status push_item(xg_safetensors_writer *w, const char *name,
                           const char *dtype, const int64_t *shape, int ndim,
                           void *data, size_t bytes)
{
    char *copy = strdup(name);
    if (copy && w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wr_item *grown = realloc(w->items, (size_t)cap * sizeof *grown);
        if (grown) {
            w->items = grown;
            w->cap = cap;
        }
    }
    if (!copy || w->n == w->cap) {
        free(copy);
        free(data);
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "safetensors_writer_add: "
                            "out of host memory");
    }
    wr_item *it = &w->items[w->n++];
    *it = (wr_item){.name = copy, .dtype = dtype, .ndim = ndim, .data = data,
                    .bytes = bytes};
    if (ndim > 0)
        memcpy(it->shape, shape, (size_t)ndim * sizeof *shape);
    return XG_OK;
}

xg_status xg_safetensors_writer_add(xg_safetensors_writer *w,
                                    const char *name, const xg_tensor *t)
{
    if (!w || !t)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_add: "
                            "NULL argument");
    xg_status s = check_new_name(w, name);
    size_t bytes = (size_t)t->numel * xg_dtype_size(t->dtype);
    void *data = s == XG_OK ? malloc(bytes) : NULL;
    if (s == XG_OK && !data)
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "safetensors_writer_add: out "
                         "of host memory for '%s'", name);
    if (s == XG_OK)
        s = xg_tensor_read(t, data, bytes);
    if (s != XG_OK) {
        free(data);
        return s;
    }
    static const char *const names[XG_DTYPE_COUNT] = {
        [XG_F32] = "F32", [XG_I32] = "I32", [XG_BF16] = "BF16",
        [XG_F16] = "F16"};
    return push_item(w, name, names[t->dtype], t->shape, t->ndim, data,
                     bytes);
}

xg_status xg_safetensors_writer_add_i64(xg_safetensors_writer *w,
                                        const char *name, int64_t value)
{
    if (!w)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_add_i64: "
                            "NULL writer");
    xg_status s = check_new_name(w, name);
    int64_t *data = s == XG_OK ? malloc(sizeof *data) : NULL;
    if (s == XG_OK && !data)
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "safetensors_writer_add_i64: "
                         "out of host memory");
    if (s != XG_OK)
        return s;
    *data = value;
    return push_item(w, name, "I64", NULL, 0, data, sizeof *data);
}

xg_status xg_safetensors_writer_metadata(xg_safetensors_writer *w,
                                         const char *key, const char *value)
{
    if (!w || !key || !value)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_metadata:"
                            " NULL argument");
    /* Both steal the reference, also on error; NULL means bad UTF-8. */
    json_t *v = json_string(value);
    if (!v || json_object_set_new(w->metadata, key, v) != 0)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_metadata:"
                            " '%s': the key or the value is not valid UTF-8",
                            key);
    return XG_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} */
static json_t *entry_json(const wr_item *it, uint64_t begin)
{
    json_t *e = json_pack("{s:s, s:[], s:[I, I]}", "dtype", it->dtype,
                          "shape", "data_offsets", (json_int_t)begin,
                          (json_int_t)(begin + it->bytes));
    json_t *shape = json_object_get(e, "shape");
    for (int i = 0; shape && i < it->ndim; i++)
        if (json_array_append_new(shape, json_integer(it->shape[i])) != 0) {
            json_decref(e);
            return NULL;
        }
    return e;
}

/* The JSON header text (*out, to free()): metadata first, then the tensors
 * in the order they were added, packed one after the other. */
static xg_status header_text(const xg_safetensors_writer *w, char **out)
{
    json_t *h = json_object();
    bool ok = h != NULL;
    if (ok && json_object_size(w->metadata) > 0)
        ok = json_object_set(h, "__metadata__", w->metadata) == 0;
    uint64_t at = 0;
    for (int i = 0; ok && i < w->n; i++) {
        ok = json_object_set_new(h, w->items[i].name,
                                 entry_json(&w->items[i], at)) == 0;
        at += w->items[i].bytes;
    }
    *out = ok ? json_dumps(h, JSON_COMPACT) : NULL;
    json_decref(h);
    return *out ? XG_OK : xg_set_error(XG_ERR_OUT_OF_MEMORY,
                                       "safetensors_writer_save: out of host "
                                       "memory");
}

typedef struct part {
    const void *data;
    size_t len;
} part;

static xg_status write_atomic(const char *path, const part *parts, int n);

xg_status xg_safetensors_writer_save(xg_safetensors_writer *w,
                                     const char *path)
{
    if (!w || !path)
        return xg_set_error(XG_ERR_INVALID_ARG, "safetensors_writer_save: "
                            "NULL argument");
    static const char spaces[8] = "        ";
    char *json = NULL;
    part *parts = NULL;
    xg_status s = header_text(w, &json);
    if (s == XG_OK && !(parts = malloc((size_t)(w->n + 3) * sizeof *parts)))
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "safetensors_writer_save: out "
                         "of host memory");
    if (s == XG_OK) {
        size_t len = strlen(json), pad = (8 - len % 8) % 8;
        uint8_t prefix[8];
        for (int i = 0; i < 8; i++)
            prefix[i] = (uint8_t)((uint64_t)(len + pad) >> (8 * i));
        parts[0] = (part){prefix, 8};
        parts[1] = (part){json, len};
        parts[2] = (part){spaces, pad};
        for (int i = 0; i < w->n; i++)
            parts[3 + i] = (part){w->items[i].data, w->items[i].bytes};
        s = write_atomic(path, parts, w->n + 3);
    }
    free(parts);
    free(json);
    return s;
}

/* ==== Atomic file replacement ============================================= */

xg_status xg__write_file_atomic(const char *path, const void *data,
                                size_t len)
{
    part p = {data, len};
    return write_atomic(path, &p, 1);
}

static xg_status io_error(const char *path, const char *what, int err)
{
    return xg_set_error(XG_ERR_IO, "%s: %s: %s", path, what, strerror(err));
}

static const char temp_alnum[] = "abcdefghijklmnopqrstuvwxyz"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
#define TEMP_SUFFIX ".tmp-"
#define TEMP_RANDOM 6 /* characters of temp_alnum after TEMP_SUFFIX */

/* The temporary name keeps at most this much of the target's file name, so
 * that with the suffix it stays within a file name's 255 bytes. */
#define TEMP_BASE_MAX (255 - (sizeof TEMP_SUFFIX - 1) - TEMP_RANDOM)

static size_t temp_base_len(const char *base)
{
    size_t n = strlen(base);
    return n < TEMP_BASE_MAX ? n : TEMP_BASE_MAX;
}

/* Whether `entry` is `base`.tmp-XXXXXX, the name create_temp makes (with
 * base cut to temp_base_len). */
static bool is_temp_of(const char *entry, const char *base)
{
    size_t n = temp_base_len(base), k = strlen(TEMP_SUFFIX);
    if (strncmp(entry, base, n) != 0 || strncmp(entry + n, TEMP_SUFFIX, k))
        return false;
    const char *r = entry + n + k;
    if (strlen(r) != TEMP_RANDOM)
        return false;
    for (int i = 0; i < TEMP_RANDOM; i++)
        if (!r[i] || !strchr(temp_alnum, r[i]))
            return false;
    return true;
}

/* Removes `file` if it is a regular file that no writer holds: a writer
 * keeps an exclusive flock on its temporary file until it is renamed, and
 * a killed writer's lock goes with it. */
static void remove_if_stale(const char *file)
{
    int fd = open(file, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
        flock(fd, LOCK_EX | LOCK_NB) == 0)
        unlink(file);
    close(fd);
}

/* Removes the temporary files of `path` that earlier writes left behind
 * when they were killed. Best effort: failures are ignored. */
static void remove_stale_temps(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    char *dir = strndup(slash ? path : "./", slash ? dlen : 2);
    DIR *d = dir && *base ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!is_temp_of(e->d_name, base))
            continue;
        char *file = malloc(strlen(dir) + strlen(e->d_name) + 1);
        if (file) {
            strcpy(file, dir);
            strcat(file, e->d_name);
            remove_if_stale(file);
        }
        free(file);
    }
    if (d)
        closedir(d);
    free(dir);
}

/* Creates `path`.tmp-XXXXXX (six random letters or digits; the file name
 * cut to temp_base_len first) exclusively, and locks it (see
 * remove_if_stale). Not mkstemp: it makes the file 0600, and a model file
 * should get the usual 0666 & ~umask, which open() applies. */
static xg_status create_temp(const char *path, char **tmp_out, int *fd_out)
{
    static _Thread_local uint64_t counter;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    int keep = (int)((size_t)(base - path) + temp_base_len(base));
    size_t cap = strlen(path) + sizeof ".tmp-XXXXXX";
    char *tmp = malloc(cap);
    if (!tmp)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            path);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t r = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                 ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)tmp;
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        uint64_t z = (r += 0x9E3779B97F4A7C15u + ++counter); /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
        char s[TEMP_RANDOM + 1];
        for (int i = 0; i < TEMP_RANDOM; i++, z >>= 6)
            s[i] = temp_alnum[(z & 63) % (sizeof temp_alnum - 1)];
        s[TEMP_RANDOM] = '\0';
        snprintf(tmp, cap, "%.*s" TEMP_SUFFIX "%s", keep, path, s);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd >= 0)
        flock(fd, LOCK_EX | LOCK_NB); /* advisory; none on some filesystems */
    if (fd < 0) {
        xg_status st = io_error(path, "cannot create a temporary file beside "
                                "it", errno);
        free(tmp);
        return st;
    }
    *tmp_out = tmp;
    *fd_out = fd;
    return XG_OK;
}

static xg_status write_all(int fd, const part *p, const char *path)
{
    const uint8_t *at = p->data;
    size_t left = p->len;
    while (left > 0) {
        ssize_t put = write(fd, at, left < (1u << 30) ? left : (1u << 30));
        if (put < 0 && errno == EINTR)
            continue;
        if (put < 0)
            return io_error(path, "writing failed (the previous file, if "
                            "any, is unchanged)", errno);
        at += put;
        left -= (size_t)put;
    }
    return XG_OK;
}

/* Makes the rename durable. Folders where fsync is meaningless (EINVAL)
 * are fine. */
static xg_status sync_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t len = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(len + 1);
    if (!dir)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            path);
    memcpy(dir, slash ? path : ".", len);
    dir[len] = '\0';
    xg_status st = XG_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = io_error(path, "written, but syncing its folder failed", errno);
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

/* Writes the parts to `path` atomically: a temporary file in the same
 * folder, fsync, rename over `path`, fsync of the folder. On failure the
 * temporary file is removed and `path` is as it was. Temporary files of
 * `path` left by killed writers are removed first. */
static xg_status write_atomic(const char *path, const part *parts, int n)
{
    char *tmp = NULL;
    int fd = -1;
    remove_stale_temps(path);
    xg_status st = create_temp(path, &tmp, &fd);
    if (st != XG_OK)
        return st;
    for (int i = 0; i < n && st == XG_OK; i++)
        st = write_all(fd, &parts[i], path);
    if (st == XG_OK && fsync(fd) != 0)
        st = io_error(path, "fsync failed (the previous file, if any, is "
                      "unchanged)", errno);
    if (close(fd) != 0 && st == XG_OK)
        st = io_error(path, "close failed (the previous file, if any, is "
                      "unchanged)", errno);
    if (st == XG_OK && rename(tmp, path) != 0)
        st = io_error(path, "cannot replace it", errno);
    if (st != XG_OK)
        unlink(tmp);
    else
        st = sync_folder(path);
    free(tmp);
    return st;
}

