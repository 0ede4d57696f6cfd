// Shared by every sd-cuda kernel file (NVRTC gets it as an in-memory header).
//
// The kernels include no CUDA toolkit header, so that a machine with only the driver and
// libnvrtc can compile them: 16-bit floats are plain bit patterns (`half_t`) converted with
// the PTX `cvt` instructions, and everything else is built in to NVRTC.
//
// Storage types: `float` (f32 mode) and `half_t` (f16 mode). All arithmetic is f32.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)

struct half_t {
    unsigned short bits;
};

__device__ __forceinline__ float to_float(float x) { return x; }

__device__ __forceinline__ float to_float(half_t x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_float(float x);

template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }

template <> __device__ __forceinline__ half_t from_float<half_t>(float x) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));
    return h;
}

// Two f32 values rounded to f16 and packed into one 32-bit register, `lo` in the low half
// (the operand layout of the f16 tensor-core instructions).
__device__ __forceinline__ u32 pack_half2(float lo, float hi) {
    u32 packed;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
}

// Grid-stride loop over `n` elements: every launch shape covers every element.
#define FOR_EACH_INDEX(i, n)                                                                   \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
         i += (u64)blockDim.x * gridDim.x)

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum (or max) over the whole block, returned to every thread. `scratch` holds one value per
// warp; blockDim.x must be a multiple of 32 (every launch in sd-cuda uses 256 threads).
// Begins with a barrier so that `scratch` may be reused by consecutive calls.
template <typename V> __device__ __forceinline__ V block_sum(V v, V* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    V total = 0;
    for (int w = 0; w < warps; ++w) total += scratch[w];
    return total;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = NEG_INF;
    for (int w = 0; w < warps; ++w) m = fmaxf(m, scratch[w]);
    return m;
}

// Up to this many dims in a strided walk (broadcast, permute); the host merges dims first, so
// any SD tensor needs at most 4.
#define MAX_DIMS 6

// Row-major output dims and, per operand, the element stride of each dim (0 = broadcast).
// Laid out like `StridedWalk` in src/launch.rs.
struct StridedWalk {
    u64 dims[MAX_DIMS];
    u64 a_strides[MAX_DIMS];
    u64 b_strides[MAX_DIMS];
    u32 rank;
};
