//! Source files and diagnostics.
//!
//! Every error the frontend reports is a [`Diagnostic`]: a message, the file, the byte span of the
//! offending text, and notes. Rendering gives `file:line:col`, the source line with the span
//! underlined, and the notes, in the style of rustc:
//!
//! ```text
//! error: unknown function `layer_nrom`
//!   --> rwkv4.toml:41:8
//!    |
//! 41 | a = "layer_nrom(x, ln1_w, ln1_b, eps)"
//!    |      ^^^^^^^^^^ not a primitive, prelude or spec function
//!    = help: did you mean `layer_norm`?
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// A named source text (a spec file or the prelude).
#[derive(Debug)]
pub struct SourceFile {
    pub name: Arc<str>,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<Arc<str>>, text: impl Into<String>) -> Arc<SourceFile> {
        let text = text.into();
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Arc::new(SourceFile { name: name.into(), text, line_starts })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text.get(start..offset).map_or(0, |s| s.chars().count());
        (line as u32 + 1, col as u32 + 1)
    }

    fn line_text(&self, line: u32) -> &str {
        let i = line as usize - 1;
        let start = self.line_starts[i];
        let end = self.line_starts.get(i + 1).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }
}

/// A span of one source file.
#[derive(Clone, Debug)]
pub struct Location {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl Location {
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Location {
        Location { file: file.clone(), span }
    }

    pub fn origin(&self, context: Option<Arc<str>>) -> kiln_ir::Origin {
        let (line, col) = self.file.line_col(self.span.start);
        kiln_ir::Origin { file: self.file.name.clone(), line, col, context }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.file.line_col(self.span.start);
        write!(f, "{}:{line}:{col}", self.file.name)
    }
}

/// An error in a spec (or in the config it is compiled against), located in the source.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    /// Short text printed under the underline.
    pub label: String,
    /// `= note:` / `= help:` lines, already prefixed.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, location: Option<Location>) -> Diagnostic {
        Diagnostic { message: message.into(), location, label: String::new(), notes: Vec::new() }
    }

    pub fn at(location: &Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message, Some(location.clone()))
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(format!("note: {}", note.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.notes.push(format!("help: {}", help.into()));
        self
    }

    /// `file:line:col: message`, one line, for command-line tools.
    pub fn short(&self) -> String {
        match &self.location {
            Some(l) => format!("{l}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(loc) = &self.location {
            let (line, col) = loc.file.line_col(loc.span.start);
            let text = loc.file.line_text(line);
            let gutter = line.to_string().len();
            writeln!(f, "{:gutter$}--> {loc}", "")?;
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{line} | {text}")?;
            let (end_line, end_col) = loc.file.line_col(loc.span.end.max(loc.span.start + 1) - 1);
            let width = if end_line == line { (end_col + 1).saturating_sub(col).max(1) } else { 1 };
            let pad = col as usize - 1;
            let carets = "^".repeat(width as usize);
            let label = if self.label.is_empty() { String::new() } else { format!(" {}", self.label) };
            writeln!(f, "{:gutter$} | {:pad$}{carets}{label}", "", "")?;
            for n in &self.notes {
                writeln!(f, "{:gutter$} = {n}", "")?;
            }
        } else {
            for n in &self.notes {
                writeln!(f, "  = {n}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| {
            let longest = name.len().max(c.len());
            *d <= longest.div_ceil(3) && *d < longest
        })
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_render() {
        let f = SourceFile::new("m.toml", "a = 1\nb = \"x + y\"\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(10), (2, 5));
        let d = Diagnostic::at(&Location::new(&f, 11..16), "bad").label("here").help("try z");
        let s = d.to_string();
        assert!(s.contains("--> m.toml:2:6"), "{s}");
        assert!(s.contains("2 | b = \"x + y\""), "{s}");
        assert!(s.contains("  |      ^^^^^ here"), "{s}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("layer_nrom", ["layer_norm", "rms_norm"]), Some("layer_norm"));
        assert_eq!(suggest("grpah", ["graph", "model"]), Some("graph"));
        assert_eq!(suggest("zzz", ["layer_norm"]), None);
        assert_eq!(suggest("x", ["H", "V"]), None);
    }
}
