/* Text data: files read as bytes, the byte tokenizer, token streams split
 * into train and validation, random and evaluation windows, and the list
 * of Debian's fortune files (the default corpus).
 *
 * Everything here lives in host memory; batches are uploaded through
 * xg_tensor_from_data, so they land on the current device and in the open
 * scope like any other new tensor.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_rng.h"
#include "xgrad_data.h"

#define TEXT_READ_CHUNK ((size_t)1 << 20) /* bytes per read() */

/* ===== The byte tokenizer ================================================ */

xg_status xg_byte_encode(const void *bytes, size_t n, int32_t *tokens)
{
    if (n > 0 && (!bytes || !tokens))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "byte_encode: bytes and tokens must not be NULL");
    const uint8_t *b = bytes;
    for (size_t i = 0; i < n; i++)
        tokens[i] = b[i];
    return XG_OK;
}

xg_status xg_byte_decode(const int32_t *tokens, size_t n, void *bytes)
{
    if (n > 0 && (!bytes || !tokens))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "byte_decode: tokens and bytes must not be NULL");
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= XG_BYTE_VOCAB)
            return xg_set_error(XG_ERR_INVALID_ARG,
                                "byte_decode: token %zu is %" PRId32 "; byte "
                                "tokens are in [0, %d)",
                                i, tokens[i], XG_BYTE_VOCAB);
    uint8_t *b = bytes;
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)tokens[i];
    return XG_OK;
}

/* ===== Reading files ===================================================== */

static _Atomic uint64_t text_max = XG_TEXT_DEFAULT_MAX_BYTES;

uint64_t xg_text_set_max_bytes(uint64_t max)
{
    return atomic_exchange(&text_max, max ? max : XG_TEXT_DEFAULT_MAX_BYTES);
}

uint64_t xg_text_max_bytes(void)
{
    return atomic_load(&text_max);
}

/* A growing byte buffer; `cap` never passes the limit + 1. */
typedef struct text_buf {
    uint8_t *b;
    size_t len, cap;
} text_buf;

/* Makes room for at least `want` bytes in all (want <= limit), doubling
 * the buffer up to `limit`. */
static xg_status buf_reserve(text_buf *buf, size_t want, size_t limit)
{
    if (want <= buf->cap)
        return XG_OK;
    size_t next = buf->cap > want / 2 ? buf->cap * 2 : want;
    if (next < want || next > limit)
        next = limit < want ? want : limit; /* overflowed, or past the limit */
    uint8_t *p = realloc(buf->b, next);
    if (!p) {
        p = realloc(buf->b, want);
        next = want;
    }
    if (!p)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "text: cannot allocate %zu bytes", want);
    buf->b = p;
    buf->cap = next;
    return XG_OK;
}

static xg_status too_large(const char *path, uint64_t total, uint64_t max)
{
    return xg_set_error(XG_ERR_TOO_LARGE,
                        "text: %s: the files read so far come to at least "
                        "%" PRIu64 " bytes, over the limit of %" PRIu64
                        " bytes (see xg_text_set_max_bytes)",
                        path, total, max);
}

/* Opens `path` without blocking (a FIFO would wait for a writer) and
 * refuses anything but a regular file. *size gets its size. */
