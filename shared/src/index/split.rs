//! Splitting cleaned text into segments with Dify's defaults: cut on the
//! separator (`\n`), merge the pieces greedily into segments of at most
//! `max_tokens` (500), carrying whole pieces from the end of the previous
//! segment worth at most `overlap` tokens (50); a piece that alone is over
//! the limit is cut by `text-splitter` with the same token count, falling
//! back through sentences, words and characters.
//!
//! Tokens are counted with **cl100k_base** (`tiktoken-rs`, offline), the
//! encoding of OpenAI's `text-embedding-3-*`, so 500 tokens means what the
//! provider bills; the `local` embedder uses the same boundaries.

use std::sync::OnceLock;
use text_splitter::{ChunkConfig, TextSplitter};
use tiktoken_rs::CoreBPE;

/// How to split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOptions {
    /// Cut here first.
    pub separator: String,
    /// The most tokens in a segment.
    pub max_tokens: usize,
    /// Tokens of the previous segment's end repeated at the start of the
    /// next, at most.
    pub overlap: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            separator: "\n".into(),
            max_tokens: 500,
            overlap: 50,
        }
    }
}

/// The tokenizer (loaded once per process: its vocabulary is in the crate).
fn bpe() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| {
        // The vocabulary is compiled in; failing to read it is a build
        // defect, not an input error.
        tiktoken_rs::cl100k_base().unwrap_or_else(|e| panic!("cl100k_base: {e}"))
    })
}

/// Tokens of `text` in cl100k_base.
pub fn count_tokens(text: &str) -> usize {
    bpe().encode_ordinary(text).len()
}

/// The segments of `text` (none for text with no words).
pub fn split(text: &str, options: &SplitOptions) -> Vec<String> {
    let max = options.max_tokens.max(1);
    let overlap = options.overlap.min(max / 2);
    let sep = options.separator.as_str();
    let sep_tokens = if sep.is_empty() { 0 } else { count_tokens(sep) };
    let pieces: Vec<&str> = if sep.is_empty() {
        vec![text]
    } else {
        text.split(sep).collect()
    };
    let mut out: Vec<String> = Vec::new();
    // The segment being built: pieces and their token counts.
    let mut current: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    let emit = |current: &[(&str, usize)], out: &mut Vec<String>| {
        let joined = current
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(sep);
        let joined = joined.trim();
        if !joined.is_empty() {
            out.push(joined.to_owned());
        }
    };
    for piece in pieces.into_iter().filter(|p| !p.trim().is_empty()) {
        let n = count_tokens(piece);
        if n > max {
            emit(&current, &mut out);
            current.clear();
            total = 0;
            out.extend(cut(piece, max, overlap));
            continue;
        }
        let joining = if current.is_empty() { 0 } else { sep_tokens };
        if total + joining + n > max && !current.is_empty() {
            emit(&current, &mut out);
            // Carry whole pieces from the end, up to `overlap` tokens,
            // while the new piece still fits after them.
            let mut carried: Vec<(&str, usize)> = Vec::new();
            let mut kept = 0;
            for &(p, t) in current.iter().rev() {
                let with = kept + t + if carried.is_empty() { 0 } else { sep_tokens };
                if with > overlap || with + sep_tokens + n > max {
                    break;
                }
                kept = with;
                carried.insert(0, (p, t));
            }
            current = carried;
            total = kept;
        }
        total += if current.is_empty() { 0 } else { sep_tokens } + n;
        current.push((piece, n));
    }
    emit(&current, &mut out);
    out
}

/// A piece over `max` tokens, cut by text-splitter with the same tokenizer.
fn cut(piece: &str, max: usize, overlap: usize) -> Vec<String> {
    // `overlap` is at most half of `max` (see `split`), which the
    // splitter accepts; should it not, cut without overlap.
    let config = match ChunkConfig::new(max)
        .with_sizer(bpe())
        .with_overlap(overlap)
    {
        Ok(with) => with,
        Err(_) => ChunkConfig::new(max).with_sizer(bpe()),
    };
    TextSplitter::new(config)
        .chunks(piece)
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "line {i}: weir indexes documents for the knowledge base, segment by segment."
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_short_text_is_one_segment() {
        let o = SplitOptions::default();
        assert_eq!(split("hello\nworld", &o), vec!["hello\nworld"]);
        assert!(split(" \n\n ", &o).is_empty());
        assert_eq!(count_tokens("hello world"), 2, "cl100k_base");
    }

    #[test]
    fn segments_hold_at_most_max_tokens_and_overlap_by_whole_lines() {
        let o = SplitOptions::default();
        let text = lines(400);
        let segments = split(&text, &o);
        assert!(segments.len() > 5, "{}", segments.len());
        for s in &segments {
            assert!(count_tokens(s) <= 500, "{} tokens", count_tokens(s));
        }
        for pair in segments.windows(2) {
            let last = pair[0].lines().last().expect("a line");
            let first = pair[1].lines().next().expect("a line");
            assert!(
                pair[0].lines().any(|l| l == first) && pair[1].lines().any(|l| l == last),
                "the next segment starts with lines from the end of the previous one"
            );
            let carried: usize = pair[1]
                .lines()
                .take_while(|l| pair[0].lines().any(|p| p == *l))
                .map(count_tokens)
                .sum();
            assert!(carried <= 50, "overlap of {carried} tokens");
        }
        for i in [0, 199, 399] {
            let line = format!("line {i}:");
            assert!(segments.iter().any(|s| s.contains(&line)), "{line} kept");
        }
    }

    #[test]
    fn a_line_over_the_limit_is_cut_with_the_same_tokenizer() {
        let o = SplitOptions::default();
        let long = "word ".repeat(3000);
        let segments = split(&format!("intro\n{long}\noutro"), &o);
        assert_eq!(segments.first().map(String::as_str), Some("intro"));
        assert_eq!(segments.last().map(String::as_str), Some("outro"));
        assert!(segments.len() >= 8, "{}", segments.len());
        assert!(segments.iter().all(|s| count_tokens(s) <= 500));
    }
}
