//! The conformance suite every provider passes against its real server (feature `conformance`).
//!
//! The suite does no I/O of its own: it drives the provider under test and a [`Seed`] that the
//! test implements with the store's own API (write a JSON secret, optionally with tags). Each
//! check writes under [`Seed::scope`], a prefix unique to the run, so suites of several test
//! binaries can share one server. [`run`] returns a [`Report`] rather than panicking, so a
//! failure lists every check that failed, not only the first.
//!
//! A test for a new provider is one small function:
//!
//! ```ignore
//! let report = mooring_provider::conformance::run(&provider, &seed).await;
//! report.into_result().unwrap();
//! ```

use std::collections::BTreeMap;

use crate::{FindQuery, ProviderError, RemoteRef, SecretProvider};

/// Writes secrets into the store under test, through the store's own API (not the provider).
#[async_trait::async_trait]
pub trait Seed: Send + Sync {
    /// A folder unique to this run; every key the suite writes is `<scope>/<name>`, and `find`
    /// is asked with `path: <scope>`.
    fn scope(&self) -> &str;

    /// Writes `document` (a JSON object) as the new current value of `key`, with `tags` when
    /// the store has them. Returns the version a [`RemoteRef::version`] pins it by, spelled as
    /// the provider expects it (a KV v2 number; `uuid/<VersionId>` for AWS), when the store
    /// keeps versions.
    async fn write(
        &self,
        key: &str,
        document: &serde_json::Value,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String>;

    /// Whether `find` can match tags in this store; when not, a find by tags must be refused
    /// with `InvalidConfig` rather than match everything.
    fn supports_tags(&self) -> bool;

    /// What joins the scope and the parts of a name: `/` (folders), or `-` for stores whose
    /// names are flat (Azure Key Vault: letters, digits and dashes).
    fn separator(&self) -> &str {
        "/"
    }
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks that did not apply to this store (no versions), with why.
    pub skipped: Vec<(&'static str, String)>,
    /// Checks that failed, with what was wrong.
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// The passed checks, or every failure as one message.
    pub fn into_result(self) -> Result<Vec<&'static str>, String> {
        if self.failed.is_empty() {
            return Ok(self.passed);
        }
        Err(self
            .failed
            .iter()
            .map(|(check, why)| format!("{check}: {why}"))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// The names of every check, in the order [`run`] runs them.
pub const CHECKS: &[&str] = &[
    "get_whole_value",
    "get_property",
    "get_nested_property",
    "get_map",
    "pinned_version",
    "not_found_key",
    "not_found_property",
    "find_by_name",
    "find_by_tags",
    "validate",
    "errors_never_contain_the_value",
];

/// Runs every check against `provider`, seeding through `seed`.
pub async fn run(provider: &dyn SecretProvider, seed: &dyn Seed) -> Report {
    let suite = Suite {
        provider,
        seed,
        canary: canary(),
        errors: std::sync::Mutex::new(Vec::new()),
    };
    let mut report = Report::default();
    let whole = suite.key("whole");
    let document = suite.document();
    if let Err(why) = seed.write(&whole, &document, &BTreeMap::new()).await {
        report
            .failed
            .push(("seed", format!("failed to write {whole:?}: {why}")));
        return report;
    }
    for check in CHECKS {
        let result = match *check {
            "get_whole_value" => suite.get_whole_value(&whole, &document).await,
            "get_property" => suite.get_property(&whole).await,
            "get_nested_property" => suite.get_nested_property(&whole).await,
            "get_map" => suite.get_map(&whole, &document).await,
            "pinned_version" => suite.pinned_version().await,
            "not_found_key" => suite.not_found_key().await,
            "not_found_property" => suite.not_found_property(&whole).await,
            "find_by_name" => suite.find_by_name().await,
            "find_by_tags" => suite.find_by_tags().await,
            "validate" => provider
                .validate()
                .await
                .map(|()| Outcome::Passed)
                .map_err(|e| format!("validate failed: {e}")),
            "errors_never_contain_the_value" => suite.errors_never_contain_the_value(&whole).await,
            _ => Err("unknown check".into()),
        };
        match result {
            Ok(Outcome::Passed) => report.passed.push(check),
            Ok(Outcome::Skipped(why)) => report.skipped.push((check, why)),
            Err(why) => report.failed.push((check, why)),
        }
    }
    report
}

enum Outcome {
    Passed,
    Skipped(String),
}

type Check = Result<Outcome, String>;

struct Suite<'a> {
    provider: &'a dyn SecretProvider,
    seed: &'a dyn Seed,
    /// A value that must never appear in an error.
    canary: String,
    /// Every error the provider returned during the run, as printed (Display, Debug, sources).
    errors: std::sync::Mutex<Vec<String>>,
}

/// A value unique enough to search for in error text.
fn canary() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("canary-{nanos:x}-{:x}", std::process::id())
}

/// A provider error as every place might print it: Display, Debug and each source.
fn printed(error: &ProviderError) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    text
}

impl Suite<'_> {
    fn key(&self, name: &str) -> String {
        let separator = self.seed.separator();
        format!(
            "{}{separator}{}",
            self.seed.scope().trim_end_matches('/'),
            name.replace('/', separator)
        )
    }

