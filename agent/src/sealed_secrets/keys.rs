//! Sealing keys: RSA-4096 key pairs with self-signed certificates, kept as `kubernetes.io/tls`
//! Secrets labelled `sealedsecrets.bitnami.com/sealed-secrets-key=active` in the agent's namespace
//! — the same storage as bitnami sealed-secrets, so its key Secrets import unchanged.
//!
//! Better than upstream: key Secrets are watched (an imported or bring-your-own key works without
//! a restart; a malformed one is skipped with an event, never a crash), and [`KeyRing::open`]
//! tries the key that opened an object last time first, then the keys that opened the most of
//! the recent values, then the rest newest first, so an unseal costs one RSA operation in the
//! common case whatever the number of keys. A sealed value does not say which key sealed it
//! (RSA-OAEP ciphertexts carry no key identifier): a value of an object never opened before,
//! sealed with another key than the recently successful ones, still costs one operation per key
//! tried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use mooring_sealing::{EnvelopeError, SealingCertificate};
use prometheus_client::metrics::counter::Counter;
use zeroize::Zeroizing;

use crate::events::EventSink;
use crate::metrics::SealedSecretMetrics;

/// The label that marks a key Secret; only the value `active` is loaded.
pub const KEY_LABEL: &str = "sealedsecrets.bitnami.com/sealed-secrets-key";
/// The label value of a usable key.
pub const ACTIVE: &str = "active";
/// Upstream's key Secret name prefix.
pub const KEY_NAME_PREFIX: &str = "sealed-secrets-key";

/// Why a key Secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `tls.key` or `tls.crt` is missing.
    #[error("failed to load key Secret {secret}: data key {field} is missing")]
    Missing {
        /// The Secret's name.
        secret: String,
        /// The missing data key.
        field: &'static str,
    },
    /// `tls.key` is not an RSA private key in PEM.
    #[error("failed to load key Secret {secret}: tls.key is not a PEM RSA private key")]
    PrivateKey {
        /// The Secret's name.
        secret: String,
    },
    /// `tls.crt` is not a usable certificate.
    #[error("failed to load key Secret {secret}: tls.crt is unusable")]
    Certificate {
        /// The Secret's name.
        secret: String,
        /// The parse error.
        #[source]
        source: mooring_sealing::CertificateError,
    },
    /// The certificate belongs to another key.
    #[error("failed to load key Secret {secret}: tls.crt does not match tls.key")]
    Mismatch {
        /// The Secret's name.
        secret: String,
    },
    /// Generating a new key pair or certificate failed.
    #[error("failed to generate a sealing key")]
    Generate(#[source] rcgen::Error),
    /// The generated key could not be stored.
    #[error("failed to store the new sealing key in namespace {namespace}")]
    Store {
        /// The agent's namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// One loaded key pair.
pub struct SealingKey {
    /// The Secret it came from.
    pub secret_name: String,
    /// SHA-256 of the public key (SubjectPublicKeyInfo DER), hex: an internal identifier.
    pub fingerprint: String,
    /// The private half.
    private: PrivateDecryptingKey,
    /// The public half, for re-sealing (`/v1/rotate`).
    pub public: PublicEncryptingKey,
    /// The certificate served at `/v1/cert.pem`.
    pub certificate_pem: String,
    /// The certificate's notBefore: the newest key seals.
    pub not_before: SystemTime,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("secret_name", &self.secret_name)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SealingKey {
    /// Reads a key Secret (`tls.key` PKCS#1 or PKCS#8 PEM, `tls.crt` PEM).
    pub fn from_secret(secret: &Secret) -> Result<SealingKey, KeyError> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let data = secret.data.as_ref();
        let field = |field: &'static str| {
            data.and_then(|d| d.get(field))
                .map(|v| v.0.as_slice())
                .ok_or(KeyError::Missing {
                    secret: name.clone(),
                    field,
                })
        };
        let private =
            mooring_sealing::keys::parse_private_key_pem(field("tls.key")?).map_err(|_| {
                KeyError::PrivateKey {
                    secret: name.clone(),
                }
            })?;
        let certificate_pem = String::from_utf8_lossy(field("tls.crt")?).into_owned();
        Self::from_parts(name, private, certificate_pem)
    }

    fn from_parts(
        secret_name: String,
        private: PrivateDecryptingKey,
        certificate_pem: String,
    ) -> Result<SealingKey, KeyError> {
        let certificate =
            SealingCertificate::from_pem(certificate_pem.as_bytes()).map_err(|source| {
                KeyError::Certificate {
                    secret: secret_name.clone(),
                    source,
                }
            })?;
        let public = certificate.public_key().clone();
        let cert_der = public.as_der().map_err(|_| KeyError::Mismatch {
            secret: secret_name.clone(),
        })?;
        let key_der = private
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Mismatch {
                secret: secret_name.clone(),
            })?;
        if cert_der.as_ref() != key_der.as_ref() {
            return Err(KeyError::Mismatch {
                secret: secret_name,
            });
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der.as_ref());
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok(SealingKey {
            secret_name,
            fingerprint,
            private,
            public,
            certificate_pem,
            not_before: certificate.not_before(),
        })
    }
}

