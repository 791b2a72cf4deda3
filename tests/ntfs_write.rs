//! NTFS writer: volumes made with mkntfs and ntfscp, edited through the
//! library and `onramp customize`, judged by ntfs-3g's tools (ntfsls,
//! ntfscat, ntfsinfo, ntfsfix -n, ntfs-3g.probe --readwrite) and our reader.
mod common;
use common::*;
use onramp::fs::FileSystem;
use onramp::inject::FsAction;
use onramp::overlay::{Overlay, VolumeDev};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const TOOLS: &[&str] = &[
    "mkntfs",
    "ntfscp",
    "ntfsls",
    "ntfscat",
    "ntfsinfo",
    "ntfsfix",
    "ntfs-3g.probe",
];

/// A fresh `mib` MiB NTFS volume (sparse file) made by mkntfs.
fn mkvol(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    run("mkntfs", &["-F", "-Q", "-q", "-L", "ONRAMP", s(&p)]);
    p
}

/// Copy `data` into the volume at `dest` with ntfscp.
fn ntfscp(vol: &Path, data: &[u8], dest: &str) {
    let tmp = vol.with_extension("cp");
    std::fs::write(&tmp, data).unwrap();
    run("ntfscp", &["-q", s(vol), s(&tmp), dest]);
}

fn write(path: &str, data: &[u8]) -> FsAction {
    FsAction::WriteFile {
        path: path.into(),
        data: data.to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    }
}

fn mkdir(path: &str) -> FsAction {
    FsAction::Mkdir {
        path: path.into(),
        mode: 0o755,
    }
}

fn delete(path: &str) -> FsAction {
    FsAction::Delete { path: path.into() }
}

/// Apply `actions` to the volume file `vol` through the overlay; on success
/// write the edited volume to `out`.
fn inject(vol: &Path, out: &Path, actions: &[FsAction]) -> onramp::error::Result<Vec<String>> {
    let base = Arc::new(onramp::source::raw::RawReader::open(vol)?);
    let len = std::fs::metadata(vol).unwrap().len();
    let ov = Arc::new(Overlay::new(base, None));
    let dev = VolumeDev::range(ov.clone(), 0, len)?;
    let log = onramp::fs::write::apply(&dev, "ntfs", actions)?;
    let src = dev.source();
    let mut f = std::fs::File::create(out).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    use std::io::Write;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        src.read_at(off, &mut buf[..n])?;
        f.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    Ok(log)
}

