//! VHD (fixed, dynamic, differencing) and VHDX (fixed, dynamic, 4096-byte
//! sectors, differencing, non-empty log) readers, judged by qemu-img.
//!
//! Images qemu-img can make are made by qemu-img. What it cannot make is
//! built here by patching a qemu-img image, with the generators documented
//! next to each test:
//! - VHDX with 4096-byte logical sectors (`qemu-img create -f vhdx` has no
//!   sector-size option): the Logical Sector Size metadata item is rewritten
//!   (metadata items carry no checksum); qemu-img still reads the result and
//!   is the oracle.
//! - Differencing VHD / VHDX (qemu-img creates neither, and qemu does not read
//!   differencing VHDX): a qemu-img dynamic image is turned into a child by
//!   setting the disk type / has-parent flag, parent identity and locators,
//!   and by writing blocks with sector bitmaps. The expected disk is the
//!   parent's `qemu-img convert -O raw` output with the child's sectors laid
//!   over it, computed independently in the test.
//! - VHDX with a non-empty log: log entries built here (CRC-32C, descriptors,
//!   data sectors) and the header's log_guid set; qemu-img replays the log on
//!   a copy (`qemu-img check -r all`) and its raw output is the oracle.

mod common;
use common::convert::*;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// helpers

/// Bitwise CRC-32C, written independently of the reader's table version.
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn rd(p: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap();
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, off).unwrap();
    v
}

fn wr(p: &Path, off: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(data, off).unwrap();
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

/// The full check for an image qemu reads: onramp's raw equals qemu's raw,
/// the reader passes the conformance suite, and onramp's azure-vhd compares
/// identical to the image in qemu-img compare.
fn check_against_qemu(img: &Path, fmt: &str) {
    check_against_qemu_of(img, img, fmt)
}

/// [`check_against_qemu`] with qemu reading `oracle_img`, an image holding
/// the same disk as `img` in a form qemu reads.
fn check_against_qemu_of(img: &Path, oracle_img: &Path, fmt: &str) {
    let dir = img.parent().unwrap();
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    let reference = dir.join(format!("{name}.qemu.raw"));
    qemu_raw(oracle_img, fmt, &reference);
    let guard = Snapshot::new(img);
    let ours = dir.join(format!("{name}.onramp.raw"));
    convert_ok(img, &ours, "raw", &["--force"]);
    assert!(
        same_bytes(&ours, &reference),
        "{name}: raw output differs from qemu-img's"
    );
    let opts = onramp::source::OpenOptions::default();
    let r = onramp::source::open(img, &opts).unwrap();
    onramp::block::conformance::check(r.as_ref(), &reference)
        .unwrap_or_else(|e| panic!("{name}: conformance: {e}"));
    let vhd = dir.join(format!("{name}.azure.vhd"));
    convert_ok(img, &vhd, "azure-vhd", &["--force"]);
    assert!(
        qemu_compare(oracle_img, fmt, &vhd, "vpc"),
        "{name}: qemu-img compare says the azure-vhd differs"
    );
    guard.check();
    for p in [reference, ours, vhd] {
        std::fs::remove_file(p).ok();
    }
}

/// Byte-for-byte equality of two files: the same verdict as equal sha256
/// digests, without hashing in an unoptimised test build.
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut x).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut y[..n]).unwrap();
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// Like common's InputGuard (content and mtime unchanged) but comparing
/// against a copy instead of hashing, which is slow in test builds.
struct Snapshot {
    path: PathBuf,
    copy: PathBuf,
    mtime: std::time::SystemTime,
}

impl Snapshot {
    fn new(p: &Path) -> Self {
        let copy = p.with_extension("snapshot");
        std::fs::copy(p, &copy).unwrap();
        Snapshot {
            path: p.to_path_buf(),
            copy,
            mtime: std::fs::metadata(p).unwrap().modified().unwrap(),
        }
    }
    fn check(&self) {
        assert!(
            same_bytes(&self.path, &self.copy),
            "{} was modified",
            self.path.display()
        );
        let m = std::fs::metadata(&self.path).unwrap().modified().unwrap();
        assert_eq!(m, self.mtime, "{} mtime changed", self.path.display());
        std::fs::remove_file(&self.copy).ok();
    }
}

/// Run onramp under `timeout 10` and a 256 MiB address-space limit; expect
/// exit 2 and a message containing every `needles`.
fn expect_refused(args: &[&str], needles: &[&str]) -> String {
    let bin = onramp_bin();
    let mut full = vec![
        "30",
        "prlimit",
        "--as=268435456",
        "--",
        bin.to_str().unwrap(),
    ];
    full.extend_from_slice(args);
    let t = std::time::Instant::now();
    let o = run_output("timeout", &full);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(2),
        "onramp {args:?}: expected exit 2, got {:?}: {err}",
        o.status.code()
    );
    assert!(t.elapsed().as_secs() < 10);
    for n in needles {
        assert!(
            err.contains(n),
            "onramp {args:?}: message lacks {n:?}: {err}"
        );
    }
    err
}

/// With strace available, run onramp and list every path it opened.
fn opened_paths(args: &[&str], trace: &Path) -> Option<Vec<String>> {
    if !require_soft("strace") {
        return None;
    }
    let bin = onramp_bin();
    let mut full = vec![
        "-f",
        "-e",
        "trace=open,openat,openat2",
        "-o",
        s(trace),
        bin.to_str().unwrap(),
    ];
    full.extend_from_slice(args);
    run_output("strace", &full);
    let t = std::fs::read_to_string(trace).unwrap();
    Some(
        t.lines()
            .filter_map(|l| {
                let a = l.find('"')?;
                let b = l[a + 1..].find('"')?;
                Some(l[a + 1..a + 1 + b].to_string())
            })
            .collect(),
    )
}

fn require_soft(tool: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(tool).is_file())
}

/// Paths opened that lie outside `dir` (system libraries and /proc aside).
fn outside(paths: &[String], dir: &Path) -> Vec<String> {
    let d = dir.canonicalize().unwrap();
    paths
        .iter()
        .filter(|p| {
            let pp = Path::new(p);
            pp.is_absolute()
                && !pp.starts_with(&d)
                && !p.contains(".so")
                && !["/etc", "/lib", "/usr", "/proc", "/sys", "/dev"]
                    .iter()
                    .any(|x| pp.starts_with(x))
        })
        .cloned()
        .collect()
}

/// `onramp convert IMG OUT --to raw EXTRA...` is refused (see [`expect_refused`]).
fn refuse_to_raw(img: &Path, out: &Path, extra: &[&str], needles: &[&str]) -> String {
    expect_refused(&convert_args(img, out, "raw", extra), needles)
}

