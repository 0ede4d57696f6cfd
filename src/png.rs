//! PNG files: generated images with an AUTOMATIC1111-style `parameters` text chunk, init images
//! and masks in, and the text chunks of any PNG back out.
//!
//! Pixels are read as PIL's `convert("RGB")` / `convert("L")` give them: palettes expanded,
//! 16-bit samples cut to 8, alpha dropped, grey replicated to RGB, RGB to grey by PIL's luma.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use png::{BitDepth, ColorType, Decoder, Encoder, Transformations};
use sd_core::pipeline::{GrayImage, RgbImage};
use sd_core::{Error, Result};

/// The text chunk keyword A1111 (and tools that read its images) use for generation parameters.
pub const PARAMETERS_KEY: &str = "parameters";

/// The longest text a compressed chunk may inflate to (A1111's parameters are a few KB).
pub const MAX_TEXT_CHUNK_BYTES: usize = 1 << 20;

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn not_png(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::invalid_argument(
        path.display().to_string(),
        format!("not a readable PNG image: {reason}"),
    )
}

/// Write `image` as an 8-bit RGB PNG, with `parameters` as its `parameters` text chunk
/// (tEXt when the text is Latin-1, else UTF-8 iTXt, as PIL chooses).
pub fn write_png(path: impl AsRef<Path>, image: &RgbImage, parameters: Option<&str>) -> Result<()> {
    let path = path.as_ref();
    // Encoded in memory, then written in one go beside the target and renamed over it: a full
    // disk or a crash leaves the previous file whole, never a truncated PNG.
    let bytes = encode_png(path, image, parameters)?;
    crate::output::write_atomically(path, &bytes)
}

/// The PNG file of `image` (and its `parameters` chunk); `path` names it in errors.
fn encode_png(path: &Path, image: &RgbImage, parameters: Option<&str>) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let side = |n: usize, what: &str| {
        u32::try_from(n)
            .map_err(|_| Error::invalid_argument(what, format!("{n} pixels is too large for PNG")))
    };
    let mut encoder = Encoder::new(
        &mut bytes,
        side(image.width(), "width")?,
        side(image.height(), "height")?,
    );
    encoder.set_color(ColorType::Rgb);
    encoder.set_depth(BitDepth::Eight);
    let encoding = |e: png::EncodingError| match e {
        png::EncodingError::IoError(source) => io_error(path, source),
        other => Error::invalid_argument(
            path.display().to_string(),
            format!("cannot write PNG: {other}"),
        ),
    };
    if let Some(text) = parameters {
        let key = PARAMETERS_KEY.to_string();
        if text.chars().all(|c| u32::from(c) < 256) {
            encoder
                .add_text_chunk(key, text.to_string())
                .map_err(encoding)?;
        } else {
            encoder
                .add_itxt_chunk(key, text.to_string())
                .map_err(encoding)?;
        }
    }
    let mut writer = encoder.write_header().map_err(encoding)?;
    writer.write_image_data(image.pixels()).map_err(encoding)?;
    writer.finish().map_err(encoding)?;
    Ok(bytes)
}

/// Decoded 8-bit pixels, their colour type and the size.
struct Decoded {
    width: usize,
    height: usize,
    color: ColorType,
    pixels: Vec<u8>,
}

fn decode(path: &Path) -> Result<Decoded> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut decoder = Decoder::new(BufReader::new(file));
    decoder.set_transformations(Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| not_png(path, e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| not_png(path, "image too large"))?;
    let mut pixels = vec![0; size];
    let frame = reader
        .next_frame(&mut pixels)
        .map_err(|e| not_png(path, e))?;
    pixels.truncate(frame.buffer_size());
    Ok(Decoded {
        width: frame.width as usize,
        height: frame.height as usize,
        color: frame.color_type,
        pixels,
    })
}

