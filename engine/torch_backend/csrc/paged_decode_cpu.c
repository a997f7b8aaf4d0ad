/* Paged decode attention on the CPU, fp32: one query token per row, keys read in place.
 *
 * Built at first use by engine/torch_backend/cpu_decode.py (cc -O3 -march=native) and called
 * through ctypes, once per layer per decode step. It does what the portable path does in about
 * twenty torch ops: write each row's new key and value into its slot, then softmax attention of
 * every query head over its row's keys, following the row's block table into the cache instead
 * of gathering blocks into a copy.
 *
 * Rows come in groups (cascade attention): a group's rows hold their first `shared` blocks in
 * common (forks of one prompt), each wholly before every member's new token. Per group and kv
 * head, each shared key block is transposed once and multiplied against all the group's queries
 * (keys in vector lanes: no horizontal sums), and each shared value row is read once for all of
 * them; the blocks after the shared run are each row's own. A row outside every group is a
 * group of one sharing nothing.
 *
 * Layouts (element strides; fp32 except the int64 index arrays):
 *   q        (B, Hq, D)   row stride q_row, heads contiguous
 *   k, v     (B, Hkv, D)  row strides k_row, v_row: the new token's key and value
 *   caches   (Hkv, NB, BS, D) contiguous
 *   tables   (B, W)       row stride table_row; a row reads its first ceil(len / BS) entries
 *   lens     (B,)         tokens with KV after this step (>= 1), the new token included
 *   order    (B,)         rows in group order; group g is order[bounds[g] .. bounds[g + 1])
 *   shared   (G,)         leading blocks group g's rows hold in common
 *   out      (B, Hq, D)   contiguous
 * Query head h attends with kv head h / (Hq / Hkv) (grouped-query attention).
 * Returns 0, or 1 when a scratch buffer could not be allocated (out is then incomplete).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float dot(const float *restrict a, const float *restrict b, int64_t d) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* 16 floats, loaded and stored unaligned: one zmm register, or two ymm. */
typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));
static inline v16 load16(const float *p) { return *(const v16 *)p; }
static inline void store16(float *p, v16 x) { *(v16 *)p = x; }

/* scores[i * stride + t] = qs[i] . key t, for the bs keys of one block transposed in kt (d, bs)
 * and nq queries: keys in vector lanes, one broadcast multiply-add per query and dimension, four
 * queries per pass over kt. */
static void block_scores(const float *restrict qs, int64_t nq, int64_t d,
                         const float *restrict kt, int64_t bs, float *restrict scores,
                         int64_t stride) {
    int64_t i = 0;
    if (bs == 16) { /* the default block size: the sums stay in registers */
        for (; i + 4 <= nq; i += 4) {
            v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            const float *q0 = qs + i * d;
            for (int64_t c = 0; c < d; c++) {
                const v16 key = load16(kt + c * 16);
                a0 += q0[c] * key;
                a1 += q0[d + c] * key;
                a2 += q0[2 * d + c] * key;
                a3 += q0[3 * d + c] * key;
            }
            store16(scores + i * stride, a0);
            store16(scores + (i + 1) * stride, a1);
            store16(scores + (i + 2) * stride, a2);
            store16(scores + (i + 3) * stride, a3);
        }
    }
    for (; i < nq; i++) {
        float *restrict s = scores + i * stride;
        for (int64_t t = 0; t < bs; t++) s[t] = 0.0f;
        for (int64_t c = 0; c < d; c++) {
            const float x = qs[i * d + c];
#pragma omp simd
            for (int64_t t = 0; t < bs; t++) s[t] += x * kt[c * bs + t];
        }
    }
}

/* out[i] += sum over first <= t < n of w[i * stride + t] * value t, for nq queries whose
 * outputs are out[i] (d floats each), value t = rows[t / bs] + (t % bs) * d. Dimensions in
 * vector lanes, sums in registers until the end, four queries per pass over the values (then
 * one at a time); keys walked block by block, so no division in the inner loop. */
