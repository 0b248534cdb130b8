//! The command line: flags, subcommands and the parsers for their values. Parsing only; nothing
//! here talks to a master.

use std::path::PathBuf;
use std::time::Duration;

use aloha_core::app::{Restart, MAX_RETRIES_LIMIT};
use aloha_core::schedules::{Misfire, Overlap};
use aloha_core::{AppState, SubmitRequest};
use chrono::{DateTime, Utc};
use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

/// Where a master listens when nothing else is said.
pub const DEFAULT_MASTER: &str = "http://127.0.0.1:8080";

/// Help heading of the flags every subcommand takes.
const GLOBAL: &str = "Global options";

/// Control an Aloha-rs cluster through its masters' REST API.
#[derive(Debug, Parser)]
#[command(name = "alohactl", version, propagate_version = true)]
pub struct Cli {
    /// A master's HTTP address. Repeat it (or give a comma-separated list) to name every master of
    /// an HA cluster: they are tried in order and the leader is followed automatically.
    #[arg(
        long = "master",
        short = 'm',
        value_name = "URL",
        env = "ALOHA_MASTER",
        value_delimiter = ',',
        default_value = DEFAULT_MASTER,
        value_parser = parse_master,
        global = true,
        help_heading = GLOBAL
    )]
    pub masters: Vec<String>,

    /// How to print results.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true, help_heading = GLOBAL)]
    pub output: Output,

    /// Give up on a master that has not answered a request within this time (e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, global = true, help_heading = GLOBAL)]
    pub timeout: Duration,

    /// The API token to send (`Authorization: Bearer`), for masters with `--auth required`.
    #[arg(long, value_name = "TOKEN", env = "ALOHA_TOKEN", hide_env_values = true, global = true, help_heading = GLOBAL)]
    pub token: Option<String>,

    /// A PEM CA certificate to trust for https:// masters (besides the system's roots).
    #[arg(long, value_name = "PATH", env = "ALOHA_CA_CERT", global = true, help_heading = GLOBAL)]
    pub ca_cert: Option<std::path::PathBuf>,

    /// A file holding the API token (its first line), when --token is not given.
    #[arg(long, value_name = "PATH", env = "ALOHA_TOKEN_FILE", global = true, help_heading = GLOBAL)]
    pub token_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit an app (a command after `--` becomes a process spec).
    ///
    /// Each submission carries an idempotency key (a fresh random one, or --idempotency-key), so
    /// when a master times out or loses the connection the same submission is sent to the other
    /// masters without risk of a second app.
    Submit(SubmitArgs),
    /// Submit many apps from a file, in `POST /api/v1/apps/batch` requests of up to --chunk apps.
    ///
    /// FILE (`-`: stdin) holds the submissions, each the JSON body of `POST /api/v1/apps`, as
    /// `{"apps": [...]}`, as a JSON array, or as JSON lines (one object a line). They are sent
    /// as they are; the master fills in defaults and accepts or refuses each app on its own.
    ///
    /// Prints one row per app: its index in FILE (from 0), the status (201 created, 200 created
    /// before with the same key, otherwise why the master refused it: 400, 403, 404, 409, 422,
    /// 429), its id and name, and the error; `-o json` prints `{"results": [...]}`, the master's
    /// results of every chunk in file order.
    ///
    /// Exit status: 0 when every app was accepted; 1 when some were refused (`N of M apps were
    /// refused`) or a chunk failed as a whole (e.g. 422 for a body of the wrong shape, 503 once
    /// every master was tried), which stops there after printing the results so far; 2 when
    /// FILE is not readable, not JSON or holds no app, or a chunk would exceed the master's
    /// 1 MiB request limit (nothing is sent then).
    ///
    /// Chunk j (from 0) carries the idempotency key `KEY.j`, and the master keys app i of it
    /// `KEY.j#i`; KEY is --idempotency-key or a fresh random one, named in the error when a
    /// chunk fails. A chunk is resent with its key to the other masters after a 503, a timeout
    /// or a lost connection, and running the command again with the same KEY, FILE and --chunk
    /// answers 200 for the apps already created and creates only the missing ones.
    SubmitBatch(SubmitBatchArgs),
    /// Show one app in detail, with its history.
    Status {
        /// The app id.
        #[arg(value_parser = parse_app_id)]
        id: String,
    },
    /// List apps, newest first, one page at a time.
    ///
    /// The master serves at most `--limit` apps a request (its default 100, at most 1000). When
    /// there are more, the table is followed by a line on stderr, `more: alohactl list ... --after
    /// <id>`, naming the command for the next page (stderr, so a piped table stays only rows); in
    /// JSON the page's `next` says the same. `--all` fetches every page.
    List(ListArgs),
    /// Ask the cluster to stop an app.
    Kill {
        /// The app id.
        #[arg(value_parser = parse_app_id)]
        id: String,
    },
    /// Submit an ended app again: a new app (new id) from its template, with `retry_of` naming
    /// the app it retries.
    Retry {
        /// The id of the ended app.
        #[arg(value_parser = parse_app_id)]
        id: String,
    },
    /// Print an app's output (the last 64 KiB of stdout of its latest attempt); `-f` follows it
    /// until the attempt ends.
    Logs(LogsArgs),
    /// List workers with their resources; `workers drain|undrain <id>` for maintenance.
    Workers {
        /// Drain or undrain a worker (none: list them).
        #[command(subcommand)]
        action: Option<WorkersCommand>,
    },
    /// Show the answering master's view of the cluster: role, leader, epoch, members;
    /// `cluster accept-restore` after restoring etcd from a backup.
    Cluster {
        /// Accept a restored store (none: show the cluster).
        #[command(subcommand)]
        action: Option<ClusterCommand>,
    },
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// List namespaces with their quotas, weights and usage; set or delete one (admin).
    #[command(subcommand)]
    Namespace(NamespaceCommand),
    /// Print events (app state changes, relaunches, workers, leadership); `--follow` streams
    /// them and resumes after a disconnect or failover without missing one.
    Events(EventsArgs),
    /// Create, list, inspect, change, pause, trigger and backfill schedules: apps created on a
    /// cron expression or a fixed period.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

