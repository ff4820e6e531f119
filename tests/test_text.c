/* Text data (api/data/text.c): the byte tokenizer, text files as token
 * streams, the train/validation split, random and evaluation windows, the
 * fortune file list. Files are written by the tests into a fresh temporary
 * folder; expected values come from the bytes the tests wrote, or are
 * written out by hand. */
#include "test_util.h"
#include "xgrad_data.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static void text_init(void)
{
    tu_init_scope();
    tu_tmpdir_new(tmpdir, sizeof tmpdir, "xgrad-text");
}

static void text_fini(void)
{
    xg_text_set_max_bytes(0);
    tu_rm_tree(tmpdir);
    tu_fini_scope();
}

TestSuite(bytes, .init = tu_init, .fini = tu_fini);
TestSuite(text, .init = text_init, .fini = text_fini);
TestSuite(windows, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(fortunes, .init = text_init, .fini = text_fini);

/* ---- helpers ------------------------------------------------------------ */

/* Writes n bytes to tmpdir/name; returns the path (tu_path_in's static
 * buffer). */
static const char *write_file(const char *name, const void *data, size_t n)
{
    const char *p = tu_path_in(tmpdir, name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "cannot create %s: %s", p, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
    return p;
}

/* A set whose token i is i % vocab: a window's first token tells where it
 * starts. */
static xg_text *counting_text(int64_t n, int32_t vocab)
{
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    cr_assert_not_null(tok);
    for (int64_t i = 0; i < n; i++)
        tok[i] = (int32_t)(i % vocab);
    xg_text *t = NULL;
    cr_assert_eq(xg_text_from_tokens(tok, n, vocab, &t), XG_OK, "%s",
                 xg_last_error());
    free(tok);
    return t;
}

/* Reads x and y [b, T] back and checks they are the windows of
 * text->tokens at starts[0 .. b): x = tokens[s .. s+T-1], y = tokens[s+1
 * .. s+T]; so y is x shifted by one. Frees the tensors. */
static void check_windows(const xg_text *t, xg_tensor *x, xg_tensor *y,
                          const int64_t *starts, int64_t b, int64_t T)
{
    tu_assert_shape(x, XG_SHAPE(b, T), "x");
    tu_assert_shape(y, XG_SHAPE(b, T), "y");
    int32_t *hx = tu_read_i32(x), *hy = tu_read_i32(y);
    for (int64_t r = 0; r < b; r++) {
        for (int64_t j = 0; j < T; j++) {
            cr_assert_eq(hx[r * T + j], t->tokens[starts[r] + j],
                         "x[%" PRId64 "][%" PRId64 "]", r, j);
            cr_assert_eq(hy[r * T + j], t->tokens[starts[r] + j + 1],
                         "y[%" PRId64 "][%" PRId64 "]", r, j);
            if (j + 1 < T)
                cr_assert_eq(hy[r * T + j], hx[r * T + j + 1],
                             "y is x shifted by one");
        }
    }
    free(hx);
    free(hy);
    xg_tensor_free(x);
    xg_tensor_free(y);
}

/* ---- the byte tokenizer ------------------------------------------------- */

Test(bytes, round_trip_of_arbitrary_bytes)
{
    enum { N = 4096 };
    uint8_t in[N], back[N];
    int32_t tok[N];
    tu_rng r = {12345};
    for (int i = 0; i < N; i++)
        in[i] = i < 256 ? (uint8_t)i : (uint8_t)tu_next(&r); /* all 256 */
    cr_assert_eq(xg_byte_encode(in, N, tok), XG_OK);
    for (int i = 0; i < N; i++)
        cr_assert_eq(tok[i], (int32_t)in[i], "token %d", i);
    memset(back, 0xAA, sizeof back);
    cr_assert_eq(xg_byte_decode(tok, N, back), XG_OK);
    cr_assert_arr_eq(back, in, N, "decode(encode(bytes)) == bytes");

    /* UTF-8 is bytes: "é" (U+00E9) is two tokens, an invalid sequence too */
    const char *s = "caf\xc3\xa9 \xff\xfe";
    int32_t t2[8];
    cr_assert_eq(xg_byte_encode(s, strlen(s), t2), XG_OK);
    const int32_t want[] = {99, 97, 102, 0xC3, 0xA9, 32, 0xFF, 0xFE};
    cr_assert_arr_eq(t2, want, sizeof want);
}

Test(bytes, decode_refuses_tokens_out_of_range)
{
    uint8_t out[3] = {7, 7, 7};
    const int32_t bad_hi[] = {65, 256, 66};
    cr_assert_eq(xg_byte_decode(bad_hi, 3, out), XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "token 1 is 256", "decode 256");
    const int32_t bad_lo[] = {65, 66, -1};
    cr_assert_eq(xg_byte_decode(bad_lo, 3, out), XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "token 2 is -1", "decode -1");
    cr_assert(out[0] == 7 && out[1] == 7 && out[2] == 7,
              "the output is untouched on error");
    cr_assert_eq(xg_byte_encode(NULL, 1, (int32_t[1]){0}),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_byte_decode(bad_hi, 1, NULL), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_byte_encode(NULL, 0, NULL), XG_OK, "nothing to do");
    cr_assert_eq(xg_byte_decode(NULL, 0, NULL), XG_OK, "nothing to do");
}

/* ---- loading files ------------------------------------------------------ */

Test(text, files_concatenate_in_the_order_given)
{
    const char *a = write_file("a.txt", "abc", 3);
    const char *b = write_file("b.txt", "de\xff\0", 4);
    const char *c = write_file("c.txt", "f", 1);
    const char *paths[] = {c, a, b};
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load(paths, 3, &t), XG_OK, "%s", xg_last_error());
    const int32_t want[] = {'f', 'a', 'b', 'c', 'd', 'e', 0xFF, 0};
    cr_assert_eq(t->n, 8);
    cr_assert_arr_eq(t->tokens, want, sizeof want);
    cr_assert_eq(t->vocab_size, 256);
    /* the last 10% validate: round(0.8) = 1 token */
    cr_assert_eq(t->n_train, 7);
    cr_assert_eq(xg_text_split_len(t, XG_TEXT_TRAIN), 7);
    cr_assert_eq(xg_text_split_len(t, XG_TEXT_VAL), 1);
    cr_assert_eq(xg_text_split_len(t, XG_TEXT_ALL), 8);
    xg_text_free(t);

    uint8_t *bytes = NULL;
    size_t len = 0;
    cr_assert_eq(xg_text_read_files(paths, 3, &bytes, &len), XG_OK);
    cr_assert_eq(len, 8);
    cr_assert_arr_eq(bytes, "fabcde\xff\0", 8);
    free(bytes);
}

Test(text, a_file_larger_than_one_read)
{
    /* 3 MB: several read() calls and buffer growths */
    size_t n = 3u << 20;
    uint8_t *data = malloc(n);
    cr_assert_not_null(data);
    tu_rng r = {99};
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)tu_next(&r);
    const char *p = write_file("big", data, n);
    const char *q = write_file("small", "xy", 2);
    const char *paths[] = {q, p, q};
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load(paths, 3, &t), XG_OK, "%s", xg_last_error());
    cr_assert_eq(t->n, (int64_t)n + 4);
    cr_assert(t->tokens[0] == 'x' && t->tokens[1] == 'y');
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(t->tokens[2 + i], data[i], "token %zu", 2 + i);
    cr_assert(t->tokens[n + 2] == 'x' && t->tokens[n + 3] == 'y');
    xg_text_free(t);
    free(data);
}

