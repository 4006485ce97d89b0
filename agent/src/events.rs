//! Kubernetes Events, published only when something changed (never on a no-op reconcile).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Publishes Events as the `mooring` controller; failures are logged, never fatal.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
    client: kube::Client,
    reporter: Reporter,
}

impl EventSink {
    /// A sink reporting as `mooring` (instance: the pod name when known).
    pub fn new(client: kube::Client) -> EventSink {
        let reporter = Reporter {
            controller: "mooring".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        EventSink {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
        }
    }

    /// Publishes `event` about `object` as an Event of its own. [`EventSink::publish`] folds an
    /// event into an earlier one of the same reason (a series keeps the first note); use this
    /// when each note matters, such as which field manager changed which object.
    pub async fn publish_distinct(&self, object: &ObjectReference, event: Event) {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, object).await {
            tracing::warn!(%error, reason = %event.reason, "failed to publish an event");
        }
    }

    /// Publishes `event` about `object`.
    pub async fn publish(&self, object: &ObjectReference, event: Event) {
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason = %event.reason, "failed to publish an event");
        }
    }
}
