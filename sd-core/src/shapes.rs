//! Shape checks and output shapes of the backend ops, written once for every backend.
//!
//! Each function takes plain shapes (`&[usize]`), checks them the way the [`Backend`] op of the
//! same name documents, and returns the sizes the op's kernels need, or an [`Error::Shape`]
//! naming the op. The CPU backend and sd-cuda both call these, so a bad input is rejected with
//! the same message whichever backend runs it.
//!
//! [`Backend`]: crate::Backend

use crate::backend::Conv2dParams;
use crate::error::{Error, Result};

/// The shape of `shape` permuted by `axes` (output dim `i` is input dim `axes[i]`).
pub fn permute_shape(shape: &[usize], axes: &[usize]) -> Result<Vec<usize>> {
    let mut seen = vec![false; shape.len()];
    let is_permutation = axes.len() == shape.len()
        && axes
            .iter()
            .all(|&a| a < seen.len() && !std::mem::replace(&mut seen[a], true));
    if !is_permutation {
        return Err(Error::shape(
            "permute",
            format!(
                "axes {axes:?} are not a permutation of the {} dims of {shape:?}",
                shape.len()
            ),
        ));
    }
    Ok(axes.iter().map(|&a| shape[a]).collect())
}

/// The sizes of a narrow along one axis, seen as `[outer, dim, inner]` → `[outer, len, inner]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrowDims {
    /// Product of the dims before the axis.
    pub outer: usize,
    /// The axis' size in the input.
    pub dim: usize,
    /// Product of the dims after the axis.
    pub inner: usize,
    pub out_shape: Vec<usize>,
}

/// Checks `start..start + len` against `axis` of `shape`.
pub fn narrow_dims(shape: &[usize], axis: usize, start: usize, len: usize) -> Result<NarrowDims> {
    let Some(&dim) = shape.get(axis) else {
        return Err(Error::shape(
            "narrow",
            format!("axis {axis} out of range for shape {shape:?}"),
        ));
    };
    if start.checked_add(len).is_none_or(|end| end > dim) {
        return Err(Error::shape(
            "narrow",
            format!("range {start}..{start}+{len} out of bounds for axis {axis} of {shape:?}"),
        ));
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    Ok(NarrowDims {
        outer: shape[..axis].iter().product(),
        dim,
        inner: shape[axis + 1..].iter().product(),
        out_shape,
    })
}

/// The sizes of a concatenation along one axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcatDims {
    /// Product of the dims before the axis.
    pub outer: usize,
    /// Product of the dims after the axis.
    pub inner: usize,
    pub out_shape: Vec<usize>,
}

/// Checks that `shapes` agree on every dim but `axis`.
pub fn concat_dims(shapes: &[&[usize]], axis: usize) -> Result<ConcatDims> {
    let Some(&shape) = shapes.first() else {
        return Err(Error::shape("concat", "no tensors to concatenate"));
    };
    if axis >= shape.len() {
        return Err(Error::shape(
            "concat",
            format!("axis {axis} out of range for shape {shape:?}"),
        ));
    }
    for (i, &other) in shapes.iter().enumerate() {
        let agrees = other.len() == shape.len()
            && other
                .iter()
                .zip(shape)
                .enumerate()
                .all(|(d, (a, b))| d == axis || a == b);
        if !agrees {
            return Err(Error::shape(
                "concat",
                format!(
                    "tensor {i} has shape {other:?}, tensor 0 has {shape:?}; \
                     all dims but axis {axis} must agree"
                ),
            ));
        }
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = shapes.iter().map(|s| s[axis]).sum();
    Ok(ConcatDims {
        outer: shape[..axis].iter().product(),
        inner: shape[axis + 1..].iter().product(),
        out_shape,
    })
}

/// The `[n, c, h, w]` of a nearest-neighbour 2× upsampling's input.
pub fn upsample_nearest2x_dims(shape: &[usize]) -> Result<[usize; 4]> {
    let &[n, c, h, w] = shape else {
        return Err(Error::shape(
            "upsample_nearest2x",
            format!("input has shape {shape:?}; expected [n, c, h, w]"),
        ));
    };
    Ok([n, c, h, w])
}

/// The sizes of an embedding lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingDims {
    /// Width of one table row.
    pub dim: usize,
    /// `ids_shape` followed by `dim`.
    pub out_shape: Vec<usize>,
}

/// Checks a `[vocab, dim]` table, that `ids` fill `ids_shape` and that every id is a row.
pub fn embedding_dims(table: &[usize], ids: &[u32], ids_shape: &[usize]) -> Result<EmbeddingDims> {
    let &[vocab, dim] = table else {
        return Err(Error::shape(
            "embedding",
            format!("table has shape {table:?}; expected [vocab, dim]"),
        ));
    };
    if ids_shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) != Some(ids.len()) {
        return Err(Error::shape(
            "embedding",
            format!("{} ids do not fill ids_shape {ids_shape:?}", ids.len()),
        ));
    }
    if let Some((pos, id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        return Err(Error::shape(
            "embedding",
            format!("id {id} at position {pos} is out of range for a table of {vocab} rows"),
        ));
    }
    let mut out_shape = ids_shape.to_vec();
    out_shape.push(dim);
    Ok(EmbeddingDims { dim, out_shape })
}

