//! Scale-out on existing parts: two `sd serve` replicas behind nginx (Debian's package, started
//! here with a generated config, loopback only). Eight concurrent webuiapi requests through
//! nginx all succeed, and both replicas' `/metrics` show work. Without nginx or webuiapi the test
//! says so and passes, except in CI (`CI=true`), where it fails.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

#[path = "serve_support/mod.rs"]
mod serve_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serve_support::{Server, fixtures, python_with_webuiapi, scratch, skip_outside_ci};

fn nginx() -> Option<&'static str> {
    ["nginx", "/usr/sbin/nginx"].into_iter().find(|name| {
        Command::new(name)
            .arg("-v")
            .output()
            .is_ok_and(|out| out.status.success())
    })
}

/// nginx in the foreground with everything (pid, logs, temp files) under `dir`.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(binary: &str, dir: &Path, port: u16, replicas: &[std::net::SocketAddr]) -> Nginx {
    let d = dir.display();
    let servers: String = replicas.iter().map(|a| format!("server {a};\n")).collect();
    let config = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         client_max_body_size 64m;\n\
         upstream sd {{ least_conn;\n{servers}}}\n\
         server {{ listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://sd; proxy_read_timeout 600s; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary)
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &path.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {:?}",
            std::fs::read_to_string(dir.join("error.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

fn images_made(server: &Server) -> u64 {
    let metrics = server.get("/metrics").text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("sd_images_total "))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn two_replicas_behind_nginx_share_webuiapi_requests() {
    let Some(binary) = nginx() else {
        skip_outside_ci("nginx is not installed (apt-get install nginx; .ci/run does)");
        return;
    };
    let Some(python) = python_with_webuiapi() else {
        return;
    };
    let tiny = fixtures().join("tiny-sd");
    let replicas = [
        Server::start(&["--model", tiny.to_str().unwrap()]),
        Server::start(&["--model", tiny.to_str().unwrap()]),
    ];
    let dir = scratch("nginx");
    let port = free_port();
    let addresses: Vec<_> = replicas.iter().map(|r| r.address).collect();
    let _nginx = start_nginx(binary, &dir, port, &addresses);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webuiapi/replicas_test.py");
    let run = Command::new(&python)
        .arg(&script)
        .env("SD_PORT", port.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let made: Vec<u64> = replicas.iter().map(images_made).collect();
    println!("{stdout}images per replica: {made:?}");
    assert_eq!(made.iter().sum::<u64>(), 8, "{made:?}");
    assert!(
        made.iter().all(|&n| n > 0),
        "a replica did no work: {made:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
