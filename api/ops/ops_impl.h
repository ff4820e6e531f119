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

/* 1 where a == b (broadcasting) or both are NaN, else 0; not recorded by
 * autograd. The mask of tied maxima in max_all's backward. */
xg_tensor *xg__same_value(xg_tensor *a, xg_tensor *b);

/* Backend-neutral gradient ops that are kernels in the op list. */
xg_tensor *xg__unary_backward(xg_op op, xg_tensor *x, xg_tensor *g);

/* xg__unary_backward for a backward rule whose grad_out is g: when
 * xg__grad_reusable(g), the kernel writes dx over g (the UNARY_BACKWARD
 * family may, see api/core/backend.h) and g itself is returned, so the
 * walk holds one gradient of that size instead of two; else a new tensor. */
xg_tensor *xg__unary_backward_rule(xg_op op, xg_tensor *x, xg_tensor *g);

/* False, with XG_ERR_INVALID_ARG naming op and axis ("height", "width"),
 * when the padded extent in + 2 pad or the dilated kernel span
 * dil (k - 1) + 1 passes INT32_MAX: the kernels index the padded input
 * with 32-bit integers. */
bool xg__conv_axis_fits(const char *op, const char *axis, int64_t in, int k,
                        int pad, int dil);

/* Checks a convolution's parameters (strides, dilations, groups >= 1,
 * padding >= 0) and, through xg__conv_axis_fits, its axes for a kh x kw
 * kernel over an h x w input; h = w = 1 checks the parameters alone, as the
 * layer constructor does. Sets the error and returns false otherwise. */
bool xg__conv_params_ok(const char *op, const xg_conv2d_params *p,
                        int64_t h, int64_t w, int kh, int kw);

/* Index outputs (argmax, max's index, max_pool2d's index within a plane)
 * are i32: false, with XG_ERR_TOO_LARGE naming op, what ("axis", "plane")
 * and n, when n passes INT32_MAX. Allocates nothing. */
bool xg__i32_index_ok(const char *op, const char *what, int64_t n);

#endif
