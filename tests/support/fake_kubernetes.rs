//! A fake Kubernetes API server on loopback (notes/backends.md §3.4, L2): Deployments that take
//! strategic-merge and merge patches, their `/status`, SelfSubjectAccessReviews, and a simulated
//! Deployment controller the test (or a background ticker) drives step by step. Errors come back
//! as real `Status` objects. The bot reaches it through a kubeconfig file the test writes, so the
//! real kube-rs client (config loading, bearer token, content types) is exercised.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The bearer token of the kubeconfig's user; anything else gets 401.
pub const TOKEN: &str = "fake-kube-token-s3cr3t";
/// The kubeconfig context that points at the fake (the file's current context points nowhere).
pub const CONTEXT: &str = "fake";

/// A request the fake received that changes something.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

/// A fault to answer the next matching request with, once.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    code: u16,
}

#[derive(Debug, Default)]
struct Sim {
    /// The pod template changed in a generation the controller has not observed yet.
    template_changed: bool,
    /// Pods of the previous template still running.
    old: i64,
    /// Updated pods that are available.
    available_new: i64,
}

#[derive(Debug, Default)]
struct Inner {
    /// `(namespace, name)` → the Deployment as the API shows it.
    deployments: BTreeMap<(String, String), Value>,
    sims: BTreeMap<(String, String), Sim>,
    changes: Vec<Recorded>,
    gets: usize,
    faults: VecDeque<Fault>,
    stall: bool,
    allowed: bool,
    delay: Duration,
    resource_version: u64,
}

#[derive(Clone)]
pub struct FakeKubernetes {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    ticker: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        if Arc::strong_count(&self.ticker) == 1 {
            if let Some(task) = self.ticker.lock().expect("ticker").take() {
                task.abort();
            }
        }
    }
}

/// A Deployment as `kubectl get -o json` shows one that has finished rolling out.
pub fn deployment(
    namespace: &str,
    name: &str,
    replicas: i64,
    containers: &[(&str, &str)],
) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, image)| json!({"name": name, "image": image, "ports": [{"containerPort": 8080}]}))
        .collect();
    json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("uid-{name}"),
            "resourceVersion": "1",
            "generation": 1,
            "annotations": {"deployment.kubernetes.io/revision": "1"},
            "labels": {"app": name},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": containers},
            },
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-6d4cf56db6\" has successfully progressed.")},
            ],
        },
    })
}

/// A Kubernetes `Status` error body, as the API server sends it.
pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {},
        "code": code,
    })
}

