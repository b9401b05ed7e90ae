//! A valid shared library that is *not* an otools plugin: it exports no
//! plugin header (no `export_plugin!`). The integration tests point the host
//! at it to check that loading it is refused with a clear message.

/// Returns 42; it only exists so that the crate is not empty.
pub fn answer() -> u32 {
    42
}
