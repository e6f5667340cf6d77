//! `backend = { kind = … }` of an environment (SPEC §5): the five backends' keys, checked with
//! their exact TOML key, secrets kept as [`Secret`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rollout::{a_type, Entry};
use super::{Secret, Validator};

const KINDS: [&str; 5] = [
    "command",
    "webhook",
    "github_actions",
    "kubernetes",
    "argocd",
];
const COMMAND_KEYS: [&str; 4] = ["kind", "run", "timeout", "env"];
const WEBHOOK_KEYS: [&str; 5] = ["kind", "url", "secret", "timeout", "poll_every"];
const GITHUB_KEYS: [&str; 9] = [
    "kind",
    "repo",
    "workflow",
    "ref",
    "token",
    "inputs",
    "api_url",
    "poll_every",
    "timeout",
];
const KUBERNETES_KEYS: [&str; 10] = [
    "kind",
    "namespace",
    "deployment",
    "container",
    "image",
    "kubeconfig",
    "context",
    "canary_deployment",
    "timeout",
    "poll_every",
];
const ARGOCD_KEYS: [&str; 8] = [
    "kind",
    "url",
    "app",
    "token",
    "image",
    "revision",
    "timeout",
    "poll_every",
];
const EXAMPLE: &str = r#"{ kind = "command", run = ["./deploy/deploy.sh"] }"#;

pub(super) const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_WEBHOOK_POLL: Duration = Duration::from_secs(5);
const DEFAULT_GITHUB_POLL: Duration = Duration::from_secs(10);
const DEFAULT_KUBERNETES_POLL: Duration = Duration::from_secs(2);
const DEFAULT_ARGOCD_POLL: Duration = Duration::from_secs(5);
const DEFAULT_KUBERNETES_TIMEOUT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_ARGOCD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const GITHUB_API: &str = "https://api.github.com";
/// Polling faster than this only burns the remote's rate limits.
const SHORTEST_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    Command {
        run: Vec<String>,
        timeout: Duration,
        /// Extra variables for the script (`env = { NAME = "value or ${VAR}" }`).
        env: BTreeMap<String, String>,
    },
    Webhook(WebhookConfig),
    GithubActions(GithubActionsConfig),
    Kubernetes(KubernetesConfig),
    Argocd(ArgocdConfig),
}

impl BackendConfig {
    /// The `kind` as written in `bot.toml`.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Command { .. } => "command",
            BackendConfig::Webhook(_) => "webhook",
            BackendConfig::GithubActions(_) => "github_actions",
            BackendConfig::Kubernetes(_) => "kubernetes",
            BackendConfig::Argocd(_) => "argocd",
        }
    }

    /// The script environment of a `command` backend (empty for the others).
    pub fn script_env(&self) -> BTreeMap<String, String> {
        match self {
            BackendConfig::Command { env, .. } => env.clone(),
            _ => BTreeMap::new(),
        }
    }
}

/// `kind = "webhook"`. String fields may hold `{placeholders}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    /// Signs every request (`X-Shipmate-Signature`); unsigned without one.
    pub secret: Option<Secret>,
    pub timeout: Duration,
    pub poll_every: Duration,
}

/// `kind = "github_actions"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubActionsConfig {
    /// `owner/name`.
    pub repo: String,
    /// The workflow's file name (`deploy.yml`) or numeric id.
    pub workflow: String,
    /// `ref`: the branch or tag the workflow runs on.
    pub git_ref: String,
    pub token: Secret,
    /// Extra workflow inputs, beside `version`, `environment`, `promotion_id` and `rollback`.
    pub inputs: BTreeMap<String, String>,
    pub api_url: String,
    pub poll_every: Duration,
    pub timeout: Duration,
}

/// `kind = "kubernetes"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub namespace: String,
    pub deployment: String,
    pub container: String,
    /// The image to set, e.g. `ghcr.io/acme/api:{version}`.
    pub image: String,
    /// A kubeconfig file (relative paths start at bot.toml's directory); else `KUBECONFIG`, the
    /// in-cluster service account or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Canary steps go to this Deployment; the last step updates the stable one.
    pub canary_deployment: Option<String>,
    pub timeout: Duration,
    pub poll_every: Duration,
}

/// `kind = "argocd"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgocdConfig {
    pub url: String,
    pub app: String,
    pub token: Secret,
    /// Set as the application's kustomize image override before the sync.
    pub image: Option<String>,
    /// The revision to sync; the application's own when absent.
    pub revision: Option<String>,
    pub timeout: Duration,
    pub poll_every: Duration,
}

