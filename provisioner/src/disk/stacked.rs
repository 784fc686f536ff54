//! LUKS, LVM and mdadm: the steps `lab_disko::stacked` plans, carried out
//! with the command lines disko's create, mount and unmount scripts run
//! (docs/disko.md lists them with their disko source lines), each guarded
//! by a check so that a re-run changes nothing:
//!
//! - LUKS: `cryptsetup isLuks` (format only a device blkid finds empty),
//!   `cryptsetup status NAME` (open), `cryptsetup open --test-passphrase`
//!   with each additional key file (add only the missing ones).
//! - LVM: blkid (pvcreate), `vgdisplay` (vgcreate), `lvdisplay` (lvcreate);
//!   a VG found is activated.
//! - mdadm: `mdadm --detail` (the array is running), members with an md
//!   superblock are assembled, blank ones created.
//!
//! Keys never reach a command line, a log or `--json`: a key file is named
//! by its path, a passphrase goes to cryptsetup's stdin (`--key-file -`)
//! from memory that is zeroed after use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lab_cli::prompt::Secret;
use lab_cli::{Cmd, ToolError};
use lab_disko::plan::Step;
use lab_disko::stacked::{KeySource, LuksStep, LvStep, MdadmStep, PvStep, VgStep};

use super::{Action, DiskError};

/// Key files given on the command line (`--luks-key-file NAME=PATH`), by
/// the LUKS volume's `name`. Each stands in for the key the spec names: a
/// key file for `settings.keyFile`/`keyFile`, the passphrase (read as
/// disko reads a `passwordFile`: trailing newlines dropped) for
/// `passwordFile` or `askPassword`.
#[derive(Debug, Clone, Default)]
pub struct LuksKeys {
    pub files: BTreeMap<String, PathBuf>,
}

/// A key ready for cryptsetup.
pub(super) enum Key {
    /// `--key-file PATH` as it is.
    File(PathBuf),
    /// The passphrase, for `--key-file -` on stdin.
    Stdin(Secret),
}

/// The programs the stacked steps run, for the check before any write.
pub(super) fn tools(steps: &[Step], add: &mut dyn FnMut(String)) {
    for s in steps {
        match s {
            Step::Luks(_) => add("cryptsetup".into()),
            Step::LvmPv(_) => add("pvcreate".into()),
            Step::LvmVg(_) => {
                for t in ["modprobe", "pvs", "vgdisplay", "vgcreate", "vgchange"] {
                    add(t.into());
                }
            }
            Step::Lv(_) => {
                add("lvdisplay".into());
                add("lvcreate".into());
            }
            Step::Mdadm(_) => add("mdadm".into()),
            _ => {}
        }
    }
}

/// The package that provides a program, naming those `lab_cli` does not
/// know (the LVM tools beyond the create ones, modprobe).
pub(super) fn package_of(program: &str) -> &'static str {
    match program {
        "pvs" | "vgdisplay" | "lvdisplay" | "vgchange" | "pvcreate" | "vgcreate" | "lvcreate" => {
            "lvm2 (Debian and Nix: lvm2)"
        }
        "cryptsetup" => "cryptsetup (Debian: cryptsetup-bin; Nix: cryptsetup)",
        "mdadm" => "mdadm (Debian and Nix: mdadm)",
        "modprobe" => "kmod (Debian and Nix: kmod)",
        other => lab_cli::tool::package_of(other),
    }
}

/// Checks `--luks-key-file` names against the spec's LUKS volumes.
pub(super) fn check_key_names(steps: &[Step], keys: &LuksKeys) -> Result<(), DiskError> {
    let names: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Luks(l) => Some(l.name.as_str()),
            _ => None,
        })
        .collect();
    for name in keys.files.keys() {
        if !names.contains(&name.as_str()) {
            return Err(DiskError::UnknownLuksKey {
                name: name.clone(),
                known: if names.is_empty() { "none".into() } else { names.join(", ") },
            });
        }
    }
    Ok(())
}

/// The spec's disks as given: block devices by their kernel name, image
/// files by path (their loop devices name them as the backing file).
struct OurDisks {
    names: BTreeSet<String>,
    files: BTreeSet<PathBuf>,
}

