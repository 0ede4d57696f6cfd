//! `WeightStore`: the weights of a pipeline, found by diffusers name whatever the file layout.
//!
//! A store is a layered view: a base that holds the tensors (a checkpoint's files, or seeded
//! random values for benchmarks) and, on top, [`Overlay`]s that change or add named tensors when
//! model code reads them.
//!
//! Opening a checkpoint builds, per component, a table from the canonical diffusers name to the
//! file and key that hold the tensor; nothing is read until model code asks. A diffusers folder
//! maps names one to one; an LDM single file goes through the [`ldm`] rules.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diffusers::read_pipeline_folder;
use super::file::{SafetensorsFile, TensorInfo};
use super::ldm::{self, LdmLayout, VaeLayout};
use super::names::{Component, canonical};
use super::overlay::Overlay;
use super::synthetic::Synthetic;
use super::variant::{self, Variant};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Where a diffusers name is stored.
#[derive(Debug)]
struct Source {
    file: usize,
    key: String,
}

/// One component's names, and the files they come from (for error messages).
#[derive(Debug, Default)]
struct NameTable {
    files: Vec<usize>,
    entries: HashMap<String, Source>,
}

/// Where a store's tensors come from, below its overlays.
#[derive(Debug)]
enum Base {
    /// Memory-mapped safetensors files, their tensors by diffusers name.
    Checkpoint(Checkpoint),
    /// Seeded random values of whatever shape model code asks ([`WeightStore::synthetic`]).
    Synthetic(Synthetic),
}

/// The files of a checkpoint and where each diffusers name lives in them.
#[derive(Debug, Default)]
struct Checkpoint {
    files: Vec<SafetensorsFile>,
    tables: BTreeMap<Component, NameTable>,
    unmapped: Vec<String>,
    /// The UNet weights read from a full checkpoint (one with EMA copies); `None` otherwise.
    unet_weights: Option<UnetWeights>,
}

/// Which UNet weights to read from a *full* LDM checkpoint, one that carries both the trained
/// weights (`model.diffusion_model.*`) and their exponential-moving-average copies
/// (`model_ema.*`), as `v1-5-pruned.safetensors` does. Pruned and EMA-only files hold one set,
/// read whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnetWeights {
    /// The trained weights: what diffusers' `from_single_file` (`extract_ema=False`, its
    /// default) and AUTOMATIC1111 (`use_ema: False`) load, so the same seed gives their image.
    #[default]
    NonEma,
    /// The EMA copies (diffusers' `extract_ema=True`); an error for a file without them.
    Ema,
}

impl std::fmt::Display for UnetWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnetWeights::NonEma => "non-EMA",
            UnetWeights::Ema => "EMA",
        })
    }
}

/// The weights of an SD 1.x pipeline (or of single components): a base (memory-mapped files or
/// synthetic values) under any number of [`Overlay`]s.
///
/// Cloning a store, or [`with_overlay`](Self::with_overlay), shares the base (the mapped files
/// are not reopened), so a store per set of overlays costs next to nothing.
#[derive(Debug, Clone)]
pub struct WeightStore {
    origin: PathBuf,
    base: Arc<Base>,
    variant: Option<Variant>,
    /// Applied in order, bottom to top, to each tensor model code reads.
    overlays: Vec<Arc<dyn Overlay>>,
}

/// A checkpoint store while it is being opened.
struct Opening {
    origin: PathBuf,
    checkpoint: Checkpoint,
}

