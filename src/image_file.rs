//! Init images and masks as users hand them over: PNG, JPEG or WebP bytes (a file, or a request
//! body), with the picture's size checked against a pixel limit from its header, before any
//! pixel is decoded; and A1111's `resize_mode` 0 (stretch to the requested size).
//!
//! PNGs go through [`crate::png`] (read as PIL reads them: 16-bit samples cut to 8, alpha
//! dropped); JPEG and WebP through the `image` crate. Masks become greyscale by PIL's luma.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, imageops};
use sd_core::pipeline::{GrayImage, RgbImage};
use sd_core::{Error, Result};

use crate::png::check_pixel_count;

/// The most pixels an init image or mask may have unless the caller says otherwise: 64 MiB of
/// RGB, far past any picture SD 1.5 works at (`sd serve --max-image-pixels` changes it).
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 4096;

/// The formats read, by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    WebP,
}

fn sniff(bytes: &[u8]) -> Option<Format> {
    match image::guess_format(bytes).ok()? {
        ImageFormat::Png => Some(Format::Png),
        ImageFormat::Jpeg => Some(Format::Jpeg),
        ImageFormat::WebP => Some(Format::WebP),
        _ => None,
    }
}

/// An error naming `what` (a file or a request field) and why its bytes are not a picture.
fn unreadable(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::invalid_argument(
        what,
        format!("not a readable PNG, JPEG or WebP image: {reason}"),
    )
}

/// A JPEG or WebP picture, its size checked before decoding.
fn decode_other(
    bytes: &[u8],
    format: Format,
    max_pixels: u64,
) -> std::result::Result<DynamicImage, String> {
    let format = match format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::WebP => ImageFormat::WebP,
        Format::Png => ImageFormat::Png,
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The decoder's own allocation cap as a second line: 8 bytes per allowed pixel covers RGBA
    // and the decoders' working rows.
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions();
    check_pixel_count(u64::from(width), u64::from(height), max_pixels)?;
    DynamicImage::from_decoder(decoder).map_err(|e| e.to_string())
}

/// The picture in `bytes` (PNG, JPEG or WebP) as RGB; `what` names its source in errors.
pub fn decode_rgb(bytes: &[u8], what: &str, max_pixels: u64) -> Result<RgbImage> {
    let decoded = match sniff(bytes) {
        Some(Format::Png) => crate::png::decode_rgb(bytes, max_pixels),
        Some(format) => decode_other(bytes, format, max_pixels).and_then(|image| {
            let rgb = image.to_rgb8();
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            RgbImage::new(w, h, rgb.into_raw()).map_err(|e| e.to_string())
        }),
        None => Err(unknown_format(bytes)),
    };
    decoded.map_err(|reason| unreadable(what, reason))
}

/// The picture in `bytes` as greyscale (a mask: white repaints).
pub fn decode_gray(bytes: &[u8], what: &str, max_pixels: u64) -> Result<GrayImage> {
    let decoded = match sniff(bytes) {
        Some(Format::Png) => crate::png::decode_gray(bytes, max_pixels),
        Some(format) => decode_other(bytes, format, max_pixels).and_then(|image| match image {
            DynamicImage::ImageLuma8(gray) => {
                let (w, h) = (gray.width() as usize, gray.height() as usize);
                GrayImage::new(w, h, gray.into_raw()).map_err(|e| e.to_string())
            }
            other => {
                let rgb = other.to_rgb8();
                let (w, h) = (rgb.width() as usize, rgb.height() as usize);
                RgbImage::new(w, h, rgb.into_raw())
                    .map(|rgb| GrayImage::from_rgb(&rgb))
                    .map_err(|e| e.to_string())
            }
        }),
        None => Err(unknown_format(bytes)),
    };
    decoded.map_err(|reason| unreadable(what, reason))
}

fn unknown_format(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "its first bytes ({}) are no PNG, JPEG or WebP signature",
        head.join(" ")
    )
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// An init image file (PNG, JPEG or WebP) as RGB, at most [`DEFAULT_MAX_PIXELS`].
pub fn read_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    decode_rgb(
        &read(path)?,
        &path.display().to_string(),
        DEFAULT_MAX_PIXELS,
    )
}

/// A mask file (PNG, JPEG or WebP) as greyscale, at most [`DEFAULT_MAX_PIXELS`].
pub fn read_gray(path: impl AsRef<Path>) -> Result<GrayImage> {
    let path = path.as_ref();
    decode_gray(
        &read(path)?,
        &path.display().to_string(),
        DEFAULT_MAX_PIXELS,
    )
}

/// A1111's `resize_mode` 0: `image` stretched to `width`×`height` (Lanczos, as A1111 resizes
/// with PIL), unchanged when it already has that size.
pub fn resize_rgb(image: RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    if (image.width(), image.height()) == (width, height) {
        return Ok(image);
    }
    let (w, h) = (side(image.width())?, side(image.height())?);
    let buffer = image::RgbImage::from_raw(w, h, image.into_pixels())
        .ok_or_else(|| Error::invalid_argument("image", "pixels do not fit the size"))?;
    let resized = imageops::resize(
        &buffer,
        side(width)?,
        side(height)?,
        imageops::FilterType::Lanczos3,
    );
    RgbImage::new(width, height, resized.into_raw())
}

/// [`resize_rgb`] for a mask.
pub fn resize_gray(mask: GrayImage, width: usize, height: usize) -> Result<GrayImage> {
    if (mask.width(), mask.height()) == (width, height) {
        return Ok(mask);
    }
    let (w, h) = (side(mask.width())?, side(mask.height())?);
    let buffer = image::GrayImage::from_raw(w, h, mask.pixels().to_vec())
        .ok_or_else(|| Error::invalid_argument("mask", "pixels do not fit the size"))?;
    let resized = imageops::resize(
        &buffer,
        side(width)?,
        side(height)?,
        imageops::FilterType::Lanczos3,
    );
    GrayImage::new(width, height, resized.into_raw())
}

