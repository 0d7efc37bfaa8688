//! Tokio shell of the relay: moves datagrams between the client-side socket,
//! one upstream socket per client and the two schedulers.
//!
//! One scheduler per direction is shared by every client flow, so the relay
//! behaves as one link: clients behind it share its rate cap.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::impairment::{Direction, Impairment};
use super::scheduler::{DropReason, Scheduler, Verdict};
use super::stats::{RelayStats, RtpPacketId};

/// Seed of [`Relay::start`].
pub const DEFAULT_SEED: u64 = 0x5650_5200;

/// Largest datagram the relay reads; longer ones are truncated by the OS.
const MAX_DATAGRAM: usize = 65_536;

/// Failure to start the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The client-side socket could not be bound.
    #[error("binding the relay's client-side UDP socket on {address} failed: {source}")]
    Bind {
        /// Address the relay tried to bind.
        address: SocketAddr,
        /// Underlying I/O error.
        source: std::io::Error,
    },
}

/// Schedulers and counters shared by the relay's tasks and its handle.
struct Shared {
    schedulers: [Scheduler; 2],
    stats: RelayStats,
    /// RTP packets each direction's loss draw dropped, with the time of the
    /// drop, oldest first.
    lost_rtp: [Vec<(RtpPacketId, Instant)>; 2],
    /// The same packets, for lookup.
    lost_ids: [HashSet<RtpPacketId>; 2],
    /// Of those, the ones a later datagram with the same id carried on.
    repaired_rtp: [HashSet<RtpPacketId>; 2],
}

/// Most dropped RTP packets remembered per direction.
const MAX_LOST_RTP: usize = 100_000;

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A datagram waiting for its release time.
struct Scheduled {
    release_at: Instant,
    socket: Arc<UdpSocket>,
    destination: Option<SocketAddr>,
    datagram: Vec<u8>,
}

/// Entry point of the relay.
pub struct Relay;

impl Relay {
    /// Starts a relay in front of `server_addr` with [`DEFAULT_SEED`] and no
    /// impairment. Returns its handle and the client-side address that
    /// clients send to.
    pub async fn start(server_addr: SocketAddr) -> Result<(RelayHandle, SocketAddr), RelayError> {
        Self::start_seeded(server_addr, DEFAULT_SEED).await
    }

    /// Starts a relay whose random draws come from `seed`; the upstream
    /// scheduler uses `seed` and the downstream one `seed + 1`.
    pub async fn start_seeded(
        server_addr: SocketAddr,
        seed: u64,
    ) -> Result<(RelayHandle, SocketAddr), RelayError> {
        let bind_address = SocketAddr::new(loopback_like(server_addr.ip()), 0);
        let client_socket =
            UdpSocket::bind(bind_address)
                .await
                .map_err(|source| RelayError::Bind {
                    address: bind_address,
                    source,
                })?;
        let local_addr = client_socket
            .local_addr()
            .map_err(|source| RelayError::Bind {
                address: bind_address,
                source,
            })?;
        let client_socket = Arc::new(client_socket);

        let shared = Arc::new(Mutex::new(Shared {
            schedulers: [
                Scheduler::new(Impairment::none(), seed),
                Scheduler::new(Impairment::none(), seed.wrapping_add(1)),
            ],
            stats: RelayStats::default(),
            lost_rtp: [Vec::new(), Vec::new()],
            lost_ids: [HashSet::new(), HashSet::new()],
            repaired_rtp: [HashSet::new(), HashSet::new()],
        }));
        let tasks = Arc::new(Mutex::new(Vec::new()));

        let (upstream_queue, upstream_receiver) = mpsc::unbounded_channel();
        let (downstream_queue, downstream_receiver) = mpsc::unbounded_channel();
        let senders = [
            tokio::spawn(send_when_due(
                Direction::Upstream,
                upstream_receiver,
                shared.clone(),
            )),
            tokio::spawn(send_when_due(
                Direction::Downstream,
                downstream_receiver,
                shared.clone(),
            )),
        ];
        let client_side = tokio::spawn(
            ClientSide {
                socket: client_socket,
                server_addr,
                shared: shared.clone(),
                tasks: tasks.clone(),
                upstream_queue,
                downstream_queue,
                flows: HashMap::new(),
            }
            .run(),
        );
        {
            let mut tasks = lock_tasks(&tasks);
            tasks.extend(senders.iter().map(|task| task.abort_handle()));
            tasks.push(client_side.abort_handle());
        }

        tracing::info!(%local_addr, %server_addr, seed, "UDP impairment relay started");
        let handle = RelayHandle {
            shared,
            tasks,
            local_addr,
        };
        Ok((handle, local_addr))
    }
}

