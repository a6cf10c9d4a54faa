//! Cleaning extracted text, with Dify's default rules: line endings made
//! `\n`; control characters removed (but `\n` and `\t`); runs of spaces
//! and tabs inside a line collapsed to one space; three or more line
//! breaks made two (paragraphs stay paragraphs); lines and the whole
//! trimmed.

/// The cleaned text.
pub fn clean(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let mut out = String::with_capacity(line.len());
        let mut space = false;
        for c in line.chars() {
            if c == ' ' || c == '\t' || c == '\u{a0}' {
                space = true;
                continue;
            }
            if c.is_control() {
                continue;
            }
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
        lines.push(out);
    }
    // At most one empty line in a row.
    let mut kept: Vec<String> = Vec::with_capacity(lines.len());
    for line in lines {
        if line.is_empty() && kept.last().is_some_and(String::is_empty) {
            continue;
        }
        kept.push(line);
    }
    kept.join("\n").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dify_default_rules() {
        let raw = "  Title\r\n\r\n\r\n\r\nfirst   line\twith\t\ttabs  \n\u{0}\u{7}bell\u{1b}\n\n\n\nend  ";
        assert_eq!(clean(raw), "Title\n\nfirst line with tabs\nbell\n\nend");
        assert_eq!(clean("one\n\ntwo"), "one\n\ntwo", "a paragraph break stays");
        assert_eq!(clean(" \n\t\n "), "");
        assert_eq!(clean("知识\u{a0}库"), "知识 库");
    }
}
