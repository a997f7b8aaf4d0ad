/* out = x @ W^T (+ bias) for the few rows of a decode step, fp32, from a packed copy of W.
 *
 * A decode step multiplies a handful of rows by every weight of the model, so it is bound by
 * streaming the weights from memory. MKL's GEMM, at 4-32 rows, streams them at a third to a
 * half of the machine's bandwidth (bench/matmul_layout.py). Here W (N, K) is packed as
 * (N / 64, K, 64): each 64-column strip of W^T is one contiguous run, read front to back (the
 * hardware prefetcher's case). Threads split the strips; within a strip, four rows at a time
 * keep 4 x 64 sums in registers over one pass along K (from memory for the first four rows,
 * from cache after); leftover rows go one at a time. N must be a multiple of 64. */
#include <stddef.h>
#include <stdint.h>

typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));
static inline v16 load16(const float *p) { return *(const v16 *)p; }
static inline void store16(float *p, v16 x) { *(v16 *)p = x; }

static inline v16 bias16(const float *bias, int64_t at) {
    return bias != NULL ? load16(bias + at) : (v16){0};
}

/* Rows x[0..3] (row stride xr) times strip p (K, 64) -> out[0..3][c..c+63] (row stride n). */
static inline void strip4(const float *restrict x, int64_t xr, const float *restrict p,
                          const float *bias, float *restrict out, int64_t n, int64_t k,
                          int64_t c) {
    v16 a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0}, a13 = {0};
    v16 a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0}, a32 = {0}, a33 = {0};
    const float *x0 = x, *x1 = x + xr, *x2 = x + 2 * xr, *x3 = x + 3 * xr;
    for (int64_t i = 0; i < k; i++) {
        const float *w = p + i * 64;
        const v16 w0 = load16(w), w1 = load16(w + 16), w2 = load16(w + 32), w3 = load16(w + 48);
        const float v0 = x0[i], v1 = x1[i], v2 = x2[i], v3 = x3[i];
        a00 += v0 * w0, a01 += v0 * w1, a02 += v0 * w2, a03 += v0 * w3;
        a10 += v1 * w0, a11 += v1 * w1, a12 += v1 * w2, a13 += v1 * w3;
        a20 += v2 * w0, a21 += v2 * w1, a22 += v2 * w2, a23 += v2 * w3;
        a30 += v3 * w0, a31 += v3 * w1, a32 += v3 * w2, a33 += v3 * w3;
    }
    const v16 b0 = bias16(bias, c), b1 = bias16(bias, c + 16);
    const v16 b2 = bias16(bias, c + 32), b3 = bias16(bias, c + 48);
    float *o = out + c;
    store16(o, a00 + b0), store16(o + 16, a01 + b1), store16(o + 32, a02 + b2);
    store16(o + 48, a03 + b3), o += n;
    store16(o, a10 + b0), store16(o + 16, a11 + b1), store16(o + 32, a12 + b2);
    store16(o + 48, a13 + b3), o += n;
    store16(o, a20 + b0), store16(o + 16, a21 + b1), store16(o + 32, a22 + b2);
    store16(o + 48, a23 + b3), o += n;
    store16(o, a30 + b0), store16(o + 16, a31 + b1), store16(o + 32, a32 + b2);
    store16(o + 48, a33 + b3);
}

static inline void strip1(const float *restrict x, const float *restrict p, const float *bias,
                          float *restrict out, int64_t k, int64_t c) {
    v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int64_t i = 0; i < k; i++) {
        const float *w = p + i * 64;
        const float v = x[i];
        a0 += v * load16(w), a1 += v * load16(w + 16);
        a2 += v * load16(w + 32), a3 += v * load16(w + 48);
    }
    store16(out + c, a0 + bias16(bias, c)), store16(out + c + 16, a1 + bias16(bias, c + 16));
    store16(out + c + 32, a2 + bias16(bias, c + 32));
    store16(out + c + 48, a3 + bias16(bias, c + 48));
}

/* x (M, K) row stride xr; packed (N / 64, K, 64); bias (N,) or NULL; out (M, N) contiguous. */
void ponder_packed_gemm_f32(const float *x, int64_t xr, const float *packed, const float *bias,
                            float *out, int64_t m, int64_t k, int64_t n, int threads) {
    const int64_t strips = n / 64;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t s = 0; s < strips; s++) {
        const float *p = packed + s * k * 64;
        int64_t r = 0;
        for (; r + 4 <= m; r += 4) strip4(x + r * xr, xr, p, bias, out + r * n, n, k, s * 64);
        for (; r < m; r++) strip1(x + r * xr, p, bias, out + r * n, k, s * 64);
    }
}