/// A child whose parent is reachable only outside its directory: converting
/// it with --allow-backing is refused and (with strace) opens nothing outside
/// `dir`.
fn refuse_confined(child: &Path, dir: &Path, trace: &Path, needles: &[&str]) {
    let out = dir.join("out.raw");
    let args = convert_args(child, &out, "raw", &["--allow-backing"]);
    expect_refused(&args, needles);
    if let Some(paths) = opened_paths(&args, trace) {
        let out = outside(&paths, dir);
        assert!(
            out.is_empty(),
            "opened outside the image directory: {out:?}"
        );
    }
}

/// One corrupt variant: a copy of `good` in `work/NAME/`, changed by `patch`,
/// is refused with `--from FROM` naming every `needles`, and (with strace)
/// opens nothing outside its directory but the output path.
fn refuse_patched(
    work: &Path,
    good: &Path,
    from: &str,
    name: &str,
    patch: &dyn Fn(&Path),
    needles: &[&str],
) {
    let out = work.join("out.raw");
    let dir = work.join(name);
    std::fs::create_dir(&dir).unwrap();
    let p = dir.join(format!("bad.{from}"));
    std::fs::copy(good, &p).unwrap();
    patch(&p);
    let args = convert_args(&p, &out, "raw", &["--force", "--from", from]);
    expect_refused(&args, needles);
    if let Some(paths) = opened_paths(&args, &work.join(format!("{name}.trace"))) {
        let o: Vec<String> = outside(&paths, &dir)
            .into_iter()
            .filter(|x| Path::new(x) != out)
            .collect();
        assert!(o.is_empty(), "{name}: opened outside: {o:?}");
    }
}

/// A work directory with an `images` subdirectory and a raw disk of `size`
/// bytes (with holes) at its top: (guard, images, raw).
fn chain_fixture(size: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempdir();
    let dir = subdir(d.path(), "images");
    let raw = holes_raw(d.path(), "base.raw", size);
    (d, dir, raw)
}

/// A differencing child read through its parent (--allow-backing): onramp's
/// raw output equals `expected`, the reader passes the conformance suite
/// against it and, with `azure`, qemu-img compares the azure-vhd output
/// identical to it. Outputs go to `work`. Returns `onramp info --json`.
fn check_child(child: &Path, expected: &Path, work: &Path, azure: bool) -> serde_json::Value {
    let out = work.join("child.raw");
    convert_ok(child, &out, "raw", &["--allow-backing"]);
    assert!(same_bytes(&out, expected));
    let opts = onramp::source::OpenOptions {
        allow_backing: true,
        ..Default::default()
    };
    let r = onramp::source::open(child, &opts).unwrap();
    onramp::block::conformance::check(r.as_ref(), expected).unwrap();
    if azure {
        let vhd = work.join("child.azure.vhd");
        convert_ok(child, &vhd, "azure-vhd", &["--allow-backing"]);
        assert!(qemu_compare(expected, "raw", &vhd, "vpc"));
    }
    info_json(&[s(child), "--allow-backing"])
}

/// `subformat=dynamic,force_size=on`: a dynamic VHD of exactly the raw's size.
const VHD_DYNAMIC: &str = "subformat=dynamic,force_size=on";

// ---------------------------------------------------------------------------
// VHD

#[test]
fn vhd_fixed_and_dynamic_from_qemu() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let holes = holes_raw(d.path(), "holes.raw", 20_000_000);
    let ext4 = make_ext4_disk(d.path(), "ext4", 32);
    let all: &[&str] = &[
        "subformat=dynamic",
        "subformat=dynamic,force_size=on",
        "subformat=fixed",
        "subformat=fixed,force_size=on",
    ];
    for (src, tag, variants) in [(&holes, "holes", all), (&ext4, "ext4", &all[1..3])] {
        for &opts in variants {
            let img = d
                .path()
                .join(format!("{tag}-{}.vhd", opts.replace([',', '='], "_")));
            qemu_from_raw(src, &img, "vpc", opts);
            check_against_qemu(&img, "vpc");
        }
    }
    // info shows the footer and the dynamic header.
    let img = d.path().join("holes-subformat_dynamic.vhd");
    let j = info_json(&[s(&img)]);
    let det = &j["details"];
    assert_eq!(det["disk_type"], "dynamic");
    assert_eq!(det["creator_application"], "qemu");
    assert_eq!(det["size_source"], "chs");
    assert_eq!(det["dynamic_header"]["block_size"], 2 << 20);
    assert_eq!(det["dynamic_header"]["max_table_entries"], 10);
}

/// Layout of a dynamic VHD (footer copy, header, BAT) read back for patching.
struct VhdLayout {
    hdr: u64,
    bat: u64,
    entries: u32,
    block: u64,
    foot: u64,
}

fn vhd_layout(p: &Path) -> VhdLayout {
    let f = rd(p, 0, 512);
    let hdr = be64(&f, 16);
    let h = rd(p, hdr, 1024);
    VhdLayout {
        hdr,
        bat: be64(&h, 16),
        entries: be32(&h, 28),
        block: u64::from(be32(&h, 32)),
        foot: file_len(p) - 512,
    }
}

fn vhd_sum(b: &[u8], skip: std::ops::Range<usize>) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)))
}

/// Rewrite the dynamic header at `l.hdr` through `f`, fixing its checksum.
fn vhd_patch_header(p: &Path, l: &VhdLayout, f: impl FnOnce(&mut Vec<u8>)) {
    let mut h = rd(p, l.hdr, 1024);
    f(&mut h);
    let c = vhd_sum(&h, 36..40);
    h[36..40].copy_from_slice(&c.to_be_bytes());
    wr(p, l.hdr, &h);
}

/// Rewrite both footer copies through `f`, fixing the checksum.
fn vhd_patch_footers(p: &Path, f: impl Fn(&mut Vec<u8>)) {
    let foot = file_len(p) - 512;
    let mut b = rd(p, foot, 512);
    f(&mut b);
    let c = vhd_sum(&b, 64..68);
    b[64..68].copy_from_slice(&c.to_be_bytes());
    wr(p, foot, &b);
    wr(p, 0, &b);
}

