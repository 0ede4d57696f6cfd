//! Truncated singular value decomposition for LoRA extraction and resizing: pure Rust, in f64,
//! with no LAPACK (so the default build needs no system library).
//!
//! The top singular triplets of `A [m, n]` come from the symmetric eigenproblem of the Gram
//! matrix of A's shorter side (`G = A·Aᵀ` when `m ≤ n`): its eigenvalues are `σ²`, its
//! eigenvectors the left singular vectors `u`, and `σ·vᵀ = uᵀ·A`. When the wanted directions
//! (plus some slack) cover the whole short side, or it is small, `G` is diagonalised outright by
//! cyclic Jacobi rotations; otherwise by subspace iteration on `G` with a Rayleigh–Ritz step (Jacobi
//! on the small projected matrix) until the wanted directions' residuals are negligible.
//!
//! Squaring the condition number costs nothing that matters in f64: a singular value `σ` comes
//! out accurate to about `1e-16·σ₁²/σ`, far below f32 rounding for every direction a LoRA keeps,
//! and `σ` itself is taken as the norm of `uᵀ·A`, not as `√λ`.

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Short sides up to this are diagonalised outright (Jacobi costs a few `k³`: well under a second).
const FULL_EIGEN_LIMIT: usize = 256;
/// Extra directions the subspace iteration carries beyond the wanted ones (their convergence
/// rate is `(σ_{block+1} / σ_wanted)²` per iteration).
const OVERSAMPLE: usize = 16;
/// Subspace iterations stop when every wanted direction's residual `‖G·q − θ·q‖` is below this
/// fraction of the largest eigenvalue, or after [`MAX_ITERATIONS`].
const RESIDUAL_TOLERANCE: f64 = 1e-11;
const MAX_ITERATIONS: usize = 100;

/// The leading singular triplets of a matrix, largest first: `A ≈ u · diag(s) · vt`.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors as columns, `[m, count]`.
    pub u: Array2<f64>,
    /// Singular values, descending; a direction the matrix does not have (past its rank) has 0
    /// and a zero row in `vt`.
    pub s: Vec<f64>,
    /// Right singular vectors as rows, `[count, n]`.
    pub vt: Array2<f64>,
    /// Whether the subspace iteration met its residual tolerance (always true when solved outright).
    pub converged: bool,
}

impl Svd {
    /// The top `count` singular triplets of `a` (all `min(m, n)` of them when `count` is larger).
    pub fn top(a: ArrayView2<'_, f64>, count: usize) -> Svd {
        let (m, n) = a.dim();
        if m > n {
            // Decompose Aᵀ = V·S·Uᵀ on its shorter side and swap the roles back.
            let t = Svd::top(a.t(), count);
            return Svd {
                u: t.vt.t().to_owned(),
                s: t.s,
                vt: t.u.t().to_owned(),
                converged: t.converged,
            };
        }
        let count = count.min(m);
        if count == 0 {
            return Svd {
                u: Array2::zeros((m, 0)),
                s: Vec::new(),
                vt: Array2::zeros((0, n)),
                converged: true,
            };
        }
        let gram = a.dot(&a.t());
        let (vectors, converged) = top_eigenvectors(&gram, count);
        // σ·vᵀ = uᵀ·A, row by row: σ is its norm.
        let mut vt = vectors.t().dot(&a);
        let mut s = Vec::with_capacity(count);
        let largest = vt.row(0).dot(&vt.row(0)).sqrt();
        for mut row in vt.rows_mut() {
            let sigma = row.dot(&row).sqrt();
            // Past the matrix's rank the row is rounding noise: that direction is absent.
            if sigma > largest * 1e-13 && sigma > 0.0 {
                row /= sigma;
                s.push(sigma);
            } else {
                row.fill(0.0);
                s.push(0.0);
            }
        }
        Svd {
            u: vectors,
            s,
            vt,
            converged,
        }
    }

    /// kohya's factors of the first `rank` directions: `up = U_r·diag(S_r)` `[m, rank]` and
    /// `down = V_rᵀ` `[rank, n]`, so that `up · down` is the best rank-`rank` approximation.
    pub fn factors(&self, rank: usize) -> (Array2<f64>, Array2<f64>) {
        let rank = rank.min(self.s.len());
        let mut up = self.u.slice(ndarray::s![.., ..rank]).to_owned();
        for (mut column, sigma) in up.columns_mut().into_iter().zip(&self.s) {
            column *= *sigma;
        }
        (up, self.vt.slice(ndarray::s![..rank, ..]).to_owned())
    }
}

