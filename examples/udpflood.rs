//! Small-packet UDP load for scripts/bench-tunnel.sh: a sender that offers datagrams in
//! sendmmsg batches (optionally as UDP GSO trains), and a receiver that counts them in
//! recvmmsg batches (with UDP GRO). iperf3 makes one syscall per datagram and tops out
//! near 150 k packets/s here, below what a gateway forwards; this offers millions.
//!
//! usage: udpflood send --to ADDR:PORT [--secs S] [--size BYTES] [--batch N] [--rate PPS]
//!                      [--gso N]
//!        udpflood recv --bind ADDR:PORT [--secs S] [--idle MS]
//!   send   datagrams of --size payload bytes (64) to --to for --secs (10), --batch (64)
//!          messages per sendmmsg, paced to --rate datagrams/s (0: as fast as it goes);
//!          --gso N: each message a UDP GSO train of N datagrams (1: none)
//!   recv   counts datagrams until --idle ms (500) pass without one after the first, or
//!          --secs (60) in all
//! Each prints one JSON object: the sender {"sent", "seconds"}, the receiver
//! {"received", "seconds"} (first to last datagram).

use clap::{Parser, Subcommand};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, setsockopt,
    sockopt,
};
use serde_json::json;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The most messages one recvmmsg takes.
const RECV_BATCH: usize = 64;
/// Room for one UDP GRO train.
const TRAIN: usize = 65_536;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Offers datagrams.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        gso: usize,
    },
    /// Counts datagrams.
    Recv {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 60.0)]
        secs: f64,
        #[arg(long, default_value_t = 500)]
        idle: u64,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().mode {
        Mode::Send {
            to,
            secs,
            size,
            batch,
            rate,
            gso,
        } => send(to, secs, size, batch.max(1), rate, gso.max(1)),
        Mode::Recv { bind, secs, idle } => recv(bind, secs, Duration::from_millis(idle)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udpflood: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "a load generator paces itself by the clock"
)]
fn clock() -> Instant {
    Instant::now()
}

fn send(
    to: SocketAddr,
    secs: f64,
    size: usize,
    batch: usize,
    rate: u64,
    gso: usize,
) -> Result<(), String> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|e| format!("{e}"))?;
    let socket = UdpSocket::bind(any).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(to)
        .map_err(|e| format!("connect {to}: {e}"))?;
    if gso > 1 {
        let segment = i32::try_from(size).map_err(|_| "--size too big for GSO")?;
        setsockopt(&socket, sockopt::UdpGsoSegment, &segment)
            .map_err(|e| format!("UDP_SEGMENT: {e}"))?;
    }
    let payload = vec![0x5a; size * gso];
    let slices: Vec<[IoSlice<'_>; 1]> = (0..batch).map(|_| [IoSlice::new(&payload)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = vec![None; batch];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch, None);
    let (start, mut sent, mut errors) = (clock(), 0u64, 0u64);
    let deadline = start + Duration::from_secs_f64(secs);
    loop {
        let now = clock();
        if now >= deadline {
            break;
        }
        if rate > 0 {
            // Paced by the total so far: a late batch is made up by the next ones.
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            if due > now {
                std::thread::sleep(due - now);
                continue;
            }
        }
        match sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            [],
            MsgFlags::empty(),
        ) {
            Ok(results) => sent += results.count() as u64 * gso as u64,
            // No route yet, a full queue, an ICMP error from the far end: count, go on.
            Err(_) => errors += 1,
        }
    }
    let seconds = clock().duration_since(start).as_secs_f64();
    println!(
        "{}",
        json!({"sent": sent, "seconds": seconds, "errors": errors})
    );
    Ok(())
}

fn recv(bind: SocketAddr, secs: f64, idle: Duration) -> Result<(), String> {
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    // Room for a burst while this process waits for a core the others hold.
    let _ = setsockopt(&socket, sockopt::RcvBufForce, &(64 << 20));
    setsockopt(&socket, sockopt::UdpGroSegment, &true).map_err(|e| format!("UDP_GRO: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| format!("{e}"))?;
    let mut storage = vec![0u8; RECV_BATCH * TRAIN];
    let begin = clock();
    let limit = begin + Duration::from_secs_f64(secs);
    let (mut received, mut first, mut last) = (0u64, None, begin);
    loop {
        let now = clock();
        if now >= limit || first.is_some() && now.duration_since(last) >= idle {
            break;
        }
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = storage
            .chunks_mut(TRAIN)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        // Made afresh for each call: nix's recvmmsg leaves each header's msg_controllen
        // as the last call shrank it, so a datagram that came without a GRO cmsg would
        // hide the next one's segment size, and its train would count as one datagram.
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, Some(nix::cmsg_space!(i32)));
        let results = match recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("recvmmsg: {e}")),
        };
        let mut got = 0u64;
        for r in results {
            let segment = r
                .cmsgs()
                .ok()
                .into_iter()
                .flatten()
                .find_map(|c| match c {
                    ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                    _ => None,
                })
                .filter(|&s| s > 0);
            got += match segment {
                Some(s) => r.bytes.div_ceil(s) as u64,
                None => 1,
            };
        }
        if got > 0 {
            let now = clock();
            first.get_or_insert(now);
            last = now;
            received += got;
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("{}", json!({"received": received, "seconds": seconds}));
    Ok(())
}
