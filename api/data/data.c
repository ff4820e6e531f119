/* Data loading: IDX files, MNIST-format folders and shuffled mini-batches.
 *
 * Everything here lives in host memory. The only device work is the upload
 * of each batch through xg_tensor_from_data, so batches land on the current
 * device and in the open scope like any other new tensor.
 *
 * IDX format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"):
 *   bytes 0-1  zero
 *   byte  2    element type: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
 *              0x0D f32, 0x0E f64
 *   byte  3    number of dimensions
 *   then one big-endian u32 per dimension, then the values, big-endian,
 *   last dimension fastest.
 * A file that starts with gzip's magic bytes is inflated with zlib, member
 * after member; any other file is read as it is. Neither is read past the
 * data the header announces and one more byte.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data_rng.h"
#include "xgrad_data.h"


#define IDX_FIRST_ALLOC ((size_t)1 << 16) /* then doubled as data arrives */
#define IDX_READ_CHUNK ((size_t)1 << 30)  /* inflate takes an unsigned int */
#define MNIST_CLASSES 10

/* ===== IDX files ========================================================= */

static size_t idx_type_size(uint8_t type)
{
    switch (type) {
    case 0x08: /* u8 */
    case 0x09: /* i8 */
        return 1;
    case 0x0B: /* i16 */
        return 2;
    case 0x0C: /* i32 */
    case 0x0D: /* f32 */
        return 4;
    case 0x0E: /* f64 */
        return 8;
    default:
        return 0;
    }
}

/* ===== The byte source: a plain file, or gzip members one after another.
 * zlib's gzread would skip anything after the last gzip member silently;
 * inflating by hand lets us refuse it. */

typedef struct idx_src {
    int fd;
    const char *path;
    bool gz;        /* the file starts with gzip's magic bytes */
    bool in_member; /* inside a gzip member (its end not yet seen) */
    bool zinit;     /* `z` is initialised */
    z_stream z;     /* next_in/avail_in: the unread input, plain or gzip */
    uint8_t in[1 << 16];
} idx_src;

/* Refills the input buffer once it is empty. Returns the bytes it read,
 * 0 at the end of the file, -1 on a read error (set). */
static int64_t src_fill(idx_src *s)
{
    if (s->z.avail_in > 0)
        return s->z.avail_in;
    ssize_t n;
    do
        n = read(s->fd, s->in, sizeof s->in);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        xg_set_error(XG_ERR_IO, "idx: %s: read error: %s", s->path,
                     strerror(errno));
        return -1;
    }
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)n;
    return n;
}

/* Opens `path` without blocking (a FIFO would wait for a writer) and
 * refuses anything but a regular file; then looks at the first bytes. */