impl OurDisks {
    fn new(disks: &[PathBuf]) -> OurDisks {
        let mut ours = OurDisks { names: BTreeSet::new(), files: BTreeSet::new() };
        for d in disks {
            let Ok(real) = std::fs::canonicalize(d) else { continue };
            if std::fs::metadata(&real).map(|m| m.is_file()).unwrap_or(false) {
                ours.files.insert(real);
            } else if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
                ours.names.insert(name.to_string());
            }
        }
        ours
    }

    /// Whether block device `dev` lies on our disks: one of them, a
    /// partition of one, a loop device of one of our image files, or a
    /// device (dm, md) all of whose underlying devices do (sysfs `slaves`).
    fn hold(&self, dev: &Path) -> bool {
        kernel_name(dev).is_some_and(|n| self.hold_name(&n, 0))
    }

    fn hold_name(&self, name: &str, depth: u32) -> bool {
        if depth > 8 {
            return false;
        }
        if self.names.contains(name) {
            return true;
        }
        let sys = Path::new("/sys/class/block").join(name);
        if let Ok(file) = std::fs::read_to_string(sys.join("loop/backing_file")) {
            if self.files.contains(Path::new(file.trim())) {
                return true;
            }
        }
        if sys.join("partition").exists() {
            let parent = std::fs::canonicalize(&sys).ok().and_then(|p| {
                p.parent().and_then(|q| q.file_name()).and_then(|n| n.to_str()).map(String::from)
            });
            return parent.is_some_and(|p| self.hold_name(&p, depth + 1));
        }
        let slaves: Vec<String> = std::fs::read_dir(sys.join("slaves"))
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect())
            .unwrap_or_default();
        !slaves.is_empty() && slaves.iter().all(|s| self.hold_name(s, depth + 1))
    }
}

/// The kernel's name of block device node `dev` (`dm-0` for
/// /dev/mapper/crypted, which without udev is a node, not a link), from
/// its device number through /sys/dev/block.
fn kernel_name(dev: &Path) -> Option<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(dev).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    // Linux's dev_t layout (glibc's gnu_dev_major/minor).
    let rdev = meta.rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    sys.file_name()?.to_str().map(String::from)
}

