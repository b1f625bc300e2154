//! A character-level vocabulary for training from scratch: one token per distinct character of a
//! text, numbered in character order (so the same text always gives the same ids).
//!
//! It saves as a Hugging Face `tokenizer.json` that the `tokenizers` crate (and so
//! [`crate::Tokenizer`], `kiln generate`) and transformers' `PreTrainedTokenizerFast` load: a BPE
//! model whose vocabulary is the single characters and which has no merges, no normalizer and no
//! pre-tokenizer (so every character, spaces and newlines included, is its own token), and a
//! `Fuse` decoder that joins the tokens' text with nothing in between.

use super::atomic::write_atomically;
use super::TrainError;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The distinct characters of a text, each a token.
#[derive(Clone, Debug, PartialEq)]
pub struct CharVocab {
    chars: Vec<char>,
    ids: HashMap<char, i64>,
}

impl CharVocab {
    /// The vocabulary of `text`: its distinct characters, in code-point order.
    pub fn from_text(text: &str) -> CharVocab {
        let chars: Vec<char> = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        let ids = chars.iter().zip(0..).map(|(&c, i)| (c, i)).collect();
        CharVocab { chars, ids }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The token id of every character of `text`; a character outside the vocabulary is an
    /// error naming it and its line and column.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, TrainError> {
        let mut ids = Vec::with_capacity(text.len());
        let (mut line, mut column) = (1, 1);
        for c in text.chars() {
            let id = self.ids.get(&c).ok_or_else(|| {
                TrainError::InvalidOption(format!(
                    "character {c:?} at line {line}, column {column} is not in the {}-character vocabulary",
                    self.len()
                ))
            })?;
            ids.push(*id);
            (line, column) = if c == '\n' { (line + 1, 1) } else { (line, column + 1) };
        }
        Ok(ids)
    }

    /// The text of `ids`; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String, TrainError> {
        ids.iter()
            .map(|&id| {
                usize::try_from(id).ok().and_then(|i| self.chars.get(i).copied()).ok_or_else(|| {
                    TrainError::InvalidOption(format!("token id {id} is outside the {}-token vocabulary", self.len()))
                })
            })
            .collect()
    }

    /// The `tokenizer.json` document (see the module docs).
    pub fn tokenizer_json(&self) -> serde_json::Value {
        let vocab: serde_json::Map<String, serde_json::Value> =
            self.chars.iter().zip(0u32..).map(|(c, i)| (c.to_string(), i.into())).collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": { "type": "Fuse" },
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": [],
            },
        })
    }

    /// [`CharVocab::tokenizer_json`] as the text of a `tokenizer.json` file.
    pub fn tokenizer_json_text(&self) -> Result<String, TrainError> {
        let text = serde_json::to_string_pretty(&self.tokenizer_json())
            .map_err(|e| TrainError::InvalidOption(format!("cannot serialize the vocabulary: {e}")))?;
        Ok(format!("{text}\n"))
    }

    /// Writes [`CharVocab::tokenizer_json_text`] to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        write_atomically(path, self.tokenizer_json_text()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\té ✓\n";

    #[test]
    fn ids_follow_character_order_and_roundtrip() {
        let vocab = CharVocab::from_text(TEXT);
        assert_eq!(vocab.encode("\t\n ").unwrap(), vec![0, 1, 2]);
        let ids = vocab.encode(TEXT).unwrap();
        assert_eq!(ids.len(), TEXT.chars().count());
        assert_eq!(vocab.decode(&ids).unwrap(), TEXT);
        let err = vocab.encode("ok\nQQ").unwrap_err().to_string();
        assert!(err.contains("'Q' at line 2, column 1"), "{err}");
        assert!(vocab.decode(&[vocab.len() as i64]).is_err());
    }

    #[test]
    fn saved_tokenizer_json_encodes_and_decodes_like_the_vocabulary() {
        let vocab = CharVocab::from_text(TEXT);
        let dir = std::env::temp_dir().join(format!("kiln-chars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        vocab.save(&dir.join("tokenizer.json")).unwrap();
        let tokenizer = crate::Tokenizer::from_dir(&dir).unwrap().unwrap();
        let ids = tokenizer.encode(TEXT).unwrap();
        assert_eq!(ids, vocab.encode(TEXT).unwrap());
        assert_eq!(tokenizer.decode(&ids).unwrap(), TEXT);
        let mut stream = crate::tokenizer::TextStream::default();
        let streamed: String = ids.iter().map(|&id| stream.push(&tokenizer, id).unwrap()).collect();
        assert_eq!(streamed, TEXT);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
