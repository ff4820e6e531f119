/* Status codes and the per-thread last error. */
#include <stdarg.h>
#include <stdio.h>

#include "core_impl.h"

static _Thread_local char last_message[1024];
static _Thread_local xg_status last_status = XG_OK;

const char *xg_status_str(xg_status status)
{
    switch (status) {
    case XG_OK: return "ok";
    case XG_ERR_INVALID_ARG: return "invalid argument";
    case XG_ERR_SHAPE: return "shape mismatch";
    case XG_ERR_DTYPE: return "wrong element type";
    case XG_ERR_OUT_OF_MEMORY: return "out of host memory";
    case XG_ERR_DEVICE_OOM: return "device out of memory";
    case XG_ERR_DEVICE_LOST: return "device lost";
    case XG_ERR_NO_DEVICE: return "no device";
    case XG_ERR_NOT_FOUND: return "not found";
    case XG_ERR_UNSUPPORTED: return "not supported by this backend";
    case XG_ERR_IO: return "input/output error";
    case XG_ERR_FORMAT: return "malformed file";
    case XG_ERR_TOO_LARGE: return "too large";
    case XG_ERR_BACKEND: return "backend error";
    case XG_ERR_STATE: return "invalid state";
    }
    return "unknown status";
}

xg_status xg_set_error(xg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    last_status = status;
    return status;
}

const char *xg_last_error(void)
{
    return last_message;
}

xg_status xg_last_status(void)
{
    return last_status;
}

void xg_clear_error(void)
{
    last_message[0] = '\0';
    last_status = XG_OK;
}
