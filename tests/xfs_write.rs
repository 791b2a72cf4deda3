//! XFS writer, judged by xfsprogs: `xfs_repair -n` must be clean after every
//! injection, and `xfs_db -r` (listings, inode fields, block maps, raw
//! extents) reads back every injected file with the right bytes, mode, owner
//! and xattrs. Fixtures are `mkfs.xfs -p protofile` images (300 MiB sparse
//! files, the mkfs.xfs minimum) at the installed defaults (reflink=1,
//! finobt=1, sparse=1, bigtime=1) and with features toggled.

mod common;

use common::xfs::{
    apply_to_copy, db_bmap, db_byte, db_cat, db_field, db_ls, repair_clean, sb_value, xfs_db,
};
use common::{onramp, onramp_ok, pattern, require, s, tempdir, InputGuard};
use onramp::inject::FsAction;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TOOLS: &[&str] = &["mkfs.xfs", "xfs_db", "xfs_repair"];

/// A 300 MiB image from a protofile: /etc (a few files), /big (`big`
/// entries, block form), /opt.
fn image(dir: &Path, name: &str, args: &[&str], big: usize) -> PathBuf {
    image_with(dir, name, args, big, "")
}

/// [`image`] with `extra` protofile lines added to the root directory.
fn image_with(dir: &Path, name: &str, args: &[&str], big: usize, extra: &str) -> PathBuf {
    let keep = dir.join("keep.src");
    std::fs::write(&keep, pattern(3, 50_000)).unwrap();
    let osr = dir.join("osr.src");
    std::fs::write(&osr, "ID=rhel\nVERSION_ID=9.4\n").unwrap();
    let mut p = String::from("/dummy\n0 0\nd--755 0 0\netc d--755 0 0\n");
    p += &format!("os-release ---644 0 0 {}\n", s(&osr));
    p += &format!("keep ---600 0 0 {}\n", s(&keep));
    p += &format!("old ---644 0 0 {}\n", s(&keep));
    let sel = dir.join("selinux.src");
    std::fs::write(&sel, "SELINUX=enforcing\nSELINUXTYPE=targeted\n").unwrap();
    p += &format!("selinux d--755 0 0\nconfig ---644 0 0 {}\n$\n", s(&sel));
    p += "$\nbig d--755 0 0\n";
    for i in 0..big {
        p += &format!("entry_with_a_long_name_{i} ---644 0 0 {}\n", s(&osr));
    }
    p += "$\nopt d--755 0 0\n$\n";
    p += extra;
    p += "$\n";
    common::xfs::mkfs_protofile(dir, name, &p, args, 300)
}

