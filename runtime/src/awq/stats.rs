//! Activation statistics of one weight's input channels: the per-channel mean `|x|` over every
//! calibration row, and an evenly strided sample of the rows themselves.
//!
//! Guarantees: a [`ChannelStats`] always has at least one channel and one sampled row, finite
//! values, non-negative means, and `rows.len() == sampled_rows · channels`. The sample depends
//! only on the order and number of rows (row `i` of `total` is kept when `i % stride == 0`, with
//! `stride = ⌈total / max_rows⌉`), so the same calibration text always gives the same rows.

use super::AwqError;

/// Per-channel activation statistics of one weight's products.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelStats {
    mean_abs: Vec<f32>,
    rows: Vec<f32>,
    rows_seen: usize,
}

impl ChannelStats {
    /// Statistics from parts, validated: `mean_abs` has one finite, non-negative value per
    /// channel, `rows` holds whole rows of finite values (at least one), `rows_seen` counts the
    /// rows the means were taken over (at least the sampled ones).
    pub fn new(mean_abs: Vec<f32>, rows: Vec<f32>, rows_seen: usize) -> Result<ChannelStats, AwqError> {
        let k = mean_abs.len();
        if k == 0 {
            return Err(AwqError::NoChannels);
        }
        finite("mean |x|", &mean_abs)?;
        if let Some((channel, &value)) = mean_abs.iter().enumerate().find(|(_, &v)| v < 0.0) {
            return Err(AwqError::NegativeMean { channel, value });
        }
        if !rows.len().is_multiple_of(k) {
            return Err(AwqError::Length {
                what: "the sampled rows".into(),
                expected: format!("a multiple of the {k} channels"),
                actual: rows.len(),
            });
        }
        if rows.is_empty() {
            return Err(AwqError::NoRows { channels: k });
        }
        finite("the sampled rows", &rows)?;
        let sampled = rows.len() / k;
        if rows_seen < sampled {
            return Err(AwqError::Length {
                what: "the rows seen".into(),
                expected: format!("at least the {sampled} sampled rows"),
                actual: rows_seen,
            });
        }
        Ok(ChannelStats { mean_abs, rows, rows_seen })
    }

    /// Statistics of every row of `rows` (row-major, `k` channels), sampling at most `max_rows`.
    pub fn from_rows(k: usize, rows: &[f32], max_rows: usize) -> Result<ChannelStats, AwqError> {
        if k == 0 {
            return Err(AwqError::NoChannels);
        }
        if !rows.len().is_multiple_of(k) {
            return Err(AwqError::Length {
                what: "the activation rows".into(),
                expected: format!("a multiple of the {k} channels"),
                actual: rows.len(),
            });
        }
        let mut acc = StatsAccumulator::new(k, rows.len() / k, max_rows)?;
        acc.push(rows)?;
        acc.finish()
    }

    /// Input channels `K`.
    pub fn channels(&self) -> usize {
        self.mean_abs.len()
    }

    /// Mean `|x|` of each channel over every row seen.
    pub fn mean_abs(&self) -> &[f32] {
        &self.mean_abs
    }

    /// The sampled rows, row-major `[sampled_rows, channels]`.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    pub fn sampled_rows(&self) -> usize {
        self.rows.len() / self.channels()
    }

    /// Rows the means were taken over.
    pub fn rows_seen(&self) -> usize {
        self.rows_seen
    }
}

/// Accumulates [`ChannelStats`] from rows arriving in blocks, knowing the total in advance so
/// that the sample is evenly strided over all of them.
#[derive(Debug)]
pub(crate) struct StatsAccumulator {
    k: usize,
    total: usize,
    stride: usize,
    seen: usize,
    sums: Vec<f64>,
    rows: Vec<f32>,
}

impl StatsAccumulator {
    /// For `total` rows of `k` channels, keeping at most `max_rows` of them.
    pub(crate) fn new(k: usize, total: usize, max_rows: usize) -> Result<StatsAccumulator, AwqError> {
        if k == 0 {
            return Err(AwqError::NoChannels);
        }
        if max_rows == 0 {
            return Err(AwqError::ZeroOption { what: "maximum of sampled rows" });
        }
        let stride = total.div_ceil(max_rows).max(1);
        Ok(StatsAccumulator {
            k,
            total,
            stride,
            seen: 0,
            sums: vec![0.0; k],
            rows: Vec::with_capacity(total.div_ceil(stride) * k),
        })
    }

