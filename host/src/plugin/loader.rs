//! Opening one plugin library and checking it before any of its code runs.
//!
//! abi_stable does the work: it reads the library's header, compares the
//! ABI version the plugin was built against (`otools-abi`'s package version,
//! which `otools-api` pins; `otools-api`'s own version is not checked) with
//! ours, and checks the layout of every type that crosses the boundary. This module turns its
//! errors into one short line that says what is wrong and which side to
//! rebuild; abi_stable's full layout report (kilobytes) is kept for `-v`.
//!
//! We load through `lib_header_from_path(..).init_root_module()`, not
//! `RootModule::load_from_file`, because the latter caches one library per
//! root-module type per process and would hand every later plugin the first
//! one's module.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::{
    AbiHeaderRef, LibraryError, RawLibrary, RootModule, lib_header_from_path,
};
use abi_stable::sabi_types::{VersionNumber, VersionStrings};
use otools_abi::{
    ABI_VERSION, ExportInfo, ExportKind, FLOW_EVENTS_SYMBOL, FLOW_SYMBOL, FlowEventsRoot_Ref,
    FlowRoot_Ref, MESSAGING_SYMBOL, MessagingRoot_Ref, PluginRoot_Ref, STAGES_SYMBOL,
    StageRoot_Ref,
};
use otools_api::ffi::API_VERSION;

/// A loaded, checked plugin library.
pub struct Library {
    /// The file it was loaded from (the watched path; the code was loaded
    /// from a private copy, see [`load`]).
    pub path: PathBuf,
    /// A hash of the file's content when it was loaded.
    pub hash: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Its root module.
    pub root: PluginRoot_Ref,
    /// The plugin crate's name and version.
    pub name: String,
    /// The plugin crate's version.
    pub version: String,
    /// The `otools-api` version it was built against (not checked).
    pub api_version: String,
    /// The ABI (`otools-abi`) version it was built against (checked).
    pub abi_version: String,
    /// What it exports.
    pub exports: Vec<ExportInfo>,
    /// Its messaging root module; none in a library built before messaging.
    pub messaging: Option<MessagingRoot_Ref>,
    /// Its pipeline stages' root module; none in a library built before pipelines.
    pub stage_root: Option<StageRoot_Ref>,
    /// Its flow-step root module; none in a library built before steps.
    pub flow: Option<FlowRoot_Ref>,
    /// Its flow-event root module (how it gets the host's `raise`); none in
    /// a library built before plugins could raise flow events.
    pub flow_events: Option<FlowEventsRoot_Ref>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Does the library export a service (or condition) named `name`?
    pub fn exports(&self, kind: ExportKind, name: &str) -> bool {
        self.exports
            .iter()
            .any(|e| e.kind == kind && e.name.as_str() == name)
    }

    /// The names of its exports of one kind, for messages.
    pub fn export_names(&self, kind: ExportKind) -> Vec<&str> {
        self.exports
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.as_str())
            .collect()
    }
}

/// Why a library was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// No file at the path.
    #[error("plugin library not found: {path}")]
    NotFound {
        /// Where we looked.
        path: PathBuf,
    },
    /// No `.so` at the path, but cargo's `.rlib` of the same crate is there.
    #[error(
        "plugin library not found: {path}; {rlib} is there, so the crate builds only an rlib: \
         add `crate-type = [\"cdylib\"]` to the `[lib]` section of its Cargo.toml and build it again"
    )]
    NotACdylib {
        /// Where we looked.
        path: PathBuf,
        /// The rlib found next to it.
        rlib: PathBuf,
    },
    /// The file changed while it was being copied (a write in progress): try again once it is quiet.
    #[error(
        "{path} changed while it was being read (a write in progress?): try again once it is complete"
    )]
    Changing {
        /// The file.
        path: PathBuf,
    },
    /// The dynamic loader refused the file (not a shared library, truncated, ...).
    #[error("cannot load {path} as a shared library: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the dynamic loader said.
        reason: String,
    },
    /// A shared library, but without our root module.
    #[error(
        "{path} is not an otools plugin: it does not export the otools root module \
         (plugins must call `otools_api::export_plugin!`)"
    )]
    NotAPlugin {
        /// The file.
        path: PathBuf,
    },
    /// Built against an ABI (`otools-abi`) version this host cannot use.
    #[error(
        "{path} was built against otools-abi {plugin_abi}, but this host uses otools-abi {host_abi}: {advice}"
    )]
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// The ABI version in the plugin.
        plugin_abi: String,
        /// Ours.
        host_abi: String,
        /// Which side to rebuild.
        advice: String,
    },
    /// Same ABI version numbers, different type layouts.
    #[error(
        "{path} does not match this host's otools-api {host_api} on otools-abi {host_abi} (the layout of \
         the types crossing the boundary differs): {advice}{detail}"
    )]
    Layout {
        /// The file.
        path: PathBuf,
        /// The `otools-api` this host ships with.
        host_api: String,
        /// Our ABI version.
        host_abi: String,
        /// Which side to rebuild.
        advice: String,
        /// The first lines of abi_stable's report, or all of it with -v.
        detail: String,
    },
    /// Anything else abi_stable refused (its own version, the C ABI, a failing root module).
    #[error("{path} was refused by the loader: {detail}")]
    Other {
        /// The file.
        path: PathBuf,
        /// abi_stable's message.
        detail: String,
    },
}

