//! Partition-layout rules: which VM generation the layout boots in, whether
//! every partition lies inside the disk, and whether the GPT backup header is
//! at the end of the disk (it is not after a plain resize). The facts are read
//! with [`crate::partition::scan`] plus the raw MBR entries and primary GPT
//! header (so a partition past the end is seen even when the scan refuses it).

use super::{Facts, Outcome, Rule, Severity};
use crate::block::BlockSource;
use crate::partition::{self, Scheme};
use std::sync::Arc;

const GEN_DOC: &str = "https://learn.microsoft.com/azure/virtual-machines/generation-2";
const AWS_BOOT_DOC: &str =
    "https://docs.aws.amazon.com/vm-import/latest/userguide/prerequisites.html";
const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";

/// What the partition table says.
#[derive(Debug, Clone, Default)]
pub struct LayoutFacts {
    /// Table scheme (GPT, MBR, none).
    pub scheme: Option<Scheme>,
    /// The scan failed: why.
    pub error: Option<String>,
    /// An EFI system partition exists.
    pub has_esp: bool,
    /// A BIOS path exists: an MBR disk, a GPT BIOS boot partition, or a hybrid MBR.
    pub bios_bootable: bool,
    /// The MBR of a GPT disk has real entries besides 0xEE.
    pub hybrid_mbr: bool,
    /// Disk size in bytes (of the source, before any rounding).
    pub disk_size: u64,
    /// Partitions (name, first byte, end byte) whose end lies past the disk.
    pub outside: Vec<(String, u64, u64)>,
    /// Primary GPT header's AlternateLBA and the disk's last LBA, when a GPT exists.
    pub gpt_backup: Option<(u64, u64)>,
}

impl LayoutFacts {
    /// Gather from `disk`.
    pub fn gather(disk: &Arc<dyn BlockSource>) -> LayoutFacts {
        let size = disk.size();
        let mut f = LayoutFacts {
            disk_size: size,
            ..LayoutFacts::default()
        };
        // Raw MBR entries (the scan drops a table with an entry past the end).
        let mut s0 = [0u8; 512];
        let mut raw_mbr_parts = 0;
        if disk.read_at(0, &mut s0).is_ok() && s0[510] == 0x55 && s0[511] == 0xAA {
            for i in 0..4usize {
                let e = &s0[446 + 16 * i..446 + 16 * (i + 1)];
                let ptype = e[4];
                let start = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
                let count = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
                if ptype == 0 || count == 0 || ptype == 0xEE {
                    continue;
                }
                raw_mbr_parts += 1;
                let (a, b) = (start * 512, (start + count) * 512);
                if b > size {
                    f.outside.push((format!("MBR partition {}", i + 1), a, b));
                }
            }
        }
        // Primary GPT header at LBA 1 (512-byte sectors).
        let mut h = [0u8; 512];
        if disk.read_at(512, &mut h).is_ok() && &h[..8] == b"EFI PART" {
            let alt = u64::from_le_bytes(h[32..40].try_into().unwrap_or([0; 8]));
            f.gpt_backup = Some((alt, (size / 512).saturating_sub(1)));
        }
        match partition::scan(disk) {
            Ok(l) => {
                f.scheme = Some(l.scheme);
                f.has_esp = l.has_esp();
                f.hybrid_mbr = l.hybrid_mbr;
                f.bios_bootable = match l.scheme {
                    Scheme::Mbr => true,
                    Scheme::Gpt => {
                        l.hybrid_mbr || l.volumes.iter().any(|v| v.type_id == BIOS_BOOT_GUID)
                    }
                    _ => false,
                };
                for v in &l.volumes {
                    if v.scheme == Scheme::Gpt && v.start_bytes + v.size_bytes > size {
                        f.outside.push((
                            format!("GPT partition {}", v.index),
                            v.start_bytes,
                            v.start_bytes + v.size_bytes,
                        ));
                    }
                }
            }
            Err(e) => {
                f.error = Some(e.to_string());
                if raw_mbr_parts > 0 {
                    f.scheme = Some(Scheme::Mbr);
                    f.bios_bootable = true;
                }
            }
        }
        f
    }

    /// Generations the layout boots in.
    pub fn generations(&self) -> Vec<u8> {
        let mut g = Vec::new();
        if self.bios_bootable {
            g.push(1);
        }
        if self.has_esp && self.scheme == Some(Scheme::Gpt) {
            g.push(2);
        }
        g
    }
}

fn layout(f: &Facts) -> Result<&LayoutFacts, Outcome> {
    match &f.layout {
        None => Err(Outcome::Skip("the disk could not be opened".into())),
        Some(l) if l.scheme.is_none() || l.scheme == Some(Scheme::None) => {
            Err(Outcome::Skip(match &l.error {
                Some(e) => format!("no partition table could be read: {e}"),
                None => "no partition table: not a bootable OS disk layout".into(),
            }))
        }
        Some(l) => Ok(l),
    }
}

