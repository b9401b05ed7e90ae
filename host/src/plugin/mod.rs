//! How a `cdylib` becomes running code: [`loader`] opens a library through
//! abi_stable and checks that it was built against a compatible
//! `otools-api`; [`Registry`] keeps every library loaded once per path for
//! the life of the process (libraries are never unloaded: values whose code
//! lives in them may still be in flight, and abi_stable keeps pointers into
//! every library it has checked).

pub mod loader;
pub mod object;
pub mod stage;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use loader::{Library, LoadError};
pub use object::{PluginObject, construct, construct_step, messages, step_exports};
pub use stage::construct_stage;

/// Libraries loaded so far, by canonical path.
#[derive(Default)]
pub struct Registry {
    loaded: HashMap<PathBuf, Result<Arc<Library>, LoadError>>,
    verbose: bool,
}

impl Registry {
    /// An empty registry; `verbose` keeps abi_stable's full reports in errors.
    pub fn new(verbose: bool) -> Registry {
        Registry {
            loaded: HashMap::new(),
            verbose,
        }
    }

    /// The library at `path`, loading it on first use. A failure is
    /// remembered too, so each broken library is reported once.
    pub fn get(&mut self, path: &Path) -> Result<Arc<Library>, LoadError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let verbose = self.verbose;
        self.loaded
            .entry(key)
            .or_insert_with(|| loader::load(path, verbose).map(Arc::new))
            .clone()
    }

    /// Every library loaded successfully.
    pub fn libraries(&self) -> Vec<Arc<Library>> {
        self.loaded
            .values()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect()
    }

    /// Has loading `path` been attempted already?
    pub fn seen(&self, path: &Path) -> bool {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.loaded.contains_key(&key)
    }
}
