/* Internals of the GPT model (api/nn/gpt.c) shared with its file formats
 * (api/io/gpt_hf.c). Not installed. */
#ifndef XGRAD_GPT_IMPL_H
#define XGRAD_GPT_IMPL_H

#include "xgrad.h"

/* xg_gpt without the initialisation, for a loader that overwrites every
 * parameter: the Conv1D weights are zeros, the embeddings hold whatever
 * their layers drew, and the thread's generator is left as it was. Same
 * errors as xg_gpt. */
xg_module *xg__gpt_blank(const xg_gpt_config *config);

#endif