static xg_status text_open(const char *path, int *fd, uint64_t *size)
{
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return xg_set_error(XG_ERR_NOT_FOUND, "text: %s: no such file",
                                path);
        return xg_set_error(XG_ERR_IO, "text: cannot open %s: %s", path,
                            strerror(errno));
    }
    struct stat sb;
    if (fstat(*fd, &sb) != 0)
        return xg_set_error(XG_ERR_IO, "text: %s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return xg_set_error(XG_ERR_IO, "text: %s is a directory, not a file",
                            path);
    if (!S_ISREG(sb.st_mode))
        return xg_set_error(XG_ERR_IO, "text: %s: not a regular file", path);
    int flags = fcntl(*fd, F_GETFL);
    if (flags < 0 || fcntl(*fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        return xg_set_error(XG_ERR_IO, "text: %s: %s", path, strerror(errno));
    *size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    return XG_OK;
}

/* Appends the bytes of `path` to buf, never holding more than max + 1
 * bytes in all (a file may grow while it is read). */
static xg_status text_read_one(const char *path, uint64_t max, text_buf *buf)
{
    int fd = -1;
    uint64_t size = 0;
    size_t start = buf->len;
    xg_status st = text_open(path, &fd, &size);
    if (st == XG_OK && size > max - buf->len)
        st = too_large(path, (uint64_t)buf->len + size, max);
    /* room for the file as fstat saw it, and one byte to see its end */
    if (st == XG_OK)
        st = buf_reserve(buf, buf->len + (size_t)size + 1, (size_t)max + 1);
    while (st == XG_OK) {
        if (buf->len == buf->cap) {
            if (buf->len > max)
                break; /* checked below */
            size_t want = buf->len + TEXT_READ_CHUNK;
            if (want < buf->len || want > max + 1)
                want = (size_t)max + 1;
            if ((st = buf_reserve(buf, want, (size_t)max + 1)) != XG_OK)
                break;
        }
        size_t room = buf->cap - buf->len;
        if (room > TEXT_READ_CHUNK)
            room = TEXT_READ_CHUNK;
        ssize_t n = read(fd, buf->b + buf->len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            st = xg_set_error(XG_ERR_IO, "text: %s: read error: %s", path,
                              strerror(errno));
        if (n <= 0)
            break;
        buf->len += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (st == XG_OK && buf->len > max)
        st = too_large(path, buf->len, max);
    if (st == XG_OK && buf->len == start)
        st = xg_set_error(XG_ERR_FORMAT, "text: %s: empty file", path);
    return st;
}

xg_status xg_text_read_files(const char *const *paths, int64_t count,
                             uint8_t **bytes, size_t *len)
{
    if (!bytes || !len)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_read_files: outputs must not be NULL");
    *bytes = NULL;
    *len = 0;
    if (!paths || count < 1)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_read_files: no files (count %" PRId64 ")",
                            count);
    for (int64_t i = 0; i < count; i++)
        if (!paths[i])
            return xg_set_error(XG_ERR_INVALID_ARG,
                                "text_read_files: path %" PRId64 " is NULL",
                                i);
    uint64_t max = xg_text_max_bytes();
    if (max >= SIZE_MAX)
        max = SIZE_MAX - 1; /* max + 1 must be a size */
    text_buf buf = {0};
    xg_status st = XG_OK;
    for (int64_t i = 0; i < count && st == XG_OK; i++)
        st = text_read_one(paths[i], max, &buf);
    if (st != XG_OK) {
        free(buf.b);
        return st;
    }
    *bytes = buf.b;
    *len = buf.len;
    return XG_OK;
}

/* ===== Token streams ===================================================== */

static int64_t text_default_train(int64_t n)
{
    return n - (int64_t)llround((double)n * XG_TEXT_DEFAULT_VAL_FRACTION);
}

/* A set of n tokens, uninitialised; NULL with the error set. */
static xg_text *text_alloc(int64_t n, int32_t vocab_size)
{
    if ((uint64_t)n > SIZE_MAX / sizeof(int32_t)) {
        xg_set_error(XG_ERR_TOO_LARGE, "text: %" PRId64 " tokens do not fit "
                     "in memory", n);
        return NULL;
    }
    xg_text *t = calloc(1, sizeof *t);
    if (t)
        t->tokens = malloc((size_t)n * sizeof *t->tokens);
    if (!t || !t->tokens) {
        xg_text_free(t);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "text: cannot allocate %" PRId64
                     " tokens", n);
        return NULL;
    }
    t->n = n;
    t->vocab_size = vocab_size;
    t->n_train = text_default_train(n);
    return t;
}

xg_status xg_text_load(const char *const *paths, int64_t count,
                       xg_text **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_load: out is NULL");
    *out = NULL;
    uint8_t *bytes = NULL;
    size_t len = 0;
    xg_status st = xg_text_read_files(paths, count, &bytes, &len);
    if (st != XG_OK)
        return st;
    xg_text *t = text_alloc((int64_t)len, XG_BYTE_VOCAB);
    if (!t) {
        free(bytes);
        return xg_last_status();
    }
    xg_byte_encode(bytes, len, t->tokens);
    free(bytes);
    *out = t;
    return XG_OK;
}

xg_status xg_text_from_tokens(const int32_t *tokens, int64_t n,
                              int32_t vocab_size, xg_text **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_from_tokens: out is NULL");
    *out = NULL;
    if (!tokens || n < 1 || vocab_size < 1)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_from_tokens: tokens is %s, n %" PRId64
                            ", vocab_size %" PRId32 " (expected tokens, "
                            "n >= 1, vocab_size >= 1)",
                            tokens ? "set" : "NULL", n, vocab_size);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab_size)
            return xg_set_error(XG_ERR_INVALID_ARG,
                                "text_from_tokens: token %" PRId64 " is %"
                                PRId32 ", outside [0, %" PRId32 ")",
                                i, tokens[i], vocab_size);
    xg_text *t = text_alloc(n, vocab_size);
    if (!t)
        return xg_last_status();
    memcpy(t->tokens, tokens, (size_t)n * sizeof *tokens);
    *out = t;
    return XG_OK;
}

