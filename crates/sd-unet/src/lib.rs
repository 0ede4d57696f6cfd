//! UNet2DConditionModel (the SD 1.5 denoiser) over any sd-core Backend (issue 4: not yet implemented).
