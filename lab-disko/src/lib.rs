//! disko disk specs: parsing, normalising exactly as disko does, and planning.
//!
//! - [`normalize`]: a raw spec (as a host's `disko.nix` writes it) to disko's
//!   devices JSON, every default filled in.
//! - [`model`]: the normalised JSON as typed Rust.
//! - [`sgdisk`] and [`parted`]: where sgdisk and parted put a partition, so a
//!   table written in-process matches the one disko's commands write.
//! - [`plan`]: the ordered steps that partition, format and mount.
//! - [`stacked`]: LUKS, LVM and mdadm steps with disko's command lines.

pub mod model;
pub mod normalize;
pub mod parted;
pub mod plan;
pub mod sgdisk;
pub mod stacked;
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
    let raw: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SpecError::Json(e.to_string()))?;
    normalize(&raw)
}

/// The option paths of every non-empty hook (`preCreateHook`,
/// `postMountHook`, ...) in a normalised spec. Hooks are shell code disko
/// runs around its steps; labprov does not run them, so a spec that sets
/// one is refused rather than applied without it.
pub fn hooks_set(normalized: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = format!("{path}.{}", normalize::quote_attr(k));
                    match v {
                        serde_json::Value::String(s)
                            if k.ends_with("Hook") && !s.trim().is_empty() =>
                        {
                            out.push(p)
                        }
                        _ => walk(v, &p, out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}.[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(normalized, "disko.devices", &mut out);
    out
}
