//! Loopback benchmark of the transport against a TCP+TLS baseline with the same
//! certificates, in one process: small-call round trips (1 and 64 in flight) and
//! a one-way bulk stream.
//!
//! cargo run --release -p hoody-transport --example transport_bench -- [--bulk-mib 1024] [--frame-kib 1024] [--repeat 3]
//!     [--calls 5000] [--max-udp-payload 8952] [--part quic|tcp] [-v]
//!
//! Both sides run on the same tokio runtime and send the same frames (6-byte
//! header, then the body); `-v` prints QUIC's packet counts per bulk run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hoody_transport::frame::read_frame;
use hoody_transport::tls::{issue_node_identity, new_cluster_ca, CLUSTER_SERVER_NAME};
use hoody_transport::{BodyReceiver, BodySender, Endpoint, EndpointConfig, Frame, Handler, Peer, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHUNK: usize = 1 << 20;

struct Bench;

#[async_trait]
impl Handler for Bench {
    async fn call(&self, _peer: &Peer, request: Frame) -> Result<Frame, RemoteError> {
        Ok(request)
    }

    async fn stream(&self, peer: &Peer, _request: Frame, mut rx: BodyReceiver, mut tx: BodySender) -> Result<(), RemoteError> {
        let before = peer.stats();
        let mut total = 0u64;
        while let Some(frame) = rx.recv().await {
            total += frame.map_err(|e| RemoteError::internal(e.to_string()))?.body.len() as u64;
        }
        if std::env::args().any(|a| a == "-v") {
            let after = peer.stats();
            eprintln!(
                "  receiver: {} packets sent, {} UDP sends, {} UDP receives ({} datagrams)",
                after.path.sent_packets - before.path.sent_packets,
                after.udp_tx.ios - before.udp_tx.ios,
                after.udp_rx.ios - before.udp_rx.ios,
                after.udp_rx.datagrams - before.udp_rx.datagrams,
            );
        }
        tx.send(Frame::new(1, total.to_be_bytes().to_vec()))
            .await
            .map_err(|e| RemoteError::internal(e.to_string()))?;
        Ok(())
    }
}

struct Latencies(Vec<Duration>);

impl Latencies {
    fn pct(&mut self, p: usize) -> Duration {
        self.0.sort();
        self.0[(self.0.len() * p / 100).min(self.0.len() - 1)]
    }
}

/// CPU seconds this process used so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    ticks / 100.0
}

