#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]
//! Register-tiled AVX2+FMA kernels for one attention head's two products in f32, where the
//! generic GEMM engine runs these small products at under half the machine's speed (its
//! per-call packing and blocking are sized for large matrices, and a head is only 40–160
//! features deep).
//!
//! - **Scores** `S = scale · Q Kᵀ`: tiles of [`ROWS`] queries × [`KEYS_PER_PANEL`] keys held in
//!   twelve 8-lane accumulators. Each query element is broadcast straight from the activations
//!   (rows `features` apart, so Q is never copied); the keys are read from [`HeadPanels`], packed
//!   once per head and call so that the 16 keys of a tile sit side by side for every feature.
//! - **Output** `acc = acc · factor + P V`: tiles of [`ROWS`] queries × 16 (or 8) features
//!   walk the key block with the tile in registers; the online softmax's rescale is folded into
//!   loading the tile; the values are read from the head's contiguous copy in [`HeadPanels`].
//!
//! The head dim must be a multiple of 8, at most [`MAX_HEAD_DIM`] (SD 1.5's UNet heads are 40,
//! 80 and 160 wide, CLIP's 64); others run on the GEMM engine.
//!
//! On a CPU with AVX-512 the same tiles run 16 lanes wide ([`WIDE_ROWS`] queries × one
//! 16-key panel for the scores, × up to 32 features for the output, partial vectors masked),
//! and so does the exp loop. On an Intel Xeon (two 512-bit FMA units per core) that gained
//! less than the width promises: self-attention [2, 4096, 320] 362 ms against 396 ms with
//! `SD_CPU_FEATURES=avx2` (`cargo run --release --example cpu_ops -- --only attention`); the
//! online softmax's other passes over the scores are a large part of the rest.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Query rows per register tile: 6 rows × 2 vectors = 12 accumulators, plus the two vectors of
/// keys (or values) and one broadcast, fill 15 of AVX2's 16 registers.
pub(super) const ROWS: usize = 6;
/// Query rows per AVX-512 tile: 12 rows × 2 vectors = 24 of its 32 registers.
const WIDE_ROWS: usize = 12;
/// f32 lanes of an AVX-512 vector.
const WIDE_LANES: usize = 16;
/// Keys per packed panel: two 8-lane vectors.
pub(super) const KEYS_PER_PANEL: usize = 16;
const LANES: usize = 8;

/// The widest head these kernels take. Wider heads (the VAE's one 512-wide head) stay on the GEMM
/// engine, which blocks over the head's features: there a 128-key block of packed keys is
/// 256 KB, and these kernels ran VAE attention ([1, 4096, 512]) 8 % slower (`cargo run
/// --release --example cpu_ops -- --only attention`, four interleaved pairs on a Zen 3).
const MAX_HEAD_DIM: usize = 160;

/// Setting this environment variable to `off` runs attention on the GEMM engine instead, to
/// compare the two in one binary (`SD_ATTENTION_KERNELS=off sd bench --profile`).
const KERNELS_ENV: &str = "SD_ATTENTION_KERNELS";

/// Whether `SD_ATTENTION_KERNELS` leaves these kernels on (read once).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| !super::features::switched_off(KERNELS_ENV))
}

/// Whether the 16-lane (AVX-512) forms run.
fn wide() -> bool {
    super::features::CpuFeatures::get().avx512
}

/// Whether these kernels can run a head of `head_dim` features on this CPU.
pub(super) fn applies(head_dim: usize) -> bool {
    let features = super::features::CpuFeatures::get();
    // AVX-512 CPUs take them too: the GEMM engine runs its AVX2 kernels there as well (see
    // `features.rs`), and on a Zen 4 these ran the f32 UNet step's self-attention in 1.8–2.1 s
    // against its 3.3 s (`sd bench --component unet --precision f32 --profile`).
    cfg!(target_arch = "x86_64")
        && enabled()
        && features.avx2_fma
        && (1..=MAX_HEAD_DIM).contains(&head_dim)
        && head_dim.is_multiple_of(LANES)
}

/// One head's keys and values, packed once per attention call for every query block.
///
/// Keys are transposed into panels of [`KEYS_PER_PANEL`]: panel `p` holds, for each feature `f`
/// of the head, keys `16p .. 16p + 16` at `keys[(p·d + f)·16 ..]`, zero past the last key.
/// Values are the head's `d` features of each key, rows contiguous: read in place, a key block's
/// value rows lie `features` apart and map onto a few cache sets (a 128-key block of a 40-wide
/// head at 320 features fills 48 of L1's 64 sets eight deep), so they are copied together.
#[derive(Debug)]
pub(super) struct HeadPanels {
    keys: Vec<f32>,
    values: Vec<f32>,
    head_dim: usize,
    key_count: usize,
}