/// `alohactl logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The app.
    #[arg(value_parser = parse_app_id)]
    pub id: String,
    /// Follow the output until the attempt ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print stderr instead of stdout.
    #[arg(long)]
    pub stderr: bool,
    /// The attempt (default: the latest).
    #[arg(long)]
    pub attempt: Option<u32>,
}

/// `alohactl token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its text is printed once and cannot be shown again.
    Create {
        /// What it is for.
        #[arg(long)]
        name: String,
        /// reader, submitter or admin.
        #[arg(long, value_parser = ["reader", "submitter", "admin"])]
        role: String,
        /// For a submitter: a namespace it may write in; repeat for more (none: every
        /// namespace).
        #[arg(long = "namespace", short = 'n', value_name = "NAME")]
        namespaces: Vec<String>,
    },
    /// List tokens (ids, names, roles; never the secrets).
    List,
    /// Revoke a token: it admits nobody from now on.
    Revoke {
        /// The token's id (tok-...).
        id: String,
    },
}

/// `alohactl namespace ...`.
#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Every namespace with its quota, weight and what it uses.
    List,
    /// One namespace.
    Show {
        /// The namespace.
        name: String,
    },
    /// Create a namespace or replace its quota and weight (limits not given are removed).
    Set(NamespaceSetArgs),
    /// Delete a namespace without queued or running apps or schedules.
    Delete {
        /// The namespace.
        name: String,
    },
}

/// `alohactl namespace set`.
#[derive(Debug, Args)]
pub struct NamespaceSetArgs {
    /// The namespace: a-z, 0-9 and '-', at most 63 characters.
    pub name: String,
    /// Its share under fair placement (1 to 1000000).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub weight: u32,
    /// Most cores its apps hold at once; more apps wait.
    #[arg(long)]
    pub max_cores: Option<u64>,
    /// Most memory (MiB) its apps hold at once; more apps wait.
    #[arg(long, value_name = "MIB")]
    pub max_memory_mb: Option<u64>,
    /// Most apps on workers at once; more apps wait.
    #[arg(long)]
    pub max_running_apps: Option<u64>,
    /// Most apps waiting; submissions beyond it are refused.
    #[arg(long)]
    pub max_queued_apps: Option<u64>,
    /// Most schedules; creating more is refused.
    #[arg(long)]
    pub max_schedules: Option<u64>,
}

/// `alohactl cluster accept-restore`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The masters refuse to lead when their etcd went back in time (restored from a backup):
    /// confirm that the restore is intended. The epoch generation rises above every epoch seen
    /// and the masters campaign again.
    AcceptRestore,
}

/// `alohactl workers drain|undrain`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// No new placements on the worker; its apps go on until they end or the deadline passes,
    /// then they are stopped and relaunched elsewhere within their retries. The worker shows
    /// DRAINING, then DRAINED when empty.
    Drain {
        /// The worker's id.
        id: String,
        /// How long its apps may go on (e.g. `10m`); the master's default is 1h.
        #[arg(long)]
        deadline: Option<String>,
    },
    /// End a drain: the worker takes apps again.
    Undrain {
        /// The worker's id.
        id: String,
    },
}

