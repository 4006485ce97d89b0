//! The SealedSecret controller: unseals `bitnami.com/v1alpha1` SealedSecrets into Secrets.
//!
//! Behaves as upstream's controller (github.com/bitnami-labs/sealed-secrets, pkg/controller) with
//! these differences users asked for: a manually edited or deleted Secret is restored (every Secret
//! change wakes the SealedSecret of the same name, and a periodic resync catches the rest); events
//! are published only when something changed; the `Synced` condition carries a `reason`; the key
//! that opened an object is remembered (in memory, and on its Secret for restarts) so a re-unseal
//! costs one RSA operation per value; RSA work runs on at most one thread per core, so a burst of
//! objects queues instead of starting a thread each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use mooring_crds::sealed_secret::{
    MANAGED_ANNOTATION, PATCH_ANNOTATION, SYNCED, SealedSecret, SealedSecretCondition,
    SealedSecretStatus, reasons,
};
use mooring_sealing::secret::UnsealError;
use mooring_sealing::secret::unsealed_secret;
use mooring_sealing::{EnvelopeError, Scope};
use zeroize::Zeroizing;

use crate::cluster::FIELD_MANAGER;
use crate::controllers::reconciles::Reconciles;
use crate::controllers::{
    Failures, RECOUNT_EVERY, backoff, lock, merge_status, set_condition_counts,
};
use crate::events::EventSink;
use crate::metrics::{ControllerMetrics, ReasonLabels, SealedSecretMetrics};
use crate::sealed_secrets::keys::KeyRing;

/// What the controller needs.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The sealing keys.
    pub keys: Arc<KeyRing>,
    /// Metrics.
    pub metrics: SealedSecretMetrics,
    /// Events.
    pub events: EventSink,
    /// How often a healthy SealedSecret is looked at again (drift of Secrets it does not own).
    pub resync: Duration,
    /// SealedSecret uid → fingerprint of the key that opened it last.
    opened_with: Mutex<HashMap<String, String>>,
    /// Consecutive failures per SealedSecret, for backoff.
    failures: Failures,
    /// SealedSecret uid → what it was last unsealed from and a digest of the Secret that left
    /// in the API. A reconcile whose inputs and Secret are unchanged skips the RSA work (the
    /// watch wakes a SealedSecret for its own status write and for its Secret's events).
    synced: Mutex<HashMap<String, (SyncInput, [u8; 32])>>,
    /// SealedSecret uid → the Synced status this agent wrote last (status, reason, message,
    /// generation).
    statuses: Mutex<HashMap<String, WrittenStatus>>,
    /// Reconcile slots, queue depth and results; shutdown waits for the running reconciles, and
    /// only them.
    reconciles: Reconciles,
}

impl Context {
    /// A context with empty caches.
    pub fn new(
        client: kube::Client,
        keys: Arc<KeyRing>,
        metrics: SealedSecretMetrics,
        events: EventSink,
        resync: Duration,
    ) -> Context {
        Context {
            client,
            keys,
            metrics,
            events,
            resync,
            opened_with: Mutex::default(),
            failures: Failures::default(),
            synced: Mutex::default(),
            statuses: Mutex::default(),
            reconciles: Reconciles::new(
                CONTROLLER,
                MAX_CONCURRENT_RECONCILES,
                &ControllerMetrics::default(),
            ),
        }
    }

    /// Reports reconciles, errors, queue depth and durations into the agent's shared metrics.
    pub fn with_controller_metrics(mut self, metrics: &ControllerMetrics) -> Context {
        self.reconciles = Reconciles::new(CONTROLLER, MAX_CONCURRENT_RECONCILES, metrics);
        self
    }
}

/// The `controller` label of this controller's metrics.
const CONTROLLER: &str = "sealedsecret";

/// How many SealedSecrets are reconciled at once. Most of a reconcile waits on the API server
/// (read the Secret, write it, write the status), so a few times the RSA parallelism keeps the
/// cores busy while bounding in-flight requests and memory during a burst.
const MAX_CONCURRENT_RECONCILES: usize = 32;

