//! disko's normalised devices JSON as typed Rust. Only normalised specs are
//! read into these types (every field is present), so a parse failure here
//! means the JSON did not come from disko or from [`super::normalize`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Devices {
    #[serde(default)]
    pub disk: BTreeMap<String, Disk>,
    #[serde(default)]
    pub mdadm: BTreeMap<String, Mdadm>,
    #[serde(default)]
    pub lvm_vg: BTreeMap<String, LvmVg>,
    #[serde(default)]
    pub nodev: BTreeMap<String, Nodev>,
}

impl Devices {
    /// Normalises a raw spec and reads it into the typed model.
    pub fn from_raw(raw: &serde_json::Value) -> Result<Devices, super::SpecError> {
        let normalized = super::normalize(raw)?;
        serde_json::from_value(normalized)
            .map_err(|e| super::SpecError::invalid("disko.devices", e.to_string()))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    pub name: String,
    pub device: String,
    pub destroy: bool,
    pub image_name: String,
    pub image_size: String,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Mdadm {
    pub name: String,
    pub level: i64,
    pub metadata: String,
    #[serde(rename = "extraArgs")]
    pub extra_args: Vec<String>,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LvmVg {
    pub name: String,
    pub lvs: BTreeMap<String, Lv>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Lv {
    pub name: String,
    pub size: String,
    pub priority: i64,
    pub lvm_type: Option<String>,
    #[serde(rename = "extraArgs")]
    pub extra_args: Vec<String>,
    pub pool: Option<String>,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Nodev {
    pub device: String,
    pub fs_type: String,
    pub mountpoint: String,
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Gpt(Gpt),
    Table(Table),
    Filesystem(Filesystem),
    Swap(Swap),
    Btrfs(Btrfs),
    Luks(Luks),
    LvmPv(LvmPv),
    Mdraid(Mdraid),
}

impl Content {
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Gpt(_) => "gpt",
            Content::Table(_) => "table",
            Content::Filesystem(_) => "filesystem",
            Content::Swap(_) => "swap",
            Content::Btrfs(_) => "btrfs",
            Content::Luks(_) => "luks",
            Content::LvmPv(_) => "lvm_pv",
            Content::Mdraid(_) => "mdraid",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Gpt {
    pub device: String,
    pub efi_gpt_partition_first: bool,
    pub partitions: BTreeMap<String, GptPartition>,
}

impl Gpt {
    /// Partitions in creation order with their 1-based numbers, exactly as
    /// disko numbers them (stable sort on priority over name order).
    pub fn sorted(&self) -> Vec<(u32, &GptPartition)> {
        let mut parts: Vec<&GptPartition> = self.partitions.values().collect();
        parts.sort_by_key(|p| p.priority);
        let numbers: Vec<u32> = parts
            .iter()
            .map(|p| parts.iter().position(|q| q.name == p.name).map(|i| i as u32 + 1).unwrap_or(0))
            .collect();
        numbers.into_iter().zip(parts).collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct GptPartition {
    pub name: String,
    pub label: String,
    pub device: String,
    #[serde(rename = "type")]
    pub type_code: String,
    pub size: String,
    pub start: String,
    pub end: String,
    pub priority: i64,
    pub alignment: i64,
    pub attributes: Vec<i64>,
    pub uuid: Option<String>,
    pub hybrid: Option<Hybrid>,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hybrid {
    pub mbr_partition_type: Option<String>,
    pub mbr_bootable_flag: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Table {
    pub device: String,
    pub format: String,
    pub partitions: Vec<TablePartition>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TablePartition {
    #[serde(rename = "part-type")]
    pub part_type: String,
    #[serde(rename = "fs-type")]
    pub fs_type: Option<String>,
    pub name: Option<String>,
    pub start: String,
    pub end: String,
    pub flags: Vec<String>,
    pub bootable: bool,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Filesystem {
    pub device: String,
    pub format: String,
    pub extra_args: Vec<String>,
    pub mount_options: Vec<String>,
    pub mountpoint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Swap {
    pub device: String,
    pub discard_policy: Option<String>,
    pub extra_args: Vec<String>,
    pub mount_options: Vec<String>,
    pub priority: Option<i64>,
    pub random_encryption: bool,
    pub resume_device: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Btrfs {
    pub device: String,
    pub extra_args: Vec<String>,
    pub mount_options: Vec<String>,
    pub mountpoint: Option<String>,
    pub subvolumes: BTreeMap<String, Subvolume>,
    pub swap: BTreeMap<String, SwapFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subvolume {
    pub name: String,
    pub extra_args: Vec<String>,
    pub mount_options: Vec<String>,
    pub mountpoint: Option<String>,
    pub swap: BTreeMap<String, SwapFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct SwapFile {
    pub size: String,
    pub path: String,
    pub priority: Option<i64>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Luks {
    pub device: String,
    pub name: String,
    pub key_file: Option<String>,
    pub password_file: Option<String>,
    pub ask_password: bool,
    pub settings: serde_json::Map<String, serde_json::Value>,
    pub additional_key_files: Vec<String>,
    pub initrd_unlock: bool,
    pub extra_format_args: Vec<String>,
    pub extra_open_args: Vec<String>,
    pub content: Option<Box<Content>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct LvmPv {
    pub device: String,
    pub vg: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Mdraid {
    pub device: String,
    pub name: String,
}