static xg_status src_open(idx_src *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (s->fd < 0)
        return xg_set_error(XG_ERR_IO, "idx: cannot open %s: %s", path,
                            strerror(errno));
    struct stat sb;
    if (fstat(s->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return xg_set_error(XG_ERR_IO, "idx: %s: not a regular file", path);
    int flags = fcntl(s->fd, F_GETFL);
    if (flags < 0 || fcntl(s->fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        return xg_set_error(XG_ERR_IO, "idx: %s: %s", path, strerror(errno));
    while (s->z.avail_in < 2) { /* gzip's magic: 1f 8b */
        ssize_t n = read(s->fd, s->in + s->z.avail_in, 2 - s->z.avail_in);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return xg_set_error(XG_ERR_IO, "idx: %s: read error: %s", path,
                                strerror(errno));
        if (n == 0)
            break;
        s->z.avail_in += (uInt)n;
    }
    s->z.next_in = s->in;
    s->gz = s->z.avail_in == 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    if (s->gz && inflateInit2(&s->z, 16 + MAX_WBITS) != Z_OK)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "idx: %s: out of memory",
                            path);
    s->zinit = s->gz;
    s->in_member = s->gz;
    return XG_OK;
}

static void src_close(idx_src *s)
{
    if (s->zinit)
        inflateEnd(&s->z);
    if (s->fd >= 0)
        close(s->fd);
}

/* After the end of a gzip member: only another member may follow. */
static xg_status src_next_member(idx_src *s)
{
    int64_t n = src_fill(s);
    if (n < 0)
        return xg_last_status();
    if (n == 0)
        return XG_OK; /* the end of the file */
    if (s->z.next_in[0] != 0x1f)
        return xg_set_error(XG_ERR_FORMAT, "idx: %s: bytes after the end of "
                            "the gzip stream", s->path);
    inflateReset(&s->z);
    s->in_member = true;
    return XG_OK;
}

/* Inflates once into dst[0, len) (len <= UINT_MAX); *got gets the count. */
static xg_status src_inflate(idx_src *s, uint8_t *dst, size_t len,
                             size_t *got)
{
    int64_t n = src_fill(s);
    if (n < 0)
        return xg_last_status();
    if (n == 0)
        return xg_set_error(XG_ERR_FORMAT, "idx: %s: truncated gzip stream",
                            s->path);
    s->z.next_out = dst;
    s->z.avail_out = (uInt)len;
    int r = inflate(&s->z, Z_NO_FLUSH);
    *got = len - s->z.avail_out;
    if (r == Z_STREAM_END) {
        s->in_member = false;
        return src_next_member(s);
    }
    if (r == Z_MEM_ERROR)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "idx: %s: out of memory",
                            s->path);
    if (r != Z_OK && r != Z_BUF_ERROR)
        return xg_set_error(XG_ERR_FORMAT, "idx: %s: corrupt gzip data: %s",
                            s->path, s->z.msg ? s->z.msg : "bad stream");
    return XG_OK;
}

/* Copies buffered or freshly read plain bytes into dst[0, len). */
static xg_status src_copy(idx_src *s, uint8_t *dst, size_t len, size_t *got)
{
    int64_t n = src_fill(s);
    if (n < 0)
        return xg_last_status();
    *got = len < s->z.avail_in ? len : s->z.avail_in;
    memcpy(dst, s->z.next_in, *got);
    s->z.next_in += *got;
    s->z.avail_in -= (uInt)*got;
    return XG_OK;
}

/* Reads up to `len` bytes; stops early only at the end of the data, so
 * it never reads or inflates more than asked. *got gets the count. */
static xg_status src_read(idx_src *s, void *dst, size_t len, size_t *got)
{
    *got = 0;
    while (*got < len) {
        if (s->gz && !s->in_member)
            break; /* the last member ended with the file */
        size_t want = len - *got < IDX_READ_CHUNK ? len - *got
                                                  : IDX_READ_CHUNK;
        size_t n = 0;
        uint8_t *at = (uint8_t *)dst + *got;
        xg_status st = s->gz ? src_inflate(s, at, want, &n)
                             : src_copy(s, at, want, &n);
        if (st != XG_OK)
            return st;
        if (!s->gz && n == 0)
            break; /* the end of a plain file */
        *got += n;
    }
    return XG_OK;
}

/* Reads exactly `len` header bytes; a short file is a format error. */
static xg_status idx_read_exact(idx_src *s, void *dst, size_t len,
                                const char *what)
{
    size_t n = 0;
    xg_status st = src_read(s, dst, len, &n);
    if (st == XG_OK && n < len)
        st = xg_set_error(XG_ERR_FORMAT, "idx: %s: file ends inside the %s",
                          s->path, what);
    return st;
}

static xg_status idx_check_magic(const uint8_t magic[4], const char *path)
{
    if (magic[0] != 0 || magic[1] != 0)
        return xg_set_error(XG_ERR_FORMAT,
                            "idx: %s: bad magic %02x %02x %02x %02x (an IDX "
                            "file starts with two zero bytes)",
                            path, magic[0], magic[1], magic[2], magic[3]);
    if (idx_type_size(magic[2]) == 0)
        return xg_set_error(XG_ERR_FORMAT,
                            "idx: %s: unknown element type 0x%02x", path,
                            magic[2]);
    if (magic[3] < 1 || magic[3] > XG_MAX_DIMS)
        return xg_set_error(XG_ERR_FORMAT,
                            "idx: %s: %d dimensions (supported: 1 to %d)",
                            path, magic[3], XG_MAX_DIMS);
    return XG_OK;
}

/* Reads and checks the magic and the dimensions into `out`; *total gets
 * the data size in bytes, checked against the limit without overflow. */
static xg_status idx_read_header(idx_src *s, xg_idx *out, size_t *total)
{
    const char *path = s->path;
    uint64_t max = xg_idx_max_bytes();
    uint8_t magic[4], raw[4 * XG_MAX_DIMS];
    xg_status st = idx_read_exact(s, magic, 4, "4-byte header");
    if (st == XG_OK)
        st = idx_check_magic(magic, path);
    if (st == XG_OK)
        st = idx_read_exact(s, raw, 4u * magic[3], "dimension list");
    if (st != XG_OK)
        return st;
    uint64_t bytes = idx_type_size(magic[2]);
    for (int i = 0; i < magic[3]; i++) {
        const uint8_t *b = raw + 4 * i;
        uint32_t dim = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                       (uint32_t)b[2] << 8 | b[3];
        if (dim == 0)
            return xg_set_error(XG_ERR_FORMAT, "idx: %s: dimension %d is 0",
                                path, i);
        if (bytes > max / dim || bytes * dim > SIZE_MAX)
            return xg_set_error(XG_ERR_TOO_LARGE,
                                "idx: %s: dimension %d (%u) makes the data "
                                "larger than the limit of %" PRIu64 " bytes "
                                "(see xg_idx_set_max_bytes)",
                                path, i, (unsigned)dim, max);
        bytes *= dim;
        out->dims[i] = dim;
    }
    out->type = magic[2];
    out->ndim = magic[3];
    *total = (size_t)bytes;
    return XG_OK;
}

/* Doubles the buffer, up to `total` bytes. */
static xg_status idx_grow(uint8_t **buf, size_t *cap, size_t total)
{
    size_t next = *cap > total / 2 ? total : *cap * 2;
    uint8_t *p = realloc(*buf, next);
    if (!p)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "idx: cannot allocate %zu bytes", next);
    *buf = p;
    *cap = next;
    return XG_OK;
}

/* The file must end exactly after the data: one more byte is all we read
 * to tell. */
static xg_status idx_check_end(idx_src *s, size_t got, size_t total)
{
    if (got < total)
        return xg_set_error(XG_ERR_FORMAT,
                            "idx: %s: truncated: data ends after %zu of "
                            "%zu bytes",
                            s->path, got, total);
    uint8_t extra;
    size_t n = 0;
    xg_status st = src_read(s, &extra, 1, &n);
    if (st == XG_OK && n > 0)
        st = xg_set_error(XG_ERR_FORMAT,
                          "idx: %s: trailing bytes after the %zu bytes of "
                          "data the header announces",
                          s->path, total);
    return st;
}

/* Reads `total` data bytes. The buffer grows only as data actually arrives,
 * so a hostile header cannot make us allocate much more than the file. */
static xg_status idx_read_data(idx_src *s, size_t total, void **out)
{
    size_t cap = total < IDX_FIRST_ALLOC ? total : IDX_FIRST_ALLOC, got = 0;
    uint8_t *buf = malloc(cap);
    xg_status st = buf ? XG_OK
                       : xg_set_error(XG_ERR_OUT_OF_MEMORY,
                                      "idx: cannot allocate %zu bytes", cap);
    while (st == XG_OK && got < total) {
        if (got == cap && (st = idx_grow(&buf, &cap, total)) != XG_OK)
            break;
        size_t n = 0;
        st = src_read(s, buf + got, cap - got, &n);
        got += n;
        if (got < cap)
            break; /* end of file */
    }
    if (st == XG_OK)
        st = idx_check_end(s, got, total);
    if (st != XG_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return XG_OK;
}

/* IDX stores big-endian values; swap them in place on little-endian hosts. */
static void idx_to_native(uint8_t *data, size_t bytes, size_t elem)
{
    const uint16_t probe = 1;
    if (elem == 1 || *(const uint8_t *)&probe == 0)
        return;
    for (size_t i = 0; i < bytes; i += elem) {
        for (size_t a = i, b = i + elem - 1; a < b; a++, b--) {
            uint8_t t = data[a];
            data[a] = data[b];
            data[b] = t;
        }
    }
}

static _Atomic uint64_t idx_max_bytes = XG_IDX_DEFAULT_MAX_BYTES;

uint64_t xg_idx_set_max_bytes(uint64_t max)
{
    return atomic_exchange(&idx_max_bytes,
                           max ? max : XG_IDX_DEFAULT_MAX_BYTES);
}

uint64_t xg_idx_max_bytes(void)
{
    return atomic_load(&idx_max_bytes);
}

xg_status xg_idx_read(const char *path, xg_idx *out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "idx_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return xg_set_error(XG_ERR_INVALID_ARG, "idx_read: path is NULL");
    idx_src *src = malloc(sizeof *src);
    if (!src)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "idx: out of memory");
    size_t total = 0;
    xg_status st = src_open(src, path);
    if (st == XG_OK)
        st = idx_read_header(src, out, &total);
    if (st == XG_OK)
        st = idx_read_data(src, total, &out->data);
    src_close(src);
    free(src);
    if (st != XG_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->bytes = total;
    idx_to_native(out->data, total, idx_type_size(out->type));
    return XG_OK;
}

void xg_idx_free(xg_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

/* ===== MNIST-format folders ============================================== */

/* "DIR/NAME" + suffix, malloc'd; NULL on OOM. */
static char *path_join(const char *dir, const char *name, const char *suffix)
{
    int len = snprintf(NULL, 0, "%s/%s%s", dir, name, suffix);
    char *path = len < 0 ? NULL : malloc((size_t)len + 1);
    if (path)
        snprintf(path, (size_t)len + 1, "%s/%s%s", dir, name, suffix);
    return path;
}

/* Finds DIR/NAME or DIR/NAME.gz; *path gets the one that exists. */
static xg_status mnist_find(const char *dir, const char *name, char **path)
{
    static const char *const suffixes[] = {"", ".gz"};
    for (int i = 0; i < 2; i++) {
        struct stat sb;
        char *p = path_join(dir, name, suffixes[i]);
        if (!p)
            return xg_set_error(XG_ERR_OUT_OF_MEMORY, "mnist: out of memory");
        if (stat(p, &sb) == 0) {
            *path = p;
            return XG_OK;
        }
        free(p);
    }
    return xg_set_error(XG_ERR_NOT_FOUND, "mnist: %s/%s not found (nor %s.gz)",
                        dir, name, name);
}

/* Reads one file of the pair and checks it holds u8 values in `ndim` axes. */
static xg_status mnist_read(const char *dir, const char *name, int ndim,
                            xg_idx *out)
{
    char *path = NULL;
    xg_status st = mnist_find(dir, name, &path);
    if (st == XG_OK)
        st = xg_idx_read(path, out);
    if (st == XG_OK && (out->type != 0x08 || out->ndim != ndim)) {
        st = xg_set_error(XG_ERR_FORMAT,
                          "mnist: %s: expected %d-D u8 data (type 0x08), got "
                          "%d-D of type 0x%02x",
                          path, ndim, out->ndim, out->type);
        xg_idx_free(out);
    }
    free(path);
    return st;
}

/* Copies the labels to ds (i32), checking their range. */
static xg_status mnist_labels(const xg_idx *labels, const char *dir,
                              xg_dataset *ds)
{
    const uint8_t *src = labels->data;
    int32_t max = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        if (src[i] >= MNIST_CLASSES)
            return xg_set_error(XG_ERR_FORMAT,
                                "mnist: %s: label %d of sample %lld is out of "
                                "range (MNIST has %d classes)",
                                dir, src[i], (long long)i, MNIST_CLASSES);
        ds->labels[i] = src[i];
        max = src[i] > max ? src[i] : max;
    }
    ds->num_classes = max + 1;
    return XG_OK;
}

/* Pixels to f32: p / 255, then (x - mean) / std when std > 0. */
static void mnist_pixels(const xg_idx *images, float mean, float std,
                         float *dst)
{
    float lut[256];
    for (int p = 0; p < 256; p++) {
        float x = (float)p / 255.0f;
        lut[p] = std > 0.0f ? (x - mean) / std : x;
    }
    const uint8_t *src = images->data;
    for (size_t i = 0; i < images->bytes; i++)
        dst[i] = lut[src[i]];
}

/* Builds the dataset from a checked pair of IDX files. */
static xg_status mnist_build(const xg_idx *images, const xg_idx *labels,
                             const char *dir, float mean, float std,
                             xg_dataset **out)
{
    if (images->dims[0] != labels->dims[0])
        return xg_set_error(XG_ERR_FORMAT,
                            "mnist: %s: %lld images but %lld labels", dir,
                            (long long)images->dims[0],
                            (long long)labels->dims[0]);
    if (images->bytes > SIZE_MAX / sizeof(float))
        return xg_set_error(XG_ERR_TOO_LARGE, "mnist: %s: too many pixels",
                            dir);
    xg_dataset *ds = calloc(1, sizeof *ds);
    if (ds) {
        ds->images = malloc(images->bytes * sizeof(float));
        ds->labels = malloc((size_t)labels->dims[0] * sizeof(int32_t));
    }
    if (!ds || !ds->images || !ds->labels) {
        xg_dataset_free(ds);
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "mnist: out of memory");
    }
    ds->n = images->dims[0];
    ds->channels = 1;
    ds->height = images->dims[1];
    ds->width = images->dims[2];
    xg_status st = mnist_labels(labels, dir, ds);
    if (st != XG_OK) {
        xg_dataset_free(ds);
        return st;
    }
    mnist_pixels(images, mean, std, ds->images);
    *out = ds;
    return XG_OK;
}

xg_status xg_mnist_load(const char *dir, const char *split, float mean,
                        float std, xg_dataset **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "mnist_load: out is NULL");
    *out = NULL;
    if (!dir || !split)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "mnist_load: dir and split must not be NULL");
    const char *prefix = strcmp(split, "train") == 0  ? "train"
                         : strcmp(split, "test") == 0 ? "t10k"
                                                      : NULL;
    if (!prefix)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "mnist_load: split is \"%s\"; expected \"train\" "
                            "or \"test\"", split);
    if (!isfinite(mean) || !isfinite(std) || std < 0.0f)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "mnist_load: mean must be finite and std >= 0");
    char images_name[64], labels_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte", prefix);
    xg_idx images = {0}, labels = {0};
    xg_status st = mnist_read(dir, images_name, 3, &images);
    if (st == XG_OK)
        st = mnist_read(dir, labels_name, 1, &labels);
    if (st == XG_OK)
        st = mnist_build(&images, &labels, dir, mean, std, out);
    xg_idx_free(&images);
    xg_idx_free(&labels);
    return st;
}

