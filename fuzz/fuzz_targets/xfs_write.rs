//! Fuzz the XFS writer with structure-aware operation lists on a mkfs-seeded
//! image ([`common::fuzz_writer`]): a 32 MiB v5 XFS made once per process by
//! mkfs.xfs at the installed defaults (reflink, finobt, sparse inodes), or
//! `ONRAMP_FUZZ_XFS`.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    let img = IMG.get_or_init(|| {
        common::mkfs_seed("ONRAMP_FUZZ_XFS", "mkfs.xfs", &["-q", "-f"], 32 << 20)
    });
    common::fuzz_writer("xfs", img.clone(), data);
});
