//! A real `switchyard serve` process on a loopback port, killed when
//! dropped.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::process::{KillOnDrop, known_environment};

/// What the server prints first, once it listens.
const LISTENING: &str = "switchyard listening on ";

/// Limits applied to the server process before it starts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// RLIMIT_FSIZE in bytes: writes past it fail like a full disk.
    pub file_size: u64,
    /// RLIMIT_NOFILE: how many files the server may hold open.
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            file_size: libc::RLIM_INFINITY,
            open_files: libc::RLIM_INFINITY,
        }
    }
}

/// How to start `switchyard serve`: the binary, its working directory (where
/// `server.log` goes), its flags and environment. Every `SWITCHYARD_*`
/// variable of the caller's environment is taken out of the server's (see
/// [`known_environment`]); `--listen 127.0.0.1:0` is added unless the flags
/// name an address.
#[derive(Clone, Debug)]
pub struct Serve {
    binary: PathBuf,
    dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    rust_log: String,
    limits: Option<Limits>,
    start_timeout: Duration,
}

impl Serve {
    /// `binary serve` in `dir`, logging at `info`, given 20 s to start.
    pub fn new(binary: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            dir: dir.into(),
            args: Vec::new(),
            env: Vec::new(),
            rust_log: "info".into(),
            limits: None,
            start_timeout: Duration::from_secs(20),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The server's `RUST_LOG`.
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_owned();
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How long the server may take to print its address.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the server and waits until it says where it listens. Its
    /// stderr is appended to `server.log` in its directory (copied by this
    /// process, so that a file size limit on the server does not cut its log
    /// short); its stdout is drained so it never blocks on a full pipe.
    pub fn start(&self) -> Result<Switchyard> {
        let log = self.dir.join("server.log");
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new(&self.binary);
        known_environment(&mut command)
            .current_dir(&self.dir)
            .arg("serve");
        // A free port unless the arguments name an address.
        if !self.args.iter().any(|arg| arg == "--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limits) = self.limits {
            apply(&mut command, limits);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut log_file));
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on, dropping `child` kills the process, whatever happens.
        let mut child = KillOnDrop(child);
        // The first line on a thread, so that a silent server cannot hang us.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let did_not_start = |child: &mut KillOnDrop, reason: String| {
            child.kill();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow!("the switchyard server did not start: {reason}\nits log:\n{log}")
        };
        let line = match receiver.recv_timeout(self.start_timeout) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(err))) => {
                return Err(did_not_start(
                    &mut child,
                    format!("reading its output failed: {err}"),
                ));
            }
            Ok(None) => return Err(did_not_start(&mut child, "it printed nothing".into())),
            Err(_) => {
                let reason = format!("it printed nothing in {:?}", self.start_timeout);
                return Err(did_not_start(&mut child, reason));
            }
        };
        let Some(url) = line
            .trim()
            .strip_prefix(LISTENING)
            .filter(|url| url.starts_with("http://"))
        else {
            let reason = format!("its first line was {:?}", line.trim());
            return Err(did_not_start(&mut child, reason));
        };
        Ok(Switchyard {
            url: url.to_owned(),
            addr: url.trim_start_matches("http://").to_owned(),
            child,
            log,
            serve: self.clone(),
        })
    }
}

/// Sets `limits` on the process `command` starts, between fork and exec.
fn apply(command: &mut Command, limits: Limits) {
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // A write past RLIMIT_FSIZE raises SIGXFSZ; ignored, the write
            // fails with EFBIG instead, like a full disk.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: limits.file_size,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limits.open_files != libc::RLIM_INFINITY {
                let mut current = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut current);
                let limit = libc::rlimit {
                    rlim_cur: limits.open_files,
                    rlim_max: current.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A running `switchyard serve`, killed (SIGKILL) when dropped.
pub struct Switchyard {
    child: KillOnDrop,
    url: String,
    addr: String,
    log: PathBuf,
    serve: Serve,
}

impl Switchyard {
    /// `http://ADDR`, as the server printed it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// How it was started.
    pub fn serve(&self) -> &Serve {
        &self.serve
    }

    /// Everything it (and any earlier server in its directory) logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of [`Switchyard::log`].
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|line| (*line).to_owned())
            .collect()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// SIGTERM, then waits for the exit, at most `within`; past that it is
    /// killed and this fails.
    pub fn terminate(&mut self, within: Duration) -> Result<ExitStatus> {
        // SAFETY: kill(2) with a pid this process started and has not reaped.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill();
                bail!("switchyard did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills this process and starts another the same way, on the same
    /// directory.
    pub fn restart(mut self) -> Result<Switchyard> {
        self.kill();
        self.serve.start()
    }
}
