//! `onramp boot-test`: prove an image boots, under QEMU.
//!
//! The image is never written: QEMU gets a temporary qcow2 overlay whose
//! backing file is the artifact (`qemu-img create -f qcow2 -F FMT -b ABS`),
//! in a temporary directory removed afterwards. Formats QEMU cannot open
//! itself (OVA, gzip/xz/zstd) are first converted by onramp into a temporary
//! qcow2.
//!
//! How the guest starts ([`BootPath`]):
//! - a disk with an EFI system partition boots through OVMF when it is
//!   installed (`/usr/share/OVMF`, Debian package `ovmf`);
//! - a disk whose sector 0 holds MBR boot code boots through SeaBIOS;
//! - otherwise a Linux guest boots by direct kernel boot: onramp's own readers
//!   ([`crate::guest::inspect`], [`crate::fs::read_guest_file`]) take the newest
//!   `/boot/vmlinuz-*` and its initramfs out of the guest, and QEMU starts them
//!   with `root=<the guest's fstab root> ro console=ttyS0`.
//!
//! The serial console goes to a log file, read as it grows. Success, for a
//! Linux guest ([`Checks`]): userspace reached (a line saying the
//! multi-user/graphical/getty target was reached, or a `login:` prompt), every
//! `--expect-unit` reported started, every `--expect-serial` regex seen. QEMU
//! is stopped as soon as all of that is seen, or at the timeout.
//!
//! Acceleration: KVM when `/dev/kvm` opens read-write, TCG otherwise. A KVM run
//! that dies before the guest printed anything (QEMU 7.2 aborts with "failed to
//! set MSR" under some nested hypervisors) is retried under TCG.

use crate::block::BlockSource;
use crate::error::{Error, ErrorKind, Result};
use crate::fs;
use crate::guest::{self, GuestFs, Inspection};
use crate::partition::{self, Scheme};
use crate::source::{self, detect, Format, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod checks;
pub use checks::{Check, Checks};

/// Lines of console shown when a boot test fails.
pub const TAIL_LINES: usize = 30;

/// Largest kernel image read out of a guest for direct kernel boot: 128 MiB
/// (distribution kernels are 5-15 MiB; an uncompressed vmlinux with debug
/// info can reach ~100 MiB).
pub const MAX_KERNEL_BYTES: u64 = 128 << 20;

/// How long a KVM run may take to fail before the guest printed anything for
/// onramp to retry it under TCG.
const KVM_EARLY_FAILURE: Duration = Duration::from_secs(20);

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when /dev/kvm works, else TCG (and TCG again if KVM fails early).
    Auto,
    /// KVM only.
    Kvm,
    /// TCG (software emulation) only.
    Tcg,
}

/// How to start the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootPath {
    /// Decide from the disk (see the module docs).
    Auto,
    /// Through the disk's boot loader, SeaBIOS.
    Bios,
    /// Through the disk's boot loader, OVMF.
    Uefi,
    /// Kernel and initramfs read out of the guest, started by QEMU.
    Direct,
}

/// A boot test to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The image (never modified).
    pub image: PathBuf,
    /// How to open it.
    pub open: OpenOptions,
    /// Give up after this long (per attempt).
    pub timeout: Duration,
    /// Units that must be reported started.
    pub expect_units: Vec<String>,
    /// Regexes some console line must match.
    pub expect_serial: Vec<String>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Accelerator choice.
    pub accel: Accel,
    /// Boot path choice.
    pub boot: BootPath,
    /// Extra kernel command-line words (direct kernel boot).
    pub append: Option<String>,
    /// Keep the console log here.
    pub console_log: Option<PathBuf>,
    /// Once userspace is reached, wait at most this long for the other checks.
    pub settle: Duration,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The image.
    pub image: PathBuf,
    /// Every check passed.
    pub passed: bool,
    /// Why not, when not.
    pub failure: Option<String>,
    /// The accelerator of the final run ("kvm" or "tcg").
    pub accel: String,
    /// "bios", "uefi" or "direct".
    pub boot_path: String,
    /// Kernel release booted directly, if any.
    pub kernel: Option<String>,
    /// Kernel command line, for direct kernel boot.
    pub cmdline: Option<String>,
    /// Seconds from QEMU start to success (or to the end) of the final run.
    pub seconds: f64,
    /// The run hit --timeout.
    pub timed_out: bool,
    /// The checks and when each was satisfied.
    pub checks: Vec<Check>,
    /// Things worth knowing (KVM fallback, OVMF missing...).
    pub notes: Vec<String>,
    /// The QEMU command line of the final run.
    pub qemu_command: Vec<String>,
    /// Last console lines (ANSI colour codes removed).
    pub console_tail: Vec<String>,
}