/// `alohactl schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule (a command after `--` becomes the runs' process spec).
    ///
    /// Not resent to another master once it may have reached one: after an uncertain failure,
    /// check `alohactl schedule list` before creating it again.
    Create(ScheduleCreateArgs),
    /// List schedules, newest first, one page at a time (`--all` for every page).
    List(ScheduleListArgs),
    /// Show one schedule: its rule, policies, template, counters, recent runs and next runs
    /// (in its time zone and in UTC).
    Show {
        /// The schedule id.
        #[arg(value_parser = parse_schedule_id)]
        id: String,
    },
    /// Change a schedule: only the given fields change. Template flags (the command, --cores,
    /// --label, ...) are merged into the current template, which then replaces it.
    Update(ScheduleUpdateArgs),
    /// Pause a schedule: nominal times pass without runs until it is resumed.
    Pause {
        /// The schedule id.
        #[arg(value_parser = parse_schedule_id)]
        id: String,
    },
    /// Resume a paused schedule.
    Resume {
        /// The schedule id.
        #[arg(value_parser = parse_schedule_id)]
        id: String,
    },
    /// Create a run now, under the schedule's overlap policy (exit 1 if the policy skips it).
    Trigger {
        /// The schedule id.
        #[arg(value_parser = parse_schedule_id)]
        id: String,
        /// Run even if earlier runs have not ended, whatever the overlap policy.
        #[arg(long)]
        allow_overlap: bool,
    },
    /// Create the runs of the nominal times in [--start, --end), each under the overlap policy.
    Backfill(BackfillArgs),
    /// Delete a schedule; its runs are left alone.
    Delete {
        /// The schedule id.
        #[arg(value_parser = parse_schedule_id)]
        id: String,
    },
}

/// `--overlap`: what a run does while an earlier one has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlapPolicy {
    /// The run is not created.
    #[value(name = "skip")]
    Skip,
    /// The run waits for the earlier ones (at most --max-queued wait).
    #[value(name = "queue")]
    Queue,
    /// The earlier runs are killed.
    #[value(name = "cancel_previous")]
    CancelPrevious,
    /// Runs overlap.
    #[value(name = "allow")]
    Allow,
}

impl From<OverlapPolicy> for Overlap {
    fn from(p: OverlapPolicy) -> Overlap {
        match p {
            OverlapPolicy::Skip => Overlap::Skip,
            OverlapPolicy::Queue => Overlap::Queue,
            OverlapPolicy::CancelPrevious => Overlap::CancelPrevious,
            OverlapPolicy::Allow => Overlap::Allow,
        }
    }
}

/// `--misfire`: what happens to nominal times that could not fire in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MisfirePolicy {
    /// Every missed time fires, oldest first.
    #[value(name = "run_all")]
    RunAll,
    /// Only the latest missed time fires.
    #[value(name = "run_latest")]
    RunLatest,
    /// No missed time fires.
    #[value(name = "skip")]
    Skip,
}

impl From<MisfirePolicy> for Misfire {
    fn from(p: MisfirePolicy) -> Misfire {
        match p {
            MisfirePolicy::RunAll => Misfire::RunAll,
            MisfirePolicy::RunLatest => Misfire::RunLatest,
            MisfirePolicy::Skip => Misfire::Skip,
        }
    }
}

/// When and how a schedule fires: the flags `schedule create` and `schedule update` share.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// A cron expression: 5 fields (minute first), 6 with seconds first, or an @alias.
    #[arg(long, value_name = "EXPR", conflicts_with = "every")]
    pub cron: Option<String>,

    /// A fixed period from --start-at instead of a cron expression (at least 1s; e.g. 30s, 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub every: Option<Duration>,

    /// The IANA time zone whose wall clock --cron is read on (e.g. Europe/Berlin) [master's
    /// default: UTC].
    #[arg(long, value_name = "ZONE", value_parser = NonEmptyStringValueParser::new())]
    pub time_zone: Option<String>,

    /// The first possible nominal time (RFC 3339); in the past, the missed times are run
    /// [master's default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub start_at: Option<DateTime<Utc>>,

    /// No nominal time at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub end_at: Option<DateTime<Utc>>,

    /// What a run does while an earlier one has not ended [master's default: skip].
    #[arg(long, value_enum)]
    pub overlap: Option<OverlapPolicy>,

    /// Most runs waiting under --overlap queue [master's default: 100].
    #[arg(long, value_name = "N")]
    pub max_queued: Option<u32>,

    /// What happens to nominal times that could not fire within --misfire-grace [master's
    /// default: run_latest].
    #[arg(long, value_enum)]
    pub misfire: Option<MisfirePolicy>,

    /// How late a nominal time may fire and still be on time [master's default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub misfire_grace: Option<Duration>,

    /// The largest offset added to every nominal time, fixed per schedule [master's default:
    /// none].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub jitter: Option<Duration>,

    /// Create the schedule paused (`update`: pause it).
    #[arg(long)]
    pub paused: bool,
}

