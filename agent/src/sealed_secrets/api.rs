//! kubeseal's HTTP API on the main port: `/v1/cert.pem`, `/v1/verify`, `/v1/rotate`.
//!
//! `/v1/verify` and `/v1/rotate` are reachable by every authenticated user through the API
//! server's service proxy, so they never render templates (upstream's decryption oracle), take
//! the scope only from the SealedSecret's own metadata (CVE-2026-22728), answer with fixed
//! messages that contain no secret data, and are rate-limited per client.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::ResourceExt;
use mooring_crds::sealed_secret::SealedSecret;
use mooring_sealing::Scope;

use super::keys::KeyRing;

/// State shared by the handlers.
#[derive(Clone)]
struct ApiState {
    keys: Arc<KeyRing>,
    limiter: Arc<RateLimiter>,
}

/// The routes of kubeseal's API, serving the certificate of `keys` and limiting `/v1/verify`
/// and `/v1/rotate` per client with `limiter`.
pub fn router(keys: Arc<KeyRing>, limiter: Arc<RateLimiter>) -> Router {
    Router::new()
        .route("/v1/cert.pem", get(certificate))
        .route("/v1/verify", post(verify))
        .route("/v1/rotate", post(rotate))
        .with_state(ApiState { keys, limiter })
}

async fn certificate(State(state): State<ApiState>) -> Response {
    match state.keys.newest() {
        Some(key) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            key.certificate_pem.clone(),
        )
            .into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot get certificate\n",
        )
            .into_response(),
    }
}

/// Reads one SealedSecret from a JSON or YAML body.
fn parse_sealed_secret(body: &[u8]) -> Option<SealedSecret> {
    serde_json::from_slice(body)
        .ok()
        .or_else(|| serde_saphyr::from_slice(body).ok())
        .filter(|s: &SealedSecret| !s.name_any().is_empty())
}

/// The client a request is limited as: the first `X-Forwarded-For` hop (the API server's proxy
/// sets it to the user's address), else the peer address.
fn client_of(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// The common front of `/v1/verify` and `/v1/rotate`: the client's rate limit, then the body
/// as one SealedSecret. Either the object, or the response that refuses the request.
fn admit(
    state: &ApiState,
    path: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SealedSecret, (StatusCode, &'static str)> {
    if !state.limiter.allow(path, &client_of(headers, peer)) {
        return Err((StatusCode::TOO_MANY_REQUESTS, "too many requests\n"));
    }
    parse_sealed_secret(body).ok_or((StatusCode::BAD_REQUEST, "the body is not a SealedSecret\n"))
}

async fn verify(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sealed = match admit(&state, "/v1/verify", peer, &headers, &body) {
        Ok(sealed) => sealed,
        Err(refused) => return refused.into_response(),
    };
    let keys = Arc::clone(&state.keys);
    let opened = tokio::task::spawn_blocking(move || open_values(&sealed, &keys).is_ok()).await;
    match opened {
        Ok(true) => (StatusCode::OK, "").into_response(),
        _ => (StatusCode::CONFLICT, "cannot unseal the SealedSecret\n").into_response(),
    }
}

async fn rotate(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sealed = match admit(&state, "/v1/rotate", peer, &headers, &body) {
        Ok(sealed) => sealed,
        Err(refused) => return refused.into_response(),
    };
    let keys = Arc::clone(&state.keys);
    let rotated = tokio::task::spawn_blocking(move || reseal(sealed, &keys)).await;
    match rotated {
        Ok(Some(rotated)) => match serde_json::to_vec_pretty(&rotated) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the SealedSecret\n",
            )
                .into_response(),
        },
        _ => (StatusCode::CONFLICT, "cannot unseal the SealedSecret\n").into_response(),
    }
}

/// Opens every value under the label of the object's own metadata; templates are not rendered.
fn open_values(
    sealed: &SealedSecret,
    keys: &KeyRing,
) -> Result<BTreeMap<String, zeroize::Zeroizing<Vec<u8>>>, mooring_sealing::secret::UnsealError> {
    let mut opener =
        |label: &[u8], ciphertext: &[u8]| keys.open(label, ciphertext, None).map(|(v, _)| v);
    mooring_sealing::secret::unseal(sealed, &mut opener)
}

/// Re-seals every value to the newest key under the same scope (from `.metadata` only).
fn reseal(mut sealed: SealedSecret, keys: &KeyRing) -> Option<SealedSecret> {
    let values = open_values(&sealed, keys).ok()?;
    let newest = keys.newest()?;
    let namespace = sealed.namespace().unwrap_or_default();
    let scope = Scope::from_annotations(sealed.annotations());
    let label = scope.label(&namespace, &sealed.name_any());
    let mut encrypted = BTreeMap::new();
    for (key, value) in values {
        let ciphertext = mooring_sealing::seal(&newest.public, &label, &value).ok()?;
        encrypted.insert(
            key,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ciphertext),
        );
    }
    sealed.spec.encrypted_data = encrypted;
    sealed.spec.data = None;
    sealed.status = None;
    Some(sealed)
}

/// A token bucket per (path, client). Upstream allows 2/s with a burst of 2, which CI pipelines
/// validating many files hit constantly (#870); mooring's defaults are higher and configurable.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

/// More clients than this are forgotten at once rather than tracked forever.
const MAX_TRACKED_CLIENTS: usize = 10_000;

impl RateLimiter {
    /// `per_second` requests per second with bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether one more request from `client` to `path` is allowed now.
    pub fn allow(&self, path: &str, client: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > MAX_TRACKED_CLIENTS {
            buckets.clear();
        }
        let (tokens, last) = buckets
            .entry((path.to_string(), client.to_string()))
            .or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_refuses_per_client() {
        let limiter = RateLimiter::new(0.001, 2);
        assert!(limiter.allow("/v1/verify", "a"));
        assert!(limiter.allow("/v1/verify", "a"));
        assert!(!limiter.allow("/v1/verify", "a"));
        assert!(
            limiter.allow("/v1/verify", "b"),
            "another client has its own bucket"
        );
        assert!(
            limiter.allow("/v1/rotate", "a"),
            "another path has its own bucket"
        );
    }

    #[test]
    fn the_client_is_the_first_forwarded_hop() {
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_of(&headers, peer), "10.0.0.9");
        headers.insert("x-forwarded-for", "192.0.2.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_of(&headers, peer), "192.0.2.7");
    }

    #[test]
    fn bodies_in_json_or_yaml_parse() {
        let yaml = b"apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata:\n  name: db\nspec:\n  encryptedData: {}\n";
        assert_eq!(parse_sealed_secret(yaml).unwrap().name_any(), "db");
        let json = br#"{"apiVersion":"bitnami.com/v1alpha1","kind":"SealedSecret","metadata":{"name":"x"},"spec":{"encryptedData":{}}}"#;
        assert_eq!(parse_sealed_secret(json).unwrap().name_any(), "x");
        assert!(parse_sealed_secret(b"garbage").is_none());
    }
}
