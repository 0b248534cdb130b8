//! When a schedule fires: the pure time generation beneath schedules (cron jobs).
//!
//! A [`Timetable`] is built once from a schedule's [`TimetableSpec`] and then answers "what is
//! the next nominal time after this one?" ([`Timetable::next_after`]) and "which nominal times
//! fall in this window?" ([`Timetable::between`]). It reads no clock and does no I/O: every
//! instant is passed in, so the schedule logic above it is tested with fixed instants.
//!
//! # Two kinds of rule
//! - **`every`**: the nominal times are `start_at + k * every` for `k = 0, 1, ...`. These are
//!   absolute durations: daylight saving time changes nothing.
//! - **`cron`**: an expression as [`croner`] parses it, 5 fields (minute first) or 6 (second
//!   first); the aliases `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@annually` and
//!   `@midnight`; and `L`, `W` and `#` in the day fields. Day of month and day of week combine
//!   with OR, as in Vixie cron. The expression is matched against the **wall clock** of
//!   `time_zone` (UTC when none is given).
//!
//! # Daylight saving time
//! A wall clock is not a time line, so each wall time that the expression matches is mapped to
//! an instant by these rules:
//! - A wall time that happens once is that instant.
//! - A wall time that **does not exist** (the clock springs forward over it) fires once, at the
//!   first instant after the gap: in Europe/Berlin, `30 2 * * *` fires on 2026-03-29 at 03:00
//!   CEST (01:00Z). Several wall times in one gap (an every-minute cron) give that one instant
//!   once, as does the first real wall time after the gap (03:00 itself), because nominal times
//!   are strictly increasing.
//! - A wall time that **happens twice** (the clock falls back) fires once, at its first
//!   (earlier) occurrence. During the repeated hour's second pass the wall times map to
//!   instants already past, so they are skipped: an every-minute cron in the second 02:xx hour
//!   of Berlin's fall-back next fires at 03:00.
//!
//! So an hourly cron fires once per wall-clock hour that exists: none is doubled, and only the
//! hour that does not exist is missing.
//!
//! # Bounds and jitter
//! Nominal times are always `>= start_at` (the schedule's creation time unless given) and
//! `< end_at` (when given). A non-zero `jitter` spreads the schedules that share an expression:
//! each schedule fires at `nominal + jitter_offset()`, an offset in `[0, jitter)` derived from a
//! hash of its id, so it is the same on every master and across restarts.
//!
//! # Cost
//! The expression is parsed once, in [`Timetable::new`]; a clone shares it. One
//! [`Timetable::next_after`] is one cron search on the wall clock plus one or two zone lookups,
//! with no allocation. A cron that never matches (`0 0 30 2 *`) yields `None` once croner gives
//! up; no loop here runs more than a few rounds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The longest accepted `jitter`.
pub const MAX_JITTER: Duration = Duration::from_secs(24 * 3600);

/// The shortest accepted `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// Rounds of the cron search in one call: one is the rule; a repeated hour's second pass
/// costs one more, and anything past a few means the zone data is stranger than any real zone.
const MAX_CRON_ROUNDS: usize = 8;

/// The longest daylight saving gap searched for its end (real ones are at most a day: Samoa
/// skipped 2011-12-30).
const MAX_GAP: TimeDelta = TimeDelta::hours(72);

/// What a schedule says about time, as the client sent it (already deserialized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimetableSpec {
    /// A cron expression (5 fields, or 6 with seconds first, or an `@` alias). Exactly one of
    /// `cron` and `every` is required.
    pub cron: Option<String>,
    /// A fixed period, at least 1s, counted from `start_at`.
    pub every: Option<Duration>,
    /// The IANA zone whose wall clock a cron expression is read on; `None` is UTC.
    pub time_zone: Option<String>,
    /// No nominal time is earlier; `None` is the schedule's creation time.
    pub start_at: Option<DateTime<Utc>>,
    /// Every nominal time is earlier; `None` is no end.
    pub end_at: Option<DateTime<Utc>>,
    /// The width of the per-schedule spread added to each nominal time; zero is none. At most
    /// 24h, and at most `every`.
    pub jitter: Duration,
}

/// A validated [`TimetableSpec`], ready to generate nominal times. Cheap to clone: the parsed
/// expression is shared.
#[derive(Debug, Clone)]
pub struct Timetable {
    rule: Rule,
    zone: Tz,
    start_at: DateTime<Utc>,
    end_at: Option<DateTime<Utc>>,
    jitter_offset: TimeDelta,
}

/// The generating rule.
#[derive(Debug, Clone)]
enum Rule {
    /// The period in nanoseconds (at least 1s, so never zero); `i128` keeps `k * every` exact
    /// across chrono's whole range.
    Every(i128),
    /// Matched on the zone's wall clock.
    Cron(Arc<Cron>),
}

