/* The CNN of mnist_cnn and finetune; see sample_cnn.h. */
#include "sample_cnn.h"

/* Appends `child` (NULL: an earlier error) under its index name; `seq`
 * owns it, also on error. */
static bool append(xg_module *seq, xg_module *child)
{
    return child && xg_sequential_add(seq, NULL, child) == XG_OK;
}

/* Conv2d(in, out, 3) [, BatchNorm2d(out)], ReLU. */
static bool append_conv(xg_module *seq, int64_t in, int64_t out, bool bn)
{
    return append(seq, xg_conv2d_layer(in, out, 3, NULL, true)) &&
           (!bn || append(seq, xg_batch_norm2d_layer(out))) &&
           append(seq, xg_relu_layer());
}

int64_t sample_cnn_flat(int64_t h, int64_t w)
{
    return 64 * ((h - 4) / 2) * ((w - 4) / 2);
}

bool sample_cnn_append_features(xg_module *seq, int64_t channels,
                                bool batch_norm)
{
    return append_conv(seq, channels, 32, batch_norm) &&
           append_conv(seq, 32, 64, batch_norm) &&
           append(seq, xg_max_pool2d_layer(2, 0, 0)) &&
           append(seq, xg_dropout_layer(0.25f)) &&
           append(seq, xg_flatten_layer());
}

bool sample_cnn_append_head(xg_module *seq, int64_t flat, int32_t classes)
{
    return append(seq, xg_linear(flat, 128, true)) &&
           append(seq, xg_relu_layer()) &&
           append(seq, xg_dropout_layer(0.5f)) &&
           append(seq, xg_linear(128, classes, true));
}