/// The sizes of `[..., m, k] × [..., k, n] → [..., m, n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatmulDims {
    /// Product of the batch dims (1 for 2-D operands).
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// `b` is 2-D: every batch of `a` multiplies the same matrix.
    pub b_shared: bool,
    pub out_shape: Vec<usize>,
}

/// Checks a batched matmul; `b` must have `a`'s batch dims or be 2-D.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatmulDims> {
    let mismatch = |why: &str| Error::shape("matmul", format!("a {a:?} × b {b:?}: {why}"));
    let (Some((batch_dims, [m, k])), Some((b_batch_dims, [kb, n]))) =
        (split_matrix_dims(a), split_matrix_dims(b))
    else {
        return Err(mismatch("both operands need at least 2 dims"));
    };
    if k != kb {
        return Err(mismatch("inner dims differ"));
    }
    let b_shared = b_batch_dims.is_empty();
    if !b_shared && b_batch_dims != batch_dims {
        return Err(mismatch("batch dims differ (b must match a's or be 2-D)"));
    }
    let mut out_shape = batch_dims.to_vec();
    out_shape.extend([m, n]);
    Ok(MatmulDims {
        batch: batch_dims.iter().product(),
        m,
        k,
        n,
        b_shared,
        out_shape,
    })
}

/// Split `[..., r, c]` into the batch dims and the matrix dims; `None` below 2 dims.
fn split_matrix_dims(shape: &[usize]) -> Option<(&[usize], [usize; 2])> {
    let (batch, &[r, c]) = shape.split_at_checked(shape.len().checked_sub(2)?)? else {
        return None;
    };
    Some((batch, [r, c]))
}

/// The sizes of `x · wᵀ + bias` over the last dim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearDims {
    /// Product of `x`'s dims but the last.
    pub rows: usize,
    pub in_features: usize,
    pub out_features: usize,
    /// `x`'s shape with the last dim `out_features`.
    pub out_shape: Vec<usize>,
}

/// Checks `x [..., in]`, `w [out, in]` and `bias [out]`.
pub fn linear_dims(x: &[usize], w: &[usize], bias: Option<&[usize]>) -> Result<LinearDims> {
    let mismatch =
        |why: &str| Error::shape("linear", format!("x {x:?}, w {w:?}, bias {bias:?}: {why}"));
    let (Some((&in_features, outer)), &[out_features, w_in]) = (x.split_last(), w) else {
        return Err(mismatch("need x with at least 1 dim and a 2-D w [out, in]"));
    };
    if w_in != in_features {
        return Err(mismatch("x's last dim differs from w's in dim"));
    }
    if bias.is_some_and(|b| b != [out_features]) {
        return Err(mismatch("bias must be [out]"));
    }
    let mut out_shape = outer.to_vec();
    out_shape.push(out_features);
    Ok(LinearDims {
        rows: outer.iter().product(),
        in_features,
        out_features,
        out_shape,
    })
}

/// The checked sizes of one conv2d: where the input patch under each output position comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub images: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub params: Conv2dParams,
}

impl ConvShape {
    /// Checks `x [n, c, h, w]`, `w [o, c, kh, kw]` and `bias [o]`; the output is
    /// `[n, o, ho, wo]` with `ho = (h + 2·padding − kh) / stride + 1` (likewise `wo`).
    pub fn check(
        x: &[usize],
        w: &[usize],
        bias: Option<&[usize]>,
        params: Conv2dParams,
    ) -> Result<Self> {
        let mismatch = |why: &str| {
            Error::shape(
                "conv2d",
                format!("x {x:?}, w {w:?}, bias {bias:?}, {params:?}: {why}"),
            )
        };
        let (&[images, channels, in_h, in_w], &[out_channels, w_channels, kernel_h, kernel_w]) =
            (x, w)
        else {
            return Err(mismatch("x must be [n, c, h, w] and w [o, c, kh, kw]"));
        };
        if w_channels != channels {
            return Err(mismatch("input channels of x and w differ"));
        }
        if bias.is_some_and(|b| b != [out_channels]) {
            return Err(mismatch("bias must be [o]"));
        }
        let Conv2dParams { stride, padding } = params;
        if stride == 0 {
            return Err(mismatch("stride must be at least 1"));
        }
        let padded = |side: usize| padding.checked_mul(2).and_then(|p| p.checked_add(side));
        let (Some(padded_h), Some(padded_w)) = (padded(in_h), padded(in_w)) else {
            return Err(mismatch("padding too large"));
        };
        if padded_h < kernel_h || padded_w < kernel_w {
            return Err(mismatch("kernel larger than the padded input"));
        }
        Ok(ConvShape {
            images,
            channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            out_h: (padded_h - kernel_h) / stride + 1,
            out_w: (padded_w - kernel_w) / stride + 1,
            params,
        })
    }