impl Timetable {
    /// Validates `spec` and builds the timetable of the schedule `schedule_id` (whose id seeds
    /// the jitter offset), created at `created_at` (the default `start_at`).
    ///
    /// The error is one line, meant for an HTTP 400 body: neither or both of `cron` and
    /// `every`, a cron expression croner rejects, `every` under 1s, an unknown `time_zone`,
    /// `end_at` not after `start_at`, or a `jitter` over 24h or over `every`.
    pub fn new(
        spec: &TimetableSpec,
        schedule_id: &str,
        created_at: DateTime<Utc>,
    ) -> Result<Timetable, String> {
        let rule = match (&spec.cron, spec.every) {
            (Some(expr), None) => Rule::Cron(Arc::new(parse_cron(expr)?)),
            (None, Some(every)) => {
                if every < MIN_EVERY {
                    return Err(format!("every must be at least 1s (got {every:?})"));
                }
                // At most u64::MAX seconds in nanoseconds: about 2^94, well inside i128.
                Rule::Every(every.as_nanos() as i128)
            }
            _ => return Err("exactly one of cron and every is required".to_string()),
        };
        let zone = match &spec.time_zone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("unknown time_zone {name:?}"))?,
        };
        let start_at = spec.start_at.unwrap_or(created_at);
        if let Some(end_at) = spec.end_at {
            if end_at <= start_at {
                return Err(format!(
                    "end_at ({}) must be after start_at ({})",
                    end_at.to_rfc3339(),
                    start_at.to_rfc3339()
                ));
            }
        }
        if spec.jitter > MAX_JITTER {
            return Err(format!(
                "jitter must be at most 24h (got {:?})",
                spec.jitter
            ));
        }
        if let Some(every) = spec.every {
            if spec.jitter > every {
                return Err(format!(
                    "jitter ({:?}) must not be longer than every ({every:?})",
                    spec.jitter
                ));
            }
        }
        Ok(Timetable {
            rule,
            zone,
            start_at,
            end_at: spec.end_at,
            jitter_offset: jitter_offset(schedule_id, spec.jitter),
        })
    }

    /// No nominal time is earlier than this.
    pub fn start_at(&self) -> DateTime<Utc> {
        self.start_at
    }

    /// Every nominal time is earlier than this, if set.
    pub fn end_at(&self) -> Option<DateTime<Utc>> {
        self.end_at
    }

    /// The zone whose wall clock a cron expression is read on (UTC by default).
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first nominal time strictly after `after` (with `None`: the first nominal time at
    /// or after `start_at`). It is always `>= start_at` and `< end_at`; `None` when there is
    /// no such time (past `end_at`, or a cron expression that never matches again).
    pub fn next_after(&self, after: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let next = match after {
            Some(after) if after >= self.start_at => self.next_from(after, false),
            _ => self.next_from(self.start_at, true),
        }?;
        self.before_end(next).then_some(next)
    }

    /// The nominal times in `[from, to)`, clamped to `[start_at, end_at)`, ascending, at most
    /// `limit` of them.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let to = match self.end_at {
            Some(end_at) => to.min(end_at),
            None => to,
        };
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let mut next = self.next_from(from.max(self.start_at), true);
        while let Some(at) = next {
            if at >= to {
                break;
            }
            out.push(at);
            if out.len() == limit {
                break;
            }
            next = self.next_from(at, false);
        }
        out
    }

    /// This schedule's stable offset in `[0, jitter)`: FNV-1a 64 of its id modulo the jitter,
    /// so every master computes the same one. Zero when the jitter is zero.
    pub fn jitter_offset(&self) -> TimeDelta {
        self.jitter_offset
    }

    /// When the nominal time `nominal` fires: `nominal + jitter_offset()` (saturating at the
    /// end of chrono's range).
    pub fn fire_at(&self, nominal: DateTime<Utc>) -> DateTime<Utc> {
        nominal
            .checked_add_signed(self.jitter_offset)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn before_end(&self, at: DateTime<Utc>) -> bool {
        self.end_at.is_none_or(|end_at| at < end_at)
    }

    /// The first nominal time after `lo` (at or after it when `inclusive`), ignoring `end_at`.
    /// The caller keeps `lo >= start_at`.
    fn next_from(&self, lo: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Every(every) => self.next_every(*every, lo, inclusive),
            Rule::Cron(cron) => next_cron(cron, self.zone, lo, inclusive),
        }
    }

    fn next_every(&self, every: i128, lo: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        let elapsed = nanos(lo - self.start_at);
        // lo >= start_at, so elapsed >= 0 and plain division rounds down.
        let mut k = elapsed / every;
        if !(inclusive && k * every == elapsed) {
            k += 1;
        }
        let offset = k.checked_mul(every)?;
        let delta = TimeDelta::new(
            i64::try_from(offset / 1_000_000_000).ok()?,
            // In [0, 1e9): a u32.
            (offset % 1_000_000_000) as u32,
        )?;
        self.start_at.checked_add_signed(delta)
    }
}