/// Generator for a differencing VHD: `qemu-img create -f vpc` makes an empty
/// dynamic child of the parent's size; this appends blocks (bitmap + data) at
/// the footer's place, then the W2ru / W2ku locator payloads, then the footer;
/// sets disk_type 4, parent_unique_id, parent_unicode_name and the locator
/// entries; fixes both checksums. Returns the child's written sectors as
/// (virtual offset, bytes).
fn make_vhd_child(
    parent: &Path,
    child: &Path,
    relative: Option<&str>,
    absolute: Option<&str>,
) -> Vec<(u64, Vec<u8>)> {
    let pfoot = rd(parent, file_len(parent) - 512, 512);
    let psize = be64(&pfoot, 48);
    qemu_img(&[
        "create",
        "-f",
        "vpc",
        "-o",
        VHD_DYNAMIC,
        s(child),
        &psize.to_string(),
    ]);
    let l = vhd_layout(child);
    assert_eq!(l.block, 2 << 20);
    let footer = rd(child, l.foot, 512);
    let mut pos = l.foot;
    let mut written = Vec::new();
    let mut bat = rd(child, l.bat, l.entries as usize * 4);
    // block 0: sectors 0..8 and 100..200 set; block 2: all set; block 3:
    // allocated with an empty bitmap (all from the parent).
    let plan: [(u64, Vec<std::ops::Range<u64>>); 3] = [
        (0, vec![0..8, 100..200]),
        (2, vec![0..2048, 2048..4096]),
        (3, vec![]),
    ];
    for (blk, ranges) in plan {
        let mut bitmap = vec![0u8; 512];
        let data = pattern(1000 + blk, 2 << 20);
        for r in &ranges {
            for sct in r.clone() {
                bitmap[(sct / 8) as usize] |= 0x80 >> (sct % 8);
            }
            let a = (r.start * 512) as usize;
            let b = (r.end * 512) as usize;
            written.push((blk * l.block + r.start * 512, data[a..b].to_vec()));
        }
        wr(child, pos, &bitmap);
        wr(child, pos + 512, &data);
        bat[blk as usize * 4..blk as usize * 4 + 4]
            .copy_from_slice(&((pos / 512) as u32).to_be_bytes());
        pos += 512 + (2 << 20);
    }
    wr(child, l.bat, &bat);
    let mut locs: Vec<(&[u8; 4], u64, u32)> = Vec::new();
    for (code, text) in [(b"W2ru", relative), (b"W2ku", absolute)] {
        if let Some(t) = text {
            let u: Vec<u8> = t.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
            let mut sector = vec![0u8; 512];
            sector[..u.len()].copy_from_slice(&u);
            wr(child, pos, &sector);
            locs.push((code, pos, u.len() as u32));
            pos += 512;
        }
    }
    wr(child, pos, &footer);
    vhd_patch_header(child, &l, |h| {
        h[40..56].copy_from_slice(&pfoot[68..84]);
        let name: Vec<u8> = "parent.vhd"
            .encode_utf16()
            .flat_map(|c| c.to_be_bytes())
            .collect();
        h[64..64 + name.len()].copy_from_slice(&name);
        for (i, (code, off, len)) in locs.iter().enumerate() {
            let e = 576 + i * 24;
            h[e..e + 4].copy_from_slice(*code);
            h[e + 4..e + 8].copy_from_slice(&512u32.to_be_bytes());
            h[e + 8..e + 12].copy_from_slice(&len.to_be_bytes());
            h[e + 16..e + 24].copy_from_slice(&off.to_be_bytes());
        }
    });
    vhd_patch_footers(child, |b| b[60..64].copy_from_slice(&4u32.to_be_bytes()));
    written
}

/// The expected disk of a child, `work/expected.raw`: qemu-img's raw of the
/// parent image `parent` (format `fmt`) with the child's `written` sectors
/// laid over it.
fn expected_disk(parent: &Path, fmt: &str, written: &[(u64, Vec<u8>)], work: &Path) -> PathBuf {
    let out = work.join("expected.raw");
    qemu_raw(parent, fmt, &out);
    for (off, data) in written {
        wr(&out, *off, data);
    }
    out
}

#[test]
fn vhd_differencing_reads_parent_through_bitmaps() {
    if !require(&["qemu-img"]) {
        return;
    }
    let (d, dir, raw) = chain_fixture(16 << 20);
    let parent = dir.join("parent.vhd");
    qemu_from_raw(&raw, &parent, "vpc", VHD_DYNAMIC);
    let child = dir.join("child.vhd");
    let written = make_vhd_child(
        &parent,
        &child,
        Some(".\\parent.vhd"),
        Some("C:\\images\\parent.vhd"),
    );
    let expected = expected_disk(&parent, "vpc", &written, d.path());
    let guard = Snapshot::new(&child);
    let pguard = Snapshot::new(&parent);

    // Without --allow-backing: refused, naming the parent.
    refuse_to_raw(
        &child,
        &d.path().join("x.raw"),
        &[],
        &["parent.vhd", "--allow-backing"],
    );
    let j = check_child(&child, &expected, d.path(), true);
    assert_eq!(j["details"]["disk_type"], "differencing");
    assert_eq!(
        j["details"]["dynamic_header"]["parent_unicode_name"],
        "parent.vhd"
    );
    guard.check();
    pguard.check();

    // A parent with another unique id is refused.
    let bad = dir.join("wrongid.vhd");
    std::fs::copy(&child, &bad).unwrap();
    let l = vhd_layout(&bad);
    vhd_patch_header(&bad, &l, |h| h[40] ^= 0xff);
    refuse_to_raw(
        &bad,
        &d.path().join("y.raw"),
        &["--allow-backing"],
        &["parent_unique_id"],
    );
}

#[test]
fn vhd_differencing_with_absolute_parent_only_is_refused() {
    if !require(&["qemu-img"]) {
        return;
    }
    let (d, dir, raw) = chain_fixture(8 << 20);
    // The parent exists, but outside the child's directory, named absolutely.
    let parent = d.path().join("parent.vhd");
    qemu_from_raw(&raw, &parent, "vpc", VHD_DYNAMIC);
    let child = dir.join("child.vhd");
    make_vhd_child(&parent, &child, None, Some(s(&parent)));
    refuse_confined(
        &child,
        &dir,
        &d.path().join("trace"),
        &["absolute", "parent.vhd"],
    );
    // A relative locator that climbs out is refused too.
    let child2 = dir.join("child2.vhd");
    make_vhd_child(&parent, &child2, Some("..\\parent.vhd"), None);
    refuse_to_raw(
        &child2,
        &dir.join("out2.raw"),
        &["--allow-backing"],
        &["not a plain file name"],
    );
}