/// Libraries are never loaded from their own path: the dynamic loader
/// matches libraries by path (a second version at the same path would get
/// the old code back) and a library overwritten in place while mapped
/// crashes the process. Each version is copied to a private file, checked
/// and hashed there (the copy cannot change under us, the original can),
/// loaded from there, and the copy is removed at once (the mapping stays
/// valid).
///
/// The private folder is made once per process by `tempfile`: mode 0700,
/// an unpredictable name (`otools-XXXXXX` in `$TMPDIR`). It lives until
/// [`remove_private_dir`], which every exit path of the process must call.
enum PrivateDir {
    /// Not needed yet.
    Unopened,
    /// Made; removed by [`remove_private_dir`].
    Open(tempfile::TempDir),
    /// Removed: the process is exiting, nothing more is loaded.
    Closed,
}

/// Per process by nature: the copies are mapped into the process, which
/// holds them until it exits (libraries are never unloaded), and every exit
/// of the process removes the folder, whichever host loaded into it.
static PRIVATE_DIR: parking_lot::Mutex<PrivateDir> = parking_lot::Mutex::new(PrivateDir::Unopened);

/// What a loaded library gave: its root module, exports, ABI version,
/// messaging root module (none in a library built before messaging),
/// stage root module (none in a library built before pipelines) and
/// flow-step root module (none in a library built before steps) and
/// flow-event root module (none in a library built before `raise`).
type Loaded = (
    PluginRoot_Ref,
    Vec<ExportInfo>,
    String,
    Option<MessagingRoot_Ref>,
    Option<StageRoot_Ref>,
    Option<FlowRoot_Ref>,
    Option<FlowEventsRoot_Ref>,
);

/// Every library content this process has loaded, by content hash. Per
/// process by nature, like the private folder: a loaded library stays
/// mapped until the process exits, so a content seen before (a file that
/// goes back to an earlier version) is served from its first load instead
/// of being mapped again, once more per reload.
static LOADED: parking_lot::Mutex<BTreeMap<u64, Loaded>> = parking_lot::Mutex::new(BTreeMap::new());

/// The private folder, made on first use.
fn private_dir() -> std::io::Result<PathBuf> {
    let mut dir = PRIVATE_DIR.lock();
    match &*dir {
        PrivateDir::Open(d) => Ok(d.path().to_path_buf()),
        PrivateDir::Closed => Err(std::io::Error::other(
            "the host is exiting (its private folder is removed)",
        )),
        PrivateDir::Unopened => {
            use std::os::unix::fs::PermissionsExt;
            let d = tempfile::Builder::new()
                .prefix("otools-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()?;
            let path = d.path().to_path_buf();
            *dir = PrivateDir::Open(d);
            Ok(path)
        }
    }
}

/// Removes the private folder of library copies with anything left in it
/// (a copy interrupted by an exit); a later [`load`] fails. Idempotent and
/// callable from any thread. Statics are never dropped and
/// `std::process::exit` runs no destructor, so every way out of the
/// process calls this first: the binary's `main` on return or unwind, and
/// any explicit `exit` (the forced exit on a second signal).
pub fn remove_private_dir() {
    let previous = std::mem::replace(&mut *PRIVATE_DIR.lock(), PrivateDir::Closed);
    if let PrivateDir::Open(d) = previous {
        let path = d.path().to_path_buf();
        // A copy still being written can make one pass fail (not empty).
        if d.close().is_err() {
            for _ in 0..3 {
                if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                    break;
                }
            }
        }
    }
}

