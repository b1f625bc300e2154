//! The loss log: one JSON object per line in `train_log.jsonl` in the run's directory, so a
//! curve can be plotted or tabulated from it (`jq`, pandas, a spreadsheet).
//!
//! Each line is a [`LogRecord`]: `{"step":…,"train_loss":…,"val_loss":…,"lr":…,"tokens_per_s":…,
//! "grad_norm":…}`, with `null` for what was not measured at that step. Step 0 records the
//! validation loss before training. Lines are appended and flushed as steps finish; resuming
//! rewrites the file (atomically) without the lines past the checkpoint it resumes from, so the
//! log of an interrupted and resumed run reads like that of an uninterrupted one.

use super::atomic::write_atomically;
use super::TrainError;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Optimizer steps taken (the record of step `s` describes the `s`-th update).
    pub step: u64,
    /// Mean loss of the step's batch, before its update.
    pub train_loss: Option<f64>,
    /// Mean loss of the validation windows, after the update.
    pub val_loss: Option<f64>,
    /// The learning rate the update used.
    pub lr: Option<f64>,
    /// Training tokens per second of this step (objective calls, clipping and update).
    pub tokens_per_s: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
}

/// An open loss log, appended to.
#[derive(Debug)]
pub struct LossLog {
    path: PathBuf,
    file: File,
}

impl LossLog {
    /// Starts an empty log at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<LossLog, TrainError> {
        write_atomically(path, b"")?;
        LossLog::open_append(path)
    }

    /// Continues the log at `path` after step `step`: records past it are dropped (they will be
    /// recomputed), as is a line a crash cut short. A missing log starts empty.
    pub fn resume(path: &Path, step: u64) -> Result<LossLog, TrainError> {
        let kept: Vec<LogRecord> = if path.exists() {
            LossLog::read(path)?.into_iter().filter(|r| r.step <= step).collect()
        } else {
            Vec::new()
        };
        let mut text = String::new();
        for record in &kept {
            text.push_str(&to_line(path, record)?);
        }
        write_atomically(path, text.as_bytes())?;
        LossLog::open_append(path)
    }

    fn open_append(path: &Path) -> Result<LossLog, TrainError> {
        let file = OpenOptions::new().append(true).open(path).map_err(|source| TrainError::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(LossLog { path: path.to_path_buf(), file })
    }

    /// Appends `record` as one line and flushes it.
    pub fn append(&mut self, record: &LogRecord) -> Result<(), TrainError> {
        let line = to_line(&self.path, record)?;
        self.file.write_all(line.as_bytes()).and_then(|()| self.file.flush()).map_err(|source| TrainError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// Every complete record of the log at `path`; a last line that does not parse (cut short by
    /// a crash) is skipped, any other bad line is an error naming it.
    pub fn read(path: &Path) -> Result<Vec<LogRecord>, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let lines: Vec<&str> = text.lines().collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(record) => records.push(record),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(TrainError::Data { path: path.to_path_buf(), reason: format!("line {}: {e}", i + 1) })
                }
            }
        }
        Ok(records)
    }
}

fn to_line(path: &Path, record: &LogRecord) -> Result<String, TrainError> {
    let json = serde_json::to_string(record).map_err(|e| TrainError::Data {
        path: path.to_path_buf(),
        reason: format!("cannot serialize a record: {e}"),
    })?;
    Ok(format!("{json}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> LogRecord {
        LogRecord {
            step,
            train_loss: Some(1.5),
            val_loss: None,
            lr: Some(1e-3),
            tokens_per_s: Some(100.0),
            grad_norm: None,
        }
    }

    #[test]
    fn resume_drops_records_past_the_checkpoint_and_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("kiln-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train_log.jsonl");
        let mut log = LossLog::create(&path).unwrap();
        for step in 1..=4 {
            log.append(&record(step)).unwrap();
        }
        drop(log);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"step\":5,\"train_lo").unwrap();
        assert_eq!(LossLog::read(&path).unwrap().len(), 4);
        let mut log = LossLog::resume(&path, 2).unwrap();
        log.append(&record(3)).unwrap();
        let steps: Vec<u64> = LossLog::read(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(
            "{\"step\":1,\"train_loss\":1.5,\"val_loss\":null,\"lr\":0.001,\"tokens_per_s\":100.0,\"grad_norm\":null}\n"
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
