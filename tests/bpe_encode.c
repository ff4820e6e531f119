/* bpe_encode: encodes a text file with xg_bpe for tests/bpe_npm.sh.
 *
 *   bpe_encode [--lines] VOCAB MERGES TEXT [IDS]
 *
 * Loads the tokenizer from the two files, encodes TEXT (with --lines each
 * line on its own, without its "\n", the ids one after another), checks
 * that decoding gives back its bytes, and with IDS (a file of decimal token ids
 * separated by white space, the reference encoder's) that the ids are the
 * same; on a difference it prints the first one with the text around it.
 * Prints "TEXT: B bytes, T tokens, S MB/s" (encoding and decoding) and
 * exits 0 when everything agrees, 1 otherwise. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xgrad_data.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads whitespace-separated ids; NULL on error. */
static int32_t *read_ids(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 1024, k = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    long v;
    while (ids && fscanf(f, "%ld", &v) == 1) {
        if (k == cap) {
            int32_t *p = realloc(ids, 2 * cap * sizeof *ids);
            if (!p) {
                free(ids);
                ids = NULL;
                break;
            }
            ids = p;
            cap *= 2;
        }
        ids[k++] = (int32_t)v;
    }
    if (ids && !feof(f)) {
        free(ids);
        ids = NULL;
    }
    fclose(f);
    *n = k;
    return ids;
}

/* Prints tokens [i - 3, i + 3] of ids as their bytes, C-escaped. */
static void show(const xg_bpe *bpe, const char *who, const int32_t *ids,
                 size_t n, size_t i)
{
    fprintf(stderr, "  %s:", who);
    for (size_t j = i < 3 ? 0 : i - 3; j < n && j <= i + 3; j++) {
        size_t len;
        const uint8_t *b = xg_bpe_token_bytes(bpe, ids[j], &len);
        fprintf(stderr, " %s%" PRId32 "\"", j == i ? "*" : "", ids[j]);
        for (size_t k = 0; k < len; k++)
            fprintf(stderr, b[k] >= 0x20 && b[k] < 0x7F && b[k] != '"'
                                ? "%c" : "\\x%02x", b[k]);
        fprintf(stderr, "\"");
    }
    fprintf(stderr, "\n");
}

/* Encodes text[0 .. len) whole, or line by line; the ids to *ids, *n.
 * Checks that each part decodes to its bytes. */
static int encode(const xg_bpe *bpe, const uint8_t *text, size_t len,
                  int lines, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t start = 0;
    do {
        const uint8_t *nl = lines ? memchr(text + start, '\n', len - start)
                                  : NULL;
        size_t end = nl ? (size_t)(nl - text) : len;
        int32_t *part = NULL;
        uint8_t *back = NULL;
        size_t np = 0, back_len = 0;
        if (xg_bpe_encode(bpe, text + start, end - start, &part, &np) !=
                XG_OK ||
            xg_bpe_decode(bpe, part, np, &back, &back_len) != XG_OK) {
            fprintf(stderr, "bpe_encode: %s\n", xg_last_error());
            return 1;
        }
        if (back_len != end - start ||
            memcmp(back, text + start, back_len) != 0) {
            fprintf(stderr, "bpe_encode: decode(encode(text)) differs from "
                    "the text at bytes [%zu, %zu)\n", start, end);
            return 1;
        }
        int32_t *all = realloc(*ids, (*n + np + 1) * sizeof *all);
        if (!all)
            return 1;
        if (np)
            memcpy(all + *n, part, np * sizeof *part);
        *ids = all;
        *n += np;
        free(part);
        free(back);
        start = end + 1;
    } while (start <= len && lines);
    return 0;
}

int main(int argc, char **argv)
{
    int lines = argc > 1 && strcmp(argv[1], "--lines") == 0;
    argc -= lines;
    argv += lines;
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: bpe_encode [--lines] VOCAB MERGES TEXT "
                "[IDS]\n");
        return 2;
    }
    xg_bpe *bpe = NULL;
    uint8_t *text = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    if (xg_bpe_load_files(argv[1], argv[2], &bpe) != XG_OK ||
        xg_text_read_files((const char *const *)&argv[3], 1, &text, &len) !=
            XG_OK) {
        fprintf(stderr, "bpe_encode: %s\n", xg_last_error());
        return 1;
    }
    double t0 = now();
    int rc = encode(bpe, text, len, lines, &ids, &n);
    if (rc)
        return rc;
    double mbs = (double)len / 1e6 / (now() - t0);
    printf("%s: %zu bytes, %zu tokens, %.1f MB/s", argv[3], len, n, mbs);
    if (argc == 5) {
        size_t m = 0;
        int32_t *ref = read_ids(argv[4], &m);
        if (!ref) {
            fprintf(stderr, "\nbpe_encode: cannot read the ids in %s\n",
                    argv[4]);
            return 1;
        }
        size_t i = 0;
        while (i < n && i < m && ids[i] == ref[i])
            i++;
        if (i < n || i < m) {
            fprintf(stderr, "\n%s: %zu tokens here, %zu in %s; the first "
                    "difference is at token %zu\n", argv[3], n, m, argv[4],
                    i);
            show(bpe, "xgrad    ", ids, n, i);
            show(bpe, "reference", ref, m, i);
            rc = 1;
        } else {
            printf(", the same ids");
        }
        free(ref);
    }
    printf("\n");
    free(ids);
    free(text);
    xg_bpe_free(bpe);
    return rc;
}
