/* The CNN of PyTorch's MNIST example, the one network of mnist_cnn and
 * finetune:
 *   features: Conv2d(c, 32, 3), [BatchNorm2d(32),] ReLU(), Conv2d(32, 64, 3),
 *             [BatchNorm2d(64),] ReLU(), MaxPool2d(2), Dropout(0.25),
 *             Flatten()
 *   head:     Linear(flat, 128), ReLU(), Dropout(0.5), Linear(128, classes)
 * The layers are appended to a caller's nn.Sequential under their index
 * names, so one sequential holding both parts has the parameter names of
 * PyTorch's ("0.weight", "0.bias", ...; those of bench/cnn_torch.py).
 * Parameters are initialised from the thread's generator, in layer order.
 */
#ifndef XGRAD_SAMPLE_CNN_H
#define XGRAD_SAMPLE_CNN_H

#include <stdbool.h>
#include <stdint.h>

#include "xgrad.h"

/* The features' output size for images [c, h, w]: 64 channels of
 * (h - 4) / 2 x (w - 4) / 2 (two 3x3 convolutions take 4 pixels off each
 * dimension, pooling halves it). */
int64_t sample_cnn_flat(int64_t h, int64_t w);

/* Appends the features for `channels` input channels to `seq`, with
 * BatchNorm2d after each convolution when batch_norm. false, with the
 * library's error set, if a layer could not be made or added; `seq` then
 * holds the layers added so far. */
bool sample_cnn_append_features(xg_module *seq, int64_t channels,
                                bool batch_norm);

/* Appends the head: `flat` inputs (sample_cnn_flat), `classes` outputs.
 * Errors as sample_cnn_append_features. */
bool sample_cnn_append_head(xg_module *seq, int64_t flat, int32_t classes);

#endif