fn customize_and_check(name: &str, args: &[&str]) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), name, args, 60);
    let guard = InputGuard::new(&img);
    let up = dir.path().join("up.bin");
    let updata = pattern(9, 300_000);
    std::fs::write(&up, &updata).unwrap();
    let out = dir.path().join("out.raw");
    let long = "t".repeat(500);
    let mut a: Vec<String> = [
        "customize",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--write",
        "/etc/hello:hi there",
        "--mkdir",
        "/opt/a/b",
        "--upload",
        &format!("{}:/opt/a/up.bin", up.display()),
        "--link",
        "/etc/hello:/opt/fast",
        "--link",
        &format!("{long}:/opt/slow"),
        "--chmod",
        "0600:/etc/hello",
        "--chown",
        "1000:1001:/etc/os-release",
        "--set-times",
        "/etc/os-release:1700000000",
        "--hardlink",
        "/etc/os-release:/opt/osr-link",
        "--xattr",
        "/etc/hello:security.selinux=system_u:object_r:etc_t:s0",
        "--write",
        "/big/new_entry:new",
        "--write",
        "/etc/old:replaced",
        "--delete",
        "/etc/keep",
        "--delete",
        "/big/entry_with_a_long_name_3",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    // Enough entries to turn /etc from short form into a directory block.
    for i in 0..30 {
        a.push("--write".into());
        a.push(format!("/etc/many_{i:02}.conf:value {i}"));
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    onramp_ok(&a);
    guard.check();
    repair_clean(&out);
    assert_eq!(db_cat(&out, "/etc/hello"), b"hi there");
    assert_eq!(db_cat(&out, "/opt/a/up.bin"), updata);
    assert_eq!(db_cat(&out, "/big/new_entry"), b"new");
    assert_eq!(db_cat(&out, "/etc/old"), b"replaced");
    assert_eq!(db_cat(&out, "/etc/many_17.conf"), b"value 17");
    assert_eq!(
        db_cat(&out, "/etc/os-release"),
        db_cat(&img, "/etc/os-release")
    );
    assert_eq!(db_field(&out, "/etc/hello", "core.mode"), "0100600");
    assert_eq!(db_field(&out, "/etc/os-release", "core.uid"), "1000");
    assert_eq!(db_field(&out, "/etc/os-release", "core.gid"), "1001");
    assert_eq!(db_field(&out, "/etc/os-release", "core.nlinkv2"), "2");
    assert!(db_field(&out, "/etc/os-release", "core.mtime.sec").contains("2023"));
    assert_eq!(db_field(&out, "/etc", "core.format"), "2 (extents)");
    assert_eq!(db_field(&out, "/opt/slow", "core.format"), "2 (extents)");
    assert_eq!(db_field(&out, "/opt/fast", "core.format"), "1 (local)");
    let attr = xfs_db(&out, &["path /etc/hello", "print a.sfattr"]);
    assert!(
        attr.contains("selinux") && attr.contains("system_u:object_r:etc_t:s0"),
        "{attr}"
    );
    let etc: Vec<String> = db_ls(&out, "/etc").into_iter().map(|e| e.0).collect();
    assert!(!etc.contains(&"keep".to_string()));
    assert_eq!(etc.len(), 4 + 30);
    assert_eq!(db_field(&out, "/.autorelabel", "core.size"), "0");
    let big: Vec<String> = db_ls(&out, "/big").into_iter().map(|e| e.0).collect();
    assert!(!big.contains(&"entry_with_a_long_name_3".to_string()));
    assert!(big.contains(&"new_entry".to_string()) && big.len() == 60);
}

#[test]
fn defaults_reflink_finobt_sparse_bigtime() {
    customize_and_check("defaults", &[]);
}

#[test]
fn no_reflink_no_finobt_no_bigtime() {
    customize_and_check(
        "plain",
        &["-m", "reflink=0,finobt=0,bigtime=0", "-i", "sparse=0"],
    );
}

#[test]
fn dir_blocks_of_8k_and_1k_blocks() {
    customize_and_check("b1k", &["-b", "size=1024", "-n", "size=8192"]);
}

fn refused(name: &str, args: &[&str], patch: Option<fn(&Path)>, want: &str) {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), name, args, 0);
    if let Some(p) = patch {
        p(&img);
    }
    let out = dir.path().join("out.raw");
    let o = onramp(&[
        "customize",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--write",
        "/etc/x:y",
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "customize should refuse");
    assert!(err.contains(want), "{err}");
}

#[test]
fn rmapbt_is_refused() {
    refused("rmap", &["-m", "rmapbt=1"], None, "reverse-mapping");
}

#[test]
fn v4_is_refused() {
    refused("v4", &["-m", "crc=0"], None, "version 4");
}

#[test]
fn dirty_log_is_refused() {
    refused(
        "dirty",
        &[],
        Some(|img: &Path| {
            use std::os::unix::fs::FileExt;
            // Clear XLOG_UNMOUNT_TRANS in the op header of the head record.
            let start: u64 = sb_value(img, "logstart") as u64;
            let at = db_byte(img, "fsblock", start);
            let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
            f.write_all_at(&[0], at + 512 + 9).unwrap();
        }),
        "log is dirty",
    );
}

// ---------------------------------------------------------------- property test

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug, PartialEq)]
enum M {
    File(Vec<u8>),
    Dir,
    Link(String),
}

