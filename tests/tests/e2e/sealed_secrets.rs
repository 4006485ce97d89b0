//! SealedSecrets end to end: the agent runs in-process against the real API server, generates its
//! key, serves its certificate, and unseals what is sealed against it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use mooring_sealing::{Scope, SealingCertificate};

fn secret(name: &str, namespace: &str, values: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([("app".into(), "platform-api".into())])),
            ..Default::default()
        },
        string_data: Some(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn seal(cert_pem: &str, secret: &Secret, scope: Option<Scope>) -> SealedSecret {
    let cert = SealingCertificate::from_pem(cert_pem.as_bytes()).unwrap();
    mooring_sealing::secret::seal_secret(secret, cert.public_key(), scope, false).unwrap()
}

async fn create(ns: &TestNamespace, sealed: &SealedSecret) -> SealedSecret {
    ns.api::<SealedSecret>()
        .create(&PostParams::default(), sealed)
        .await
        .unwrap()
}

#[tokio::test]
async fn sealed_with_the_served_certificate_unseals_and_drift_is_repaired() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "ss-unseal").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let cert = agent.certificate().await.unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));

    let plain = secret(
        "db",
        ns.name(),
        &[("password", "s3cr3t-db-password"), ("user", "app")],
    );
    let mut sealed = seal(&cert, &plain, None);
    // Go-template keys over the decrypted values, as upstream's `template.data`.
    sealed
        .spec
        .template
        .get_or_insert_with(Default::default)
        .data = Some(BTreeMap::from([(
        "dsn".to_string(),
        "postgres://{{ .user }}:{{ index . \"password\" }}@db:5432/app".to_string(),
    )]));
    let created = create(&ns, &sealed).await;

    let unsealed = ns
        .wait_for_secret("db", "password", b"s3cr3t-db-password")
        .await
        .unwrap();
    assert_eq!(unsealed.data.as_ref().unwrap()["user"].0, b"app");
    assert_eq!(
        unsealed.data.as_ref().unwrap()["dsn"].0,
        b"postgres://app:s3cr3t-db-password@db:5432/app"
    );
    assert_eq!(
        unsealed.metadata.labels.as_ref().unwrap()["app"],
        "platform-api"
    );
    let owner = &unsealed.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("SealedSecret", created.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(owner.controller, Some(true));
    let (reason, message) = ns.wait_for_synced("db", "True").await.unwrap();
    assert_eq!((reason.as_str(), message.as_str()), ("Unsealed", ""));

    // The condition gauge counts it (recounted from the watch cache every 10 s).
    wait_for("the condition gauge", Duration::from_secs(30), || {
        let agent = &agent;
        async move {
            let synced = agent
                .metric("mooring_sealedsecret_condition{status=\"True\"}")
                .await
                .ok()?;
            (synced == 1.0).then_some(())
        }
    })
    .await
    .unwrap();

    // A manual edit is reverted, at the cost of one RSA operation per sealed value (the key that
    // opened the object last time is tried first; reconciles that find nothing changed cost none).
    let rsa = "mooring_sealedsecret_rsa_operations_total";
    let before = agent.metric(rsa).await.unwrap();
    let secrets: Api<Secret> = ns.api();
    let edit = serde_json::json!({"data": {"password": "ZWRpdGVk"}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"s3cr3t-db-password")
        .await
        .unwrap();
    let after = agent.metric(rsa).await.unwrap();
    assert_eq!(after - before, 2.0, "two sealed values, one operation each");

    // A deleted Secret is recreated.
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"s3cr3t-db-password")
        .await
        .unwrap();

    agent.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_never_touches_an_existing_secret_and_names_the_key() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "ss-bad").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let cert = agent.certificate().await.unwrap();

    // A foreign Secret with the same name stays as it is.
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "keep".into(),
            ByteString(b"mine".to_vec()),
        )])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create(
        &ns,
        &seal(
            &cert,
            &secret("taken", ns.name(), &[("password", "x")]),
            None,
        ),
    )
    .await;
    let (reason, message) = ns.wait_for_synced("taken", "False").await.unwrap();
    assert_eq!(reason, "Unmanaged");
    assert!(
        message.contains("already exists and is not managed"),
        "{message}"
    );
    let still = ns.api::<Secret>().get("taken").await.unwrap();
    assert_eq!(still.data.unwrap().keys().collect::<Vec<_>>(), ["keep"]);

    // Invalid base64 names the key.
    let mut broken = seal(&cert, &secret("broken", ns.name(), &[("token", "t")]), None);
    broken
        .spec
        .encrypted_data
        .insert("token".into(), "not*base64".into());
    create(&ns, &broken).await;
    let (reason, message) = ns.wait_for_synced("broken", "False").await.unwrap();
    assert_eq!(reason, "InvalidBase64");
    assert!(message.contains("token"), "{message}");

    // Sealed cluster-wide but created without the annotation: the reason says scope.
    let mut moved = seal(
        &cert,
        &secret("moved", ns.name(), &[("k", "v")]),
        Some(Scope::ClusterWide),
    );
    moved.metadata.annotations = None;
    create(&ns, &moved).await;
    let (reason, message) = ns.wait_for_synced("moved", "False").await.unwrap();
    assert_eq!(reason, "ScopeMismatch");
    assert!(message.contains("cluster-wide"), "{message}");
    assert!(
        ns.api::<Secret>().get_opt("moved").await.unwrap().is_none(),
        "nothing written"
    );

    // No secret value appears in statuses or events.
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let statuses = ns
        .api::<SealedSecret>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let text = format!(
        "{:?}{:?}",
        events.items,
        statuses.items.iter().map(|s| &s.status).collect::<Vec<_>>()
    );
    for value in ["s3cr3t", "mine"] {
        assert!(
            !text.contains(value),
            "secret value {value:?} leaked into events or status"
        );
    }
    agent.stop().await.unwrap();
}

