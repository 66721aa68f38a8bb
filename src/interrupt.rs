//! Ctrl-C and SIGTERM for the command line: the first one sets a flag that the restore checks between
//! tiles and images, so the run stops cleanly (no temporary file left, a summary, exit 130); a second one
//! ends the process at once. SIGXFSZ is ignored, so a file-size limit turns into a write error (and the
//! temporary file is removed) instead of killing the process mid-write. Child processes that run in process
//! groups of their own (ffmpeg, ffprobe) are registered here, so that the second signal, which ends the
//! process at once, takes them with it instead of leaving them orphaned.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Process groups of running children (0: a free slot).
static CHILDREN: [AtomicI32; 32] = [const { AtomicI32::new(0) }; 32];

extern "C" fn on_signal(sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // The second signal: the children's groups are killed, then the default action (the process ends).
        // Only async-signal-safe calls here.
        // SAFETY: kill, signal and raise are async-signal-safe.
        unsafe {
            for slot in &CHILDREN {
                let group = slot.load(Ordering::SeqCst);
                if group > 0 {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// A child's process group, registered until this is dropped (see the module text).
#[derive(Debug)]
pub struct ChildGroup(Option<usize>);

impl ChildGroup {
    /// Register the process group `group` (a child started with a group of its own, whose id is its pid).
    /// Beyond the slots it is not registered: the first signal still stops it through its owner.
    pub fn register(group: u32) -> ChildGroup {
        let Ok(group) = i32::try_from(group) else {
            return ChildGroup(None);
        };
        ChildGroup(CHILDREN.iter().position(|slot| {
            slot.compare_exchange(0, group, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }))
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if let Some(k) = self.0 {
            CHILDREN[k].store(0, Ordering::SeqCst);
        }
    }
}

/// Install the handlers (once per process) and return the flag the first signal sets.
pub fn install() -> &'static AtomicBool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only touches atomics and async-signal-safe functions; SIG_IGN for SIGXFSZ
        // makes writes past the limit fail with EFBIG.
        unsafe {
            let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            for sig in [libc::SIGINT, libc::SIGTERM] {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(sig, &action, std::ptr::null_mut());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    });
    &INTERRUPTED
}

/// Whether a signal arrived since `install`.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Standard input read on a thread of its own: a read blocked on a stalled pipe then no longer keeps the
/// first Ctrl-C waiting (a read the signal interrupts is restarted). Once a signal arrived, `read` fails
/// (an `Other` error: `Interrupted` would be retried by `read_exact`) and the caller sees [`interrupted`].
pub struct InterruptibleStdin {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl InterruptibleStdin {
    /// Start reading standard input (64 KiB at a time, at most 4 chunks ahead).
    pub fn new() -> InterruptibleStdin {
        let (tx, chunks) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = vec![0u8; 1 << 16];
                let chunk = match stdin.read(&mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let last = !matches!(&chunk, Ok(b) if !b.is_empty());
                if tx.send(chunk).is_err() || last {
                    break;
                }
            }
        });
        InterruptibleStdin {
            chunks,
            chunk: vec![],
            at: 0,
            ended: false,
        }
    }
}

impl Default for InterruptibleStdin {
    fn default() -> Self {
        Self::new()
    }
}

impl std::io::Read for InterruptibleStdin {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::mpsc::RecvTimeoutError;
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            if interrupted() {
                return Err(std::io::Error::other("interrupted"));
            }
            match self.chunks.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.ended = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