/// Why a SealedSecret could not be synced. Messages name keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No sealing key is loaded yet.
    #[error("failed to unseal: no sealing key is loaded yet")]
    NoKeys,
    /// The sealed data could not be opened.
    #[error("failed to unseal")]
    Unseal {
        /// Why.
        #[source]
        source: UnsealError,
        /// The condition reason: InvalidBase64, TruncatedData, CorruptedData, DecryptFailed,
        /// ConflictingData or InvalidLegacyData.
        reason: &'static str,
        /// A value opened under another scope: the SealedSecret was renamed, moved, or its
        /// scope annotation changed after sealing.
        sealed_for: Option<Scope>,
    },
    /// A `template.data` entry could not be rendered.
    #[error(transparent)]
    Template(#[from] mooring_template::TemplateError),
    /// `spec.template.type` asks for a Secret type that is never made from a SealedSecret.
    #[error(
        "spec.template.type {0:?} is refused: a Secret of that type makes the API server mint a token for the ServiceAccount it names; create it directly instead"
    )]
    SecretTypeForbidden(String),
    /// A Secret of that name exists and this SealedSecret may not take it over.
    #[error(
        "Resource {0:?} already exists and is not managed by SealedSecret (annotate it with sealedsecrets.bitnami.com/managed: \"true\" to let mooring take it over)"
    )]
    Unmanaged(String),
    /// The existing Secret is immutable and its data differs.
    #[error("failed to update Secret {0:?}: it is immutable; delete it to let mooring recreate it")]
    Immutable(String),
    /// The Secret could not be read.
    #[error("failed to read Secret {name:?}")]
    ReadSecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret could not be created.
    #[error("failed to create Secret {name:?}")]
    CreateSecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Secret could not be updated.
    #[error("failed to update Secret {name:?}")]
    UpdateSecret {
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("failed to update the status")]
    Status(#[source] kube::Error),
}

impl Error {
    /// A CamelCase reason for the condition, the event and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NoKeys => reasons::NO_SEALING_KEY,
            Error::Unseal {
                sealed_for: Some(_),
                ..
            } => reasons::SCOPE_MISMATCH,
            Error::Unseal { reason, .. } => reason,
            Error::Template(_) => reasons::TEMPLATE_FAILED,
            Error::SecretTypeForbidden(_) => reasons::SECRET_TYPE_FORBIDDEN,
            Error::Unmanaged(_) => reasons::UNMANAGED,
            Error::Immutable(_) => reasons::SECRET_IMMUTABLE,
            // RBAC denied a verb: say so, so an operator knows to grant it (not a crash loop).
            Error::ReadSecret {
                source: kube::Error::Api(response),
                ..
            }
            | Error::CreateSecret {
                source: kube::Error::Api(response),
                ..
            }
            | Error::UpdateSecret {
                source: kube::Error::Api(response),
                ..
            } if response.code == 403 => reasons::FORBIDDEN,
            Error::ReadSecret { .. } | Error::CreateSecret { .. } | Error::UpdateSecret { .. } => {
                reasons::API_ERROR
            }
            Error::Status(_) => reasons::STATUS_UPDATE_FAILED,
        }
    }

    /// Whether retrying soon may help (API trouble, no key yet), as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NoKeys
                | Error::ReadSecret { .. }
                | Error::CreateSecret { .. }
                | Error::UpdateSecret { .. }
                | Error::Status(_)
        )
    }

    /// The sentence for the condition message and the event.
    fn message(&self) -> String {
        match self {
            Error::Unseal {
                sealed_for: Some(scope),
                ..
            } => format!(
                "{}; the values were sealed with scope {scope}: the SealedSecret was renamed, moved, \
                 or its scope annotation does not match how it was sealed",
                crate::errors::error_chain(self)
            ),
            other => crate::errors::error_chain(other),
        }
    }
}

/// What a successful sync did to the Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret was created.
    Created,
    /// The Secret was changed to match.
    Updated,
    /// The Secret already matched: nothing was written.
    Unchanged,
}

