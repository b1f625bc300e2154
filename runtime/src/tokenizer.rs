//! Text in and out, through a checkpoint's `tokenizer.json` and the Hugging Face `tokenizers`
//! crate (pure-Rust regex backend). Streaming decode emits text only once the bytes of a
//! character are complete.

use crate::Error;
use std::path::Path;

/// A checkpoint's tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`; `Ok(None)` when the directory has none.
    pub fn from_dir(dir: &Path) -> Result<Option<Tokenizer>, Error> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Ok(None);
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: cannot load tokenizer: {e}", path.display())))?;
        Ok(Some(Tokenizer { inner }))
    }

    /// Token ids of `text`, without added special tokens (these models take none).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, Error> {
        let enc =
            self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("cannot encode the prompt: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String, Error> {
        let ids: Vec<u32> = ids.iter().map(|&i| u32::try_from(i).unwrap_or(u32::MAX)).collect();
        self.inner.decode(&ids, false).map_err(|e| Error::Tokenizer(format!("cannot decode tokens: {e}")))
    }
}

/// Turns a stream of token ids into a stream of text pieces, holding back a partial character.
#[derive(Debug, Default)]
pub struct TextStream {
    pending: Vec<i64>,
    printed: usize,
}

impl TextStream {
    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: i64) -> Result<String, Error> {
        self.pending.push(id);
        let text = tokenizer.decode(&self.pending)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.printed..).unwrap_or_default().to_string();
        self.printed = text.len();
        // Start a new window at a token boundary once it grows, so decoding stays O(window).
        if self.pending.len() >= 32 {
            self.pending.clear();
            self.printed = 0;
        }
        Ok(new)
    }
}
