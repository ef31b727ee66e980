//! `loadtest kube`: runs a scenario as an Indexed Job of workers in a Kubernetes
//! cluster (each pod takes shard JOB_COMPLETION_INDEX), coordinates them through
//! Redis exactly as local `--workers` does, merges, and deletes the Job.
//! `--print-manifest` prints the Job as YAML instead, for review or GitOps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, ResourceRequirements, SecretKeySelector,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};

use crate::cli::{KubeArgs, OutputOpts, RunSpec};
use crate::distributed::{new_run_id, Coordinator, WorkerWatch};
use crate::metrics::Results;
use crate::progress::Progress;
use crate::runner::time_bound;

/// How often the Job's status is read while waiting (the API server is shared).
const JOB_POLL: Duration = Duration::from_secs(2);

#[allow(clippy::large_enum_variant)] // made once per run
pub enum Outcome {
    Printed,
    Ran { results: Results, spec: RunSpec, output: OutputOpts },
}

/// Everything the Job manifest depends on.
pub struct JobParams<'a> {
    pub spec: &'a RunSpec,
    pub run_id: &'a str,
    pub namespace: &'a str,
    pub image: &'a str,
    pub workers: u32,
    pub redis: RedisRef<'a>,
    pub cpu: &'a str,
    pub memory: &'a str,
}

