//! The `local` embedder: feature hashing of words and word pairs into
//! [`LOCAL_DIMS`] buckets. It finds texts that **share words** with the
//! query; it knows nothing of meaning ("car" and "automobile" score 0).
//! Real semantics come from an embedding model behind a provider.
//!
//! The function, fixed by [`LOCAL_MODEL`] (bump its version whenever it
//! changes, and cached vectors follow): lowercase; Unicode word boundaries
//! (UAX #29), keeping words with a letter or digit; a run of CJK
//! characters becomes its character bigrams (a lone character itself);
//! features are the words and each pair of neighbouring words; each is
//! hashed with seedless XXH3-64, bucket = hash mod 384, sign from the top
//! bit, weight 1 + ln(count); the vector is L2-normalised.

use std::collections::HashMap;
use unicode_segmentation::UnicodeSegmentation;
use xxhash_rust::xxh3::xxh3_64;

/// Dimensions of a local vector.
pub const LOCAL_DIMS: usize = 384;
/// The model id of local vectors (embedding cache keys and stores use it).
pub const LOCAL_MODEL: &str = "local/hash-v1/384";

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F) // Extensions B-F, compatibility supplement
}

/// The words of `text`, lowercased, CJK runs as character bigrams. (UAX
/// #29 cuts ideographs one by one; touching ones are joined into a run.)
fn words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut run = String::new();
    let mut run_end = 0;
    let flush = |run: &mut String, out: &mut Vec<String>| {
        let chars: Vec<char> = run.chars().collect();
        match chars.len() {
            0 => {}
            1 => out.push(run.clone()),
            _ => out.extend(chars.windows(2).map(|w| w.iter().collect::<String>())),
        }
        run.clear();
    };
    for (at, word) in lower.unicode_word_indices() {
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        if word.chars().all(is_cjk) {
            if at != run_end {
                flush(&mut run, &mut out);
            }
            run.push_str(word);
            run_end = at + word.len();
        } else {
            flush(&mut run, &mut out);
            out.push(word.to_owned());
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The local vector of `text`: [`LOCAL_DIMS`] values, unit length (all
/// zero for a text with no words).
pub fn embed_local(text: &str) -> Vec<f32> {
    let words = words(text);
    let mut counts: HashMap<String, u32> = HashMap::new();
    for w in &words {
        *counts.entry(w.clone()).or_default() += 1;
    }
    for pair in words.windows(2) {
        *counts
            .entry(format!("{} {}", pair[0], pair[1]))
            .or_default() += 1;
    }
    let mut v = vec![0.0f32; LOCAL_DIMS];
    for (feature, n) in counts {
        let h = xxh3_64(feature.as_bytes());
        let bucket = (h % LOCAL_DIMS as u64) as usize;
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[bucket] += sign * (1.0 + (n as f32).ln());
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    #[test]
    fn vectors_are_unit_length_and_the_same_every_time() {
        let a = embed_local("Weir runs document indexing jobs.");
        assert_eq!(a.len(), LOCAL_DIMS);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(a, embed_local("Weir runs document indexing jobs."));
        assert_eq!(embed_local("  ... !!! "), vec![0.0; LOCAL_DIMS]);
    }

    #[test]
    fn shared_words_score_and_meaning_does_not() {
        let doc = embed_local("The red car is parked outside the station.");
        let near = embed_local("where is the red car parked");
        let far = embed_local("quantum chromodynamics lecture notes");
        assert!(cosine(&doc, &near) > 0.4, "{}", cosine(&doc, &near));
        assert!(cosine(&doc, &far) < 0.15, "{}", cosine(&doc, &far));
        let car = embed_local("car");
        let automobile = embed_local("automobile");
        assert!(cosine(&car, &automobile).abs() < 1e-6, "no semantics");
        assert!(
            (cosine(&car, &embed_local("CAR")) - 1.0).abs() < 1e-5,
            "case folded"
        );
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        assert_eq!(words("知识库"), vec!["知识", "识库"]);
        assert_eq!(words("库"), vec!["库"]);
        assert_eq!(
            words("知，识 weir"),
            vec!["知", "识", "weir"],
            "punctuation ends a run"
        );
        let a = embed_local("向量数据库检索");
        let b = embed_local("数据库");
        assert!(cosine(&a, &b) > 0.3, "{}", cosine(&a, &b));
    }
}
