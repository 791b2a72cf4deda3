#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use super::*;

fn link_buffer(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
    let s: Vec<u8> = sub.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let p: Vec<u8> = print.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut body = Vec::new();
    for v in [0u16, s.len() as u16, s.len() as u16, p.len() as u16] {
        body.extend(v.to_le_bytes());
    }
    if let Some(f) = flags {
        body.extend(f.to_le_bytes());
    }
    body.extend(&s);
    body.extend(&p);
    let mut b = tag.to_le_bytes().to_vec();
    b.extend((body.len() as u16).to_le_bytes());
    b.extend([0, 0]);
    b.extend(body);
    b
}

#[test]
fn link_targets_stay_inside_the_volume() {
    let b = link_buffer(
        TAG_SYMLINK,
        "\\??\\C:\\Windows\\System32",
        "C:\\Windows\\System32",
        Some(0),
    );
    assert_eq!(
        reparse_target(TAG_SYMLINK, &b).unwrap(),
        "/Windows/System32"
    );
    let b = link_buffer(TAG_SYMLINK, "..\\x\\y", "..\\x\\y", Some(1));
    assert_eq!(reparse_target(TAG_SYMLINK, &b).unwrap(), "../x/y");
    let b = link_buffer(TAG_MOUNT_POINT, "\\??\\D:\\", "", None);
    assert_eq!(reparse_target(TAG_MOUNT_POINT, &b).unwrap(), "/");
    let b = link_buffer(TAG_MOUNT_POINT, "\\??\\Volume{0000-1111}\\", "", None);
    assert!(reparse_target(TAG_MOUNT_POINT, &b).is_err());
    let b = link_buffer(
        TAG_SYMLINK,
        "\\\\server\\share",
        "\\\\server\\share",
        Some(0),
    );
    assert!(reparse_target(TAG_SYMLINK, &b).is_err());
    // Truncated buffers: errors, no panic.
    let b = link_buffer(TAG_SYMLINK, "\\??\\C:\\a", "C:\\a", Some(0));
    for n in 0..b.len() {
        let _ = reparse_target(TAG_SYMLINK, &b[..n]);
    }
}

struct Mem(Vec<u8>);
impl BlockSource for Mem {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::block::check_range(self.size(), offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn format_name(&self) -> &'static str {
        "mem"
    }
}

#[test]
fn block_reader_reads_and_seeks_on_its_own() {
    let m = Mem((0..=255u8).collect());
    let mut a = BlockReader::new(&m);
    let mut b = BlockReader::new(&m);
    a.seek(SeekFrom::Start(250)).unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(a.read(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], &[250, 251, 252, 253, 254, 255]);
    assert_eq!(a.read(&mut buf).unwrap(), 0);
    assert_eq!(b.read(&mut buf[..2]).unwrap(), 2);
    assert_eq!(&buf[..2], &[0, 1]);
    assert!(b.seek(SeekFrom::Current(-5)).is_err());
    assert_eq!(b.seek(SeekFrom::End(-1)).unwrap(), 255);
}

#[test]
fn probe_ignores_other_data() {
    let m: Arc<dyn BlockSource> = Arc::new(Mem(vec![0u8; 4096]));
    assert!(probe(m).unwrap().is_none());
    let mut v = vec![0u8; 4096];
    v[3..11].copy_from_slice(OEM_ID);
    let m: Arc<dyn BlockSource> = Arc::new(Mem(v));
    assert!(probe(m).is_err());
}
