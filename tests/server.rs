//! `sd serve` over HTTP on loopback, on the tiny model: A1111's answers, the same pixels as
//! `sd generate`, bad input, load, interrupt, disconnects and a graceful stop.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use serve_support::{
    Server, assert_same_pixels, basic_auth, fixtures, images_of, raw_request, scratch, sd_generate,
    terminate,
};
use stable_diffusion::image_file::read_rgb;
use stable_diffusion::png::png_bytes;
use stable_diffusion::{GrayImage, RgbImage};

fn tiny() -> String {
    fixtures().join("tiny-sd").display().to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `sd generate` arguments for the small txt2img bodies below: PROMPT at SEED on MODEL, 2 steps,
/// 64×64, and A1111's defaults for what those bodies leave out (CFG 7, the Euler sampler).
fn small_txt2img<'a>(model: &'a str, prompt: &'a str, seed: &'a str) -> Vec<&'a str> {
    small_generate(model, prompt, seed, "2", "Euler")
}

/// `sd generate` arguments for a 64×64 picture at CFG 7 by `steps` steps of `scheduler`.
fn small_generate<'a>(
    model: &'a str,
    prompt: &'a str,
    seed: &'a str,
    steps: &'a str,
    scheduler: &'a str,
) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--prompt",
        prompt,
        "--seed",
        seed,
        "--steps",
        steps,
        "-W",
        "64",
        "-H",
        "64",
        "--cfg",
        "7",
        "--scheduler",
        scheduler,
    ]
}

/// A small test picture: a colour gradient.
fn gradient(width: usize, height: usize) -> RgbImage {
    let pixels = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [(x * 8 % 256) as u8, (y * 8 % 256) as u8, 128]))
        .collect();
    RgbImage::new(width, height, pixels).unwrap()
}

