//! Checks a run's measurements against the scenario's thresholds.

use serde::Serialize;

use super::config::Thresholds;

/// Measurements that thresholds apply to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// 95th percentile of CreateRoom to first complete frame, in ms; `None`
    /// when no subscriber received a frame.
    pub first_frame_p95_ms: Option<f64>,
    /// Video frames received over frames expected; `None` when no frame
    /// was expected.
    pub receive_ratio: Option<f64>,
    /// Participants whose join failed.
    pub failed_joins: u64,
}

/// Outcome of one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdResult {
    /// Name of the threshold, as the CLI flag without dashes in front.
    pub name: &'static str,
    /// Limit from the scenario.
    pub limit: f64,
    /// Measured value; `None` when the run produced nothing to measure,
    /// which misses the threshold.
    pub measured: Option<f64>,
    /// Whether the measured value is within the limit.
    pub passed: bool,
}

impl ThresholdResult {
    /// Describes the outcome in one line, e.g. for the summary.
    pub fn describe(&self) -> String {
        let verdict = if self.passed { "met" } else { "missed" };
        format!("{}: {verdict} ({})", self.name, self.values())
    }

    /// Returns the measured value and the limit, e.g. "measured 3200, limit 3000".
    pub fn values(&self) -> String {
        match self.measured {
            Some(measured) => format!(
                "measured {}, limit {}",
                format_number(measured),
                format_number(self.limit)
            ),
            None => format!("nothing measured, limit {}", format_number(self.limit)),
        }
    }
}

/// Checks every threshold that is set; returns one result per threshold, in
/// a fixed order.
pub fn check(thresholds: &Thresholds, measured: &Measured) -> Vec<ThresholdResult> {
    let mut results = Vec::new();
    if let Some(limit) = thresholds.max_first_frame_p95_ms {
        let value = measured.first_frame_p95_ms;
        results.push(ThresholdResult {
            name: "max-first-frame-p95-ms",
            limit,
            measured: value,
            passed: value.is_some_and(|value| value <= limit),
        });
    }
    if let Some(limit) = thresholds.min_receive_ratio {
        let value = measured.receive_ratio;
        results.push(ThresholdResult {
            name: "min-receive-ratio",
            limit,
            measured: value,
            passed: value.is_some_and(|value| value >= limit),
        });
    }
    if let Some(limit) = thresholds.max_failed_joins {
        let value = measured.failed_joins as f64;
        results.push(ThresholdResult {
            name: "max-failed-joins",
            limit: limit as f64,
            measured: Some(value),
            passed: value <= limit as f64,
        });
    }
    results
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_set() -> Thresholds {
        Thresholds {
            max_first_frame_p95_ms: Some(3000.0),
            min_receive_ratio: Some(0.9),
            max_failed_joins: Some(0),
        }
    }

    #[test]
    fn unset_thresholds_give_no_results() {
        let results = check(&Thresholds::default(), &Measured::default());
        assert!(results.is_empty());
    }

    #[test]
    fn values_within_limits_pass() {
        let measured = Measured {
            first_frame_p95_ms: Some(3000.0),
            receive_ratio: Some(0.9),
            failed_joins: 0,
        };
        let results = check(&all_set(), &measured);
        assert_eq!(results.len(), 3);
        for result in &results {
            assert!(result.passed, "{}", result.describe());
        }
    }

    #[test]
    fn slow_first_frame_misses() {
        let measured = Measured {
            first_frame_p95_ms: Some(3000.5),
            receive_ratio: Some(1.0),
            failed_joins: 0,
        };
        let results = check(&all_set(), &measured);
        assert_eq!(results[0].name, "max-first-frame-p95-ms");
        assert!(!results[0].passed);
        assert!(results[1].passed);
        assert_eq!(
            results[0].describe(),
            "max-first-frame-p95-ms: missed (measured 3000.500, limit 3000)"
        );
    }

    #[test]
    fn low_receive_ratio_misses() {
        let measured = Measured {
            first_frame_p95_ms: Some(100.0),
            receive_ratio: Some(0.899),
            failed_joins: 0,
        };
        let results = check(&all_set(), &measured);
        assert_eq!(results[1].name, "min-receive-ratio");
        assert!(!results[1].passed);
    }

    #[test]
    fn failed_joins_over_limit_miss() {
        let measured = Measured {
            first_frame_p95_ms: Some(100.0),
            receive_ratio: Some(1.0),
            failed_joins: 1,
        };
        let results = check(&all_set(), &measured);
        assert_eq!(results[2].name, "max-failed-joins");
        assert!(!results[2].passed);
        assert_eq!(results[2].measured, Some(1.0));
    }

    #[test]
    fn nothing_measured_misses() {
        let results = check(&all_set(), &Measured::default());
        assert!(!results[0].passed);
        assert!(!results[1].passed);
        assert!(results[2].passed);
        assert_eq!(
            results[0].describe(),
            "max-first-frame-p95-ms: missed (nothing measured, limit 3000)"
        );
    }
}