impl HeadPanels {
    /// Packs the head whose features start at `first_feature` of `keys` and `values`
    /// (`key_count` rows each, `row_stride` apart).
    pub(super) fn new(
        keys: &[f32],
        values: &[f32],
        key_count: usize,
        head_dim: usize,
        row_stride: usize,
        first_feature: usize,
    ) -> Self {
        let head = first_feature..first_feature + head_dim;
        let panel_len = head_dim * KEYS_PER_PANEL;
        let mut packed_keys = vec![0.0; key_count.div_ceil(KEYS_PER_PANEL) * panel_len];
        for (key, row) in keys.chunks(row_stride).take(key_count).enumerate() {
            let panel = &mut packed_keys[(key / KEYS_PER_PANEL) * panel_len..];
            let lane = key % KEYS_PER_PANEL;
            for (f, &x) in row[head.clone()].iter().enumerate() {
                panel[f * KEYS_PER_PANEL + lane] = x;
            }
        }
        let packed_values = values
            .chunks(row_stride)
            .take(key_count)
            .flat_map(|row| &row[head.clone()])
            .copied()
            .collect();
        HeadPanels {
            keys: packed_keys,
            values: packed_values,
            head_dim,
            key_count,
        }
    }
}

/// Row-major `rows × cols` floats in a slice, `stride` apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl Rows<'_> {
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.stride + self.cols <= self.data.len()
    }
}

/// `scores[r·key_count + j] = scale · Σ_f q[r, f] · key[first_key + j, f]` for every query row of
/// `q` (`rows × head_dim`) and `key_count` keys from `first_key` (a multiple of
/// [`KEYS_PER_PANEL`]).
pub(super) fn scores(
    q: Rows<'_>,
    head: &HeadPanels,
    first_key: usize,
    key_count: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let d = head.head_dim;
    // Internal invariants: the attention module builds these from checked shapes.
    assert!(applies(d) && q.cols == d && q.in_bounds());
    assert!(first_key.is_multiple_of(KEYS_PER_PANEL) && first_key + key_count <= head.key_count);
    assert!(scores.len() >= q.rows * key_count);
    let panel_len = d * KEYS_PER_PANEL;
    let wide = wide();
    let tile_rows = if wide { WIDE_ROWS } else { ROWS };
    for first_row in (0..q.rows).step_by(tile_rows) {
        let rows = tile_rows.min(q.rows - first_row);
        let q_rows = &q.data[first_row * q.stride..];
        for j in (0..key_count).step_by(KEYS_PER_PANEL) {
            let panel_at = (first_key + j) / KEYS_PER_PANEL * panel_len;
            let panel = &head.keys[panel_at..panel_at + panel_len];
            let cols = KEYS_PER_PANEL.min(key_count - j);
            let out = &mut scores[first_row * key_count + j..];
            let tile = ScoreTile {
                q: q_rows,
                q_stride: q.stride,
                panel,
                d,
                scale,
                cols,
                ld: key_count,
            };
            // SAFETY: `applies` found AVX2 and FMA (asserted above), `wide` AVX-512.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if wide {
                    tile.run_wide(rows, out);
                    continue;
                }
                match rows {
                    6 => tile.run::<6>(out),
                    5 => tile.run::<5>(out),
                    4 => tile.run::<4>(out),
                    3 => tile.run::<3>(out),
                    2 => tile.run::<2>(out),
                    _ => tile.run::<1>(out),
                }
            }
        }
    }
}

