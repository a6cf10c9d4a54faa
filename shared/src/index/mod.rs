//! Document indexing's text stages that need no network: cleaning the
//! extracted text before it is split.

mod clean;

pub use clean::clean;
