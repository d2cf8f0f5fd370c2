//! The TUN's steering program: which worker reads each packet routed into the tunnel.
//!
//! Left to itself the kernel gives a flow the TUN queue its first packet hashes to,
//! then the queue that last wrote one of its packets. With a handful of flows that is
//! luck: 8 flows over 2 workers split 6/2 or worse in 29 % of tunnels and all land on
//! one worker in 1 of 128. This program (TUNSETSTEERINGEBPF, an eBPF socket filter)
//! gives each new flow the next worker in turn and keeps it there, so flows that start
//! together are shared as evenly as their number allows. A flow is its addresses,
//! protocol and (TCP, UDP, unfragmented) ports, remembered in an LRU map; one
//! forgotten after [`FLOWS`] newer ones is placed anew.
//! Destinations whose flows must all stay on one worker (those of an SA that is not
//! per-resource, whose sequence numbers one worker must take: `Dataplane::home`) have
//! a home there instead, found first, by longest prefix, in a trie per family, which
//! a second program writes on esptun's behalf ([`writer_program`]).
//!
//! The programs are a few dozen instructions assembled here: no BPF compiler in the
//! build and no object file to ship. The bpf(2), ioctl(2) and SO_ATTACH_BPF calls are
//! the crate's only unsafe code; no safe crate loads raw eBPF instructions.
#![allow(unsafe_code)]

use nix::libc;
use nix::sys::socket::MsgFlags;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Flows remembered (about 100 bytes of kernel memory each).
const FLOWS: u32 = 16384;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// Destination register in the low nibble, source in the high.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf.h): class | size or operation | mode or source.
const LD_ABS_B: u8 = 0x30;
const LD_ABS_H: u8 = 0x28;
const LD_ABS_W: u8 = 0x20;
const LD_IND_W: u8 = 0x40;
const LD_IMM_DW: u8 = 0x18;
const LDX_MEM_W: u8 = 0x61;
const ST_MEM_W: u8 = 0x62;
const ST_MEM_DW: u8 = 0x7a;
const STX_MEM_B: u8 = 0x73;
const STX_MEM_W: u8 = 0x63;
const STX_ATOMIC_DW: u8 = 0xdb;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_ADD_K: u8 = 0x07;
const ALU64_AND_K: u8 = 0x57;
const ALU64_LSH_K: u8 = 0x67;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_NEG: u8 = 0x87;
const ALU64_MOD_K: u8 = 0x97;
/// To big-endian (`imm` bits): undoes LD_ABS's conversion to host order.
const ALU_END_TO_BE: u8 = 0xdc;
const JMP_JA: u8 = 0x05;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const JMP_CALL: u8 = 0x85;
const JMP_EXIT: u8 = 0x95;
/// `imm` of an atomic add that also returns the old value in the source register.
const ATOMIC_FETCH_ADD: i32 = 0x01;
/// `src` of a 64-bit immediate load that names a map by its file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_MAP_UPDATE: i32 = 2;
const HELPER_MAP_DELETE: i32 = 3;
/// map_update_elem's flag: only if the key is absent.
const NOEXIST: i32 = 1;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const FP: u8 = 10;

// The stack: the flow key at FP-40 (destination address at -40, source at -24, each
// IPv4 address in the first 4 of its 16 bytes; ports at -8; protocol at -4; all in
// the packet's byte order), and before it the key of a destination's home (the prefix
// length a trie lookup takes, then the destination); the worker to store at -48, the
// turn counter's index at -52.
const HOME_KEY: i16 = -44;
const KEY: i16 = -40;
const DST: i16 = -40;
const SRC: i16 = -24;
const PORTS: i16 = -8;
const PROTO: i16 = -4;
const WORKER: i16 = -48;
const TURN_INDEX: i16 = -52;
const KEY_SIZE: u32 = 40;

