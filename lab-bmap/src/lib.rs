//! Block maps in bmaptool's format 2.0: which blocks of an image hold data,
//! with a sha256 per range, so flashing writes only those and can check them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use lab_cli::progress::Progress;

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
        let pct = if self.blocks_count() == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / self.blocks_count() as f64
        };
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
                s.push_str(&format!(
                    "        <Range chksum=\"{}\"> {} </Range>\n",
                    r.sha256, r.first
                ));
            } else {
                s.push_str(&format!(
                    "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                    r.sha256, r.first, r.last
                ));
            }
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        s
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not a bmap file: {0}")]
    Format(String),
    #[error(
        "bmap version {0} is not supported (labimg reads format 1.x/2.x with sha256 checksums)"
    )]
    Version(String),
    #[error("bmap checksum type {0} is not supported (only sha256)")]
    ChecksumType(String),
    #[error("the bmap file is damaged: its BmapFileChecksum does not match its content")]
    FileChecksum,
    #[error("bmap range {0} is invalid: {1}")]
    Range(String, String),
}

impl Bmap {
    /// Parses and checks a bmap file: its own checksum, the sizes, and that
    /// the ranges are ordered, disjoint and inside the image.
    pub fn parse(text: &str) -> Result<Bmap, ParseError> {
        let fmt = |m: &str| ParseError::Format(m.to_string());
        let body = strip_comments(text).ok_or_else(|| fmt("unterminated comment"))?;
        let root = body.find("<bmap").ok_or_else(|| fmt("no <bmap> element"))?;
        let open_end = body[root..].find('>').ok_or_else(|| fmt("unterminated <bmap> tag"))? + root;
        let version = attribute(&body[root..open_end], "version")
            .ok_or_else(|| fmt("<bmap> has no version"))?;
        let major = version.split('.').next().unwrap_or_default();
        if major != "1" && major != "2" {
            return Err(ParseError::Version(version));
        }
        let number = |name: &str| -> Result<u64, ParseError> {
            let v =
                element(&body, name).ok_or_else(|| ParseError::Format(format!("no <{name}>")))?;
            v.trim()
                .parse()
                .map_err(|_| ParseError::Format(format!("<{name}> is not a number: {}", v.trim())))
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_count = number("MappedBlocksCount")?;
        if block_size == 0 || block_size > (1 << 30) || !block_size.is_power_of_two() {
            return Err(fmt("<BlockSize> must be a power of two"));
        }
        if blocks_count != image_size.div_ceil(block_size) {
            return Err(fmt("<BlocksCount> does not match <ImageSize> / <BlockSize>"));
        }
        let checksum_type = element(&body, "ChecksumType")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "sha1".into());
        if checksum_type != "sha256" {
            return Err(ParseError::ChecksumType(checksum_type));
        }
        if let Some(sum) = element(&body, "BmapFileChecksum").map(str::trim) {
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fmt("<BmapFileChecksum> is not a sha256"));
            }
            let zeroed = text.replacen(sum, &"0".repeat(64), 1);
            if hex::encode(Sha256::digest(zeroed.as_bytes())) != sum.to_ascii_lowercase() {
                return Err(ParseError::FileChecksum);
            }
        }
        let map = element(&body, "BlockMap").ok_or_else(|| fmt("no <BlockMap>"))?;
        let mut ranges = Vec::new();
        let mut rest = map;
        while let Some(start) = rest.find("<Range") {
            let tag_end =
                rest[start..].find('>').ok_or_else(|| fmt("unterminated <Range>"))? + start;
            let close =
                rest[tag_end..].find("</Range>").ok_or_else(|| fmt("<Range> without </Range>"))?
                    + tag_end;
            let value = rest[tag_end + 1..close].trim();
            let bad = |why: &str| ParseError::Range(value.to_string(), why.to_string());
            let (first, last) = match value.split_once('-') {
                Some((a, b)) => (a.trim().parse::<u64>(), b.trim().parse::<u64>()),
                None => (value.parse::<u64>(), value.parse::<u64>()),
            };
            let (first, last) = (
                first.map_err(|_| bad("not a block number"))?,
                last.map_err(|_| bad("not a block number"))?,
            );
            if first > last || last >= blocks_count {
                return Err(bad("outside the image or reversed"));
            }
            if let Some(prev) = ranges.last().map(|r: &Range| r.last) {
                if first <= prev {
                    return Err(bad("overlaps or precedes the range before it"));
                }
            }
            let sha256 = attribute(&rest[start..tag_end], "chksum")
                .ok_or_else(|| bad("no chksum"))?
                .to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("chksum is not a sha256"));
            }
            ranges.push(Range { first, last, sha256 });
            rest = &rest[close + "</Range>".len()..];
        }
        let bmap = Bmap { image_size, block_size, ranges };
        if bmap.mapped_blocks() != mapped_count {
            return Err(fmt("<MappedBlocksCount> does not match the ranges"));
        }
        Ok(bmap)
    }

    /// Byte span of a range, clipped to the image's end.
    pub fn span(&self, r: &Range) -> (u64, u64) {
        let start = r.first * self.block_size;
        (start, ((r.last + 1) * self.block_size).min(self.image_size))
    }
}

fn strip_comments(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("-->")? + i + 3;
        rest = &rest[end..];
    }
    out.push_str(rest);
    Some(out)
}

