//! vmdk-stream and gce-tar output, judged by qemu-img, GNU tar and gzip.

mod common;
use common::convert::*;
use common::*;
use std::path::Path;

/// Convert `src` to vmdk-stream at `dir/name` and check it with qemu-img.
fn vmdk_roundtrip(src: &Path, dir: &Path, extra: &[&str], want_size: u64) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("disk.vmdk");
    convert_ok(src, &out, "vmdk-stream", extra);
    assert!(qemu_check_ok(&out, "vmdk").contains("No errors were found"));
    let v = qemu_info(&out, "vmdk");
    assert_eq!(v["virtual-size"].as_u64(), Some(want_size));
    assert_eq!(
        v["format-specific"]["data"]["create-type"].as_str(),
        Some("streamOptimized")
    );
    assert!(
        qemu_compare(src, "raw", &out, "vmdk"),
        "qemu-img compare says {} differs from {}",
        out.display(),
        src.display()
    );
    sha256_file(&out)
}

#[test]
fn vmdk_stream_raw_with_holes_non_mib_size() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 30_000_000);
    let guard = InputGuard::new(&src);
    // 30_000_000 is not a whole number of sectors: rounded up to 58594 sectors.
    let a = vmdk_roundtrip(&src, &d.path().join("a"), &[], 30_000_128);
    let b = vmdk_roundtrip(&src, &d.path().join("b"), &[], 30_000_128);
    assert_eq!(a, b, "two runs differ");
    guard.check();
    // Zero grains are not stored: the file is far smaller than the disk.
    let len = std::fs::metadata(d.path().join("a/disk.vmdk"))
        .unwrap()
        .len();
    assert!(len < 2 << 20, "vmdk is {len} bytes");
}

#[test]
fn vmdk_stream_ext4_disk_and_grown() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let src = make_ext4_disk(d.path(), "e", 40);
    let a = vmdk_roundtrip(&src, &d.path().join("a"), &[], 40 << 20);
    let b = vmdk_roundtrip(&src, &d.path().join("b"), &[], 40 << 20);
    assert_eq!(a, b, "two runs differ");
    // --size grows the disk; the tail reads as zeros (compare warns about size only).
    vmdk_roundtrip(&src, &d.path().join("g"), &["--size", "100M"], 100 << 20);
}

#[test]
fn vmdk_stream_grown_raw_with_partial_last_grain() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("in.raw");
    // Data runs to the very end of a size that ends mid-grain.
    make_raw_with_holes(&src, 5_000_192);
    vmdk_roundtrip(&src, &d.path().join("g"), &["--size", "70M"], 70 << 20);
    vmdk_roundtrip(&src, &d.path().join("p"), &[], 5_000_192);
}

/// Make a sparse raw with `regions` separate data runs plus a large data block.
fn make_fragmented(path: &Path, size: u64, regions: u64, big: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for i in 0..regions {
        f.write_all_at(&pattern(i + 10, 3000), i * 256 * 1024 + 512)
            .unwrap();
    }
    // A compressible-but-not-trivial block of data (text mixed with noise).
    let mut data = Vec::with_capacity(big);
    let mut i = 0u64;
    while data.len() < big {
        data.extend_from_slice(format!("line {i} of some text for the disk\n").as_bytes());
        data.extend_from_slice(&pattern(i, 40));
        i += 1;
    }
    data.truncate(big);
    f.write_all_at(&data, size / 2).unwrap();
}

/// Build a gce-tar, check it with gzip and GNU tar, extract it sparsely and
/// compare with the source. Returns (sha256 of the .tar.gz, its size).
fn gce_roundtrip(src: &Path, dir: &Path, extra: &[&str], want_size: u64) -> (String, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("image.tar.gz");
    convert_ok(src, &out, "gce-tar", extra);
    run("gzip", &["-t", s(&out)]);
    let list = run("tar", &["-tvf", s(&out)]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "tar lists: {list}");
    assert!(lines[0].ends_with(" disk.raw"), "tar lists: {list}");
    assert!(
        lines[0].contains(&want_size.to_string()),
        "tar lists: {list}"
    );
    let x = subdir(dir, "x");
    run("tar", &["-xSzf", s(&out), "-C", s(&x)]);
    let raw = x.join("disk.raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), want_size);
    assert!(
        qemu_compare(src, "raw", &raw, "raw"),
        "extracted disk.raw differs from the source"
    );
    // Extracted sparsely: GNU tar only wrote the stored regions.
    assert!(allocated(&raw) < want_size / 4, "disk.raw extracted dense");
    let len = std::fs::metadata(&out).unwrap().len();
    (sha256_file(&out), len)
}

#[test]
fn gce_tar_raw_with_holes() {
    if !require(&["qemu-img", "tar", "gzip"]) {
        return;
    }
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 30_000_000);
    let guard = InputGuard::new(&src);
    let (a, len) = gce_roundtrip(&src, &d.path().join("a"), &[], 1 << 30);
    let (b, _) = gce_roundtrip(&src, &d.path().join("b"), &[], 1 << 30);
    assert_eq!(a, b, "two runs differ");
    guard.check();
    // A 1 GiB disk.raw with ~1 MiB of data: the archive stays small.
    assert!(len < 2 << 20, "tar.gz is {len} bytes");
}

#[test]
fn gce_tar_many_regions_and_members_and_grown() {
    if !require(&["qemu-img", "tar", "gzip"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("frag.raw");
    // 60 regions: the sparse map needs extension headers; 12 MiB of data
    // spans several 4 MiB gzip members.
    make_fragmented(&src, 40 << 20, 60, 12 << 20);
    let (a, _) = gce_roundtrip(&src, &d.path().join("a"), &[], 1 << 30);
    let (b, _) = gce_roundtrip(&src, &d.path().join("b"), &["--size", "1G"], 1 << 30);
    assert_eq!(a, b, "same size, same bytes");
    // --size past a GiB: grown to the next whole GiB.
    gce_roundtrip(&src, &d.path().join("g"), &["--size", "1025M"], 2 << 30);
    // Several gzip members (multi-member output of the parallel compressor).
    let gz = std::fs::read(d.path().join("a/image.tar.gz")).unwrap();
    let members = gz.windows(4).filter(|w| w == &[0x1f, 0x8b, 8, 0]).count();
    assert!(
        members >= 3,
        "expected several gzip members, found {members}"
    );
}

#[test]
fn gce_tar_ext4_disk_matches_gnu_tar_listing() {
    if !require(&["qemu-img", "tar", "gzip", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let src = make_ext4_disk(d.path(), "e", 40);
    gce_roundtrip(&src, &d.path().join("a"), &[], 1 << 30);
    // GNU tar's own archive of the same (grown) file lists the same member.
    let stage = subdir(d.path(), "stage");
    run(
        "cp",
        &["--sparse=always", s(&src), s(&stage.join("disk.raw"))],
    );
    run("truncate", &["-s", "1G", s(&stage.join("disk.raw"))]);
    let theirs = d.path().join("gnu.tar.gz");
    run(
        "tar",
        &[
            "--format=oldgnu",
            "-Sczf",
            s(&theirs),
            "-C",
            s(&stage),
            "--owner=0",
            "--group=0",
            "--mtime=@946684800",
            "--mode=0644",
            "disk.raw",
        ],
    );
    let ours = run("tar", &["-tvf", s(&d.path().join("a/image.tar.gz"))]);
    let gnu = run("tar", &["-tvf", s(&theirs)]);
    assert_eq!(ours, gnu);
}
