/* Status codes and the per-thread last error. */
#include <stdarg.h>
#include <stdio.h>

#include "core_impl.h"

static _Thread_local char last_message[1024];
static _Thread_local xg_status last_status = XG_OK;

const char *xg_status_str(xg_status status)
{
    switch (status) {
#define XG_STATUS_TEXT(name, code, text)                                     \
    case XG_##name:                                                          \
        return text;
        XG_STATUS_LIST(XG_STATUS_TEXT)
#undef XG_STATUS_TEXT
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
