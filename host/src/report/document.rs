//! A report as a list of blocks (headings, paragraphs, tables, figures), rendered to Markdown (figures
//! linked as files next to it) or to one self-contained HTML page (figures' SVG text inlined, CSS in a
//! `<style>` element, no scripts, nothing fetched).
//!
//! Text is plain; a span between backticks is code (`<code>` in HTML).

/// One piece of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// A heading of level 1 to 3.
    Heading(u8, String),
    Paragraph(String),
    /// A bulleted list.
    List(Vec<String>),
    /// A table; every row has as many cells as there are headers.
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// An SVG figure: `link` is the file as the Markdown refers to it (relative to the report), `svg` the
    /// file's text as HTML inlines it.
    Figure {
        link: String,
        svg: String,
        caption: String,
    },
}

/// A whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Document {
    pub fn new(title: &str) -> Self {
        Self { title: title.to_string(), blocks: Vec::new() }
    }

    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// Markdown; figures are `![caption](link)`.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n", self.title);
        for block in &self.blocks {
            out.push('\n');
            match block {
                Block::Heading(level, text) => {
                    out += &format!("{} {text}\n", "#".repeat((*level).clamp(1, 3) as usize + 1));
                }
                Block::Paragraph(text) => out += &format!("{text}\n"),
                Block::List(items) => {
                    for item in items {
                        out += &format!("- {item}\n");
                    }
                }
                Block::Table { headers, rows } => out += &markdown_table(headers, rows),
                Block::Figure { link, caption, .. } => out += &format!("![{caption}]({link})\n"),
            }
        }
        out
    }

    /// One HTML page with everything inlined.
    pub fn to_html(&self) -> String {
        let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out += &format!("<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n", escape(&self.title));
        out += &format!("<h1>{}</h1>\n", inline(&self.title));
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let level = (*level).clamp(1, 3) + 1;
                    out += &format!("<h{level}>{}</h{level}>\n", inline(text));
                }
                Block::Paragraph(text) => out += &format!("<p>{}</p>\n", inline(text)),
                Block::List(items) => {
                    out += "<ul>\n";
                    for item in items {
                        out += &format!("<li>{}</li>\n", inline(item));
                    }
                    out += "</ul>\n";
                }
                Block::Table { headers, rows } => {
                    out += "<table>\n<thead><tr>";
                    for header in headers {
                        out += &format!("<th>{}</th>", inline(header));
                    }
                    out += "</tr></thead>\n<tbody>\n";
                    for row in rows {
                        out += "<tr>";
                        for cell in row {
                            out += &format!("<td>{}</td>", inline(cell));
                        }
                        out += "</tr>\n";
                    }
                    out += "</tbody>\n</table>\n";
                }
                Block::Figure { svg, caption, .. } => {
                    out += &format!(
                        "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
                        strip_xml_prolog(svg),
                        inline(caption)
                    );
                }
            }
        }
        out += "</body>\n</html>\n";
        out
    }
}

const STYLE: &str = "body { font-family: sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 0.2em; }
";

/// A Markdown table (pipes in cells escaped).
pub fn markdown_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("| {} |\n", headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    out += &format!("|{}\n", "---|".repeat(headers.len()));
    for row in rows {
        out += &format!("| {} |\n", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
    }
    out
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

/// Escaped text with backtick spans as `<code>`.
fn inline(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", escape(part)) } else { escape(part) })
        .collect()
}

/// An SVG file's text without a leading `<?xml ...?>` declaration, which is not allowed inside HTML.
fn strip_xml_prolog(svg: &str) -> &str {
    let trimmed = svg.trim_start();
    if trimmed.starts_with("<?xml") {
        if let Some(end) = trimmed.find("?>") {
            return trimmed[end + 2..].trim_start();
        }
    }
    trimmed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Document {
        let mut doc = Document::new("Report <1>");
        doc.push(Block::Heading(1, "Results".into()));
        doc.push(Block::Paragraph("winner `neg_p` & more".into()));
        doc.push(Block::Table { headers: vec!["a".into(), "b|c".into()], rows: vec![vec!["1".into(), "x|y".into()]] });
        doc.push(Block::Figure {
            link: "chart.svg".into(),
            svg: "<?xml version=\"1.0\"?>\n<svg width=\"1\"></svg>".into(),
            caption: "the chart".into(),
        });
        doc
    }

    #[test]
    fn markdown_links_figures_and_escapes_table_pipes() {
        let md = sample().to_markdown();
        assert!(md.starts_with("# Report <1>\n"));
        assert!(md.contains("## Results\n"));
        assert!(md.contains("| a | b\\|c |\n|---|---|\n| 1 | x\\|y |\n"), "{md}");
        assert!(md.contains("![the chart](chart.svg)"));
    }

    #[test]
    fn html_is_escaped_and_inlines_the_svg() {
        let html = sample().to_html();
        assert!(html.contains("<title>Report &lt;1&gt;</title>"));
        assert!(html.contains("<p>winner <code>neg_p</code> &amp; more</p>"));
        assert!(html.contains("<figure>\n<svg width=\"1\"></svg>"), "{html}");
        assert!(!html.contains("<?xml"));
        assert!(!html.contains("src="));
    }
}
