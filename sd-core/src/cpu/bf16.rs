//! The bf16 product engine: 16-bit operands, f32 accumulation, for linear and conv layers in
//! [`Precision::Bf16`](super::Precision::Bf16).
//!
//! Operands are stored as *pair panels*: the rows of a matrix (the m rows of a product's left
//! operand, or the n columns of its right one) in groups of `width`, and within a group, for
//! each pair of consecutive k, one `u32` per row holding both bf16 values (even k in the low
//! half). That is the operand form of AVX-512's `VDPBF16PS`, which multiplies 16 such pairs
//! by 16 others and adds both products to 16 f32 lanes: the kernel broadcasts one pair of the
//! left operand and multiplies it with 16 columns' pairs of the right one. Weights are packed
//! once, when they are uploaded; activations are packed per product (their packing costs about
//! 1/n of the product's arithmetic).
//!
//! The kernel is chosen at run time. Where the CPU has AMX ([`amx`]), `TDPBF16PS` multiplies
//! whole tiles, and its left operand is packed in [`ROW_TILES`] instead of [`MR`] panels (the
//! tile instruction wants each row's pairs contiguous); [`left_width`] says which. Else the
//! `VDPBF16PS` kernel runs where the CPU has `avx512_bf16`; elsewhere a portable kernel
//! computes the same sums with f32 multiplies, slower but equal up to the order of f32
//! additions.

use ndarray::{ArrayViewMut2, s};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod amx;

/// Rows of the left operand per kernel tile.
pub(crate) const MR: usize = 12;
/// Columns of the right operand per kernel tile (two 16-lane vectors).
pub(crate) const NR: usize = 32;
/// Panel width of the *plain rows* layout: each row's pairs one after the other, which in
/// memory is the row-major bf16 matrix (k padded to even). That is how weights are stored on a
/// CPU without bf16 arithmetic, which multiplies them on the f32 engine (`widened.rs`) and
/// widens them with [`PairPanels::widen_rows`], a contiguous shift.
pub(crate) const PLAIN_ROWS: usize = 1;
/// Panel width of the *row tiles* layout, the AMX kernel's left operand: panels of 16 rows, each
/// stored as whole tiles of [`TILE_PAIRS`] pairs (16 rows × 16 pairs, each row's pairs
/// contiguous, 1 KiB), so that a tile loads from one contiguous block; zero rows pad the last
/// panel and zero pairs the last tile of each.
pub(crate) const ROW_TILES: usize = 16;
/// Pairs of k per AMX tile (64 bytes per tile row).
pub(crate) const TILE_PAIRS: usize = 16;
/// Pairs of k per cache block: a 32-column panel of the right operand is then 16 KiB and
/// stays in L1 while the tiles of a block of left rows pass over it.
const K_BLOCK_PAIRS: usize = 256;
/// Left panels per cache block (96 rows × 256 k of bf16 = 48 KiB, well inside L2).
const M_BLOCK_PANELS: usize = 8;

/// `x` rounded to the nearest bf16 (ties to even), as its 16 bits.
#[inline]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    if x.is_nan() {
        // Keep NaN a NaN (the rounding below could carry a signalling NaN into infinity).
        return (bits >> 16) | 0x40;
    }
    (bits + 0x7fff + ((bits >> 16) & 1)) >> 16
}