/// Settings for generating keys, as upstream's flags.
#[derive(Clone, Debug)]
pub struct KeySettings {
    /// The agent's namespace, where key Secrets live.
    pub namespace: String,
    /// The certificate's common name (upstream `--my-cn`, default empty).
    pub common_name: String,
    /// Certificate validity (upstream `--key-ttl`, 10 years).
    pub validity: Duration,
    /// How often a new key is added (upstream `--key-renew-period`, 30 days; zero disables).
    pub renew_period: Duration,
    /// At start-up, generate a new key if the newest is older than this (`--key-cutoff-time`).
    pub cutoff: Option<SystemTime>,
}

/// The loaded keys, newest first, shared by the controller and the HTTP endpoints.
pub struct KeyRing {
    keys: RwLock<Arc<Vec<Arc<SealingKey>>>>,
    rsa_operations: Counter,
    /// Bumped whenever the keys change, so results computed with older keys can be told apart.
    version: std::sync::atomic::AtomicU64,
    /// The fingerprints of the keys that opened the last [`RECENT_OPENS`] values, most recent
    /// first. Values sealed together (a burst, a repository sealed with one certificate) mostly
    /// share their key, and objects arrive in no particular order, so the key that opened the
    /// most recent values is the best first guess for a value without a hint.
    recent: Mutex<std::collections::VecDeque<String>>,
    /// Permits for RSA work, one per core, shared by everything that opens values (the
    /// controller and the kubeseal API): a burst queues here instead of starting a blocking
    /// thread per object (RSA is CPU-bound; more threads than cores only add memory and
    /// context switches, and let callers of `/v1/verify` starve the controller).
    rsa_slots: Arc<tokio::sync::Semaphore>,
}

/// How many recent successful opens [`KeyRing`] keeps to rank the keys: enough to estimate which
/// keys are in use, few enough to follow a change within a handful of values.
const RECENT_OPENS: usize = 32;

/// RSA work at once: one per core.
fn rsa_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// The order to try `keys` (newest first) in: the hinted key, then the keys by how many of the
/// `recent` values (most recent first) they opened, ties to the most recent, then the others
/// newest first.
fn trial_order<'k>(
    keys: &'k [Arc<SealingKey>],
    hint: Option<&str>,
    recent: &std::collections::VecDeque<String>,
) -> Vec<&'k Arc<SealingKey>> {
    let rank = |key: &SealingKey| {
        let hinted = Some(key.fingerprint.as_str()) != hint;
        let opened = recent.iter().filter(|f| **f == key.fingerprint).count();
        let last = recent
            .iter()
            .position(|f| *f == key.fingerprint)
            .unwrap_or(usize::MAX);
        (hinted, std::cmp::Reverse(opened), last)
    };
    let mut ordered: Vec<&Arc<SealingKey>> = keys.iter().collect();
    // Stable: keys that opened nothing lately keep their newest-first order.
    ordered.sort_by_key(|key| rank(key));
    ordered
}

