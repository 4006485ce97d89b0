//! Fixtures the tests of several steps share.

use std::collections::BTreeMap;

use mooring_crds::external_secret::{ExternalSecret, ExternalSecretSpec};
use zeroize::Zeroizing;

/// An ExternalSecret `app/db` (uid `uid-1`, generation 1) with `spec`.
pub(super) fn es(spec: serde_json::Value) -> ExternalSecret {
    let spec: ExternalSecretSpec = serde_json::from_value(spec).unwrap();
    let mut es = ExternalSecret::new("db", spec);
    es.metadata.namespace = Some("app".into());
    es.metadata.uid = Some("uid-1".into());
    es.metadata.generation = Some(1);
    es
}

/// Secret values from text pairs.
pub(super) fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
        .collect()
}
