//! Run reports: `report.json`, `report.md` and the plots of a compare directory
//! ([`write_report`]). The parts live one job per module and are re-exported here:
//! [`crate::records`] (metrics.jsonl), [`crate::summary`] (per-arm statistics),
//! [`crate::render`] (text) and [`crate::plot`] (SVG).

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fileio::atomic_write;

pub use crate::records::*;
pub use crate::render::*;
pub use crate::summary::*;

/// `dir`, creating it if needed. Every file is written atomically.
pub fn write_report(dir: &Path, report: &Report) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| Error::Msg(format!("report.json: {e}")))?;
    atomic_write(dir.join("report.json"), format!("{json}\n").as_bytes())?;
    let plots = crate::plot::write_plots(dir, report)?;
    atomic_write(
        dir.join("report.md"),
        render_markdown(report, &plots).as_bytes(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::intervals::{seed_interval, Interval};
    use serde_json::{json, Value};
    use std::path::PathBuf;

    /// A fresh, empty temp directory unique to this process and test, removed on drop (also
    /// when the test panics).
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempDir {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn temp_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vpt-report-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// (feedback_loss, general_loss, pass@1) of one run's final evaluation.
    type Finals = (f64, f64, f64);
    /// Final values per arm and seed 0, 1, 2.
    pub(crate) const FINAL: [(&str, [Finals; 3]); 2] = [
        (
            "baseline",
            [(2.0, 3.0, 0.10), (2.2, 3.1, 0.20), (2.4, 3.2, 0.30)],
        ),
        (
            "v",
            [(1.9, 3.05, 0.30), (2.1, 3.15, 0.40), (2.5, 3.25, 0.20)],
        ),
    ];

    /// Writes `DIR/ARM/seed-S/metrics.jsonl` for [`FINAL`]: 20 train steps (a meta step every
    /// 4 for `v`), evals at steps 0, 10, 20 approaching the final values; `v` runs slower.
    pub(crate) fn fake_compare(dir: &Path) -> Vec<RunRecord> {
        let mut runs = Vec::new();
        for (arm, finals) in FINAL {
            let secs_per_step = if arm == "v" { 0.7 } else { 0.5 };
            for (seed, (fl, gl, pass)) in finals.iter().enumerate() {
                let run_dir = dir.join(arm).join(format!("seed-{seed}"));
                fs::create_dir_all(&run_dir).unwrap();
                let mut lines = Vec::new();
                for step in 0..=20u64 {
                    let t = step as f64 * secs_per_step + seed as f64 * 0.1;
                    if step % 10 == 0 {
                        let k = (20 - step) as f64 / 10.0; // 2, 1, 0
                        lines.push(json!({"kind": "eval", "step": step, "seconds": t,
                            "metrics": {"feedback_loss": fl + k, "general_loss": gl + k,
                                        "pass@1": pass * (1.0 - k / 3.0)}}));
                    }
                    if step < 20 {
                        let meta = (arm == "v" && step % 4 == 0).then(|| {
                            json!({"value": 0.1, "cos": 0.2 + 0.1 * seed as f64,
                                   "g_down_norm": 1.0, "g_pre_norm": 2.0, "skipped": false})
                        });
                        lines.push(json!({"kind": "train", "step": step, "seconds": t,
                            "lr": 1e-4, "meta": meta,
                            "pretrain_loss": 4.0 - step as f64 * 0.05 + seed as f64 * 0.01}));
                    }
                }
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                fs::write(run_dir.join(METRICS_FILE), text).unwrap();
                runs.push(RunRecord {
                    arm: arm.into(),
                    seed: seed as u64,
                    dir: run_dir,
                });
            }
        }
        runs
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn reads_typed_records_with_nulls_as_nan() {
        let dir = temp_dir("read");
        let path = dir.join(METRICS_FILE);
        fs::write(
            &path,
            concat!(
                r#"{"kind":"train","step":3,"seconds":1.5,"lr":0.001,"pretrain_loss":2.5,"meta":null}"#,
                "\n\n",
                r#"{"kind":"train","step":4,"seconds":2,"lr":0.001,"pretrain_loss":null,"meta":{"value":0.5,"cos":0.25,"g_down_norm":1,"g_pre_norm":2,"skipped":true},"extra":7}"#,
                "\n",
                r#"{"kind":"eval","step":4,"seconds":2.5,"metrics":{"feedback_loss":1.25,"acc":null}}"#,
                "\n"
            ),
        )
        .unwrap();
        let recs = read_metrics(&path).unwrap();
        assert_eq!(recs.len(), 3);
        let Record::Train(t) = &recs[0] else {
            panic!("{:?}", recs[0])
        };
        assert_eq!(
            (t.step, t.seconds, t.lr, t.pretrain_loss),
            (3, 1.5, 0.001, 2.5)
        );
        assert!(t.meta.is_none());
        let Record::Train(t) = &recs[1] else {
            panic!("{:?}", recs[1])
        };
        assert!(t.pretrain_loss.is_nan());
        let m = t.meta.as_ref().unwrap();
        assert_eq!(
            (m.value, m.cos, m.g_down_norm, m.g_pre_norm, m.skipped),
            (0.5, 0.25, 1.0, 2.0, true)
        );
        let Record::Eval(e) = &recs[2] else {
            panic!("{:?}", recs[2])
        };
        assert_eq!(
            (e.step, e.seconds, e.metrics["feedback_loss"]),
            (4, 2.5, 1.25)
        );
        assert!(e.metrics["acc"].is_nan());
        // A written record reads back unchanged.
        let line = serde_json::to_string(&recs[2]).unwrap();
        assert!(line.contains(r#""kind":"eval""#), "{line}");
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = temp_dir("malformed");
        let path = dir.join(METRICS_FILE);
        fs::write(
            &path,
            concat!(
                r#"{"kind":"eval","step":0,"seconds":0,"metrics":{}}"#,
                "\n",
                r#"{"kind":"train","step":1,"seconds":0.1,"lr":0.1,"pretrain_loss":1,"meta":null}"#,
                "\n",
                r#"{"kind":"train","step":2,"seconds":0.2,"lr":0.1}"#,
                "\n"
            ),
        )
        .unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
        assert!(err.contains("pretrain_loss"), "{err}");
        fs::write(&path, "{\"kind\":\"bogus\",\"step\":0}\n").unwrap();
        let err = read_metrics(&path).unwrap_err().to_string();
        assert!(err.contains(":1:") && err.contains("bogus"), "{err}");
        let err = read_metrics(dir.join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.jsonl"), "{err}");
    }

    #[test]
    fn summarizes_final_metrics_across_seeds() {
        let dir = temp_dir("summary");
        let report = summarize(&fake_compare(&dir)).unwrap();
        assert_eq!(report.metrics, ["feedback_loss", "general_loss", "pass@1"]);
        let names: Vec<&str> = report.arms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["baseline", "v"]);
        let base = &report.arms[0];
        assert_eq!(base.seeds.len(), 3);
        assert_eq!(base.seeds[1].steps, 20);
        assert!(close(base.seeds[1].seconds, 10.1));
        assert_eq!(base.seeds[2].metrics["feedback_loss"], 2.4);
        let fl = base.metrics["feedback_loss"];
        assert!(close(fl.mean, 2.2) && close(fl.std, 0.2), "{fl:?}");
        assert_eq!((fl.min, fl.max, fl.n), (2.0, 2.4, 3));
        let p = report.arms[1].metrics["pass@1"];
        assert!(close(p.mean, 0.3) && close(p.std, 0.1), "{p:?}");
        let secs = report.arms[1].seconds;
        assert!(close(secs.mean, 14.1) && close(secs.std, 0.1), "{secs:?}");
        assert_eq!(
            report.arms[1].steps,
            Stats {
                mean: 20.0,
                std: 0.0,
                min: 20.0,
                max: 20.0,
                n: 3
            }
        );
        // v wins seeds 0 and 1 on feedback_loss (lower) and pass@1 (higher), loses seed 2.
        assert!(base.vs_baseline.is_empty());
        let wins = &report.arms[1].vs_baseline;
        assert_eq!(wins["feedback_loss"], SeedWins { wins: 2, paired: 3 });
        assert_eq!(wins["pass@1"], SeedWins { wins: 2, paired: 3 });
        assert_eq!(wins["general_loss"], SeedWins { wins: 0, paired: 3 });
        assert!(!wins["feedback_loss"].every_seed());
        assert_eq!(report.best_arm("feedback_loss").unwrap().0.name, "v"); // 2.167 < 2.2
        assert_eq!(report.best_arm("general_loss").unwrap().0.name, "baseline");
        assert_eq!(report.best_arm("pass@1").unwrap().0.name, "v");
    }

    #[test]
    fn formats_mean_and_std() {
        let st = |mean, std| Stats {
            mean,
            std,
            min: 0.0,
            max: 0.0,
            n: 2,
        };
        assert_eq!(format_stats(&st(2.2, 0.2)), "2.200 ± 0.200");
        assert_eq!(format_stats(&st(2.692, 0.0004)), "2.6920 ± 0.0004");
        assert_eq!(format_stats(&st(1234.5, 10.0)), "1234 ± 10");
        assert_eq!(format_stats(&st(0.0123, 0.0)), "0.01230 ± 0.00000");
        assert_eq!(format_stats(&st(f64::NAN, f64::NAN)), "NaN ± NaN");
    }

    #[test]
    fn stats_of_one_value_and_non_finite() {
        assert_eq!(
            Stats::of(&[3.0]),
            Some(Stats {
                mean: 3.0,
                std: 0.0,
                min: 3.0,
                max: 3.0,
                n: 1
            })
        );
        let s = Stats::of(&[1.0, f64::NAN, 3.0]).unwrap();
        assert!(
            close(s.mean, 2.0) && close(s.std, 2f64.sqrt()) && s.n == 2,
            "{s:?}"
        );
        assert_eq!(Stats::of(&[f64::NAN]), None);
    }

    #[test]
    fn refuses_runs_without_eval_or_with_repeated_seed() {
        let dir = temp_dir("refuse");
        let mut runs = fake_compare(&dir);
        let dup = RunRecord {
            arm: "v".into(),
            seed: 1,
            dir: runs[4].dir.clone(),
        };
        let err = summarize(&[runs[4].clone(), dup]).unwrap_err().to_string();
        assert!(err.contains("seed 1 twice"), "{err}");
        let path = runs[0].dir.join(METRICS_FILE);
        fs::write(
            &path,
            r#"{"kind":"train","step":0,"seconds":0,"lr":0.1,"pretrain_loss":1,"meta":null}"#,
        )
        .unwrap();
        let err = summarize(&runs).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("no eval record"),
            "{err}"
        );
        runs.clear();
        assert!(summarize(&runs).is_err());
    }

    #[test]
    fn report_json_has_the_exact_schema() {
        let dir = temp_dir("json");
        let report = summarize(&fake_compare(&dir)).unwrap();
        write_report(&dir, &report).unwrap();
        let v: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        assert_eq!(keys(&v), ["arms"]);
        assert_eq!(keys(&v["arms"]), ["baseline", "v"]);
        assert_eq!(keys(&v["arms"]["baseline"]), ["seeds", "summary"]);
        assert_eq!(keys(&v["arms"]["v"]), ["seeds", "summary", "vs_baseline"]);
        let seeds = v["arms"]["v"]["seeds"].as_array().unwrap();
        assert_eq!(seeds.len(), 3);
        for (i, s) in seeds.iter().enumerate() {
            assert_eq!(keys(s), ["metrics", "seconds", "seed", "steps"]);
            assert_eq!(s["seed"], json!(i));
            assert_eq!(s["steps"], json!(20));
            assert!(s["seconds"].is_f64());
            assert_eq!(
                keys(&s["metrics"]),
                ["feedback_loss", "general_loss", "pass@1"]
            );
        }
        assert_eq!(seeds[2]["metrics"]["feedback_loss"], json!(2.5));
        let fl = &v["arms"]["baseline"]["summary"]["metrics"]["feedback_loss"];
        assert_eq!(keys(fl), ["max", "mean", "min", "n", "std"]);
        assert!(
            close(fl["mean"].as_f64().unwrap(), 2.2) && close(fl["std"].as_f64().unwrap(), 0.2)
        );
        assert_eq!(
            v["arms"]["v"]["vs_baseline"]["feedback_loss"],
            json!({"wins": 2, "paired": 3, "every_seed": false})
        );
        // No temp files are left behind.
        let stray: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[test]
    fn intervals_paired_differences_and_diagnostic_labels() {
        let dir = temp_dir("intervals");
        // (arm, [(feedback_loss, ci_lo, ci_hi) per seed]); the oracle is best but diagnostic.
        type Bounds = (f64, f64, f64);
        let arms: [(&str, [Bounds; 2]); 3] = [
            ("baseline", [(2.0, 1.8, 2.3), (2.2, 2.0, 2.4)]),
            ("v", [(1.9, f64::NAN, f64::NAN), (2.0, f64::NAN, f64::NAN)]),
            ("oracle", [(1.0, 0.9, 1.1), (1.2, 1.1, 1.3)]),
        ];
        let mut runs = Vec::new();
        for (arm, seeds) in arms {
            for (seed, (fl, lo, hi)) in seeds.iter().enumerate() {
                let run_dir = dir.join(arm).join(format!("seed-{seed}"));
                fs::create_dir_all(&run_dir).unwrap();
                let mut m = json!({"feedback_loss": fl});
                if lo.is_finite() {
                    m["feedback_loss.ci_lo"] = json!(lo);
                    m["feedback_loss.ci_hi"] = json!(hi);
                }
                let line = json!({"kind": "eval", "step": 5, "seconds": 1.0, "metrics": m});
                fs::write(run_dir.join(METRICS_FILE), format!("{line}\n")).unwrap();
                let estimator = if arm == "oracle" { "oracle" } else { "exact" };
                let cfg = json!({"meta": {"estimator": estimator}});
                fs::write(run_dir.join("config.json"), cfg.to_string()).unwrap();
                runs.push(RunRecord {
                    arm: arm.into(),
                    seed: seed as u64,
                    dir: run_dir,
                });
            }
        }
        let report = summarize(&runs).unwrap();
        assert_eq!(report.metrics, ["feedback_loss"]); // bounds are not metrics
        assert!(report.arms[2].diagnostic && !report.arms[1].diagnostic);
        assert_eq!(report.best_arm("feedback_loss").unwrap().0.name, "v");
        let md = render_markdown(&report, &[]);
        assert!(md.contains("| oracle (diagnostic) |"), "{md}");
        // baseline: both seeds report bounds → combined examples interval; seeds → t interval
        let se = |h: f64| h / (2.0 * 1.959_963_984_540_054);
        let half = 1.959_963_984_540_054 * (se(0.5).powi(2) + se(0.4).powi(2)).sqrt() / 2.0;
        let want = Interval {
            lo: 2.1 - half,
            hi: 2.1 + half,
        }
        .format(3);
        let t = seed_interval(&[2.0, 2.2]).unwrap().format(3);
        assert!(
            md.contains(&format!(
                "| feedback_loss | baseline | 2.100 | {want} | {t} |"
            )),
            "{md}"
        );
        assert!(md.contains("| feedback_loss | v | 1.950 | — |"), "{md}");
        // v − baseline per seed: −0.1, −0.2
        assert!(
            md.contains("| feedback_loss | v | 0: -0.1000, 1: -0.2000 | -0.1500 |"),
            "{md}"
        );
        assert!(md.contains("| 2/2 |"), "{md}");
    }

    #[test]
    fn renders_table_and_verdicts() {
        let dir = temp_dir("table");
        let report = summarize(&fake_compare(&dir)).unwrap();
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        let header: Vec<&str> = lines[0]
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            [
                "arm",
                "seeds",
                "feedback_loss",
                "general_loss",
                "pass@1",
                "steps",
                "seconds"
            ]
        );
        assert!(
            lines[1].starts_with("|---") && lines[1].ends_with(":|"),
            "{}",
            lines[1]
        );
        let base: Vec<&str> = lines[2]
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            base,
            [
                "baseline",
                "3",
                "2.200 ± 0.200",
                "3.100 ± 0.100",
                "0.2000 ± 0.1000",
                "20 ± 0",
                "10.1 ± 0.1"
            ]
        );
        assert!(lines[3].starts_with("| v "), "{}", lines[3]);
        // Every table row has the same width.
        assert!(
            lines[..4]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "{table}"
        );
        assert!(
            table.contains("- best on feedback_loss (lower is better): v (2.167 ± 0.306)"),
            "{table}"
        );
        assert!(
            table.contains("- best on general_loss (lower is better): baseline (3.100 ± 0.100)"),
            "{table}"
        );
        assert!(
            table.contains("- best on pass@1 (higher is better): v (0.3000 ± 0.1000)"),
            "{table}"
        );
        assert!(
            table.contains("- v does NOT beat baseline on feedback_loss in every seed (2/3 seeds)"),
            "{table}"
        );
        let md = fs::read_to_string({
            write_report(&dir, &report).unwrap();
            dir.join("report.md")
        })
        .unwrap();
        assert!(
            md.starts_with("# vpt compare report") && md.contains(&table),
            "{md}"
        );
        assert!(
            md.contains("![plot_feedback_loss_vs_seconds](plot_feedback_loss_vs_seconds.svg)"),
            "{md}"
        );
    }

    #[test]
    fn verdict_when_v_wins_every_seed_and_without_baseline() {
        let dir = temp_dir("verdict");
        let runs = fake_compare(&dir);
        // Seed 2 of v: feedback_loss 2.5 → 2.3, below baseline's 2.4.
        let path = runs[5].dir.join(METRICS_FILE);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"feedback_loss\":2.5", "\"feedback_loss\":2.3");
        fs::write(&path, text).unwrap();
        let report = summarize(&runs).unwrap();
        assert!(verdicts(&report)
            .contains(&"v beats baseline on feedback_loss in every seed (3/3)".to_string()));
        let report = summarize(&runs[3..]).unwrap();
        let v = verdicts(&report);
        assert_eq!(
            v.last().unwrap(),
            "no `baseline` arm: no seed-by-seed comparison on feedback_loss"
        );
    }

    #[test]
    fn designer_metrics_and_a_zero_designer_gradient_reach_report_md_and_plots() {
        let dir = temp_dir("step-metrics");
        let runs = fake_compare(&dir);
        // v: alpha_mean at every step; seed 0's φ gradient is 0 at every meta step, seed 1's
        // only at its first two; seed 2 logs none (an older log: no warning either).
        for (seed, run) in runs.iter().filter(|r| r.arm == "v").enumerate() {
            let path = run.dir.join(METRICS_FILE);
            let text: String = fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| {
                    let mut v: Value = serde_json::from_str(l).unwrap();
                    if v["kind"] == "train" {
                        let step = v["step"].as_f64().unwrap();
                        v["metrics"] = json!({"alpha_mean": 0.1 + 0.01 * step + seed as f64});
                        if v["meta"].is_object() && seed < 2 {
                            let norm = if seed == 0 || step < 8.0 { 0.0 } else { 0.5 };
                            v["meta"]["phi_grad_norm"] = json!(norm);
                        }
                    }
                    format!("{v}\n")
                })
                .collect();
            fs::write(&path, text).unwrap();
        }
        let report = summarize(&runs).unwrap();
        assert_eq!(report.step_metrics(), ["alpha_mean"]);
        write_report(&dir, &report).unwrap();
        let md = fs::read_to_string(dir.join("report.md")).unwrap();
        // seed means of 0.1 + 0.01·(0..20) + seed: 0.195, 1.195, 2.195; last steps 0.29 + seed
        assert!(md.contains("## Learner-step metrics"), "{md}");
        assert!(
            md.contains("| alpha_mean | v | 1.195 ± 1.000 | 1.290 ± 1.000 |"),
            "{md}"
        );
        assert!(!md.contains("| alpha_mean | baseline |"), "{md}");
        assert!(md.contains("## Warnings"), "{md}");
        assert!(
            md.contains(
                "**v, seed 0**: φ's gradient was exactly 0 at each of the first 3 meta steps"
            ),
            "{md}"
        );
        assert!(!md.contains("seed 1**") && !md.contains("seed 2**"), "{md}");
        assert!(md.contains("![plot_train_alpha_mean_vs_step](plot_train_alpha_mean_vs_step.svg)"));
        let svg = fs::read_to_string(dir.join("plot_train_alpha_mean_vs_step.svg")).unwrap();
        assert!(svg.contains("train/alpha_mean vs step"), "{svg}");
        // The same rule as the live warning of `vpt run`.
        assert!(crate::meta::zero_gradient_warning(&[0.0, 0.0]).is_none());
        assert!(crate::meta::zero_gradient_warning(&[0.0, 1e-30, 0.0]).is_none());
        assert!(crate::meta::zero_gradient_warning(&[0.0, 0.0, 0.0, 1.0]).is_some());
    }

    #[test]
    fn discovers_runs_in_arm_order() {
        let dir = temp_dir("discover");
        fake_compare(&dir);
        for d in [
            "aaa/seed-0",
            "random_feedback/seed-1",
            "random_feedback/seed-0",
            "v/notes",
            ".hidden/seed-0",
        ] {
            fs::create_dir_all(dir.join(d)).unwrap();
            fs::write(dir.join(d).join(METRICS_FILE), "").unwrap();
        }
        fs::create_dir_all(dir.join("zzz/seed-0")).unwrap(); // no metrics.jsonl: skipped
        let found: Vec<(String, u64)> = discover_runs(&dir)
            .unwrap()
            .into_iter()
            .map(|r| (r.arm, r.seed))
            .collect();
        let want = [
            ("baseline", 0),
            ("baseline", 1),
            ("baseline", 2),
            ("v", 0),
            ("v", 1),
            ("v", 2),
            ("random_feedback", 0),
            ("random_feedback", 1),
            ("aaa", 0),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(a, s)| (a.to_string(), *s)).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = temp_dir("atomic");
        let path = dir.join("x.bin");
        atomic_write(&path, b"first version, longer").unwrap();
        atomic_write(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let err = atomic_write(dir.join("no/such/dir/x"), b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no/such/dir"), "{err}");
    }

    #[test]
    fn metric_order_puts_core_metrics_first() {
        let names: Vec<String> = ["zeta", "general_loss", "acc", "feedback_loss", "acc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            metric_order(&names),
            ["feedback_loss", "general_loss", "acc", "zeta"]
        );
        assert!(lower_is_better("feedback_loss") && lower_is_better("val_PPL"));
        assert!(!lower_is_better("pass@1") && !lower_is_better("accuracy"));
    }
}
