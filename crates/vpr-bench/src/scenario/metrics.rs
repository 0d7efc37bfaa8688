//! Reads counters from the server's Prometheus `/metrics` endpoint.

/// Failure to read `/metrics`.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The request failed or returned a status other than 200.
    #[error("GET {url} failed: {reason}")]
    Request {
        /// URL of the request.
        url: String,
        /// Transport error or status.
        reason: String,
    },
}

/// Fetches `/metrics` from `http_base` and returns the sum of every sample
/// of `name`, or `None` if the text has no sample of it.
pub async fn fetch_metric_sum(
    http: &reqwest::Client,
    http_base: &str,
    name: &str,
) -> Result<Option<f64>, MetricsError> {
    Ok(sum_metric(&fetch_metrics(http, http_base).await?, name))
}

/// Fetches the text of `/metrics` from `http_base`.
pub async fn fetch_metrics(http: &reqwest::Client, http_base: &str) -> Result<String, MetricsError> {
    let url = format!("{}/metrics", http_base.trim_end_matches('/'));
    let request_error = |reason: String| MetricsError::Request {
        url: url.clone(),
        reason,
    };
    let response = http
        .get(&url)
        .send()
        .await
        .map_err(|error| request_error(error.to_string()))?;
    if !response.status().is_success() {
        return Err(request_error(format!("status {}", response.status())));
    }
    let text = response
        .text()
        .await
        .map_err(|error| request_error(error.to_string()))?;
    Ok(text)
}

/// Sums every sample of metric `name` in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        // The value follows the labels; a timestamp may follow the value.
        let after_labels = match rest.rfind('}') {
            Some(end) => &rest[end + 1..],
            None => rest,
        };
        if let Some(value) = after_labels
            .split_whitespace()
            .next()
            .and_then(|value| value.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// Returns the cumulative buckets of histogram `name` as `(upper bound, count)`,
/// in the order the text gives them (ascending, `+Inf` last).
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (bound, rest) = rest.split_once("\"}")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Delays counted by a server histogram between two readings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HistogramWindow {
    /// Samples counted in the window.
    pub count: u64,
    /// Upper bound of the bucket that contains the median, ms.
    pub p50_at_most_ms: Option<f64>,
    /// Upper bound of the bucket that contains the 99th percentile, ms;
    /// `None` when it falls in the last, unbounded bucket.
    pub p99_at_most_ms: Option<f64>,
}

impl HistogramWindow {
    /// Subtracts the `before` buckets from the `after` buckets; `None`
    /// when the bounds differ or nothing was counted in between.
    pub fn between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<Self> {
        if before.len() != after.len() || before.iter().zip(after).any(|(b, a)| b.0 != a.0) {
            return None;
        }
        let cumulative: Vec<(f64, f64)> = before.iter().zip(after).map(|(b, a)| (a.0, a.1 - b.1)).collect();
        let total = cumulative.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let at_most = |fraction: f64| {
            let bound = cumulative.iter().find(|(_, count)| *count >= fraction * total)?.0;
            bound.is_finite().then_some(bound * 1000.0)
        };
        Some(Self {
            count: total as u64,
            p50_at_most_ms: at_most(0.5),
            p99_at_most_ms: at_most(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_labelled_samples_of_one_name() {
        let text = "# TYPE vpr_udp_bytes_sent_total counter\n\
                    vpr_udp_bytes_sent_total 1000\n\
                    vpr_udp_bytes_sent_total_extra 5\n\
                    vpr_rtp_forwarded_total{kind=\"video\"} 30\n\
                    vpr_rtp_forwarded_total{kind=\"audio\"} 12 1700000000000\n";
        assert_eq!(sum_metric(text, "vpr_udp_bytes_sent_total"), Some(1000.0));
        assert_eq!(sum_metric(text, "vpr_rtp_forwarded_total"), Some(42.0));
        assert_eq!(sum_metric(text, "vpr_rooms"), None);
    }

    #[test]
    fn histogram_window_reads_percentile_buckets() {
        let before = "d_bucket{le=\"0.0005\"} 10\nd_bucket{le=\"0.001\"} 10\nd_bucket{le=\"0.002\"} 10\nd_bucket{le=\"+Inf\"} 10\n";
        let after = "d_bucket{le=\"0.0005\"} 900\nd_bucket{le=\"0.001\"} 980\nd_bucket{le=\"0.002\"} 1009\nd_bucket{le=\"+Inf\"} 1010\n";
        let before = histogram_buckets(before, "d");
        assert_eq!(before[3], (f64::INFINITY, 10.0));
        let window = HistogramWindow::between(&before, &histogram_buckets(after, "d")).unwrap();
        assert_eq!(window.count, 1000);
        assert_eq!(window.p50_at_most_ms, Some(0.5));
        assert_eq!(window.p99_at_most_ms, Some(2.0));
        assert_eq!(HistogramWindow::between(&before, &before), None);
    }
}