void xg_dataset_free(xg_dataset *ds)
{
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    free(ds);
}

/* ===== Mini-batch loader ================================================= */

struct xg_loader {
    const xg_dataset *ds;
    int64_t batch_size;
    int64_t count;      /* samples per epoch: min(limit, n) */
    int64_t pos;        /* next position in this rank's share */
    int64_t rank, world; /* the shard: this rank's share of `order` */
    int64_t share;      /* samples this rank visits per epoch */
    bool pad;           /* shares padded to equal size */
    size_t sample;      /* floats per sample: c * h * w */
    bool shuffle, drop_last, augment;
    uint64_t seed;
    int64_t epoch;      /* the one xg_loader_start began */
    xg_augment aug;     /* when `augment` */
    int64_t *order;     /* the epoch's visiting order, `count` indices */
    float *images;      /* one batch, reused */
    int32_t *labels;
};

/* A public struct may come from anywhere: check it before trusting it. */
static xg_status dataset_check(const xg_dataset *ds, size_t *sample)
{
    if (!ds || !ds->images || !ds->labels || ds->n < 1 || ds->channels < 1 ||
        ds->height < 1 || ds->width < 1)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "loader_new: dataset is NULL or empty");
    uint64_t c = (uint64_t)ds->channels, h = (uint64_t)ds->height,
             w = (uint64_t)ds->width;
    if (h > SIZE_MAX / sizeof(float) / c || w > SIZE_MAX / sizeof(float) / c / h)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "loader_new: sample size overflows");
    *sample = (size_t)(c * h * w);
    return XG_OK;
}

