//! kubeseal's HTTP API on the main port: `/v1/cert.pem`, `/v1/verify`, `/v1/rotate`.
//!
//! `/v1/verify` and `/v1/rotate` are reachable by every authenticated user through the API
//! server's service proxy, so they never render templates (upstream's decryption oracle), take
//! the scope only from the SealedSecret's own metadata (CVE-2026-22728), answer with fixed
//! messages that contain no secret data, and are rate-limited per caller (the peer and the last
//! `X-Forwarded-For` hop). One request opens at most [`MAX_VALUES`] values, under the same RSA bound as the controller
//! (one value at a time per core), so callers cannot starve the controller of CPU.

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

/// The most values one `/v1/verify` or `/v1/rotate` request may ask to open (each costs RSA
/// work with every key until one opens it).
pub const MAX_VALUES: usize = 100;

/// The caller a request is limited as: its peer address and the last `X-Forwarded-For` hop.
/// Through the API server's service proxy (how kubeseal reaches the agent) the peer is the API
/// server, which appends the address it saw the authenticated caller connect from; the hops
/// before it are whatever the caller sent, so they are never used (the first hop was, before:
/// a caller could get a fresh bucket per request by changing it). Without the header, the peer.
fn client_of(headers: &HeaderMap, peer: SocketAddr) -> String {
    let last_hop = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|hop| !hop.is_empty());
    match last_hop {
        Some(hop) => format!("{} via {}", hop, peer.ip()),
        None => peer.ip().to_string(),
    }
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
    if !state
        .limiter
        .allow(path, &peer.ip().to_string(), &client_of(headers, peer))
    {
        return Err((StatusCode::TOO_MANY_REQUESTS, "too many requests\n"));
    }
    let sealed = parse_sealed_secret(body)
        .ok_or((StatusCode::BAD_REQUEST, "the body is not a SealedSecret\n"))?;
    if sealed.spec.encrypted_data.len() > MAX_VALUES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "the SealedSecret has more than 100 values\n",
        ));
    }
    Ok(sealed)
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
    let permit = keys.rsa_slot().await;
    let opened = tokio::task::spawn_blocking(move || {
        let opened = open_values(&sealed, &keys).is_ok();
        drop(permit);
        opened
    })
    .await;
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
    let permit = keys.rsa_slot().await;
    let rotated = tokio::task::spawn_blocking(move || {
        let rotated = reseal(sealed, &keys);
        drop(permit);
        rotated
    })
    .await;
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

/// Token buckets per (path, caller), and per (path, peer) at ten times the rate and burst. Upstream
/// allows 2/s with a burst of 2, which CI pipelines validating many files hit constantly
/// (#870); mooring's defaults are higher and configurable. The peer's bucket bounds a caller
/// that reaches the agent directly and invents a new `X-Forwarded-For` per request, and it is
/// what all callers through one API server share at most.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

/// The most buckets tracked. When full, buckets that have refilled (the same as new) are
/// forgotten; when none has, a new caller is refused until one has. The table never resets:
/// resetting it would give every caller a full burst again (the previous behaviour, at 10,000).
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// How much more the peer's bucket holds than one caller's.
const PEER_FACTOR: f64 = 10.0;

impl RateLimiter {
    /// `per_second` requests per second per caller with bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Whether one more request from `client` (through `peer`) to `path` is allowed now: both
    /// its bucket and the peer's must hold a token, and a refused request takes none.
    pub fn allow(&self, path: &str, peer: &str, client: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let peer_key = (format!("{path} peer"), peer.to_string());
        let client_key = (path.to_string(), client.to_string());
        let peer_burst = self.burst * PEER_FACTOR;
        let peer_rate = self.per_second * PEER_FACTOR;
        let missing = [&peer_key, &client_key]
            .iter()
            .filter(|key| !buckets.contains_key(**key))
            .count();
        if buckets.len() + missing > MAX_TRACKED_CLIENTS {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|(bucket, _), (tokens, last)| {
                let (rate, burst) = if bucket.ends_with(" peer") {
                    (peer_rate, peer_burst)
                } else {
                    (rate, burst)
                };
                *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
            });
            if buckets.len() + missing > MAX_TRACKED_CLIENTS {
                return false;
            }
        }
        let refill = |bucket: &mut (f64, Instant), rate: f64, burst: f64| {
            bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * rate).min(burst);
            bucket.1 = now;
            bucket.0 >= 1.0
        };
        let peer_ok = refill(
            buckets.entry(peer_key.clone()).or_insert((peer_burst, now)),
            peer_rate,
            peer_burst,
        );
        let client_ok = refill(
            buckets
                .entry(client_key.clone())
                .or_insert((self.burst, now)),
            self.per_second,
            self.burst,
        );
        if !(peer_ok && client_ok) {
            return false;
        }
        for key in [&peer_key, &client_key] {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.0 -= 1.0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_refuses_per_client() {
        let limiter = RateLimiter::new(0.001, 2);
        assert!(limiter.allow("/v1/verify", "p", "a"));
        assert!(limiter.allow("/v1/verify", "p", "a"));
        assert!(!limiter.allow("/v1/verify", "p", "a"));
        assert!(
            limiter.allow("/v1/verify", "p", "b"),
            "another client has its own bucket"
        );
        assert!(
            limiter.allow("/v1/rotate", "p", "a"),
            "another path has its own bucket"
        );
    }

    #[test]
    fn a_peer_inventing_callers_is_bounded_by_its_own_bucket() {
        let limiter = RateLimiter::new(0.001, 2);
        let allowed = (0..100)
            .filter(|n| limiter.allow("/v1/verify", "p", &format!("caller-{n}")))
            .count();
        assert_eq!(allowed, 20, "ten times one caller's burst, then nothing");
        assert!(
            limiter.allow("/v1/verify", "q", "caller-0"),
            "another peer has its own bucket"
        );
    }

    #[test]
    fn a_full_table_forgets_only_refilled_buckets_and_never_resets() {
        let limiter = RateLimiter::new(0.000_001, 1);
        // Fill the table with drained callers of many peers (2 buckets each).
        for n in 0..MAX_TRACKED_CLIENTS / 2 {
            assert!(limiter.allow("/v1/verify", &format!("p{n}"), &format!("c{n}")));
        }
        assert!(
            !limiter.allow("/v1/verify", "new-peer", "c"),
            "a new caller waits while every tracked bucket is still in debt"
        );
        assert!(
            !limiter.allow("/v1/verify", "p0", "c0"),
            "a drained caller stays drained: the table was not reset"
        );
    }

    #[test]
    fn the_caller_is_the_hop_the_api_server_appended() {
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_of(&headers, peer), "10.0.0.9");
        // The caller sent 192.0.2.7; the API server appended the address it saw, 10.0.0.1.
        headers.insert("x-forwarded-for", "192.0.2.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_of(&headers, peer), "10.0.0.1 via 10.0.0.9");
        headers.insert("x-forwarded-for", "198.51.100.1, 10.0.0.1".parse().unwrap());
        assert_eq!(
            client_of(&headers, peer),
            "10.0.0.1 via 10.0.0.9",
            "changing the hops the caller controls changes nothing"
        );
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
