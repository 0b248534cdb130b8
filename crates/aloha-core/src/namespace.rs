//! Namespaces: who an app or a schedule belongs to, with a quota and a weight.
//!
//! Every app and schedule carries a namespace (`default` unless the submission names one). A
//! namespace other than `default` exists once an admin created it (`PUT
//! /api/v1/namespaces/{name}`); `default` always exists, without a quota, until an admin gives
//! it one.
//!
//! The quota is enforced in two ways (the rules are the cluster's, see
//! [`crate::cluster::Cluster::submit`] and [`crate::cluster::Cluster::place`]):
//! - `max_queued_apps` and `max_schedules` refuse a submission or a schedule (HTTP 429);
//! - `max_cores`, `max_memory_mb` and `max_running_apps` hold apps back in the queue: they wait
//!   (SUBMITTED, with a message naming the quota) and never block another namespace's apps.
//!
//! The weight is the namespace's share under dominant resource fairness: placement picks the
//! namespace whose dominant share (the larger of its cores and memory in use, each as a part of
//! the ALIVE workers' total) divided by its weight is lowest.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The namespace of an app or schedule that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Longest namespace name.
pub const MAX_NAMESPACE_LEN: usize = 63;

/// Highest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// The serde default of a `namespace` field.
pub fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// Whether `ns` is the default namespace (serde's `skip_serializing_if`).
pub fn is_default_namespace(ns: &str) -> bool {
    ns == DEFAULT_NAMESPACE
}

/// Checks a namespace name: 1 to 63 characters of `a-z`, `0-9` and `-`, starting and ending
/// with a letter or digit (a DNS label, as Kubernetes and Nomad name theirs).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() {
        return Err("namespace must not be empty".into());
    }
    if name.len() > MAX_NAMESPACE_LEN {
        return Err(format!(
            "namespace {:?} is longer than {MAX_NAMESPACE_LEN} characters",
            truncate(name)
        ));
    }
    let valid = name.chars().all(|c| ok_char(c) || c == '-')
        && name.starts_with(ok_char)
        && name.ends_with(ok_char);
    if !valid {
        return Err(format!(
            "namespace {:?} is not a valid name: use a-z, 0-9 and '-', starting and ending with a letter or digit",
            truncate(name)
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_NAMESPACE_LEN + 1).collect()
}

/// Where a caller may create and change apps and schedules: every namespace, or only some (a
/// `submitter` token scoped to namespaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    #[default]
    All,
    /// Only these namespaces.
    Only {
        /// Who the caller is, for the error (a token id).
        who: String,
        /// The namespaces.
        namespaces: std::sync::Arc<[String]>,
    },
}

impl Scope {
    /// Whether the caller may write in `namespace`; the refusal names what it may.
    pub fn check(&self, namespace: &str, what: &str) -> Result<(), String> {
        match self {
            Scope::All => Ok(()),
            Scope::Only { namespaces, .. } if namespaces.iter().any(|n| n == namespace) => Ok(()),
            Scope::Only { who, namespaces } => Err(format!(
                "{who} may only write in namespace{} {}; {what} is in namespace {namespace}",
                if namespaces.len() == 1 { "" } else { "s" },
                namespaces.join(", ")
            )),
        }
    }
}

/// A namespace's limits; an absent field is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Most cores its apps hold on workers at once; more apps wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cores: Option<u64>,
    /// Most memory (MiB) its apps hold on workers at once; more apps wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Most apps on workers (LAUNCHING, RUNNING, UNKNOWN) at once; more apps wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_apps: Option<u64>,
    /// Most apps waiting to be placed; a submission beyond it is refused (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_apps: Option<u64>,
    /// Most schedules; creating one beyond it is refused (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_schedules: Option<u64>,
}

/// The body of `PUT /api/v1/namespaces/{name}`: the namespace as it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Limits (absent: none).
    #[serde(default)]
    pub quota: Quota,
    /// Share under fair placement, 1 to 1,000,000 (default 1): a namespace of weight 3 gets
    /// three times the resources of one of weight 1 when both have apps waiting.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl Default for NamespaceSpec {
    fn default() -> Self {
        NamespaceSpec {
            quota: Quota::default(),
            weight: 1,
        }
    }
}

impl NamespaceSpec {
    /// Checks the fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return Err(format!(
                "weight must be between 1 and {MAX_WEIGHT} (got {})",
                self.weight
            ));
        }
        Ok(())
    }
}