xg_loader *xg_loader_new(const xg_dataset *ds, int64_t batch_size,
                         bool shuffle, bool drop_last, uint64_t seed,
                         int64_t limit)
{
    size_t sample = 0;
    if (dataset_check(ds, &sample) != XG_OK)
        return NULL;
    if (batch_size < 1 || limit < 0) {
        xg_set_error(XG_ERR_INVALID_ARG, "loader_new: %s is %lld; must be >= %d",
                     batch_size < 1 ? "batch_size" : "limit",
                     (long long)(batch_size < 1 ? batch_size : limit),
                     batch_size < 1 ? 1 : 0);
        return NULL;
    }
    xg_loader *ld = calloc(1, sizeof *ld);
    if (!ld)
        goto oom;
    ld->ds = ds;
    ld->count = limit == 0 || limit > ds->n ? ds->n : limit;
    ld->batch_size = batch_size;
    ld->sample = sample;
    ld->shuffle = shuffle;
    ld->drop_last = drop_last;
    ld->seed = seed;
    ld->world = 1;
    ld->share = ld->count;
    uint64_t cap = (uint64_t)(batch_size < ld->count ? batch_size : ld->count);
    if ((uint64_t)ld->count > SIZE_MAX / sizeof *ld->order ||
        cap > SIZE_MAX / sizeof *ld->images / sample)
        goto oom; /* a dataset that large cannot be in memory either */
    ld->order = malloc((size_t)ld->count * sizeof *ld->order);
    ld->images = malloc((size_t)cap * sample * sizeof *ld->images);
    ld->labels = malloc((size_t)cap * sizeof *ld->labels);
    if (!ld->order || !ld->images || !ld->labels)
        goto oom;
    xg_loader_start(ld, 0);
    return ld;
oom:
    xg_loader_free(ld);
    xg_set_error(XG_ERR_OUT_OF_MEMORY, "loader_new: out of memory");
    return NULL;
}

