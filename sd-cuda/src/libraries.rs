//! Finding the CUDA libraries at run time: the driver (libcuda), NVRTC and cuBLAS of the CUDA
//! major version this build binds (12 by default, 13 with the `cuda-13` feature).
//!
//! cudarc opens each library by bare file name, so it finds only what the dynamic loader finds
//! (LD_LIBRARY_PATH, ld.so.cache, the system folders). Toolkits and Python wheels often put the
//! libraries elsewhere: `$CUDA_PATH/lib64`, or a venv's `site-packages/nvidia/cu13/lib` next to
//! PyTorch. So each library is first opened the way cudarc would open it, and when that fails it
//! is looked for in [`search_dirs`]; a file found there is opened by its full path with
//! `RTLD_GLOBAL`, after which cudarc's open by file name resolves to it (the loader matches a
//! requested name against the SONAME of the libraries already loaded). Only the file names of
//! this build's major version count: cudarc's bindings are per version, and a library of the
//! other major is reported with the build option that would use it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The CUDA major version whose API this build binds (cudarc's bindings are per version).
pub const CUDA_MAJOR: u32 = if cfg!(feature = "cuda-13") { 13 } else { 12 };

/// Environment variable with extra folders (`:`-separated) searched first.
pub const LIBRARY_PATH_VARIABLE: &str = "SD_CUDA_LIBRARY_PATH";

/// The three libraries sd-cuda loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CudaLibrary {
    /// The driver's user-space library, libcuda (comes with the NVIDIA driver, not the toolkit).
    Driver,
    /// The runtime compiler that builds the kernels.
    Nvrtc,
    /// The matrix products.
    Cublas,
}

impl CudaLibrary {
    /// All three, in the order a backend needs them.
    pub const ALL: [CudaLibrary; 3] =
        [CudaLibrary::Driver, CudaLibrary::Nvrtc, CudaLibrary::Cublas];

    fn stem(self) -> &'static str {
        match self {
            CudaLibrary::Driver => "cuda",
            CudaLibrary::Nvrtc => "nvrtc",
            CudaLibrary::Cublas => "cublas",
        }
    }

    /// The file names this build can use, in the order they are tried. The driver library keeps
    /// the name `libcuda.so.1` across CUDA versions; the toolkit libraries carry the major.
    pub fn file_names(self) -> Vec<String> {
        let stem = self.stem();
        match self {
            CudaLibrary::Driver => vec!["libcuda.so.1".into(), "libcuda.so".into()],
            CudaLibrary::Nvrtc | CudaLibrary::Cublas => {
                vec![
                    format!("lib{stem}.so.{CUDA_MAJOR}"),
                    format!("lib{stem}.so"),
                ]
            }
        }
    }

    /// The file name of the same library for the CUDA major this build does not bind: looked
    /// for only to tell the user which build would use it.
    fn other_major_file_name(self) -> Option<String> {
        let other = if CUDA_MAJOR == 13 { 12 } else { 13 };
        match self {
            CudaLibrary::Driver => None,
            CudaLibrary::Nvrtc | CudaLibrary::Cublas => {
                Some(format!("lib{}.so.{other}", self.stem()))
            }
        }
    }

    /// What to install when the library is missing.
    fn install_hint(self) -> String {
        match self {
            CudaLibrary::Driver => "install the NVIDIA driver (it provides libcuda.so.1)".into(),
            CudaLibrary::Nvrtc => format!(
                "install CUDA {CUDA_MAJOR}'s NVRTC (the toolkit, or `pip install {}`)",
                if CUDA_MAJOR == 12 {
                    "nvidia-cuda-nvrtc-cu12"
                } else {
                    "nvidia-cuda-nvrtc"
                }
            ),
            CudaLibrary::Cublas => format!(
                "install CUDA {CUDA_MAJOR}'s cuBLAS (the toolkit, or `pip install {}`)",
                if CUDA_MAJOR == 12 {
                    "nvidia-cublas-cu12"
                } else {
                    "nvidia-cublas"
                }
            ),
        }
    }
}

