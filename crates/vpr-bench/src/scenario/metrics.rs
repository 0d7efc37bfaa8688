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
    Ok(sum_metric(&text, name))
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
}