/// The f32 value of bf16 `bits` (the low 16 bits of the argument).
#[inline]
fn bf16_value(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// A matrix of `rows × k` bf16 values packed in pair panels of `width` rows (see the module
/// docs). Rows past `rows` and the odd k past `k` are zero, so every panel is full.
#[derive(Debug, Clone)]
pub(crate) struct PairPanels {
    rows: usize,
    k: usize,
    width: usize,
    data: Vec<u32>,
}

impl PairPanels {
    fn zeroed(rows: usize, k: usize, width: usize) -> Self {
        let len = rows.div_ceil(width) * stored_pairs(k, width) * width;
        PairPanels {
            rows,
            k,
            width,
            data: vec![0; len],
        }
    }

    /// Pack the row-major `[rows, k]` matrix `src` (k contiguous): the left operand of
    /// `x · wᵀ` (with `width` [`MR`]), a conv weight (likewise) or a linear weight as the
    /// right operand (with `width` [`NR`]: the rows of `w` are the columns of `wᵀ`).
    pub(crate) fn from_rows(src: &[f32], rows: usize, k: usize, width: usize) -> Self {
        Self::from_strided_rows(src, rows, k, k, width)
    }

    /// [`from_rows`](Self::from_rows) with row `r` at `src[r · row_stride..][..k]` (one head's
    /// slice of interleaved attention features).
    pub(crate) fn from_strided_rows(
        src: &[f32],
        rows: usize,
        k: usize,
        row_stride: usize,
        width: usize,
    ) -> Self {
        assert!(rows == 0 || k == 0 || (rows - 1) * row_stride + k <= src.len());
        let mut packed = Self::zeroed(rows, k, width);
        let panel_len = packed.panel_len();
        if k == 0 {
            return packed;
        }
        let vector = vector_packing();
        for (panel, dst) in packed.data.chunks_exact_mut(panel_len).enumerate() {
            let first = panel * width;
            for r in 0..width.min(rows - first) {
                let row = &src[(first + r) * row_stride..][..k];
                let mut p = 0;
                #[cfg(target_arch = "x86_64")]
                if vector {
                    for chunk in row.chunks_exact(32) {
                        // SAFETY: the CPU has avx512bf16 (vector); chunk holds 32 floats.
                        let converted = unsafe { x86::pairs_of_32(chunk) };
                        for (q, &pair) in converted.iter().enumerate() {
                            dst[offset_in_panel(width, r, p + q)] = pair;
                        }
                        p += 16;
                    }
                }
                for pair in row[2 * p..].chunks(2) {
                    let hi = pair.get(1).map_or(0, |&v| bf16_bits(v));
                    dst[offset_in_panel(width, r, p)] = bf16_bits(pair[0]) | (hi << 16);
                    p += 1;
                }
            }
        }
        let _ = vector;
        packed
    }

    /// Pack the columns of the row-major `[k, cols]` matrix `src` (an im2col panel, whose
    /// columns are the right operand's): the packed rows are `src`'s columns.
    pub(crate) fn from_columns(src: &[f32], k: usize, cols: usize, width: usize) -> Self {
        Self::from_strided_columns(src, k, cols, cols, width)
    }

    /// [`from_columns`](Self::from_columns) with row `t` of `src` at `src[t · row_stride..][..cols]`.
    pub(crate) fn from_strided_columns(
        src: &[f32],
        k: usize,
        cols: usize,
        row_stride: usize,
        width: usize,
    ) -> Self {
        let mut packed = Self::zeroed(0, 0, width);
        packed.repack_strided_columns(src, k, cols, row_stride);
        packed
    }

    /// [`from_strided_columns`](Self::from_strided_columns) into this packing's storage (same
    /// panel width), reusing its allocation: for operands packed over and over in a loop.
    pub(crate) fn repack_strided_columns(
        &mut self,
        src: &[f32],
        k: usize,
        cols: usize,
        row_stride: usize,
    ) {
        assert!(k == 0 || cols == 0 || (k - 1) * row_stride + cols <= src.len());
        let width = self.width;
        (self.rows, self.k) = (cols, k);
        let pairs = self.pairs();
        let panel_len = self.panel_len();
        // Every value is written below (padding columns as zeros), so old contents may stay.
        self.data.resize(cols.div_ceil(width) * panel_len, 0);
        if self.data.is_empty() {
            return;
        }
        if width == ROW_TILES {
            // The AMX kernel's left operand (an attention head's values, transposed): the rows
            // are src's columns, each read down k; zero rows after the last, zero pairs after k.
            for (panel, dst) in self.data.chunks_exact_mut(panel_len).enumerate() {
                dst.fill(0);
                for r in 0..width.min(cols - panel * width) {
                    let column = panel * width + r;
                    for p in 0..pairs {
                        let even = bf16_bits(src[2 * p * row_stride + column]);
                        let odd = match 2 * p + 1 < k {
                            true => bf16_bits(src[(2 * p + 1) * row_stride + column]),
                            false => 0,
                        };
                        dst[offset_in_panel(width, r, p)] = even | (odd << 16);
                    }
                }
            }
            return;
        }
        let vector = vector_packing();
        for (panel, dst) in self.data.chunks_exact_mut(panel_len).enumerate() {
            let first = panel * width;
            let n = width.min(cols - first);
            for (p, out) in dst.chunks_exact_mut(width).enumerate() {
                out[n..].fill(0);
                let even = &src[2 * p * row_stride + first..][..n];
                if 2 * p + 1 < k {
                    let odd = &src[(2 * p + 1) * row_stride + first..][..n];
                    let mut j = 0;
                    #[cfg(target_arch = "x86_64")]
                    if vector {
                        while j + 16 <= n {
                            // SAFETY: the CPU has avx512bf16 and avx512bw (vector); both
                            // slices hold 16 floats from j.
                            let pairs = unsafe { x86::interleave_16(&even[j..], &odd[j..]) };
                            out[j..j + 16].copy_from_slice(&pairs);
                            j += 16;
                        }
                    }
                    let (out, even, odd) = (&mut out[j..], &even[j..], &odd[j..]);
                    for ((o, &e), &d) in out.iter_mut().zip(even).zip(odd) {
                        *o = bf16_bits(e) | (bf16_bits(d) << 16);
                    }
                } else {
                    for (o, &e) in out.iter_mut().zip(even) {
                        *o = bf16_bits(e);
                    }
                }
            }
        }
        let _ = vector;
    }

    /// The row-major `[rows, k]` f32 values (the inverse of [`from_rows`](Self::from_rows)
    /// up to the rounding to bf16): a pure stream (2 bytes read, 4 written per value), done in
    /// parallel, one panel per task, reading each panel in storage order.
    pub(crate) fn to_rows(&self) -> Vec<f32> {
        let (panel_len, width, k) = (self.panel_len(), self.width, self.k);
        let mut out = vec![0.0f32; self.rows * k];
        if k == 0 || self.rows == 0 {
            return out;
        }
        if self.is_plain_rows() || width == ROW_TILES {
            out.par_chunks_mut(WIDEN_TASK_ROWS * k)
                .enumerate()
                .for_each(|(i, rows)| self.widen_rows(i * WIDEN_TASK_ROWS, rows));
            return out;
        }
        out.par_chunks_mut(width * k)
            .zip(self.data.par_chunks(panel_len))
            .for_each(|(rows, panel)| widen_panel(panel, width, 0..rows.len() / k, k, rows));
        out
    }

    /// Rows `first..first + out.len() / k` as row-major f32 in `out`: each value's 16 bits
    /// shifted into the top of an f32. In the [plain rows](PLAIN_ROWS) layout a contiguous
    /// stream (vectorised with AVX2 or AVX-512 where the CPU has them); in pair panels each
    /// panel's part read in storage order (whole panels are the fast case: Winograd's filter
    /// transform widens a conv weight a panel of output channels at a time).
    pub(crate) fn widen_rows(&self, first: usize, out: &mut [f32]) {
        let (k, pairs) = (self.k, self.pairs());
        if k == 0 {
            return;
        }
        let rows = out.len() / k;
        assert!(out.len() == rows * k && first + rows <= self.rows);
        if self.width == ROW_TILES {
            // Each row is a run of 16 pairs in each of its panel's tiles.
            let panel_len = self.panel_len();
            for (row, out) in (first..first + rows).zip(out.chunks_exact_mut(k)) {
                let panel = &self.data[row / ROW_TILES * panel_len..][..panel_len];
                let at = row % ROW_TILES * TILE_PAIRS;
                let tiles = panel.chunks_exact(ROW_TILES * TILE_PAIRS);
                for (tile, out) in tiles.zip(out.chunks_mut(2 * TILE_PAIRS)) {
                    widen_row(&tile[at..][..out.len().div_ceil(2)], out);
                }
            }
            return;
        }
        if !self.is_plain_rows() {
            let (width, end) = (self.width, first + rows);
            let mut row = first;
            while row < end {
                let (panel, lane) = (row / width, row % width);
                let lanes = lane..width.min(lane + end - row);
                let panel_data = &self.data[panel * pairs * width..][..pairs * width];
                let out = &mut out[(row - first) * k..][..lanes.len() * k];
                row += lanes.len();
                widen_panel(panel_data, width, lanes, k, out);
            }
            return;
        }
        let src = &self.data[first * pairs..(first + rows) * pairs];
        super::elementwise::vectorized(
            #[inline(always)]
            || {
                for (row, out) in src.chunks_exact(pairs).zip(out.chunks_exact_mut(k)) {
                    widen_row(row, out);
                }
            },
        );
    }

    /// Rows per panel ([`PLAIN_ROWS`], [`MR`] or [`NR`]).
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Whether this is the [plain rows](PLAIN_ROWS) layout.
    pub(crate) fn is_plain_rows(&self) -> bool {
        self.width == PLAIN_ROWS
    }

    /// Stored values per panel.
    fn panel_len(&self) -> usize {
        stored_pairs(self.k, self.width) * self.width
    }

    /// Values per row (the k of the product).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Packed rows (m for a left operand, n for a right one).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of packed storage.
    pub(crate) fn size_in_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<u32>()
    }

    fn pairs(&self) -> usize {
        self.k.div_ceil(2)
    }

    /// All the panels, as a product operand.
    pub(crate) fn view(&self) -> Panels<'_> {
        Panels {
            data: &self.data,
            rows: self.rows,
            pairs: self.pairs(),
            first_pair: 0,
            panel_len: self.panel_len(),
            width: self.width,
        }
    }
}