static bool text_ok(const xg_text *t)
{
    return t && t->tokens && t->n >= 1 && t->n_train >= 0 &&
           t->n_train <= t->n;
}

xg_status xg_text_set_val_fraction(xg_text *text, double fraction)
{
    if (!text_ok(text))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_set_val_fraction: text is NULL or "
                            "malformed");
    if (!(fraction >= 0.0 && fraction < 1.0))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_set_val_fraction: fraction is %g; must be "
                            "in [0, 1)", fraction);
    text->n_train = text->n - (int64_t)llround((double)text->n * fraction);
    return XG_OK;
}

/* The split's tokens [*lo, *lo + *len); false for an unknown split. */
static bool split_range(const xg_text *t, xg_text_split split, int64_t *lo,
                        int64_t *len)
{
    switch (split) {
    case XG_TEXT_TRAIN:
        *lo = 0;
        *len = t->n_train;
        return true;
    case XG_TEXT_VAL:
        *lo = t->n_train;
        *len = t->n - t->n_train;
        return true;
    case XG_TEXT_ALL:
        *lo = 0;
        *len = t->n;
        return true;
    }
    return false;
}

static const char *split_name(xg_text_split split)
{
    return split == XG_TEXT_TRAIN ? "train"
           : split == XG_TEXT_VAL ? "val"
                                  : "whole";
}

int64_t xg_text_split_len(const xg_text *text, xg_text_split split)
{
    int64_t lo = 0, len = 0;
    if (!text_ok(text) || !split_range(text, split, &lo, &len))
        return 0;
    return len;
}

/* Checks the set, the split and the context; the split's range to
 * *lo, *len. `need_window`: refuse a split shorter than context + 1. */
static xg_status window_check(const char *fn, const xg_text *t,
                              xg_text_split split, int64_t context,
                              bool need_window, int64_t *lo, int64_t *len)
{
    if (!text_ok(t))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: text is NULL or "
                            "malformed", fn);
    if (!split_range(t, split, lo, len))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: unknown split %d", fn,
                            (int)split);
    if (context < 1)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: context is %" PRId64
                            "; must be >= 1", fn, context);
    if (need_window && *len - 1 < context)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "%s: the %s split has %" PRId64 " tokens, fewer "
                            "than context + 1 = %" PRId64 " (use a smaller "
                            "context, more text, or another validation "
                            "fraction)",
                            fn, split_name(split), *len,
                            context == INT64_MAX ? context : context + 1);
    return XG_OK;
}

/* The state of row `row` of batch `counter`: a hash of the three. */
static uint64_t window_state(uint64_t seed, uint64_t counter, int64_t row)
{
    uint64_t h = mix64(seed ^ 0x243F6A8885A308D3u);
    h = mix64(h ^ mix64(counter + 0x13198A2E03707344u));
    return mix64(h ^ mix64((uint64_t)row + 0xA4093822299F31D0u));
}

