//! Reading the disk spec: a host's `disko.nix` or a JSON file, normalised
//! into the typed model, and the parts of it labprov refuses to skip.

use std::path::PathBuf;

use lab_disko::{Devices, SpecError};

use super::DiskError;

/// Where the spec comes from.
#[derive(Debug, Clone)]
pub enum SpecSource {
    /// `hosts/<host>/disko.nix` of the lab, evaluated with `nix eval`.
    Host { lab: lab_facts::Lab, host: String },
    /// A JSON file: a raw spec or disko's devices JSON (both normalise).
    File(PathBuf),
}

/// Loads the raw spec as JSON: the host's `disko.nix` evaluated, or the
/// file's content (unwrapped from `{ disko.devices = ...; }` if it is so).
pub fn load_raw(source: &SpecSource) -> Result<serde_json::Value, DiskError> {
    match source {
        SpecSource::Host { lab, host } => {
            let path = lab.root.join("hosts").join(host).join("disko.nix");
            if !path.is_file() {
                return Err(DiskError::NoHostSpec { host: host.clone(), path });
            }
            let json = lab_facts::eval_json(&path).map_err(|e| match e {
                lab_facts::Error::NixEval { path, stderr } => DiskError::NixEval { path, stderr },
                other => DiskError::Facts(other),
            })?;
            serde_json::from_slice(&json).map_err(|e| SpecError::Json(e.to_string()).into())
        }
        SpecSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| DiskError::SpecFile { path: path.clone(), error })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| SpecError::Json(format!("{}: {e}", path.display())))?;
            // Accept `{ disko.devices = ...; }` wrappers too.
            Ok(v.get("disko").and_then(|d| d.get("devices")).cloned().unwrap_or(v))
        }
    }
}

/// Loads and normalises the spec: the normalised devices JSON and the typed
/// model read from it.
pub fn load(source: &SpecSource) -> Result<(serde_json::Value, Devices), DiskError> {
    let raw = load_raw(source)?;
    let normalized = lab_disko::normalize(&raw)?;
    let devices: Devices = serde_json::from_value(normalized.clone())
        .map_err(|e| SpecError::invalid("disko.devices", e.to_string()))?;
    Ok((normalized, devices))
}

/// Refuses a spec whose hooks are set: labprov does not run disko's hook
/// scripts, and leaving them out silently would make a different machine.
pub fn check_hooks(normalized: &serde_json::Value) -> Result<(), DiskError> {
    match lab_disko::hooks_set(normalized).into_iter().next() {
        Some(spec_path) => Err(DiskError::Unsupported {
            kind: "a hook (shell code disko runs around its steps)".into(),
            spec_path,
        }),
        None => Ok(()),
    }
}