Test(text, split_sizes)
{
    xg_text *t = counting_text(1000, 1000);
    cr_assert_eq(t->n_train, 900, "default: the last 10%% validate");
    cr_assert_eq(xg_text_set_val_fraction(t, 0.25), XG_OK);
    cr_assert_eq(t->n_train, 750);
    cr_assert_eq(xg_text_split_len(t, XG_TEXT_VAL), 250);
    cr_assert_eq(xg_text_set_val_fraction(t, 0.0), XG_OK);
    cr_assert_eq(t->n_train, 1000);
    cr_assert_eq(xg_text_split_len(t, XG_TEXT_VAL), 0);
    cr_assert_eq(xg_text_set_val_fraction(t, 0.0015), XG_OK);
    cr_assert_eq(t->n_train, 998, "round(1.5) = 2");
    /* 0.29 x 1000 is 289.99999999999994 in doubles: rounds to 290 */
    cr_assert_eq(xg_text_set_val_fraction(t, 0.29), XG_OK);
    cr_assert_eq(t->n_train, 710);
    const double bad[] = {1.0, -0.1, NAN, INFINITY, 2.0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(xg_text_set_val_fraction(t, bad[i]), XG_ERR_INVALID_ARG,
                     "fraction %g", bad[i]);
        cr_assert_eq(t->n_train, 710, "unchanged after fraction %g", bad[i]);
    }
    cr_assert_eq(xg_text_set_val_fraction(NULL, 0.1), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_split_len(t, (xg_text_split)7), 0);
    cr_assert_eq(xg_text_split_len(NULL, XG_TEXT_ALL), 0);
    xg_text_free(t);
}

