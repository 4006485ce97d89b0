//! Workloads that really run: Applications whose Deployments, Jobs and Pods land on the
//! realenv's kwok Nodes (scheduled by kube-scheduler, run by kwok's Stages), so the health the
//! agent reports follows real pod state as Argo CD's does: Progressing while a rollout waits for
//! ready pods, Healthy once they are, Healthy for a completed Job, Degraded for a failed one.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use mooring_crds::application::{Application, HealthState};
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args, has_health, health};
use mooring_e2e::workloads::{FAIL_ANNOTATION, READY_DELAY_ANNOTATION, wait_for_ready_nodes};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace};

/// Bound for every wait on pods and health (kwok's Stages take about a second per step).
const TIMEOUT: Duration = Duration::from_secs(90);

/// A test's world: its namespace, the Git repository serving `app/`, the agent syncing it.
struct World {
    ns: TestNamespace,
    _repo: GitRepo,
    _cache: tempfile::TempDir,
    agent: RunningAgent,
    head: String,
}

impl World {
    /// Commits `files` under `app/`, starts an agent for a fresh namespace and applies
    /// Application `name` of `app/` (automated sync), once the kwok Nodes are Ready.
    async fn start(prefix: &str, name: &str, files: &[(&str, String)]) -> World {
        let env = RealEnv::load().unwrap();
        wait_for_ready_nodes(&env, TIMEOUT).await.unwrap();
        let ns = TestNamespace::create(&env, prefix).await.unwrap();
        let repo = GitRepo::create(&env, ns.name()).unwrap();
        for (path, text) in files {
            repo.write(&format!("app/{path}"), text).unwrap();
        }
        let (url, head) = repo.serve_over_http(&env, name, &[&ns]).await.unwrap();
        let cache = tempfile::tempdir().unwrap();
        let args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
        let agent = RunningAgent::start_with(args).await.unwrap();
        let app = ApplicationManifest::new(name, ns.name(), &url, "app")
            .application()
            .unwrap();
        ns.apply_application(&app).await.unwrap();
        World {
            ns,
            _repo: repo,
            _cache: cache,
            agent,
            head,
        }
    }

    async fn stop(self) {
        self.agent.stop().await.unwrap();
    }
}

/// A Deployment of `replicas` pods whose containers take `ready_delay` (a Go duration) to start.
fn deployment(name: &str, replicas: u32, ready_delay: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{READY_DELAY_ANNOTATION}: \"{ready_delay}\"}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1.0.0
          ports: [{{containerPort: 8080}}]
"
    )
}

/// A Job of one pod (never restarted, no retry); its container exits 1 when `fails`.
fn job(name: &str, fails: bool) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {{{FAIL_ANNOTATION}: \"{fails}\"}}
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: registry.invalid/migrate:1.0.0
"
    )
}

/// A bare Pod; its container exits 1 (and is restarted: CrashLoopBackOff) when `fails`.
fn pod(name: &str, fails: bool) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{{FAIL_ANNOTATION}: \"{fails}\"}}
spec:
  containers:
    - name: main
      image: registry.invalid/main:1.0.0
"
    )
}

/// The health message of `app`'s inventory entry `kind`/`name`.
fn resource_health(app: &Application, kind: &str, name: &str) -> Option<HealthState> {
    app.status
        .as_ref()?
        .resources
        .iter()
        .find(|r| r.kind == kind && r.name == name)?
        .health
        .as_ref()
        .map(|h| h.status)
}