    /// Adds the next rows (row-major, whole rows of `k` channels).
    pub(crate) fn push(&mut self, block: &[f32]) -> Result<(), AwqError> {
        let k = self.k;
        let count = block.len() / k;
        if !block.len().is_multiple_of(k) || self.seen + count > self.total {
            return Err(AwqError::Length {
                what: "a block of activation rows".into(),
                expected: format!("whole rows of {k} channels, {} rows in all", self.total),
                actual: block.len(),
            });
        }
        finite("the activation rows", block)?;
        for (i, row) in block.chunks_exact(k).enumerate() {
            for (s, &x) in self.sums.iter_mut().zip(row) {
                *s += f64::from(x.abs());
            }
            if (self.seen + i).is_multiple_of(self.stride) {
                self.rows.extend_from_slice(row);
            }
        }
        self.seen += count;
        Ok(())
    }

    /// The statistics of every row pushed (which must be the announced total).
    pub(crate) fn finish(self) -> Result<ChannelStats, AwqError> {
        if self.seen != self.total {
            return Err(AwqError::Length {
                what: "the activation rows pushed".into(),
                expected: format!("the {} announced", self.total),
                actual: self.seen,
            });
        }
        if self.seen == 0 {
            return Err(AwqError::NoRows { channels: self.k });
        }
        let n = self.seen as f64;
        let mean_abs = self.sums.iter().map(|&s| (s / n) as f32).collect();
        ChannelStats::new(mean_abs, self.rows, self.seen)
    }
}

/// Fails on the first non-finite value of `values`.
pub(crate) fn finite(what: &str, values: &[f32]) -> Result<(), AwqError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(AwqError::NonFinite { what: what.into(), index, value: values[index] }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_evenly_strided_and_the_means_cover_every_row() {
        // 10 rows of 2 channels, row i = [i, -2i]; at most 4 rows: stride 3, rows 0, 3, 6, 9.
        let rows: Vec<f32> = (0..10).flat_map(|i| [i as f32, -2.0 * i as f32]).collect();
        let stats = ChannelStats::from_rows(2, &rows, 4).unwrap();
        assert_eq!(stats.rows(), &[0.0, 0.0, 3.0, -6.0, 6.0, -12.0, 9.0, -18.0]);
        assert_eq!(stats.mean_abs(), &[4.5, 9.0]);
        assert_eq!((stats.sampled_rows(), stats.rows_seen(), stats.channels()), (4, 10, 2));
    }

    #[test]
    fn blocks_give_the_same_statistics_as_one_push() {
        let rows: Vec<f32> = (0..21 * 3).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let whole = ChannelStats::from_rows(3, &rows, 5).unwrap();
        let mut acc = StatsAccumulator::new(3, 21, 5).unwrap();
        for block in rows.chunks(4 * 3) {
            acc.push(block).unwrap();
        }
        assert_eq!(acc.finish().unwrap(), whole);
        assert_eq!(whole.sampled_rows(), 5);
    }

    #[test]
    fn bad_statistics_are_errors() {
        assert!(matches!(ChannelStats::from_rows(0, &[], 4), Err(AwqError::NoChannels)));
        assert!(matches!(ChannelStats::from_rows(3, &[], 4), Err(AwqError::NoRows { channels: 3 })));
        assert!(matches!(ChannelStats::from_rows(2, &[1.0, 2.0, 3.0], 4), Err(AwqError::Length { .. })));
        assert!(matches!(ChannelStats::from_rows(2, &[1.0, f32::NAN], 4), Err(AwqError::NonFinite { index: 1, .. })));
        assert!(matches!(ChannelStats::from_rows(2, &[1.0, 2.0], 0), Err(AwqError::ZeroOption { .. })));
        assert!(matches!(ChannelStats::new(vec![1.0, f32::NAN], vec![1.0, 1.0], 1), Err(AwqError::NonFinite { .. })));
        assert!(matches!(
            ChannelStats::new(vec![1.0, -1.0], vec![1.0, 1.0], 1),
            Err(AwqError::NegativeMean { channel: 1, .. })
        ));
        assert!(matches!(ChannelStats::new(vec![1.0], vec![1.0, 1.0], 1), Err(AwqError::Length { .. })));
        let mut acc = StatsAccumulator::new(2, 1, 4).unwrap();
        assert!(acc.push(&[1.0, 2.0, 3.0, 4.0]).is_err(), "more rows than announced");
        assert!(matches!(StatsAccumulator::new(2, 3, 4).unwrap().finish(), Err(AwqError::Length { .. })));
    }
}
