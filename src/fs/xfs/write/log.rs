//! Is the internal log clean? A cleanly unmounted XFS log ends with an
//! unmount record: the log record with the highest LSN (the head) holds one
//! operation whose header carries `XLOG_UNMOUNT_TRANS`.
//!
//! Source: "XFS Algorithms & Data Structures", "Journaling Log" (record
//! header `xlog_rec_header`: magic 0xFEEDBABE, h_cycle, h_version, h_len,
//! h_lsn, h_tail_lsn, h_crc, h_prev_block, h_num_logops, h_cycle_data[64],
//! h_fmt, h_fs_uuid, h_size; operation header `xlog_op_header`: oh_tid,
//! oh_len, oh_clientid, oh_flags), kernel `xfs_log_recover.c`
//! (`xlog_find_tail`, `xlog_check_unmount_rec`).

use super::{g32, g64};
use crate::error::{Error, Result};

/// `XLOG_HEADER_MAGIC_NUM`.
const XLOG_HEADER_MAGIC: u32 = 0xFEED_BABE;
/// `XLOG_UNMOUNT_TRANS` in `oh_flags`.
const XLOG_UNMOUNT_TRANS: u8 = 0x20;
/// `XLOG_HEADER_CYCLE_SIZE`: one header basic block covers this much record data.
const XLOG_HEADER_CYCLE_SIZE: u32 = 32 * 1024;
/// Bytes read per step while scanning the log.
const CHUNK: usize = 1 << 20;

/// `Ok(())` for a log whose head is an unmount record; otherwise an
/// unsupported error naming why the log is not clean. `read(off, buf)` reads
/// the volume; the log is `len` bytes at `start`.
pub fn check_clean(
    read: &dyn Fn(u64, &mut [u8]) -> Result<()>,
    start: u64,
    len: u64,
) -> Result<()> {
    let mut best: Option<(u64, u64)> = None; // (h_lsn, byte offset in log)
    let mut off = 0u64;
    let mut buf = vec![0u8; CHUNK];
    while off < len {
        let n = (len - off).min(CHUNK as u64) as usize;
        read(start + off, &mut buf[..n])?;
        for s in (0..n).step_by(512) {
            if g32(&buf, s) == XLOG_HEADER_MAGIC && g32(&buf, s + 8) <= 2 {
                let lsn = g64(&buf, s + 16);
                if best.is_none_or(|(l, _)| lsn > l) {
                    best = Some((lsn, off + s as u64));
                }
            }
        }
        off += n as u64;
    }
    let Some((lsn, at)) = best else {
        return Err(Error::unsupported(
            "xfs: the log holds no log record (cannot tell whether it was cleanly unmounted)",
        ));
    };
    let mut hdr = [0u8; 512];
    read(start + at, &mut hdr)?;
    let num_ops = g32(&hdr, 40);
    let tail = g64(&hdr, 24);
    let h_size = g32(&hdr, 320);
    let version = g32(&hdr, 8);
    let hdr_bbs = if version == 2 && h_size > XLOG_HEADER_CYCLE_SIZE {
        u64::from(h_size.div_ceil(XLOG_HEADER_CYCLE_SIZE))
    } else {
        1
    };
    let op_at = (at + hdr_bbs * 512) % len;
    let mut op = [0u8; 12];
    read(start + op_at, &mut op)?;
    let flags = op[9];
    if num_ops != 1 || flags & XLOG_UNMOUNT_TRANS == 0 || tail != lsn {
        return Err(Error::unsupported(format!(
            "xfs: the log is dirty (its head record at LSN {}:{} is not an unmount record: {num_ops} operations, flags {flags:#x}, tail LSN {}:{}); mount and cleanly unmount the filesystem, or run xfs_repair, before writing",
            lsn >> 32,
            lsn & 0xffff_ffff,
            tail >> 32,
            tail & 0xffff_ffff
        )));
    }
    Ok(())
}
