// Ops that only move data: permute (general gather and a tiled batched transpose), strided
// block copies (narrow, concat), nearest 2× upsampling, embedding rows, and im2col for conv2d.
#include "common.cuh"

// y[i] = x[offset of output element i], the offset walked through `walk.a_strides`.
template <typename T> __device__ void permute(const T* x, T* y, u64 n, StridedWalk walk) {
    FOR_EACH_INDEX(i, n) {
        u64 rest = i, src = 0;
        for (int d = (int)walk.rank - 1; d >= 0; --d) {
            src += (rest % walk.dims[d]) * walk.a_strides[d];
            rest /= walk.dims[d];
        }
        y[i] = x[src];
    }
}

#define TILE 32
#define TILE_ROWS 8

// Batched transpose: x [batch, rows, cols] → y [batch, cols, rows], through a shared tile so
// that reads and writes are both coalesced. Block (TILE, TILE_ROWS); grid (⌈cols/TILE⌉,
// ⌈rows/TILE⌉, batch). The +1 column keeps the tile's column reads free of bank conflicts.
template <typename T> __device__ void transpose(const T* x, T* y, u32 rows, u32 cols) {
    __shared__ float tile[TILE][TILE + 1];
    const u64 plane = (u64)rows * cols;
    x += blockIdx.z * plane;
    y += blockIdx.z * plane;
    const u32 col0 = blockIdx.x * TILE, row0 = blockIdx.y * TILE;
    for (u32 r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        const u32 row = row0 + r, col = col0 + threadIdx.x;
        if (row < rows && col < cols) tile[r][threadIdx.x] = to_float(x[(u64)row * cols + col]);
    }
    __syncthreads();
    for (u32 c = threadIdx.y; c < TILE; c += TILE_ROWS) {
        const u32 col = col0 + c, row = row0 + threadIdx.x;
        if (row < rows && col < cols) y[(u64)col * rows + row] = from_float<T>(tile[threadIdx.x][c]);
    }
}

// `rows` runs of `cols` elements: y[dst_offset + r·dst_pitch + c] = x[src_offset + r·src_pitch + c].
// narrow reads a window of each run; concat writes each input into its window of the output.
template <typename T>
__device__ void copy_2d(const T* x, T* y, u64 rows, u64 cols, u64 src_pitch, u64 src_offset,
                        u64 dst_pitch, u64 dst_offset) {
    FOR_EACH_INDEX(i, rows * cols) {
        const u64 r = i / cols, c = i % cols;
        y[dst_offset + r * dst_pitch + c] = x[src_offset + r * src_pitch + c];
    }
}

// x [planes, h, w] → y [planes, 2h, 2w], each pixel repeated into a 2×2 block.
template <typename T> __device__ void upsample_nearest2x(const T* x, T* y, u64 planes, u32 h, u32 w) {
    const u64 out_plane = 4ull * h * w;
    FOR_EACH_INDEX(i, planes * out_plane) {
        const u64 p = i / out_plane, at = i % out_plane;
        const u32 oy = (u32)(at / (2 * w)), ox = (u32)(at % (2 * w));
        y[i] = x[p * h * w + (u64)(oy / 2) * w + ox / 2];
    }
}

// y [count, dim] = table rows `ids` (checked against the table size on the host).
template <typename T>
__device__ void embedding(const T* table, const u32* ids, T* y, u64 count, u64 dim) {
    FOR_EACH_INDEX(i, count * dim) y[i] = table[(u64)ids[i / dim] * dim + i % dim];
}

// Where conv2d's input patches come from; laid out like `Im2colGeometry` in src/ops/conv.rs.
struct Im2colGeometry {
    u32 channels, in_h, in_w;
    u32 kernel_h, kernel_w;
    u32 stride, padding;
    u32 out_w;
    // The output positions this call fills: first_position .. first_position + positions.
    u32 first_position, positions;
};

// col [c·kh·kw, positions]: column q holds the (zero-padded) input patch under output position
// first_position + q of one image x [c, h, w].
template <typename T> __device__ void im2col(const T* x, T* col, Im2colGeometry g) {
    const u32 taps = g.kernel_h * g.kernel_w;
    FOR_EACH_INDEX(i, (u64)g.channels * taps * g.positions) {
        const u32 row = (u32)(i / g.positions), q = (u32)(i % g.positions);
        const u32 c = row / taps, ky = (row % taps) / g.kernel_w, kx = row % g.kernel_w;
        const u32 p = g.first_position + q, oy = p / g.out_w, ox = p % g.out_w;
        // Signed: the padding puts the first taps above and left of the image.
        const int iy = (int)(oy * g.stride + ky) - (int)g.padding;
        const int ix = (int)(ox * g.stride + kx) - (int)g.padding;
        const bool inside = iy >= 0 && iy < (int)g.in_h && ix >= 0 && ix < (int)g.in_w;
        col[i] = inside ? x[((u64)c * g.in_h + iy) * g.in_w + ix] : from_float<T>(0.0f);
    }
}

#define INSTANTIATE(T, SUFFIX)                                                                 \
    extern "C" __global__ void permute_##SUFFIX(const T* x, T* y, u64 n, StridedWalk walk) {   \
        permute(x, y, n, walk);                                                                \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(TILE * TILE_ROWS)                             \
        transpose_##SUFFIX(const T* x, T* y, u32 rows, u32 cols) {                             \
        transpose(x, y, rows, cols);                                                           \
    }                                                                                          \
    extern "C" __global__ void copy_2d_##SUFFIX(const T* x, T* y, u64 rows, u64 cols,          \
                                                u64 src_pitch, u64 src_offset, u64 dst_pitch,  \
                                                u64 dst_offset) {                              \
        copy_2d(x, y, rows, cols, src_pitch, src_offset, dst_pitch, dst_offset);               \
    }                                                                                          \
    extern "C" __global__ void upsample_nearest2x_##SUFFIX(const T* x, T* y, u64 planes, u32 h, \
                                                           u32 w) {                            \
        upsample_nearest2x(x, y, planes, h, w);                                                \
    }                                                                                          \
    extern "C" __global__ void embedding_##SUFFIX(const T* table, const u32* ids, T* y,        \
                                                  u64 count, u64 dim) {                        \
        embedding(table, ids, y, count, dim);                                                  \
    }                                                                                          \
    extern "C" __global__ void im2col_##SUFFIX(const T* x, T* col, Im2colGeometry g) {         \
        im2col(x, col, g);                                                                     \
    }

INSTANTIATE(float, f32)
INSTANTIATE(half_t, f16)