/// An init image: any PNG, as RGB.
pub fn read_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let d = decode(path)?;
    let pixels: Vec<u8> = match d.color {
        ColorType::Rgb => d.pixels,
        ColorType::Rgba => d
            .pixels
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        ColorType::Grayscale => d.pixels.iter().flat_map(|&g| [g, g, g]).collect(),
        ColorType::GrayscaleAlpha => d
            .pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        ColorType::Indexed => return Err(not_png(path, "palette was not expanded")),
    };
    RgbImage::new(d.width, d.height, pixels).map_err(|e| not_png(path, e))
}

/// A mask: any PNG, as greyscale (white repaints).
pub fn read_gray(path: impl AsRef<Path>) -> Result<GrayImage> {
    let path = path.as_ref();
    let d = decode(path)?;
    match d.color {
        ColorType::Grayscale => GrayImage::new(d.width, d.height, d.pixels),
        ColorType::GrayscaleAlpha => GrayImage::new(
            d.width,
            d.height,
            d.pixels.iter().step_by(2).copied().collect(),
        ),
        ColorType::Rgb | ColorType::Rgba => return Ok(GrayImage::from_rgb(&read_rgb(path)?)),
        ColorType::Indexed => return Err(not_png(path, "palette was not expanded")),
    }
    .map_err(|e| not_png(path, e))
}

/// All text chunks of a PNG (tEXt, zTXt and iTXt), keyword and text, in file order per kind.
pub fn read_text_chunks(path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(|e| not_png(path, e))?;
    // Text chunks may follow the image data: read through to the end.
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| not_png(path, "image too large"))?;
    let mut pixels = vec![0; size];
    reader
        .next_frame(&mut pixels)
        .map_err(|e| not_png(path, e))?;
    reader.finish().map_err(|e| not_png(path, e))?;
    let info = reader.info();
    let mut chunks: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    // Compressed chunks are inflated with a cap: a few KB of zTXt can inflate to gigabytes.
    chunks.extend(inflate_all(&info.compressed_latin1_text, path)?);
    chunks.extend(inflate_all(&info.utf8_text, path)?);
    Ok(chunks)
}

/// A zTXt or iTXt chunk (either may be compressed), for [`inflate_all`].
trait TextChunk: Clone {
    fn keyword(&self) -> &str;
    /// The text, inflated to at most `limit` bytes.
    fn text_within(self, limit: usize) -> std::result::Result<String, png::DecodingError>;
}

impl TextChunk for png::text_metadata::ZTXtChunk {
    fn keyword(&self) -> &str {
        &self.keyword
    }
    fn text_within(mut self, limit: usize) -> std::result::Result<String, png::DecodingError> {
        self.decompress_text_with_limit(limit)?;
        self.get_text()
    }
}

impl TextChunk for png::text_metadata::ITXtChunk {
    fn keyword(&self) -> &str {
        &self.keyword
    }
    fn text_within(mut self, limit: usize) -> std::result::Result<String, png::DecodingError> {
        self.decompress_text_with_limit(limit)?;
        self.get_text()
    }
}

/// (keyword, text) of each chunk, each inflated to at most [`MAX_TEXT_CHUNK_BYTES`].
fn inflate_all<C: TextChunk>(chunks: &[C], path: &Path) -> Result<Vec<(String, String)>> {
    chunks
        .iter()
        .map(|chunk| {
            let keyword = chunk.keyword().to_string();
            match chunk.clone().text_within(MAX_TEXT_CHUNK_BYTES) {
                Ok(text) => Ok((keyword, text)),
                Err(e) => Err(not_png(
                    path,
                    format!(
                        "text chunk `{keyword}` does not inflate to valid text within \
                         {MAX_TEXT_CHUNK_BYTES} bytes: {e}"
                    ),
                )),
            }
        })
        .collect()
}

/// The `parameters` text of a PNG, or `None` when it has none.
pub fn read_parameters(path: impl AsRef<Path>) -> Result<Option<String>> {
    Ok(read_text_chunks(path)?
        .into_iter()
        .find(|(key, _)| key == PARAMETERS_KEY)
        .map(|(_, text)| text))
}