/// How pods find Redis: a literal URL, or a Secret's `url` key (when the URL holds a password).
pub enum RedisRef<'a> {
    Url(&'a str),
    Secret(&'a str),
}

pub fn job_name(run_id: &str) -> String {
    format!("loadtest-{run_id}")
}

pub fn job_manifest(p: &JobParams) -> anyhow::Result<Job> {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "loadtest".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "worker".to_owned()),
        ("loadtest/run-id".to_owned(), p.run_id.to_owned()),
    ]);
    let literal = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    let redis = match p.redis {
        RedisRef::Url(url) => literal("LOADTEST_REDIS_URL", url.to_owned()),
        RedisRef::Secret(secret) => EnvVar {
            name: "LOADTEST_REDIS_URL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: "url".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        },
    };
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(p.cpu.to_owned())),
        ("memory".to_owned(), Quantity(p.memory.to_owned())),
    ]);
    let container = Container {
        name: "worker".into(),
        image: Some(p.image.to_owned()),
        args: Some(vec!["worker".into()]),
        // Kubernetes sets JOB_COMPLETION_INDEX in every pod of an Indexed Job.
        env: Some(vec![
            literal("LOADTEST_SPEC", serde_json::to_string(p.spec)?),
            literal("LOADTEST_RUN_ID", p.run_id.to_owned()),
            literal("LOADTEST_WORKER_COUNT", p.workers.to_string()),
            literal("RUST_LOG", "warn".into()),
            redis,
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bound = time_bound(p.spec).as_secs() as i64;
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(p.run_id)),
            namespace: Some(p.namespace.to_owned()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".into()),
            completions: Some(p.workers as i32),
            parallelism: Some(p.workers as i32),
            // A failed worker fails the run; the coordinator reports it.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(bound),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

pub async fn run(args: KubeArgs) -> anyhow::Result<Outcome> {
    let (scenario, target, output, dist) = args.scenario.split();
    let spec = RunSpec { scenario, target };
    let workers = dist.workers.max(1);
    let redis_url = dist.redis_url.as_deref();
    let redis = match (&args.redis_url_secret, redis_url) {
        (Some(secret), _) => RedisRef::Secret(secret),
        (None, Some(url)) => RedisRef::Url(url),
        (None, None) => bail!("loadtest kube needs --redis-url (reachable from the pods) or --redis-url-secret"),
    };
    let run_id = new_run_id();
    let job = job_manifest(&JobParams {
        spec: &spec,
        run_id: &run_id,
        namespace: &args.namespace,
        image: &args.image,
        workers,
        redis,
        cpu: &args.worker_cpu,
        memory: &args.worker_memory,
    })?;
    if args.print_manifest {
        print!("{}", serde_yaml::to_string(&job)?);
        return Ok(Outcome::Printed);
    }
    // The coordinator itself needs a URL it can reach, even when pods read a Secret.
    let url = redis_url.context("the coordinator needs --redis-url to reach the same Redis as the pods")?;
    let coordinator = Coordinator::connect(url, &run_id, workers).await?;
    let client = kube::Client::try_default().await.context("connecting to Kubernetes (kubeconfig or in-cluster)")?;
    let jobs: Api<Job> = Api::namespaced(client, &args.namespace);
    let name = job_name(&run_id);
    jobs.create(&PostParams::default(), &job).await.with_context(|| format!("creating Job {name}"))?;
    let progress = Progress::new(output.quiet);
    progress.step(format!("Job {name}: {workers} workers setting up"));
    let bound = time_bound(&spec);
    let mut watch = JobWatch { jobs: jobs.clone(), name: name.clone(), last: None };
    let outcome = async {
        coordinator.start_when_ready(bound, &mut watch).await?;
        progress.step(format!("Job {name}: measuring for {:?}", spec.scenario.measured_length()));
        coordinator.collect(bound, &mut watch).await
    }
    .await;
    progress.finish();
    if let Err(e) = jobs.delete(&name, &DeleteParams::background()).await {
        tracing::warn!(job = %name, error = %e, "could not delete the Job; it expires an hour after finishing");
    }
    coordinator.cleanup().await;
    Ok(Outcome::Ran { results: outcome?, spec, output })
}

struct JobWatch {
    jobs: Api<Job>,
    name: String,
    last: Option<Instant>,
}

#[async_trait]
impl WorkerWatch for JobWatch {
    /// Fails once the Job reports a failed pod.
    async fn check(&mut self) -> anyhow::Result<()> {
        if self.last.is_some_and(|t| t.elapsed() < JOB_POLL) {
            return Ok(());
        }
        self.last = Some(Instant::now());
        let job = self.jobs.get(&self.name).await.with_context(|| format!("reading Job {}", self.name))?;
        let failed = job.status.and_then(|s| s.failed).unwrap_or(0);
        if failed > 0 {
            bail!("Job {}: {failed} worker pod(s) failed (kubectl logs -l loadtest/run-id)", self.name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Scenario, TargetOpts};
    use crate::scenario::relay::RelayArgs;

    fn spec() -> RunSpec {
        RunSpec {
            scenario: Scenario::Relay(RelayArgs {
                peers: 1000,
                room_size: 2,
                rate: 20_000.0,
                duration: Duration::from_secs(60),
                resume: false,
            }),
            target: TargetOpts {
                urls: vec!["ws://signal:8080/ws".into()],
                dialect: "native".into(),
                connect_rate: 500.0,
                setup_timeout: Duration::from_secs(60),
                drain_timeout: Duration::from_secs(5),
                server_pids: vec![],
                metrics_urls: vec![],
            },
        }
    }

    #[test]
    fn the_job_is_indexed_with_one_pod_per_worker_and_carries_the_spec() {
        let spec = spec();
        let job = job_manifest(&JobParams {
            spec: &spec,
            run_id: "abc123",
            namespace: "load",
            image: "registry/loadtest:1",
            workers: 4,
            redis: RedisRef::Secret("loadtest-redis"),
            cpu: "1",
            memory: "1Gi",
        })
        .unwrap();
        let js = job.spec.as_ref().unwrap();
        assert_eq!(js.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((js.completions, js.parallelism, js.backoff_limit), (Some(4), Some(4), Some(0)));
        let pod = js.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let env = pod.containers[0].env.as_ref().unwrap();
        let spec_env = env.iter().find(|e| e.name == "LOADTEST_SPEC").unwrap();
        let back: RunSpec = serde_json::from_str(spec_env.value.as_ref().unwrap()).unwrap();
        assert!(matches!(back.scenario, Scenario::Relay(r) if r.peers == 1000));
        let redis = env.iter().find(|e| e.name == "LOADTEST_REDIS_URL").unwrap();
        assert!(redis.value.is_none(), "a Secret reference, not a literal");
        let yaml = serde_yaml::to_string(&job).unwrap();
        assert!(yaml.contains("kind: Job") && yaml.contains("apiVersion: batch/v1"), "{yaml}");
    }
}
