//! A real DNS server for tests: authoritative answers from an in-memory
//! table, over UDP and TCP on one loopback port, in threads of its own (so
//! it serves sync tests, tokio tests and child processes alike).
//!
//! It is what the sender-authentication tests resolve SPF, DKIM, DMARC and
//! ARC records through, and what a test daemon or a filter (OpenDKIM,
//! OpenDMARC) can be pointed at: `sluice_dns_servers = 127.0.0.1:PORT` in
//! main.cf, or [`DnsServer::start_on`] port 53 of a spare 127.0.0.0/8
//! address for resolvers that cannot name a port. Records can be changed
//! while it runs, a name can be made to fail (SERVFAIL) or to go silent
//! (queries dropped, as a dead server), and every question asked is
//! recorded.
//!
//! Semantics kept from real DNS because the code under test depends on
//! them: NXDOMAIN for a name with nothing at or below it, an empty NOERROR
//! answer for a name that exists with other types (and for an empty
//! non-terminal such as `_domainkey.example.test` when
//! `sel._domainkey.example.test` exists), both with an SOA record so they
//! are cached as negative answers, EDNS payload sizes honoured, and
//! UDP answers that do not fit sent truncated so the client retries over
//! TCP (a 2048-bit DKIM key does not fit in 512 bytes).
//!
//! Never listens beyond loopback unless told to, never recurses, never
//! forwards.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Answers' TTL by default: short, so a test that changes a record
/// mid-run is not misled for long by a cache.
const TTL: u32 = 5;

/// The records and misbehaviours, shared with the serving threads.
#[derive(Debug)]
struct Zone {
    ttl: u32,
    /// (lower-case name without the trailing dot, type) → data.
    records: HashMap<(String, RecordType), Vec<RData>>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
    /// Every question, as `name TYPE`, in arrival order.
    asked: Vec<String>,
    /// Queries that came over TCP.
    tcp: usize,
}

impl Default for Zone {
    fn default() -> Zone {
        Zone {
            ttl: TTL,
            records: HashMap::new(),
            servfail: HashSet::new(),
            silent: HashSet::new(),
            asked: Vec::new(),
            tcp: 0,
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(text: &str) -> Name {
    let fqdn = format!("{}.", text.trim_end_matches('.'));
    Name::from_ascii(&fqdn).unwrap_or_else(|e| panic!("bad DNS name {text:?}: {e}"))
}

impl Zone {
    /// True when `name` or a name below it has records (RFC 8020: a name
    /// with descendants exists even without records of its own).
    fn exists(&self, name: &str) -> bool {
        let below = format!(".{name}");
        self.records.keys().any(|(n, _)| n == name || n.ends_with(&below))
    }

    /// The SOA record a negative answer carries (RFC 2308), so resolvers
    /// cache "no such name" as they do with real DNS. Its owner is the
    /// name's last two labels, standing in for the zone apex.
    fn soa(&self, qname: &str) -> Record {
        let labels: Vec<&str> = qname.split('.').collect();
        let apex = labels[labels.len().saturating_sub(2)..].join(".");
        let soa = SOA::new(
            name(&format!("ns.{apex}")),
            name(&format!("hostmaster.{apex}")),
            1,
            3600,
            600,
            86_400,
            self.ttl,
        );
        Record::from_rdata(name(&apex), self.ttl, RData::SOA(soa))
    }

    /// The answer to one query, or `None` to stay silent.
    fn answer(&mut self, query: &Message) -> Option<Message> {
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.message_type = MessageType::Response;
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        if let Some(edns) = &query.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(edns.max_payload().max(512));
            response.set_edns(ours);
        }
        let Some(q) = query.queries.first() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Some(response);
        };
        response.add_query(q.clone());
        if query.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Some(response);
        }
        let qname = key(&q.name().to_ascii());
        self.asked.push(format!("{qname} {}", q.query_type()));
        if self.silent.contains(&qname) {
            return None;
        }
        if self.servfail.contains(&qname) {
            response.metadata.response_code = ResponseCode::ServFail;
            return Some(response);
        }
        match self.records.get(&(qname.clone(), q.query_type())) {
            Some(data) => {
                for d in data {
                    response.add_answer(Record::from_rdata(q.name().clone(), self.ttl, d.clone()));
                }
            }
            None if self.exists(&qname) => {
                response.add_authority(self.soa(&qname));
            }
            None => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(self.soa(&qname));
            }
        }
        Some(response)
    }
}