/// `acc[r, ..] = acc[r, ..] · factors[r] + Σ_k p[r, k] · value[first_key + k, ..]` for the
/// `p.rows × p.cols` probabilities of `p.cols` keys from `first_key`; `acc` is `rows × head_dim`,
/// row-major.
pub(super) fn accumulate(
    p: Rows<'_>,
    head: &HeadPanels,
    first_key: usize,
    factors: &[f32],
    acc: &mut [f32],
) {
    let d = head.head_dim;
    assert!(applies(d) && p.in_bounds() && first_key + p.cols <= head.key_count);
    assert!(factors.len() >= p.rows && acc.len() >= p.rows * d);
    let values = &head.values[first_key * d..];
    #[cfg(target_arch = "x86_64")]
    if wide() {
        for first_row in (0..p.rows).step_by(WIDE_ROWS) {
            let rows = WIDE_ROWS.min(p.rows - first_row);
            for col in (0..d).step_by(2 * WIDE_LANES) {
                let tile = OutputTile {
                    p: &p.data[first_row * p.stride..],
                    p_stride: p.stride,
                    keys: p.cols,
                    values: &values[col..],
                    v_stride: d,
                    factors: &factors[first_row..first_row + rows],
                    ld: d,
                };
                let acc = &mut acc[first_row * d + col..];
                // SAFETY: `wide` found AVX-512.
                unsafe { tile.run_wide(rows, (d - col).min(2 * WIDE_LANES), acc) };
            }
        }
        return;
    }
    for first_row in (0..p.rows).step_by(ROWS) {
        let rows = ROWS.min(p.rows - first_row);
        for col in (0..d).step_by(2 * LANES) {
            let tile = OutputTile {
                p: &p.data[first_row * p.stride..],
                p_stride: p.stride,
                keys: p.cols,
                values: &values[col..],
                v_stride: d,
                factors: &factors[first_row..first_row + rows],
                ld: d,
            };
            let acc = &mut acc[first_row * d + col..];
            // SAFETY: `applies` found AVX2 and FMA (asserted above).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                if d - col >= 2 * LANES {
                    tile.run_rows::<2>(rows, acc)
                } else {
                    tile.run_rows::<1>(rows, acc)
                }
            }
        }
    }
}

/// One tile of scores: up to [`ROWS`] queries × [`KEYS_PER_PANEL`] keys of one panel.
struct ScoreTile<'a> {
    /// The tile's first query row (its rows `q_stride` apart).
    q: &'a [f32],
    q_stride: usize,
    panel: &'a [f32],
    d: usize,
    scale: f32,
    /// Keys of the panel to store (≤ 16; the rest are padding).
    cols: usize,
    /// Row stride of the scores.
    ld: usize,
}