    /// `[n, o, ho, wo]`.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.images, self.out_channels, self.out_h, self.out_w]
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub fn patch_len(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    /// Output positions per image, `ho · wo`.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// A 1×1 stride-1 unpadded conv reads the input image as its own im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.params.stride == 1
            && self.params.padding == 0
    }
}

/// The checked sizes of one attention call (heads interleaved in the features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Checks `q [b, sq, heads·d]` and `k, v [b, sk, heads·d]`.
    pub fn check(q: &[usize], k: &[usize], v: &[usize], heads: usize) -> Result<Self> {
        let fail = |why: String| {
            Err(Error::shape(
                "attention",
                format!("q {q:?}, k {k:?}, v {v:?}, {heads} heads: {why}"),
            ))
        };
        let &[batch, queries, features] = q else {
            return fail("q must be [batch, queries, heads·d]".into());
        };
        let &[k_batch, keys, k_features] = k else {
            return fail("k must be [batch, keys, heads·d]".into());
        };
        if k_batch != batch || k_features != features {
            return fail("k must have q's batch and feature sizes".into());
        }
        if v != k {
            return fail("v must have k's shape".into());
        }
        if heads == 0 || features % heads != 0 {
            return fail(format!(
                "{features} features do not split into {heads} heads"
            ));
        }
        if keys == 0 && batch * queries * features > 0 {
            return fail("no keys to attend to".into());
        }
        Ok(AttentionShape {
            batch,
            queries,
            keys,
            heads,
            head_dim: features / heads,
        })
    }

    /// `heads · head_dim`.
    pub fn features(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The sizes of a group norm over `[n, c, ...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupNormDims {
    pub batch: usize,
    pub channels_per_group: usize,
    /// Product of the dims after the channels.
    pub spatial: usize,
}

impl GroupNormDims {
    /// Elements of one (sample, group): its channels' planes, one contiguous run.
    pub fn group_len(&self) -> usize {
        self.channels_per_group * self.spatial
    }
}

/// Checks `x [n, c, ...]` with `c` a multiple of `groups`, and `gamma, beta [c]`.
pub fn group_norm_dims(
    x: &[usize],
    groups: usize,
    gamma: &[usize],
    beta: &[usize],
) -> Result<GroupNormDims> {
    let &[batch, channels, ref rest @ ..] = x else {
        return Err(Error::shape(
            "group_norm",
            format!("input has shape {x:?}; expected [n, c, ...]"),
        ));
    };
    if groups == 0 || channels % groups != 0 {
        return Err(Error::shape(
            "group_norm",
            format!("{channels} channels of input {x:?} do not split into {groups} groups"),
        ));
    }
    check_affine("group_norm", gamma, beta, channels)?;
    Ok(GroupNormDims {
        batch,
        channels_per_group: channels / groups,
        spatial: rest.iter().product(),
    })
}

/// Checks `gamma, beta [width]` for a layer norm over the last dim of `x`; returns `width`.
pub fn layer_norm_width(x: &[usize], gamma: &[usize], beta: &[usize]) -> Result<usize> {
    let width = last_dim("layer_norm", x)?;
    check_affine("layer_norm", gamma, beta, width)?;
    Ok(width)
}

/// The last dim of an op working on rows (softmax, layer norm); a scalar has none.
pub fn last_dim(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .last()
        .copied()
        .ok_or_else(|| Error::shape(op, "input is a scalar; expected at least one dim"))
}

/// `gamma` and `beta` must both be `[len]`.
fn check_affine(op: &'static str, gamma: &[usize], beta: &[usize], len: usize) -> Result<()> {
    for (name, shape) in [("gamma", gamma), ("beta", beta)] {
        if shape != [len] {
            return Err(Error::shape(
                op,
                format!("{name} has shape {shape:?}; expected [{len}]"),
            ));
        }
    }
    Ok(())
}

/// The sizes of GEGLU over `[..., 2·h]` = `[value, gate]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GegluDims {
    /// Product of the dims but the last.
    pub rows: usize,
    /// `h`, half the input's last dim.
    pub half: usize,
    /// `[..., h]`.
    pub out_shape: Vec<usize>,
}

/// Checks that `x`'s last dim splits into value and gate halves.
pub fn geglu_dims(x: &[usize]) -> Result<GegluDims> {
    let Some((&width, outer)) = x.split_last() else {
        return Err(Error::shape(
            "geglu",
            "input is a scalar; expected [..., 2·h]",
        ));
    };
    if width % 2 != 0 {
        return Err(Error::shape(
            "geglu",
            format!("last dim of {x:?} is odd; expected [..., 2·h] = [value, gate]"),
        ));
    }
    let half = width / 2;
    let mut out_shape = outer.to_vec();
    out_shape.push(half);
    Ok(GegluDims {
        rows: outer.iter().product(),
        half,
        out_shape,
    })
}
