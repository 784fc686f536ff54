//! Devices stacked on other devices: LUKS volumes, LVM volume groups and
//! logical volumes, mdadm arrays. Each step carries the command lines
//! disko's create script runs for it (`lib/types/luks.nix`, `lvm_pv.nix`,
//! `lvm_vg.nix`, `mdadm.nix`, `mdraid.nix` at disko v1.13.0, commit
//! de5708739256238fb912c62f03988815db89ec9a), so the plan shows them and
//! apply runs exactly those; docs/disko.md lists each with its source line.
//!
//! Where disko hands a secret to cryptsetup through a process substitution
//! (`--key-file <(echo -n "$password")`), the step says `--key-file -` and
//! the secret goes to cryptsetup's stdin: cryptsetup reads a `-` key file
//! to its end without stopping at a newline, so the key bytes are the same
//! and never appear on a command line.

use serde::Serialize;
use serde_json::Value;

use super::model::{Luks, Lv, LvmVg, Mdadm};
use super::SpecError;

/// Where a LUKS step's key comes from, as disko picks it (luks.nix:11-27):
/// `settings.keyFile` first, then a typed passphrase (`askPassword`), then
/// `passwordFile`, then the deprecated `keyFile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum KeySource {
    /// A key file used as it is (`--key-file PATH`): `settings.keyFile`,
    /// or the deprecated `keyFile`.
    KeyFile { path: String },
    /// A passphrase asked on the terminal, twice when formatting.
    Ask,
    /// A file holding the passphrase; disko reads it with `$(cat FILE)`,
    /// which drops trailing newlines.
    PasswordFile { path: String },
}

impl KeySource {
    /// Whether the key reaches cryptsetup on stdin (`--key-file -`).
    pub fn on_stdin(&self) -> bool {
        !matches!(self, KeySource::KeyFile { .. })
    }
}

/// disko's `luks` content: format where the device is not LUKS yet, open,
/// add the additional key files, then the content on `/dev/mapper/NAME`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LuksStep {
    pub device: String,
    pub name: String,
    /// `/dev/mapper/NAME`, where the content lives.
    pub mapper: String,
    pub spec_path: String,
    pub key: KeySource,
    /// `--key-file K [--keyfile-size N] [--keyfile-offset N]` with K the
    /// key's path, or `-` for stdin.
    pub key_args: Vec<String>,
    pub additional_key_files: Vec<String>,
    /// `cryptsetup -q luksFormat DEVICE EXTRA KEYARGS` (luks.nix:162).
    pub format: Vec<String>,
    /// `cryptsetup open DEVICE NAME [--allow-discards] [--perf-...] EXTRA
    /// KEYARGS` (luks.nix:33-42); create adds `--persistent` (luks.nix:166).
    pub open: Vec<String>,
}

impl LuksStep {
    /// The open command as create runs it (with `--persistent`).
    pub fn open_persistent(&self) -> Vec<String> {
        let mut v = self.open.clone();
        v.push("--persistent".into());
        v
    }

    /// `cryptsetup luksAddKey DEVICE NEWKEY KEYARGS` (luks.nix:170).
    pub fn add_key(&self, file: &str) -> Vec<String> {
        let mut v = words(&["cryptsetup", "luksAddKey", &self.device, file]);
        v.extend(self.key_args.iter().cloned());
        v
    }

    /// disko's create commands in order, for a device that is not LUKS yet
    /// and not open.
    pub fn create_commands(&self) -> Vec<Vec<String>> {
        let mut v = vec![self.format.clone(), self.open_persistent()];
        v.extend(self.additional_key_files.iter().map(|f| self.add_key(f)));
        v
    }
}

/// disko's `lvm_pv` content: `pvcreate DEVICE` where blkid finds no
/// `TYPE=` (lvm_pv.nix:42-45); the PV joins `vg`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PvStep {
    pub device: String,
    pub vg: String,
    pub spec_path: String,
    pub create: Vec<String>,
}

/// disko's `lvm_vg` device: kernel modules, then `vgcreate NAME PVS`
/// unless `vgdisplay NAME` finds it (lvm_vg.nix:117-122).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VgStep {
    pub name: String,
    pub spec_path: String,
    /// `modprobe` each, first (lvm_vg.nix:10-18, 117).
    pub kernel_modules: Vec<String>,
    /// The PVs in the order their `lvm_pv` steps ran (disko appends each
    /// to a file the VG step reads back).
    pub pvs: Vec<String>,
    pub create: Vec<String>,
}

/// One logical volume: `lvcreate --yes ...` unless `lvdisplay VG/LV` finds
/// it (lvm_vg.nix:123-142).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LvStep {
    pub vg: String,
    pub name: String,
    /// `/dev/VG/LV`, where the content lives.
    pub device: String,
    pub spec_path: String,
    pub create: Vec<String>,
}

