//! GEMM engine comparison and CPU conv2d/linear throughput, in GFLOP/s (median of several runs).
//!
//! ```text
//! cargo bench --bench gemm                            # matrixmultiply, gemm crate, sd-core engine
//! cargo bench --bench gemm --features bench-openblas  # + OpenBLAS (needs libopenblas-dev)
//! cargo bench --bench gemm -- conv                    # only the rows whose label contains "conv"
//! ```
//!
//! Columns of the engine table: matrixmultiply 0.3 (`threading`), the `gemm` crate 0.19 with its
//! own rayon threading and on one thread, OpenBLAS through ndarray (optional), and sd-core's
//! `sgemm` (the `gemm` crate's kernels, threaded by sd-core in independent blocks). Then the
//! CpuBackend's conv2d and linear on SD 1.5 shapes, as % of sd-core's 4096³ rate.
//!
//! Each cell is "wall / per core": GFLOP/s over the median wall time, and GFLOP per busy
//! core-second (flops ÷ median process CPU time). On a shared machine only the second is stable
//! (a process taking a core slows the wall time, not our CPU time); compare wall numbers only
//! from a quiet spell (`uptime` load well under the core count). Idle pool threads spinning
//! after another engine's turn count as CPU time too, so the single-thread column's per-core
//! number reads low on small products.
//!
//! Thread counts: the `gemm` crate and sd-core use rayon's global pool (`RAYON_NUM_THREADS`),
//! matrixmultiply its own (`MATMUL_NUM_THREADS`), OpenBLAS its own (`OPENBLAS_NUM_THREADS`);
//! each defaults to the number of cores. Plain timing rather than criterion: one 4096³ product
//! takes about a second here, and the engines run in interleaved rounds so that a change in
//! load hits them alike.

// ndarray's `blas` feature declares the CBLAS functions (cblas-sys) without providing them;
// this links the system OpenBLAS that defines them.
#[cfg(feature = "bench-openblas")]
#[link(name = "openblas")]
unsafe extern "C" {}

use std::hint::black_box;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use sd_core::backend::Conv2dParams;
use sd_core::cpu::CpuBackend;
use sd_core::cpu::gemm::{Parallelism, sgemm};
use sd_core::{Backend, HostTensor};

/// Wall-clock time we are willing to spend per measured cell (after one warm-up run).
const TIME_PER_CELL: Duration = Duration::from_secs(3);
const MIN_RUNS: usize = 3;
const MAX_RUNS: usize = 15;
/// Fast calls are repeated within one timed sample until it lasts this long.
const MIN_SAMPLE: Duration = Duration::from_millis(20);

/// The median timings of `f` over several runs, after a warm-up run.
fn median_time(f: impl FnMut()) -> Timing {
    median_times(&mut [Box::new(f)])[0]
}

/// Median wall-clock and process-CPU time of one call.
///
/// The CPU time (all threads of this process, spinning included) is what makes numbers taken on
/// a busy shared machine usable: while another process holds a core our threads are not running,
/// so `flops / cpu time` (GFLOP per busy core-second) barely moves with the load, whereas the
/// wall time can double. On an idle machine, wall GFLOP/s ≈ per-core GFLOP/s × cores for an
/// engine that keeps every core busy.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// The CPU time this process has used so far, over all its threads.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Time `reps` calls of `f` and return the per-call timing.
fn time_calls(f: &mut dyn FnMut(), reps: u32) -> Timing {
    let (wall, cpu) = (Instant::now(), process_cpu_time());
    for _ in 0..reps {
        f();
    }
    Timing {
        wall: wall.elapsed() / reps,
        cpu: (process_cpu_time() - cpu) / reps,
    }
}

