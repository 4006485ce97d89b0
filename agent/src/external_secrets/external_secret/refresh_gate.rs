//! First syncs and spec changes before periodic refreshes.
//!
//! Every provider read of an ExternalSecret passes its store's request budget
//! ([`crate::external_secrets::providers::shared_reads::SharedReads`]), a token bucket that serves callers in arrival order. When
//! periodic refreshes ask for more than the budget allows — a thousand ExternalSecrets with a
//! short `refreshInterval`, or all of them due after an outage — they queue in that bucket, and a
//! newly created ExternalSecret (or one whose spec just changed) would wait for the whole
//! backlog: ESO's refresh storm, where a new object takes minutes to get its Secret.
//!
//! So periodic refreshes of one store go through a gate a few at a time, while first syncs and
//! spec changes skip it. At most [`PERIODIC_PER_STORE`] refreshes then hold places in the bucket
//! ahead of a new object, which waits for at most that many reads instead of the backlog.
//! Refreshes are never starved: the gate does not make them wait for urgent work, it only
//! bounds how many of them queue in the bucket at once; they keep the budget's full rate
//! whenever there is no urgent work, and share it, in arrival order, when there is. Waiters at
//! the gate are served first come, first served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::controllers::lock;
use crate::external_secrets::providers::StoreId;

/// How many periodic refreshes of one store may wait for or use the provider at once. Small,
/// so that a new object waits for few reads; more than one, so that a slow read does not stall
/// the refreshes of a store whose budget has room.
pub const PERIODIC_PER_STORE: usize = 4;

/// Why an ExternalSecret reads its provider now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Never synced, or its spec (or labels/annotations) changed since the last sync: someone is
    /// waiting for this Secret.
    FirstSyncOrChange,
    /// A refresh on schedule (or a retry of one).
    Periodic,
}

/// The per-store gates for periodic refreshes.
pub struct RefreshGate {
    per_store: usize,
    stores: Mutex<HashMap<StoreId, Arc<Semaphore>>>,
}

