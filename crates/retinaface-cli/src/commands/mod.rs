//! One module per subcommand.

pub mod align;
pub mod anonymize;
pub mod bench;
pub mod convert;
pub mod detect;
pub mod eval;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod train;