/// Runs the controller until `shutdown` completes. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (sealed, secrets): (Api<SealedSecret>, Api<PartialObjectMeta<Secret>>) = match &namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    // Metadata only: the Secret watch exists to notice edits and deletions, and must not cache
    // every Secret's data in memory (upstream's #1289). Every Secret wakes the SealedSecret of
    // the same name, owned or not (managed, patch and skip-owner Secrets are repaired too).
    let shutdown = futures::FutureExt::shared(shutdown);
    let in_flight = ctx.reconciles.subscribe();
    // No concurrency limit in kube's queue: the reconcile slots bound the work, where the
    // waiting objects are counted (`mooring_controller_queue_depth`).
    let controller = Controller::new(sealed, watcher::Config::default());
    let counting = count_conditions(controller.store(), ctx.metrics.clone());
    let controller = controller
        .watches(secrets, watcher::Config::default(), |secret| {
            Some(ObjectRef::<SealedSecret>::new(&secret.name_any()).within(&secret.namespace()?))
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_in_slot, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    crate::controllers::run_with_until_drained(controller, counting, shutdown, in_flight).await;
}

/// Keeps the `mooring_sealedsecret_condition` gauge equal to the SealedSecrets in the watch
/// cache by `Synced` status (recounted, so restarts and deletions are reflected).
async fn count_conditions(store: Store<SealedSecret>, metrics: SealedSecretMetrics) {
    let mut every = tokio::time::interval(RECOUNT_EVERY);
    loop {
        every.tick().await;
        let cached = store.state();
        let statuses = cached.iter().map(|sealed| {
            sealed
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == SYNCED))
                .map_or("Unknown", |c| c.status.as_str())
        });
        set_condition_counts(&metrics.conditions, statuses);
    }
}

/// One reconcile in a slot: nothing while the SealedSecret is being deleted (its Secret is
/// garbage-collected with it), else a sync, its report, and when to look again.
async fn reconcile_in_slot(sealed: Arc<SealedSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    if sealed.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.reconciles
        .run_in_slot(sync_and_report(&sealed, &ctx), Error::reason)
        .await
}

/// Syncs, reports the result (metrics and events, then the status), and says when to look again.
async fn sync_and_report(sealed: &SealedSecret, ctx: &Context) -> Result<Action, Error> {
    let result = sync(sealed, ctx).await;
    record(sealed, ctx, &result).await;
    let status = write_status(sealed, ctx, &result).await;
    let uid = sealed.uid().unwrap_or_default();
    match result {
        Ok(_) => {
            status?;
            ctx.failures.clear(&uid);
            Ok(Action::requeue(ctx.resync))
        }
        Err(error) => Err(error),
    }
}

fn error_policy(sealed: Arc<SealedSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = sealed.uid().unwrap_or_default();
    let attempts = ctx.failures.record(&uid);
    Action::requeue(backoff(attempts, error.is_retryable()))
}

/// A written `Synced` condition: status, reason, message, observed generation.
type WrittenStatus = (String, Option<String>, Option<String>, Option<i64>);

/// What an unseal result depends on besides the encrypted data: the spec (by generation), the
/// scope label (from metadata, which has no generation) and the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SyncInput {
    generation: Option<i64>,
    label: Vec<u8>,
    keys: u64,
}

/// The annotation on a generated Secret naming the key that opened its SealedSecret (the
/// SHA-256 fingerprint of its public key, hex; public information): the key tried first after
/// a restart, so re-checking every object costs one RSA operation per value instead of trying
/// the keys in turn. Only a hint: it is written along with the Secret, never on its own (a
/// Secret that already matches is not rewritten for it), and is not compared for drift.
pub const SEALING_KEY_ANNOTATION: &str = "mooring.dev/sealing-key";

/// The annotations compared for drift: all but [`SEALING_KEY_ANNOTATION`]; empty is none.
fn compared_annotations(secret: &Secret) -> Option<BTreeMap<String, String>> {
    let mut annotations = secret.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(SEALING_KEY_ANNOTATION);
    Some(annotations).filter(|a| !a.is_empty())
}

