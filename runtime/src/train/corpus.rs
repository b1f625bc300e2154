//! The tokens of a training text for a given model: through the model directory's
//! `tokenizer.json`, or, when it has none (a model made by `kiln init` to train from scratch),
//! by characters with a [`CharVocab`] of the text, which the caller saves with the result so that
//! the trained model can print text.

use super::chars::CharVocab;
use super::data::read_text;
use super::TrainError;
use crate::{Error, Tokenizer};
use std::path::Path;

/// How a text was tokenized.
#[derive(Debug)]
pub enum TextTokens {
    /// By the model's own `tokenizer.json`.
    Model,
    /// By the characters of the text (no `tokenizer.json` in the model directory).
    Chars(CharVocab),
}

/// Reads the text file `data` and tokenizes it for the model in `model_dir` (see the module
/// docs). A character vocabulary larger than `vocab` (the model's) is an error naming both sizes.
pub fn tokenize_file(model_dir: &Path, data: &Path, vocab: usize) -> Result<(Vec<i64>, TextTokens), Error> {
    let text = read_text(data)?;
    if let Some(tokenizer) = Tokenizer::from_dir(model_dir)? {
        return Ok((tokenizer.encode(&text)?, TextTokens::Model));
    }
    let chars = CharVocab::from_text(&text);
    if chars.len() > vocab {
        return Err(TrainError::Data {
            path: data.to_path_buf(),
            reason: format!(
                "{} has no tokenizer.json, and the text's {} distinct characters do not fit its vocabulary of {vocab}",
                model_dir.display(),
                chars.len()
            ),
        }
        .into());
    }
    let tokens = chars.encode(&text)?;
    Ok((tokens, TextTokens::Chars(chars)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_without_a_tokenizer_and_the_tokenizer_with_one() {
        let dir = std::env::temp_dir().join(format!("kiln-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("text.txt");
        std::fs::write(&data, "abcab\n").unwrap();
        let (tokens, how) = tokenize_file(&dir, &data, 4).unwrap();
        assert_eq!(tokens, vec![1, 2, 3, 1, 2, 0]);
        let TextTokens::Chars(vocab) = how else { panic!("expected a character vocabulary") };
        let err = tokenize_file(&dir, &data, 3).unwrap_err().to_string();
        assert!(err.contains("4 distinct characters do not fit its vocabulary of 3"), "{err}");

        // With the character tokenizer saved as the model's, the same tokens come back through it.
        vocab.save(&dir.join("tokenizer.json")).unwrap();
        let (again, how) = tokenize_file(&dir, &data, 4).unwrap();
        assert_eq!(again, tokens);
        assert!(matches!(how, TextTokens::Model));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