fn min_median(runs: &mut [f64]) -> (f64, f64) {
    if runs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    runs.sort_by(|a, b| a.total_cmp(b));
    (runs[0], runs[runs.len() / 2])
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let bulk_mib = arg("--bulk-mib", 1024);
    let bulk_bytes = bulk_mib << 20;
    let frame_size = arg("--frame-kib", CHUNK >> 10) << 10;
    let repeat = arg("--repeat", 3).max(1);
    let calls = arg("--calls", 5000);
    let verbose = std::env::args().any(|a| a == "-v");
    // `--part quic` or `--part tcp` runs the bulk transfers of one side only.
    let part = std::env::args().skip_while(|a| a != "--part").nth(1).unwrap_or_default();
    let config = EndpointConfig {
        max_udp_payload: arg("--max-udp-payload", EndpointConfig::default().max_udp_payload as usize) as u16,
        send_window: (arg("--send-window-kib", (EndpointConfig::default().send_window >> 10) as usize) << 10) as u64,
        stream_receive_window: (arg("--stream-window-kib", (EndpointConfig::default().stream_receive_window >> 10) as usize) << 10) as u32,
        udp_socket_buffer: arg("--udp-buffer-kib", EndpointConfig::default().udp_socket_buffer >> 10) << 10,
        ..EndpointConfig::default()
    };
    let (ca, key) = new_cluster_ca().unwrap();
    let (ida, idb) = (issue_node_identity(&ca, &key, "a", "a").unwrap(), issue_node_identity(&ca, &key, "b", "b").unwrap());
    let loopback = "127.0.0.1:0".parse().unwrap();
    let a = Endpoint::bind(loopback, &ida, Arc::new(Bench), None, config.clone()).unwrap();
    let b = Endpoint::bind(loopback, &idb, Arc::new(Bench), None, config.clone()).unwrap();
    let addr = b.local_addr().unwrap();
    let small = Frame::new(1, Bytes::from_static(&[0u8; 64]));
    for _ in 0..200 {
        a.call(addr, small.clone()).await.unwrap();
    }

    // QUIC, one call in flight.
    let mut quic1 = Latencies(Vec::with_capacity(calls));
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        a.call(addr, small.clone()).await.unwrap();
        quic1.0.push(t.elapsed());
    }
    let quic1_rate = calls as f64 / started.elapsed().as_secs_f64();

    // QUIC, 64 in flight on the one connection.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (a, small) = (a.clone(), small.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..calls / 64 {
                let t = Instant::now();
                a.call(addr, small.clone()).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut quic64 = Latencies(Vec::new());
    while let Some(lat) = tasks.join_next().await {
        quic64.0.extend(lat.unwrap());
    }
    let quic64_rate = quic64.0.len() as f64 / started.elapsed().as_secs_f64();

    // QUIC bulk, one way, `repeat` times on the pooled connection.
    let chunk = Bytes::from(vec![0xA5u8; frame_size]);
    let frames = bulk_bytes / frame_size;
    let mut quic_bulk = Vec::new();
    if part != "tcp" {
        for _ in 0..repeat {
            let before = a.connect(addr).await.unwrap().stats();
            let cpu = cpu_seconds();
            let started = Instant::now();
            let (mut tx, mut rx) = a.open_stream(addr, Frame::new(1, Bytes::new())).await.unwrap();
            for _ in 0..frames {
                tx.send(Frame::new(2, chunk.clone())).await.unwrap();
            }
            tx.finish().await.unwrap();
            let answer = rx.recv().await.unwrap().unwrap();
            assert_eq!(u64::from_be_bytes(answer.body[..8].try_into().unwrap()), (frames * frame_size) as u64);
            let rate = (frames * frame_size) as f64 / 1e6 / started.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu;
            let after = a.connect(addr).await.unwrap().stats();
            if verbose {
                eprintln!(
                    "quic bulk {rate:.0} MB/s, {:.2} CPU s/GB: {} packets sent, {} lost, {} congestion events, {} UDP sends ({} datagrams), {} UDP receives ({} datagrams), cwnd {} rtt {:?} mtu {}",
                    cpu / ((frames * frame_size) as f64 / 1e9),
                    after.path.sent_packets - before.path.sent_packets,
                    after.path.lost_packets - before.path.lost_packets,
                    after.path.congestion_events - before.path.congestion_events,
                    after.udp_tx.ios - before.udp_tx.ios,
                    after.udp_tx.datagrams - before.udp_tx.datagrams,
                    after.udp_rx.ios - before.udp_rx.ios,
                    after.udp_rx.datagrams - before.udp_rx.datagrams,
                    after.path.cwnd,
                    after.path.rtt,
                    after.path.current_mtu,
                );
            }
            quic_bulk.push(rate);
        }
    }

    // TCP + TLS 1.3 with the same certificates: an echo of frames, and a byte sink.
    let listener = tokio::net::TcpListener::bind(loopback).await.unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(idb.server_config().unwrap()));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut open = [0u8; 1];
                tls.read_exact(&mut open).await.unwrap();
                if open[0] == 1 {
                    while let Ok(Some(frame)) = read_frame(&mut tls, 1 << 24).await {
                        tls.write_all(&frame.encode()).await.unwrap();
                    }
                } else {
                    let mut total = 0u64;
                    while let Some(frame) = read_frame(&mut tls, 1 << 24).await.unwrap() {
                        total += frame.body.len() as u64;
                    }
                    tls.write_all(&total.to_be_bytes()).await.unwrap();
                    tls.shutdown().await.unwrap();
                }
            });
        }
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ida.client_config().unwrap()));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        connector.connect(CLUSTER_SERVER_NAME.try_into().unwrap(), tcp).await.unwrap()
    };
    let mut tls = connect().await;
    tls.write_all(&[1]).await.unwrap();
    let encoded = small.encode();
    let mut tcp1 = Latencies(Vec::with_capacity(calls));
    for i in 0..calls + 200 {
        let t = Instant::now();
        tls.write_all(&encoded).await.unwrap();
        read_frame(&mut tls, 1 << 24).await.unwrap().unwrap();
        if i >= 200 {
            tcp1.0.push(t.elapsed());
        }
    }
    let tcp1_rate = calls as f64 / tcp1.0.iter().sum::<Duration>().as_secs_f64();

    // The same frames over TCP+TLS: header and body per frame, read back frame by
    // frame by the same reader the QUIC side uses.
    let mut tcp_bulk = Vec::new();
    if part != "quic" {
        for _ in 0..repeat {
            let mut tls = connect().await;
            let cpu = cpu_seconds();
            let started = Instant::now();
            tls.write_all(&[2]).await.unwrap();
            for _ in 0..frames {
                let frame = Frame::new(2, chunk.clone());
                tls.write_all(&frame.header()).await.unwrap();
                tls.write_all(&frame.body).await.unwrap();
            }
            tls.shutdown().await.unwrap();
            let mut total = [0u8; 8];
            tls.read_exact(&mut total).await.unwrap();
            assert_eq!(u64::from_be_bytes(total), (frames * frame_size) as u64);
            let rate = (frames * frame_size) as f64 / 1e6 / started.elapsed().as_secs_f64();
            if verbose {
                eprintln!("tcp bulk {rate:.0} MB/s, {:.2} CPU s/GB", (cpu_seconds() - cpu) / ((frames * frame_size) as f64 / 1e9));
            }
            tcp_bulk.push(rate);
        }
    }

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "transport_bench: loopback, {calls} calls of 64 B, bulk {bulk_mib} MiB one way in {} KiB frames ({repeat} runs), max UDP payload {}, {cores} cores",
        frame_size >> 10,
        config.max_udp_payload
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "measure", "QUIC", "TCP+TLS", "ratio");
    let (q50, t50) = (us(quic1.pct(50)), us(tcp1.pct(50)));
    let (q99, t99) = (us(quic1.pct(99)), us(tcp1.pct(99)));
    println!("{:<28} {:>12.0} {:>12.0} {:>8.2}", "1 in flight p50 (us)", q50, t50, q50 / t50);
    println!("{:<28} {:>12.0} {:>12.0} {:>8.2}", "1 in flight p99 (us)", q99, t99, q99 / t99);
    println!("{:<28} {:>12.0} {:>12.0} {:>8.2}", "1 in flight calls/s", quic1_rate, tcp1_rate, quic1_rate / tcp1_rate);
    println!("{:<28} {:>12.0} {:>12} {:>8}", "64 in flight p50 (us)", us(quic64.pct(50)), "-", "-");
    println!("{:<28} {:>12.0} {:>12} {:>8}", "64 in flight p99 (us)", us(quic64.pct(99)), "-", "-");
    println!("{:<28} {:>12.0} {:>12} {:>8}", "64 in flight calls/s", quic64_rate, "-", "-");
    let (qmin, qmed) = min_median(&mut quic_bulk);
    let (tmin, tmed) = min_median(&mut tcp_bulk);
    println!("{:<28} {:>12.0} {:>12.0} {:>8.2}", "bulk MB/s median", qmed, tmed, qmed / tmed);
    println!("{:<28} {:>12.0} {:>12.0} {:>8.2}", "bulk MB/s min", qmin, tmin, qmin / tmin);
    println!("bulk runs: QUIC {quic_bulk:.0?} TCP+TLS {tcp_bulk:.0?}");
    a.shutdown().await;
    b.shutdown().await;
}