Test(text, from_tokens_checks_the_vocabulary)
{
    const int32_t tok[] = {0, 4, 2, 5};
    xg_text *t = (xg_text *)1;
    cr_assert_eq(xg_text_from_tokens(tok, 4, 5, &t), XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "token 3 is 5", "token >= vocab");
    cr_assert_null(t);
    const int32_t neg[] = {0, -3};
    cr_assert_eq(xg_text_from_tokens(neg, 2, 5, &t), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_from_tokens(tok, 0, 6, &t), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_from_tokens(tok, 4, 0, &t), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_from_tokens(NULL, 4, 6, &t), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_from_tokens(tok, 4, 6, NULL), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_from_tokens(tok, 4, 6, &t), XG_OK);
    cr_assert_arr_eq(t->tokens, tok, sizeof tok, "copied");
    cr_assert_eq(t->vocab_size, 6);
    cr_assert_eq(t->n, 4);
    cr_assert_eq(t->n_train, 4, "round(0.4) = 0 validation tokens");
    xg_text_free(t);
    xg_text_free(NULL);
}

/* ---- errors ------------------------------------------------------------- */

Test(text, missing_file)
{
    char p[256];
    snprintf(p, sizeof p, "%s/no-such-file.txt", tmpdir);
    const char *ok = write_file("ok", "hello", 5);
    const char *paths[] = {ok, p};
    xg_text *t = (xg_text *)1;
    cr_assert_eq(xg_text_load(paths, 2, &t), XG_ERR_NOT_FOUND);
    tu_assert_error(XG_ERR_NOT_FOUND, p, "missing file");
    cr_assert_null(t);
    snprintf(p, sizeof p, "%s/ok/below-a-file", tmpdir);
    cr_assert_eq(xg_text_load(paths, 2, &t), XG_ERR_NOT_FOUND);
}

Test(text, empty_file)
{
    const char *ok = write_file("ok", "hello", 5);
    const char *empty = write_file("empty", "", 0);
    const char *paths[] = {ok, empty};
    xg_text *t = (xg_text *)1;
    cr_assert_eq(xg_text_load(paths, 2, &t), XG_ERR_FORMAT);
    tu_assert_error(XG_ERR_FORMAT, empty, "empty file");
    tu_assert_error(XG_ERR_FORMAT, "empty file", "empty file");
    cr_assert_null(t);
}

Test(text, directory_and_fifo)
{
    const char *paths[] = {tmpdir};
    xg_text *t = (xg_text *)1;
    cr_assert_eq(xg_text_load(paths, 1, &t), XG_ERR_IO);
    tu_assert_error(XG_ERR_IO, "is a directory", "directory");
    tu_assert_error(XG_ERR_IO, tmpdir, "directory");
    cr_assert_null(t);
    /* a FIFO with no writer: refused without blocking on it */
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/fifo", tmpdir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    paths[0] = fifo;
    cr_assert_eq(xg_text_load(paths, 1, &t), XG_ERR_IO);
    tu_assert_error(XG_ERR_IO, "not a regular file", "fifo");
}

