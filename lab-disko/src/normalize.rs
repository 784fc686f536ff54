//! Normalising a raw disko spec exactly as disko's module system does: every
//! default filled in (labels, hashed long labels, priorities, partition
//! numbering, type codes, start/end from size, device paths, hooks), every
//! attribute whose name starts with `_` dropped. The output is what
//! `nix eval --json .#nixosConfigurations.H.config.disko.devices` prints.
//!
//! The rules mirror disko 1.13 (`lib/types/*.nix`); the golden fixtures in
//! `../shared/fixtures/disko` pin them.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::SpecError;

/// The hook options every disko device type carries (all default to "").
const HOOKS: [&str; 6] = [
    "postCreateHook",
    "postMountHook",
    "postUnmountHook",
    "preCreateHook",
    "preMountHook",
    "preUnmountHook",
];

/// GPT partition names hold 36 UTF-16 units; disko hashes longer labels.
const LABEL_LIMIT: usize = 36;

/// Normalises a raw disko devices value (the `disko.devices` attribute set).
pub fn normalize(raw: &Value) -> Result<Value, SpecError> {
    let mut top = Obj::new(raw, "disko.devices")?;
    let mut out = Map::new();
    for key in ["bcachefs_filesystems", "zpool"] {
        let v = top.attrs(key)?;
        if let Some((name, _)) = v.first() {
            return Err(SpecError::unsupported(
                format!("disko.devices.{key}.{name}"),
                format!("`{key}` (ZFS/bcachefs) is not supported by labprov; use disko itself for this host"),
            ));
        }
        out.insert(key.into(), Value::Object(Map::new()));
    }
    let mut disks = Map::new();
    for (key, v) in top.attrs("disk")? {
        disks.insert(
            key.clone(),
            disk(&v, &format!("disko.devices.disk.{}", quote_attr(&key)), &key)?,
        );
    }
    out.insert("disk".into(), Value::Object(disks));
    let mut mdadms = Map::new();
    for (key, v) in top.attrs("mdadm")? {
        mdadms.insert(
            key.clone(),
            mdadm(&v, &format!("disko.devices.mdadm.{}", quote_attr(&key)), &key)?,
        );
    }
    out.insert("mdadm".into(), Value::Object(mdadms));
    let mut vgs = Map::new();
    for (key, v) in top.attrs("lvm_vg")? {
        vgs.insert(
            key.clone(),
            lvm_vg(&v, &format!("disko.devices.lvm_vg.{}", quote_attr(&key)), &key)?,
        );
    }
    out.insert("lvm_vg".into(), Value::Object(vgs));
    let mut nodevs = Map::new();
    for (key, v) in top.attrs("nodev")? {
        nodevs.insert(
            key.clone(),
            nodev(&v, &format!("disko.devices.nodev.{}", quote_attr(&key)), &key)?,
        );
    }
    out.insert("nodev".into(), Value::Object(nodevs));
    top.finish()?;
    Ok(Value::Object(out))
}

