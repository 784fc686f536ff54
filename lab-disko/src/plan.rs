//! The ordered plan disko's create and mount scripts follow, as data: which
//! table goes on which disk, what is formatted how, what is mounted where.
//! Partition positions are resolved here too ([`resolve_table`]) once the
//! disk's size is known; the provisioner only writes what this computes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{Btrfs, Content, Devices, Gpt, Table};
use super::parted::{self, PartedError};
use super::sgdisk::{self, GeometryError, Layout};
use super::stacked::{self, LuksStep, LvStep, MdadmStep, PvStep, VgStep};
use super::SpecError;

/// One step, in the order disko runs them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Step {
    /// Write (or complete) the partition table of a spec disk.
    Partition { disk: String, device: String, table: TablePlan },
    /// `mkfs.FORMAT EXTRA DEVICE` where blkid finds no filesystem.
    Format { device: String, format: String, extra_args: Vec<String> },
    /// `mkswap EXTRA DEVICE` where blkid finds nothing.
    Mkswap { device: String, extra_args: Vec<String> },
    /// `mkfs.btrfs DEVICE EXTRA`, then the subvolumes that are missing.
    Btrfs { device: String, extra_args: Vec<String>, subvolumes: Vec<String> },
    /// A LUKS volume: format where it is not LUKS, open, add key files.
    Luks(LuksStep),
    /// An LVM physical volume (`pvcreate` where blkid finds nothing).
    LvmPv(PvStep),
    /// An LVM volume group (`vgcreate` unless it exists).
    LvmVg(VgStep),
    /// An LVM logical volume (`lvcreate` unless it exists).
    Lv(LvStep),
    /// An mdadm array (`mdadm --create` unless it is there).
    Mdadm(MdadmStep),
    /// A content type labprov plans but cannot create yet.
    Unsupported { device: String, kind: String, spec_path: String },
    /// `mount -t TYPE DEVICE ROOT/MOUNTPOINT -o OPTIONS -o X-mount.mkdir`.
    Mount { device: String, mountpoint: String, fs_type: String, options: Vec<String> },
}

