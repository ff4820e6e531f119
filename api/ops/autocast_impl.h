/* Autocast (xg_set_autocast) as the op front-ends apply it. Not
 * installed. */
#ifndef XGRAD_AUTOCAST_IMPL_H
#define XGRAD_AUTOCAST_IMPL_H

#include "core_impl.h"

/* For the front-ends that run in 16 bits under autocast (matmul, linear,
 * conv2d, attention): when the calling thread's autocast dtype is 16-bit
 * and one of in[0 .. n) (NULL entries skipped) is a float tensor of
 * another dtype, opens a composite scope (into *scope), replaces each such
 * in[i] by xg_to_dtype(in[i], autocast dtype) (differentiable: gradients
 * come back in the input's dtype) and returns true; the front-end then
 * returns xg__composite_end(*scope, <itself called on in[]>), whose inputs
 * now need no cast. A failed cast leaves NULL in in[i] with its error.
 * Returns false (in[] and *scope untouched) when there is nothing to
 * cast. */
bool xg__autocast(xg_tensor **in, int n, xg_scope **scope);

/* The same for the front-ends that stay f32 under autocast (softmax,
 * log_softmax, cross-entropy, batch norm): while autocast is on, their
 * bf16 and f16 inputs are cast to f32 (so 16-bit activations meet f32
 * parameters and statistics). Layer norm computes in f32 too but rounds
 * its output to the autocast dtype (ops/norm.c). */
bool xg__autocast_f32(xg_tensor **in, int n, xg_scope **scope);

#endif