xg_status xg_text_batch_starts(const xg_text *text, xg_text_split split,
                               int64_t batch, int64_t context, uint64_t seed,
                               uint64_t counter, int64_t *starts)
{
    int64_t lo = 0, len = 0;
    xg_status st = window_check("text_batch", text, split, context, true,
                                &lo, &len);
    if (st != XG_OK)
        return st;
    if (batch < 1 || !starts)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_batch: batch is %"
                            PRId64 " and starts %s (expected batch >= 1)",
                            batch, starts ? "set" : "NULL");
    uint64_t count = (uint64_t)(len - context); /* starts lo .. lo+count-1 */
    for (int64_t r = 0; r < batch; r++) {
        uint64_t state = window_state(seed, counter, r);
        starts[r] = lo + (int64_t)rand_below(&state, count);
    }
    return XG_OK;
}

/* Uploads the windows at starts[0 .. b) as x and y [b, context]. */
static xg_status windows_upload(const char *fn, const xg_text *t,
                                const int64_t *starts, int64_t b,
                                int64_t context, xg_tensor **x, xg_tensor **y)
{
    if ((uint64_t)context > SIZE_MAX / sizeof(int32_t) ||
        (uint64_t)b > SIZE_MAX / 2 / ((size_t)context * sizeof(int32_t)))
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: a [%" PRId64 ", %" PRId64
                            "] batch does not fit in memory", fn, b,
                            context);
    size_t row = (size_t)context * sizeof(int32_t);
    int32_t *hx = malloc(2 * (size_t)b * row);
    if (!hx)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: cannot allocate a [%"
                            PRId64 ", %" PRId64 "] batch", fn, b, context);
    int32_t *hy = hx + (size_t)b * (size_t)context;
    for (int64_t r = 0; r < b; r++) {
        const int32_t *src = t->tokens + starts[r];
        memcpy(hx + (size_t)r * (size_t)context, src, row);
        memcpy(hy + (size_t)r * (size_t)context, src + 1, row);
    }
    xg_tensor *tx = xg_tensor_from_data(hx, XG_I32, XG_SHAPE(b, context));
    xg_tensor *ty = tx ? xg_tensor_from_data(hy, XG_I32, XG_SHAPE(b, context))
                       : NULL;
    free(hx);
    if (!ty) {
        xg_tensor_free(tx);
        return xg_last_status() != XG_OK ? xg_last_status() : XG_ERR_BACKEND;
    }
    *x = tx;
    *y = ty;
    return XG_OK;
}

xg_status xg_text_batch(const xg_text *text, xg_text_split split,
                        int64_t batch, int64_t context, uint64_t seed,
                        uint64_t counter, xg_tensor **x, xg_tensor **y)
{
    return xg_text_batch_rows(text, split, batch, context, seed, counter, 0,
                              batch, x, y);
}

xg_status xg_text_batch_rows(const xg_text *text, xg_text_split split,
                             int64_t batch, int64_t context, uint64_t seed,
                             uint64_t counter, int64_t first, int64_t rows,
                             xg_tensor **x, xg_tensor **y)
{
    if (!x || !y)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_batch: x and y must not be NULL");
    *x = *y = NULL;
    if (batch < 1)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_batch: batch is %"
                            PRId64 "; must be >= 1", batch);
    if (first < 0 || rows < 1 || first > batch - rows)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_batch: rows [%" PRId64
                            ", %" PRId64 ") are not inside a batch of %"
                            PRId64, first, first + rows, batch);
    if ((uint64_t)batch > SIZE_MAX / sizeof(int64_t))
        return xg_set_error(XG_ERR_TOO_LARGE, "text_batch: batch %" PRId64
                            " does not fit in memory", batch);
    int64_t *starts = malloc((size_t)batch * sizeof *starts);
    if (!starts)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "text_batch: cannot "
                            "allocate %" PRId64 " rows", batch);
    xg_status st = xg_text_batch_starts(text, split, batch, context, seed,
                                        counter, starts);
    if (st == XG_OK)
        st = windows_upload("text_batch", text, starts + first, rows,
                            context, x, y);
    free(starts);
    return st;
}

int64_t xg_text_eval_windows(const xg_text *text, xg_text_split split,
                             int64_t context)
{
    int64_t lo = 0, len = 0;
    xg_status st = window_check("text_eval_windows", text, split, context,
                                false, &lo, &len);
    if (st != XG_OK)
        return st;
    return len < 1 ? 0 : (len - 1) / context;
}