/// Jump targets.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Label {
    V6,
    V4Ports,
    V6Ports,
    Lookup,
    HomeV6,
    Home,
    Flow,
    New,
    Placed,
    WorkerZero,
    TrieV6,
    Write,
    Delete,
    Written,
    Answer,
}

/// Emits instructions, jumps by label.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(Label, usize)>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: dst | src << 4,
            off,
            imm,
        });
    }

    /// r0 = the packet's byte, half-word or word at `at` (or at src + `at`), read
    /// big-endian; a packet too short ends the program with 0.
    fn load(&mut self, code: u8, src: u8, at: i32) {
        self.op(code, 0, src, 0, at);
    }

    fn map(&mut self, dst: u8, fd: &OwnedFd) {
        self.op(LD_IMM_DW, dst, PSEUDO_MAP_FD, 0, fd.as_raw_fd());
        self.op(0, 0, 0, 0, 0);
    }

    /// `dst` = FP + `offset`: a pointer into the stack, for a helper.
    fn stack_ptr(&mut self, dst: u8, offset: i16) {
        self.op(ALU64_MOV_X, dst, FP, 0, 0);
        self.op(ALU64_ADD_K, dst, 0, 0, offset.into());
    }

    /// The packet's word at `at` (or at src + `at`) into the stack at `off`, as it is
    /// in the packet.
    fn word(&mut self, code: u8, src: u8, at: i32, off: i16) {
        self.load(code, src, at);
        self.op(ALU_END_TO_BE, R0, 0, 0, 32);
        self.op(STX_MEM_W, FP, R0, off, 0);
    }

    /// r0 = a pointer to the value `map` holds for the key on the stack at `key`, or 0.
    fn lookup(&mut self, map: &OwnedFd, key: i16) {
        self.map(R1, map);
        self.stack_ptr(R2, key);
        self.op(JMP_CALL, 0, 0, 0, HELPER_MAP_LOOKUP);
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: Label) {
        self.jumps.push((self.insns.len(), to));
        self.op(code, dst, 0, 0, imm);
    }

    fn label(&mut self, label: Label) {
        self.labels.push((label, self.insns.len()));
    }

    fn ret(&mut self, src: u8) {
        self.op(ALU64_MOV_X, R0, src, 0, 0);
        self.op(JMP_EXIT, 0, 0, 0, 0);
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, to) in self.jumps {
            let target = self.labels.iter().find(|(l, _)| *l == to).expect("label").1;
            self.insns[at].off = i16::try_from(target as isize - at as isize - 1).expect("jump");
        }
        self.insns
    }
}