/// Pairs stored per row for `k` values in panels of `width`: k/2 rounded up, and in row tiles
/// up to whole tiles.
fn stored_pairs(k: usize, width: usize) -> usize {
    match width {
        ROW_TILES => k.div_ceil(2).next_multiple_of(TILE_PAIRS),
        _ => k.div_ceil(2),
    }
}

/// Where pair `p` of row `r` lies in a panel of `width` rows: in row tiles, in tile `p / 16` at
/// its row r; in pair panels (and plain rows, one row wide) after the `p` pairs before it.
fn offset_in_panel(width: usize, r: usize, p: usize) -> usize {
    match width {
        ROW_TILES => (p / TILE_PAIRS) * (ROW_TILES * TILE_PAIRS) + r * TILE_PAIRS + p % TILE_PAIRS,
        _ => p * width + r,
    }
}

/// Consecutive panels of a [`PairPanels`]: a product operand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Panels<'a> {
    data: &'a [u32],
    rows: usize,
    /// Pairs of k in this view, from `first_pair` of each stored panel of `panel_len` values.
    pairs: usize,
    first_pair: usize,
    panel_len: usize,
    width: usize,
}

impl<'a> Panels<'a> {
    /// Rows `first..first + len`; `first` must start a panel.
    pub(crate) fn rows(self, first: usize, len: usize) -> Panels<'a> {
        assert!(first.is_multiple_of(self.width) && first + len <= self.rows);
        let (start, end) = (first / self.width, (first + len).div_ceil(self.width));
        Panels {
            data: &self.data[start * self.panel_len..end * self.panel_len],
            rows: len,
            ..self
        }
    }

    /// Pairs `first..first + len` of k (k values `2·first..2·(first + len)`).
    pub(crate) fn pair_range(self, first: usize, len: usize) -> Panels<'a> {
        assert!(first + len <= self.pairs);
        Panels {
            pairs: len,
            first_pair: self.first_pair + first,
            ..self
        }
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(self.width)
    }

    /// Panel `i`, from pair `p0` of this view on.
    fn panel(&self, i: usize, p0: usize) -> &'a [u32] {
        let start = i * self.panel_len + (self.first_pair + p0) * self.width;
        &self.data[start..i * self.panel_len + (self.first_pair + self.pairs) * self.width]
    }
}