xg_status xg_text_eval_batch(const xg_text *text, xg_text_split split,
                             int64_t context, int64_t batch, int64_t index,
                             xg_tensor **x, xg_tensor **y)
{
    if (!x || !y)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_eval_batch: x and y must not be NULL");
    *x = *y = NULL;
    int64_t lo = 0, len = 0;
    xg_status st = window_check("text_eval_batch", text, split, context,
                                true, &lo, &len);
    if (st != XG_OK)
        return st;
    int64_t windows = (len - 1) / context;
    if (batch < 1)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_eval_batch: batch is %"
                            PRId64 "; must be >= 1", batch);
    int64_t batches = windows / batch + (windows % batch != 0);
    if (index < 0 || index >= batches)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "text_eval_batch: index %" PRId64 " is outside "
                            "[0, %" PRId64 ") (%" PRId64 " windows of %"
                            PRId64 " + 1 tokens, %" PRId64 " per batch)",
                            index, batches, windows, context, batch);
    int64_t first = index * batch;
    int64_t b = windows - first < batch ? windows - first : batch;
    int64_t *starts = malloc((size_t)b * sizeof *starts);
    if (!starts)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "text_eval_batch: cannot "
                            "allocate %" PRId64 " rows", b);
    for (int64_t r = 0; r < b; r++)
        starts[r] = lo + (first + r) * context;
    st = windows_upload("text_eval_batch", text, starts, b, context, x, y);
    free(starts);
    return st;
}

void xg_text_free(xg_text *text)
{
    if (!text)
        return;
    free(text->tokens);
    free(text);
}

/* ===== The fortune files ================================================= */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "DIR/NAME", malloc'd; NULL on OOM. */
static char *join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    }
    return p;
}

/* Appends `path` (taken) to the list, growing it; frees it on failure. */
static xg_status list_push(xg_path_list *l, size_t *cap, char *path)
{
    if ((size_t)l->count == *cap) {
        size_t next = *cap ? *cap * 2 : 64;
        const char **p = realloc(l->paths, next * sizeof *p);
        if (!p) {
            free(path);
            return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                                "fortunes_list: out of memory");
        }
        l->paths = p;
        *cap = next;
    }
    l->paths[l->count++] = path;
    return XG_OK;
}

xg_status xg_fortunes_list(const char *dir, xg_path_list *out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "fortunes_list: out is NULL");
    out->paths = NULL;
    out->count = 0;
    if (!dir)
        dir = XG_FORTUNES_DIR;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return xg_set_error(XG_ERR_NOT_FOUND,
                                "fortunes_list: no folder %s (Debian: "
                                "apt-get install fortunes)", dir);
        return xg_set_error(XG_ERR_IO, "fortunes_list: cannot read %s: %s",
                            dir, strerror(errno));
    }
    size_t cap = 0;
    xg_status st = XG_OK;
    struct dirent *e;
    errno = 0;
    while (st == XG_OK && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (name[0] == '.' || ends_with(name, ".dat") ||
            ends_with(name, ".u8"))
            continue;
        char *path = join(dir, name);
        struct stat sb;
        if (!path) {
            st = xg_set_error(XG_ERR_OUT_OF_MEMORY,
                              "fortunes_list: out of memory");
        } else if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path); /* a folder such as off/, a dangling link, ... */
        } else {
            st = list_push(out, &cap, path);
        }
        errno = 0;
    }
    if (st == XG_OK && errno != 0)
        st = xg_set_error(XG_ERR_IO, "fortunes_list: cannot read %s: %s",
                          dir, strerror(errno));
    closedir(d);
    if (st == XG_OK && out->count == 0)
        st = xg_set_error(XG_ERR_NOT_FOUND, "fortunes_list: no fortune file "
                          "in %s (Debian: apt-get install fortunes)", dir);
    if (st != XG_OK) {
        xg_path_list_free(out);
        return st;
    }
    qsort(out->paths, (size_t)out->count, sizeof *out->paths, path_cmp);
    return XG_OK;
}

void xg_path_list_free(xg_path_list *list)
{
    if (!list)
        return;
    for (int64_t i = 0; i < list->count; i++)
        free((char *)list->paths[i]);
    free(list->paths);
    list->paths = NULL;
    list->count = 0;
}