impl WeightStore {
    /// Open a diffusers folder (a directory) or an LDM single file (anything else, its layout
    /// read off its own keys with [`LdmLayout::infer`]).
    /// A full checkpoint (with EMA copies) gives its non-EMA UNet weights, as diffusers and
    /// A1111 load it; [`open_with`](Self::open_with) chooses.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, UnetWeights::default())
    }

    /// [`open`](Self::open), reading the `unet_weights` set of a full checkpoint. Asking for
    /// [`UnetWeights::Ema`] from a store without EMA copies (a pruned file, a diffusers folder)
    /// is an error rather than silently the other set.
    pub fn open_with(path: impl AsRef<Path>, unet_weights: UnetWeights) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_dir()
            && path
                .file_name()
                .is_some_and(|name| name == "model_index.json")
        {
            let folder = path.parent().unwrap_or(Path::new("."));
            return Err(Error::invalid_argument(
                "model",
                format!(
                    "{} is the index of a diffusers model: give its folder, {}",
                    path.display(),
                    folder.display()
                ),
            ));
        }
        let store = if path.is_dir() {
            Self::open_diffusers_folder(path)?
        } else {
            Self::single_file(SafetensorsFile::open(path)?, None, unet_weights)?
        };
        if unet_weights == UnetWeights::Ema && store.unet_weights() != Some(UnetWeights::Ema) {
            return Err(Error::invalid_argument(
                "ema",
                format!(
                    "{} has no EMA copies of its UNet ({}* keys): only full training \
                     checkpoints carry both sets; this one has a single set, read without the \
                     EMA option",
                    path.display(),
                    ldm::EMA_PREFIX
                ),
            ));
        }
        Ok(store)
    }

    /// Open a diffusers pipeline folder: the text encoder, UNet and VAE its `model_index.json`
    /// lists. Refuses SD 2.x and SDXL pipelines.
    pub fn open_diffusers_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let folder = read_pipeline_folder(dir)?;
        variant::reject_foreign_pipeline(&folder.model_index_path, &folder.model_index)?;
        let mut store = Opening::new(dir);
        for (component, paths) in &folder.components {
            store.add_component_files(*component, paths)?;
        }
        store.finish()
    }

    /// Open the files holding one component's weights under their own (diffusers or
    /// transformers) names: a single file or the shards of a sharded checkpoint.
    pub fn open_component_files<P: AsRef<Path>>(component: Component, paths: &[P]) -> Result<Self> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let origin = paths
            .first()
            .ok_or_else(|| Error::invalid_argument("paths", "no files given"))?;
        let mut store = Opening::new(origin);
        store.add_component_files(component, &paths)?;
        store.finish()
    }

    /// Open an LDM single file (`model.diffusion_model.*`, `first_stage_model.*`,
    /// `cond_stage_model.transformer.*`) whose UNet and VAE have `layout`. A full checkpoint
    /// gives its non-EMA UNet weights (see [`UnetWeights`]). Refuses SD 2.x and SDXL checkpoints.
    pub fn open_single_file(path: impl AsRef<Path>, layout: &LdmLayout) -> Result<Self> {
        Self::open_single_file_with(path, layout, UnetWeights::default())
    }

    /// [`open_single_file`](Self::open_single_file), reading the `unet_weights` set of a full
    /// checkpoint (the EMA set must be complete: a UNet tensor without its EMA copy is an error).
    pub fn open_single_file_with(
        path: impl AsRef<Path>,
        layout: &LdmLayout,
        unet_weights: UnetWeights,
    ) -> Result<Self> {
        Self::single_file(SafetensorsFile::open(path)?, Some(layout), unet_weights)
    }

    /// The single-file store of `file`, with `layout` or the one its keys imply.
    fn single_file(
        file: SafetensorsFile,
        layout: Option<&LdmLayout>,
        unet_weights: UnetWeights,
    ) -> Result<Self> {
        let path = file.path().to_path_buf();
        let refuse = |reason: String| Error::UnsupportedModel {
            path: path.clone(),
            reason,
        };
        variant::reject_foreign_keys(&path, file.names())?;
        if !file.names().any(|k| k.starts_with(ldm::UNET_PREFIX)) {
            return Err(refuse(format!("no UNet weights ({}*)", ldm::UNET_PREFIX)));
        }
        let layout = match layout {
            Some(layout) => layout.clone(),
            None => LdmLayout::infer(&path, &file.names().collect::<Vec<_>>())?,
        };
        let mut store = Opening::new(&path);
        store.checkpoint.files.push(file);
        store.map_single_file(0, &layout, unet_weights)?;
        if !store.checkpoint.tables.contains_key(&Component::Unet) {
            return Err(refuse(format!(
                "none of its {}* keys fit the UNet layout {layout:?}",
                ldm::UNET_PREFIX
            )));
        }
        store.finish()
    }

    /// Open a standalone VAE file (A1111's `--vae`, e.g. `vae-ft-mse-840000-ema-pruned`) as the
    /// store's VAE: keys in LDM names (`encoder.down.0.block.0.conv1.weight`, with or without
    /// `first_stage_model.`) are renamed by `layout`'s rules; keys no rule maps are taken as
    /// diffusers names (a diffusers VAE file). Training state (`model_ema.*`) is skipped.
    pub fn open_vae_file(path: impl AsRef<Path>, layout: &VaeLayout) -> Result<Self> {
        let path = path.as_ref();
        let mut store = Opening::new(path);
        store.checkpoint.files.push(SafetensorsFile::open(path)?);
        let rules = ldm::vae_rules(layout);
        let mut mapped = Vec::new();
        for key in store.checkpoint.files[0].names() {
            let bare = key.strip_prefix(ldm::VAE_PREFIX).unwrap_or(key);
            if bare.starts_with("model_ema.") {
                continue;
            }
            let name = ldm::to_diffusers(&rules, bare)
                .unwrap_or_else(|| canonical(Component::Vae, bare).into_owned());
            mapped.push((name, key.to_string()));
        }
        for (name, key) in mapped {
            store.insert(Component::Vae, name, 0, key)?;
        }
        store.finish()
    }

    /// A store with no files whose every component answers [`Weights::get_shaped`] with
    /// seeded random values of the asked shape (see [`super::synthetic`]): full-size models
    /// for benchmarks, without a download. [`Weights::get`] and [`Weights::info`] find nothing.
    pub fn synthetic(seed: u64) -> Self {
        Self {
            origin: PathBuf::from("<synthetic weights>"),
            base: Arc::new(Base::Synthetic(Synthetic { seed })),
            variant: Some(Variant::Standard),
            overlays: Vec::new(),
        }
    }

    /// This store with `overlay` on top of its overlays: reading a tensor the overlay
    /// [touches](Overlay::touches) gives what it makes of the tensor below. The base is shared.
    pub fn with_overlay(&self, overlay: Arc<dyn Overlay>) -> Self {
        let mut layered = self.clone();
        layered.overlays.push(overlay);
        layered
    }

    /// The overlays, bottom to top.
    pub fn overlays(&self) -> &[Arc<dyn Overlay>] {
        &self.overlays
    }

    /// A component's weights, at the root of its names.
    pub fn component(&self, component: Component) -> Result<Weights<'_>> {
        let held = match &*self.base {
            Base::Checkpoint(checkpoint) => Held::Files {
                checkpoint,
                table: checkpoint.tables.get(&component).ok_or_else(|| {
                    Error::UnsupportedModel {
                        path: self.origin.clone(),
                        reason: format!("it has no {component} weights"),
                    }
                })?,
            },
            Base::Synthetic(synthetic) => Held::Synthetic(synthetic),
        };
        Ok(Weights {
            held,
            overlays: &self.overlays,
            component,
            prefix: String::new(),
        })
    }

    /// The CLIP text encoder's weights (`text_model.…`).
    pub fn text_encoder(&self) -> Result<Weights<'_>> {
        self.component(Component::TextEncoder)
    }

    /// The UNet's weights (`down_blocks.0.…`).
    pub fn unet(&self) -> Result<Weights<'_>> {
        self.component(Component::Unet)
    }

    /// The VAE's weights (`encoder.…`, `decoder.…`).
    pub fn vae(&self) -> Result<Weights<'_>> {
        self.component(Component::Vae)
    }

    /// Whether the store has weights for `component`.
    pub fn has_component(&self, component: Component) -> bool {
        match &*self.base {
            Base::Checkpoint(checkpoint) => checkpoint.tables.contains_key(&component),
            Base::Synthetic(_) => true,
        }
    }

    /// Standard or inpainting, known when the store has a UNet with a `conv_in`.
    pub fn variant(&self) -> Option<Variant> {
        self.variant
    }

    /// The folder or file the store was opened from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The safetensors files the store reads.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        let files: &[SafetensorsFile] = match &*self.base {
            Base::Checkpoint(checkpoint) => &checkpoint.files,
            Base::Synthetic(_) => &[],
        };
        files.iter().map(SafetensorsFile::path)
    }

    /// Keys of an LDM single file under a UNet/VAE prefix that no rule maps (sorted): a
    /// checkpoint of another architecture or layout than the one given. Empty for folders.
    pub fn unmapped_keys(&self) -> &[String] {
        match &*self.base {
            Base::Checkpoint(checkpoint) => &checkpoint.unmapped,
            Base::Synthetic(_) => &[],
        }
    }

    /// Which UNet weights were read from a full checkpoint (one with EMA copies); `None` for a
    /// store with a single set (pruned or EMA-only files, diffusers folders, synthetic weights).
    pub fn unet_weights(&self) -> Option<UnetWeights> {
        match &*self.base {
            Base::Checkpoint(checkpoint) => checkpoint.unet_weights,
            Base::Synthetic(_) => None,
        }
    }
}

