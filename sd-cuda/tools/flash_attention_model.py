"""A lane-by-lane model of kernels/attention.cu's `flash_attention<D>` for one (batch, head).

Without a GPU the kernel can be compiled (tests/kernels_compile.rs) but not run. This script
replays its indexing in numpy, one warp at a time with all 32 lanes: which Q/K/V elements each
lane loads into which mma.sync fragment, the scale/mask/online-softmax steps on the score
fragments, P repacked as the A operand, and which output element each lane stores.
`mma()` builds the matrices from the fragments exactly as the PTX ISA defines the
m16n8k16 f16 layouts, so a lane putting the wrong element in a fragment shows up as a wrong
result against naive attention. P is rounded to f16 as on the device; inputs are f16 values.

Keep it in step with the kernel when the kernel changes. Run: python
sd-cuda/tools/flash_attention_model.py (numpy, about a second).
Exits non-zero when any case is off by more than 1e-3 relative or leaves an output unwritten.
"""
import numpy as np
BQ = BK = 64; WARPS = 4
lanes = np.arange(32); G = lanes // 4; T = lanes % 4

def mma(c, a, b0, b1):
    # a: [32, 4, 2] halves; b0, b1: [32, 2]; c: [32, 4] f32. Assemble per the spec.
    A = np.zeros((16, 16), np.float32); B = np.zeros((16, 8), np.float32)
    for l in range(32):
        g, t = l // 4, l % 4
        A[g, 2*t:2*t+2] = a[l, 0]; A[g+8, 2*t:2*t+2] = a[l, 1]
        A[g, 2*t+8:2*t+10] = a[l, 2]; A[g+8, 2*t+8:2*t+10] = a[l, 3]
        B[2*t:2*t+2, g] = b0[l]; B[2*t+8:2*t+10, g] = b1[l]
    Dm = A @ B
    out = c.copy()
    for l in range(32):
        g, t = l // 4, l % 4
        out[l, 0] += Dm[g, 2*t]; out[l, 1] += Dm[g, 2*t+1]
        out[l, 2] += Dm[g+8, 2*t]; out[l, 3] += Dm[g+8, 2*t+1]
    return out

def stage(src, first, rows, head_dim, D):
    tile = np.zeros((BK, D), np.float32)
    for r in range(BK):
        row = first + r
        if row < rows:
            tile[r, :head_dim] = src[row, :head_dim]
    return tile