fn env_error(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Io, msg)
}

/// Find an executable on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// QEMU's name for an image format it opens itself; `None` for formats onramp
/// must unpack first.
fn qemu_format(f: Format) -> Option<&'static str> {
    match f {
        Format::Raw => Some("raw"),
        Format::Qcow2 => Some("qcow2"),
        Format::Vhd => Some("vpc"),
        Format::Vhdx => Some("vhdx"),
        Format::Vmdk => Some("vmdk"),
        Format::Vdi => Some("vdi"),
        Format::Ova | Format::Gzip | Format::Xz | Format::Zstd => None,
    }
}

/// OVMF firmware (code, vars template) as Debian's `ovmf` package installs it.
fn find_ovmf() -> Option<(PathBuf, PathBuf)> {
    let dirs = ["/usr/share/OVMF", "/usr/share/edk2/ovmf", "/usr/share/qemu"];
    let pairs = [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ];
    for d in dirs {
        for (c, v) in pairs {
            let (c, v) = (Path::new(d).join(c), Path::new(d).join(v));
            if c.is_file() && v.is_file() {
                return Some((c, v));
            }
        }
    }
    None
}

/// MBR boot code present: signature 0x55AA and non-zero bytes in the 440-byte
/// boot code area (MBR layout, UEFI spec 2.10 §5.2.1).
fn has_mbr_boot_code(src: &dyn BlockSource) -> Result<bool> {
    if src.size() < 512 {
        return Ok(false);
    }
    let mut s = [0u8; 512];
    src.read_at(0, &mut s)?;
    Ok(s.get(510..512) == Some(&[0x55, 0xAA][..])
        && s.get(..440).is_some_and(|c| c.iter().any(|&b| b != 0)))
}

/// The guest's filesystems mounted where its fstab puts them (as inspection found).
fn guest_fs(src: &Arc<dyn BlockSource>, insp: &Inspection) -> Result<Option<GuestFs>> {
    let Some(linux) = &insp.linux else {
        return Ok(None);
    };
    let layout = partition::scan(src)?;
    let mut g: Option<GuestFs> = None;
    let mut others = Vec::new();
    for (i, v) in layout.volumes.iter().enumerate() {
        let Some(mp) = insp.volumes.get(i).and_then(|vi| vi.mount_point.clone()) else {
            continue;
        };
        // Inspection already reported damaged volumes as warnings.
        let Some(f) = v.open(src).and_then(fs::probe).ok().flatten() else {
            continue;
        };
        let f: Arc<dyn fs::FileSystem> = Arc::from(f);
        if i == linux.root.volume {
            g = Some(GuestFs::new(f));
        } else {
            others.push((mp, f));
        }
    }
    if let Some(g) = g.as_mut() {
        for (mp, f) in others {
            g.mount(&mp, f);
        }
    }
    Ok(g)
}

/// Compare kernel release strings with digit runs as numbers ("6.1.0-10" < "6.1.0-9" is wrong).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut v: Vec<(bool, String)> = Vec::new();
        for ch in s.chars() {
            let d = ch.is_ascii_digit();
            match v.last_mut() {
                Some((ld, t)) if *ld == d => t.push(ch),
                _ => v.push((d, ch.to_string())),
            }
        }
        v
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(&y.1),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The `root=` value for direct kernel boot.
fn root_spec(insp: &Inspection, have_initramfs: bool) -> Option<String> {
    let linux = insp.linux.as_ref()?;
    if have_initramfs {
        if let Some(e) = linux.fstab.iter().find(|e| e.mount_point == "/") {
            let s = &e.spec;
            if ["UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=", "/dev/"]
                .iter()
                .any(|p| s.starts_with(p))
            {
                return Some(s.clone());
            }
        }
        if let Some(u) = &linux.root.uuid {
            return Some(format!("UUID={u}"));
        }
    }
    // No initramfs: the kernel itself must find the device, by name.
    let v = insp.volumes.get(linux.root.volume)?;
    match v.volume.scheme {
        Scheme::None => Some("/dev/vda".into()),
        Scheme::Mbr | Scheme::Gpt => Some(format!("/dev/vda{}", v.volume.index)),
        Scheme::Lvm => v.volume.name.as_ref().map(|n| {
            let (vg, lv) = n.split_once('/').unwrap_or((n.as_str(), ""));
            format!(
                "/dev/mapper/{}-{}",
                vg.replace('-', "--"),
                lv.replace('-', "--")
            )
        }),
    }
}