impl ScoreTile<'_> {
    /// # Safety
    /// AVX2 and FMA must be available (bounds are checked here).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize>(&self, out: &mut [f32]) {
        assert!((R - 1) * self.q_stride + self.d <= self.q.len());
        assert!((R - 1) * self.ld + self.cols <= out.len() && self.cols <= KEYS_PER_PANEL);
        assert!(self.panel.len() >= self.d * KEYS_PER_PANEL);
        let mut sums = [[_mm256_setzero_ps(); 2]; R];
        let (q, panel) = (self.q.as_ptr(), self.panel.as_ptr());
        for f in 0..self.d {
            // SAFETY: f < d; the panel holds d × 16 floats and each of the R rows of q holds d
            // (asserted).
            unsafe {
                let k0 = _mm256_loadu_ps(panel.add(f * KEYS_PER_PANEL));
                let k1 = _mm256_loadu_ps(panel.add(f * KEYS_PER_PANEL + LANES));
                for (r, sum) in sums.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*q.add(r * self.q_stride + f));
                    sum[0] = _mm256_fmadd_ps(x, k0, sum[0]);
                    sum[1] = _mm256_fmadd_ps(x, k1, sum[1]);
                }
            }
        }
        let scale = _mm256_set1_ps(self.scale);
        let mut tile = [0.0f32; KEYS_PER_PANEL];
        for (r, sum) in sums.iter().enumerate() {
            let row = &mut out[r * self.ld..r * self.ld + self.cols];
            // A whole panel is stored in place; the last, partial one through `tile`.
            let dst = if self.cols == KEYS_PER_PANEL {
                row.as_mut_ptr()
            } else {
                tile.as_mut_ptr()
            };
            // SAFETY: `dst` points to 16 writable floats (the row's 16, or `tile`).
            unsafe {
                _mm256_storeu_ps(dst, _mm256_mul_ps(sum[0], scale));
                _mm256_storeu_ps(dst.add(LANES), _mm256_mul_ps(sum[1], scale));
            }
            if self.cols < KEYS_PER_PANEL {
                row.copy_from_slice(&tile[..self.cols]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl ScoreTile<'_> {
    /// [`run`](Self::run) 16 lanes wide for `rows` (≤ [`WIDE_ROWS`]) queries.
    ///
    /// # Safety
    /// AVX-512F must be available (bounds are checked here).
    #[target_feature(enable = "avx512f")]
    unsafe fn run_wide(&self, rows: usize, out: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe {
            match rows {
                12 => self.run_16::<12>(out),
                11 => self.run_16::<11>(out),
                10 => self.run_16::<10>(out),
                9 => self.run_16::<9>(out),
                8 => self.run_16::<8>(out),
                7 => self.run_16::<7>(out),
                6 => self.run_16::<6>(out),
                5 => self.run_16::<5>(out),
                4 => self.run_16::<4>(out),
                3 => self.run_16::<3>(out),
                2 => self.run_16::<2>(out),
                _ => self.run_16::<1>(out),
            }
        }
    }

    /// # Safety
    /// AVX-512F must be available (bounds are checked here).
    #[target_feature(enable = "avx512f")]
    unsafe fn run_16<const R: usize>(&self, out: &mut [f32]) {
        assert!((R - 1) * self.q_stride + self.d <= self.q.len());
        assert!((R - 1) * self.ld + self.cols <= out.len() && self.cols <= KEYS_PER_PANEL);
        assert!(self.panel.len() >= self.d * KEYS_PER_PANEL);
        let mut sums = [_mm512_setzero_ps(); R];
        let (q, panel) = (self.q.as_ptr(), self.panel.as_ptr());
        for f in 0..self.d {
            // SAFETY: f < d; the panel holds d × 16 floats and each of the R rows of q holds d
            // (asserted).
            unsafe {
                let keys = _mm512_loadu_ps(panel.add(f * KEYS_PER_PANEL));
                for (r, sum) in sums.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*q.add(r * self.q_stride + f));
                    *sum = _mm512_fmadd_ps(x, keys, *sum);
                }
            }
        }
        let scale = _mm512_set1_ps(self.scale);
        let stored: __mmask16 = (1u32 << self.cols).wrapping_sub(1) as __mmask16;
        let out = out.as_mut_ptr();
        for (r, sum) in sums.iter().enumerate() {
            // SAFETY: the mask writes the row's `cols` floats (asserted in bounds).
            unsafe {
                _mm512_mask_storeu_ps(out.add(r * self.ld), stored, _mm512_mul_ps(*sum, scale))
            };
        }
    }
}

/// One tile of the output: up to [`ROWS`] queries × `V` vectors of features.
struct OutputTile<'a> {
    /// Probabilities of the tile's first query row (rows `p_stride` apart), `keys` each.
    p: &'a [f32],
    p_stride: usize,
    keys: usize,
    /// The value rows (`v_stride` apart) from the tile's first feature.
    values: &'a [f32],
    v_stride: usize,
    factors: &'a [f32],
    /// Row stride of the accumulator.
    ld: usize,
}

