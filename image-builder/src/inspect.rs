//! `labimg inspect IMAGE`: what is in an image, read without mounting it:
//! partition table, filesystems, firmware files, and the host key's
//! fingerprint (never the private key).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::layout::SECTOR;
use lab_keys::{public_fingerprint, HOST_KEY_PATH};
use serde::Serialize;

use crate::fat::Slice;
use crate::firmware::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read image {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} has no MBR partition table: {reason}")]
    NoTable { path: PathBuf, reason: String },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub image: PathBuf,
    pub size: u64,
    pub mode: String,
    pub disk_id: String,
    pub partitions: Vec<Partition>,
    pub host_key: Option<HostKeyInfo>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    pub number: usize,
    pub r#type: String,
    pub bootable: bool,
    pub start: u64,
    pub size: u64,
    pub filesystem: Option<String>,
    pub label: Option<String>,
    pub id: Option<String>,
    /// Files on a FAT partition.
    pub files: Vec<FatEntry>,
}

#[derive(Debug, Serialize)]
pub struct FatEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostKeyInfo {
    pub path: &'static str,
    pub mode: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub public_key: Option<String>,
    pub fingerprint: Option<String>,
}

pub fn inspect(path: &Path) -> Result<Report, Error> {
    let read_err = |source| Error::Read { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    let mut f = &file;
    let mbr = mbrman::MBR::read_from(&mut f, SECTOR as u32)
        .map_err(|e| Error::NoTable { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut report = Report {
        image: path.to_path_buf(),
        size: meta.len(),
        mode: format!("{:04o}", meta.permissions().mode() & 0o7777),
        disk_id: format!("0x{:08x}", u32::from_le_bytes(mbr.header.disk_signature)),
        partitions: Vec::new(),
        host_key: None,
    };
    for (number, p) in mbr.iter().filter(|(_, p)| p.is_used()) {
        let start = p.starting_lba as u64 * SECTOR;
        let size = p.sectors as u64 * SECTOR;
        let mut part = Partition {
            number,
            r#type: format!("0x{:02x}", p.sys),
            bootable: p.boot == mbrman::BOOT_ACTIVE,
            start,
            size,
            filesystem: None,
            label: None,
            id: None,
            files: Vec::new(),
        };
        if let Ok(fs) =
            fatfs::FileSystem::new(Slice::new(&file, start, size), fatfs::FsOptions::new())
        {
            part.filesystem = Some(format!("{:?}", fs.fat_type()).to_lowercase());
            part.label = Some(fs.volume_label().trim().to_string());
            part.id = Some(format!("{:04X}-{:04X}", fs.volume_id() >> 16, fs.volume_id() & 0xffff));
            list_fat(&fs.root_dir(), "", &mut part.files).map_err(read_err)?;
        } else if let Some((label, uuid)) = ext4_identity(&file, start) {
            part.filesystem = Some("ext4".into());
            part.label = Some(label);
            part.id = Some(uuid);
            report.host_key = host_key(path, start);
        }
        report.partitions.push(part);
    }
    Ok(report)
}

fn list_fat<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<T>,
    prefix: &str,
    out: &mut Vec<FatEntry>,
) -> io::Result<()> {
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = format!("{prefix}{name}");
        if entry.is_dir() {
            list_fat(&entry.to_dir(), &format!("{path}/"), out)?;
        } else {
            let mut content = Vec::new();
            entry.to_file().read_to_end(&mut content)?;
            out.push(FatEntry { path, size: content.len() as u64, sha256: sha256_hex(&content) });
        }
    }
    Ok(())
}

fn ext4_identity(file: &File, start: u64) -> Option<(String, String)> {
    let mut sb = [0u8; 1024];
    file.read_exact_at(&mut sb, start + 1024).ok()?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xef53 {
        return None;
    }
    let label = String::from_utf8_lossy(&sb[0x78..0x88]).trim_end_matches('\0').to_string();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    Some((label, crate::ids::uuid_string(&uuid)))
}

/// The key's owner and mode, and the public half, read with debugfs.
fn host_key(image: &Path, offset: u64) -> Option<HostKeyInfo> {
    let run = |cmd: &str| -> Option<String> {
        // A missing debugfs or an unreadable filesystem shows as "no key".
        let out = lab_cli::Cmd::new("debugfs")
            .args(["-c", "-R", cmd])
            .arg(format!("{}?offset={offset}", image.display()))
            .probe()
            .ok()?;
        Some(out.text())
    };
    let stat = run(&format!("stat {HOST_KEY_PATH}"))?;
    if !stat.contains("Inode:") {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        stat.split_whitespace().skip_while(|w| *w != name).nth(1).map(str::to_string)
    };
    let public = run(&format!("cat {HOST_KEY_PATH}.pub")).filter(|p| p.starts_with("ssh-"));
    Some(HostKeyInfo {
        path: HOST_KEY_PATH,
        mode: field("Mode:"),
        uid: field("User:").and_then(|v| v.parse().ok()),
        gid: field("Group:").and_then(|v| v.parse().ok()),
        fingerprint: public.as_deref().and_then(public_fingerprint),
        public_key: public.map(|p| p.trim().to_string()),
    })
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} MiB, mode {}, MBR disk id {}",
            self.image.display(),
            self.size >> 20,
            self.mode,
            self.disk_id
        );
        for p in &self.partitions {
            let _ = writeln!(
                s,
                "  {} type {}{} start {} MiB size {} MiB {} label {} id {}",
                p.number,
                p.r#type,
                if p.bootable { " bootable" } else { "" },
                p.start >> 20,
                p.size >> 20,
                p.filesystem.as_deref().unwrap_or("unknown"),
                p.label.as_deref().unwrap_or("-"),
                p.id.as_deref().unwrap_or("-"),
            );
            for f in &p.files {
                let _ = writeln!(s, "      {:<28} {:>9}  {}", f.path, f.size, &f.sha256[..16]);
            }
        }
        match &self.host_key {
            Some(k) => {
                let _ = writeln!(
                    s,
                    "  host key {} mode {} uid {} gid {} {}",
                    k.path,
                    k.mode.as_deref().unwrap_or("?"),
                    k.uid.map(|u| u.to_string()).unwrap_or("?".into()),
                    k.gid.map(|u| u.to_string()).unwrap_or("?".into()),
                    k.fingerprint.as_deref().unwrap_or("(no .pub beside it)")
                );
            }
            None => {
                let _ = writeln!(s, "  host key: none in the image (or debugfs is not installed)");
            }
        }
        s
    }
}
