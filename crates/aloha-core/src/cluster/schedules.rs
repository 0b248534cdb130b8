//! The schedule rules of the cluster: creating, changing and deleting schedules, firing their
//! nominal times under the overlap and misfire policies, starting queued runs when earlier ones
//! end, triggers and backfills.
//!
//! **Exactly once.** A run is an app created in the same batch (so the same store transaction)
//! as the schedule record whose position (`last_scheduled_at`) moved past its nominal time. A
//! new leader continues from the stored position. Independently of that, the cluster indexes
//! the runs it holds by `(schedule_id, scheduled_at)` and never creates a second run for one
//! (explicit retries, `retry_of`, aside).
//!
//! **Timers.** Each schedule has at most one timer, when its next nominal time fires
//! (`nominal + jitter offset`), in one ordered set for all schedules; the engine fires what is
//! due and sleeps until the earliest. Nothing walks every schedule.

use std::collections::VecDeque;

use super::*;
use crate::schedules::{
    Misfire, Overlap, Schedule, SchedulePatch, ScheduleRequest, ScheduleState, MAX_BACKFILL,
};
use crate::timetable::Timetable;

/// Most nominal times one schedule turns into runs in one batch; the rest wait for the next
/// batch (its timer is then due at once), so one schedule far behind cannot make a huge batch.
const RUNS_PER_PASS: usize = 1_000;
/// Most nominal times one schedule counts as missed or skipped in one batch.
const COUNTS_PER_PASS: usize = 100_000;

/// A schedule as the cluster keeps it: the record and its parsed timetable.
#[derive(Debug, Clone)]
pub struct ScheduleEntry {
    /// The persisted record.
    pub record: Arc<Schedule>,
    /// Its time rule.
    pub table: Timetable,
    /// When its timer fires, if it has one.
    timer: Option<DateTime<Utc>>,
}

impl ScheduleEntry {
    /// The next `n` nominal times after the schedule's position (none once it ended).
    pub fn next_runs(&self, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        if self.record.ended {
            return out;
        }
        let mut at = self.record.last_scheduled_at;
        while out.len() < n {
            match self.table.next_after(at) {
                Some(t) => {
                    out.push(t);
                    at = Some(t);
                }
                None => break,
            }
        }
        out
    }
}

/// What a trigger or one backfilled time became.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// A run was created.
    Created(Arc<App>),
    /// It waits for earlier runs to end (`queue`, `cancel_previous`).
    Queued,
    /// It got no run, for this reason.
    Skipped(String),
}

/// The answer of a backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Backfill {
    /// The nominal times in the window.
    pub times: Vec<DateTime<Utc>>,
    /// What became of each (empty for a dry run), in the same order.
    pub outcomes: Vec<RunOutcome>,
}

fn bad(m: impl Into<String>) -> OpError {
    OpError::BadRequest(m.into())
}

