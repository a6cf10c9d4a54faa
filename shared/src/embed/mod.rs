//! Embeddings: the model id a vector belongs to, cosine similarity, and
//! the `local` embedder (feature hashing, no model, no network), so `weir
//! dev` can index and search with nothing installed. Providers reached over
//! HTTP (OpenAI-compatible endpoints) come through the key pools.

mod local;
mod openai;

pub use local::{LOCAL_DIMS, LOCAL_MODEL, embed_local};
pub use openai::embed_remote;

/// Cosine similarity of two vectors of one model (0 for a zero vector or
/// vectors of different lengths).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