/// A digest of the parts of a Secret mooring manages (same fields as [`same_content`]).
fn content_digest(secret: &Secret) -> [u8; 32] {
    let empty_is_none = |m: &Option<BTreeMap<String, String>>| m.clone().filter(|m| !m.is_empty());
    let content = serde_json::json!([
        secret.data.clone().unwrap_or_default(),
        secret.type_,
        empty_is_none(&secret.metadata.labels),
        compared_annotations(secret),
        secret.metadata.owner_references.clone().unwrap_or_default(),
    ]);
    let bytes = Zeroizing::new(serde_json::to_vec(&content).unwrap_or_default());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The Secret type the API server turns into a ServiceAccount token: whoever may create such a
/// Secret may mint a token for any ServiceAccount of the namespace (ESO's GHSA-fq7h), so the
/// agent's own Secret rights must never be lent to a SealedSecret author for it.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Refuses a SealedSecret whose template asks for a ServiceAccount-token Secret; checked before
/// any RSA work or API call.
fn ensure_allowed_type(sealed: &SealedSecret) -> Result<(), Error> {
    let type_ = sealed
        .spec
        .template
        .as_ref()
        .and_then(|t| t.type_.as_deref());
    match type_ {
        Some(type_) if type_ == SERVICE_ACCOUNT_TOKEN_TYPE => {
            Err(Error::SecretTypeForbidden(type_.to_string()))
        }
        _ => Ok(()),
    }
}

/// Unseals and writes the Secret, unless nothing it depends on changed since the last time.
async fn sync(sealed: &SealedSecret, ctx: &Context) -> Result<Outcome, Error> {
    ensure_allowed_type(sealed)?;
    let name = sealed.name_any();
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &sealed.namespace().unwrap_or_default());
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|source| Error::ReadSecret {
            name: name.clone(),
            source,
        })?;
    let uid = sealed.uid().unwrap_or_default();
    let scope = Scope::from_annotations(sealed.annotations());
    let input = SyncInput {
        generation: sealed.metadata.generation,
        label: scope.label(&sealed.namespace().unwrap_or_default(), &name),
        keys: ctx.keys.version(),
    };
    if let Some(existing) = &existing {
        let unchanged = lock(&ctx.synced)
            .get(&uid)
            .is_some_and(|(last, digest)| *last == input && *digest == content_digest(existing));
        if unchanged {
            return Ok(Outcome::Unchanged);
        }
    }
    let annotated = existing
        .as_ref()
        .and_then(|secret| secret.annotations().get(SEALING_KEY_ANNOTATION).cloned());
    let (data, opened_with) = unseal(sealed, ctx, annotated).await?;
    let mut desired = unsealed_secret(sealed, data);
    if let Some(fingerprint) = opened_with {
        desired
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SEALING_KEY_ANNOTATION.into(), fingerprint);
    }
    let (outcome, written) = write_secret(sealed, existing, desired, &api).await?;
    lock(&ctx.synced).insert(uid, (input, content_digest(&written)));
    Ok(outcome)
}

/// Opens every value with the key ring, off the async workers (RSA is CPU work), at most one
/// object per core at a time. The key tried first is the one that opened this object last time
/// in this process, else the one recorded on its Secret (`annotated`, which survives restarts).
/// Returns the values and the fingerprint of the key that opened the last of them.
async fn unseal(
    sealed: &SealedSecret,
    ctx: &Context,
    annotated: Option<String>,
) -> Result<(BTreeMap<String, Vec<u8>>, Option<String>), Error> {
    if ctx.keys.is_empty() {
        return Err(Error::NoKeys);
    }
    let uid = sealed.uid().unwrap_or_default();
    let remembered = lock(&ctx.opened_with).get(&uid).cloned();
    let hint = remembered.or(annotated);
    let keys = Arc::clone(&ctx.keys);
    let object = sealed.clone();
    let permit = ctx.keys.rsa_slot().await;
    let joined = tokio::task::spawn_blocking(move || {
        let opened = open_all(&object, &keys, hint);
        drop(permit);
        opened
    })
    .await;
    let (result, used) = joined.map_err(|_| Error::NoKeys)?;
    if let Some(fingerprint) = &used {
        lock(&ctx.opened_with).insert(uid, fingerprint.clone());
    }
    result.map(|data| (data, used))
}

type Opened = (Result<BTreeMap<String, Vec<u8>>, Error>, Option<String>);

fn open_all(sealed: &SealedSecret, keys: &KeyRing, hint: Option<String>) -> Opened {
    let mut used = hint;
    let mut first_failure: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut worst: Option<EnvelopeError> = None;
    let mut opener =
        |label: &[u8], ciphertext: &[u8]| -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
            match keys.open(label, ciphertext, used.as_deref()) {
                Ok((plaintext, fingerprint)) => {
                    used = Some(fingerprint);
                    Ok(plaintext)
                }
                Err(error) => {
                    if error == EnvelopeError::DecryptSessionKey && first_failure.is_none() {
                        first_failure = Some((label.to_vec(), ciphertext.to_vec()));
                    }
                    if worst != Some(EnvelopeError::Truncated) {
                        worst = Some(error);
                    }
                    Err(error)
                }
            }
        };
    let result = mooring_sealing::secret::unseal(sealed, &mut opener);
    let result = match result {
        Ok(values) => render_templates(sealed, values),
        Err(source) => {
            let reason = unseal_reason(&source, worst.as_ref());
            let sealed_for = first_failure
                .and_then(|(label, ciphertext)| diagnose_scope(sealed, keys, &label, &ciphertext));
            Err(Error::Unseal {
                source,
                reason,
                sealed_for,
            })
        }
    };
    (result, used)
}