void xg_loader_start(xg_loader *ld, int64_t epoch)
{
    if (!ld)
        return;
    ld->pos = 0;
    ld->epoch = epoch;
    for (int64_t i = 0; i < ld->count; i++)
        ld->order[i] = i;
    if (!ld->shuffle)
        return;
    /* The order depends only on (seed, epoch), so a resumed run repeats it. */
    uint64_t state = ld->seed ^ mix64((uint64_t)epoch + 0x9E3779B97F4A7C15u);
    for (int64_t i = ld->count - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)rand_below(&state, (uint64_t)i + 1);
        int64_t t = ld->order[i];
        ld->order[i] = ld->order[j];
        ld->order[j] = t;
    }
}

/* Writes an augmented copy of image `src` [c, h, w] to `dst`, with the
 * draws of the sample at position `pos` of the current epoch. */
static void augment_image(const xg_loader *ld, int64_t pos, float *dst,
                          const float *src)
{
    const xg_dataset *ds = ld->ds;
    const xg_augment *a = &ld->aug;
    uint64_t state = ld->seed ^ mix64((uint64_t)ld->epoch ^
                                      0x6A09E667F3BCC909u) ^
                     mix64((uint64_t)pos + 0xBB67AE8584CAA73Bu);
    bool flip = a->hflip && (splitmix64(&state) & 1u);
    int64_t span = 2 * (int64_t)a->shift + 1;
    int64_t dy = (int64_t)rand_below(&state, (uint64_t)span) - a->shift;
    int64_t dx = (int64_t)rand_below(&state, (uint64_t)span) - a->shift;
    int64_t h = ds->height, w = ds->width;
    for (int64_t c = 0; c < ds->channels; c++, src += h * w) {
        for (int64_t y = 0; y < h; y++, dst += w) {
            int64_t sy = y + dy;
            for (int64_t x = 0; x < w; x++) {
                int64_t sx = (flip ? w - 1 - x : x) + dx;
                dst[x] = sy >= 0 && sy < h && sx >= 0 && sx < w
                             ? src[sy * w + sx]
                             : a->fill;
            }
        }
    }
}

