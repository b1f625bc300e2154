//! The progress bar of a run (`indicatif`, drawn on stderr and hidden when stderr is not a
//! terminal): steps done of the total, and the latest training loss, validation loss, learning
//! rate and tokens/s. Lines printed through [`Progress::println`] appear above the bar without
//! tearing it, or on the writer alone when the bar is hidden.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;

/// A run's progress bar.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    val_loss: Option<f64>,
}

impl Progress {
    /// A bar over `total` steps starting at `done`; `visible: false` draws nothing.
    pub fn new(total: u64, done: u64, visible: bool) -> Progress {
        let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        // The template is a constant, so parsing cannot fail; fall back to the default style anyway.
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} {bar:30} {pos}/{len} steps  {msg}  eta {eta}")
        {
            bar.set_style(style);
        }
        bar.set_position(done);
        Progress { bar, val_loss: None }
    }

    /// Shows step `step` done with its loss, learning rate and tokens/s.
    pub fn step(&self, step: u64, train_loss: f64, lr: f64, tokens_per_s: f64) {
        let val = self.val_loss.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        self.bar.set_message(format!("loss {train_loss:.4}  val {val}  lr {lr:.2e}  {:.0} tok/s", tokens_per_s));
        self.bar.set_position(step);
    }

    /// Remembers the latest validation loss for the bar.
    pub fn validation(&mut self, val_loss: f64) {
        self.val_loss = Some(val_loss);
    }

    /// Writes `line` to `out` with the bar lifted out of the way.
    pub fn println(&self, out: &mut dyn Write, line: &str) -> std::io::Result<()> {
        self.bar.suspend(|| writeln!(out, "{line}"))
    }

    /// Leaves the final state of the bar on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }
}
