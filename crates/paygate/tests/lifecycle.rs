//! `paygate serve` stops in order on SIGTERM (what a service manager or an orchestrator sends):
//! it stops listening, finishes, says so, and exits 0 well inside its grace, and a restart on
//! the same data directory serves again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Proc, TempDir, free_port};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn serve(dir: &TempDir, port: u16, log: &str) -> Proc {
    let data = dir.0.join("data");
    let listen = format!("127.0.0.1:{port}");
    let mut gw = Proc::spawn(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &[],
        dir.0.join(log),
    );
    gw.wait_port(port);
    gw
}

#[test]
fn sigterm_stops_the_gateway_in_order() {
    let dir = TempDir::new("lifecycle");
    let port = free_port();
    let mut gw = serve(&dir, port, "first.log");
    let status = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = gw.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = gw.log_text();
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(log.contains("stopping:"), "{log}");
    assert!(
        log.lines().any(|l| l.trim() == "stopped"),
        "nothing was cut off:\n{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    drop(gw);
    // The store was left consistent: the same data directory serves again.
    let again = serve(&dir, port, "second.log");
    drop(again);
}
