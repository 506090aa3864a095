//! delay_relay: forwards UDP and TCP from a listen address to a target address, holding every
//! datagram and every chunk of a byte stream for a fixed delay in each direction (this machine
//! has no netem). Standard library only, built by bench/scenarios/remote_shares.sh with
//! `rustc -O bench/lib/delay_relay.rs`.
//!
//!   delay_relay --delay-ms 10 [--udp LISTEN=TARGET]... [--tcp LISTEN=TARGET]...
//!
//! LISTEN and TARGET are IP:port. The delay is one way: a round trip through the relay gains
//! twice it. UDP: each client address gets its own socket towards the target, so that the
//! target's answers find their way back (QUIC keeps working; the target sees the relay's
//! address). TCP: each accepted connection gets its own connection to the target; each direction
//! is a reader thread that stamps what it reads and a writer thread that writes it when due,
//! in order, so the stream's throughput is not cut by the delay (the relay buffers a delay's
//! worth of data, as a long link does).
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Sends what arrives on `rx` once it is `delay` old: (stamp, bytes) in order.
fn delayed<F: FnMut(&[u8]) -> bool + Send + 'static>(delay: Duration, rx: Receiver<(Instant, Vec<u8>)>, mut send: F) {
    thread::spawn(move || {
        while let Ok((at, bytes)) = rx.recv() {
            let due = at + delay;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if !send(&bytes) {
                break;
            }
        }
    });
}

fn udp(delay: Duration, listen: SocketAddr, target: SocketAddr) {
    let front = Arc::new(UdpSocket::bind(listen).unwrap_or_else(|e| panic!("binding UDP {listen}: {e}")));
    // Towards the clients: one delayed sender for all answers, on the listening socket.
    let (to_client, to_client_rx) = channel::<(Instant, Vec<u8>, SocketAddr)>();
    {
        let front = front.clone();
        thread::spawn(move || {
            while let Ok((at, bytes, peer)) = to_client_rx.recv() {
                let due = at + delay;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let _ = front.send_to(&bytes, peer);
            }
        });
    }
    let clients: Arc<Mutex<HashMap<SocketAddr, Sender<(Instant, Vec<u8>)>>>> = Arc::default();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, peer)) = front.recv_from(&mut buf) else { continue };
            let at = Instant::now();
            let mut map = clients.lock().unwrap();
            let tx = map.entry(peer).or_insert_with(|| {
                let back = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("binding a UDP socket towards the target");
                back.connect(target).expect("connecting towards the target");
                let back = Arc::new(back);
                // Answers of the target: stamped here, sent back to this client when due.
                let reader = back.clone();
                let to_client = to_client.clone();
                thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = reader.recv(&mut buf) {
                        if to_client.send((Instant::now(), buf[..n].to_vec(), peer)).is_err() {
                            break;
                        }
                    }
                });
                let (tx, rx) = channel();
                delayed(delay, rx, move |b| {
                    let _ = back.send(b);
                    true
                });
                tx
            });
            let _ = tx.send((at, buf[..n].to_vec()));
        }
    });
}

/// One direction of a TCP connection: read from `from`, write to `to` `delay` later.
fn pipe(delay: Duration, mut from: TcpStream, to: TcpStream) {
    let (tx, rx) = channel::<(Instant, Vec<u8>)>();
    let mut w = to.try_clone().expect("cloning a TCP stream");
    let closer = to;
    thread::spawn(move || {
        while let Ok((at, bytes)) = rx.recv() {
            let due = at + delay;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if bytes.is_empty() {
                let _ = closer.shutdown(Shutdown::Write);
                return;
            }
            if w.write_all(&bytes).is_err() {
                let _ = closer.shutdown(Shutdown::Both);
                return;
            }
        }
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now(), Vec::new()));
                    return;
                }
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn tcp(delay: Duration, listen: SocketAddr, target: SocketAddr) {
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("binding TCP {listen}: {e}"));
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            thread::spawn(move || {
                // The connection to the target is opened at once (the SYN is not delayed: only
                // the data is; ssh and gluster exchange data before anything useful happens).
                let Ok(server) = TcpStream::connect(target) else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(delay, client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(delay, server, client);
            });
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut delay = Duration::from_millis(10);
    let mut started = 0;
    let pair = |s: String| -> (SocketAddr, SocketAddr) {
        let (l, t) = s.split_once('=').expect("LISTEN=TARGET");
        (l.parse().expect("LISTEN is IP:port"), t.parse().expect("TARGET is IP:port"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--delay-ms" => delay = Duration::from_micros((args.next().expect("--delay-ms N").parse::<f64>().expect("a number") * 1000.0) as u64),
            "--udp" => {
                let (l, t) = pair(args.next().expect("--udp LISTEN=TARGET"));
                udp(delay, l, t);
                started += 1;
            }
            "--tcp" => {
                let (l, t) = pair(args.next().expect("--tcp LISTEN=TARGET"));
                tcp(delay, l, t);
                started += 1;
            }
            _ => {
                eprintln!("usage: delay_relay --delay-ms N [--udp LISTEN=TARGET]... [--tcp LISTEN=TARGET]...");
                std::process::exit(2);
            }
        }
    }
    if started == 0 {
        eprintln!("delay_relay: nothing to relay");
        std::process::exit(2);
    }
    eprintln!("delay_relay: {started} relays, {} ms each way", delay.as_secs_f64() * 1000.0);
    loop {
        thread::park();
    }
}
