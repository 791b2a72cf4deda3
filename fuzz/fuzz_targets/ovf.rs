//! Fuzz the OVF descriptor parser and the OVA manifest parser on text input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::source::ova::{ovf, parse_manifest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(env) = ovf::parse(&text) {
        if let Some(i) = env.boot_disk() {
            if let Some(d) = env.disks.get(i) {
                let _ = d.capacity_bytes();
                let _ = env.file_of(d);
            }
        }
        for d in &env.disks {
            let _ = d.capacity_bytes();
        }
    }
    let _ = parse_manifest(&text);
});
