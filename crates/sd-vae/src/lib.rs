//! AutoencoderKL (the SD 1.5 latent codec) over any sd-core Backend, with tiled decode (issue 4: not yet implemented).
