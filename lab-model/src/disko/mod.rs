//! disko disk specs: parsing, normalising exactly as disko does, and planning.
//!
//! - [`normalize`]: a raw spec (as a host's `disko.nix` writes it) to disko's
//!   devices JSON, every default filled in.
//! - [`model`]: the normalised JSON as typed Rust.
//! - [`sgdisk`] and [`parted`]: where sgdisk and parted put a partition, so a
//!   table written in-process matches the one disko's commands write.
//! - [`plan`]: the ordered steps that partition, format and mount.

pub mod model;
pub mod normalize;
pub mod parted;
pub mod plan;
pub mod sgdisk;
pub mod typecodes;

pub use model::Devices;
pub use normalize::normalize;

/// A spec that disko would reject or that labprov cannot carry out. `path`
/// is the option path in disko's terms (`disko.devices.disk.main.content...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {message}")]
    Unsupported { path: String, message: String },
    #[error("the spec is not valid JSON: {0}; pass disko's devices JSON (`nix eval --json ...disko.devices`) or a host name")]
    Json(String),
}

impl SpecError {
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Invalid { path: path.into(), message: message.into() }
    }

    pub fn unsupported(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError::Unsupported { path: path.into(), message: message.into() }
    }
}

/// Parses and normalises spec text in one go (what the fuzz target drives).
pub fn normalize_str(text: &str) -> Result<serde_json::Value, SpecError> {
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
    normalize(&raw)
}