/// Size, modification and change times and inode of a file: if none of
/// them changed, neither did the file (its writers update them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` (symlinks followed).
    pub fn of(path: &Path) -> std::io::Result<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Fingerprint {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
        })
    }

    /// How long ago the file last changed, by its change time (which no
    /// tool can set back, unlike the modification time); `None` if the
    /// clock says it is in the future.
    pub fn unchanged_for(&self) -> Option<std::time::Duration> {
        let secs = u64::try_from(self.ctime.0).ok()?;
        let nanos = u32::try_from(self.ctime.1).ok()?;
        let changed = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        std::time::SystemTime::now().duration_since(changed).ok()
    }
}

/// A hash of a library file's content (xxh3, 64 bits).
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The content hash of the file at `path`, read in chunks.
pub fn file_hash(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buf[..n]);
    }
}

/// Checks, before the dynamic loader sees the file, that it is a complete
/// 64-bit little-endian ELF shared object: a file cut short (a copy or a
/// build still in progress) would be mapped past its end and crash the
/// process on first access instead of failing cleanly.
pub fn check_elf(bytes: &[u8], file_size: u64) -> Result<(), String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(String::from("not an ELF file (invalid ELF header)"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(String::from("not a 64-bit little-endian ELF file"));
    }
    if u16_at(16) != Some(3) {
        return Err(String::from(
            "not a shared library (ELF type is not ET_DYN)",
        ));
    }
    let len = file_size;
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err(String::from("truncated ELF header"));
    };
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(40), u16_at(58), u16_at(60)) else {
        return Err(String::from("truncated ELF header"));
    };
    let ph_end = phoff.saturating_add(u64::from(phentsize) * u64::from(phnum));
    let sh_end = shoff.saturating_add(u64::from(shentsize) * u64::from(shnum));
    if ph_end > len || sh_end > len {
        return Err(format!(
            "file truncated ({len} bytes; its headers need {})",
            ph_end.max(sh_end)
        ));
    }
    for i in 0..u64::from(phnum) {
        let at = usize::try_from(phoff + i * u64::from(phentsize)).unwrap_or(usize::MAX);
        let p_type = bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if p_type == Some(1) {
            // PT_LOAD: p_offset at +8, p_filesz at +32.
            let (Some(off), Some(size)) = (u64_at(at + 8), u64_at(at + 32)) else {
                return Err(String::from("truncated program header"));
            };
            if off.saturating_add(size) > len {
                return Err(format!(
                    "file truncated ({len} bytes; a segment ends at {})",
                    off + size
                ));
            }
        }
    }
    Ok(())
}

/// The first `n` bytes of a file (fewer if it is shorter).
fn read_prefix(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(n).read_to_end(&mut out)?;
    Ok(out)
}

/// Where cargo leaves a crate's rlib when the `.so` the manifest expects
/// is missing: `libfoo.rlib` next to `libfoo.so`. A crate without
/// `crate-type = ["cdylib"]` builds only that.
fn rlib_instead(path: &Path) -> Option<PathBuf> {
    let rlib = path.with_extension("rlib");
    (path.extension().is_some_and(|e| e == "so") && rlib.is_file()).then_some(rlib)
}

/// Loads and checks the library at `path`, from a private copy.
pub fn load(path: &Path, verbose: bool) -> Result<Library, LoadError> {
    load_expecting(path, verbose, None)
}

