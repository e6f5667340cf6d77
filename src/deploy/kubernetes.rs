//! `kind = "kubernetes"` (SPEC §5): sets a container's image on a Deployment with a strategic
//! merge patch (field manager `shipmate`), annotates it with the promotion, and waits as
//! `kubectl rollout status` does. Canary steps go to a second Deployment.
//!
//! - Start: `GET` the Deployment (the container must exist; its current image is recorded in the
//!   `shipmate.dev/previous-image` annotation when it changes), then
//!   `PATCH …/deployments/{name}?fieldManager=shipmate` with
//!   `Content-Type: application/strategic-merge-patch+json` and
//!   `{"metadata":{"annotations":{…}},"spec":{"template":{"spec":{"containers":[{"name":…,"image":…}]}}}}`.
//!   The generation of the PATCH answer goes into the handle `{"deployment":…,"generation":…}`.
//! - Watch: `GET …/status` every `poll_every`; kubectl's algorithm, observedGeneration first (so a
//!   `NewReplicaSetAvailable` left from the previous rollout is never taken for this one).
//! - Resume: with a handle, watch the generation it names; without one, apply the same patch again
//!   (the same image makes no new generation) and watch.
//! - Canary (`canary_deployment`): a step before the last gives the canary Deployment the image and
//!   `ceil(weight × stable replicas / 100)` replicas; the last step updates the stable Deployment,
//!   then scales the canary to 0.
//! - Blue-green: `deploy` updates the Deployment as above; `switch` changes nothing (a plain
//!   Deployment has no traffic of its own to switch: it serves the new version since `deploy`);
//!   `discard` puts back the image recorded at `deploy` (the `shipmate.dev/previous-image`
//!   annotation, else the image template with the previous version) and waits for it.
//! - Abort: there is nothing to cancel on the API server (the Deployment keeps what was applied);
//!   the call stops watching and says so. The rollback that follows an abort puts the old image
//!   back.
//! - Retries: 409, 429, 5xx and connection errors, with backoff until the deadline; other answers
//!   (401, 403, 404, 422, …) are final.
//!
//! Credentials come from the kubeconfig (or the in-cluster service account) and stay inside the
//! kube client: they never appear in a line, a status, a reason, a log or `Debug`.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::http::quote;
use super::template::substitute;
use super::{Backend, DeployCall, DeployOutcome, DeployRequest};
use crate::domain::rollout::Phase;

/// The field manager of every patch.
pub const FIELD_MANAGER: &str = "shipmate";
/// The promotion that last changed the Deployment.
pub const PROMOTION_ANNOTATION: &str = "shipmate.dev/promotion";
/// The version it set.
pub const VERSION_ANNOTATION: &str = "shipmate.dev/version";
/// The image the container ran before that promotion changed it (for a blue-green `discard`).
pub const PREVIOUS_IMAGE_ANNOTATION: &str = "shipmate.dev/previous-image";

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long `check-backends` waits for an API server that answers 5xx or not at all.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// The settings of one environment's `kubernetes` backend. Holds no secret itself (the
/// credentials are in the kubeconfig file or the pod's service account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    pub namespace: String,
    pub deployment: String,
    pub container: String,
    /// The image to set; may hold `{version}` and the other placeholders.
    pub image: String,
    /// A kubeconfig file; else `KUBECONFIG`, the in-cluster service account, `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub canary_deployment: Option<String>,
    pub timeout: Duration,
    pub poll_every: Duration,
}

/// The `kubernetes` backend.
pub struct KubernetesBackend {
    settings: KubernetesSettings,
    client: tokio::sync::OnceCell<Client>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why a call stopped before its Deployment rolled out.
#[derive(Debug)]
enum Halt {
    Failed(String),
    /// The deadline passed; what the work was doing then.
    TimedOut(String),
    Aborted,
    Detached,
}

/// When to stop waiting: the call's tokens and deadline.
struct Stops<'a> {
    abort: &'a CancellationToken,
    detach: &'a CancellationToken,
    deadline: Instant,
}

impl Stops<'_> {
    /// Sleeps `pause`, or stops with the reason it was cut short; `doing` is what a timeout
    /// reports.
    async fn sleep(&self, pause: Duration, doing: &str) -> Result<(), Halt> {
        tokio::select! {
            () = self.abort.cancelled() => Err(Halt::Aborted),
            () = self.detach.cancelled() => Err(Halt::Detached),
            () = tokio::time::sleep_until(self.deadline) => Err(Halt::TimedOut(doing.to_string())),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }
}

