//! The AMX kernel of the bf16 engine: `TDPBF16PS` multiplies a tile of 16 rows × 16 pairs of k
//! (each row's pairs contiguous: the [row tiles](super::ROW_TILES) layout of the left operand) by
//! a tile of 16 pairs × 16 columns (each pair's columns contiguous: half of an [`NR`]-column pair
//! panel, read with a 128-byte row stride) and adds the 16 × 16 products to f32 sums held in a
//! third tile: 16 · 16 · 32 multiply-adds per instruction, against 16 · 2 for `VDPBF16PS`.
//!
//! A block of `c` is 32 × 32, four accumulator tiles (0–3): two row tiles of `a` (4, 5) times
//! the two halves of a `b` panel (6, 7), so each tile loaded feeds two products. A block of `a`
//! (32 rows × [`K_BLOCK_PAIRS`]) stays in L1 while it meets a block of panels of `b` that stays
//! in L2. `a`'s row tiles are zero-padded to whole tiles; the other edges go through small
//! zeroed buffers: `b`'s last k step when it is short of 16 pairs (SD's 40- and 80-wide
//! attention heads) and blocks of `c` past its last row or column.
//!
//! Stable Rust has no AMX intrinsics, so the instructions are inline assembly. Nothing else in
//! the process touches the tile registers (the compiler never allocates them), so the sums stay
//! in them from one `asm!` block to the next within [`product`].

use std::arch::asm;

use ndarray::ArrayViewMut2;

use super::{NR, Panels, ROW_TILES, TILE_PAIRS};

/// Rows of a tile (of `a`, and of `c`).
const TILE_ROWS: usize = ROW_TILES;
/// Values (pairs) in one tile of `a`.
const TILE_LEN: usize = TILE_ROWS * TILE_PAIRS;
/// Rows and columns of `c` per block.
const BLOCK: usize = 32;
/// Pairs of k per cache block: 32 rows of `a` (16 KiB) and one panel of `b` (16 KiB) fit L1.
const K_BLOCK_PAIRS: usize = 128;
/// Panels of `b` per cache block (512 KiB at [`K_BLOCK_PAIRS`]): they stay in L2 while every
/// block of rows of `a` passes over them, instead of streaming from L3 once per 32 rows.
const B_BLOCK_PANELS: usize = 32;
/// Bytes between the rows of an `a` tile.
const A_STRIDE: usize = TILE_PAIRS * 4;
/// Bytes between the pairs of a `b` panel.
const B_STRIDE: usize = NR * 4;

/// The tile configuration `LDTILECFG` reads: palette 1, tiles 0–7 all 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1;
    let mut t = 0;
    while t < 8 {
        bytes[16 + 2 * t] = 64; // bytes per row, a little-endian u16
        bytes[48 + t] = TILE_ROWS as u8;
        t += 1;
    }
    TileConfig(bytes)
};