/// Attribute names the way Nix prints them in an option path.
pub(crate) fn quote_attr(key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-'".contains(c))
        && !key.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '\'');
    if plain {
        key.to_string()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Where a device sits, as disko's `_parent` tells it (for labels and the
/// mdadm partition device workaround).
#[derive(Clone)]
struct Parent {
    kind: &'static str,
    name: String,
}

fn disk(v: &Value, path: &str, key: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", Some("disk"), &["disk"])?;
    // disko: `lib.replaceStrings [ "/" ] [ "_" ] config._module.args.name`
    let name = o.string("name", Some(&key.replace('/', "_")))?;
    out.insert("name".into(), name.clone().into());
    let device = o.string("device", None)?;
    out.insert("device".into(), device.clone().into());
    o.boolean(&mut out, "destroy", true)?;
    let image_name = o.string("imageName", Some(&name))?;
    out.insert("imageName".into(), image_name.into());
    let size = o.string("imageSize", Some("2G"))?;
    if !is_size(&size) {
        return Err(SpecError::invalid(
            format!("{path}.imageSize"),
            format!("`{size}` is not a size like 2G ([0-9]+[KMGTP]?)"),
        ));
    }
    out.insert("imageSize".into(), size.into());
    o.hooks(&mut out)?;
    let parent = Parent { kind: "disk", name };
    let content = o.take("content");
    out.insert(
        "content".into(),
        content_value(content, &format!("{path}.content"), &device, &parent, Position::Device)?,
    );
    o.finish()?;
    Ok(Value::Object(out))
}

fn mdadm(v: &Value, path: &str, key: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", Some("mdadm"), &["mdadm"])?;
    let name = o.string("name", Some(key))?;
    out.insert("name".into(), name.clone().into());
    o.int(&mut out, "level", Some(1))?;
    o.enum_str(
        &mut out,
        "metadata",
        Some("default"),
        &["1", "1.0", "1.1", "1.2", "default", "ddf", "imsm"],
    )?;
    o.str_list(&mut out, "extraArgs", &[])?;
    o.hooks(&mut out)?;
    let device = format!("/dev/md/{name}");
    let parent = Parent { kind: "mdadm", name };
    let content = o.take("content");
    out.insert(
        "content".into(),
        content_value(content, &format!("{path}.content"), &device, &parent, Position::Device)?,
    );
    o.finish()?;
    Ok(Value::Object(out))
}

fn lvm_vg(v: &Value, path: &str, key: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", Some("lvm_vg"), &["lvm_vg"])?;
    let name = o.string("name", Some(key))?;
    out.insert("name".into(), name.clone().into());
    o.hooks(&mut out)?;
    let mut lvs = Map::new();
    for (lv_key, lv_v) in o.attrs("lvs")? {
        let lv_path = format!("{path}.lvs.{}", quote_attr(&lv_key));
        let mut l = Obj::new(&lv_v, &lv_path)?;
        let mut lv = Map::new();
        let lv_name = l.string("name", Some(&lv_key))?;
        lv.insert("name".into(), lv_name.clone().into());
        let size = l.string("size", None)?;
        lv.insert("size".into(), size.clone().into());
        let lvm_type = l.nullable_enum(
            "lvm_type",
            &["mirror", "raid0", "raid1", "raid4", "raid5", "raid6", "thin-pool", "thinlv"],
        )?;
        lv.insert("lvm_type".into(), lvm_type.clone().map(Value::from).unwrap_or(Value::Null));
        // disko: (thin-pool ? 501 : 1000) + (hasInfix "100%" size ? 251 : 0)
        let base = if lvm_type.as_deref() == Some("thin-pool") { 501 } else { 1000 };
        let prio = base + if size.contains("100%") { 251 } else { 0 };
        l.int(&mut lv, "priority", Some(prio))?;
        l.str_list(&mut lv, "extraArgs", &[])?;
        l.nullable_string(&mut lv, "pool")?;
        let parent = Parent { kind: "lvm_vg", name: name.clone() };
        let content = l.take("content");
        let dev = format!("/dev/{name}/{lv_name}");
        lv.insert(
            "content".into(),
            content_value(
                content,
                &format!("{lv_path}.content"),
                &dev,
                &parent,
                Position::Partition,
            )?,
        );
        l.finish()?;
        lvs.insert(lv_key, Value::Object(lv));
    }
    out.insert("lvs".into(), Value::Object(lvs));
    o.finish()?;
    Ok(Value::Object(out))
}

fn nodev(v: &Value, path: &str, key: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", Some("nodev"), &["nodev"])?;
    let fs_type = o.string("fsType", None)?;
    out.insert("fsType".into(), fs_type.clone().into());
    let device = o.string("device", Some(&fs_type))?;
    out.insert("device".into(), device.into());
    let mountpoint = o.string("mountpoint", Some(key))?;
    check_absolute(&format!("{path}.mountpoint"), &mountpoint)?;
    out.insert("mountpoint".into(), mountpoint.into());
    o.str_list(&mut out, "mountOptions", &["defaults"])?;
    o.hooks(&mut out)?;
    o.finish()?;
    Ok(Value::Object(out))
}

/// Which content types a position accepts: partition tables only directly on
/// a whole device (disk, mdadm array, LUKS volume).
#[derive(Clone, Copy, PartialEq)]
enum Position {
    Device,
    Partition,
}

fn content_value(
    v: Option<Value>,
    path: &str,
    device: &str,
    parent: &Parent,
    pos: Position,
) -> Result<Value, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v) => content(&v, path, device, parent, pos),
    }
}