/// The text inside the first `<name>...</name>`.
fn element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(&body[start..end])
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let at = tag.find(&key)? + key.len();
    let quote = tag[at..].chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value_start = at + 1;
    let end = tag[value_start..].find(quote)? + value_start;
    Some(tag[value_start..end].trim().to_string())
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
    // Every mapped byte is hashed twice (its range's sha256 and the whole
    // image's), and the whole hash also takes the holes' zeros: the whole
    // hash runs on a second thread, fed the chunks this one has read and
    // hashed, which come back through `free` to be read into again.
    const CHUNK: usize = 4 << 20;
    enum Feed {
        Zeros(u64),
        Data(Vec<u8>, usize),
    }
    let (feed_tx, feed_rx) = std::sync::mpsc::sync_channel::<Feed>(3);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    for _ in 0..4 {
        free_tx.send(vec![0u8; CHUNK]).expect("the receiver is here");
    }
    std::thread::scope(|scope| {
        // Owned here: an early error drops it, which ends the hash thread
        // before the scope waits for it.
        let feed_tx = feed_tx;
        let whole = scope.spawn(move || {
            let mut whole = Sha256::new();
            let zeros = vec![0u8; 1 << 20];
            for feed in feed_rx {
                match feed {
                    Feed::Zeros(mut n) => {
                        while n > 0 {
                            let k = n.min(zeros.len() as u64) as usize;
                            whole.update(&zeros[..k]);
                            n -= k as u64;
                        }
                    }
                    Feed::Data(buf, n) => {
                        whole.update(&buf[..n]);
                        // The reader may have stopped (an error): nothing to return to.
                        let _ = free_tx.send(buf);
                    }
                }
            }
            hex::encode(whole.finalize())
        });
        let mut at = 0u64;
        let mut ranges = Vec::with_capacity(blocks.len());
        for (first, last) in blocks {
            let start = first * BLOCK_SIZE;
            let end = ((last + 1) * BLOCK_SIZE).min(size);
            feed_tx.send(Feed::Zeros(start - at)).map_err(io::Error::other)?;
            let mut range = Sha256::new();
            let mut pos = start;
            while pos < end {
                lab_cli::interrupt::check().map_err(io::Error::other)?;
                let mut buf = free_rx.recv().map_err(io::Error::other)?;
                let n = (end - pos).min(CHUNK as u64) as usize;
                file.read_exact_at(&mut buf[..n], pos)?;
                range.update(&buf[..n]);
                feed_tx.send(Feed::Data(buf, n)).map_err(io::Error::other)?;
                pos += n as u64;
                bar.inc(n as u64);
            }
            at = end;
            ranges.push(Range { first, last, sha256: hex::encode(range.finalize()) });
        }
        feed_tx.send(Feed::Zeros(size - at)).map_err(io::Error::other)?;
        drop(feed_tx);
        let whole = whole.join().map_err(|_| io::Error::other("the image hash thread panicked"))?;
        bar.finish_and_clear();
        Ok((Bmap { image_size: size, block_size: BLOCK_SIZE, ranges }, whole))
    })
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
    fn parses_what_it_writes() {
        let b = Bmap {
            image_size: 10 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                Range { first: 0, last: 0, sha256: "ab".repeat(32) },
                Range { first: 3, last: 10, sha256: "cd".repeat(32) },
            ],
        };
        assert_eq!(Bmap::parse(&b.to_xml()).unwrap(), b);
        assert_eq!(b.span(&b.ranges[1]), (3 * 4096, 10 * 4096 + 100));
    }

    #[test]
    fn refuses_damaged_or_inconsistent_maps() {
        let b = Bmap {
            image_size: 8192,
            block_size: 4096,
            ranges: vec![Range { first: 0, last: 1, sha256: "ab".repeat(32) }],
        };
        let xml = b.to_xml();
        assert_eq!(Bmap::parse(&xml.replace("0-1", "0-2")), Err(ParseError::FileChecksum));
        let no_sum = |x: &str| {
            let s = x.split("<BmapFileChecksum>").collect::<Vec<_>>();
            let rest = s[1].split_once("</BmapFileChecksum>").unwrap().1;
            format!("{}{}", s[0], rest)
        };
        assert!(matches!(
            Bmap::parse(&no_sum(&xml.replace("0-1", "0-2"))),
            Err(ParseError::Range(..))
        ));
        assert!(Bmap::parse(&no_sum(&xml.replace("sha256 <", "md5 <"))).is_err());
        assert!(Bmap::parse("<bmap version=\"3.0\">").is_err());
        assert!(Bmap::parse("garbage").is_err());
    }

    #[test]
    fn xml_checksum_is_self_consistent() {
        let b = Bmap {
            image_size: 8192,
            block_size: 4096,
            ranges: vec![Range { first: 0, last: 0, sha256: "ab".repeat(32) }],
        };
        let xml = b.to_xml();
        let sum = xml.split("<BmapFileChecksum> ").nth(1).unwrap()[..64].to_string();
        let zeroed = xml.replacen(&sum, &"0".repeat(64), 1);
        assert_eq!(sum, hex::encode(Sha256::digest(zeroed.as_bytes())));
        assert!(xml.contains("<Range chksum=\"") && xml.contains("> 0 </Range>"));
    }
}
