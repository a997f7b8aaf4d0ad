/* Sampling of plain rows (temperature 1, no filter) on the CPU, fp32: one call per step for the
 * whole batch instead of about fifteen torch and numpy ops. Same algorithm as sampling.py:
 * the uniform behind a row's k-th token is SplitMix64 of (seed, k), bit for bit; the token is
 * the first whose cumulative weight exp(logit - max) exceeds u times the total (the total is
 * the cumulative sum's last entry, so u < 1 always lands inside the row); its logprob is under
 * the raw distribution. The cumulative sum is kept in double (in float, 49k sequential adds
 * drift by ~0.3% of the mass), so a draw can differ from the torch path only when u falls
 * within rounding of a boundary between two tokens. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* logits (rows, vocab) contiguous; seeds, counters (rows,) -> tokens (rows,), logprobs (rows,).
 * Returns 1 when the scratch row could not be allocated. */
int ponder_sample_plain_f32(const float *logits, int64_t rows, int64_t vocab,
                            const uint64_t *seeds, const uint64_t *counters, int64_t *tokens,
                            float *logprobs) {
    double *cum = malloc((size_t)vocab * sizeof(double));
    if (cum == NULL) return 1;
    for (int64_t r = 0; r < rows; r++) {
        const float *l = logits + r * vocab;
        float top = l[0];
        for (int64_t v = 1; v < vocab; v++) top = l[v] > top ? l[v] : top;
        for (int64_t v = 0; v < vocab; v++) cum[v] = expf(l[v] - top);
        for (int64_t v = 1; v < vocab; v++) cum[v] += cum[v - 1]; /* a scan: stays in order */
        const double total = cum[vocab - 1];
        const uint64_t bits = mix64(mix64(seeds[r]) + (counters[r] + 1) * 0x9E3779B97F4A7C15ULL);
        const double target = (double)(bits >> 40) * 0x1p-24 * total;
        int64_t lo = 0, hi = vocab - 1; /* first v with cum[v] > target, else the last */
        while (lo < hi) {
            const int64_t mid = (lo + hi) / 2;
            if (cum[mid] > target)
                hi = mid;
            else
                lo = mid + 1;
        }
        tokens[r] = lo;
        logprobs[r] = (float)(l[lo] - (top + log(total)));
    }
    free(cum);
    return 0;
}
