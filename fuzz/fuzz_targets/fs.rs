//! Fuzz the filesystem readers (ext4, XFS, FAT, NTFS): probe, then walk the tree.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::fuzz_fs(data);
});
