//! Disk rules: judged on the VHD footer read straight from the file (never
//! trusting format probing), or — for any other input — on the Azure fixed VHD
//! onramp would write from it, which the report says.

use super::{Facts, Outcome, Rule, Severity};
use crate::block::BlockSource;
use crate::error::{IoContext, Result};
use crate::source::vhd::footer::{checksum, DiskType, Footer, COOKIE, FOOTER_SIZE};
use crate::target::azure_vhd::round_up_mib;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
const AZ_DOC: &str =
    "https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic";
const AZ_VHD_DOC: &str =
    "https://learn.microsoft.com/azure/virtual-machines/windows/prepare-for-upload-vhd-image";

/// What the disk looks like to the cloud.
#[derive(Debug, Clone, Default)]
pub struct DiskFacts {
    /// Input format as detected.
    pub input_format: String,
    /// True when the rules read the file's own VHD footer; false when they
    /// judge the azure-vhd onramp would write.
    pub from_file_footer: bool,
    /// The 8-byte cookie found at the footer position.
    pub cookie_ok: bool,
    /// The footer's checksum verifies.
    pub checksum_ok: bool,
    /// disk_type field (2 fixed).
    pub disk_type: u32,
    /// current_size field.
    pub current_size: u64,
    /// File length.
    pub file_size: u64,
}

impl DiskFacts {
    /// Read the footer of `path` directly when it is VHD-like (named `.vhd`, or
    /// a "conectix" cookie at its start or end); `None` otherwise.
    pub fn from_vhd_file(path: &Path) -> Result<Option<DiskFacts>> {
        let f = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let len = f.metadata().ctx(|| "stat".into())?.len();
        let mut b = [0u8; FOOTER_SIZE];
        let mut head = [0u8; 8];
        let tail_cookie =
            len >= 512 && f.read_exact_at(&mut b, len - 512).is_ok() && &b[..8] == COOKIE;
        let head_cookie = f.read_exact_at(&mut head, 0).is_ok() && &head == COOKIE;
        let named_vhd = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("vhd"));
        if tail_cookie || head_cookie || named_vhd {
            let stored = u32::from_be_bytes([b[64], b[65], b[66], b[67]]);
            let parsed = Footer::parse(&b, len.saturating_sub(512)).ok();
            return Ok(Some(DiskFacts {
                input_format: "vhd".to_string(),
                from_file_footer: true,
                cookie_ok: &b[..8] == COOKIE,
                checksum_ok: stored == checksum(&b),
                disk_type: u32::from_be_bytes([b[60], b[61], b[62], b[63]]),
                current_size: parsed.map_or_else(
                    || u64::from_be_bytes(b[48..56].try_into().unwrap_or([0; 8])),
                    |p| p.current_size,
                ),
                file_size: len,
            }));
        }
        Ok(None)
    }

    /// The facts of the Azure fixed VHD onramp would write from `src`.
    pub fn projected(src: &dyn BlockSource) -> Result<DiskFacts> {
        let size = round_up_mib(src.size())?;
        Ok(DiskFacts {
            input_format: src.format_name().to_string(),
            from_file_footer: false,
            cookie_ok: true,
            checksum_ok: true,
            disk_type: DiskType::Fixed.code(),
            current_size: size,
            file_size: size + 512,
        })
    }

    /// What the report says the disk rules were judged on.
    pub fn judged_on(&self) -> String {
        if self.from_file_footer {
            "disk rules judged on the file's own VHD footer".into()
        } else {
            format!(
                "input is {}: disk rules judged on the Azure fixed VHD `onramp convert --to azure-vhd` would write",
                self.input_format
            )
        }
    }
}

fn human(n: u64) -> String {
    if n >= TIB {
        format!("{:.2} TiB ({n} bytes)", n as f64 / TIB as f64)
    } else {
        format!("{:.1} MiB ({n} bytes)", n as f64 / MIB as f64)
    }
}