fn fault_body(code: u16, method: &Method, namespace: &str, name: &str) -> Value {
    let verb = if method == Method::PATCH {
        "patch"
    } else {
        "get"
    };
    match code {
        403 => status_body(
            403,
            "Forbidden",
            &format!("deployments.apps \"{name}\" is forbidden: User \"system:serviceaccount:ci:shipmate\" cannot {verb} resource \"deployments\" in API group \"apps\" in the namespace \"{namespace}\""),
        ),
        409 => status_body(
            409,
            "Conflict",
            &format!("Operation cannot be fulfilled on deployments.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        ),
        422 => status_body(
            422,
            "Invalid",
            &format!("Deployment.apps \"{name}\" is invalid: spec.template.spec.containers[0].image: Required value"),
        ),
        429 => status_body(429, "TooManyRequests", "Too many requests, please try again later."),
        code => status_body(code, "InternalError", "Internal error occurred: etcdserver: request timed out"),
    }
}

fn error(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    error(
        404,
        status_body(
            404,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        ),
    )
}

impl FakeKubernetes {
    pub async fn start() -> FakeKubernetes {
        let inner = Arc::new(Mutex::new(Inner {
            allowed: true,
            ..Inner::default()
        }));
        let app = Router::new()
            .route(
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                get(get_deployment).patch(patch_deployment),
            )
            .route(
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
                get(get_deployment),
            )
            .route(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                post(access_review),
            )
            .fallback(|| async {
                error(
                    404,
                    status_body(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    ),
                )
            })
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Kubernetes API");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKubernetes {
            url,
            inner,
            ticker: Arc::new(Mutex::new(None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake Kubernetes state")
    }

    /// Adds (or replaces) a Deployment.
    pub fn put(&self, deployment: Value) {
        let key = (
            deployment["metadata"]["namespace"]
                .as_str()
                .expect("namespace")
                .to_string(),
            deployment["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string(),
        );
        let mut inner = self.lock();
        inner.sims.insert(key.clone(), Sim::default());
        inner.deployments.insert(key, deployment);
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Value {
        self.lock()
            .deployments
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The image of `container` in Deployment `name`.
    pub fn image(&self, namespace: &str, name: &str, container: &str) -> Option<String> {
        let d = self.deployment(namespace, name);
        d["spec"]["template"]["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)?["image"]
            .as_str()
            .map(str::to_string)
    }

    /// Every PATCH and POST received, in order.
    pub fn changes(&self) -> Vec<Recorded> {
        self.lock().changes.clone()
    }

    /// The PATCHes received for Deployment `name`.
    pub fn patches(&self, name: &str) -> Vec<Recorded> {
        self.changes()
            .into_iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/deployments/{name}")))
            .collect()
    }

    pub fn gets(&self) -> usize {
        self.lock().gets
    }

    /// Answers the next request with `method` with `code` (a real `Status` body), once.
    pub fn fail_next(&self, method: Method, code: u16) {
        self.lock().faults.push_back(Fault { method, code });
    }

    /// The controller stops making progress: the next tick of a rolling Deployment sets
    /// `Progressing=False, ProgressDeadlineExceeded`.
    pub fn stall(&self) {
        self.lock().stall = true;
    }

    /// What SelfSubjectAccessReviews answer.
    pub fn allow(&self, allowed: bool) {
        self.lock().allowed = allowed;
    }

    /// Every answer waits this long first.
    pub fn slow(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// One step of the simulated controller for every Deployment.
    pub fn tick(&self) {
        let mut inner = self.lock();
        let stall = inner.stall;
        let keys: Vec<_> = inner.deployments.keys().cloned().collect();
        for key in keys {
            let mut sim = inner.sims.remove(&key).unwrap_or_default();
            if let Some(d) = inner.deployments.get_mut(&key) {
                step(d, &mut sim, stall);
            }
            inner.sims.insert(key, sim);
        }
    }

    /// Ticks every `every` in the background until the fake is dropped.
    pub fn tick_every(&self, every: Duration) {
        let fake = FakeKubernetes {
            url: self.url.clone(),
            inner: self.inner.clone(),
            ticker: Arc::new(Mutex::new(None)),
        };
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                fake.tick();
            }
        });
        if let Some(old) = self.ticker.lock().expect("ticker").replace(task) {
            old.abort();
        }
    }

    /// Whether Deployment `name` has rolled out its current generation (kubectl's test).
    pub fn rolled_out(&self, namespace: &str, name: &str) -> bool {
        let d = self.deployment(namespace, name);
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let s = &d["status"];
        s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"].as_i64() == Some(desired)
            && s["availableReplicas"].as_i64() == Some(desired)
            && s["replicas"].as_i64() == Some(desired)
    }

    /// Writes a kubeconfig whose context [`CONTEXT`] reaches the fake with [`TOKEN`]; its
    /// current context points at a closed port, so only a config that names the context works.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        let dead = format!("http://127.0.0.1:{}", super::serve::free_port());
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n- name: nowhere\n  cluster:\n    server: {dead}\ncontexts:\n- name: {CONTEXT}\n  context:\n    cluster: fake\n    user: shipmate\n    namespace: prod\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: shipmate\ncurrent-context: nowhere\nusers:\n- name: shipmate\n  user:\n    token: {TOKEN}\n",
            url = self.url
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn set_progressing(d: &mut Value, status: &str, reason: &str, message: &str) {
    let conditions = d["status"]["conditions"]
        .as_array_mut()
        .expect("conditions");
    conditions.retain(|c| c["type"] != "Progressing");
    conditions.push(
        json!({"type": "Progressing", "status": status, "reason": reason, "message": message}),
    );
}

/// One controller step for Deployment `d`: observe a new generation, then bring up updated
/// pods one by one, retire old ones, make new ones available, and finally mark it complete.
fn step(d: &mut Value, sim: &mut Sim, stall: bool) {
    let name = d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let generation = int(&d["metadata"]["generation"]);
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &d["status"];
    let observed = int(&status["observedGeneration"]);
    let mut updated = int(&status["updatedReplicas"]);
    let progressing_reason = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    if observed < generation {
        d["status"]["observedGeneration"] = json!(generation);
        if std::mem::take(&mut sim.template_changed) {
            // A new ReplicaSet: every running pod is old now.
            sim.old = int(&d["status"]["replicas"]);
            sim.available_new = 0;
            updated = 0;
        }
        updated = updated.min(desired);
        sim.available_new = sim.available_new.min(updated);
        write_counts(d, updated, sim);
        set_progressing(
            d,
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{name}-7f8b9c\" is progressing."),
        );
        return;
    }
    if progressing_reason == "NewReplicaSetAvailable"
        || progressing_reason == "ProgressDeadlineExceeded"
    {
        return;
    }
    if stall {
        set_progressing(
            d,
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{name}-7f8b9c\" has timed out progressing."),
        );
        return;
    }
    if updated < desired {
        updated += 1;
    } else if sim.old > 0 {
        sim.old -= 1;
    } else if sim.available_new < updated {
        sim.available_new += 1;
    } else {
        set_progressing(
            d,
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{name}-7f8b9c\" has successfully progressed."),
        );
    }
    write_counts(d, updated, sim);
}

fn write_counts(d: &mut Value, updated: i64, sim: &Sim) {
    let s = &mut d["status"];
    s["updatedReplicas"] = json!(updated);
    s["replicas"] = json!(updated + sim.old);
    s["availableReplicas"] = json!(sim.available_new + sim.old);
    s["readyReplicas"] = json!(sim.available_new + sim.old);
}

/// RFC 7386 merge of `patch` into `target`; with `strategic`, lists of objects with a `name`
/// (containers, ports by name) are merged by name instead of replaced.
fn merge(target: &mut Value, patch: &Value, strategic: bool) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("object");
            for (key, value) in fields {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() {
                    map.remove(key);
                } else if strategic && key == "containers" && value.is_array() {
                    let list = map.entry(key.clone()).or_insert_with(|| json!([]));
                    merge_by_name(list, value);
                } else {
                    merge(
                        map.entry(key.clone()).or_insert(Value::Null),
                        value,
                        strategic,
                    );
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn merge_by_name(list: &mut Value, patch: &Value) {
    let items = list.as_array_mut().expect("list");
    for item in patch.as_array().into_iter().flatten() {
        match items.iter_mut().find(|i| i["name"] == item["name"]) {
            Some(existing) => merge(existing, item, true),
            None => items.push(item.clone()),
        }
    }
}

async fn pause(inner: &Arc<Mutex<Inner>>) {
    let delay = inner.lock().expect("state").delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

fn unauthorized() -> Response {
    error(401, status_body(401, "Unauthorized", "Unauthorized"))
}

fn take_fault(inner: &mut Inner, method: &Method) -> Option<u16> {
    let at = inner.faults.iter().position(|f| f.method == *method)?;
    inner.faults.remove(at).map(|f| f.code)
}

async fn get_deployment(
    State(inner): State<Arc<Mutex<Inner>>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    pause(&inner).await;
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut state = inner.lock().expect("state");
    state.gets += 1;
    if let Some(code) = take_fault(&mut state, &Method::GET) {
        return error(code, fault_body(code, &Method::GET, &namespace, &name));
    }
    match state.deployments.get(&(namespace, name.clone())) {
        Some(d) => Json(d.clone()).into_response(),
        None => not_found(&name),
    }
}

async fn patch_deployment(
    State(inner): State<Arc<Mutex<Inner>>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    pause(&inner).await;
    if !authorized(&headers) {
        return unauthorized();
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return error(
            400,
            status_body(
                400,
                "BadRequest",
                "the body of the request was in an unknown format",
            ),
        );
    };
    let mut state = inner.lock().expect("state");
    state.changes.push(Recorded {
        method: "PATCH".into(),
        path: format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"),
        query: query.unwrap_or_default(),
        content_type: content_type.clone(),
        body: patch.clone(),
    });
    if let Some(code) = take_fault(&mut state, &Method::PATCH) {
        return error(code, fault_body(code, &Method::PATCH, &namespace, &name));
    }
    let strategic = match content_type.as_str() {
        "application/strategic-merge-patch+json" => true,
        "application/merge-patch+json" => false,
        other => {
            return error(
                415,
                status_body(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {other})")),
            )
        }
    };
    state.resource_version += 1;
    let version = state.resource_version + 1;
    let key = (namespace, name.clone());
    let Inner {
        deployments, sims, ..
    } = &mut *state;
    let Some(d) = deployments.get_mut(&key) else {
        return not_found(&name);
    };
    let mut next = d.clone();
    merge(&mut next, &patch, strategic);
    let containers = next["spec"]["template"]["spec"]["containers"].as_array();
    if containers.is_none_or(|cs| {
        cs.iter()
            .any(|c| c["image"].as_str().unwrap_or_default().is_empty())
    }) {
        return error(422, fault_body(422, &Method::PATCH, "", &name));
    }
    if next["spec"] != d["spec"] {
        next["metadata"]["generation"] = json!(int(&d["metadata"]["generation"]) + 1);
        if next["spec"]["template"] != d["spec"]["template"] {
            sims.entry(key).or_default().template_changed = true;
        }
    }
    next["metadata"]["resourceVersion"] = json!(version.to_string());
    *d = next.clone();
    Json(next).into_response()
}

async fn access_review(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(mut review): Json<Value>,
) -> Response {
    pause(&inner).await;
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut state = inner.lock().expect("state");
    state.changes.push(Recorded {
        method: "POST".into(),
        path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews".into(),
        query: String::new(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: review.clone(),
    });
    if let Some(code) = take_fault(&mut state, &Method::POST) {
        return error(code, fault_body(code, &Method::POST, "", "review"));
    }
    let allowed = state.allowed;
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"shipmate-deployer/prod\""})
    } else {
        json!({"allowed": false})
    };
    (StatusCode::CREATED, Json(review)).into_response()
}
