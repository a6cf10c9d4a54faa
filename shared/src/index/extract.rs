//! Extraction: the text of a document, from plain text, Markdown, HTML or
//! PDF. The format comes from a `Content-Type` when the document was
//! fetched, else from the name's extension, else it is plain text.

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// The formats `document.index` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 text, as is (invalid bytes replaced).
    Text,
    /// CommonMark: text kept, headings and list items as lines, code as is.
    Markdown,
    /// HTML: `script` and `style` dropped, block elements as lines.
    Html,
    /// PDF: the text of its pages.
    Pdf,
}

/// Why a document has no text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    /// The PDF parser refused it (or panicked on it).
    #[error("unreadable PDF: {0}")]
    Pdf(String),
    /// The HTML could not be read.
    #[error("unreadable HTML: {0}")]
    Html(String),
}

impl Format {
    /// The format a `Content-Type` names (`text/markdown; charset=utf-8`),
    /// or `None` for a type that says nothing (`application/octet-stream`).
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/html" | "application/xhtml+xml" => Some(Format::Html),
            "text/markdown" | "text/x-markdown" => Some(Format::Markdown),
            "application/pdf" => Some(Format::Pdf),
            "text/plain" => Some(Format::Text),
            _ => None,
        }
    }

    /// The format a file name's extension names (`report.PDF`), or `None`.
    pub fn from_name(name: &str) -> Option<Format> {
        let path = name.split(['?', '#']).next().unwrap_or(name);
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "html" | "htm" | "xhtml" => Some(Format::Html),
            "md" | "markdown" => Some(Format::Markdown),
            "pdf" => Some(Format::Pdf),
            "txt" | "text" => Some(Format::Text),
            _ => None,
        }
    }

    /// The format a payload's `format` field names.
    pub fn parse(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "text" | "txt" | "plain" => Some(Format::Text),
            "markdown" | "md" => Some(Format::Markdown),
            "html" => Some(Format::Html),
            "pdf" => Some(Format::Pdf),
            _ => None,
        }
    }
}

/// The text of `bytes` read as `format`. PDF parsing is CPU work and can
/// panic on malformed input: call this from a blocking thread.
pub fn extract(bytes: &[u8], format: Format) -> Result<String, ExtractError> {
    match format {
        Format::Text => Ok(String::from_utf8_lossy(bytes).into_owned()),
        Format::Markdown => Ok(markdown(&String::from_utf8_lossy(bytes))),
        Format::Html => html(bytes),
        Format::Pdf => pdf(bytes),
    }
}

fn markdown(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let line_break = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    for event in Parser::new(source) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::Html(t) | Event::InlineHtml(t) => {
                // Raw HTML inside Markdown: its text, not its tags.
                if let Ok(text) = html(t.as_bytes()) {
                    out.push_str(text.trim_end());
                }
            }
            Event::SoftBreak => out.push(' '),
            Event::HardBreak | Event::Rule => line_break(&mut out),
            Event::Start(Tag::Item) => {
                line_break(&mut out);
                out.push_str("- ");
            }
            Event::End(
                TagEnd::Heading(_)
                | TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) => line_break(&mut out),
            Event::End(TagEnd::TableCell) => out.push('\t'),
            _ => {}
        }
    }
    out
}

fn html(bytes: &[u8]) -> Result<String, ExtractError> {
    // Wide enough that no line is wrapped: the splitter decides lines.
    html2text::config::plain_no_decorate()
        .allow_width_overflow()
        .no_link_wrapping()
        .link_footnotes(false)
        .string_from_read(bytes, 100_000)
        .map_err(|e| ExtractError::Html(e.to_string()))
}

fn pdf(bytes: &[u8]) -> Result<String, ExtractError> {
    if !bytes.starts_with(b"%PDF") {
        return Err(ExtractError::Pdf("it does not start with %PDF".into()));
    }
    let owned = bytes.to_vec();
    match std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem(&owned)) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(ExtractError::Pdf(e.to_string())),
        Err(_) => Err(ExtractError::Pdf("the parser gave up on it".into())),
    }
}

/// A one-page PDF whose text is `line` (Helvetica, offsets computed): for
/// tests of PDF extraction.
#[cfg(any(test, feature = "testkit"))]
pub fn minimal_pdf(line: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({line}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_content_types_and_names() {
        assert_eq!(
            Format::from_content_type("text/markdown; charset=utf-8"),
            Some(Format::Markdown)
        );
        assert_eq!(Format::from_content_type("TEXT/HTML"), Some(Format::Html));
        assert_eq!(Format::from_content_type("application/octet-stream"), None);
        assert_eq!(
            Format::from_name("https://x.test/a/Report.PDF?dl=1"),
            Some(Format::Pdf)
        );
        assert_eq!(Format::from_name("notes.md"), Some(Format::Markdown));
        assert_eq!(Format::from_name("README"), None);
    }

    #[test]
    fn markdown_keeps_text_headings_items_and_code() {
        let text = extract(
            b"# Title\n\nSome *emphasis* and `code`.\n\n- one\n- two\n\n```\nlet x = 1;\n```\n",
            Format::Markdown,
        )
        .expect("markdown");
        assert_eq!(
            text,
            "Title\nSome emphasis and code.\n- one\n- two\nlet x = 1;\n"
        );
    }

    #[test]
    fn html_drops_scripts_and_styles_and_keeps_blocks_as_lines() {
        let text = extract(
            b"<html><head><style>p{color:red}</style><script>alert('x')</script></head>\
              <body><h1>Weir</h1><p>Jobs run <b>once</b>.</p><ul><li>fast</li><li>safe</li></ul></body></html>",
            Format::Html,
        )
        .expect("html");
        assert!(!text.contains("alert"), "{text}");
        assert!(!text.contains("color"), "{text}");
        assert!(text.contains("Weir\n"), "{text}");
        assert!(text.contains("Jobs run once."), "{text}");
        assert!(text.contains("fast") && text.contains("safe"), "{text}");
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_panic() {
        assert!(matches!(
            extract(b"not a pdf at all", Format::Pdf),
            Err(ExtractError::Pdf(_))
        ));
        let truncated = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer";
        assert!(matches!(
            extract(truncated, Format::Pdf),
            Err(ExtractError::Pdf(_))
        ));
    }

    #[test]
    fn a_pdf_gives_its_text() {
        let text = extract(&minimal_pdf("Weir indexes PDF files"), Format::Pdf).expect("pdf");
        assert!(text.contains("Weir indexes PDF files"), "{text:?}");
    }
}