/// Control of a running relay. Dropping it stops the relay.
pub struct RelayHandle {
    shared: SharedState,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    local_addr: SocketAddr,
}

impl RelayHandle {
    /// Address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the impairment of `direction`. Datagrams already scheduled
    /// keep their release times, except that an outage drops them.
    pub fn set(&self, direction: Direction, impairment: Impairment) {
        lock(&self.shared).schedulers[direction.index()].set_impairment(impairment);
        tracing::info!(?direction, ?impairment, "relay impairment changed");
    }

    /// Starts or ends an outage in both directions, keeping the other
    /// settings.
    pub fn set_outage(&self, outage: bool) {
        let mut shared = lock(&self.shared);
        for scheduler in &mut shared.schedulers {
            let impairment = Impairment {
                outage,
                ..scheduler.impairment()
            };
            scheduler.set_impairment(impairment);
        }
        drop(shared);
        tracing::info!(outage, "relay outage changed");
    }

    /// Returns the impairment of `direction` in force.
    pub fn impairment(&self, direction: Direction) -> Impairment {
        lock(&self.shared).schedulers[direction.index()].impairment()
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> RelayStats {
        lock(&self.shared).stats
    }

    /// Stops every relay task and closes the sockets.
    pub fn stop(self) {}

    /// RTP packets of `direction` that the random loss draw dropped, oldest
    /// first (SRTP leaves the header readable). Outages and a full rate-cap
    /// queue are not listed.
    pub fn lost_rtp(&self, direction: Direction) -> Vec<RtpPacketId> {
        lock(&self.shared).lost_rtp[direction.index()].iter().map(|(id, _)| *id).collect()
    }

    /// Returns the packets of [`Self::lost_rtp`], each with the time the
    /// relay dropped it.
    pub fn lost_rtp_times(&self, direction: Direction) -> Vec<(RtpPacketId, Instant)> {
        lock(&self.shared).lost_rtp[direction.index()].clone()
    }

    /// Lost RTP packets of `direction` whose retransmission on the same
    /// SSRC, with the same sequence number, later passed the relay.
    pub fn repaired_rtp(&self, direction: Direction) -> HashSet<RtpPacketId> {
        lock(&self.shared).repaired_rtp[direction.index()].clone()
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        for task in lock_tasks(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock_tasks(tasks: &Mutex<Vec<AbortHandle>>) -> MutexGuard<'_, Vec<AbortHandle>> {
    tasks.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Loopback address of the same family as `server_ip`; the relay binds only
/// loopback.
fn loopback_like(server_ip: IpAddr) -> IpAddr {
    match server_ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// Runs the scheduler of `direction` on one datagram and queues it for
/// sending if it is released.
fn schedule(
    shared: &Mutex<Shared>,
    direction: Direction,
    queue: &mpsc::UnboundedSender<Scheduled>,
    socket: &Arc<UdpSocket>,
    destination: Option<SocketAddr>,
    datagram: &[u8],
) {
    let verdict = {
        let mut shared = lock(shared);
        let now = Instant::now();
        let verdict = shared.schedulers[direction.index()].schedule(now, datagram.len());
        let index = direction.index();
        match verdict {
            Verdict::Drop(reason) => {
                shared.stats.direction_mut(direction).record_drop(reason);
                let id = RtpPacketId::parse(datagram);
                if let (DropReason::Loss, Some(id)) = (reason, id) {
                    if shared.lost_rtp[index].len() < MAX_LOST_RTP && shared.lost_ids[index].insert(id) {
                        shared.lost_rtp[index].push((id, now));
                    }
                }
            }
            Verdict::Release(_) if !shared.lost_ids[index].is_empty() => {
                if let Some(id) = RtpPacketId::parse(datagram) {
                    if shared.lost_ids[index].contains(&id) {
                        shared.repaired_rtp[index].insert(id);
                    }
                }
            }
            Verdict::Release(_) => {}
        }
        verdict
    };

    if let Verdict::Release(release_at) = verdict {
        // The sender task ends only when the relay stops.
        let _ = queue.send(Scheduled {
            release_at,
            socket: socket.clone(),
            destination,
            datagram: datagram.to_vec(),
        });
    }
}

/// The client-side socket and the flows it has seen.
struct ClientSide {
    socket: Arc<UdpSocket>,
    server_addr: SocketAddr,
    shared: SharedState,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    upstream_queue: mpsc::UnboundedSender<Scheduled>,
    downstream_queue: mpsc::UnboundedSender<Scheduled>,
    flows: HashMap<SocketAddr, Arc<UdpSocket>>,
}

impl ClientSide {
    async fn run(mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        let mut receive_errors = 0u64;
        loop {
            let (len, client) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(error) => {
                    // An ICMP port unreachable from a client that went away
                    // shows up here; the socket stays usable.
                    receive_errors += 1;
                    if receive_errors.is_power_of_two() {
                        tracing::warn!(%error, receive_errors, "relay client-side receive failed");
                    }
                    continue;
                }
            };

            let Some(upstream) = self.flow(client).await else {
                continue;
            };
            schedule(
                &self.shared,
                Direction::Upstream,
                &self.upstream_queue,
                &upstream,
                None,
                &buffer[..len],
            );
        }
    }

    /// Returns the upstream socket of `client`, opening it on first use.
    async fn flow(&mut self, client: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(upstream) = self.flows.get(&client) {
            return Some(upstream.clone());
        }

        let bind_address = SocketAddr::new(loopback_like(self.server_addr.ip()), 0);
        let opened = async {
            let socket = UdpSocket::bind(bind_address).await?;
            socket.connect(self.server_addr).await?;
            Ok::<_, std::io::Error>(socket)
        }
        .await;
        let upstream = match opened {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                tracing::warn!(%client, %error, "opening the relay's upstream socket failed; datagram dropped");
                return None;
            }
        };
        let upstream_addr = upstream.local_addr().ok();
        tracing::info!(%client, ?upstream_addr, server_addr = %self.server_addr, "relay flow opened");

        // NOTE: flows are never closed; a relay lives as long as one test.
        let receiver = tokio::spawn(receive_from_server(
            upstream.clone(),
            client,
            self.socket.clone(),
            self.shared.clone(),
            self.downstream_queue.clone(),
        ));
        lock_tasks(&self.tasks).push(receiver.abort_handle());
        lock(&self.shared).stats.flows += 1;
        self.flows.insert(client, upstream.clone());
        Some(upstream)
    }
}

/// Reads the server's datagrams of one flow and schedules them toward
/// `client`.
async fn receive_from_server(
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    client_socket: Arc<UdpSocket>,
    shared: SharedState,
    downstream_queue: mpsc::UnboundedSender<Scheduled>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut receive_errors = 0u64;
    loop {
        let len = match upstream.recv(&mut buffer).await {
            Ok(len) => len,
            Err(error) => {
                // A connected UDP socket reports an ICMP port unreachable
                // from the server as an error; later datagrams still arrive.
                receive_errors += 1;
                if receive_errors.is_power_of_two() {
                    tracing::warn!(%client, %error, receive_errors, "relay upstream receive failed");
                }
                continue;
            }
        };
        schedule(
            &shared,
            Direction::Downstream,
            &downstream_queue,
            &client_socket,
            Some(client),
            &buffer[..len],
        );
    }
}

/// Sends the datagrams of one direction at their release times. Release
/// times never decrease, so the queue is in sending order.
async fn send_when_due(
    direction: Direction,
    mut queue: mpsc::UnboundedReceiver<Scheduled>,
    shared: SharedState,
) {
    let mut send_errors = 0u64;
    while let Some(scheduled) = queue.recv().await {
        tokio::time::sleep_until(tokio::time::Instant::from_std(scheduled.release_at)).await;

        {
            let mut shared = lock(&shared);
            if !shared.schedulers[direction.index()].delivers() {
                let stats = shared.stats.direction_mut(direction);
                stats.record_drop(DropReason::Outage);
                continue;
            }
        }

        let sent = match scheduled.destination {
            Some(destination) => {
                scheduled
                    .socket
                    .send_to(&scheduled.datagram, destination)
                    .await
            }
            None => scheduled.socket.send(&scheduled.datagram).await,
        };

        let mut shared = lock(&shared);
        let stats = shared.stats.direction_mut(direction);
        match sent {
            Ok(len) => {
                stats.forwarded_packets += 1;
                stats.forwarded_bytes += len as u64;
            }
            Err(error) => {
                stats.send_errors += 1;
                send_errors += 1;
                if send_errors.is_power_of_two() {
                    tracing::warn!(?direction, %error, send_errors, "relay send failed");
                }
            }
        }
    }
}
