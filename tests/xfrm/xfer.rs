//! A TCP transfer with a checksum, for the XFRM VM, whose busybox `nc` loses data:
//!
//!   xfer listen ADDR:PORT          accepts one connection, reads it to the end,
//!                                  prints "BYTES SHA256"
//!   xfer send ADDR:PORT BYTES      sends BYTES pseudo-random bytes, prints the same
use aws_lc_rs::digest::{Context, SHA256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1..).unwrap_or_default() {
        [cmd, addr] if cmd == "listen" => listen(addr),
        [cmd, addr, bytes] if cmd == "send" => bytes
            .parse()
            .map_err(|e| format!("{bytes}: {e}"))
            .and_then(|n| send(addr, n)),
        _ => Err("usage: xfer listen ADDR:PORT | xfer send ADDR:PORT BYTES".into()),
    };
    match result {
        Ok((n, hash)) => println!("{n} {hash}"),
        Err(e) => {
            eprintln!("xfer: {e}");
            std::process::exit(1);
        }
    }
}

fn listen(addr: &str) -> Result<(u64, String), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut hash = Context::new(&SHA256);
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok((total, hex::encode(hash.finish())));
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

fn send(addr: &str, bytes: u64) -> Result<(u64, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut hash = Context::new(&SHA256);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 65536];
    let mut left = bytes;
    while left > 0 {
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            // xorshift64: data no compressor or offload shortcut can guess.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        stream.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // Wait for the listener to close: everything was read.
    let _ = stream.read(&mut [0u8; 1]);
    Ok((bytes, hex::encode(hash.finish())))
}
