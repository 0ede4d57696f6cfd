//! Throughput of the CPU backend's ops on the shapes one SD 1.5 UNet step (512², batch 2) and
//! one VAE decode use. Prints the median of several runs per op.
//!
//! `cargo run --release --example cpu_ops [-- --runs N] [--precision f32|bf16] [--only TEXT]`
//!
//! `--only` keeps the ops whose name contains TEXT (e.g. `attention`), for profiling one.
//!
//! With `--precision bf16` the conv and linear weights are packed bf16 and those products run
//! on the bf16 engine; the other ops are the same f32 code either way.

use std::time::Instant;

use sd_core::cpu::{CpuBackend, Precision};
use sd_core::{Backend, Conv2dParams, TorchGenerator, UnaryOp, WeightRole};

/// One benchmark case: a name, its FLOP count and a closure running it once.
struct Case<'a> {
    name: String,
    flop: f64,
    run: Box<dyn Fn() -> stable_diffusion::Result<()> + 'a>,
}

fn main() -> stable_diffusion::Result<()> {
    let Args {
        runs,
        precision,
        only,
    } = parse_args()?;
    let b = CpuBackend::with_precision(precision);
    let mut rng = TorchGenerator::new(0);
    let mut weight = |shape: &[usize], role| b.upload_weight(&(rng.randn(shape) * 0.1), role);
    let w3 = weight(&[320, 320, 3, 3], WeightRole::Conv)?;
    let w_lin = weight(&[320, 320], WeightRole::Linear)?;
    let ff_in = weight(&[2560, 320], WeightRole::Linear)?;
    let vae_w = weight(&[256, 256, 3, 3], WeightRole::Conv)?;
    // The UNet's 1280-channel 3×3 convs at 16×16 and 8×8 (too few tiles for Winograd).
    let deep_w = weight(&[1280, 1280, 3, 3], WeightRole::Conv)?;
    let mut rand = |shape: &[usize]| b.upload(&(rng.randn(shape) * 0.1));

    // UNet level-1 shapes at 512²: 64×64 latents, 320 channels, 8 heads of 40; CLIP context 77×768.
    let x_nchw = rand(&[2, 320, 64, 64])?;
    let bias = rand(&[320])?;
    let tokens = rand(&[2, 4096, 320])?;
    // Self-attention's keys and values: separate tensors, as the UNet's projections give.
    let (self_k, self_v) = (rand(&[2, 4096, 320])?, rand(&[2, 4096, 320])?);
    let ctx_k = rand(&[2, 77, 320])?;
    let gamma = rand(&[320])?;
    let geglu_in = rand(&[2, 4096, 2560])?;
    // VAE decoder's largest conv: 512² × 128 channels (and 256² × 256).
    let vae_x = rand(&[1, 256, 256, 256])?;
    let vae_bias = rand(&[256])?;
    let (deep_16, deep_8, deep_bias) = (
        rand(&[2, 1280, 16, 16])?,
        rand(&[2, 1280, 8, 8])?,
        rand(&[1280])?,
    );
    let vae_tokens = rand(&[1, 4096, 512])?;

    let conv_flop = |n: f64, c: f64, o: f64, hw: f64, k: f64| 2.0 * n * c * o * hw * k * k;
    // The UNet's other linear shapes at 512², batch 2 (tokens × in → out): attention
    // projections, FF in and FF out of the 32×32 and 16×16 levels, and FF out at 64×64.
    let linear_shapes = [
        (8192, 1280, 320),
        (2048, 640, 640),
        (2048, 640, 5120),
        (2048, 2560, 640),
        (512, 1280, 1280),
        (512, 1280, 10240),
        (512, 5120, 1280),
    ];
    let linear_inputs = linear_shapes
        .iter()
        .map(|&(rows, inp, out)| {
            let x = b.upload(&(rng.randn(&[rows, inp]) * 0.1))?;
            let w = b.upload_weight(&(rng.randn(&[out, inp]) * 0.1), WeightRole::Linear)?;
            Ok((rows, inp, out, x, w))
        })
        .collect::<stable_diffusion::Result<Vec<_>>>()?;
    let mut cases = vec![
        Case {
            name: "conv2d 3x3 [2,320,64,64]->320".into(),
            flop: conv_flop(2.0, 320.0, 320.0, 4096.0, 3.0),
            run: Box::new(|| {
                b.conv2d(&x_nchw, &w3, Some(&bias), Conv2dParams::same(1))
                    .map(drop)
            }),
        },
        Case {
            name: "conv2d 3x3 [1,256,256,256]->256 (VAE)".into(),
            flop: conv_flop(1.0, 256.0, 256.0, 65536.0, 3.0),
            run: Box::new(|| {
                b.conv2d(&vae_x, &vae_w, Some(&vae_bias), Conv2dParams::same(1))
                    .map(drop)
            }),
        },
        Case {
            name: "conv2d 3x3 [2,1280,16,16]->1280".into(),
            flop: conv_flop(2.0, 1280.0, 1280.0, 256.0, 3.0),
            run: Box::new(|| {
                b.conv2d(&deep_16, &deep_w, Some(&deep_bias), Conv2dParams::same(1))
                    .map(drop)
            }),
        },
        Case {
            name: "conv2d 3x3 [2,1280,8,8]->1280".into(),
            flop: conv_flop(2.0, 1280.0, 1280.0, 64.0, 3.0),
            run: Box::new(|| {
                b.conv2d(&deep_8, &deep_w, Some(&deep_bias), Conv2dParams::same(1))
                    .map(drop)
            }),
        },
        Case {
            name: "linear [8192,320]x[320,320]".into(),
            flop: 2.0 * 8192.0 * 320.0 * 320.0,
            run: Box::new(|| b.linear(&tokens, &w_lin, Some(&bias)).map(drop)),
        },
        Case {
            name: "linear [8192,320]x[320,2560] (FF in)".into(),
            flop: 2.0 * 8192.0 * 320.0 * 2560.0,
            run: Box::new(|| b.linear(&tokens, &ff_in, None).map(drop)),
        },
        Case {
            name: "self-attention [2,4096,320] 8 heads".into(),
            flop: 2.0 * 2.0 * 2.0 * 4096.0 * 4096.0 * 320.0,
            run: Box::new(|| {
                b.attention(&tokens, &self_k, &self_v, 8, 40f32.powf(-0.5), false)
                    .map(drop)
            }),
        },
        Case {
            name: "cross-attention [2,4096,320] x 77".into(),
            flop: 2.0 * 2.0 * 2.0 * 4096.0 * 77.0 * 320.0,
            run: Box::new(|| {
                b.attention(&tokens, &ctx_k, &ctx_k, 8, 40f32.powf(-0.5), false)
                    .map(drop)
            }),
        },
        Case {
            name: "VAE attention [1,4096,512] 1 head".into(),
            flop: 2.0 * 2.0 * 4096.0 * 4096.0 * 512.0,
            run: Box::new(|| {
                b.attention(
                    &vae_tokens,
                    &vae_tokens,
                    &vae_tokens,
                    1,
                    512f32.powf(-0.5),
                    false,
                )
                .map(drop)
            }),
        },
        Case {
            name: "group_norm+silu [2,320,64,64] g32".into(),
            flop: 0.0,
            run: Box::new(|| {
                b.group_norm(&x_nchw, 32, &gamma, &bias, 1e-5, true)
                    .map(drop)
            }),
        },
        Case {
            name: "layer_norm [2,4096,320]".into(),
            flop: 0.0,
            run: Box::new(|| b.layer_norm(&tokens, &gamma, &bias, 1e-5).map(drop)),
        },
        Case {
            name: "geglu [2,4096,2560]".into(),
            flop: 0.0,
            run: Box::new(|| b.geglu(&geglu_in).map(drop)),
        },
        Case {
            name: "silu [2,320,64,64]".into(),
            flop: 0.0,
            run: Box::new(|| b.unary(&x_nchw, UnaryOp::Silu).map(drop)),
        },
        Case {
            name: "add broadcast [2,320,64,64]+[2,320,1,1]".into(),
            flop: 0.0,
            run: Box::new(|| {
                let t = b.reshape(&bias, &[1, 320, 1, 1])?;
                b.add(&x_nchw, &t).map(drop)
            }),
        },
    ];
    let backend = &b;
    cases.extend(linear_inputs.iter().map(|(rows, inp, out, x, w)| Case {
        name: format!("linear [{rows},{inp}]x[{inp},{out}]"),
        flop: 2.0 * (rows * inp * out) as f64,
        run: Box::new(move || backend.linear(x, w, None).map(drop)),
    }));

    println!(
        "CPU backend, {} threads, median of {runs} runs",
        rayon::current_num_threads()
    );
    println!("{:<42} {:>10} {:>10}", "op", "ms", "GFLOP/s");
    for case in cases.iter().filter(|case| case.name.contains(&only)) {
        (case.run)()?; // warm-up
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            (case.run)()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let gflops = if case.flop > 0.0 {
            format!("{:.1}", case.flop / median / 1e9)
        } else {
            "-".to_string()
        };
        println!("{:<42} {:>10.2} {:>10}", case.name, median * 1e3, gflops);
    }
    Ok(())
}

/// The command line: runs per op, precision, and the `--only` filter on op names.
struct Args {
    runs: usize,
    precision: Precision,
    only: String,
}

fn parse_args() -> stable_diffusion::Result<Args> {
    let usage = || {
        sd_core::Error::invalid_argument(
            "args",
            "usage: cpu_ops [--runs N] [--precision f32|bf16] [--only TEXT]",
        )
    };
    let (mut runs, mut precision, mut only) = (5, Precision::F32, String::new());
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        match pair {
            [flag, n] if flag == "--runs" => {
                runs = n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    sd_core::Error::invalid_argument(
                        "--runs",
                        format!("expected a positive integer, got {n:?}"),
                    )
                })?
            }
            [flag, p] if flag == "--precision" => precision = p.parse()?,
            [flag, text] if flag == "--only" => only = text.clone(),
            _ => return Err(usage()),
        }
    }
    Ok(Args {
        runs,
        precision,
        only,
    })
}
