//! onramp: move the VM images customers already run onto a cloud.
//!
//! The crate follows the pipeline (see README.md): [`source`] detects and opens
//! inputs as [`block::BlockSource`]s; [`target`] writes cloud disk formats in one
//! streaming pass; [`pipeline`] ties the stages together for the CLI in [`cli`].

pub mod block;
pub mod boot;
pub mod bytes;
pub mod cli;
pub mod error;
pub mod fs;
pub mod guest;
pub mod inject;
pub mod limits;
pub mod overlay;
pub mod partition;
pub mod pipeline;
pub mod publish;
pub mod recipe;
pub mod source;
pub mod target;
pub mod validate;

pub use error::{Error, ErrorKind, Result};