fn content(
    v: &Value,
    path: &str,
    device: &str,
    parent: &Parent,
    pos: Position,
) -> Result<Value, SpecError> {
    let Some(obj) = v.as_object() else {
        return Err(SpecError::invalid(
            path,
            format!("expected an attribute set with a `type`, found {}", kind_of(v)),
        ));
    };
    let Some(ty) = obj.get("type") else {
        return Err(SpecError::invalid(
            path,
            "content needs a `type` (gpt, table, filesystem, swap, btrfs, luks, lvm_pv, mdraid)",
        ));
    };
    let Some(ty) = ty.as_str() else {
        return Err(SpecError::invalid(
            format!("{path}.type"),
            format!("expected a string, found {}", kind_of(ty)),
        ));
    };
    match ty {
        "gpt" | "table" if pos == Position::Device => {
            if ty == "gpt" {
                gpt(v, path, device, parent)
            } else {
                table(v, path, device)
            }
        }
        "gpt" | "table" => Err(SpecError::invalid(
            format!("{path}.type"),
            format!("a `{ty}` partition table can only sit on a disk, an mdadm array or a LUKS volume, not inside a partition"),
        )),
        "filesystem" => filesystem(v, path, device),
        "swap" => swap(v, path, device),
        "btrfs" => btrfs(v, path, device),
        "luks" => luks(v, path, device, parent),
        "lvm_pv" => simple(v, path, device, "lvm_pv", &["vg"]),
        "mdraid" => simple(v, path, device, "mdraid", &["name"]),
        "zfs" | "bcachefs" | "bcache" | "verity" => {
            Err(SpecError::unsupported(format!("{path}.type"), format!("content type `{ty}` is not supported by labprov; use disko itself for this host")))
        }
        other => Err(SpecError::invalid(
            format!("{path}.type"),
            format!("unknown content type `{other}`; disko knows gpt, table, filesystem, swap, btrfs, luks, lvm_pv, mdraid, zfs, bcachefs"),
        )),
    }
}