impl KeyRing {
    /// An empty ring counting its RSA operations into `metrics`.
    pub fn new(metrics: &SealedSecretMetrics) -> KeyRing {
        KeyRing {
            keys: RwLock::new(Arc::new(Vec::new())),
            rsa_operations: metrics.rsa_operations.clone(),
            version: std::sync::atomic::AtomicU64::new(0),
            recent: Mutex::default(),
            rsa_slots: Arc::new(tokio::sync::Semaphore::new(rsa_parallelism())),
        }
    }

    /// Waits for a permit to do RSA work (see the field). The semaphore is never closed; should
    /// it be, the work runs without a permit rather than fail.
    pub async fn rsa_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.rsa_slots).acquire_owned().await.ok()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<String>> {
        // A poisoned lock only means a panic elsewhere; a stale order costs RSA work, not results.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that `fingerprint` opened a value.
    fn opened_with(&self, fingerprint: &str) {
        let mut recent = self.recent();
        recent.push_front(fingerprint.to_string());
        recent.truncate(RECENT_OPENS);
    }

    fn snapshot(&self) -> Arc<Vec<Arc<SealingKey>>> {
        // A poisoned lock only means a panic elsewhere; the Arc inside is still consistent.
        self.keys
            .read()
            .map(|k| Arc::clone(&k))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()))
    }

    /// Replaces the keys; sorts newest first and drops duplicates of one key pair.
    pub fn set(&self, mut keys: Vec<Arc<SealingKey>>) {
        let mut seen = std::collections::HashSet::new();
        keys.retain(|key| seen.insert(key.fingerprint.clone()));
        self.store(keys);
    }

    /// Adds one key (a freshly generated one, before the watch sees its Secret).
    pub fn add(&self, key: SealingKey) {
        let mut keys: Vec<Arc<SealingKey>> = self
            .snapshot()
            .iter()
            .filter(|k| k.fingerprint != key.fingerprint)
            .cloned()
            .collect();
        keys.push(Arc::new(key));
        self.store(keys);
    }

    fn store(&self, mut keys: Vec<Arc<SealingKey>>) {
        keys.sort_by(|a, b| {
            b.not_before
                .cmp(&a.not_before)
                .then(a.secret_name.cmp(&b.secret_name))
        });
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut guard) => *guard = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Changes whenever the set of keys changes.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The key that seals: the newest.
    pub fn newest(&self) -> Option<Arc<SealingKey>> {
        self.snapshot().first().cloned()
    }

    /// How many keys are loaded.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens one sealed value under `label`. Tries the key with fingerprint `hint` first, then
    /// the keys that opened the most of the recent values, then the others newest first;
    /// returns the plaintext and the fingerprint of the key that opened it.
    pub fn open(
        &self,
        label: &[u8],
        ciphertext: &[u8],
        hint: Option<&str>,
    ) -> Result<(Zeroizing<Vec<u8>>, String), EnvelopeError> {
        let keys = self.snapshot();
        let ordered = trial_order(&keys, hint, &self.recent());
        let mut error = EnvelopeError::DecryptSessionKey;
        for key in ordered {
            match mooring_sealing::open(&key.private, label, ciphertext) {
                Ok(plaintext) => {
                    self.rsa_operations.inc();
                    self.opened_with(&key.fingerprint);
                    return Ok((plaintext, key.fingerprint.clone()));
                }
                // Framing is checked before any RSA work, and is the same for every key.
                Err(EnvelopeError::Truncated) => return Err(EnvelopeError::Truncated),
                Err(EnvelopeError::DecryptValue) => {
                    self.rsa_operations.inc();
                    error = EnvelopeError::DecryptValue;
                }
                Err(_) => {
                    self.rsa_operations.inc();
                }
            }
        }
        Err(error)
    }
}