/// The app every run is made from: the flags `schedule create` and `schedule update` share.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// The plugin kind that runs the runs [create's default: process].
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub kind: Option<String>,

    /// The plugin spec, a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["spec_file", "command"])]
    pub spec: Option<String>,

    /// Read the plugin spec (a JSON object) from a file; `-` reads stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "command")]
    pub spec_file: Option<PathBuf>,

    /// Cores a run needs on one worker [master's default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cores: Option<u32>,

    /// Memory a run needs on one worker, in MiB [master's default: 256].
    #[arg(long = "memory-mb", value_name = "MIB")]
    pub memory_mb: Option<u64>,

    /// Relaunches allowed per run [master's default: 0].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES_LIMIT)))]
    pub max_retries: Option<u32>,

    /// Kill an attempt that runs longer than this; it ends FAILED.
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub max_runtime: Option<Duration>,

    /// What happens when an attempt ends by itself [master's default: never].
    #[arg(long, value_enum)]
    pub restart: Option<RestartPolicy>,

    /// The pause before the first relaunch by --restart [master's default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub retry_backoff: Option<Duration>,

    /// The longest pause between relaunches by --restart [master's default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub max_backoff: Option<Duration>,

    /// A label of every run; repeat for more. Given, they replace the template's labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// The command every run executes (kind `process` only): becomes the spec
    /// `{"command": [...]}`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl TemplateArgs {
    /// Whether any template flag was given (`update` then replaces the template).
    pub fn any(&self) -> bool {
        self.kind.is_some()
            || self.spec.is_some()
            || self.spec_file.is_some()
            || self.cores.is_some()
            || self.memory_mb.is_some()
            || self.max_retries.is_some()
            || self.max_runtime.is_some()
            || self.restart.is_some()
            || self.retry_backoff.is_some()
            || self.max_backoff.is_some()
            || !self.labels.is_empty()
            || !self.command.is_empty()
    }
}

#[derive(Debug, Args)]
pub struct ScheduleCreateArgs {
    /// The schedule's name; runs are named `<name>@<nominal time>`.
    #[arg(long, value_parser = NonEmptyStringValueParser::new(), required_unless_present = "file")]
    pub name: Option<String>,

    /// Read the whole schedule (the JSON body of POST /api/v1/schedules) from a file; `-` reads
    /// stdin. Flags given beside it override its fields.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// The namespace of the schedule and its runs; it must exist [master's default: default].
    #[arg(long, short = 'n', value_parser = NonEmptyStringValueParser::new())]
    pub namespace: Option<String>,

    #[command(flatten)]
    pub rule: RuleArgs,

    #[command(flatten)]
    pub template: TemplateArgs,
}

#[derive(Debug, Args)]
pub struct ScheduleUpdateArgs {
    /// The schedule id.
    #[arg(value_parser = parse_schedule_id)]
    pub id: String,

    /// A new name.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub name: Option<String>,

    /// Remove the end time: the schedule fires for ever.
    #[arg(long, conflicts_with = "end_at")]
    pub clear_end_at: bool,

    #[command(flatten)]
    pub rule: RuleArgs,

    #[command(flatten)]
    pub template: TemplateArgs,
}