/// Counts nominal time `t` as skipped, with an event.
fn skip_run(s: &mut Schedule, t: DateTime<Utc>, why: String, fx: &mut Effects) -> RunOutcome {
    s.counters.skipped += 1;
    fx.events.push(EventBody::ScheduleSkipped {
        schedule_id: s.id.clone(),
        name: s.spec.name.clone(),
        scheduled_at: t,
        count: 1,
        message: why.clone(),
    });
    RunOutcome::Skipped(why)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Cluster {
    // ------------------------------------------------------------------------------------
    // Loading

    /// Installs stored schedules (after [`Cluster::recover`] or [`Cluster::mirror`], whose
    /// apps the run indexes already hold). A record whose rule no longer parses is kept,
    /// without a timer, and named in the returned errors.
    pub fn with_schedules(
        mut self,
        schedules: impl IntoIterator<Item = Schedule>,
        last_schedule_seq: u64,
    ) -> (Cluster, Vec<String>) {
        let mut errors = Vec::new();
        for s in schedules {
            self.last_schedule_seq = self.last_schedule_seq.max(s.seq);
            match s.spec.validate(&s.id, s.created_at) {
                Ok(table) => {
                    let entry = ScheduleEntry {
                        record: Arc::new(s),
                        table,
                        timer: None,
                    };
                    self.install_schedule(entry);
                }
                Err(e) => errors.push(format!("schedule {}: {e}", s.id)),
            }
        }
        self.last_schedule_seq = self.last_schedule_seq.max(last_schedule_seq);
        (self, errors)
    }

    /// The leader wrote this schedule record (standby replica).
    pub fn mirror_schedule(&mut self, s: Schedule) {
        self.last_schedule_seq = self.last_schedule_seq.max(s.seq);
        if let Ok(table) = s.spec.validate(&s.id, s.created_at) {
            let entry = ScheduleEntry {
                record: Arc::new(s),
                table,
                timer: None,
            };
            self.install_schedule(entry);
        }
    }

    /// The leader deleted schedule `id` (standby replica).
    pub fn mirror_schedule_deleted(&mut self, id: &ScheduleId) {
        self.uninstall_schedule(id);
    }

    /// The leader moved the schedule sequence number (standby replica).
    pub fn mirror_last_schedule_seq(&mut self, seq: u64) {
        self.last_schedule_seq = self.last_schedule_seq.max(seq);
    }

    // ------------------------------------------------------------------------------------
    // Reads

    /// One schedule.
    pub fn schedule(&self, id: &ScheduleId) -> Option<&ScheduleEntry> {
        self.schedules.get(id)
    }

    /// How many schedules there are.
    pub fn schedule_count(&self) -> usize {
        self.schedules.len()
    }

    /// The last schedule sequence number handed out.
    pub fn last_schedule_seq(&self) -> u64 {
        self.last_schedule_seq
    }

    /// A page of schedules, newest first, after `after` (exclusive).
    pub fn schedule_page(
        &self,
        after: Option<&ScheduleId>,
        limit: usize,
    ) -> (Vec<ScheduleEntry>, Option<ScheduleId>) {
        let upper = after
            .and_then(|a| self.schedules.get(a))
            .map(|e| e.record.seq)
            .unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut more = false;
        for id in self.schedule_order.range(..upper).rev().map(|(_, id)| id) {
            if out.len() == limit {
                more = true;
                break;
            }
            if let Some(e) = self.schedules.get(id) {
                out.push(e.clone());
            }
        }
        let next = if more {
            out.last().map(|e| e.record.id.clone())
        } else {
            None
        };
        (out, next)
    }

    /// The retained runs of schedule `id`, newest first: at most `limit`, after the app with
    /// sequence number `after`.
    pub fn runs_page(&self, id: &ScheduleId, after: Option<u64>, limit: usize) -> Page {
        let upper = after.unwrap_or(u64::MAX);
        let Some(runs) = self.schedule_runs.get(id) else {
            return Page {
                apps: Vec::new(),
                next: None,
            };
        };
        let mut apps = Vec::new();
        let mut more = false;
        for seq in runs.range(..upper).rev() {
            if apps.len() == limit {
                more = true;
                break;
            }
            if let Some(a) = self.apps.get(seq) {
                apps.push(a.clone());
            }
        }
        let next = if more {
            apps.last().map(|a| a.id.clone())
        } else {
            None
        };
        Page { apps, next }
    }

    /// When the earliest schedule timer fires.
    pub fn next_schedule_timer(&self) -> Option<DateTime<Utc>> {
        self.schedule_timers.get_min().map(|(t, _)| *t)
    }

    /// How many runs of schedule `id` have not ended.
    fn active_runs(&self, id: &ScheduleId) -> usize {
        self.schedule_active.get(id).map_or(0, |s| s.len())
    }

    // ------------------------------------------------------------------------------------
    // Bookkeeping

    /// Puts `entry` in the map and its timer in the timer set (replacing the old ones).
    fn install_schedule(&mut self, mut entry: ScheduleEntry) {
        let id = entry.record.id.clone();
        if let Some(old) = self.schedules.get(&id) {
            if let Some(t) = old.timer {
                self.schedule_timers.remove(&(t, id.clone()));
            }
        }
        entry.timer = self.timer_of(&entry);
        if let Some(t) = entry.timer {
            self.schedule_timers.insert((t, id.clone()));
        }
        self.schedule_order.insert(entry.record.seq, id.clone());
        let ns = entry.record.spec.namespace.clone();
        if let Some(old) = self.schedules.insert(id, entry) {
            self.count_schedule(&old.record.spec.namespace, false);
        }
        self.count_schedule(&ns, true);
    }

    fn count_schedule(&mut self, namespace: &str, add: bool) {
        let u = &mut self.ns_entry(namespace).usage;
        if add {
            u.schedules += 1;
        } else {
            u.schedules = u.schedules.saturating_sub(1);
        }
        if !add {
            self.tidy_namespace(namespace);
        }
    }

    fn uninstall_schedule(&mut self, id: &ScheduleId) -> Option<ScheduleEntry> {
        let old = self.schedules.remove(id)?;
        if let Some(t) = old.timer {
            self.schedule_timers.remove(&(t, id.clone()));
        }
        self.schedule_order.remove(&old.record.seq);
        self.count_schedule(&old.record.spec.namespace, false);
        Some(old)
    }

    /// Installs the new record and records its write.
    fn put_schedule(&mut self, s: Schedule, table: Timetable, fx: &mut Effects) -> Arc<Schedule> {
        let record = Arc::new(s);
        fx.schedules.insert(record.id.clone(), Some(record.clone()));
        self.install_schedule(ScheduleEntry {
            record: record.clone(),
            table,
            timer: None,
        });
        record
    }

    /// When the schedule must be looked at next: the firing of its next nominal time. None when
    /// paused or ended, or when it waits for a run to end before catching up (`queue`), since
    /// the run's end wakes it.
    pub(super) fn timer_of(&self, e: &ScheduleEntry) -> Option<DateTime<Utc>> {
        let s = &e.record;
        if s.ended || s.spec.paused {
            return None;
        }
        let next = e.table.next_after(s.last_scheduled_at)?;
        if s.spec.overlap == Overlap::Queue
            && next < s.created_at
            && (self.active_runs(&s.id) > 0 || !s.pending.is_empty())
        {
            return None;
        }
        Some(e.table.fire_at(next))
    }

    /// Keeps the schedule indexes true to an app going from `old` to `new` (called by
    /// `reindex`).
    pub(super) fn reindex_run(&mut self, old: Option<&App>, new: Option<&App>) {
        let Some(any) = old.or(new) else { return };
        let Some(sid) = any.schedule_id.as_ref() else {
            return;
        };
        let sid = ScheduleId(sid.to_string());
        let seq = any.seq;
        let (was, is) = (old.is_some(), new.is_some());
        if was != is {
            let mut runs = self.schedule_runs.get(&sid).cloned().unwrap_or_default();
            if is {
                runs.insert(seq);
            } else {
                runs.remove(&seq);
            }
            if runs.is_empty() {
                self.schedule_runs.remove(&sid);
            } else {
                self.schedule_runs.insert(sid.clone(), runs);
            }
            if let (Some(at), None) = (any.scheduled_at, any.retry_of.as_ref()) {
                if is {
                    self.run_index.insert((sid.clone(), at), seq);
                } else {
                    self.run_index.remove(&(sid.clone(), at));
                }
            }
        }
        let was_active = old.is_some_and(|a| !a.state.is_terminal());
        let is_active = new.is_some_and(|a| !a.state.is_terminal());
        if was_active != is_active {
            let mut act = self.schedule_active.get(&sid).cloned().unwrap_or_default();
            if is_active {
                act.insert(seq);
            } else {
                act.remove(&seq);
                self.runs_ended.insert(sid.clone());
            }
            if act.is_empty() {
                self.schedule_active.remove(&sid);
            } else {
                self.schedule_active.insert(sid, act);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Operations from clients

    /// Creates a schedule. Nominal times from `start_at` before now are compensating runs,
    /// fired at once (under `overlap`); the first batch after this one fires them.
    pub fn create_schedule(
        &mut self,
        req: ScheduleRequest,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<Schedule>, OpError> {
        let seq = self.last_schedule_seq + 1;
        let id = ScheduleId::new(seq, now.wall);
        let table = self.check_schedule(&req, &id, now.wall)?;
        self.admit_schedule(&req.namespace)?;
        let mut spec = req;
        spec.start_at = Some(table.start_at());
        let s = Schedule {
            id,
            seq,
            spec,
            ended: false,
            created_at: now.wall,
            updated_at: now.wall,
            last_scheduled_at: None,
            counters: Default::default(),
            recent_runs: VecDeque::new(),
            pending: VecDeque::new(),
        };
        fx.events.push(EventBody::ScheduleCreated {
            schedule_id: s.id.clone(),
            name: s.spec.name.clone(),
        });
        self.last_schedule_seq = seq;
        fx.schedule_seq = Some(seq);
        let id = s.id.clone();
        self.put_schedule(s, table, fx);
        self.advance(&id, now, fx);
        Ok(self.schedules[&id].record.clone())
    }

    /// Checks a schedule request: its own fields, its timetable, and its template as a
    /// submission.
    fn check_schedule(
        &self,
        req: &ScheduleRequest,
        id: &ScheduleId,
        created_at: DateTime<Utc>,
    ) -> Result<Timetable, OpError> {
        let table = req.validate(id, created_at).map_err(bad)?;
        let probe = req.app.request(
            format!("{}@{}", req.name, rfc3339(created_at)),
            &req.namespace,
        );
        self.validate(&probe).map_err(|e| match e {
            OpError::Submit(SubmitError::Invalid(m)) => bad(format!("app: {m}")),
            other => other,
        })?;
        Ok(table)
    }

    fn entry(&self, id: &ScheduleId) -> Result<ScheduleEntry, OpError> {
        self.schedules
            .get(id)
            .cloned()
            .ok_or_else(|| OpError::ScheduleNotFound(id.clone()))
    }

    /// Changes a schedule. The template applies to runs created from now on; a change of the
    /// time rule applies from now (nominal times before it are not fired late); `paused`
    /// pauses or resumes.
    pub fn update_schedule(
        &mut self,
        id: &ScheduleId,
        patch: SchedulePatch,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<Schedule>, OpError> {
        let e = self.entry(id)?;
        let old = &e.record;
        let spec = patch.apply(&old.spec);
        let table = self.check_schedule(&spec, id, old.created_at)?;
        let mut s = (**old).clone();
        let rule_changed = spec.cron != old.spec.cron
            || spec.every != old.spec.every
            || spec.time_zone != old.spec.time_zone
            || spec.start_at != old.spec.start_at
            || spec.jitter != old.spec.jitter;
        let pause = patch.paused.filter(|p| *p != old.spec.paused);
        s.spec = spec;
        s.spec.paused = old.spec.paused;
        s.updated_at = now.wall;
        if rule_changed && !s.ended {
            s.last_scheduled_at = Some(s.last_scheduled_at.map_or(now.wall, |l| l.max(now.wall)));
        }
        fx.events.push(EventBody::ScheduleUpdated {
            schedule_id: id.clone(),
            name: s.spec.name.clone(),
        });
        self.put_schedule(s, table, fx);
        match pause {
            Some(true) => {
                self.pause_schedule(id, now, fx)?;
            }
            Some(false) => {
                self.resume_schedule(id, now, fx)?;
            }
            None => self.advance(id, now, fx),
        }
        Ok(self.schedules[id].record.clone())
    }

    /// Deletes a schedule; its runs are left alone.
    pub fn delete_schedule(
        &mut self,
        id: &ScheduleId,
        fx: &mut Effects,
    ) -> Result<Arc<Schedule>, OpError> {
        let e = self
            .uninstall_schedule(id)
            .ok_or_else(|| OpError::ScheduleNotFound(id.clone()))?;
        fx.schedules.insert(id.clone(), None);
        fx.events.push(EventBody::ScheduleDeleted {
            schedule_id: id.clone(),
            name: e.record.spec.name.clone(),
        });
        Ok(e.record)
    }

    /// Pauses a schedule: no run is created until it is resumed.
    pub fn pause_schedule(
        &mut self,
        id: &ScheduleId,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<Schedule>, OpError> {
        let e = self.entry(id)?;
        if e.record.ended {
            return Err(OpError::Conflict(format!("schedule {id} has ended")));
        }
        if e.record.spec.paused {
            return Ok(e.record);
        }
        let mut s = (*e.record).clone();
        s.spec.paused = true;
        s.updated_at = now.wall;
        fx.events.push(EventBody::SchedulePaused {
            schedule_id: id.clone(),
            name: s.spec.name.clone(),
        });
        Ok(self.put_schedule(s, e.table, fx))
    }

    /// Resumes a paused schedule. The nominal times that passed while it was paused are
    /// skipped (not misfires): it continues with the next one.
    pub fn resume_schedule(
        &mut self,
        id: &ScheduleId,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Arc<Schedule>, OpError> {
        let e = self.entry(id)?;
        if !e.record.spec.paused {
            return Ok(e.record);
        }
        let mut s = (*e.record).clone();
        s.spec.paused = false;
        s.updated_at = now.wall;
        let mut first = None;
        let mut count = 0u64;
        while (count as usize) < COUNTS_PER_PASS {
            let Some(next) = e.table.next_after(s.last_scheduled_at) else {
                break;
            };
            if e.table.fire_at(next) > now.wall {
                break;
            }
            first.get_or_insert(next);
            s.last_scheduled_at = Some(next);
            count += 1;
        }
        if let Some(first) = first {
            s.counters.skipped += count;
            fx.events.push(EventBody::ScheduleSkipped {
                schedule_id: id.clone(),
                name: s.spec.name.clone(),
                scheduled_at: first,
                count,
                message: "the schedule was paused".into(),
            });
        }
        fx.events.push(EventBody::ScheduleResumed {
            schedule_id: id.clone(),
            name: s.spec.name.clone(),
        });
        self.put_schedule(s, e.table, fx);
        self.advance(id, now, fx);
        Ok(self.schedules[id].record.clone())
    }

    /// A run now (nominal time: now), under the schedule's overlap policy or `overlap`.
    pub fn trigger_schedule(
        &mut self,
        id: &ScheduleId,
        overlap: Option<Overlap>,
        now: Now,
        fx: &mut Effects,
    ) -> Result<RunOutcome, OpError> {
        let e = self.entry(id)?;
        if e.record.ended {
            return Err(OpError::Conflict(format!("schedule {id} has ended")));
        }
        let mut s = (*e.record).clone();
        let policy = overlap.unwrap_or(s.spec.overlap);
        let out = self.run_or_hold(&mut s, now.wall, policy, now, fx);
        self.put_schedule(s, e.table, fx);
        Ok(out)
    }

    /// The nominal times in `[start, end)`; unless `dry_run`, a run for each under the
    /// overlap policy (a time that already has a run gets no second one).
    pub fn backfill_schedule(
        &mut self,
        id: &ScheduleId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        dry_run: bool,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Backfill, OpError> {
        let e = self.entry(id)?;
        if end <= start {
            return Err(bad("backfill end must be after start"));
        }
        let times = e.table.between(start, end, MAX_BACKFILL + 1);
        if times.len() > MAX_BACKFILL {
            return Err(bad(format!(
                "the window holds more than {MAX_BACKFILL} nominal times; backfill it in parts"
            )));
        }
        if dry_run {
            return Ok(Backfill {
                times,
                outcomes: Vec::new(),
            });
        }
        let mut s = (*e.record).clone();
        let policy = s.spec.overlap;
        let outcomes = times
            .iter()
            .map(|t| {
                if let Some(seq) = self.run_index.get(&(id.clone(), *t)) {
                    let app = self.apps[seq].id.clone();
                    RunOutcome::Skipped(format!("{} already has run {app}", rfc3339(*t)))
                } else {
                    self.run_or_hold(&mut s, *t, policy, now, fx)
                }
            })
            .collect();
        self.put_schedule(s, e.table, fx);
        Ok(Backfill { times, outcomes })
    }

    // ------------------------------------------------------------------------------------
    // Timers and run ends

    /// Fires the schedules whose timer is due. Returns how many schedules were looked at.
    pub fn fire_schedules(&mut self, now: Now, fx: &mut Effects) -> usize {
        let due: Vec<ScheduleId> = self
            .schedule_timers
            .iter()
            .take_while(|(t, _)| *t <= now.wall)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            self.advance(id, now, fx);
        }
        due.len()
    }

    /// Whether a run of some schedule ended since the last [`Cluster::settle_schedules`].
    pub fn runs_ended(&self) -> bool {
        !self.runs_ended.is_empty()
    }

    /// Lets the schedules whose runs ended start their waiting runs, catch up, or end.
    pub fn settle_schedules(&mut self, now: Now, fx: &mut Effects) {
        let ended = std::mem::take(&mut self.runs_ended);
        for id in ended.iter() {
            self.advance(id, now, fx);
        }
    }

    /// Moves a schedule as far as it can go now: starts a waiting run if nothing runs, turns
    /// the nominal times that are due into runs (or skips, counts) and ends it when nothing
    /// is left.
    fn advance(&mut self, id: &ScheduleId, now: Now, fx: &mut Effects) {
        let Some(e) = self.schedules.get(id).cloned() else {
            return;
        };
        if e.record.ended {
            return;
        }
        let mut s = (*e.record).clone();
        let mut changed = false;
        if !s.spec.paused {
            changed |= self.start_pending(&mut s, now, fx);
            changed |= self.fire_due(&mut s, &e.table, now, fx);
        }
        let exhausted = e.table.next_after(s.last_scheduled_at).is_none();
        if exhausted && self.active_runs(id) == 0 && s.pending.is_empty() {
            s.ended = true;
            changed = true;
            fx.events.push(EventBody::ScheduleEnded {
                schedule_id: id.clone(),
                name: s.spec.name.clone(),
            });
        }
        if changed {
            s.updated_at = now.wall;
            self.put_schedule(s, e.table, fx);
        } else {
            // Nothing to write, but the timer may have to move (a run ended).
            self.install_schedule(e);
        }
    }

    /// Starts the oldest waiting run when no run of the schedule is active.
    fn start_pending(&mut self, s: &mut Schedule, now: Now, fx: &mut Effects) -> bool {
        if self.active_runs(&s.id) > 0 {
            return false;
        }
        while let Some(t) = s.pending.pop_front() {
            if self.create_run(s, t, now, fx).is_some() {
                return true;
            }
        }
        false
    }

    /// Handles the nominal times that are due, in order, under the misfire policy.
    fn fire_due(
        &mut self,
        s: &mut Schedule,
        table: &Timetable,
        now: Now,
        fx: &mut Effects,
    ) -> bool {
        let grace = chrono::Duration::from_std(s.spec.misfire_grace).unwrap_or_default();
        let mut missed: Vec<DateTime<Utc>> = Vec::new();
        let mut runs = 0;
        let mut changed = false;
        while runs < RUNS_PER_PASS && missed.len() < COUNTS_PER_PASS {
            let Some(next) = table.next_after(s.last_scheduled_at) else {
                break;
            };
            let fire = table.fire_at(next);
            if fire > now.wall {
                break;
            }
            let compensating = next < s.created_at;
            if compensating
                && s.spec.overlap == Overlap::Queue
                && (self.active_runs(&s.id) > 0 || !s.pending.is_empty())
            {
                // Catching up one run after another: the run's end brings us back.
                break;
            }
            s.last_scheduled_at = Some(next);
            changed = true;
            if !compensating && now.wall - fire > grace {
                missed.push(next);
                continue;
            }
            if !missed.is_empty() {
                runs += self.misfire(s, std::mem::take(&mut missed), true, now, fx);
            }
            self.run_or_hold(s, next, s.spec.overlap, now, fx);
            runs += 1;
        }
        if !missed.is_empty() {
            self.misfire(s, missed, false, now, fx);
        }
        changed
    }

    /// Applies the misfire policy to nominal times that could not fire in time. `on_time_follows`:
    /// a time due with them is on time (then `run_latest` runs none of them). Returns how many
    /// runs it made.
    fn misfire(
        &mut self,
        s: &mut Schedule,
        missed: Vec<DateTime<Utc>>,
        on_time_follows: bool,
        now: Now,
        fx: &mut Effects,
    ) -> usize {
        let (run, count): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = match s.spec.misfire {
            Misfire::RunAll => (missed, Vec::new()),
            Misfire::Skip => (Vec::new(), missed),
            Misfire::RunLatest if on_time_follows => (Vec::new(), missed),
            Misfire::RunLatest => {
                let mut missed = missed;
                let last = missed.pop();
                (last.into_iter().collect(), missed)
            }
        };
        if let Some(first) = count.first() {
            s.counters.missed += count.len() as u64;
            fx.events.push(EventBody::ScheduleMissed {
                schedule_id: s.id.clone(),
                name: s.spec.name.clone(),
                scheduled_at: *first,
                count: count.len() as u64,
            });
        }
        let n = run.len();
        for t in run {
            self.run_or_hold(s, t, s.spec.overlap, now, fx);
        }
        n
    }

    /// One nominal time under an overlap policy: a run, a wait, or a skip.
    fn run_or_hold(
        &mut self,
        s: &mut Schedule,
        t: DateTime<Utc>,
        policy: Overlap,
        now: Now,
        fx: &mut Effects,
    ) -> RunOutcome {
        let active = self.active_runs(&s.id);
        let skip = |s: &mut Schedule, why: String, fx: &mut Effects| skip_run(s, t, why, fx);
        if s.pending.contains(&t) {
            return RunOutcome::Queued;
        }
        match policy {
            Overlap::Allow => {}
            Overlap::Skip if active > 0 => {
                return skip(
                    s,
                    format!("{active} earlier run(s) still running (overlap: skip)"),
                    fx,
                );
            }
            Overlap::Skip => {}
            Overlap::Queue if active > 0 || !s.pending.is_empty() => {
                if s.pending.len() >= s.spec.max_queued as usize {
                    let why = format!(
                        "{} runs already wait (overlap: queue, max_queued: {})",
                        s.pending.len(),
                        s.spec.max_queued
                    );
                    return skip(s, why, fx);
                }
                s.pending.push_back(t);
                return RunOutcome::Queued;
            }
            Overlap::Queue => {}
            Overlap::CancelPrevious if active > 0 => {
                self.cancel_runs(s, t, now, fx);
                for old in std::mem::take(&mut s.pending) {
                    let why = format!(
                        "replaced by the run for {} (overlap: cancel_previous)",
                        rfc3339(t)
                    );
                    skip_run(s, old, why, fx);
                }
                s.pending.push_back(t);
                return RunOutcome::Queued;
            }
            Overlap::CancelPrevious => {}
        }
        match self.create_run(s, t, now, fx) {
            Some(app) => RunOutcome::Created(app),
            None => RunOutcome::Skipped(format!("{} already has a run", rfc3339(t))),
        }
    }

    /// Kills the schedule's active runs for the run of `t`.
    fn cancel_runs(&mut self, s: &Schedule, t: DateTime<Utc>, now: Now, fx: &mut Effects) {
        let active: Vec<u64> = self
            .schedule_active
            .get(&s.id)
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        let reason = format!(
            "cancelled by the run of schedule {} for {} (overlap: cancel_previous)",
            s.id,
            rfc3339(t)
        );
        for seq in active {
            if let Some(app) = self.apps.get(&seq).map(|a| a.id.clone()) {
                let _ = self.kill(&app, Some(reason.clone()), now, fx);
            }
        }
    }

    /// Creates the run of nominal time `t` from the template as it is now; none if `t` has a
    /// run already.
    fn create_run(
        &mut self,
        s: &mut Schedule,
        t: DateTime<Utc>,
        now: Now,
        fx: &mut Effects,
    ) -> Option<Arc<App>> {
        if self.run_index.contains_key(&(s.id.clone(), t)) {
            return None;
        }
        let req = s.spec.app.request(s.run_name(t), &s.spec.namespace);
        let sid = s.id.clone();
        let app = self.create(req, now, fx, |app| {
            app.schedule_id = Some(sid.0.as_str().into());
            app.scheduled_at = Some(t);
        });
        s.remember(app.id.clone(), t);
        fx.events.push(EventBody::ScheduleFired {
            schedule_id: s.id.clone(),
            name: s.spec.name.clone(),
            scheduled_at: t,
            app_id: app.id.clone(),
        });
        Some(app)
    }

    /// A schedule as the API serves it.
    pub fn schedule_info(&self, e: &ScheduleEntry) -> crate::api::ScheduleInfo {
        let mut schedule = (*e.record).clone();
        for r in schedule.recent_runs.iter_mut() {
            r.state = match self.lookup(&r.app_id) {
                Lookup::Found(a) => Some(a.state),
                _ => None,
            };
        }
        crate::api::ScheduleInfo {
            state: schedule.state(),
            next_runs: e.next_runs(5),
            schedule,
        }
    }

    /// The schedule state (for reads).
    pub fn schedule_state(&self, id: &ScheduleId) -> Option<ScheduleState> {
        self.schedules.get(id).map(|e| e.record.state())
    }
}