/// Rows `lanes` of one pair panel (`panel`: its pairs of `width` values each) into `rows`
/// (row-major, `k` values each): row r's pair p is `panel[p·width + r]`, so the panel is read in
/// order, two floats written to each row per pair.
fn widen_panel(
    panel: &[u32],
    width: usize,
    lanes: std::ops::Range<usize>,
    k: usize,
    rows: &mut [f32],
) {
    let whole_pairs = k / 2;
    for (p, packed) in panel.chunks_exact(width).take(whole_pairs).enumerate() {
        for (r, &bits) in packed[lanes.clone()].iter().enumerate() {
            let pair = &mut rows[r * k + 2 * p..][..2];
            pair[0] = bf16_value(bits & 0xffff);
            pair[1] = bf16_value(bits >> 16);
        }
    }
    if k % 2 == 1 {
        let last = &panel[whole_pairs * width..][lanes];
        for (r, &bits) in last.iter().enumerate() {
            rows[r * k + k - 1] = bf16_value(bits & 0xffff);
        }
    }
}

/// Rows per task of [`PairPanels::to_rows`] in the plain rows layout.
const WIDEN_TASK_ROWS: usize = 64;

/// One row of pairs (even k in the low half) as its `out.len()` f32 values; a last odd k
/// reads only its pair's low half.
#[inline(always)]
fn widen_row(pairs: &[u32], out: &mut [f32]) {
    let mut values = out.chunks_exact_mut(2);
    for (two, &bits) in (&mut values).zip(pairs) {
        two[0] = f32::from_bits(bits << 16);
        two[1] = f32::from_bits(bits & 0xffff_0000);
    }
    if let ([last], Some(&bits)) = (values.into_remainder(), pairs.last()) {
        *last = bf16_value(bits & 0xffff);
    }
}

/// `c += a · bᵀ` where `a` packs the `[m, k]` left operand in [`MR`]-row panels, `b` the
/// `[n, k]` transposed right operand in [`NR`]-row panels, and `c` is `[m, n]` with
/// contiguous rows. On one thread; callers split the work (by rows of `a`, or of `c`'s columns).
pub(crate) fn product(a: Panels<'_>, b: Panels<'_>, c: ArrayViewMut2<'_, f32>) {
    product_with(Kernel::detect(), a, b, c, false);
}

/// `c = a · bᵀ`: [`product`] overwriting `c` (whose old values, NaN or garbage, are ignored)
/// instead of adding to it, which saves zeroing it first.
pub(crate) fn product_set(a: Panels<'_>, b: Panels<'_>, c: ArrayViewMut2<'_, f32>) {
    product_with(Kernel::detect(), a, b, c, true);
}