#[test]
fn random_operation_sequences() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "prop", &[], 0);
    let dirs = ["/etc", "/opt", "/opt/d1", "/opt/d1/d2", "/srv"];
    for seed in 1..=15u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut model: BTreeMap<String, M> = BTreeMap::new();
        for d in ["/etc", "/opt", "/big"] {
            model.insert(d.into(), M::Dir);
        }
        model.insert(
            "/etc/os-release".into(),
            M::File(b"ID=rhel\nVERSION_ID=9.4\n".to_vec()),
        );
        model.insert("/etc/keep".into(), M::File(pattern(3, 50_000)));
        model.insert("/etc/old".into(), M::File(pattern(3, 50_000)));
        model.insert("/etc/selinux".into(), M::Dir);
        model.insert(
            "/etc/selinux/config".into(),
            M::File(b"SELINUX=enforcing\nSELINUXTYPE=targeted\n".to_vec()),
        );
        let mut actions = Vec::new();
        for _ in 0..(10 + r.below(30)) {
            let d = dirs[r.below(dirs.len() as u64) as usize];
            let name = format!("{d}/n{}", r.below(12));
            match r.below(5) {
                0 | 1 => {
                    if matches!(model.get(&name), Some(M::Dir) | Some(M::Link(_))) {
                        continue;
                    }
                    let data = pattern(r.next(), r.below(20_000) as usize);
                    actions.push(FsAction::WriteFile {
                        path: name.clone(),
                        data: data.clone(),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    });
                    let mut p = String::new();
                    for c in d.split('/').filter(|c| !c.is_empty()) {
                        p = format!("{p}/{c}");
                        model.insert(p.clone(), M::Dir);
                    }
                    model.insert(name, M::File(data));
                }
                2 => {
                    if model.contains_key(&name) {
                        continue;
                    }
                    actions.push(FsAction::Mkdir {
                        path: name.clone(),
                        mode: 0o755,
                    });
                    let mut p = String::new();
                    for c in name.split('/').filter(|c| !c.is_empty()) {
                        p = format!("{p}/{c}");
                        model.insert(p.clone(), M::Dir);
                    }
                }
                3 => {
                    if model.contains_key(&name) || !model.contains_key(d) {
                        continue;
                    }
                    let t = "x".repeat(1 + r.below(600) as usize);
                    actions.push(FsAction::Symlink {
                        target: t.clone(),
                        path: name.clone(),
                    });
                    model.insert(name, M::Link(t));
                }
                _ => {
                    // Delete a file, link or empty directory.
                    let victims: Vec<String> = model
                        .keys()
                        .filter(|k| {
                            k.starts_with(d)
                                && !["/etc", "/opt", "/big"].contains(&k.as_str())
                                && !model.keys().any(|c| c.starts_with(&format!("{k}/")))
                        })
                        .cloned()
                        .collect();
                    if victims.is_empty() {
                        continue;
                    }
                    let v = victims[r.below(victims.len() as u64) as usize].clone();
                    actions.push(FsAction::Delete { path: v.clone() });
                    model.remove(&v);
                }
            }
        }
        let out = dir.path().join(format!("seq{seed}.img"));
        apply_to_copy(&img, &out, &actions).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        repair_clean(&out);
        // Every directory listing equals the model's children.
        for (p, m) in &model {
            if *m != M::Dir {
                continue;
            }
            let mut want: Vec<String> = model
                .keys()
                .filter(|k| {
                    k.strip_prefix(&format!("{}/", p))
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .map(|k| k.rsplit('/').next().unwrap().to_string())
                .collect();
            want.sort();
            let got: Vec<String> = db_ls(&out, p).into_iter().map(|e| e.0).collect();
            assert_eq!(got, want, "seed {seed}: listing of {p} after {actions:?}");
        }
        for (p, m) in &model {
            if let M::File(data) = m {
                assert_eq!(&db_cat(&out, p), data, "seed {seed}: {p}");
            }
        }
        std::fs::remove_file(&out).unwrap();
    }
}

// ---------------------------------------------------------------- LVM

const PV_UUID: &str = "AbCdEf012345678901234567890123Zz";