/// Parses a cron expression: 5 fields, or 6 with seconds first (no year field), with
/// `@midnight` taken as croner's `@daily`.
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    let pattern = if trimmed.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        trimmed
    };
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| {
            // One line whatever croner says.
            let reason = e.to_string().replace(['\n', '\r'], " ");
            format!("invalid cron expression {expr:?}: {reason}")
        })
}

/// The first instant after `lo` (or at it, when `inclusive`) whose wall time in `zone` matches
/// `cron`, mapped through gaps and overlaps as the module doc says.
fn next_cron(cron: &Cron, zone: Tz, lo: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
    let accept = |at: DateTime<Utc>| if inclusive { at >= lo } else { at > lo };
    // Croner works in whole seconds; a fraction means no whole second equals `lo`.
    let wall = lo.with_timezone(&zone).naive_local();
    let mut from = wall.with_nanosecond(0)?;
    let mut from_inclusive = inclusive && wall.nanosecond() == 0;
    for _ in 0..MAX_CRON_ROUNDS {
        // Croner gives up (an error) on an expression that matches nothing within its limits.
        let matched = cron.find_next_occurrence(&from, from_inclusive).ok()?;
        let at = match zone.from_local_datetime(&matched) {
            LocalResult::Single(at) => at.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, later) => {
                let earlier = earlier.with_timezone(&Utc);
                if accept(earlier) {
                    return Some(earlier);
                }
                // `lo` is in the repeated range's second pass, so the whole range fired on its
                // first pass: go on from the first wall time after it.
                from = overlap_end(zone, matched, later.with_timezone(&Utc) - earlier)?;
                from_inclusive = true;
                continue;
            }
            LocalResult::None => gap_end(zone, matched)?,
        };
        if accept(at) {
            return Some(at);
        }
        // Not reached with real zone data (the wall clock only goes forward outside an overlap);
        // step on rather than loop.
        from = matched;
        from_inclusive = false;
    }
    None
}

/// The first wall time after `ambiguous` (which happens twice) that happens once. The repeated
/// range is `length` long, so its end is at most that far on.
fn overlap_end(zone: Tz, ambiguous: NaiveDateTime, length: TimeDelta) -> Option<NaiveDateTime> {
    let repeated = |secs: i64| {
        ambiguous
            .checked_add_signed(TimeDelta::seconds(secs))
            .is_some_and(|wall| {
                matches!(zone.from_local_datetime(&wall), LocalResult::Ambiguous(..))
            })
    };
    // Invariant: repeated(low), and high is the answer if nothing before it is.
    let (mut low, mut high) = (0, length.num_seconds().max(1));
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if repeated(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    ambiguous.checked_add_signed(TimeDelta::seconds(high))
}

/// The instant a gap ends: that of the first wall time after `missing` (which does not exist)
/// that exists.
fn gap_end(zone: Tz, missing: NaiveDateTime) -> Option<DateTime<Utc>> {
    let exists = |secs: i64| {
        missing
            .checked_add_signed(TimeDelta::seconds(secs))
            .and_then(|wall| zone.from_local_datetime(&wall).earliest())
    };
    // Widen until the end of the gap is inside, then bisect. Invariant: the wall time `low`
    // seconds on does not exist, the one `high` seconds on does.
    let mut high = 15 * 60;
    while exists(high).is_none() {
        high *= 2;
        if high > MAX_GAP.num_seconds() {
            return None;
        }
    }
    let mut low = 0;
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if exists(mid).is_some() {
            high = mid;
        } else {
            low = mid;
        }
    }
    exists(high).map(|at| at.with_timezone(&Utc))
}

/// A duration in nanoseconds, exact over chrono's whole range.
fn nanos(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
}