/* The position in the epoch's order of this rank's sample number p: ranks
 * take every world-th sample from their rank on; a padded share goes on
 * from the order's start. */
static int64_t global_pos(const xg_loader *ld, int64_t p)
{
    return (ld->rank + ld->world * p) % ld->count;
}

/* Copies this rank's samples pos .. pos+b into the batch buffers,
 * augmented when the loader augments (with the draws of their position in
 * the whole epoch, as one process would make them). */
static void loader_gather(xg_loader *ld, int64_t b)
{
    const xg_dataset *ds = ld->ds;
    for (int64_t i = 0; i < b; i++) {
        int64_t g = global_pos(ld, ld->pos + i);
        int64_t k = ld->order[g];
        float *dst = ld->images + (size_t)i * ld->sample;
        const float *src = ds->images + (size_t)k * ld->sample;
        if (ld->augment)
            augment_image(ld, g, dst, src);
        else
            memcpy(dst, src, ld->sample * sizeof *ld->images);
        ld->labels[i] = ds->labels[k];
    }
}

int xg_loader_next(xg_loader *ld, xg_tensor **images, xg_tensor **labels)
{
    if (!ld || !images || !labels)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "loader_next: loader and outputs must not be NULL");
    *images = *labels = NULL;
    int64_t left = ld->share - ld->pos;
    if (left == 0 || (ld->drop_last && left < ld->batch_size))
        return 0;
    int64_t b = left < ld->batch_size ? left : ld->batch_size;
    const xg_dataset *ds = ld->ds;
    loader_gather(ld, b);
    xg_tensor *x = xg_tensor_from_data(
        ld->images, XG_F32, XG_SHAPE(b, ds->channels, ds->height, ds->width));
    xg_tensor *y = x ? xg_tensor_from_data(ld->labels, XG_I32, XG_SHAPE(b))
                     : NULL;
    if (!y) {
        xg_tensor_free(x);
        return xg_last_status() != XG_OK ? (int)xg_last_status()
                                          : XG_ERR_BACKEND;
    }
    ld->pos += b;
    *images = x;
    *labels = y;
    return 1;
}