fn gpt(v: &Value, path: &str, device: &str, parent: &Parent) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["gpt"])?;
    let device = o.string("device", Some(device))?;
    out.insert("device".into(), device.clone().into());
    o.boolean(&mut out, "efiGptPartitionFirst", true)?;
    o.hooks(&mut out)?;

    // First pass: everything the partition order depends on.
    struct Part {
        key: String,
        path: String,
        obj: Obj,
        out: Map<String, Value>,
        name: String,
        priority: i64,
    }
    let mut parts = Vec::new();
    for (key, pv) in o.attrs("partitions")? {
        let ppath = format!("{path}.partitions.{}", quote_attr(&key));
        let mut p = Obj::new(&pv, &ppath)?;
        let mut pout = Map::new();
        let name = p.string("name", Some(&key))?;
        pout.insert("name".into(), name.clone().into());
        let size = p.string("size", Some("0"))?;
        if size != "100%" && !is_size(&size) {
            return Err(SpecError::invalid(
                format!("{ppath}.size"),
                format!("`{size}` is neither \"100%\" nor a size like 512M ([0-9]+[KMGTP]?)"),
            ));
        }
        pout.insert("size".into(), size.clone().into());
        let content_is_swap =
            p.peek("content").and_then(|c| c.get("type")).and_then(Value::as_str) == Some("swap");
        let ty = p.string("type", Some(if content_is_swap { "8200" } else { "8300" }))?;
        if !is_type_code(&ty) {
            return Err(SpecError::invalid(format!("{ppath}.type"), format!("`{ty}` is neither a 4-digit sgdisk type code (see `sgdisk -L`) nor a type GUID")));
        }
        pout.insert("type".into(), ty.clone().into());
        let default_prio = if size == "100%" {
            9001
        } else if ty == "EF02" {
            100
        } else {
            1000
        };
        let priority = p.int(&mut pout, "priority", Some(default_prio))?;
        let start = p.string("start", Some("0"))?;
        pout.insert("start".into(), start.clone().into());
        let default_end = if size == "100%" { "-0".to_string() } else { format!("+{size}") };
        let end = p.string("end", Some(&default_end))?;
        pout.insert("end".into(), end.clone().into());
        let alignment = if start.ends_with('s') || end.ends_with('s') { 1 } else { 0 };
        p.int(&mut pout, "alignment", Some(alignment))?;
        p.int_list(&mut pout, "attributes")?;
        let uuid = p.nullable_string(&mut pout, "uuid")?;
        if let Some(u) = &uuid {
            if !is_guid(u) {
                return Err(SpecError::invalid(
                    format!("{ppath}.uuid"),
                    format!("`{u}` is not a GUID like 809b3a2b-828a-4730-95e1-75b6343e415a"),
                ));
            }
        }
        let label = format!("{}-{}-{}", parent.kind, parent.name, name);
        let label = if label.len() > LABEL_LIMIT {
            hex::encode(Sha256::digest(label.as_bytes()))[..LABEL_LIMIT].to_string()
        } else {
            label
        };
        let label = p.string("label", Some(&label))?;
        pout.insert("label".into(), label.into());
        match p.take("hybrid") {
            None | Some(Value::Null) => {
                pout.insert("hybrid".into(), Value::Null);
            }
            Some(h) => {
                let hpath = format!("{ppath}.hybrid");
                let mut ho = Obj::new(&h, &hpath)?;
                let mut hout = Map::new();
                ho.nullable_string(&mut hout, "mbrPartitionType")?;
                ho.boolean(&mut hout, "mbrBootableFlag", false)?;
                ho.finish()?;
                pout.insert("hybrid".into(), Value::Object(hout));
            }
        }
        parts.push(Part { key, path: ppath, obj: p, out: pout, name, priority });
    }
    // disko: lib.sort on priority over attrValues (sorted by attribute name);
    // lib.sort is stable, so ties keep name order. _index is 1-based and
    // found by the partition's `name` option.
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&i| parts[i].priority);
    let mut partitions = Map::new();
    for i in 0..parts.len() {
        let index =
            order.iter().position(|&j| parts[j].name == parts[i].name).map(|p| p + 1).unwrap_or(0);
        let part = &mut parts[i];
        let uuid = part.out.get("uuid").and_then(Value::as_str).map(str::to_string);
        let label = part.out.get("label").and_then(Value::as_str).unwrap_or_default().to_string();
        let default_device = if let Some(u) = uuid {
            format!("/dev/disk/by-partuuid/{u}")
        } else if parent.kind == "mdadm" {
            format!("/dev/disk/by-id/md-name-any:{}-part{index}", parent.name)
        } else {
            format!("/dev/disk/by-partlabel/{}", hex_escape_udev_symlink(&label))
        };
        let pdev = part.obj.string("device", Some(&default_device))?;
        part.out.insert("device".into(), pdev.clone().into());
        let c = part.obj.take("content");
        let gparent = Parent { kind: "gpt", name: parent.name.clone() };
        let cv = content_value(
            c,
            &format!("{}.content", part.path),
            &pdev,
            &gparent,
            Position::Partition,
        )?;
        part.out.insert("content".into(), cv);
        part.obj.check_unknown()?;
        partitions.insert(part.key.clone(), Value::Object(std::mem::take(&mut part.out)));
    }
    out.insert("partitions".into(), Value::Object(partitions));
    o.finish()?;
    Ok(Value::Object(out))
}

