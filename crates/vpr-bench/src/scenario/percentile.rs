//! Percentiles of a sample by the nearest-rank method: the p-th percentile
//! is the smallest value with at least p percent of the sample at or below
//! it, so it is always a value that was measured.

use serde::Serialize;

/// 50th, 95th and 99th percentile and the maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// Computes the percentiles of `values`; `None` for an empty sample.
    /// NaN values are ignored.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|value| !value.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            p50: nearest_rank(&sorted, 50.0)?,
            p95: nearest_rank(&sorted, 95.0)?,
            p99: nearest_rank(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

impl Percentiles {
    /// Reads the percentiles of a delay histogram, in ms; `None` when it
    /// is empty.
    pub fn of_histogram(histogram: &crate::client::capture_time::DelayHistogram) -> Option<Self> {
        Some(Self {
            p50: histogram.percentile_ms(50.0)?,
            p95: histogram.percentile_ms(95.0)?,
            p99: histogram.percentile_ms(99.0)?,
            max: histogram.max_ms(),
        })
    }
}

/// Returns the `percent`-th percentile (0 to 100) of an ascending slice by
/// nearest rank, or `None` if the slice is empty.
pub fn nearest_rank(sorted: &[f64], percent: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_of_one_to_hundred() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 50.0), Some(50.0));
        assert_eq!(nearest_rank(&values, 95.0), Some(95.0));
        assert_eq!(nearest_rank(&values, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&values, 100.0), Some(100.0));
        assert_eq!(nearest_rank(&values, 0.0), Some(1.0));
    }

    #[test]
    fn nearest_rank_of_small_sample() {
        let values = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(nearest_rank(&values, 50.0), Some(20.0));
        assert_eq!(nearest_rank(&values, 51.0), Some(30.0));
        assert_eq!(nearest_rank(&values, 95.0), Some(40.0));
    }

    #[test]
    fn percentiles_sort_unsorted_input() {
        let percentiles = Percentiles::of(&[300.0, 100.0, 200.0, f64::NAN]).unwrap();
        assert_eq!(percentiles.p50, 200.0);
        assert_eq!(percentiles.p95, 300.0);
        assert_eq!(percentiles.p99, 300.0);
        assert_eq!(percentiles.max, 300.0);
    }

    #[test]
    fn percentiles_of_single_value() {
        let percentiles = Percentiles::of(&[42.0]).unwrap();
        assert_eq!((percentiles.p50, percentiles.p95, percentiles.p99), (42.0, 42.0, 42.0));
    }

    #[test]
    fn percentiles_of_empty_sample_is_none() {
        assert_eq!(Percentiles::of(&[]), None);
        assert_eq!(Percentiles::of(&[f64::NAN]), None);
    }
}
