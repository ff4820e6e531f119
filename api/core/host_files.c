/* What backends keep on the host across runs (see backend.h): cache files
 * under $XDG_CACHE_HOME/xgrad, and byte counts from the environment. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <direct.h>
#include <process.h>
#else
#include <unistd.h>
#endif

#include "backend.h"

static bool cache_dir(char *dir, size_t cap)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(dir, cap, "%s/xgrad", xdg);
    else if (home && *home)
        n = snprintf(dir, cap, "%s/.cache/xgrad", home);
    else
        return false;
    return n > 0 && (size_t)n < cap;
}

bool xg__cache_file_path(const char *name, char *path, size_t cap)
{
    char dir[1024];
    if (!cache_dir(dir, sizeof dir))
        return false;
    int n = snprintf(path, cap, "%s/%s", dir, name);
    return n > 0 && (size_t)n < cap;
}

void *xg__cache_file_read(const char *path, size_t max_bytes, size_t *size)
{
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    void *data = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n > 0 && (unsigned long)n <= max_bytes && fseek(f, 0, SEEK_SET) == 0)
        data = malloc((size_t)n);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t)n : 0;
    return data;
}

static void make_dir(const char *path)
{
#ifdef _WIN32
    _mkdir(path);
#else
    mkdir(path, 0755);
#endif
}

bool xg__cache_file_write(const char *path, const void *const *parts,
                          const size_t *sizes, int n_parts)
{
    static _Atomic unsigned serial;
    char dir[1024], tmp[1200];
    if (!cache_dir(dir, sizeof dir))
        return false;
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    make_dir(dir); /* the cache root, e.g. ~/.cache */
    *slash = '/';
    make_dir(dir);
    int len = snprintf(tmp, sizeof tmp, "%s.%ld.%u.tmp", path,
                       (long)getpid(), serial++);
    if (len < 0 || (size_t)len >= sizeof tmp)
        return false;
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return false;
    bool ok = true;
    for (int i = 0; i < n_parts && ok; i++)
        ok = fwrite(parts[i], 1, sizes[i], f) == sizes[i];
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return true;
    remove(tmp);
    return false;
}

xg_status xg__env_bytes(const char *name, bool allow_zero, uint64_t *out)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return XG_ERR_NOT_FOUND;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
    if (shift)
        end++;
    if (errno || end == s || *end || *s == '-' || (v == 0 && !allow_zero) ||
        v > (UINT64_MAX >> shift))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s='%s': expected a number "
                            "of bytes%s, optionally with K, M or G", name, s,
                            allow_zero ? "" : " > 0");
    *out = (uint64_t)v << shift;
    return XG_OK;
}

xg_status xg__env_choice(const char *name, const char *const *names,
                         int count, int fallback, int *out)
{
    const char *v = getenv(name);
    *out = fallback;
    if (!v || !*v)
        return XG_OK;
    for (int i = 0; i < count; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return XG_OK;
        }
    char list[128] = "";
    for (int i = 0; i < count; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 i == 0 ? "" : i + 1 == count ? " or " : ", ", names[i]);
    return xg_set_error(XG_ERR_INVALID_ARG, "%s='%s': expected %s", name, v,
                        list);
}
