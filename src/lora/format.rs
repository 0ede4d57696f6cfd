//! LoRA file formats: from a safetensors file's keys to one [`ModuleDelta`] per adapted module.
//!
//! The format is read off the keys (no flag): per module, the tensors under its key prefix say
//! what kind of delta it is.
//!
//! | keys of one module | kind | ΔW |
//! |---|---|---|
//! | `M.lora_down.weight`, `M.lora_up.weight` (kohya, A1111, LoCon) | low rank | `up · down` |
//! | `M.lora_A.weight`, `M.lora_B.weight` (PEFT / diffusers) | low rank | `B · A` |
//! | `M.processor.to_q_lora.down.weight`, `….up.weight` (old diffusers) | low rank | `up · down` |
//! | `M.hada_w1_a`, `M.hada_w1_b`, `M.hada_w2_a`, `M.hada_w2_b` (LyCORIS LoHa) | Hadamard | `(w1a·w1b) ⊙ (w2a·w2b)` |
//! | the same with `M.hada_t1`, `M.hada_t2` (LoHa, Tucker conv) | Hadamard | `cp(t1, w1a, w1b) ⊙ cp(t2, w2a, w2b)` |
//! | `M.lokr_w1` or `M.lokr_w1_a/_b`, `M.lokr_w2` or `M.lokr_w2_a/_b` (LyCORIS LoKr) | Kronecker | `w1 ⊗ w2` |
//! | the same with `M.lokr_t2` (LoKr, Tucker conv) | Kronecker | `w1 ⊗ cp(t2, w2a, w2b)` |
//!
//! The Tucker form of a conv (LyCORIS `use_tucker`, A1111's `make_weight_cp`): a core `t`
//! `[r, r, kh, kw]` between `a` `[r, out]` and `b` `[r, in]` (note: both with the rank first),
//! `cp(t, a, b)[p, q, k, l] = Σ_ij t[i, j, k, l] · a[i, p] · b[j, q]`, an `[out, in, kh, kw]` delta.
//!
//! Scale, as kohya and A1111 compute it: the module's `scale` tensor if present, else
//! `alpha / rank` with `rank` the low-rank dimension (`lora_down`'s rows, `hada_w1_b`'s rows,
//! `lokr_w2_b`'s rows, else `lokr_w1_b`'s) and `alpha` the module's `alpha` tensor; a missing or
//! zero alpha, or a LoKr with both factors full (whose `alpha` LyCORIS and A1111 ignore), gives
//! scale 1. PEFT files carry no alpha tensors: their `lora_alpha / r` comes from the file's
//! metadata (see [`crate::lora`]).

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;
use sd_core::weights::SafetensorsFile;
use sd_core::{Error, HostTensor, Result};

/// How one module's ΔW is made from the file's tensors.
#[derive(Debug, Clone)]
pub enum DeltaKind {
    /// `up [out, r(, 1, 1)] · down [r, in(, kh, kw)]`.
    LowRank { up: HostTensor, down: HostTensor },
    /// `w1 ⊙ w2`, each a low-rank product (`hada_w1_a · hada_w1_b`, …) or its Tucker form.
    Hadamard(Box<[LowRankFactors; 2]>),
    /// `w1 ⊗ w2` (Kronecker product), each factor full or a product of two (`w2` also of
    /// Tucker form, then `[out, in, kh, kw]`).
    Kronecker { w1: HostTensor, w2: HostTensor },
}

/// One low-rank matrix of a LyCORIS module: `a · b` (`a` `[out, r]`, `b` `[r, in·kh·kw]`), or,
/// with a Tucker `core`, `cp(core, a, b)` (`a` `[r, out]`, `b` `[r, in]`; see the module docs).
#[derive(Debug, Clone)]
pub struct LowRankFactors {
    pub a: HostTensor,
    pub b: HostTensor,
    pub core: Option<HostTensor>,
}

impl LowRankFactors {
    /// `(rows, cols, kernel)` of the matrix, checking that the factors fit together.
    fn dims(&self, module: &str) -> Result<(usize, usize, Vec<usize>)> {
        let Some(core) = &self.core else {
            let (rows, cols) = product_dims(module, dims(&self.a), dims(&self.b))?;
            return Ok((rows, cols, Vec::new()));
        };
        let (a, b) = (dims(&self.a), dims(&self.b));
        match core.shape() {
            &[r1, r2, kh, kw] if r1 == a.0 && r2 == b.0 => Ok((a.1, b.1 * kh * kw, vec![kh, kw])),
            found => Err(bad_module(
                module,
                format!(
                    "Tucker core {found:?} does not fit its factors {:?} and {:?} (expected [{}, {}, kh, kw])",
                    self.a.shape(),
                    self.b.shape(),
                    a.0,
                    b.0
                ),
            )),
        }
    }