impl Validator<'_> {
    /// An environment's `backend`; a stand-in `command` when it is written wrong (reported).
    pub(super) fn backend(
        &mut self,
        key: &str,
        raw: &toml::Value,
        base_dir: &Path,
    ) -> BackendConfig {
        let stand_in = BackendConfig::Command {
            run: Vec::new(),
            timeout: DEFAULT_DEPLOY_TIMEOUT,
            env: BTreeMap::new(),
        };
        let Some(entry) = self.entry(key, raw, EXAMPLE) else {
            return stand_in;
        };
        match self.kind(&entry, &KINDS) {
            Some("command") => self.command_backend(&entry),
            Some("webhook") => BackendConfig::Webhook(self.webhook(&entry)),
            Some("github_actions") => BackendConfig::GithubActions(self.github_actions(&entry)),
            Some("kubernetes") => BackendConfig::Kubernetes(self.kubernetes(&entry, base_dir)),
            Some("argocd") => BackendConfig::Argocd(self.argocd(&entry)),
            _ => stand_in,
        }
    }

    fn command_backend(&mut self, entry: &Entry) -> BackendConfig {
        self.unknown_keys(entry, &COMMAND_KEYS, "a command backend");
        let run = self.argv(entry, "run = [\"./deploy/deploy.sh\"]");
        let env = self.string_table(entry, "env", "env = { REGISTRY = \"ghcr.io/acme\" }");
        for (name, value) in &env {
            self.script_variable(&format!("{}.{name}", entry.key("env")), name, value);
        }
        BackendConfig::Command {
            run,
            timeout: self.timeout(entry, DEFAULT_DEPLOY_TIMEOUT),
            env,
        }
    }

    fn webhook(&mut self, entry: &Entry) -> WebhookConfig {
        self.unknown_keys(entry, &WEBHOOK_KEYS, "a webhook backend");
        WebhookConfig {
            url: self.http_url(entry, "url", "https://deployer.internal/hooks/shipmate"),
            secret: self
                .optional_text(entry, "secret", "\"${DEPLOY_HOOK_SECRET}\"")
                .map(Secret::new),
            timeout: self.timeout(entry, DEFAULT_DEPLOY_TIMEOUT),
            poll_every: self.poll_every(entry, DEFAULT_WEBHOOK_POLL),
        }
    }

    fn github_actions(&mut self, entry: &Entry) -> GithubActionsConfig {
        self.unknown_keys(entry, &GITHUB_KEYS, "a github_actions backend");
        let repo = self.required_text(entry, "repo", "\"acme/api\"");
        let parts: Vec<&str> = repo.split('/').collect();
        if !repo.is_empty() && (parts.len() != 2 || parts.iter().any(|p| p.trim().is_empty())) {
            self.problem(
                entry.key("repo"),
                format!("`{repo}` is not owner/name; write repo = \"acme/api\""),
            );
        }
        let inputs = self.string_table(entry, "inputs", "inputs = { cluster = \"eu-1\" }");
        for (name, value) in &inputs {
            self.known_placeholders(&format!("{}.{name}", entry.key("inputs")), value);
        }
        let api_url = match entry.get("api_url") {
            Some(_) => self.http_url(entry, "api_url", GITHUB_API),
            None => GITHUB_API.to_string(),
        };
        GithubActionsConfig {
            workflow: self.required_text(entry, "workflow", "\"deploy.yml\""),
            git_ref: self.required_text(entry, "ref", "\"main\""),
            repo,
            token: Secret::new(
                self.text(entry, "token", "\"${GITHUB_TOKEN}\"")
                    .unwrap_or_default(),
            ),
            inputs,
            api_url: api_url.trim_end_matches('/').to_string(),
            poll_every: self.poll_every(entry, DEFAULT_GITHUB_POLL),
            timeout: self.timeout(entry, DEFAULT_DEPLOY_TIMEOUT),
        }
    }

    fn kubernetes(&mut self, entry: &Entry, base_dir: &Path) -> KubernetesConfig {
        self.unknown_keys(entry, &KUBERNETES_KEYS, "a kubernetes backend");
        let name = |validator: &mut Self, key: &str, example: &str| {
            let text = validator.text(entry, key, example).unwrap_or_default();
            validator.known_placeholders(&entry.key(key), text);
            text.to_string()
        };
        let namespace = name(self, "namespace", "\"prod\"");
        let deployment = name(self, "deployment", "\"api\"");
        let container = name(self, "container", "\"api\"");
        let image = name(self, "image", "\"ghcr.io/acme/api:{version}\"");
        if !image.is_empty() && !image.contains("{version}") {
            self.problem(
                entry.key("image"),
                format!("`{image}` never changes with the version; put {{version}} in it, e.g. \"ghcr.io/acme/api:{{version}}\""),
            );
        }
        KubernetesConfig {
            namespace,
            deployment,
            container,
            image,
            kubeconfig: self
                .optional_text(entry, "kubeconfig", "\"/etc/shipmate/kubeconfig\"")
                .map(|path| base_dir.join(path)),
            context: self
                .optional_text(entry, "context", "\"prod-cluster\"")
                .map(str::to_string),
            canary_deployment: self
                .optional_text(entry, "canary_deployment", "\"api-canary\"")
                .map(str::to_string),
            timeout: self.timeout(entry, DEFAULT_KUBERNETES_TIMEOUT),
            poll_every: self.poll_every(entry, DEFAULT_KUBERNETES_POLL),
        }
    }

    fn argocd(&mut self, entry: &Entry) -> ArgocdConfig {
        self.unknown_keys(entry, &ARGOCD_KEYS, "an argocd backend");
        let image = self
            .optional_text(entry, "image", "\"ghcr.io/acme/api:{version}\"")
            .map(str::to_string);
        let revision = self
            .optional_text(entry, "revision", "\"v{version}\"")
            .map(str::to_string);
        ArgocdConfig {
            url: self
                .http_url(entry, "url", "https://argocd.example.com")
                .trim_end_matches('/')
                .to_string(),
            app: self.required_text(entry, "app", "\"api-prod\""),
            token: Secret::new(
                self.text(entry, "token", "\"${ARGOCD_TOKEN}\"")
                    .unwrap_or_default(),
            ),
            image,
            revision,
            timeout: self.timeout(entry, DEFAULT_ARGOCD_TIMEOUT),
            poll_every: self.poll_every(entry, DEFAULT_ARGOCD_POLL),
        }
    }

    /// A required non-blank string with known placeholders; empty when missing (reported).
    fn required_text(&mut self, entry: &Entry, name: &str, example: &str) -> String {
        let text = self.text(entry, name, example).unwrap_or_default();
        self.known_placeholders(&entry.key(name), text);
        text.to_string()
    }

    /// An optional non-blank string with known placeholders; `None` when absent or wrong
    /// (reported).
    fn optional_text<'t>(
        &mut self,
        entry: &Entry<'t>,
        name: &str,
        example: &str,
    ) -> Option<&'t str> {
        entry.get(name)?;
        let text = self.text(entry, name, example)?;
        self.known_placeholders(&entry.key(name), text);
        Some(text)
    }

    /// A table of strings (`env`, `inputs`); empty when absent or wrong (reported).
    fn string_table(
        &mut self,
        entry: &Entry,
        name: &str,
        example: &str,
    ) -> BTreeMap<String, String> {
        let Some(value) = entry.get(name) else {
            return BTreeMap::new();
        };
        let Some(table) = value.as_table() else {
            self.problem(
                entry.key(name),
                format!("must be a table, not {}; write {example}", a_type(value)),
            );
            return BTreeMap::new();
        };
        let mut strings = BTreeMap::new();
        for (key, item) in table {
            match item.as_str() {
                Some(text) => {
                    strings.insert(key.clone(), text.to_string());
                }
                None => self.problem(
                    format!("{}.{key}", entry.key(name)),
                    format!("must be a string, not {}", a_type(item)),
                ),
            }
        }
        strings
    }

    fn timeout(&mut self, entry: &Entry, default: Duration) -> Duration {
        self.duration_or(entry, "timeout", default)
            .unwrap_or(default)
    }

    fn poll_every(&mut self, entry: &Entry, default: Duration) -> Duration {
        let every = self
            .duration_or(entry, "poll_every", default)
            .unwrap_or(default);
        if every < SHORTEST_POLL {
            self.problem(
                entry.key("poll_every"),
                "is too often for a remote server; poll at most ten times a second, e.g. poll_every = \"5s\"",
            );
            return default;
        }
        every
    }
}
