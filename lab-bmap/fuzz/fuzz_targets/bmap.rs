//! The bmap parser takes files from anywhere (downloaded next to an image):
//! whatever the bytes, it returns a map or an error, never panics, and a map
//! it accepts is internally consistent and survives a round trip.
#![no_main]

use lab_bmap::Bmap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(map) = Bmap::parse(text) {
        let mut last = None;
        for r in &map.ranges {
            assert!(r.first <= r.last && r.last < map.blocks_count());
            assert!(last.is_none_or(|l| r.first > l));
            last = Some(r.last);
        }
        assert_eq!(Bmap::parse(&map.to_xml()).as_ref(), Ok(&map));
    }
});