impl OutputTile<'_> {
    /// # Safety
    /// As [`run`](Self::run).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_rows<const V: usize>(&self, rows: usize, acc: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe {
            match rows {
                6 => self.run::<6, V>(acc),
                5 => self.run::<5, V>(acc),
                4 => self.run::<4, V>(acc),
                3 => self.run::<3, V>(acc),
                2 => self.run::<2, V>(acc),
                _ => self.run::<1, V>(acc),
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available (bounds are checked here).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const R: usize, const V: usize>(&self, acc: &mut [f32]) {
        assert!(self.factors.len() >= R && acc.len() >= (R - 1) * self.ld + V * LANES);
        assert!(self.keys == 0 || (R - 1) * self.p_stride + self.keys <= self.p.len());
        assert!(self.keys == 0 || (self.keys - 1) * self.v_stride + V * LANES <= self.values.len());
        let mut sums = [[_mm256_setzero_ps(); V]; R];
        let acc_ptr = acc.as_mut_ptr();
        for (r, sum) in sums.iter_mut().enumerate() {
            let factor = _mm256_set1_ps(self.factors[r]);
            for (c, s) in sum.iter_mut().enumerate() {
                // SAFETY: row r < R, column c·8 + 8 ≤ 8V of acc (asserted).
                *s = unsafe {
                    _mm256_mul_ps(
                        _mm256_loadu_ps(acc_ptr.add(r * self.ld + c * LANES)),
                        factor,
                    )
                };
            }
        }
        let (p, v) = (self.p.as_ptr(), self.values.as_ptr());
        for k in 0..self.keys {
            // SAFETY: k < keys; rows and columns in bounds (asserted).
            unsafe {
                let mut row = [_mm256_setzero_ps(); V];
                for (c, x) in row.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(v.add(k * self.v_stride + c * LANES));
                }
                for (r, sum) in sums.iter_mut().enumerate() {
                    let weight = _mm256_broadcast_ss(&*p.add(r * self.p_stride + k));
                    for (s, &x) in sum.iter_mut().zip(&row) {
                        *s = _mm256_fmadd_ps(weight, x, *s);
                    }
                }
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            for (c, s) in sum.iter().enumerate() {
                // SAFETY: as at the load above.
                unsafe { _mm256_storeu_ps(acc_ptr.add(r * self.ld + c * LANES), *s) };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl OutputTile<'_> {
    /// [`run`](Self::run) 16 lanes wide for `rows` (≤ [`WIDE_ROWS`]) queries and the tile's
    /// first `features` (≤ 32) features.
    ///
    /// # Safety
    /// AVX-512F must be available (bounds are checked here).
    #[target_feature(enable = "avx512f")]
    unsafe fn run_wide(&self, rows: usize, features: usize, acc: &mut [f32]) {
        let two = features > WIDE_LANES;
        // SAFETY: forwarded.
        unsafe {
            match (rows, two) {
                (12, true) => self.run_16::<12, 2>(features, acc),
                (11, true) => self.run_16::<11, 2>(features, acc),
                (10, true) => self.run_16::<10, 2>(features, acc),
                (9, true) => self.run_16::<9, 2>(features, acc),
                (8, true) => self.run_16::<8, 2>(features, acc),
                (7, true) => self.run_16::<7, 2>(features, acc),
                (6, true) => self.run_16::<6, 2>(features, acc),
                (5, true) => self.run_16::<5, 2>(features, acc),
                (4, true) => self.run_16::<4, 2>(features, acc),
                (3, true) => self.run_16::<3, 2>(features, acc),
                (2, true) => self.run_16::<2, 2>(features, acc),
                (_, true) => self.run_16::<1, 2>(features, acc),
                (12, false) => self.run_16::<12, 1>(features, acc),
                (11, false) => self.run_16::<11, 1>(features, acc),
                (10, false) => self.run_16::<10, 1>(features, acc),
                (9, false) => self.run_16::<9, 1>(features, acc),
                (8, false) => self.run_16::<8, 1>(features, acc),
                (7, false) => self.run_16::<7, 1>(features, acc),
                (6, false) => self.run_16::<6, 1>(features, acc),
                (5, false) => self.run_16::<5, 1>(features, acc),
                (4, false) => self.run_16::<4, 1>(features, acc),
                (3, false) => self.run_16::<3, 1>(features, acc),
                (2, false) => self.run_16::<2, 1>(features, acc),
                (_, false) => self.run_16::<1, 1>(features, acc),
            }
        }
    }

    /// `R` rows × `features` (in `V` vectors of 16, the last masked to what is left).
    ///
    /// # Safety
    /// AVX-512F must be available (bounds are checked here).
    #[target_feature(enable = "avx512f")]
    unsafe fn run_16<const R: usize, const V: usize>(&self, features: usize, acc: &mut [f32]) {
        assert!(features > (V - 1) * WIDE_LANES && features <= V * WIDE_LANES);
        assert!(self.factors.len() >= R && acc.len() >= (R - 1) * self.ld + features);
        assert!(self.keys == 0 || (R - 1) * self.p_stride + self.keys <= self.p.len());
        assert!(self.keys == 0 || (self.keys - 1) * self.v_stride + features <= self.values.len());
        // Lanes of each vector in use: all but in the last.
        let masks: [__mmask16; V] = std::array::from_fn(|c| {
            let lanes = (features - c * WIDE_LANES).min(WIDE_LANES);
            ((1u32 << lanes) - 1) as __mmask16
        });
        let mut sums = [[_mm512_setzero_ps(); V]; R];
        let acc_ptr = acc.as_mut_ptr();
        for (r, sum) in sums.iter_mut().enumerate() {
            let factor = _mm512_set1_ps(self.factors[r]);
            for (c, s) in sum.iter_mut().enumerate() {
                // SAFETY: row r < R, the masked lanes of column block c lie in acc (asserted).
                *s = unsafe {
                    let at = acc_ptr.add(r * self.ld + c * WIDE_LANES);
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(masks[c], at), factor)
                };
            }
        }
        let (p, v) = (self.p.as_ptr(), self.values.as_ptr());
        for k in 0..self.keys {
            // SAFETY: k < keys; rows and masked columns in bounds (asserted).
            unsafe {
                let mut row = [_mm512_setzero_ps(); V];
                for (c, x) in row.iter_mut().enumerate() {
                    let at = v.add(k * self.v_stride + c * WIDE_LANES);
                    *x = _mm512_maskz_loadu_ps(masks[c], at);
                }
                for (r, sum) in sums.iter_mut().enumerate() {
                    let weight = _mm512_set1_ps(*p.add(r * self.p_stride + k));
                    for (s, &x) in sum.iter_mut().zip(&row) {
                        *s = _mm512_fmadd_ps(weight, x, *s);
                    }
                }
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            for (c, s) in sum.iter().enumerate() {
                // SAFETY: as at the load above.
                unsafe {
                    let at = acc_ptr.add(r * self.ld + c * WIDE_LANES);
                    _mm512_mask_storeu_ps(at, masks[c], *s)
                };
            }
        }
    }
}

/// Replaces every `v` in `row` with `exp(v − shift)` and returns their sum: the online
/// softmax's inner loop, a third of the attention's time with the scalar-style [`exp`] of the
/// other paths (kept FMA-free there so every build gives the same bits). Here the same
/// reduction and polynomial run with FMA and without the overflow branch (`v − shift ≤ 0`
/// always: `shift` is the row's maximum), in one pass that also sums.
///
/// [`exp`]: super::elementwise::exp
pub(super) fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
    assert!(applies(LANES));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `applies` found AVX2 and FMA, `wide` AVX-512.
    unsafe {
        if wide() {
            return exp_shifted_avx512(row, shift);
        }
        exp_shifted_avx2(row, shift)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("applies() is false off x86-64")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_shifted_avx2(row: &mut [f32], shift: f32) -> f32 {
    // The reduction x = n·ln2 + r and the polynomial of `elementwise::exp` (same constants).
    use super::elementwise::{EXP_LN2_HI as LN2_HI, EXP_LN2_LO as LN2_LO, EXP_POLYNOMIAL as Q};
    // Below this, e^x is under f32's smallest normal: the result is flushed to 0 (a masked key
    // is −∞ and must give exactly 0); from here up, 2^n stays a normal float.
    const MIN: f32 = -87.3;
    let shift_v = _mm256_set1_ps(shift);
    let min = _mm256_set1_ps(MIN);
    let log2_e = _mm256_set1_ps(std::f32::consts::LOG2_E);
    let (ln2_hi, ln2_lo) = (_mm256_set1_ps(-LN2_HI), _mm256_set1_ps(-LN2_LO));
    let q = Q.map(|c| _mm256_set1_ps(c));
    let one = _mm256_set1_ps(1.0);
    let bias = _mm256_set1_epi32(127);
    let mut sum = _mm256_setzero_ps();
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 8 floats.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let x = _mm256_sub_ps(x, shift_v);
        // NaN passes both (keep: "not less than"; max returns its second operand on NaN).
        let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(x, min);
        let x = _mm256_max_ps(min, x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, log2_e),
        );
        let r = _mm256_fmadd_ps(n, ln2_lo, _mm256_fmadd_ps(n, ln2_hi, x));
        let mut p = q[4];
        for &c in q[..4].iter().rev() {
            p = _mm256_fmadd_ps(p, r, c);
        }
        let er = _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, _mm256_add_ps(one, r));
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            bias,
        )));
        let y = _mm256_and_ps(_mm256_mul_ps(er, two_n), keep);
        sum = _mm256_add_ps(sum, y);
        // SAFETY: as at the load.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), y) };
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail = chunks.into_remainder();
    tail.iter_mut()
        .for_each(|v| *v = super::elementwise::exp(*v - shift));
    lanes.iter().chain(tail.iter()).sum()
}

