//! VirtualBox VDI images, static and dynamic ([`header`], v1.1): the disk is
//! cut into blocks; a block map of u32 entries at `offset_bmap` gives each
//! virtual block's index among the stored blocks at `offset_data`
//! (`0xffffffff` free and `0xfffffffe` zero both read as zeros).

pub mod header;

use crate::block::{check_range, BlockSource, Extent, ExtentKind, MapBuilder};
use crate::error::{Error, Result};
use crate::source::range::FileRange;
use header::{uuid_string, VdiHeader, BLOCK_FREE, BLOCK_ZERO, HEADER_BYTES};
use serde_json::{json, Map, Value};
use std::path::Path;

/// A VDI image opened for reading.
#[derive(Debug)]
pub struct VdiReader {
    range: FileRange,
    header: VdiHeader,
    /// The checked block map: each entry is a stored block index (its data
    /// lies inside the file) or BLOCK_FREE / BLOCK_ZERO.
    blocks: Vec<u32>,
    block_bytes: u64,
}

impl VdiReader {
    /// Open `path` and check its header and block map.
    pub fn open(path: &Path) -> Result<Self> {
        let range = FileRange::open(path)?;
        let mut b = vec![0u8; HEADER_BYTES];
        range.read_exact_at(0, &mut b, "VDI header")?;
        let header = VdiHeader::parse(&b)?;
        let n = usize::try_from(header.blocks_in_image).unwrap_or(0);
        let mut raw = vec![0u8; n.saturating_mul(4)];
        let map_at = u64::from(header.offset_bmap);
        range.read_exact_at(map_at, &mut raw, "VDI block map")?;
        let block_bytes = u64::from(header.block_size);
        let data_at = u64::from(header.offset_data);
        let mut blocks = Vec::with_capacity(n);
        for (i, c) in raw.chunks_exact(4).enumerate() {
            let e = u32::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
                c.get(2).copied().unwrap_or(0),
                c.get(3).copied().unwrap_or(0),
            ]);
            let at = map_at.saturating_add(u64::try_from(i).unwrap_or(0).saturating_mul(4));
            if e == BLOCK_FREE || e == BLOCK_ZERO {
                blocks.push(e);
                continue;
            }
            // Bytes of this block the virtual disk uses (the last may be partial).
            let vstart = u64::try_from(i).unwrap_or(0).saturating_mul(block_bytes);
            let used = block_bytes.min(header.disk_size.saturating_sub(vstart));
            let off = u64::from(e)
                .checked_mul(block_bytes)
                .and_then(|x| x.checked_add(data_at));
            let end = off.and_then(|o| o.checked_add(used));
            match (off, end) {
                (Some(_), Some(end)) if end <= range.len() && e < header.blocks_in_image => {
                    blocks.push(e)
                }
                _ => {
                    return Err(Error::corrupt(
                        "VDI block map",
                        format!("entry {i}"),
                        at,
                        format!(
                            "a block index below {} whose data lies inside the {}-byte file, \
                             or 0xffffffff / 0xfffffffe",
                            header.blocks_in_image,
                            range.len()
                        ),
                        e,
                    )
                    .at(path))
                }
            }
        }
        Ok(VdiReader {
            range,
            header,
            blocks,
            block_bytes,
        })
    }

    /// The header.
    pub fn header(&self) -> &VdiHeader {
        &self.header
    }

    fn walk(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, u64, Option<u64>) -> Result<()>,
    ) -> Result<()> {
        check_range(self.header.disk_size, offset, len)?;
        let end = offset.saturating_add(len);
        let mut pos = offset;
        while pos < end {
            let bi = usize::try_from(pos.checked_div(self.block_bytes).unwrap_or(0))
                .unwrap_or(usize::MAX);
            let within = pos.checked_rem(self.block_bytes).unwrap_or(0);
            let next = pos
                .saturating_sub(within)
                .saturating_add(self.block_bytes)
                .min(end);
            let data_at = u64::from(self.header.offset_data);
            let at = self
                .blocks
                .get(bi)
                .copied()
                .filter(|&e| e != BLOCK_FREE && e != BLOCK_ZERO)
                .map(|e| {
                    u64::from(e)
                        .saturating_mul(self.block_bytes)
                        .saturating_add(data_at)
                        .saturating_add(within)
                });
            f(pos, next.saturating_sub(pos), at)?;
            pos = next;
        }
        Ok(())
    }
}

impl BlockSource for VdiReader {
    fn size(&self) -> u64 {
        self.header.disk_size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.walk(offset, len, |pos, n, at| {
            let from = usize::try_from(pos.saturating_sub(offset)).unwrap_or(usize::MAX);
            let to = from.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            let out = buf
                .get_mut(from..to)
                .ok_or_else(|| Error::invalid("VDI read: internal range error".to_string()))?;
            match at {
                Some(a) => self.range.read_exact_at(a, out, "VDI block"),
                None => {
                    out.fill(0);
                    Ok(())
                }
            }
        })
    }

    fn map(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut m = MapBuilder::new();
        self.walk(offset, len, |pos, n, at| {
            let kind = if at.is_some() {
                ExtentKind::Data
            } else {
                ExtentKind::Zero
            };
            m.push(pos, n, kind);
            Ok(())
        })?;
        Ok(m.finish())
    }

    fn format_name(&self) -> &'static str {
        "vdi"
    }

    fn details(&self) -> Map<String, Value> {
        let h = &self.header;
        let mut m = Map::new();
        m.insert("text".into(), json!(h.text));
        m.insert("version".into(), json!("1.1"));
        m.insert(
            "image_type".into(),
            json!(if h.image_type == header::TYPE_STATIC {
                "static"
            } else {
                "dynamic"
            }),
        );
        m.insert("flags".into(), json!(format!("{:#010x}", h.flags)));
        if !h.description.is_empty() {
            m.insert("description".into(), json!(h.description));
        }
        m.insert("block_size".into(), json!(h.block_size));
        m.insert("blocks_in_image".into(), json!(h.blocks_in_image));
        m.insert("blocks_allocated".into(), json!(h.blocks_allocated));
        m.insert("offset_block_map".into(), json!(h.offset_bmap));
        m.insert("offset_data".into(), json!(h.offset_data));
        m.insert("uuid_image".into(), json!(uuid_string(&h.uuid_image)));
        m.insert(
            "uuid_last_snapshot".into(),
            json!(uuid_string(&h.uuid_last_snap)),
        );
        m
    }
}