def flash(q, k, v, scale, causal):
    sq, d = q.shape; sk = k.shape[0]
    D = max(1, -(-d // 16)) * 16
    out = np.full((sq, d), np.nan, np.float32)
    scale_log2 = scale * 1.4426950408889634
    for blk in range((sq + BQ - 1) // BQ):
        first_query = blk * BQ
        qt = stage(q, first_query, sq, d, D)
        for w in range(WARPS):
            r0 = w*16 + G; r1 = r0 + 8
            qf = np.zeros((D//16, 32, 4, 2), np.float32)
            for kk in range(D//16):
                for l in range(32):
                    g, t = G[l], T[l]
                    qf[kk, l, 0] = qt[r0[l], kk*16+2*t: kk*16+2*t+2]
                    qf[kk, l, 1] = qt[r1[l], kk*16+2*t: kk*16+2*t+2]
                    qf[kk, l, 2] = qt[r0[l], kk*16+8+2*t: kk*16+8+2*t+2]
                    qf[kk, l, 3] = qt[r1[l], kk*16+8+2*t: kk*16+8+2*t+2]
            o = np.zeros((D//8, 32, 4), np.float32)
            row_max = np.full((32, 2), -np.inf, np.float32); row_sum = np.zeros((32, 2), np.float32)
            qrow = np.stack([first_query + w*16 + G, first_query + w*16 + G + 8], 1)
            key_end = min(sk, first_query + BQ) if causal else sk
            for key0 in range(0, key_end, BK):
                kt = stage(k, key0, sk, d, D); vt = stage(v, key0, sk, d, D)
                s = np.zeros((BK//8, 32, 4), np.float32)
                for n in range(BK//8):
                    for kk in range(D//16):
                        b0 = np.stack([kt[n*8+G, kk*16+2*T], kt[n*8+G, kk*16+2*T+1]], 1)
                        b1 = np.stack([kt[n*8+G, kk*16+8+2*T], kt[n*8+G, kk*16+8+2*T+1]], 1)
                        s[n] = mma(s[n], qf[kk], b0, b1)
                tile_max = np.full((32, 2), -np.inf, np.float32)
                for n in range(BK//8):
                    for e in range(4):
                        r = e // 2
                        key = key0 + n*8 + 2*T + (e % 2)
                        vis = (key < sk) & ((not causal) | (key <= qrow[:, r]))
                        s[n][:, e] = np.where(vis, s[n][:, e] * scale_log2, -np.inf)
                        tile_max[:, r] = np.maximum(tile_max[:, r], s[n][:, e])
                # quad reduction (xor 1, 2)
                for off in (1, 2):
                    tile_max = np.maximum(tile_max, tile_max[lanes ^ off])
                new_max = np.maximum(row_max, tile_max)
                shift = np.where(new_max == -np.inf, 0, new_max)
                with np.errstate(invalid='ignore'):
                    rescale = np.exp2(row_max - shift)
                row_max = new_max; row_sum *= rescale
                o[:, :, 0:2] *= rescale[None, :, 0:1]; o[:, :, 2:4] *= rescale[None, :, 1:2]
                for n in range(BK//8):
                    for e in range(4):
                        s[n][:, e] = np.exp2(s[n][:, e] - shift[:, e//2])
                        row_sum[:, e//2] += s[n][:, e]
                h = lambda x: x.astype(np.float16).astype(np.float32)
                for step in range(BK//16):
                    p = np.stack([np.stack([s[2*step][:, 0], s[2*step][:, 1]], 1),
                                  np.stack([s[2*step][:, 2], s[2*step][:, 3]], 1),
                                  np.stack([s[2*step+1][:, 0], s[2*step+1][:, 1]], 1),
                                  np.stack([s[2*step+1][:, 2], s[2*step+1][:, 3]], 1)], 1)
                    p = h(p)
                    klo = step*16 + 2*T; khi = klo + 8
                    for n in range(D//8):
                        col = n*8 + G
                        b0 = np.stack([vt[klo, col], vt[klo+1, col]], 1)
                        b1 = np.stack([vt[khi, col], vt[khi+1, col]], 1)
                        o[n] = mma(o[n], p, b0, b1)
            for off in (1, 2):
                row_sum = row_sum + row_sum[lanes ^ off]
            inv = np.where(row_sum > 0, 1 / np.where(row_sum > 0, row_sum, 1), 0)
            for n in range(D//8):
                for e in range(4):
                    r = e // 2
                    col = n*8 + 2*T + (e % 2)
                    for l in range(32):
                        if qrow[l, r] < sq and col[l] < d:
                            out[qrow[l, r], col[l]] = o[n][l, e] * inv[l, r]
    return out

def naive(q, k, v, scale, causal):
    s = (q @ k.T) * scale
    if causal:
        mask = np.arange(k.shape[0])[None, :] > np.arange(q.shape[0])[:, None]
        s = np.where(mask, -np.inf, s)
    s = s - s.max(1, keepdims=True); p = np.exp(s); p /= p.sum(1, keepdims=True)
    return p @ v

rng = np.random.default_rng(0)
worst = 0
unwritten = 0
for (sq, sk, d, causal) in [(5, 7, 8, False), (70, 130, 40, True), (130, 70, 40, False), (64, 64, 64, True),
                            (3, 100, 13, False), (100, 100, 160, True), (1, 1, 1, False), (129, 65, 80, True), (80, 80, 17, True)]:
    q = rng.uniform(-2, 2, (sq, d)).astype(np.float16).astype(np.float32)
    k = rng.uniform(-2, 2, (sk, d)).astype(np.float16).astype(np.float32)
    v = rng.uniform(-1, 1, (sk, d)).astype(np.float16).astype(np.float32)
    scale = 1 / np.sqrt(d)
    got = flash(q, k, v, scale, causal); want = naive(q, k, v, scale, causal)
    err = np.abs(got - want).max() / np.abs(want).max()
    worst = max(worst, err)
    unwritten += int(np.isnan(got).sum())
    print(f"sq {sq:3} sk {sk:3} d {d:3} causal {causal!s:5}: rel err {err:.2e}, nan {np.isnan(got).sum()}")
print("worst", worst)
if worst > 1e-3 or unwritten:
    raise SystemExit("the model of the kernel disagrees with naive attention")