/// The eigenvectors of the symmetric positive semi-definite `g` for its `count` largest
/// eigenvalues, as columns in descending order of eigenvalue, and whether they converged.
fn top_eigenvectors(g: &Array2<f64>, count: usize) -> (Array2<f64>, bool) {
    let k = g.nrows();
    let block = (2 * count + OVERSAMPLE).min(k);
    if k <= FULL_EIGEN_LIMIT || block == k {
        let (_, vectors) = symmetric_eigen(g.clone());
        return (vectors.slice(ndarray::s![.., ..count]).to_owned(), true);
    }
    let mut random = SplitMix64(0x005e_ed0f_104a);
    let mut q = orthonormal_columns(
        Array2::from_shape_fn((k, block), |_| random.symmetric_unit()),
        &mut random,
    );
    let scale = g
        .diag()
        .iter()
        .fold(0.0_f64, |a, &b| a.max(b))
        .max(f64::MIN_POSITIVE);
    for _ in 0..MAX_ITERATIONS {
        q = orthonormal_columns(g.dot(&q), &mut random);
        // Rayleigh–Ritz: the best approximations to G's eigenvectors within span(q).
        let gq = g.dot(&q);
        let (values, rotation) = symmetric_eigen(q.t().dot(&gq));
        q = q.dot(&rotation);
        let gq = gq.dot(&rotation);
        let converged = (0..count).all(|i| {
            let residual = &gq.column(i) - &(&q.column(i) * values[i]);
            residual.dot(&residual).sqrt() <= RESIDUAL_TOLERANCE * scale.max(values[0])
        });
        if converged {
            return (q.slice(ndarray::s![.., ..count]).to_owned(), true);
        }
    }
    (q.slice(ndarray::s![.., ..count]).to_owned(), false)
}

