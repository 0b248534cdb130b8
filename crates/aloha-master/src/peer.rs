//! Fast failover: masters watch each other over gRPC.
//!
//! A leader serves [`PeerRpc::watch_leader`]: a stream with a beat at once and then every
//! [`BEAT`] while it leads, ended when it stops leading. Every standby holds one open to the
//! leader ([`watch_leader`]). A crashed leader process shows at once: its connections close.
//! The standby then dials it again a few times ([`REDIALS`] × [`REDIAL_PAUSE`]); when none of
//! those answers, it revokes the leader's lease in etcd (its id is in the leader's election
//! value), so the next campaign wins at once instead of after the lease TTL.
//!
//! A false positive (a leader alive and connected to etcd that this standby cannot reach) costs
//! a leadership change, not data: the leader's writes are fenced by its lease, it steps down
//! and campaigns again. Revocation only follows a stream that was established with that very
//! leader and epoch and then broke, so a standby that cannot reach the leader at all (a wrong
//! `--advertise-rpc`) never revokes anything: it waits for the lease as before. Host-level
//! loss (no reset, no answer) is seen after [`SILENCE`] without a beat, then handled the same
//! way. `--fast-failover false` turns all of this off.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aloha_proto as pb;
use aloha_proto::auth::{JoinToken, WithToken};
use aloha_proto::peer_service_client::PeerServiceClient;
use aloha_proto::peer_service_server::PeerService;
use aloha_proto::tls::{PeerRole, TlsConnect};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::election::{Election, LeaderInfo};
use aloha_core::api::Role;

use crate::node::Node;

/// How often a leader beats on every watch stream.
pub const BEAT: Duration = Duration::from_millis(500);
/// A watch stream silent this long counts as broken (a host gone without a reset).
pub const SILENCE: Duration = Duration::from_secs(2);
/// How often a standby dials a leader whose stream broke before it revokes the lease.
pub const REDIALS: u32 = 3;
/// The pause between those dials.
pub const REDIAL_PAUSE: Duration = Duration::from_millis(50);
/// How long one dial (connect, call, first beat) may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(300);

/// The leader's side: [`PeerService`] over this node.
pub struct PeerRpc {
    node: Arc<Node>,
}

impl PeerRpc {
    /// Serves `node`'s leadership to watching standbys.
    pub fn new(node: Arc<Node>) -> Self {
        PeerRpc { node }
    }
}

type BeatStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderBeat, Status>> + Send>>;

#[tonic::async_trait]
impl PeerService for PeerRpc {
    type WatchLeaderStream = BeatStream;