/// disko's `mdadm` device: `mdadm --create` unless the array is there
/// (mdadm.nix:64-79), its members in the order their `mdraid` steps ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MdadmStep {
    pub name: String,
    /// `/dev/md/NAME`.
    pub device: String,
    pub spec_path: String,
    pub members: Vec<String>,
    /// The create command; disko pipes `y` into it (`echo 'y' | mdadm ...`).
    pub create: Vec<String>,
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// Nix's `toString` of a list is its elements joined by spaces, and the
/// shell then splits that on whitespace: `extraFormatArgs = [ "--pbkdf
/// argon2id" ]` is two arguments.
fn shell_split(list: &[String]) -> Vec<String> {
    list.iter().flat_map(|a| a.split_whitespace().map(str::to_string)).collect()
}

/// `builtins.toString` of a settings value (keyFileSize, keyFileOffset).
fn nix_to_string(v: &Value, path: &str) -> Result<String, SpecError> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        Value::Bool(true) => Ok("1".into()),
        Value::Bool(false) | Value::Null => Ok(String::new()),
        other => Err(SpecError::invalid(path, format!("expected a number, found {other}"))),
    }
}

/// Nix truthiness of `settings.X or false` where disko tests it as a bool.
fn setting_true(settings: &serde_json::Map<String, Value>, key: &str) -> bool {
    settings.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub fn luks(l: &Luks, path: &str) -> Result<LuksStep, SpecError> {
    let settings_key = match l.settings.get("keyFile") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{path}.settings.keyFile"),
                format!("expected the path of a key file, found {other}"),
            ))
        }
    };
    let key = if let Some(p) = settings_key {
        KeySource::KeyFile { path: p }
    } else if l.ask_password {
        KeySource::Ask
    } else if let Some(p) = &l.password_file {
        KeySource::PasswordFile { path: p.clone() }
    } else if let Some(p) = &l.key_file {
        KeySource::KeyFile { path: p.clone() }
    } else {
        // disko passes no --key-file at all: cryptsetup would then ask on
        // its own terminal, with -q not even twice. Refused: the key must
        // come from somewhere labprov controls.
        return Err(SpecError::unsupported(
            format!("{path}.askPassword"),
            "askPassword is false and no keyFile, passwordFile or settings.keyFile is set: disko lets cryptsetup ask for the passphrase itself; set askPassword = true (labprov asks, or takes --luks-key-file) or name a key file",
        ));
    };
    let mut key_args = vec![
        "--key-file".to_string(),
        match &key {
            KeySource::KeyFile { path } => path.clone(),
            _ => "-".into(),
        },
    ];
    if let Some(v) = l.settings.get("keyFileSize") {
        key_args.push("--keyfile-size".into());
        key_args.push(nix_to_string(v, &format!("{path}.settings.keyFileSize"))?);
    }
    if let Some(v) = l.settings.get("keyFileOffset") {
        key_args.push("--keyfile-offset".into());
        key_args.push(nix_to_string(v, &format!("{path}.settings.keyFileOffset"))?);
    }
    let mut format = words(&["cryptsetup", "-q", "luksFormat", &l.device]);
    format.extend(shell_split(&l.extra_format_args));
    format.extend(key_args.iter().cloned());
    let mut open = words(&["cryptsetup", "open", &l.device, &l.name]);
    if setting_true(&l.settings, "allowDiscards") {
        open.push("--allow-discards".into());
    }
    if setting_true(&l.settings, "bypassWorkqueues") {
        open.push("--perf-no_read_workqueue".into());
        open.push("--perf-no_write_workqueue".into());
    }
    open.extend(shell_split(&l.extra_open_args));
    open.extend(key_args.iter().cloned());
    Ok(LuksStep {
        device: l.device.clone(),
        name: l.name.clone(),
        mapper: format!("/dev/mapper/{}", l.name),
        spec_path: path.to_string(),
        key,
        key_args,
        additional_key_files: l.additional_key_files.clone(),
        format,
        open,
    })
}

pub fn pv(device: &str, vg: &str, path: &str) -> PvStep {
    PvStep {
        device: device.to_string(),
        vg: vg.to_string(),
        spec_path: path.to_string(),
        create: words(&["pvcreate", device]),
    }
}

pub fn vg(v: &LvmVg, path: &str, pvs: Vec<String>) -> Result<VgStep, SpecError> {
    if pvs.is_empty() {
        // disko would run `vgcreate NAME` with no PV and fail there.
        return Err(SpecError::invalid(
            path,
            format!("no `lvm_pv` content names vg = \"{}\"; add one on a partition (or LUKS volume) for this volume group", v.name),
        ));
    }
    let mut kernel_modules = vec!["dm-snapshot".to_string()];
    for lv in v.lvs.values() {
        match lv.lvm_type.as_deref() {
            None | Some("thinlv") => {}
            Some(t) => kernel_modules.push(format!("dm-{t}")),
        }
    }
    let mut create = words(&["vgcreate", &v.name]);
    create.extend(pvs.iter().cloned());
    Ok(VgStep { name: v.name.clone(), spec_path: path.to_string(), kernel_modules, pvs, create })
}