static void weighted_values(const float *restrict w, int64_t stride, int64_t nq,
                            const float *const *rows, int64_t bs, int64_t first, int64_t n,
                            int64_t d, float *const *out) {
    int64_t i = 0;
    if (d % 16 == 0) {
        for (; i + 4 <= nq; i += 4)
            for (int64_t c = 0; c < d; c += 16) {
                v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                const float *w0 = w + i * stride;
                for (int64_t j = first / bs; j * bs < n; j++) {
                    const int64_t lo = first > j * bs ? first : j * bs;
                    const int64_t hi = n < (j + 1) * bs ? n : (j + 1) * bs;
                    const float *base = rows[j] + c - j * bs * d;
                    for (int64_t t = lo; t < hi; t++) {
                        const v16 value = load16(base + t * d);
                        a0 += w0[t] * value;
                        a1 += w0[stride + t] * value;
                        a2 += w0[2 * stride + t] * value;
                        a3 += w0[3 * stride + t] * value;
                    }
                }
                store16(out[i] + c, load16(out[i] + c) + a0);
                store16(out[i + 1] + c, load16(out[i + 1] + c) + a1);
                store16(out[i + 2] + c, load16(out[i + 2] + c) + a2);
                store16(out[i + 3] + c, load16(out[i + 3] + c) + a3);
            }
        for (; i < nq; i++)
            for (int64_t c = 0; c < d; c += 16) {
                v16 a = {0};
                const float *wi = w + i * stride;
                for (int64_t j = first / bs; j * bs < n; j++) {
                    const int64_t lo = first > j * bs ? first : j * bs;
                    const int64_t hi = n < (j + 1) * bs ? n : (j + 1) * bs;
                    const float *base = rows[j] + c - j * bs * d;
                    for (int64_t t = lo; t < hi; t++) a += wi[t] * load16(base + t * d);
                }
                store16(out[i] + c, load16(out[i] + c) + a);
            }
    }
    for (; i < nq; i++)
        for (int64_t t = first; t < n; t++) {
            const float p = w[i * stride + t], *value = rows[t / bs] + (t % bs) * d;
            float *restrict o = out[i];
#pragma omp simd
            for (int64_t c = 0; c < d; c++) o[c] += p * value[c];
        }
}

typedef struct {
    const float *q, *k_cache, *v_cache;
    const int64_t *tables, *lens, *order, *bounds, *shared;
    float *out;
    int64_t q_row, table_row, hq, hkv, d, bs, num_blocks;
    float scale;
} Step;

/* Scratch for one (group, kv head): qs (M rep, d) scaled queries; scores (M rep, stride);
 * kt (d, bs) a transposed key block; keys and values (blocks) block addresses; outs (M rep). */
typedef struct {
    float *qs, *scores, *kt;
    const float **keys, **values;
    float **outs;
} Scratch;

static void block_rows(const Step *s, const int64_t *table, int64_t blocks, int64_t head_base,
                       const float **keys, const float **values) {
    for (int64_t j = 0; j < blocks; j++) {
        keys[j] = s->k_cache + (head_base + table[j] * s->bs) * s->d;
        values[j] = s->v_cache + (head_base + table[j] * s->bs) * s->d;
    }
}

