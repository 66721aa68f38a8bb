//! The system's ffmpeg and ffprobe as child processes: where they are ($DIFFIR_FFMPEG, $DIFFIR_FFPROBE,
//! else the PATH), one line on how to install them when they are missing, and their last error line when
//! they fail. Every path they are given goes through [`file_arg`], so a file name is never read as an
//! option or a URL.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::interrupt::ChildGroup;

/// A path as ffmpeg's and ffprobe's argument for that file on disk and nothing else: with the `file:`
/// protocol, a name that starts with `-` is no option, and `pipe:0.mp4`, `12:30.mp4` or `file:x.mp4` are
/// the files of those names, not a pipe, a protocol or another file.
pub fn file_arg(path: &Path) -> OsString {
    let mut arg = OsString::from("file:");
    arg.push(path.as_os_str());
    arg
}

/// One of the two programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The encoder and decoder.
    Ffmpeg,
    /// The prober.
    Ffprobe,
}

impl Tool {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ffmpeg => "ffmpeg",
            Tool::Ffprobe => "ffprobe",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            Tool::Ffmpeg => "DIFFIR_FFMPEG",
            Tool::Ffprobe => "DIFFIR_FFPROBE",
        }
    }

    /// The program's path: the variable's value, else the name found on the PATH; an error saying how to
    /// install it otherwise.
    pub fn path(self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os(self.variable()).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(self.missing(&format!(
                    "${} names {}, which is not a file",
                    self.variable(),
                    p.display()
                )))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(self.name()))
            .find(|p| p.is_file())
            .ok_or_else(|| self.missing("not found on the PATH"))
    }

    fn missing(self, why: &str) -> Error {
        Error::Tool {
            program: self.name().into(),
            msg: format!(
                "{why}; video needs ffmpeg and ffprobe: install them (apt-get install ffmpeg, dnf install ffmpeg, \
                 brew install ffmpeg, or https://ffmpeg.org/download.html) or set ${}",
                self.variable()
            ),
        }
    }

    /// A command for the program, quiet but for errors, never reading the terminal, in its own process group.
    pub fn command(self) -> Result<Command> {
        let mut c = Command::new(self.path()?);
        c.args(["-hide_banner", "-loglevel", "error"]);
        // A process group of its own: Ctrl-C in a terminal reaches this process only, which stops the
        // children itself (an ffmpeg that got the signal would end its stream early as if complete).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        if self == Tool::Ffmpeg {
            c.arg("-nostdin");
        }
        Ok(c)
    }

    /// Run to the end with `args`, returning its standard output; where it fails, the error `failure` makes
    /// of its last error line. Past `limit` it is killed (an error saying so), and a Ctrl-C (see
    /// `interrupt`) kills it too ([`Error::Cancelled`]).
    pub fn output<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        self,
        args: I,
        limit: Option<Duration>,
        failure: impl FnOnce(String) -> Error,
    ) -> Result<Vec<u8>> {
        let mut command = self.command()?;
        command.args(args);
        let mut child = self.spawn(command, Stdio::null(), Stdio::piped())?;
        let mut stdout = child.child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut out = vec![];
            stdout.read_to_end(&mut out).map(|_| out)
        });
        let start = Instant::now();
        loop {
            if child.child.try_wait().ok().flatten().is_some() {
                child.reaped();
                break;
            }
            if crate::interrupt::interrupted() {
                return Err(Error::Cancelled);
            }
            if let Some(limit) = limit.filter(|l| start.elapsed() > *l) {
                return Err(failure(format!(
                    "no answer within {} s (a FIFO, a device or a stalled network mount?)",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = reader
            .join()
            .map_err(|_| self.failed("its output reader panicked"))?
            .map_err(|e| self.failed(&format!("reading its output: {e}")))?;
        match child.wait_status()? {
            (None, _) => Ok(out),
            (Some(status), text) => Err(failure(last_line(&text, &status))),
        }
    }

    /// The program failed: `msg` is what it said.
    pub fn failed(self, msg: &str) -> Error {
        Error::Tool {
            program: self.name().into(),
            msg: msg.into(),
        }
    }
}

/// The last non-empty line of a program's error output, or `otherwise`.
pub fn last_line(stderr: &[u8], otherwise: &str) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| otherwise.to_string())
}

/// A running child: its error output read on a thread of its own (a full pipe never stalls it), and
/// killed if dropped before it ended.
pub struct Running {
    tool: Tool,
    child: std::process::Child,
    errors: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Its process group, registered for the second Ctrl-C until it is reaped.
    group: Option<ChildGroup>,
    /// Its pid until it is reaped (0 after), for [`Killer`].
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

/// Kills a running child from another thread (one blocked reading its output, say); nothing once the
/// child was reaped.
#[derive(Debug, Clone)]
pub struct Killer(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Killer {
    /// Kill it where it still runs.
    pub fn kill(&self) {
        let pid = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if let Ok(pid @ 1..) = i32::try_from(pid) {
            // SAFETY: a plain kill(2) of our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Tool {
    /// Start `command` (from [`Tool::command`]) with its standard input and output as given; its error
    /// output is kept (the first MiB) for the message of a failure.
    pub fn spawn(self, mut command: Command, stdin: Stdio, stdout: Stdio) -> Result<Running> {
        let mut child = command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.failed(&format!("cannot start: {e}")))?;
        let pid = child.id();
        let group = ChildGroup::register(pid);
        let stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            use std::io::Read;
            let mut text = vec![];
            let _ = stderr.take(1 << 20).read_to_end(&mut text);
            text
        });
        Ok(Running {
            tool: self,
            child,
            errors: Some(errors),
            group: Some(group),
            pid: std::sync::Arc::new(std::sync::atomic::AtomicU32::new(pid)),
        })
    }
}

impl Running {
    /// Its standard input (once), where piped.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// What kills it from another thread.
    pub fn killer(&self) -> Killer {
        Killer(std::sync::Arc::clone(&self.pid))
    }

    /// It was reaped: its pid may be reused from now on.
    fn reaped(&mut self) {
        self.pid.store(0, std::sync::atomic::Ordering::SeqCst);
        self.group.take();
    }

    /// Its standard output, where piped.
    pub fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.child.stdout.as_mut()
    }

    /// Wait for it to end (its standard input closed first): Ok with what it printed on its error output
    /// where it succeeded, else an error with `what` and its last error line.
    pub fn finish(&mut self, what: &str) -> Result<Vec<u8>> {
        match self.wait_status() {
            Ok((None, text)) => Ok(text),
            Ok((Some(status), text)) => Err(self.tool.failed(&format!("{what}: {}", last_line(&text, &status)))),
            Err(e) => Err(self.tool.failed(&format!("{what}: {e}"))),
        }
    }

    /// Wait for it to end (its standard input closed first): its exit status in words where it failed
    /// (None where it succeeded), and what it printed on its error output.
    fn wait_status(&mut self) -> Result<(Option<String>, Vec<u8>)> {
        self.child.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| self.tool.failed(&format!("waiting for it: {e}")))?;
        self.reaped();
        let text = self.errors.take().and_then(|t| t.join().ok()).unwrap_or_default();
        Ok(((!status.success()).then(|| status.to_string()), text))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.stdin.take();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.reaped();
    }
}
