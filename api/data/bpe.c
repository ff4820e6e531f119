/* GPT-2's byte-level BPE tokenizer: the vocabulary and merges files, the
 * pre-tokenizer (OpenAI's pattern applied by hand to the characters of
 * UTF-8 text), the merges, decoding, and text data sets made with it.
 *
 * Internally a token is the byte string it stands for; the byte alphabet
 * of the files (bytes_to_unicode) is undone when they are read. A merge is
 * a pair of token ids with a rank and the id of the joined token. A piece
 * of text starts as the ids of its single bytes; the pair of adjacent
 * tokens with the lowest rank is merged everywhere in the piece, left to
 * right without overlaps, and again until no adjacent pair has a rank:
 * the algorithm of OpenAI's encoder, done in place for short pieces and
 * with a heap for long ones (see bpe_heap_merge).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_rng.h"
#include "xgrad_data.h"

#include "bpe_unicode.h"

struct xg_bpe {
    int32_t vocab_size;  /* largest id + 1 */
    int32_t n_tokens;    /* ids in use */
    int64_t n_merges;
    uint32_t *tok_off;   /* [vocab_size]: token id's bytes in tok_bytes */
    uint32_t *tok_len;   /* [vocab_size]: 0 for an unused id */
    uint8_t *tok_bytes;
    int32_t byte_id[256]; /* the token of each single byte */
    int32_t *vocab_slots; /* ids by bytes, open addressing; -1 empty */
    size_t vocab_mask;
    struct bpe_merge *merge_slots; /* merges by pair; key UINT64_MAX empty */
    size_t merge_mask;
};

typedef struct bpe_merge {
    uint64_t key;  /* (uint64_t)left << 32 | right */
    int32_t rank;
    int32_t id;    /* the joined token */
} bpe_merge;

#define MERGE_EMPTY UINT64_MAX
/* Pieces of up to this many bytes merge in place; longer ones by heap. */
#define BPE_SHORT 24
/* The most pieces one encode call remembers. */
#define BPE_CACHE_MAX ((size_t)1 << 20)

/* ===== Hashing =========================================================== */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15u ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9u;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    h = (h ^ w) * 0x94D049BB133111EBu;
    return mix64(h);
}

/* The smallest power of two >= 2n (>= 16). */
static size_t table_size(size_t n)
{
    size_t s = 16;
    while (s < 2 * n)
        s *= 2;
    return s;
}

static const uint8_t *tok_of(const xg_bpe *b, int32_t id)
{
    return b->tok_bytes + b->tok_off[id];
}

static int32_t vocab_find(const xg_bpe *b, const uint8_t *p, size_t n)
{
    for (size_t i = hash_bytes(p, n) & b->vocab_mask;;
         i = (i + 1) & b->vocab_mask) {
        int32_t id = b->vocab_slots[i];
        if (id < 0)
            return -1;
        if (b->tok_len[id] == n && memcmp(tok_of(b, id), p, n) == 0)
            return id;
    }
}

static void vocab_insert(xg_bpe *b, int32_t id)
{
    size_t i = hash_bytes(tok_of(b, id), b->tok_len[id]) & b->vocab_mask;
    while (b->vocab_slots[i] >= 0)
        i = (i + 1) & b->vocab_mask;
    b->vocab_slots[i] = id;
}

/* The merge of the pair (l, r), or NULL. */
static inline const bpe_merge *merge_find(const xg_bpe *b, int32_t l,
                                          int32_t r)
{
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (size_t i = mix64(key) & b->merge_mask;; i = (i + 1) & b->merge_mask) {
        const bpe_merge *m = &b->merge_slots[i];
        if (m->key == key)
            return m;
        if (m->key == MERGE_EMPTY)
            return NULL;
    }
}

/* ===== GPT-2's byte alphabet ============================================= */

/* bytes_to_unicode: the printable bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF stand for themselves; the other 68 (controls, space, 0x7F..0xA0,
 * the soft hyphen 0xAD) in increasing order for U+0100..U+0143. */
static bool byte_is_printable(int c)
{
    return (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) ||
           (c >= 0xAE && c <= 0xFF);
}

/* The byte that code point cp stands for, or -1. */
static int alphabet_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_printable((int)cp) ? (int)cp : -1;
    uint32_t k = cp - 0x100; /* the k-th byte that is not printable */
    if (k < 33)
        return (int)k;               /* 0x00 .. 0x20 */
    if (k < 67)
        return (int)(0x7F + k - 33); /* 0x7F .. 0xA0 */
    return k == 67 ? 0xAD : -1;
}