#[test]
fn vhd_corrupt_variants_exit_2() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 12 << 20);
    let good = d.path().join("good.vhd");
    qemu_from_raw(&raw, &good, "vpc", "");
    let l = vhd_layout(&good);
    let case = |name: &str, patch: &dyn Fn(&Path), needles: &[&str]| {
        refuse_patched(d.path(), &good, "vhd", name, patch, needles)
    };
    case(
        "copies-disagree",
        &|p| {
            // Change original_size in the copy at byte 0 only, checksum fixed.
            let mut b = rd(p, 0, 512);
            b[47] ^= 1;
            let c = vhd_sum(&b, 64..68);
            b[64..68].copy_from_slice(&c.to_be_bytes());
            wr(p, 0, &b);
        },
        &["footer copy", "original_size"],
    );
    case(
        "footer-checksum",
        &|p| wr(p, file_len(p) - 512 + 40, &[0x7f]),
        &["VHD footer", "checksum"],
    );
    case(
        "header-checksum",
        &|p| wr(p, l.hdr + 28, &[0x7f]),
        &["dynamic disk header", "checksum"],
    );
    case(
        "header-cookie",
        &|p| vhd_patch_header(p, &l, |h| h[0] = b'X'),
        &["cookie"],
    );
    case(
        "bat-past-eof",
        &|p| wr(p, l.bat, &0x00ff_fff0u32.to_be_bytes()),
        &["VHD BAT", "entry 0"],
    );
    // Dynamic header fields: (case, byte offset, new big-endian value, messages).
    let fields: [(&str, usize, Vec<u8>, &[&str]); 5] = [
        (
            "huge-max-table-entries",
            28,
            0x7fff_ffffu32.to_be_bytes().to_vec(),
            &["max_table_entries"],
        ),
        (
            "too-many-table-entries",
            28,
            (l.entries + 100).to_be_bytes().to_vec(),
            &["max_table_entries"],
        ),
        (
            "too-few-table-entries",
            28,
            1u32.to_be_bytes().to_vec(),
            &["max_table_entries", "to cover"],
        ),
        (
            "block-size",
            32,
            3_000_000u32.to_be_bytes().to_vec(),
            &["block_size"],
        ),
        (
            "table-offset-past-eof",
            16,
            (1u64 << 40).to_be_bytes().to_vec(),
            &["table_offset"],
        ),
    ];
    for (name, at, value, needles) in fields {
        let set =
            |p: &Path| vhd_patch_header(p, &l, |h| h[at..at + value.len()].copy_from_slice(&value));
        case(name, &set, needles);
    }
    case(
        "data-offset-past-eof",
        &|p| {
            vhd_patch_footers(p, |b| {
                b[16..24].copy_from_slice(&(1u64 << 50).to_be_bytes())
            })
        },
        &["data_offset"],
    );
    case(
        "huge-current-size",
        &|p| {
            vhd_patch_footers(p, |b| {
                b[28..32].copy_from_slice(b"win ");
                b[48..56].copy_from_slice(&(1u64 << 62).to_be_bytes());
            })
        },
        &["current_size"],
    );
}

// ---------------------------------------------------------------------------
// VHDX

#[test]
fn vhdx_fixed_and_dynamic_from_qemu() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let holes = holes_raw(d.path(), "holes.raw", 20_000_000);
    let ext4 = make_ext4_disk(d.path(), "ext4", 32);
    let all: &[&str] = &[
        "subformat=dynamic",
        "subformat=fixed",
        "subformat=dynamic,block_size=1M",
        "subformat=dynamic,block_size=8M,log_size=2M",
        "subformat=dynamic,block_state_zero=off",
        "subformat=fixed,block_size=2M",
    ];
    for (src, tag, variants) in [(&holes, "holes", all), (&ext4, "ext4", &all[..3])] {
        for &opts in variants {
            let img = d
                .path()
                .join(format!("{tag}-{}.vhdx", opts.replace([',', '='], "_")));
            qemu_from_raw(src, &img, "vhdx", opts);
            check_against_qemu(&img, "vhdx");
        }
    }
    let img = d.path().join("holes-subformat_dynamic_block_size_1M.vhdx");
    let j = info_json(&[s(&img)]);
    let det = &j["details"];
    assert_eq!(det["block_size"], 1 << 20);
    assert_eq!(det["logical_sector_size"], 512);
    assert_eq!(det["has_parent"], false);
    assert_eq!(det["log"]["present"], false);
    assert!(det["current_header"]["sequence_number"].as_u64().is_some());
}

/// The file offsets of the regions of a VHDX: (bat, metadata).
fn vhdx_regions(p: &Path) -> (u64, u64) {
    let t = rd(p, 192 << 10, 64 << 10);
    assert_eq!(&t[..4], b"regi");
    let mut bat = 0;
    let mut meta = 0;
    for i in 0..le32(&t, 8) as usize {
        let e = 16 + i * 32;
        let off = le64(&t, e + 16);
        match &t[e..e + 4] {
            [0x66, 0x77, 0xC2, 0x2D] => bat = off,
            [0x06, 0xA2, 0x7C, 0x8B] => meta = off,
            _ => {}
        }
    }
    (bat, meta)
}

/// Metadata item offsets by the first 4 bytes of their GUID (LE).
fn vhdx_item(p: &Path, meta: u64, guid_a: u32) -> Option<(u64, usize)> {
    let t = rd(p, meta, 64 << 10);
    let n = u16::from_le_bytes([t[10], t[11]]) as usize;
    (0..n).find_map(|i| {
        let e = 32 + i * 32;
        (le32(&t, e) == guid_a).then(|| (meta + u64::from(le32(&t, e + 16)), e))
    })
}

const LSS: u32 = 0x8141_BF1D;
const FILE_PARAMS: u32 = 0xCAA1_6737;
const VDISK_SIZE: u32 = 0x2FA5_4224;

/// Rewrite a VHDX header slot (1 or 2) through `f` and fix its CRC-32C.
fn vhdx_patch_header(p: &Path, slot: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let off = slot * (64 << 10);
    let mut h = rd(p, off, 4096);
    f(&mut h);
    h[4..8].copy_from_slice(&[0; 4]);
    let c = crc32c(&h);
    h[4..8].copy_from_slice(&c.to_le_bytes());
    wr(p, off, &h);
}

/// Rewrite both region tables through `f` and fix their CRC-32C.
fn vhdx_patch_regions(p: &Path, f: impl Fn(&mut Vec<u8>)) {
    for off in [192u64 << 10, 256 << 10] {
        let mut t = rd(p, off, 64 << 10);
        f(&mut t);
        t[4..8].copy_from_slice(&[0; 4]);
        let c = crc32c(&t);
        t[4..8].copy_from_slice(&c.to_le_bytes());
        wr(p, off, &t);
    }
}

/// The current header's slot (1 or 2).
fn vhdx_current_slot(p: &Path) -> u64 {
    let a = le64(&rd(p, 64 << 10, 4096), 8);
    let b = le64(&rd(p, 128 << 10, 4096), 8);
    if b > a {
        2
    } else {
        1
    }
}

