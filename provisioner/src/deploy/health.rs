//! A host's health checks, from the service registry: what lib/services
//! renders as the host's `health.json` (the same list tests/services/run
//! proves against the daemons). Each entry names its service's unit, and
//! maybe a DNS question or an HTTP URL, asked from the deployer when the port
//! is on the LAN and from the host itself otherwise. Asking "from the host"
//! goes through the pinned SSH connection (`ssh -W 127.0.0.1:PORT`), so the
//! host needs no tool for it; DNS is then asked over TCP.
//!
//! A check passes when DNS answers NOERROR with at least one record, or HTTP
//! answers with a status below 400 (Caddy's HTTP port redirects to HTTPS).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::remote::Remote;

/// How long one question may take.
const ASK: Duration = Duration::from_secs(3);

/// A TCP connection to HOST:PORT from here, bounded: a host that drops the
/// SYN must not hang a check.
pub(crate) fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let s = TcpStream::connect_timeout(&addr, ASK).map_err(|e| format!("cannot connect: {e}"))?;
    s.set_read_timeout(Some(ASK)).ok();
    Ok(s)
}

/// One entry of a host's `health.json`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub service: String,
    pub unit: String,
    /// `deployer` or `host`; absent when the service has no check of its own.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub http: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Dns {
    pub server: String,
    pub port: u16,
    pub name: String,
}

/// Every host's checks, evaluated from the lab's registry in one `nix eval`.
pub fn load(lab: &Path) -> Result<std::collections::BTreeMap<String, Vec<Entry>>, String> {
    let services = lab.join("lib/services");
    let expr =
        format!("builtins.mapAttrs (_: h: h.health) (import {} {{ }}).hosts", nix_path(&services));
    let json = lab_facts::eval_expr_json(&expr, &services).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json)
        .map_err(|e| format!("the registry's health checks have an unexpected shape: {e}"))
}

/// A path as a Nix path literal (absolute; quoted form for odd characters).
pub(crate) fn nix_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b)) {
        text
    } else {
        format!(
            "(/. + \"{}\")",
            text.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$")
        )
    }
}

/// One check's outcome, as deploy and status report it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// `ssh`, `unit bind.service`, `bind: dns luna.lab @192.168.1.10:5300`, ...
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Runs every check once: SSH with the pinned key, the units on the host,
/// then each service's question.
pub fn run_once(remote: &Remote, entries: &[Entry]) -> Vec<Outcome> {
    let mut out = vec![match remote.reachable() {
        Ok(()) => ok("ssh", "answers with its recorded key"),
        Err(e) => fail("ssh", &e),
    }];
    let units: Vec<&str> = entries.iter().map(|e| e.unit.as_str()).collect();
    if !units.is_empty() {
        match remote.unit_states(&units) {
            Ok(states) => {
                for (unit, state) in states {
                    let check = format!("unit {unit}");
                    out.push(if state == "active" {
                        ok(&check, &state)
                    } else {
                        fail(&check, &state)
                    });
                }
            }
            Err(e) => out.push(fail("units", &e)),
        }
    }
    for e in entries {
        let from_host = e.from.as_deref() == Some("host");
        if let Some(d) = &e.dns {
            let check = format!("{}: dns {} @{}:{}", e.service, d.name, d.server, d.port);
            let answer = if from_host {
                remote.forward(&d.server, d.port, |s| ask_dns_tcp(s, &d.name))
            } else {
                ask_dns_udp(&d.server, d.port, &d.name)
            };
            out.push(judge(&check, answer));
        } else if let Some(url) = &e.http {
            let check = format!("{}: http {url}", e.service);
            let answer = parse_url(url).and_then(|(host, port, path)| {
                if from_host {
                    remote.forward(&host, port, |s| get(s, &host, &path))
                } else {
                    get(&mut connect(&host, port)?, &host, &path)
                }
            });
            out.push(judge(&check, answer));
        }
    }
    out
}

