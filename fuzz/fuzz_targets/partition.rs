//! Fuzz MBR/GPT/LVM scanning over an in-memory disk, then open each volume.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use onramp::block::BlockSource;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let disk: Arc<dyn BlockSource> = Arc::new(common::Mem(data.to_vec()));
    if let Ok(layout) = onramp::partition::scan(&disk) {
        let _ = layout.has_esp();
        for v in layout.volumes.iter().take(64) {
            if let Ok(vol) = v.open(&disk) {
                common::exercise(&*vol);
            }
        }
    }
});