/// Whether `pod` is Running with condition Ready=True.
fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test]
async fn a_deployment_is_progressing_until_its_pods_are_ready_then_healthy() {
    // Each pod stays in ContainerCreating for 3 s: long enough to watch the rollout progress.
    let world = World::start(
        "workloads-deploy",
        "web",
        &[("deployment.yaml", deployment("web", 2, "3s"))],
    )
    .await;
    let ns = &world.ns;

    let progressing = ns
        .wait_for_health("web", HealthState::Progressing, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        resource_health(&progressing, "Deployment", "web"),
        Some(HealthState::Progressing),
        "{:?}",
        progressing.status
    );
    let message = health(&progressing)
        .and_then(|h| h.message.clone())
        .unwrap_or_default();
    assert!(message.contains("Deployment web"), "{message}");
    // Progressing because the pods are not ready yet, not because nothing was scheduled.
    let pods = ns.api::<Pod>();
    let selector = ListParams::default().labels("app=web");
    let listed = pods.list(&selector).await.unwrap().items;
    assert!(
        listed.iter().all(|p| !is_running_and_ready(p)),
        "pods were ready while the Application reported Progressing"
    );

    let healthy = ns
        .wait_for_health("web", HealthState::Healthy, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        resource_health(&healthy, "Deployment", "web"),
        Some(HealthState::Healthy)
    );
    // Healthy because the pods really run: two of them, Running and Ready, on kwok Nodes.
    let listed = pods.list(&selector).await.unwrap().items;
    let ready: Vec<&Pod> = listed.iter().filter(|p| is_running_and_ready(p)).collect();
    assert_eq!(ready.len(), 2, "{listed:?}");
    for pod in ready {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        assert!(
            node.is_some_and(|n| n.starts_with("kwok-node-")),
            "{node:?}"
        );
    }
    let status = ns.api::<Deployment>().get("web").await.unwrap().status;
    assert_eq!(status.and_then(|s| s.available_replicas), Some(2));
    assert!(has_health(&healthy, HealthState::Healthy));
    let sync = healthy.status.and_then(|s| s.sync).unwrap();
    assert_eq!(sync.revision.as_deref(), Some(world.head.as_str()));
    world.stop().await;
}

#[tokio::test]
async fn a_job_that_completes_makes_the_application_healthy() {
    let world = World::start(
        "workloads-job",
        "migrate",
        &[("job.yaml", job("migrate", false))],
    )
    .await;
    let ns = &world.ns;

    let healthy = ns
        .wait_for_health("migrate", HealthState::Healthy, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        resource_health(&healthy, "Job", "migrate"),
        Some(HealthState::Healthy)
    );
    // The Job really completed: its pod ran to Succeeded.
    let job = ns.api::<Job>().get("migrate").await.unwrap();
    let status = job.status.unwrap();
    assert_eq!(status.succeeded, Some(1), "{status:?}");
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Complete" && c.status == "True"),
        "{status:?}"
    );
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("job-name=migrate"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1, "{pods:?}");
    let phase = pods[0].status.as_ref().and_then(|s| s.phase.as_deref());
    assert_eq!(phase, Some("Succeeded"));
    world.stop().await;
}

#[tokio::test]
async fn a_job_whose_pod_fails_makes_the_application_degraded_naming_the_job() {
    let world = World::start(
        "workloads-job-fails",
        "migrate",
        &[("job.yaml", job("migrate-fails", true))],
    )
    .await;
    let ns = &world.ns;

    let degraded = ns
        .wait_for_health("migrate", HealthState::Degraded, TIMEOUT)
        .await
        .unwrap();
    let message = health(&degraded)
        .and_then(|h| h.message.clone())
        .unwrap_or_default();
    assert!(message.contains("Job migrate-fails"), "{message}");
    assert!(message.contains("backoff limit"), "{message}");
    assert_eq!(
        resource_health(&degraded, "Job", "migrate-fails"),
        Some(HealthState::Degraded)
    );
    // Degraded because the Job really failed: its one pod exited 1.
    let status = ns
        .api::<Job>()
        .get("migrate-fails")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.failed, Some(1), "{status:?}");
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("job-name=migrate-fails"))
        .await
        .unwrap()
        .items;
    let exit_code = pods
        .first()
        .and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first())
        .and_then(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(exit_code, Some(1), "{pods:?}");
    world.stop().await;
}

#[tokio::test]
async fn a_pod_in_git_is_healthy_once_ready_and_degraded_when_it_crash_loops() {
    let world = World::start(
        "workloads-pods",
        "pods",
        &[
            ("runs.yaml", pod("runs", false)),
            ("crashes.yaml", pod("crashes", true)),
        ],
    )
    .await;
    let ns = &world.ns;

    let degraded = ns
        .wait_for_application("both pods assessed", "pods", TIMEOUT, |app| {
            resource_health(app, "Pod", "runs") == Some(HealthState::Healthy)
                && resource_health(app, "Pod", "crashes") == Some(HealthState::Degraded)
        })
        .await
        .unwrap();
    assert!(
        has_health(&degraded, HealthState::Degraded),
        "{:?}",
        degraded.status
    );
    let message = health(&degraded)
        .and_then(|h| h.message.clone())
        .unwrap_or_default();
    assert!(message.contains("Pod crashes"), "{message}");
    assert!(!message.contains("Pod runs"), "{message}");
    world.stop().await;
}