fn table(v: &Value, path: &str, device: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["table"])?;
    let device = o.string("device", Some(device))?;
    out.insert("device".into(), device.clone().into());
    o.enum_str(&mut out, "format", Some("gpt"), &["gpt", "msdos"])?;
    o.hooks(&mut out)?;
    let list = match o.take("partitions") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{path}.partitions"),
                format!("expected a list of partitions, found {}", kind_of(&other)),
            ))
        }
    };
    let mut parts = Vec::new();
    for (i, pv) in list.iter().enumerate() {
        let ppath = format!("{path}.partitions.[{i}]");
        let mut p = Obj::new(pv, &ppath)?;
        let mut pout = Map::new();
        p.enum_str(&mut pout, "part-type", Some("primary"), &["primary", "logical", "extended"])?;
        p.nullable_string(&mut pout, "fs-type")?;
        p.nullable_string(&mut pout, "name")?;
        p.string_into(&mut pout, "start", "0%")?;
        p.string_into(&mut pout, "end", "100%")?;
        p.str_list(&mut pout, "flags", &[])?;
        p.boolean(&mut pout, "bootable", false)?;
        let pdev = device_numbering(&device, i + 1).ok_or_else(|| {
            SpecError::invalid(
                format!("{path}.device"),
                format!("{device} is not a device disko can number partitions of (/dev/sdX, /dev/vdX, /dev/nvmeXnY, /dev/mmcblkX, /dev/md/X, /dev/disk/..., /dev/loopN)"),
            )
        })?;
        let c = p.take("content");
        pout.insert(
            "content".into(),
            content_value(
                c,
                &format!("{ppath}.content"),
                &pdev,
                &Parent { kind: "table", name: String::new() },
                Position::Partition,
            )?,
        );
        p.finish()?;
        parts.push(Value::Object(pout));
    }
    out.insert("partitions".into(), Value::Array(parts));
    o.finish()?;
    Ok(Value::Object(out))
}

/// disko's `deviceNumbering`: the device node of partition `index` of `dev`.
pub fn device_numbering(dev: &str, index: usize) -> Option<String> {
    let rest = dev.strip_prefix("/dev/")?;
    let after = |p: &str| rest.strip_prefix(p).is_some_and(|r| !r.is_empty());
    if after("sd") || after("vd") || after("xvd") || after("hd") {
        Some(format!("{dev}{index}"))
    } else if after("disk/") || after("zvol/") {
        Some(format!("{dev}-part{index}"))
    } else if after("nvme")
        || after("md/")
        || after("mmcblk")
        || rest
            .strip_prefix("loop")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(format!("{dev}p{index}"))
    } else {
        None
    }
}

fn filesystem(v: &Value, path: &str, device: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["filesystem"])?;
    o.string_into(&mut out, "device", device)?;
    o.str_list(&mut out, "extraArgs", &[])?;
    o.str_list(&mut out, "mountOptions", &["defaults"])?;
    o.mountpoint(&mut out, "mountpoint")?;
    let format = o.string("format", None)?;
    out.insert("format".into(), format.into());
    o.hooks(&mut out)?;
    o.finish()?;
    Ok(Value::Object(out))
}

fn swap(v: &Value, path: &str, device: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["swap"])?;
    o.string_into(&mut out, "device", device)?;
    let dp = o.nullable_enum("discardPolicy", &["once", "pages", "both"])?;
    out.insert("discardPolicy".into(), dp.map(Value::from).unwrap_or(Value::Null));
    o.str_list(&mut out, "extraArgs", &[])?;
    o.str_list(&mut out, "mountOptions", &["defaults"])?;
    o.nullable_int(&mut out, "priority")?;
    o.boolean(&mut out, "randomEncryption", false)?;
    o.boolean(&mut out, "resumeDevice", false)?;
    o.hooks(&mut out)?;
    o.finish()?;
    Ok(Value::Object(out))
}

