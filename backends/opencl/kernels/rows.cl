/* ROWS family over the last axis of a [rows, cols] view: one work-group
 * (1-D, power-of-two size) per row. Every row op first finds the row max
 * (NaN-propagating) and the sum of exp(x - max) over the row. Kernels take
 * (long rows, long cols, int ignore_index); only cross_entropy and its
 * backward read ignore_index (struct xg_rows_args). */

typedef struct xg_row_stats {
    float max, sum_exp;
} xg_row_stats;

/* Collective: every work-item of the group must call it. `scratch` holds
 * XG_WG_MAX floats. */
xg_row_stats xg_row_stats_of(__global const float *x, long cols,
                             __local float *scratch)
{
    int l = get_local_id(0), n = get_local_size(0);
    float m = -INFINITY;
    for (long c = l; c < cols; c += n)
        m = xg_nan_max(m, x[c]);
    m = xg_group_max(m, scratch);
    float s = 0.0f;
    for (long c = l; c < cols; c += n)
        s += exp(x[c] - m);
    xg_row_stats st = {m, xg_group_sum(s, scratch)};
    return st;
}

__kernel void xg_softmax(__global const float *x, __global float *out,
                         long rows, long cols, int ignore_index)
{
    __local float scratch[XG_WG_MAX];
    long r = get_group_id(0);
    x += r * cols;
    out += r * cols;
    xg_row_stats st = xg_row_stats_of(x, cols, scratch);
    for (long c = get_local_id(0); c < cols; c += get_local_size(0))
        out[c] = exp(x[c] - st.max) / st.sum_exp;
}

__kernel void xg_log_softmax(__global const float *x, __global float *out,
                             long rows, long cols, int ignore_index)
{
    __local float scratch[XG_WG_MAX];
    long r = get_group_id(0);
    x += r * cols;
    out += r * cols;
    xg_row_stats st = xg_row_stats_of(x, cols, scratch);
    float log_sum = log(st.sum_exp);
    for (long c = get_local_id(0); c < cols; c += get_local_size(0))
        out[c] = x[c] - st.max - log_sum;
}

/* loss[r] = logsumexp(x[r]) - x[r, label[r]] = log s - (x[label] - max),
 * counted[r] = 1; loss 0 and counted 0 for a row labelled ignore_index;
 * loss NaN for any other label outside [0, cols). Ignored rows still run
 * the (collective) statistics: every work-item meets the same barriers. */
__kernel void xg_cross_entropy(__global const float *x,
                               __global const int *label,
                               __global float *loss, __global float *counted,
                               long rows, long cols, int ignore_index)
{
    __local float scratch[XG_WG_MAX];
    long r = get_group_id(0);
    x += r * cols;
    xg_row_stats st = xg_row_stats_of(x, cols, scratch);
    int y = label[r];
    bool ignored = y == ignore_index;
    if (get_local_id(0) == 0) {
        loss[r] = ignored                ? 0.0f
                  : y >= 0 && y < cols ? log(st.sum_exp) - (x[y] - st.max)
                                       : NAN;
        counted[r] = ignored ? 0.0f : 1.0f;
    }
}

/* dx[r, c] = (softmax(x[r])[c] - (c == label[r])) * g[r]; 0 over a row
 * labelled ignore_index, NaN over a row with another label outside
 * [0, cols). */
__kernel void xg_cross_entropy_backward(__global const float *x,
                                        __global const int *label,
                                        __global const float *g,
                                        __global float *dx, long rows,
                                        long cols, int ignore_index)
{
    __local float scratch[XG_WG_MAX];
    long r = get_group_id(0);
    x += r * cols;
    dx += r * cols;
    xg_row_stats st = xg_row_stats_of(x, cols, scratch);
    int y = label[r];
    bool ignored = y == ignore_index;
    bool valid = y >= 0 && y < cols;
    float gr = g[r];
    for (long c = get_local_id(0); c < cols; c += get_local_size(0)) {
        float p = exp(x[c] - st.max) / st.sum_exp;
        dx[c] = ignored ? 0.0f
                : valid ? (p - (c == y ? 1.0f : 0.0f)) * gr
                        : NAN;
    }
}