/* Decodes one UTF-8 character of s[0 .. n) strictly into *cp; returns its
 * length, or 0 if s does not start with a valid character. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        *cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        *cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        *cp = *cp << 6 | (s[i] & 0x3F);
    }
    return len;
}

/* Converts a token written in the byte alphabet (UTF-8, n bytes) to its
 * bytes in out (room for n); returns their number, or -1 for a character
 * outside the alphabet or invalid UTF-8. */
static int64_t alphabet_to_bytes(const char *s, size_t n, uint8_t *out)
{
    const uint8_t *p = (const uint8_t *)s;
    int64_t k = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t len = utf8_decode(p + i, n - i, &cp);
        int b = len ? alphabet_byte(cp) : -1;
        if (b < 0)
            return -1;
        out[k++] = (uint8_t)b;
        i += len;
    }
    return k;
}

/* ===== Reading the files ================================================= */

/* Reads a regular file whole, NUL-terminated; `what` names it in errors. */
static xg_status read_file(const char *path, const char *what, char **buf,
                           size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return xg_set_error(XG_ERR_NOT_FOUND, "bpe: %s %s: no such file",
                                what, path);
        return xg_set_error(XG_ERR_IO, "bpe: cannot open the %s %s: %s",
                            what, path, strerror(errno));
    }
    xg_status st = XG_OK;
    struct stat sb;
    char *b = NULL;
    size_t n = 0;
    if (fstat(fd, &sb) != 0) {
        st = xg_set_error(XG_ERR_IO, "bpe: %s %s: %s", what, path,
                          strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = xg_set_error(XG_ERR_IO, "bpe: %s %s: not a regular file", what,
                          path);
    } else if ((uint64_t)sb.st_size > XG_BPE_MAX_FILE_BYTES) {
        st = xg_set_error(XG_ERR_TOO_LARGE, "bpe: %s %s: %lld bytes, over "
                          "the limit of %" PRIu64, what, path,
                          (long long)sb.st_size, XG_BPE_MAX_FILE_BYTES);
    } else {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
            st = xg_set_error(XG_ERR_IO, "bpe: %s %s: %s", what, path,
                              strerror(errno));
    }
    /* the size fstat saw, and a byte to see that the file did not grow */
    size_t cap = st == XG_OK ? (size_t)sb.st_size + 2 : 0;
    if (st == XG_OK && !(b = malloc(cap)))
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe: cannot allocate %zu "
                          "bytes for %s", cap, path);
    while (st == XG_OK && n < cap - 1) {
        ssize_t r = read(fd, b + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            st = xg_set_error(XG_ERR_IO, "bpe: %s %s: read error: %s", what,
                              path, strerror(errno));
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (st == XG_OK && n == cap - 1)
        st = xg_set_error(XG_ERR_IO, "bpe: %s %s changed while it was read",
                          what, path);
    if (st != XG_OK) {
        free(b);
        return st;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return XG_OK;
}

/* ===== The vocabulary ==================================================== */

/* At most 60 bytes of a token for a message. */
#define TOK_FMT "\"%.*s%s\""
#define TOK_ARG(s, n) (int)((n) > 60 ? 60 : (n)), (s), ((n) > 60 ? "..." : "")

static xg_status vocab_parse(xg_bpe *b, const char *path, const char *text,
                             size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s:%d:%d: %s",
                            path, jerr.line, jerr.column, jerr.text);
    xg_status st = XG_OK;
    const char *key;
    json_t *value;
    size_t count = 0, total = 0;
    json_int_t max_id = -1;
    if (!json_is_object(root)) {
        st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: expected a "
                          "JSON object of tokens and ids", path);
        goto done;
    }
    count = json_object_size(root);
    if (count > (size_t)XG_BPE_MAX_VOCAB) {
        st = xg_set_error(XG_ERR_TOO_LARGE, "bpe: vocabulary %s: %zu tokens, "
                          "over the limit of %" PRId32, path, count,
                          XG_BPE_MAX_VOCAB);
        goto done;
    }
    json_object_foreach(root, key, value) {
        size_t n = strlen(key);
        json_int_t id = json_is_integer(value) ? json_integer_value(value)
                                               : -1;
        if (id < 0 || id >= XG_BPE_MAX_VOCAB) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: the id of "
                              "token " TOK_FMT " is not an integer in [0, %"
                              PRId32 ")", path, TOK_ARG(key, n),
                              XG_BPE_MAX_VOCAB);
            goto done;
        }
        if (n == 0) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: id %lld "
                              "is the empty token", path, (long long)id);
            goto done;
        }
        max_id = id > max_id ? id : max_id;
        total += n;
    }
    if (total > UINT32_MAX || max_id < 0) {
        st = xg_set_error(max_id < 0 ? XG_ERR_FORMAT : XG_ERR_TOO_LARGE,
                          "bpe: vocabulary %s: %s", path,
                          max_id < 0 ? "no tokens" : "tokens too long");
        goto done;
    }
    b->vocab_size = (int32_t)max_id + 1;
    b->n_tokens = (int32_t)count;
    size_t vs = (size_t)b->vocab_size;
    b->tok_off = calloc(vs, sizeof *b->tok_off);
    b->tok_len = calloc(vs, sizeof *b->tok_len);
    b->tok_bytes = malloc(total ? total : 1);
    b->vocab_mask = table_size(count) - 1;
    b->vocab_slots = malloc((b->vocab_mask + 1) * sizeof *b->vocab_slots);
    if (!b->tok_off || !b->tok_len || !b->tok_bytes || !b->vocab_slots) {
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe: vocabulary %s: out of "
                          "memory for %zu tokens", path, count);
        goto done;
    }
    memset(b->vocab_slots, 0xFF, (b->vocab_mask + 1) * sizeof *b->vocab_slots);
    size_t used = 0;
    json_object_foreach(root, key, value) {
        size_t n = strlen(key);
        int32_t id = (int32_t)json_integer_value(value);
        int64_t k = alphabet_to_bytes(key, n, b->tok_bytes + used);
        if (k < 0) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: token "
                              TOK_FMT " (id %" PRId32 ") has a character "
                              "outside GPT-2's byte alphabet", path,
                              TOK_ARG(key, n), id);
            goto done;
        }
        if (b->tok_len[id] != 0) {
            const uint8_t *o = tok_of(b, id);
            size_t on = b->tok_len[id];
            st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: id %"
                              PRId32 " is given to two tokens, " TOK_FMT
                              " and (in bytes) " TOK_FMT, path, id,
                              TOK_ARG(key, n), TOK_ARG((const char *)o, on));
            goto done;
        }
        b->tok_off[id] = (uint32_t)used;
        b->tok_len[id] = (uint32_t)k;
        used += (size_t)k;
        vocab_insert(b, id);
    }
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        b->byte_id[c] = vocab_find(b, &byte, 1);
        if (b->byte_id[c] < 0) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: vocabulary %s: no token "
                              "for the byte 0x%02X (every byte must have "
                              "one)", path, c);
            goto done;
        }
    }