/// [`exp_shifted_avx2`] 16 lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_shifted_avx512(row: &mut [f32], shift: f32) -> f32 {
    use super::elementwise::{EXP_LN2_HI as LN2_HI, EXP_LN2_LO as LN2_LO, EXP_POLYNOMIAL as Q};
    const MIN: f32 = -87.3;
    let shift_v = _mm512_set1_ps(shift);
    let min = _mm512_set1_ps(MIN);
    let log2_e = _mm512_set1_ps(std::f32::consts::LOG2_E);
    let (ln2_hi, ln2_lo) = (_mm512_set1_ps(-LN2_HI), _mm512_set1_ps(-LN2_LO));
    let q = Q.map(|c| _mm512_set1_ps(c));
    let one = _mm512_set1_ps(1.0);
    let bias = _mm512_set1_epi32(127);
    let mut sum = _mm512_setzero_ps();
    let mut chunks = row.chunks_exact_mut(WIDE_LANES);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 16 floats.
        let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        let x = _mm512_sub_ps(x, shift_v);
        // As in the AVX2 loop: NaN is kept, values under MIN flush to 0.
        let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, min);
        let x = _mm512_max_ps(min, x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, log2_e),
        );
        let r = _mm512_fmadd_ps(n, ln2_lo, _mm512_fmadd_ps(n, ln2_hi, x));
        let mut p = q[4];
        for &c in q[..4].iter().rev() {
            p = _mm512_fmadd_ps(p, r, c);
        }
        let er = _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, _mm512_add_ps(one, r));
        let two_n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            bias,
        )));
        let y = _mm512_maskz_mov_ps(keep, _mm512_mul_ps(er, two_n));
        sum = _mm512_add_ps(sum, y);
        // SAFETY: as at the load.
        unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), y) };
    }
    let mut lanes = [0.0f32; WIDE_LANES];
    // SAFETY: `lanes` holds 16 floats.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
    let tail = chunks.into_remainder();
    tail.iter_mut()
        .for_each(|v| *v = super::elementwise::exp(*v - shift));
    lanes.iter().chain(tail.iter()).sum()
}