/// A namespace as the master keeps and persists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Quota and weight.
    #[serde(flatten)]
    pub spec: NamespaceSpec,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a namespace uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Cores its apps hold on workers.
    pub cores: u64,
    /// Memory (MiB) its apps hold on workers.
    pub memory_mb: u64,
    /// Apps on workers (LAUNCHING, RUNNING, UNKNOWN).
    pub running_apps: u64,
    /// Apps waiting to be placed (SUBMITTED, RELAUNCHING).
    pub queued_apps: u64,
    /// Schedules.
    pub schedules: u64,
}

impl Usage {
    /// Whether nothing is in use or waiting.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// Which hold-back limit of `quota` an app needing `cores` and `memory_mb` would pass with
/// `usage` already held, as a message naming the quota; `None` when it may start.
pub fn held_back(
    namespace: &str,
    quota: &Quota,
    usage: &Usage,
    cores: u32,
    memory_mb: u64,
) -> Option<String> {
    if let Some(max) = quota.max_running_apps {
        if usage.running_apps + 1 > max {
            return Some(format!(
                "waiting for namespace {namespace}'s quota max_running_apps = {max} ({} apps running)",
                usage.running_apps
            ));
        }
    }
    if let Some(max) = quota.max_cores {
        if usage.cores + u64::from(cores) > max {
            return Some(format!(
                "waiting for namespace {namespace}'s quota max_cores = {max} ({} in use, needs {cores})",
                usage.cores
            ));
        }
    }
    if let Some(max) = quota.max_memory_mb {
        if usage.memory_mb + memory_mb > max {
            return Some(format!(
                "waiting for namespace {namespace}'s quota max_memory_mb = {max} ({} MiB in use, needs {memory_mb})",
                usage.memory_mb
            ));
        }
    }
    None
}

/// The dominant share of `usage` among `total` cores and memory, divided by `weight`: what
/// fair placement orders namespaces by (lowest first).
pub fn weighted_share(usage: &Usage, total: (u64, u64), weight: u32) -> f64 {
    let part = |used: u64, all: u64| {
        if all == 0 {
            0.0
        } else {
            used as f64 / all as f64
        }
    };
    let dominant = part(usage.cores, total.0).max(part(usage.memory_mb, total.1));
    dominant / f64::from(weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["default", "a", "team-7", "0x", &"a".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "é",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spec_defaults_to_weight_one_and_no_quota_and_refuses_unknown_fields() {
        let s: NamespaceSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s, NamespaceSpec::default());
        let s: NamespaceSpec = serde_json::from_str(
            r#"{"quota": {"max_cores": 4, "max_queued_apps": 10}, "weight": 3}"#,
        )
        .unwrap();
        assert_eq!(s.quota.max_cores, Some(4));
        assert_eq!(s.quota.max_queued_apps, Some(10));
        assert_eq!(s.weight, 3);
        assert!(serde_json::from_str::<NamespaceSpec>(r#"{"quota": {"max_cpus": 4}}"#).is_err());
        assert!(serde_json::from_str::<NamespaceSpec>(r#"{"weight": -1}"#).is_err());
        assert!(NamespaceSpec {
            weight: 0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn held_back_names_the_first_limit_passed() {
        let q = Quota {
            max_cores: Some(4),
            max_memory_mb: Some(1024),
            max_running_apps: Some(3),
            ..Default::default()
        };
        let mut u = Usage {
            cores: 3,
            memory_mb: 512,
            running_apps: 2,
            ..Default::default()
        };
        assert_eq!(held_back("a", &q, &u, 1, 512), None);
        assert!(held_back("a", &q, &u, 2, 0)
            .unwrap()
            .contains("max_cores = 4"));
        assert!(held_back("a", &q, &u, 1, 513)
            .unwrap()
            .contains("max_memory_mb = 1024"));
        u.running_apps = 3;
        assert!(held_back("a", &q, &u, 1, 0)
            .unwrap()
            .contains("max_running_apps = 3"));
        assert_eq!(held_back("a", &Quota::default(), &u, 100, 1 << 40), None);
    }

    #[test]
    fn the_share_is_the_dominant_resource_over_the_weight() {
        let u = Usage {
            cores: 2,
            memory_mb: 100,
            ..Default::default()
        };
        assert_eq!(weighted_share(&u, (8, 1000), 1), 0.25);
        assert_eq!(weighted_share(&u, (8, 200), 1), 0.5);
        assert_eq!(weighted_share(&u, (8, 200), 2), 0.25);
        assert_eq!(weighted_share(&u, (0, 0), 1), 0.0);
    }
}