done:
    json_decref(root);
    return st;
}

/* ===== The merges ======================================================== */

/* The token written as s[0 .. n) in the byte alphabet: its id, or -1 with
 * the error set. tmp has room for n bytes. */
static int32_t merge_part(const xg_bpe *b, const char *path, size_t line,
                          const char *s, size_t n, uint8_t *tmp)
{
    int64_t k = alphabet_to_bytes(s, n, tmp);
    if (k < 0) {
        xg_set_error(XG_ERR_FORMAT, "bpe: merges %s:%zu: token " TOK_FMT
                     " has a character outside GPT-2's byte alphabet", path,
                     line, TOK_ARG(s, n));
        return -1;
    }
    int32_t id = vocab_find(b, tmp, (size_t)k);
    if (id < 0)
        xg_set_error(XG_ERR_FORMAT, "bpe: merges %s:%zu: token " TOK_FMT
                     " is not in the vocabulary", path, line, TOK_ARG(s, n));
    return id;
}

static bool merge_space(char c)
{
    return c == ' ' || c == '\t';
}

static xg_status merges_parse(xg_bpe *b, const char *path, const char *text,
                              size_t len)
{
    /* at most one merge per line */
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    b->merge_mask = table_size(lines) - 1;
    b->merge_slots = malloc((b->merge_mask + 1) * sizeof *b->merge_slots);
    uint8_t *tmp = malloc(2 * len + 2);
    if (!b->merge_slots || !tmp) {
        free(tmp);
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe: merges %s: out of "
                            "memory for %zu lines", path, lines);
    }
    for (size_t i = 0; i <= b->merge_mask; i++)
        b->merge_slots[i].key = MERGE_EMPTY;
    xg_status st = XG_OK;
    size_t line = 0;
    for (size_t pos = 0; pos < len && st == XG_OK;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + 1;
        line++;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        if (line == 1 && n >= 8 && memcmp(s, "#version", 8) == 0)
            continue;
        /* up to three fields, to see a third */
        const char *f[3];
        size_t fl[3], nf = 0;
        for (size_t i = 0; i < n && nf < 3;) {
            while (i < n && merge_space(s[i]))
                i++;
            if (i == n)
                break;
            size_t j = i;
            while (j < n && !merge_space(s[j]))
                j++;
            f[nf] = s + i;
            fl[nf++] = j - i;
            i = j;
        }
        if (nf == 0)
            continue; /* a blank line */
        if (nf != 2) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: merges %s:%zu: expected "
                              "two tokens separated by a space, found %s",
                              path, line, nf == 1 ? "one" : "more");
            break;
        }
        if (b->n_merges >= XG_BPE_MAX_VOCAB) {
            st = xg_set_error(XG_ERR_TOO_LARGE, "bpe: merges %s:%zu: more "
                              "than %" PRId32 " merges", path, line,
                              XG_BPE_MAX_VOCAB);
            break;
        }
        int32_t l = merge_part(b, path, line, f[0], fl[0], tmp);
        int32_t r = l < 0 ? -1 : merge_part(b, path, line, f[1], fl[1], tmp);
        if (r < 0) {
            st = xg_last_status();
            break;
        }
        size_t ln = b->tok_len[l], rn = b->tok_len[r];
        memcpy(tmp, tok_of(b, l), ln);
        memcpy(tmp + ln, tok_of(b, r), rn);
        int32_t id = vocab_find(b, tmp, ln + rn);
        if (id < 0) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: merges %s:%zu: the joined "
                              "token " TOK_FMT " is not in the vocabulary",
                              path, line, TOK_ARG(f[0], (size_t)(f[1] + fl[1] - f[0])));
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
        size_t i = mix64(key) & b->merge_mask;
        while (b->merge_slots[i].key != MERGE_EMPTY &&
               b->merge_slots[i].key != key)
            i = (i + 1) & b->merge_mask;
        if (b->merge_slots[i].key == key) {
            st = xg_set_error(XG_ERR_FORMAT, "bpe: merges %s:%zu: the merge "
                              TOK_FMT " is listed twice (first as merge %"
                              PRId32 ")", path, line,
                              TOK_ARG(f[0], (size_t)(f[1] + fl[1] - f[0])),
                              b->merge_slots[i].rank + 1);
            break;
        }
        b->merge_slots[i] = (bpe_merge){key, (int32_t)b->n_merges, id};
        b->n_merges++;
    }
    free(tmp);
    return st;
}

