//! `kiln eval`: the perplexity of a model on a text file (or a file of token ids), on the
//! held-out part `kiln train` validates on or on the whole file.
//!
//! The text is tokenized by the model directory's `tokenizer.json` (a character-level model made
//! by `kiln train` or `kiln demo` saves its character vocabulary as one), exactly as `kiln train`
//! tokenized it, and the held-out part is the trainer's validation tail
//! ([`train::validation_start`]), so the numbers are on text the model was not trained on. A
//! model without a tokenizer is evaluated on token ids (`--ids`). The computation itself is
//! [`crate::eval::perplexity`].

use super::LoadArgs;
use crate::eval::{perplexity, Context, EvalOptions, EvalReport};
use crate::{train, Error, Model, Tokenizer};
use clap::{ArgGroup, Args, ValueEnum};
use std::collections::hash_map::{Entry, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which tokens of the file are evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// The last --val-fraction of the tokens: the validation tail `kiln train` holds out.
    #[default]
    HeldOut,
    /// Every token of the file.
    All,
}

/// Measure a model's perplexity on a text or on token ids.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["data", "ids"])))]
pub struct EvalArgs {
    /// A model directory (config.json + model.safetensors); its tokenizer.json tokenizes --data.
    pub model_dir: PathBuf,
    /// The UTF-8 text to evaluate, tokenized by the model's tokenizer.json as `kiln train` does.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Evaluate these token ids instead of a text (for a model without tokenizer.json): a file of
    /// integers separated by commas and/or whitespace.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub ids: Option<PathBuf>,
    /// Which tokens: `held-out` is the last --val-fraction of them (what `kiln train` validates
    /// on); `all` is every token.
    #[arg(long, value_enum, default_value_t = SplitArg::HeldOut)]
    pub split: SplitArg,
    /// The fraction of the tokens held out, as given to `kiln train` (whose default, also the
    /// demo's, it is).
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Evaluate only the first N tokens of the split (N − 1 predictions).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Tokens per forward call. The state is carried from window to window, so the result is
    /// that of one pass over all the tokens whatever N is; N bounds the memory.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub window: usize,
    /// Start every window from a fresh state and score only the predictions inside it, as
    /// `kiln train` measures its validation loss (give --window its --seq-len).
    #[arg(long)]
    pub per_window: bool,
    /// Print the result as one JSON object on one line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The tokens of the input file, and for a character-level tokenization the UTF-8 length of
/// each token's character (to report bits per character and per byte).
struct Input {
    path: PathBuf,
    tokens: Vec<i64>,
    char_bytes: Option<Vec<usize>>,
}

/// Runs `kiln eval` and prints its report.
pub(super) fn run(args: &EvalArgs, out: &mut dyn Write) -> Result<(), Error> {
    let context = if args.per_window { Context::PerWindow } else { Context::Carried };
    let options = EvalOptions { window: args.window, context };
    options.validate()?;
    // Input errors (a missing file, an unknown character) come before the model is compiled.
    let input = read_input(args)?;
    let model = Model::load(&args.model_dir, &args.load.clone().load_options()?)?;
    let vocab = model.vocab_size().ok_or(crate::eval::EvalError::NoVocabulary)?;
    train::check_vocab(&input.path, &input.tokens, vocab)?;

    let start = match args.split {
        SplitArg::HeldOut => train::validation_start(input.tokens.len(), args.val_fraction)?,
        SplitArg::All => 0,
    };
    let mut end = input.tokens.len();
    if let Some(max) = args.max_tokens {
        end = end.min(start.saturating_add(max));
    }
    let tokens = &input.tokens[start..end];
    if tokens.len() < 2 {
        let part = match args.split {
            SplitArg::HeldOut => {
                format!("the held-out last {} of its {} tokens", args.val_fraction, input.tokens.len())
            }
            SplitArg::All => "the file".to_string(),
        };
        let n = tokens.len();
        let reason = format!(
            "{part} leaves {n} token{} to evaluate; perplexity needs at least 2",
            if n == 1 { "" } else { "s" }
        );
        return Err(train::TrainError::Data { path: input.path.clone(), reason }.into());
    }
    let report = perplexity(&model, tokens, &options)?;
    // For a character-level model, the bytes of the characters predicted.
    let bytes = input.char_bytes.as_ref().map(|lens| {
        let windows = crate::eval::windows(tokens.len(), &options).unwrap_or_default();
        windows.into_iter().flat_map(|w| w.scored).map(|p| lens[start + p]).sum::<usize>()
    });
    let summary = Summary { args, path: &input.path, range: (start, end), total: input.tokens.len(), report, bytes };
    let text = if args.json { summary.json() } else { summary.table() };
    out.write_all(text.as_bytes()).map_err(|source| Error::Io { path: "<stdout>".into(), source })
}

/// The tokens of `--data` (through the model's tokenizer) or `--ids`.
fn read_input(args: &EvalArgs) -> Result<Input, Error> {
    let (path, from_text) = match (&args.data, &args.ids) {
        (Some(path), _) => (path, true),
        (None, Some(path)) => (path, false),
        (None, None) => return Err(Error::Usage("give the text with --data FILE or token ids with --ids FILE".into())),
    };
    let data_error = |reason: String| Error::from(train::TrainError::Data { path: path.clone(), reason });
    if !from_text {
        let text = train::read_text(path)?;
        return Ok(Input { path: path.clone(), tokens: parse_ids(&text).map_err(data_error)?, char_bytes: None });
    }
    let Some(tokenizer) = Tokenizer::from_dir(&args.model_dir)? else {
        return Err(Error::Usage(format!(
            "{} has no tokenizer.json to tokenize {} with; give token ids with --ids FILE",
            args.model_dir.display(),
            path.display()
        )));
    };
    let text = train::read_text(path)?;
    if text.is_empty() {
        return Err(data_error("the text is empty".into()));
    }
    let tokens = tokenizer.encode(&text)?;
    let char_bytes = character_level(&tokenizer, &text, &tokens)?;
    Ok(Input { path: path.clone(), tokens, char_bytes })
}

/// Integers separated by commas and/or whitespace; a bad item is an error naming it.
fn parse_ids(text: &str) -> Result<Vec<i64>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .enumerate()
        .map(|(i, item)| item.parse::<i64>().map_err(|_| format!("item {} (`{item}`) is not a token id", i + 1)))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|ids| if ids.is_empty() { Err("there are no token ids in it".into()) } else { Ok(ids) })
}

