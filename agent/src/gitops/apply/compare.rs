//! Desired versus live: a digest of what mooring applies, a cheap "is everything mooring sets
//! still there" check, the comparison of a server-side dry-run with live, and who changed an
//! object (from `managedFields`).

use serde_json::Value;

use crate::cluster::FIELD_MANAGER;

/// SHA-256 of the canonical JSON of `manifest`, hex. serde_json maps are ordered, so equal
/// manifests hash equal however their YAML was written.
pub fn manifest_hash(manifest: &Value) -> String {
    let bytes = serde_json::to_vec(manifest).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether every field `desired` sets has the same value in `live`. Fields only live has
/// (defaults, status, other managers' fields) are ignored; lists must have the same length and
/// match element by element. `status` and server-owned metadata are not compared.
///
/// A `false` answer may be a false alarm (the API server normalises `"1Gi"`, `0.5` and so on):
/// the caller confirms it with a server-side dry-run before writing.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    let (Some(desired), Some(live)) = (desired.as_object(), live.as_object()) else {
        return false;
    };
    desired.iter().all(|(field, value)| match field.as_str() {
        "status" | "apiVersion" => true,
        "metadata" => metadata_is_subset(value, live.get("metadata").unwrap_or(&Value::Null)),
        _ => value_is_subset(value, live.get(field).unwrap_or(&Value::Null)),
    })
}

fn metadata_is_subset(desired: &Value, live: &Value) -> bool {
    ["name", "namespace", "labels", "annotations"]
        .iter()
        .all(|field| {
            value_is_subset(
                desired.get(*field).unwrap_or(&Value::Null),
                live.get(*field).unwrap_or(&Value::Null),
            )
        })
}

fn value_is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        // An explicit null or an empty map/list in Git means "not set": the API server drops them.
        (Value::Null, _) => true,
        (Value::Object(d), Value::Null) => d.is_empty(),
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| value_is_subset(v, l.get(k).unwrap_or(&Value::Null))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(d, l)| value_is_subset(d, l))
        }
        (Value::Number(d), Value::Number(l)) => d == l || d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// The paths (`data.greeting`, `spec.template.spec.containers[0].image`) where `live` no longer
/// holds what `desired` sets, at most `limit` of them: what a manual change touched.
pub fn differences(desired: &Value, live: &Value, limit: usize) -> Vec<String> {
    let mut found = Vec::new();
    let (Some(desired), Some(live)) = (desired.as_object(), live.as_object()) else {
        return found;
    };
    for (field, value) in desired {
        match field.as_str() {
            "status" | "apiVersion" | "kind" => {}
            "metadata" => {
                for part in ["labels", "annotations"] {
                    let (Some(d), l) = (
                        value.get(part),
                        live.get("metadata").and_then(|m| m.get(part)),
                    ) else {
                        continue;
                    };
                    walk(
                        d,
                        l.unwrap_or(&Value::Null),
                        &format!("metadata.{part}"),
                        limit,
                        &mut found,
                    );
                }
            }
            _ => walk(
                value,
                live.get(field).unwrap_or(&Value::Null),
                field,
                limit,
                &mut found,
            ),
        }
    }
    found
}

/// `source` cut to the shape of `shape`: the fields `shape` sets, with `source`'s values (a
/// dry-run answer cut to what Git sets, with the API server's normalised spellings).
pub fn project(shape: &Value, source: &Value) -> Value {
    match (shape, source) {
        (Value::Object(shape), Value::Object(source)) => Value::Object(
            shape
                .iter()
                .map(|(k, v)| (k.clone(), project(v, source.get(k).unwrap_or(&Value::Null))))
                .collect(),
        ),
        (Value::Array(shape), Value::Array(source)) if shape.len() == source.len() => Value::Array(
            shape
                .iter()
                .zip(source)
                .map(|(s, v)| project(s, v))
                .collect(),
        ),
        (_, source) => source.clone(),
    }
}

fn walk(desired: &Value, live: &Value, path: &str, limit: usize, found: &mut Vec<String>) {
    if found.len() >= limit || value_is_subset(desired, live) {
        return;
    }
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, v) in d {
                walk(
                    v,
                    l.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    limit,
                    found,
                );
            }
        }
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            for (i, (d, l)) in d.iter().zip(l).enumerate() {
                walk(d, l, &format!("{path}[{i}]"), limit, found);
            }
        }
        _ => found.push(path.to_string()),
    }
}

/// The field managers other than mooring that own `path` (as [`differences`] spells it) in
/// `live`'s `managedFields`: who made that change. List items are matched down to the list.
pub fn managers_of(live: &Value, path: &str) -> Vec<String> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    // `spec.containers[0].image` → ["spec", "containers"]: ownership inside lists is keyed by
    // merge keys, which the path does not carry; the list itself is enough to name a manager.
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('.') {
        match segment.split_once('[') {
            Some((list, _)) => {
                segments.push(list);
                break;
            }
            None => segments.push(segment),
        }
    }
    let mut owners = Vec::new();
    for entry in entries {
        let Some(manager) = entry.get("manager").and_then(Value::as_str) else {
            continue;
        };
        if manager == FIELD_MANAGER || owners.iter().any(|o| o == manager) {
            continue;
        }
        let mut node = entry.get("fieldsV1");
        for segment in &segments {
            node = node.and_then(|n| n.get(format!("f:{segment}")));
        }
        if node.is_some() {
            owners.push(manager.to_string());
        }
    }
    owners
}

