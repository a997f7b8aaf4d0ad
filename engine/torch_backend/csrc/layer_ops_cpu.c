/* The elementwise parts of a decoder layer on the CPU, fp32, one call each instead of two to
 * six torch ops: the residual add fused with RMSNorm, rotary embedding in place, and
 * SiLU-and-multiply. Built with paged_decode_cpu.c into one library (cpu_decode.py); each loop
 * is one pass over its rows with the inner dimension vectorised. Arithmetic matches model.py's
 * torch path up to summation order. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* res = x + residual (x alone when residual is NULL); out = res / rms(res) * weight.
 * x: (rows, dim) row stride x_row; residual, res, out: (rows, dim) contiguous. */
void ponder_add_rms_norm_f32(const float *x, int64_t x_row, const float *residual, float *res,
                             float *out, const float *weight, int64_t rows, int64_t dim,
                             float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_row;
        float *rr = res + r * dim, *o = out + r * dim;
        float sum = 0.0f;
        if (residual != NULL) {
            const float *pr = residual + r * dim;
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < dim; i++) {
                rr[i] = xr[i] + pr[i];
                sum += rr[i] * rr[i];
            }
        } else {
#pragma omp simd reduction(+ : sum)
            for (int64_t i = 0; i < dim; i++) {
                rr[i] = xr[i];
                sum += rr[i] * rr[i];
            }
        }
        const float scale = 1.0f / sqrtf(sum / (float)dim + eps);
#pragma omp simd
        for (int64_t i = 0; i < dim; i++) o[i] = rr[i] * scale * weight[i];
    }
}

/* Rotate-half rotary embedding in place on the first `heads` heads (d floats each) of every
 * row of x (row stride x_row): x[i] = x[i] cos[i] + x[(i + d/2) % d] sin[i], with cos and the
 * signed sin of model.rope_tables, (rows, d) each. */
void ponder_rope_f32(float *x, int64_t x_row, const float *cos_t, const float *sin_t,
                     int64_t rows, int64_t heads, int64_t d) {
    const int64_t half = d / 2;
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cos_t + r * d, *s = sin_t + r * d;
        for (int64_t h = 0; h < heads; h++) {
            float *v = x + r * x_row + h * d;
#pragma omp simd
            for (int64_t i = 0; i < half; i++) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] + b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

/* out (rows, inter) = silu(gate) * up, where each row of gu (rows, 2 inter) is [gate | up]. */
void ponder_silu_mul_f32(const float *gu, float *out, int64_t rows, int64_t inter) {
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gu + r * 2 * inter, *u = g + inter;
        float *o = out + r * inter;
#pragma omp simd
        for (int64_t i = 0; i < inter; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}
