//! Block maps in bmaptool's format 2.0: which blocks of an image hold data,
//! with a sha256 per range, so flashing writes only those and can check them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::progress::Progress;

pub const BLOCK_SIZE: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First and last block, inclusive (as bmap files write them).
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

impl Bmap {
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.last - r.first + 1).sum()
    }

    /// The XML text, with `BmapFileChecksum` computed the way bmaptool checks
    /// it: the sha256 of the file with that field's value set to zeros.
    pub fn to_xml(&self) -> String {
        let zeros = "0".repeat(64);
        let text = self.render(&zeros);
        let sum = hex::encode(Sha256::digest(text.as_bytes()));
        text.replacen(&zeros, &sum, 1)
    }

    fn render(&self, checksum: &str) -> String {
        let mapped = self.mapped_blocks();
        let pct = if self.blocks_count() == 0 { 0.0 } else { mapped as f64 * 100.0 / self.blocks_count() as f64 };
        let mut s = String::new();
        s.push_str("<?xml version=\"1.0\" ?>\n");
        s.push_str("<!-- Block map written by labimg: the blocks of the image that hold data.\n");
        s.push_str("     Only these need to be written to a card; each range carries the sha256\n");
        s.push_str("     of its bytes. Flash with `labimg flash` or `bmaptool copy`. -->\n");
        s.push_str("<bmap version=\"2.0\">\n");
        s.push_str(&format!("    <!-- Image size in bytes: {} MiB -->\n", self.image_size >> 20));
        s.push_str(&format!("    <ImageSize> {} </ImageSize>\n\n", self.image_size));
        s.push_str("    <!-- Size of a block in bytes -->\n");
        s.push_str(&format!("    <BlockSize> {} </BlockSize>\n\n", self.block_size));
        s.push_str("    <!-- Count of blocks in the image file -->\n");
        s.push_str(&format!("    <BlocksCount> {} </BlocksCount>\n\n", self.blocks_count()));
        s.push_str(&format!("    <!-- Count of mapped blocks: {:.1}% -->\n", pct));
        s.push_str(&format!("    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n"));
        s.push_str("    <!-- Type of checksum used in this file -->\n");
        s.push_str("    <ChecksumType> sha256 </ChecksumType>\n\n");
        s.push_str("    <!-- Checksum of this file, computed with this field set to zeros -->\n");
        s.push_str(&format!("    <BmapFileChecksum> {checksum} </BmapFileChecksum>\n\n"));
        s.push_str("    <!-- Mapped block ranges (first-last, inclusive) -->\n");
        s.push_str("    <BlockMap>\n");
        for r in &self.ranges {
            if r.first == r.last {
                s.push_str(&format!("        <Range chksum=\"{}\"> {} </Range>\n", r.sha256, r.first));
            } else {
                s.push_str(&format!("        <Range chksum=\"{}\"> {}-{} </Range>\n", r.sha256, r.first, r.last));
            }
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        s
    }
}

/// Byte ranges of `file` that hold data, from the filesystem's own map of
/// the file (SEEK_DATA / SEEK_HOLE), widened to whole blocks and merged.
pub fn data_blocks(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        let data = match lseek(file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break, // no data after pos
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(file, data, Whence::SeekHole)?;
        let first = data as u64 / BLOCK_SIZE;
        let last = (hole as u64).min(size).div_ceil(BLOCK_SIZE) - 1;
        match blocks.last_mut() {
            Some(prev) if prev.1 + 1 >= first => prev.1 = prev.1.max(last),
            _ => blocks.push((first, last)),
        }
        pos = hole;
    }
    Ok(blocks)
}

/// Reads the mapped blocks once, and from that one pass produces the bmap
/// (a sha256 per range) and the sha256 of the whole image (holes hashed as
/// the zeros they read as, without reading them).
pub fn digest(file: &File, size: u64, progress: Progress) -> io::Result<(Bmap, String)> {
    let blocks = data_blocks(file, size)?;
    let mapped_bytes: u64 = blocks.iter().map(|(f, l)| (l - f + 1) * BLOCK_SIZE).sum();
    let bar = progress.bytes("checksum", mapped_bytes);
    let mut whole = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0u64;
    let mut ranges = Vec::with_capacity(blocks.len());
    let feed_zeros = |h: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            h.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    for (first, last) in blocks {
        let start = first * BLOCK_SIZE;
        let end = ((last + 1) * BLOCK_SIZE).min(size);
        feed_zeros(&mut whole, start - at);
        let mut range = Sha256::new();
        let mut pos = start;
        while pos < end {
            crate::interrupt::check().map_err(io::Error::other)?;
            let n = (end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)?;
            range.update(&buf[..n]);
            whole.update(&buf[..n]);
            pos += n as u64;
            bar.inc(n as u64);
        }
        at = end;
        ranges.push(Range { first, last, sha256: hex::encode(range.finalize()) });
    }
    feed_zeros(&mut whole, size - at);
    bar.finish_and_clear();
    Ok((Bmap { image_size: size, block_size: BLOCK_SIZE, ranges }, hex::encode(whole.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_data_in_a_sparse_file_and_hashes_it() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&[1u8; 5000], 8192).unwrap();
        let (bmap, whole) = digest(&f, 1 << 20, Progress::hidden()).unwrap();
        assert_eq!(bmap.ranges.len(), 1);
        assert_eq!((bmap.ranges[0].first, bmap.ranges[0].last), (2, 3));
        let mut all = vec![0u8; 1 << 20];
        f.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(whole, hex::encode(Sha256::digest(&all)));
        assert_eq!(bmap.ranges[0].sha256, hex::encode(Sha256::digest(&all[8192..16384])));
    }

    #[test]
    fn xml_checksum_is_self_consistent() {
        let b = Bmap { image_size: 8192, block_size: 4096, ranges: vec![Range { first: 0, last: 0, sha256: "ab".repeat(32) }] };
        let xml = b.to_xml();
        let sum = xml.split("<BmapFileChecksum> ").nth(1).unwrap()[..64].to_string();
        let zeroed = xml.replacen(&sum, &"0".repeat(64), 1);
        assert_eq!(sum, hex::encode(Sha256::digest(zeroed.as_bytes())));
        assert!(xml.contains("<Range chksum=\"") && xml.contains("> 0 </Range>"));
    }
}