    fn document(&self) -> serde_json::Value {
        serde_json::json!({
            "user": "app",
            "password": self.canary,
            "port": 5432,
            "db": {"host": "db.internal", "replicas": ["r0", "r1"]},
        })
    }

    /// Records an error for the canary check and passes it on.
    fn seen(&self, error: ProviderError) -> ProviderError {
        self.errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(printed(&error));
        error
    }

    async fn get_text(&self, reference: &RemoteRef) -> Result<String, String> {
        let value = self
            .provider
            .get(reference)
            .await
            .map_err(|e| format!("get {reference:?} failed: {}", self.seen(e)))?;
        String::from_utf8(value.expose().to_vec())
            .map_err(|_| format!("get {reference:?} returned bytes that are not UTF-8"))
    }

    async fn get_whole_value(&self, key: &str, document: &serde_json::Value) -> Check {
        let text = self.get_text(&RemoteRef::key(key)).await?;
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| "the whole value is not the JSON document written".to_string())?;
        if &parsed != document {
            return Err("the whole value differs from the document written".into());
        }
        Ok(Outcome::Passed)
    }

    async fn get_property(&self, key: &str) -> Check {
        let user = self
            .get_text(&RemoteRef::key(key).with_property("user"))
            .await?;
        expect_eq("property user", &user, "app")?;
        let port = self
            .get_text(&RemoteRef::key(key).with_property("port"))
            .await?;
        expect_eq("property port (a number, as JSON)", &port, "5432")?;
        let db = self
            .get_text(&RemoteRef::key(key).with_property("db"))
            .await?;
        let parsed: serde_json::Value = serde_json::from_str(&db)
            .map_err(|_| "property db (an object) is not returned as JSON".to_string())?;
        if parsed["host"] != "db.internal" {
            return Err("property db (an object) is not the object written".into());
        }
        Ok(Outcome::Passed)
    }

    async fn get_nested_property(&self, key: &str) -> Check {
        let host = self
            .get_text(&RemoteRef::key(key).with_property("db.host"))
            .await?;
        expect_eq("property db.host", &host, "db.internal")?;
        let replica = self
            .get_text(&RemoteRef::key(key).with_property("db.replicas.1"))
            .await?;
        expect_eq("property db.replicas.1", &replica, "r1")?;
        Ok(Outcome::Passed)
    }

    async fn get_map(&self, key: &str, document: &serde_json::Value) -> Check {
        let map = self
            .provider
            .get_map(&RemoteRef::key(key))
            .await
            .map_err(|e| format!("get_map failed: {}", self.seen(e)))?;
        let expected: Vec<&String> = document
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        let keys: Vec<&String> = map.keys().collect();
        if keys != expected {
            return Err(format!("get_map keys {keys:?}, expected {expected:?}"));
        }
        expect_eq("get_map user", &lossy(map["user"].expose()), "app")?;
        expect_eq("get_map port", &lossy(map["port"].expose()), "5432")?;
        if map["password"].expose() != self.canary.as_bytes() {
            return Err("get_map password differs from the value written".into());
        }
        Ok(Outcome::Passed)
    }

    async fn pinned_version(&self) -> Check {
        let key = self.key("versioned");
        let none = BTreeMap::new();
        let first = self
            .seed
            .write(&key, &serde_json::json!({"v": "one"}), &none)
            .await?;
        let second = self
            .seed
            .write(&key, &serde_json::json!({"v": "two"}), &none)
            .await?;
        let (Some(first), Some(second)) = (first, second) else {
            return Ok(Outcome::Skipped("the store keeps no versions".into()));
        };
        if first == second {
            return Err(format!("two writes returned the same version {first:?}"));
        }
        let current = self
            .get_text(&RemoteRef::key(&key).with_property("v"))
            .await?;
        expect_eq("the current version", &current, "two")?;
        let pinned = RemoteRef {
            version: Some(first),
            ..RemoteRef::key(&key).with_property("v")
        };
        let old = self.get_text(&pinned).await?;
        expect_eq("the pinned first version", &old, "one")?;
        Ok(Outcome::Passed)
    }

    async fn not_found_key(&self) -> Check {
        let missing = RemoteRef::key(self.key("does-not-exist"));
        match self.provider.get(&missing).await {
            Ok(_) => Err("a missing key returned a value".into()),
            Err(error) => {
                let error = self.seen(error);
                expect_not_found("a missing key", &error)?;
                let map = self.provider.get_map(&missing).await;
                match map {
                    Ok(_) => Err("get_map of a missing key returned a map".into()),
                    Err(error) => expect_not_found("get_map of a missing key", &self.seen(error))
                        .map(|()| Outcome::Passed),
                }
            }
        }
    }

    async fn not_found_property(&self, key: &str) -> Check {
        for property in ["absent", "db.absent"] {
            let reference = RemoteRef::key(key).with_property(property);
            match self.provider.get(&reference).await {
                Ok(_) => return Err(format!("missing property {property:?} returned a value")),
                Err(error) => {
                    expect_not_found(&format!("missing property {property:?}"), &self.seen(error))?;
                }
            }
        }
        Ok(Outcome::Passed)
    }

    async fn find_by_name(&self) -> Check {
        let none = BTreeMap::new();
        let wanted = [self.key("found/alpha"), self.key("found/beta")];
        for (i, key) in wanted.iter().enumerate() {
            self.seed
                .write(key, &serde_json::json!({"n": i}), &none)
                .await?;
        }
        self.seed
            .write(
                &self.key("found/gamma-skip"),
                &serde_json::json!({"n": 9}),
                &none,
            )
            .await?;
        let pattern = format!("^{}(alpha|beta)$", regex::escape(&self.key("found/")));
        let query = FindQuery::new(Some(self.seed.scope().to_string()), Some(&pattern), none)
            .map_err(|e| format!("the query does not build: {e}"))?;
        let found = self
            .provider
            .find(&query)
            .await
            .map_err(|e| format!("find failed: {}", self.seen(e)))?;
        let names: Vec<&String> = found.keys().collect();
        if names != wanted.iter().collect::<Vec<_>>() {
            return Err(format!("find returned {names:?}, expected {wanted:?}"));
        }
        for (i, key) in wanted.iter().enumerate() {
            let parsed: serde_json::Value = serde_json::from_slice(found[key].expose())
                .map_err(|_| format!("the value found for {key:?} is not its JSON document"))?;
            if parsed != serde_json::json!({"n": i}) {
                return Err(format!("the value found for {key:?} differs"));
            }
            // A name found is a key `get` accepts.
            let n = self
                .get_text(&RemoteRef::key(key).with_property("n"))
                .await?;
            expect_eq(
                &format!("get of the found name {key:?}"),
                &n,
                &i.to_string(),
            )?;
        }
        Ok(Outcome::Passed)
    }

    async fn find_by_tags(&self) -> Check {
        let team = format!("team-{}", self.canary.trim_start_matches("canary-"));
        let tags = BTreeMap::from([("team".to_string(), team.clone())]);
        let query = FindQuery::new(Some(self.seed.scope().to_string()), None, tags.clone())
            .map_err(|e| format!("the query does not build: {e}"))?;
        if !self.seed.supports_tags() {
            return match self.provider.find(&query).await {
                Ok(_) => Err("a store without tags answered a find by tags".into()),
                Err(error) => match self.seen(error) {
                    ProviderError::InvalidConfig(_) => Ok(Outcome::Passed),
                    other => Err(format!("a find by tags failed with {}", other.reason())),
                },
            };
        }
        let tagged = self.key("tagged/yes");
        self.seed
            .write(&tagged, &serde_json::json!({"t": "yes"}), &tags)
            .await?;
        let other = BTreeMap::from([("team".to_string(), "someone-else".to_string())]);
        self.seed
            .write(
                &self.key("tagged/no"),
                &serde_json::json!({"t": "no"}),
                &other,
            )
            .await?;
        let found = self
            .provider
            .find(&query)
            .await
            .map_err(|e| format!("find by tags failed: {}", self.seen(e)))?;
        let names: Vec<&String> = found.keys().collect();
        if names != [&tagged] {
            return Err(format!(
                "find by tags returned {names:?}, expected [{tagged:?}]"
            ));
        }
        Ok(Outcome::Passed)
    }

    async fn errors_never_contain_the_value(&self, key: &str) -> Check {
        // Errors about the secret holding the canary, on top of those collected so far.
        let attempts = [
            RemoteRef::key(key).with_property("password.inner"),
            RemoteRef::key(key).with_property("no-such-property"),
            RemoteRef {
                version: Some("999999".into()),
                ..RemoteRef::key(key)
            },
        ];
        for reference in &attempts {
            if let Err(error) = self.provider.get(reference).await {
                self.seen(error);
            }
        }
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if errors.is_empty() {
            return Err("no error was produced to inspect".into());
        }
        if errors.iter().any(|text| text.contains(&self.canary)) {
            return Err("an error message contains the secret value".into());
        }
        Ok(Outcome::Passed)
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn expect_eq(what: &str, have: &str, want: &str) -> Result<(), String> {
    if have == want {
        Ok(())
    } else {
        Err(format!("{what}: got {have:?}, expected {want:?}"))
    }
}

fn expect_not_found(what: &str, error: &ProviderError) -> Result<(), String> {
    if !matches!(error, ProviderError::NotFound { .. }) || error.reason() != "NotFound" {
        return Err(format!(
            "{what} failed with {} instead of NotFound",
            error.reason()
        ));
    }
    if error.is_retryable() {
        return Err(format!("{what}: NotFound claims to be retryable"));
    }
    Ok(())
}