fn cookie(f: &Facts) -> Outcome {
    if f.disk.cookie_ok {
        Outcome::Pass("footer cookie is \"conectix\"".into())
    } else {
        Outcome::Fail(
            "the last 512 bytes are not a VHD footer (no \"conectix\" cookie): this is not a fixed VHD".into(),
        )
    }
}
fn fixed(f: &Facts) -> Outcome {
    match (f.disk.cookie_ok, f.disk.disk_type) {
        (false, _) => Outcome::Skip("no VHD footer".into()),
        (true, 2) => Outcome::Pass("disk type 2 (fixed)".into()),
        (true, t) => Outcome::Fail(format!(
            "disk type is {t} ({}); Azure only takes fixed VHDs (type 2)",
            match t {
                3 => "dynamic",
                4 => "differencing",
                _ => "unknown",
            }
        )),
    }
}
fn footer_checksum(f: &Facts) -> Outcome {
    match (f.disk.cookie_ok, f.disk.checksum_ok) {
        (false, _) => Outcome::Skip("no VHD footer".into()),
        (true, true) => Outcome::Pass("footer checksum verifies".into()),
        (true, false) => Outcome::Fail("footer checksum does not verify".into()),
    }
}
fn mib_aligned(f: &Facts) -> Outcome {
    let s = f.disk.current_size;
    if !f.disk.cookie_ok {
        Outcome::Skip("no VHD footer".into())
    } else if s.is_multiple_of(MIB) {
        Outcome::Pass(format!(
            "virtual size {} is a whole number of MiB",
            human(s)
        ))
    } else {
        Outcome::Fail(format!(
            "virtual size {s} bytes is not a whole number of MiB (next: {} bytes)",
            s.div_ceil(MIB) * MIB
        ))
    }
}
fn file_size(f: &Facts) -> Outcome {
    let d = &f.disk;
    if !d.cookie_ok || d.disk_type != 2 {
        return Outcome::Skip("not a fixed VHD".into());
    }
    if Some(d.file_size) == d.current_size.checked_add(512) {
        Outcome::Pass("file size is virtual size + 512".into())
    } else {
        Outcome::Fail(format!(
            "file is {} bytes but the footer says {} + 512",
            d.file_size, d.current_size
        ))
    }
}
fn min_size(f: &Facts) -> Outcome {
    let s = f.disk.current_size;
    if s >= 20 * MIB {
        Outcome::Pass(format!("{} >= 20 MiB", human(s)))
    } else {
        Outcome::Fail(format!(
            "virtual size {} is below Azure's 20 MiB minimum",
            human(s)
        ))
    }
}
fn max_size(f: &Facts) -> Outcome {
    let s = f.disk.current_size;
    let (limit, what) = if f.data_disk {
        (32 * TIB, "data disks")
    } else if f.generation == Some(2) {
        (4 * TIB, "generation 2 OS disks")
    } else {
        (2 * TIB, "generation 1 OS disks")
    };
    if s <= limit {
        Outcome::Pass(format!("{} within the limit for {what}", human(s)))
    } else {
        Outcome::Fail(format!(
            "virtual size {} exceeds {} for {what}",
            human(s),
            human(limit)
        ))
    }
}
fn gce_size(f: &Facts) -> Outcome {
    let s = f.disk.current_size;
    if !f.disk.from_file_footer && f.disk.input_format != "raw" {
        Outcome::Pass(
            "`onramp convert --to gce-tar` writes disk.raw rounded up to a whole GiB".into(),
        )
    } else if s.is_multiple_of(1 << 30) {
        Outcome::Pass("disk size is a whole number of GiB".into())
    } else {
        Outcome::Fail(format!(
            "disk size {s} bytes is not a whole number of GiB (GCE's disk.raw rule)"
        ))
    }
}
fn aws_format(f: &Facts) -> Outcome {
    match f.disk.input_format.as_str() {
        "vhd" | "vhdx" | "vmdk" | "raw" | "ova" => Outcome::Pass(format!(
            "{} is a format VM Import accepts",
            f.disk.input_format
        )),
        other => Outcome::Fail(format!(
            "{other} is not a format VM Import accepts (VHD, VHDX, VMDK streamOptimized, raw, OVA)"
        )),
    }
}