/// A turn at the provider: held while reading, released when dropped.
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RefreshGate {
    /// Gates that let `per_store` periodic refreshes of each store through at once.
    pub fn new(per_store: usize) -> RefreshGate {
        RefreshGate {
            per_store: per_store.max(1),
            stores: Mutex::default(),
        }
    }

    /// Waits for a turn to read from `store`: at once for a first sync or a spec change, else
    /// once fewer than `per_store` other periodic refreshes of the store hold one.
    pub async fn admit(&self, store: &StoreId, urgency: Urgency) -> Turn {
        if urgency == Urgency::FirstSyncOrChange {
            return Turn { _permit: None };
        }
        let gate = {
            let mut stores = lock(&self.stores);
            Arc::clone(
                stores
                    .entry(store.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_store))),
            )
        };
        // The semaphore is never closed, so acquiring only fails in theory; then go ahead
        // rather than never refresh.
        Turn {
            _permit: gate.acquire_owned().await.ok(),
        }
    }

    /// Forgets the gates nobody holds or waits for (stores that were deleted or went quiet).
    pub fn forget_idle(&self) {
        let mut stores = lock(&self.stores);
        // Held by the map only, and every permit back: no turn is out or waited for.
        stores.retain(|_, gate| {
            Arc::strong_count(gate) > 1 || gate.available_permits() < self.per_store
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::providers::StoreKind;
    use crate::external_secrets::providers::shared_reads::{ReadKey, SharedReads};
    use mooring_provider::{RemoteRef, SecretProvider};
    use mooring_provider_fake::FakeProvider;
    use std::time::Duration;

    fn store() -> StoreId {
        StoreId {
            kind: StoreKind::SecretStore,
            namespace: Some("app".into()),
            name: "vault".into(),
        }
    }

    /// `periodic` refreshes are queued at a store whose budget they exceed, then one more
    /// ExternalSecret arrives with `newcomer` urgency. Returns the newcomer's place among the
    /// reads the provider served (1 = first) and how many reads were served in all.
    async fn newcomer_place(periodic: usize, newcomer: Urgency) -> (usize, usize) {
        let provider = Arc::new(FakeProvider::new());
        for i in 0..=periodic {
            provider.set(&format!("k{i}"), "1", format!("v{i}").as_bytes());
        }
        // 500 reads per second, no burst: the refreshes alone need `periodic` / 500 s.
        let reads = Arc::new(SharedReads::new(Duration::ZERO, 500.0, 1));
        let gate = Arc::new(RefreshGate::new(PERIODIC_PER_STORE));
        let served = Arc::new(Mutex::new(Vec::<String>::new()));
        let read = |key: String, urgency: Urgency| {
            let (provider, reads, gate, served) = (
                Arc::clone(&provider),
                Arc::clone(&reads),
                Arc::clone(&gate),
                Arc::clone(&served),
            );
            tokio::spawn(async move {
                let _turn = gate.admit(&store(), urgency).await;
                let reference = RemoteRef {
                    key: key.clone(),
                    property: None,
                    version: None,
                };
                let read_key = ReadKey {
                    store: store(),
                    consumer: None,
                    key: key.clone(),
                    version: None,
                };
                let (value, _) = reads
                    .get(read_key, Duration::ZERO, provider.get(&reference))
                    .await;
                assert!(value.is_ok(), "{key}");
                served.lock().unwrap().push(key);
            })
        };
        let mut tasks: Vec<_> = (1..=periodic)
            .map(|i| read(format!("k{i}"), Urgency::Periodic))
            .collect();
        // The storm is under way: some refreshes are done, the rest are queued.
        while served.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tasks.push(read("k0".into(), newcomer));
        for task in tasks {
            task.await.unwrap();
        }
        let served = served.lock().unwrap();
        let place = served.iter().position(|k| k == "k0").unwrap() + 1;
        (place, served.len())
    }

    #[tokio::test]
    async fn a_first_sync_is_served_ahead_of_queued_periodic_refreshes() {
        let periodic = 200;
        let (place, total) = newcomer_place(periodic, Urgency::FirstSyncOrChange).await;
        assert_eq!(total, periodic + 1, "every periodic refresh was served too");
        // Behind the five already served and at most the few refreshes holding a turn.
        assert!(
            place <= 5 + PERIODIC_PER_STORE + 2,
            "the new ExternalSecret was read as number {place} of {total}"
        );
        // Control: the same arrival as a periodic refresh waits its turn behind the backlog.
        let (place, total) = newcomer_place(periodic, Urgency::Periodic).await;
        assert_eq!(total, periodic + 1);
        assert!(
            place > periodic / 2,
            "a periodic refresh does not jump the queue: number {place} of {total}"
        );
    }

    #[tokio::test]
    async fn periodic_refreshes_keep_flowing_while_first_syncs_arrive() {
        let gate = Arc::new(RefreshGate::new(2));
        // Two refreshes hold the turns; a third waits, and is let through as soon as one ends,
        // however many first syncs keep going past it.
        let first = gate.admit(&store(), Urgency::Periodic).await;
        let second = gate.admit(&store(), Urgency::Periodic).await;
        let waiting = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _turn = gate.admit(&store(), Urgency::Periodic).await;
            })
        };
        for _ in 0..100 {
            let _urgent = gate.admit(&store(), Urgency::FirstSyncOrChange).await;
        }
        assert!(!waiting.is_finished(), "both turns are taken");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        // Idle gates are forgotten; busy ones are kept.
        gate.forget_idle();
        assert_eq!(
            gate.stores.lock().unwrap().len(),
            1,
            "one turn is still out"
        );
        drop(second);
        gate.forget_idle();
        assert!(gate.stores.lock().unwrap().is_empty());
    }
}
