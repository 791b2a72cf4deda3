//! LVM2 fixture builders shared by the inspect and writer tests: a PV label,
//! one metadata area holding a VG's text, data from 1 MiB (pe_start 2048).
#![allow(dead_code)]

use std::path::Path;

pub fn poke(p: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

/// lvm2's calc_crc (see src/partition/lvm.rs), computed independently here.
pub fn lvm_crc(b: &[u8]) -> u32 {
    let mut crc: u32 = 0xf597a6cf;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Write an LVM2 PV of `pv_size` bytes at `pv_off` of `disk`: label in sector 1,
/// one metadata area at 4096 (size 1 MiB - 4096) holding `text`, pe_start 1 MiB.
pub fn write_pv(disk: &Path, pv_off: u64, pv_size: u64, pv_uuid: &str, text: &str) {
    let mut label = vec![0u8; 512];
    label[0..8].copy_from_slice(b"LABELONE");
    label[8..16].copy_from_slice(&1u64.to_le_bytes());
    label[20..24].copy_from_slice(&32u32.to_le_bytes());
    label[24..32].copy_from_slice(b"LVM2 001");
    label[32..64].copy_from_slice(pv_uuid.as_bytes());
    label[64..72].copy_from_slice(&pv_size.to_le_bytes());
    // data area: (1 MiB, 0 = to the end), terminator; metadata area: (4096, 1 MiB - 4096), terminator.
    label[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
    label[104..112].copy_from_slice(&4096u64.to_le_bytes());
    label[112..120].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
    let crc = lvm_crc(&label[20..512]);
    label[16..20].copy_from_slice(&crc.to_le_bytes());
    let mut mda = vec![0u8; 512];
    mda[4..20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    mda[20..24].copy_from_slice(&1u32.to_le_bytes());
    mda[24..32].copy_from_slice(&4096u64.to_le_bytes());
    mda[32..40].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
    mda[40..48].copy_from_slice(&512u64.to_le_bytes());
    mda[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    mda[56..60].copy_from_slice(&lvm_crc(text.as_bytes()).to_le_bytes());
    let crc = lvm_crc(&mda[4..512]);
    mda[0..4].copy_from_slice(&crc.to_le_bytes());
    poke(disk, pv_off + 512, &label);
    poke(disk, pv_off + 4096, &mda);
    poke(disk, pv_off + 4096 + 512, text.as_bytes());
}

/// Partition `disk` with an sfdisk script (no kernel re-read: image files).
pub fn sfdisk(disk: &Path, script: &str) {
    use std::io::Write;
    let mut c = std::process::Command::new("sfdisk")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["--no-reread", "--no-tell-kernel", "-q", super::s(disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}
