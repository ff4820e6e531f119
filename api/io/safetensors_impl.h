/* Internals of the model-file code (api/safetensors.c, api/checkpoint.c),
 * shared with the fuzz harness (fuzz/). Not installed. */
#ifndef XGRAD_SAFETENSORS_IMPL_H
#define XGRAD_SAFETENSORS_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "core_impl.h"

/* One tensor of an open file, as its header describes it. Every field has
 * been checked: the dtype is known, the shape's byte size matches the data
 * range, and the range lies inside the data section. */
typedef struct xg__st_entry {
    const char *name;   /* borrowed from the file's header */
    const char *dtype;  /* "F32", "I64", ... (static) */
    int ndim;
    int64_t shape[XG_MAX_DIMS]; /* sizes may be 0 */
    size_t offset;      /* of the data, from the start of the data section */
    size_t bytes;
    const uint8_t *data; /* the little-endian values; may be unaligned */
} xg__st_entry;

/* Parses a whole safetensors file held in memory (`len` bytes at `bytes`,
 * which are copied). `label` names the file in error messages. Same checks
 * and errors as xg_safetensors_open. */
xg_status xg__safetensors_parse(const void *bytes, size_t len,
                                const char *label, xg_safetensors **out);

/* The path (or label) the file was opened with. Borrowed. */
const char *xg__safetensors_label(const xg_safetensors *st);

/* Entry i (0 <= i < count, data order), or NULL. */
const xg__st_entry *xg__safetensors_entry(const xg_safetensors *st, int i);

/* The index of the entry called `name`, or -1 (no error is set). */
int xg__safetensors_index(const xg_safetensors *st, const char *name);

/* A new tensor on `dev` (owned as any new tensor) holding entry e: F32 and
 * I32 as they are, F16 and BF16 as XG_F32 (xg__safetensors_to_f32), I64 as
 * XG_I32 when every value fits. Errors: XG_ERR_DTYPE, XG_ERR_SHAPE (a
 * size-0 axis), device errors. */
xg_tensor *xg__safetensors_load(const xg_safetensors *st,
                                const xg__st_entry *e, xg_device *dev);

/* Entry e's values as floats into out (e->bytes / element size entries):
 * F32 copied, F16 and BF16 converted exactly (see xg_safetensors_tensor).
 * XG_ERR_DTYPE (naming the tensor, not the file) for any other dtype. */
xg_status xg__safetensors_to_f32(const xg__st_entry *e, float *out);

/* Writes `len` bytes to `path` atomically, as xg_safetensors_writer_save
 * writes its files (temporary file beside it, fsync, rename, fsync of the
 * folder). Errors: XG_ERR_IO with the reason, XG_ERR_OUT_OF_MEMORY. */
xg_status xg__write_file_atomic(const char *path, const void *data,
                                size_t len);

/* The loaders behind xg_module_load and xg_checkpoint_load, on a file
 * already open (the fuzz harness calls them on parsed memory). */
xg_status xg__module_load_from(xg_module *m, const xg_safetensors *st);
xg_status xg__checkpoint_load_from(const xg_safetensors *st, xg_module *m,
                                   xg_optim *opt, xg_train_state *state);

/* The loader behind xg_gpt_load_hf once config.json is read: a new GPT of
 * configuration cfg holding the weights of st (a GPT2LMHeadModel
 * state_dict), or NULL with the error. */
xg_module *xg__gpt_hf_from(const xg_safetensors *st, const xg_gpt_config *cfg);

#endif