/// The program: the worker (TUN queue) of the packet's destination if it has a home,
/// else of its flow, a new flow taking the next in turn.
fn program(maps: &Maps, workers: u32) -> Vec<Insn> {
    use Label::*;
    let mut a = Asm::default();
    // LD_ABS reads the packet from the context in r6.
    a.op(ALU64_MOV_X, R6, R1, 0, 0);
    for off in (KEY..0).step_by(8) {
        a.op(ST_MEM_DW, FP, 0, off, 0);
    }
    a.load(LD_ABS_B, 0, 0);
    a.op(ALU64_RSH_K, R0, 0, 0, 4);
    a.jump(JMP_JEQ_K, R0, 6, V6);
    a.jump(JMP_JNE_K, R0, 4, WorkerZero);
    // r9: the home key's prefix length, all of the destination address.
    a.op(ALU64_MOV_K, R9, 0, 0, 32);
    a.word(LD_ABS_W, 0, 12, SRC);
    a.word(LD_ABS_W, 0, 16, DST);
    a.load(LD_ABS_B, 0, 9);
    a.op(STX_MEM_B, FP, R0, PROTO, 0);
    a.op(ALU64_MOV_X, R7, R0, 0, 0);
    // Only the first piece of a fragmented datagram (more-fragments or an offset) has
    // its ports: the key of every piece leaves them out.
    a.load(LD_ABS_H, 0, 6);
    a.op(ALU64_AND_K, R0, 0, 0, 0x3fff);
    a.jump(JMP_JNE_K, R0, 0, Lookup);
    a.jump(JMP_JEQ_K, R7, libc::IPPROTO_TCP, V4Ports);
    a.jump(JMP_JNE_K, R7, libc::IPPROTO_UDP, Lookup);
    a.label(V4Ports);
    a.load(LD_ABS_B, 0, 0);
    a.op(ALU64_AND_K, R0, 0, 0, 0x0f);
    a.op(ALU64_LSH_K, R0, 0, 0, 2);
    a.op(ALU64_MOV_X, R8, R0, 0, 0);
    a.word(LD_IND_W, R8, 0, PORTS);
    a.jump(JMP_JA, 0, 0, Lookup);
    a.label(V6);
    a.op(ALU64_MOV_K, R9, 0, 0, 128);
    for word in 0..4i16 {
        a.word(LD_ABS_W, 0, 8 + 4 * i32::from(word), SRC + 4 * word);
        a.word(LD_ABS_W, 0, 24 + 4 * i32::from(word), DST + 4 * word);
    }
    // Ports only right after the fixed header: an extension header leaves them out.
    a.load(LD_ABS_B, 0, 6);
    a.op(STX_MEM_B, FP, R0, PROTO, 0);
    a.jump(JMP_JEQ_K, R0, libc::IPPROTO_TCP, V6Ports);
    a.jump(JMP_JNE_K, R0, libc::IPPROTO_UDP, Lookup);
    a.label(V6Ports);
    a.word(LD_ABS_W, 0, 40, PORTS);
    a.label(Lookup);
    a.op(STX_MEM_W, FP, R9, HOME_KEY, 0);
    a.jump(JMP_JEQ_K, R9, 128, HomeV6);
    a.lookup(&maps.homes[0], HOME_KEY);
    a.jump(JMP_JA, 0, 0, Home);
    a.label(HomeV6);
    a.lookup(&maps.homes[1], HOME_KEY);
    a.label(Home);
    a.jump(JMP_JEQ_K, R0, 0, Flow);
    a.op(LDX_MEM_W, R0, R0, 0, 0);
    a.op(JMP_EXIT, 0, 0, 0, 0);
    a.label(Flow);
    a.lookup(&maps.flows, KEY);
    a.jump(JMP_JEQ_K, R0, 0, New);
    a.op(LDX_MEM_W, R0, R0, 0, 0);
    a.op(JMP_EXIT, 0, 0, 0, 0);
    a.label(New);
    a.op(ST_MEM_W, FP, 0, TURN_INDEX, 0);
    a.lookup(&maps.turn, TURN_INDEX);
    a.jump(JMP_JEQ_K, R0, 0, WorkerZero);
    a.op(ALU64_MOV_K, R7, 0, 0, 1);
    a.op(STX_ATOMIC_DW, R0, R7, 0, ATOMIC_FETCH_ADD);
    a.op(ALU64_MOD_K, R7, 0, 0, workers as i32);
    a.op(STX_MEM_W, FP, R7, WORKER, 0);
    a.map(R1, &maps.flows);
    a.stack_ptr(R2, KEY);
    a.stack_ptr(R3, WORKER);
    a.op(ALU64_MOV_K, R4, 0, 0, NOEXIST);
    a.op(JMP_CALL, 0, 0, 0, HELPER_MAP_UPDATE);
    a.jump(JMP_JEQ_K, R0, 0, Placed);
    // Another CPU placed the flow between the lookup and now: follow it.
    a.lookup(&maps.flows, KEY);
    a.jump(JMP_JEQ_K, R0, 0, Placed);
    a.op(LDX_MEM_W, R0, R0, 0, 0);
    a.op(JMP_EXIT, 0, 0, 0, 0);
    a.label(Placed);
    a.ret(R7);
    a.label(WorkerZero);
    a.op(ALU64_MOV_K, R0, 0, 0, 0);
    a.op(JMP_EXIT, 0, 0, 0, 0);
    a.finish()
}