impl Opening {
    fn new(origin: &Path) -> Self {
        Self {
            origin: origin.to_path_buf(),
            checkpoint: Checkpoint::default(),
        }
    }

    fn add_component_files(&mut self, component: Component, paths: &[PathBuf]) -> Result<()> {
        for path in paths {
            let file = SafetensorsFile::open(path)?;
            let index = self.checkpoint.files.len();
            let keys: Vec<String> = file.names().map(str::to_string).collect();
            self.checkpoint.files.push(file);
            for key in keys {
                let name = canonical(component, &key).into_owned();
                self.insert(component, name, index, key)?;
            }
        }
        Ok(())
    }

    /// Sort the keys of an LDM single file into components under their diffusers names.
    fn map_single_file(
        &mut self,
        index: usize,
        layout: &LdmLayout,
        unet_weights: UnetWeights,
    ) -> Result<()> {
        let unet_rules = ldm::unet_rules(&layout.unet);
        let vae_rules = ldm::vae_rules(&layout.vae);
        let file = &self.checkpoint.files[index];
        let has_ema = file.names().any(|key| {
            key.starts_with(ldm::UNET_PREFIX)
                && ldm::ema_key(key).is_some_and(|ema| file.info(&ema).is_some())
        });
        let read_ema = has_ema && unet_weights == UnetWeights::Ema;
        let mut mapped = Vec::new();
        let mut unmapped = Vec::new();
        for key in file.names() {
            let (component, diffusers_name) = if let Some(rest) = key.strip_prefix(ldm::UNET_PREFIX)
            {
                (Component::Unet, ldm::to_diffusers(&unet_rules, rest))
            } else if let Some(rest) = key.strip_prefix(ldm::VAE_PREFIX) {
                (Component::Vae, ldm::to_diffusers(&vae_rules, rest))
            } else if let Some(rest) = key.strip_prefix(ldm::TEXT_ENCODER_PREFIX) {
                let name = canonical(Component::TextEncoder, rest).into_owned();
                (Component::TextEncoder, Some(name))
            } else {
                // EMA copies, noise-schedule buffers and other training state.
                continue;
            };
            let Some(name) = diffusers_name else {
                unmapped.push(key.to_string());
                continue;
            };
            // The EMA set, when asked for, must be whole: a tensor silently taken from the other
            // set would mix the two.
            let source_key = match ldm::ema_key(key) {
                Some(ema) if read_ema && component == Component::Unet => {
                    if file.info(&ema).is_none() {
                        return Err(Error::InvalidSafetensors {
                            path: file.path().to_path_buf(),
                            reason: format!("{key} has no EMA copy {ema}"),
                        });
                    }
                    ema
                }
                _ => key.to_string(),
            };
            mapped.push((component, name, source_key));
        }
        unmapped.sort();
        self.checkpoint.unmapped = unmapped;
        self.checkpoint.unet_weights = has_ema.then_some(unet_weights);
        for (component, name, key) in mapped {
            self.insert(component, name, index, key)?;
        }
        Ok(())
    }