/// Whether a server-side dry-run apply of the desired manifest left the object as it is live:
/// then applying would change nothing. Compared without `status` (another controller's) and
/// without the bookkeeping metadata the API server rewrites on every write.
pub fn dry_run_matches_live(dry_run: &Value, live: &Value) -> bool {
    strip_volatile(dry_run) == strip_volatile(live)
}

fn strip_volatile(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "managedFields",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "uid",
            ] {
                metadata.remove(field);
            }
        }
    }
    object
}

/// The field managers other than mooring that last wrote the object (newest first), from its
/// `managedFields`: who made a manual change. Status-only writers are left out.
pub fn other_managers(live: &Value) -> Vec<String> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut found: Vec<(String, String)> = entries
        .iter()
        .filter(|entry| {
            entry
                .get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .filter_map(|entry| {
            let manager = entry.get("manager").and_then(Value::as_str)?;
            (manager != FIELD_MANAGER).then(|| {
                let time = entry
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (time.to_string(), manager.to_string())
            })
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    let mut managers: Vec<String> = Vec::new();
    for (_, manager) in found {
        if !managers.contains(&manager) {
            managers.push(manager);
        }
    }
    managers
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a = json!({"kind": "ConfigMap", "data": {"a": "1", "b": "2"}});
        let b: Value =
            serde_json::from_str(r#"{"data": {"b": "2", "a": "1"}, "kind": "ConfigMap"}"#).unwrap();
        assert_eq!(manifest_hash(&a), manifest_hash(&b));
        assert_ne!(
            manifest_hash(&a),
            manifest_hash(&json!({"kind": "ConfigMap", "data": {"a": "1"}}))
        );
        assert_eq!(manifest_hash(&a).len(), 64);
    }

    #[test]
    fn subset_ignores_defaults_and_status_but_sees_changed_values() {
        let desired = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 0, "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
        });
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "uid": "u", "resourceVersion": "7"},
            "spec": {"replicas": 0, "strategy": {"type": "RollingUpdate"},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always"}]}}},
            "status": {"replicas": 0}
        });
        assert!(is_subset(&desired, &live));

        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(3);
        assert!(!is_subset(&desired, &scaled));
        let mut relabelled = live.clone();
        relabelled["metadata"]["labels"]["app"] = json!("other");
        assert!(!is_subset(&desired, &relabelled));
        let mut extra_container = live.clone();
        extra_container["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        assert!(!is_subset(&desired, &extra_container));
        assert!(is_subset(
            &json!({"data": {}, "metadata": {"annotations": null}}),
            &json!({"metadata": {}})
        ));
        assert!(is_subset(
            &json!({"spec": {"x": 1}}),
            &json!({"spec": {"x": 1.0}})
        ));
    }

    #[test]
    fn dry_run_comparison_ignores_bookkeeping_only() {
        let live = json!({"metadata": {"name": "c", "resourceVersion": "5", "managedFields": [1]},
            "data": {"a": "1"}, "status": {"x": 1}});
        let same = json!({"metadata": {"name": "c", "resourceVersion": "6", "managedFields": [2]},
            "data": {"a": "1"}});
        assert!(dry_run_matches_live(&same, &live));
        let changed = json!({"metadata": {"name": "c"}, "data": {"a": "2"}});
        assert!(!dry_run_matches_live(&changed, &live));
    }

    #[test]
    fn differences_name_the_changed_paths_and_their_managers() {
        let desired = json!({"kind": "Deployment", "metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
        let live = json!({"kind": "Deployment",
            "metadata": {"labels": {"app": "web"}, "managedFields": [
                {"manager": "mooring", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {}}}},
                {"manager": "kubectl-scale", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}}
            ]},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
        let paths = differences(&desired, &live, 5);
        assert_eq!(
            paths,
            ["spec.replicas", "spec.template.spec.containers[0].image"]
        );
        assert_eq!(managers_of(&live, "spec.replicas"), ["kubectl-scale"]);
        assert_eq!(managers_of(&live, &paths[1]), ["kubectl-set"]);
        assert!(managers_of(&live, "metadata.labels.app").is_empty());
        assert_eq!(differences(&desired, &live, 1).len(), 1);
        let relabelled =
            json!({"metadata": {"labels": {"app": "other"}}, "spec": live["spec"].clone()});
        assert!(differences(&desired, &relabelled, 5).contains(&"metadata.labels.app".to_string()));
    }

    #[test]
    fn projection_keeps_the_desired_shape_with_the_server_values() {
        let desired =
            json!({"spec": {"containers": [{"name": "web", "resources": {"cpu": "0.5"}}]}});
        let dry_run = json!({"spec": {"containers": [{"name": "web", "resources": {"cpu": "500m"},
            "imagePullPolicy": "Always"}], "dnsPolicy": "ClusterFirst"}, "status": {}});
        assert_eq!(
            project(&desired, &dry_run),
            json!({"spec": {"containers": [{"name": "web", "resources": {"cpu": "500m"}}]}})
        );
        let live = dry_run.clone();
        assert!(differences(&project(&desired, &dry_run), &live, 5).is_empty());
        assert_eq!(
            differences(&desired, &live, 5),
            ["spec.containers[0].resources.cpu"]
        );
    }

    #[test]
    fn other_managers_newest_first_without_mooring_and_status_writers() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "mooring", "operation": "Apply", "time": "2026-01-01T00:00:03Z"},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-01T00:00:02Z"},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2026-01-01T00:00:04Z"},
            {"manager": "kubectl-scale", "operation": "Update", "time": "2026-01-01T00:00:05Z"}
        ]}});
        assert_eq!(other_managers(&live), ["kubectl-scale", "kubectl-edit"]);
        assert!(other_managers(&json!({})).is_empty());
    }
}