/// Renders `template.data` over the decrypted values (rendered keys win, as upstream).
fn render_templates(
    sealed: &SealedSecret,
    mut values: BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let templates = sealed.spec.template.as_ref().and_then(|t| t.data.as_ref());
    if let Some(templates) = templates.filter(|t| !t.is_empty()) {
        let rendered = mooring_template::render_all(templates, &values)?;
        values.extend(rendered);
    }
    Ok(values.into_iter().map(|(k, v)| (k, v.to_vec())).collect())
}

/// The condition reason for an unseal failure; `envelope` is the worst envelope error seen.
fn unseal_reason(error: &UnsealError, envelope: Option<&EnvelopeError>) -> &'static str {
    match error {
        UnsealError::BothDataFormats => reasons::CONFLICTING_DATA,
        UnsealError::LegacyNotASecret => reasons::INVALID_LEGACY_DATA,
        UnsealError::Keys(keys) if !keys.invalid_base64.is_empty() => reasons::INVALID_BASE64,
        _ => match envelope {
            Some(EnvelopeError::Truncated) => reasons::TRUNCATED_DATA,
            Some(EnvelopeError::DecryptValue) => reasons::CORRUPTED_DATA,
            _ => reasons::DECRYPT_FAILED,
        },
    }
}

/// On failure only: does the value open under another scope's label? Costs at most two RSA
/// operations per key, and names the likely cause (renamed, moved, wrong scope annotation).
fn diagnose_scope(
    sealed: &SealedSecret,
    keys: &KeyRing,
    tried: &[u8],
    ciphertext: &[u8],
) -> Option<Scope> {
    let namespace = sealed.namespace().unwrap_or_default();
    let name = sealed.name_any();
    [Scope::ClusterWide, Scope::NamespaceWide, Scope::Strict]
        .into_iter()
        .filter(|scope| scope.label(&namespace, &name) != tried)
        .find(|scope| {
            keys.open(&scope.label(&namespace, &name), ciphertext, None)
                .is_ok()
        })
}

fn annotation_is_true(secret: &Secret, key: &str) -> bool {
    secret.annotations().get(key).is_some_and(|v| v == "true")
}

fn is_controlled_by(secret: &Secret, sealed: &SealedSecret) -> bool {
    let uid = sealed.uid();
    secret.owner_references().iter().any(|o| {
        o.controller == Some(true) && Some(&o.uid) == uid.as_ref() && o.kind == "SealedSecret"
    })
}

/// The existing Secret changed to match, as upstream decides: only a Secret this SealedSecret
/// owns, or one annotated `sealedsecrets.bitnami.com/managed` (take over) or `/patch` (merge the
/// keys in) may be written.
fn merged_secret(
    existing: &Secret,
    desired: Secret,
    sealed: &SealedSecret,
) -> Result<Secret, Error> {
    let controlled = is_controlled_by(existing, sealed);
    let managed = annotation_is_true(existing, MANAGED_ANNOTATION);
    let patch = annotation_is_true(existing, PATCH_ANNOTATION);
    if !controlled && !managed && !patch {
        return Err(Error::Unmanaged(sealed.name_any()));
    }
    let mut merged = existing.clone();
    merged.type_ = desired.type_.or(existing.type_.clone());
    if patch {
        let mut data = existing.data.clone().unwrap_or_default();
        data.extend(desired.data.unwrap_or_default());
        merged.data = Some(data);
        let mut labels = existing.metadata.labels.clone().unwrap_or_default();
        labels.extend(desired.metadata.labels.unwrap_or_default());
        merged.metadata.labels = Some(labels).filter(|l| !l.is_empty());
        let mut annotations = existing.metadata.annotations.clone().unwrap_or_default();
        annotations.extend(desired.metadata.annotations.unwrap_or_default());
        merged.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
        if managed {
            merged.metadata.owner_references = desired.metadata.owner_references;
        }
    } else {
        merged.data = desired.data;
        merged.metadata.labels = desired.metadata.labels;
        merged.metadata.annotations = desired.metadata.annotations;
        merged.metadata.owner_references = desired.metadata.owner_references;
    }
    Ok(merged)
}