/// VG "rhel" on one PV (`pe_count` 1 MiB extents from pe_start 1 MiB) with
/// LV "root" made of `segs` (logical start, count, PV extent).
fn vg_text(pv_sectors: u64, pe_count: u64, segs: &[(u64, u64, u64)]) -> String {
    let mut lv = format!("segment_count = {}\n", segs.len());
    for (i, (le, n, pe)) in segs.iter().enumerate() {
        lv += &format!(
            "segment{} {{\nstart_extent = {le}\nextent_count = {n}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", {pe}]\n}}\n",
            i + 1
        );
    }
    format!(
        "rhel {{\nid = \"Vg0000-0000\"\nseqno = 4\nformat = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\nextent_size = 2048\nmax_lv = 0\n\nphysical_volumes {{\n\npv0 {{\nid = \"AbCdEf-0123-4567-8901-2345-6789-0123Zz\"\ndevice = \"/dev/sda1\"\nstatus = [\"ALLOCATABLE\"]\ndev_size = {pv_sectors}\npe_start = 2048\npe_count = {pe_count}\n}}\n}}\n\nlogical_volumes {{\n\nroot {{\nid = \"Lv0000-root\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n{lv}}}\n}}\n}}\ncontents = \"Text Format Volume Group\"\nversion = 1\n"
    )
}

/// Copy `len` bytes at `from` of `src` to `to` of `dst`, skipping zero MiBs.
fn copy_range(src: &Path, from: u64, dst: &Path, to: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let a = std::fs::File::open(src).unwrap();
    let b = std::fs::OpenOptions::new().write(true).open(dst).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut o = 0;
    while o < len {
        let n = (len - o).min(1 << 20) as usize;
        a.read_exact_at(&mut buf[..n], from + o).unwrap();
        if buf[..n].iter().any(|&x| x != 0) {
            b.write_all_at(&buf[..n], to + o).unwrap();
        }
        o += n as u64;
    }
}

/// Segments (logical extent, count, PV extent) of the fixture's root LV.
type Segs = [(u64, u64, u64); 2];

/// An MBR disk with one LVM PV holding VG "rhel" and a two-segment linear LV
/// "root" carrying the 300 MiB filesystem image `fsimg`; returns the disk,
/// the segments and the byte offset of a PV extent.
fn lvm_disk(dir: &Path, fsimg: &Path) -> (PathBuf, Segs, impl Fn(u64) -> u64) {
    let disk = dir.join("disk.raw");
    let mib = 1u64 << 20;
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(341 * mib)
        .unwrap();
    common::lvm::sfdisk(&disk, "label: dos\nstart=2048, type=8e\n");
    let pv_off = mib;
    let pv_size = 340 * mib;
    // root: logical extents 0..150 on PV extents 180..330, 150..300 on 0..150.
    let segs: Segs = [(0, 150, 180), (150, 150, 0)];
    common::lvm::write_pv(
        &disk,
        pv_off,
        pv_size,
        PV_UUID,
        &vg_text(pv_size / 512, 339, &segs),
    );
    let pe = move |n: u64| pv_off + mib + n * mib;
    for (le, n, p) in segs {
        copy_range(fsimg, le * mib, &disk, pe(p), n * mib);
    }
    (disk, segs, pe)
}

#[test]
fn root_on_a_two_segment_linear_lv() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair", "sfdisk"]) {
        return;
    }
    let dir = tempdir();
    let fsimg = image(dir.path(), "lvroot", &[], 0);
    let mib = 1u64 << 20;
    let (disk, segs, pe) = lvm_disk(dir.path(), &fsimg);
    let guard = InputGuard::new(&disk);
    let out = dir.path().join("out.raw");
    let up = dir.path().join("agent.bin");
    let data = pattern(77, 2_000_000);
    std::fs::write(&up, &data).unwrap();
    onramp_ok(&[
        "customize",
        s(&disk),
        s(&out),
        "--to",
        "raw",
        "--upload",
        &format!("{}:/usr/local/bin/agent", up.display()),
        "--write",
        "/etc/agent.conf:x=1",
    ]);
    guard.check();
    // Reassemble the LV from the output disk and judge it with xfsprogs.
    let lv = dir.path().join("lv.img");
    std::fs::File::create(&lv)
        .unwrap()
        .set_len(300 * mib)
        .unwrap();
    for (le, n, p) in segs {
        copy_range(&out, pe(p), &lv, le * mib, n * mib);
    }
    repair_clean(&lv);
    assert_eq!(db_cat(&lv, "/usr/local/bin/agent"), data);
    assert_eq!(db_cat(&lv, "/etc/agent.conf"), b"x=1");
    assert_eq!(db_cat(&lv, "/etc/keep"), pattern(3, 50_000));
    assert_eq!(db_field(&lv, "/.autorelabel", "core.size"), "0");
    // Nothing outside the PV extents of the LV (and the untouched PV header) changed.
    let a = std::fs::read(&disk).unwrap();
    let b = std::fs::read(&out).unwrap();
    let inside = |o: u64| {
        segs.iter()
            .any(|&(_, n, p)| o >= pe(p) && o < pe(p) + n * mib)
    };
    let first_diff_outside = a
        .chunks(4096)
        .zip(b.chunks(4096))
        .enumerate()
        .find(|(i, (x, y))| x != y && !inside(*i as u64 * 4096));
    assert!(
        first_diff_outside.is_none(),
        "a write landed outside the LV"
    );
}