/// ntfsfix -n finds nothing to fix and ntfs-3g would mount read-write.
fn oracle_clean(vol: &Path) {
    let o = run_output("ntfsfix", &["-n", s(vol)]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "ntfsfix -n failed:\n{text}");
    let low = text.to_lowercase();
    for bad in ["mismatch", "does not match", "error", "corrupt", "fail"] {
        assert!(!low.contains(bad), "ntfsfix -n reports {bad:?}:\n{text}");
    }
    assert!(
        text.contains("Processing of $MFT and $MFTMirr completed successfully"),
        "{text}"
    );
    let o = run_output("ntfs-3g.probe", &["--readwrite", s(vol)]);
    assert!(
        o.status.success(),
        "ntfs-3g.probe --readwrite: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ntfscat(vol: &Path, path: &str) -> Vec<u8> {
    let o = run_output("ntfscat", &[s(vol), path]);
    assert!(
        o.status.success(),
        "ntfscat {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Names listed by ntfsls in `dir` (long names, without "." and ".."),
/// sorted: ntfs-3g lists the root node and then the index blocks in their
/// physical order, so its order says nothing; lookups (ntfscat) and our
/// reader's in-order walk check the collation.
fn ntfsls(vol: &Path, dir: &str) -> Vec<String> {
    let o = run_output("ntfsls", &["-p", dir, s(vol)]);
    assert!(
        o.status.success(),
        "ntfsls {dir}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_string)
        .collect();
    v.sort_by_key(|n| n.to_uppercase());
    v
}

/// Our reader lists `dir` in collation order (upper-cased names ascending).
fn reader_sorted(vol: &Path, dir: &str) -> Vec<String> {
    let names: Vec<String> = reader(vol)
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_uppercase());
    assert_eq!(names, sorted, "index order of {dir}");
    names
}

fn ntfsinfo(vol: &Path, path: &str) -> String {
    let o = run_output("ntfsinfo", &["-F", path, s(vol)]);
    assert!(
        o.status.success(),
        "ntfsinfo -F {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn reader(vol: &Path) -> onramp::fs::ntfs::NtfsFs {
    let base = Arc::new(onramp::source::raw::RawReader::open(vol).unwrap());
    onramp::fs::ntfs::NtfsFs::open(base).unwrap()
}

/// Every file of `model` reads back identically through ntfscat and our reader.
fn check_files(vol: &Path, model: &BTreeMap<String, Vec<u8>>) {
    let fs = reader(vol);
    for (p, d) in model {
        assert_eq!(&ntfscat(vol, p), d, "ntfscat {p}");
        assert_eq!(&fs.read_file(p, 1 << 30).unwrap(), d, "our reader {p}");
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn create_replace_and_read_back() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let vol = mkvol(dir.path(), "a.img", 48);
    let three = pattern(1, 3 << 20);
    ntfscp(&vol, &three, "/SYSTEM");
    ntfscp(&vol, b"old", "/small.txt");
    let out = dir.path().join("out.img");
    let five = pattern(2, 5 << 20);
    let log = inject(
        &vol,
        &out,
        &[
            write("/SYSTEM", &five),
            write("/small.txt", b"hello"),
            write("/Windows/System32/config/new.bin", &pattern(3, 100_000)),
            write("/Windows/Setup/Scripts/SetupComplete.cmd", b"@echo off\r\n"),
            write("/README.TXT", b"8.3 name"),
            mkdir("/empty/dir"),
            FsAction::SetTimes {
                path: "/readme.txt".into(),
                atime: 1_000_000_000,
                mtime: 1_000_000_000,
            },
        ],
    )
    .unwrap();
    assert!(
        log.iter().any(|l| l.starts_with("replace /SYSTEM")),
        "{log:?}"
    );
    oracle_clean(&out);
    let mut model = BTreeMap::new();
    model.insert("/SYSTEM".to_string(), five.clone());
    model.insert("/small.txt".to_string(), b"hello".to_vec());
    model.insert(
        "/Windows/System32/config/new.bin".to_string(),
        pattern(3, 100_000),
    );
    model.insert(
        "/Windows/Setup/Scripts/SetupComplete.cmd".to_string(),
        b"@echo off\r\n".to_vec(),
    );
    model.insert("/README.TXT".to_string(), b"8.3 name".to_vec());
    check_files(&out, &model);
    // Case-insensitive lookups, $FILE_NAME sizes, namespaces.
    // (ntfs-3g matches POSIX-namespace names case-sensitively; ours is
    // case-insensitive, as Windows is.)
    assert_eq!(reader(&out).read_file("/system", 1 << 30).unwrap(), five);
    let info = ntfsinfo(&out, "/SYSTEM");
    assert!(info.contains("Data Size:\t\t 5242880"), "{info}");
    let info = ntfsinfo(&out, "/README.TXT");
    assert!(info.contains("Win32 & DOS"), "{info}");
    assert!(
        info.contains("File Altered Time:\t Sun Sep  9 01:46:40 2001 UTC"),
        "{info}"
    );
    let st = reader(&out).stat("/README.TXT").unwrap().unwrap();
    assert_eq!(st.mtime, 1_000_000_000);
    // No inheritable security id on a mkntfs root: ntfs-3g's own default
    // descriptor (Administrators owner, Everyone full control).
    let info = ntfsinfo(&out, "/Windows/Setup/Scripts/SetupComplete.cmd");
    assert!(info.contains("Owner SID:\t\t S-1-5-32-544"), "{info}");
    assert!(info.contains("Namespace:\t\t Win32\n"), "{info}");
    let info = ntfsinfo(&out, "/small.txt");
    assert!(info.contains("Data Size:\t\t 5"), "{info}");
    let ls = ntfsls(&out, "/empty");
    assert_eq!(ls, vec!["dir".to_string()]);
    assert!(ntfsls(&out, "/empty/dir").is_empty());
    // Shrink in a second session: 5 MiB -> 1 MiB, clusters freed.
    let out2 = dir.path().join("out2.img");
    let one = pattern(4, 1 << 20);
    inject(&out, &out2, &[write("/SYSTEM", &one), delete("/small.txt")]).unwrap();
    oracle_clean(&out2);
    model.insert("/SYSTEM".to_string(), one);
    model.remove("/small.txt");
    check_files(&out2, &model);
    assert!(!ntfsls(&out2, "/").contains(&"small.txt".to_string()));
    let fs = reader(&out2);
    assert!(fs.stat("/small.txt").unwrap().is_none());
    // Free space came back: clusters in use per $Bitmap, read by ntfscat.
    let used = |v: &Path| -> u32 { ntfscat(v, "/$Bitmap").iter().map(|b| b.count_ones()).sum() };
    let (u1, u2) = (used(&out), used(&out2));
    assert!(u2 + 1000 <= u1 && u2 + 1030 >= u1, "{u2} vs {u1}");
}

#[test]
fn many_files_split_the_index() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let vol = mkvol(dir.path(), "m.img", 32);
    let mut actions = Vec::new();
    let mut names = Vec::new();
    for i in 0..600 {
        let n = format!("file_with_a_rather_long_name_{:05}.dat", (i * 7919) % 600);
        actions.push(write(&format!("/many/{n}"), format!("{i}").as_bytes()));
        names.push(n);
    }
    let out = dir.path().join("out.img");
    inject(&vol, &out, &actions).unwrap();
    oracle_clean(&out);
    let mut want = names.clone();
    want.sort_by_key(|n| n.to_uppercase());
    assert_eq!(ntfsls(&out, "/many"), want);
    assert_eq!(reader_sorted(&out, "/many"), want);
    for i in (0..600).step_by(7) {
        let n = &names[i];
        assert_eq!(
            ntfscat(&out, &format!("/many/{n}")),
            format!("{i}").as_bytes()
        );
    }
    // Delete most again: the index shrinks back, listing stays right.
    let out2 = dir.path().join("out2.img");
    let dels: Vec<FsAction> = names[..590]
        .iter()
        .map(|n| delete(&format!("/many/{n}")))
        .collect();
    inject(&out, &out2, &dels).unwrap();
    oracle_clean(&out2);
    let mut rest = names[590..].to_vec();
    rest.sort_by_key(|n| n.to_uppercase());
    assert_eq!(ntfsls(&out2, "/many"), rest);
    assert_eq!(reader_sorted(&out2, "/many"), rest);
}

#[test]
fn random_sequences() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let mut cur = mkvol(dir.path(), "r0.img", 40);
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let dirs = ["/", "/d1", "/d1/sub", "/D2"];
    for seq in 0..10 {
        let mut actions = Vec::new();
        for _ in 0..40 {
            let r = xorshift(&mut seed);
            let d = dirs[(r % 4) as usize];
            let name = format!("f{}", (r >> 8) % 60);
            let p = if d == "/" {
                format!("/{name}")
            } else {
                format!("{d}/{name}")
            };
            // Paths already in the model keep their own case.
            let existing = model.keys().find(|k| k.eq_ignore_ascii_case(&p)).cloned();
            if (r >> 20).is_multiple_of(4) {
                if let Some(k) = existing {
                    actions.push(delete(&k));
                    model.remove(&k);
                }
                continue;
            }
            let size = match (r >> 24) % 4 {
                0 => (r >> 32) % 600,
                1 => (r >> 32) % 20_000,
                2 => (r >> 32) % 300_000,
                _ => 4096 * ((r >> 32) % 8),
            } as usize;
            let data = pattern(r >> 40, size);
            let key = existing.unwrap_or(p);
            actions.push(write(&key, &data));
            model.insert(key, data);
        }
        let next = dir.path().join(format!("r{}.img", seq + 1));
        inject(&cur, &next, &actions).unwrap_or_else(|e| panic!("sequence {seq}: {e}"));
        oracle_clean(&next);
        check_files(&next, &model);
        for d in dirs {
            let mut want: Vec<String> = model
                .keys()
                .filter_map(|k| {
                    let (parent, name) = k.rsplit_once('/').unwrap();
                    let parent = if parent.is_empty() { "/" } else { parent };
                    (parent == d).then(|| name.to_string())
                })
                .collect();
            want.sort_by_key(|n| n.to_uppercase());
            let got: Vec<String> = ntfsls(&next, d)
                .into_iter()
                .filter(|n| n.starts_with('f'))
                .collect();
            assert_eq!(got, want, "sequence {seq}, directory {d}");
            let ours: Vec<String> = reader_sorted(&next, d)
                .into_iter()
                .filter(|n| n.starts_with('f'))
                .collect();
            assert_eq!(ours, want, "sequence {seq}, directory {d} (our reader)");
        }
        std::fs::remove_file(&cur).unwrap();
        cur = next;
    }
}

/// Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION (record 3), in the
/// $MFT and its mirror, fixing up the update sequence by hand.
fn set_dirty(vol: &Path) {
    let mut d = std::fs::read(vol).unwrap();
    let cs = u64::from(u16::from_le_bytes([d[11], d[12]])) * u64::from(d[13]);
    for lcn_off in [0x30usize, 0x38] {
        let lcn = u64::from_le_bytes(d[lcn_off..lcn_off + 8].try_into().unwrap());
        let rec = (lcn * cs) as usize + 3 * 1024;
        let r = &mut d[rec..rec + 1024];
        assert_eq!(&r[..4], b"FILE");
        let mut p = u16::from_le_bytes([r[0x14], r[0x15]]) as usize;
        loop {
            let ty = u32::from_le_bytes(r[p..p + 4].try_into().unwrap());
            assert_ne!(ty, 0xFFFF_FFFF, "no $VOLUME_INFORMATION");
            let len = u32::from_le_bytes(r[p + 4..p + 8].try_into().unwrap()) as usize;
            if ty == 0x70 {
                let vo = u16::from_le_bytes([r[p + 0x14], r[p + 0x15]]) as usize;
                r[p + vo + 10] |= 1;
                break;
            }
            p += len;
        }
    }
    std::fs::write(vol, d).unwrap();
}

#[test]
fn refuses_dirty_and_hibernated_volumes() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let vol = mkvol(dir.path(), "d.img", 16);
    set_dirty(&vol);
    let out = dir.path().join("out.img");
    let e = inject(&vol, &out, &[write("/x", b"x")]).unwrap_err();
    assert!(e.to_string().contains("dirty"), "{e}");
    // ntfsfix clears the flag; then writing works.
    run("ntfsfix", &["-d", s(&vol)]);
    inject(&vol, &out, &[write("/x", b"x")]).unwrap();

    for magic in [&b"hibr"[..], b"HIBR", b"wake"] {
        let vol = mkvol(dir.path(), "h.img", 16);
        let mut h = magic.to_vec();
        h.extend(pattern(5, 8192));
        ntfscp(&vol, &h, "/hiberfil.sys");
        let e = inject(&vol, &out, &[write("/x", b"x")]).unwrap_err();
        assert!(e.to_string().contains("hibernated"), "{e}");
    }
    // An inactive hiberfil.sys (zeroed header) is fine.
    let vol = mkvol(dir.path(), "h0.img", 16);
    ntfscp(&vol, &[0u8; 8192], "/hiberfil.sys");
    inject(&vol, &out, &[write("/x", b"x")]).unwrap();
    oracle_clean(&out);
    // Unsupported actions are named.
    let e = inject(
        &vol,
        &out,
        &[FsAction::Symlink {
            target: "/x".into(),
            path: "/y".into(),
        }],
    )
    .unwrap_err();
    assert!(e.to_string().contains("NTFS writer cannot"), "{e}");
}

#[test]
fn customize_end_to_end() {
    if !require(TOOLS) || !require(&["sfdisk"]) {
        return;
    }
    let dir = tempdir();
    let part = mkvol(dir.path(), "p.img", 24);
    ntfscp(&part, b"keep me", "/keep.txt");
    // An MBR disk with the volume as partition 1 (type 7).
    let img = dir.path().join("disk.img");
    let data = std::fs::read(&part).unwrap();
    let f = std::fs::File::create(&img).unwrap();
    f.set_len((25u64) << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data, 1 << 20).unwrap();
    drop(f);
    let mut c = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=49152, type=7\n")
        .unwrap();
    assert!(c.wait().unwrap().success());
    let guard = InputGuard::new(&img);
    let out = dir.path().join("out.raw");
    onramp_ok(&[
        "customize",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--root",
        "1",
        "--write",
        "/x.txt:hello",
        "--mkdir",
        "/onramp/agent",
        "--write",
        "/onramp/agent/conf.ini:[a]",
    ]);
    guard.check();
    let d = std::fs::read(&out).unwrap();
    let vol = dir.path().join("after.img");
    std::fs::write(&vol, &d[1 << 20..(1 << 20) + (24 << 20)]).unwrap();
    oracle_clean(&vol);
    assert_eq!(ntfscat(&vol, "/x.txt"), b"hello");
    assert_eq!(ntfscat(&vol, "/keep.txt"), b"keep me");
    assert_eq!(ntfscat(&vol, "/onramp/agent/conf.ini"), b"[a]");
}

/// Volume offset of the first cluster of `$LogFile`'s data (MFT record 2).
fn logfile_offset(d: &[u8]) -> usize {
    let cs = usize::from(u16::from_le_bytes([d[11], d[12]])) * usize::from(d[13]);
    let mft = u64::from_le_bytes(d[0x30..0x38].try_into().unwrap()) as usize * cs;
    let r = &d[mft + 2 * 1024..mft + 3 * 1024];
    let mut p = u16::from_le_bytes([r[0x14], r[0x15]]) as usize;
    loop {
        let ty = u32::from_le_bytes(r[p..p + 4].try_into().unwrap());
        let len = u32::from_le_bytes(r[p + 4..p + 8].try_into().unwrap()) as usize;
        if ty == 0x80 {
            let mp = p + u16::from_le_bytes([r[p + 0x20], r[p + 0x21]]) as usize;
            let h = r[mp];
            let (ls, os) = (usize::from(h & 15), usize::from(h >> 4));
            let mut lcn = 0usize;
            for i in 0..os {
                lcn |= usize::from(r[mp + 1 + ls + i]) << (8 * i);
            }
            return lcn * cs;
        }
        p += len;
    }
}

#[test]
fn refuses_unclean_logfile() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let out = dir.path().join("out.img");
    for (flags, clean) in [(0u16, false), (2, true)] {
        let vol = mkvol(dir.path(), "l.img", 16);
        let mut d = std::fs::read(&vol).unwrap();
        let at = logfile_offset(&d);
        assert!(
            d[at..at + 4096].iter().all(|&b| b == 0xFF),
            "mkntfs leaves $LogFile empty"
        );
        // A restart page whose restart area has a client in use.
        let pg = &mut d[at..at + 4096];
        pg[..4].copy_from_slice(b"RSTR");
        pg[4..8].copy_from_slice(&[0x1E, 0, 9, 0]);
        pg[0x18..0x1A].copy_from_slice(&[0x30, 0]);
        pg[0x30..0x40].fill(0);
        pg[0x30 + 0x0E..0x30 + 0x10].copy_from_slice(&flags.to_le_bytes());
        std::fs::write(&vol, &d).unwrap();
        let r = inject(&vol, &out, &[write("/x", b"x")]);
        if clean {
            r.unwrap();
        } else {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("$LogFile"), "{e}");
            // ntfs-3g agrees: it will not mount this volume read-write.
            assert!(!run_output("ntfs-3g.probe", &["--readwrite", s(&vol)])
                .status
                .success());
        }
    }
}