/// The disk rules.
pub const DISK_RULES: &[Rule] = &[
    Rule {
        id: "azure.disk.vhd-cookie",
        severity: Severity::Error,
        title: "The file ends with a VHD footer",
        why: "Azure reads the disk from the 512-byte VHD footer at the end of the page blob.",
        fix: "Convert with `onramp convert IN OUT --to azure-vhd`.",
        doc: AZ_VHD_DOC,
        profiles: &["azure"],
        check: cookie,
    },
    Rule {
        id: "azure.disk.fixed",
        severity: Severity::Error,
        title: "The VHD is fixed (disk type 2)",
        why: "Azure does not accept dynamic or differencing VHDs.",
        fix: "Convert with `onramp convert IN OUT --to azure-vhd`.",
        doc: AZ_VHD_DOC,
        profiles: &["azure"],
        check: fixed,
    },
    Rule {
        id: "azure.disk.footer-checksum",
        severity: Severity::Error,
        title: "The VHD footer checksum verifies",
        why: "A footer with a bad checksum is rejected or misread.",
        fix: "Re-create the VHD with `onramp convert --to azure-vhd`.",
        doc: AZ_VHD_DOC,
        profiles: &["azure"],
        check: footer_checksum,
    },
    Rule {
        id: "azure.disk.size-mib-aligned",
        severity: Severity::Error,
        title: "The virtual size is a whole number of MiB",
        why: "Azure rejects VHDs whose virtual size is not aligned to 1 MiB.",
        fix: "`onramp convert --to azure-vhd` rounds the size up to a whole MiB (or pass --size).",
        doc: AZ_DOC,
        profiles: &["azure"],
        check: mib_aligned,
    },
    Rule {
        id: "azure.disk.file-size",
        severity: Severity::Error,
        title: "The file size is the virtual size plus the 512-byte footer",
        why: "A fixed VHD is the raw disk followed by its footer; anything else is truncated or padded.",
        fix: "Re-create the VHD with `onramp convert --to azure-vhd`.",
        doc: AZ_VHD_DOC,
        profiles: &["azure"],
        check: file_size,
    },
    Rule {
        id: "azure.disk.min-size",
        severity: Severity::Error,
        title: "The disk is at least 20 MiB",
        why: "Azure's smallest managed disk is 20 MiB.",
        fix: "Grow it: `onramp convert --to azure-vhd --size 20M` (or larger).",
        doc: AZ_DOC,
        profiles: &["azure"],
        check: min_size,
    },
    Rule {
        id: "azure.disk.max-size",
        severity: Severity::Error,
        title: "The disk is within Azure's size limit",
        why: "OS disks are limited to 2 TiB (generation 1) or 4 TiB (generation 2); data disks to 32 TiB.",
        fix: "Shrink the filesystem and partitions in the guest before converting, or use a data disk.",
        doc: AZ_DOC,
        profiles: &["azure"],
        check: max_size,
    },
    Rule {
        id: "gce.disk.size-gib",
        severity: Severity::Error,
        title: "disk.raw is a whole number of GiB",
        why: "Compute Engine imports raw disks whose size is a multiple of 1 GB (GiB).",
        fix: "`onramp convert --to gce-tar` grows the disk to the next whole GiB.",
        doc: "https://cloud.google.com/compute/docs/import/import-existing-image",
        profiles: &["gce"],
        check: gce_size,
    },
    Rule {
        id: "aws.disk.format",
        severity: Severity::Error,
        title: "The image is in a format VM Import accepts",
        why: "AWS VM Import takes VHD, VHDX, VMDK (streamOptimized), raw and OVA.",
        fix: "Convert with `onramp convert --to vmdk-stream`.",
        doc: "https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html",
        profiles: &["aws"],
        check: aws_format,
    },
];