#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    /// At most this many schedules a page [master's default: 100; it serves at most 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,

    /// Start after this schedule (exclusive): the `next` of the previous page.
    #[arg(long, value_name = "ID", value_parser = parse_schedule_id)]
    pub after: Option<String>,

    /// Fetch every page; JSON output is then one object, `{"schedules": [...], "next": null}`.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The schedule id.
    #[arg(value_parser = parse_schedule_id)]
    pub id: String,

    /// The first nominal time considered (RFC 3339, inclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub start: DateTime<Utc>,

    /// The end of the range (RFC 3339, exclusive).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub end: DateTime<Utc>,

    /// Only list the nominal times; nothing is created.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep streaming new events (reconnecting, to another master if need be).
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Start after this sequence number [default: all retained events, or with --follow only
    /// new ones].
    #[arg(long)]
    pub after: Option<u64>,

    /// Only events of this app.
    #[arg(long = "app", value_parser = parse_app_id)]
    pub app_id: Option<String>,

    /// Only events of apps of this kind.
    #[arg(long)]
    pub kind: Option<String>,

    /// Only these event types (app_state_changed, app_relaunched, app.expired, worker_joined,
    /// worker_lost, leader_changed); repeat or comma-separate.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A human-readable name for the app.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub name: String,

    /// The plugin kind that runs the app.
    #[arg(long, default_value = "process", value_parser = NonEmptyStringValueParser::new())]
    pub kind: String,

    /// The namespace the app belongs to; it must exist [master's default: default].
    #[arg(long, short = 'n', value_parser = NonEmptyStringValueParser::new())]
    pub namespace: Option<String>,

    /// The plugin spec, a JSON object.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["spec_file", "command"])]
    pub spec: Option<String>,

    /// Read the plugin spec (a JSON object) from a file; `-` reads stdin.
    #[arg(long, value_name = "PATH", conflicts_with = "command")]
    pub spec_file: Option<PathBuf>,

    /// Cores the app needs on one worker [master's default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cores: Option<u32>,

    /// Memory the app needs on one worker, in MiB [master's default: 256].
    #[arg(long = "memory-mb", value_name = "MIB")]
    pub memory_mb: Option<u64>,

    /// Relaunches allowed when the app's worker is lost, or by --restart [master's default: 0].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_RETRIES_LIMIT)))]
    pub max_retries: Option<u32>,

    /// Kill an attempt that runs longer than this (e.g. 30s, 10m, "1h 30m"); it ends FAILED.
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub max_runtime: Option<Duration>,

    /// What happens when an attempt ends by itself; relaunches spend --max-retries [master's
    /// default: never].
    #[arg(long, value_enum)]
    pub restart: Option<RestartPolicy>,

    /// The pause before the first relaunch by --restart; it doubles with each relaunch
    /// [master's default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub retry_backoff: Option<Duration>,

    /// The longest pause between relaunches by --restart [master's default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_api_duration)]
    pub max_backoff: Option<Duration>,

    /// Keep the app only in the master's memory: never stored, lost with a master restart or
    /// failover, forgotten a minute after it ends.
    #[arg(long)]
    pub on_demand: bool,

    /// Only check the submission and show where the app would be placed; nothing is created.
    #[arg(long, conflicts_with_all = ["wait", "idempotency_key"])]
    pub dry_run: bool,

    /// A label; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Follow the app until it ends; exit 0 only if it FINISHED. In JSON mode only the final app
    /// is printed.
    #[arg(long)]
    pub wait: bool,

    /// Send this idempotency key (visible ASCII, at most 255 characters) instead of a fresh
    /// random one, so that rerunning this command cannot create a second app.
    ///
    /// The master creates at most one app per key: repeating the same submission with the same
    /// key (even after a master restart or failover) returns the app the first one created; the
    /// same key with a different submission is refused (HTTP 409). A script that may rerun
    /// `submit` after an uncertain failure should pass its own key.
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub idempotency_key: Option<String>,

    /// How often `--wait` asks for the app's state.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// The command to run (kind `process` only): becomes the spec `{"command": [...]}`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Most apps in one `POST /api/v1/apps/batch` (the master's limit).
pub const MAX_BATCH_APPS: u32 = 1000;

/// `alohactl submit-batch`.
#[derive(Debug, Args)]
pub struct SubmitBatchArgs {
    /// The submissions: `{"apps": [...]}`, a JSON array or JSON lines; `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Apps per request (1 to 1000). Keep it when running the command again with the same
    /// --idempotency-key: the keys follow the chunks.
    #[arg(long, value_name = "N", default_value_t = MAX_BATCH_APPS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_APPS)))]
    pub chunk: u32,

    /// The base of the chunks' idempotency keys (chunk j sends `KEY.j`) instead of a fresh
    /// random one, so that running this command again cannot create an app twice.
    #[arg(long, value_name = "KEY", value_parser = parse_idempotency_key)]
    pub idempotency_key: Option<String>,
}

/// `--restart`: the API's names for the restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartPolicy {
    /// The app ends with its attempt.
    #[value(name = "never")]
    Never,
    /// A FAILED attempt (non-zero exit, signal, max runtime) is relaunched.
    #[value(name = "on_failure")]
    OnFailure,
    /// Every attempt that ends is relaunched: a persistent task.
    #[value(name = "always")]
    Always,
}

