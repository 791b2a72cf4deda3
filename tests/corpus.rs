//! Malformed-image corpus (issue 12): images made by qemu-img, mutated by a
//! declarative table (format, field, where, new value, expected outcome), plus
//! truncation at every structure boundary and bit flips in checksummed
//! structures (VHD footer, VHDX headers and region tables, GPT, regf base
//! block).
//!
//! Every case runs `onramp info` and `onramp convert --to raw` under
//! `prlimit --as=512MiB` and `timeout`: the result is either a clean error
//! (exit 2, one line on stderr) or a correct conversion (byte-identical to
//! `qemu-img convert` when qemu-img also succeeds); never a signal, a panic or a
//! hang. qemu-img runs on the same file and its behaviour is a column of
//! docs/corpus.md, which this test regenerates and compares (set
//! `ONRAMP_BLESS=1` to rewrite it).
mod common;

use common::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Address space limit for every onramp run (512 MiB).
const AS_LIMIT: &str = "--as=536870912";
/// Seconds before a run counts as a hang (generous: the machine may be loaded).
const TIMEOUT_SECS: &str = "30";
/// Virtual size of the seed images.
const SEED_SIZE: u64 = 4 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fmt {
    Qcow2,
    Vhd,
    VhdFixed,
    Vhdx,
    Gpt,
}

impl Fmt {
    /// onramp's `--from` name.
    fn onramp(self) -> &'static str {
        match self {
            Fmt::Qcow2 => "qcow2",
            Fmt::Vhd | Fmt::VhdFixed => "vhd",
            Fmt::Vhdx => "vhdx",
            Fmt::Gpt => "raw",
        }
    }
    /// qemu-img's `-f` name.
    fn qemu(self) -> &'static str {
        match self {
            Fmt::Qcow2 => "qcow2",
            Fmt::Vhd | Fmt::VhdFixed => "vpc",
            Fmt::Vhdx => "vhdx",
            Fmt::Gpt => "raw",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Fmt::Qcow2 => "qcow2",
            Fmt::Vhd => "vhd (dynamic)",
            Fmt::VhdFixed => "vhd (fixed)",
            Fmt::Vhdx => "vhdx",
            Fmt::Gpt => "raw + GPT",
        }
    }
}

/// A place in the seed, found from the seed's own structures.
#[derive(Clone, Copy, Debug)]
enum Anchor {
    /// Byte 0.
    Start,
    /// End of file.
    End,
    /// qcow2 L1 table (header `l1_table_offset`).
    Qcow2L1,
    /// qcow2 refcount table (header `refcount_table_offset`).
    Qcow2Refcount,
    /// The L2 table L1[0] points at.
    Qcow2L2,
    /// The first data cluster L2[0] points at.
    Qcow2Data,
    /// VHD dynamic disk header (footer `data_offset`).
    VhdDyn,
    /// VHD block allocation table (dynamic header `table_offset`).
    VhdBat,
    /// VHD first data block (BAT[0] sector * 512).
    VhdBlock0,
    /// VHDX metadata region (second region table entry).
    VhdxMeta,
    /// VHDX BAT region (first region table entry).
    VhdxBat,
}

/// A value to store.
#[derive(Clone, Copy, Debug)]
enum Val {
    Be64(u64),
    Be32(u32),
    Byte(u8),
    /// The big-endian u64 offset of an anchor, OR'ed with flags.
    AnchorBe64(Anchor, u64),
}

/// One step of a mutation.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Store a value at anchor + delta.
    Set(Anchor, i64, Val),
    /// Flip one bit (0..8) of the byte at anchor + delta.
    Flip(Anchor, i64, u8),
    /// Cut the file at anchor + delta.
    Truncate(Anchor, i64),
    /// Recompute the VHD footer checksum of the 512-byte footer at anchor + delta.
    VhdFooterSum(Anchor, i64),
}