fn btrfs(v: &Value, path: &str, device: &str) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["btrfs"])?;
    o.string_into(&mut out, "device", device)?;
    o.str_list(&mut out, "extraArgs", &[])?;
    o.str_list(&mut out, "mountOptions", &["defaults"])?;
    o.mountpoint(&mut out, "mountpoint")?;
    o.hooks(&mut out)?;
    out.insert("swap".into(), swapfiles(&mut o, path)?);
    let mut subs = Map::new();
    for (key, sv) in o.attrs("subvolumes")? {
        let spath = format!("{path}.subvolumes.{}", quote_attr(&key));
        let mut s = Obj::new(&sv, &spath)?;
        let mut sout = Map::new();
        s.string_into(&mut sout, "name", &key)?;
        s.enum_str(&mut sout, "type", Some("btrfs_subvol"), &["btrfs_subvol"])?;
        s.str_list(&mut sout, "extraArgs", &[])?;
        s.str_list(&mut sout, "mountOptions", &["defaults"])?;
        s.mountpoint(&mut sout, "mountpoint")?;
        sout.insert("swap".into(), swapfiles(&mut s, &spath)?);
        s.finish()?;
        subs.insert(key, Value::Object(sout));
    }
    out.insert("subvolumes".into(), Value::Object(subs));
    o.finish()?;
    Ok(Value::Object(out))
}

fn swapfiles(o: &mut Obj, path: &str) -> Result<Value, SpecError> {
    let mut files = Map::new();
    for (key, fv) in o.attrs("swap")? {
        let fpath = format!("{path}.swap.{}", quote_attr(&key));
        let mut f = Obj::new(&fv, &fpath)?;
        let mut fout = Map::new();
        let size = f.string("size", None)?;
        // disko: strMatching "^([0-9]+[KMGTP])?$" (a unit is required)
        let ok = size.is_empty()
            || (size.len() > 1 && is_size(&size) && size.ends_with(|c: char| "KMGTP".contains(c)));
        if !ok {
            return Err(SpecError::invalid(
                format!("{fpath}.size"),
                format!("`{size}` is not a swap file size like 2G ([0-9]+[KMGTP])"),
            ));
        }
        fout.insert("size".into(), size.into());
        f.string_into(&mut fout, "path", &key)?;
        f.nullable_int(&mut fout, "priority")?;
        f.str_list(&mut fout, "options", &["defaults"])?;
        f.finish()?;
        files.insert(key, Value::Object(fout));
    }
    Ok(Value::Object(files))
}

fn luks(v: &Value, path: &str, device: &str, parent: &Parent) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &["luks"])?;
    o.string_into(&mut out, "device", device)?;
    let name = o.string("name", None)?;
    out.insert("name".into(), name.clone().into());
    let key_file = o.nullable_path(&mut out, "keyFile")?;
    let password_file = o.nullable_path(&mut out, "passwordFile")?;
    let settings = match o.take("settings") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{path}.settings"),
                format!("expected an attribute set, found {}", kind_of(&other)),
            ))
        }
    };
    let ask = key_file.is_none() && password_file.is_none() && !settings.contains_key("keyFile");
    o.boolean(&mut out, "askPassword", ask)?;
    out.insert("settings".into(), Value::Object(settings));
    o.str_list(&mut out, "additionalKeyFiles", &[])?;
    o.boolean(&mut out, "initrdUnlock", true)?;
    o.str_list(&mut out, "extraFormatArgs", &[])?;
    o.str_list(&mut out, "extraOpenArgs", &[])?;
    o.hooks(&mut out)?;
    let c = o.take("content");
    let mapper = format!("/dev/mapper/{name}");
    out.insert(
        "content".into(),
        content_value(c, &format!("{path}.content"), &mapper, parent, Position::Device)?,
    );
    o.finish()?;
    Ok(Value::Object(out))
}

/// lvm_pv and mdraid: a type, a device, one required string, hooks.
fn simple(
    v: &Value,
    path: &str,
    device: &str,
    ty: &'static str,
    required: &[&str],
) -> Result<Value, SpecError> {
    let mut o = Obj::new(v, path)?;
    let mut out = Map::new();
    o.enum_str(&mut out, "type", None, &[ty])?;
    o.string_into(&mut out, "device", device)?;
    for key in required {
        let s = o.string(key, None)?;
        out.insert((*key).into(), s.into());
    }
    o.hooks(&mut out)?;
    o.finish()?;
    Ok(Value::Object(out))
}