/// [`product`] (or with `set`, [`product_set`]) on a chosen kernel (the tests run both where
/// the CPU has both).
fn product_with(
    kernel: Kernel,
    a: Panels<'_>,
    b: Panels<'_>,
    mut c: ArrayViewMut2<'_, f32>,
    set: bool,
) {
    assert!(
        c.dim() == (a.rows, b.rows) && c.strides()[1] == 1 && c.strides()[0] >= 0,
        "bf16 product: c is a.rows × b.rows with contiguous rows"
    );
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Amx {
        // SAFETY: Kernel::Amx is only detected where the CPU has AMX and the process may use
        // it; the operands' layouts are asserted inside.
        unsafe { amx::product(a, b, &mut c, set) };
        return;
    }
    assert!(
        a.width == MR && b.width == NR && a.pairs == b.pairs,
        "bf16 product: operand shapes checked by the caller"
    );
    let ld = c.strides()[0] as usize;
    let c_base = c.as_mut_ptr();
    let mut tile = [0.0f32; MR * NR];
    // Equal k blocks of at most K_BLOCK_PAIRS (a short last block costs a full pass over c).
    let k_block = a
        .pairs
        .div_ceil(a.pairs.div_ceil(K_BLOCK_PAIRS).max(1))
        .max(1);
    if set && a.pairs == 0 {
        c.fill(0.0);
    }
    for p0 in (0..a.pairs).step_by(k_block) {
        let block_pairs = k_block.min(a.pairs - p0);
        // The first k block sets c when asked to; the others add to it.
        let mode = if set && p0 == 0 { Mode::Set } else { Mode::Add };
        for i0 in (0..a.panels()).step_by(M_BLOCK_PANELS) {
            for j in 0..b.panels() {
                let b_panel = b.panel(j, p0);
                for i in i0..(i0 + M_BLOCK_PANELS).min(a.panels()) {
                    let (r0, c0) = (i * MR, j * NR);
                    let (rows, cols) = (MR.min(a.rows - r0), NR.min(b.rows - c0));
                    let a_panel = a.panel(i, p0);
                    if rows == MR && cols == NR {
                        // SAFETY: rows r0..r0 + MR and columns c0..c0 + NR lie inside c (its
                        // shape is a.rows × b.rows), and each row's NR values are contiguous.
                        unsafe {
                            kernel.tile(
                                block_pairs,
                                a_panel,
                                b_panel,
                                c_base.add(r0 * ld + c0),
                                ld,
                                mode,
                            );
                        }
                        continue;
                    }
                    // SAFETY: tile is MR rows of NR.
                    unsafe {
                        kernel.tile(
                            block_pairs,
                            a_panel,
                            b_panel,
                            tile.as_mut_ptr(),
                            NR,
                            Mode::Set,
                        )
                    };
                    for (r, sums) in tile.chunks_exact(NR).take(rows).enumerate() {
                        let mut row = c.slice_mut(s![r0 + r, c0..c0 + cols]);
                        match mode {
                            Mode::Set => row.assign(&ndarray::aview1(&sums[..cols])),
                            Mode::Add => row.iter_mut().zip(sums).for_each(|(c, &v)| *c += v),
                        }
                    }
                }
            }
        }
    }
}

/// `out [rows, n] = x [rows, k] · wᵀ + bias` for a packed linear weight `w` (`[n, k]` in
/// [`NR`]-row panels), threaded over blocks of rows.
pub(crate) fn linear(
    x: &[f32],
    rows: usize,
    w: &PairPanels,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (k, n) = (w.k, w.rows);
    if rows == 0 || n == 0 {
        return;
    }
    // Enough row blocks for every thread to get several, each a whole number of panels.
    let tasks = 4 * rayon::current_num_threads();
    let width = left_width();
    let block_rows = rows
        .div_ceil(tasks)
        .next_multiple_of(width)
        .clamp(width, M_BLOCK_PANELS * width);
    out.par_chunks_mut(block_rows * n)
        .zip(x.par_chunks(block_rows * k.max(1)))
        .for_each(|(out, x)| {
            let block = out.len() / n;
            for row in out.chunks_exact_mut(n) {
                match bias {
                    Some(bias) => row.copy_from_slice(bias),
                    None => row.fill(0.0),
                }
            }
            let a = PairPanels::from_rows(&x[..block * k], block, k, width);
            let c = ArrayViewMut2::from_shape((block, n), out).expect("block × n elements");
            product(a.view(), w.view(), c);
        });
}

