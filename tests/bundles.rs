//! Agent bundles (issue 7): agent.yaml bundles from a directory and a GNU tar
//! .tar.gz, .deb packages built with dpkg-deb (and Debian's real waagent),
//! and malicious tars made with python3's tarfile.

mod common;

use onramp::error::Result;
use onramp::fs::{DirEntry, FileSystem, FileType, Metadata};
use onramp::inject::bundle::{self, Bundle};
use onramp::inject::FsAction;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A guest backed by a host directory (read-only, for planning).
struct DirFs(PathBuf);

impl DirFs {
    fn host(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }
}

impl FileSystem for DirFs {
    fn kind(&self) -> &'static str {
        "dir"
    }
    fn stat(&self, path: &str) -> Result<Option<Metadata>> {
        let Ok(m) = std::fs::symlink_metadata(self.host(path)) else {
            return Ok(None);
        };
        let file_type = if m.is_dir() {
            FileType::Dir
        } else if m.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::File
        };
        Ok(Some(Metadata {
            file_type,
            size: m.len(),
            mode: m.mode(),
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: m.ino(),
        }))
    }
    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(self.host(path)).unwrap() {
            let e = e.unwrap();
            v.push(DirEntry {
                name: e.file_name().to_string_lossy().into_owned(),
                file_type: FileType::Other,
                ino: 0,
            });
        }
        Ok(v)
    }
    fn read_file(&self, path: &str, _limit: u64) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.host(path)).unwrap())
    }
    fn read_link(&self, path: &str) -> Result<String> {
        Ok(std::fs::read_link(self.host(path))
            .unwrap()
            .to_string_lossy()
            .into_owned())
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Debian-like guest tree with systemd, merged /usr and a dpkg database.
fn guest_tree(dir: &Path, systemd: bool) -> DirFs {
    let root = dir.join("guest");
    let w = |p: &str, c: &str| {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    };
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    if systemd {
        w("usr/lib/systemd/systemd", "ELF");
    }
    w(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nagent:x:998:997::/:/bin/false\n",
    );
    w("etc/group", "root:x:0:\nagent:x:997:\n");
    w(
        "var/lib/dpkg/status",
        "Package: libc6\nStatus: install ok installed\nVersion: 2.36\n\nPackage: systemd\nStatus: install ok installed\nVersion: 252\n",
    );
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    DirFs(root)
}

fn file<'a>(acts: &'a [FsAction], path: &str) -> (&'a [u8], u32, u32, u32) {
    acts.iter()
        .find_map(|a| match a {
            FsAction::WriteFile {
                path: p,
                data,
                mode,
                uid,
                gid,
            } if p == path => Some((data.as_slice(), *mode, *uid, *gid)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not written: {acts:#?}"))
}

fn has_link(acts: &[FsAction], path: &str, target: &str) -> bool {
    acts.iter()
        .any(|a| matches!(a, FsAction::Symlink { path: p, target: t } if p == path && t == target))
}

fn check_azure_ready(b: &Bundle, dir: &Path) {
    assert_eq!(b.name(), "azure-ready");
    let guest = guest_tree(dir, true);
    let mut vars = BTreeMap::new();
    vars.insert("retries".to_string(), "5".to_string());
    let acts = bundle::plan_bundle(b, &guest, &vars).unwrap();
    let (script, mode, uid, gid) = file(&acts, "/usr/lib/onramp/azure-ready.sh");
    assert_eq!((mode, uid, gid), (0o755, 0, 0));
    let script = String::from_utf8_lossy(script);
    assert!(script.contains("comp=goalstate") && script.contains("onramp-agent: $*"));
    let (unit, mode, _, _) = file(&acts, "/etc/systemd/system/onramp-azure-ready.service");
    assert_eq!(mode, 0o644);
    assert!(String::from_utf8_lossy(unit).contains("WantedBy=multi-user.target"));
    assert!(has_link(
        &acts,
        "/etc/systemd/system/multi-user.target.wants/onramp-azure-ready.service",
        "/etc/systemd/system/onramp-azure-ready.service"
    ));
    let (conf, _, _, _) = file(&acts, "/etc/onramp/azure-ready.conf");
    let conf = String::from_utf8_lossy(conf);
    assert!(
        conf.contains("WIRESERVER=168.63.129.16\n") && conf.contains("RETRIES=5\n"),
        "{conf}"
    );
    // No systemd: the sysvinit fallback.
    let dir2 = dir.join("nosd");
    std::fs::create_dir_all(&dir2).unwrap();
    let acts = bundle::plan_bundle(b, &guest_tree(&dir2, false), &vars).unwrap();
    assert!(has_link(
        &acts,
        "/etc/rc2.d/S99onramp-azure-ready",
        "/etc/init.d/onramp-azure-ready"
    ));
    assert!(!acts
        .iter()
        .any(|a| matches!(a, FsAction::Symlink { path, .. } if path.contains(".wants"))));
}

#[test]
fn azure_ready_from_dir_and_tar_gz() {
    let tmp = common::tempdir();
    let src = repo().join("fixtures/agents/azure-ready");
    let b = bundle::load(&src).unwrap();
    check_azure_ready(&b, &tmp.path().join("a"));
    let tgz = tmp.path().join("azure-ready.tar.gz");
    common::run(
        "tar",
        &[
            "czf",
            tgz.to_str().unwrap(),
            "-C",
            repo().join("fixtures/agents").to_str().unwrap(),
            "azure-ready",
        ],
    );
    let b = bundle::load(&tgz).unwrap();
    check_azure_ready(&b, &tmp.path().join("b"));
    // A template naming an unknown variable is an error naming it.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("agent.yaml"),
        "name: x\nversion: '1'\nconfig:\n  - {dest: /etc/x, template: 'a={{nope}}'}\n",
    )
    .unwrap();
    let e = bundle::plan_bundle(
        &bundle::load(&bad).unwrap(),
        &guest_tree(&tmp.path().join("c"), true),
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
    std::fs::write(bad.join("agent.yaml"), "name: x\nversion: '1'\nbogus: 1\n").unwrap();
    let e = bundle::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bogus") && e.contains("line"), "{e}");
}

fn require_tool(t: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {t}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{t} missing under CI"
        );
        eprintln!("skipped: {t} missing");
    }
    ok
}

#[test]
fn deb_built_with_dpkg_deb() {
    if !require_tool("dpkg-deb") {
        return;
    }
    let tmp = common::tempdir();
    let pkg = tmp.path().join("pkg");
    let w = |p: &str, c: &str, mode: u32| {
        let f = pkg.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, c).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w(
        "DEBIAN/control",
        "Package: demo-agent\nVersion: 1.2-3\nArchitecture: all\nMaintainer: Demo <demo@example.invalid>\nDepends: libc6, python3 (>= 3.9)\nDescription: demo agent\n longer text\n",
        0o644,
    );
    w("DEBIAN/conffiles", "/etc/demo/agent.conf\n", 0o644);
    w("DEBIAN/postinst", "#!/bin/sh\nexit 0\n", 0o755);
    w("etc/demo/agent.conf", "level=1\n", 0o644);
    w("usr/bin/demo-agent", "#!/bin/sh\necho hi\n", 0o755);
    w(
        "lib/systemd/system/demo-agent.service",
        "[Unit]\nDescription=demo\n[Service]\nExecStart=/usr/bin/demo-agent\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    std::os::unix::fs::symlink("demo-agent", pkg.join("usr/bin/demo")).unwrap();
    let deb = tmp.path().join("demo.deb");
    common::run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            pkg.to_str().unwrap(),
            deb.to_str().unwrap(),
        ],
    );
    let b = bundle::load(&deb).unwrap();
    assert_eq!((b.name(), b.version()), ("demo-agent", "1.2-3"));
    let guest = guest_tree(tmp.path(), true);
    let plan = bundle::plan_bundle_report(&b, &guest, &BTreeMap::new()).unwrap();
    let acts = &plan.actions;
    assert_eq!(file(acts, "/usr/bin/demo-agent").1, 0o755);
    assert_eq!(file(acts, "/etc/demo/agent.conf").0, b"level=1\n");
    // /lib is a symlink to usr/lib in the guest: the plan names canonical paths.
    file(acts, "/usr/lib/systemd/system/demo-agent.service");
    assert!(has_link(acts, "/usr/bin/demo", "demo-agent"));
    assert!(has_link(
        acts,
        "/etc/systemd/system/multi-user.target.wants/demo-agent.service",
        "/lib/systemd/system/demo-agent.service"
    ));
    let status = String::from_utf8(file(acts, "/var/lib/dpkg/status").0.to_vec()).unwrap();
    assert!(status.starts_with("Package: libc6\n"), "{status}");
    let stanza = status
        .split("\n\n")
        .find(|s| s.starts_with("Package: demo-agent"))
        .unwrap();
    for l in [
        "Status: install ok installed",
        "Version: 1.2-3",
        "Architecture: all",
        "Conffiles:",
        " /etc/demo/agent.conf ",
        "Description: demo agent\n longer text",
    ] {
        assert!(stanza.contains(l), "{l:?} not in {stanza}");
    }
    // dpkg itself parses the status file we would write.
    let admin = tmp.path().join("admin");
    std::fs::create_dir_all(admin.join("info")).unwrap();
    std::fs::create_dir_all(admin.join("updates")).unwrap();
    std::fs::write(admin.join("status"), &status).unwrap();
    std::fs::write(admin.join("available"), "").unwrap();
    std::fs::write(
        admin.join("info/demo-agent.list"),
        file(acts, "/var/lib/dpkg/info/demo-agent.list").0,
    )
    .unwrap();
    if require_tool("dpkg-query") {
        let out = Command::new("dpkg-query")
            .args([
                "--admindir",
                admin.to_str().unwrap(),
                "-W",
                "-f",
                "${Package} ${Version} ${db:Status-Abbrev}\n",
                "demo-agent",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "demo-agent 1.2-3 ii"
        );
        let out = Command::new("dpkg-query")
            .args(["--admindir", admin.to_str().unwrap(), "-L", "demo-agent"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("/usr/bin/demo-agent"));
    }
    let list =
        String::from_utf8_lossy(file(acts, "/var/lib/dpkg/info/demo-agent.list").0).into_owned();
    assert!(
        list.starts_with("/.\n") && list.contains("\n/etc/demo/agent.conf\n"),
        "{list}"
    );
    assert!(
        String::from_utf8_lossy(file(acts, "/var/lib/dpkg/info/demo-agent.md5sums").0)
            .contains("usr/bin/demo-agent")
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("python3")),
        "{:?}",
        plan.warnings
    );
    assert!(!plan.warnings.iter().any(|w| w.contains("depends on libc6")));
    assert!(plan.warnings.iter().any(|w| w.contains("postinst")));
}

#[test]
fn real_waagent_deb() {
    let tmp = common::tempdir();
    let out = Command::new(repo().join("fixtures/agents/waagent/fetch.sh"))
        .arg(tmp.path())
        .output()
        .unwrap();
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "apt-get download waagent failed under CI: {msg}"
        );
        eprintln!("skipped: apt-get download waagent failed: {msg}");
        return;
    }
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let b = bundle::load(&deb).unwrap();
    assert_eq!(b.name(), "waagent");
    let plan =
        bundle::plan_bundle_report(&b, &guest_tree(tmp.path(), true), &BTreeMap::new()).unwrap();
    let acts = &plan.actions;
    assert!(
        acts.iter()
            .any(|a| matches!(a, FsAction::WriteFile { path, .. } if path == "/usr/sbin/waagent")),
        "{:#?}",
        acts.iter().map(FsAction::describe).collect::<Vec<_>>()
    );
    assert!(acts.iter().any(|a| matches!(a, FsAction::Symlink { path, .. } if path.starts_with("/etc/systemd/system/multi-user.target.wants/") && path.contains("walinuxagent"))), "{:#?}", acts.iter().map(FsAction::describe).collect::<Vec<_>>());
    let status = String::from_utf8_lossy(file(acts, "/var/lib/dpkg/status").0).into_owned();
    assert!(status.contains("Package: waagent\nStatus: install ok installed\n"));
    file(acts, "/var/lib/dpkg/info/waagent.list");
    assert!(
        plan.warnings.iter().any(|w| w.contains("python3")),
        "{:?}",
        plan.warnings
    );
}