impl std::fmt::Display for CudaLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lib{}", self.stem())
    }
}

/// Where a library was opened from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The dynamic loader found it by this file name, as cudarc would alone.
    Loader(String),
    /// Found in one of [`search_dirs`] and opened by this full path.
    Path(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Loader(name) => write!(f, "{name} (the dynamic loader's search)"),
            Origin::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Opens `library` (once per process) and says from where, or why not: the error lists every
/// file name and folder tried. After `Ok`, cudarc's own open of the library succeeds.
pub fn load(library: CudaLibrary) -> Result<Origin, String> {
    static LOADED: [OnceLock<Result<Origin, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = &LOADED[CudaLibrary::ALL
        .iter()
        .position(|&l| l == library)
        .unwrap_or_default()];
    slot.get_or_init(|| load_uncached(library, &search_dirs(&|name| std::env::var_os(name))))
        .clone()
}

/// One line per library: where it was found, or why not. For diagnostics (`tools/gpu_check.sh`).
pub fn report() -> String {
    CudaLibrary::ALL
        .iter()
        .map(|&library| match load(library) {
            Ok(origin) => format!("{library}: {origin}"),
            Err(reason) => format!("{library}: NOT FOUND: {reason}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load_uncached(library: CudaLibrary, dirs: &[PathBuf]) -> Result<Origin, String> {
    let names = library.file_names();
    for name in &names {
        if open_global(Path::new(name)) {
            return Ok(Origin::Loader(name.clone()));
        }
    }
    if let Some(path) = find_in(dirs, &names) {
        if open_global(&path) {
            return Ok(Origin::Path(path));
        }
        return Err(format!(
            "{} exists but cannot be opened (a missing dependency, or not a library for this \
             machine)",
            path.display()
        ));
    }
    Err(not_found_message(library, &names, dirs))
}

fn not_found_message(library: CudaLibrary, names: &[String], dirs: &[PathBuf]) -> String {
    let loader_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let folders = dirs
        .iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut message = format!(
        "{library} for CUDA {CUDA_MAJOR} not found: tried {} through the dynamic loader \
         (LD_LIBRARY_PATH={loader_path:?}, ld.so.cache, the system folders), then in {} \
         folder(s): {folders}. ",
        names.join(" and "),
        dirs.len()
    );
    let other = library
        .other_major_file_name()
        .and_then(|name| find_in(dirs, std::slice::from_ref(&name)).map(|path| (name, path)));
    match other {
        Some((name, path)) => message.push_str(&format!(
            "Found {name} at {}, which this build cannot use: it binds CUDA {CUDA_MAJOR}'s API; \
             build with the `cuda-{}` feature instead, or {}",
            path.display(),
            if CUDA_MAJOR == 12 { 13 } else { 12 },
            library.install_hint()
        )),
        None => message.push_str(&format!(
            "To fix: {}, or name its folder in {LIBRARY_PATH_VARIABLE}",
            library.install_hint()
        )),
    }
    message
}

/// The first `dir/name` that is a file, trying every name in a folder before the next folder.
fn find_in(dirs: &[PathBuf], names: &[String]) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|path| path.is_file())
}

/// Opens a library with `RTLD_NOW | RTLD_GLOBAL` and keeps it open for the process's life.
/// A bare file name goes through the loader's search; a path is opened as it is.
fn open_global(file: &Path) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: the CUDA libraries' initialisers have no preconditions; loading one runs only
    // them. The handle is leaked on purpose: cudarc resolves its symbols for the whole run.
    match unsafe { Library::open(Some(file), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(library) => {
            std::mem::forget(library);
            true
        }
        Err(_) => false,
    }
}

/// The folders searched after the loader's own search, in order, from the environment given
/// as a lookup (the process environment in use; a fake one in tests):
///
/// 1. `SD_CUDA_LIBRARY_PATH` (`:`-separated), for anything unusual;
/// 2. the toolkit named by `CUDA_PATH`, `CUDA_HOME` or `CUDA_ROOT` (`lib64`, `lib`,
///    `targets/x86_64-linux/lib`), then `/usr/local/cuda` and the versioned `/usr/local/cuda-*`
///    (newest first);
/// 3. Python environments' NVIDIA wheels (`site-packages/nvidia/cu13/lib` for CUDA 13,
///    `nvidia/<package>/lib` for CUDA 12's per-library wheels): the active venv
///    (`VIRTUAL_ENV`), conda (`CONDA_PREFIX`), the user's and the system's site-packages;
/// 4. WSL's driver folder `/usr/lib/wsl/lib`.
///
/// Only folders that exist are listed.
pub fn search_dirs(env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(extra) = env(LIBRARY_PATH_VARIABLE) {
        dirs.extend(std::env::split_paths(&extra));
    }
    for variable in ["CUDA_PATH", "CUDA_HOME", "CUDA_ROOT"] {
        if let Some(root) = env(variable) {
            dirs.extend(toolkit_lib_dirs(Path::new(&root)));
        }
    }
    dirs.extend(toolkit_lib_dirs(Path::new("/usr/local/cuda")));
    let mut versioned = children_starting_with(Path::new("/usr/local"), "cuda-");
    versioned.sort_by(|a, b| b.cmp(a));
    for root in versioned {
        dirs.extend(toolkit_lib_dirs(&root));
    }
    for site_packages in python_site_packages(env) {
        dirs.extend(nvidia_wheel_dirs(&site_packages));
    }
    dirs.push(PathBuf::from("/usr/lib/wsl/lib"));

    let mut seen = std::collections::HashSet::new();
    dirs.retain(|dir| dir.is_dir() && seen.insert(dir.clone()));
    dirs
}

fn toolkit_lib_dirs(root: &Path) -> [PathBuf; 3] {
    [
        root.join("lib64"),
        root.join("lib"),
        root.join("targets/x86_64-linux/lib"),
    ]
}

/// `site-packages/nvidia/cu<MAJOR>/lib` first (CUDA 13's wheels share one folder), then every
/// `site-packages/nvidia/<package>/lib` (CUDA 12's wheels: `cuda_nvrtc`, `cublas`, …).
fn nvidia_wheel_dirs(site_packages: &Path) -> Vec<PathBuf> {
    let nvidia = site_packages.join("nvidia");
    let mut dirs = vec![nvidia.join(format!("cu{CUDA_MAJOR}")).join("lib")];
    let mut packages = children_starting_with(&nvidia, "");
    packages.sort();
    dirs.extend(packages.into_iter().map(|package| package.join("lib")));
    dirs
}

/// The site-packages folders of the active venv, conda, the user and the system (any
/// `python3.*`), in that order.
fn python_site_packages(env: &dyn Fn(&str) -> Option<OsString>) -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for variable in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env(variable) {
            prefixes.push(PathBuf::from(prefix));
        }
    }
    if let Some(home) = env("HOME") {
        prefixes.push(Path::new(&home).join(".local"));
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/conda"].map(PathBuf::from));

    let mut folders = Vec::new();
    for prefix in prefixes {
        let mut pythons = children_starting_with(&prefix.join("lib"), "python3");
        pythons.sort_by(|a, b| b.cmp(a));
        for python in pythons {
            folders.push(python.join("site-packages"));
            folders.push(python.join("dist-packages"));
        }
    }
    folders
}

/// The entries of `dir` whose names start with `prefix` (none when `dir` cannot be read).
fn children_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).ok();
        std::fs::write(path, b"").ok();
    }

    #[test]
    fn a_file_is_taken_from_the_first_folder_that_has_any_of_the_names() {
        let root = std::env::temp_dir().join(format!("sd-cuda-find-{}", std::process::id()));
        let (first, second) = (root.join("first"), root.join("second"));
        touch(&first.join("libnvrtc.so"));
        touch(&second.join("libnvrtc.so.12"));
        let names = vec!["libnvrtc.so.12".to_string(), "libnvrtc.so".to_string()];
        assert_eq!(
            find_in(&[first.clone(), second.clone()], &names),
            Some(first.join("libnvrtc.so"))
        );
        assert_eq!(
            find_in(&[second.clone(), first], &names),
            Some(second.join("libnvrtc.so.12"))
        );
        assert_eq!(find_in(&[root.join("absent")], &names), None);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn the_explicit_variable_comes_first_then_toolkits_then_python_wheels() {
        let root = std::env::temp_dir().join(format!("sd-cuda-dirs-{}", std::process::id()));
        let explicit = root.join("explicit");
        let toolkit = root.join("toolkit");
        let venv = root.join("venv");
        let wheel_13 = venv.join("lib/python3.12/site-packages/nvidia/cu13/lib");
        let wheel_12 = venv.join("lib/python3.12/site-packages/nvidia/cuda_nvrtc/lib");
        for dir in [&explicit, &toolkit.join("lib64"), &wheel_13, &wheel_12] {
            std::fs::create_dir_all(dir).ok();
        }
        let env = |name: &str| -> Option<OsString> {
            match name {
                LIBRARY_PATH_VARIABLE => Some(explicit.clone().into()),
                "CUDA_PATH" => Some(toolkit.clone().into()),
                "VIRTUAL_ENV" => Some(venv.clone().into()),
                _ => None,
            }
        };
        let dirs = search_dirs(&env);
        let position = |dir: &Path| dirs.iter().position(|d| d == dir);
        let (explicit_at, toolkit_at) = (position(&explicit), position(&toolkit.join("lib64")));
        let (cu13_at, cu12_at) = (position(&wheel_13), position(&wheel_12));
        assert_eq!(explicit_at, Some(0), "{dirs:?}");
        assert!(toolkit_at > explicit_at, "{dirs:?}");
        assert!(cu13_at > toolkit_at && cu12_at > toolkit_at, "{dirs:?}");
        // This build's own wheel folder is tried before the other packages' folders.
        if CUDA_MAJOR == 13 {
            assert!(cu13_at < cu12_at, "{dirs:?}");
        }
        assert!(
            dirs.iter().all(|dir| dir.is_dir()),
            "only existing folders: {dirs:?}"
        );
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_library_of_the_other_major_is_named_with_the_build_that_would_use_it() {
        let root = std::env::temp_dir().join(format!("sd-cuda-other-{}", std::process::id()));
        let other = if CUDA_MAJOR == 13 { 12 } else { 13 };
        touch(&root.join(format!("libcublas.so.{other}")));
        let message = not_found_message(
            CudaLibrary::Cublas,
            &CudaLibrary::Cublas.file_names(),
            std::slice::from_ref(&root),
        );
        assert!(
            message.contains(&format!("libcublas.so.{CUDA_MAJOR}")),
            "{message}"
        );
        assert!(message.contains(&root.display().to_string()), "{message}");
        assert!(message.contains(&format!("cuda-{other}")), "{message}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_missing_library_lists_every_folder_tried_and_the_fix() {
        let dirs = vec![PathBuf::from("/nowhere/one"), PathBuf::from("/nowhere/two")];
        let message =
            not_found_message(CudaLibrary::Nvrtc, &CudaLibrary::Nvrtc.file_names(), &dirs);
        for expected in [
            "/nowhere/one",
            "/nowhere/two",
            "LD_LIBRARY_PATH",
            LIBRARY_PATH_VARIABLE,
        ] {
            assert!(
                message.contains(expected),
                "{expected} missing from: {message}"
            );
        }
    }
}
