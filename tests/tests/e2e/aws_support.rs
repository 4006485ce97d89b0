//! Shared by the tests that talk to moto: an admin client for it, and a loopback door in front
//! of it that keeps what clients send, so tests count STS and Secrets Manager calls on the wire
//! and see which credentials signed them.

use std::sync::{Arc, Mutex};

use mooring_e2e::{RealEnv, TestNamespace};

/// A Secrets Manager client for moto with the realenv's static keys (test set-up only).
pub async fn moto(env: &RealEnv) -> aws_sdk_secretsmanager::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            env.var("AWS_REGION").unwrap().to_string(),
        ))
        .endpoint_url(env.var("AWS_ENDPOINT_URL").unwrap())
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            env.var("AWS_ACCESS_KEY_ID").unwrap(),
            env.var("AWS_SECRET_ACCESS_KEY").unwrap(),
            None,
            None,
            "e2e-admin",
        ))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&sdk)
}

/// Creates Secret `aws-keys` with the realenv's static keys (`access-key`, `secret-access-key`),
/// which [`static_keys_auth`] reads.
pub async fn create_static_keys(env: &RealEnv, ns: &TestNamespace) {
    ns.create_secret(
        "aws-keys",
        &[
            ("access-key", env.var("AWS_ACCESS_KEY_ID").unwrap()),
            (
                "secret-access-key",
                env.var("AWS_SECRET_ACCESS_KEY").unwrap(),
            ),
        ],
    )
    .await
    .unwrap();
}

/// The `auth` of an AWS store that signs with the keys of [`create_static_keys`].
pub fn static_keys_auth() -> serde_json::Value {
    serde_json::json!({"secretRef": {
        "accessKeyIDSecretRef": {"name": "aws-keys", "key": "access-key"},
        "secretAccessKeySecretRef": {"name": "aws-keys", "key": "secret-access-key"},
    }})
}

/// Creates (or overwrites) a secret in moto with `tags`.
pub async fn put(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
    tags: &[(&str, &str)],
) {
    let mut request = client.create_secret().name(name).secret_string(value);
    for (k, v) in tags {
        request = request.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    if request.send().await.is_err() {
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

/// Deletes `names` from moto (moto is shared by every test; names are unique, so a test that
/// fails before this leaves only its own leftovers).
pub async fn delete(client: &aws_sdk_secretsmanager::Client, names: &[String]) {
    for name in names {
        let _ = client
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await;
    }
}

/// A forwarder on loopback to moto that keeps every byte clients send (requests are small).
pub struct Door {
    /// The address to point clients at.
    pub url: String,
    /// What each connection sent, in order.
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Door {
    /// Opens a door to the moto of `env`.
    pub async fn open(env: &RealEnv) -> Door {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = env
            .var("AWS_ENDPOINT_URL")
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let shared = Arc::clone(&sent);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, sent) = (target.clone(), Arc::clone(&shared));
                let slot = {
                    let mut sent = sent.lock().unwrap();
                    sent.push(Vec::new());
                    sent.len() - 1
                };
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let upstream = async move {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match in_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            sent.lock().unwrap()[slot].extend_from_slice(&buffer[..n]);
                            if out_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = out_write.shutdown().await;
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Door { url, sent, accept }
    }

    /// How often `pattern` occurs in what was sent so far.
    pub fn count(&self, pattern: &str) -> usize {
        let sent = self.sent.lock().unwrap();
        let p = pattern.as_bytes();
        sent.iter()
            .map(|bytes| bytes.windows(p.len()).filter(|w| *w == p).count())
            .sum()
    }

    /// The bodies of the requests sent so far (framed by Content-Length).
    fn bodies(&self) -> Vec<String> {
        let sent = self.sent.lock().unwrap();
        let mut bodies = Vec::new();
        for bytes in sent.iter() {
            let mut rest: &[u8] = bytes;
            while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let body_end = (end + 4 + length).min(rest.len());
                bodies.push(String::from_utf8_lossy(&rest[end + 4..body_end]).into_owned());
                rest = &rest[body_end..];
            }
        }
        bodies
    }

    /// Every value of form field `name` in the request bodies sent so far (URL-decoded).
    pub fn form_values(&self, name: &str) -> Vec<String> {
        let key = format!("{name}=");
        self.bodies()
            .iter()
            .flat_map(|body| {
                body.split('&')
                    .filter_map(|pair| pair.strip_prefix(&key).map(url_decode))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The claims of a JWT (no signature check: the test only reads what the agent sent).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
