//! HTTP edge cases clients meet: URLs with a trailing slash (seed 003's), an error
//! answered before the request body was read on a keep-alive connection, and a
//! malformed chunked body.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

/// One HTTP/1.1 response read off a connection: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header line");
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn send(stream: &mut TcpStream, head: &str, body: &[u8]) -> std::io::Result<()> {
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn start_upload(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, repo: &str) -> String {
    send(
        stream,
        &format!("POST /v2/{repo}/blobs/uploads/ HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
        b"",
    )
    .unwrap();
    let started = read_answer(reader).unwrap();
    assert_eq!(started.status, 202);
    started.header("location").unwrap().to_owned()
}

fn patch(location: &str, range: &str, body: &[u8]) -> String {
    format!(
        "PATCH {location} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Range: {range}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
}

#[test]
fn an_out_of_order_chunk_on_a_keep_alive_connection_says_connection_close() {
    for round in 0..50 {
        let w = Wharf::start();
        let (mut stream, mut reader) = connect(w.port);
        let location = start_upload(&mut stream, &mut reader, "ka/app");
        send(
            &mut stream,
            &patch(&location, "0-9", b"0123456789"),
            b"0123456789",
        )
        .unwrap();
        assert_eq!(read_answer(&mut reader).unwrap().status, 202);
        send(
            &mut stream,
            &patch(&location, "20-29", b"abcdefghij"),
            b"abcdefghij",
        )
        .unwrap();
        let refused = read_answer(&mut reader).unwrap();
        assert_eq!(refused.status, 416, "round {round}");

        let get = "GET /v2/ HTTP/1.1\r\nHost: t\r\n\r\n";
        if refused.closes() {
            // The server said it closes: it must, and a new connection is served.
            let mut rest = Vec::new();
            let n = reader.read_to_end(&mut rest).unwrap_or(0);
            assert_eq!(n, 0, "round {round}: data after Connection: close");
            let (mut again, mut again_reader) = connect(w.port);
            send(&mut again, get, b"").unwrap();
            assert_eq!(read_answer(&mut again_reader).unwrap().status, 200);
        } else {
            // Kept alive: the next request on the same connection must be answered.
            send(&mut stream, get, b"")
                .unwrap_or_else(|e| panic!("round {round}: kept alive but {e}"));
            let answer = read_answer(&mut reader)
                .unwrap_or_else(|e| panic!("round {round}: kept alive but {e}"));
            assert_eq!(answer.status, 200, "round {round}");
        }
    }
}

#[test]
fn a_malformed_chunked_body_is_the_clients_fault() {
    let w = Wharf::start();
    let (mut stream, mut reader) = connect(w.port);
    let location = start_upload(&mut stream, &mut reader, "chunky/app");
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    send(&mut stream, &head, b"zz\r\n").unwrap();
    let answer = read_answer(&mut reader).unwrap();
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(answer.closes());

    // A manifest, read whole before parsing: the same.
    let (mut stream, mut reader) = connect(w.port);
    let head = "PUT /v2/chunky/app/manifests/v1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n";
    send(&mut stream, head, b"5\r\n{\"a\":\r\nzz\r\n").unwrap();
    let answer = read_answer(&mut reader).unwrap();
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[test]
fn seed_003s_urls_with_a_trailing_slash_redirect_like_distribution() {
    require("curl", "curl");
    require_docker();
    let w = Wharf::start();
    let host = w.host();
    docker_pushed(&host, "alpine", "slash");
    let curl = |args: &[&str]| run(Command::new("curl").arg("-s").args(args));

    let tags_url = format!("http://{host}/v2/alpine/tags/list/");
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &tags_url,
    ]);
    assert_eq!(redirect, format!("301 http://{host}/v2/alpine/tags/list"));
    assert_eq!(
        curl(&["-L", &tags_url]),
        r#"{"name":"alpine","tags":["v1"]}"#
    );

    let manifest_url = format!("http://{host}/v2/alpine/manifests/v1/");
    let followed = curl(&[
        "-L",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_redirects}",
        &manifest_url,
    ]);
    assert_eq!(followed, "200 1");
    let catalog = curl(&["-L", &format!("http://{host}/v2/_catalog/")]);
    assert_eq!(catalog, r#"{"repositories":["alpine"]}"#);
}