/// What a request was for, to word its refusal.
#[derive(Clone, Copy)]
struct Op<'a> {
    verb: &'a str,
    deployment: &'a str,
}

/// Where a rollout stands, in kubectl's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Waiting(String),
    Done(String),
    Failed(String),
}

/// kubectl's rollout-status algorithm (`rollout_status.go`) for the rollout of `generation`:
/// first the controller must have observed it (else a `NewReplicaSetAvailable` left from the
/// previous rollout would pass), then a progress deadline fails, then updated, old and
/// available replicas are counted.
pub fn rollout_status(deployment: &Deployment, generation: i64) -> Rollout {
    let wanted = generation.max(deployment.metadata.generation.unwrap_or(0));
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed < wanted {
        return Rollout::Waiting(format!(
            "waiting for the controller to observe generation {wanted}"
        ));
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if let Some(condition) = progressing {
        if condition.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            let message = condition.message.clone().unwrap_or_default();
            return Rollout::Failed(format!("exceeded its progress deadline ({message})"));
        }
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let desired = deployment.spec.as_ref().and_then(|s| s.replicas);
    if let Some(desired) = desired {
        if updated < desired {
            return Rollout::Waiting(format!("{updated} of {desired} new replicas updated"));
        }
    }
    if replicas > updated {
        let old = replicas - updated;
        let noun = if old == 1 { "replica" } else { "replicas" };
        return Rollout::Waiting(format!("{old} old {noun} pending termination"));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Done(format!(
        "rolled out: {available} of {} replicas available",
        desired.unwrap_or(updated)
    ))
}

/// The strategic merge patch that sets `container`'s image and annotates the promotion.
fn image_patch(
    request: &DeployRequest,
    container: &str,
    image: &str,
    version: &str,
    previous_image: Option<&str>,
    replicas: Option<i32>,
) -> Value {
    let mut annotations = json!({
        PROMOTION_ANNOTATION: request.promotion_id.to_string(),
        VERSION_ANNOTATION: version,
    });
    if let Some(previous) = previous_image {
        annotations[PREVIOUS_IMAGE_ANNOTATION] = json!(previous);
    }
    let mut patch = json!({
        "metadata": {"annotations": annotations},
        "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
    });
    if let Some(replicas) = replicas {
        patch["spec"]["replicas"] = json!(replicas);
    }
    patch
}

/// The image of `container`, or a reason naming the containers there are.
fn container_image(deployment: &Deployment, name: &str, container: &str) -> Result<String, String> {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    match containers.iter().find(|c| c.name == container) {
        Some(c) => Ok(c.image.clone().unwrap_or_default()),
        None => {
            let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
            Err(format!(
                "deployment {name} has no container {container}; containers: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

/// `ceil(weight × stable / 100)`: the canary's share of the stable Deployment's replicas.
pub fn canary_replicas(weight: u8, stable: i32) -> i32 {
    let share = i64::from(weight) * i64::from(stable.max(0));
    i32::try_from((share + 99) / 100).unwrap_or(i32::MAX)
}

/// A kube error, sorted: `Ok(message)` may pass on a retry, `Err(reason)` is final.
fn sort_error(error: &kube::Error, op: Op<'_>, namespace: &str) -> Result<String, String> {
    match error {
        kube::Error::Api(status) => {
            let code = status.code;
            let message = quote(&status.message);
            let said = if message.is_empty() {
                format!("Kubernetes answered {code} {}", status.reason)
            } else {
                format!("Kubernetes answered {code}: {message}")
            };
            if code == 409 || code == 429 || code >= 500 {
                return Ok(said);
            }
            let hint = match code {
                401 => {
                    " (the credentials were not accepted; check the kubeconfig's user)".to_string()
                }
                403 => format!(
                    " (the credentials may not {} deployments in {namespace})",
                    op.verb
                ),
                404 => format!(
                    " (is there a deployment {} in namespace {namespace}?)",
                    op.deployment
                ),
                422 => " (the change was refused as invalid)".to_string(),
                _ => String::new(),
            };
            Err(format!("{said}{hint}"))
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Ok(format!("could not reach Kubernetes: {}", chain(error)))
        }
        other => Err(format!(
            "Kubernetes answered something the bot cannot read ({} deployment {}): {}",
            op.verb,
            op.deployment,
            chain(other)
        )),
    }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// What one roll sets: the Deployment, its container's image and the version it carries, and
/// for a canary its replica count.
struct Target<'a> {
    name: &'a str,
    image: &'a str,
    version: &'a str,
    replicas: Option<i32>,
}

impl KubernetesBackend {
    pub fn new(settings: KubernetesSettings) -> KubernetesBackend {
        KubernetesBackend {
            settings,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The client, built once: the configured kubeconfig (and context), else `KUBECONFIG`,
    /// else the in-cluster service account, else `~/.kube/config`.
    async fn client(&self) -> Result<Client, String> {
        self.client
            .get_or_try_init(|| async {
                let config = self.config().await?;
                Client::try_from(config)
                    .map_err(|e| format!("could not build the Kubernetes client: {}", chain(&e)))
            })
            .await
            .cloned()
    }

    async fn config(&self) -> Result<Config, String> {
        let options = KubeConfigOptions {
            context: self.settings.context.clone(),
            ..KubeConfigOptions::default()
        };
        let from_file = |what: String, result: Result<Config, kube::config::KubeconfigError>| {
            result.map_err(|e| format!("could not load the kubeconfig {what}: {}", chain(&e)))
        };
        if let Some(path) = &self.settings.kubeconfig {
            let what = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("could not read the kubeconfig {what}: {}", chain(&e)))?;
            return from_file(
                what,
                Config::from_custom_kubeconfig(kubeconfig, &options).await,
            );
        }
        if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
            return from_file(
                "named by KUBECONFIG".to_string(),
                Config::from_kubeconfig(&options).await,
            );
        }
        if let Ok(config) = Config::incluster() {
            return Ok(config);
        }
        from_file(
            "~/.kube/config (no kubeconfig key, no KUBECONFIG, not in a cluster)".to_string(),
            Config::from_kubeconfig(&options).await,
        )
    }

    /// This backend with the placeholders of its names filled for `request`, sharing the client.
    async fn for_request(&self, request: &DeployRequest) -> Result<KubernetesBackend, String> {
        let client = self.client().await?;
        let s = &self.settings;
        let fill = |text: &str| substitute(text, request);
        let settings = KubernetesSettings {
            namespace: fill(&s.namespace),
            deployment: fill(&s.deployment),
            container: fill(&s.container),
            image: s.image.clone(),
            kubeconfig: s.kubeconfig.clone(),
            context: s.context.clone(),
            canary_deployment: s.canary_deployment.as_deref().map(fill),
            timeout: s.timeout,
            poll_every: s.poll_every,
        };
        Ok(KubernetesBackend {
            settings,
            client: tokio::sync::OnceCell::new_with(Some(client)),
        })
    }

    fn name(&self, deployment: &str) -> String {
        format!("{}/{deployment}", self.settings.namespace)
    }

    /// Runs `request` until it answers, retrying what may pass with backoff until the deadline.
    async fn retrying<T, F, Fut>(
        &self,
        stops: &Stops<'_>,
        op: Op<'_>,
        request: F,
    ) -> Result<T, Halt>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let answer = tokio::select! {
                () = stops.abort.cancelled() => return Err(Halt::Aborted),
                () = stops.detach.cancelled() => return Err(Halt::Detached),
                () = tokio::time::sleep_until(stops.deadline) => {
                    return Err(Halt::TimedOut(format!(
                        "waiting for Kubernetes to answer ({} deployment {})",
                        op.verb,
                        self.name(op.deployment)
                    )));
                }
                answer = request() => answer,
            };
            match answer {
                Ok(value) => return Ok(value),
                Err(error) => match sort_error(&error, op, &self.settings.namespace) {
                    Ok(passing) => {
                        tracing::warn!(
                            error = %passing,
                            retry_in = ?backoff,
                            deployment = %self.name(op.deployment),
                            "Kubernetes call failed; retrying"
                        );
                        stops
                            .sleep(backoff, &format!("retrying after: {passing}"))
                            .await?;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(reason) => return Err(Halt::Failed(reason)),
                },
            }
        }
    }

    async fn get(
        &self,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
        name: &str,
    ) -> Result<Deployment, Halt> {
        let op = Op {
            verb: "get",
            deployment: name,
        };
        self.retrying(stops, op, || api.get(name)).await
    }

    async fn patch(
        &self,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
        name: &str,
        body: &Value,
    ) -> Result<Deployment, Halt> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let op = Op {
            verb: "patch",
            deployment: name,
        };
        let patch = Patch::Strategic(body);
        self.retrying(stops, op, || api.patch(name, &params, &patch))
            .await
    }

    /// Sets the image on the target Deployment (with its replicas, for a canary), reports the
    /// handle and waits for the rollout.
    async fn roll(
        &self,
        call: &DeployCall,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
        target: Target<'_>,
    ) -> Result<(), Halt> {
        let Target {
            name,
            image,
            version,
            replicas,
        } = target;
        let current = self.get(api, stops, name).await?;
        let was =
            container_image(&current, name, &self.settings.container).map_err(Halt::Failed)?;
        let previous = (was != image).then_some(was.as_str());
        let body = image_patch(
            &call.request,
            &self.settings.container,
            image,
            version,
            previous,
            replicas,
        );
        let patched = self.patch(api, stops, name, &body).await?;
        let generation = patched.metadata.generation.unwrap_or(0);
        call.report
            .handle(json!({"deployment": name, "generation": generation}))
            .await;
        let scale = replicas.map_or_else(String::new, |r| format!(" with {r} replicas"));
        let change = if was == image {
            format!("already set to {image}")
        } else {
            format!("set to {image} (was {was})")
        };
        call.report
            .line(format!(
                "deployment {}: container {} {change}{scale}; watching generation {generation}",
                self.name(name),
                self.settings.container
            ))
            .await;
        self.watch(call, api, stops, name, generation).await
    }

    /// Polls Deployment `name` until the rollout of `generation` is done or fails.
    async fn watch(
        &self,
        call: &DeployCall,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
        name: &str,
        generation: i64,
    ) -> Result<(), Halt> {
        let op = Op {
            verb: "get",
            deployment: name,
        };
        let mut last = String::new();
        loop {
            let deployment = self.retrying(stops, op, || api.get_status(name)).await?;
            let (said, end) = match rollout_status(&deployment, generation) {
                Rollout::Waiting(said) => (said, None),
                Rollout::Done(said) => (said, Some(Ok(()))),
                Rollout::Failed(said) => {
                    let reason = format!("deployment {name} {said}");
                    (said, Some(Err(Halt::Failed(reason))))
                }
            };
            let status = format!("deployment {}: {said}", self.name(name));
            if status != last {
                call.report.status(status.clone()).await;
                call.report.line(status.clone()).await;
                last = status;
            }
            if let Some(end) = end {
                return end;
            }
            stops.sleep(self.settings.poll_every, &last).await?;
        }
    }

    /// Scales the canary Deployment to 0 (the last step, after the stable one rolled out).
    async fn retire_canary(
        &self,
        call: &DeployCall,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
        canary: &str,
    ) -> Result<(), Halt> {
        let body = json!({
            "metadata": {"annotations": {PROMOTION_ANNOTATION: call.request.promotion_id.to_string()}},
            "spec": {"replicas": 0},
        });
        self.patch(api, stops, canary, &body).await?;
        call.report
            .line(format!(
                "deployment {}: scaled to 0 replicas",
                self.name(canary)
            ))
            .await;
        Ok(())
    }

    /// Blue-green `discard`: the image recorded when this promotion changed the Deployment,
    /// else the image template with the previous version.
    async fn discard(
        &self,
        call: &DeployCall,
        api: &Api<Deployment>,
        stops: &Stops<'_>,
    ) -> Result<(), Halt> {
        let s = &self.settings;
        let request = &call.request;
        let current = self.get(api, stops, &s.deployment).await?;
        let annotations = current.metadata.annotations.clone().unwrap_or_default();
        let ours = annotations.get(PROMOTION_ANNOTATION) == Some(&request.promotion_id.to_string());
        let recorded = annotations
            .get(PREVIOUS_IMAGE_ANNOTATION)
            .filter(|_| ours)
            .cloned();
        let previous_version = request.previous_version.clone().unwrap_or_default();
        let image = match (recorded, &request.previous_version) {
            (Some(image), _) => image,
            (None, Some(previous)) => {
                let mut back = request.clone();
                back.version.clone_from(previous);
                substitute(&s.image, &back)
            }
            (None, None) => {
                call.report
                    .line(format!(
                        "discard: deployment {} has no earlier image to put back; nothing to do",
                        self.name(&s.deployment)
                    ))
                    .await;
                return Ok(());
            }
        };
        call.report
            .line(format!(
                "discard: putting back {image} on deployment {}",
                self.name(&s.deployment)
            ))
            .await;
        let target = Target {
            name: &s.deployment,
            image: &image,
            version: &previous_version,
            replicas: None,
        };
        self.roll(call, api, stops, target).await
    }

    async fn run(&self, call: &DeployCall, stops: &Stops<'_>) -> Result<(), Halt> {
        let client = self.client().await.map_err(Halt::Failed)?;
        let s = &self.settings;
        let request = &call.request;
        let api: Api<Deployment> = Api::namespaced(client, &s.namespace);
        match request.step.phase {
            Phase::Switch => {
                call.report
                    .line(format!(
                        "switch: deployment {} already serves {} since the deploy phase; nothing to switch",
                        self.name(&s.deployment),
                        request.version
                    ))
                    .await;
                return Ok(());
            }
            Phase::Discard => return self.discard(call, &api, stops).await,
            Phase::Deploy => {}
        }
        let canary_step = s
            .canary_deployment
            .as_deref()
            .filter(|_| request.step.number < request.step.of && request.step.weight > 0);
        let resumed = call.handle.as_ref().filter(|_| call.resumed).and_then(|h| {
            Some((
                h["deployment"].as_str()?.to_string(),
                h["generation"].as_i64()?,
            ))
        });
        match (resumed, canary_step) {
            (Some((name, generation)), _) => {
                call.report
                    .line(format!(
                        "resumed: watching deployment {} generation {generation}",
                        self.name(&name)
                    ))
                    .await;
                self.watch(call, &api, stops, &name, generation).await?;
            }
            (None, Some(canary)) => {
                let stable = self.get(&api, stops, &s.deployment).await?;
                let stable_replicas = stable.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let replicas = canary_replicas(request.step.weight, stable_replicas);
                let image = substitute(&s.image, request);
                let target = Target {
                    name: canary,
                    image: &image,
                    version: &request.version,
                    replicas: Some(replicas),
                };
                self.roll(call, &api, stops, target).await?;
            }
            (None, None) => {
                let image = substitute(&s.image, request);
                let target = Target {
                    name: &s.deployment,
                    image: &image,
                    version: &request.version,
                    replicas: None,
                };
                self.roll(call, &api, stops, target).await?;
            }
        }
        if canary_step.is_none() {
            if let Some(canary) = &s.canary_deployment {
                self.retire_canary(call, &api, stops, canary).await?;
            }
        }
        Ok(())
    }

    async fn checked(&self, stops: &Stops<'_>) -> Result<String, Halt> {
        let client = self.client().await.map_err(Halt::Failed)?;
        let s = &self.settings;
        let api: Api<Deployment> = Api::namespaced(client.clone(), &s.namespace);
        let deployment = self.get(&api, stops, &s.deployment).await?;
        let image =
            container_image(&deployment, &s.deployment, &s.container).map_err(Halt::Failed)?;
        if let Some(canary) = &s.canary_deployment {
            let found = self.get(&api, stops, canary).await?;
            container_image(&found, canary, &s.container).map_err(Halt::Failed)?;
        }
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(s.namespace.clone()),
                    verb: Some("patch".to_string()),
                    group: Some("apps".to_string()),
                    resource: Some("deployments".to_string()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
        let post = PostParams::default();
        let op = Op {
            verb: "review access to",
            deployment: &s.deployment,
        };
        let answer = self
            .retrying(stops, op, || reviews.create(&post, &review))
            .await?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed {
            let why = [status.reason, status.evaluation_error]
                .into_iter()
                .flatten()
                .filter(|r| !r.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            };
            return Err(Halt::Failed(format!(
                "the credentials may not patch deployments in namespace {}{why}",
                s.namespace
            )));
        }
        Ok(format!(
            "deployment {} runs {image} in container {}; the credentials may patch deployments in {}",
            self.name(&s.deployment),
            s.container,
            s.namespace
        ))
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn deploy(&self, call: DeployCall) -> DeployOutcome {
        let stops = Stops {
            abort: &call.abort,
            detach: &call.detach,
            deadline: call.deadline(self.settings.timeout),
        };
        let result = match self.for_request(&call.request).await {
            Ok(backend) => backend.run(&call, &stops).await,
            Err(reason) => Err(Halt::Failed(reason)),
        };
        match result {
            Ok(()) => DeployOutcome::Succeeded,
            Err(Halt::Failed(reason)) => DeployOutcome::Failed { reason },
            Err(Halt::TimedOut(doing)) => DeployOutcome::Failed {
                reason: format!(
                    "timed out after {} ({doing})",
                    humantime::format_duration(self.settings.timeout)
                ),
            },
            Err(Halt::Aborted) => {
                call.report
                    .line(format!(
                        "aborted: stopped watching deployment {}; Kubernetes has no rollout to cancel, the Deployment keeps what was applied",
                        self.name(&self.settings.deployment)
                    ))
                    .await;
                DeployOutcome::Cancelled
            }
            Err(Halt::Detached) => DeployOutcome::Cancelled,
        }
    }

    async fn check(&self, service: &str, environment: &str) -> Result<String, String> {
        let request = DeployRequest::for_check(service, environment);
        let backend = self.for_request(&request).await?;
        let never = CancellationToken::new();
        let stops = Stops {
            abort: &never,
            detach: &never,
            deadline: Instant::now() + CHECK_TIMEOUT,
        };
        backend.checked(&stops).await.map_err(|halt| match halt {
            Halt::Failed(reason) => reason,
            Halt::TimedOut(doing) => format!(
                "no answer from Kubernetes within {} ({doing})",
                humantime::format_duration(CHECK_TIMEOUT)
            ),
            Halt::Aborted | Halt::Detached => "stopped".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(value: Value) -> Deployment {
        serde_json::from_value(value).expect("a Deployment")
    }

    fn rolled(generation: i64, observed: i64, reason: &str, counts: (i32, i32, i32)) -> Deployment {
        let (replicas, updated, available) = counts;
        deployment(json!({
            "metadata": {"name": "api", "generation": generation},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"spec": {"containers": [{"name": "api", "image": "a:1"}, {"name": "sidecar", "image": "s:1"}]}},
            },
            "status": {
                "observedGeneration": observed,
                "replicas": replicas,
                "updatedReplicas": updated,
                "availableReplicas": available,
                "conditions": [{"type": "Progressing", "status": if reason == "ProgressDeadlineExceeded" { "False" } else { "True" }, "reason": reason, "message": "ReplicaSet \"api-1\" has timed out progressing."}],
            },
        }))
    }

    #[test]
    fn a_stale_complete_condition_is_not_this_rollout() {
        // Right after the patch: generation 5, the controller still shows generation 4 complete.
        let stale = rolled(5, 4, "NewReplicaSetAvailable", (3, 3, 3));
        assert_eq!(
            rollout_status(&stale, 5),
            Rollout::Waiting("waiting for the controller to observe generation 5".into())
        );
    }

    #[test]
    fn follows_kubectl_order() {
        let counted = |counts| rollout_status(&rolled(5, 5, "ReplicaSetUpdated", counts), 5);
        assert_eq!(
            counted((4, 1, 3)),
            Rollout::Waiting("1 of 3 new replicas updated".into())
        );
        assert_eq!(
            counted((4, 3, 3)),
            Rollout::Waiting("1 old replica pending termination".into())
        );
        assert_eq!(
            counted((3, 3, 2)),
            Rollout::Waiting("2 of 3 updated replicas available".into())
        );
        assert_eq!(
            counted((3, 3, 3)),
            Rollout::Done("rolled out: 3 of 3 replicas available".into())
        );
        assert_eq!(
            rollout_status(&rolled(5, 5, "ProgressDeadlineExceeded", (4, 1, 3)), 5),
            Rollout::Failed(
                "exceeded its progress deadline (ReplicaSet \"api-1\" has timed out progressing.)"
                    .into()
            )
        );
    }

    #[test]
    fn a_missing_container_names_the_ones_there_are() {
        let d = rolled(1, 1, "NewReplicaSetAvailable", (3, 3, 3));
        assert_eq!(
            container_image(&d, "api", "web"),
            Err("deployment api has no container web; containers: api, sidecar".into())
        );
        assert_eq!(container_image(&d, "api", "sidecar"), Ok("s:1".into()));
    }

    #[test]
    fn canary_replicas_round_up() {
        assert_eq!(canary_replicas(10, 3), 1);
        assert_eq!(canary_replicas(50, 3), 2);
        assert_eq!(canary_replicas(50, 4), 2);
        assert_eq!(canary_replicas(100, 7), 7);
        assert_eq!(canary_replicas(10, 0), 0);
    }
}