    /// The matrix `[out, in · kh · kw]`.
    fn matrix(&self, module: &str) -> Result<Array2<f32>> {
        let (rows, cols, _) = self.dims(module)?;
        let (a, b) = (matrix(module, &self.a)?, matrix(module, &self.b)?);
        let Some(core) = &self.core else {
            return matmul(module, &a, &b);
        };
        let (r1, r2) = (core.shape()[0], core.shape()[1]);
        let taps = core.len() / (r1 * r2);
        let core = core
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((r1, r2, taps))
            .map_err(|e| bad_module(module, e.to_string()))?;
        // One kernel tap at a time: W[:, :, k] = aᵀ · t[:, :, k] · b.
        let mut out = ndarray::Array3::<f32>::zeros((rows, cols / taps, taps));
        for tap in 0..taps {
            let slice = a.t().dot(&core.slice(ndarray::s![.., .., tap]).dot(&b));
            out.slice_mut(ndarray::s![.., .., tap]).assign(&slice);
        }
        out.into_shape_with_order((rows, cols))
            .map_err(|e| bad_module(module, e.to_string()))
    }
}

/// One adapted module: where it is (the module key as the file writes it, without the
/// tensor suffix) and its delta.
#[derive(Debug, Clone)]
pub struct ModuleDelta {
    /// The module's key prefix in the file (`lora_unet_down_blocks_0_…_to_q`,
    /// `unet.down_blocks.0.….to_q`).
    pub key: String,
    pub kind: DeltaKind,
    /// What ΔW is multiplied by before the user's multiplier.
    pub scale: f32,
}

/// The shape of a module's ΔW, known from its factors without multiplying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaShape {
    /// `out`.
    pub rows: usize,
    /// `in · kh · kw`.
    pub cols: usize,
    /// The conv kernel's trailing dims (`[kh, kw]`) when the factors carry them, else empty.
    pub kernel: Vec<usize>,
}

impl DeltaShape {
    /// The shape as the file implies it: `[out, in, kh, kw]` for a conv, `[out, in]` otherwise.
    pub fn dims(&self) -> Vec<usize> {
        let kernel_size: usize = self.kernel.iter().product();
        let mut dims = vec![self.rows, self.cols / kernel_size.max(1)];
        dims.extend(&self.kernel);
        dims
    }
}

impl ModuleDelta {
    /// The shape of ΔW, checking that the factors multiply (cheap: no products are formed).
    pub fn shape(&self) -> Result<DeltaShape> {
        let key = &self.key;
        let (rows, cols, kernel) = match &self.kind {
            DeltaKind::LowRank { up, down } => {
                let (rows, cols) = product_dims(key, dims(up), dims(down))?;
                let kernel = down.shape().get(2..).map(<[usize]>::to_vec);
                (rows, cols, kernel.unwrap_or_default())
            }
            DeltaKind::Hadamard(halves) => {
                let [one, two] = &**halves;
                let (one, two) = (one.dims(key)?, two.dims(key)?);
                // A half without a Tucker core carries no kernel: only its matrix must agree.
                if (one.0, one.1) != (two.0, two.1) {
                    return Err(bad_module(
                        key,
                        format!("LoHa halves differ in shape: {one:?} and {two:?}"),
                    ));
                }
                let kernel = if one.2.is_empty() { two.2 } else { one.2 };
                (one.0, one.1, kernel)
            }
            DeltaKind::Kronecker { w1, w2 } => {
                let ((r1, c1), (r2, c2)) = (dims(w1), dims(w2));
                let kernel = w2.shape().get(2..).map(<[usize]>::to_vec);
                (r1 * r2, c1 * c2, kernel.unwrap_or_default())
            }
        };
        Ok(DeltaShape { rows, cols, kernel })
    }

    /// ΔW as a matrix `[out, in · kh · kw]`, before the scale.
    pub fn delta(&self) -> Result<Array2<f32>> {
        self.shape()?; // the factors fit together, so the products below are defined
        let key = &self.key;
        let product = |a, b| matmul(key, &matrix(key, a)?, &matrix(key, b)?);
        match &self.kind {
            DeltaKind::LowRank { up, down } => product(up, down),
            DeltaKind::Hadamard(halves) => {
                let [one, two] = &**halves;
                Ok(one.matrix(key)? * two.matrix(key)?)
            }
            DeltaKind::Kronecker { w1, w2 } => Ok(kronecker(&matrix(key, w1)?, &matrix(key, w2)?)),
        }
    }
}