/* ===== Loading =========================================================== */

void xg_bpe_free(xg_bpe *bpe)
{
    if (!bpe)
        return;
    free(bpe->tok_off);
    free(bpe->tok_len);
    free(bpe->tok_bytes);
    free(bpe->vocab_slots);
    free(bpe->merge_slots);
    free(bpe);
}

xg_status xg_bpe_load_files(const char *vocab_path, const char *merges_path,
                            xg_bpe **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_load_files: out is NULL");
    *out = NULL;
    if (!vocab_path || !merges_path)
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_load_files: a path is "
                            "NULL");
    xg_bpe *b = calloc(1, sizeof *b);
    if (!b)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe: out of memory");
    char *text = NULL;
    size_t len = 0;
    xg_status st = read_file(vocab_path, "vocabulary", &text, &len);
    if (st == XG_OK)
        st = vocab_parse(b, vocab_path, text, len);
    free(text);
    text = NULL;
    if (st == XG_OK)
        st = read_file(merges_path, "merges", &text, &len);
    if (st == XG_OK)
        st = merges_parse(b, merges_path, text, len);
    free(text);
    if (st != XG_OK) {
        xg_bpe_free(b);
        return st;
    }
    *out = b;
    return XG_OK;
}

/* "dir/name", malloc'd; NULL on OOM. */
static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), n = strlen(name);
    char *p = malloc(a + n + 2);
    if (p) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, n + 1);
    }
    return p;
}

static bool file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