/// What onramp must do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// Convert succeeds; identical to qemu-img's output when qemu-img succeeds.
    Ok,
    /// Convert exits 2 with one line naming the problem.
    Error,
}

/// One corpus case.
struct Case {
    fmt: Fmt,
    /// Structure and field changed, as the spec names them.
    field: &'static str,
    ops: &'static [Op],
    expect: Expect,
}

use Anchor::*;
use Expect::{Error as Bad, Ok as Good};
use Op::*;
use Val::*;

/// The declarative mutation table.
const MUTATIONS: &[Case] = &[
    // qcow2 header (qcow2.txt "Header"): big-endian fields.
    Case {
        fmt: Fmt::Qcow2,
        field: "header magic = 0",
        ops: &[Set(Start, 0, Be32(0))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header version = 1",
        ops: &[Set(Start, 4, Be32(1))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header version = 4",
        ops: &[Set(Start, 4, Be32(4))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header backing_file_offset past EOF",
        ops: &[Set(Start, 8, Be64(1 << 40)), Set(Start, 16, Be32(16))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header backing_file_size = 4096",
        ops: &[Set(Start, 8, Be64(512)), Set(Start, 16, Be32(4096))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header cluster_bits = 8",
        ops: &[Set(Start, 20, Be32(8))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header cluster_bits = 22",
        ops: &[Set(Start, 20, Be32(22))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header cluster_bits = 63",
        ops: &[Set(Start, 20, Be32(63))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header size = 2^63",
        ops: &[Set(Start, 24, Be64(1 << 63))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header size = 0 (a valid empty disk)",
        ops: &[Set(Start, 24, Be64(0))],
        expect: Good,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header crypt_method = 1 (AES)",
        ops: &[Set(Start, 32, Be32(1))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header l1_size = 0",
        ops: &[Set(Start, 36, Be32(0))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header l1_size = 2^31",
        ops: &[Set(Start, 36, Be32(1 << 31))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header l1_table_offset unaligned",
        ops: &[Set(Start, 40, Be64(0x10001))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header l1_table_offset past EOF",
        ops: &[Set(Start, 40, Be64(1 << 40))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header refcount_table_offset past EOF",
        ops: &[Set(Start, 48, Be64(1 << 40))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header refcount_table_clusters = 2^31",
        ops: &[Set(Start, 56, Be32(1 << 31))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header nb_snapshots = 2^31",
        ops: &[Set(Start, 60, Be32(1 << 31)), Set(Start, 64, Be64(1 << 40))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header incompatible_features unknown bit",
        ops: &[Set(Start, 72, Be64(1 << 40))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header incompatible_features dirty (readable, like qemu)",
        ops: &[Set(Start, 72, Be64(1))],
        expect: Good,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header refcount_order = 7",
        ops: &[Set(Start, 96, Be32(7))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "header header_length = 8",
        ops: &[Set(Start, 100, Be32(8))],
        expect: Bad,
    },
    // L1 and L2 entries (qcow2.txt "Cluster mapping").
    Case {
        fmt: Fmt::Qcow2,
        field: "L1[0] out of file",
        ops: &[Set(Qcow2L1, 0, Be64(0x8000_0000_4000_0000))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L1[0] self-referencing (points at the L1 table)",
        ops: &[Set(Qcow2L1, 0, AnchorBe64(Qcow2L1, 1 << 63))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L1[0] = COPIED with offset 0 (unallocated: zeros)",
        ops: &[Set(Qcow2L1, 0, Be64(1 << 63))],
        expect: Good,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L1[0] unaligned",
        ops: &[Set(Qcow2L1, 0, AnchorBe64(Qcow2L2, (1 << 63) | 0x200))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L1[0] reserved bits set",
        ops: &[Set(Qcow2L1, 0, AnchorBe64(Qcow2L2, (1 << 63) | (1 << 60)))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L2[0] out of file",
        ops: &[Set(Qcow2L2, 0, Be64(0x8000_0000_4000_0000))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L2[0] self-referencing (points at its L2 table)",
        ops: &[Set(Qcow2L2, 0, AnchorBe64(Qcow2L2, 1 << 63))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L2[0] = COPIED with offset 0 (unallocated: zeros)",
        ops: &[Set(Qcow2L2, 0, Be64(1 << 63))],
        expect: Good,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L2[0] compressed, size past EOF",
        ops: &[Set(Qcow2L2, 0, Be64((1 << 62) | (0x3FFF << 48) | 0x30000))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "L2[0] zero flag (valid, reads zeros)",
        ops: &[Set(Qcow2L2, 7, Byte(1))],
        expect: Good,
    },
    Case {
        fmt: Fmt::Qcow2,
        field: "refcount table[0] past EOF",
        ops: &[Set(Qcow2Refcount, 0, Be64(1 << 40))],
        expect: Bad,
    },
    // VHD footer (VHD spec "Hard Disk Footer Format") and dynamic header.
    Case {
        fmt: Fmt::Vhd,
        field: "trailing footer disagrees (current_size changed, checksum fixed)",
        ops: &[Set(End, -512 + 48, Be64(8 << 20)), VhdFooterSum(End, -512)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "trailing footer checksum",
        ops: &[Flip(End, -512 + 64, 0)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "footer copy checksum",
        ops: &[Flip(Start, 64, 0)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "both footers cookie",
        ops: &[Set(Start, 0, Byte(b'X')), Set(End, -512, Byte(b'X'))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "differencing disk, parent missing",
        ops: &[
            Set(Start, 60, Be32(4)),
            VhdFooterSum(Start, 0),
            Set(End, -512 + 60, Be32(4)),
            VhdFooterSum(End, -512),
        ],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "footer disk_type = 5",
        ops: &[
            Set(Start, 60, Be32(5)),
            VhdFooterSum(Start, 0),
            Set(End, -512 + 60, Be32(5)),
            VhdFooterSum(End, -512),
        ],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "footer data_offset past EOF",
        ops: &[
            Set(Start, 16, Be64(1 << 40)),
            VhdFooterSum(Start, 0),
            Set(End, -512 + 16, Be64(1 << 40)),
            VhdFooterSum(End, -512),
        ],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "dynamic header checksum",
        ops: &[Flip(VhdDyn, 36, 0)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "dynamic header cookie",
        ops: &[Set(VhdDyn, 0, Byte(b'X'))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "BAT[0] out of file",
        ops: &[Set(VhdBat, 0, Be32(0x0100_0000))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "BAT[0] points at the footer copy",
        ops: &[Set(VhdBat, 0, Be32(0))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhd,
        field: "BAT[0] points at the BAT",
        ops: &[Set(VhdBat, 0, Be32(3))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::VhdFixed,
        field: "footer checksum",
        ops: &[Flip(End, -512 + 64, 3)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::VhdFixed,
        field: "footer current_size > file (checksum fixed)",
        ops: &[Set(End, -512 + 48, Be64(64 << 20)), VhdFooterSum(End, -512)],
        expect: Bad,
    },
    // VHDX (MS-VHDX 2.2 headers, 2.2.3 region table).
    Case {
        fmt: Fmt::Vhdx,
        field: "file identifier signature",
        ops: &[Set(Start, 0, Byte(b'X'))],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "header 1 checksum (header 2 still valid)",
        ops: &[Flip(Start, 0x10000 + 4, 0)],
        expect: Good,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "header 2 checksum (header 1 still valid)",
        ops: &[Flip(Start, 0x20000 + 4, 0)],
        expect: Good,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "both headers checksum",
        ops: &[Flip(Start, 0x10000 + 4, 0), Flip(Start, 0x20000 + 4, 0)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "region table 1 checksum (table 2 still valid)",
        ops: &[Flip(Start, 0x30000 + 4, 0)],
        expect: Good,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "both region tables checksum",
        ops: &[Flip(Start, 0x30000 + 4, 0), Flip(Start, 0x40000 + 4, 0)],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "BAT entry 0 out of file",
        ops: &[
            Set(VhdxBat, 0, Byte(6)),
            Set(VhdxBat, 2, Byte(0xF0)),
            Set(VhdxBat, 4, Byte(0xFF)),
        ],
        expect: Bad,
    },
    Case {
        fmt: Fmt::Vhdx,
        field: "metadata region bytes",
        ops: &[Set(VhdxMeta, 0, Be64(0))],
        expect: Bad,
    },
    // GPT (UEFI 2.10 5.3): the primary header is CRC-protected; a backup exists.
    Case {
        fmt: Fmt::Gpt,
        field: "primary GPT header CRC (backup valid)",
        ops: &[Flip(Start, 512 + 16, 0)],
        expect: Good,
    },
    Case {
        fmt: Fmt::Gpt,
        field: "primary GPT entry array CRC (backup valid)",
        ops: &[Flip(Start, 1024, 0)],
        expect: Good,
    },
];

/// Structure boundaries to truncate at, per format.
/// A qcow2 or VHDX data cluster cut short by the end of the file reads as zeros
/// past the end (qemu's behaviour, kept for compatibility: src/source/qcow2/table.rs
/// `check_data`); every other truncation is an error.
fn boundaries(fmt: Fmt) -> Vec<(&'static str, Anchor, i64)> {
    match fmt {
        Fmt::Qcow2 => vec![
            ("empty file", Start, 0),
            ("inside the magic", Start, 3),
            ("end of the v2 header", Start, 72),
            ("end of the v3 header", Start, 104),
            ("start of the refcount table", Qcow2Refcount, 0),
            ("start of the L1 table", Qcow2L1, 0),
            ("inside the L1 table", Qcow2L1, 4),
            ("start of the L2 table", Qcow2L2, 0),
            ("start of the first data cluster", Qcow2Data, 0),
            ("inside the first data cluster", Qcow2Data, 4096),
            ("last byte", End, -1),
        ],
        Fmt::Vhd => vec![
            ("empty file", Start, 0),
            ("inside the footer copy", Start, 100),
            ("end of the footer copy", Start, 512),
            ("inside the dynamic header", VhdDyn, 512),
            ("start of the BAT", VhdBat, 0),
            ("start of block 0's bitmap", VhdBlock0, 0),
            ("inside block 0", VhdBlock0, 4096),
            ("trailing footer missing", End, -512),
            ("inside the trailing footer", End, -1),
        ],
        Fmt::VhdFixed => vec![
            ("inside the data", Start, 4096),
            ("trailing footer missing", End, -512),
            ("inside the trailing footer", End, -1),
        ],
        Fmt::Vhdx => vec![
            ("empty file", Start, 0),
            ("inside the file identifier", Start, 100),
            ("end of the file identifier", Start, 0x10000),
            ("end of header 1", Start, 0x20000),
            ("end of header 2", Start, 0x30000),
            ("end of region table 1", Start, 0x40000),
            ("end of region table 2", Start, 0x50000),
            ("start of the metadata region", VhdxMeta, 0),
            ("start of the BAT region", VhdxBat, 0),
            ("last byte", End, -1),
        ],
        Fmt::Gpt => vec![],
    }
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Resolve an anchor in the (unmutated) seed.
fn anchor(seed: &[u8], a: Anchor) -> u64 {
    let off_mask = 0x00FF_FFFF_FFFF_FE00u64;
    match a {
        Start => 0,
        End => seed.len() as u64,
        Qcow2L1 => be64(seed, 40),
        Qcow2Refcount => be64(seed, 48),
        Qcow2L2 => be64(seed, be64(seed, 40) as usize) & off_mask,
        Qcow2Data => {
            let l2 = anchor(seed, Qcow2L2) as usize;
            be64(seed, l2) & off_mask
        }
        VhdDyn => be64(seed, 16),
        VhdBat => be64(seed, be64(seed, 16) as usize + 16),
        VhdBlock0 => {
            let bat = anchor(seed, VhdBat) as usize;
            u64::from(be32(seed, bat)) * 512
        }
        VhdxBat | VhdxMeta => {
            // Region table 1 at 192 KiB: 16-byte header, 32-byte entries
            // (GUID, file offset u64 LE, length u32 LE, required u32 LE).
            let rt = 0x30000usize;
            let bat_guid: [u8; 16] = [
                0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD,
                0x4A, 0x08,
            ];
            let count = u32::from_le_bytes(seed[rt + 8..rt + 12].try_into().unwrap()) as usize;
            let want_bat = matches!(a, VhdxBat);
            (0..count)
                .map(|i| rt + 16 + i * 32)
                .find(|&e| (seed[e..e + 16] == bat_guid) == want_bat)
                .map(|e| le64(seed, e + 16))
                .expect("VHDX region entry")
        }
    }
}

fn at(seed: &[u8], a: Anchor, d: i64) -> usize {
    (anchor(seed, a) as i64 + d) as usize
}

/// The VHD footer checksum: ones' complement of the byte sum, checksum field as zero.
fn vhd_checksum(footer: &[u8]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

/// Apply ops to a copy of the seed (anchors resolve in the unmutated seed).
fn mutate(seed: &[u8], ops: &[Op]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for op in ops {
        match *op {
            Set(a, d, v) => {
                let p = at(seed, a, d);
                let bytes: Vec<u8> = match v {
                    Be64(x) => x.to_be_bytes().to_vec(),
                    Be32(x) => x.to_be_bytes().to_vec(),
                    Byte(x) => vec![x],
                    AnchorBe64(an, flags) => (anchor(seed, an) | flags).to_be_bytes().to_vec(),
                };
                b[p..p + bytes.len()].copy_from_slice(&bytes);
            }
            Flip(a, d, bit) => {
                let p = at(seed, a, d);
                b[p] ^= 1 << bit;
            }
            Truncate(a, d) => {
                let p = at(seed, a, d);
                b.truncate(p);
            }
            VhdFooterSum(a, d) => {
                let p = at(seed, a, d);
                let sum = vhd_checksum(&b[p..p + 512]);
                b[p + 64..p + 68].copy_from_slice(&sum.to_be_bytes());
            }
        }
    }
    b
}

/// How one tool run ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stderr: String,
}

/// Run onramp under the address-space limit and a timeout.
fn onramp_limited(args: &[&str]) -> Run {
    let out = Command::new("prlimit")
        .arg(AS_LIMIT)
        .arg("timeout")
        .args(["-s", "KILL", TIMEOUT_SECS])
        .arg(onramp_bin())
        .args(args)
        .output()
        .expect("spawn prlimit");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One case's results, for the table.
struct Row {
    fmt: Fmt,
    case: String,
    expect: Expect,
    info: String,
    onramp: String,
    qemu: String,
    stricter: bool,
}

/// The error text without the path and variable numbers, for the table.
fn summary(stderr: &str, file: &Path) -> String {
    let dir = file.parent().map(s).unwrap_or("/nonexistent");
    let line = stderr
        .lines()
        .next()
        .unwrap_or("")
        .replace(s(file), "IMG")
        .replace(dir, "DIR");
    // Drop the file the error is attributed to (the input, or the output when
    // the corruption surfaced while writing it).
    let line = line
        .trim_start_matches("onramp: ")
        .trim_start_matches("IMG: ")
        .trim_start_matches("DIR/out.raw: ");
    // Keep the kind and the structure (up to " field " / ":" / ","), drop values.
    let cut = [" field ", ": ", ", ", " ("]
        .iter()
        .filter_map(|p| line.find(p).filter(|&i| i > 0))
        .collect::<Vec<_>>();
    let head = match line.find(": ") {
        Some(k) => {
            let rest = &line[k + 2..];
            let end = [" field ", ": ", ", ", " (", " at byte"]
                .iter()
                .filter_map(|p| rest.find(p))
                .min()
                .unwrap_or(rest.len())
                .min(60);
            format!("{}: {}", &line[..k], &rest[..end])
        }
        None => line[..cut.into_iter().min().unwrap_or(line.len()).min(60)].to_string(),
    };
    head.replace('|', "/")
}

/// Run one mutated image through onramp and qemu-img; assert the invariants.
fn run_case(
    dir: &Path,
    reference: &[u8],
    fmt: Fmt,
    name: &str,
    bytes: &[u8],
    expect: Expect,
) -> Row {
    let img = dir.join(format!("case.{}", fmt.onramp()));
    std::fs::write(&img, bytes).unwrap();
    let out = dir.join("out.raw");
    let qout = dir.join("qemu.raw");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&qout);
    let ctx = format!("{} / {name}", fmt.label());

    let info = onramp_limited(&["info", s(&img), "--from", fmt.onramp()]);
    let conv = onramp_limited(&[
        "convert",
        s(&img),
        s(&out),
        "--to",
        "raw",
        "--from",
        fmt.onramp(),
    ]);
    for (what, r) in [("info", &info), ("convert", &conv)] {
        assert!(
            matches!(r.code, Some(0) | Some(2)),
            "{ctx}: onramp {what} must exit 0 or 2 (no signal, panic, hang or I/O error), got {:?}: {}",
            r.code,
            r.stderr
        );
        assert!(
            !r.stderr.contains("panicked"),
            "{ctx}: onramp {what} panicked: {}",
            r.stderr
        );
        if r.code == Some(2) {
            assert_eq!(
                r.stderr.trim_end().lines().count(),
                1,
                "{ctx}: onramp {what} error must be one line: {}",
                r.stderr
            );
        }
    }
    let q = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            TIMEOUT_SECS,
            "qemu-img",
            "convert",
            "-f",
            fmt.qemu(),
            "-O",
            "raw",
        ])
        .arg(&img)
        .arg(&qout)
        .output()
        .unwrap();
    let qemu_ok = q.status.success();

    let (onramp_col, stricter) = if conv.code == Some(0) {
        assert!(!out.exists() || std::fs::metadata(&out).is_ok());
        if qemu_ok {
            let same = std::fs::read(&out).unwrap() == std::fs::read(&qout).unwrap();
            assert!(same, "{ctx}: onramp and qemu-img both succeed but differ");
        }
        ("ok".to_string(), false)
    } else {
        assert!(
            !out.exists(),
            "{ctx}: failed convert left {}",
            out.display()
        );
        (summary(&conv.stderr, &img), qemu_ok)
    };
    let qemu_col = if qemu_ok {
        // What qemu-img produced, against the unmutated image's data.
        let data = std::fs::read(&qout).unwrap();
        if data.len() as u64 == SEED_SIZE && data == reference {
            "ok (same data as the seed)".to_string()
        } else if data.iter().all(|&b| b == 0) {
            "ok: all zeros".to_string()
        } else {
            "ok: converts, data differs from the seed".to_string()
        }
    } else {
        let first = String::from_utf8_lossy(&q.stderr)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let quoted = format!("{}': ", s(&img));
        let msg = match first.rfind(&quoted) {
            Some(i) => &first[i + quoted.len()..],
            None => first.trim_start_matches("qemu-img: "),
        };
        let msg = msg.chars().take(60).collect::<String>();
        format!("error: {}", msg.replace('|', "/"))
    };
    let got = if conv.code == Some(0) {
        Expect::Ok
    } else {
        Expect::Error
    };
    assert_eq!(
        got, expect,
        "{ctx}: expected {expect:?}, onramp convert said {:?}",
        conv.stderr
    );
    let info_col = match info.code {
        Some(0) => "ok".to_string(),
        _ => "error".to_string(),
    };
    Row {
        fmt,
        case: name.to_string(),
        expect,
        info: info_col,
        onramp: onramp_col,
        qemu: qemu_col,
        stricter,
    }
}

/// Make the seeds: a 4 MiB raw with data and holes, converted by qemu-img.
fn seeds(dir: &Path) -> (Vec<u8>, Vec<(Fmt, Vec<u8>)>) {
    let raw = dir.join("seed.raw");
    make_raw_with_holes(&raw, SEED_SIZE);
    let data = std::fs::read(&raw).unwrap();
    let mk = |name: &str, args: &[&str]| -> Vec<u8> {
        let p = dir.join(name);
        let mut a = vec!["convert", "-q", "-f", "raw"];
        a.extend_from_slice(args);
        a.push(s(&raw));
        a.push(s(&p));
        qemu_img(&a);
        std::fs::read(&p).unwrap()
    };
    let qcow2 = mk("s.qcow2", &["-O", "qcow2"]);
    let vhd = mk("s.vhd", &["-O", "vpc", "-o", "force_size=on"]);
    let fixed = mk(
        "f.vhd",
        &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
    );
    let vhdx = mk("s.vhdx", &["-O", "vhdx"]);
    let gpt = dir.join("gpt.raw");
    std::fs::copy(&raw, &gpt).unwrap();
    run(
        "sgdisk",
        &["-q", "-n", "1:2048:4095", "-t", "1:8300", s(&gpt)],
    );
    let gpt = std::fs::read(&gpt).unwrap();
    let seeds = vec![
        (Fmt::Qcow2, qcow2),
        (Fmt::Vhd, vhd),
        (Fmt::VhdFixed, fixed),
        (Fmt::Vhdx, vhdx),
        (Fmt::Gpt, gpt),
    ];
    (data, seeds)
}

fn render(rows: &[Row], regf: &str) -> String {
    let mut md = String::new();
    md.push_str(
        "# Malformed-image corpus\n\n\
         Generated by `tests/corpus.rs` (`ONRAMP_BLESS=1 cargo test --test corpus` rewrites this file;\n\
         the test fails when it is out of date). Seeds: a 4 MiB raw disk with data and holes, converted\n\
         by qemu-img to each format. Each row is one mutation from the test's declarative table or a\n\
         truncation at a structure boundary. Every onramp run is under `prlimit --as=512MiB` and a\n\
         timeout; the test asserts exit 0 or 2, never a signal, panic or hang, a one-line error, no\n\
         partial output, and (when onramp and qemu-img both convert) byte-identical output.\n\n\
         Columns: **onramp convert** is `ok` or the error's kind and structure; **qemu-img convert** is\n\
         what `qemu-img convert -f FMT -O raw` did with the same file (its data compared with the\n\
         seed's); **stricter** marks rows where qemu-img converts but onramp refuses.\n\n",
    );
    let total = rows.len();
    let stricter = rows.iter().filter(|r| r.stricter).count();
    let _ = writeln!(
        md,
        "{total} images, all as expected; onramp is stricter than qemu-img on {stricter}.\n"
    );
    md.push_str("| format | mutation | expected | onramp info | onramp convert | qemu-img convert | stricter |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.fmt.label(),
            r.case,
            match r.expect {
                Expect::Ok => "ok",
                Expect::Error => "error",
            },
            r.info,
            r.onramp,
            r.qemu,
            if r.stricter { "**yes**" } else { "" }
        );
    }
    md.push('\n');
    md.push_str(regf);
    md
}

/// A small SYSTEM-like hive from the fixture writer.
fn sample_hive() -> Vec<u8> {
    use onramp::fs::regf::writer::{build, KeySpec};
    use onramp::fs::regf::Value;
    let mut root = KeySpec::new("ROOT");
    root.set("ControlSet001\\Control", Value::sz("Name", "x"))
        .set("ControlSet001\\Services\\x", Value::dword("Start", 2))
        .set("Select", Value::dword("Current", 1));
    build(&root, "SYSTEM").expect("build hive")
}

/// regf base block: flip every bit of the checksummed first 508 bytes and the
/// checksum; the hive parser must refuse each (in-process: no binary reads a
/// bare hive), without panicking.
fn regf_flips() -> String {
    use onramp::fs::regf::Hive;
    let hive = sample_hive();
    assert!(Hive::parse(&hive).is_ok());
    let mut refused = 0usize;
    let mut accepted = Vec::new();
    for byte in 0..512usize {
        for bit in 0..8 {
            let mut h = hive.clone();
            h[byte] ^= 1 << bit;
            let r = std::panic::catch_unwind(|| Hive::parse(&h).map(|hv| hv.root().is_ok()));
            match r {
                Err(_) => panic!("regf base block flip at byte {byte} bit {bit} panicked"),
                Ok(Err(_)) => refused += 1,
                Ok(Ok(_)) => accepted.push((byte, bit)),
            }
        }
    }
    // Bytes 0..508 are covered by the checksum at 508: every flip there is refused.
    assert!(
        accepted.iter().all(|&(b, _)| b >= 512),
        "regf flips accepted inside the checksummed base block: {accepted:?}"
    );
    format!(
        "## regf base block\n\nEvery single-bit flip in the first 512 bytes of a hive made by the \
         fixture writer (the 508 checksummed bytes and the checksum): {refused} of 4096 refused by \
         `Hive::parse` with a corrupt-image error, none panicked.\n"
    )
}

#[test]
fn malformed_corpus() {
    if !require(&["qemu-img", "prlimit", "timeout", "sgdisk"]) {
        return;
    }
    let dir = tempdir();
    let (reference, seeds) = seeds(dir.path());
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut one = |fmt: Fmt, name: &str, bytes: Vec<u8>, expect: Expect| {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(dir.path(), &reference, fmt, name, &bytes, expect)
        }));
        match r {
            Ok(row) => rows.push(row),
            Err(e) => failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{} / {name}: panicked", fmt.label())),
            ),
        }
    };
    for (fmt, seed) in &seeds {
        for c in MUTATIONS.iter().filter(|c| c.fmt == *fmt) {
            one(*fmt, c.field, mutate(seed, c.ops), c.expect);
        }
        for (name, a, d) in boundaries(*fmt) {
            let bytes = mutate(seed, &[Truncate(a, d)]);
            let short_last = matches!(a, End) && d == -1;
            let (name, expect) = if short_last && matches!(fmt, Fmt::Qcow2 | Fmt::Vhdx) {
                (
                    format!("truncated: {name} (last cluster cut short: zeros, as qemu)"),
                    Expect::Ok,
                )
            } else {
                (format!("truncated: {name}"), Expect::Error)
            };
            one(*fmt, &name, bytes, expect);
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let md = render(&rows, &regf_flips());
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/corpus.md");
    if std::env::var_os("ONRAMP_BLESS").is_some() {
        std::fs::write(&doc, &md).unwrap();
    } else {
        let have = std::fs::read_to_string(&doc).unwrap_or_default();
        assert!(
            have == md,
            "docs/corpus.md is out of date: rerun with ONRAMP_BLESS=1\n{md}"
        );
    }
    // The four cases where onramp is deliberately stricter than qemu-img.
    for want in [
        "L1[0] out of file",
        "L1[0] self-referencing",
        "differencing disk, parent missing",
        "trailing footer disagrees",
    ] {
        assert!(
            rows.iter()
                .any(|r| r.case.starts_with(want) && r.expect == Expect::Error),
            "missing stricter case {want}"
        );
    }
}

/// Seed for the `regf` fuzz target (scripts/fuzz-seeds): writes a hive made by
/// the fixture writer to `$ONRAMP_FUZZ_HIVE_OUT` when set, else does nothing.
#[test]
fn write_seed_hive() {
    let Some(out) = std::env::var_os("ONRAMP_FUZZ_HIVE_OUT") else {
        return;
    };
    std::fs::write(out, sample_hive()).unwrap();
}