#[cfg(test)]
mod tests {
    use super::{LANES, applies, wide};

    /// An exp loop under test: `exp(v − shift)` in place, returning the sum.
    type ExpLoop = fn(&mut [f32], f32) -> f32;

    /// The exp loops this CPU runs: the AVX2 one, and the AVX-512 one where it has it.
    fn exp_loops() -> Vec<(&'static str, ExpLoop)> {
        let mut loops: Vec<(&'static str, ExpLoop)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): only listed where `applies` / `wide` found the features.
            loops.push(("avx2", |row, shift| unsafe {
                super::exp_shifted_avx2(row, shift)
            }));
            if wide() {
                loops.push(("avx512", |row, shift| unsafe {
                    super::exp_shifted_avx512(row, shift)
                }));
            }
        }
        loops
    }

    #[test]
    fn exp_rows_match_f64_and_sum_what_they_store() {
        if !applies(LANES) {
            eprintln!("skipped: these kernels need AVX2 and FMA");
            return;
        }
        for (name, exp_shifted_in_place) in exp_loops() {
            // Whole vectors and a scalar tail; the shifted values span 0 down past the flush
            // point.
            let mut row: Vec<f32> = (0..203).map(|i| 3.0 - 0.45 * i as f32).collect();
            row[7] = f32::NEG_INFINITY;
            let shift = 3.0;
            let want: Vec<f64> = row.iter().map(|&v| (f64::from(v) - 3.0).exp()).collect();
            let sum = exp_shifted_in_place(&mut row, shift);
            for (i, (&got, &want)) in row.iter().zip(&want).enumerate() {
                if want < 1e-38 {
                    assert!(
                        got == 0.0 || (f64::from(got) - want).abs() < 1e-38,
                        "{name} {i}: {got}"
                    );
                } else {
                    let ulp = f64::from(f32::EPSILON) * want;
                    assert!(
                        (f64::from(got) - want).abs() <= 2.0 * ulp,
                        "{name} {i}: {got} vs {want}"
                    );
                }
            }
            assert_eq!(row[7], 0.0, "{name}: a masked (−∞) score gives exactly 0");
            let stored: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!((f64::from(sum) - stored).abs() < 1e-6 * stored, "{name}");
        }
    }

    #[test]
    fn exp_rows_keep_nan() {
        if !applies(LANES) {
            eprintln!("skipped: these kernels need AVX2 and FMA");
            return;
        }
        for (name, exp_shifted_in_place) in exp_loops() {
            let mut row = vec![0.0f32; 16];
            row[3] = f32::NAN;
            let sum = exp_shifted_in_place(&mut row, 0.0);
            assert!(row[3].is_nan() && sum.is_nan(), "{name}");
            assert_eq!(row[4], 1.0, "{name}");
        }
    }
}