fn same_content(a: &Secret, b: &Secret) -> bool {
    let empty_is_none = |m: &Option<BTreeMap<String, String>>| m.clone().filter(|m| !m.is_empty());
    a.data.clone().unwrap_or_default() == b.data.clone().unwrap_or_default()
        && a.type_ == b.type_
        && empty_is_none(&a.metadata.labels) == empty_is_none(&b.metadata.labels)
        && compared_annotations(a) == compared_annotations(b)
        && a.metadata.owner_references.clone().unwrap_or_default()
            == b.metadata.owner_references.clone().unwrap_or_default()
}

/// Creates or updates the Secret; returns what happened and the Secret as it now is.
async fn write_secret(
    sealed: &SealedSecret,
    existing: Option<Secret>,
    desired: Secret,
    api: &Api<Secret>,
) -> Result<(Outcome, Secret), Error> {
    let name = sealed.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let Some(existing) = existing else {
        let created = api
            .create(&params, &desired)
            .await
            .map_err(|source| Error::CreateSecret { name, source })?;
        return Ok((Outcome::Created, created));
    };
    let merged = merged_secret(&existing, desired, sealed)?;
    if same_content(&existing, &merged) {
        return Ok((Outcome::Unchanged, existing));
    }
    if existing.immutable == Some(true) && existing.data != merged.data {
        return Err(Error::Immutable(name));
    }
    let updated = api
        .replace(&name, &params, &merged)
        .await
        .map_err(|source| Error::UpdateSecret { name, source })?;
    Ok((Outcome::Updated, updated))
}

/// Metrics and events for one reconcile; events only when something changed.
async fn record(sealed: &SealedSecret, ctx: &Context, result: &Result<Outcome, Error>) {
    let previous = sealed
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == SYNCED));
    let event = match result {
        Ok(outcome) => {
            ctx.metrics.unseals.inc();
            let verb = match outcome {
                Outcome::Created => "created",
                Outcome::Updated => "updated",
                Outcome::Unchanged => {
                    // Unchanged but previously failing: say it recovered, once.
                    if previous.is_some_and(|c| c.status == "True") {
                        return;
                    }
                    "already up to date"
                }
            };
            Event {
                type_: EventType::Normal,
                reason: reasons::UNSEALED.into(),
                note: Some(format!("SealedSecret unsealed successfully: Secret {verb}")),
                action: "Unseal".into(),
                secondary: None,
            }
        }
        Err(error) => {
            ctx.metrics
                .errors
                .get_or_create(&ReasonLabels {
                    reason: error.reason().into(),
                })
                .inc();
            let message = error.message();
            if previous
                .is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message))
            {
                return;
            }
            Event {
                type_: EventType::Warning,
                reason: error.reason().into(),
                note: Some(message),
                action: "Unseal".into(),
                secondary: None,
            }
        }
    };
    ctx.events.publish(&sealed.object_ref(&()), event).await;
}

/// The condition for a result (pure).
fn condition(result: &Result<Outcome, Error>) -> (String, Option<String>, Option<String>) {
    match result {
        Ok(_) => ("True".into(), Some(reasons::UNSEALED.into()), None),
        Err(error) => (
            "False".into(),
            Some(error.reason().into()),
            Some(error.message()),
        ),
    }
}