Test(text, size_limit)
{
    const char *a = write_file("six-a", "123456", 6);
    const char *b = write_file("six-b", "abcdef", 6);
    cr_assert_eq(xg_text_set_max_bytes(11), XG_TEXT_DEFAULT_MAX_BYTES);
    cr_assert_eq(xg_text_max_bytes(), 11);
    xg_text *t = (xg_text *)1;
    const char *one[] = {a};
    cr_assert_eq(xg_text_load(one, 1, &t), XG_OK, "6 bytes are under 11");
    xg_text_free(t);
    const char *two[] = {a, b};
    cr_assert_eq(xg_text_load(two, 2, &t), XG_ERR_TOO_LARGE);
    tu_assert_error(XG_ERR_TOO_LARGE, b, "the file that passes the limit");
    tu_assert_error(XG_ERR_TOO_LARGE, "xg_text_set_max_bytes", "the hint");
    cr_assert_null(t);
    cr_assert_eq(xg_text_set_max_bytes(5), 11);
    cr_assert_eq(xg_text_load(one, 1, &t), XG_ERR_TOO_LARGE);
    tu_assert_error(XG_ERR_TOO_LARGE, a, "one file over the limit");
    cr_assert_eq(xg_text_set_max_bytes(12), 5);
    cr_assert_eq(xg_text_load(two, 2, &t), XG_OK, "exactly at the limit");
    cr_assert_eq(t->n, 12);
    xg_text_free(t);
    cr_assert_eq(xg_text_set_max_bytes(0), 12);
    cr_assert_eq(xg_text_max_bytes(), XG_TEXT_DEFAULT_MAX_BYTES);
}

Test(text, bad_arguments)
{
    const char *ok = write_file("ok", "hello", 5);
    const char *paths[] = {ok, NULL};
    xg_text *t = (xg_text *)1;
    cr_assert_eq(xg_text_load(paths, 0, &t), XG_ERR_INVALID_ARG);
    cr_assert_null(t);
    cr_assert_eq(xg_text_load(paths, 2, &t), XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "path 1 is NULL", "NULL path");
    cr_assert_eq(xg_text_load(NULL, 1, &t), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_load(paths, 1, NULL), XG_ERR_INVALID_ARG);
    uint8_t *bytes = (uint8_t *)1;
    size_t len = 1;
    cr_assert_eq(xg_text_read_files(paths, -1, &bytes, &len),
                 XG_ERR_INVALID_ARG);
    cr_assert(bytes == NULL && len == 0);
    cr_assert_eq(xg_text_read_files(paths, 1, NULL, &len),
                 XG_ERR_INVALID_ARG);
}

/* Whatever the bytes, loading gives them back as tokens, and drawing
 * windows from them never fails when the context fits nor crashes when it
 * does not. Decoding arbitrary int32 values fails exactly when one is out
 * of range. */
Test(text, any_bytes_are_safe)
{
    tu_rng r = {2024};
    uint8_t data[600];
    for (int iter = 0; iter < 200; iter++) {
        size_t n = (size_t)(tu_next(&r) % sizeof data);
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)tu_next(&r);
        const char *p = write_file("fuzz", data, n);
        const char *paths[] = {p};
        xg_text *t = NULL;
        xg_status st = xg_text_load(paths, 1, &t);
        if (n == 0) {
            cr_assert_eq(st, XG_ERR_FORMAT);
            continue;
        }
        cr_assert_eq(st, XG_OK, "%s", xg_last_error());
        cr_assert_eq(t->n, (int64_t)n);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(t->tokens[i], data[i]);
        int64_t T = 1 + (int64_t)(tu_next(&r) % 40);
        xg_text_split split = (xg_text_split)(tu_next(&r) % 3);
        int64_t len = xg_text_split_len(t, split);
        xg_tensor *x = NULL, *y = NULL;
        st = xg_text_batch(t, split, 3, T, tu_next(&r), (uint64_t)iter, &x,
                           &y);
        cr_assert_eq(st, len > T ? XG_OK : XG_ERR_INVALID_ARG,
                     "len %" PRId64 ", T %" PRId64 ": %s", len, T,
                     xg_last_error());
        if (st == XG_OK) {
            int64_t s[3];
            cr_assert_eq(xg_text_batch_starts(t, split, 3, T, 0, 0, s),
                         XG_OK);
            xg_tensor_free(x);
            xg_tensor_free(y);
        }
        int64_t w = xg_text_eval_windows(t, split, T);
        cr_assert_eq(w, len > T ? (len - 1) / T : 0);
        st = xg_text_eval_batch(t, split, T, 4, 0, &x, &y);
        cr_assert_eq(st, w > 0 ? XG_OK : XG_ERR_INVALID_ARG);
        if (st == XG_OK) {
            xg_tensor_free(x);
            xg_tensor_free(y);
        }
        xg_text_free(t);

        int32_t tok[64];
        uint8_t out[64];
        size_t m = (size_t)(tu_next(&r) % 64);
        bool in_range = true;
        for (size_t i = 0; i < m; i++) {
            uint64_t v = tu_next(&r);
            tok[i] = (v & 1) ? (int32_t)(v >> 32) : (int32_t)((v >> 8) % 300);
            in_range = in_range && tok[i] >= 0 && tok[i] < 256;
        }
        cr_assert_eq(xg_byte_decode(tok, m, out),
                     in_range ? XG_OK : XG_ERR_INVALID_ARG);
    }
}