/// Runs the checks until all pass or `within` is over (a restarted daemon
/// takes a moment to listen); the last round's outcomes.
pub fn run(remote: &Remote, entries: &[Entry], within: Duration) -> Vec<Outcome> {
    let started = std::time::Instant::now();
    loop {
        let outcomes = run_once(remote, entries);
        if outcomes.iter().all(|o| o.ok) || started.elapsed() >= within {
            return outcomes;
        }
        if lab_cli::interrupt::requested() {
            return outcomes;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ok(check: &str, detail: &str) -> Outcome {
    Outcome { check: check.to_string(), ok: true, detail: detail.to_string() }
}

fn fail(check: &str, detail: &str) -> Outcome {
    Outcome { check: check.to_string(), ok: false, detail: detail.to_string() }
}

fn judge(check: &str, answer: Result<String, String>) -> Outcome {
    match answer {
        Ok(detail) => ok(check, &detail),
        Err(detail) => fail(check, &detail),
    }
}

/// `http://HOST:PORT/PATH` (the registry renders no other form).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port in `{url}`"))?),
        None => (authority, 80),
    };
    Ok((host.to_string(), port, path.to_string()))
}

/// One HTTP/1.0 GET; the status line decides.
fn get(
    stream: &mut (impl Read + Write + ?Sized),
    host: &str,
    path: &str,
) -> Result<String, String> {
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: labprov\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send: {e}"))?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        match stream.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("no answer: {e}")),
        }
        if head[..n].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let line = line.lines().next().unwrap_or("").trim();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/"))
        .ok_or_else(|| {
            if line.is_empty() {
                "no answer".to_string()
            } else {
                format!("not HTTP: `{line}`")
            }
        })?;
    if status < 400 {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// A DNS question for NAME's A records, recursion desired.
fn question(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("`{name}` is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Reads an answer to question `id`: NOERROR with records passes.
fn verdict(id: u16, answer: &[u8]) -> Result<String, String> {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0 {
        return Err("not an answer to the question".into());
    }
    let records = u16::from_be_bytes([answer[6], answer[7]]);
    match answer[3] & 0x0f {
        0 if records > 0 => Ok(format!("{records} record(s)")),
        0 => Err("NOERROR but no records".into()),
        1 => Err("FORMERR".into()),
        2 => Err("SERVFAIL".into()),
        3 => Err("NXDOMAIN: the name does not exist".into()),
        5 => Err("REFUSED".into()),
        code => Err(format!("rcode {code}")),
    }
}

fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

/// Over UDP, as the LAN's clients ask; three tries, the last word counts.
fn ask_dns_udp(server: &str, port: u16, name: &str) -> Result<String, String> {
    let id = query_id();
    let q = question(id, name)?;
    let target = (server, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server} has no address"))?;
    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).map_err(|e| format!("no UDP socket: {e}"))?;
    socket.connect(target).map_err(|e| format!("cannot reach {target}: {e}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut last = String::from("no answer");
    for _ in 0..3 {
        socket.send(&q).map_err(|e| format!("cannot send: {e}"))?;
        let mut buf = [0u8; 1500];
        match socket.recv(&mut buf) {
            Ok(n) => return verdict(id, &buf[..n]),
            Err(e) => last = format!("no answer ({e})"),
        }
    }
    Err(last)
}

/// Over TCP (RFC 1035 4.2.2: a two-byte length before each message).
fn ask_dns_tcp(stream: &mut (impl Read + Write + ?Sized), name: &str) -> Result<String, String> {
    let id = query_id();
    let q = question(id, name)?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).map_err(|e| format!("cannot send: {e}"))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| format!("no answer: {e}"))?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).map_err(|e| format!("a cut answer: {e}"))?;
    verdict(id, &answer)
}

/// Reads a DNS question's name back, for the tests' server.
#[cfg(test)]
fn asked_name(q: &[u8]) -> String {
    let mut i = 12;
    let mut labels = Vec::new();
    while q[i] != 0 {
        let n = q[i] as usize;
        labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + n]).into_owned());
        i += n + 1;
    }
    labels.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `good.lab` with one record, anything else with NXDOMAIN.
    fn answer_for(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x80;
        if asked_name(q) == "good.lab" {
            a[7] = 1;
        } else {
            a[3] = (a[3] & 0xf0) | 3;
        }
        a
    }

    #[test]
    fn dns_over_udp_passes_on_records_and_names_nxdomain() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let mut buf = [0u8; 512];
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&answer_for(&buf[..n]), from).unwrap();
            }
        });
        assert_eq!(ask_dns_udp("127.0.0.1", port, "good.lab"), Ok("1 record(s)".into()));
        let err = ask_dns_udp("127.0.0.1", port, "gone.lab").unwrap_err();
        assert!(err.starts_with("NXDOMAIN"), "{err}");
        t.join().unwrap();
    }

    #[test]
    fn dns_over_tcp_frames_the_question_and_reads_the_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut q).unwrap();
            let a = answer_for(&q);
            s.write_all(&(a.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&a).unwrap();
        });
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert_eq!(ask_dns_tcp(&mut s, "good.lab"), Ok("1 record(s)".into()));
        t.join().unwrap();
    }

    #[test]
    fn silence_and_garbage_are_failures_with_a_reason() {
        // A bound socket that never answers: three tries, then "no answer".
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = quiet.local_addr().unwrap().port();
        assert!(ask_dns_udp("127.0.0.1", port, "good.lab").unwrap_err().starts_with("no answer"));
        assert_eq!(verdict(7, &[0u8; 4]), Err("not an answer to the question".into()));
        assert!(question(1, "a..b").is_err());
        assert!(question(1, &"x".repeat(64)).is_err());
    }

    #[test]
    fn http_status_decides_and_urls_parse() {
        assert_eq!(
            parse_url("http://192.168.1.10:9100/metrics"),
            Ok(("192.168.1.10".into(), 9100, "/metrics".into()))
        );
        assert_eq!(parse_url("http://h"), Ok(("h".into(), 80, "/".into())));
        assert!(parse_url("https://h/").is_err());
        for (reply, want) in [
            ("HTTP/1.1 200 OK\r\n\r\n", Ok("HTTP 200".to_string())),
            ("HTTP/1.1 308 Permanent Redirect\r\n", Ok("HTTP 308".to_string())),
            ("HTTP/1.0 503 Service Unavailable\r\n", Err("HTTP 503".to_string())),
            ("", Err("no answer".to_string())),
            ("SSH-2.0-OpenSSH\r\n", Err("not HTTP: `SSH-2.0-OpenSSH`".to_string())),
        ] {
            let mut s = std::io::Cursor::new(reply.as_bytes().to_vec());
            // The cursor plays both ends: the request is written after the
            // reply, so reading starts at the reply.
            let mut both = Both { read: &mut s, written: Vec::new() };
            assert_eq!(get(&mut both, "h", "/x"), want, "{reply:?}");
            assert!(String::from_utf8_lossy(&both.written)
                .starts_with("GET /x HTTP/1.0\r\nHost: h\r\n"));
        }
    }

    struct Both<'a> {
        read: &'a mut std::io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }
    impl Read for Both<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.read.read(buf)
        }
    }
    impl Write for Both<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn odd_lab_paths_become_nix_path_expressions() {
        assert_eq!(nix_path(Path::new("/work/lab/lib/services")), "/work/lab/lib/services");
        assert_eq!(nix_path(Path::new("/my lab/lib")), "(/. + \"/my lab/lib\")");
    }
}