/// Writes the status only when the condition or the observed generation changed.
async fn write_status(
    sealed: &SealedSecret,
    ctx: &Context,
    result: &Result<Outcome, Error>,
) -> Result<(), Error> {
    let (status, reason, message) = condition(result);
    let current = sealed.status.clone().unwrap_or_default();
    let previous = current.conditions.iter().find(|c| c.type_ == SYNCED);
    let written = (
        status.clone(),
        reason.clone(),
        message.clone(),
        sealed.metadata.generation,
    );
    let in_cache = previous
        .is_some_and(|c| c.status == status && c.reason == reason && c.message == message)
        && current.observed_generation == sealed.metadata.generation;
    // The watch cache may not show our last write yet (a reconcile woken by the Secret we just
    // created): compare with what this agent wrote last, too.
    let uid = sealed.uid().unwrap_or_default();
    let written_last = lock(&ctx.statuses).get(&uid) == Some(&written);
    if in_cache || written_last {
        return Ok(());
    }
    let now = jiff::Timestamp::now().to_string();
    let transition = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    let new_status = SealedSecretStatus {
        conditions: vec![SealedSecretCondition {
            type_: SYNCED.into(),
            status: status.clone(),
            last_update_time: Some(now),
            last_transition_time: transition,
            reason,
            message,
        }],
        observed_generation: sealed.metadata.generation,
    };
    let api: Api<SealedSecret> =
        Api::namespaced(ctx.client.clone(), &sealed.namespace().unwrap_or_default());
    merge_status(&api, &sealed.name_any(), &new_status)
        .await
        .map_err(Error::Status)?;
    lock(&ctx.statuses).insert(uid, written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use mooring_crds::sealed_secret::SKIP_SET_OWNER_REFERENCES_ANNOTATION;
    use mooring_crds::sealed_secret::{SealedSecretSpec, SecretTemplateSpec};

    fn sealed(template: Option<SecretTemplateSpec>) -> SealedSecret {
        let mut sealed = SealedSecret::new(
            "db",
            SealedSecretSpec {
                template,
                ..Default::default()
            },
        );
        sealed.metadata.namespace = Some("prod".into());
        sealed.metadata.uid = Some("uid-1".into());
        sealed
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn desired_secret_copies_the_template_and_is_owned() {
        let template = SecretTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "api".into())])),
                name: Some("ignored".into()),
                ..Default::default()
            }),
            type_: Some("kubernetes.io/basic-auth".into()),
            immutable: Some(true),
            data: None,
        };
        let secret = unsealed_secret(&sealed(Some(template)), data(&[("password", "p")]));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("db"),
            "name forced to the SealedSecret's"
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        assert_eq!(secret.immutable, Some(true));
        let owners = secret.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (owners[0].uid.as_str(), owners[0].controller),
            ("uid-1", Some(true))
        );
        assert_eq!(owners[0].block_owner_deletion, None);
    }

    #[test]
    fn skip_owner_references_annotation_is_honoured() {
        let template = SecretTemplateSpec {
            metadata: Some(ObjectMeta {
                annotations: Some(BTreeMap::from([(
                    SKIP_SET_OWNER_REFERENCES_ANNOTATION.into(),
                    "true".into(),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let secret = unsealed_secret(&sealed(Some(template)), data(&[]));
        assert_eq!(secret.metadata.owner_references, None);
    }

    fn existing(annotations: &[(&str, &str)], owned_by: Option<&str>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                owner_references: owned_by.map(|uid| {
                    vec![OwnerReference {
                        kind: "SealedSecret".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "other".into(),
                ByteString(b"kept?".to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn a_foreign_secret_is_never_taken_over() {
        let ss = sealed(None);
        let desired = unsealed_secret(&ss, data(&[("password", "p")]));
        let foreign = existing(&[], Some("someone-else"));
        let error = merged_secret(&foreign, desired, &ss).unwrap_err();
        assert_eq!(error.reason(), "Unmanaged");
        assert!(
            error
                .to_string()
                .contains("already exists and is not managed by SealedSecret")
        );
    }

    #[test]
    fn managed_replaces_and_patch_merges() {
        let ss = sealed(None);
        let desired = || unsealed_secret(&ss, data(&[("password", "p")]));
        let managed = merged_secret(
            &existing(&[(MANAGED_ANNOTATION, "true")], None),
            desired(),
            &ss,
        )
        .unwrap();
        assert_eq!(
            managed.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["password"]
        );
        assert!(is_controlled_by(&managed, &ss), "ownership taken");
        assert_eq!(
            managed.metadata.annotations, None,
            "managed annotation dropped, as upstream"
        );

        let patched = merged_secret(
            &existing(&[(PATCH_ANNOTATION, "true")], None),
            desired(),
            &ss,
        )
        .unwrap();
        assert_eq!(
            patched.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["other", "password"]
        );
        assert!(
            !is_controlled_by(&patched, &ss),
            "patch alone does not take ownership"
        );
    }

    #[test]
    fn an_owned_secret_with_matching_content_is_unchanged() {
        let ss = sealed(None);
        let desired = unsealed_secret(&ss, data(&[("password", "p")]));
        let current = merged_secret(&existing(&[], Some("uid-1")), desired.clone(), &ss).unwrap();
        let again = merged_secret(&current, desired, &ss).unwrap();
        assert!(same_content(&current, &again));
        let mut drifted = current.clone();
        drifted
            .data
            .as_mut()
            .unwrap()
            .insert("password".into(), ByteString(b"edited".to_vec()));
        assert!(!same_content(&drifted, &again));
    }

    #[test]
    fn the_sealing_key_annotation_is_a_hint_not_drift() {
        let ss = sealed(None);
        let mut desired = unsealed_secret(&ss, data(&[("password", "p")]));
        desired.metadata.annotations = Some(BTreeMap::from([(
            SEALING_KEY_ANNOTATION.to_string(),
            "new-key".to_string(),
        )]));
        let current = merged_secret(&existing(&[], Some("uid-1")), desired.clone(), &ss).unwrap();
        assert_eq!(
            current.metadata.annotations.as_ref().unwrap()[SEALING_KEY_ANNOTATION],
            "new-key",
            "recorded when the Secret is written"
        );
        // Written by an older mooring, by upstream, or opened with another key since: the same
        // Secret, not rewritten for the hint alone.
        for recorded in [None, Some("old-key")] {
            let mut other = current.clone();
            other.metadata.annotations =
                recorded.map(|k| BTreeMap::from([(SEALING_KEY_ANNOTATION.into(), k.into())]));
            assert!(same_content(&other, &current), "{recorded:?}");
            assert_eq!(
                content_digest(&other),
                content_digest(&current),
                "{recorded:?}"
            );
        }
        // Other annotations still count.
        let mut edited = current.clone();
        edited
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("team".into(), "payments".into());
        assert!(!same_content(&edited, &current));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let seconds: Vec<u64> = (1..=4).map(|n| backoff(n, true).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8]);
        assert_eq!(backoff(40, true), Duration::from_secs(300));
        assert_eq!(backoff(40, false), Duration::from_secs(600));
    }

    #[test]
    fn unseal_failures_get_distinct_reasons() {
        use mooring_sealing::secret::KeyErrors;
        let keys = |invalid: &[&str], undecryptable: &[&str]| {
            UnsealError::Keys(KeyErrors {
                invalid_base64: invalid.iter().map(|k| k.to_string()).collect(),
                undecryptable: undecryptable.iter().map(|k| k.to_string()).collect(),
            })
        };
        let cases = [
            (UnsealError::BothDataFormats, None, "ConflictingData"),
            (UnsealError::LegacyNotASecret, None, "InvalidLegacyData"),
            (
                keys(&["a"], &["b"]),
                Some(EnvelopeError::DecryptSessionKey),
                "InvalidBase64",
            ),
            (
                keys(&[], &["b"]),
                Some(EnvelopeError::Truncated),
                "TruncatedData",
            ),
            (
                keys(&[], &["b"]),
                Some(EnvelopeError::DecryptValue),
                "CorruptedData",
            ),
            (
                keys(&[], &["b"]),
                Some(EnvelopeError::DecryptSessionKey),
                "DecryptFailed",
            ),
        ];
        for (error, envelope, reason) in cases {
            assert_eq!(unseal_reason(&error, envelope.as_ref()), reason, "{error}");
        }
    }

    #[test]
    fn a_service_account_token_type_is_refused_before_unsealing() {
        let template = |type_: &str| SecretTemplateSpec {
            type_: Some(type_.into()),
            ..Default::default()
        };
        let error = ensure_allowed_type(&sealed(Some(template(
            "kubernetes.io/service-account-token",
        ))))
        .unwrap_err();
        assert_eq!(error.reason(), "SecretTypeForbidden");
        assert!(!error.is_retryable());
        assert!(
            error.message().starts_with(
                "spec.template.type \"kubernetes.io/service-account-token\" is refused"
            ),
            "{}",
            error.message()
        );
        for allowed in ["Opaque", "kubernetes.io/basic-auth", "kubernetes.io/tls"] {
            assert!(ensure_allowed_type(&sealed(Some(template(allowed)))).is_ok());
        }
        assert!(ensure_allowed_type(&sealed(None)).is_ok());
    }

    #[test]
    fn conditions_carry_a_reason() {
        let condition_ok = condition(&Ok(Outcome::Unchanged));
        assert_eq!(condition_ok, ("True".into(), Some("Unsealed".into()), None));
        let failed = condition(&Err(Error::Unmanaged("db".into())));
        assert_eq!(failed.0, "False");
        assert_eq!(failed.1.as_deref(), Some("Unmanaged"));
    }
}