/* ---- random windows ----------------------------------------------------- */

Test(windows, y_is_x_shifted_and_starts_stay_inside_the_split)
{
    xg_text *t = counting_text(1000, 1000); /* train [0, 900), val [900, 1000) */
    const int64_t B = 32, T = 16;
    int64_t s[32];
    const struct {
        xg_text_split split;
        int64_t lo, hi; /* windows of T + 1 tokens inside [lo, hi) */
    } cases[] = {{XG_TEXT_TRAIN, 0, 900},
                 {XG_TEXT_VAL, 900, 1000},
                 {XG_TEXT_ALL, 0, 1000}};
    for (int c = 0; c < 3; c++) {
        for (uint64_t k = 0; k < 20; k++) {
            xg_tensor *x = NULL, *y = NULL;
            cr_assert_eq(xg_text_batch(t, cases[c].split, B, T, 7, k, &x, &y),
                         XG_OK, "%s", xg_last_error());
            cr_assert_eq(xg_text_batch_starts(t, cases[c].split, B, T, 7, k,
                                              s),
                         XG_OK);
            for (int64_t r = 0; r < B; r++)
                cr_assert(s[r] >= cases[c].lo && s[r] + T + 1 <= cases[c].hi,
                          "split %d: start %" PRId64 " outside [%" PRId64
                          ", %" PRId64 " - %" PRId64 "]",
                          c, s[r], cases[c].lo, cases[c].hi, T + 1);
            check_windows(t, x, y, s, B, T);
        }
    }
    xg_text_free(t);
}

Test(windows, every_start_is_drawn_and_none_past_the_end)
{
    /* val = [90, 100): with T = 6 the starts are 90 .. 93 and nothing else */
    xg_text *t = counting_text(100, 100);
    int64_t s[64];
    int seen[100] = {0};
    for (uint64_t k = 0; k < 50; k++) {
        cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_VAL, 64, 6, 3, k, s),
                     XG_OK);
        for (int r = 0; r < 64; r++) {
            cr_assert(s[r] >= 90 && s[r] <= 93, "start %" PRId64, s[r]);
            seen[s[r]]++;
        }
    }
    for (int i = 90; i <= 93; i++)
        cr_assert(seen[i] > 600, "start %d drawn %d times of 3200", i,
                  seen[i]);
    /* a split of exactly T + 1 tokens has one window */
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_VAL, 64, 9, 3, 1, s), XG_OK);
    for (int r = 0; r < 64; r++)
        cr_assert_eq(s[r], 90);
    xg_text_free(t);
}

Test(windows, batches_are_a_function_of_seed_and_counter)
{
    xg_text *t = counting_text(100000, 100000);
    enum { B = 16 };
    int64_t a[B], b[B], c[B], d[B];
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, B, 32, 42, 5, a),
                 XG_OK);
    /* other draws in between change nothing: no hidden state */
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, B, 32, 42, 6, c),
                 XG_OK);
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, B, 32, 42, 5, b),
                 XG_OK);
    cr_assert_arr_eq(a, b, sizeof a, "same seed and counter, same batch");
    cr_assert_arr_neq(a, c, sizeof a, "another counter, another batch");
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, B, 32, 43, 5, d),
                 XG_OK);
    cr_assert_arr_neq(a, d, sizeof a, "another seed, another batch");
    /* row r depends on r only, not on the batch size */
    int64_t e[4];
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, 4, 32, 42, 5, e),
                 XG_OK);
    cr_assert_arr_eq(a, e, sizeof e, "a smaller batch is a prefix");
    /* the rows of one batch differ (90k starts: a repeat is unlikely) */
    int repeats = 0;
    for (int i = 0; i < B; i++)
        for (int j = i + 1; j < B; j++)
            repeats += a[i] == a[j];
    cr_assert_leq(repeats, 1);

    /* and the tensors agree with the starts */
    xg_tensor *x1, *y1, *x2, *y2;
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, B, 32, 42, 5, &x1, &y1),
                 XG_OK);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, B, 32, 42, 5, &x2, &y2),
                 XG_OK);
    int32_t *h1 = tu_read_i32(x1), *h2 = tu_read_i32(x2);
    cr_assert_arr_eq(h1, h2, B * 32 * sizeof *h1);
    free(h1);
    free(h2);
    check_windows(t, x1, y1, a, B, 32);
    xg_text_free(t);
}