/// [`load`], refusing the file as [`LoadError::Changing`] unless its
/// [`Fingerprint`] is still `expected` when the copy starts: the hot
/// reload judged (and hashed) the file in that state, and a content
/// written since must not be checked, then refused, in its name.
pub fn load_expecting(
    path: &Path,
    verbose: bool,
    expected: Option<&Fingerprint>,
) -> Result<Library, LoadError> {
    if !path.is_file() {
        if let Some(rlib) = rlib_instead(path) {
            return Err(LoadError::NotACdylib {
                path: path.to_path_buf(),
                rlib,
            });
        }
        return Err(LoadError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let copy_err = |what: &str, e: std::io::Error| LoadError::Other {
        path: path.to_path_buf(),
        detail: format!("cannot copy it to the host's private folder ({what}): {e}"),
    };
    let before = Fingerprint::of(path).map_err(|e| copy_err("stat", e))?;
    if expected.is_some_and(|e| *e != before) {
        return Err(LoadError::Changing {
            path: path.to_path_buf(),
        });
    }
    let dir = private_dir().map_err(|e| copy_err("folder", e))?;
    let stem = path
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
    let mut copy = tempfile::Builder::new()
        .prefix(&format!("{stem}-"))
        .suffix(".so")
        .tempfile_in(&dir)
        .map_err(|e| copy_err("create", e))?;
    // A kernel-side copy (copy_file_range where available): no user-space buffer.
    let copied =
        std::fs::File::open(path).and_then(|mut from| std::io::copy(&mut from, copy.as_file_mut()));
    if let Err(e) = copied {
        return Err(copy_err("copy", e));
    }
    if Fingerprint::of(path).ok() != Some(before) {
        return Err(LoadError::Changing {
            path: path.to_path_buf(),
        });
    }
    // Everything below looks at the copy: what is checked and hashed is
    // exactly what is loaded, whatever happens to the original meanwhile.
    let shadow = copy.path().to_path_buf();
    let open_err = |e: std::io::Error| LoadError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // The headers are checked on a prefix big enough for them; the segment
    // bounds need the file size, not its content.
    let size = std::fs::metadata(&shadow).map_err(open_err)?.len();
    let head = read_prefix(&shadow, 64 * 1024).map_err(open_err)?;
    if let Err(reason) = check_elf(&head, size) {
        return Err(LoadError::Open {
            path: path.to_path_buf(),
            reason,
        });
    }
    let hash = file_hash(&shadow).map_err(open_err)?;
    let known = LOADED.lock().get(&hash).cloned();
    let loaded = match known {
        Some(loaded) => Ok(loaded),
        None => load_from(path, &shadow, verbose).inspect(|loaded| {
            LOADED.lock().insert(hash, loaded.clone());
        }),
    };
    // Removed at once (a mapping stays valid; a reused content needs none).
    drop(copy);
    let (root, exports, abi_version, messaging, stage_root, flow, flow_events) = loaded?;
    Ok(Library {
        path: path.to_path_buf(),
        hash,
        size,
        root,
        name: root.plugin_name().as_str().to_owned(),
        version: root.plugin_version().as_str().to_owned(),
        api_version: root.api_version().as_str().to_owned(),
        abi_version,
        exports,
        messaging,
        stage_root,
        flow,
        flow_events,
    })
}

fn load_from(path: &Path, shadow: &Path, verbose: bool) -> Result<Loaded, LoadError> {
    let header = lib_header_from_path(shadow).map_err(|e| convert(path, e, None, verbose))?;
    // The header's version is `otools-abi`'s: the root module type lives there.
    let abi_version = header.version_strings().version.as_str().to_owned();
    let plugin_abi = VersionNumber::new(header.version_strings()).ok();
    let root = header
        .init_root_module::<PluginRoot_Ref>()
        .map_err(|e| convert(path, e, plugin_abi, verbose))?;
    let exports = root.exports()().into_vec();
    let messaging = extra_root::<MessagingRoot_Ref>(shadow, MESSAGING_SYMBOL)
        .map_err(|e| convert(path, e, plugin_abi, verbose))?;
    let stage_root = extra_root::<StageRoot_Ref>(shadow, STAGES_SYMBOL)
        .map_err(|e| convert(path, e, plugin_abi, verbose))?;
    let flow = extra_root::<FlowRoot_Ref>(shadow, FLOW_SYMBOL)
        .map_err(|e| convert(path, e, plugin_abi, verbose))?;
    let flow_events = extra_root::<FlowEventsRoot_Ref>(shadow, FLOW_EVENTS_SYMBOL)
        .map_err(|e| convert(path, e, plugin_abi, verbose))?;
    Ok((
        root,
        exports,
        abi_version,
        messaging,
        stage_root,
        flow,
        flow_events,
    ))
}

/// A root module a library exports beside its `PluginRoot` under its own
/// `symbol` (the messaging one, the stages' one, the flow steps' one, the
/// flow events' one),
/// checked by abi_stable on its own; `None` when the library does not
/// export it (built before it existed).
fn extra_root<M: RootModule>(shadow: &Path, symbol: &str) -> Result<Option<M>, LibraryError> {
    // The same mapping as the root module's: the dynamic loader hands back
    // the handle it already has for this path, and it is leaked like that one.
    let raw = RawLibrary::load_at(shadow)?;
    let symbol = format!("{symbol}\0");
    #[allow(
        unsafe_code,
        reason = "reading an exported header, as abi_stable's own lib_header_from_path does"
    )]
    // SAFETY: the symbol, when present, is a `LibHeader` static that
    // `export_plugin!` exports (its address, read as abi_stable reads the
    // root module's); `upgrade` checks abi_stable's header version before
    // it is used, and the library is never unloaded (`raw` is leaked).
    let header = match unsafe { raw.get::<AbiHeaderRef>(symbol.as_bytes()) } {
        Ok(h) => (*h).upgrade()?,
        Err(_) => return Ok(None),
    };
    std::mem::forget(raw);
    header.init_root_module::<M>().map(Some)
}