    fn insert(
        &mut self,
        component: Component,
        name: String,
        file: usize,
        key: String,
    ) -> Result<()> {
        let table = self.checkpoint.tables.entry(component).or_default();
        if !table.files.contains(&file) {
            table.files.push(file);
        }
        if let Some(first) = table.entries.get(&name) {
            return Err(Error::InvalidSafetensors {
                path: self.checkpoint.files[file].path().to_path_buf(),
                reason: format!(
                    "{component} tensor {name} (key {key}) is also stored as {} in {}",
                    first.key,
                    self.checkpoint.files[first.file].path().display()
                ),
            });
        }
        table.entries.insert(name, Source { file, key });
        Ok(())
    }

    /// The store, with its variant read off the UNet's `conv_in` when it has a UNet.
    fn finish(self) -> Result<WeightStore> {
        let has_unet = self.checkpoint.tables.contains_key(&Component::Unet);
        let mut store = WeightStore {
            origin: self.origin,
            base: Arc::new(Base::Checkpoint(self.checkpoint)),
            variant: None,
            overlays: Vec::new(),
        };
        if has_unet {
            store.variant = variant::detect(&store.origin, &store.component(Component::Unet)?)?;
        }
        Ok(store)
    }
}

/// A scoped view of one component's weights: model code descends with [`Weights::at`] and asks
/// for parameters relative to where it stands, mirroring the module tree.
///
/// ```no_run
/// # fn demo(store: &sd_core::weights::WeightStore) -> sd_core::Result<()> {
/// let resnet = store.unet()?.at("down_blocks").at(0).at("resnets.0");
/// let conv1 = resnet.get_shaped("conv1.weight", &[320, 320, 3, 3])?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    held: Held<'a>,
    overlays: &'a [Arc<dyn Overlay>],
    component: Component,
    prefix: String,
}

