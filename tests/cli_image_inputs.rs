//! `sd generate` with init images and masks in PNG, JPEG and WebP, stretched to the requested
//! size (A1111's resize mode 0), and pictures whose header claims too many pixels.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sd_testkit::AUTO_MEANS_F32;
use stable_diffusion::RgbImage;
use stable_diffusion::image_file::read_rgb;

fn sd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sd"))
        .args(args)
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-cli-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gradient(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 8 % 256) as u8, (y * 8 % 256) as u8, 128])
    })
}

/// PNGs through the library's writer (the `image` crate is built for JPEG and WebP only).
fn save(image: &image::RgbImage, path: &Path, format: image::ImageFormat) {
    if format == image::ImageFormat::Png {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let ours = RgbImage::new(w, h, image.as_raw().clone()).unwrap();
        stable_diffusion::png::write_png(path, &ours, None).unwrap();
        return;
    }
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    std::fs::write(path, bytes.into_inner()).unwrap();
}

/// img2img at 64×64 from `init` (and `mask`), 2 steps; the image it writes.
fn img2img(dir: &Path, name: &str, init: &Path, mask: Option<&Path>) -> RgbImage {
    let out = dir.join(format!("{name}.png"));
    let mut args = vec![
        "generate",
        "--quiet",
        "--prompt",
        "a lighthouse",
        "--seed",
        "3",
        "--steps",
        "2",
        "-W",
        "64",
        "-H",
        "64",
        "--strength",
        "0.5",
        "--init-image",
        init.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    if let Some(mask) = mask {
        args.extend(["--mask", mask.to_str().unwrap()]);
    }
    let run = sd(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    read_rgb(&out).unwrap()
}

#[test]
fn webp_and_jpeg_init_images_work_and_are_stretched_to_the_requested_size() {
    let dir = scratch("formats");
    let init = gradient(32, 32);
    let mask =
        image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([if x < 16 { 255 } else { 0 }; 3]));
    let paths: Vec<PathBuf> = [
        ("init.png", image::ImageFormat::Png),
        ("init.webp", image::ImageFormat::WebP),
        ("init.jpg", image::ImageFormat::Jpeg),
    ]
    .iter()
    .map(|(name, format)| {
        let path = dir.join(name);
        save(&init, &path, *format);
        path
    })
    .collect();
    let mask_webp = dir.join("mask.webp");
    save(&mask, &mask_webp, image::ImageFormat::WebP);
    let mask_png = dir.join("mask.png");
    save(&mask, &mask_png, image::ImageFormat::Png);

    let from_png = img2img(&dir, "png", &paths[0], Some(&mask_png));
    assert_eq!(
        (from_png.width(), from_png.height()),
        (64, 64),
        "the 32×32 init was stretched"
    );
    // Lossless WebP holds the same pixels as the PNG: the same image comes out.
    let from_webp = img2img(&dir, "webp", &paths[1], Some(&mask_webp));
    assert_eq!(from_webp, from_png);
    let from_jpeg = img2img(&dir, "jpeg", &paths[2], None);
    assert_eq!((from_jpeg.width(), from_jpeg.height()), (64, 64));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_or_oversized_init_images_fail_with_one_line_naming_the_file() {
    let dir = scratch("bad");
    let text = dir.join("notes.png");
    std::fs::write(&text, "not a picture").unwrap();
    // 5000×5000 (25 M pixels, over the 16.7 M limit): refused from the header.
    let huge = dir.join("huge.png");
    save(
        &image::RgbImage::new(5000, 5000),
        &huge,
        image::ImageFormat::Png,
    );
    for (path, needle) in [(&text, "no PNG, JPEG or WebP"), (&huge, "5000×5000")] {
        let run = sd(&[
            "generate",
            "--prompt",
            "x",
            "--steps",
            "1",
            "--init-image",
            path.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        let line = err
            .lines()
            .find(|l| l.starts_with("sd: error"))
            .unwrap_or_default();
        assert!(
            line.contains(path.to_str().unwrap()) && line.contains(needle),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