/// Which tile kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `TDPBF16PS` on AMX tiles (the left operand in [`ROW_TILES`]).
    Amx,
    /// `VDPBF16PS` (AVX-512 BF16; AVX-512 BW for packing).
    Avx512Bf16,
    /// Plain f32 multiplies of the unpacked values.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports (and `SD_CPU_FEATURES` allows).
    pub(crate) fn detect() -> Self {
        let features = super::features::CpuFeatures::get();
        if features.amx_bf16 {
            return Kernel::Amx;
        }
        if features.avx512_bf16 {
            return Kernel::Avx512Bf16;
        }
        Kernel::Portable
    }

    /// The panel width of this kernel's left operand.
    pub(crate) fn left_width(self) -> usize {
        match self {
            Kernel::Amx => ROW_TILES,
            Kernel::Avx512Bf16 | Kernel::Portable => MR,
        }
    }

    /// `c[r·ld + j] (+)= (a_panel · b_panelᵀ)[r, j]` for the MR × NR tile, over `pairs`
    /// pairs of k: added to `c`, or with [`Mode::Set`] stored over it.
    ///
    /// # Safety
    /// `c` must point to MR rows of NR writable floats, `ld` apart.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(self, pairs: usize, a: &[u32], b: &[u32], c: *mut f32, ld: usize, mode: Mode) {
        assert!(a.len() >= pairs * MR && b.len() >= pairs * NR);
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: detect() found avx512bf16 and avx512f; the slices hold `pairs` pairs of
            // both panels (asserted above); c is the caller's.
            Kernel::Avx512Bf16 => unsafe {
                x86::tile_avx512bf16(pairs, a, b, c, ld, mode == Mode::Set)
            },
            _ => {
                let mut acc = [0.0f32; MR * NR];
                portable_tile(pairs, a, b, &mut acc);
                for (r, sums) in acc.chunks_exact(NR).enumerate() {
                    // SAFETY: row r of the tile is NR writable floats at c + r·ld (caller).
                    let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ld), NR) };
                    match mode {
                        Mode::Set => row.copy_from_slice(sums),
                        Mode::Add => row.iter_mut().zip(sums).for_each(|(c, &v)| *c += v),
                    }
                }
            }
        }
    }
}

/// The panel width in which a product's left operand is packed on this CPU ([`ROW_TILES`] for
/// AMX, else [`MR`]); a whole number of panels is also how the callers split its rows.
pub(crate) fn left_width() -> usize {
    Kernel::detect().left_width()
}

/// Whether the packers may round with AVX-512 BF16's conversion instructions.
fn vector_packing() -> bool {
    super::features::CpuFeatures::get().avx512_bf16
}

/// Whether a tile's sums are stored over the output or added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Set,
    Add,
}