/// disko's `hexEscapeUdevSymlink`: keep `[0-9A-Za-z#+-.:=@_/]` (the `+-.`
/// is a regex range, so `,` is kept too), escape every other byte as `\xHH`
/// with `lib.toHexString` (upper case, no zero padding).
pub fn hex_escape_udev_symlink(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'#' | b'+' | b',' | b'-' | b'.' | b':' | b'=' | b'@' | b'_' | b'/');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:X}"));
        }
    }
    out
}

/// `[0-9]+[KMGTP]?`
pub fn is_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| "KMGTP".contains(c));
    s.len() - digits.len() <= 1 && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5 && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(&n, p)| is_hex(p, n))
}

/// A gpt partition `type`: 4 hex digits or a GUID.
pub fn is_type_code(s: &str) -> bool {
    is_hex(s, 4) || is_guid(s)
}

fn check_absolute(path: &str, p: &str) -> Result<(), SpecError> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(SpecError::invalid(path, format!("`{p}` is not an absolute path")))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an attribute set",
    }
}

/// One attribute set of the spec being read: hands out options with their
/// defaults and, at the end, rejects the options nobody asked for (the way
/// the module system rejects an option that does not exist).
struct Obj {
    path: String,
    map: Map<String, Value>,
    used: BTreeSet<String>,
}

impl Obj {
    fn new(v: &Value, path: &str) -> Result<Obj, SpecError> {
        match v {
            Value::Object(m) => {
                Ok(Obj { path: path.to_string(), map: m.clone(), used: BTreeSet::new() })
            }
            other => Err(SpecError::invalid(
                path,
                format!("expected an attribute set, found {}", kind_of(other)),
            )),
        }
    }

    fn sub(&self, key: &str) -> String {
        format!("{}.{}", self.path, quote_attr(key))
    }

    fn peek(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.used.insert(key.to_string());
        self.map.get(key).cloned()
    }

    fn string(&mut self, key: &str, default: Option<&str>) -> Result<String, SpecError> {
        match (self.take(key), default) {
            (Some(Value::String(s)), _) => Ok(s),
            (Some(other), _) => Err(SpecError::invalid(
                self.sub(key),
                format!("expected a string, found {}", kind_of(&other)),
            )),
            (None, Some(d)) => Ok(d.to_string()),
            (None, None) => {
                Err(SpecError::invalid(self.sub(key), "this option is required but not set"))
            }
        }
    }

    fn string_into(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
        default: &str,
    ) -> Result<(), SpecError> {
        let s = self.string(key, Some(default))?;
        out.insert(key.into(), s.into());
        Ok(())
    }

    fn enum_str(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
        default: Option<&str>,
        allowed: &[&str],
    ) -> Result<String, SpecError> {
        let s = self.string(key, default)?;
        if !allowed.contains(&s.as_str()) {
            return Err(SpecError::invalid(
                self.sub(key),
                format!("`{s}` is not one of: {}", allowed.join(", ")),
            ));
        }
        out.insert(key.into(), s.clone().into());
        Ok(s)
    }

