//! diffusers' `Downsample2D` and `Upsample2D` (both with a convolution).

use crate::weights::Weights;
use crate::{Backend, Conv2dParams, Error, HostTensor, Result, TensorInfo};

use super::Conv2d;

/// A 3×3 stride-2 convolution halving the spatial size.
///
/// With `padding` > 0 (the UNet's `downsample_padding: 1`) the conv pads symmetrically. With
/// `padding` 0 (the VAE encoder) diffusers pads one zero row at the bottom and one zero column
/// on the right first, so an even side `s` still gives `s / 2`.
#[derive(Debug)]
pub struct Downsample2D<B: Backend> {
    conv: Conv2d<B>,
    pad_bottom_right: bool,
}

impl<B: Backend> Downsample2D<B> {
    /// `weights` is the `downsamplers.0` scope (the conv is its `conv`).
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        channels: usize,
        out_channels: usize,
        padding: usize,
    ) -> Result<Self> {
        let params = Conv2dParams { stride: 2, padding };
        Ok(Downsample2D {
            conv: Conv2d::load(
                backend,
                &weights.at("conv"),
                channels,
                out_channels,
                3,
                params,
            )?,
            pad_bottom_right: padding == 0,
        })
    }

    /// `[n, c, h, w]` → `[n, out, ⌈h/2⌉, ⌈w/2⌉]` (exactly half for even sides).
    pub fn forward(&self, backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        if self.pad_bottom_right {
            let padded = pad_bottom_right(backend, x)?;
            self.conv.forward(backend, &padded)
        } else {
            self.conv.forward(backend, x)
        }
    }
}

/// One zero column on the right, then one zero row at the bottom (`F.pad(x, (0, 1, 0, 1))`),
/// composed from `concat` so the backend needs no padding op.
fn pad_bottom_right<B: Backend>(backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
    let &[n, c, h, w] = x.shape() else {
        return Err(crate::Error::shape(
            "pad_bottom_right",
            format!("expected [n, c, h, w], found {:?}", x.shape()),
        ));
    };
    let column = backend.upload(&HostTensor::zeros(vec![n, c, h, 1]))?;
    let wider = backend.concat(&[x, &column], 3)?;
    drop(column);
    let row = backend.upload(&HostTensor::zeros(vec![n, c, 1, w + 1]))?;
    backend.concat(&[&wider, &row], 2)
}

/// Nearest-neighbour 2× upsampling followed by a 3×3 convolution.
#[derive(Debug)]
pub struct Upsample2D<B: Backend> {
    conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    /// `weights` is the `upsamplers.0` scope (the conv is its `conv`).
    pub fn load(
        backend: &B,
        weights: &Weights<'_>,
        channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        Ok(Upsample2D {
            conv: Conv2d::load_same(backend, &weights.at("conv"), channels, out_channels, 3)?,
        })
    }

    /// `[n, c, h, w]` → `[n, out, 2h, 2w]`, or `[n, out, th, tw]` when `target` (at most 2h × 2w)
    /// is given: the UNet asks for the size of the skip it joins next, as diffusers' `upsample_size`
    /// does for odd latent sides. Nearest interpolation from n to 2n − 1 picks source row
    /// ⌊i·n/(2n−1)⌋ = ⌊i/2⌋ for every i < 2n − 1, so cropping the 2× result is exact.
    pub fn forward(
        &self,
        backend: &B,
        x: &B::Tensor,
        target: Option<(usize, usize)>,
    ) -> Result<B::Tensor> {
        let mut up = backend.upsample_nearest2x(x)?;
        if let Some((th, tw)) = target {
            let (h2, w2) = (up.shape()[2], up.shape()[3]);
            if th > h2 || tw > w2 || h2 - th > 1 || w2 - tw > 1 {
                return Err(Error::shape(
                    "upsample",
                    format!("cannot reach {th}×{tw} from {h2}×{w2} by cropping one row/column"),
                ));
            }
            if th < h2 {
                up = backend.narrow(&up, 2, 0, th)?;
            }
            if tw < w2 {
                up = backend.narrow(&up, 3, 0, tw)?;
            }
        }
        self.conv.forward(backend, &up)
    }
}
