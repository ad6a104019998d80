//! Progress of a run on stderr. On a terminal: a bar with the step, loss and V. Without one
//! (output redirected to a file, the normal way to run an experiment that takes hours): a line
//! every `log_every` seconds from a ticker thread — step against the budget, elapsed time, ETA,
//! the last pretraining loss and meta value — and a line when each evaluation starts and ends,
//! with its duration. The ticker also speaks while an evaluation runs, so a slow evaluation
//! never looks like a hang.

use crate::budget::Budget;
use std::{
    io::IsTerminal,
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Seconds between progress lines when stderr is not a terminal, unless `--log-every` says.
pub const DEFAULT_LOG_EVERY: f64 = 30.0;

/// How a run reports its progress.
#[derive(Debug, Clone)]
pub struct Options {
    /// What the lines are about (`v seed 0`, a run directory).
    pub label: String,
    /// Seconds between progress lines when stderr is not a terminal.
    pub log_every: f64,
}

impl Options {
    /// Progress of `label` with a line every `log_every` seconds off a terminal.
    pub fn new(label: impl Into<String>, log_every: f64) -> Options {
        Options {
            label: label.into(),
            log_every,
        }
    }
}

/// Where the run is, as the ticker reads it.
#[derive(Debug, Clone)]
struct State {
    step: u64,
    seconds: f64,
    loss: Option<f64>,
    value: Option<f64>,
    /// The step and start of the evaluation under way.
    evaluating: Option<(u64, Instant)>,
}

/// What never changes during a run, and its state.
struct Shared {
    label: String,
    budget: Budget,
    /// What an evaluation evaluates (`task `tiny`, all examples`).
    eval_what: String,
    started: Instant,
    start_fraction: f64,
    state: Mutex<State>,
}

/// A run's progress display; the ticker thread (off a terminal) stops when it is dropped.
pub struct Progress {
    shared: Arc<Shared>,
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<Ticker>,
}

/// A thread that prints a line every few seconds until dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Prints `line()` to stderr every `every` seconds.
    fn start(every: f64, line: impl Fn() -> String + Send + 'static) -> Ticker {
        let every = Duration::from_secs_f64(every.max(1e-3));
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                eprintln!("{}", line());
            }
        });
        Ticker {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Off a terminal, a line every `log_every` seconds saying that `label` is busy with `what`
/// and for how long, until dropped: for the slow steps outside the training loop (building a
/// task loads its model and data).
pub struct Heartbeat {
    _ticker: Option<Ticker>,
}

impl Heartbeat {
    /// Starts the lines (none on a terminal, or off rank 0).
    pub fn start(opts: &Options, what: impl Into<String>) -> Heartbeat {
        if std::io::stderr().is_terminal() || vpt_sdk::data_shard().rank != 0 {
            return Heartbeat { _ticker: None };
        }
        let (label, what, since) = (opts.label.clone(), what.into(), Instant::now());
        let ticker = Ticker::start(opts.log_every, move || {
            format!(
                "{} [{label}] {what}: {} so far",
                utc_now(),
                duration(since.elapsed().as_secs_f64())
            )
        });
        Heartbeat {
            _ticker: Some(ticker),
        }
    }
}

impl Progress {
    /// Starts showing a run under `budget` that is at `step` with `seconds` charged; an
    /// evaluation evaluates `eval_what`.
    pub fn start(
        opts: &Options,
        budget: Budget,
        step: u64,
        seconds: f64,
        eval_what: String,
    ) -> Progress {
        let shared = Arc::new(Shared {
            label: opts.label.clone(),
            budget,
            eval_what,
            started: Instant::now(),
            start_fraction: budget.fraction(step, seconds),
            state: Mutex::new(State {
                step,
                seconds,
                loss: None,
                value: None,
                evaluating: None,
            }),
        });
        if vpt_sdk::data_shard().rank != 0 {
            // rank 0 speaks for a data-parallel run
            return Progress {
                shared,
                bar: None,
                ticker: None,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = bar(&budget);
            bar.set_position((shared.start_fraction * 1000.0) as u64);
            return Progress {
                shared,
                bar: Some(bar),
                ticker: None,
            };
        }
        let s = Arc::clone(&shared);
        let ticker = Ticker::start(opts.log_every, move || s.line(Instant::now()));
        Progress {
            shared,
            bar: None,
            ticker: Some(ticker),
        }
    }

    /// Records a finished learner step: its loss and, after a meta step, the value V.
    pub fn step(&self, step: u64, seconds: f64, loss: f64, value: Option<f64>) {
        let mut st = self.shared.lock();
        st.step = step;
        st.seconds = seconds;
        st.loss = Some(loss);
        st.value = value.or(st.value);
        if let Some(bar) = &self.bar {
            let v = value.map(|v| format!(" V {v:+.3e}")).unwrap_or_default();
            bar.set_message(format!("step {step} loss {loss:.4}{v}"));
            bar.set_position((self.shared.budget.fraction(step, seconds) * 1000.0) as u64);
        }
    }

    /// An evaluation at learner step `step` starts.
    pub fn eval_started(&self, step: u64) {
        self.shared.lock().evaluating = Some((step, Instant::now()));
        let what = format!("evaluating {} at step {step}", self.shared.eval_what);
        if let Some(bar) = &self.bar {
            bar.set_message(what);
        } else if self.ticker.is_some() {
            eprintln!("{} [{}] {what}", utc_now(), self.shared.label);
        }
    }

    /// The evaluation under way has ended.
    pub fn eval_finished(&self) {
        let Some((step, since)) = self.shared.lock().evaluating.take() else {
            return;
        };
        if self.ticker.is_some() {
            eprintln!(
                "{} [{}] evaluated at step {step} in {}",
                utc_now(),
                self.shared.label,
                duration(since.elapsed().as_secs_f64())
            );
        }
    }

    /// Stops the display, leaving `message` on the terminal's bar.
    pub fn abandon(mut self, message: &'static str) {
        if let Some(bar) = self.bar.take() {
            bar.abandon_with_message(message);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not silence the progress lines.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The periodic line at `now`.
    fn line(&self, now: Instant) -> String {
        let st = self.lock().clone();
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let head = format!("{} [{}]", utc_now(), self.label);
        if let Some((step, since)) = st.evaluating {
            return format!(
                "{head} evaluating {} at step {step}: {} so far (elapsed {})",
                self.eval_what,
                duration(now.duration_since(since).as_secs_f64()),
                duration(elapsed)
            );
        }
        let fraction = self.budget.fraction(st.step, st.seconds);
        let position = match (self.budget.steps, self.budget.wall_clock) {
            (Some(n), None) => format!("step {}/{n}", st.step),
            (_, Some(w)) => format!(
                "step {}, {}/{} charged",
                st.step,
                duration(st.seconds),
                duration(w)
            ),
            (None, None) => format!("step {}", st.step),
        };
        let eta = eta(elapsed, self.start_fraction, fraction).map_or("?".into(), duration);
        let loss = st.loss.map_or("-".into(), |l| format!("{l:.4}"));
        let value = st.value.map_or("-".into(), |v| format!("{v:+.3e}"));
        format!(
            "{head} {position} ({:.0}%), elapsed {}, ETA {eta}, loss {loss}, V {value}",
            100.0 * fraction,
            duration(elapsed)
        )
    }
}

/// Seconds left, from `elapsed` seconds spent moving the budget from `from` to `now` (None
/// before any progress).
fn eta(elapsed: f64, from: f64, now: f64) -> Option<f64> {
    let done = now - from;
    (done > 1e-9).then(|| elapsed * (1.0 - now).max(0.0) / done)
}

/// `seconds` as `4.2s`, `3m05s` or `2h07m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{:.1}s", seconds.max(0.0)),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The current UTC time as `2026-01-31T12:00:00Z`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the Unix epoch as an RFC 3339 UTC timestamp (Hinnant's civil-from-days).
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn bar(budget: &Budget) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1000);
    let unit = match (budget.steps, budget.wall_clock) {
        (_, Some(w)) => format!("of {w:.0}s"),
        (Some(s), None) => format!("of {s} steps"),
        _ => String::new(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{percent}}% {unit} {{msg}}"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_durations_and_eta() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400 + 3661), "2000-02-29T01:01:01Z");
        assert_eq!(utc(1_798_675_200), "2026-12-31T00:00:00Z");
        assert_eq!(duration(42.44), "42.4s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7620.0), "2h07m");
        assert_eq!(eta(10.0, 0.0, 0.25), Some(30.0));
        assert_eq!(eta(10.0, 0.5, 0.75), Some(10.0));
        assert_eq!(eta(10.0, 0.5, 0.5), None);
    }

    #[test]
    fn the_line_names_step_budget_loss_and_value_then_the_evaluation() {
        let shared = Shared {
            label: "v seed 1".into(),
            budget: Budget {
                steps: Some(300),
                wall_clock: None,
            },
            eval_what: "task `tiny` (all examples)".into(),
            started: Instant::now(),
            start_fraction: 0.0,
            state: Mutex::new(State {
                step: 75,
                seconds: 3.0,
                loss: Some(0.61234),
                value: Some(1.5e-3),
                evaluating: None,
            }),
        };
        let later = shared.started + Duration::from_secs(10);
        let line = shared.line(later);
        assert!(
            line.contains(
                "[v seed 1] step 75/300 (25%), elapsed 10.0s, ETA 30.0s, loss 0.6123, V +1.500e-3"
            ),
            "{line}"
        );
        shared.lock().evaluating = Some((75, shared.started));
        let line = shared.line(later);
        assert!(
            line.contains("evaluating task `tiny` (all examples) at step 75: 10.0s so far"),
            "{line}"
        );
    }
}