    fn nullable_enum(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>, SpecError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s)),
            Some(other) => Err(SpecError::invalid(
                self.sub(key),
                format!("expected null or one of {}, found {other}", allowed.join(", ")),
            )),
        }
    }

    fn nullable_string(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, SpecError> {
        let v = match self.take(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected null or a string, found {}", kind_of(&other)),
                ))
            }
        };
        out.insert(key.into(), v.clone().map(Value::from).unwrap_or(Value::Null));
        Ok(v)
    }

    fn nullable_path(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
    ) -> Result<Option<String>, SpecError> {
        let v = self.nullable_string(out, key)?;
        if let Some(p) = &v {
            check_absolute(&self.sub(key), p)?;
        }
        Ok(v)
    }

    fn mountpoint(&mut self, out: &mut Map<String, Value>, key: &str) -> Result<(), SpecError> {
        self.nullable_path(out, key).map(|_| ())
    }

    fn boolean(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
        default: bool,
    ) -> Result<bool, SpecError> {
        let b = match self.take(key) {
            None => default,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected a boolean, found {}", kind_of(&other)),
                ))
            }
        };
        out.insert(key.into(), b.into());
        Ok(b)
    }

    fn int(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
        default: Option<i64>,
    ) -> Result<i64, SpecError> {
        let i = match (self.take(key), default) {
            (Some(Value::Number(n)), _) if n.is_i64() => n.as_i64().unwrap_or_default(),
            (Some(other), _) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected an integer, found {other}"),
                ))
            }
            (None, Some(d)) => d,
            (None, None) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    "this option is required but not set",
                ))
            }
        };
        out.insert(key.into(), i.into());
        Ok(i)
    }

    fn nullable_int(&mut self, out: &mut Map<String, Value>, key: &str) -> Result<(), SpecError> {
        let v = match self.take(key) {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Number(n)) if n.is_i64() => Value::Number(n),
            Some(other) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected null or an integer, found {other}"),
                ))
            }
        };
        out.insert(key.into(), v);
        Ok(())
    }

    fn str_list(
        &mut self,
        out: &mut Map<String, Value>,
        key: &str,
        default: &[&str],
    ) -> Result<(), SpecError> {
        let v = match self.take(key) {
            None => default.iter().map(|s| Value::from(*s)).collect(),
            Some(Value::Array(a)) => {
                if let Some(bad) = a.iter().find(|x| !x.is_string()) {
                    return Err(SpecError::invalid(
                        self.sub(key),
                        format!("expected a list of strings, found an element {bad}"),
                    ));
                }
                a
            }
            Some(other) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected a list of strings, found {}", kind_of(&other)),
                ))
            }
        };
        out.insert(key.into(), Value::Array(v));
        Ok(())
    }

    fn int_list(&mut self, out: &mut Map<String, Value>, key: &str) -> Result<(), SpecError> {
        let v = match self.take(key) {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                if let Some(bad) = a.iter().find(|x| !x.is_i64()) {
                    return Err(SpecError::invalid(
                        self.sub(key),
                        format!("expected a list of integers, found an element {bad}"),
                    ));
                }
                a
            }
            Some(other) => {
                return Err(SpecError::invalid(
                    self.sub(key),
                    format!("expected a list of integers, found {}", kind_of(&other)),
                ))
            }
        };
        out.insert(key.into(), Value::Array(v));
        Ok(())
    }

    fn attrs(&mut self, key: &str) -> Result<Vec<(String, Value)>, SpecError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => {
                // Nix orders attribute names bytewise; disko's priority ties
                // depend on that order.
                let mut v: Vec<(String, Value)> = m.into_iter().collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(v)
            }
            Some(other) => Err(SpecError::invalid(
                self.sub(key),
                format!("expected an attribute set, found {}", kind_of(&other)),
            )),
        }
    }

    fn hooks(&mut self, out: &mut Map<String, Value>) -> Result<(), SpecError> {
        for h in HOOKS {
            let s = self.string(h, Some(""))?;
            out.insert(h.into(), s.into());
        }
        Ok(())
    }

    /// Unknown options are errors, as in the module system; `_` attributes
    /// are disko internals that the devices JSON drops, so they are ignored.
    fn finish(self) -> Result<(), SpecError> {
        self.check_unknown()
    }

    fn check_unknown(&self) -> Result<(), SpecError> {
        for key in self.map.keys() {
            if !self.used.contains(key) && !key.starts_with('_') {
                return Err(SpecError::invalid(
                    format!("{}.{}", self.path, quote_attr(key)),
                    "this option does not exist in disko's schema (check its spelling and where it is nested)",
                ));
            }
        }
        Ok(())
    }
}
