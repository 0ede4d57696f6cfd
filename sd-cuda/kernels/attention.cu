// Flash attention on tensor cores (f16 storage, f32 accumulation), FlashAttention-2 style:
// the score matrix only ever exists as one 16×64 register tile per warp.
//
// q [batch, queries, heads·d], k, v [batch, keys, heads·d], heads interleaved in the features
// (head h owns features h·d .. h·d + d). One block = 64 queries of one (batch, head), 4 warps
// of 16 queries each. The block walks the keys in tiles of 64 staged in shared memory:
//
//   S  = Q Kᵀ · scale·log2(e)        mma.sync m16n8k16, Q fragments held in registers
//   m' = max(m, rowmax S)            running row maximum (per thread quad)
//   P  = 2^(S − m')                  rounded to f16 as the A operand of the next product
//   l  = l·2^(m − m') + rowsum P     running denominator
//   O  = O·2^(m − m') + P V          mma.sync, O in registers (16 × D per warp)
//
// and writes O / l. D is the head dim rounded up to 16 (the instruction's k); the padding
// columns of Q, K and V are zero, so they add nothing to S and land in output columns that are
// never stored.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), for lane = 4·g + t:
//   A (16×16, row major), 4 regs of 2 halves: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
//   B (16×8, k × n),      2 regs of 2 halves: (k = 2t..2t+1, n = g), (k = 2t+8..2t+9, n = g)
//   C (16×8, f32),        4 regs:             (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
#include "common.cuh"

#define BLOCK_Q 64
#define BLOCK_K 64
#define WARPS 4
// Shared rows are D + 8 halves long: 16-byte aligned rows whose fragment reads fall in 32
// different banks for every D that is a multiple of 16.
#define ROW_PAD 8

__device__ __forceinline__ void mma_16x8x16(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 load_pair(const unsigned short* p) {
    return *reinterpret_cast<const u32*>(p);
}

__device__ __forceinline__ u32 pack_bits(unsigned short lo, unsigned short hi) {
    return (u32)lo | ((u32)hi << 16);
}

// Stage rows first_row .. first_row + BLOCK_K of one head into `tile` (zeros past `rows` and
// past `head_dim`). `src` points at the head's first feature of row 0; rows are `row_stride`
// halves apart. With `vec8` (head_dim and row_stride multiples of 8, so every row start is
// 16-byte aligned) each thread moves 8 halves at a time.
template <int D>
__device__ void stage_tile(unsigned short (*tile)[D + ROW_PAD], const half_t* src, u32 first_row,
                           u32 rows, u32 row_stride, u32 head_dim, bool vec8) {
    const unsigned short* bits = reinterpret_cast<const unsigned short*>(src);
    if (vec8) {
        const u32 chunks = D / 8;
        for (u32 i = threadIdx.x; i < BLOCK_K * chunks; i += blockDim.x) {
            const u32 r = i / chunks, col = (i % chunks) * 8, row = first_row + r;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row < rows && col < head_dim)
                v = *reinterpret_cast<const uint4*>(bits + (u64)row * row_stride + col);
            *reinterpret_cast<uint4*>(&tile[r][col]) = v;
        }
    } else {
        for (u32 i = threadIdx.x; i < BLOCK_K * D; i += blockDim.x) {
            const u32 r = i / D, col = i % D, row = first_row + r;
            tile[r][col] = (row < rows && col < head_dim) ? bits[(u64)row * row_stride + col] : 0;
        }
    }
}