// The trie writer's message, which its program copies to the stack at WRITE as it is:
// the worker (host order), the operation (a byte: 1 set, 0 delete; 2 for IPv6), then a
// trie key: the prefix length (host order) and the address. Padding makes it longer
// than any errno, which a refused write trims it to.
const WRITE: i16 = -28;
const WRITE_WORDS: i16 = 7;
const WRITE_OP: i32 = 4;
const WRITE_KEY: i16 = WRITE + 8;
const WRITE_LEN: usize = 4096;
const OP_SET: i32 = 1;
const OP_V6: i32 = 2;

/// The trie writer's program, a socket filter on one end of a socket pair: it writes
/// or deletes the home a message names and lets the message through whole, or
/// trimmed to the errno if the kernel refused. Map writes from a program need no
/// capability when it runs, only when it is loaded, whereas bpf(2) before Linux 5.19
/// takes CAP_BPF for anything where unprivileged BPF is off, and esptun gives CAP_BPF
/// up after start-up.
fn writer_program(maps: &Maps) -> Vec<Insn> {
    use Label::*;
    let mut a = Asm::default();
    a.op(ALU64_MOV_X, R6, R1, 0, 0);
    for word in 0..WRITE_WORDS {
        a.word(LD_ABS_W, 0, 4 * i32::from(word), WRITE + 4 * word);
    }
    a.load(LD_ABS_B, 0, WRITE_OP);
    a.op(ALU64_MOV_X, R7, R0, 0, 0);
    a.op(ALU64_AND_K, R0, 0, 0, OP_V6);
    a.jump(JMP_JNE_K, R0, 0, TrieV6);
    a.map(R1, &maps.homes[0]);
    a.jump(JMP_JA, 0, 0, Write);
    a.label(TrieV6);
    a.map(R1, &maps.homes[1]);
    a.label(Write);
    a.stack_ptr(R2, WRITE_KEY);
    a.op(ALU64_AND_K, R7, 0, 0, OP_SET);
    a.jump(JMP_JEQ_K, R7, 0, Delete);
    a.stack_ptr(R3, WRITE);
    a.op(ALU64_MOV_K, R4, 0, 0, 0);
    a.op(JMP_CALL, 0, 0, 0, HELPER_MAP_UPDATE);
    a.jump(JMP_JA, 0, 0, Written);
    a.label(Delete);
    a.op(JMP_CALL, 0, 0, 0, HELPER_MAP_DELETE);
    a.label(Written);
    // 0 written, else the errno.
    a.op(ALU64_NEG, R0, 0, 0, 0);
    a.jump(JMP_JNE_K, R0, 0, Answer);
    a.op(ALU64_MOV_K, R0, 0, 0, WRITE_LEN as i32);
    a.label(Answer);
    a.op(JMP_EXIT, 0, 0, 0, 0);
    a.finish()
}

/// Writes the homes trie through the writer program (see [`writer_program`]).
struct TrieWriter {
    /// Where messages are sent from.
    send: OwnedFd,
    /// Where they arrive, through the program.
    receive: OwnedFd,
}