Test(windows, refuses_a_split_shorter_than_the_context)
{
    xg_text *t = counting_text(100, 100); /* train 90, val 10 */
    xg_tensor *x = (xg_tensor *)1, *y = (xg_tensor *)1;
    cr_assert_eq(xg_text_batch(t, XG_TEXT_VAL, 2, 10, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "val split has 10 tokens, fewer "
                    "than context + 1 = 11", "val too short");
    cr_assert(x == NULL && y == NULL);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_VAL, 2, 9, 0, 0, &x, &y), XG_OK,
                 "10 tokens hold one window of 9 + 1");
    xg_tensor_free(x);
    xg_tensor_free(y);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, 2, 90, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "train split has 90 tokens",
                    "train too short");
    cr_assert_eq(xg_text_set_val_fraction(t, 0.0), XG_OK);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_VAL, 1, 1, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG, "an empty val split");
    /* other bad arguments */
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, 0, 4, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, 2, 0, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_batch(t, (xg_text_split)3, 2, 4, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_batch(NULL, XG_TEXT_TRAIN, 2, 4, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, 2, 4, 0, 0, NULL, &y),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, 2, 4, 0, 0, NULL),
                 XG_ERR_INVALID_ARG);
    /* a malformed public struct is refused, not read */
    xg_text bad = *t;
    bad.n_train = bad.n + 1;
    cr_assert_eq(xg_text_batch(&bad, XG_TEXT_TRAIN, 2, 4, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG);
    bad = *t;
    bad.tokens = NULL;
    cr_assert_lt(xg_text_eval_windows(&bad, XG_TEXT_ALL, 4), 0);
    xg_text_free(t);
}

/* ---- evaluation windows ------------------------------------------------- */

Test(text, eval_windows_of_a_known_file)
{
    const char *p = write_file("hello", "hello world", 11);
    const char *paths[] = {p};
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load(paths, 1, &t), XG_OK);
    cr_assert_eq(t->n_train, 10, "round(1.1) = 1 validation token");
    /* the whole file, T = 3: windows at 0, 3, 6 ("hell", "lo w", "worl");
     * the last one would start at 9 and needs tokens up to 12 */
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_ALL, 3), 3);
    xg_tensor *x = NULL, *y = NULL;
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_ALL, 3, 2, 0, &x, &y), XG_OK,
                 "%s", xg_last_error());
    const int32_t x0[] = {'h', 'e', 'l', 'l', 'o', ' '};
    const int32_t y0[] = {'e', 'l', 'l', 'o', ' ', 'w'};
    tu_assert_i32(x, XG_SHAPE(2, 3), x0, "eval x, batch 0");
    tu_assert_i32(y, XG_SHAPE(2, 3), y0, "eval y, batch 0");
    xg_tensor_free(x);
    xg_tensor_free(y);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_ALL, 3, 2, 1, &x, &y), XG_OK);
    const int32_t x1[] = {'w', 'o', 'r'};
    const int32_t y1[] = {'o', 'r', 'l'};
    tu_assert_i32(x, XG_SHAPE(1, 3), x1, "eval x, the last, smaller batch");
    tu_assert_i32(y, XG_SHAPE(1, 3), y1, "eval y, the last, smaller batch");
    xg_tensor_free(x);
    xg_tensor_free(y);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_ALL, 3, 2, 2, &x, &y),
                 XG_ERR_INVALID_ARG, "2 batches only");
    tu_assert_error(XG_ERR_INVALID_ARG, "index 2 is outside [0, 2)", "index");
    cr_assert(x == NULL && y == NULL);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_ALL, 3, 2, -1, &x, &y),
                 XG_ERR_INVALID_ARG);

    /* the train split (10 tokens "hello worl"), T = 4: windows at 0 and 4
     * ("hello", "o wor"); T = 9: one; T = 10: none */
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_TRAIN, 4), 2);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_TRAIN, 4, 8, 0, &x, &y),
                 XG_OK);
    const int32_t x2[] = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o'};
    const int32_t y2[] = {'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r'};
    tu_assert_i32(x, XG_SHAPE(2, 4), x2, "train eval x");
    tu_assert_i32(y, XG_SHAPE(2, 4), y2, "train eval y");
    xg_tensor_free(x);
    xg_tensor_free(y);
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_TRAIN, 9), 1);
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_TRAIN, 10), 0);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_TRAIN, 10, 1, 0, &x, &y),
                 XG_ERR_INVALID_ARG, "no window fits");
    tu_assert_error(XG_ERR_INVALID_ARG, "fewer than context + 1", "short");
    /* val: the single token "d" holds no window */
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_VAL, 1), 0);
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_ALL, 1), 10);
    cr_assert_eq(xg_text_eval_windows(t, XG_TEXT_ALL, 0), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_eval_windows(NULL, XG_TEXT_ALL, 3),
                 XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_ALL, 3, 0, 0, &x, &y),
                 XG_ERR_INVALID_ARG, "batch 0");
    xg_text_free(t);
}