template <int D>
__device__ void flash_attention(const half_t* q, const half_t* k, const half_t* v, half_t* out,
                                u32 queries, u32 keys, u32 heads, u32 head_dim, float scale,
                                int causal) {
    __shared__ __align__(16) unsigned short k_tile[BLOCK_K][D + ROW_PAD];
    __shared__ __align__(16) unsigned short v_tile[BLOCK_K][D + ROW_PAD];

    const u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const u32 g = lane / 4, t = lane % 4;
    const u32 features = heads * head_dim;
    const u32 first_query = blockIdx.x * BLOCK_Q;
    const u64 head_offset = (u64)blockIdx.y * head_dim;
    const half_t* q_head = q + (u64)blockIdx.z * queries * features + head_offset;
    const half_t* k_head = k + (u64)blockIdx.z * keys * features + head_offset;
    const half_t* v_head = v + (u64)blockIdx.z * keys * features + head_offset;
    half_t* out_head = out + (u64)blockIdx.z * queries * features + head_offset;
    const bool vec8 = head_dim % 8 == 0 && features % 8 == 0;
    const float scale_log2 = scale * 1.4426950408889634f;

    // This warp's 16 query rows as A fragments, staged through k_tile (BLOCK_Q == BLOCK_K).
    u32 q_frag[D / 16][4];
    stage_tile<D>(k_tile, q_head, first_query, queries, features, head_dim, vec8);
    __syncthreads();
    {
        const u32 r0 = warp * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            q_frag[kk][0] = load_pair(&k_tile[r0][kk * 16 + 2 * t]);
            q_frag[kk][1] = load_pair(&k_tile[r1][kk * 16 + 2 * t]);
            q_frag[kk][2] = load_pair(&k_tile[r0][kk * 16 + 8 + 2 * t]);
            q_frag[kk][3] = load_pair(&k_tile[r1][kk * 16 + 8 + 2 * t]);
        }
    }

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    // Rows g and g + 8 of this warp's 16: running max (log2 units) and this thread's share of
    // the running sum (the quad's four shares add up at the end).
    float row_max[2] = {NEG_INF, NEG_INF};
    float row_sum[2] = {0.0f, 0.0f};
    const u32 query_of_row[2] = {first_query + warp * 16 + g, first_query + warp * 16 + g + 8};

    // Causal: no query of this block sees a key at or past first_query + BLOCK_Q.
    const u32 key_end = causal ? min(keys, first_query + BLOCK_Q) : keys;
    for (u32 key0 = 0; key0 < key_end; key0 += BLOCK_K) {
        __syncthreads();  // every warp is done with the previous tiles (and the Q staging)
        stage_tile<D>(k_tile, k_head, key0, keys, features, head_dim, vec8);
        stage_tile<D>(v_tile, v_head, key0, keys, features, head_dim, vec8);
        __syncthreads();

        float s[BLOCK_K / 8][4];
#pragma unroll
        for (int n = 0; n < BLOCK_K / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                const u32 b0 = load_pair(&k_tile[n * 8 + g][kk * 16 + 2 * t]);
                const u32 b1 = load_pair(&k_tile[n * 8 + g][kk * 16 + 8 + 2 * t]);
                mma_16x8x16(s[n], q_frag[kk], b0, b1);
            }
        }

        // Scale, mask, and the tile's row maxima.
        float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int n = 0; n < BLOCK_K / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e / 2;
                const u32 key = key0 + n * 8 + 2 * t + (e % 2);
                const bool visible = key < keys && (!causal || key <= query_of_row[r]);
                s[n][e] = visible ? s[n][e] * scale_log2 : NEG_INF;
                tile_max[r] = fmaxf(tile_max[r], s[n][e]);
            }
        }
        float rescale[2], shift[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The four threads of a quad hold the same two rows.
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            const float new_max = fmaxf(row_max[r], tile_max[r]);
            // A row that has seen only masked keys keeps max −∞: shift by 0 to avoid ∞ − ∞.
            shift[r] = new_max == NEG_INF ? 0.0f : new_max;
            rescale[r] = exp2f(row_max[r] - shift[r]);
            row_max[r] = new_max;
            row_sum[r] *= rescale[r];
        }
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[n][0] *= rescale[0];
            o[n][1] *= rescale[0];
            o[n][2] *= rescale[1];
            o[n][3] *= rescale[1];
        }
#pragma unroll
        for (int n = 0; n < BLOCK_K / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = exp2f(s[n][e] - shift[e / 2]);
                row_sum[e / 2] += s[n][e];
            }
        }

        // O += P V, 16 keys at a time; P's A fragments are two neighbouring S tiles.
#pragma unroll
        for (int step = 0; step < BLOCK_K / 16; ++step) {
            const u32 p[4] = {
                pack_half2(s[2 * step][0], s[2 * step][1]),
                pack_half2(s[2 * step][2], s[2 * step][3]),
                pack_half2(s[2 * step + 1][0], s[2 * step + 1][1]),
                pack_half2(s[2 * step + 1][2], s[2 * step + 1][3]),
            };
            const u32 key_lo = step * 16 + 2 * t, key_hi = key_lo + 8;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                const u32 col = n * 8 + g;
                const u32 b0 = pack_bits(v_tile[key_lo][col], v_tile[key_lo + 1][col]);
                const u32 b1 = pack_bits(v_tile[key_hi][col], v_tile[key_hi + 1][col]);
                mma_16x8x16(o[n], p, b0, b1);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    }
    const float inv_sum[2] = {row_sum[0] > 0.0f ? 1.0f / row_sum[0] : 0.0f,
                              row_sum[1] > 0.0f ? 1.0f / row_sum[1] : 0.0f};
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = e / 2;
            const u32 col = n * 8 + 2 * t + (e % 2);
            if (query_of_row[r] < queries && col < head_dim)
                out_head[(u64)query_of_row[r] * features + col] = from_float<half_t>(o[n][e] * inv_sum[r]);
        }
    }
}

#define INSTANTIATE(D)                                                                         \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                   \
        flash_attention_d##D(const half_t* q, const half_t* k, const half_t* v, half_t* out,   \
                             u32 queries, u32 keys, u32 heads, u32 head_dim, float scale,      \
                             int causal) {                                                     \
        flash_attention<D>(q, k, v, out, queries, keys, heads, head_dim, scale, causal);       \
    }

// Head dims up to 160 (SD 1.5's UNet: 40, 80, 160; CLIP: 64). Larger heads (the VAE's single
// 512-wide head) take the cuBLAS path in src/ops/attention.rs.
INSTANTIATE(16)
INSTANTIATE(32)
INSTANTIATE(48)
INSTANTIATE(64)
INSTANTIATE(80)
INSTANTIATE(96)
INSTANTIATE(112)
INSTANTIATE(128)
INSTANTIATE(144)
INSTANTIATE(160)