impl TrieWriter {
    fn new(maps: &Maps) -> io::Result<Self> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let program = load(&writer_program(maps))?;
        let (send, receive) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        let fd: libc::c_int = program.as_raw_fd();
        // SAFETY: SO_ATTACH_BPF reads one int, a live local; the socket keeps its own
        // reference to the program.
        let ret = unsafe {
            libc::setsockopt(
                receive.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_BPF,
                (&fd as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { send, receive })
    }

    /// Sends the flows to `prefix` to `worker`, or (None) back to taking turns.
    fn home(&self, (addr, len): (IpAddr, u8), worker: Option<usize>) -> io::Result<()> {
        let mut message = vec![0u8; WRITE_LEN];
        let worker = worker.map(|w| u32::try_from(w).map_err(|_| io::ErrorKind::InvalidInput));
        if let Some(w) = worker.transpose()? {
            message[..4].copy_from_slice(&w.to_ne_bytes());
            message[WRITE_OP as usize] = OP_SET as u8;
        }
        message[8..12].copy_from_slice(&u32::from(len).to_ne_bytes());
        match addr {
            IpAddr::V4(a) => message[12..16].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => {
                message[WRITE_OP as usize] |= OP_V6 as u8;
                message[12..28].copy_from_slice(&a.octets());
            }
        }
        nix::sys::socket::send(self.send.as_raw_fd(), &message, MsgFlags::empty())?;
        let mut back = vec![0u8; WRITE_LEN];
        match nix::sys::socket::recv(self.receive.as_raw_fd(), &mut back, MsgFlags::empty()) {
            Ok(WRITE_LEN) => Ok(()),
            Ok(errno) => Err(io::Error::from_raw_os_error(errno as i32)),
            Err(e) => Err(io::Error::other(format!(
                "the trie writer passed nothing back ({e})"
            ))),
        }
    }
}

/// bpf(2) with one command's attributes.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is one command's `union bpf_attr` prefix, passed with its size;
    // the pointers in it name buffers that outlive the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn fd(ret: libc::c_long) -> OwnedFd {
    let raw = i32::try_from(ret).expect("bpf(2) returns a file descriptor");
    // SAFETY: bpf(2) just returned this new descriptor, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

const MAP_CREATE: libc::c_int = 0;
const PROG_LOAD: libc::c_int = 5;
const MAP_TYPE_ARRAY: u32 = 2;
const MAP_TYPE_LRU_HASH: u32 = 9;
const MAP_TYPE_LPM_TRIE: u32 = 11;
/// map_flags an LPM trie requires: entries allocated as added.
const NO_PREALLOC: u32 = 1;
/// Destinations with a home, per family.
const HOMES: u32 = 65536;
const PROG_TYPE_SOCKET_FILTER: u32 = 1;
const LICENSE: &[u8] = b"MIT OR Apache-2.0\0";

fn map(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> io::Result<OwnedFd> {
    let map_flags = if map_type == MAP_TYPE_LPM_TRIE {
        NO_PREALLOC
    } else {
        0
    };
    let mut attr = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    bpf(MAP_CREATE, &mut attr).map(fd)
}

/// The program's maps.
struct Maps {
    /// Each flow's worker.
    flows: OwnedFd,
    /// The count of new flows, whose next worker it names.
    turn: OwnedFd,
    /// Destinations whose flows all go to one worker, by longest prefix: IPv4, IPv6.
    homes: [OwnedFd; 2],
}

impl Maps {
    fn new() -> io::Result<Self> {
        Ok(Self {
            flows: map(MAP_TYPE_LRU_HASH, KEY_SIZE, 4, FLOWS)?,
            turn: map(MAP_TYPE_ARRAY, 4, 8, 1)?,
            homes: [
                map(MAP_TYPE_LPM_TRIE, 4 + 4, 4, HOMES)?,
                map(MAP_TYPE_LPM_TRIE, 4 + 16, 4, HOMES)?,
            ],
        })
    }
}

/// Loads a socket filter program; the verifier's last words on refusal.
fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let mut log = Vec::new();
    loop {
        let mut attr = ProgLoad {
            prog_type: PROG_TYPE_SOCKET_FILTER,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
        };
        match bpf(PROG_LOAD, &mut attr) {
            Ok(ret) => return Ok(fd(ret)),
            Err(e) if log.is_empty() && e.raw_os_error() != Some(libc::EPERM) => {
                log = vec![0u8; 1 << 16];
            }
            Err(e) if log.is_empty() => return Err(e),
            Err(e) => {
                let text = String::from_utf8_lossy(&log);
                // The error is the last line before the statistics.
                let last = text
                    .trim_end_matches('\0')
                    .lines()
                    .rev()
                    .find(|l| {
                        !l.is_empty()
                            && !l.starts_with("processed")
                            && !l.starts_with("verification time")
                    })
                    .unwrap_or("");
                return Err(io::Error::new(e.kind(), format!("{e}: verifier: {last}")));
            }
        }
    }
}

/// The steering program of a TUN device, attached until dropped.
pub struct Steering {
    /// One of the device's queues (a duplicate descriptor), to detach through.
    queue: OwnedFd,
    /// Writes the program's homes trie.
    writer: TrieWriter,
    /// What the homes trie holds.
    homes: Homes,
}

/// Prefixes with a home, each with the SAs that want it there (inbound SPI and
/// worker), the one set last deciding.
#[derive(Default)]
struct Homes(HashMap<(IpAddr, u8), Vec<(u32, usize)>>);

impl Homes {
    /// Sets (Some) or clears (None) SA `spi_in`'s wish for `prefix`; the prefix's new
    /// home (None: turns) if that changed it.
    fn set(
        &mut self,
        spi_in: u32,
        prefix: (IpAddr, u8),
        worker: Option<usize>,
    ) -> Option<Option<usize>> {
        let stack = self.0.entry(prefix).or_default();
        let before = stack.last().map(|&(_, w)| w);
        stack.retain(|&(spi, _)| spi != spi_in);
        stack.extend(worker.map(|w| (spi_in, w)));
        let now = stack.last().map(|&(_, w)| w);
        if stack.is_empty() {
            self.0.remove(&prefix);
        }
        (now != before).then_some(now)
    }
}

impl Steering {
    /// Loads the program for `workers` queues and attaches it to `queue`'s device.
    pub fn attach(queue: &impl AsFd, workers: usize) -> io::Result<Self> {
        let workers = u32::try_from(workers).map_err(|_| io::ErrorKind::InvalidInput)?;
        let maps = Maps::new()?;
        let program = load(&program(&maps, workers))?;
        let writer = TrieWriter::new(&maps)?;
        let queue = queue.as_fd().try_clone_to_owned()?;
        set_steering(&queue, program.as_raw_fd())?;
        Ok(Self {
            queue,
            writer,
            homes: Homes::default(),
        })
    }