fn newer(a: VersionNumber, b: VersionNumber) -> bool {
    (a.major, a.minor, a.patch) > (b.major, b.minor, b.patch)
}

fn host_abi() -> Option<VersionNumber> {
    VersionNumber::new(VersionStrings {
        version: ABI_VERSION.into(),
    })
    .ok()
}

/// What to rebuild the plugin against: the `otools-api` shipped with this
/// host, or any other on the same ABI.
fn rebuild_advice() -> String {
    let abi_minor = ABI_VERSION.rsplit_once('.').map_or(ABI_VERSION, |(m, _)| m);
    format!(
        "rebuild the plugin against otools-api {API_VERSION} (or any otools-api on otools-abi {abi_minor})"
    )
}

fn convert(
    path: &Path,
    e: LibraryError,
    plugin_abi: Option<VersionNumber>,
    verbose: bool,
) -> LoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => LoadError::Open {
            path,
            reason: strip_path(&err.to_string()),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => {
            let newer = (
                actual_version.major,
                actual_version.minor,
                actual_version.patch,
            ) > (
                expected_version.major,
                expected_version.minor,
                expected_version.patch,
            );
            let advice = if newer {
                format!(
                    "the plugin is newer; upgrade the host, or {}",
                    rebuild_advice()
                )
            } else {
                rebuild_advice()
            };
            LoadError::IncompatibleVersion {
                path,
                plugin_abi: actual_version.to_string(),
                host_abi: expected_version.to_string(),
                advice,
            }
        }
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            let detail = if verbose {
                format!("\n{report}")
            } else {
                format!(
                    " ({}; run with -v for abi_stable's full report)",
                    summarize(&report)
                )
            };
            match (plugin_abi, host_abi()) {
                // abi_stable accepts a plugin of a newer 0.minor; its layout
                // then differs because the host is the older side.
                (Some(p), Some(h)) if newer(p, h) => LoadError::IncompatibleVersion {
                    path,
                    plugin_abi: p.to_string(),
                    host_abi: h.to_string(),
                    advice: format!(
                        "the plugin is newer; upgrade the host, or {}{detail}",
                        rebuild_advice()
                    ),
                },
                _ => LoadError::Layout {
                    path,
                    host_api: API_VERSION.to_owned(),
                    host_abi: ABI_VERSION.to_owned(),
                    advice: rebuild_advice(),
                    detail,
                },
            }
        }
        other => LoadError::Other {
            path,
            detail: other.to_string().trim().replace('\n', " "),
        },
    }
}

/// The gist of abi_stable's layout report: for each `Error:` it lists, the
/// type it is about and the expected and found values, e.g.
/// `CallErrorKind: too many variants (expected 5, found 6)`.
fn summarize(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let mut current_type = "";
    let mut in_expected = false;
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("Layout of expected type") {
            in_expected = true;
        } else if in_expected && let Some(t) = line.strip_prefix("type:") {
            current_type = t;
            in_expected = false;
        } else if let Some(msg) = line.strip_prefix("Error:") {
            let after = |label: &str| {
                lines[i..]
                    .iter()
                    .position(|l| *l == label)
                    .and_then(|p| lines.get(i + p + 1))
                    .copied()
                    .unwrap_or("?")
            };
            let item = format!(
                "{current_type}: {} (expected {}, found {})",
                msg.trim(),
                after("Expected:"),
                after("Found:")
            );
            if !found.contains(&item) {
                found.push(item);
            }
        }
    }
    if found.is_empty() {
        return String::from("abi_stable reports a layout difference");
    }
    found.truncate(3);
    found.join("; ")
}

/// dlerror repeats the path at the front ("/x/libfoo.so: invalid ELF header").
fn strip_path(reason: &str) -> String {
    let reason = reason.trim();
    match reason.rsplit_once(": ") {
        Some((_, tail)) if reason.starts_with('/') || reason.starts_with('.') => tail.to_owned(),
        _ => reason.to_owned(),
    }
}
