//! Fuzz the ext4 writer with structure-aware operation lists on a mkfs-seeded
//! image ([`common::fuzz_writer`]): a 2 MiB ext4 made once per process by
//! mkfs.ext4 (1 KiB blocks, a journal, metadata_csum), or `ONRAMP_FUZZ_EXT4`.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    let img = IMG.get_or_init(|| {
        common::mkfs_seed(
            "ONRAMP_FUZZ_EXT4",
            "mkfs.ext4",
            &["-q", "-F", "-b", "1024", "-N", "64", "-E", "root_owner=0:0"],
            2 << 20,
        )
    });
    common::fuzz_writer("ext4", img.clone(), data);
});