/// An init image (and mask) at the size a request asks for, A1111's `resize_mode` 0: the image
/// is stretched to `width`×`height` (a side not given keeps the image's), the mask to the
/// image's final size.
pub fn fit_init(
    image: RgbImage,
    mask: Option<GrayImage>,
    width: Option<usize>,
    height: Option<usize>,
) -> Result<(RgbImage, Option<GrayImage>)> {
    let width = width.unwrap_or(image.width());
    let height = height.unwrap_or(image.height());
    let image = resize_rgb(image, width, height)?;
    let mask = mask.map(|m| resize_gray(m, width, height)).transpose()?;
    Ok((image, mask))
}

fn side(n: usize) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| Error::invalid_argument("size", format!("{n} pixels is too large")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> RgbImage {
        let pixels = (0..width * height * 3)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        RgbImage::new(width, height, pixels).unwrap()
    }

    fn encoded(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let buffer = image::RgbImage::from_raw(
            image.width() as u32,
            image.height() as u32,
            image.pixels().to_vec(),
        )
        .unwrap();
        let mut bytes = Cursor::new(Vec::new());
        buffer.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn png_round_trips_exactly() {
        let image = gradient(24, 16);
        let bytes = crate::png::png_bytes(&image, Some("x")).unwrap();
        assert_eq!(
            decode_rgb(&bytes, "init", DEFAULT_MAX_PIXELS).unwrap(),
            image
        );
        let gray = decode_gray(&bytes, "mask", DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(gray, GrayImage::from_rgb(&image));
    }

    #[test]
    fn lossless_webp_round_trips_exactly() {
        let image = gradient(24, 16);
        let bytes = encoded(&image, ImageFormat::WebP);
        assert_eq!(
            decode_rgb(&bytes, "init", DEFAULT_MAX_PIXELS).unwrap(),
            image
        );
    }

    #[test]
    fn jpeg_decodes_close_to_the_original() {
        // A flat colour survives JPEG's quantisation within a few levels.
        let image = RgbImage::new(16, 16, [200u8, 40, 90].repeat(256)).unwrap();
        let bytes = encoded(&image, ImageFormat::Jpeg);
        let decoded = decode_rgb(&bytes, "init", DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (16, 16));
        let worst = decoded
            .pixels()
            .iter()
            .zip(image.pixels())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 4, "JPEG off by {worst}");
    }

    /// A tiny file whose header claims a huge picture is refused before decoding, in every
    /// format, naming the field and both sizes.
    #[test]
    fn a_picture_over_the_pixel_limit_is_refused_before_decoding() {
        let image = gradient(64, 64);
        for bytes in [
            crate::png::png_bytes(&image, None).unwrap(),
            encoded(&image, ImageFormat::Jpeg),
            encoded(&image, ImageFormat::WebP),
        ] {
            let err = decode_rgb(&bytes, "init_images[0]", 64 * 63)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("init_images[0]") && err.contains("64×64") && err.contains("4032"),
                "{err}"
            );
            assert!(decode_gray(&bytes, "mask", 64 * 63).is_err());
        }
        // A 70-byte PNG whose header claims 100000×100000 pixels.
        let bomb = png_claiming(100_000, 100_000);
        assert!(bomb.len() < 100);
        let err = decode_rgb(&bomb, "init", DEFAULT_MAX_PIXELS)
            .unwrap_err()
            .to_string();
        assert!(err.contains("100000×100000"), "{err}");
    }

    /// Signature, an IHDR for an 8-bit RGB picture of `width`×`height`, and one empty IDAT.
    fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend((data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend(kind);
            out.extend(data);
            let crc = crc32(&out[start..]);
            out.extend(crc.to_be_bytes());
        }
        let mut ihdr = Vec::new();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        out
    }

    /// PNG's CRC-32 (ISO 3309, reflected polynomial 0xEDB88320), bit by bit.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn bytes_that_are_no_picture_are_refused_by_name() {
        for bytes in [
            &b""[..],
            b"hello world",
            b"\x89PNG\r\n\x1a\n broken",
            b"\xff\xd8\xff broken",
        ] {
            let err = decode_rgb(bytes, "init_images[0]", DEFAULT_MAX_PIXELS).unwrap_err();
            assert!(err.to_string().contains("init_images[0]"), "{err}");
            assert!(decode_gray(bytes, "mask", DEFAULT_MAX_PIXELS).is_err());
        }
    }

    #[test]
    fn resize_mode_0_stretches_to_the_requested_size() {
        let image = gradient(30, 20);
        let resized = resize_rgb(image.clone(), 64, 48).unwrap();
        assert_eq!((resized.width(), resized.height()), (64, 48));
        assert_eq!(resize_rgb(image.clone(), 30, 20).unwrap(), image);
        let flat = GrayImage::new(30, 20, vec![255; 600]).unwrap();
        let mask = resize_gray(flat.clone(), 16, 8).unwrap();
        assert!(mask.pixels().iter().all(|&p| p == 255));
        // A side not given keeps the image's; the mask follows the image.
        let (image, mask) = fit_init(image, Some(flat), Some(64), None).unwrap();
        assert_eq!((image.width(), image.height()), (64, 20));
        let mask = mask.unwrap();
        assert_eq!((mask.width(), mask.height()), (64, 20));
    }
}