impl From<RestartPolicy> for Restart {
    fn from(p: RestartPolicy) -> Restart {
        match p {
            RestartPolicy::Never => Restart::Never,
            RestartPolicy::OnFailure => Restart::OnFailure,
            RestartPolicy::Always => Restart::Always,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only apps in this state (SUBMITTED, LAUNCHING, RUNNING, FINISHED, FAILED, KILLED,
    /// RELAUNCHING, UNKNOWN, ERROR; any case).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<AppState>,

    /// Only apps in this namespace. A page then looks at 20,000 apps at most, so it may hold
    /// fewer than --limit (even none) and still be followed by more; --all follows them all.
    #[arg(long, short = 'n', value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub namespace: Option<String>,

    /// At most this many apps a page (with --all, a request) [master's default: 100; it serves
    /// at most 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,

    /// Start after this app (exclusive): the `next` of the previous page.
    #[arg(long, value_name = "ID", value_parser = parse_app_id)]
    pub after: Option<String>,

    /// Fetch every page, following `next` until the last; JSON output is then one object,
    /// `{"apps": [...], "next": null}`.
    #[arg(long)]
    pub all: bool,
}

/// Normalizes a master address: `host:port` gets `http://`, a trailing `/` goes. Only plain HTTP
/// is accepted because the client is built without TLS; a path prefix (a reverse proxy) is kept.
pub fn parse_master(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("a master address must not be empty".into());
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid master address {s:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "unsupported scheme in {s:?}: use http:// or https://"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("master address {s:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "master address {s:?} must not carry credentials, a query or a fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// An app id: non-empty, and not a relative path segment that URL resolution would eat.
pub fn parse_app_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s {
        "" => Err("an app id must not be empty".into()),
        "." | ".." => Err(format!("{s:?} is not an app id")),
        _ => Ok(s.to_string()),
    }
}

/// A schedule id: non-empty, and not a relative path segment.
pub fn parse_schedule_id(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s {
        "" => Err("a schedule id must not be empty".into()),
        "." | ".." => Err(format!("{s:?} is not a schedule id")),
        _ => Ok(s.to_string()),
    }
}

/// An instant in RFC 3339 (`2026-12-03T10:00:00Z`, `2026-12-03T11:00:00+01:00`), kept in UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("invalid time {s:?}: expected RFC 3339, e.g. 2026-12-03T10:00:00Z"))
}

/// The longest `--idempotency-key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// An idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII characters, so that it
/// travels unchanged in an HTTP header.
pub fn parse_idempotency_key(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("an idempotency key must not be empty".into());
    }
    if s.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "an idempotency key must be at most {MAX_IDEMPOTENCY_KEY_LEN} characters (got {})",
            s.len()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "idempotency key {s:?} must be visible ASCII characters only (no spaces)"
        ));
    }
    Ok(s.to_string())
}

/// Parses `KEY=VALUE`; the value may be empty and may contain `=`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        Some(_) => Err(format!("label {s:?} has an empty key")),
        None => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}

/// Parses an app state name in any case.
pub fn parse_state(s: &str) -> Result<AppState, String> {
    s.parse::<AppState>().map_err(|e| e.to_string())
}

/// Parses a positive duration written as a number and a unit: `500ms`, `2s`, `1.5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m or h), e.g. 500ms"))?;
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 2s, 1m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("duration {s:?} must be positive")),
    }
}

/// Parses a duration of a submission (`30s`, `1m 30s`, `500ms`, `2h`) with the deserializer the
/// master itself applies to `max_runtime` (humantime), so alohactl accepts exactly what the
/// master does. Limits (positive, at most 366 days) are the master's to check.
pub fn parse_api_duration(s: &str) -> Result<Duration, String> {
    let probe = serde_json::json!({"name": "-", "kind": "-", "max_runtime": s.trim()});
    match serde_json::from_value::<SubmitRequest>(probe) {
        Ok(SubmitRequest {
            max_runtime: Some(d),
            ..
        }) => Ok(d),
        // The deserializer's own message only repeats the input.
        _ => Err("expected a duration such as 500ms, 30s, 10m or \"1h 30m\"".to_string()),
    }
}