    async fn watch_leader(
        &self,
        req: Request<pb::WatchLeaderRequest>,
    ) -> Result<Response<Self::WatchLeaderStream>, Status> {
        let Some(master) = self.node.active() else {
            return Err(Status::failed_precondition("not leader"));
        };
        let epoch = master.epoch();
        let from = req.into_inner().from;
        debug!(%from, epoch, "a standby watches this leader");
        let mut role = self.node.role_watch();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                if *role.borrow_and_update() != Role::Alive {
                    return;
                }
                if tx.send(Ok(pb::LeaderBeat { epoch })).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(BEAT) => {}
                    r = role.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What dialling a leader found.
#[derive(Debug)]
enum Dial {
    /// It leads with this epoch: the stream is open.
    Leads(u64, Box<Streaming<pb::LeaderBeat>>),
    /// It answered but does not lead (it stepped down): nothing to revoke.
    NotLeading,
    /// No answer: connection refused, reset, or timed out.
    Unreachable(String),
}

async fn dial(
    leader: &LeaderInfo,
    me: &str,
    token: &Option<JoinToken>,
    tls: Option<&TlsConnect>,
) -> Dial {
    let attempt = async {
        let endpoint = Endpoint::from_shared(leader.rpc.clone())
            .map_err(|e| Dial::Unreachable(e.to_string()))?
            .connect_timeout(DIAL_TIMEOUT)
            .tcp_nodelay(true);
        let channel: Channel = aloha_proto::tls::connect(endpoint, tls)
            .await
            .map_err(|e| Dial::Unreachable(e.to_string()))?;
        let mut client = PeerServiceClient::with_interceptor(channel, WithToken(token.clone()));
        let mut stream = match client
            .watch_leader(pb::WatchLeaderRequest { from: me.into() })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::FailedPrecondition => return Err(Dial::NotLeading),
            // An older master without this service: it answers, so it is alive.
            Err(s) if s.code() == Code::Unimplemented => return Err(Dial::NotLeading),
            Err(s) => return Err(Dial::Unreachable(s.to_string())),
        };
        match stream.message().await {
            Ok(Some(beat)) => Ok(Dial::Leads(beat.epoch, Box::new(stream))),
            Ok(None) => Err(Dial::NotLeading),
            Err(s) => Err(Dial::Unreachable(s.to_string())),
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, attempt).await {
        Ok(Ok(d)) | Ok(Err(d)) => d,
        Err(_) => Dial::Unreachable("timed out".into()),
    }
}

/// Waits until the watched stream breaks (an error, its end, or [`SILENCE`]).
async fn until_broken(stream: &mut Streaming<pb::LeaderBeat>) -> String {
    loop {
        match tokio::time::timeout(SILENCE, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => return "the stream ended".into(),
            Ok(Err(s)) => return format!("the stream broke: {}", s.message()),
            Err(_) => return format!("no beat for {SILENCE:?}"),
        }
    }
}

/// The standby's side: while this node is a standby, watches the leader it knows of, and
/// revokes that leader's lease when the leader is gone. Runs until `stop`.
pub async fn watch_leader(
    node: Arc<Node>,
    election: Arc<dyn Election>,
    mut stop: watch::Receiver<bool>,
) {
    let me = node.config().http_url();
    let token = node.config().join_token.clone();
    // With mutual TLS, the leader must present a master certificate.
    let tls = node
        .config()
        .mutual_tls
        .as_ref()
        .map(|t| t.dialer(PeerRole::Master));
    loop {
        if *stop.borrow() {
            return;
        }
        let leader = node.leader().filter(|l| l.http != me && l.epoch > 0);
        let watched = match leader {
            Some(leader) if node.role() == Role::Standby => {
                match dial(&leader, &me, &token, tls.as_ref()).await {
                    Dial::Leads(epoch, stream) if epoch == leader.epoch => Some((leader, stream)),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((leader, mut stream)) = watched else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return,
            }
            continue;
        };
        debug!(leader = %leader.http, epoch = leader.epoch, "watching the leader");
        let mut why = tokio::select! {
            why = until_broken(&mut stream) => why,
            _ = stop.changed() => return,
        };
        // The stream broke: is the leader still there?
        let mut gone = true;
        for _ in 0..REDIALS {
            if node.role() != Role::Standby {
                gone = false;
                break;
            }
            match dial(&leader, &me, &token, tls.as_ref()).await {
                Dial::Leads(epoch, _) if epoch == leader.epoch => {
                    gone = false;
                    break;
                }
                // Another epoch, or stepped down: this leadership ended by itself.
                Dial::Leads(..) | Dial::NotLeading => {
                    gone = false;
                    break;
                }
                Dial::Unreachable(e) => why = format!("{why}; dial: {e}"),
            }
            tokio::time::sleep(REDIAL_PAUSE).await;
        }
        if !gone || node.role() != Role::Standby {
            continue;
        }
        match election.revoke_leader(&leader).await {
            Ok(true) => warn!(
                leader = %leader.http, epoch = leader.epoch,
                "the leader is gone ({why}): revoked its lease (fast failover)"
            ),
            Ok(false) => info!(leader = %leader.http, epoch = leader.epoch,
                "the leader is gone ({why}); its lease had already ended"),
            Err(e) => {
                warn!(leader = %leader.http, "the leader is gone ({why}) but its lease could not be revoked: {e}")
            }
        }
    }
}