/// A partition table to write, in the words of the tool disko would call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum TablePlan {
    /// disko's `gpt` type: one `sgdisk --new` per partition.
    Gpt { partitions: Vec<GptPart>, hybrid: Vec<u32>, efi_gpt_partition_first: bool },
    /// disko's legacy `table` type: `parted mklabel` and `mkpart`.
    Parted { format: String, partitions: Vec<PartedPart> },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GptPart {
    pub number: u32,
    /// The partition's option path (`disko.devices.disk.main.content.partitions.ESP`),
    /// for errors that only show up once the disk's size is known.
    pub spec_path: String,
    pub label: String,
    pub type_code: String,
    pub type_guid: String,
    /// false when sgdisk does not know the code and writes Linux filesystem.
    pub type_known: bool,
    pub start: String,
    pub end: String,
    pub alignment: u64,
    pub attributes: Vec<u8>,
    pub uuid: Option<String>,
    pub device: String,
    pub hybrid_type: Option<String>,
    pub hybrid_bootable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartedPart {
    pub index: usize,
    /// The partition's option path (`...content.partitions.[0]`).
    pub spec_path: String,
    /// On gpt, the name parted writes: the spec's name escaped as disko
    /// escapes it (`name with spaces` is `name\x20with\x20spaces` on disk);
    /// on msdos, the spec's name, which nothing writes.
    pub name: Option<String>,
    pub part_type: String,
    pub fs_type: Option<String>,
    pub start: String,
    pub end: String,
    pub flags: Vec<String>,
    pub bootable: bool,
    pub device: String,
}

/// The ordered steps for all devices, in disko's create order: devices
/// sorted by their dependencies as disko sorts them (a VG after the disks
/// and arrays its PVs are on, an array after its members' disks; otherwise
/// disk, lvm_vg, mdadm, each by name), each device's steps in its order
/// (a table, then the contents of its partitions in partition order);
/// mounts after everything, sorted by mountpoint so parents come first.
pub fn plan(devices: &Devices) -> Result<Vec<Step>, SpecError> {
    let mut walk = Walk::default();
    for (kind, key) in device_order(devices)? {
        match kind {
            "disk" => {
                let disk = &devices.disk[&key];
                if let Some(c) = &disk.content {
                    let path = format!("disko.devices.disk.{key}.content");
                    walk.content(c, &path, Some(&key))?;
                }
            }
            "mdadm" => {
                let md = &devices.mdadm[&key];
                let path = format!("disko.devices.mdadm.{key}");
                let members = walk.members.remove(&md.name).unwrap_or_default();
                walk.steps.push(Step::Mdadm(stacked::mdadm(md, &path, members)?));
                if let Some(c) = &md.content {
                    walk.content(c, &format!("{path}.content"), None)?;
                }
            }
            "lvm_vg" => {
                let vg = &devices.lvm_vg[&key];
                let path = format!("disko.devices.lvm_vg.{key}");
                let pvs = walk.pvs.remove(&vg.name).unwrap_or_default();
                walk.steps.push(Step::LvmVg(stacked::vg(vg, &path, pvs)?));
                // lvm_vg.nix:123-146: every lvcreate first, then every
                // LV's content, both in priority order.
                let lvs = stacked::sorted_lvs(vg);
                for (lv_key, lv) in &lvs {
                    let lv_path = format!("{path}.lvs.{lv_key}");
                    walk.steps.push(Step::Lv(stacked::lv(&vg.name, lv, &lv_path)?));
                }
                for (lv_key, lv) in &lvs {
                    if let Some(c) = &lv.content {
                        walk.content(c, &format!("{path}.lvs.{lv_key}.content"), None)?;
                    }
                }
            }
            _ => {}
        }
    }
    let Walk { mut steps, mut mounts, .. } = walk;
    for nd in devices.nodev.values() {
        mounts.push(Step::Mount {
            device: nd.device.clone(),
            mountpoint: nd.mountpoint.clone(),
            fs_type: nd.fs_type.clone(),
            options: nd.mount_options.clone(),
        });
    }
    mounts.sort_by(|a, b| mountpoint_of(a).cmp(mountpoint_of(b)));
    steps.extend(mounts);
    Ok(steps)
}

/// disko's `sortDevicesByDependencies` over its `deviceList`: the device
/// types in attribute order (disk, lvm_vg, mdadm, nodev), each by name,
/// then `lib.toposort` with "a VG depends on every top-level device one of
/// its PVs sits on, an array on every device one of its members sits on"
/// (the `deviceDependencies` of lvm_pv.nix:35 and mdraid.nix:36). As in
/// disko, dependencies name a VG or array by its `name` option and are
/// looked up under the attribute name.
fn device_order(devices: &Devices) -> Result<Vec<(&'static str, String)>, SpecError> {
    let mut list: Vec<(&'static str, String)> = Vec::new();
    list.extend(devices.disk.keys().map(|k| ("disk", k.clone())));
    list.extend(devices.lvm_vg.keys().map(|k| ("lvm_vg", k.clone())));
    list.extend(devices.mdadm.keys().map(|k| ("mdadm", k.clone())));
    list.extend(devices.nodev.keys().map(|k| ("nodev", k.clone())));
    // (kind, name) -> the top-level devices it depends on.
    let mut deps: BTreeMap<(&'static str, String), Vec<(&'static str, String)>> = BTreeMap::new();
    let mut note = |top: &(&'static str, String), c: &Content| {
        let mut found = Vec::new();
        dependencies(c, &mut found);
        for d in found {
            deps.entry(d).or_default().push(top.clone());
        }
    };
    for top in &list {
        let content = match top.0 {
            "disk" => devices.disk[&top.1].content.as_ref(),
            "mdadm" => devices.mdadm[&top.1].content.as_ref(),
            "lvm_vg" => {
                for lv in devices.lvm_vg[&top.1].lvs.values() {
                    if let Some(c) = &lv.content {
                        note(top, c);
                    }
                }
                None
            }
            _ => None,
        };
        if let Some(c) = content {
            note(top, c);
        }
    }
    let before = |a: &(&'static str, String), b: &(&'static str, String)| {
        deps.get(b).is_some_and(|d| d.contains(a))
    };
    stacked::toposort(&list, &before).map_err(|(kind, key)| {
        SpecError::invalid(
            format!("disko.devices.{kind}.{key}"),
            "its devices depend on each other in a cycle (a PV or array member inside what it builds); disko aborts here too",
        )
    })
}

/// The VGs (`lvm_pv.vg`) and arrays (`mdraid.name`) that content feeds.
fn dependencies(c: &Content, out: &mut Vec<(&'static str, String)>) {
    match c {
        Content::LvmPv(p) => out.push(("lvm_vg", p.vg.clone())),
        Content::Mdraid(m) => out.push(("mdadm", m.name.clone())),
        Content::Luks(l) => {
            if let Some(c) = &l.content {
                dependencies(c, out);
            }
        }
        Content::Gpt(g) => {
            for p in g.partitions.values() {
                if let Some(c) = &p.content {
                    dependencies(c, out);
                }
            }
        }
        Content::Table(t) => {
            for p in &t.partitions {
                if let Some(c) = &p.content {
                    dependencies(c, out);
                }
            }
        }
        Content::Filesystem(_) | Content::Swap(_) | Content::Btrfs(_) => {}
    }
}

fn mountpoint_of(s: &Step) -> &str {
    match s {
        Step::Mount { mountpoint, .. } => mountpoint,
        _ => "",
    }
}

/// The steps so far, the mounts (sorted at the end), and what disko keeps
/// in its `$disko_devices_dir` files: each VG's PVs and each array's
/// members, in the order their steps ran.
#[derive(Default)]
struct Walk {
    steps: Vec<Step>,
    mounts: Vec<Step>,
    pvs: BTreeMap<String, Vec<String>>,
    members: BTreeMap<String, Vec<String>>,
}

impl Walk {
    /// The steps of one content. `disk` is the spec disk's name when the
    /// content sits directly on that disk (where a partition table may go).
    fn content(&mut self, c: &Content, path: &str, disk: Option<&str>) -> Result<(), SpecError> {
        match c {
            Content::Gpt(g) => {
                let Some(disk) = disk else {
                    return self.table_elsewhere(&g.device, path);
                };
                self.steps.push(Step::Partition {
                    disk: disk.to_string(),
                    device: g.device.clone(),
                    table: gpt_plan(g, path)?,
                });
                for (_, p) in g.sorted() {
                    if let Some(pc) = &p.content {
                        let ppath = format!("{path}.partitions.{}.content", p.name);
                        self.content(pc, &ppath, None)?;
                    }
                }
            }
            Content::Table(t) => {
                let Some(disk) = disk else {
                    return self.table_elsewhere(&t.device, path);
                };
                self.steps.push(Step::Partition {
                    disk: disk.to_string(),
                    device: t.device.clone(),
                    table: table_plan(t, path)?,
                });
                for (i, p) in t.partitions.iter().enumerate() {
                    if let Some(pc) = &p.content {
                        let ppath = format!("{path}.partitions.[{i}].content");
                        self.content(pc, &ppath, None)?;
                    }
                }
            }
            Content::Filesystem(f) => {
                self.steps.push(Step::Format {
                    device: f.device.clone(),
                    format: f.format.clone(),
                    extra_args: f.extra_args.clone(),
                });
                if let Some(mp) = &f.mountpoint {
                    self.mounts.push(Step::Mount {
                        device: f.device.clone(),
                        mountpoint: mp.clone(),
                        fs_type: f.format.clone(),
                        options: f.mount_options.clone(),
                    });
                }
            }
            Content::Swap(s) => {
                self.steps.push(Step::Mkswap {
                    device: s.device.clone(),
                    extra_args: s.extra_args.clone(),
                });
            }
            Content::Btrfs(b) => btrfs(b, path, &mut self.steps, &mut self.mounts)?,
            Content::Luks(l) => {
                self.steps.push(Step::Luks(stacked::luks(l, path)?));
                if let Some(inner) = &l.content {
                    self.content(inner, &format!("{path}.content"), None)?;
                }
            }
            Content::LvmPv(p) => {
                self.pvs.entry(p.vg.clone()).or_default().push(p.device.clone());
                self.steps.push(Step::LvmPv(stacked::pv(&p.device, &p.vg, path)));
            }
            Content::Mdraid(m) => {
                // mdraid.nix:43 only notes the member; the array is made
                // when its mdadm device comes.
                self.members.entry(m.name.clone()).or_default().push(m.device.clone());
            }
        }
        Ok(())
    }

    /// A partition table on a device labprov creates itself (an mdadm
    /// array, a LUKS volume): disko runs sgdisk on it once it exists.
    // TODO: write it in the step loop once the array exists (the table
    // code reads every disk before the first write today).
    fn table_elsewhere(&mut self, device: &str, path: &str) -> Result<(), SpecError> {
        self.steps.push(Step::Unsupported {
            device: device.to_string(),
            kind: "a partition table inside an mdadm array or LUKS volume (disko runs sgdisk on /dev/md/NAME or /dev/mapper/NAME)".into(),
            spec_path: path.to_string(),
        });
        Ok(())
    }
}

fn btrfs(
    b: &Btrfs,
    path: &str,
    steps: &mut Vec<Step>,
    mounts: &mut Vec<Step>,
) -> Result<(), SpecError> {
    if !b.swap.is_empty() || b.subvolumes.values().any(|s| !s.swap.is_empty()) {
        // TODO: btrfs swap files (`btrfs filesystem mkswapfile`) are not
        // created yet; planned as unsupported so apply refuses up front.
        steps.push(Step::Unsupported {
            device: b.device.clone(),
            kind: "btrfs swap file".into(),
            spec_path: format!("{path}.swap"),
        });
    }
    let mut subs: Vec<&super::model::Subvolume> = b.subvolumes.values().collect();
    subs.sort_by(|a, b| a.name.cmp(&b.name));
    steps.push(Step::Btrfs {
        device: b.device.clone(),
        extra_args: b.extra_args.clone(),
        subvolumes: subs.iter().map(|s| s.name.clone()).collect(),
    });
    if let Some(mp) = &b.mountpoint {
        mounts.push(Step::Mount {
            device: b.device.clone(),
            mountpoint: mp.clone(),
            fs_type: "btrfs".into(),
            options: b.mount_options.clone(),
        });
    }
    for s in subs {
        if let Some(mp) = &s.mountpoint {
            let mut options = s.mount_options.clone();
            options.push(format!("subvol={}", s.name));
            mounts.push(Step::Mount {
                device: b.device.clone(),
                mountpoint: mp.clone(),
                fs_type: "btrfs".into(),
                options,
            });
        }
    }
    Ok(())
}

fn gpt_plan(g: &Gpt, path: &str) -> Result<TablePlan, SpecError> {
    let mut partitions = Vec::new();
    let mut hybrid = Vec::new();
    for (number, p) in g.sorted() {
        let (type_guid, type_known) = sgdisk::type_guid(&p.type_code);
        let mut attributes = Vec::new();
        for a in &p.attributes {
            match u8::try_from(*a) {
                Ok(bit) if bit < 64 => attributes.push(bit),
                _ => {
                    return Err(SpecError::invalid(
                        format!("{path}.partitions.{}.attributes", p.name),
                        format!("attribute bit {a} is not in 0..=63"),
                    ))
                }
            }
        }
        if p.alignment < 0 {
            return Err(SpecError::invalid(
                format!("{path}.partitions.{}.alignment", p.name),
                "alignment must not be negative",
            ));
        }
        if p.hybrid.is_some() {
            hybrid.push(number);
        }
        partitions.push(GptPart {
            number,
            spec_path: format!("{path}.partitions.{}", super::normalize::quote_attr(&p.name)),
            label: p.label.clone(),
            type_code: p.type_code.clone(),
            type_guid,
            type_known,
            start: p.start.clone(),
            end: p.end.clone(),
            alignment: p.alignment as u64,
            attributes,
            uuid: p.uuid.clone(),
            device: p.device.clone(),
            hybrid_type: p.hybrid.as_ref().and_then(|h| h.mbr_partition_type.clone()),
            hybrid_bootable: p.hybrid.as_ref().is_some_and(|h| h.mbr_bootable_flag),
        });
    }
    let hundreds: Vec<&str> =
        g.partitions.values().filter(|p| p.size == "100%").map(|p| p.name.as_str()).collect();
    if hundreds.len() > 1 {
        return Err(SpecError::invalid(
            format!("{path}.partitions"),
            format!(
                "{} partitions ({}) have size \"100%\"; only one can take the rest of the disk (sgdisk finds no space for the next); give all but one a fixed size",
                hundreds.len(),
                hundreds.join(", ")
            ),
        ));
    }
    Ok(TablePlan::Gpt { partitions, hybrid, efi_gpt_partition_first: g.efi_gpt_partition_first })
}

fn table_plan(t: &Table, path: &str) -> Result<TablePlan, SpecError> {
    let mut partitions = Vec::new();
    for (i, p) in t.partitions.iter().enumerate() {
        if p.part_type != "primary" {
            return Err(SpecError::unsupported(
                format!("{path}.partitions.[{i}].part-type"),
                "only primary partitions are supported by labprov; use `gpt` or primary partitions",
            ));
        }
        for f in &p.flags {
            if parted_flag(&t.format, f).is_none() {
                return Err(SpecError::unsupported(
                    format!("{path}.partitions.[{i}].flags"),
                    format!(
                        "parted flag `{f}` is not supported by labprov on a {} table",
                        t.format
                    ),
                ));
            }
        }
        // On gpt parted writes the name disko hands it, which disko escapes
        // first; msdos has no names (the first word of mkpart is the type).
        let name = match (&p.name, t.format.as_str()) {
            (Some(n), "gpt") => Some(parted::mkpart_name(n).map_err(|e| {
                SpecError::unsupported(
                    format!("{path}.partitions.[{i}].name"),
                    format!(
                        "{e}: disko escapes a gpt partition name with nixpkgs `lib.strings.charToInt`, which knows only printable ASCII, so disko fails to evaluate this spec; use printable ASCII in the name"
                    ),
                )
            })?),
            _ => p.name.clone(),
        };
        partitions.push(PartedPart {
            index: i + 1,
            spec_path: format!("{path}.partitions.[{i}]"),
            name,
            part_type: p.part_type.clone(),
            fs_type: p.fs_type.clone(),
            start: p.start.clone(),
            end: p.end.clone(),
            flags: p.flags.clone(),
            bootable: p.bootable,
            device: super::normalize::device_numbering(&t.device, i + 1).unwrap_or_default(),
        });
    }
    Ok(TablePlan::Parted { format: t.format.clone(), partitions })
}

/// What a parted flag does to a partition: a new type (GUID on gpt, MBR
/// byte on msdos), an attribute bit, or the active flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagEffect {
    GptType(&'static str),
    GptAttribute(u8),
    MbrType(u8),
    Active,
}

pub fn parted_flag(format: &str, flag: &str) -> Option<FlagEffect> {
    use FlagEffect::*;
    Some(match (format, flag) {
        ("gpt", "boot" | "esp") => GptType("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        ("gpt", "bios_grub") => GptType("21686148-6449-6E6F-744E-656564454649"),
        ("gpt", "lvm") => GptType("E6D6D379-F507-44C2-A23C-238F2A3DF928"),
        ("gpt", "raid") => GptType("A19D880F-05FC-4D3B-A006-743F0F84911E"),
        ("gpt", "swap") => GptType("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
        ("gpt", "msftres") => GptType("E3C9E316-0B5C-4DB8-817D-F92DF00215AE"),
        ("gpt", "legacy_boot") => GptAttribute(2),
        ("msdos", "boot") => Active,
        ("msdos", "lvm") => MbrType(0x8e),
        ("msdos", "raid") => MbrType(0xfd),
        ("msdos", "swap") => MbrType(0x82),
        ("msdos", "esp") => MbrType(0xef),
        _ => return None,
    })
}

impl TablePlan {
    /// The option path of partition `number` (gpt) or index (table).
    pub fn spec_path_of(&self, number: u32) -> Option<&str> {
        match self {
            TablePlan::Gpt { partitions, .. } => {
                partitions.iter().find(|p| p.number == number).map(|p| p.spec_path.as_str())
            }
            TablePlan::Parted { partitions, .. } => {
                partitions.iter().find(|p| p.index as u32 == number).map(|p| p.spec_path.as_str())
            }
        }
    }
}

/// A partition with its sectors, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub number: u32,
    pub first: u64,
    pub last: u64,
    pub name: String,
    /// GPT type GUID (gpt) or the MBR type byte as two hex digits (msdos).
    pub type_id: String,
    pub attributes: u64,
    pub uuid: Option<String>,
    pub bootable: bool,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Gpt(#[from] GeometryError),
    #[error(transparent)]
    Parted(#[from] PartedError),
}

impl ResolveError {
    /// The partition (gpt number or table index) the error is about.
    pub fn partition(&self) -> Option<u32> {
        match self {
            ResolveError::Gpt(
                GeometryError::BadPosition { number, .. }
                | GeometryError::DoesNotFit { number, .. }
                | GeometryError::NumberInUse { number }
                | GeometryError::NoSpace { number },
            ) => Some(*number),
            ResolveError::Parted(
                PartedError::DoesNotFit { index, .. } | PartedError::Msdos { index, .. },
            ) => Some(*index as u32),
            ResolveError::Parted(PartedError::BadPosition(_)) => None,
        }
    }
}

/// Sectors of every partition of `table` on a disk of `total_sectors`.
/// `existing` are slots already on the disk (kept, like a failed
/// `sgdisk --new` leaves them).
pub fn resolve_table(
    table: &TablePlan,
    sector_size: u64,
    total_sectors: u64,
    existing: &[sgdisk::Slot],
) -> Result<Vec<Resolved>, ResolveError> {
    match table {
        TablePlan::Gpt { partitions, .. } => {
            let mut t = sgdisk::Table::new(Layout::new(sector_size, total_sectors));
            t.slots = existing.to_vec();
            let mut out = Vec::new();
            for p in partitions {
                let slot = match existing.iter().find(|s| s.number == p.number) {
                    Some(s) => *s,
                    None => t.new_partition(p.number, &p.start, &p.end, p.alignment)?,
                };
                let attributes = p.attributes.iter().fold(0u64, |acc, b| acc | (1u64 << b));
                out.push(Resolved {
                    number: p.number,
                    first: slot.first,
                    last: slot.last,
                    name: p.label.clone(),
                    type_id: p.type_guid.clone(),
                    attributes,
                    uuid: p.uuid.clone(),
                    bootable: false,
                    device: p.device.clone(),
                });
            }
            Ok(out)
        }
        TablePlan::Parted { format, partitions } => {
            let (first_usable, last_usable) = if format == "gpt" {
                let l = Layout::new(sector_size, total_sectors);
                (l.first_usable, l.last_usable)
            } else {
                (1, total_sectors - 1)
            };
            let mut taken: Vec<(u64, u64)> = Vec::new();
            let mut out = Vec::new();
            for p in partitions {
                let (first, last) = parted::place(
                    p.index,
                    &p.start,
                    &p.end,
                    total_sectors,
                    sector_size,
                    first_usable,
                    last_usable,
                    &taken,
                )?;
                taken.push((first, last));
                if format == "msdos" {
                    // An MBR holds four primary slots of 32-bit sectors.
                    if p.index > 4 {
                        return Err(PartedError::Msdos {
                            index: p.index,
                            message:
                                "an msdos table holds only 4 primary partitions; use a `gpt` table"
                                    .into(),
                        }
                        .into());
                    }
                    if last > u64::from(u32::MAX) {
                        return Err(PartedError::Msdos {
                            index: p.index,
                            message: "an msdos table cannot address past 2 TiB (of 512-byte sectors); use a `gpt` table".into(),
                        }
                        .into());
                    }
                }
                let mut type_id = if format == "gpt" {
                    match p.fs_type.as_deref() {
                        Some("linux-swap") => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F".to_string(),
                        Some("fat16" | "fat32" | "ntfs") => {
                            "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7".to_string()
                        }
                        _ => "0FC63DAF-8483-4772-8E79-3D69D8477DE4".to_string(),
                    }
                } else {
                    match p.fs_type.as_deref() {
                        Some("linux-swap") => "82".to_string(),
                        Some("fat32") => "0c".to_string(),
                        Some("fat16") => "0e".to_string(),
                        Some("ntfs") => "07".to_string(),
                        _ => "83".to_string(),
                    }
                };
                let mut attributes = 0u64;
                let mut bootable = false;
                let flags = p.flags.iter().map(String::as_str).chain(p.bootable.then_some("boot"));
                for f in flags {
                    match parted_flag(format, f) {
                        Some(FlagEffect::GptType(g)) => type_id = g.to_string(),
                        Some(FlagEffect::GptAttribute(b)) => attributes |= 1 << b,
                        Some(FlagEffect::MbrType(b)) => type_id = format!("{b:02x}"),
                        Some(FlagEffect::Active) => bootable = true,
                        None => {}
                    }
                }
                out.push(Resolved {
                    number: p.index as u32,
                    first,
                    last,
                    // parted's mkpart on gpt takes the name; on msdos the
                    // first word is the partition type and there is no name.
                    name: if format == "gpt" {
                        p.name.clone().unwrap_or_else(|| p.part_type.clone())
                    } else {
                        String::new()
                    },
                    type_id,
                    attributes,
                    uuid: None,
                    bootable,
                    device: p.device.clone(),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_table(format: &str, name: &str) -> Devices {
        let raw = serde_json::json!({"disk": {"main": {"type": "disk", "device": "/dev/vda",
            "content": {"type": "table", "format": format, "partitions": [
                {"name": "ESP", "start": "1M", "end": "10M"},
                {"name": name, "start": "10M", "end": "100%"}]}}}});
        Devices::from_raw(&raw).expect("normalise")
    }

    fn parted_names(steps: &[Step]) -> Vec<Option<String>> {
        steps
            .iter()
            .find_map(|s| match s {
                Step::Partition { table: TablePlan::Parted { partitions, .. }, .. } => {
                    Some(partitions.iter().map(|p| p.name.clone()).collect())
                }
                _ => None,
            })
            .expect("a legacy table step")
    }

    #[test]
    fn gpt_names_are_planned_as_disko_escapes_them() {
        let steps = plan(&legacy_table("gpt", "it's mine")).unwrap();
        assert_eq!(
            parted_names(&steps),
            [Some("ESP".to_string()), Some(r"it\x27s\x20mine".to_string())]
        );
        let resolved = match &steps[0] {
            Step::Partition { table, .. } => resolve_table(table, 512, 1 << 20, &[]).unwrap(),
            other => panic!("first step is not the table: {other:?}"),
        };
        assert_eq!(resolved[1].name, r"it\x27s\x20mine");
    }

    #[test]
    fn gpt_names_disko_cannot_evaluate_are_refused() {
        let err = plan(&legacy_table("gpt", "caf\u{e9}")).unwrap_err();
        let SpecError::Unsupported { path, message } = err else {
            panic!("not an unsupported-spec error: {err}");
        };
        assert_eq!(path, "disko.devices.disk.main.content.partitions.[1].name");
        assert!(message.contains("'é' at byte 3") && message.contains("disko"), "{message}");
    }

    #[test]
    fn msdos_names_are_not_written_so_not_checked() {
        let steps = plan(&legacy_table("msdos", "tab\there")).unwrap();
        assert_eq!(parted_names(&steps)[1].as_deref(), Some("tab\there"));
    }
}