/// Generator for a 4096-byte logical sector VHDX: qemu-img can neither
/// create one (`qemu-img create -f vhdx -o help` has no sector option) nor
/// read one (qemu's vhdx driver opens only 512-byte logical sectors: "Operation
/// not supported"). So a qemu-img image is copied and its Logical Sector Size
/// item rewritten to 4096 (metadata items carry no checksum). The virtual size
/// is a multiple of 4096 and the image has fewer payload blocks than either
/// chunk ratio, so the BAT and the payload bytes are those of the 512-byte
/// original: the oracle is qemu-img reading that original.
#[test]
fn vhdx_4096_logical_sectors() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let ext4 = make_ext4_disk(d.path(), "ext4", 32);
    let holes = holes_raw(d.path(), "holes.raw", 24 << 20);
    for (src, tag, opts) in [
        (&ext4, "ext4", "subformat=dynamic,block_size=1M"),
        (&holes, "holes", "subformat=dynamic"),
        (&holes, "holesfixed", "subformat=fixed"),
    ] {
        let orig = d.path().join(format!("{tag}-512.vhdx"));
        qemu_from_raw(src, &orig, "vhdx", opts);
        let img = d.path().join(format!("{tag}-4k.vhdx"));
        std::fs::copy(&orig, &img).unwrap();
        let (_, meta) = vhdx_regions(&img);
        let (item, _) = vhdx_item(&img, meta, LSS).unwrap();
        assert_eq!(le32(&rd(&img, item, 4), 0), 512);
        wr(&img, item, &4096u32.to_le_bytes());
        check_against_qemu_of(&img, &orig, "vhdx");
        let j = info_json(&[s(&img)]);
        assert_eq!(j["details"]["logical_sector_size"], 4096);
    }
}

/// A VHDX parent-locator item: VHDX locator type, key/value entries, UTF-16LE.
fn vhdx_locator(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0u8; 20 + 12 * pairs.len()];
    // B04AEFB7-D19E-4A81-B789-25B8E9445913
    v[..16].copy_from_slice(&[
        0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59,
        0x13,
    ]);
    v[18..20].copy_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (i, (k, val)) in pairs.iter().enumerate() {
        let k: Vec<u8> = k.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
        let val: Vec<u8> = val.encode_utf16().flat_map(|c| c.to_le_bytes()).collect();
        let ko = v.len();
        v.extend_from_slice(&k);
        let vo = v.len();
        v.extend_from_slice(&val);
        let e = 20 + 12 * i;
        v[e..e + 4].copy_from_slice(&(ko as u32).to_le_bytes());
        v[e + 4..e + 8].copy_from_slice(&(vo as u32).to_le_bytes());
        v[e + 8..e + 10].copy_from_slice(&(k.len() as u16).to_le_bytes());
        v[e + 10..e + 12].copy_from_slice(&(val.len() as u16).to_le_bytes());
    }
    v
}