/// The module deltas of a LoRA file, sorted by key. Keys that belong to no known tensor kind are
/// returned as `unknown` (the caller reports them).
pub fn read_modules(file: &SafetensorsFile) -> Result<(Vec<ModuleDelta>, Vec<String>)> {
    let path = file.path();
    let mut groups: BTreeMap<String, BTreeMap<&'static str, String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for key in file.names() {
        match split_key(key) {
            Some((module, role)) => {
                groups
                    .entry(module.to_string())
                    .or_default()
                    .insert(role, key.to_string());
            }
            None => unknown.push(key.to_string()),
        }
    }
    let peft_scales = peft_scales(file)?;
    let mut modules = Vec::new();
    for (module, roles) in groups {
        let peft_scale = peft_scales
            .iter()
            .find(|(component, _)| module.starts_with(&format!("{component}.")))
            .map(|&(_, scale)| scale);
        modules.push(module_delta(file, path, &module, &roles, peft_scale)?);
    }
    unknown.sort();
    Ok((modules, unknown))
}

/// The tensor suffixes each format uses, and the role each plays.
const ROLES: &[(&str, &str)] = &[
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".down.weight", "down"),
    (".up.weight", "up"),
    (".hada_w1_a", "w1a"),
    (".hada_w1_b", "w1b"),
    (".hada_w2_a", "w2a"),
    (".hada_w2_b", "w2b"),
    (".hada_t1", "t1"),
    (".hada_t2", "t2"),
    (".lokr_w1", "lokr_w1"),
    (".lokr_w1_a", "lokr_w1a"),
    (".lokr_w1_b", "lokr_w1b"),
    (".lokr_w2", "lokr_w2"),
    (".lokr_w2_a", "lokr_w2a"),
    (".lokr_w2_b", "lokr_w2b"),
    (".lokr_t2", "t2"),
    (".alpha", "alpha"),
    (".scale", "scale"),
];

/// `key` as (module, role): the longest known suffix wins (`.lora_down.weight` before
/// `.down.weight`).
fn split_key(key: &str) -> Option<(&str, &'static str)> {
    ROLES
        .iter()
        .filter(|(suffix, _)| key.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(suffix, role)| (&key[..key.len() - suffix.len()], *role))
}

/// PEFT files made by diffusers' `save_lora_weights` keep each component's adapter config in the
/// `lora_adapter_metadata` JSON (`"unet.r"`, `"unet.lora_alpha"`, …): their scale is
/// `lora_alpha / r` per component (1 without the entry, as diffusers).
fn peft_scales(file: &SafetensorsFile) -> Result<Vec<(&'static str, f32)>> {
    let Some(text) = file.metadata().get("lora_adapter_metadata") else {
        return Ok(Vec::new());
    };
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        bad_file(
            file.path(),
            format!("metadata lora_adapter_metadata is not JSON: {e}"),
        )
    })?;
    let number = |key: String| config.get(&key).and_then(serde_json::Value::as_f64);
    Ok(["unet", "text_encoder"]
        .into_iter()
        .filter_map(|component| {
            let r = number(format!("{component}.r"))?;
            let alpha = number(format!("{component}.lora_alpha"))?;
            (r > 0.0).then_some((component, (alpha / r) as f32))
        })
        .collect())
}