/// Eigenvalues (descending) and eigenvectors (columns, in the same order) of the symmetric `a`,
/// by cyclic Jacobi rotations, each of which zeroes one off-diagonal pair exactly.
pub fn symmetric_eigen(mut a: Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..64 {
        // Off-diagonal mass summed on its own: `total − diagonal` cancels to ≤ 0 while entries
        // of ~1e-8 remain.
        let total: f64 = a.iter().map(|x| x * x).sum();
        let off_diagonal: f64 = a
            .indexed_iter()
            .filter(|((i, j), _)| i != j)
            .map(|(_, x)| x * x)
            .sum();
        if off_diagonal <= total * f64::EPSILON * f64::EPSILON {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[[p, q]];
                if apq == 0.0 {
                    continue;
                }
                // The rotation angle that zeroes a[p][q]: tan θ = t, the smaller root.
                let tau = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + tau.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                rotate_columns(&mut a, p, q, c, s);
                rotate_rows(&mut a, p, q, c, s);
                rotate_columns(&mut v, p, q, c, s);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[[j, j]].total_cmp(&a[[i, i]]));
    let values = order.iter().map(|&i| a[[i, i]]).collect();
    (values, v.select(Axis(1), &order))
}

/// `M ← M·J` for the rotation `J` in the plane (p, q).
fn rotate_columns(m: &mut Array2<f64>, p: usize, q: usize, c: f64, s: f64) {
    for mut row in m.rows_mut() {
        let (x, y) = (row[p], row[q]);
        row[p] = c * x - s * y;
        row[q] = s * x + c * y;
    }
}

/// `M ← Jᵀ·M` for the rotation `J` in the plane (p, q).
fn rotate_rows(m: &mut Array2<f64>, p: usize, q: usize, c: f64, s: f64) {
    for mut column in m.columns_mut() {
        let (x, y) = (column[p], column[q]);
        column[p] = c * x - s * y;
        column[q] = s * x + c * y;
    }
}

/// `z`'s columns made orthonormal (modified Gram–Schmidt, twice); a column that collapses into
/// the span of those before it (`G` of lower rank than the block) is restarted from a random one.
fn orthonormal_columns(mut z: Array2<f64>, random: &mut SplitMix64) -> Array2<f64> {
    for j in 0..z.ncols() {
        loop {
            let before = norm(&z.column(j).to_owned());
            for _pass in 0..2 {
                for i in 0..j {
                    let projection = z.column(i).dot(&z.column(j));
                    let previous = z.column(i).to_owned();
                    z.column_mut(j).scaled_add(-projection, &previous);
                }
            }
            let after = norm(&z.column(j).to_owned());
            if after > 0.0 && after > 1e-8 * before {
                z.column_mut(j).mapv_inplace(|x| x / after);
                break;
            }
            z.column_mut(j).mapv_inplace(|_| random.symmetric_unit());
        }
    }
    z
}

fn norm(v: &Array1<f64>) -> f64 {
    v.dot(v).sqrt()
}

/// A small deterministic generator for start vectors (the result does not depend on them beyond
/// rounding, but runs should be repeatable).
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in [-1, 1).
    fn symmetric_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A matrix with known singular values: Q1 · diag(s) · Q2ᵀ from Jacobi-made orthogonal bases.
    fn with_spectrum(m: usize, n: usize, s: &[f64], seed: u64) -> Array2<f64> {
        let mut random = SplitMix64(seed);
        let mut basis = |k: usize| {
            let a = Array2::from_shape_fn((k, k), |_| random.symmetric_unit());
            symmetric_eigen(a.t().dot(&a)).1
        };
        let (q1, q2) = (basis(m), basis(n));
        let mut middle = Array2::<f64>::zeros((m, n));
        for (i, &sigma) in s.iter().enumerate() {
            middle[[i, i]] = sigma;
        }
        q1.dot(&middle).dot(&q2.t())
    }

    fn assert_rank_k_approximation(a: &Array2<f64>, svd: &Svd, expected: &[f64]) {
        for (found, wanted) in svd.s.iter().zip(expected) {
            assert!((found - wanted).abs() < 1e-9, "{:?} vs {expected:?}", svd.s);
        }
        // The best rank-k approximation leaves exactly the other singular values (Eckart–Young).
        let (up, down) = svd.factors(svd.s.len());
        let rest = a - &up.dot(&down);
        let rest_norm = rest.iter().map(|x| x * x).sum::<f64>().sqrt();
        let expected_rest: f64 = expected[svd.s.len()..].iter().map(|x| x * x).sum();
        assert!((rest_norm - expected_rest.sqrt()).abs() < 1e-8);
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let mut random = SplitMix64(3);
        let b = Array2::from_shape_fn((7, 7), |_| random.symmetric_unit());
        let a = &b + &b.t();
        let (values, vectors) = symmetric_eigen(a.clone());
        let back = vectors
            .dot(&Array2::from_diag(&Array1::from(values.clone())))
            .dot(&vectors.t());
        let error = (&back - &a).iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(
            error < 1e-12,
            "V·Λ·Vᵀ is {error:e} from A; eigenvalues {values:?}"
        );
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn small_matrices_are_decomposed_outright_both_ways_round() {
        let s = [5.0, 3.0, 2.5, 1.0, 0.25];
        for (m, n) in [(5, 9), (9, 5)] {
            let a = with_spectrum(m, n, &s, 11);
            let svd = Svd::top(a.view(), 3);
            assert_eq!((svd.u.dim(), svd.vt.dim()), ((m, 3), (3, n)));
            assert_rank_k_approximation(&a, &svd, &s);
        }
    }

    #[test]
    fn large_matrices_converge_by_subspace_iteration() {
        let s: Vec<f64> = (0..300).map(|i| 10.0 * 0.97_f64.powi(i)).collect();
        let a = with_spectrum(300, 320, &s, 5);
        let svd = Svd::top(a.view(), 8);
        assert!(svd.converged);
        assert_rank_k_approximation(&a, &svd, &s);
    }

    #[test]
    fn directions_past_the_rank_are_zero() {
        let a = with_spectrum(6, 8, &[2.0, 1.0], 7);
        let svd = Svd::top(a.view(), 4);
        assert_eq!(&svd.s[2..], &[0.0, 0.0]);
        assert!(svd.vt.row(3).iter().all(|&x| x == 0.0));
    }
}