xg_status xg_bpe_load(const char *dir, xg_bpe **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_load: out is NULL");
    *out = NULL;
    if (!dir)
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_load: dir is NULL");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return xg_set_error(XG_ERR_NOT_FOUND, "bpe_load: no folder %s", dir);
    static const char *const names[2][2] = {{"vocab.json", "merges.txt"},
                                            {"encoder.json", "vocab.bpe"}};
    for (int k = 0; k < 2; k++) {
        char *v = path_join(dir, names[k][0]);
        char *m = path_join(dir, names[k][1]);
        bool found = v && m && file_exists(v);
        xg_status st = !v || !m ? xg_set_error(XG_ERR_OUT_OF_MEMORY,
                                               "bpe: out of memory")
                       : found  ? xg_bpe_load_files(v, m, out)
                                : XG_OK;
        free(v);
        free(m);
        if (found || st != XG_OK)
            return st;
    }
    return xg_set_error(XG_ERR_NOT_FOUND, "bpe_load: %s holds neither "
                        "vocab.json (with merges.txt) nor encoder.json (with "
                        "vocab.bpe)", dir);
}

int32_t xg_bpe_vocab_size(const xg_bpe *bpe)
{
    return bpe ? bpe->vocab_size : 0;
}

int64_t xg_bpe_merge_count(const xg_bpe *bpe)
{
    return bpe ? bpe->n_merges : 0;
}

const uint8_t *xg_bpe_token_bytes(const xg_bpe *bpe, int32_t id, size_t *len)
{
    if (len)
        *len = 0;
    if (!bpe || id < 0 || id >= bpe->vocab_size || bpe->tok_len[id] == 0)
        return NULL;
    if (len)
        *len = bpe->tok_len[id];
    return tok_of(bpe, id);
}

int32_t xg_bpe_token_id(const xg_bpe *bpe, const void *bytes, size_t len)
{
    if (!bpe || (!bytes && len > 0) || len == 0)
        return -1;
    return vocab_find(bpe, bytes, len);
}

/* ===== The pre-tokenizer ================================================= */

enum { CL_L, CL_N, CL_S, CL_O }; /* letter, number, space, other */

/* The classes of the ASCII characters. */
static const uint8_t ascii_class[128] = {
#define O CL_O
#define S CL_S
#define L CL_L
#define N CL_N
    O, O, O, O, O, O, O, O, O, S, S, S, S, S, O, O, /* \t \n \v \f \r */
    O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O,
    S, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, /* space */
    N, N, N, N, N, N, N, N, N, N, O, O, O, O, O, O, /* 0-9 */
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* A-Z */
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* a-z */
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O,
#undef O
#undef S
#undef L
#undef N
};

