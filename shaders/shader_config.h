/* Workgroup sizes and tile shapes shared by the shaders and the Vulkan
 * backend. This file is valid C and GLSL: #defines only. */
#ifndef XG_SHADER_CONFIG_H
#define XG_SHADER_CONFIG_H

/* The binding of out[0]: in[0..7] take bindings 0..7 (XG_KERNEL_MAX_IN in
 * api/core/backend.h; the Vulkan backend checks that they agree). */
#define XG_VK_OUT_BINDING 8

/* Invocations per workgroup of the 1-D kernels (elementwise, reduce, rows). */
#define XG_WG_SIZE 256

/* Workgroups per grid axis that the backend launches at most (the Vulkan
 * minimum of maxComputeWorkGroupCount); kernels loop over the rest. */
#define XG_MAX_GROUPS 65535

/* Loop trips are a budget: lavapipe (Mesa's LP_MAX_TGSI_LOOP_ITERATIONS)
 * silently ends a shader's loops after 65535 trips in total, per invocation.
 * Loops over long rows therefore take XG_UNROLL elements per trip, GEMM
 * splits K into chunks of at most XG_GEMM_K_CHUNK (partial products, then a
 * sum), and the index backward splits its axis (XG_INDEX_CHUNK). Within
 * lavapipe's 128 MiB buffers no invocation comes near the budget;
 * grid-stride loops over whole tensors take a few trips at most. */
#define XG_UNROLL 16
#define XG_GEMM_K_CHUNK 16384

/* The backward of the index ops (index.comp) walks at most this many
 * positions along the axis per dispatch (XG_INDEX_CHUNK / XG_UNROLL loop
 * trips per line); longer axes take several dispatches. */
#define XG_INDEX_CHUNK 65536

/* The column sums of layer norm's backward (norm.comp) walk at most this
 * many rows per dispatch (XG_NORM_ROW_CHUNK / XG_UNROLL loop trips per
 * column); more rows take several dispatches. */
#define XG_NORM_ROW_CHUNK 65536

/* Invocations per workgroup of the per-plane kernels (conv.comp,
 * pool.comp): grid x runs over the pixels of a plane, grid y over planes. */
#define XG_PLANE_WG 64

/* Invocations per workgroup of the attention kernels (attention.comp): a
 * tile of keys (or queries) at a time, the head size in steps of this. */
#define XG_ATT_WG 64

/* Elements per invocation of the RNG kernel: one Philox block. */
#define XG_RNG_BLOCK 4

/* GEMM: a workgroup of XG_GEMM_WG_X * XG_GEMM_WG_Y invocations computes a
 * XG_GEMM_TILE_M x XG_GEMM_TILE_N tile of C, stepping over K by
 * XG_GEMM_TILE_K; each invocation holds a (TILE_M / WG_Y) x (TILE_N / WG_X)
 * block of C in registers. */
#define XG_GEMM_WG_X 16
#define XG_GEMM_WG_Y 16
#define XG_GEMM_TILE_M 64
#define XG_GEMM_TILE_N 64
#define XG_GEMM_TILE_K 16

/* GEMM on CPU drivers (gemm_subgroup.comp): a workgroup is one subgroup of
 * XG_GEMM_SG_LANES invocations and computes a tile of
 * (LANES * ROW_BLOCKS) x (LANES * COL_BLOCKS). */
#define XG_GEMM_SG_LANES 8
#define XG_GEMM_SG_ROW_BLOCKS 4
#define XG_GEMM_SG_COL_BLOCKS 8

#endif