/// The median timings of each of `fs`, run in rounds (one sample of each per round, after a
/// warm-up round) so that a change in the machine's load hits every candidate alike. A sample
/// repeats a fast call until it lasts about [`MIN_SAMPLE`].
fn median_times(fs: &mut [Box<dyn FnMut() + '_>]) -> Vec<Timing> {
    let warm_up: Vec<Duration> = fs
        .iter_mut()
        .map(|f| time_calls(&mut **f, 1).wall)
        .collect();
    let reps: Vec<u32> = warm_up
        .iter()
        .map(|t| {
            (MIN_SAMPLE.as_secs_f64() / t.as_secs_f64().max(1e-9))
                .ceil()
                .max(1.0) as u32
        })
        .collect();
    let round: f64 = warm_up
        .iter()
        .zip(&reps)
        .map(|(t, &r)| t.as_secs_f64() * r as f64)
        .sum();
    let rounds = (TIME_PER_CELL.as_secs_f64() * fs.len() as f64 / round.max(1e-9)) as usize;
    let mut samples = vec![Vec::new(); fs.len()];
    for _ in 0..rounds.clamp(MIN_RUNS, MAX_RUNS) {
        for ((f, s), &r) in fs.iter_mut().zip(&mut samples).zip(&reps) {
            s.push(time_calls(&mut **f, r));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            let mid = s.len() / 2;
            s.sort_by_key(|t| t.wall);
            let wall = s[mid].wall;
            s.sort_by_key(|t| t.cpu);
            Timing {
                wall,
                cpu: s[mid].cpu,
            }
        })
        .collect()
}

fn gflops(flops: f64, t: Duration) -> f64 {
    flops / t.as_secs_f64() / 1e9
}

/// Deterministic pseudo-random fill in [-1, 1) (the values don't matter for speed, only that
/// they are not denormal or all zero).
fn filled(rows: usize, cols: usize, seed: u32) -> Array2<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    Array2::from_shape_fn((rows, cols), |_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32) * 2.0 - 1.0
    })
}

/// One way of computing `c = a · b` for row-major operands.
struct Engine {
    name: &'static str,
    run: fn(ArrayView2<'_, f32>, ArrayView2<'_, f32>, ArrayViewMut2<'_, f32>),
}

fn with_matrixmultiply(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides().to_vec());
    // SAFETY: the pointers and strides come from live ndarray views of the stated shapes, and
    // `c` is a unique mutable view.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa[0],
            sa[1],
            b.as_ptr(),
            sb[0],
            sb[1],
            0.0,
            c.as_mut_ptr(),
            sc[0],
            sc[1],
        );
    }
}

fn with_gemm_crate(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, c: ArrayViewMut2<'_, f32>) {
    gemm_crate(
        a,
        b,
        c,
        gemm::Parallelism::Rayon(rayon::current_num_threads()),
    );
}

fn with_gemm_crate_one_thread(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    c: ArrayViewMut2<'_, f32>,
) {
    gemm_crate(a, b, c, gemm::Parallelism::None);
}

fn gemm_crate(
    a: ArrayView2<'_, f32>,
    b: ArrayView2<'_, f32>,
    mut c: ArrayViewMut2<'_, f32>,
    parallelism: gemm::Parallelism,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides().to_vec());
    // SAFETY: as above. gemm's convention is dst = alpha·dst + beta·lhs·rhs; with
    // read_dst = false the old contents of dst are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            sc[1],
            sc[0],
            false,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

fn with_sd_core(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, c: ArrayViewMut2<'_, f32>) {
    sgemm(1.0, a, b, 0.0, c, Parallelism::Parallel).expect("shapes agree");
}

