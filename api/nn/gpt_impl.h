/* Internals of the GPT model (api/nn/gpt.c) shared with its file formats
 * (api/io/gpt_hf.c). Not installed. */
#ifndef XGRAD_GPT_IMPL_H
#define XGRAD_GPT_IMPL_H

#include "xgrad.h"

/* Whether xg_gpt accepts the configuration; the error set when not. */
bool xg__gpt_config_ok(const xg_gpt_config *c);

/* xg_gpt without the initialisation, for a loader that overwrites every
 * parameter: weights and biases zeros (LayerNorm weights ones), and the
 * thread's generator is not used. Same errors as xg_gpt. */
xg_module *xg__gpt_blank(const xg_gpt_config *config);

/* xg_embedding_layer with a zero weight, without using the generator
 * (api/nn/nn.c). */
xg_module *xg__embedding_layer_zeros(int64_t num, int64_t dim);

#endif
