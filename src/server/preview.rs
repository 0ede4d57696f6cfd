//! `GET progress`'s `current_image`: the running job's latents through the same
//! [`Previewer`] as `sd generate --preview` (the cheap linear approximation by default, TAESD with
//! `sd serve --preview taesd:PATH`).
//!
//! A preview is rendered when a client asks for one, not at every step (a TAESD decode at 512²
//! takes a while on a CPU), and kept until the next step: clients polling between two steps
//! get the same image without another render.

use std::sync::Mutex;

use sd_core::pipeline::RgbImage;
use sd_core::{Backend, HostTensor, Result};

use super::worker::BackendFactory;
use crate::png::png_bytes;
use crate::preview::{PreviewMethod, Previewer};

/// Renders image 0 of a batch's latents.
type Render = Box<dyn Fn(&HostTensor) -> Result<RgbImage> + Send + Sync>;

/// The server's preview method, loaded, and its last image.
pub struct LivePreview {
    method: PreviewMethod,
    render: Render,
    /// The progress stamp of the last rendered latents and their base64 PNG.
    last: Mutex<Option<(u64, String)>>,
}

impl LivePreview {
    /// Load `method` on a backend of its own from `make_backend` (TAESD's weights live there;
    /// the worker's model is busy generating).
    pub fn load<B: Backend + 'static>(
        make_backend: &BackendFactory<B>,
        method: &PreviewMethod,
    ) -> Result<Self> {
        let backend = make_backend()?;
        let previewer = Previewer::load(&backend, method)?;
        Ok(LivePreview {
            method: method.clone(),
            render: Box::new(move |latents: &HostTensor| previewer.render(&backend, latents, 0)),
            last: Mutex::new(None),
        })
    }

    /// The base64 PNG of `latents`, which progress stamped `stamp`; `None` when rendering
    /// failed (A1111 then answers `current_image: null` too).
    pub fn current_image(&self, stamp: u64, latents: &HostTensor) -> Option<String> {
        // Held while rendering: a second poller waits for this render instead of starting one.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, image)) = last.as_ref()
            && *seen == stamp
        {
            return Some(image.clone());
        }
        let image = (self.render)(latents).ok()?;
        let encoded = super::routes::base64_of(&png_bytes(&image, None).ok()?);
        *last = Some((stamp, encoded.clone()));
        Some(encoded)
    }
}

impl std::fmt::Debug for LivePreview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePreview")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap what they built themselves
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_step_is_rendered_once_however_often_it_is_polled() {
        let renders = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&renders);
        let preview = LivePreview {
            method: PreviewMethod::Approx,
            render: Box::new(move |latents: &HostTensor| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(sd_core::pipeline::preview(latents, 0).unwrap())
            }),
            last: Mutex::new(None),
        };
        let latents = HostTensor::zeros(vec![1, 4, 2, 2]);
        let first = preview.current_image(1, &latents).unwrap();
        assert_eq!(preview.current_image(1, &latents).unwrap(), first);
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        preview.current_image(2, &latents).unwrap();
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }
}