/// `acc [MR, NR] = a_panel · b_panelᵀ` with f32 multiplies.
fn portable_tile(pairs: usize, a: &[u32], b: &[u32], acc: &mut [f32; MR * NR]) {
    acc.fill(0.0);
    for p in 0..pairs {
        let (a, b) = (&a[p * MR..(p + 1) * MR], &b[p * NR..(p + 1) * NR]);
        for (acc_row, &ap) in acc.chunks_exact_mut(NR).zip(a) {
            let (a0, a1) = (bf16_value(ap & 0xffff), bf16_value(ap >> 16));
            for (acc, &bp) in acc_row.iter_mut().zip(b) {
                *acc += a0 * bf16_value(bp & 0xffff) + a1 * bf16_value(bp >> 16);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// `c [MR, NR] (row stride ld) += a_panel · b_panelᵀ` (with `set`, `=`) with `VDPBF16PS`:
    /// per pair of k, two 16-column vectors of `b` and one broadcast pair per row of `a`; the
    /// 24 sums stay in registers until they are written to `c`.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bf16; `a` must hold `pairs · MR` values and `b`
    /// `pairs · NR`; `c` must point to MR rows of NR writable floats, `ld` apart.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn tile_avx512bf16(
        pairs: usize,
        a: &[u32],
        b: &[u32],
        c: *mut f32,
        ld: usize,
        set: bool,
    ) {
        let mut sums = [[_mm512_setzero_ps(); 2]; MR];
        let (a, b) = (a.as_ptr(), b.as_ptr());
        for p in 0..pairs {
            // SAFETY: p < pairs, so these reads stay inside the panels (caller's contract).
            let (b0, b1, a_row) = unsafe {
                let b_row = b.add(p * NR);
                (
                    _mm512_loadu_si512(b_row.cast()),
                    _mm512_loadu_si512(b_row.add(16).cast()),
                    a.add(p * MR),
                )
            };
            // SAFETY (transmutes): both types are 64 bytes of plain lanes.
            let (b0, b1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(b0),
                    std::mem::transmute::<__m512i, __m512bh>(b1),
                )
            };
            for (r, sum) in sums.iter_mut().enumerate() {
                // SAFETY: r < MR, inside the pair's MR values.
                let pair = unsafe { *a_row.add(r) };
                let a_pair: __m512bh =
                    unsafe { std::mem::transmute(_mm512_set1_epi32(pair as i32)) };
                sum[0] = _mm512_dpbf16_ps(sum[0], a_pair, b0);
                sum[1] = _mm512_dpbf16_ps(sum[1], a_pair, b1);
            }
        }
        for (r, sum) in sums.iter().enumerate() {
            // SAFETY: row r of c holds NR = 32 writable floats (caller's contract).
            unsafe {
                let row = c.add(r * ld);
                if set {
                    _mm512_storeu_ps(row, sum[0]);
                    _mm512_storeu_ps(row.add(16), sum[1]);
                } else {
                    _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), sum[0]));
                    let row = row.add(16);
                    _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), sum[1]));
                }
            }
        }
    }

    /// The 16 pairs `(src[2q], src[2q + 1])` of the first 32 floats, rounded to bf16.
    ///
    /// # Safety
    /// The CPU must support avx512f and avx512bf16; `src` must hold 32 floats.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn pairs_of_32(src: &[f32]) -> [u32; 16] {
        assert!(src.len() >= 32);
        // SAFETY: 32 floats readable (asserted); the result is 64 bytes of bf16 lanes.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr());
            let hi = _mm512_loadu_ps(src.as_ptr().add(16));
            std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo))
        }
    }

    /// Lane order taking `[e0..e15, o0..o15]` to `[e0, o0, e1, o1, …]`.
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut j = 0;
        while j < 16 {
            idx[2 * j] = j as u16;
            idx[2 * j + 1] = 16 + j as u16;
            j += 1;
        }
        idx
    };

    /// The pairs `(even[j], odd[j])` of the first 16 floats of each, rounded to bf16.
    ///
    /// # Safety
    /// The CPU must support avx512f, avx512bw and avx512bf16; both slices must hold 16 floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn interleave_16(even: &[f32], odd: &[f32]) -> [u32; 16] {
        assert!(even.len() >= 16 && odd.len() >= 16);
        // SAFETY: 16 floats readable in each (asserted); 64-byte lane reinterpretations.
        unsafe {
            let both = _mm512_cvtne2ps_pbh(
                _mm512_loadu_ps(odd.as_ptr()),
                _mm512_loadu_ps(even.as_ptr()),
            );
            let idx = _mm512_loadu_si512(INTERLEAVE.as_ptr().cast());
            let both = std::mem::transmute::<__m512bh, __m512i>(both);
            std::mem::transmute::<__m512i, [u32; 16]>(_mm512_permutexvar_epi16(idx, both))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::TorchGenerator;

    /// `len` standard normal values from the seeded torch generator (shared by the cpu tests).
    pub(crate) fn random(len: usize, seed: u64) -> Vec<f32> {
        TorchGenerator::new(seed)
            .randn(&[len])
            .into_raw_vec_and_offset()
            .0
    }

    fn rounded(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| bf16_value(bf16_bits(x))).collect()
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_specials() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert!(bf16_value(bf16_bits(f32::from_bits(0x7f80_0001))).is_nan());
    }

    #[test]
    fn packing_round_trips_through_rows_and_columns() {
        // Long enough for the vector packers (32 k per row, 16 columns) and their remainders.
        let (rows, k) = (37, 71);
        let src = random(rows * k, 1);
        let packed = PairPanels::from_rows(&src, rows, k, MR);
        assert_eq!(packed.to_rows(), rounded(&src));
        // The same matrix given as its transpose [k, rows] packs identically.
        let mut transposed = vec![0.0; rows * k];
        for r in 0..rows {
            for j in 0..k {
                transposed[j * rows + r] = src[r * k + j];
            }
        }
        let by_columns = PairPanels::from_columns(&transposed, k, rows, MR);
        assert_eq!(by_columns.data, packed.data);
        // Row tiles too (their own packer), zero rows after the last.
        let tiles = PairPanels::from_rows(&src, rows, k, ROW_TILES);
        // 37 rows in 3 panels of 16; 36 pairs of k in 3 tiles of 16.
        assert_eq!(tiles.size_in_bytes(), 48 * 48 * 4);
        assert_eq!(tiles.to_rows(), rounded(&src));
        let tiles_by_columns = PairPanels::from_columns(&transposed, k, rows, ROW_TILES);
        assert_eq!(tiles_by_columns.data, tiles.data);
        // Repacking into storage that held a larger, different matrix gives the same panels.
        let mut reused = PairPanels::from_columns(&random(80 * 90, 4), 80, 90, MR);
        reused.repack_strided_columns(&transposed, k, rows, rows);
        assert_eq!(reused.data, packed.data);
    }

    #[test]
    fn rows_widen_to_the_rounded_values() {
        // Odd and even k, and more rows than one to_rows task; NaN and infinities included;
        // plain rows and pair panels (rows past the first panel, a partial last panel).
        for &(rows, k) in &[(150, 71), (3, 64), (2, 1)] {
            let mut src = random(rows * k, 5);
            src[0] = f32::INFINITY;
            src[rows * k - 1] = f32::NEG_INFINITY;
            let want = rounded(&src);
            for width in [PLAIN_ROWS, MR, ROW_TILES, NR] {
                let packed = PairPanels::from_rows(&src, rows, k, width);
                if width == PLAIN_ROWS {
                    // The plain layout is the bf16 matrix itself: a row's pairs follow each
                    // other.
                    assert_eq!(packed.size_in_bytes(), rows * k.div_ceil(2) * 4);
                }
                assert_eq!(
                    packed.to_rows(),
                    want,
                    "({rows}, {k}) to_rows, width {width}"
                );
                // A range of rows starting past the first, into a buffer of exactly its size.
                let (first, len) = (rows / 3, rows - rows / 3);
                let mut out = vec![f32::NAN; len * k];
                packed.widen_rows(first, &mut out);
                assert_eq!(
                    out,
                    want[first * k..].to_vec(),
                    "({rows}, {k}) rows {first}.., width {width}"
                );
            }
        }
        let nan = PairPanels::from_rows(&[f32::NAN, 1.0], 1, 2, PLAIN_ROWS).to_rows();
        assert!(nan[0].is_nan() && nan[1] == 1.0);
    }

    /// Every kernel the CPU has against an f64 product of the bf16-rounded operands, on shapes
    /// with partial tiles, odd k, k steps short of a whole tile and several k blocks.
    #[test]
    fn kernels_match_f64_products_of_the_rounded_operands() {
        let features = crate::cpu::CpuFeatures::get();
        let mut kernels = vec![Kernel::Portable];
        if features.avx512_bf16 {
            kernels.push(Kernel::Avx512Bf16);
        }
        if features.amx_bf16 {
            kernels.push(Kernel::Amx);
        }
        for &(m, k, n) in &[
            (1, 1, 1),
            (13, 7, 33),
            (25, 300, 70),
            (12, 256, 32),
            (13, 1100, 33),
            (40, 80, 64),
            (64, 512, 96),
            (48, 96, 32),
        ] {
            let (a, b) = (random(m * k, 2), random(n * k, 3));
            let (ar, br) = (rounded(&a), rounded(&b));
            let pb = PairPanels::from_rows(&b, n, k, NR);
            for (kernel, set) in kernels.iter().flat_map(|&k| [(k, false), (k, true)]) {
                let pa = PairPanels::from_rows(&a, m, k, kernel.left_width());
                // Accumulating onto 0.5, or setting over NaN (which must not leak through).
                let (start, base) = if set { (f32::NAN, 0.0) } else { (0.5, 0.5) };
                let mut c = vec![start; m * n];
                let view = ArrayViewMut2::from_shape((m, n), &mut c[..]).expect("fits");
                product_with(kernel, pa.view(), pb.view(), view, set);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = base
                            + (0..k)
                                .map(|t| ar[i * k + t] as f64 * br[j * k + t] as f64)
                                .sum::<f64>();
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-6 * (k as f64 + 1.0),
                            "{kernel:?} set {set} ({m},{k},{n}) [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release -p sd-core --lib kernel_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, not a check"]
    fn kernel_speed() {
        for kernel in [Kernel::Avx512Bf16, Kernel::Amx] {
            let wanted = match kernel {
                Kernel::Amx => crate::cpu::CpuFeatures::get().amx_bf16,
                _ => crate::cpu::CpuFeatures::get().avx512_bf16,
            };
            if !wanted {
                println!("{kernel:?}: not on this CPU");
                continue;
            }
            for &(m, k, n) in &[(320, 2880, 368), (2048, 320, 2560), (1024, 640, 640)] {
                let a = PairPanels::from_rows(&vec![0.5; m * k], m, k, kernel.left_width());
                let b = PairPanels::from_rows(&vec![0.25; n * k], n, k, NR);
                let mut c = vec![0.0f32; m * n];
                let runs = 20;
                let start = std::time::Instant::now();
                for _ in 0..runs {
                    let view = ArrayViewMut2::from_shape((m, n), &mut c[..]).expect("fits");
                    product_with(kernel, a.view(), b.view(), view, false);
                }
                let secs = start.elapsed().as_secs_f64() / runs as f64;
                println!(
                    "{kernel:?} ({m},{k},{n}): {:.1} GFLOP/s on one thread",
                    2.0 * (m * k * n) as f64 / secs / 1e9
                );
            }
        }
    }
}