xg_status xg_loader_set_augment(xg_loader *ld, const xg_augment *aug)
{
    if (!ld)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "loader_set_augment: loader is NULL");
    if (!aug) {
        ld->augment = false;
        return XG_OK;
    }
    int64_t side = ld->ds->height < ld->ds->width ? ld->ds->height
                                                  : ld->ds->width;
    if (aug->shift < 0 || aug->shift >= side)
        return xg_set_error(XG_ERR_INVALID_ARG, "loader_set_augment: shift "
                            "is %d; must be in [0, %lld) for %lldx%lld "
                            "images", (int)aug->shift, (long long)side,
                            (long long)ld->ds->height,
                            (long long)ld->ds->width);
    if (!isfinite(aug->fill))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "loader_set_augment: fill is not finite");
    ld->aug = *aug;
    ld->augment = true;
    return XG_OK;
}

int64_t xg_loader_batches(const xg_loader *ld)
{
    if (!ld)
        return 0;
    if (ld->drop_last)
        return ld->share / ld->batch_size;
    return (ld->share + ld->batch_size - 1) / ld->batch_size;
}

int64_t xg_loader_samples(const xg_loader *ld)
{
    return ld ? ld->share : 0;
}

xg_status xg_loader_set_shard(xg_loader *ld, int rank, int world, bool pad)
{
    if (!ld)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "loader_set_shard: loader is NULL");
    if (world < 1 || rank < 0 || rank >= world)
        return xg_set_error(XG_ERR_INVALID_ARG, "loader_set_shard: rank %d "
                            "of a world of %d; need 0 <= rank < world",
                            rank, world);
    ld->rank = rank;
    ld->world = world;
    ld->pad = pad;
    ld->share = pad ? (ld->count + world - 1) / world
                    : (ld->count - rank + world - 1) / world;
    ld->pos = 0;
    return XG_OK;
}

void xg_loader_free(xg_loader *ld)
{
    if (!ld)
        return;
    free(ld->order);
    free(ld->images);
    free(ld->labels);
    free(ld);
}
