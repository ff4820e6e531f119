/* OpenCL error codes: their names, and their mapping to xg_status. */
#include "ocl_impl.h"

#include <CL/cl_ext.h>

/* The error codes of OpenCL 1.2 and the ICD loader. */
#define OCL_ERRORS(X)                                                        \
    X(CL_DEVICE_NOT_FOUND)                                                   \
    X(CL_DEVICE_NOT_AVAILABLE)                                               \
    X(CL_COMPILER_NOT_AVAILABLE)                                             \
    X(CL_MEM_OBJECT_ALLOCATION_FAILURE)                                      \
    X(CL_OUT_OF_RESOURCES)                                                   \
    X(CL_OUT_OF_HOST_MEMORY)                                                 \
    X(CL_PROFILING_INFO_NOT_AVAILABLE)                                       \
    X(CL_MEM_COPY_OVERLAP)                                                   \
    X(CL_IMAGE_FORMAT_MISMATCH)                                              \
    X(CL_IMAGE_FORMAT_NOT_SUPPORTED)                                         \
    X(CL_BUILD_PROGRAM_FAILURE)                                              \
    X(CL_MAP_FAILURE)                                                        \
    X(CL_MISALIGNED_SUB_BUFFER_OFFSET)                                       \
    X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)                          \
    X(CL_COMPILE_PROGRAM_FAILURE)                                            \
    X(CL_LINKER_NOT_AVAILABLE)                                               \
    X(CL_LINK_PROGRAM_FAILURE)                                               \
    X(CL_DEVICE_PARTITION_FAILED)                                            \
    X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)                                      \
    X(CL_INVALID_VALUE)                                                      \
    X(CL_INVALID_DEVICE_TYPE)                                                \
    X(CL_INVALID_PLATFORM)                                                   \
    X(CL_INVALID_DEVICE)                                                     \
    X(CL_INVALID_CONTEXT)                                                    \
    X(CL_INVALID_QUEUE_PROPERTIES)                                           \
    X(CL_INVALID_COMMAND_QUEUE)                                              \
    X(CL_INVALID_HOST_PTR)                                                   \
    X(CL_INVALID_MEM_OBJECT)                                                 \
    X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR)                                    \
    X(CL_INVALID_IMAGE_SIZE)                                                 \
    X(CL_INVALID_SAMPLER)                                                    \
    X(CL_INVALID_BINARY)                                                     \
    X(CL_INVALID_BUILD_OPTIONS)                                              \
    X(CL_INVALID_PROGRAM)                                                    \
    X(CL_INVALID_PROGRAM_EXECUTABLE)                                         \
    X(CL_INVALID_KERNEL_NAME)                                                \
    X(CL_INVALID_KERNEL_DEFINITION)                                          \
    X(CL_INVALID_KERNEL)                                                     \
    X(CL_INVALID_ARG_INDEX)                                                  \
    X(CL_INVALID_ARG_VALUE)                                                  \
    X(CL_INVALID_ARG_SIZE)                                                   \
    X(CL_INVALID_KERNEL_ARGS)                                                \
    X(CL_INVALID_WORK_DIMENSION)                                             \
    X(CL_INVALID_WORK_GROUP_SIZE)                                            \
    X(CL_INVALID_WORK_ITEM_SIZE)                                             \
    X(CL_INVALID_GLOBAL_OFFSET)                                              \
    X(CL_INVALID_EVENT_WAIT_LIST)                                            \
    X(CL_INVALID_EVENT)                                                      \
    X(CL_INVALID_OPERATION)                                                  \
    X(CL_INVALID_GL_OBJECT)                                                  \
    X(CL_INVALID_BUFFER_SIZE)                                                \
    X(CL_INVALID_MIP_LEVEL)                                                  \
    X(CL_INVALID_GLOBAL_WORK_SIZE)                                           \
    X(CL_INVALID_PROPERTY)                                                   \
    X(CL_INVALID_IMAGE_DESCRIPTOR)                                           \
    X(CL_INVALID_COMPILER_OPTIONS)                                           \
    X(CL_INVALID_LINKER_OPTIONS)                                             \
    X(CL_INVALID_DEVICE_PARTITION_COUNT)                                     \
    X(CL_PLATFORM_NOT_FOUND_KHR)

const char *ocl_error_name(cl_int err)
{
    switch (err) {
#define OCL_ERROR_CASE(code)                                                 \
    case code:                                                               \
        return #code;
        OCL_ERRORS(OCL_ERROR_CASE)
#undef OCL_ERROR_CASE
    default:
        return "unknown OpenCL error";
    }
}

xg_status ocl_fail(cl_int err, const char *what)
{
    xg_status status = XG_ERR_BACKEND;
    const char *meaning = "";
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES) {
        status = XG_ERR_DEVICE_OOM;
        meaning = " (device out of memory)";
    } else if (err == CL_OUT_OF_HOST_MEMORY) {
        status = XG_ERR_OUT_OF_MEMORY;
        meaning = " (host out of memory)";
    }
    return xg_set_error(status, "opencl: %s: %s (%d)%s", what,
                        ocl_error_name(err), (int)err, meaning);
}