/// Kernel and initramfs for direct kernel boot, written into `dir`.
struct DirectBoot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    version: String,
    cmdline: String,
}

fn prepare_direct(
    g: &GuestFs,
    insp: &Inspection,
    dir: &Path,
    append: Option<&str>,
) -> Result<DirectBoot> {
    let linux = insp
        .linux
        .as_ref()
        .ok_or_else(|| Error::unsupported("no boot loader and no Linux root: cannot boot"))?;
    let k = linux
        .kernels
        .iter()
        .filter(|k| k.vmlinuz.is_some())
        .max_by(|a, b| version_cmp(&a.version, &b.version))
        .ok_or_else(|| {
            Error::unsupported("no boot loader on the disk and no /boot/vmlinuz-* in the guest")
        })?;
    let vmlinuz = k.vmlinuz.clone().unwrap_or_default();
    let data = fs::read_guest_file(g, &vmlinuz, MAX_KERNEL_BYTES)?
        .ok_or_else(|| Error::corrupt_msg(format!("{vmlinuz} is listed but unreadable")))?;
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, data).map_err(|e| Error::io("write kernel", e))?;
    let mut initrd = None;
    if let Some(i) = &k.initramfs {
        if let Some(d) = fs::read_guest_file(g, &i.path, crate::limits::MAX_INITRAMFS_BYTES)? {
            let p = dir.join("initrd");
            std::fs::write(&p, d).map_err(|e| Error::io("write initramfs", e))?;
            initrd = Some(p);
        }
    }
    let root = root_spec(insp, initrd.is_some())
        .ok_or_else(|| Error::unsupported("cannot tell the guest's root device"))?;
    let mut cmdline = format!("root={root} ro console=ttyS0,115200 panic=-1");
    if let Some(a) = append {
        cmdline.push(' ');
        cmdline.push_str(a);
    }
    Ok(DirectBoot {
        kernel,
        initrd,
        version: k.version.clone(),
        cmdline,
    })
}

/// A running QEMU, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `/dev/kvm` usable by this process.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// QEMU's `-drive file=` value with commas escaped.
fn drive_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// How one QEMU run ended.
enum Outcome {
    Passed,
    CheckFailed(String),
    Exited(String),
    TimedOut,
}

struct Run {
    outcome: Outcome,
    seconds: f64,
    console_bytes: u64,
    stderr: String,
}