#[test]
fn edits_an_index_built_by_ntfs3g() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let vol = mkvol(dir.path(), "n.img", 24);
    // ntfs-3g builds (and splits) the root index itself.
    let src = dir.path().join("src.bin");
    std::fs::write(&src, b"x").unwrap();
    let mut names: Vec<String> = (0..150)
        .map(|i| format!("ntfs3g_made_entry_{i:04}.txt"))
        .collect();
    for n in &names {
        run("ntfscp", &["-q", s(&vol), s(&src), &format!("/{n}")]);
    }
    let out = dir.path().join("out.img");
    inject(
        &vol,
        &out,
        &[
            write("/ntfs3g_made_entry_0007.txt", b"replaced"),
            write("/added_by_onramp.txt", b"new"),
            delete("/ntfs3g_made_entry_0100.txt"),
        ],
    )
    .unwrap();
    oracle_clean(&out);
    names.retain(|n| n != "ntfs3g_made_entry_0100.txt");
    names.push("added_by_onramp.txt".into());
    names.sort_by_key(|n| n.to_uppercase());
    let listed: Vec<String> = ntfsls(&out, "/")
        .into_iter()
        .filter(|n| n.ends_with(".txt"))
        .collect();
    assert_eq!(listed, names);
    assert_eq!(ntfscat(&out, "/ntfs3g_made_entry_0007.txt"), b"replaced");
    assert_eq!(ntfscat(&out, "/ntfs3g_made_entry_0149.txt"), b"x");
    assert_eq!(ntfscat(&out, "/added_by_onramp.txt"), b"new");
    let ours: Vec<String> = reader_sorted(&out, "/")
        .into_iter()
        .filter(|n| n.ends_with(".txt"))
        .collect();
    assert_eq!(ours, names);
}