/// FNV-1a, 64 bits: a hash that never changes with the Rust version or the platform, unlike
/// std's `DefaultHasher`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The offset in `[0, jitter)` of `schedule_id`, in nanoseconds.
fn jitter_offset(schedule_id: &str, jitter: Duration) -> TimeDelta {
    // At most 24h (checked before): 8.64e13 ns fits in u64 and i64.
    let width = jitter.as_nanos() as u64;
    if width == 0 {
        return TimeDelta::zero();
    }
    TimeDelta::nanoseconds((fnv1a64(schedule_id.as_bytes()) % width) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Weekday};

    /// An instant from RFC 3339 text.
    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid RFC 3339")
            .with_timezone(&Utc)
    }

    fn cron(expr: &str) -> TimetableSpec {
        TimetableSpec {
            cron: Some(expr.to_string()),
            ..TimetableSpec::default()
        }
    }

    fn cron_in(expr: &str, zone: &str) -> TimetableSpec {
        TimetableSpec {
            time_zone: Some(zone.to_string()),
            ..cron(expr)
        }
    }

    fn every(d: Duration) -> TimetableSpec {
        TimetableSpec {
            every: Some(d),
            ..TimetableSpec::default()
        }
    }

    fn build(spec: &TimetableSpec) -> Timetable {
        Timetable::new(spec, "sched-1", t("2026-01-01T00:00:00Z")).expect("valid spec")
    }

    fn error(spec: &TimetableSpec) -> String {
        Timetable::new(spec, "sched-1", t("2026-01-01T00:00:00Z")).expect_err("invalid spec")
    }

    /// The nominal times in [from, to), by `next_after` one at a time.
    fn walk(tt: &Timetable, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let (from, to) = (t(from), t(to));
        let mut out = Vec::new();
        // `from` itself counts, as in `between`.
        let mut next = tt.next_after(Some(from - TimeDelta::nanoseconds(1)));
        while let Some(at) = next.filter(|at| *at < to) {
            out.push(at);
            next = tt.next_after(Some(at));
        }
        out
    }

    fn times(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| t(s)).collect()
    }

    #[test]
    fn every_is_anchored_at_start_at() {
        let tt = Timetable::new(
            &TimetableSpec {
                start_at: Some(t("2026-01-01T00:00:10Z")),
                ..every(Duration::from_secs(90))
            },
            "s",
            t("2025-12-31T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(tt.start_at(), t("2026-01-01T00:00:10Z"));
        assert_eq!(tt.next_after(None), Some(t("2026-01-01T00:00:10Z")));
        assert_eq!(
            tt.next_after(Some(t("2025-06-01T00:00:00Z"))),
            Some(t("2026-01-01T00:00:10Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T00:00:10Z"))),
            Some(t("2026-01-01T00:01:40Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T00:01:50Z"))),
            Some(t("2026-01-01T00:03:10Z"))
        );
        // A nanosecond before a nominal time gives that time; a nanosecond after, the next.
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T00:03:09.999999999Z"))),
            Some(t("2026-01-01T00:03:10Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T00:03:10.000000001Z"))),
            Some(t("2026-01-01T00:04:40Z"))
        );
        // Far on, still exact: a century (36,524 days) is a whole number of 90s periods.
        assert_eq!(
            tt.next_after(Some(t("2126-01-01T00:00:00Z"))),
            Some(t("2126-01-01T00:00:10Z"))
        );
    }

    #[test]
    fn every_ignores_daylight_saving() {
        let tt = Timetable::new(
            &TimetableSpec {
                time_zone: Some("Europe/Berlin".into()),
                ..every(Duration::from_secs(3600))
            },
            "s",
            t("2026-03-28T23:00:00Z"),
        )
        .unwrap();
        assert_eq!(
            tt.between(t("2026-03-28T23:00:00Z"), t("2026-03-29T03:00:00Z"), 10),
            times(&[
                "2026-03-28T23:00:00Z",
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
            ])
        );
    }

    #[test]
    fn five_field_cron() {
        let tt = build(&cron("*/15 9-17 * * MON-FRI"));
        // 2026-01-02 is a Friday.
        assert_eq!(
            tt.next_after(Some(t("2026-01-02T17:40:00Z"))),
            Some(t("2026-01-02T17:45:00Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-02T17:45:00Z"))),
            Some(t("2026-01-05T09:00:00Z"))
        );
    }

    #[test]
    fn six_field_cron_has_seconds_first() {
        let tt = build(&cron("*/1 * * * * *"));
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T12:00:00.5Z"))),
            Some(t("2026-01-01T12:00:01Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T12:00:01Z"))),
            Some(t("2026-01-01T12:00:02Z"))
        );
        let tt = build(&cron("30 0 12 * * *"));
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T12:00:00Z"))),
            Some(t("2026-01-01T12:00:30Z"))
        );
    }

    #[test]
    fn aliases() {
        let hourly = build(&cron("@hourly"));
        assert_eq!(
            hourly.next_after(Some(t("2026-01-01T10:00:00Z"))),
            Some(t("2026-01-01T11:00:00Z"))
        );
        for alias in ["@daily", "@midnight", "@MIDNIGHT"] {
            assert_eq!(
                build(&cron(alias)).next_after(Some(t("2026-01-01T10:00:00Z"))),
                Some(t("2026-01-02T00:00:00Z")),
                "{alias}"
            );
        }
        // 2026-01-04 is a Sunday.
        assert_eq!(
            build(&cron("@weekly")).next_after(Some(t("2026-01-01T10:00:00Z"))),
            Some(t("2026-01-04T00:00:00Z"))
        );
        assert_eq!(
            build(&cron("@monthly")).next_after(Some(t("2026-01-01T10:00:00Z"))),
            Some(t("2026-02-01T00:00:00Z"))
        );
        for alias in ["@yearly", "@annually"] {
            assert_eq!(
                build(&cron(alias)).next_after(Some(t("2026-01-01T10:00:00Z"))),
                Some(t("2027-01-01T00:00:00Z")),
                "{alias}"
            );
        }
    }

    #[test]
    fn last_day_of_month() {
        let tt = build(&cron("0 0 L * *"));
        assert_eq!(
            tt.next_after(Some(t("2026-02-10T00:00:00Z"))),
            Some(t("2026-02-28T00:00:00Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-02-28T00:00:00Z"))),
            Some(t("2026-03-31T00:00:00Z"))
        );
    }

    #[test]
    fn nearest_weekday() {
        // 2026-08-15 is a Saturday, so 15W is Friday the 14th.
        let saturday = t("2026-08-15T00:00:00Z");
        assert_eq!(saturday.weekday(), Weekday::Sat);
        let tt = build(&cron("0 0 15W * *"));
        assert_eq!(
            tt.next_after(Some(t("2026-08-01T00:00:00Z"))),
            Some(t("2026-08-14T00:00:00Z"))
        );
    }

    #[test]
    fn nth_weekday() {
        // The second Friday of January 2026 is the 9th.
        let tt = build(&cron("0 0 * * 5#2"));
        let next = tt.next_after(Some(t("2026-01-01T00:00:00Z")));
        assert_eq!(next, Some(t("2026-01-09T00:00:00Z")));
        assert_eq!(next.unwrap().weekday(), Weekday::Fri);
    }

    #[test]
    fn utc_is_the_default_zone() {
        let tt = build(&cron("0 9 * * *"));
        assert_eq!(tt.zone(), Tz::UTC);
        assert_eq!(
            tt.next_after(Some(t("2026-07-01T00:00:00Z"))),
            Some(t("2026-07-01T09:00:00Z"))
        );
        // The same expression in a zone is read on its wall clock (CEST in July).
        let berlin = build(&cron_in("0 9 * * *", "Europe/Berlin"));
        assert_eq!(berlin.zone(), chrono_tz::Europe::Berlin);
        assert_eq!(
            berlin.next_after(Some(t("2026-07-01T00:00:00Z"))),
            Some(t("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn next_after_none_honours_start_at() {
        // start_at defaults to created_at.
        let tt = Timetable::new(&cron("0 * * * *"), "s", t("2026-01-01T10:30:00Z")).unwrap();
        assert_eq!(tt.start_at(), t("2026-01-01T10:30:00Z"));
        assert_eq!(tt.next_after(None), Some(t("2026-01-01T11:00:00Z")));
        // An explicit start_at wins, and a nominal time on it counts.
        let tt = Timetable::new(
            &TimetableSpec {
                start_at: Some(t("2026-01-01T12:00:00Z")),
                ..cron("0 * * * *")
            },
            "s",
            t("2026-01-01T10:30:00Z"),
        )
        .unwrap();
        assert_eq!(tt.next_after(None), Some(t("2026-01-01T12:00:00Z")));
        // An `after` before start_at gives the first time at or after start_at.
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T10:45:00Z"))),
            Some(t("2026-01-01T12:00:00Z"))
        );
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T12:00:00Z"))),
            Some(t("2026-01-01T13:00:00Z"))
        );
        // A start_at between whole seconds: the first whole second after it.
        let tt = Timetable::new(&cron("* * * * * *"), "s", t("2026-01-01T10:30:00.25Z")).unwrap();
        assert_eq!(tt.next_after(None), Some(t("2026-01-01T10:30:01Z")));
    }

    #[test]
    fn end_at_is_exclusive() {
        let tt = build(&TimetableSpec {
            end_at: Some(t("2026-01-01T02:00:00Z")),
            ..every(Duration::from_secs(3600))
        });
        assert_eq!(tt.end_at(), Some(t("2026-01-01T02:00:00Z")));
        assert_eq!(
            tt.next_after(Some(t("2026-01-01T00:30:00Z"))),
            Some(t("2026-01-01T01:00:00Z"))
        );
        assert_eq!(tt.next_after(Some(t("2026-01-01T01:00:00Z"))), None);
        assert_eq!(tt.next_after(Some(t("2026-06-01T00:00:00Z"))), None);

        let tt = build(&TimetableSpec {
            end_at: Some(t("2026-01-01T02:00:00Z")),
            ..cron("0 * * * *")
        });
        assert_eq!(tt.next_after(Some(t("2026-01-01T01:00:00Z"))), None);
    }

    #[test]
    fn end_at_before_the_first_time() {
        let tt = build(&TimetableSpec {
            end_at: Some(t("2026-01-01T00:30:00Z")),
            start_at: Some(t("2026-01-01T00:00:01Z")),
            ..cron("0 * * * *")
        });
        assert_eq!(tt.next_after(None), None);
        assert!(tt
            .between(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"), 10)
            .is_empty());
    }

    #[test]
    fn between_limits_and_clamps() {
        let tt = build(&TimetableSpec {
            start_at: Some(t("2026-01-01T00:00:00Z")),
            end_at: Some(t("2026-01-01T00:10:00Z")),
            ..every(Duration::from_secs(60))
        });
        let all = tt.between(t("2025-12-31T23:00:00Z"), t("2026-01-01T01:00:00Z"), 100);
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], t("2026-01-01T00:00:00Z"));
        assert_eq!(all[9], t("2026-01-01T00:09:00Z"));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            tt.between(t("2025-12-31T23:00:00Z"), t("2026-01-01T01:00:00Z"), 3),
            times(&[
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:02:00Z"
            ])
        );
        // [from, to): from counts, to does not.
        assert_eq!(
            tt.between(t("2026-01-01T00:03:00Z"), t("2026-01-01T00:05:00Z"), 100),
            times(&["2026-01-01T00:03:00Z", "2026-01-01T00:04:00Z"])
        );
        assert_eq!(
            tt.between(t("2026-01-01T00:02:30Z"), t("2026-01-01T00:05:00Z"), 100),
            times(&["2026-01-01T00:03:00Z", "2026-01-01T00:04:00Z"])
        );
        assert!(tt
            .between(t("2026-01-01T00:05:00Z"), t("2026-01-01T00:05:00Z"), 100)
            .is_empty());
        assert!(tt
            .between(t("2026-01-01T00:06:00Z"), t("2026-01-01T00:05:00Z"), 100)
            .is_empty());
        assert!(tt
            .between(t("2025-12-31T23:00:00Z"), t("2026-01-01T01:00:00Z"), 0)
            .is_empty());

        let tt = build(&cron("0 0 * * *"));
        assert_eq!(
            tt.between(t("2026-03-01T00:00:00Z"), t("2026-03-04T00:00:00Z"), 100),
            times(&[
                "2026-03-01T00:00:00Z",
                "2026-03-02T00:00:00Z",
                "2026-03-03T00:00:00Z"
            ])
        );
    }

    #[test]
    fn berlin_daily_across_both_changes() {
        let tt = build(&cron_in("30 2 * * *", "Europe/Berlin"));
        // Spring: 02:30 does not exist on the 29th; it fires at 03:00 CEST.
        assert_eq!(
            walk(&tt, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            times(&[
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the end of the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ])
        );
        // Fall: 02:30 happens twice on the 25th; it fires on the first (CEST).
        assert_eq!(
            walk(&tt, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            times(&[
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first of two
                "2026-10-26T01:30:00Z", // 02:30 CET
            ])
        );
        // between() agrees with next_after().
        assert_eq!(
            tt.between(t("2026-10-24T00:00:00Z"), t("2026-10-27T00:00:00Z"), 10),
            walk(&tt, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z")
        );
    }

    #[test]
    fn new_york_daily_across_both_changes() {
        let tt = build(&cron_in("30 2 * * *", "America/New_York"));
        // Spring: 02:30 does not exist on the 8th; it fires at 03:00 EDT.
        assert_eq!(
            walk(&tt, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
            times(&[
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT, the end of the gap
                "2026-03-09T06:30:00Z", // 02:30 EDT
            ])
        );
        // Fall: New York repeats 01:xx, so 02:30 is plain EST on the 1st.
        assert_eq!(
            walk(&tt, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
            times(&[
                "2026-10-31T06:30:00Z", // 02:30 EDT
                "2026-11-01T07:30:00Z", // 02:30 EST
                "2026-11-02T07:30:00Z", // 02:30 EST
            ])
        );
        // The repeated hour: 01:30 fires once, on the first pass (EDT).
        let tt = build(&cron_in("30 1 * * *", "America/New_York"));
        assert_eq!(
            walk(&tt, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z"),
            times(&[
                "2026-10-31T05:30:00Z", // 01:30 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT, the first of two
                "2026-11-02T06:30:00Z", // 01:30 EST
            ])
        );
    }

    #[test]
    fn berlin_hourly_across_both_changes() {
        let tt = build(&cron_in("0 * * * *", "Europe/Berlin"));
        // Spring: wall hours 00, 01, 03, 04 (02 does not exist): every real hour once.
        assert_eq!(
            walk(&tt, "2026-03-28T22:00:00Z", "2026-03-29T04:00:00Z"),
            times(&[
                "2026-03-28T22:00:00Z", // 23:00 CET
                "2026-03-28T23:00:00Z", // 00:00 CET
                "2026-03-29T00:00:00Z", // 01:00 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST (02:00 maps here too, once)
                "2026-03-29T02:00:00Z", // 04:00 CEST
                "2026-03-29T03:00:00Z", // 05:00 CEST
            ])
        );
        // Fall: wall hours 00, 01, 02 (first pass only), 03: none doubled.
        assert_eq!(
            walk(&tt, "2026-10-24T21:00:00Z", "2026-10-25T04:00:00Z"),
            times(&[
                "2026-10-24T21:00:00Z", // 23:00 CEST
                "2026-10-24T22:00:00Z", // 00:00 CEST
                "2026-10-24T23:00:00Z", // 01:00 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST; 02:00 CET (01:00Z) is not repeated
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z", // 04:00 CET
            ])
        );
    }

    #[test]
    fn new_york_hourly_across_both_changes() {
        let tt = build(&cron_in("0 * * * *", "America/New_York"));
        // Spring: wall hours 00, 01, 03, 04 (02 does not exist).
        assert_eq!(
            walk(&tt, "2026-03-08T04:00:00Z", "2026-03-08T10:00:00Z"),
            times(&[
                "2026-03-08T04:00:00Z", // 23:00 EST
                "2026-03-08T05:00:00Z", // 00:00 EST
                "2026-03-08T06:00:00Z", // 01:00 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT (02:00 maps here too, once)
                "2026-03-08T08:00:00Z", // 04:00 EDT
                "2026-03-08T09:00:00Z", // 05:00 EDT
            ])
        );
        // Fall: wall hours 00, 01 (first pass only), 02, 03.
        assert_eq!(
            walk(&tt, "2026-11-01T03:00:00Z", "2026-11-01T09:00:00Z"),
            times(&[
                "2026-11-01T03:00:00Z", // 23:00 EDT
                "2026-11-01T04:00:00Z", // 00:00 EDT
                "2026-11-01T05:00:00Z", // 01:00 EDT; 01:00 EST (06:00Z) is not repeated
                "2026-11-01T07:00:00Z", // 02:00 EST
                "2026-11-01T08:00:00Z", // 03:00 EST
            ])
        );
    }

    #[test]
    fn every_minute_through_the_gap_and_the_repeated_hour() {
        let tt = build(&cron_in("* * * * *", "Europe/Berlin"));
        // Spring: 01:59 CET, then the whole missing 02:xx hour is the one instant 03:00 CEST.
        assert_eq!(
            walk(&tt, "2026-03-29T00:59:00Z", "2026-03-29T01:02:00Z"),
            times(&[
                "2026-03-29T00:59:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:01:00Z"
            ])
        );
        // Fall: the first pass of 02:xx fires minute by minute ...
        assert_eq!(
            tt.next_after(Some(t("2026-10-25T00:58:00Z"))),
            Some(t("2026-10-25T00:59:00Z"))
        );
        // ... then nothing until 03:00 CET, from anywhere in the second pass.
        for after in [
            "2026-10-25T00:59:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T01:59:59.5Z",
        ] {
            assert_eq!(
                tt.next_after(Some(t(after))),
                Some(t("2026-10-25T02:00:00Z")),
                "after {after}"
            );
        }
        // Every second too: the second pass is skipped whole, not second by second.
        let tt = build(&cron_in("* * * * * *", "Europe/Berlin"));
        assert_eq!(
            tt.next_after(Some(t("2026-10-25T01:00:00Z"))),
            Some(t("2026-10-25T02:00:00Z"))
        );
        // Nominal times stay strictly increasing through both changes.
        let tt = build(&cron_in("*/7 * * * *", "Europe/Berlin"));
        for (from, to) in [
            ("2026-03-28T20:00:00Z", "2026-03-29T06:00:00Z"),
            ("2026-10-24T20:00:00Z", "2026-10-25T06:00:00Z"),
        ] {
            let list = walk(&tt, from, to);
            assert!(list.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_cron_that_never_matches_gives_none() {
        let tt = build(&cron("0 0 30 2 *"));
        assert_eq!(tt.next_after(None), None);
        assert!(tt
            .between(t("2026-01-01T00:00:00Z"), t("2027-01-01T00:00:00Z"), 10)
            .is_empty());
    }

    #[test]
    fn jitter_offset_is_stable_bounded_and_per_schedule() {
        let jitter = Duration::from_secs(600);
        let spec = TimetableSpec {
            jitter,
            ..every(Duration::from_secs(3600))
        };
        let a = Timetable::new(&spec, "sched-a", t("2026-01-01T00:00:00Z")).unwrap();
        // Same id, another master building it at another time: the same offset.
        let a_again = Timetable::new(&spec, "sched-a", t("2026-05-01T00:00:00Z")).unwrap();
        let b = Timetable::new(&spec, "sched-b", t("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(a.jitter_offset(), a_again.jitter_offset());
        assert_ne!(a.jitter_offset(), b.jitter_offset());
        let width = TimeDelta::from_std(jitter).unwrap();
        for id in 0..1000 {
            let tt =
                Timetable::new(&spec, &format!("sched-{id}"), t("2026-01-01T00:00:00Z")).unwrap();
            assert!(tt.jitter_offset() >= TimeDelta::zero());
            assert!(tt.jitter_offset() < width);
        }
        // Pinned: the hash must not change between releases, or schedules would move.
        assert_eq!(
            a.jitter_offset(),
            TimeDelta::nanoseconds((fnv1a64(b"sched-a") % 600_000_000_000) as i64)
        );
        let nominal = t("2026-01-01T01:00:00Z");
        assert_eq!(a.fire_at(nominal), nominal + a.jitter_offset());

        let none = build(&every(Duration::from_secs(3600)));
        assert_eq!(none.jitter_offset(), TimeDelta::zero());
        assert_eq!(none.fire_at(nominal), nominal);
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn validation_errors() {
        assert_eq!(
            error(&TimetableSpec::default()),
            "exactly one of cron and every is required"
        );
        assert_eq!(
            error(&TimetableSpec {
                every: Some(Duration::from_secs(60)),
                ..cron("* * * * *")
            }),
            "exactly one of cron and every is required"
        );
        let bad = error(&cron("61 * * * *"));
        assert!(
            bad.starts_with("invalid cron expression \"61 * * * *\": "),
            "{bad}"
        );
        let bad = error(&cron("* * * *"));
        assert!(
            bad.starts_with("invalid cron expression \"* * * *\": Invalid pattern"),
            "{bad}"
        );
        // A year field is not part of the contract.
        let bad = error(&cron("0 0 0 1 1 * 2030"));
        assert!(bad.starts_with("invalid cron expression "), "{bad}");
        let bad = error(&cron("@reboot"));
        assert!(
            bad.starts_with("invalid cron expression \"@reboot\": "),
            "{bad}"
        );
        // A message stays one line, whatever the client sent.
        let bad = error(&cron("* * *\n* *x"));
        assert!(!bad.contains('\n'), "{bad}");
        assert_eq!(
            error(&every(Duration::from_millis(500))),
            "every must be at least 1s (got 500ms)"
        );
        assert_eq!(
            error(&cron_in("0 * * * *", "Mars/Olympus_Mons")),
            "unknown time_zone \"Mars/Olympus_Mons\""
        );
        assert_eq!(
            error(&TimetableSpec {
                start_at: Some(t("2026-01-02T00:00:00Z")),
                end_at: Some(t("2026-01-02T00:00:00Z")),
                ..cron("0 * * * *")
            }),
            "end_at (2026-01-02T00:00:00+00:00) must be after start_at (2026-01-02T00:00:00+00:00)"
        );
        // end_at is checked against the default start_at, created_at.
        assert_eq!(
            error(&TimetableSpec {
                end_at: Some(t("2025-12-31T00:00:00Z")),
                ..cron("0 * * * *")
            }),
            "end_at (2025-12-31T00:00:00+00:00) must be after start_at (2026-01-01T00:00:00+00:00)"
        );
        assert_eq!(
            error(&TimetableSpec {
                jitter: Duration::from_secs(24 * 3600 + 1),
                ..cron("0 0 * * *")
            }),
            "jitter must be at most 24h (got 86401s)"
        );
        assert_eq!(
            error(&TimetableSpec {
                jitter: Duration::from_secs(61),
                ..every(Duration::from_secs(60))
            }),
            "jitter (61s) must not be longer than every (60s)"
        );
        // The edges are allowed.
        build(&TimetableSpec {
            jitter: MAX_JITTER,
            ..cron("0 0 * * *")
        });
        build(&TimetableSpec {
            jitter: Duration::from_secs(60),
            ..every(Duration::from_secs(60))
        });
        build(&every(MIN_EVERY));
    }

    #[test]
    fn clones_share_the_parsed_expression() {
        let tt = build(&cron("0 * * * *"));
        let copy = tt.clone();
        match (&tt.rule, &copy.rule) {
            (Rule::Cron(a), Rule::Cron(b)) => assert!(Arc::ptr_eq(a, b)),
            _ => panic!("a cron rule"),
        }
        assert!(format!("{tt:?}").contains("Timetable"));
    }
}