// ---------------------------------------------------------------- recipe

#[test]
fn azure_rhel_recipe_on_a_rhel_like_xfs_lvm_image() {
    if !require(&["mkfs.xfs", "xfs_db", "xfs_repair", "sfdisk"]) {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let w = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let kver = "5.14.0-362.el9.x86_64";
    let osr = w("os-release.src", "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.3 (Plow)\"\n");
    let fstab = w(
        "fstab.src",
        "/dev/mapper/rhel-root / xfs defaults 0 0\n/dev/mapper/rhel-swap none swap defaults 0 0\n",
    );
    let grub = w("grub.src", "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rd.lvm.lv=rhel/root\"\nGRUB_ENABLE_BLSCFG=true\n");
    let bls = w("bls.src", &format!("title Red Hat Enterprise Linux ({kver}) 9.3 (Plow)\nversion {kver}\nlinux /vmlinuz-{kver}\ninitrd /initramfs-{kver}.img\noptions root=/dev/mapper/rhel-root ro crashkernel=auto\n"));
    let kernel = w("kernel.src", "kernel");
    let extra = format!(
        "boot d--555 0 0\nvmlinuz-{kver} ---755 0 0 {kernel}\nloader d--755 0 0\nentries d--755 0 0\nabc-{kver}.conf ---644 0 0 {bls}\n$\n$\n$\nusr d--755 0 0\nlib d--755 0 0\nsystemd d--755 0 0\nsystemd ---755 0 0 {kernel}\nsystem d--755 0 0\n$\n$\n$\n$\n"
    );
    let fsimg = image_with(d, "rhel", &[], 0, &extra);
    let mib = 1u64 << 20;
    let (disk, segs, pe) = lvm_disk(d, &fsimg);
    // Put RHEL's files in place with onramp itself (plain customize), so the
    // recipe run starts from a RHEL-looking guest.
    let guest = d.join("rhel.raw");
    onramp_ok(&[
        "customize",
        s(&disk),
        s(&guest),
        "--to",
        "raw",
        "--upload",
        &format!("{osr}:/etc/os-release"),
        "--upload",
        &format!("{fstab}:/etc/fstab"),
        "--upload",
        &format!("{grub}:/etc/default/grub"),
    ]);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/azure-rhel.yaml"),
    )
    .unwrap()
    .replace(
        "../fixtures/agents/azure-ready",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/agents/azure-ready")
            .to_str()
            .unwrap(),
    )
    .replace("../target/artifacts", "out");
    let r = d.join("azure-rhel.yaml");
    std::fs::write(&r, text).unwrap();
    let guard = InputGuard::new(&guest);
    let o = std::process::Command::new(common::onramp_bin())
        .args(["build", s(&r)])
        .env("RHEL_IMAGE", &guest)
        .output()
        .unwrap();
    guard.check();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("out/azure-rhel.vhd.manifest.json"))
            .unwrap_or_else(|e| panic!("no manifest ({e}): {err}")),
    )
    .unwrap();
    // Validation may only fail on what this small fixture genuinely lacks
    // (no initramfs, kernel config, EFI system partition); never on what the
    // recipe injects.
    let genuine = [
        "azure.disk.generation",      // no EFI system partition
        "azure.linux.hyperv-drivers", // no kernel config or initramfs
        "azure.linux.sshd",           // no sshd
        "azure.linux.udf-vfat",       // no kernel config
    ];
    for f in m["validation"]["failed"].as_array().into_iter().flatten() {
        let id = f
            .as_str()
            .or_else(|| f["rule"].as_str())
            .unwrap_or_default();
        assert!(genuine.contains(&id), "unexpected failure {f}\n{err}");
    }
    // The VHD is the raw disk plus a footer: reassemble the LV and judge it.
    let vhd = d.join("out/azure-rhel.vhd");
    let lv = d.join("lv.img");
    std::fs::File::create(&lv)
        .unwrap()
        .set_len(300 * mib)
        .unwrap();
    for (le, n, p) in segs {
        copy_range(&vhd, pe(p), &lv, le * mib, n * mib);
    }
    repair_clean(&lv);
    assert_eq!(db_field(&lv, "/.autorelabel", "core.size"), "0");
    let names: Vec<String> = db_ls(&lv, "/etc/systemd/system")
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        names.contains(&"onramp-azure-ready.service".to_string()),
        "{names:?}"
    );
    let entry = String::from_utf8(db_cat(
        &lv,
        &format!("/boot/loader/entries/abc-{kver}.conf"),
    ))
    .unwrap();
    assert!(entry.contains("console=ttyS0"), "{entry}");
    let fst = String::from_utf8(db_cat(&lv, "/etc/fstab")).unwrap();
    assert!(
        !fst.lines().any(|l| l.starts_with("/dev/mapper/rhel-swap")),
        "{fst}"
    );
    assert!(db_cat(&lv, "/usr/lib/onramp/azure-ready.sh").starts_with(b"#!"));
}