fn module_delta(
    file: &SafetensorsFile,
    path: &Path,
    module: &str,
    roles: &BTreeMap<&'static str, String>,
    peft_scale: Option<f32>,
) -> Result<ModuleDelta> {
    let get = |role: &str| -> Result<Option<HostTensor>> {
        roles.get(role).map(|key| file.get(key)).transpose()
    };
    let need = |role: &str| -> Result<HostTensor> {
        get(role)?.ok_or_else(|| {
            bad_file(
                path,
                format!(
                    "module {module} has no {role} tensor (it has {:?})",
                    roles.values()
                ),
            )
        })
    };
    let (kind, rank) = if roles.contains_key("down") || roles.contains_key("up") {
        let (down, up) = (need("down")?, need("up")?);
        let rank = down.shape().first().copied();
        (DeltaKind::LowRank { up, down }, rank)
    } else if roles.contains_key("w1a") {
        let w1b = need("w1b")?;
        let rank = w1b.shape().first().copied();
        let one = LowRankFactors {
            a: need("w1a")?,
            b: w1b,
            core: get("t1")?,
        };
        let two = LowRankFactors {
            a: need("w2a")?,
            b: need("w2b")?,
            core: get("t2")?,
        };
        (DeltaKind::Hadamard(Box::new([one, two])), rank)
    } else if roles.keys().any(|role| role.starts_with("lokr")) {
        let factor = |full: &str, a: &str, b: &str, core: Option<HostTensor>| {
            if let Some(w) = get(full)? {
                return Ok((w, None));
            }
            let factors = LowRankFactors {
                a: need(a)?,
                b: need(b)?,
                core,
            };
            let rank = factors.b.shape().first().copied();
            let (rows, _, kernel) = factors.dims(module)?;
            let product = factors.matrix(module)?;
            // A Tucker w2 keeps its kernel dims: `[out, in, kh, kw]`.
            let mut shape = vec![
                rows,
                product.ncols() / kernel.iter().product::<usize>().max(1),
            ];
            shape.extend(kernel);
            let product = product
                .into_shape_with_order(ndarray::IxDyn(&shape))
                .map_err(|e| bad_module(module, e.to_string()))?;
            Ok::<_, Error>((product, rank))
        };
        let (w1, rank1) = factor("lokr_w1", "lokr_w1a", "lokr_w1b", None)?;
        let (w2, rank2) = factor("lokr_w2", "lokr_w2a", "lokr_w2b", get("t2")?)?;
        // A1111 takes the rank from w2_b when w2 is decomposed, else from w1_b.
        (DeltaKind::Kronecker { w1, w2 }, rank2.or(rank1))
    } else {
        return Err(bad_file(
            path,
            format!(
                "module {module} has only {:?}: no LoRA, LoHa or LoKr factors",
                roles.values()
            ),
        ));
    };
    let scalar = |role: &str| -> Result<Option<f32>> {
        Ok(get(role)?.and_then(|t| t.iter().next().copied()))
    };
    let scale = match (scalar("scale")?, scalar("alpha")?, rank) {
        (Some(scale), _, _) => scale,
        (None, Some(alpha), Some(rank)) if alpha != 0.0 && rank > 0 => alpha / rank as f32,
        _ => peft_scale.unwrap_or(1.0),
    };
    if !scale.is_finite() {
        return Err(bad_file(
            path,
            format!("module {module}: scale {scale} is not finite"),
        ));
    }
    Ok(ModuleDelta {
        key: module.to_string(),
        kind,
        scale,
    })
}

/// A factor as a matrix: `[rows, everything else]` (conv kernels flattened as torch's
/// `reshape(out, -1)`).
/// A factor's `[rows, everything else]`.
fn dims(t: &HostTensor) -> (usize, usize) {
    let rows = t.shape().first().copied().unwrap_or(1);
    (rows, t.len().checked_div(rows).unwrap_or(0))
}

/// The dims of `a · b`, or an error when the inner dims (the ranks) differ.
fn product_dims(module: &str, a: (usize, usize), b: (usize, usize)) -> Result<(usize, usize)> {
    if a.1 != b.0 {
        return Err(bad_module(
            module,
            format!("factors do not multiply: {a:?} · {b:?} (up/down ranks differ)"),
        ));
    }
    Ok((a.0, b.1))
}

fn matrix(module: &str, t: &HostTensor) -> Result<Array2<f32>> {
    let (rows, cols) = dims(t);
    t.as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, cols))
        .map_err(|e| bad_module(module, e.to_string()))
}

fn matmul(module: &str, a: &Array2<f32>, b: &Array2<f32>) -> Result<Array2<f32>> {
    product_dims(module, a.dim(), b.dim())?;
    Ok(a.dot(b))
}

fn kronecker(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    let ((ar, ac), (br, bc)) = (a.dim(), b.dim());
    Array2::from_shape_fn((ar * br, ac * bc), |(i, j)| {
        a[(i / br, j / bc)] * b[(i % br, j % bc)]
    })
}

fn bad_file(path: &Path, reason: String) -> Error {
    Error::InvalidSafetensors {
        path: path.to_path_buf(),
        reason,
    }
}

fn bad_module(module: &str, reason: String) -> Error {
    Error::invalid_argument(format!("LoRA module {module}"), reason)
}
