// Activations, GEGLU, scalar affine, broadcasting binary ops, and the bias add that follows a
// cuBLAS product. One thread per output element over a grid-stride loop; f32 arithmetic.
#include "common.cuh"

// Activation codes: keep in step with `Activation` in src/ops/elementwise.rs.
#define ACT_SILU 0
#define ACT_GELU 1
#define ACT_QUICK_GELU 2
#define ACT_RELU 3
#define ACT_TANH 4

__device__ __forceinline__ float sigmoid_times(float x, float k) { return x / (1.0f + expf(-k * x)); }

// Exact GELU x·Φ(x); normcdff keeps its relative accuracy in the far negative tail.
__device__ __forceinline__ float gelu(float x) { return x * normcdff(x); }

__device__ __forceinline__ float activate(float x, int act) {
    switch (act) {
    case ACT_SILU: return sigmoid_times(x, 1.0f);
    case ACT_GELU: return gelu(x);
    case ACT_RELU: return fmaxf(x, 0.0f);
    case ACT_TANH: return tanhf(x);
    default: return sigmoid_times(x, 1.702f);
    }
}

template <typename T> __device__ void unary(const T* x, T* y, u64 n, int act) {
    FOR_EACH_INDEX(i, n) y[i] = from_float<T>(activate(to_float(x[i]), act));
}

template <typename T> __device__ void affine(const T* x, T* y, u64 n, float mul, float add) {
    FOR_EACH_INDEX(i, n) y[i] = from_float<T>(to_float(x[i]) * mul + add);
}

// x [rows, 2·half] = [value, gate] → y [rows, half] = value · gelu(gate).
template <typename T> __device__ void geglu(const T* x, T* y, u64 rows, u64 half) {
    FOR_EACH_INDEX(i, rows * half) {
        const u64 row = i / half, col = i % half;
        const T* src = x + row * 2 * half;
        y[i] = from_float<T>(to_float(src[col]) * gelu(to_float(src[half + col])));
    }
}

// Binary op codes: keep in step with `binary_code` in src/ops/elementwise.rs.
#define BIN_ADD 0
#define BIN_SUB 1
#define BIN_MUL 2
#define BIN_DIV 3

__device__ __forceinline__ float combine(float a, float b, int op) {
    switch (op) {
    case BIN_ADD: return a + b;
    case BIN_SUB: return a - b;
    case BIN_MUL: return a * b;
    default: return a / b;
    }
}

// Broadcasting a ∘ b: `walk` gives the (merged) output dims and each operand's strides.
template <typename T>
__device__ void binary(const T* a, const T* b, T* y, u64 n, StridedWalk walk, int op) {
    FOR_EACH_INDEX(i, n) {
        u64 rest = i, ai = 0, bi = 0;
        for (int d = (int)walk.rank - 1; d >= 0; --d) {
            const u64 index = rest % walk.dims[d];
            rest /= walk.dims[d];
            ai += index * walk.a_strides[d];
            bi += index * walk.b_strides[d];
        }
        y[i] = from_float<T>(combine(to_float(a[ai]), to_float(b[bi]), op));
    }
}

// Same-shape a ∘ b: no index arithmetic.
template <typename T> __device__ void binary_same(const T* a, const T* b, T* y, u64 n, int op) {
    FOR_EACH_INDEX(i, n) y[i] = from_float<T>(combine(to_float(a[i]), to_float(b[i]), op));
}

// In place y[i] += bias[(i / inner) % channels]: a linear's bias (inner = 1) or a conv's
// per-output-channel bias (inner = output positions).
template <typename T> __device__ void add_bias(T* y, const T* bias, u64 n, u64 inner, u64 channels) {
    FOR_EACH_INDEX(i, n) y[i] = from_float<T>(to_float(y[i]) + to_float(bias[(i / inner) % channels]));
}

#define INSTANTIATE(T, SUFFIX)                                                                 \
    extern "C" __global__ void unary_##SUFFIX(const T* x, T* y, u64 n, int act) {              \
        unary(x, y, n, act);                                                                   \
    }                                                                                          \
    extern "C" __global__ void affine_##SUFFIX(const T* x, T* y, u64 n, float mul, float add) { \
        affine(x, y, n, mul, add);                                                             \
    }                                                                                          \
    extern "C" __global__ void geglu_##SUFFIX(const T* x, T* y, u64 rows, u64 half) {          \
        geglu(x, y, rows, half);                                                               \
    }                                                                                          \
    extern "C" __global__ void binary_##SUFFIX(const T* a, const T* b, T* y, u64 n,            \
                                               StridedWalk walk, int op) {                     \
        binary(a, b, y, n, walk, op);                                                          \
    }                                                                                          \
    extern "C" __global__ void binary_same_##SUFFIX(const T* a, const T* b, T* y, u64 n,       \
                                                    int op) {                                  \
        binary_same(a, b, y, n, op);                                                           \
    }                                                                                          \
    extern "C" __global__ void add_bias_##SUFFIX(T* y, const T* bias, u64 n, u64 inner,        \
                                                 u64 channels) {                               \
        add_bias(y, bias, n, inner, channels);                                                 \
    }

INSTANTIATE(float, f32)
INSTANTIATE(half_t, f16)