    /// From now on the flows to `prefixes` all go to `worker` for SA `spi_in` (the
    /// destinations of an SA that one worker must seal), or with None no longer for
    /// it: to the worker of the SA that set the prefix before, or in turns again.
    pub fn home(
        &mut self,
        spi_in: u32,
        prefixes: impl IntoIterator<Item = (IpAddr, u8)>,
        worker: Option<usize>,
    ) -> io::Result<()> {
        for prefix in prefixes {
            if let Some(now) = self.homes.set(spi_in, prefix, worker) {
                self.writer.home(prefix, now)?;
            }
        }
        Ok(())
    }
}

impl Drop for Steering {
    /// Detaches the program: the kernel places flows again.
    fn drop(&mut self) {
        let _ = set_steering(&self.queue, -1);
    }
}

/// Attaches program `fd` to `queue`'s device, or with -1 detaches its program.
fn set_steering(queue: &OwnedFd, fd: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETSTEERINGEBPF reads one int through the pointer, which is live; the
    // device keeps its own reference to the program.
    let ret = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETSTEERINGEBPF, &fd) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        /// Written back by the kernel whatever the size passed.
        duration: u32,
    }

    const PROG_TEST_RUN: libc::c_int = 10;

    /// The program's answer for one IP packet (after the Ethernet header the test run
    /// strips, as a TUN has none).
    fn run(prog: &OwnedFd, ip: &[u8]) -> u32 {
        let ethertype: [u8; 2] = if ip[0] >> 4 == 6 {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(ip);
        let mut attr = TestRun {
            prog_fd: prog.as_raw_fd() as u32,
            retval: 0,
            data_size_in: frame.len() as u32,
            data_size_out: 0,
            data_in: frame.as_ptr() as u64,
            data_out: 0,
            repeat: 1,
            duration: 0,
        };
        bpf(PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN");
        attr.retval
    }

    fn v4(proto: u8, src: [u8; 4], sport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 48, 0, 0, 0, 0, 64, proto, 0, 0];
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&[10, 2, 0, 1]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&5201u16.to_be_bytes());
        p.resize(48, 0);
        p
    }

    fn v6(next: u8, sport: u16) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 8, next, 64];
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8].repeat(4));
        p.extend_from_slice(&[0xfd, 0, 0, 2].repeat(4));
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&5201u16.to_be_bytes());
        p.resize(48, 0);
        p
    }

    fn loaded(workers: usize) -> Option<(Maps, OwnedFd)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: loading eBPF needs root (CAP_BPF)");
            return None;
        }
        let maps = Maps::new().expect("the maps are created");
        let workers = u32::try_from(workers).unwrap();
        let prog = load(&program(&maps, workers)).expect("the steering program loads");
        Some((maps, prog))
    }

    #[test]
    fn new_flows_take_workers_in_turn_and_keep_them() {
        let Some((_maps, prog)) = loaded(2) else {
            return;
        };
        let flows: Vec<Vec<u8>> = (0..8)
            .map(|i| v4(libc::IPPROTO_TCP as u8, [10, 1, 0, 1], 40000 + i, 0))
            .chain((0..4).map(|i| v6(libc::IPPROTO_UDP as u8, 50000 + i)))
            .collect();
        let first: Vec<u32> = flows.iter().map(|p| run(&prog, p)).collect();
        let expected: Vec<u32> = (0..12).map(|i| i % 2).collect();
        assert_eq!(first, expected, "new flows alternate between the 2 workers");
        for _ in 0..3 {
            let again: Vec<u32> = flows.iter().rev().map(|p| run(&prog, p)).collect();
            assert!(
                again.iter().eq(first.iter().rev()),
                "a flow stays on its worker"
            );
        }
    }

    #[test]
    fn flows_are_addresses_protocol_and_ports() {
        let Some((_maps, prog)) = loaded(3) else {
            return;
        };
        let tcp = libc::IPPROTO_TCP as u8;
        let udp = libc::IPPROTO_UDP as u8;
        let icmp = libc::IPPROTO_ICMP as u8;
        // Each a new flow: another port, protocol or source address.
        let packets = [
            v4(tcp, [10, 1, 0, 1], 1000, 0),
            v4(udp, [10, 1, 0, 1], 1000, 0),
            v4(tcp, [10, 1, 0, 1], 1001, 0),
            v4(tcp, [10, 1, 0, 2], 1000, 0),
            v4(icmp, [10, 1, 0, 1], 1000, 0),
            v6(tcp, 1000),
        ];
        let placed: Vec<u32> = packets.iter().map(|p| run(&prog, p)).collect();
        assert_eq!(placed, [0, 1, 2, 0, 1, 2]);
        // ICMP has no ports: other bytes there are the same flow.
        assert_eq!(run(&prog, &v4(icmp, [10, 1, 0, 1], 7, 0)), 1);
        // The fragments of one datagram are one flow whatever their first bytes, and
        // not the unfragmented datagrams of its ports.
        let more_fragments = 0x2000;
        let first = run(&prog, &v4(udp, [10, 1, 0, 9], 1000, more_fragments));
        assert_eq!(first, 0);
        assert_eq!(run(&prog, &v4(udp, [10, 1, 0, 9], 2000, 185)), first);
        assert_eq!(run(&prog, &v4(udp, [10, 1, 0, 9], 1000, 0)), 1);
        // Cut short of its ports: the first worker, nothing remembered.
        assert_eq!(run(&prog, &v4(tcp, [10, 1, 0, 5], 1, 0)[..22]), 0);
        assert_eq!(run(&prog, &v4(tcp, [10, 1, 0, 5], 1, 0)), 2);
    }

    #[test]
    fn a_destination_with_a_home_sends_every_flow_there() {
        let Some((maps, prog)) = loaded(2) else {
            return;
        };
        let trie = TrieWriter::new(&maps).expect("the trie writer loads");
        let tcp = libc::IPPROTO_TCP as u8;
        let to = |dst: [u8; 4], sport: u16| {
            let mut p = v4(tcp, [10, 1, 0, 1], sport, 0);
            p[16..20].copy_from_slice(&dst);
            p
        };
        let net = (IpAddr::from([10, 2, 0, 0]), 24);
        trie.home(net, Some(1)).unwrap();
        trie.home((IpAddr::from([10, 2, 0, 7]), 32), Some(0))
            .unwrap();
        let v6_net = (IpAddr::from([0xfd00, 2, 0xfd00, 2, 0, 0, 0, 0]), 64);
        trie.home(v6_net, Some(1)).unwrap();
        for sport in 1..=6 {
            assert_eq!(run(&prog, &to([10, 2, 0, 9], sport)), 1, "the /24's home");
            assert_eq!(
                run(&prog, &to([10, 2, 0, 7], sport)),
                0,
                "the longer prefix's"
            );
            assert_eq!(run(&prog, &v6(tcp, sport)), 1, "the IPv6 /64's");
        }
        // Without a home, new flows take turns; with it gone, so do the net's.
        let elsewhere: Vec<u32> = (1..=4).map(|p| run(&prog, &to([10, 3, 0, 1], p))).collect();
        assert_eq!(elsewhere, [0, 1, 0, 1]);
        trie.home(net, None).unwrap();
        let again = trie.home(net, None).expect_err("deleted already");
        assert_eq!(
            again.raw_os_error(),
            Some(libc::ENOENT),
            "the kernel's errno comes back"
        );
        let freed: Vec<u32> = (1..=4).map(|p| run(&prog, &to([10, 2, 0, 9], p))).collect();
        assert_eq!(freed, [0, 1, 0, 1]);
        assert_eq!(run(&prog, &to([10, 2, 0, 7], 9)), 0);
    }

    #[test]
    fn the_sa_set_last_decides_a_prefix_and_only_changes_are_written() {
        let mut homes = Homes::default();
        let net = (IpAddr::from([10, 2, 0, 0]), 24);
        assert_eq!(homes.set(1, net, Some(0)), Some(Some(0)));
        assert_eq!(homes.set(2, net, Some(1)), Some(Some(1)));
        // Set again where it already is: nothing to write.
        assert_eq!(homes.set(2, net, Some(1)), None);
        assert_eq!(homes.set(3, net, Some(1)), None);
        // An SA that never set it (a per-resource one) clears nothing.
        assert_eq!(homes.set(9, net, None), None);
        assert_eq!(homes.set(3, net, None), None);
        assert_eq!(homes.set(2, net, None), Some(Some(0)));
        assert_eq!(homes.set(1, net, None), Some(None));
        assert!(homes.0.is_empty());
    }

    #[test]
    fn the_trie_is_written_without_privilege() {
        let Some((maps, prog)) = loaded(2) else {
            return;
        };
        let trie = TrieWriter::new(&maps).expect("the trie writer loads");
        // Capabilities are a thread's: this one gives up what bpf(2) wants before
        // Linux 5.19, as the control thread does after start-up.
        std::thread::scope(|s| {
            s.spawn(|| {
                use caps::{CapSet, Capability};
                for cap in [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN] {
                    caps::drop(None, CapSet::Effective, cap).unwrap();
                }
                trie.home((IpAddr::from([10, 2, 0, 0]), 16), Some(1))
                    .expect("written by the program");
            });
        });
        let mut p = v4(libc::IPPROTO_UDP as u8, [10, 1, 0, 1], 7, 0);
        for sport in 1..=3u16 {
            p[20..22].copy_from_slice(&sport.to_be_bytes());
            assert_eq!(run(&prog, &p), 1);
        }
    }
}
