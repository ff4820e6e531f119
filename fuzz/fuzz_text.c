/* libFuzzer harness for the text data (api/data/text.c).
 *
 * The first input byte picks a context length and a validation fraction;
 * the rest is written to a temporary file and loaded with the byte
 * tokenizer. Nothing may crash, leak or trip a sanitizer; the tokens must
 * be the file's bytes, decode must give them back, and every random and
 * evaluation window must lie inside its split.
 *
 * Build and run (fuzz/meson.build):
 *   CC=clang meson setup build-fuzz -Dfuzz=enabled -Dopencl=disabled \
 *       -Dvulkan=disabled -Dtests=disabled
 *   ninja -C build-fuzz fuzz/fuzz_text
 *   build-fuzz/fuzz/fuzz_text -max_total_time=60 fuzz/corpus_text
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xgrad_data.h"

static char path[64];

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            __builtin_trap();                                                \
    } while (0)

/* Every split, random and evaluation windows, checked on the host. */
static void check_splits(const xg_text *t, int64_t context)
{
    int64_t starts[8];
    for (int s = 0; s < 3; s++) {
        xg_text_split split = (xg_text_split)s;
        int64_t len = xg_text_split_len(t, split);
        int64_t lo = split == XG_TEXT_VAL ? t->n_train : 0;
        xg_status st = xg_text_batch_starts(t, split, 8, context, (uint64_t)s,
                                            (uint64_t)len, starts);
        CHECK((st == XG_OK) == (len > context));
        for (int r = 0; st == XG_OK && r < 8; r++)
            CHECK(starts[r] >= lo && starts[r] + context + 1 <= lo + len);
        int64_t w = xg_text_eval_windows(t, split, context);
        CHECK(w == (len > context ? (len - 1) / context : 0));
        CHECK(w == 0 || (w - 1) * context + context + 1 <= len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/xgrad-fuzz-text-%d", (int)getpid());
    if (size == 0)
        return 0;
    int64_t context = 1 + (data[0] & 31);
    double fraction = (double)(data[0] >> 5) / 8.0; /* 0 .. 7/8 */
    data++;
    size--;
    FILE *f = fopen(path, "wb");
    CHECK(f && (size == 0 || fwrite(data, 1, size, f) == size));
    fclose(f);
    const char *paths[] = {path, path};
    xg_text *t = NULL;
    xg_status st = xg_text_load(paths, 2, &t);
    remove(path);
    if (size == 0) {
        CHECK(st == XG_ERR_FORMAT && !t);
        return 0;
    }
    CHECK(st == XG_OK && t->n == 2 * (int64_t)size);
    CHECK(xg_text_set_val_fraction(t, fraction) == XG_OK);
    uint8_t *back = malloc((size_t)t->n);
    CHECK(back && xg_byte_decode(t->tokens, (size_t)t->n, back) == XG_OK);
    CHECK(!memcmp(back, data, size) && !memcmp(back + size, data, size));
    free(back);
    check_splits(t, context);
    xg_text_free(t);
    return 0;
}