#[cfg(feature = "bench-openblas")]
fn with_openblas(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, mut c: ArrayViewMut2<'_, f32>) {
    // With ndarray's `blas` feature, general_mat_mul on standard-layout f32 calls cblas_sgemm.
    ndarray::linalg::general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

fn engines() -> Vec<Engine> {
    let mut list = vec![
        Engine {
            name: "matrixmultiply",
            run: with_matrixmultiply,
        },
        Engine {
            name: "gemm 0.19",
            run: with_gemm_crate,
        },
        Engine {
            name: "gemm 1 thread",
            run: with_gemm_crate_one_thread,
        },
    ];
    #[cfg(feature = "bench-openblas")]
    list.push(Engine {
        name: "OpenBLAS",
        run: with_openblas,
    });
    list.push(Engine {
        name: "sd-core",
        run: with_sd_core,
    });
    list
}

/// GEMM shapes: the issue's square product and the products SD 1.5 spends its time in.
const GEMM_SHAPES: &[(&str, usize, usize, usize)] = &[
    ("square 4096", 4096, 4096, 4096),
    ("attn proj 64x64 (4096,320,320)", 4096, 320, 320),
    ("conv3x3 im2col (4096,2880,320)", 4096, 2880, 320),
    ("conv3x3 32x32 (1024,5760,640)", 1024, 5760, 640),
    ("clip proj (77,768,768)", 77, 768, 768),
    ("geglu proj 2x64x64 (8192,320,2560)", 8192, 320, 2560),
];

/// GFLOP/s of one measurement: over wall time, and per busy core (over process CPU time).
#[derive(Debug, Clone, Copy)]
struct Rate {
    wall: f64,
    per_core: f64,
}

impl Rate {
    fn new(flops: f64, t: Timing) -> Self {
        Rate {
            wall: gflops(flops, t.wall),
            per_core: gflops(flops, t.cpu),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cell = format!("{:.1} / {:.1}", self.wall, self.per_core);
        write!(f, "{cell:>18}")
    }
}

/// Prints the engine table; returns sd-core's rate on the 4096³ product when it was measured.
fn bench_engines(filter: Option<&str>) -> Option<Rate> {
    let engines = engines();
    println!("GEMM, GFLOP/s over wall time / per busy core (flops ÷ process CPU time)");
    print!("{:<34}", "(m, k, n)");
    for e in &engines {
        print!("{:>18}", e.name);
    }
    println!();
    let mut square = None;
    for &(label, m, k, n) in GEMM_SHAPES {
        if filter.is_some_and(|f| !label.contains(f) && !"gemm".contains(f)) {
            continue;
        }
        let a = filled(m, k, 1);
        let b = filled(k, n, 2);
        let c = Array2::<f32>::zeros((m, n));
        let flops = 2.0 * (m * k * n) as f64;
        let mut runs: Vec<Box<dyn FnMut()>> = engines
            .iter()
            .map(|e| {
                let (a, b, mut c) = (a.view(), b.view(), c.clone());
                Box::new(move || (e.run)(a, b, black_box(c.view_mut()))) as Box<dyn FnMut()>
            })
            .collect();
        print!("{label:<34}");
        for (e, t) in engines.iter().zip(median_times(&mut runs)) {
            let rate = Rate::new(flops, t);
            if e.name == "sd-core" && (m, k, n) == (4096, 4096, 4096) {
                square = Some(rate);
            }
            print!("{rate}");
        }
        println!();
    }
    square
}

/// A conv2d case from SD 1.5.
struct ConvCase {
    label: &'static str,
    /// `[n, c, h, w]`
    input: [usize; 4],
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

const fn conv(
    label: &'static str,
    input: [usize; 4],
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> ConvCase {
    ConvCase {
        label,
        input,
        out_channels,
        kernel,
        stride,
        padding,
    }
}

const CONV_CASES: &[ConvCase] = &[
    conv("conv unet 64x64 3x3 320", [2, 320, 64, 64], 320, 3, 1, 1),
    conv("conv unet 32x32 3x3 640", [2, 640, 32, 32], 640, 3, 1, 1),
    conv("conv unet 64x64 1x1 320", [2, 320, 64, 64], 320, 1, 1, 0),
    conv("conv unet down 3x3 s2 p1", [2, 320, 64, 64], 320, 3, 2, 1),
    conv("conv vae 256x256 3x3 512", [1, 512, 256, 256], 512, 3, 1, 1),
];

/// Linear cases: `(label, rows, in, out)`.
const LINEAR_CASES: &[(&str, usize, usize, usize)] = &[
    ("linear attn q 2x4096x320", 2 * 4096, 320, 320),
    ("linear ff 2x4096x320->2560", 2 * 4096, 320, 2560),
    ("linear clip 2x77x768", 2 * 77, 768, 768),
];

fn host(shape: &[usize], seed: u32) -> HostTensor {
    let len = shape.iter().product();
    filled(1, len, seed)
        .into_shape_with_order(shape)
        .expect("element count matches")
}

fn bench_ops(filter: Option<&str>, square: Rate) {
    let cpu = CpuBackend::new();
    println!(
        "sd-core CpuBackend ops, GFLOP/s over wall time / per busy core, and as % of sd-core's 4096³ GEMM"
    );
    println!("{:<34}{:>18}{:>18}", "op", "GFLOP/s", "% of 4096³");
    let report = |label: &str, flops: f64, t: Timing| {
        let r = Rate::new(flops, t);
        let pct = format!(
            "{:.0}% / {:.0}%",
            100.0 * r.wall / square.wall,
            100.0 * r.per_core / square.per_core
        );
        println!("{label:<34}{r}{pct:>18}");
    };
    for case in CONV_CASES {
        let ConvCase {
            label,
            input: [n, c, h, w],
            out_channels: o,
            kernel,
            stride,
            padding,
        } = *case;
        if filter.is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let x = cpu.upload(&host(&[n, c, h, w], 3)).expect("upload");
        let wt = cpu
            .upload(&host(&[o, c, kernel, kernel], 4))
            .expect("upload");
        let bias = cpu.upload(&host(&[o], 5)).expect("upload");
        let params = Conv2dParams { stride, padding };
        let ho = (h + 2 * padding - kernel) / stride + 1;
        let wo = (w + 2 * padding - kernel) / stride + 1;
        let flops = 2.0 * (n * o * ho * wo * c * kernel * kernel) as f64;
        let t = median_time(|| {
            black_box(cpu.conv2d(&x, &wt, Some(&bias), params).expect("conv2d"));
        });
        report(label, flops, t);
    }
    for &(label, rows, inp, out) in LINEAR_CASES {
        if filter.is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let x = cpu.upload(&host(&[rows, inp], 6)).expect("upload");
        let wt = cpu.upload(&host(&[out, inp], 7)).expect("upload");
        let bias = cpu.upload(&host(&[out], 8)).expect("upload");
        let flops = 2.0 * (rows * inp * out) as f64;
        let t = median_time(|| {
            black_box(cpu.linear(&x, &wt, Some(&bias)).expect("linear"));
        });
        report(label, flops, t);
    }
}

/// sd-core's rate on the 4096³ product, the yardstick for the op table.
fn square_reference() -> Rate {
    let a = filled(4096, 4096, 1);
    let b = filled(4096, 4096, 2);
    let mut c = Array2::<f32>::zeros((4096, 4096));
    let t = median_time(|| with_sd_core(a.view(), b.view(), black_box(c.view_mut())));
    Rate::new(2.0 * 4096f64.powi(3), t)
}

fn main() {
    // `cargo bench` passes `--bench`; the first other argument filters rows by label.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let filter = filter.as_deref();
    println!(
        "rayon threads: {}, cores: {}",
        rayon::current_num_threads(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let square = bench_engines(filter);
    println!();
    let wants_ops = filter.is_none_or(|f| {
        CONV_CASES.iter().any(|c| c.label.contains(f))
            || LINEAR_CASES.iter().any(|c| c.0.contains(f))
    });
    if wants_ops {
        bench_ops(filter, square.unwrap_or_else(square_reference));
    }
}