#[test]
fn txt2img_and_img2img_give_sd_generates_pixels_in_a1111s_answer_shapes() {
    let dir = scratch("same-pixels");
    let server = Server::start(&["--model", &tiny()]);

    // txt2img, a batch of two over two iterations: seeds 1234…1237. Each iteration is the
    // batch `sd generate --batch 2` makes from its first seed (the same batch composition: a
    // UNet run on another batch size may round differently in the last bit).
    let answer = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a red fox, snow", "negative_prompt": "blurry", "seed": 1234,
                "steps": 3, "cfg_scale": 7.5, "width": 64, "height": 64, "batch_size": 2,
                "n_iter": 2, "sampler_name": "Euler a", "scheduler": "automatic",
                "send_images": true, "save_images": false, "hr_upscaler": "Latent",
                "some_extension_field": {"x": 1}}"#,
        )
        .ok();
    let served = images_of(&answer);
    assert_eq!(served.len(), 4);
    for (iteration, seed) in [(0, "1234"), (1, "1236")] {
        let name = format!("fox{iteration}");
        let reference = sd_generate(
            &dir,
            &name,
            &[
                "--model",
                &tiny(),
                "--prompt",
                "a red fox, snow",
                "--negative-prompt",
                "blurry",
                "--seed",
                seed,
                "--steps",
                "3",
                "--cfg",
                "7.5",
                "-W",
                "64",
                "-H",
                "64",
                "--batch",
                "2",
                "--scheduler",
                "Euler a",
            ],
        );
        for index in 0..2 {
            let path = reference.with_file_name(format!("{name}-{}.png", index + 1));
            let what = format!("txt2img iteration {iteration} image {index}");
            assert_same_pixels(
                &served[2 * iteration + index],
                &read_rgb(&path).unwrap(),
                &what,
            );
        }
    }
    let info: Value = serde_json::from_str(answer["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["seed"], 1234);
    assert_eq!(info["all_seeds"], json!([1234, 1235, 1236, 1237]));
    assert_eq!(info["sampler_name"], "Euler a");
    assert_eq!(info["sd_model_name"], "tiny-sd");
    assert_eq!(info["batch_size"], 2);
    let infotexts = info["infotexts"].as_array().unwrap();
    assert!(
        infotexts[3].as_str().unwrap().contains("Seed: 1237"),
        "{infotexts:?}"
    );
    assert_eq!(answer["parameters"]["prompt"], "a red fox, snow");

    // png-info reads the PNG's own parameters back.
    let first_png = base64::engine::general_purpose::STANDARD
        .decode(answer["images"][0].as_str().unwrap())
        .unwrap();
    let png_info = server
        .post(
            "/sdapi/v1/png-info",
            &json!({"image": b64(&first_png)}).to_string(),
        )
        .ok();
    assert_eq!(png_info["info"], infotexts[0]);
    assert_eq!(png_info["parameters"]["Seed"], "1234");
    assert_eq!(png_info["parameters"]["Size-1"], "64");

    // img2img from a 32×32 init image and mask sent with a data: prefix, served at 64×64
    // (resize mode 0), against the CLI given the same files and size.
    let init = gradient(32, 32);
    let mask = GrayImage::new(
        32,
        32,
        (0..32 * 32)
            .map(|i| if i % 32 < 16 { 255 } else { 0 })
            .collect(),
    )
    .unwrap();
    let mask_rgb = RgbImage::new(
        32,
        32,
        mask.pixels().iter().flat_map(|&p| [p, p, p]).collect(),
    )
    .unwrap();
    let init_path = dir.join("init.png");
    let mask_path = dir.join("mask.png");
    stable_diffusion::png::write_png(&init_path, &init, None).unwrap();
    stable_diffusion::png::write_png(&mask_path, &mask_rgb, None).unwrap();
    let body = json!({
        "init_images": [format!("data:image/png;base64,{}", b64(&png_bytes(&init, None).unwrap()))],
        "mask": b64(&png_bytes(&mask_rgb, None).unwrap()),
        "prompt": "a lighthouse", "seed": 77, "steps": 4, "width": 64, "height": 64,
        "denoising_strength": 0.6, "cfg_scale": 7, "sampler_name": "Euler a",
        "mask_blur": 4, "inpainting_fill": 1, "inpaint_full_res": false, "resize_mode": 0,
    });
    let answer = server.post("/sdapi/v1/img2img", &body.to_string()).ok();
    assert_eq!(
        answer["parameters"]["init_images"],
        Value::Null,
        "init images echoed back"
    );
    let reference = sd_generate(
        &dir,
        "lighthouse",
        &[
            "--model",
            &tiny(),
            "--prompt",
            "a lighthouse",
            "--seed",
            "77",
            "--steps",
            "4",
            "-W",
            "64",
            "-H",
            "64",
            "--strength",
            "0.6",
            "--cfg",
            "7",
            "--scheduler",
            "Euler a",
            "--init-image",
            init_path.to_str().unwrap(),
            "--mask",
            mask_path.to_str().unwrap(),
            "--mask-blur",
            "4",
        ],
    );
    assert_same_pixels(
        &images_of(&answer)[0],
        &read_rgb(&reference).unwrap(),
        "img2img",
    );
    let info: Value = serde_json::from_str(answer["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["denoising_strength"], 0.6);

    // The lists clients read.
    let samplers = server.get("/sdapi/v1/samplers").ok();
    let names: Vec<&str> = samplers
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in ["Euler", "Euler a", "DPM++ 2M", "DDIM"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let schedulers = server.get("/sdapi/v1/schedulers").ok();
    assert_eq!(schedulers[2]["name"], "karras");
    let models = server.get("/sdapi/v1/sd-models").ok();
    assert_eq!(models[0]["title"], "tiny-sd");
    assert_eq!(models[0]["hash"].as_str().unwrap().len(), 10);
    let sha256 = models[0]["sha256"].as_str().unwrap();
    assert!(sha256.len() == 64 && sha256.starts_with(models[0]["hash"].as_str().unwrap()));
    let options = server.get("/sdapi/v1/options").ok();
    assert_eq!(options["sd_model_checkpoint"], "tiny-sd");
    assert_eq!(options["CLIP_stop_at_last_layers"], 1);
    assert_eq!(
        server.get("/sdapi/v1/embeddings").ok(),
        json!({"loaded": {}, "skipped": {}})
    );
    assert_eq!(server.get("/sdapi/v1/loras").ok(), json!([]));
    assert_eq!(server.get("/sdapi/v1/upscalers").ok()[0]["name"], "None");
    assert!(server.get("/sdapi/v1/latent-upscale-modes").ok().is_array());
    assert_eq!(
        server.get("/sdapi/v1/scripts").ok(),
        json!({"txt2img": [], "img2img": []})
    );
    assert_eq!(server.post("/sdapi/v1/refresh-checkpoints", "").status, 200);
    assert_eq!(server.get("/internal/ping").ok(), json!({}));
    let ready = server.get("/internal/ready").ok();
    assert_eq!(
        (ready["ready"].as_bool(), ready["busy"].as_bool()),
        (Some(true), Some(false))
    );
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("sd_images_total 5\n"),
        "{}",
        metrics.text()
    );
    assert!(
        metrics.text().contains("sd_jobs_total{outcome=\"ok\"} 2\n"),
        "{}",
        metrics.text()
    );

    // Clip skip through options, then back through override_settings: both as the CLI.
    assert_eq!(
        server
            .post("/sdapi/v1/options", r#"{"CLIP_stop_at_last_layers": 2}"#)
            .status,
        200
    );
    let skipped = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64}"#,
        )
        .ok();
    let reference = sd_generate(
        &dir,
        "clip-skip",
        &[
            small_txt2img(&tiny(), "a fox", "5"),
            vec!["--clip-skip", "2"],
        ]
        .concat(),
    );
    assert_same_pixels(
        &images_of(&skipped)[0],
        &read_rgb(&reference).unwrap(),
        "clip skip 2",
    );
    let back = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64,
                "override_settings": {"CLIP_stop_at_last_layers": 1}}"#,
        )
        .ok();
    assert_ne!(images_of(&back)[0], images_of(&skipped)[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Errors come in A1111's shape with its status codes.
fn assert_error(response: &serve_support::Response, status: u16, needle: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    for key in ["error", "detail", "body", "errors"] {
        assert!(body.get(key).is_some(), "no {key}: {body}");
    }
    assert!(
        body["detail"].as_str().unwrap().contains(needle),
        "`{needle}` not in {body}"
    );
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_answering() {
    let server = Server::start(&[
        "--model",
        &tiny(),
        "--api-auth",
        "user:secret",
        "--max-body-bytes",
        "200000",
        "--max-image-pixels",
        "65536",
    ]);
    let png = |w, h| b64(&png_bytes(&gradient(w, h), None).unwrap());
    let big_png = png(300, 300);
    let bodies: Vec<(String, u16)> = vec![
        ("{not json".into(), 422),
        ("[1, 2, 3]".into(), 422),
        (r#"{"steps": "many"}"#.into(), 422),
        (r#"{"steps": -3}"#.into(), 422),
        (r#"{"width": -64}"#.into(), 422),
        (r#"{"height": 0}"#.into(), 422),
        (r#"{"width": 1000000}"#.into(), 422),
        (r#"{"width": 65, "steps": 1}"#.into(), 422),
        (r#"{"batch_size": 100}"#.into(), 422),
        (r#"{"batch_size": 4, "n_iter": 5}"#.into(), 422),
        (r#"{"cfg_scale": "high"}"#.into(), 422),
        (r#"{"seed": "lucky"}"#.into(), 422),
        (r#"{"prompt": 42}"#.into(), 422),
        (r#"{"sampler_name": "Nope"}"#.into(), 404),
        (r#"{"scheduler": "exotic"}"#.into(), 404),
        (
            r#"{"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}"#.into(),
            404,
        ),
        (
            r#"{"override_settings": {"sd_model_checkpoint": "/abs/model.safetensors"}}"#.into(),
            404,
        ),
        (r#"{"prompt": "<lora:../../secret:1>"}"#.into(), 422),
        (
            r#"{"enable_hr": true, "hr_upscaler": "R-ESRGAN 4x+"}"#.into(),
            422,
        ),
        (r#"{"script_name": "x/y/z plot"}"#.into(), 422),
        (
            format!(
                r#"{{"init_images": ["{}"], "width": 64, "height": 64}}"#,
                "%%%%"
            ),
            422,
        ),
        (
            r#"{"init_images": ["aGVsbG8="], "width": 64, "height": 64}"#.into(),
            422,
        ),
        (r#"{"init_images": ["data:image/png;base64"]}"#.into(), 422),
        (
            r#"{"init_images": ["http://127.0.0.1:1/a.png"]}"#.into(),
            422,
        ),
        (format!(r#"{{"init_images": ["{big_png}"]}}"#), 422),
        (
            format!(r#"{{"init_images": ["{}"], "mask": "!!"}}"#, png(8, 8)),
            422,
        ),
        (r#"{"init_images": []}"#.into(), 404),
        (r#"{"prompt": "x"}"#.into(), 404),
    ];
    let mut count = 0;
    let mut send = |response: serve_support::Response, status: u16, what: &str| {
        assert_eq!(response.status, status, "{what}: {}", response.text());
        count += 1;
    };
    for _round in 0..6 {
        for (body, status) in &bodies {
            // Bodies with images, and the one without, go to img2img.
            let path = if body.contains("init_images") || body.contains(r#""prompt": "x""#) {
                "/sdapi/v1/img2img"
            } else {
                "/sdapi/v1/txt2img"
            };
            send(
                server.request("POST", path, &[], body.as_bytes()),
                *status,
                body,
            );
        }
        // Oversized body, no or wrong credentials, unknown route, wrong method.
        let huge = vec![b'x'; 300_000];
        send(
            server.request("POST", "/sdapi/v1/txt2img", &[], &huge),
            413,
            "oversized body",
        );
        send(
            raw_request(server.address, "GET", "/sdapi/v1/samplers", &[], b""),
            401,
            "no auth",
        );
        send(
            raw_request(
                server.address,
                "POST",
                "/sdapi/v1/txt2img",
                &[&basic_auth("user:wrong")],
                b"{}",
            ),
            401,
            "wrong password",
        );
        send(
            raw_request(
                server.address,
                "GET",
                "/internal/ping",
                &["Authorization: Basic !!"],
                b"",
            ),
            401,
            "bad auth header",
        );
        send(server.get("/sdapi/v1/no-such-route"), 404, "unknown route");
        send(server.get("/sdapi/v1/txt2img"), 405, "GET txt2img");
        send(
            server.post(
                "/sdapi/v1/options",
                r#"{"sd_model_checkpoint": "../tiny-sd"}"#,
            ),
            404,
            "options traversal",
        );
        send(
            server.post("/sdapi/v1/options", r#"{"samples_format": "jpg"}"#),
            422,
            "options jpg",
        );
        send(
            server.post("/sdapi/v1/options", r#"{"CLIP_stop_at_last_layers": -1}"#),
            422,
            "options clip skip",
        );
        send(
            server.post("/sdapi/v1/png-info", r#"{"image": "%%%"}"#),
            422,
            "png-info base64",
        );
        send(
            server.post("/sdapi/v1/png-info", r#"{"img": "x"}"#),
            422,
            "png-info field",
        );
    }
    assert!(count >= 200, "{count} malformed requests");
    assert_error(
        &server.post("/sdapi/v1/txt2img", r#"{"sampler_name": "Nope"}"#),
        404,
        "Sampler not found",
    );
    assert_error(
        &server.post("/sdapi/v1/img2img", "{}"),
        404,
        "Init image not found",
    );
    assert_error(
        &server.post("/sdapi/v1/txt2img", r#"{"steps": "many"}"#),
        422,
        "steps",
    );
    assert_error(
        &raw_request(server.address, "GET", "/sdapi/v1/options", &[], b""),
        401,
        "password",
    );
    let challenge = raw_request(server.address, "GET", "/metrics", &[], b"");
    assert!(
        challenge
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        challenge.head
    );

    // Still answering, and generating.
    let good = server.post(
        "/sdapi/v1/txt2img",
        r#"{"prompt": "ok", "steps": 1, "width": 64, "height": 64}"#,
    );
    assert_eq!(images_of(&good.ok()).len(), 1);
    println!("{count} malformed requests answered 4xx; the next good one 200");
}

#[test]
fn concurrent_requests_succeed_or_get_busy_and_match_their_seeds() {
    let server = Server::start(&["--model", &tiny(), "--max-queue", "8"]);
    let body = |seed: u64| {
        format!(
            r#"{{"prompt": "a fox", "seed": {seed}, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler a"}}"#
        )
    };
    // The reference: each seed's image, from a request of its own before the load.
    let reference: Vec<_> = (0..8)
        .map(|i| images_of(&server.post("/sdapi/v1/txt2img", &body(100 + i)).ok()).remove(0))
        .collect();
    let rss_after_first = server.rss();

    let started = Instant::now();
    let address = server.address;
    let answers: Vec<(u64, serve_support::Response)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32u64)
            .map(|i| {
                let body = body(100 + i % 8);
                scope.spawn(move || {
                    (
                        i % 8,
                        raw_request(address, "POST", "/sdapi/v1/txt2img", &[], body.as_bytes()),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let (mut ok, mut busy) = (0, 0);
    for (index, response) in &answers {
        match response.status {
            200 => {
                let what = format!("seed {}", 100 + index);
                assert_same_pixels(
                    &images_of(&response.json())[0],
                    &reference[*index as usize],
                    &what,
                );
                ok += 1;
            }
            503 => {
                assert!(
                    response.json()["detail"].as_str().unwrap().contains("busy"),
                    "{}",
                    response.text()
                );
                busy += 1;
            }
            other => panic!("status {other}: {}", response.text()),
        }
    }
    assert!(ok >= 9, "only {ok} succeeded");
    let rss_after = server.rss();
    let growth = rss_after as f64 / rss_after_first as f64;
    println!(
        "32 concurrent requests: {ok} ok, {busy} busy in {:.1} s; RSS {:.0} MiB after the first, {:.0} MiB after all ({growth:.3}×)",
        elapsed.as_secs_f64(),
        rss_after_first as f64 / (1 << 20) as f64,
        rss_after as f64 / (1 << 20) as f64
    );
    assert!(growth <= 1.10, "RSS grew {growth:.3}× over 32 requests");
    let metrics = server.get("/metrics").text();
    assert!(
        metrics.contains(&format!("sd_rejected_busy_total {busy}\n")),
        "{metrics}"
    );
}

/// A long job on the tiny model: 150 steps.
const LONG: &str = r#"{"prompt": "slow", "seed": 3, "steps": 150, "width": 64, "height": 64}"#;

/// Wait until the running job has done `steps` steps; returns the progress answer.
fn wait_for_step(server: &Server, steps: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let progress = server.get("/sdapi/v1/progress").ok();
        if progress["state"]["sampling_step"].as_u64().unwrap() >= steps {
            return progress;
        }
        assert!(Instant::now() < deadline, "no progress: {progress}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn progress_interrupt_disconnect_and_a_graceful_stop() {
    let server = Server::start(&["--model", &tiny()]);
    let address = server.address;

    // Progress with a preview, then interrupt: the job answers at once with its image so far.
    let long = std::thread::spawn(move || {
        raw_request(address, "POST", "/sdapi/v1/txt2img", &[], LONG.as_bytes())
    });
    let progress = wait_for_step(&server, 2);
    assert_eq!(progress["state"]["job_count"], 1);
    assert_eq!(progress["state"]["sampling_steps"], 150);
    let progress_value = progress["progress"].as_f64().unwrap();
    assert!(progress_value > 0.01 && progress_value < 0.5, "{progress}");
    let preview = base64::engine::general_purpose::STANDARD
        .decode(progress["current_image"].as_str().unwrap())
        .unwrap();
    let preview = stable_diffusion::image_file::decode_rgb(&preview, "preview", u64::MAX).unwrap();
    // One pixel per latent: the image's size over the VAE's factor.
    assert!(
        preview.width() < 64 && 64 % preview.width() == 0,
        "{}",
        preview.width()
    );
    assert_eq!(preview.width(), preview.height());
    assert_eq!(server.post("/sdapi/v1/interrupt", "").ok(), json!({}));
    let answer = long.join().unwrap().ok();
    assert_eq!(images_of(&answer).len(), 1);
    let idle = server.get("/sdapi/v1/progress").ok();
    assert_eq!(
        (
            idle["progress"].as_f64(),
            idle["state"]["job_count"].as_u64()
        ),
        (Some(0.0), Some(0))
    );
    assert!(
        server
            .get("/metrics")
            .text()
            .contains("sd_jobs_total{outcome=\"interrupted\"} 1\n")
    );

    // A client that leaves mid-generation: the job stops, the queue goes on.
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{LONG}",
            LONG.len()
        )
        .as_bytes(),
    )
    .unwrap();
    wait_for_step(&server, 1);
    drop(stream);
    let next = server.post(
        "/sdapi/v1/txt2img",
        r#"{"prompt": "next", "steps": 1, "width": 64, "height": 64}"#,
    );
    assert_eq!(images_of(&next.ok()).len(), 1);
    let metrics = server.get("/metrics").text();
    println!(
        "after a disconnect: {}",
        metrics.lines().find(|l| l.contains("abandoned")).unwrap()
    );

    // SIGTERM during a job: the job still answers, then the process ends cleanly.
    let long = std::thread::spawn(move || {
        raw_request(
            address,
            "POST",
            "/sdapi/v1/txt2img",
            &[],
            LONG.replace("150", "30").as_bytes(),
        )
    });
    wait_for_step(&server, 1);
    terminate(server.pid());
    let answer = long.join().unwrap();
    assert_eq!(images_of(&answer.ok()).len(), 1, "the running job finished");
    let log = std::sync::Arc::clone(&server.log);
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains(r#""event":"stopping""#) && log.contains(r#""event":"stopped""#),
        "{log}"
    );
}

#[test]
fn models_switch_by_options_and_override_and_lora_tags_match_the_cli() {
    let dir = scratch("models");
    let lora_dir = fixtures().join("lora").join("tiny-sd");
    let server = Server::start(&[
        "--models-dir",
        fixtures().to_str().unwrap(),
        "--lora-dir",
        lora_dir.to_str().unwrap(),
    ]);
    let models = server.get("/sdapi/v1/sd-models").ok();
    let titles: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["tiny-sd", "tiny-sd-alt"]);
    let loras = server.get("/sdapi/v1/loras").ok();
    assert!(
        loras
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "locon"),
        "{loras}"
    );

    let request = r#"{"prompt": "a fox", "seed": 9, "steps": 2, "width": 64, "height": 64}"#;
    let on_first = images_of(&server.post("/sdapi/v1/txt2img", request).ok());
    assert_eq!(
        server
            .post(
                "/sdapi/v1/options",
                r#"{"sd_model_checkpoint": "tiny-sd-alt"}"#
            )
            .status,
        200
    );
    assert_eq!(
        server.get("/sdapi/v1/options").ok()["sd_model_checkpoint"],
        "tiny-sd-alt"
    );
    let on_alt = server.post("/sdapi/v1/txt2img", request).ok();
    let info: Value = serde_json::from_str(on_alt["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["sd_model_name"], "tiny-sd-alt");
    let alt_reference = sd_generate(
        &dir,
        "alt",
        &small_txt2img(
            fixtures().join("tiny-sd-alt").to_str().unwrap(),
            "a fox",
            "9",
        ),
    );
    assert_same_pixels(
        &images_of(&on_alt)[0],
        &read_rgb(&alt_reference).unwrap(),
        "tiny-sd-alt",
    );
    // override_settings picks the model for one request.
    let back = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a fox", "seed": 9, "steps": 2, "width": 64, "height": 64,
                "override_settings": {"sd_model_checkpoint": "tiny-sd [0123456789]"}}"#,
        )
        .ok();
    assert_eq!(images_of(&back), on_first);

    // A LoRA tag, as `sd generate --lora-dir` reads it.
    let tagged = r#"{"prompt": "a fox <lora:locon:0.8>", "seed": 9, "steps": 2, "width": 64, "height": 64,
                    "override_settings": {"sd_model_checkpoint": "tiny-sd"}}"#;
    let with_lora = server.post("/sdapi/v1/txt2img", tagged).ok();
    let reference = sd_generate(
        &dir,
        "lora",
        &[
            small_txt2img(&tiny(), "a fox <lora:locon:0.8>", "9"),
            vec!["--lora-dir", lora_dir.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_same_pixels(
        &images_of(&with_lora)[0],
        &read_rgb(&reference).unwrap(),
        "LoRA tag",
    );
    assert_ne!(images_of(&with_lora), on_first);
    let info: Value = serde_json::from_str(with_lora["info"].as_str().unwrap()).unwrap();
    assert!(
        info["infotexts"][0]
            .as_str()
            .unwrap()
            .contains("Lora hashes: \"locon: "),
        "{info}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A1111's SDE samplers by name through the API: each image's Brownian-tree noise is seeded
/// with its own seed, so a batch of two gives `sd generate --batch 2`'s pixels, and the
/// infotext names sampler and schedule type as A1111 does.
#[test]
fn sde_sampler_by_a1111_name_gives_sd_generates_pixels() {
    let dir = scratch("sde");
    let server = Server::start(&["--model", &tiny()]);
    let answer = server
        .post(
            "/sdapi/v1/txt2img",
            r#"{"prompt": "a fox", "seed": 21, "steps": 3, "cfg_scale": 7, "width": 64,
                "height": 64, "batch_size": 2, "sampler_name": "DPM++ 2M SDE",
                "scheduler": "karras"}"#,
        )
        .ok();
    let model = tiny();
    let mut args = small_generate(&model, "a fox", "21", "3", "DPM++ 2M SDE Karras");
    args.extend(["--batch", "2"]);
    let reference = sd_generate(&dir, "sde", &args);
    for (index, served) in images_of(&answer).iter().enumerate() {
        let path = reference.with_file_name(format!("sde-{}.png", index + 1));
        assert_same_pixels(served, &read_rgb(&path).unwrap(), &format!("image {index}"));
    }
    let info: Value = serde_json::from_str(answer["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][1].as_str().unwrap();
    assert!(
        infotext.contains("Sampler: DPM++ 2M SDE, Schedule type: Karras, "),
        "{infotext}"
    );
}

/// `sd serve --scheduler-config KEY=VALUE` changes the scheduler config of requests that name a
/// diffusers class, as `sd generate --scheduler-config` does; A1111's sampler names run as
/// without it.
#[test]
fn server_wide_scheduler_config_applies_to_diffusers_classes_only() {
    let dir = scratch("scheduler_config");
    let overrides = [
        "use_karras_sigmas=true",
        "beta_end=0.013",
        "noise_sampler_seed=7",
    ];
    let mut serve_args = vec!["--model".to_string(), tiny()];
    for o in overrides {
        serve_args.extend(["--scheduler-config".to_string(), o.to_string()]);
    }
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let server = Server::start(&serve_args);
    let model = tiny();
    let model = model.as_str();
    for (sampler, overridden) in [("DPMSolverSDEScheduler", true), ("DPM++ 2M", false)] {
        let body = json!({"prompt": "a fox", "seed": 21, "steps": 3, "cfg_scale": 7,
            "width": 64, "height": 64, "sampler_name": sampler});
        let answer = server.post("/sdapi/v1/txt2img", &body.to_string()).ok();
        let served = &images_of(&answer)[0];
        let mut args = small_generate(model, "a fox", "21", "3", sampler);
        let plain = sd_generate(&dir, &format!("{sampler}-plain"), &args);
        if overridden {
            for o in overrides {
                args.extend(["--scheduler-config", o]);
            }
            let reference = sd_generate(&dir, &format!("{sampler}-overridden"), &args);
            assert_same_pixels(served, &read_rgb(&reference).unwrap(), sampler);
            assert_ne!(
                served.pixels(),
                read_rgb(&plain).unwrap().pixels(),
                "{sampler}: the overrides change the image"
            );
        } else {
            assert_same_pixels(served, &read_rgb(&plain).unwrap(), sampler);
        }
    }
}

/// A bad `--scheduler-config` stops `sd serve` before it loads the model, naming it.
#[test]
fn a_bad_server_scheduler_config_fails_at_startup_naming_it() {
    for (arg, needles) in [
        (
            "use_karas_sigmas=true",
            &["use_karas_sigmas=true", "unknown key"][..],
        ),
        ("noise_sampler_seed=-3", &["noise_sampler_seed=-3"][..]),
        ("solver_order", &["solver_order", "KEY=VALUE"][..]),
    ] {
        let run = std::process::Command::new(serve_support::sd_bin())
            .args(["serve", "--model", &tiny(), "--listen", "127.0.0.1:0"])
            .args(["--scheduler-config", arg])
            .output()
            .unwrap();
        assert!(!run.status.success(), "{arg}: sd serve started");
        let stderr = String::from_utf8_lossy(&run.stderr);
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{arg}: `{needle}` missing from {stderr}"
            );
        }
        assert!(!stderr.contains("listening"), "{arg}: {stderr}");
    }
}