/// Strip ANSI escape sequences and carriage returns from a console line.
pub fn clean_line(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' => {
                if it.peek() == Some(&'[') {
                    it.next();
                    // CSI: parameters then one final byte in 0x40..=0x7e.
                    for d in it.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&d) {
                            break;
                        }
                    }
                } else {
                    it.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn run_qemu(
    args: &[String],
    qemu: &Path,
    log: &Path,
    dir: &Path,
    timeout: Duration,
    settle: Duration,
    checks: &mut Checks,
) -> Result<Run> {
    let _ = std::fs::remove_file(log);
    let stderr_path = dir.join("qemu.stderr");
    let errf = std::fs::File::create(&stderr_path).map_err(|e| Error::io("create", e))?;
    let child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(errf)
        .spawn()
        .map_err(|e| env_error(format!("cannot start {}: {e}", qemu.display())))?;
    let mut q = Qemu(child);
    let start = Instant::now();
    let mut pos: u64 = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let outcome = loop {
        let exited = q.0.try_wait().map_err(|e| Error::io("wait for qemu", e))?;
        // Read whatever the console wrote since last time.
        if let Ok(mut f) = std::fs::File::open(log) {
            use std::io::Seek;
            if f.seek(std::io::SeekFrom::Start(pos)).is_ok() {
                loop {
                    let n = f.read(&mut buf).map_err(|e| Error::io("read console", e))?;
                    if n == 0 {
                        break;
                    }
                    pos = pos.saturating_add(u64::try_from(n).unwrap_or(0));
                    partial.extend_from_slice(buf.get(..n).unwrap_or(&[]));
                }
            }
        }
        let t = start.elapsed().as_secs_f64();
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            checks.feed(&clean_line(line.get(..i).unwrap_or(&[])), t);
        }
        if let Some(f) = checks.failure() {
            break Outcome::CheckFailed(f);
        }
        if checks.all_passed() {
            break Outcome::Passed;
        }
        if let Some(status) = exited {
            if !partial.is_empty() {
                checks.feed(&clean_line(&partial), t);
                partial.clear();
                if checks.all_passed() {
                    break Outcome::Passed;
                }
            }
            break Outcome::Exited(format!("qemu exited ({status}) before every check passed"));
        }
        if let Some(tu) = checks.userspace_at() {
            if t > tu + settle.as_secs_f64() {
                break Outcome::CheckFailed(format!(
                    "userspace was reached at {tu:.1} s but the other checks were not seen within {} s after it",
                    settle.as_secs()
                ));
            }
        }
        if start.elapsed() >= timeout {
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = start.elapsed().as_secs_f64();
    drop(q);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    Ok(Run {
        outcome,
        seconds,
        console_bytes: pos,
        stderr,
    })
}

/// Last `n` lines of the console log, cleaned.
fn tail(log: &Path, n: usize) -> Vec<String> {
    let data = std::fs::read(log).unwrap_or_default();
    let lines: Vec<String> = data.split(|&b| b == b'\n').map(clean_line).collect();
    let mut lines: Vec<String> = lines
        .into_iter()
        .rev()
        .skip_while(|l| l.trim().is_empty())
        .take(n)
        .collect();
    lines.reverse();
    lines
}

/// Guest file where agent injection records what a boot should show: lines
/// `serial REGEX` and `unit NAME`. `boot-test` adds them to its default checks.
pub const EXPECT_FILE: &str = "/var/lib/onramp/boot-expect";

/// Largest [`EXPECT_FILE`] read.
const MAX_EXPECT_BYTES: u64 = 64 << 10;

/// The expectations injection recorded in the guest (serial regexes, units).
fn recorded_expectations(g: &GuestFs) -> (Vec<String>, Vec<String>) {
    let (mut serial, mut units) = (Vec::new(), Vec::new());
    if let Ok(Some(b)) = crate::fs::read_guest_file(g, EXPECT_FILE, MAX_EXPECT_BYTES) {
        for line in String::from_utf8_lossy(&b).lines() {
            if let Some(r) = line.strip_prefix("serial ") {
                serial.push(r.to_string());
            } else if let Some(u) = line.strip_prefix("unit ") {
                units.push(u.to_string());
            }
        }
    }
    (serial, units)
}

/// Run a boot test. `Ok` with `passed == false` when a check failed or time ran
/// out; `Err` for bad input (exit 2) and a missing QEMU (exit 3).
pub fn boot_test(req: &Request) -> Result<Report> {
    // Input checks first: bad input is exit 2 even without QEMU.
    if req.timeout.is_zero() {
        return Err(Error::invalid("--timeout must be at least 1 second"));
    }
    if req.memory_mib < 128 {
        return Err(Error::invalid("--memory must be at least 128 MiB"));
    }
    let mut checks = Checks::new(&req.expect_serial)?;
    let src: Arc<dyn BlockSource> = Arc::from(source::open(&req.image, &req.open)?);
    let format = match req.open.format {
        Some(f) => f,
        None => detect::detect(&req.image)?,
    };
    let insp = guest::inspect(src.clone()).map_err(|e| e.at(&req.image))?;
    let linux = insp.os.as_deref() == Some("linux");
    let g = if linux { guest_fs(&src, &insp)? } else { None };
    let mut units = req.expect_units.clone();
    if let Some(g) = &g {
        // Agents onramp injected say what their start looks like.
        let (serial, recorded) = recorded_expectations(g);
        let mut all = req.expect_serial.clone();
        all.extend(
            serial
                .into_iter()
                .filter(|r| !req.expect_serial.contains(r)),
        );
        units.extend(
            recorded
                .into_iter()
                .filter(|u| !req.expect_units.contains(u)),
        );
        if all.len() != req.expect_serial.len() {
            checks = Checks::new(&all).map_err(|e| e.at(&req.image))?;
        }
    }
    checks.set_units(&units, g.as_ref());
    if linux {
        checks.require_userspace();
    } else if req.expect_serial.is_empty() {
        return Err(Error::invalid(format!(
            "no default success check for a {} guest: give --expect-serial REGEX",
            insp.os.as_deref().unwrap_or("unrecognised")
        )));
    }

    let mut notes = Vec::new();
    let ovmf = find_ovmf();
    let esp = insp.disk.boot_mode == "uefi";
    let mbr_code = has_mbr_boot_code(src.as_ref())?;
    let path = match req.boot {
        BootPath::Auto => {
            if esp && ovmf.is_some() {
                BootPath::Uefi
            } else if mbr_code {
                if esp {
                    notes.push("disk has an EFI system partition but OVMF is not installed (apt-get install ovmf): booting through its BIOS boot code".into());
                }
                BootPath::Bios
            } else if linux {
                if esp {
                    notes.push("disk has an EFI system partition but OVMF is not installed (apt-get install ovmf): booting the kernel directly".into());
                }
                BootPath::Direct
            } else if esp {
                return Err(env_error(
                    "the disk boots through UEFI and OVMF is not installed (apt-get install ovmf)",
                ));
            } else {
                return Err(Error::unsupported(
                    "the disk has no boot loader and no Linux kernel onramp could start",
                ));
            }
        }
        p => p,
    };

    let qemu = which("qemu-system-x86_64").ok_or_else(|| {
        env_error("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    })?;
    let qemu_img = which("qemu-img")
        .ok_or_else(|| env_error("qemu-img not found (apt-get install qemu-utils)"))?;
    if path == BootPath::Uefi && ovmf.is_none() {
        return Err(env_error("--boot uefi needs OVMF (apt-get install ovmf)"));
    }

    let tmp = tempfile::Builder::new()
        .prefix("onramp-boot-")
        .tempdir()
        .map_err(|e| Error::io("create temporary directory", e))?;
    let dir = tmp.path();
    let abs = std::fs::canonicalize(&req.image)
        .map_err(|e| Error::io("resolve image path", e).at(&req.image))?;

    // The backing file QEMU reads: the artifact itself, or an onramp-made qcow2
    // for formats QEMU cannot open.
    let (backing, backing_fmt) = match qemu_format(format) {
        Some(f) => (abs.clone(), f),
        None => {
            let out = dir.join("unpacked.qcow2");
            crate::pipeline::convert(&crate::pipeline::ConvertRequest {
                input: &abs,
                output: &out,
                to: crate::target::TargetFormat::Qcow2,
                open: OpenOptions {
                    temp_dir: Some(dir.to_path_buf()),
                    ..req.open.clone()
                },
                size: None,
                force: true,
                digests: Vec::new(),
                block_size: None,
                compress: None,
            })?;
            notes.push(format!(
                "{} is not a format QEMU opens: unpacked by onramp into a temporary qcow2",
                format.name()
            ));
            (out, "qcow2")
        }
    };
    let overlay = dir.join("overlay.qcow2");
    let o = Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", backing_fmt, "-b"])
        .arg(&backing)
        .arg(&overlay)
        .output()
        .map_err(|e| env_error(format!("cannot run qemu-img: {e}")))?;
    if !o.status.success() {
        return Err(env_error(format!(
            "qemu-img create overlay: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }

    let direct = if path == BootPath::Direct {
        let g = g
            .as_ref()
            .ok_or_else(|| Error::unsupported("direct kernel boot needs a Linux guest"))?;
        Some(prepare_direct(g, &insp, dir, req.append.as_deref())?)
    } else {
        None
    };

    let log = dir.join("console.log");
    let mut base: Vec<String> = vec![
        "-machine".into(),
        "q35".into(),
        "-m".into(),
        req.memory_mib.to_string(),
        "-smp".into(),
        req.cpus.max(1).to_string(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", log.display()),
        "-drive".into(),
        format!(
            "file={},if=virtio,format=qcow2,cache=unsafe",
            drive_path(&overlay)
        ),
        "-device".into(),
        "virtio-rng-pci".into(),
    ];
    if path == BootPath::Uefi {
        if let Some((code, vars)) = &ovmf {
            let vars_copy = dir.join("OVMF_VARS.fd");
            std::fs::copy(vars, &vars_copy).map_err(|e| Error::io("copy OVMF vars", e))?;
            base.extend([
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    drive_path(code)
                ),
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    drive_path(&vars_copy)
                ),
            ]);
        }
    }
    if let Some(d) = &direct {
        base.extend([
            "-kernel".into(),
            d.kernel.display().to_string(),
            "-append".into(),
            d.cmdline.clone(),
        ]);
        if let Some(i) = &d.initrd {
            base.extend(["-initrd".into(), i.display().to_string()]);
        }
    }

    let kvm_ok = kvm_available();
    let mut accels: Vec<&str> = match req.accel {
        Accel::Tcg => vec!["tcg"],
        Accel::Kvm => {
            if !kvm_ok {
                return Err(env_error("--accel kvm: /dev/kvm is not usable"));
            }
            vec!["kvm"]
        }
        Accel::Auto if kvm_ok => vec!["kvm", "tcg"],
        Accel::Auto => {
            notes.push("/dev/kvm not usable: TCG (software emulation)".into());
            vec!["tcg"]
        }
    };
    let mut final_accel = "tcg";
    let mut last: Option<(Run, Vec<String>)> = None;
    while !accels.is_empty() {
        let accel = accels.remove(0);
        let mut args = base.clone();
        args.extend(["-accel".into(), accel.into(), "-cpu".into()]);
        args.push(if accel == "kvm" { "host" } else { "max" }.into());
        checks.reset();
        let run = run_qemu(
            &args,
            &qemu,
            &log,
            dir,
            req.timeout,
            req.settle,
            &mut checks,
        )?;
        final_accel = accel;
        let early_kvm_death = accel == "kvm"
            && !accels.is_empty()
            && matches!(run.outcome, Outcome::Exited(_))
            && run.console_bytes == 0
            && run.seconds < KVM_EARLY_FAILURE.as_secs_f64();
        let mut cmd = vec![qemu.display().to_string()];
        cmd.extend(args);
        if early_kvm_death {
            let why = run
                .stderr
                .lines()
                .last()
                .unwrap_or("no message")
                .to_string();
            notes.push(format!(
                "KVM run failed before the guest printed anything ({why}): retrying under TCG"
            ));
            last = Some((run, cmd));
            continue;
        }
        last = Some((run, cmd));
        break;
    }
    let Some((run, cmd)) = last else {
        return Err(env_error("no accelerator to run QEMU with"));
    };
    if let Some(dest) = &req.console_log {
        std::fs::copy(&log, dest).map_err(|e| Error::io("copy console log", e).at(dest))?;
    }
    let (passed, failure, timed_out) = match &run.outcome {
        Outcome::Passed => (true, None, false),
        Outcome::CheckFailed(f) => (false, Some(f.clone()), false),
        Outcome::Exited(f) => {
            let err = run.stderr.trim();
            let f = if err.is_empty() {
                f.clone()
            } else {
                format!("{f}: {}", err.lines().last().unwrap_or(""))
            };
            (false, Some(f), false)
        }
        Outcome::TimedOut => (
            false,
            Some(format!(
                "timed out after {} s before every check passed",
                req.timeout.as_secs()
            )),
            true,
        ),
    };
    let failure = failure.map(|f| {
        let missing = checks.missing();
        if missing.is_empty() {
            f
        } else {
            format!("{f}; not seen: {}", missing.join(", "))
        }
    });
    Ok(Report {
        image: req.image.clone(),
        passed,
        failure,
        accel: final_accel.into(),
        boot_path: match path {
            BootPath::Bios | BootPath::Auto => "bios",
            BootPath::Uefi => "uefi",
            BootPath::Direct => "direct",
        }
        .into(),
        kernel: direct.as_ref().map(|d| d.version.clone()),
        cmdline: direct.as_ref().map(|d| d.cmdline.clone()),
        seconds: run.seconds,
        timed_out,
        checks: checks.list(),
        notes,
        qemu_command: cmd,
        console_tail: tail(&log, TAIL_LINES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(version_cmp("5.10.0", "6.1.0"), Less);
        assert_eq!(version_cmp("6.1.0", "6.1.0"), Equal);
    }

    #[test]
    fn ansi_and_cr_are_removed() {
        assert_eq!(
            clean_line(b"[\x1b[0;32m  OK  \x1b[0m] Started foo.service.\r"),
            "[  OK  ] Started foo.service."
        );
    }

    #[test]
    fn drive_paths_escape_commas() {
        assert_eq!(drive_path(Path::new("/a,b")), "/a,,b");
    }
}
