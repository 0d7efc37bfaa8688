//! The HTTP half of WHIP (RFC 9725) and WHEP: POST an SDP offer, read the
//! answer and the session URL, DELETE the session to end it.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use super::error::ClientError;

/// Media type of SDP bodies.
pub const SDP_CONTENT_TYPE: &str = "application/sdp";

/// A session created by a WHIP or WHEP POST.
#[derive(Debug, Clone)]
pub struct SignaledSession {
    /// Absolute session URL from the `Location` header, the target of DELETE.
    pub session_url: Url,
    /// SDP answer from the response body.
    pub answer_sdp: String,
}

/// Sends `offer_sdp` to `endpoint` with the join token as bearer and returns
/// the created session. Any status other than `201 Created` is an error that
/// carries the response body.
pub async fn post_offer(
    http: &reqwest::Client,
    endpoint: &str,
    token: &str,
    offer_sdp: String,
) -> Result<SignaledSession, ClientError> {
    let endpoint_url = parse_url(endpoint)?;
    let response = http
        .post(endpoint_url.clone())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, SDP_CONTENT_TYPE)
        .body(offer_sdp)
        .send()
        .await
        .map_err(|source| http_error(endpoint, source))?;

    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .text()
        .await
        .map_err(|source| http_error(endpoint, source))?;

    if status != StatusCode::CREATED {
        return Err(ClientError::UnexpectedStatus {
            method: "POST",
            url: endpoint.to_owned(),
            status,
            expected: StatusCode::CREATED,
            body,
        });
    }

    // The Location may be relative to the endpoint (RFC 9725 section 4.2).
    let session_url = location
        .and_then(|location| endpoint_url.join(&location).ok())
        .ok_or_else(|| ClientError::MissingLocation {
            url: endpoint.to_owned(),
        })?;
    Ok(SignaledSession {
        session_url,
        answer_sdp: body,
    })
}

/// Ends a session with `DELETE` on its URL. Accepts any 2xx status.
pub async fn delete_session(
    http: &reqwest::Client,
    session_url: &Url,
    token: &str,
) -> Result<(), ClientError> {
    let response = http
        .delete(session_url.clone())
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .map_err(|source| http_error(session_url.as_str(), source))?;

    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(ClientError::UnexpectedStatus {
        method: "DELETE",
        url: session_url.to_string(),
        status,
        expected: StatusCode::OK,
        body,
    })
}

fn parse_url(url: &str) -> Result<Url, ClientError> {
    Url::parse(url).map_err(|error| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: error.to_string(),
    })
}

fn http_error(url: &str, source: reqwest::Error) -> ClientError {
    ClientError::Http {
        url: url.to_owned(),
        source,
    }
}
