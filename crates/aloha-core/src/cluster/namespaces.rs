//! The cluster's namespaces: their records, what each uses, each one's waiting queue, and the
//! rules that read them (existence and queue quotas at submission, hold-back quotas and
//! weighted fair order at placement).

use std::sync::Arc;

use imbl::OrdMap;

use super::index::WaitQueue;
use super::{Cluster, Effects, Now, OpError};
use crate::app::{App, SubmitError};
use crate::event::EventBody;
use crate::namespace::{
    self, held_back, weighted_share, Namespace, NamespaceSpec, Quota, Scope, Usage,
    DEFAULT_NAMESPACE,
};

/// What a scoped operation acts on.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Something new in this namespace (an app, a schedule), described for the error.
    Namespace(&'a str, &'a str),
    /// An existing app.
    App(&'a crate::app::AppId),
    /// An existing schedule.
    Schedule(&'a crate::schedules::ScheduleId),
}

/// One namespace as the cluster holds it.
#[derive(Debug, Clone, Default)]
pub struct NsEntry {
    /// The stored record; `None` for `default` until an admin sets it, and for a namespace
    /// whose record was deleted while its ended apps are still retained.
    pub record: Option<Arc<Namespace>>,
    /// What it uses.
    pub usage: Usage,
    /// Its apps waiting to be placed.
    pub(super) queue: WaitQueue,
}

impl NsEntry {
    /// Its quota (none without a record).
    pub fn quota(&self) -> Quota {
        self.record
            .as_ref()
            .map(|r| r.spec.quota)
            .unwrap_or_default()
    }

    /// Its weight (1 without a record).
    pub fn weight(&self) -> u32 {
        self.record.as_ref().map_or(1, |r| r.spec.weight)
    }
}

/// A namespace as `GET /api/v1/namespaces` serves it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct NamespaceInfo {
    /// Name.
    pub name: String,
    /// Limits.
    pub quota: Quota,
    /// Weight under fair placement.
    pub weight: u32,
    /// What it uses now, next to the quota.
    pub usage: Usage,
    /// Its dominant share: the larger of its cores and memory in use, each as a part of the
    /// ALIVE workers' total (0 to 1).
    pub dominant_share: f64,
    /// When it was created (absent for `default` before an admin set it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Index maintenance: how an app's change moves its namespace's usage and queue.
pub(super) fn usage_delta(usage: &mut Usage, app: &App, holding: bool, waiting: bool, add: bool) {
    let step = |v: &mut u64, by: u64| {
        if add {
            *v = v.saturating_add(by);
        } else {
            *v = v.saturating_sub(by);
        }
    };
    if holding {
        step(&mut usage.cores, u64::from(app.cores));
        step(&mut usage.memory_mb, app.memory_mb);
        step(&mut usage.running_apps, 1);
    }
    if waiting {
        step(&mut usage.queued_apps, 1);
    }
}

impl Cluster {
    // ------------------------------------------------------------------------------------
    // Loading

    /// Installs stored namespace records (after [`Cluster::recover`] or [`Cluster::mirror`]).
    pub fn with_namespaces(mut self, records: impl IntoIterator<Item = Namespace>) -> Cluster {
        for r in records {
            self.mirror_namespace(r);
        }
        self
    }

    /// The leader wrote this namespace record (standby replica; also loading).
    pub fn mirror_namespace(&mut self, record: Namespace) {
        let name = record.name.clone();
        let e = self.ns_entry(&name);
        e.record = Some(Arc::new(record));
        e.queue.unblock_all();
    }

    /// The leader deleted namespace `name` (standby replica).
    pub fn mirror_namespace_deleted(&mut self, name: &str) {
        if let Some(e) = self.namespaces.get_mut(name) {
            e.record = None;
        }
        self.tidy_namespace(name);
    }

    // ------------------------------------------------------------------------------------
    // Reads

    /// Whether apps and schedules may be created in `name`.
    pub fn namespace_exists(&self, name: &str) -> bool {
        name == DEFAULT_NAMESPACE
            || self
                .namespaces
                .get(name)
                .is_some_and(|e| e.record.is_some())
    }

    /// One namespace, if it exists.
    pub fn namespace(&self, name: &str) -> Option<NamespaceInfo> {
        if !self.namespace_exists(name) {
            return None;
        }
        let e = self.namespaces.get(name).cloned().unwrap_or_default();
        Some(self.namespace_info(name, &e))
    }

    /// Every namespace (`default` included), by name.
    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        let mut out: Vec<NamespaceInfo> = self
            .namespaces
            .iter()
            .filter(|(name, e)| e.record.is_some() || name.as_str() == DEFAULT_NAMESPACE)
            .map(|(name, e)| self.namespace_info(name, e))
            .collect();
        if !self.namespaces.contains_key(DEFAULT_NAMESPACE) {
            out.push(self.namespace_info(DEFAULT_NAMESPACE, &NsEntry::default()));
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }

    fn namespace_info(&self, name: &str, e: &NsEntry) -> NamespaceInfo {
        NamespaceInfo {
            name: name.to_string(),
            quota: e.quota(),
            weight: e.weight(),
            usage: e.usage,
            dominant_share: weighted_share(&e.usage, self.offers.total, 1),
            created_at: e.record.as_ref().map(|r| r.created_at),
            updated_at: e.record.as_ref().map(|r| r.updated_at),
        }
    }

    /// What namespace `name` uses now.
    pub fn usage(&self, name: &str) -> Usage {
        self.namespaces
            .get(name)
            .map(|e| e.usage)
            .unwrap_or_default()
    }

    /// The quota that holds a waiting app back, as a message, if one does.
    pub(super) fn quota_reason(&self, app: &App) -> Option<String> {
        let e = self.namespaces.get(&app.namespace)?;
        held_back(
            &app.namespace,
            &e.quota(),
            &e.usage,
            app.cores,
            app.memory_mb,
        )
    }

    // ------------------------------------------------------------------------------------
    // Rules

    /// Refuses an operation on `target` by a caller whose `scope` does not hold its namespace
    /// (nothing to refuse when the target does not exist: the operation says so itself).
    pub fn authorize(&self, scope: &Scope, target: Target<'_>) -> Result<(), OpError> {
        if *scope == Scope::All {
            return Ok(());
        }
        let (ns, what) = match target {
            Target::Namespace(ns, what) => (ns.to_string(), what.to_string()),
            Target::App(id) => match self.lookup(id) {
                super::Lookup::Found(a) => (a.namespace.clone(), format!("app {id}")),
                _ => return Ok(()),
            },
            Target::Schedule(id) => match self.schedules.get(id) {
                Some(e) => (e.record.spec.namespace.clone(), format!("schedule {id}")),
                None => return Ok(()),
            },
        };
        scope.check(&ns, &what).map_err(OpError::Forbidden)
    }

    /// Refuses a new app in a namespace that does not exist, or whose queue is at its
    /// `max_queued_apps`.
    pub(super) fn admit_app(&self, namespace: &str) -> Result<(), OpError> {
        self.admit(namespace, "max_queued_apps", "apps queued", |q, u| {
            (q.max_queued_apps, u.queued_apps)
        })
    }

    /// Refuses a new schedule in a namespace that does not exist, or that is at its
    /// `max_schedules`.
    pub(super) fn admit_schedule(&self, namespace: &str) -> Result<(), OpError> {
        self.admit(namespace, "max_schedules", "schedules", |q, u| {
            (q.max_schedules, u.schedules)
        })
    }

    /// Refuses one more of something in `namespace` when it does not exist or when `limit`
    /// (its quota's maximum, and how many it has) is reached; `quota` and `counted` name them
    /// in the error.
    fn admit(
        &self,
        namespace: &str,
        quota: &str,
        counted: &str,
        limit: impl Fn(&Quota, &Usage) -> (Option<u64>, u64),
    ) -> Result<(), OpError> {
        if !self.namespace_exists(namespace) {
            return Err(OpError::Submit(SubmitError::UnknownNamespace(
                namespace.to_string(),
            )));
        }
        let Some(e) = self.namespaces.get(namespace) else {
            return Ok(());
        };
        match limit(&e.quota(), &e.usage) {
            (Some(max), n) if n >= max => Err(OpError::Quota(format!(
                "namespace {namespace} is at its quota {quota} = {max} ({n} {counted})"
            ))),
            _ => Ok(()),
        }
    }

    /// Creates or changes namespace `name` (`PUT /api/v1/namespaces/{name}`). A lower quota
    /// takes nothing away from apps already placed or queued; it holds back what is placed
    /// from now on and refuses what is submitted from now on.
    pub fn put_namespace(
        &mut self,
        name: &str,
        spec: NamespaceSpec,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<Namespace>, OpError> {
        namespace::validate_name(name).map_err(OpError::BadRequest)?;
        spec.validate().map_err(OpError::BadRequest)?;
        let old = self.namespaces.get(name).and_then(|e| e.record.clone());
        if let Some(o) = &old {
            if o.spec == spec {
                return Ok(o.clone());
            }
        }
        let record = Arc::new(Namespace {
            name: name.to_string(),
            spec: spec.clone(),
            created_at: old.as_ref().map_or(now.wall, |o| o.created_at),
            updated_at: now.wall,
        });
        let e = self.ns_entry(name);
        e.record = Some(record.clone());
        // A raised quota may let held-back apps go.
        e.queue.unblock_all();
        fx.namespaces.insert(name.to_string(), Some(record.clone()));
        fx.events.push(EventBody::NamespaceUpdated {
            namespace: name.to_string(),
            quota: spec.quota,
            weight: spec.weight,
        });
        Ok(record)
    }

    /// Deletes namespace `name`. Refused for `default`, and while the namespace has apps
    /// queued or on workers, or schedules; its ended apps stay until the retention removes
    /// them.
    pub fn delete_namespace(&mut self, name: &str, fx: &mut Effects) -> Result<(), OpError> {
        if name == DEFAULT_NAMESPACE {
            return Err(OpError::Conflict(
                "the default namespace cannot be deleted (give it a quota instead)".into(),
            ));
        }
        let Some(e) = self
            .namespaces
            .get(name)
            .filter(|e| e.record.is_some())
            .cloned()
        else {
            return Err(OpError::NamespaceNotFound(name.to_string()));
        };
        let u = e.usage;
        if u.queued_apps + u.running_apps + u.schedules > 0 {
            return Err(OpError::Conflict(format!(
                "namespace {name} still has {} queued apps, {} running apps and {} schedules: kill and delete them first",
                u.queued_apps, u.running_apps, u.schedules
            )));
        }
        if let Some(e) = self.namespaces.get_mut(name) {
            e.record = None;
        }
        self.tidy_namespace(name);
        fx.namespaces.insert(name.to_string(), None);
        fx.events.push(EventBody::NamespaceDeleted {
            namespace: name.to_string(),
        });
        Ok(())
    }

    /// The namespace to place from next under weighted dominant resource fairness: among the
    /// namespaces with an app that may be placed, the one whose dominant share over its
    /// weight is lowest (ties: the one whose next app was submitted first). O(namespaces).
    pub(super) fn fairest_namespace(&self) -> Option<(String, u64, super::index::Shape)> {
        let mut best: Option<(f64, u64, &String, super::index::Shape)> = None;
        for (name, e) in self.namespaces.iter() {
            let Some((seq, shape)) = e.queue.next() else {
                continue;
            };
            let share = weighted_share(&e.usage, self.offers.total, e.weight());
            let better = match &best {
                None => true,
                Some((s, q, _, _)) => share.total_cmp(s).then(seq.cmp(q)).is_lt(),
            };
            if better {
                best = Some((share, seq, name, shape));
            }
        }
        best.map(|(_, seq, name, shape)| (name.clone(), seq, shape))
    }

    // ------------------------------------------------------------------------------------
    // Bookkeeping

    /// The entry of namespace `name`, made when missing.
    pub(super) fn ns_entry(&mut self, name: &str) -> &mut NsEntry {
        if !self.namespaces.contains_key(name) {
            self.namespaces.insert(name.to_string(), NsEntry::default());
        }
        self.namespaces
            .get_mut(name)
            .expect("the entry was just made")
    }

    /// Drops the entry of `name` when nothing refers to it any more.
    pub(super) fn tidy_namespace(&mut self, name: &str) {
        let unused = self
            .namespaces
            .get(name)
            .is_some_and(|e| e.record.is_none() && e.usage.is_empty() && e.queue.is_empty());
        if unused {
            self.namespaces.remove(name);
        }
    }

    /// Capacity grew somewhere: every namespace's every shape is a candidate again.
    pub(super) fn unblock_all_queues(&mut self) {
        let blocked: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, e)| e.queue.has_blocked())
            .map(|(n, _)| n.clone())
            .collect();
        for n in blocked {
            if let Some(e) = self.namespaces.get_mut(&n) {
                e.queue.unblock_all();
            }
        }
    }

    /// Apps waiting in every namespace.
    pub(super) fn queued_total(&self) -> usize {
        self.namespaces.values().map(|e| e.queue.len()).sum()
    }

    /// Distinct resource shapes waiting, over all namespaces.
    pub(super) fn queued_shapes_total(&self) -> usize {
        self.namespaces.values().map(|e| e.queue.shapes()).sum()
    }

    /// Every waiting app's sequence number, oldest first (checks).
    pub(super) fn queued_all(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .namespaces
            .values()
            .flat_map(|e| e.queue.all())
            .collect();
        all.sort_unstable();
        all
    }

    /// Recomputes every namespace's usage from the records (checks; O(everything)).
    pub(super) fn recount_usage(&self) -> OrdMap<String, Usage> {
        let mut out: OrdMap<String, Usage> = OrdMap::new();
        for a in self.apps.values() {
            let mut u = out.get(&a.namespace).copied().unwrap_or_default();
            usage_delta(
                &mut u,
                a,
                super::holding(a).is_some(),
                a.state.is_waiting(),
                true,
            );
            out.insert(a.namespace.clone(), u);
        }
        for e in self.schedules.values() {
            let ns = &e.record.spec.namespace;
            let mut u = out.get(ns).copied().unwrap_or_default();
            u.schedules += 1;
            out.insert(ns.clone(), u);
        }
        out
    }
}
