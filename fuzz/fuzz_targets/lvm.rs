//! Fuzz LVM2: the metadata text parser directly, then the on-disk PV label /
//! metadata area reader and the LV mapping over an in-memory disk.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use onramp::partition::lvm;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lvm::parse_config(text);
    }
    let disk = common::Mem(data.to_vec());
    if let Ok(Some(pv)) = lvm::read_pv(&disk) {
        let mut warnings = Vec::new();
        let size = data.len() as u64;
        for v in lvm::logical_volumes(&[(0, pv)], size, &mut warnings).iter().take(64) {
            let _ = format!("{v:?}");
        }
    }
});
