//! Bad input replayed against the real `vpt` binary: absurd sizes in every shipped plugin's
//! config, closed output pipes, named pipes where files are expected, values that used to pass
//! silently (`eval_limit = 0`, `probe --batches 0`, `bench --steps 0`, negative threads), and
//! inputs whose refusal was unclear (a number too large on `--set`, a JSONL byte-order mark, a
//! plugin built for another architecture). "Clear error" means: exit code 1 (not a signal or an
//! abort), within the time limit, a short message naming the field or file at fault.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};
use vpt_integration::{cdylib, clear_error, scratch_dir, tiny_config_path, tiny_run, vpt_command};

const MIN: Duration = Duration::from_secs(60);

/// A one-step LM run on the tiny random model reading `jsonl` as its unlabeled data.
fn lm_config(dir: &Path, jsonl: &Path, extra: &str) -> PathBuf {
    let cfg = dir.join("lm.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nsteps = 1\neval_limit = 2\n[task]\nplugin = \"lm\"\nname = \"causal_lm\"\n\
             [task.config]\nmodel = \"tiny_random\"\nseq_len = 16\nbatch_size = 2\n\
             feedback_batch_size = 2\nfeedback_max_len = 64\ntop_k = 8\n{extra}\n\
             [task.config.unlabeled]\ngenerated_math = false\njsonl = [{:?}]\n\
             general_fraction = 0.0\n[task.config.eval]\ngeneral_rows = 0\nmax_new_tokens = 4\n\
             [task.config.eval.test]\nsize = 2\n",
            jsonl.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

fn lm_command(cfg: &Path, out: &Path) -> Command {
    let mut c = vpt_command();
    c.arg("--plugin")
        .arg(cdylib("vpt_lm"))
        .arg("run")
        .arg(cfg)
        .arg("--out")
        .arg(out);
    c
}

fn write_jsonl(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("data.jsonl");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// Runs `cmd` and checks clap (or vpt) refused it: a non-zero exit code that is not a signal,
/// nothing on stdout, and stderr naming every needle.
fn refused(cmd: &mut Command, needles: &[&str]) {
    let o = cmd.output().expect("spawning vpt");
    let err = String::from_utf8_lossy(&o.stderr);
    let code = o.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{cmd:?}: {:?}\n{err}",
        o.status
    );
    assert!(o.stdout.is_empty(), "{cmd:?} printed a result");
    for n in needles {
        assert!(err.contains(n), "{cmd:?}: `{n}` not in:\n{err}");
    }
}

#[test]
fn huge_tiny_hidden_is_refused_naming_the_field() {
    let root = scratch_dir("fi-hidden");
    clear_error(
        &mut tiny_run(&root.join("r"), &["task.config.hidden=1000000000000"]),
        &["`task.config.hidden`", "1000000000000", "at most 65536"],
        MIN,
    );
}

#[test]
fn huge_designer_hidden_is_refused_naming_the_field() {
    let root = scratch_dir("fi-dhidden");
    clear_error(
        &mut tiny_run(&root.join("r"), &["designer.config.hidden=1000000000000"]),
        &["`designer.config.hidden`", "at most"],
        MIN,
    );
}

#[test]
fn huge_batch_and_feedback_sizes_are_refused_naming_the_field() {
    let root = scratch_dir("fi-batch");
    for (set, field) in [
        (
            "task.config.batch_size=1000000000000",
            "`task.config.batch_size`",
        ),
        (
            "task.config.feedback_size=1000000000000",
            "`task.config.feedback_size`",
        ),
        // each within its own bound, together a 2^36-element tensor
        (
            "task.config.feedback_size=16777216",
            "`task.config.feedback_size`",
        ),
    ] {
        let mut c = tiny_run(&root.join(set.replace('=', "-")), &[set]);
        if set.contains("16777216") {
            c.args(["--set", "task.config.dim=4096"]);
        }
        clear_error(&mut c, &[field, "too large"], MIN);
    }
}

#[test]
fn huge_lm_seq_len_is_refused_at_once() {
    let root = scratch_dir("fi-seq");
    let data = write_jsonl(&root, b"{\"text\": \"a b c\"}\n");
    let cfg = lm_config(&root, &data, "");
    clear_error(
        lm_command(&cfg, &root.join("r")).args(["--set", "task.config.seq_len=1000000000000"]),
        &["`task.config.seq_len`", "at most"],
        MIN,
    );
    // batch × sequence × vocabulary: each bounded alone, too large together
    clear_error(
        lm_command(&cfg, &root.join("r2")).args([
            "--set",
            "task.config.seq_len=65536",
            "--set",
            "task.config.batch_size=4096",
        ]),
        &["`task.config.batch_size`", "too large"],
        MIN,
    );
}

#[test]
fn huge_vit_dim_is_refused_naming_the_field() {
    let root = scratch_dir("fi-vit");
    let cfg = root.join("vision.toml");
    std::fs::write(
        &cfg,
        "[run]\nsteps = 1\n[task]\nplugin = \"vision\"\nname = \"dino_dense\"\n\
         [task.config.vit]\ndim = 1000000000\n",
    )
    .unwrap();
    clear_error(
        vpt_command()
            .arg("--plugin")
            .arg(cdylib("vpt_vision"))
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(root.join("r")),
        &["`task.config.vit.dim`", "at most"],
        MIN,
    );
}

#[test]
fn huge_reweight_width_is_refused_naming_the_field() {
    let root = scratch_dir("fi-rw");
    let cfg = tiny_config_path().with_file_name("reweight-tiny.toml");
    clear_error(
        vpt_command()
            .arg("--plugin")
            .arg(cdylib("vpt_reweight"))
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(root.join("r"))
            .args(["--set", "designer.config.hidden=[1000000000000]"]),
        &["`designer.config.hidden[0]`", "at most"],
        MIN,
    );
}

/// `vpt … | head -1`: the reader is gone before vpt writes; vpt exits 141 without a word.
fn quiet_on_closed_stdout(args: &[&str]) {
    let mut child = vpt_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(141), "{args:?}: {status:?}\n{err}");
    assert!(err.is_empty(), "{args:?} wrote to stderr:\n{err}");
}

#[test]
fn closed_stdout_of_schema_ends_quietly() {
    quiet_on_closed_stdout(&["schema", "run"]);
}

#[test]
fn closed_stdout_of_plugins_list_ends_quietly() {
    quiet_on_closed_stdout(&["plugins", "list", "--json"]);
}

#[test]
fn fifo_as_data_file_is_refused() {
    let root = scratch_dir("fi-fifo-data");
    let fifo = root.join("data.jsonl");
    mkfifo(&fifo);
    let cfg = lm_config(&root, &fifo, "");
    clear_error(
        &mut lm_command(&cfg, &root.join("r")),
        &["data.jsonl", "named pipe", "VPT_ALLOW_SPECIAL_FILES"],
        MIN,
    );
}

#[test]
fn fifo_given_to_plugins_inspect_is_refused() {
    let root = scratch_dir("fi-fifo-so");
    let fifo = root.join("libx.so");
    mkfifo(&fifo);
    clear_error(
        vpt_command().args(["plugins", "inspect"]).arg(&fifo),
        &["libx.so", "named pipe"],
        MIN,
    );
}

#[test]
fn eval_limit_zero_is_refused() {
    let root = scratch_dir("fi-limit");
    clear_error(
        &mut tiny_run(&root.join("r"), &["run.eval_limit=0"]),
        &["`run.eval_limit`", "at least 1"],
        MIN,
    );
    refused(
        vpt_command()
            .arg("eval")
            .arg(tiny_config_path())
            .args(["--limit", "0"]),
        &["--limit"],
    );
}

#[test]
fn probe_without_a_correlation_is_refused() {
    for (flag, value) in [("--batches", "0"), ("--batches", "1"), ("--eta", "nan")] {
        refused(
            vpt_command()
                .arg("probe")
                .arg(tiny_config_path())
                .args([flag, value]),
            &[flag],
        );
    }
}

#[test]
fn bench_with_zero_steps_is_refused() {
    refused(
        vpt_command()
            .arg("bench")
            .arg(tiny_config_path())
            .args(["--steps", "0"]),
        &["--steps"],
    );
}

#[test]
fn number_too_large_on_set_says_so_like_the_file() {
    let root = scratch_dir("fi-big");
    let err = clear_error(
        &mut tiny_run(&root.join("r"), &["run.steps=18446744073709551616"]),
        &["`run.steps`", "18446744073709551616"],
        MIN,
    );
    assert!(!err.contains("invalid type: string"), "{err}");
    let text = std::fs::read_to_string(tiny_config_path())
        .unwrap()
        .replace("steps = 300", "steps = 18446744073709551616");
    let cfg = root.join("big.toml");
    std::fs::write(&cfg, text).unwrap();
    let file_err = clear_error(
        vpt_command()
            .arg("run")
            .arg(&cfg)
            .arg("--out")
            .arg(root.join("r2")),
        &[],
        MIN,
    );
    let reason = |e: &str| e.rsplit(": ").next().unwrap_or_default().trim().to_string();
    assert_eq!(reason(&err), reason(&file_err), "{err}\n{file_err}");
}

#[test]
fn jsonl_with_a_byte_order_mark_is_read() {
    let root = scratch_dir("fi-bom");
    let data = write_jsonl(
        &root,
        b"\xEF\xBB\xBF{\"text\": \"one two three four five six\"}\n{\"text\": \"seven eight\"}\n",
    );
    let cfg = lm_config(&root, &data, "");
    let o = lm_command(&cfg, &root.join("r")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn plugin_for_another_architecture_is_named_as_such() {
    let root = scratch_dir("fi-arch");
    let mut bytes = std::fs::read(cdylib("vpt_tiny")).unwrap();
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    let other: u16 = if machine == 183 { 62 } else { 183 }; // AArch64, else x86-64
    bytes[18..20].copy_from_slice(&other.to_le_bytes());
    let so = root.join("libvpt_other.so");
    std::fs::write(&so, &bytes).unwrap();
    clear_error(
        vpt_command().args(["plugins", "inspect"]).arg(&so),
        &["libvpt_other.so", "another architecture"],
        MIN,
    );
}

#[test]
fn negative_threads_and_eval_seconds_are_refused() {
    let root = scratch_dir("fi-neg");
    clear_error(
        &mut tiny_run(&root.join("r"), &["run.threads=-3"]),
        &["`run.threads`"],
        MIN,
    );
    clear_error(
        &mut tiny_run(&root.join("r2"), &["run.eval_every_seconds=-1"]),
        &["`run.eval_every_seconds`"],
        MIN,
    );
}