/// The LVs of a VG in creation order: a stable sort on priority over the
/// attribute names (lvm_vg.nix:114).
pub fn sorted_lvs(v: &LvmVg) -> Vec<(&String, &Lv)> {
    let mut lvs: Vec<(&String, &Lv)> = v.lvs.iter().collect();
    lvs.sort_by_key(|(_, lv)| lv.priority);
    lvs
}

pub fn lv(vg: &str, lv: &Lv, path: &str) -> Result<LvStep, SpecError> {
    let thin = lv.lvm_type.as_deref() == Some("thinlv");
    // lvm_vg.nix:128-135: -V for a thin LV, -l for anything with a `%`,
    // -L otherwise; a size ending in `%` is of the free space.
    let flag = if thin {
        "-V"
    } else if lv.size.contains('%') {
        "-l"
    } else {
        "-L"
    };
    let size = if lv.size.ends_with('%') { format!("{}FREE", lv.size) } else { lv.size.clone() };
    let mut create = words(&["lvcreate", "--yes", flag, &size, "-n", &lv.name]);
    if thin {
        let Some(pool) = &lv.pool else {
            return Err(SpecError::invalid(
                format!("{path}.pool"),
                "a `thinlv` needs `pool`, the name of its thin-pool LV in the same volume group",
            ));
        };
        create.push(format!("--thinpool={pool}"));
    }
    if let Some(t) = lv.lvm_type.as_deref().filter(|t| *t != "thinlv") {
        create.push(format!("--type={t}"));
    }
    create.extend(shell_split(&lv.extra_args));
    create.push(vg.to_string());
    Ok(LvStep {
        vg: vg.to_string(),
        name: lv.name.clone(),
        device: format!("/dev/{vg}/{}", lv.name),
        spec_path: path.to_string(),
        create,
    })
}

pub fn mdadm(m: &Mdadm, path: &str, members: Vec<String>) -> Result<MdadmStep, SpecError> {
    if members.is_empty() {
        return Err(SpecError::invalid(
            path,
            format!(
                "no `mdraid` content names name = \"{}\"; add one on each member partition",
                m.name
            ),
        ));
    }
    let device = format!("/dev/md/{}", m.name);
    let mut create = words(&["mdadm", "--create", &device]);
    create.push(format!("--level={}", m.level));
    create.push(format!("--raid-devices={}", members.len()));
    create.push(format!("--metadata={}", m.metadata));
    create.push("--force".into());
    create.push("--homehost=any".into());
    // mdadm.nix:72 quotes each extra argument: no word splitting here.
    create.extend(m.extra_args.iter().cloned());
    create.extend(members.iter().cloned());
    Ok(MdadmStep { name: m.name.clone(), device, spec_path: path.to_string(), members, create })
}

/// nixpkgs `lib.toposort`, which disko's `sortDevicesByDependencies`
/// (lib/default.nix:349-358) runs over its device list: the same algorithm,
/// so that devices with no dependency between them keep disko's order.
/// `before(a, b)` is true when `a` must come before `b`. `Err` names the
/// device where a cycle was found.
pub fn toposort<T: Clone>(list: &[T], before: &dyn Fn(&T, &T) -> bool) -> Result<Vec<T>, T> {
    let mut out = Vec::new();
    let mut list = list.to_vec();
    while list.len() >= 2 {
        // listDfs: follow "something is before us" from the head.
        let mut us = list[0].clone();
        let mut visited: Vec<T> = Vec::new();
        let mut rest: Vec<T> = list[1..].to_vec();
        loop {
            if visited.iter().any(|x| before(x, &us)) {
                return Err(us);
            }
            let (right, wrong): (Vec<T>, Vec<T>) =
                std::mem::take(&mut rest).into_iter().partition(|x| before(x, &us));
            if right.is_empty() {
                rest = wrong;
                break;
            }
            visited.insert(0, us);
            us = right[0].clone();
            rest = right[1..].iter().cloned().chain(wrong).collect();
        }
        out.push(us);
        list = visited.into_iter().chain(rest).collect();
    }
    out.extend(list);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toposort_keeps_the_order_of_independent_devices_and_puts_dependencies_first() {
        // lvm_vg comes before mdadm in disko's device list; a VG on an
        // array must follow it.
        let list = ["disk.a", "disk.b", "lvm_vg.pool", "mdadm.md"];
        let deps = |a: &&str, b: &&str| {
            matches!((*a, *b), ("mdadm.md", "lvm_vg.pool"))
                || (b.starts_with("mdadm") && a.starts_with("disk"))
        };
        assert_eq!(
            toposort(&list, &deps).unwrap(),
            vec!["disk.a", "disk.b", "mdadm.md", "lvm_vg.pool"]
        );
        let none = |_: &&str, _: &&str| false;
        assert_eq!(toposort(&list, &none).unwrap(), list.to_vec());
        let cycle = |a: &&str, b: &&str| a != b;
        assert!(toposort(&["x", "y"], &cycle).is_err());
    }

    #[test]
    fn extra_format_args_are_split_as_the_shell_splits_them() {
        assert_eq!(
            shell_split(&["--pbkdf argon2id".into(), "--iter-time".into()]),
            vec!["--pbkdf", "argon2id", "--iter-time"]
        );
    }
}
