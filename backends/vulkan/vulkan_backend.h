/* What the Vulkan backend offers beyond the dispatch table, for tests and
 * tools inside libxgrad.
 *
 * Environment:
 *   XGRAD_VK_VALIDATION=1     enable VK_LAYER_KHRONOS_validation and print
 *                             every warning and error it reports to stderr;
 *                             "sync" adds synchronization validation. Opening
 *                             fails if the layer is not installed.
 *   XGRAD_VK_STAGING=1        never map device memory directly: move data
 *                             through staging buffers, as on a discrete GPU.
 *   XGRAD_VK_TILED_GEMM=1     use the GPU GEMM kernel (shaders/gemm.comp) on
 *                             CPU drivers too, which otherwise run
 *                             shaders/gemm_subgroup.comp.
 *   XGRAD_VK_16BIT=0          keep 16-bit elements (bf16, f16) in 32-bit
 *                             words, two per word, even where the device has
 *                             storageBuffer16BitAccess (which is then left
 *                             off); the results are the same bits.
 * The last three exist so that CI on lavapipe covers the paths that GPUs
 * take.
 */
#ifndef XGRAD_VULKAN_BACKEND_H
#define XGRAD_VULKAN_BACKEND_H

#include <stdint.h>

struct xg_backend_device;

/* Validation warnings and errors reported since the process started, over
 * every instance; 0 when validation is off. */
uint64_t xg_vulkan_validation_messages(void);

/* Test hook: makes an open Vulkan device behave as if the driver had
 * returned VK_ERROR_DEVICE_LOST, so that tests can check that every later
 * call fails with XG_ERR_DEVICE_LOST and that free() and close() still
 * release everything. */
void xg_vulkan_simulate_device_lost(struct xg_backend_device *dev);

/* Whether an open Vulkan device moves 16-bit elements through
 * storageBuffer16BitAccess (1) or as 32-bit words (0); see XGRAD_VK_16BIT. */
int xg_vulkan_16bit_storage(const struct xg_backend_device *dev);

#endif
