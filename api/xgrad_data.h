/* xgrad data: IDX files, MNIST-format image folders, shuffled mini-batches
 * and image augmentation, for the samples and for programs that train on
 * such data sets.
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

/* Batches per epoch. */
int64_t xg_loader_batches(const xg_loader *ld);
void xg_loader_free(xg_loader *ld);

#ifdef __cplusplus
}
#endif
#endif