/// A running DNS server; stopped (threads joined) on drop.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// A server on 127.0.0.1 with a free port (the same port for UDP and
    /// TCP) and no records.
    pub fn start() -> DnsServer {
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP on 127.0.0.1");
            let addr = udp.local_addr().expect("local addr");
            // The TCP side of a free UDP port may be taken: try another.
            if let Ok(tcp) = TcpListener::bind(addr) {
                return DnsServer::serve(udp, tcp);
            }
        }
        panic!("no port free for both UDP and TCP on 127.0.0.1");
    }

    /// A server on a given address (e.g. `127.0.0.53:53`, as root, for a
    /// peer whose resolver cannot be told a port).
    pub fn start_on(addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(udp.local_addr()?)?;
        Ok(DnsServer::serve(udp, tcp))
    }

    fn serve(udp: UdpSocket, tcp: TcpListener) -> DnsServer {
        let addr = udp.local_addr().expect("local addr");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        // Short timeouts so the threads notice `stop` soon after drop.
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("udp timeout");
        tcp.set_nonblocking(true).expect("nonblocking listener");
        let udp_thread = {
            let (zone, stop) = (Arc::clone(&zone), Arc::clone(&stop));
            std::thread::spawn(move || serve_udp(&udp, &zone, &stop))
        };
        let tcp_thread = {
            let (zone, stop) = (Arc::clone(&zone), Arc::clone(&stop));
            std::thread::spawn(move || serve_tcp(&tcp, &zone, &stop))
        };
        DnsServer { addr, zone, stop, threads: vec![udp_thread, tcp_thread] }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn add(&self, owner: &str, rtype: RecordType, data: RData) -> &DnsServer {
        self.zone.lock().expect("zone").records.entry((key(owner), rtype)).or_default().push(data);
        self
    }

    /// Adds a TXT record; text longer than 255 bytes is split into
    /// character-strings as a zone file would (DKIM keys).
    pub fn txt(&self, owner: &str, text: &str) -> &DnsServer {
        let pieces: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).expect("TXT text is ASCII"))
            .collect();
        self.add(owner, RecordType::TXT, RData::TXT(TXT::new(pieces)))
    }

    /// Adds an A record.
    pub fn a(&self, owner: &str, addr: Ipv4Addr) -> &DnsServer {
        self.add(owner, RecordType::A, RData::A(A(addr)))
    }

    /// Adds an AAAA record.
    pub fn aaaa(&self, owner: &str, addr: Ipv6Addr) -> &DnsServer {
        self.add(owner, RecordType::AAAA, RData::AAAA(AAAA(addr)))
    }

    /// Adds an A or AAAA record, by the address's family.
    pub fn ip(&self, owner: &str, addr: IpAddr) -> &DnsServer {
        match addr {
            IpAddr::V4(a) => self.a(owner, a),
            IpAddr::V6(a) => self.aaaa(owner, a),
        }
    }

    /// Adds an MX record.
    pub fn mx(&self, owner: &str, preference: u16, exchange: &str) -> &DnsServer {
        self.add(owner, RecordType::MX, RData::MX(MX::new(preference, name(exchange))))
    }

    /// Adds a PTR record for `addr` (under in-addr.arpa or ip6.arpa).
    pub fn ptr(&self, addr: IpAddr, target: &str) -> &DnsServer {
        let owner = Name::from(addr).to_ascii();
        self.add(&owner, RecordType::PTR, RData::PTR(PTR(name(target))))
    }

    /// Sets the TTL of answers from now on (a benchmark wants the
    /// resolver's cache to hold them for its whole run).
    pub fn ttl(&self, seconds: u32) -> &DnsServer {
        self.zone.lock().expect("zone").ttl = seconds;
        self
    }

    /// Removes every record of `owner`.
    pub fn remove(&self, owner: &str) -> &DnsServer {
        let k = key(owner);
        self.zone.lock().expect("zone").records.retain(|(n, _), _| *n != k);
        self
    }

    /// Every query for `owner` gets SERVFAIL (a broken authoritative
    /// server: a temporary error to the client).
    pub fn servfail(&self, owner: &str) -> &DnsServer {
        self.zone.lock().expect("zone").servfail.insert(key(owner));
        self
    }

    /// Queries for `owner` are dropped unanswered, so only the client's
    /// own timeout ends them.
    pub fn silence(&self, owner: &str) -> &DnsServer {
        self.zone.lock().expect("zone").silent.insert(key(owner));
        self
    }

    /// Answers `owner` normally again.
    pub fn heal(&self, owner: &str) -> &DnsServer {
        let k = key(owner);
        let mut z = self.zone.lock().expect("zone");
        z.servfail.remove(&k);
        z.silent.remove(&k);
        self
    }

    /// How many queries came over TCP (after a truncated UDP answer).
    pub fn tcp_queries(&self) -> usize {
        self.zone.lock().expect("zone").tcp
    }

    /// The questions asked so far, as `name TYPE` (lower case, no trailing
    /// dot), in order.
    pub fn asked(&self) -> Vec<String> {
        self.zone.lock().expect("zone").asked.clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Encodes the answer to `packet`, truncated to `limit` bytes the DNS way
/// (question only, TC set) when it does not fit; `None` when the server
/// stays silent or the packet is not a query.
fn respond(zone: &Mutex<Zone>, packet: &[u8], limit: Option<usize>) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let response = {
        let mut z = zone.lock().expect("zone");
        if limit.is_none() {
            z.tcp += 1;
        }
        z.answer(&query)?
    };
    let bytes = response.to_vec().ok()?;
    match limit {
        Some(max) if bytes.len() > max.max(usize::from(query.max_payload())) => {
            response.truncate().to_vec().ok()
        }
        _ => Some(bytes),
    }
}

fn serve_udp(socket: &UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        if let Some(answer) = respond(zone, &buf[..n], Some(512)) {
            let _ = socket.send_to(&answer, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, zone: &Arc<Mutex<Zone>>, stop: &Arc<AtomicBool>) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (Arc::clone(zone), Arc::clone(stop));
                connections.push(std::thread::spawn(move || serve_connection(stream, &zone, &stop)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        connections.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in connections {
        let _ = c.join();
    }
}

/// One TCP connection: length-prefixed queries until the client closes it
/// (or the server stops).
fn serve_connection(mut stream: TcpStream, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                continue;
            }
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let packet: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            if let Some(answer) = respond(zone, &packet, None) {
                let Ok(len) = u16::try_from(answer.len()) else { continue };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).is_err() {
                    return;
                }
            }
        }
    }
}
