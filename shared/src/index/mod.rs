//! Document indexing's text stages that need no network: extracting the
//! text of a document, cleaning it, then splitting it into segments.

mod clean;
mod extract;
mod split;

pub use clean::clean;
#[cfg(any(test, feature = "testkit"))]
pub use extract::minimal_pdf;
pub use extract::{ExtractError, Format, extract};
pub use split::{SplitOptions, count_tokens, split};
