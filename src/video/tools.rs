//! The system's ffmpeg and ffprobe as child processes: where they are ($DIFFIR_FFMPEG, $DIFFIR_FFPROBE,
//! else the PATH), one line on how to install them when they are missing, and their last error line when
//! they fail.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

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
    /// of its last error line.
    pub fn output<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(
        self,
        args: I,
        failure: impl FnOnce(String) -> Error,
    ) -> Result<Vec<u8>> {
        let out = self
            .command()?
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.failed(&format!("cannot start: {e}")))?;
        if !out.status.success() {
            return Err(failure(last_line(&out.stderr, &out.status.to_string())));
        }
        Ok(out.stdout)
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
        })
    }
}

impl Running {
    /// Its standard input (once), where piped.
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Its standard output, where piped.
    pub fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.child.stdout.as_mut()
    }

    /// Wait for it to end (its standard input closed first): Ok with what it printed on its error output
    /// where it succeeded, else an error with `what` and its last error line.
    pub fn finish(&mut self, what: &str) -> Result<Vec<u8>> {
        self.child.stdin.take();
        let status = self
            .child
            .wait()
            .map_err(|e| self.tool.failed(&format!("{what}: {e}")))?;
        let text = self.errors.take().and_then(|t| t.join().ok()).unwrap_or_default();
        if status.success() {
            Ok(text)
        } else {
            Err(self
                .tool
                .failed(&format!("{what}: {}", last_line(&text, &status.to_string()))))
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.child.stdin.take();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
