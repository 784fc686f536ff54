//! Mounting a prepared disk set under a root (disko's mount script) and
//! taking it down again, loop devices included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lab_cli::Cmd;
use lab_disko::plan::{self as dplan, Step, TablePlan};
use lab_disko::Devices;

use super::devices::{attached_loops, block_device_for, detach_loop, partition_device};
use super::stacked::{self, LuksKeys};
use super::target::{check_mapping, geometry, target_of};
use super::{Action, ApplyOptions, DiskError};

/// Mounts every `Mount` step under `root`, in plan order (parents first);
/// already mounted ones are left alone. `node` maps a spec device path to
/// the node that holds it on this machine.
pub(super) fn mount_steps(
    steps: &[Step],
    root: &Path,
    node: &dyn Fn(&str) -> PathBuf,
) -> Result<Vec<Action>, DiskError> {
    let mut actions = Vec::new();
    for step in steps {
        if let Step::Mount { device, mountpoint, fs_type, options } = step {
            let target = join_root(root, mountpoint);
            if is_mountpoint(&target) {
                actions.push(Action {
                    what: format!("mount {mountpoint}"),
                    done: false,
                    detail: format!("{} is already mounted", target.display()),
                });
                continue;
            }
            let dev = node(device);
            Cmd::new("mount")
                .args(["-t", fs_type])
                .arg(&dev)
                .arg(&target)
                .args(["-o", &options.join(","), "-o", "X-mount.mkdir"])
                .run()?;
            actions.push(Action {
                what: format!("mount {mountpoint}"),
                done: true,
                detail: format!("{} on {}", dev.display(), target.display()),
            });
        }
    }
    Ok(actions)
}

/// Where `mountpoint` of the spec lands under `root`.
pub(super) fn join_root(root: &Path, mountpoint: &str) -> PathBuf {
    let rel = mountpoint.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Whether something is mounted at `p` (false when findmnt cannot tell).
fn is_mountpoint(p: &Path) -> bool {
    Cmd::new("findmnt")
        .args(["-rno", "TARGET", "--mountpoint"])
        .arg(p)
        .probe()
        .map(|o| o.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

/// Mounts a prepared disk set (after `apply`, or on a rescue system):
/// attaches image files, finds each partition's node, opens LUKS volumes,
/// assembles arrays and activates VGs, and mounts what the spec mounts
/// under `opts.root`, leaving mounted and open ones alone.
pub fn mount(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    mount_with_keys(devices, opts, &LuksKeys::default())
}

/// [`mount`] with LUKS keys from files; a passphrase the spec asks for is
/// asked once on the terminal, before anything is opened.
pub fn mount_with_keys(
    devices: &Devices,
    opts: &ApplyOptions,
    luks_keys: &LuksKeys,
) -> Result<Vec<Action>, DiskError> {
    super::require_linux("labprov disk mount")?;
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    stacked::check_key_names(&steps, luks_keys)?;
    let mut tools = Vec::new();
    stacked::tools(&steps, &mut |t| tools.push(t));
    if let Some(program) = tools.into_iter().find(|t| !super::apply::on_path(t)) {
        let package = stacked::package_of(&program);
        return Err(lab_cli::ToolError::Missing { program, package }.into());
    }
    stacked::check_names_are_ours(&steps, &super::target::targets(devices, opts)?)?;
    let keys = stacked::gather_keys(&steps, luks_keys, false)?;
    let mut loops = BTreeMap::new();
    let mut nodes: BTreeMap<String, PathBuf> = BTreeMap::new();
    for step in &steps {
        if let Step::Partition { disk, table, .. } = step {
            let target = target_of(devices, opts, disk)?;
            let dev = block_device_for(&target, &mut loops)?;
            let parts: Vec<(u32, String)> = match table {
                TablePlan::Gpt { partitions, .. } => {
                    partitions.iter().map(|p| (p.number, p.device.clone())).collect()
                }
                TablePlan::Parted { partitions, .. } => {
                    partitions.iter().map(|p| (p.index as u32, p.device.clone())).collect()
                }
            };
            let (sector_size, _) = geometry(&target)?;
            for (n, spec_dev) in parts {
                let node = partition_device(&target, &dev, n, sector_size)?;
                nodes.insert(spec_dev, node);
            }
        }
    }
    let node =
        |spec_dev: &str| nodes.get(spec_dev).cloned().unwrap_or_else(|| PathBuf::from(spec_dev));
    let mut actions = Vec::new();
    stacked::activate(&steps, &node, &keys, &mut actions)?;
    actions.extend(mount_steps(&steps, &opts.root, &node)?);
    Ok(actions)
}

/// Unmounts everything the spec mounts under `root`, children first, and
/// detaches the loop devices of mapped image files. Idempotent.
pub fn unmount(devices: &Devices, opts: &ApplyOptions) -> Result<Vec<Action>, DiskError> {
    super::require_linux("labprov disk unmount")?;
    check_mapping(devices, opts)?;
    let steps = dplan::plan(devices)?;
    // Before the first unmount: nothing of the machine's own is closed.
    if steps.iter().any(|s| matches!(s, Step::Luks(_) | Step::LvmVg(_) | Step::Mdadm(_))) {
        stacked::check_names_are_ours(&steps, &super::target::targets(devices, opts)?)?;
    }
    let mut actions = Vec::new();
    for step in steps.iter().rev() {
        if let Step::Mount { mountpoint, .. } = step {
            let target = join_root(&opts.root, mountpoint);
            if !is_mountpoint(&target) {
                actions.push(Action {
                    what: format!("unmount {mountpoint}"),
                    done: false,
                    detail: "not mounted".into(),
                });
                continue;
            }
            Cmd::new("umount").arg(&target).run()?;
            actions.push(Action {
                what: format!("unmount {mountpoint}"),
                done: true,
                detail: target.display().to_string(),
            });
        }
    }
    // Then close what the spec stacked, the last made first, so that the
    // loop devices below are free to go.
    stacked::deactivate(&steps, &mut actions)?;
    for path in opts.disks.values() {
        if std::fs::metadata(path).map(|m| m.is_file()).unwrap_or(false) {
            for l in attached_loops(path)? {
                let done = detach_loop(&l, path)?;
                let detail = if done {
                    path.display().to_string()
                } else {
                    "already detached or detaching".into()
                };
                actions.push(Action { what: format!("detach {}", l.display()), done, detail });
            }
            // Wait out the kernel's teardown, so that a re-run right after
            // this one never picks up a device that is going away.
            let mut waited = 0;
            while !attached_loops(path)?.is_empty() {
                if waited == 100 {
                    return Err(DiskError::StillAttached { image: path.clone() });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                waited += 1;
            }
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_land_under_the_root() {
        assert_eq!(join_root(Path::new("/mnt"), "/"), PathBuf::from("/mnt"));
        assert_eq!(join_root(Path::new("/mnt"), "/boot/efi"), PathBuf::from("/mnt/boot/efi"));
    }
}
