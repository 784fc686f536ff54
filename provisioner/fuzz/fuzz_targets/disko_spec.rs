//! The disko spec parser and normaliser take JSON from anywhere (a file the
//! operator passes, `nix eval` of a host's disko.nix): whatever the bytes,
//! they give a spec or an error, never a panic. A spec they accept is a
//! fixed point (normalising disko's own output changes nothing), reads into
//! the typed model, plans, and resolves on disks of several sizes without
//! a panic: a bad size is an error there, not an overflow.
#![no_main]

use lab_disko::{plan, Devices};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = lab_disko::normalize_str(text) else {
        return;
    };
    assert_eq!(
        lab_disko::normalize(&normalized).as_ref(),
        Ok(&normalized),
        "normalising a normalised spec changed it"
    );
    let devices: Devices =
        serde_json::from_value(normalized).expect("a normalised spec reads into the model");
    let Ok(steps) = plan::plan(&devices) else {
        return;
    };
    for step in &steps {
        if let plan::Step::Partition { table, .. } = step {
            for (sector_size, sectors) in
                [(512, 2048), (512, 8 << 20), (4096, 1 << 20), (512, u64::from(u32::MAX) + 4096)]
            {
                if let Ok(parts) = plan::resolve_table(table, sector_size, sectors, &[]) {
                    for p in &parts {
                        assert!(
                            p.first <= p.last && p.last < sectors,
                            "partition {} at {}..{} on {sectors} sectors",
                            p.number,
                            p.first,
                            p.last
                        );
                    }
                }
            }
        }
    }
});