/// `c = a · bᵀ` (with `set`) or `c += a · bᵀ` for `a` in row tiles and `b` in [`NR`] panels.
///
/// # Safety
/// The CPU must have AMX-BF16 and this process the kernel's permission to use the tiles
/// ([`CpuFeatures::amx_bf16`](crate::cpu::CpuFeatures::amx_bf16)).
pub(super) unsafe fn product(
    a: Panels<'_>,
    b: Panels<'_>,
    c: &mut ArrayViewMut2<'_, f32>,
    set: bool,
) {
    assert!(a.width == ROW_TILES && b.width == NR && a.pairs == b.pairs);
    let (m, n, pairs) = (a.rows, b.rows, a.pairs);
    if m == 0 || n == 0 {
        return;
    }
    if pairs == 0 {
        if set {
            c.fill(0.0);
        }
        return;
    }
    // Every tile read below stays inside these: whole row tiles of a (zero rows and pairs pad
    // them), and whole panels of b (zero columns pad them).
    assert!(a.first_pair.is_multiple_of(TILE_PAIRS) && a.data.len() >= a.panels() * a.panel_len);
    assert!((a.first_pair + pairs).next_multiple_of(TILE_PAIRS) * ROW_TILES <= a.panel_len);
    assert!(b.data.len() >= b.panels() * b.panel_len && b.first_pair + pairs <= b.panel_len / NR);
    let ld = c.strides()[0] as usize;
    let c_base = c.as_mut_ptr();

    // SAFETY: the caller vouches for AMX; CONFIG is a valid palette-1 configuration.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    let mut c_edge = [0f32; BLOCK * BLOCK];
    for p0 in (0..pairs).step_by(K_BLOCK_PAIRS) {
        let len = K_BLOCK_PAIRS.min(pairs - p0);
        let (steps, tail) = (len / TILE_PAIRS, len % TILE_PAIRS);
        // The last pairs of every panel of b, as whole zero-padded tiles (a's last tile is
        // whole already, its missing pairs zero).
        let b_tails: Vec<u32> = match tail {
            0 => Vec::new(),
            _ => (0..b.panels())
                .flat_map(|j| {
                    let start = j * b.panel_len + (b.first_pair + p0 + steps * TILE_PAIRS) * NR;
                    let pairs = &b.data[start..start + tail * NR];
                    let padding = std::iter::repeat_n(0, (TILE_PAIRS - tail) * NR);
                    pairs.iter().copied().chain(padding)
                })
                .collect(),
        };
        let load_c = !(set && p0 == 0);
        let first_tile = (a.first_pair + p0) / TILE_PAIRS * TILE_LEN;
        for j0 in (0..b.panels()).step_by(B_BLOCK_PANELS) {
            for r0 in (0..m).step_by(BLOCK) {
                let rows = BLOCK.min(m - r0);
                let two_row_tiles = rows > TILE_ROWS;
                // The block's tiles of a; the second row tile's lie a panel further on.
                let a_block = &a.data[r0 / ROW_TILES * a.panel_len + first_tile..];
                for j in j0..(j0 + B_BLOCK_PANELS).min(b.panels()) {
                    let c0 = j * NR;
                    let cols = NR.min(n - c0);
                    let full = cols == NR && rows == if two_row_tiles { BLOCK } else { TILE_ROWS };
                    let (c_ptr, c_ld) = if full {
                        // SAFETY: rows r0..r0 + rows, columns c0..c0 + NR lie in c.
                        (unsafe { c_base.add(r0 * ld + c0) }, ld)
                    } else {
                        for (r, edge_row) in c_edge.chunks_exact_mut(BLOCK).enumerate() {
                            edge_row.fill(0.0);
                            if load_c && r < rows {
                                // SAFETY: row r0 + r of c holds columns c0..c0 + cols.
                                let row = unsafe {
                                    std::slice::from_raw_parts(c_base.add((r0 + r) * ld + c0), cols)
                                };
                                edge_row[..cols].copy_from_slice(row);
                            }
                        }
                        (c_edge.as_mut_ptr(), BLOCK)
                    };
                    let b_panel = &b.data[j * b.panel_len + (b.first_pair + p0) * NR..];
                    let tiles = Tiles {
                        two_row_tiles,
                        c: c_ptr,
                        c_stride: c_ld * 4,
                    };
                    let second = a.panel_len;
                    // SAFETY: AMX and its configuration are loaded (above); the tiles read stay
                    // inside a, b and b_tails (the asserts above), c_ptr is c's block or c_edge.
                    unsafe {
                        tiles.start(load_c);
                        if steps > 0 {
                            tiles.multiply(a_block.as_ptr(), second, b_panel.as_ptr(), steps);
                        }
                        if tail > 0 {
                            let a_tail = a_block[steps * TILE_LEN..].as_ptr();
                            let b_tail = &b_tails[j * TILE_PAIRS * NR..];
                            tiles.multiply(a_tail, second, b_tail.as_ptr(), 1);
                        }
                        tiles.finish();
                    }
                    if !full {
                        for (r, edge_row) in c_edge.chunks_exact(BLOCK).take(rows).enumerate() {
                            // SAFETY: row r0 + r of c holds columns c0..c0 + cols.
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(c_base.add((r0 + r) * ld + c0), cols)
                            };
                            row.copy_from_slice(&edge_row[..cols]);
                        }
                    }
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The accumulator tiles of one block of `c`: 0 and 1 (its first 16 rows, columns 0–15 and
/// 16–31), and with `two_row_tiles` 2 and 3 (rows 16–31).
struct Tiles {
    two_row_tiles: bool,
    /// The block's first element, rows `c_stride` bytes apart.
    c: *mut f32,
    c_stride: usize,
}

impl Tiles {
    /// Load the block's sums from `c`, or zero them.
    ///
    /// # Safety
    /// The tile configuration is loaded; `c` holds the block (16 or 32 rows of 32 floats).
    unsafe fn start(&self, load: bool) {
        let (c, s) = (self.c, self.c_stride);
        // SAFETY: the caller's contract; rows 16.. are read only with two row tiles.
        unsafe {
            match (load, self.two_row_tiles) {
                (false, _) => asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                ),
                (true, false) => asm!(
                    "tileloadd tmm0, [{c} + {s}*1]",
                    "tileloadd tmm1, [{c} + {s}*1 + 64]",
                    c = in(reg) c, s = in(reg) s,
                    options(nostack, readonly)
                ),
                (true, true) => asm!(
                    "tileloadd tmm0, [{c} + {s}*1]",
                    "tileloadd tmm1, [{c} + {s}*1 + 64]",
                    "tileloadd tmm2, [{c16} + {s}*1]",
                    "tileloadd tmm3, [{c16} + {s}*1 + 64]",
                    c = in(reg) c, c16 = in(reg) c.byte_add(TILE_ROWS * s), s = in(reg) s,
                    options(nostack, readonly)
                ),
            }
        }
    }

    /// Add `steps` tile steps of products: consecutive whole tiles of `a` (and with two row
    /// tiles, those `second` values further on) times 16 pairs per step of a `b` panel ([`NR`]
    /// columns each).
    ///
    /// # Safety
    /// The tile configuration is loaded; `a` holds `steps` tiles (and so does `a + second`
    /// with two row tiles), `b` `16 · steps` pairs of [`NR`] columns.
    unsafe fn multiply(&self, a: *const u32, second: usize, b: *const u32, steps: usize) {
        // SAFETY: the caller's contract; steps > 0 (the loop runs at least once).
        debug_assert!(steps > 0);
        unsafe {
            if self.two_row_tiles {
                asm!(
                    "2:",
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm5, [{a16} + {sa}*1]",
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "add {a}, {a_step}",
                    "add {a16}, {a_step}",
                    "add {b}, {b_step}",
                    "dec {steps}",
                    "jnz 2b",
                    a = inout(reg) a => _,
                    a16 = inout(reg) a.add(second) => _,
                    b = inout(reg) b => _,
                    steps = inout(reg) steps => _,
                    sa = in(reg) A_STRIDE,
                    a_step = const TILE_LEN * 4,
                    sb = in(reg) B_STRIDE,
                    b_step = const TILE_PAIRS * B_STRIDE,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "2:",
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "add {a}, {a_step}",
                    "add {b}, {b_step}",
                    "dec {steps}",
                    "jnz 2b",
                    a = inout(reg) a => _,
                    b = inout(reg) b => _,
                    steps = inout(reg) steps => _,
                    sa = in(reg) A_STRIDE,
                    a_step = const TILE_LEN * 4,
                    sb = in(reg) B_STRIDE,
                    b_step = const TILE_PAIRS * B_STRIDE,
                    options(nostack, readonly)
                );
            }
        }
    }

    /// Store the block's sums to `c`.
    ///
    /// # Safety
    /// As for [`start`](Self::start), with `c` writable.
    unsafe fn finish(&self) {
        let (c, s) = (self.c, self.c_stride);
        // SAFETY: the caller's contract.
        unsafe {
            if self.two_row_tiles {
                asm!(
                    "tilestored [{c} + {s}*1], tmm0",
                    "tilestored [{c} + {s}*1 + 64], tmm1",
                    "tilestored [{c16} + {s}*1], tmm2",
                    "tilestored [{c16} + {s}*1 + 64], tmm3",
                    c = in(reg) c, c16 = in(reg) c.byte_add(TILE_ROWS * s), s = in(reg) s,
                    options(nostack)
                );
            } else {
                asm!(
                    "tilestored [{c} + {s}*1], tmm0",
                    "tilestored [{c} + {s}*1 + 64], tmm1",
                    c = in(reg) c, s = in(reg) s,
                    options(nostack)
                );
            }
        }
    }
}