fn guid_text(g: &[u8]) -> String {
    format!(
        "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}}}",
        le32(g, 0),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10..16]
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

/// Generator for a differencing VHDX: `qemu-img create -f vhdx` (1 MiB
/// blocks, block_state_zero=off so unwritten blocks are NOT_PRESENT) makes an
/// empty child of the parent's size. This sets has_parent in File
/// Parameters, adds a Parent Locator metadata entry (required) after the
/// existing items (parent_linkage = the parent's current data_write_guid,
/// plus `relative`/`absolute` paths when given), and appends at the 1 MiB
/// aligned end of file: block 2 FULLY_PRESENT, block 5 PARTIALLY_PRESENT with
/// a sector bitmap block (sectors 0..8 and 1000..1100 present), and marks
/// block 8 ZERO (hiding the parent's data there). Returns the child's
/// contribution as (virtual offset, bytes).
fn make_vhdx_child(
    parent: &Path,
    child: &Path,
    relative: Option<&str>,
    absolute: Option<&str>,
    lss: u64,
) -> Vec<(u64, Vec<u8>)> {
    let (_, pmeta) = vhdx_regions(parent);
    let (psz, _) = vhdx_item(parent, pmeta, VDISK_SIZE).unwrap();
    let size = le64(&rd(parent, psz, 8), 0);
    qemu_img(&[
        "create",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M,block_state_zero=off",
        s(child),
        &size.to_string(),
    ]);
    let pslot = vhdx_current_slot(parent);
    let dwg = guid_text(&rd(parent, pslot * (64 << 10) + 32, 16));
    let (bat, meta) = vhdx_regions(child);
    if lss != 512 {
        let (item, _) = vhdx_item(child, meta, LSS).unwrap();
        wr(child, item, &(lss as u32).to_le_bytes());
    }
    let spb = (1u64 << 20) / lss; // sectors per 1 MiB block
    let chunk_ratio = (1u64 << 23) * lss / (1 << 20);
    // has_parent
    let (fp, _) = vhdx_item(child, meta, FILE_PARAMS).unwrap();
    let mut flags = rd(child, fp + 4, 4);
    flags[0] |= 2;
    wr(child, fp + 4, &flags);
    // parent locator item after the last existing item
    let mut t = rd(child, meta, 64 << 10);
    let n = u16::from_le_bytes([t[10], t[11]]) as usize;
    let end = (0..n)
        .map(|i| le32(&t, 32 + i * 32 + 16) + le32(&t, 32 + i * 32 + 20))
        .max()
        .unwrap();
    let item_off = end.div_ceil(4096) * 4096;
    let mut pairs = vec![("parent_linkage", dwg.as_str())];
    if let Some(r) = relative {
        pairs.push(("relative_path", r));
    }
    if let Some(a) = absolute {
        pairs.push(("absolute_win32_path", a));
    }
    let loc = vhdx_locator(&pairs);
    wr(child, meta + u64::from(item_off), &loc);
    let e = 32 + n * 32;
    // A8D35F2D-B30B-454D-ABF7-D3D84834AB0C
    t[e..e + 16].copy_from_slice(&[
        0x2D, 0x5F, 0xD3, 0xA8, 0x0B, 0xB3, 0x4D, 0x45, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB,
        0x0C,
    ]);
    t[e + 16..e + 20].copy_from_slice(&item_off.to_le_bytes());
    t[e + 20..e + 24].copy_from_slice(&(loc.len() as u32).to_le_bytes());
    t[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes()); // IsRequired
    t[10..12].copy_from_slice(&((n + 1) as u16).to_le_bytes());
    wr(child, meta, &t[..64 << 10]);
    // blocks at the end of the file
    let mib = 1u64 << 20;
    let mut pos = file_len(child).div_ceil(mib) * mib;
    let mut written = Vec::new();
    let set_entry = |idx: u64, state: u64, off: u64| {
        let v = (off / mib) << 20 | state;
        wr(child, bat + idx * 8, &v.to_le_bytes());
    };
    let full = pattern(2002, mib as usize);
    wr(child, pos, &full);
    set_entry(2, 6, pos);
    written.push((2 * mib, full));
    pos += mib;
    let part = pattern(2005, mib as usize);
    wr(child, pos, &part);
    set_entry(5, 7, pos);
    pos += mib;
    let mut bitmap = vec![0u8; mib as usize];
    for r in [0u64..8, spb / 2..spb / 2 + 10, spb - 1..spb] {
        for sct in r.clone() {
            let bit = 5 * spb + sct; // chunk-relative sector of block 5
            bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        written.push((
            5 * mib + r.start * lss,
            part[(r.start * lss) as usize..(r.end * lss) as usize].to_vec(),
        ));
    }
    wr(child, pos, &bitmap);
    set_entry(chunk_ratio, 6, pos); // chunk 0's sector bitmap entry
    pos += mib;
    set_entry(8, 2, 0);
    written.push((8 * mib, vec![0u8; mib as usize]));
    let f = std::fs::OpenOptions::new().write(true).open(child).unwrap();
    f.set_len(pos).unwrap();
    written
}

#[test]
fn vhdx_differencing_reads_parent_through_bitmaps() {
    if !require(&["qemu-img"]) {
        return;
    }
    let (d, dir, raw) = chain_fixture(24 << 20);
    let parent = dir.join("parent.vhdx");
    qemu_from_raw(&raw, &parent, "vhdx", "");
    let child = dir.join("child.vhdx");
    let written = make_vhdx_child(
        &parent,
        &child,
        Some(".\\parent.vhdx"),
        Some("C:\\images\\parent.vhdx"),
        512,
    );
    let expected = expected_disk(&parent, "vhdx", &written, d.path());
    let guard = Snapshot::new(&child);

    refuse_to_raw(
        &child,
        &d.path().join("x.raw"),
        &[],
        &["parent.vhdx", "--allow-backing"],
    );
    let j = check_child(&child, &expected, d.path(), true);
    let det = &j["details"];
    assert_eq!(det["has_parent"], true);
    assert_eq!(det["parent_locator"]["relative_path"], ".\\parent.vhdx");
    assert_eq!(det["payload_blocks"]["partially_present"], 1);
    guard.check();

    // Linkage to another parent is refused.
    let other = dir.join("other.vhdx");
    qemu_from_raw(&raw, &other, "vhdx", "");
    let wrong = dir.join("wrong.vhdx");
    make_vhdx_child(&other, &wrong, Some("parent.vhdx"), None, 512);
    refuse_to_raw(
        &wrong,
        &d.path().join("y.raw"),
        &["--allow-backing"],
        &["parent_linkage"],
    );
}

#[test]
fn vhdx_differencing_with_absolute_parent_only_is_refused() {
    if !require(&["qemu-img"]) {
        return;
    }
    let (d, dir, raw) = chain_fixture(8 << 20);
    let parent = d.path().join("parent.vhdx");
    qemu_from_raw(&raw, &parent, "vhdx", "");
    let child = dir.join("child.vhdx");
    make_vhdx_child(&parent, &child, None, Some(s(&parent)), 512);
    refuse_confined(
        &child,
        &dir,
        &d.path().join("trace"),
        &["absolute", "parent.vhdx"],
    );
}

/// A differencing VHDX with 4096-byte logical sectors: the sector bitmap has
/// one bit per 4 KiB sector and the chunk ratio is 32768. The parent is a
/// qemu-img image with its sector size item rewritten to 4096 (see
/// [`vhdx_4096_logical_sectors`]); qemu reading the unpatched original gives
/// the parent's bytes.
#[test]
fn vhdx_differencing_4096_sectors() {
    if !require(&["qemu-img"]) {
        return;
    }
    let (d, dir, raw) = chain_fixture(16 << 20);
    let orig = d.path().join("parent-512.vhdx");
    qemu_from_raw(&raw, &orig, "vhdx", "");
    let parent = dir.join("parent.vhdx");
    std::fs::copy(&orig, &parent).unwrap();
    let (_, meta) = vhdx_regions(&parent);
    let (item, _) = vhdx_item(&parent, meta, LSS).unwrap();
    wr(&parent, item, &4096u32.to_le_bytes());
    let child = dir.join("child.vhdx");
    let written = make_vhdx_child(&parent, &child, Some("parent.vhdx"), None, 4096);
    let expected = expected_disk(&orig, "vhdx", &written, d.path());
    let j = check_child(&child, &expected, d.path(), false);
    assert_eq!(j["details"]["logical_sector_size"], 4096);
    assert_eq!(j["details"]["payload_blocks"]["chunk_ratio"], 32768);
}

/// One log data descriptor's payload: a 4 KiB write at `file_offset`.
struct LogWrite {
    file_offset: u64,
    data: Option<Vec<u8>>, // None: a zero descriptor of `zero_len`
    zero_len: u64,
}

/// Build one log entry (VHDX spec §2.3.1): header, descriptors, data sectors,
/// CRC-32C over the whole entry.
fn log_entry(
    seq: u64,
    tail: u32,
    guid: &[u8; 16],
    flushed: u64,
    last: u64,
    w: &[LogWrite],
) -> Vec<u8> {
    let hdr_sectors = (64 + 32 * w.len()).div_ceil(4096);
    let data: Vec<&LogWrite> = w.iter().filter(|x| x.data.is_some()).collect();
    let len = (hdr_sectors + data.len()) * 4096;
    let mut e = vec![0u8; len];
    e[..4].copy_from_slice(b"loge");
    e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    e[12..16].copy_from_slice(&tail.to_le_bytes());
    e[16..24].copy_from_slice(&seq.to_le_bytes());
    e[24..28].copy_from_slice(&(w.len() as u32).to_le_bytes());
    e[32..48].copy_from_slice(guid);
    e[48..56].copy_from_slice(&flushed.to_le_bytes());
    e[56..64].copy_from_slice(&last.to_le_bytes());
    let mut k = 0;
    for (i, x) in w.iter().enumerate() {
        let d = 64 + 32 * i;
        match &x.data {
            None => {
                e[d..d + 4].copy_from_slice(b"zero");
                e[d + 8..d + 16].copy_from_slice(&x.zero_len.to_le_bytes());
            }
            Some(bytes) => {
                assert_eq!(bytes.len(), 4096);
                e[d..d + 4].copy_from_slice(b"desc");
                e[d + 4..d + 8].copy_from_slice(&bytes[4092..4096]); // trailing
                e[d + 8..d + 16].copy_from_slice(&bytes[..8]); // leading
                let sct = (hdr_sectors + k) * 4096;
                k += 1;
                e[sct..sct + 4].copy_from_slice(b"data");
                e[sct + 4..sct + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                e[sct + 8..sct + 4092].copy_from_slice(&bytes[8..4092]);
                e[sct + 4092..sct + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
            }
        }
        e[d + 16..d + 24].copy_from_slice(&x.file_offset.to_le_bytes());
        e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
    }
    let c = crc32c(&e);
    e[4..8].copy_from_slice(&c.to_le_bytes());
    e
}

/// Generator for a VHDX with a pending log: a qemu-img dynamic image (1 MiB
/// blocks) gets two log entries (sequence 10 and 11, the second's tail
/// pointing at the first): a data write into block 0, a zero descriptor over
/// data in block 0, a rewritten BAT sector that maps block 20 (until then not
/// present) at a new 1 MiB past the end of the file, and two data sectors
/// there; last_file_offset grows the file to hold it. Then log_guid is set in
/// both headers (CRCs fixed). A stale entry with a lower sequence number and
/// an entry with a broken CRC are also left in the log; the replay must skip
/// them.
fn make_vhdx_with_log(raw: &Path, img: &Path) {
    qemu_from_raw(raw, img, "vhdx", "subformat=dynamic,block_size=1M");
    let mib = 1u64 << 20;
    let (bat, _) = vhdx_regions(img);
    let h = rd(img, 64 << 10, 4096);
    let log_off = le64(&h, 72);
    let log_len = u64::from(le32(&h, 68));
    assert!(log_len >= mib);
    let b0 = le64(&rd(img, bat, 8), 0);
    assert_eq!(b0 & 7, 6, "block 0 is fully present");
    let b0_off = (b0 >> 20) * mib;
    let flen = file_len(img);
    let new_off = flen.div_ceil(mib) * mib;
    let mut bat_sector = rd(img, bat, 4096);
    let v = (new_off / mib) << 20 | 6;
    bat_sector[20 * 8..20 * 8 + 8].copy_from_slice(&v.to_le_bytes());
    let guid: [u8; 16] = *b"onramp-log-test!";
    let e1 = log_entry(
        10,
        0,
        &guid,
        flen,
        flen,
        &[
            LogWrite {
                file_offset: b0_off + 8192,
                data: Some(pattern(42, 4096)),
                zero_len: 0,
            },
            LogWrite {
                file_offset: b0_off + 65536,
                data: None,
                zero_len: 8192,
            },
        ],
    );
    let e2 = log_entry(
        11,
        0,
        &guid,
        flen,
        new_off + mib,
        &[
            LogWrite {
                file_offset: bat,
                data: Some(bat_sector),
                zero_len: 0,
            },
            LogWrite {
                file_offset: new_off,
                data: Some(pattern(43, 4096)),
                zero_len: 0,
            },
            // The block's last sector: writing it makes the file hold the
            // whole block (qemu grows the file by writing, not by
            // last_file_offset).
            LogWrite {
                file_offset: new_off + mib - 4096,
                data: Some(pattern(44, 4096)),
                zero_len: 0,
            },
            // Overwrites part of entry 1's write: the later one must win.
            LogWrite {
                file_offset: b0_off + 8192,
                data: Some(pattern(45, 4096)),
                zero_len: 0,
            },
        ],
    );
    // A stale older entry elsewhere in the log (sequence 3, its own tail).
    let stale_pos = 256 * 1024;
    let stale = log_entry(
        3,
        stale_pos as u32,
        &guid,
        flen,
        flen,
        &[LogWrite {
            file_offset: b0_off,
            data: Some(pattern(46, 4096)),
            zero_len: 0,
        }],
    );
    // A newer entry with a broken CRC: must be ignored.
    let mut torn = log_entry(
        50,
        512 * 1024,
        &guid,
        flen,
        flen,
        &[LogWrite {
            file_offset: b0_off,
            data: Some(pattern(47, 4096)),
            zero_len: 0,
        }],
    );
    torn[5000] ^= 1;
    wr(img, log_off, &e1);
    wr(img, log_off + e1.len() as u64, &e2);
    wr(img, log_off + stale_pos, &stale);
    wr(img, log_off + 512 * 1024, &torn);
    for slot in [1, 2] {
        vhdx_patch_header(img, slot, |h| h[48..64].copy_from_slice(&guid));
    }
}

#[test]
fn vhdx_log_is_replayed_in_memory() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 24 << 20);
    let img = d.path().join("log.vhdx");
    make_vhdx_with_log(&raw, &img);
    let guard = Snapshot::new(&img);
    // qemu refuses to read it read-only; a copy repaired by qemu is the oracle.
    assert!(!run_output(
        "qemu-img",
        &[
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            s(&img),
            s(&d.path().join("ro.raw"))
        ]
    )
    .status
    .success());
    let reference = d.path().join("replayed.raw");
    qemu_replayed_raw(&img, &reference);
    // The log matters: the replayed disk differs from the input raw.
    assert!(!same_bytes(&reference, &raw));
    let ours = d.path().join("ours.raw");
    convert_ok(&img, &ours, "raw", &[]);
    assert!(same_bytes(&ours, &reference));
    let r = onramp::source::open(&img, &Default::default()).unwrap();
    onramp::block::conformance::check(r.as_ref(), &reference).unwrap();
    let j = info_json(&[s(&img)]);
    let log = &j["details"]["log"];
    assert_eq!(log["present"], true);
    assert_eq!(log["entries_replayed"], 2);
    assert_eq!(log["sequence"], serde_json::json!([10, 11]));
    guard.check();

    // Break entry 10: entry 11's tail then names no valid entry, so the only
    // complete sequence left is the stale entry 3. Replaying it would read
    // stale data, replaying entry 11 alone (qemu 10 does: its search ignores
    // the tail field) would skip the writes entry 11 depends on; onramp
    // refuses and says why.
    let img2 = d.path().join("torn.vhdx");
    std::fs::copy(&img, &img2).unwrap();
    let h = rd(&img2, 64 << 10, 4096);
    wr(&img2, le64(&h, 72) + 100, &[0xAA]);
    let out2 = d.path().join("torn.raw");
    expect_refused(
        &["convert", s(&img2), s(&out2), "--to", "raw"],
        &["VHDX log", "sequence number 11", "stale"],
    );
    assert!(!out2.exists());

    // Break entry 11 instead (a torn last write): entry 10's tail is itself,
    // so it is a complete sequence and the newest valid entry; qemu and
    // onramp both replay it alone.
    let img3 = d.path().join("torn-last.vhdx");
    std::fs::copy(&img, &img3).unwrap();
    wr(
        &img3,
        le64(&h, 72) + e1_len(&img3, le64(&h, 72)) + 100,
        &[0xAA],
    );
    let reference3 = d.path().join("replayed3.raw");
    qemu_replayed_raw(&img3, &reference3);
    let ours3 = d.path().join("ours3.raw");
    convert_ok(&img3, &ours3, "raw", &[]);
    assert!(same_bytes(&ours3, &reference3));
    assert!(!same_bytes(&ours3, &ours));
    let j = info_json(&[s(&img3)]);
    assert_eq!(j["details"]["log"]["sequence"], serde_json::json!([10, 10]));
}

/// The oracle for a VHDX with a pending log: qemu-img refuses to read it
/// read-only, so a copy (`OUT.vhdx`) is repaired by `qemu-img check -r all`
/// (which replays the log) and converted to raw at `out`.
fn qemu_replayed_raw(img: &Path, out: &Path) {
    let copy = out.with_extension("vhdx");
    std::fs::copy(img, &copy).unwrap();
    run_output("qemu-img", &["check", "-r", "all", "-f", "vhdx", s(&copy)]);
    qemu_raw(&copy, "vhdx", out);
}

/// Length of the log entry at the start of the log.
fn e1_len(p: &Path, log_off: u64) -> u64 {
    u64::from(le32(&rd(p, log_off, 64), 8))
}

#[test]
fn vhdx_corrupt_variants_exit_2() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 12 << 20);
    let good = d.path().join("good.vhdx");
    qemu_from_raw(&raw, &good, "vhdx", "block_size=1M");
    let (bat, meta) = vhdx_regions(&good);
    let slot = vhdx_current_slot(&good);
    let case = |name: &str, patch: &dyn Fn(&Path), needles: &[&str]| {
        refuse_patched(d.path(), &good, "vhdx", name, patch, needles)
    };
    case(
        "both-header-crcs",
        &|p| {
            wr(p, (64 << 10) + 100, &[1]);
            wr(p, (128 << 10) + 100, &[1]);
        },
        &["neither header", "checksum"],
    );
    case(
        "signature",
        &|p| wr(p, 0, b"vhdxfila"),
        &["file identifier", "signature"],
    );
    case(
        "header-version",
        &|p| {
            for s in [1, 2] {
                vhdx_patch_header(p, s, |h| h[66] = 2);
            }
        },
        &["version"],
    );
    case(
        "log-offset",
        &|p| {
            for s in [1, 2] {
                vhdx_patch_header(p, s, |h| h[72..80].copy_from_slice(&12345u64.to_le_bytes()));
            }
        },
        &["log_offset"],
    );
    case(
        "region-past-eof",
        &|p| {
            vhdx_patch_regions(p, |t| {
                for i in 0..2 {
                    let e = 16 + i * 32;
                    if t[e..e + 4] == [0x66, 0x77, 0xC2, 0x2D] {
                        t[e + 16..e + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
                    }
                }
            })
        },
        &["region table", "file_offset"],
    );
    case(
        "unknown-required-region",
        &|p| {
            vhdx_patch_regions(p, |t| {
                let n = le32(t, 8) as usize;
                let e = 16 + n * 32;
                t[e..e + 16].copy_from_slice(b"unknown-region!!");
                t[e + 16..e + 24].copy_from_slice(&(1u64 << 20).to_le_bytes());
                t[e + 24..e + 28].copy_from_slice(&(1u32 << 20).to_le_bytes());
                t[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
                t[8..12].copy_from_slice(&(n as u32 + 1).to_le_bytes());
            })
        },
        &["unknown region", "required"],
    );
    case(
        "bat-entry-past-eof",
        &|p| {
            let v = (1u64 << 30) << 20 | 6; // 1 GiB... MiB units: far past EOF
            wr(p, bat, &v.to_le_bytes());
        },
        &["VHDX BAT", "entry 0"],
    );
    case(
        "bat-state",
        &|p| wr(p, bat, &4u64.to_le_bytes()),
        &["VHDX BAT", "state"],
    );
    // Metadata items: (case, item, new value, message).
    let items: [(&str, u32, Vec<u8>, &str); 4] = [
        (
            "huge-virtual-size",
            VDISK_SIZE,
            (1u64 << 62).to_le_bytes().to_vec(),
            "virtual_disk_size",
        ),
        (
            "bat-too-small-for-size",
            VDISK_SIZE,
            (1u64 << 40).to_le_bytes().to_vec(),
            "BAT length",
        ),
        (
            "block-size",
            FILE_PARAMS,
            (3u32 << 20).to_le_bytes().to_vec(),
            "block_size",
        ),
        (
            "logical-sector",
            LSS,
            1000u32.to_le_bytes().to_vec(),
            "logical_sector_size",
        ),
    ];
    for (name, item, value, want) in items {
        let set = |p: &Path| {
            let (it, _) = vhdx_item(p, meta, item).unwrap();
            wr(p, it, &value);
        };
        case(name, &set, &[want]);
    }
    case(
        "metadata-signature",
        &|p| wr(p, meta, b"metadatX"),
        &["metadata", "signature"],
    );
    case(
        "metadata-item-offset",
        &|p| {
            let (_, e) = vhdx_item(p, meta, FILE_PARAMS).unwrap();
            wr(p, meta + e as u64 + 16, &(8u32 << 20).to_le_bytes());
        },
        &["metadata", "offset"],
    );
    // One header broken: the other (valid) one is used, as the spec and qemu do.
    let one = d.path().join("one-header.vhdx");
    std::fs::copy(&good, &one).unwrap();
    wr(&one, slot * (64 << 10) + 100, &[1]);
    check_against_qemu(&one, "vhdx");
}

/// Every image in this file is also opened by format detection (no --from).
#[test]
fn detection_finds_vhd_and_vhdx() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 4 << 20);
    let mut imgs: Vec<(PathBuf, &str)> = Vec::new();
    for (fmt, opts, ext) in [
        ("vpc", "subformat=dynamic", "vhd"),
        ("vpc", "subformat=fixed", "vhd"),
        ("vhdx", "subformat=dynamic", "vhdx"),
    ] {
        let p = d.path().join(format!("{}.{ext}", opts.replace('=', "_")));
        qemu_from_raw(&raw, &p, fmt, opts);
        imgs.push((p, ext));
    }
    for (p, ext) in imgs {
        let j = info_json(&[s(&p)]);
        assert_eq!(j["format"], ext);
    }
}