/// What the base of a store holds for one component.
#[derive(Debug, Clone, Copy)]
enum Held<'a> {
    Files {
        checkpoint: &'a Checkpoint,
        table: &'a NameTable,
    },
    Synthetic(&'a Synthetic),
}

impl<'a> Weights<'a> {
    /// The view one module further down: `at("down_blocks").at(0)` is `down_blocks.0`.
    pub fn at(&self, module: impl std::fmt::Display) -> Weights<'a> {
        Weights {
            prefix: self.full_name(&module.to_string()),
            ..self.clone()
        }
    }

    /// The component these weights belong to.
    pub fn component(&self) -> Component {
        self.component
    }

    /// The module path of this view (`""` at the component root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full diffusers name of `name` in this view.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the tensor exists: in the base (always, in a synthetic store) or added by an
    /// overlay.
    pub fn contains(&self, name: &str) -> bool {
        let in_base = match self.held {
            Held::Files { .. } => self.source(name).is_ok(),
            Held::Synthetic(_) => true,
        };
        in_base
            || self
                .overlays_on(&canonical(self.component, &self.full_name(name)))
                .next()
                .is_some()
    }

    /// Dtype and shape of a tensor as the base file stores it, without reading it.
    pub fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        let (file, key, _) = self.source(name)?;
        file.info(key).ok_or_else(|| self.missing(name))
    }

    /// The tensor as f32 (converted from F16/BF16), in whatever shape the file has, with the
    /// overlays applied.
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        let base = self
            .source(name)
            .and_then(|(file, key, shown)| file.read_f32(key, &shown));
        self.overlaid(name, base, None)
    }

    /// The tensor as f32, which must have `expected` shape, with the overlays applied (in f32,
    /// before any backend packs or uploads it). A linear weight `[out, in]` and a 1×1 conv
    /// weight `[out, in, 1, 1]` hold the same matrix and are given in the shape asked: LDM files
    /// store the VAE attention projections (and SD 1.x UNet `proj_in/proj_out`) as convs where
    /// diffusers may use linears.
    pub fn get_shaped(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let base = match self.held {
            Held::Synthetic(synthetic) => {
                let full = self.full_name(name);
                Ok(synthetic.tensor(&canonical(self.component, &full), expected))
            }
            Held::Files { .. } => self.read_shaped(name, expected),
        };
        self.overlaid(name, base, Some(expected))
    }

    /// The base file's tensor in `expected` shape.
    fn read_shaped(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let (file, key, shown) = self.source(name)?;
        let found = file.info(key).map(|i| i.shape.clone()).unwrap_or_default();
        if found != expected && !same_matrix(&found, expected) {
            return Err(Error::TensorShape {
                name: shown,
                path: file.path().to_path_buf(),
                expected: expected.to_vec(),
                found,
            });
        }
        let tensor = file.read_f32(key, &shown)?;
        tensor
            .into_shape_with_order(expected.to_vec())
            .map_err(|e| Error::InvalidSafetensors {
                path: file.path().to_path_buf(),
                reason: format!("tensor {shown}: {e}"),
            })
    }

    /// The overlays that touch the tensor `canonical_name`, bottom to top.
    fn overlays_on<'n>(
        &self,
        canonical_name: &'n str,
    ) -> impl Iterator<Item = &'a Arc<dyn Overlay>> + use<'a, 'n> {
        let component = self.component;
        self.overlays
            .iter()
            .filter(move |o| o.touches(component, canonical_name))
    }

    /// `base` (the base's answer for `name`) through the overlays that touch it. A tensor the
    /// base lacks may be added by an overlay; with `expected`, the result must have that shape.
    fn overlaid(
        &self,
        name: &str,
        base: Result<HostTensor>,
        expected: Option<&[usize]>,
    ) -> Result<HostTensor> {
        if self.overlays.is_empty() {
            return base;
        }
        let full = self.full_name(name);
        let canonical_name = canonical(self.component, &full);
        let mut overlays = self.overlays_on(&canonical_name).peekable();
        if overlays.peek().is_none() {
            return base;
        }
        let mut tensor = match base {
            Ok(tensor) => Some(tensor),
            Err(Error::MissingTensor { .. }) => None,
            Err(other) => return Err(other),
        };
        for overlay in overlays {
            let changed = overlay.apply(self.component, &canonical_name, tensor)?;
            if let Some(expected) = expected
                && changed.shape() != expected
            {
                return Err(Error::TensorShape {
                    name: full.clone(),
                    path: PathBuf::from(format!("overlay {}", overlay.describe())),
                    expected: expected.to_vec(),
                    found: changed.shape().to_vec(),
                });
            }
            tensor = Some(changed);
        }
        tensor.ok_or_else(|| self.missing(name))
    }

    /// Names the base holds under this view, relative to it, sorted (none for synthetic weights).
    pub fn names(&self) -> Vec<String> {
        let Held::Files { table, .. } = self.held else {
            return Vec::new();
        };
        let mut names: Vec<String> = table
            .entries
            .keys()
            .filter_map(|name| {
                if self.prefix.is_empty() {
                    Some(name.clone())
                } else {
                    let rest = name.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
                    Some(rest.to_string())
                }
            })
            .collect();
        names.sort();
        names
    }

    /// The file, the key in it, and how errors should call the tensor.
    fn source(&self, name: &str) -> Result<(&'a SafetensorsFile, &'a str, String)> {
        let Held::Files { checkpoint, table } = self.held else {
            return Err(self.missing(name));
        };
        let full = self.full_name(name);
        let canonical_name = canonical(self.component, &full);
        let source = table
            .entries
            .get(canonical_name.as_ref())
            .ok_or_else(|| self.missing(name))?;
        let file = &checkpoint.files[source.file];
        let shown = if source.key == full {
            full
        } else {
            format!("{full} (stored as {})", source.key)
        };
        Ok((file, source.key.as_str(), shown))
    }

    fn missing(&self, name: &str) -> Error {
        let files = match self.held {
            Held::Files { checkpoint, table } => table
                .files
                .iter()
                .map(|&i| checkpoint.files[i].path().to_path_buf())
                .collect(),
            Held::Synthetic(_) => Vec::new(),
        };
        Error::MissingTensor {
            name: self.full_name(name),
            files,
        }
    }
}

/// `[o, i]` and `[o, i, 1, 1]`: a linear and a 1×1 conv over the same matrix.
fn same_matrix(a: &[usize], b: &[usize]) -> bool {
    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
    short.len() == 2 && long.len() == 4 && long[..2] == *short && long[2..] == [1, 1]
}
