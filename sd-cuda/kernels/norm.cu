// Group norm (optionally fused with SiLU), layer norm and softmax.
//
// Statistics accumulate in f64 as the CPU reference does (sum and sum of squares in one pass):
// `E[x²] − mean²` then loses nothing that matters, and the mean is split into an f32 value and
// its f32 remainder so that `(v − mean) − mean_lo` keeps the deviation accurate even when the
// mean is large next to the spread.
#include "common.cuh"

#define THREADS 256

struct Normalizer {
    float mean, mean_lo, rstd;
};

__device__ __forceinline__ Normalizer finish_stats(double sum, double sum_sq, double count, float eps) {
    const double mean = sum / count;
    const double var = fmax(sum_sq / count - mean * mean, 0.0);
    Normalizer s;
    s.mean = (float)mean;
    s.mean_lo = (float)(mean - (double)s.mean);
    s.rstd = (float)(1.0 / sqrt(var + (double)eps));
    return s;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// ---- group norm: two launches over the same grid (sample·group, chunk) -------------------
//
// Each (sample, group) is one contiguous run of `group_len` values, cut into chunks of
// `chunk_len` so that even batch 1 with 32 groups fills the GPU. The first launch writes each
// chunk's f64 sum and sum of squares; the second adds a group's partials and normalises its
// chunk.

template <typename T>
__device__ void group_stats(const T* x, double* partials, u64 group_len, u64 chunk_len) {
    __shared__ double scratch[THREADS / 32];
    const u64 group = blockIdx.x, chunk = blockIdx.y;
    const u64 begin = chunk * chunk_len;
    const u64 end = min(begin + chunk_len, group_len);
    const T* src = x + group * group_len;
    double sum = 0.0, sum_sq = 0.0;
    for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const double v = (double)to_float(src[i]);
        sum += v;
        sum_sq += v * v;
    }
    sum = block_sum(sum, scratch);
    sum_sq = block_sum(sum_sq, scratch);
    if (threadIdx.x == 0) {
        double* out = partials + 2 * (group * gridDim.y + chunk);
        out[0] = sum;
        out[1] = sum_sq;
    }
}

struct GroupNormShape {
    u64 group_len, chunk_len, spatial;
    u32 groups, channels_per_group;
    float eps;
    int silu;
};

template <typename T>
__device__ void group_norm_apply(const T* x, T* y, const double* partials, const T* gamma,
                                 const T* beta, GroupNormShape s) {
    __shared__ Normalizer stats;
    const u64 group = blockIdx.x, chunk = blockIdx.y;
    if (threadIdx.x == 0) {
        double sum = 0.0, sum_sq = 0.0;
        for (u32 c = 0; c < gridDim.y; ++c) {
            sum += partials[2 * (group * gridDim.y + c)];
            sum_sq += partials[2 * (group * gridDim.y + c) + 1];
        }
        stats = finish_stats(sum, sum_sq, (double)s.group_len, s.eps);
    }
    __syncthreads();
    const Normalizer st = stats;
    const u32 first_channel = (u32)(group % s.groups) * s.channels_per_group;
    const u64 begin = chunk * s.chunk_len;
    const u64 end = min(begin + s.chunk_len, s.group_len);
    const u64 base = group * s.group_len;
    for (u64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const u32 c = first_channel + (u32)(i / s.spatial);
        const float scale = st.rstd * to_float(gamma[c]);
        float v = ((to_float(x[base + i]) - st.mean) - st.mean_lo) * scale + to_float(beta[c]);
        if (s.silu) v = silu(v);
        y[base + i] = from_float<T>(v);
    }
}

// ---- layer norm and softmax: one block per row --------------------------------------------

template <typename T>
__device__ void layer_norm(const T* x, T* y, const T* gamma, const T* beta, u32 width, float eps) {
    __shared__ double scratch[THREADS / 32];
    const u64 row = blockIdx.x;
    const T* src = x + row * width;
    T* dst = y + row * width;
    double sum = 0.0, sum_sq = 0.0;
    for (u32 i = threadIdx.x; i < width; i += blockDim.x) {
        const double v = (double)to_float(src[i]);
        sum += v;
        sum_sq += v * v;
    }
    sum = block_sum(sum, scratch);
    sum_sq = block_sum(sum_sq, scratch);
    const Normalizer st = finish_stats(sum, sum_sq, (double)width, eps);
    for (u32 i = threadIdx.x; i < width; i += blockDim.x) {
        const float v = ((to_float(src[i]) - st.mean) - st.mean_lo) * st.rstd;
        dst[i] = from_float<T>(v * to_float(gamma[i]) + to_float(beta[i]));
    }
}

// Softmax of one row of `width` values in S (f32 scores or the storage type) into the storage
// type; entries at or past `valid` count as −∞ (the causal mask of attention's fallback path).
template <typename S, typename T>
__device__ void softmax_row(const S* src, T* dst, u32 width, u32 valid) {
    __shared__ float scratch[THREADS / 32];
    float m = NEG_INF;
    for (u32 i = threadIdx.x; i < valid; i += blockDim.x) m = fmaxf(m, to_float(src[i]));
    m = block_max(m, scratch);
    float sum = 0.0f;
    for (u32 i = threadIdx.x; i < valid; i += blockDim.x) sum += expf(to_float(src[i]) - m);
    sum = block_sum(sum, scratch);
    const float inv_sum = 1.0f / sum;
    for (u32 i = threadIdx.x; i < width; i += blockDim.x)
        dst[i] = from_float<T>(i < valid ? expf(to_float(src[i]) - m) * inv_sum : 0.0f);
}

template <typename T> __device__ void softmax(const T* x, T* y, u32 width) {
    const u64 row = blockIdx.x;
    softmax_row(x + row * width, y + row * width, width, width);
}

// Attention's fallback: rows of f32 scores → probabilities in the storage type. Row r is query
// `first_query + r % queries_per_head` (rows are [head, query] in this call); with `causal`,
// keys after the query are masked.
template <typename T>
__device__ void attention_softmax(const float* scores, T* probs, u32 keys, u32 queries_per_head,
                                  u32 first_query, int causal) {
    const u64 row = blockIdx.x;
    const u32 query = first_query + (u32)(row % queries_per_head);
    const u32 valid = causal ? min(query + 1, keys) : keys;
    softmax_row(scores + row * keys, probs + row * keys, keys, valid);
}

#define INSTANTIATE(T, SUFFIX)                                                                 \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        group_stats_##SUFFIX(const T* x, double* partials, u64 group_len, u64 chunk_len) {     \
        group_stats(x, partials, group_len, chunk_len);                                        \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        group_norm_apply_##SUFFIX(const T* x, T* y, const double* partials, const T* gamma,    \
                                  const T* beta, GroupNormShape s) {                           \
        group_norm_apply(x, y, partials, gamma, beta, s);                                      \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        layer_norm_##SUFFIX(const T* x, T* y, const T* gamma, const T* beta, u32 width,        \
                            float eps) {                                                       \
        layer_norm(x, y, gamma, beta, width, eps);                                             \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        softmax_##SUFFIX(const T* x, T* y, u32 width) {                                        \
        softmax(x, y, width);                                                                  \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS)                                      \
        attention_softmax_##SUFFIX(const float* scores, T* probs, u32 keys,                    \
                                   u32 queries_per_head, u32 first_query, int causal) {        \
        attention_softmax(scores, probs, keys, queries_per_head, first_query, causal);         \
    }

INSTANTIATE(float, f32)
INSTANTIATE(half_t, f16)