const MAKE_BAD: &str = r#"
import io, sys, tarfile
out, kind = sys.argv[1], sys.argv[2]
t = tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT)
def add(name, data=b"x", **kw):
    i = tarfile.TarInfo(name)
    for k, v in kw.items(): setattr(i, k, v)
    if i.type == tarfile.REGTYPE:
        i.size = len(data); t.addfile(i, io.BytesIO(data))
    else:
        t.addfile(i)
add("agent.yaml", b"name: x\nversion: '1'\n")
if kind == "abs": add("/etc/evil")
if kind == "dotdot": add("sub/../../evil")
if kind == "dev": add("dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
if kind == "fifo": add("fifo", type=tarfile.FIFOTYPE)
if kind == "symlink": add("a/link", type=tarfile.SYMTYPE, linkname="../../etc/shadow")
if kind == "hardlink": add("hl", type=tarfile.LNKTYPE, linkname="../etc/shadow")
t.close()
"#;

#[test]
fn malicious_tars_are_refused() {
    let tmp = common::tempdir();
    for (kind, member, why) in [
        ("abs", "/etc/evil", "absolute"),
        ("dotdot", "sub/../../evil", ".."),
        ("dev", "dev/sda", "device node"),
        ("fifo", "fifo", "FIFO"),
        ("symlink", "a/link", "outside"),
        ("hardlink", "hl", "outside"),
    ] {
        let p = tmp.path().join(format!("{kind}.tar.gz"));
        common::run("python3", &["-c", MAKE_BAD, p.to_str().unwrap(), kind]);
        let e = bundle::load(&p).expect_err(kind).to_string();
        assert!(
            e.contains(&format!("\"{member}\"")) && e.contains(why),
            "{kind}: {e}"
        );
    }
    // A member claiming 8 GiB: refused by the bound before reading.
    let p = tmp.path().join("huge.tar.gz");
    let script = r#"
import sys, tarfile, gzip
i = tarfile.TarInfo("big.bin"); i.size = 8 << 30
h = i.tobuf(format=tarfile.GNU_FORMAT)
open(sys.argv[1], "wb").write(gzip.compress(h + b"\0" * 4096))
"#;
    common::run("python3", &["-c", script, p.to_str().unwrap()]);
    let e = bundle::load(&p).unwrap_err().to_string();
    assert!(e.contains("big.bin") && e.contains("bytes"), "{e}");
}