/// A clap error as one line: its first paragraph (which names the offending argument), without
/// the `error:` prefix, plus a pointer to the help of the (sub)command concerned.
pub fn usage_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    let text = first.join(" ");
    let text = text.strip_prefix("error:").unwrap_or(&text).trim();
    // "Usage: alohactl submit [OPTIONS] --name <NAME>" names the command whose help to see.
    let command = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "alohactl".to_string());
    format!("{text} (see '{command} --help')")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("alohactl").chain(args.iter().copied()))
    }

    fn submit(args: &[&str]) -> SubmitArgs {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Submit(s) => s,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_have_defaults() {
        // The environment may name a master; this test is about the built-in default.
        if std::env::var_os("ALOHA_MASTER").is_some() {
            return;
        }
        let cli = parse(&["workers"]).unwrap();
        assert_eq!(cli.masters, vec![DEFAULT_MASTER.to_string()]);
        assert_eq!(cli.output, Output::Table);
        assert_eq!(cli.timeout, Duration::from_secs(10));
        assert!(matches!(cli.command, Command::Workers { action: None }));
        let cli = parse(&["workers", "drain", "w1", "--deadline", "10m"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Workers { action: Some(WorkersCommand::Drain { ref id, ref deadline }) }
                if id == "w1" && deadline.as_deref() == Some("10m")
        ));
        let cli = parse(&["workers", "undrain", "w1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Workers {
                action: Some(WorkersCommand::Undrain { .. })
            }
        ));
    }

    #[test]
    fn masters_repeat_split_on_commas_and_normalize() {
        let cli = parse(&[
            "--master",
            "10.0.0.1:8080",
            "-m",
            "http://b:9/,c:7",
            "--master=http://d:1/prefix/",
            "cluster",
        ])
        .unwrap();
        assert_eq!(
            cli.masters,
            [
                "http://10.0.0.1:8080",
                "http://b:9",
                "http://c:7",
                "http://d:1/prefix"
            ]
        );
    }

    #[test]
    fn https_masters_are_accepted() {
        let cli = parse(&["--master", "https://m.example:8443", "workers"]).unwrap();
        assert_eq!(cli.masters, ["https://m.example:8443"]);
    }

    #[test]
    fn bad_masters_are_usage_errors() {
        for bad in ["ftp://a:1", "", "http://", "http://a:1/?x=1", "a b:1"] {
            let err = parse(&["--master", bad, "workers"]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn output_can_follow_the_subcommand() {
        let cli = parse(&["list", "-o", "json", "--state", "running", "--limit", "5"]).unwrap();
        assert_eq!(cli.output, Output::Json);
        match cli.command {
            Command::List(l) => {
                assert_eq!(l.state, Some(AppState::Running));
                assert_eq!(l.limit, Some(5));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["list", "--after", " app-20240102030405-0007 ", "--all"]).unwrap();
        match cli.command {
            Command::List(l) => {
                assert_eq!(l.after.as_deref(), Some("app-20240102030405-0007"));
                assert!(l.all);
                assert_eq!((l.state, l.limit), (None, None));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["list", "--after", ""]).is_err());
        assert!(parse(&["list", "--after", ".."]).is_err());
        assert!(parse(&["list", "--state", "RUN"]).is_err());
        assert!(parse(&["list", "--limit", "0"]).is_err());
        assert!(parse(&["--output", "yaml", "list"]).is_err());
    }

    #[test]
    fn submit_takes_a_trailing_command() {
        let s = submit(&[
            "--name",
            "hi",
            "--cores",
            "2",
            "--label",
            "team=infra",
            "--label",
            "x=a=b",
            "--wait",
            "--poll-interval",
            "100ms",
            "--",
            "echo",
            "--flag",
            "-n",
        ]);
        assert_eq!(s.name, "hi");
        assert_eq!(s.kind, "process");
        assert_eq!(s.cores, Some(2));
        assert_eq!(s.memory_mb, None);
        assert_eq!(
            s.labels,
            [("team".into(), "infra".into()), ("x".into(), "a=b".into())]
        );
        assert!(s.wait);
        assert_eq!(s.poll_interval, Duration::from_millis(100));
        assert_eq!(s.command, ["echo", "--flag", "-n"]);
    }

    #[test]
    fn submit_refuses_conflicting_or_invalid_values() {
        let conflict = |args: &[&str]| {
            let mut all = vec!["submit", "--name", "x"];
            all.extend_from_slice(args);
            parse(&all).unwrap_err().kind()
        };
        assert_eq!(
            conflict(&["--spec", "{}", "--", "true"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            conflict(&["--spec-file", "f.json", "--", "true"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            conflict(&["--spec", "{}", "--spec-file", "f.json"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(conflict(&["--cores", "0"]), ErrorKind::ValueValidation);
        assert_eq!(
            conflict(&["--max-retries", "101"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            conflict(&["--label", "novalue"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            conflict(&["--poll-interval", "0s"]),
            ErrorKind::ValueValidation
        );
        let missing = parse(&["submit", "--", "true"]).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(missing.exit_code(), 2);
    }

    #[test]
    fn ids_are_required_and_non_empty() {
        assert!(parse(&["status"]).is_err());
        assert!(parse(&["kill", ""]).is_err());
        assert!(parse(&["status", ".."]).is_err());
        match parse(&["kill", "app-1"]).unwrap().command {
            Command::Kill { id } => assert_eq!(id, "app-1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        let line = usage_line(&parse(&["submit", "--", "true"]).unwrap_err());
        assert_eq!(
            line,
            "the following required arguments were not provided: --name <NAME> (see 'alohactl submit --help')"
        );
        let line = usage_line(&parse(&["list", "--bogus"]).unwrap_err());
        assert_eq!(
            line,
            "unexpected argument '--bogus' found (see 'alohactl list --help')"
        );
        let line = usage_line(&parse(&["frobnicate"]).unwrap_err());
        assert_eq!(
            line,
            "unrecognized subcommand 'frobnicate' (see 'alohactl --help')"
        );
        let line = usage_line(&parse(&["submit", "--name", "x", "--cores", "0"]).unwrap_err());
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("invalid value '0' for '--cores <CORES>'"),
            "{line}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5", "5x", "-1s", "0ms", "s", "nans", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(submit(&["--name", "x"]).idempotency_key, None);
        let s = submit(&["--name", "x", "--idempotency-key", "nightly-2026-12-03"]);
        assert_eq!(s.idempotency_key.as_deref(), Some("nightly-2026-12-03"));
        let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN);
        assert_eq!(parse_idempotency_key(&longest), Ok(longest.clone()));
        for bad in ["", " k", "a b", "k\n", "clé", &format!("{longest}k")] {
            assert!(parse_idempotency_key(bad).is_err(), "{bad:?}");
            let err = parse(&["submit", "--name", "x", "--idempotency-key", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}");
        }
    }

    #[test]
    fn task_model_flags() {
        let s = submit(&["--name", "x"]);
        assert_eq!(
            (s.max_runtime, s.restart, s.retry_backoff, s.max_backoff),
            (None, None, None, None)
        );
        assert!(!s.on_demand && !s.dry_run);
        let s = submit(&[
            "--name",
            "x",
            "--max-runtime",
            "1h 30m",
            "--restart",
            "on_failure",
            "--retry-backoff",
            "100ms",
            "--max-backoff",
            "2m",
            "--on-demand",
            "--dry-run",
        ]);
        assert_eq!(s.max_runtime, Some(Duration::from_secs(5400)));
        assert_eq!(s.restart, Some(RestartPolicy::OnFailure));
        assert_eq!(Restart::from(RestartPolicy::Always), Restart::Always);
        assert_eq!(s.retry_backoff, Some(Duration::from_millis(100)));
        assert_eq!(s.max_backoff, Some(Duration::from_secs(120)));
        assert!(s.on_demand && s.dry_run);

        let err = parse(&["submit", "--name", "x", "--restart", "sometimes"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let line = usage_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("never, on_failure, always"), "{line}");
        for conflict in [&["--wait"][..], &["--idempotency-key", "k"]] {
            let mut args = vec!["submit", "--name", "x", "--dry-run"];
            args.extend_from_slice(conflict);
            assert_eq!(
                parse(&args).unwrap_err().kind(),
                ErrorKind::ArgumentConflict,
                "{conflict:?}"
            );
        }
    }

    #[test]
    fn api_durations_are_the_masters_syntax() {
        assert_eq!(parse_api_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_api_duration(" 1m 30s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_api_duration("250ms"), Ok(Duration::from_millis(250)));
        // Zero parses; whether it is allowed is the master's rule (max_runtime: no; backoff: yes).
        assert_eq!(parse_api_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "5x", "-1s", "soon"] {
            assert!(parse_api_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retry_takes_an_id() {
        match parse(&["retry", " app-1 "]).unwrap().command {
            Command::Retry { id } => assert_eq!(id, "app-1"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["retry"]).is_err());
        assert!(parse(&["retry", ".."]).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(parse_label("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(parse_label("a="), Ok(("a".into(), String::new())));
        assert!(parse_label("=b").is_err());
        assert!(parse_label("ab").is_err());
    }
}