/// Creates sealing key Secret `name` as bitnami writes it: `kubernetes.io/tls`, labelled
/// active.
async fn create_key_secret(ns: &TestNamespace, name: &str, key_pem: Vec<u8>, cert_pem: Vec<u8>) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "sealedsecrets.bitnami.com/sealed-secrets-key".into(),
                "active".into(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.key".into(), ByteString(key_pem)),
            ("tls.crt".into(), ByteString(cert_pem)),
        ])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_imported_upstream_style_key_works_without_a_restart() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "ss-import").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();

    // A key Secret as bitnami writes it: PKCS#1 `RSA PRIVATE KEY`, labelled active.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tls.key");
    let crt = dir.path().join("tls.crt");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "genrsa".as_ref(),
        "-traditional".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
        "2048".as_ref(),
    ]);
    openssl(&[
        "req".as_ref(),
        "-x509".as_ref(),
        "-new".as_ref(),
        "-key".as_ref(),
        key.as_os_str(),
        "-days".as_ref(),
        "365".as_ref(),
        "-subj".as_ref(),
        "/CN=imported".as_ref(),
        "-out".as_ref(),
        crt.as_os_str(),
    ]);
    let key_pem = std::fs::read(&key).unwrap();
    assert!(
        String::from_utf8_lossy(&key_pem).contains("BEGIN RSA PRIVATE KEY"),
        "PKCS#1 like upstream"
    );
    create_key_secret(
        &ns,
        "sealed-secrets-keyimported",
        key_pem,
        std::fs::read(&crt).unwrap(),
    )
    .await;

    // A broken key Secret next to it is skipped with a Warning event, not a crash.
    create_key_secret(
        &ns,
        "sealed-secrets-keybroken",
        b"not a key".to_vec(),
        b"not a certificate".to_vec(),
    )
    .await;
    ns.wait_for_event("an InvalidSealingKey event", Duration::from_secs(30), |e| {
        e.reason.as_deref() == Some("InvalidSealingKey")
            && e.involved_object.name.as_deref() == Some("sealed-secrets-keybroken")
    })
    .await
    .unwrap();

    let old_cert = String::from_utf8(std::fs::read(&crt).unwrap()).unwrap();
    create(
        &ns,
        &seal(
            &old_cert,
            &secret("legacy", ns.name(), &[("api-key", "from-bitnami")]),
            None,
        ),
    )
    .await;
    ns.wait_for_secret("legacy", "api-key", b"from-bitnami")
        .await
        .unwrap();
    ns.wait_for_synced("legacy", "True").await.unwrap();
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn verify_and_rotate_use_only_metadata_and_never_templates() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "ss-http").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let cert = agent.certificate().await.unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{}", agent.addr, path);

    let mut sealed = seal(
        &cert,
        &secret("api", ns.name(), &[("token", "t0ken")]),
        None,
    );
    sealed.metadata.namespace = Some(ns.name().into());
    let ok = http
        .post(url("/v1/verify"))
        .json(&sealed)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let mut renamed = sealed.clone();
    renamed.metadata.name = Some("other".into());
    let conflict = http
        .post(url("/v1/verify"))
        .json(&renamed)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);

    // A template asking for cluster-wide scope must not widen a strict secret on rotate.
    let mut hostile = sealed.clone();
    let template = hostile.spec.template.get_or_insert_with(Default::default);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations = Some(BTreeMap::from([(
        "sealedsecrets.bitnami.com/cluster-wide".into(),
        "true".into(),
    )]));
    let rotated: SealedSecret = http
        .post(url("/v1/rotate"))
        .json(&hostile)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let renamed_rotated = SealedSecret {
        metadata: renamed.metadata.clone(),
        ..rotated.clone()
    };
    assert_eq!(
        http.post(url("/v1/verify"))
            .json(&rotated)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(url("/v1/verify"))
            .json(&renamed_rotated)
            .send()
            .await
            .unwrap()
            .status(),
        409,
        "still strict: the rotated value is bound to its name"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_forced_renewal_old_objects_still_unseal_and_new_seals_use_the_new_key() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "ss-renew").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let first = agent.certificate().await.unwrap();
    let old = seal(
        &first,
        &secret("old", ns.name(), &[("v", "sealed-before")]),
        None,
    );
    create(&ns, &old).await;
    ns.wait_for_secret("old", "v", b"sealed-before")
        .await
        .unwrap();

    // What SIGUSR1 does to the running binary.
    agent.renew.notify_one();
    // RSA-4096 generation in a debug build on a loaded two-core machine has taken over 120 s.
    let second = wait_for("a new certificate", Duration::from_secs(300), || {
        let agent = &agent;
        let first = first.clone();
        async move { agent.certificate().await.ok().filter(|cert| *cert != first) }
    })
    .await
    .unwrap();
    let keys = ns
        .api::<Secret>()
        .list(&ListParams::default().labels("sealedsecrets.bitnami.com/sealed-secrets-key=active"))
        .await
        .unwrap();
    assert_eq!(
        keys.items.len(),
        2,
        "renewal adds a key and keeps the old one"
    );

    create(
        &ns,
        &seal(
            &second,
            &secret("new", ns.name(), &[("v", "sealed-after")]),
            None,
        ),
    )
    .await;
    ns.wait_for_secret("new", "v", b"sealed-after")
        .await
        .unwrap();

    // The old object still opens: its Secret is restored after a deletion.
    ns.api::<Secret>()
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    ns.wait_for_secret("old", "v", b"sealed-before")
        .await
        .unwrap();
    let verify = reqwest::Client::new()
        .post(format!("http://{}/v1/verify", agent.addr))
        .json(&{
            let mut stored = ns.api::<SealedSecret>().get("old").await.unwrap();
            stored.metadata.managed_fields = None;
            stored
        })
        .send()
        .await
        .unwrap();
    assert_eq!(verify.status(), 200);
    agent.stop().await.unwrap();

    // A restart re-checks every object, one RSA operation per value: the key that opened it is
    // recorded on its Secret (without it, "old" would first be tried with the newest key), and
    // Secrets that match are not rewritten.
    let secrets: Api<Secret> = ns.api();
    let (old_secret, new_secret) = (
        secrets.get("old").await.unwrap(),
        secrets.get("new").await.unwrap(),
    );
    let annotation = |secret: &Secret| {
        secret.metadata.annotations.as_ref().unwrap()["mooring.dev/sealing-key"].clone()
    };
    assert_eq!(
        annotation(&old_secret).len(),
        64,
        "a SHA-256 fingerprint, hex"
    );
    assert_ne!(annotation(&old_secret), annotation(&new_secret));
    let restarted = RunningAgent::start(&env, ns.name()).await.unwrap();
    wait_for("both objects re-checked", Duration::from_secs(60), || {
        let restarted = &restarted;
        async move {
            let unseals = restarted
                .metric("mooring_sealedsecret_unseals_total")
                .await
                .ok()?;
            (unseals >= 2.0).then_some(())
        }
    })
    .await
    .unwrap();
    assert_eq!(
        restarted
            .metric("mooring_sealedsecret_rsa_operations_total")
            .await
            .unwrap(),
        2.0,
        "one value each, opened by the recorded key"
    );
    for before in [old_secret, new_secret] {
        let after = secrets
            .get(&before.metadata.name.clone().unwrap())
            .await
            .unwrap();
        assert_eq!(
            after.metadata.resource_version, before.metadata.resource_version,
            "not rewritten"
        );
    }
    restarted.stop().await.unwrap();
}