static void attend_group(const Step *s, int64_t g, int64_t h, const Scratch *w, int64_t stride) {
    const int64_t rep = s->hq / s->hkv, d = s->d, bs = s->bs;
    const int64_t first = s->bounds[g], rows = s->bounds[g + 1] - first, nq = rows * rep;
    const int64_t head_base = h * s->num_blocks * bs, shared = s->shared[g];
    float *restrict qs = w->qs, *restrict scores = w->scores, *restrict kt = w->kt;
    for (int64_t m = 0; m < rows; m++) { /* the group's queries, scaled, member-major */
        const int64_t row = s->order[first + m];
        const float *src = s->q + row * s->q_row + h * rep * d;
        for (int64_t i = 0; i < rep * d; i++) qs[m * rep * d + i] = src[i] * s->scale;
        for (int64_t r = 0; r < rep; r++) {
            w->outs[m * rep + r] = s->out + (row * s->hq + h * rep + r) * d;
            memset(w->outs[m * rep + r], 0, (size_t)d * sizeof(float));
        }
    }
    /* Shared keys: each block transposed once and scored against every query of the group. */
    block_rows(s, s->tables + s->order[first] * s->table_row, shared, head_base, w->keys,
               w->values);
    for (int64_t j = 0; j < shared; j++) {
        for (int64_t t = 0; t < bs; t++)
            for (int64_t c = 0; c < d; c++) kt[c * bs + t] = w->keys[j][t * d + c];
        block_scores(qs, nq, d, kt, bs, scores + j * bs, stride);
    }
    for (int64_t m = 0; m < rows; m++) { /* own keys: each row's blocks after the run */
        const int64_t row = s->order[first + m], n = s->lens[row];
        const float **keys = w->keys + shared, **values = w->values + shared;
        block_rows(s, s->tables + row * s->table_row + shared, (n + bs - 1) / bs - shared,
                   head_base, keys, values);
        for (int64_t j = shared; j * bs < n; j++) {
            const int64_t hi = n < (j + 1) * bs ? n : (j + 1) * bs;
            const float *base = keys[j - shared] - j * bs * d;
            for (int64_t t = j * bs; t < hi; t++)
                for (int64_t r = 0; r < rep; r++)
                    scores[(m * rep + r) * stride + t] = dot(qs + (m * rep + r) * d, base + t * d, d);
        }
    }
    for (int64_t m = 0; m < rows; m++) { /* softmax per query over its row's keys */
        const int64_t n = s->lens[s->order[first + m]];
        for (int64_t r = 0; r < rep; r++) {
            float *restrict p = scores + (m * rep + r) * stride, top = -FLT_MAX, sum = 0.0f;
            for (int64_t t = 0; t < n; t++) top = p[t] > top ? p[t] : top;
            for (int64_t t = 0; t < n; t++) {
                p[t] = expf(p[t] - top);
                sum += p[t];
            }
            const float inv = 1.0f / sum;
            for (int64_t t = 0; t < n; t++) p[t] *= inv;
        }
    }
    /* Shared values: each value row read once per four queries of the whole group. */
    block_rows(s, s->tables + s->order[first] * s->table_row, shared, head_base, w->keys,
               w->values);
    weighted_values(scores, stride, nq, w->values, bs, 0, shared * bs, d, w->outs);
    for (int64_t m = 0; m < rows; m++) { /* own values */
        const int64_t row = s->order[first + m], n = s->lens[row];
        block_rows(s, s->tables + row * s->table_row, (n + bs - 1) / bs, head_base, w->keys,
                   w->values);
        weighted_values(scores + m * rep * stride, stride, rep, w->values, bs, shared * bs, n,
                        d, w->outs + m * rep);
    }
}

int ponder_paged_decode_f32(const float *q, int64_t q_row, const float *k, int64_t k_row,
                            const float *v, int64_t v_row, float *k_cache, float *v_cache,
                            int64_t num_blocks, const int64_t *tables, int64_t table_row,
                            const int64_t *lens, const int64_t *order, const int64_t *bounds,
                            const int64_t *shared, int64_t groups, float *out, int64_t batch,
                            int64_t hq, int64_t hkv, int64_t d, int64_t bs, float scale,
                            int threads) {
    const int64_t rep = hq / hkv;
    int64_t longest = 1, widest = 1;
    for (int64_t b = 0; b < batch; b++) { /* 1. the new keys and values, before any read */
        const int64_t pos = lens[b] - 1;
        const int64_t slot = tables[b * table_row + pos / bs] * bs + pos % bs;
        for (int64_t h = 0; h < hkv; h++) {
            const int64_t at = (h * num_blocks * bs + slot) * d;
            memcpy(k_cache + at, k + b * k_row + h * d, (size_t)d * sizeof(float));
            memcpy(v_cache + at, v + b * v_row + h * d, (size_t)d * sizeof(float));
        }
        longest = lens[b] > longest ? lens[b] : longest;
    }
    for (int64_t g = 0; g < groups; g++)
        widest = bounds[g + 1] - bounds[g] > widest ? bounds[g + 1] - bounds[g] : widest;
    const Step step = {q, k_cache, v_cache, tables, lens, order, bounds, shared, out,
                       q_row, table_row, hq, hkv, d, bs, num_blocks, scale};
    int failed = 0;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int64_t blocks = (longest + bs - 1) / bs, nq = widest * rep;
        Scratch w = {malloc((size_t)(nq * d) * sizeof(float)),
                     malloc((size_t)(nq * longest) * sizeof(float)),
                     malloc((size_t)(d * bs) * sizeof(float)),
                     malloc((size_t)blocks * sizeof(float *)),
                     malloc((size_t)blocks * sizeof(float *)),
                     malloc((size_t)nq * sizeof(float *))};
        const int ok = w.qs && w.scores && w.kt && w.keys && w.values && w.outs;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < groups * hkv; i++) /* 2. attention per (group, kv head) */
            if (ok) attend_group(&step, i / hkv, i % hkv, &w, longest);
        free(w.qs);
        free(w.scores);
        free(w.kt);
        free(w.keys);
        free(w.values);
        free(w.outs);
    }
    return failed;
}
