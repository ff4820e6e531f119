/* xg_gemm: C_b = alpha opA(A_b) opB(B_b) + beta C_b for every batch entry b,
 * row-major (ocl_gemm.c: with XGRAD_OPENCL_GEMM=xgrad, instead of CLBlast). opA(A) is
 * m x k (A stored k x m when trans_a), opB(B) k x n (stored n x k when
 * trans_b). Matrices start at their buffer's offset plus b times their
 * stride (elements) and have leading dimensions lda, ldb, ldc.
 *
 * Work-groups of 16 x 16 work-items compute 64 x 64 tiles of C, each
 * work-item 4 x 4 elements spaced 16 apart; k is walked in slices of 16
 * staged in local memory. Every element sums its k products in order,
 * without contraction, so results do not depend on the launch.
 * global = (ceil(n / 64) * 16, ceil(m / 64) * 16, batch).
 */
#define XG_GEMM_T 64 /* tile side */
#define XG_GEMM_K 16 /* k slice */
#define XG_GEMM_L 16 /* work-items per tile side */
#define XG_GEMM_R (XG_GEMM_T / XG_GEMM_L) /* elements per work-item side */

__kernel __attribute__((reqd_work_group_size(XG_GEMM_L, XG_GEMM_L, 1)))
void xg_gemm(__global const float *a, __global const float *b,
             __global float *c, int m, int n, int k, int trans_a, int trans_b,
             long a_off, long lda, long stride_a, long b_off, long ldb,
             long stride_b, long c_off, long ldc, long stride_c, float alpha,
             float beta)
{
    __local float as[XG_GEMM_K][XG_GEMM_T]; /* [k][row of the tile] */
    __local float bs[XG_GEMM_K][XG_GEMM_T]; /* [k][column of the tile] */
    long batch = get_global_id(2);
    a += a_off + batch * stride_a;
    b += b_off + batch * stride_b;
    c += c_off + batch * stride_c;
    int tx = get_local_id(0), ty = get_local_id(1);
    int lid = ty * XG_GEMM_L + tx;
    int row0 = get_group_id(1) * XG_GEMM_T, col0 = get_group_id(0) * XG_GEMM_T;
    float acc[XG_GEMM_R][XG_GEMM_R];
    for (int i = 0; i < XG_GEMM_R; i++)
        for (int j = 0; j < XG_GEMM_R; j++)
            acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += XG_GEMM_K) {
        /* 16 x 64 elements of each operand, 4 per work-item; consecutive
         * work-items read consecutive addresses of either layout. */
        for (int e = lid; e < XG_GEMM_K * XG_GEMM_T;
             e += XG_GEMM_L * XG_GEMM_L) {
            int kk, r;
            if (trans_a) { /* A[kk][row]: rows contiguous */
                kk = e / XG_GEMM_T;
                r = e % XG_GEMM_T;
            } else { /* A[row][kk] */
                kk = e % XG_GEMM_K;
                r = e / XG_GEMM_K;
            }
            int row = row0 + r, kidx = k0 + kk;
            as[kk][r] = row < m && kidx < k
                            ? a[trans_a ? kidx * lda + row : row * lda + kidx]
                            : 0.0f;
            if (trans_b) { /* B[col][kk] */
                kk = e % XG_GEMM_K;
                r = e / XG_GEMM_K;
            } else { /* B[kk][col]: columns contiguous */
                kk = e / XG_GEMM_T;
                r = e % XG_GEMM_T;
            }
            int col = col0 + r;
            kidx = k0 + kk;
            bs[kk][r] = col < n && kidx < k
                            ? b[trans_b ? col * ldb + kidx : kidx * ldb + col]
                            : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        int kn = min(XG_GEMM_K, k - k0);
        for (int kk = 0; kk < kn; kk++) {
            float ar[XG_GEMM_R], br[XG_GEMM_R];
            for (int i = 0; i < XG_GEMM_R; i++) {
                ar[i] = as[kk][ty + i * XG_GEMM_L];
                br[i] = bs[kk][tx + i * XG_GEMM_L];
            }
            for (int i = 0; i < XG_GEMM_R; i++)
                for (int j = 0; j < XG_GEMM_R; j++)
                    acc[i][j] += ar[i] * br[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < XG_GEMM_R; i++) {
        int row = row0 + ty + i * XG_GEMM_L;
        for (int j = 0; j < XG_GEMM_R; j++) {
            int col = col0 + tx + j * XG_GEMM_L;
            if (row < m && col < n) {
                __global float *p = c + row * ldc + col;
                float v = alpha * acc[i][j];
                *p = beta != 0.0f ? v + beta * *p : v;
            }
        }
    }
}
