//! `peernotes serve` as a test process: started on loopback (its address read
//! from the lines it prints), stopped by SIGTERM (which must end it cleanly),
//! killed if a test fails; and polling `peernotes show` until a note reads right.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::{peernotes, stdout};

pub struct Serve {
    pub child: Child,
    /// The address it listens on (`ip:port`).
    pub listening: String,
}

/// Starts `peernotes serve` on `data`, dialling `connect` if given, and waits
/// until it listens.
pub fn serve(data: &Path, connect: Option<String>) -> Serve {
    let mut cmd = peernotes(data);
    cmd.arg("serve");
    if let Some(peer) = connect {
        cmd.args(["--connect", &peer]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(addr) = line.strip_prefix("listening ") {
            break addr.to_string();
        }
    };
    Serve { child, listening }
}

impl Drop for Serve {
    /// A failing test must not leave daemons behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Stops a daemon with SIGTERM; it must exit successfully.
pub fn stop(mut serve: Serve) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "serve did not stop cleanly: {status}");
}

/// Polls `peernotes show` (which reads while a daemon runs) until it prints `want`.
pub fn eventually_shows(data: &Path, note: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = peernotes(data).args(["show", note]).output().unwrap();
        if output.status.success() && stdout(&output) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed {want:?}; last: {output:?}",
            data.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
