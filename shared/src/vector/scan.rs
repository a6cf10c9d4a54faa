//! Exact nearest-neighbour search: a dataset's vectors in one row-major
//! matrix, scanned with a dot product (vectors are unit length) and a
//! top-k heap. 100,000 rows of 384 dimensions take a few milliseconds.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A dataset's vectors, one row per segment.
#[derive(Debug, Default)]
pub struct Matrix {
    /// Vector length.
    pub dims: usize,
    /// `rows * dims` floats.
    pub data: Vec<f32>,
    /// Per row: the document (index into `documents`) and the segment.
    pub rows: Vec<(u32, u32)>,
    /// Document ids.
    pub documents: Vec<String>,
}

impl Matrix {
    /// An empty matrix of `dims` columns.
    pub fn new(dims: usize) -> Self {
        Matrix {
            dims,
            ..Matrix::default()
        }
    }

    /// Adds a row; a vector of another length is skipped (false).
    pub fn push(&mut self, document: u32, segment: u32, vector: &[f32]) -> bool {
        if vector.len() != self.dims {
            return false;
        }
        self.data.extend_from_slice(vector);
        self.rows.push((document, segment));
        true
    }

    /// Bytes held, for the cache's budget.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
            + self.rows.len() * 8
            + self.documents.iter().map(|d| d.len() + 24).sum::<usize>()
    }
}

/// A row and its score, ordered so that a max-heap keeps the worst on top.
#[derive(PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the lowest score.
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums, so the compiler can keep them in vector
    // registers instead of waiting on one chain of additions.
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The `k` rows of `matrix` nearest to `query`, best first, as (row,
/// score).
pub fn top_k(matrix: &Matrix, query: &[f32], k: usize) -> Vec<(usize, f32)> {
    if k == 0 || query.len() != matrix.dims || matrix.dims == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    for (row, vector) in matrix.data.chunks_exact(matrix.dims).enumerate() {
        let score = dot(vector, query);
        if heap.len() < k {
            heap.push(Scored(score, row));
        } else if heap.peek().is_some_and(|worst| score > worst.0) {
            heap.pop();
            heap.push(Scored(score, row));
        }
    }
    let mut out: Vec<(usize, f32)> = heap.into_iter().map(|s| (s.1, s.0)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_nearest_rows_best_first() {
        let mut m = Matrix::new(3);
        m.documents = vec!["a".into(), "b".into()];
        assert!(m.push(0, 0, &[1.0, 0.0, 0.0]));
        assert!(m.push(0, 1, &[0.0, 1.0, 0.0]));
        assert!(m.push(1, 0, &[0.6, 0.8, 0.0]));
        assert!(!m.push(1, 1, &[1.0, 0.0]));
        let hits = top_k(&m, &[0.0, 1.0, 0.0], 2);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((hits[1].1 - 0.8).abs() < 1e-6);
        assert_eq!(top_k(&m, &[1.0, 0.0, 0.0], 10).len(), 3);
        assert!(top_k(&m, &[1.0, 0.0], 3).is_empty());
    }

    #[test]
    fn dot_handles_lengths_that_are_not_multiples_of_eight() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