/// disko finds a LUKS volume, volume group or array by its name alone; on
/// a machine that has its own `crypted` or `pool` that would open, mount
/// and close the machine's volumes as the spec's. Every such name that
/// exists here must lie on the spec's disks (`disks`); checked before
/// anything is written, opened or closed. A holder that is not a device
/// here (only stub tools report such) is not judged.
pub(super) fn check_names_are_ours(steps: &[Step], disks: &[PathBuf]) -> Result<(), DiskError> {
    let ours = OurDisks::new(disks);
    let taken = |kind, name: &str, holder: PathBuf| DiskError::NameTaken {
        kind,
        name: name.to_string(),
        holder,
    };
    for s in steps {
        match s {
            Step::Luks(l) => {
                if let Some(backing) = luks_backing(&l.name)? {
                    if backing.exists() && !ours.hold(&backing) {
                        return Err(taken("LUKS volume", &l.name, backing));
                    }
                }
            }
            Step::LvmVg(v) => {
                let out =
                    Cmd::new("pvs").args(["--noheadings", "-o", "pv_name,vg_name"]).probe()?;
                for line in out.text().lines() {
                    let mut f = line.split_whitespace();
                    if let (Some(pv), Some(vg)) = (f.next(), f.next()) {
                        if vg == v.name && Path::new(pv).exists() && !ours.hold(Path::new(pv)) {
                            return Err(taken("volume group", &v.name, PathBuf::from(pv)));
                        }
                    }
                }
            }
            Step::Mdadm(m) => {
                // Only a running array: without udev a stopped one leaves
                // its node (and an empty md device) behind.
                let dev = Path::new(&m.device);
                if array_running(&m.device)? && dev.exists() && !ours.hold(dev) {
                    let holder = std::fs::canonicalize(dev).unwrap_or_else(|_| dev.to_path_buf());
                    return Err(taken("array", &m.device, holder));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The device under open LUKS volume `name` (`cryptsetup status NAME`'s
/// `device:` line), or None when it is not open.
fn luks_backing(name: &str) -> Result<Option<PathBuf>, DiskError> {
    let out = Cmd::new("cryptsetup").args(["status", name]).probe()?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out
        .text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("device:").map(|d| PathBuf::from(d.trim())))
        .or_else(|| Some(PathBuf::from(format!("/dev/mapper/{name}")))))
}

/// Whether LUKS volume `name` is open (`cryptsetup status NAME`).
fn is_open(name: &str) -> Result<bool, DiskError> {
    Ok(Cmd::new("cryptsetup").args(["status", name]).probe()?.success())
}

/// Gathers the key of every LUKS volume that needs one (not open yet, or
/// with additional key files to add), asking for passphrases now: before
/// the first write, so that a missing terminal or key file stops apply
/// with nothing written. `confirm` asks twice (formatting may follow).
pub(super) fn gather_keys(
    steps: &[Step],
    keys: &LuksKeys,
    confirm: bool,
) -> Result<BTreeMap<String, Key>, DiskError> {
    let mut out = BTreeMap::new();
    for s in steps {
        let Step::Luks(l) = s else { continue };
        if is_open(&l.name)? && (!confirm || l.additional_key_files.is_empty()) {
            continue;
        }
        let given = keys.files.get(&l.name);
        let key = match (&l.key, given) {
            (KeySource::KeyFile { path }, given) => {
                let path = given.cloned().unwrap_or_else(|| PathBuf::from(path));
                if !path.is_file() {
                    return Err(DiskError::LuksKeyFile {
                        name: l.name.clone(),
                        path,
                        why: "does not exist here (disko reads it on the machine it runs on)"
                            .into(),
                    });
                }
                Key::File(path)
            }
            (KeySource::PasswordFile { .. }, Some(path)) | (KeySource::Ask, Some(path)) => {
                Key::Stdin(read_password_file(&l.name, path)?)
            }
            (KeySource::PasswordFile { path }, None) => {
                Key::Stdin(read_password_file(&l.name, Path::new(path))?)
            }
            (KeySource::Ask, None) => {
                let prompt = format!("Passphrase for LUKS volume `{}` on {}", l.name, l.device);
                match lab_cli::prompt::passphrase(&prompt, confirm) {
                    Ok(p) => Key::Stdin(p),
                    Err(lab_cli::prompt::Declined::NoTerminal { .. }) => {
                        return Err(DiskError::NoPassphrase {
                            name: l.name.clone(),
                            device: l.device.clone(),
                            spec_path: l.spec_path.clone(),
                        })
                    }
                    Err(e) => {
                        return Err(DiskError::Io {
                            path: PathBuf::from("/dev/tty"),
                            source: std::io::Error::other(e.to_string()),
                        })
                    }
                }
            }
        };
        out.insert(l.name.clone(), key);
    }
    Ok(out)
}

/// A passphrase file as disko reads it (`$(cat FILE)`: trailing newlines
/// dropped, luks.nix:20).
fn read_password_file(name: &str, path: &Path) -> Result<Secret, DiskError> {
    let mut bytes = std::fs::read(path).map_err(|e| DiskError::LuksKeyFile {
        name: name.to_string(),
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let len = bytes.iter().rposition(|b| *b != b'\n').map_or(0, |i| i + 1);
    // Secret zeroes the whole buffer when dropped, the cut newlines too.
    bytes.truncate(len);
    let bytes = Secret::new(bytes);
    if bytes.as_bytes().is_empty() {
        return Err(DiskError::LuksKeyFile {
            name: name.to_string(),
            path: path.to_path_buf(),
            why: "is empty (a passphrase is needed)".into(),
        });
    }
    Ok(bytes)
}

/// A planned command line with the spec's device paths replaced by the
/// nodes that hold them here, and a `--luks-key-file` path in place of the
/// spec's key file.
fn localize(argv: &[String], node: &dyn Fn(&str) -> PathBuf, key: Option<&Key>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(argv.len());
    for a in argv {
        if out.last().is_some_and(|p| p == "--key-file") {
            match key {
                Some(Key::File(p)) => out.push(p.display().to_string()),
                _ => out.push(a.clone()),
            }
        } else if a.starts_with("/dev/") {
            out.push(node(a).display().to_string());
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// A cryptsetup command with its key on stdin when it is a passphrase.
fn cryptsetup(argv: &[String], key: Option<&Key>) -> Cmd {
    let cmd = Cmd::new(&argv[0]).args(&argv[1..]);
    match key {
        Some(Key::Stdin(secret)) => cmd.stdin(secret.as_bytes()),
        _ => cmd,
    }
}

/// What blkid says a device holds (its TYPE), if anything.
pub(super) fn blkid_type(dev: &Path) -> Result<Option<String>, DiskError> {
    let out = Cmd::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(dev).probe()?;
    let t = out.text().trim().to_string();
    Ok(if out.success() && !t.is_empty() { Some(t) } else { None })
}

/// Whether an earlier action wrote to a disk (for the wrong-key message).
fn written(actions: &[Action]) -> &'static str {
    let wrote = actions.iter().any(|a| {
        a.done
            && !["open", "activate", "assemble", "mount", "modprobe"]
                .iter()
                .any(|w| a.what.starts_with(w))
    });
    if wrote {
        "the steps before it were done (see above); re-running resumes"
    } else {
        "nothing was written"
    }
}

fn done(what: String, detail: String) -> Action {
    Action { what, done: true, detail }
}

fn kept(what: String, detail: impl Into<String>) -> Action {
    Action { what, done: false, detail: detail.into() }
}

/// Opens LUKS volume `l` with `argv` (create's or mount's open command),
/// telling a wrong key from other failures.
fn open(
    l: &LuksStep,
    argv: &[String],
    key: Option<&Key>,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    let cmd = cryptsetup(argv, key);
    let shown = cmd.shown();
    let out = cmd.probe()?;
    if !out.success() {
        // cryptsetup's exit code 2: no key slot opens with this key.
        if out.status.code() == Some(2) {
            return Err(DiskError::WrongLuksKey {
                name: l.name.clone(),
                device: argv[2].clone(),
                written: written(actions).into(),
            });
        }
        return Err(ToolError::Failed {
            command: shown,
            status: out.status.to_string(),
            stderr: out.stderr,
        }
        .into());
    }
    actions.push(done(format!("open {}", l.name), format!("{} on {}", l.mapper, argv[2])));
    Ok(())
}

/// luks.nix `_create`: format unless it is LUKS, open unless open, add
/// the additional key files that do not open it yet.
pub(super) fn create_luks(
    l: &LuksStep,
    node: &dyn Fn(&str) -> PathBuf,
    keys: &BTreeMap<String, Key>,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    let key = keys.get(&l.name);
    let dev = node(&l.device);
    let is_luks = Cmd::new("cryptsetup").arg("isLuks").arg(&dev).probe()?.success();
    if is_luks {
        actions
            .push(kept(format!("luksFormat {}", l.device), format!("{} is LUKS", dev.display())));
    } else {
        if let Some(found) = blkid_type(&dev)? {
            return Err(DiskError::Foreign { device: dev, found, wanted: "LUKS".into() });
        }
        let key = key.ok_or_else(|| missing_key(l))?;
        let argv = localize(&l.format, node, Some(key));
        cryptsetup(&argv, Some(key))
            .label(format!("formatting {} as LUKS", dev.display()))
            .stream()?;
        actions.push(done(format!("luksFormat {}", l.device), argv.join(" ")));
    }
    if is_open(&l.name)? {
        actions.push(kept(format!("open {}", l.name), format!("{} is open", l.mapper)));
    } else {
        let key = key.ok_or_else(|| missing_key(l))?;
        open(l, &localize(&l.open_persistent(), node, Some(key)), Some(key), actions)?;
    }
    for f in &l.additional_key_files {
        let opens = Cmd::new("cryptsetup")
            .args(["open", "--test-passphrase"])
            .arg(&dev)
            .args(["--key-file", f])
            .probe()?
            .success();
        if opens {
            actions.push(kept(format!("luksAddKey {f}"), "already opens the volume"));
            continue;
        }
        let key = key.ok_or_else(|| missing_key(l))?;
        let argv = localize(&l.add_key(f), node, Some(key));
        cryptsetup(&argv, Some(key)).run()?;
        actions.push(done(format!("luksAddKey {f}"), argv.join(" ")));
    }
    Ok(())
}

fn missing_key(l: &LuksStep) -> DiskError {
    DiskError::NoPassphrase {
        name: l.name.clone(),
        device: l.device.clone(),
        spec_path: l.spec_path.clone(),
    }
}

/// lvm_pv.nix `_create`: pvcreate where blkid finds nothing.
pub(super) fn create_pv(
    p: &PvStep,
    node: &dyn Fn(&str) -> PathBuf,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    let dev = node(&p.device);
    match blkid_type(&dev)? {
        Some(t) if t == "LVM2_member" => actions
            .push(kept(format!("pvcreate {}", p.device), format!("{} is a PV", dev.display()))),
        Some(found) => {
            return Err(DiskError::Foreign { device: dev, found, wanted: "an LVM PV".into() })
        }
        None => {
            let argv = localize(&p.create, node, None);
            Cmd::new(&argv[0]).args(&argv[1..]).run()?;
            actions.push(done(format!("pvcreate {}", p.device), argv.join(" ")));
        }
    }
    Ok(())
}

/// lvm_vg.nix `_create` for the VG: modules, vgcreate unless it exists;
/// an existing VG is activated (its LVs get their nodes back after an
/// unmount), as disko's mount does.
pub(super) fn create_vg(
    v: &VgStep,
    node: &dyn Fn(&str) -> PathBuf,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    for m in &v.kernel_modules {
        Cmd::new("modprobe").arg(m).run()?;
    }
    if Cmd::new("vgdisplay").arg(&v.name).probe()?.success() {
        actions.push(kept(format!("vgcreate {}", v.name), "the volume group exists"));
        activate_vg(&v.name, actions)?;
    } else {
        let argv = localize(&v.create, node, None);
        Cmd::new(&argv[0]).args(&argv[1..]).run()?;
        actions.push(done(format!("vgcreate {}", v.name), argv.join(" ")));
    }
    Ok(())
}

/// lvm_vg.nix:124-141: lvcreate unless `lvdisplay VG/LV` finds it.
pub(super) fn create_lv(l: &LvStep, actions: &mut Vec<Action>) -> Result<(), DiskError> {
    let what = format!("lvcreate {}/{}", l.vg, l.name);
    if Cmd::new("lvdisplay").arg(format!("{}/{}", l.vg, l.name)).probe()?.success() {
        actions.push(kept(what, "the logical volume exists"));
    } else {
        Cmd::new(&l.create[0]).args(&l.create[1..]).run()?;
        actions.push(done(what, l.create.join(" ")));
    }
    Ok(())
}

fn activate_vg(name: &str, actions: &mut Vec<Action>) -> Result<(), DiskError> {
    Cmd::new("vgchange").args(["-a", "y", name]).run()?;
    actions.push(done(format!("activate {name}"), format!("vgchange -a y {name}")));
    Ok(())
}

/// Whether the array runs (`mdadm --detail` answers for it).
fn array_running(dev: &str) -> Result<bool, DiskError> {
    Ok(Cmd::new("mdadm").args(["--detail", dev]).probe()?.success())
}

/// Assembles an array from members that carry its superblock.
fn assemble(m: &MdadmStep, members: &[String], actions: &mut Vec<Action>) -> Result<(), DiskError> {
    Cmd::new("mdadm").args(["--assemble", &m.device]).args(members).run()?;
    actions.push(done(format!("assemble {}", m.device), members.join(" ")));
    Ok(())
}

/// mdadm.nix `_create`: the array unless it runs; members that already
/// carry an md superblock are assembled instead of created again.
pub(super) fn create_mdadm(
    m: &MdadmStep,
    node: &dyn Fn(&str) -> PathBuf,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    if array_running(&m.device)? {
        actions.push(kept(format!("mdadm --create {}", m.device), "the array runs"));
        return Ok(());
    }
    let members: Vec<String> = m.members.iter().map(|d| node(d).display().to_string()).collect();
    let mut raid = 0;
    for dev in &members {
        match blkid_type(Path::new(dev))? {
            Some(t) if t == "linux_raid_member" => raid += 1,
            Some(found) => {
                return Err(DiskError::Foreign {
                    device: PathBuf::from(dev),
                    found,
                    wanted: format!("a member of {}", m.device),
                });
            }
            None => {}
        }
    }
    if raid > 0 {
        return assemble(m, &members, actions);
    }
    let argv = localize(&m.create, node, None);
    // disko answers mdadm's "Continue creating array?" with `echo 'y' |`.
    Cmd::new(&argv[0])
        .args(&argv[1..])
        .stdin(b"y\n")
        .label(format!("creating {}", m.device))
        .stream()?;
    actions.push(done(format!("mdadm --create {}", m.device), argv.join(" ")));
    // mdadm.nix:74-78: partprobe, udev, and wipe what the new array seems
    // to hold (its members' old data can look like a table).
    let dev = PathBuf::from(&m.device);
    super::devices::notify_kernel(&dev);
    let _ = Cmd::new("udevadm").args(["trigger", "--subsystem-match=block"]).probe();
    let _ = Cmd::new("udevadm").args(["settle", "--timeout=120"]).probe();
    if dev.exists() {
        let (sector_size, _) = super::target::geometry(&dev)?;
        super::table::zap(&dev, sector_size)?;
        actions.push(done(format!("zap {}", m.device), "sgdisk --zap-all (in-process)".into()));
    }
    Ok(())
}

/// What disko's mount script does to the stacked devices before mounting
/// (luks.nix:184-200, lvm_vg.nix:158-161), plus assembling arrays that
/// are not running (disko leaves that to udev: mdadm.nix:86).
pub(super) fn activate(
    steps: &[Step],
    node: &dyn Fn(&str) -> PathBuf,
    keys: &BTreeMap<String, Key>,
    actions: &mut Vec<Action>,
) -> Result<(), DiskError> {
    for s in steps {
        match s {
            Step::Luks(l) => {
                if is_open(&l.name)? {
                    actions.push(kept(format!("open {}", l.name), format!("{} is open", l.mapper)));
                    continue;
                }
                let key = keys.get(&l.name).ok_or_else(|| missing_key(l))?;
                open(l, &localize(&l.open, node, Some(key)), Some(key), actions)?;
            }
            Step::LvmVg(v) => activate_vg(&v.name, actions)?,
            Step::Mdadm(m) => {
                if array_running(&m.device)? {
                    actions.push(kept(format!("assemble {}", m.device), "the array runs"));
                    continue;
                }
                let members: Vec<String> =
                    m.members.iter().map(|d| node(d).display().to_string()).collect();
                assemble(m, &members, actions)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What disko's unmount script does after the unmounts, devices in
/// reverse order (luks.nix:211-216, lvm_vg.nix:174-177, mdadm.nix:96-101).
pub(super) fn deactivate(steps: &[Step], actions: &mut Vec<Action>) -> Result<(), DiskError> {
    for s in steps.iter().rev() {
        match s {
            Step::Luks(l) => {
                if is_open(&l.name)? {
                    Cmd::new("cryptsetup").args(["close", &l.name]).run()?;
                    actions.push(done(format!("close {}", l.name), l.mapper.clone()));
                } else {
                    actions.push(kept(format!("close {}", l.name), "not open"));
                }
            }
            Step::LvmVg(v) => {
                // disko runs `vgchange -a n` for every VG of the machine;
                // labprov only for the spec's own.
                if Cmd::new("vgdisplay").arg(&v.name).probe()?.success() {
                    Cmd::new("vgchange").args(["-a", "n", &v.name]).run()?;
                    actions.push(done(format!("deactivate {}", v.name), String::new()));
                } else {
                    actions.push(kept(format!("deactivate {}", v.name), "no such volume group"));
                }
            }
            Step::Mdadm(m) => {
                if array_running(&m.device)? {
                    Cmd::new("mdadm").args(["--stop", &m.device]).run()?;
                    actions.push(done(format!("stop {}", m.device), String::new()));
                } else {
                    actions.push(kept(format!("stop {}", m.device), "not running"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
