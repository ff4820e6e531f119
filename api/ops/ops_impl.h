/* Helpers shared by the op front-ends (api/ops) and the layers above them.
 * Not installed. */
#ifndef XGRAD_OPS_IMPL_H
#define XGRAD_OPS_IMPL_H

#include "core_impl.h"

/* Broadcast-adds `src` into a new tensor of `shape` (which src must
 * broadcast to). */
xg_tensor *xg__expand(xg_tensor *src, const int64_t *shape, int ndim);

/* Sums `g` down to `shape` (the inverse of broadcasting), for gradients of
 * broadcast inputs. Returns g itself when the shapes already match. */
xg_tensor *xg__sum_to(xg_tensor *g, const int64_t *shape, int ndim);

/* Element strides of a contiguous `t` read as `shape`, which it
 * broadcasts to (right-aligned; 0 where broadcast): the strides a BINARY or
 * WHERE kernel takes for the operand xg__arg gives. */
void xg__broadcast_strides(const xg_tensor *t, const int64_t *shape,
                           int ndim, int64_t *strides);

/* Backend-neutral gradient ops that are kernels in the op list. */
xg_tensor *xg__unary_backward(xg_op op, xg_tensor *x, xg_tensor *g);

#endif
