//! Ctrl-C and SIGTERM for the command line: the first one sets a flag that the restore checks between
//! tiles and images, so the run stops cleanly (no temporary file left, a summary, exit 130); a second one
//! ends the process at once. SIGXFSZ is ignored, so a file-size limit turns into a write error (and the
//! temporary file is removed) instead of killing the process mid-write.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // The second signal: the default action (the process ends). Only async-signal-safe calls here.
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
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