static bool in_ranges(const bpe_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* The class of a code point past ASCII. \s is JavaScript's: the
 * characters of the Zs category, U+2028, U+2029 and U+FEFF. */
static int cp_class(uint32_t cp)
{
    if (cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
        cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
        cp == 0x3000 || cp == 0xFEFF)
        return CL_S;
    if (in_ranges(bpe_letters, sizeof bpe_letters / sizeof *bpe_letters, cp))
        return CL_L;
    if (in_ranges(bpe_numbers, sizeof bpe_numbers / sizeof *bpe_numbers, cp))
        return CL_N;
    return CL_O;
}

/* The character at t[p] (p < len): its class to *cls, its length as the
 * result. A byte that does not start a valid UTF-8 character is a
 * character of the class "other". */
static inline size_t char_at(const uint8_t *t, size_t len, size_t p, int *cls)
{
    if (t[p] < 0x80) {
        *cls = ascii_class[t[p]];
        return 1;
    }
    uint32_t cp;
    size_t n = utf8_decode(t + p, len - p, &cp);
    if (n == 0) {
        *cls = CL_O;
        return 1;
    }
    *cls = cp_class(cp);
    return n;
}

/* The end of the piece that starts at t[p] (p < len): the first of the
 * pattern's alternatives that matches there, as a regex engine tries
 * them. */
static size_t piece_end(const uint8_t *t, size_t len, size_t p)
{
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (t[p] == '\'' && p + 1 < len) {
        uint8_t c = t[p + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd')
            return p + 2;
        if (p + 2 < len && ((c == 'r' && t[p + 2] == 'e') ||
                            (c == 'v' && t[p + 2] == 'e') ||
                            (c == 'l' && t[p + 2] == 'l')))
            return p + 3;
    }
    int k, k2;
    size_t q;
    /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' with their space */
    if (t[p] == ' ' && p + 1 < len) {
        size_t w = char_at(t, len, p + 1, &k);
        if (k != CL_S) {
            q = p + 1 + w;
            goto run;
        }
    }
    q = p + char_at(t, len, p, &k);
    if (k != CL_S) {
    run: /* the rest of a run of class k */
        while (q < len) {
            size_t w = char_at(t, len, q, &k2);
            if (k2 != k)
                break;
            q += w;
        }
        return q;
    }
    /* '\s+(?!\S)': the whitespace run, less its last character when a
     * non-space follows; '\s+': the whole run when that leaves nothing. */
    size_t last = p;
    while (q < len) {
        size_t w = char_at(t, len, q, &k2);
        if (k2 != CL_S)
            break;
        last = q;
        q += w;
    }
    return q == len || last == p ? q : last;
}

/* ===== Encoding ========================================================== */

/* A piece remembered by one encode call: its bytes in the text and its
 * tokens in the pool. */
typedef struct cache_slot {
    uint64_t hash;  /* 0: empty */
    size_t key;     /* offset in the text */
    size_t ids;     /* offset in the pool */
    uint32_t key_len, n_ids;
} cache_slot;

/* A pair of adjacent tokens waiting to merge: nodes pos and right. */
typedef struct heap_entry {
    int32_t rank, pos, right, left_id, right_id, id;
} heap_entry;

typedef struct encoder {
    const xg_bpe *b;
    const uint8_t *text;
    int32_t *out;           /* the tokens so far */
    size_t n_out, cap_out;
    cache_slot *slots;
    size_t mask, used;
    int32_t *pool;
    size_t n_pool, cap_pool;
    /* scratch for one piece, for `cap_piece` bytes */
    int32_t *sym, *prev, *next;
    heap_entry *heap, *pending;
    size_t cap_piece;
} encoder;

static xg_status enc_oom(void)
{
    return xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe_encode: out of memory");
}

/* Grows *p (capacity *cap) to hold at least `want` values. */
static bool grow_i32(int32_t **p, size_t *cap, size_t want)
{
    if (want <= *cap)
        return true;
    size_t next = *cap ? *cap : 64;
    while (next < want)
        next *= 2;
    if (next > SIZE_MAX / sizeof **p)
        return false;
    int32_t *q = realloc(*p, next * sizeof **p);
    if (!q)
        return false;
    *p = q;
    *cap = next;
    return true;
}

/* Reallocates *p to n elements of `size` bytes; false (and *p kept) on
 * failure. */
static bool resize(void **p, size_t n, size_t size)
{
    if (n > SIZE_MAX / size)
        return false;
    void *q = realloc(*p, n * size);
    if (q)
        *p = q;
    return q != NULL;
}

/* Room to merge a piece of n bytes: n nodes, 3n heap entries (n - 1 pairs
 * at first and two per merge), 2n pending (two per merge). */
static xg_status enc_scratch(encoder *e, size_t n)
{
    if (n <= e->cap_piece)
        return XG_OK;
    size_t cap = e->cap_piece ? e->cap_piece : 64;
    while (cap < n)
        cap *= 2;
    if (cap > SIZE_MAX / 3 ||
        !resize((void **)&e->sym, cap, sizeof *e->sym) ||
        !resize((void **)&e->prev, cap, sizeof *e->prev) ||
        !resize((void **)&e->next, cap, sizeof *e->next) ||
        !resize((void **)&e->heap, 3 * cap, sizeof *e->heap) ||
        !resize((void **)&e->pending, 2 * cap, sizeof *e->pending))
        return enc_oom();
    e->cap_piece = cap;
    return XG_OK;
}

/* Merges sym[0 .. n) in place as OpenAI's encoder does: the adjacent pair
 * with the lowest rank is merged everywhere, left to right without
 * overlaps, until no pair has a rank. Returns the new length. O(n^2). */
static size_t bpe_short_merge(const xg_bpe *b, int32_t *sym, size_t n)
{
    while (n > 1) {
        const bpe_merge *best = NULL;
        for (size_t i = 0; i + 1 < n; i++) {
            const bpe_merge *m = merge_find(b, sym[i], sym[i + 1]);
            if (m && (!best || m->rank < best->rank))
                best = m;
        }
        if (!best)
            break;
        int32_t l = (int32_t)(best->key >> 32), r = (int32_t)best->key;
        size_t j = 0;
        for (size_t i = 0; i < n;) {
            if (i + 1 < n && sym[i] == l && sym[i + 1] == r) {
                sym[j++] = best->id;
                i += 2;
            } else {
                sym[j++] = sym[i++];
            }
        }
        n = j;
    }
    return n;
}

static bool heap_less(const heap_entry *a, const heap_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_entry *h, size_t *n, heap_entry x)
{
    size_t i = (*n)++;
    while (i > 0 && heap_less(&x, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static heap_entry heap_pop(heap_entry *h, size_t *n)
{
    heap_entry top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = x;
    return top;
}

/* The pair of nodes (l, r) as a heap entry, if it has a merge. */
static bool pair_entry(const xg_bpe *b, const int32_t *sym, int32_t l,
                       int32_t r, heap_entry *x)
{
    const bpe_merge *m = merge_find(b, sym[l], sym[r]);
    if (!m)
        return false;
    *x = (heap_entry){m->rank, l, r, sym[l], sym[r], m->id};
    return true;
}

/* bpe_short_merge's result in O(n log n): the tokens are a linked list of
 * nodes, the pairs that have a merge wait in a heap ordered by (rank,
 * position). All pairs of the lowest rank are merged left to right (a pair
 * that an earlier merge changed is skipped when it comes up) before the
 * pairs these merges made join the heap, which is the order of the
 * in-place algorithm whatever the ranks. Writes the tokens to sym[0 ..)
 * and returns their number. */
static size_t bpe_heap_merge(encoder *e, size_t n)
{
    const xg_bpe *b = e->b;
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    heap_entry *h = e->heap, *pend = e->pending, x;
    size_t nh = 0, np = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++)
        if (pair_entry(b, sym, (int32_t)i, (int32_t)i + 1, &x))
            heap_push(h, &nh, x);
    while (nh > 0) {
        int32_t rank = h[0].rank;
        while (nh > 0 && h[0].rank == rank) {
            heap_entry t = heap_pop(h, &nh);
            if (sym[t.pos] != t.left_id || next[t.pos] != t.right ||
                sym[t.right] != t.right_id)
                continue; /* stale: a node changed or went */
            sym[t.pos] = t.id;
            int32_t nr = next[t.right];
            next[t.pos] = nr;
            if (nr >= 0)
                prev[nr] = t.pos;
            sym[t.right] = -1;
            if (prev[t.pos] >= 0 &&
                pair_entry(b, sym, prev[t.pos], t.pos, &x))
                pend[np++] = x;
            if (nr >= 0 && pair_entry(b, sym, t.pos, nr, &x))
                pend[np++] = x;
        }
        for (size_t i = 0; i < np; i++)
            heap_push(h, &nh, pend[i]);
        np = 0;
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        sym[k++] = sym[i];
    return k;
}

static xg_status enc_emit(encoder *e, const int32_t *ids, size_t n)
{
    if (!grow_i32(&e->out, &e->cap_out, e->n_out + n))
        return enc_oom();
    memcpy(e->out + e->n_out, ids, n * sizeof *ids);
    e->n_out += n;
    return XG_OK;
}

/* Encodes the piece text[p .. p + n) (n >= 2) through the cache. */
static xg_status enc_piece(encoder *e, size_t p, size_t n)
{
    const uint8_t *w = e->text + p;
    uint64_t h = hash_bytes(w, n) | 1;
    size_t i = h & e->mask;
    for (;; i = (i + 1) & e->mask) {
        cache_slot *s = &e->slots[i];
        if (s->hash == 0)
            break;
        if (s->hash == h && s->key_len == n &&
            memcmp(e->text + s->key, w, n) == 0)
            return enc_emit(e, e->pool + s->ids, s->n_ids);
    }
    xg_status st = enc_scratch(e, n);
    if (st != XG_OK)
        return st;
    for (size_t j = 0; j < n; j++)
        e->sym[j] = e->b->byte_id[w[j]];
    size_t k = n <= BPE_SHORT ? bpe_short_merge(e->b, e->sym, n)
                              : bpe_heap_merge(e, n);
    if ((st = enc_emit(e, e->sym, k)) != XG_OK)
        return st;
    /* remember it, if there is room (a table at most half full) */
    if (e->used >= BPE_CACHE_MAX || n > UINT32_MAX ||
        !grow_i32(&e->pool, &e->cap_pool, e->n_pool + k))
        return XG_OK;
    if (2 * (e->used + 1) > e->mask + 1) {
        size_t cap = (e->mask + 1) * 2;
        cache_slot *ns = calloc(cap, sizeof *ns);
        if (!ns)
            return XG_OK;
        for (size_t j = 0; j <= e->mask; j++) {
            if (e->slots[j].hash == 0)
                continue;
            size_t t = e->slots[j].hash & (cap - 1);
            while (ns[t].hash != 0)
                t = (t + 1) & (cap - 1);
            ns[t] = e->slots[j];
        }
        free(e->slots);
        e->slots = ns;
        e->mask = cap - 1;
        for (i = h & e->mask; e->slots[i].hash != 0; i = (i + 1) & e->mask)
            ;
    }
    memcpy(e->pool + e->n_pool, e->sym, k * sizeof *e->sym);
    e->slots[i] = (cache_slot){h, p, e->n_pool, (uint32_t)n, (uint32_t)k};
    e->n_pool += k;
    e->used++;
    return XG_OK;
}

xg_status xg_bpe_encode(const xg_bpe *bpe, const void *text, size_t len,
                        int32_t **tokens, size_t *n)
{
    if (!tokens || !n)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "bpe_encode: tokens and n must not be NULL");
    *tokens = NULL;
    *n = 0;
    if (!bpe || (!text && len > 0))
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_encode: %s is NULL",
                            bpe ? "text" : "the tokenizer");
    if (len == 0)
        return XG_OK;
    encoder e = {.b = bpe, .text = text, .mask = 1023};
    e.slots = calloc(e.mask + 1, sizeof *e.slots);
    xg_status st = e.slots ? XG_OK : enc_oom();
    /* about one token per 4 bytes of English to start with */
    if (st == XG_OK &&
        !grow_i32(&e.out, &e.cap_out, len / 4 + 16))
        st = enc_oom();
    for (size_t p = 0; p < len && st == XG_OK;) {
        size_t q = piece_end(e.text, len, p);
        if (q - p == 1)
            st = enc_emit(&e, &bpe->byte_id[e.text[p]], 1);
        else
            st = enc_piece(&e, p, q - p);
        p = q;
    }
    free(e.slots);
    free(e.pool);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    free(e.pending);
    if (st != XG_OK) {
        free(e.out);
        return st;
    }
    int32_t *out = realloc(e.out, e.n_out * sizeof *e.out);
    *tokens = out ? out : e.out;
    *n = e.n_out;
    return XG_OK;
}

/* ===== Decoding ========================================================== */

xg_status xg_bpe_decode(const xg_bpe *bpe, const int32_t *tokens, size_t n,
                        uint8_t **bytes, size_t *len)
{
    if (!bytes || !len)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "bpe_decode: bytes and len must not be NULL");
    *bytes = NULL;
    *len = 0;
    if (!bpe || (!tokens && n > 0))
        return xg_set_error(XG_ERR_INVALID_ARG, "bpe_decode: %s is NULL",
                            bpe ? "tokens" : "the tokenizer");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= bpe->vocab_size || bpe->tok_len[t] == 0)
            return xg_set_error(XG_ERR_INVALID_ARG, "bpe_decode: token %zu "
                                "is %" PRId32 ", not an id of the "
                                "vocabulary (size %" PRId32 ")",
                                i, t, bpe->vocab_size);
        total += bpe->tok_len[t];
        if (total < bpe->tok_len[t] || total == SIZE_MAX)
            return xg_set_error(XG_ERR_TOO_LARGE, "bpe_decode: the text "
                                "does not fit in memory");
    }
    uint8_t *out = malloc(total + 1);
    if (!out)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "bpe_decode: cannot "
                            "allocate %zu bytes", total + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + k, tok_of(bpe, tokens[i]), bpe->tok_len[tokens[i]]);
        k += bpe->tok_len[tokens[i]];
    }
    out[k] = '\0';
    *bytes = out;
    *len = k;
    return XG_OK;
}

/* ===== Text data sets ==================================================== */

xg_status xg_text_load_bpe(const xg_bpe *bpe, const char *const *paths,
                           int64_t count, xg_text **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_load_bpe: out is NULL");
    *out = NULL;
    if (!bpe)
        return xg_set_error(XG_ERR_INVALID_ARG, "text_load_bpe: the "
                            "tokenizer is NULL");
    uint8_t *bytes = NULL;
    size_t len = 0;
    xg_status st = xg_text_read_files(paths, count, &bytes, &len);
    if (st != XG_OK)
        return st;
    int32_t *tokens = NULL;
    size_t n = 0;
    st = xg_bpe_encode(bpe, bytes, len, &tokens, &n);
    free(bytes);
    if (st == XG_OK)
        st = xg_text_from_tokens(tokens, (int64_t)n, bpe->vocab_size, out);
    free(tokens);
    return st;
}
