//! Guest inspection: what is installed inside a disk image, read offline
//! through [`crate::fs::FileSystem`].

pub mod windows;
