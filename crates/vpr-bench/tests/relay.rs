//! The impairment relay between two UDP sockets on 127.0.0.1: measured
//! delay, loss, rate and outage against the settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use vpr_bench::relay::{Direction, Impairment, Relay, RelayHandle};

/// A server socket, a relay in front of it and a client socket.
struct Setup {
    server: Arc<UdpSocket>,
    client: UdpSocket,
    relay: RelayHandle,
    relay_addr: SocketAddr,
}

async fn setup(seed: u64) -> Setup {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let (relay, relay_addr) = Relay::start_seeded(server_addr, seed).await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    Setup {
        server: Arc::new(server),
        client,
        relay,
        relay_addr,
    }
}

/// Receives datagrams until none arrives for `quiet`; returns each with its
/// arrival time and source.
async fn receive_until_quiet(
    socket: &UdpSocket,
    quiet: Duration,
) -> Vec<(Vec<u8>, SocketAddr, Instant)> {
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 2048];
    while let Ok(Ok((len, from))) = tokio::time::timeout(quiet, socket.recv_from(&mut buffer)).await
    {
        received.push((buffer[..len].to_vec(), from, Instant::now()));
    }
    received
}

/// Receives on `socket` in a task, so arrival times are taken as datagrams
/// arrive, until none arrives for `quiet`.
fn receive_in_background(
    socket: &Arc<UdpSocket>,
    quiet: Duration,
) -> tokio::task::JoinHandle<Vec<(Vec<u8>, SocketAddr, Instant)>> {
    let socket = socket.clone();
    tokio::spawn(async move { receive_until_quiet(&socket, quiet).await })
}

fn numbered(index: u32, len: usize) -> Vec<u8> {
    let mut datagram = vec![0u8; len];
    datagram[..4].copy_from_slice(&index.to_be_bytes());
    datagram
}