#[test]
fn leaf_form_directory_grows_and_shrinks() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "leaf", &[], 200);
    // 200 entries of 40 bytes: several data blocks and a LEAF1 block.
    let blocks = db_bmap(&img, "/big");
    assert!(blocks.iter().any(|b| b.0 >= (1 << 35) / 4096), "{blocks:?}");
    let mut actions = Vec::new();
    for i in 0..150 {
        actions.push(FsAction::WriteFile {
            path: format!("/big/added_file_with_a_longer_name_{i:03}"),
            data: format!("{i}").into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        });
    }
    for i in (0..200).step_by(7) {
        actions.push(FsAction::Delete {
            path: format!("/big/entry_with_a_long_name_{i}"),
        });
    }
    actions.push(FsAction::Delete {
        path: "/big/added_file_with_a_longer_name_005".into(),
    });
    let out = dir.path().join("out.img");
    apply_to_copy(&img, &out, &actions).unwrap();
    repair_clean(&out);
    let got: Vec<String> = db_ls(&out, "/big").into_iter().map(|e| e.0).collect();
    let mut want: Vec<String> = (0..200)
        .filter(|i| i % 7 != 0)
        .map(|i| format!("entry_with_a_long_name_{i}"))
        .chain(
            (0..150)
                .filter(|&i| i != 5)
                .map(|i| format!("added_file_with_a_longer_name_{i:03}")),
        )
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        db_cat(&out, "/big/added_file_with_a_longer_name_149"),
        b"149"
    );
}

/// A symlink target longer than one 1 KiB block's payload (968 bytes) takes
/// two blocks, as the kernel writes it (one "XSLM" header per extent).
#[test]
fn long_symlink_on_1k_blocks_takes_two_blocks() {
    if !require(TOOLS) {
        return;
    }
    let dir = tempdir();
    let img = image(dir.path(), "lnk", &["-b", "size=1024"], 0);
    let out = dir.path().join("out.img");
    let target = format!("/{}", "t".repeat(1020));
    common::xfs::apply_to_copy(
        &img,
        &out,
        &[FsAction::Symlink {
            target: target.clone(),
            path: "/etc/long".into(),
        }],
    )
    .unwrap();
    repair_clean(&out);
    assert_eq!(db_field(&out, "/etc/long", "core.size"), "1021");
    assert_eq!(db_field(&out, "/etc/long", "core.nblocks"), "2");
    let src: std::sync::Arc<dyn onramp::block::BlockSource> =
        std::sync::Arc::new(onramp::source::raw::RawReader::open(&out).unwrap());
    let fs = onramp::fs::probe(src).unwrap().unwrap();
    assert_eq!(fs.read_link("/etc/long").unwrap(), target);
}
