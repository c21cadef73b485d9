//! What every launcher here needs: a free port, a wait for a port, a child
//! killed on drop, a clean environment.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGKILL, then waits for it: no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until something accepts connections on `127.0.0.1:port`.
pub(crate) fn wait_for_port(port: u16, what: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} in {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `name` is an executable file on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// Takes every `SWITCHYARD_*` variable of the caller's environment out of
/// `command`'s, so the server starts from a known configuration whatever the
/// caller's shell has: a `SWITCHYARD_JWT_SECRET` there, say, would refuse
/// every publish without a token, a `SWITCHYARD_CONFIG` would add settings.
/// Variables set on `command` afterwards are kept.
pub fn known_environment(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SWITCHYARD_") {
            command.env_remove(key);
        }
    }
    command
}