fn generation(f: &Facts) -> Outcome {
    if f.data_disk {
        return Outcome::Skip("data disk".into());
    }
    let l = match layout(f) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let gens = l.generations();
    let what = match (l.scheme, l.has_esp, l.bios_bootable, l.hybrid_mbr) {
        (_, _, _, true) => "hybrid MBR/GPT",
        (Some(Scheme::Mbr), _, _, _) => "MBR (BIOS boot)",
        (_, true, true, _) => "GPT with an ESP and a BIOS boot partition",
        (_, true, false, _) => "GPT with an EFI system partition",
        (_, false, true, _) => "GPT with a BIOS boot partition",
        _ => "GPT without an EFI system partition or BIOS boot partition",
    };
    if gens.is_empty() {
        return Outcome::Fail(format!(
            "{what}: boots in neither generation 1 (BIOS) nor generation 2 (UEFI)"
        ));
    }
    let list = gens
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    match f.generation {
        Some(g) if !gens.contains(&g) => Outcome::Fail(format!(
            "--generation {g} was requested but the layout is {what}, which boots in generation {list} only"
        )),
        _ => Outcome::Pass(format!("{what}: boots in generation {list}")),
    }
}

fn inside(f: &Facts) -> Outcome {
    let l = match &f.layout {
        Some(l) => l,
        None => return Outcome::Skip("the disk could not be opened".into()),
    };
    if l.outside.is_empty() {
        return Outcome::Pass("every partition ends inside the disk".into());
    }
    let list: Vec<String> = l
        .outside
        .iter()
        .map(|(n, a, b)| format!("{n} spans bytes {a}..{b}"))
        .collect();
    Outcome::Fail(format!(
        "{} but the disk is {} bytes",
        list.join("; "),
        l.disk_size
    ))
}

fn gpt_backup(f: &Facts) -> Outcome {
    match f.layout.as_ref().and_then(|l| l.gpt_backup) {
        None => Outcome::Skip("no GPT".into()),
        Some((alt, last)) if alt == last => {
            Outcome::Pass(format!("GPT backup header at the last LBA ({last})"))
        }
        Some((alt, last)) => Outcome::Fail(format!(
            "the primary GPT header puts its backup at LBA {alt} but the disk's last LBA is {last} (the disk was resized)"
        )),
    }
}

fn aws_boot(f: &Facts) -> Outcome {
    let l = match layout(f) {
        Ok(l) => l,
        Err(o) => return o,
    };
    let mut modes = Vec::new();
    if l.bios_bootable {
        modes.push("BIOS");
    }
    if l.has_esp {
        modes.push("UEFI");
    }
    if modes.is_empty() {
        Outcome::Fail("no BIOS boot path (MBR or GPT BIOS boot partition) and no EFI system partition: VM Import can boot it neither way".into())
    } else {
        Outcome::Pass(format!("boots with {}", modes.join(" and ")))
    }
}

/// The layout rules.
pub const LAYOUT_RULES: &[Rule] = &[
    Rule {
        id: "azure.disk.generation",
        severity: Severity::Error,
        title: "The partition layout boots in the VM generation used",
        why: "Generation 1 VMs boot BIOS (MBR, or GPT with a BIOS boot partition); generation 2 VMs boot UEFI from a GPT EFI system partition. A hybrid layout boots in both. A mismatch gives a VM that never starts.",
        fix: "Pass the `--generation` the layout boots in (1 for MBR/BIOS, 2 for GPT+ESP), or rebuild the image with the other boot mode.",
        doc: GEN_DOC,
        profiles: &["azure"],
        check: generation,
    },
    Rule {
        id: "disk.partitions-inside",
        severity: Severity::Error,
        title: "Every partition lies inside the disk",
        why: "A partition ending past the disk (a truncated copy, a shrunk disk) loses data and the guest may not boot.",
        fix: "Convert from the full source image (`onramp convert`), or grow the disk with `onramp convert --size` to cover the partitions.",
        doc: "https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic#resizing-vhds",
        profiles: &["azure", "gce", "aws"],
        check: inside,
    },
    Rule {
        id: "disk.gpt-backup-at-end",
        severity: Severity::Warning,
        title: "The GPT backup header is at the end of the disk",
        why: "After a resize the backup GPT stays at the old end; firmware and tools then see a damaged table and the new space cannot be partitioned.",
        fix: "Move it with `sgdisk -e DISK` on the raw image before converting (onramp does not rewrite partition tables).",
        doc: "https://learn.microsoft.com/azure/virtual-machines/linux/expand-disks",
        profiles: &["azure", "gce", "aws"],
        check: gpt_backup,
    },
    Rule {
        id: "aws.disk.boot-mode",
        severity: Severity::Error,
        title: "The disk boots in a mode VM Import takes (BIOS or UEFI)",
        why: "VM Import boots imported disks with legacy BIOS (MBR, or GPT with a BIOS boot partition) or UEFI (GPT with an EFI system partition).",
        fix: "Rebuild the image with an EFI system partition or a BIOS boot loader; pass `--boot-mode uefi` to `aws ec2 import-image` for UEFI images.",
        doc: AWS_BOOT_DOC,
        profiles: &["aws"],
        check: aws_boot,
    },
];