fn index_of(datagram: &[u8]) -> u32 {
    u32::from_be_bytes(datagram[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_both_ways_through_upstream_socket() {
    let setup = setup(1).await;
    let client_addr = setup.client.local_addr().unwrap();

    setup
        .client
        .send_to(b"ping", setup.relay_addr)
        .await
        .unwrap();
    let mut buffer = [0u8; 64];
    let (len, peer) =
        tokio::time::timeout(Duration::from_secs(2), setup.server.recv_from(&mut buffer))
            .await
            .expect("the server received nothing")
            .unwrap();
    assert_eq!(&buffer[..len], b"ping");
    assert_ne!(
        peer, client_addr,
        "the server must see the relay, not the client"
    );
    assert_ne!(
        peer, setup.relay_addr,
        "the upstream socket is not the client-side one"
    );

    setup.server.send_to(b"pong", peer).await.unwrap();
    let (len, from) =
        tokio::time::timeout(Duration::from_secs(2), setup.client.recv_from(&mut buffer))
            .await
            .expect("the client received nothing")
            .unwrap();
    assert_eq!(&buffer[..len], b"pong");
    assert_eq!(from, setup.relay_addr);

    let stats = setup.relay.stats();
    assert_eq!(stats.flows, 1);
    assert_eq!(stats.upstream.forwarded_packets, 1);
    assert_eq!(stats.upstream.forwarded_bytes, 4);
    assert_eq!(stats.downstream.forwarded_packets, 1);
    assert_eq!(stats.upstream.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_opens_one_flow_per_client() {
    let setup = setup(2).await;
    let second_client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    for _ in 0..3 {
        setup.client.send_to(b"a", setup.relay_addr).await.unwrap();
        second_client.send_to(b"b", setup.relay_addr).await.unwrap();
    }
    let received = receive_until_quiet(&setup.server, Duration::from_millis(300)).await;

    assert_eq!(received.len(), 6);
    let peer_of = |payload: &[u8]| {
        let peers: Vec<SocketAddr> = received
            .iter()
            .filter(|(datagram, _, _)| datagram == payload)
            .map(|(_, peer, _)| *peer)
            .collect();
        assert_eq!(peers.len(), 3);
        assert!(peers.iter().all(|peer| *peer == peers[0]));
        peers[0]
    };
    assert_ne!(peer_of(b"a"), peer_of(b"b"));
    assert_eq!(setup.relay.stats().flows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delays_by_delay_plus_jitter() {
    let setup = setup(3).await;
    let delay = Duration::from_millis(50);
    let jitter = Duration::from_millis(20);
    setup.relay.set(
        Direction::Upstream,
        Impairment::none().with_delay(delay).with_jitter(jitter),
    );

    let receiver = receive_in_background(&setup.server, Duration::from_millis(500));
    let mut sent_at = Vec::new();
    for index in 0..20u32 {
        sent_at.push(Instant::now());
        setup
            .client
            .send_to(&numbered(index, 100), setup.relay_addr)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let received = receiver.await.unwrap();

    assert_eq!(received.len(), 20);
    let mut previous_index = None;
    let mut total = Duration::ZERO;
    for (datagram, _, arrived_at) in &received {
        let index = index_of(datagram);
        assert!(
            previous_index < Some(index),
            "datagram {index} arrived out of order"
        );
        previous_index = Some(index);

        let one_way = *arrived_at - sent_at[index as usize];
        assert!(
            one_way >= delay,
            "datagram {index} took {one_way:?}, below {delay:?}"
        );
        // Timer granularity and scheduling add a few milliseconds.
        let bound = delay + jitter + Duration::from_millis(15);
        assert!(
            one_way <= bound,
            "datagram {index} took {one_way:?}, above {bound:?}"
        );
        total += one_way;
    }
    let mean = total / 20;
    println!("mean one-way delay with 50 ms + 0..20 ms jitter: {mean:?}");
    let expected_mean = delay + jitter / 2;
    assert!(
        mean.abs_diff(expected_mean) < Duration::from_millis(10),
        "mean delay {mean:?}, expected about {expected_mean:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_drops_about_the_loss_fraction() {
    let setup = setup(4).await;
    setup
        .relay
        .set(Direction::Upstream, Impairment::none().with_loss(0.2));

    let receiver = receive_in_background(&setup.server, Duration::from_millis(500));
    let count = 2_000u32;
    for index in 0..count {
        setup
            .client
            .send_to(&numbered(index, 100), setup.relay_addr)
            .await
            .unwrap();
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let received = receiver.await.unwrap();

    let stats = setup.relay.stats();
    let lost = u64::from(count) - received.len() as u64;
    println!(
        "lost {lost} of {count} at 20 % loss; relay stats {:?}",
        stats.upstream
    );
    assert_eq!(stats.upstream.dropped_loss, lost, "only the relay drops");
    assert_eq!(stats.upstream.forwarded_packets, received.len() as u64);
    // Binomial(2000, 0.2) has a standard deviation of about 18.
    assert!((330..=470).contains(&lost), "lost {lost} of {count}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_caps_rate_and_drops_tail() {
    let setup = setup(5).await;
    let rate_kbps = 800;
    setup.relay.set(
        Direction::Upstream,
        Impairment::none().with_rate_kbps(rate_kbps),
    );

    let receiver = receive_in_background(&setup.server, Duration::from_millis(500));
    // Offer twice the cap for one second: a 1000-byte datagram every 5 ms.
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    for index in 0..200u32 {
        ticker.tick().await;
        setup
            .client
            .send_to(&numbered(index, 1000), setup.relay_addr)
            .await
            .unwrap();
    }
    let received = receiver.await.unwrap();

    let first = received.first().expect("nothing arrived").2;
    let last = received.last().unwrap().2;
    let bytes_after_first = (received.len() as f64 - 1.0) * 1000.0;
    let measured_kbps = bytes_after_first * 8.0 / (last - first).as_secs_f64() / 1000.0;
    let stats = setup.relay.stats();
    println!(
        "received {} of 200 at {measured_kbps:.0} kbit/s (cap {rate_kbps}); relay stats {:?}",
        received.len(),
        stats.upstream
    );

    assert!(
        (680.0..=880.0).contains(&measured_kbps),
        "measured {measured_kbps:.0} kbit/s with a cap of {rate_kbps}"
    );
    assert!(
        stats.upstream.dropped_queue > 0,
        "the queue never overflowed"
    );
    assert_eq!(stats.upstream.dropped_loss, 0);
    assert_eq!(
        stats.upstream.forwarded_packets + stats.upstream.dropped_queue,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_outage_drops_until_cleared() {
    let setup = setup(6).await;
    setup.relay.set_outage(true);
    assert!(setup.relay.impairment(Direction::Upstream).outage);
    assert!(setup.relay.impairment(Direction::Downstream).outage);

    for index in 0..50u32 {
        setup
            .client
            .send_to(&numbered(index, 100), setup.relay_addr)
            .await
            .unwrap();
    }
    let during = receive_until_quiet(&setup.server, Duration::from_millis(300)).await;
    assert_eq!(during.len(), 0, "datagrams passed during the outage");
    assert_eq!(setup.relay.stats().upstream.dropped_outage, 50);

    setup.relay.set_outage(false);
    for index in 50..60u32 {
        setup
            .client
            .send_to(&numbered(index, 100), setup.relay_addr)
            .await
            .unwrap();
    }
    let after = receive_until_quiet(&setup.server, Duration::from_millis(300)).await;
    let indices: Vec<u32> = after
        .iter()
        .map(|(datagram, _, _)| index_of(datagram))
        .collect();
    assert_eq!(indices, (50..60).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_outage_drops_datagrams_in_flight() {
    let setup = setup(7).await;
    setup.relay.set(
        Direction::Upstream,
        Impairment::none().with_delay(Duration::from_millis(200)),
    );

    for index in 0..10u32 {
        setup
            .client
            .send_to(&numbered(index, 100), setup.relay_addr)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.relay.set_outage(true);
    let received = receive_until_quiet(&setup.server, Duration::from_millis(400)).await;

    assert_eq!(received.len(), 0);
    let stats = setup.relay.stats();
    assert_eq!(stats.upstream.dropped_outage, 10);
    assert_eq!(stats.upstream.forwarded_packets, 0);
}