/// Generates an RSA-4096 key pair and a self-signed certificate like upstream's: random serial,
/// subject and issuer `CN=<common_name>`, Encipher Only key usage, CA:TRUE, SHA-256 signature.
pub fn generate(settings: &KeySettings) -> Result<(SealingKey, Secret), KeyError> {
    use rand::Rng;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
        .map_err(KeyError::Generate)?;
    let mut params = CertificateParams::default();
    if !settings.common_name.is_empty() {
        params
            .distinguished_name
            .push(DnType::CommonName, settings.common_name.clone());
    }
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + settings.validity;
    params.key_usages = vec![KeyUsagePurpose::EncipherOnly];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let certificate = params.self_signed(&key).map_err(KeyError::Generate)?;

    let certificate_pem = certificate.pem();
    let key_pem = Zeroizing::new(key.serialize_pem());
    let secret = Secret {
        metadata: ObjectMeta {
            generate_name: Some(KEY_NAME_PREFIX.to_string()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(BTreeMap::from([(
                KEY_LABEL.to_string(),
                ACTIVE.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(certificate_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(key_pem.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    };
    let private =
        PrivateDecryptingKey::from_pkcs8(&Zeroizing::new(key.serialize_der())).map_err(|_| {
            KeyError::PrivateKey {
                secret: KEY_NAME_PREFIX.into(),
            }
        })?;
    let sealing_key = SealingKey::from_parts(String::new(), private, certificate_pem)?;
    Ok((sealing_key, secret))
}

/// Generates a key, stores it as a Secret and adds it to the ring.
pub async fn generate_and_store(
    client: &kube::Client,
    settings: &KeySettings,
    ring: &KeyRing,
) -> Result<String, KeyError> {
    let settings_for_thread = settings.clone();
    // RSA-4096 generation takes about half a second of CPU: keep it off the async workers.
    let generated = tokio::task::spawn_blocking(move || generate(&settings_for_thread))
        .await
        .map_err(|_| KeyError::PrivateKey {
            secret: KEY_NAME_PREFIX.into(),
        })??;
    let (mut key, secret) = generated;
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let created = api
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|source| KeyError::Store {
            namespace: settings.namespace.clone(),
            source,
        })?;
    key.secret_name = created.metadata.name.unwrap_or_default();
    tracing::info!(secret = %key.secret_name, fingerprint = %key.fingerprint, "generated a new sealing key");
    let name = key.secret_name.clone();
    ring.add(key);
    Ok(name)
}

/// Whether a new key is due: none loaded, the newest is older than the cut-off, or older than
/// the renewal period.
pub fn renewal_due(ring: &KeyRing, settings: &KeySettings, now: SystemTime) -> bool {
    let Some(newest) = ring.newest() else {
        return true;
    };
    if settings
        .cutoff
        .is_some_and(|cutoff| newest.not_before < cutoff)
    {
        return true;
    }
    !settings.renew_period.is_zero()
        && now.duration_since(newest.not_before).unwrap_or_default() >= settings.renew_period
}

/// Watches the key Secrets, keeps the ring current, and renews keys on schedule. Runs until
/// the agent stops.
/// `renew_now` forces a renewal (upstream renews on SIGUSR1; the agent wires that signal to it).
pub async fn run(
    client: kube::Client,
    settings: KeySettings,
    ring: Arc<KeyRing>,
    metrics: SealedSecretMetrics,
    events: EventSink,
    renew_now: Arc<tokio::sync::Notify>,
    mut leading: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let config = watcher::Config::default().labels(&format!("{KEY_LABEL}={ACTIVE}"));
    let mut stream = watcher(api, config).boxed();
    // Parsed keys by Secret name: the key material is parsed once, when its Secret arrives or
    // changes, and the Secret itself is not kept.
    let mut loaded: BTreeMap<String, Arc<SealingKey>> = BTreeMap::new();
    let mut initial: BTreeMap<String, Arc<SealingKey>> = BTreeMap::new();
    let mut listed = false;
    let mut renewal = tokio::time::interval(Duration::from_secs(60));
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => initial.clear(),
                    Ok(watcher::Event::InitApply(secret)) => {
                        if let Some(key) = admit(&secret, &events).await {
                            initial.insert(secret.name_any(), Arc::new(key));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        loaded = std::mem::take(&mut initial);
                        listed = true;
                        publish(&loaded, &ring, &metrics);
                    }
                    Ok(watcher::Event::Apply(secret)) => {
                        match admit(&secret, &events).await {
                            Some(key) => loaded.insert(secret.name_any(), Arc::new(key)),
                            None => loaded.remove(&secret.name_any()),
                        };
                        publish(&loaded, &ring, &metrics);
                    }
                    Ok(watcher::Event::Delete(secret)) => {
                        loaded.remove(&secret.name_any());
                        publish(&loaded, &ring, &metrics);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "watching sealing key Secrets failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if listed && *leading.borrow() && renewal_due(&ring, &settings, SystemTime::now()) {
                    renew(&client, &settings, &ring).await;
                }
            }
            _ = renewal.tick() => {
                if listed && *leading.borrow() && renewal_due(&ring, &settings, SystemTime::now()) {
                    renew(&client, &settings, &ring).await;
                }
                update_age(&ring, &metrics);
            }
            // Only the leader generates keys; a replica that starts leading checks at once.
            Ok(()) = leading.changed() => {
                if listed && *leading.borrow() && renewal_due(&ring, &settings, SystemTime::now()) {
                    renew(&client, &settings, &ring).await;
                }
            }
            () = renew_now.notified() => {
                if *leading.borrow() {
                    tracing::info!("key renewal requested");
                    renew(&client, &settings, &ring).await;
                    update_age(&ring, &metrics);
                } else {
                    tracing::info!("key renewal requested on a replica that is not leading; ignored");
                }
            }
        }
    }
}

async fn renew(client: &kube::Client, settings: &KeySettings, ring: &KeyRing) {
    if let Err(error) = generate_and_store(client, settings, ring).await {
        tracing::error!(error = %crate::errors::error_chain(&error), "failed to renew the sealing key");
    }
}

fn update_age(ring: &KeyRing, metrics: &SealedSecretMetrics) {
    let age = ring
        .newest()
        .and_then(|k| SystemTime::now().duration_since(k.not_before).ok())
        .unwrap_or_default();
    metrics
        .newest_key_age_seconds
        .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
}

/// Parses a key Secret that arrived or changed; a malformed one gets a Warning event (once per
/// change, since only changes arrive) and is skipped.
async fn admit(secret: &Secret, events: &EventSink) -> Option<SealingKey> {
    match SealingKey::from_secret(secret) {
        Ok(key) => Some(key),
        Err(error) => {
            let note = crate::errors::error_chain(&error);
            tracing::warn!(error = %note, "skipping an unusable sealing key Secret");
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidSealingKey".into(),
                note: Some(note),
                action: "LoadKey".into(),
                secondary: None,
            };
            events.publish(&secret.object_ref(&()), event).await;
            None
        }
    }
}

/// Makes `loaded` the ring's keys.
fn publish(
    loaded: &BTreeMap<String, Arc<SealingKey>>,
    ring: &KeyRing,
    metrics: &SealedSecretMetrics,
) {
    ring.set(loaded.values().cloned().collect());
    metrics
        .keys
        .set(i64::try_from(ring.len()).unwrap_or(i64::MAX));
    update_age(ring, metrics);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> KeySettings {
        KeySettings {
            namespace: "mooring-system".into(),
            common_name: String::new(),
            validity: Duration::from_secs(10 * 365 * 24 * 3600),
            renew_period: Duration::from_secs(30 * 24 * 3600),
            cutoff: None,
        }
    }

    /// One generated key, shared by the tests (RSA-4096 generation is slow in debug builds).
    fn generated() -> &'static (SealingKey, Secret) {
        static KEY: std::sync::OnceLock<(SealingKey, Secret)> = std::sync::OnceLock::new();
        KEY.get_or_init(|| generate(&settings()).unwrap())
    }

    fn reload_key(secret: &Secret) -> SealingKey {
        SealingKey::from_secret(secret).unwrap()
    }

    #[test]
    fn generated_key_secret_has_upstream_shape_and_loads_back() {
        let (key, secret) = generated();
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            secret.metadata.generate_name.as_deref(),
            Some("sealed-secrets-key")
        );
        assert_eq!(
            secret.metadata.labels.as_ref().unwrap()[KEY_LABEL],
            "active"
        );
        let loaded = reload_key(secret);
        assert_eq!(loaded.fingerprint, key.fingerprint);
        assert_eq!(loaded.public.key_size_bytes(), 512, "RSA-4096");
    }

    #[test]
    fn hinted_key_opens_with_one_rsa_operation() {
        let metrics = SealedSecretMetrics::default();
        let ring = KeyRing::new(&metrics);
        let (_, secret) = generated();
        let newest = reload_key(secret);
        let other_private =
            PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let old = SealingKey {
            secret_name: "old".into(),
            fingerprint: "old".into(),
            public: other_private.public_key(),
            private: other_private,
            certificate_pem: String::new(),
            not_before: SystemTime::UNIX_EPOCH,
        };
        let sealed_for_old = mooring_sealing::seal(&old.public, b"ns/a", b"v").unwrap();
        ring.set(vec![Arc::new(old), Arc::new(newest)]);
        assert_eq!(
            ring.newest().unwrap().secret_name,
            secret.metadata.name.clone().unwrap_or_default()
        );

        let (_, fingerprint) = ring.open(b"ns/a", &sealed_for_old, None).unwrap();
        assert_eq!(fingerprint, "old");
        assert_eq!(
            metrics.rsa_operations.get(),
            2,
            "newest tried first, then the old key"
        );
        ring.open(b"ns/a", &sealed_for_old, Some("old")).unwrap();
        assert_eq!(
            metrics.rsa_operations.get(),
            3,
            "with the hint: one operation"
        );
    }

    /// A 2048-bit key named and fingerprinted `name`, with notBefore `age_rank` seconds after
    /// the epoch (higher = newer).
    fn small_key(name: &str, age_rank: u64) -> SealingKey {
        let private = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        SealingKey {
            secret_name: name.into(),
            fingerprint: name.into(),
            public: private.public_key(),
            private,
            certificate_pem: String::new(),
            not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(age_rank),
        }
    }

    #[test]
    fn keys_are_tried_hint_first_then_by_recent_successes_then_newest_first() {
        // Newest first, as the ring keeps them.
        let keys: Vec<Arc<SealingKey>> = [("newest", 3), ("middle", 2), ("oldest", 1)]
            .into_iter()
            .map(|(name, rank)| Arc::new(small_key(name, rank)))
            .collect();
        let order = |hint: Option<&str>, recent: &[&str]| -> Vec<String> {
            let recent = recent.iter().map(|f| f.to_string()).collect();
            trial_order(&keys, hint, &recent)
                .iter()
                .map(|k| k.fingerprint.clone())
                .collect()
        };
        assert_eq!(order(None, &[]), ["newest", "middle", "oldest"]);
        assert_eq!(order(None, &["oldest"]), ["oldest", "newest", "middle"]);
        assert_eq!(
            order(None, &["middle", "oldest", "oldest"]),
            ["oldest", "middle", "newest"],
            "the key that opened the most recent values first"
        );
        assert_eq!(
            order(None, &["oldest", "middle"]),
            ["oldest", "middle", "newest"],
            "a tie goes to the most recent"
        );
        assert_eq!(
            order(Some("middle"), &["oldest", "oldest"]),
            ["middle", "oldest", "newest"],
            "an object's own hint beats the cluster-wide guess"
        );
        assert_eq!(
            order(Some("gone"), &["oldest"]),
            ["oldest", "newest", "middle"],
            "a hint naming a removed key is ignored"
        );
    }

    #[test]
    fn a_burst_sealed_with_one_key_costs_one_operation_per_value_once_the_key_is_known() {
        let metrics = SealedSecretMetrics::default();
        let ring = KeyRing::new(&metrics);
        let old = small_key("old", 1);
        let new = small_key("new", 2);
        let seal = |key: &SealingKey, n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|i| mooring_sealing::seal(&key.public, b"ns/a", &[i as u8]).unwrap())
                .collect()
        };
        let (sealed_old, sealed_new) = (seal(&old, 3), seal(&new, 5));
        ring.set(vec![Arc::new(old), Arc::new(new)]);
        let mut spent = Vec::new();
        let mut last = 0;
        for (value, expected) in sealed_old
            .iter()
            .map(|v| (v, "old"))
            .chain(sealed_new.iter().map(|v| (v, "new")))
        {
            let (_, fingerprint) = ring.open(b"ns/a", value, None).unwrap();
            assert_eq!(fingerprint, expected);
            spent.push(metrics.rsa_operations.get() - last);
            last = metrics.rsa_operations.get();
        }
        assert_eq!(
            spent,
            [2, 1, 1, 2, 2, 2, 1, 1],
            "nothing known: newest first; then the key that opened the most recent values: the \
             old one until the new one has opened as many"
        );
    }

    #[test]
    fn truncated_and_undecryptable_values_are_told_apart() {
        let metrics = SealedSecretMetrics::default();
        let ring = KeyRing::new(&metrics);
        ring.set(vec![Arc::new(reload_key(&generated().1))]);
        assert_eq!(
            ring.open(b"", &[0, 5, 1], None).unwrap_err(),
            EnvelopeError::Truncated
        );
        assert_eq!(
            metrics.rsa_operations.get(),
            0,
            "framing errors cost no RSA operation"
        );
        let foreign = PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let sealed = mooring_sealing::seal(&foreign.public_key(), b"", b"v").unwrap();
        assert_eq!(
            ring.open(b"", &sealed, None).unwrap_err(),
            EnvelopeError::DecryptSessionKey
        );
    }

    #[test]
    fn mismatched_certificate_and_malformed_secrets_are_rejected() {
        let (_, secret) = generated();
        let mut missing = secret.clone();
        missing.data.as_mut().unwrap().remove("tls.key");
        assert!(matches!(
            SealingKey::from_secret(&missing),
            Err(KeyError::Missing {
                field: "tls.key",
                ..
            })
        ));

        let mut garbage = secret.clone();
        garbage
            .data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"garbage".to_vec()));
        assert!(matches!(
            SealingKey::from_secret(&garbage),
            Err(KeyError::PrivateKey { .. })
        ));

        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let mut mismatched = secret.clone();
        mismatched.data.as_mut().unwrap().insert(
            "tls.key".into(),
            ByteString(other.serialize_pem().into_bytes()),
        );
        assert!(matches!(
            SealingKey::from_secret(&mismatched),
            Err(KeyError::Mismatch { .. })
        ));
    }

    #[test]
    fn renewal_is_due_when_empty_old_or_before_the_cutoff() {
        let metrics = SealedSecretMetrics::default();
        let ring = KeyRing::new(&metrics);
        let now = SystemTime::now();
        assert!(renewal_due(&ring, &settings(), now), "no key yet");
        ring.set(vec![Arc::new(reload_key(&generated().1))]);
        assert!(!renewal_due(&ring, &settings(), now));
        let in_31_days = now + Duration::from_secs(31 * 24 * 3600);
        assert!(renewal_due(&ring, &settings(), in_31_days));
        let disabled = KeySettings {
            renew_period: Duration::ZERO,
            ..settings()
        };
        assert!(!renewal_due(&ring, &disabled, in_31_days));
        let cutoff = KeySettings {
            cutoff: Some(now + Duration::from_secs(60)),
            ..settings()
        };
        assert!(renewal_due(&ring, &cutoff, now));
    }
}
