//! Document indexing's text stages that need no network: cleaning the
//! extracted text, then splitting it into segments.

mod clean;
mod split;

pub use clean::clean;
pub use split::{SplitOptions, count_tokens, split};
