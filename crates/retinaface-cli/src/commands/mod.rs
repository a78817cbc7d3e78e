//! One module per subcommand.

pub mod bench;
pub mod convert;
pub mod detect;
pub mod eval;