Test(windows, eval_windows_cover_the_split_once)
{
    /* val = [900, 1000), T = 7: (100 - 1) / 7 = 14 windows; every target
     * position 901 .. 998 appears exactly once */
    xg_text *t = counting_text(1000, 1000);
    const int64_t T = 7, B = 5;
    int64_t w = xg_text_eval_windows(t, XG_TEXT_VAL, T);
    cr_assert_eq(w, 14);
    int hits[1000] = {0};
    int64_t batches = (w + B - 1) / B, rows = 0;
    for (int64_t b = 0; b < batches; b++) {
        xg_tensor *x, *y;
        cr_assert_eq(xg_text_eval_batch(t, XG_TEXT_VAL, T, B, b, &x, &y),
                     XG_OK);
        int64_t nb = xg_tensor_shape(x)[0];
        cr_assert_eq(nb, b < batches - 1 ? B : w - B * (batches - 1));
        int64_t starts[5];
        for (int64_t r = 0; r < nb; r++)
            starts[r] = 900 + (rows + r) * T;
        int32_t *hy = tu_read_i32(y);
        for (int64_t i = 0; i < nb * T; i++)
            hits[hy[i]]++;
        free(hy);
        check_windows(t, x, y, starts, nb, T);
        rows += nb;
    }
    cr_assert_eq(rows, w);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(hits[i], i >= 901 && i <= 998 ? 1 : 0, "target %d", i);
    xg_text_free(t);
}

/* ---- the fortune files -------------------------------------------------- */

static void make(const char *name, const char *text)
{
    write_file(name, text, strlen(text));
}

static void link_to(const char *target, const char *name)
{
    const char *p = tu_path_in(tmpdir, name);
    cr_assert_eq(symlink(target, p), 0, "symlink %s: %s", p, strerror(errno));
}

Test(fortunes, list_filters_and_sorts)
{
    make("zippy", "Z\n%\n");
    make("art", "A\n%\n");
    make("art.dat", "\1\2");
    link_to("art", "art.u8");
    make("Big", "B\n%\n"); /* byte order: upper case first */
    make("cookie.u8", "copy\n");
    make(".hidden", "H\n");
    link_to("zippy", "zlink");     /* a link to a regular file counts */
    link_to("nowhere", "dangling"); /* a dangling one does not */
    char sub[256];
    snprintf(sub, sizeof sub, "%s/off", tmpdir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    make("off/rude", "R\n%\n");

    xg_path_list l = {0};
    cr_assert_eq(xg_fortunes_list(tmpdir, &l), XG_OK, "%s", xg_last_error());
    const char *want[] = {"Big", "art", "zippy", "zlink"};
    cr_assert_eq(l.count, 4);
    for (int i = 0; i < 4; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", tmpdir, want[i]);
        cr_assert_str_eq(l.paths[i], p, "entry %d", i);
    }
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load(l.paths, l.count, &t), XG_OK);
    const char *all = "B\n%\nA\n%\nZ\n%\nZ\n%\n";
    cr_assert_eq(t->n, (int64_t)strlen(all));
    for (size_t i = 0; i < strlen(all); i++)
        cr_assert_eq(t->tokens[i], all[i]);
    xg_text_free(t);
    xg_path_list_free(&l);
    cr_assert(l.paths == NULL && l.count == 0);
    xg_path_list_free(NULL);
}

