//! Tests of the TLS session against rustls's buffered API on the other side.

use super::*;
use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
use std::io::{Read, Write};

fn configs(tls12: bool) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let c = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
    let key = PrivateKeyDer::from_pem_slice(c.key_pair.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// A session and rustls's buffered API on the other side, bytes moved `chunk` at a time.
struct Pair {
    s: Session,
    peer: rustls::Connection,
    chunk: usize,
    /// Plaintext the session read.
    got: Vec<u8>,
    /// At most this much taken per sink call (the rest is stashed).
    room: usize,
    /// Plaintext the peer read.
    peer_got: Vec<u8>,
    /// Every chunk processed where it is (`read_from`), not every other one.
    in_place: bool,
}

impl Pair {
    fn new(server_side: bool, tls12: bool, chunk: usize, room: usize) -> Pair {
        let (sc, cc) = configs(tls12);
        let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
        let (s, peer) = if server_side {
            let peer = rustls::ClientConnection::new(cc, name).unwrap();
            (Session::server(sc).unwrap(), peer.into())
        } else {
            let peer = rustls::ServerConnection::new(sc).unwrap();
            (Session::client(cc, name).unwrap(), peer.into())
        };
        Pair {
            s,
            peer,
            chunk,
            got: Vec::new(),
            room,
            peer_got: Vec::new(),
            in_place: false,
        }
    }

    /// The session's records to the peer.
    fn send_to_peer(&mut self) {
        let (out, n) = self.s.take_outgoing();
        for c in out[..n].chunks(self.chunk) {
            let mut rd = c;
            while !rd.is_empty() {
                self.peer.read_tls(&mut rd).unwrap();
                self.peer.process_new_packets().unwrap();
                // Its buffer takes no more while it holds 16 KiB of plaintext.
                let got = self.peer_plaintext();
                self.peer_got.extend_from_slice(&got);
            }
        }
        self.s.put_outgoing(out);
    }

    /// The peer's records to the session, which reads them.
    fn take_from_peer(&mut self) -> io::Result<()> {
        let mut bytes = Vec::new();
        while self.peer.wants_write() {
            self.peer.write_tls(&mut bytes).unwrap();
        }
        let room = self.room;
        for (i, c) in bytes.chunks(self.chunk).enumerate() {
            let got = &mut self.got;
            let mut sink = |b: &[u8]| {
                let k = b.len().min(room);
                got.extend_from_slice(&b[..k]);
                k
            };
            // Every other chunk is processed where it is (as a ring buffer is), the
            // others appended first.
            if self.in_place || i % 2 == 0 {
                self.s.read_from(&mut c.to_vec(), &mut sink)?;
            } else {
                self.s.received(c);
                self.s.read(&mut sink)?;
            }
            let n = self.s.stashed().len();
            self.got.extend_from_slice(self.s.stashed());
            self.s.consume_stash(n);
        }
        Ok(())
    }

    fn handshake(&mut self) {
        self.s.read(&mut |_| 0).unwrap();
        for _ in 0..10 {
            self.send_to_peer();
            self.take_from_peer().unwrap();
            if !self.s.is_handshaking() && !self.peer.is_handshaking() {
                self.send_to_peer();
                return;
            }
        }
        panic!("no handshake");
    }

    fn peer_plaintext(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match self.peer.reader().read(&mut b) {
                Ok(0) => break,
                Ok(n) => v.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        v
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn records_cut_anywhere_arrive_whole_and_in_order_both_ways() {
    for server_side in [true, false] {
        for tls12 in [false, true] {
            for (chunk, room) in [(1, 100), (7, 1 << 20), (1000, 5), (1 << 20, 1 << 20)] {
                let mut p = Pair::new(server_side, tls12, chunk, room);
                p.handshake();
                let want = if tls12 {
                    rustls::ProtocolVersion::TLSv1_2
                } else {
                    rustls::ProtocolVersion::TLSv1_3
                };
                assert_eq!(p.s.protocol_version(), Some(want));
                // The peer to the session: 100 KiB, several records.
                let up = pattern(100 * 1024 + 3);
                for part in up.chunks(30_000) {
                    p.peer.writer().write_all(part).unwrap();
                    p.take_from_peer().unwrap();
                }
                assert!(p.got == up, "{server_side} {tls12} {chunk} {room}");
                // The session to the peer, in parts of every size.
                let down = pattern(70 * 1024);
                for part in [&down[..1], &down[1..20_000], &down[20_000..]] {
                    p.s.write(part).unwrap();
                }
                p.send_to_peer();
                assert!(p.peer_got == down);
                // close_notify ends the session's reads.
                p.peer.send_close_notify();
                p.take_from_peer().unwrap();
                assert!(p.s.peer_closed());
            }
        }
    }
}

#[test]
fn plaintext_that_arrives_while_writing_waits_for_the_reader_in_order() {
    let mut p = Pair::new(true, false, 1 << 20, 1 << 20);
    p.handshake();
    p.peer.writer().write_all(b"first ").unwrap();
    let mut bytes = Vec::new();
    while p.peer.wants_write() {
        p.peer.write_tls(&mut bytes).unwrap();
    }
    p.s.received(&bytes);
    assert!(p.s.has_unprocessed());
    // The write processes the waiting record: its plaintext is kept.
    p.s.write(b"answer").unwrap();
    assert_eq!(p.s.stashed(), b"first ");
    // More plaintext read now goes behind it, not to the sink.
    p.peer.writer().write_all(b"second").unwrap();
    p.room = 0;
    p.take_from_peer().unwrap();
    assert_eq!(p.got, b"first second");
    p.send_to_peer();
    assert_eq!(p.peer_got, b"answer");
}

#[test]
fn bytes_that_are_not_tls_fail_with_an_alert_to_send() {
    let (sc, _) = configs(false);
    let mut s = Session::server(sc).unwrap();
    s.received(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(s.read(&mut |_| 0).is_err());
    assert!(s.wants_write(), "the alert waits to be sent");
    // The session stays failed.
    assert!(s.write(b"x").is_err());
}

#[test]
fn a_partial_record_waits_and_idle_buffers_are_freed() {
    let mut p = Pair::new(true, false, 1 << 20, 1 << 20);
    p.handshake();
    p.peer.writer().write_all(&pattern(5000)).unwrap();
    let mut bytes = Vec::new();
    while p.peer.wants_write() {
        p.peer.write_tls(&mut bytes).unwrap();
    }
    p.s.received(&bytes[..100]);
    // As when a ring buffer's worth was appended.
    p.s.inc.reserve(64 * 1024);
    p.s.read(&mut |_| panic!("no plaintext yet")).unwrap();
    assert!(!p.s.has_unprocessed(), "nothing to do until more comes");
    // A read that may be cut short is not given the bytes waiting for the rest.
    assert!(p.s.lend_incoming().is_none());
    // Freed while idle, except the ciphertext kept.
    p.s.release_buffers();
    assert_eq!(p.s.inc.len(), 100);
    assert!(
        p.s.inc.capacity() <= RECORD,
        "kept in a buffer of a record's size"
    );
    assert_eq!(p.s.out.capacity(), 0);
    p.s.received(&bytes[100..]);
    assert!(p.s.has_unprocessed());
    let mut got = Vec::new();
    p.s.read(&mut |b| {
        got.extend_from_slice(b);
        b.len()
    })
    .unwrap();
    assert_eq!(got, pattern(5000));
    assert!(p.s.inc.is_empty());
}

#[test]
fn handshake_messages_cut_across_records_are_read_in_place() {
    // The server's flight in 64-byte records: rustls keeps each handshake message's parts
    // where they are in the buffer until the message is whole, across `read_from` calls
    // whose unconsumed ends are copied into the session.
    for tls12 in [false, true] {
        for chunk in (1..200).chain([333, 399, 4096]) {
            let (sc, cc) = configs(tls12);
            let mut sc = (*sc).clone();
            sc.max_fragment_size = Some(64);
            let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
            let peer = rustls::ServerConnection::new(Arc::new(sc)).unwrap();
            let mut p = Pair::new(false, tls12, chunk, 1 << 20);
            p.s = Session::client(cc, name).unwrap();
            p.peer = peer.into();
            p.in_place = true;
            p.handshake();
            let up = pattern(5000);
            p.peer.writer().write_all(&up).unwrap();
            p.take_from_peer().unwrap();
            assert!(p.got == up, "{tls12} {chunk}");
        }
    }
}

#[test]
fn the_rest_of_a_record_is_completed_and_what_follows_decrypted_in_place() {
    let mut p = Pair::new(true, false, 1 << 20, 1 << 20);
    p.handshake();
    let mut bytes = Vec::new();
    for part in [pattern(3000), pattern(4000)] {
        p.peer.writer().write_all(&part).unwrap();
        while p.peer.wants_write() {
            p.peer.write_tls(&mut bytes).unwrap();
        }
    }
    let first = 5 + u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
    assert!(first < bytes.len(), "two records");
    // The first part of the first record waits in the session.
    p.s.received(&bytes[..100]);
    p.s.read(&mut |_| 0).unwrap();
    // The rest of it, and the whole second record, arrive in one buffer.
    let mut buf = bytes[100..].to_vec();
    let mut got = Vec::new();
    p.s.read_from(&mut buf, &mut |b| {
        got.extend_from_slice(b);
        b.len()
    })
    .unwrap();
    assert_eq!(got, [pattern(3000), pattern(4000)].concat());
    assert!(p.s.inc.is_empty());
    // Only the bytes that completed the first record were copied; the second record was
    // decrypted where it was.
    let k = first - 100;
    assert_eq!(buf[..k], bytes[100..first]);
    assert_ne!(buf[k + 5..], bytes[first + 5..]);
}

#[test]
fn thousands_of_tiny_records_in_one_buffer_are_read_in_one_pass() {
    for in_place in [false, true] {
        let mut p = Pair::new(true, false, 1 << 20, 1 << 20);
        p.handshake();
        let mut bytes = Vec::new();
        let want = pattern(3000);
        for b in want.chunks(1) {
            p.peer.writer().write_all(b).unwrap();
            while p.peer.wants_write() {
                p.peer.write_tls(&mut bytes).unwrap();
            }
        }
        let mut got = Vec::new();
        let mut sink = |b: &[u8]| {
            got.extend_from_slice(b);
            b.len()
        };
        if in_place {
            p.s.read_from(&mut bytes, &mut sink).unwrap();
        } else {
            p.s.received(&bytes);
            p.s.read(&mut sink).unwrap();
        }
        assert!(got == want, "{in_place}");
        assert!(p.s.inc.is_empty());
    }
}
