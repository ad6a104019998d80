//! SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session) during a run: the first asks
//! the loop to stop after the current step (it then checkpoints and names the resume command);
//! a second exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe; a second signal means "now".
        unsafe { libc::_exit(128 + sig) };
    }
    let msg =
        b"\nvpt: stopping after this step and saving a checkpoint (signal again to exit at once)\n";
    // SAFETY: `write` is async-signal-safe; the buffer is static.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// The signals that stop a run with a checkpoint.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installs the handler for [`SIGNALS`] (idempotent).
pub fn install() -> std::io::Result<()> {
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags) before we fill it; the
        // handler only touches an atomic and calls async-signal-safe functions.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a stop was requested since the process started.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