/// When every token of `tokens` is one character of `text` (a character-level tokenizer such as
/// the one `kiln train` saves), the UTF-8 length of each; otherwise `None`.
fn character_level(tokenizer: &Tokenizer, text: &str, tokens: &[i64]) -> Result<Option<Vec<usize>>, Error> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() != tokens.len() {
        return Ok(None);
    }
    let mut decoded = HashMap::new();
    for (&id, &c) in tokens.iter().zip(&chars) {
        let piece = match decoded.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(tokenizer.decode(&[id])?),
        };
        if piece.as_str() != c.encode_utf8(&mut [0u8; 4]) {
            return Ok(None);
        }
    }
    Ok(Some(chars.iter().map(|c| c.len_utf8()).collect()))
}

/// What `kiln eval` prints.
struct Summary<'a> {
    args: &'a EvalArgs,
    path: &'a Path,
    /// The evaluated token positions of the file.
    range: (usize, usize),
    /// Tokens in the file.
    total: usize,
    report: EvalReport,
    /// Bytes of the predicted characters (character-level models).
    bytes: Option<usize>,
}

impl Summary<'_> {
    fn split(&self) -> &'static str {
        match self.args.split {
            SplitArg::HeldOut => "held-out",
            SplitArg::All => "all",
        }
    }

    fn context(&self) -> &'static str {
        if self.args.per_window {
            "per-window"
        } else {
            "carried"
        }
    }

    fn bits(&self) -> f64 {
        self.report.nll_sum / std::f64::consts::LN_2
    }

    fn table(&self) -> String {
        let r = &self.report;
        let (start, end) = self.range;
        let part = match self.args.split {
            SplitArg::HeldOut => format!("held-out (the last {} of the tokens)", self.args.val_fraction),
            SplitArg::All => "all".to_string(),
        };
        let state = if self.args.per_window { "a fresh state per window" } else { "the state carried across them" };
        let mut text = format!(
            "model:       {}\ndata:        {} ({} tokens), split {part}: tokens {start}..{end}\n",
            self.args.model_dir.display(),
            self.path.display(),
            self.total
        );
        text += &format!(
            "evaluated:   {} tokens, {} predicted, in windows of {} with {state}\n",
            end - start,
            r.predicted,
            self.args.window
        );
        text += &format!("mean NLL:    {:.6} nats/token\n", r.mean_nll());
        text += &format!("perplexity:  {:.4}\n", r.perplexity());
        text += &format!("bits/token:  {:.4}\n", r.bits_per_token());
        if let Some(bytes) = self.bytes {
            text += &format!("bits/char:   {:.4}\n", r.bits_per_token());
            text += &format!("bits/byte:   {:.4}\n", self.bits() / bytes as f64);
        }
        text += &format!("speed:       {:.0} tokens/s\n", r.tokens_per_s());
        text
    }

    fn json(&self) -> String {
        let r = &self.report;
        let (start, end) = self.range;
        let mut object = serde_json::json!({
            "model": self.args.model_dir.display().to_string(),
            "data": self.path.display().to_string(),
            "split": self.split(),
            "start": start,
            "end": end,
            "tokens": end - start,
            "predicted": r.predicted,
            "window": self.args.window,
            "context": self.context(),
            "nll_sum": r.nll_sum,
            "mean_nll": r.mean_nll(),
            "perplexity": r.perplexity(),
            "bits_per_token": r.bits_per_token(),
            "tokens_per_s": r.tokens_per_s(),
        });
        if let (Some(bytes), Some(map)) = (self.bytes, object.as_object_mut()) {
            map.insert("bits_per_char".into(), r.bits_per_token().into());
            map.insert("bits_per_byte".into(), (self.bits() / bytes as f64).into());
        }
        format!("{object}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_separated_by_commas_or_whitespace() {
        assert_eq!(parse_ids("1,2, 3\n4\t5,\n").unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(parse_ids("7 x 9").unwrap_err(), "item 2 (`x`) is not a token id");
        assert_eq!(parse_ids(" ,\n").unwrap_err(), "there are no token ids in it");
    }
}