Test(fortunes, list_errors)
{
    xg_path_list l = {0};
    char p[256];
    snprintf(p, sizeof p, "%s/nothing-here", tmpdir);
    cr_assert_eq(xg_fortunes_list(p, &l), XG_ERR_NOT_FOUND);
    tu_assert_error(XG_ERR_NOT_FOUND, "apt-get install fortunes", "missing");
    cr_assert_eq(xg_fortunes_list(tmpdir, &l), XG_ERR_NOT_FOUND,
                 "an empty folder");
    tu_assert_error(XG_ERR_NOT_FOUND, "no fortune file", "empty folder");
    make("only.dat", "x");
    cr_assert_eq(xg_fortunes_list(tmpdir, &l), XG_ERR_NOT_FOUND);
    cr_assert(l.paths == NULL && l.count == 0);
    make("afile", "x");
    snprintf(p, sizeof p, "%s/afile", tmpdir);
    cr_assert_eq(xg_fortunes_list(p, &l), XG_ERR_IO, "not a folder");
    cr_assert_eq(xg_fortunes_list(tmpdir, NULL), XG_ERR_INVALID_ARG);
}

/* Debian's package, when it is installed. */
Test(fortunes, the_real_corpus)
{
    struct stat sb;
    if (stat(XG_FORTUNES_DIR, &sb) != 0)
        cr_skip_test("%s is missing (apt-get install fortunes)",
                     XG_FORTUNES_DIR);
    xg_path_list l = {0};
    cr_assert_eq(xg_fortunes_list(NULL, &l), XG_OK, "%s", xg_last_error());
    cr_assert_geq(l.count, 10, "%" PRId64 " files", l.count);
    int64_t total = 0;
    for (int64_t i = 0; i < l.count; i++) {
        const char *p = l.paths[i];
        size_t n = strlen(p);
        cr_assert(!(n >= 4 && !strcmp(p + n - 4, ".dat")), "%s", p);
        cr_assert(!(n >= 3 && !strcmp(p + n - 3, ".u8")), "%s", p);
        cr_assert(!strncmp(p, XG_FORTUNES_DIR "/",
                           strlen(XG_FORTUNES_DIR) + 1), "%s", p);
        if (i > 0)
            cr_assert_lt(strcmp(l.paths[i - 1], p), 0, "sorted at %" PRId64,
                         i);
        cr_assert_eq(stat(p, &sb), 0);
        cr_assert(S_ISREG(sb.st_mode), "%s", p);
        total += sb.st_size;
    }
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load(l.paths, l.count, &t), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(t->n, total, "the tokens are the files' bytes");
    cr_assert(t->n >= 2000000 && t->n <= 3500000, "%" PRId64 " tokens", t->n);
    cr_assert_eq(t->n_train, t->n - (int64_t)llround(t->n * 0.1));
    /* English: mostly printable ASCII and newlines */
    int64_t ascii = 0;
    for (int64_t i = 0; i < t->n; i++)
        ascii += (t->tokens[i] >= 32 && t->tokens[i] < 127) ||
                 t->tokens[i] == '\n';
    cr_assert_gt(ascii, t->n * 95 / 100);
    xg_tensor *x, *y;
    cr_assert_eq(xg_text_batch(t, XG_TEXT_TRAIN, 8, 256, 1, 0, &x, &y), XG_OK);
    int64_t s[8];
    cr_assert_eq(xg_text_batch_starts(t, XG_TEXT_TRAIN, 8, 256, 1, 0, s),
                 XG_OK);
    check_windows(t, x, y, s, 8, 256);
    cr_assert_gt(xg_text_eval_windows(t, XG_TEXT_VAL, 256), 900);
    xg_text_free(t);
    xg_path_list_free(&l);
}
