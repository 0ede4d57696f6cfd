//! An `sd serve` process on a free loopback port, and a small HTTP/1.1 client for it (std
//! only: one request per connection, read to the end).
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sd_testkit::AUTO_MEANS_F32;
use serde_json::Value;
use stable_diffusion::RgbImage;

/// No request of these tests takes longer on the tiny model; a hung server fails the test
/// instead of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(180);

pub fn sd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sd")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running server, stopped (SIGTERM, then killed) when dropped.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
    /// Its log lines (stderr) so far.
    pub log: Arc<Mutex<Vec<String>>>,
    pub auth: Option<String>,
}

impl Server {
    /// `sd serve ARGS --listen 127.0.0.1:0`; waits for its `listening` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(sd_bin())
            .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sd serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let address = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("sd serve ended before listening:\n{}", seen.join("\n"));
            };
            seen.push(line.clone());
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["event"] == "listening"
            {
                let url = event["address"].as_str().unwrap();
                break url.trim_start_matches("http://").parse().unwrap();
            }
        };
        let log = Arc::new(Mutex::new(seen));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let auth = args
            .iter()
            .position(|a| *a == "--api-auth")
            .map(|i| args[i + 1].to_string());
        Server {
            child,
            address,
            log,
            auth,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` of the server process in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, json: &str) -> Response {
        self.request("POST", path, &[], json.as_bytes())
    }

    /// One request with the server's credentials (if it has some) and `headers`.
    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Response {
        let mut all: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        if let Some(auth) = &self.auth {
            all.push(basic_auth(auth));
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        raw_request(self.address, method, path, &all, body)
    }

    /// SIGTERM, then wait for the process to end.
    pub fn stop(mut self) -> ExitStatus {
        terminate(self.child.id());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn terminate(pid: u32) {
    // SAFETY: kill(2) on the pid of a child this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

pub fn basic_auth(user_password: &str) -> String {
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The answer of a successful request, as JSON.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text());
        self.json()
    }
}

/// Send one request on a new connection and read the whole answer.
pub fn raw_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    // The server may answer (413, 401) and close before the body is all sent.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Response { status, head, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

/// The images of a txt2img/img2img answer, decoded.
pub fn images_of(answer: &Value) -> Vec<RgbImage> {
    answer["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b64| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap();
            stable_diffusion::image_file::decode_rgb(&bytes, "answer", u64::MAX).unwrap()
        })
        .collect()
}

/// `sd generate ARGS --output DIR/NAME.png` (quiet); panics with its stderr on failure.
pub fn sd_generate(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(format!("{name}.png"));
    let run = Command::new(sd_bin())
        .env(AUTO_MEANS_F32.0, AUTO_MEANS_F32.1)
        .arg("generate")
        .args(args)
        .args(["--quiet", "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// Panics, naming `what` and how far apart they are, unless the two images are equal byte for
/// byte (no pixel dump).
pub fn assert_same_pixels(ours: &RgbImage, reference: &RgbImage, what: &str) {
    assert_eq!(
        (ours.width(), ours.height()),
        (reference.width(), reference.height()),
        "{what}: sizes differ"
    );
    let differing: Vec<u8> = ours
        .pixels()
        .iter()
        .zip(reference.pixels())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: {} of {} bytes differ, by up to {} levels",
        differing.len(),
        ours.pixels().len(),
        differing.iter().max().unwrap_or(&0)
    );
}

/// The webuiapi release the client tests were written against (.ci/webuiapi.sh installs it).
pub const WEBUIAPI_VERSION: &str = "0.9.17";

/// A python that can import webuiapi: `SD_WEBUIAPI_PYTHON`, else `python3`. `None` (after saying
/// so) when there is none outside CI; in CI (`CI=true`) a missing client fails the test.
pub fn python_with_webuiapi() -> Option<String> {
    let candidates = std::env::var("SD_WEBUIAPI_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string()]);
    for python in candidates {
        let probe = Command::new(&python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('webuiapi'))",
            ])
            .output();
        if let Ok(out) = probe
            && out.status.success()
        {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if version != WEBUIAPI_VERSION {
                eprintln!(
                    "note: {python} has webuiapi {version}, the tests were written against {WEBUIAPI_VERSION}"
                );
            }
            return Some(python);
        }
    }
    skip_outside_ci(&format!(
        "webuiapi=={WEBUIAPI_VERSION} is not installed (set SD_WEBUIAPI_PYTHON to a python that has it; .ci/run does)"
    ));
    None
}

/// A test whose outside tool is missing: a note outside CI, a failure in CI (`CI=true`).
pub fn skip_outside_ci(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED: {message}");
}
