//! A generator of verifiable GSM8K-style word problems with worked, step-by-step solutions
//! ending in `#### N`: six templates (shopping, reading rates, sharing, ages, wages, travel),
//! difficulty levels 1–3 (steps = level + 1, larger numbers at higher levels), deterministic by
//! seed, with train / feedback / test splits that never share a problem.
//!
//! Solutions use GSM8K's calculator annotations: `3 * 4 = <<3*4=12>>12`.

use crate::data::Example;
use std::collections::HashSet;
use vpt_sdk::rng::{fnv1a, SplitMix64};

/// The lowest and highest difficulty level.
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=3;

/// Which split a problem belongs to; each split draws from its own seed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The unlabeled math stream (rendered as plain text).
    Train,
    /// Feedback sets (labeled, steer φ).
    Feedback,
    /// Held-out test problems (pass@1).
    Test,
}

impl Split {
    fn tag(self) -> u64 {
        fnv1a(match self {
            Split::Train => b"mathgen/train",
            Split::Feedback => b"mathgen/feedback",
            Split::Test => b"mathgen/test",
        })
    }
}

/// One generated problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The question text.
    pub question: String,
    /// The worked solution, one step per line, ending in `#### N`.
    pub answer: String,
    /// N.
    pub value: i64,
    /// Its difficulty level.
    pub level: u8,
    /// The template it came from.
    pub template: &'static str,
}

impl Problem {
    /// As a GSM8K-format example (prompt = question, response = worked solution).
    pub fn to_example(&self) -> Example {
        Example::new(self.question.clone(), self.answer.clone())
    }
    /// As a multiple-choice example: the question with four numeric options (the answer and
    /// three near misses: off by a small step, doubled or halved, off by ten), in a seeded order.
    pub fn to_choice(&self, rng: &mut SplitMix64) -> Example {
        let v = self.value;
        let step = rng.int_range(1, 3);
        let mut options = vec![v];
        for d in [v + step, v - step, v * 2, v / 2, v + 10, v - 10] {
            if d > 0 && !options.contains(&d) && options.len() < 4 {
                options.push(d);
            }
        }
        let mut extra = v + 11;
        while options.len() < 4 {
            if !options.contains(&extra) {
                options.push(extra);
            }
            extra += 1;
        }
        for i in (1..options.len()).rev() {
            options.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        Example {
            prompt: self.question.clone(),
            response: v.to_string(),
            options: options.iter().map(i64::to_string).collect(),
        }
    }
    /// As plain pretraining text.
    pub fn to_text(&self) -> String {
        format!("Question: {}\nAnswer: {}", self.question, self.answer)
    }
}

const NAMES: &[&str] = &[
    "Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen",
    "Yara",
];
const ITEMS: &[&str] = &[
    "notebook", "pencil", "apple", "muffin", "sticker", "candle", "mug", "sock", "marker", "plant",
    "ticket", "bracelet",
];
const SWEETS: &[&str] = &[
    "candies", "cookies", "marbles", "stickers", "grapes", "cards", "beads",
];
const JOBS: &[&str] = &[
    "tutoring",
    "babysitting",
    "gardening",
    "dog walking",
    "painting fences",
];
const VEHICLES: &[&str] = &["car", "bus", "van", "truck", "motorbike"];

/// The step-by-step solution being written.
struct Solution {
    lines: Vec<String>,
}

impl Solution {
    /// A line `pre expr = <<expr=value>>value post.`; returns `value`.
    fn step(&mut self, pre: &str, expr: String, value: i64, post: &str) -> i64 {
        self.lines
            .push(format!("{pre}{expr} = <<{expr}={value}>>{value}{post}."));
        value
    }
    fn finish(mut self, value: i64) -> String {
        self.lines.push(format!("#### {value}"));
        self.lines.join("\n")
    }
}

/// Number range for operands at `level`.
fn mag(level: u8) -> (i64, i64) {
    match level {
        1 => (2, 12),
        2 => (3, 40),
        _ => (12, 150),
    }
}

type Template = fn(&mut SplitMix64, u8) -> (String, String, i64);

fn shopping(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (lo, hi) = mag(level);
    let (n, item, item2) = (r.pick(NAMES), r.pick(ITEMS), r.pick(ITEMS));
    let (a, p) = (r.int_range(2, 9), r.int_range(lo, hi));
    let mut s = Solution { lines: vec![] };
    let c1 = s.step(
        &format!("The {item}s cost "),
        format!("{a}*{p}"),
        a * p,
        " dollars",
    );
    if level == 1 {
        let q = r.int_range(lo, hi);
        let total = s.step(
            "In total she spends ",
            format!("{c1}+{q}"),
            c1 + q,
            " dollars",
        );
        let qn = format!("{n} buys {a} {item}s at ${p} each and one {item2} for ${q}. How many dollars does {n} spend?");
        return (qn, s.finish(total), total);
    }
    let (b, q) = (r.int_range(2, 9), r.int_range(lo, hi));
    let c2 = s.step(
        &format!("The {item2}s cost "),
        format!("{b}*{q}"),
        b * q,
        " dollars",
    );
    let total = s.step(
        "In total she spends ",
        format!("{c1}+{c2}"),
        c1 + c2,
        " dollars",
    );
    let mut qn = format!("{n} buys {a} {item}s at ${p} each and {b} {item2}s at ${q} each.");
    if level == 2 {
        qn.push_str(&format!(" How many dollars does {n} spend?"));
        return (qn, s.finish(total), total);
    }
    let bill = (total / 100 + 1 + r.int_range(0, 2)) * 100;
    let change = s.step(
        "Her change is ",
        format!("{bill}-{total}"),
        bill - total,
        " dollars",
    );
    qn.push_str(&format!(
        " She pays with ${bill}. How many dollars of change does {n} get?"
    ));
    (qn, s.finish(change), change)
}

fn reading(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (lo, hi) = mag(level);
    let n = r.pick(NAMES);
    let (rate, h1) = (r.int_range(lo, hi), r.int_range(2, 6));
    let mut s = Solution { lines: vec![] };
    let p1 = s.step(
        "On Monday she reads ",
        format!("{rate}*{h1}"),
        rate * h1,
        " pages",
    );
    if level == 1 {
        let book = p1 + r.int_range(lo, hi * 3);
        let left = s.step("Pages left: ", format!("{book}-{p1}"), book - p1, "");
        let qn = format!(
            "{n} reads {rate} pages per hour. She reads for {h1} hours on Monday. Her book has {book} pages. How many pages are left?"
        );
        return (qn, s.finish(left), left);
    }
    let h2 = r.int_range(2, 6);
    let p2 = s.step(
        "On Tuesday she reads ",
        format!("{rate}*{h2}"),
        rate * h2,
        " pages",
    );
    let both = s.step(
        "Altogether she reads ",
        format!("{p1}+{p2}"),
        p1 + p2,
        " pages",
    );
    let base = format!("{n} reads {rate} pages per hour. She reads for {h1} hours on Monday and {h2} hours on Tuesday.");
    if level == 2 {
        return (
            format!("{base} How many pages does {n} read in the two days?"),
            s.finish(both),
            both,
        );
    }
    let book = both + r.int_range(lo, hi * 3);
    let left = s.step("Pages left: ", format!("{book}-{both}"), book - both, "");
    (
        format!("{base} Her book has {book} pages. How many pages are left?"),
        s.finish(left),
        left,
    )
}

fn sharing(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (lo, hi) = mag(level);
    let (n, what) = (r.pick(NAMES), r.pick(SWEETS));
    let (k, share) = (r.int_range(2, 8), r.int_range(lo, hi));
    let total = k * share; // level 1 only
    let mut s = Solution { lines: vec![] };
    let (qn_get, got) = if level == 1 {
        let b = r.int_range(1, total - 1);
        let a = total - b;
        let t = s.step("She has ", format!("{a}+{b}"), total, &format!(" {what}"));
        (format!("{n} has {a} {what} and gets {b} more."), t)
    } else {
        let (c, packs) = (r.int_range(2, 6), r.int_range(2, 5));
        let bought = packs * c;
        // Raise her own count until the total divides evenly (and gives each friend ≥ 2).
        let mut a = r.int_range(lo, hi).max(2 * k);
        a += (k - (a + bought) % k) % k;
        let x = s.step(
            "She buys ",
            format!("{packs}*{c}"),
            bought,
            &format!(" {what}"),
        );
        let t = s.step("She has ", format!("{a}+{x}"), a + x, &format!(" {what}"));
        (
            format!("{n} has {a} {what} and buys {packs} packs of {c} {what}."),
            t,
        )
    };
    let each = s.step(
        "Each friend gets ",
        format!("{got}/{k}"),
        got / k,
        &format!(" {what}"),
    );
    let base = format!("{qn_get} She shares them equally among {k} friends.");
    if level < 3 {
        return (
            format!("{base} How many {what} does each friend get?"),
            s.finish(each),
            each,
        );
    }
    let e = r.int_range(1, each - 1);
    let left = s.step(
        "Each friend has ",
        format!("{each}-{e}"),
        each - e,
        &format!(" {what} left"),
    );
    (
        format!(
            "{base} Each friend then uses {e} of them. How many {what} does each friend have left?"
        ),
        s.finish(left),
        left,
    )
}

fn ages(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (n1, n2, n3) = (
        r.pick(&NAMES[..8]),
        r.pick(&NAMES[8..16]),
        r.pick(&NAMES[16..]),
    );
    let a = r.int_range(3, 5 + 4 * i64::from(level));
    let m = r.int_range(2, 4);
    let mut s = Solution { lines: vec![] };
    let b = s.step(
        &format!("{n2} is "),
        format!("{a}*{m}"),
        a * m,
        " years old",
    );
    let base = format!("{n1} is {a} years old. {n2} is {m} times as old as {n1}.");
    if level == 1 {
        let y = r.int_range(2, 15);
        let later = s.step(
            &format!("In {y} years {n2} will be "),
            format!("{b}+{y}"),
            b + y,
            " years old",
        );
        return (
            format!("{base} How old will {n2} be in {y} years?"),
            s.finish(later),
            later,
        );
    }
    let d = r.int_range(1, b - 1);
    let c = s.step(
        &format!("{n3} is "),
        format!("{b}-{d}"),
        b - d,
        " years old",
    );
    let sum = s.step(
        "The sum of their ages is ",
        format!("{a}+{b}+{c}"),
        a + b + c,
        " years",
    );
    let base = format!("{base} {n3} is {d} years younger than {n2}.");
    if level == 2 {
        return (
            format!("{base} What is the sum of the ages of {n1}, {n2} and {n3}?"),
            s.finish(sum),
            sum,
        );
    }
    let y = r.int_range(2, 20);
    let later = s.step(
        &format!("In {y} years the sum will be "),
        format!("{sum}+3*{y}"),
        sum + 3 * y,
        " years",
    );
    (
        format!("{base} What will the sum of their three ages be in {y} years?"),
        s.finish(later),
        later,
    )
}

fn wages(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (lo, hi) = mag(level);
    let (n, job) = (r.pick(NAMES), r.pick(JOBS));
    let (w, h, d) = (r.int_range(lo, hi), r.int_range(2, 8), r.int_range(2, 6));
    let mut s = Solution { lines: vec![] };
    let day = s.step("Each day she earns ", format!("{w}*{h}"), w * h, " dollars");
    let all = s.step(
        &format!("In {d} days she earns "),
        format!("{day}*{d}"),
        day * d,
        " dollars",
    );
    let base = format!("{n} earns ${w} per hour {job}. She works {h} hours a day for {d} days.");
    if level == 1 {
        return (
            format!("{base} How many dollars does she earn?"),
            s.finish(all),
            all,
        );
    }
    let mut spend = r.int_range(1, all - 1);
    if level == 3 && (all - spend) % 2 == 1 {
        spend -= 1;
    }
    let spend = spend.max(if level == 3 { 2 - (all % 2) } else { 1 });
    let left = s.step(
        "After spending she has ",
        format!("{all}-{spend}"),
        all - spend,
        " dollars",
    );
    let base = format!("{base} She spends ${spend} on a gift.");
    if level == 2 {
        return (
            format!("{base} How many dollars does she have left?"),
            s.finish(left),
            left,
        );
    }
    let half = s.step("She saves ", format!("{left}/2"), left / 2, " dollars");
    (
        format!("{base} She saves half of what is left. How many dollars does she save?"),
        s.finish(half),
        half,
    )
}

fn travel(r: &mut SplitMix64, level: u8) -> (String, String, i64) {
    let (lo, hi) = mag(level);
    let (n, v) = (r.pick(NAMES), r.pick(VEHICLES));
    let mut s = Solution { lines: vec![] };
    let (s1, t1) = (r.int_range(lo, hi) + 10, r.int_range(2, 5));
    let d1 = s.step("First she drives ", format!("{s1}*{t1}"), s1 * t1, " miles");
    if level == 1 {
        let trip = d1 + r.int_range(lo, hi * 4);
        let left = s.step("Miles left: ", format!("{trip}-{d1}"), trip - d1, "");
        let qn = format!(
            "{n}'s trip is {trip} miles. She drives her {v} at {s1} miles per hour for {t1} hours. How many miles are left?"
        );
        return (qn, s.finish(left), left);
    }
    let (s2, t2) = (r.int_range(lo, hi) + 10, r.int_range(2, 5));
    let d2 = s.step("Then she drives ", format!("{s2}*{t2}"), s2 * t2, " miles");
    let total = s.step(
        "In total she drives ",
        format!("{d1}+{d2}"),
        d1 + d2,
        " miles",
    );
    let base = format!(
        "{n} drives her {v} at {s1} miles per hour for {t1} hours, then at {s2} miles per hour for {t2} hours."
    );
    if level == 2 {
        return (
            format!("{base} How many miles does she drive?"),
            s.finish(total),
            total,
        );
    }
    // Pad the second leg so the total divides by the fuel rate (asked as a whole number).
    let g = *r.pick(&[2i64, 4, 5, 10]);
    let extra = (g - total % g) % g;
    let (total, base) = if extra == 0 {
        (total, base)
    } else {
        let t = s.step(
            "With the detour she drives ",
            format!("{total}+{extra}"),
            total + extra,
            " miles",
        );
        (t, format!("{base} She also takes a {extra}-mile detour."))
    };
    let gallons = s.step(
        "She uses ",
        format!("{total}/{g}"),
        total / g,
        " gallons of fuel",
    );
    (
        format!("{base} Her {v} goes {g} miles per gallon. How many gallons does she use?"),
        s.finish(gallons),
        gallons,
    )
}

const TEMPLATES: &[(&str, Template)] = &[
    ("shopping", shopping),
    ("reading", reading),
    ("sharing", sharing),
    ("ages", ages),
    ("wages", wages),
    ("travel", travel),
];

/// The problem at `index` of `split` for `seed`, with a level drawn from `levels` (each in 1..=3).
pub fn problem(seed: u64, split: Split, levels: &[u8], index: u64) -> Problem {
    let mut r = SplitMix64::stream(seed ^ split.tag(), index);
    let level = (*r.pick(levels)).clamp(*LEVELS.start(), *LEVELS.end());
    let (template, f) = *r.pick(TEMPLATES);
    let (question, answer, value) = f(&mut r, level);
    Problem {
        question,
        answer,
        value,
        level,
        template,
    }
}

/// The three splits of one generated source: fixed feedback and test sets, and an unbounded
/// train stream that skips any problem whose question is held out.
#[derive(Debug, Clone)]
pub struct MathSplits {
    seed: u64,
    levels: Vec<u8>,
    /// Feedback problems (distinct questions).
    pub feedback: Vec<Problem>,
    /// Test problems (distinct, none shared with feedback).
    pub test: Vec<Problem>,
    held: HashSet<String>,
}

fn distinct(
    seed: u64,
    split: Split,
    levels: &[u8],
    n: usize,
    held: &mut HashSet<String>,
) -> Vec<Problem> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n && i < 1000 * n as u64 + 1000 {
        let p = problem(seed, split, levels, i);
        if held.insert(p.question.clone()) {
            out.push(p);
        }
        i += 1;
    }
    out
}

impl MathSplits {
    /// Builds `n_feedback` feedback and `n_test` test problems at `levels` (non-empty).
    pub fn new(seed: u64, levels: &[u8], n_feedback: usize, n_test: usize) -> Self {
        let mut held = HashSet::new();
        let test = distinct(seed, Split::Test, levels, n_test, &mut held);
        let feedback = distinct(seed, Split::Feedback, levels, n_feedback, &mut held);
        MathSplits {
            seed,
            levels: levels.to_vec(),
            feedback,
            test,
            held,
        }
    }
    /// Also treats `others`' held-out problems as held out (several generated sources).
    pub fn exclude(&mut self, others: &MathSplits) {
        self.held.extend(others.held.iter().cloned());
    }
    /// Also treats these questions as held out (feedback and test sets read from files).
    pub fn exclude_questions<'a>(&mut self, questions: impl IntoIterator<Item = &'a String>) {
        self.held.extend(questions.into_iter().cloned());
    }
    /// True when `question` is in a held-out (feedback or test) set.
    pub fn is_held_out(&self, question: &str) -> bool {
        self.held.contains(question)
    }
    /// The `index`-th train problem (a pure function of `index`), never a held-out one.
    pub fn train(&self, index: u64) -> Problem {
        let mut attempt = 0u64;
        loop {
            let p = problem(
                self.seed,
                Split::Train,
                &self.levels,
                index.wrapping_mul(1 << 20) + attempt,
            );
            if !self.held.contains(&p.question) {
                return p;
            }
            attempt += 1;
        }
    }
}

/// The shipped multiple-choice arithmetic set (`data/arith-choice/`): its seed and levels.
pub const CHOICE_SET: (u64, &[u8]) = (2026, &[1, 2, 3]);

/// The multiple-choice arithmetic set as JSONL (`{"prompt", "response", "options"}` per line):
/// `n_feedback` feedback and `n_test` test problems of [`MathSplits`] for `seed` (disjoint), each
/// with options from [`Problem::to_choice`]. Returns (feedback, test) file contents.
pub fn choice_jsonl(
    seed: u64,
    levels: &[u8],
    n_feedback: usize,
    n_test: usize,
) -> (String, String) {
    let s = MathSplits::new(seed, levels, n_feedback, n_test);
    let render = |ps: &[Problem], tag: u64| -> String {
        ps.iter()
            .enumerate()
            .map(|(i, p)| {
                let ex = p.to_choice(&mut SplitMix64::stream(seed ^ tag, i as u64));
                serde_json::to_string(&ex).expect("examples serialise") + "\n"
            })
            .collect()
    };
    (render(&s.feedback, 0xFB), render(&s.test, 0x7E))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::{Scorer, ScorerConfig};

    /// `data/arith-choice/` is exactly what [`choice_jsonl`] generates; `VPT_BLESS=1` rewrites it.
    #[test]
    fn shipped_choice_set_is_generated_by_this_code() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/arith-choice"
        ));
        let (feedback, test) = choice_jsonl(CHOICE_SET.0, CHOICE_SET.1, 512, 256);
        if std::env::var("VPT_BLESS").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("feedback.jsonl"), &feedback).unwrap();
            std::fs::write(dir.join("test.jsonl"), &test).unwrap();
        }
        for (name, want) in [("feedback.jsonl", &feedback), ("test.jsonl", &test)] {
            let got = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(
                got == *want,
                "{name} differs from choice_jsonl(); rerun with VPT_BLESS=1"
            );
        }
        let ex: Vec<Example> = test
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ex.len(), 256);
        for e in &ex {
            assert_eq!(e.options.len(), 4);
            assert!(e.answer_option().is_some());
            let mut o = e.options.clone();
            o.sort();
            o.dedup();
            assert_eq!(o.len(), 4, "{e:?}");
        }
        // The right option is not always in the same place.
        let first = ex.iter().filter(|e| e.answer_option() == Some(0)).count();
        assert!((20..120).contains(&first), "{first}");
    }

    /// Evaluates `a op b op c …` with integer + - * / and usual precedence; None if inexact.
    fn eval(expr: &str) -> Option<i64> {
        let mut terms: Vec<i64> = Vec::new();
        let mut ops: Vec<char> = Vec::new();
        let mut num = String::new();
        let mut toks = Vec::new();
        for c in expr.chars().chain(std::iter::once('+')) {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                toks.push((num.parse::<i64>().ok()?, c));
                num.clear();
            }
        }
        // First fold * and /, then + and -.
        let mut cur = toks[0].0;
        for w in 0..toks.len() {
            let op = toks[w].1;
            if w + 1 == toks.len() {
                terms.push(cur);
                break;
            }
            let next = toks[w + 1].0;
            match op {
                '*' => cur *= next,
                '/' => {
                    if next == 0 || cur % next != 0 {
                        return None;
                    }
                    cur /= next
                }
                '+' | '-' => {
                    terms.push(cur);
                    ops.push(op);
                    cur = next;
                }
                _ => return None,
            }
        }
        let mut v = terms[0];
        for (t, op) in terms[1..].iter().zip(ops) {
            v = if op == '+' { v + t } else { v - t };
        }
        Some(v)
    }

    fn check(p: &Problem) {
        let lines: Vec<&str> = p.answer.lines().collect();
        let steps = lines.len() - 1;
        let detour = p.template == "travel" && p.level == 3 && steps == 5;
        assert!(
            steps == p.level as usize + 1 || detour,
            "{steps} steps in {p:#?}"
        );
        let mut last = None;
        for l in &lines[..lines.len() - 1] {
            let (_, rest) = l.split_once("<<").expect("annotation");
            let (inner, after) = rest.split_once(">>").unwrap();
            let (expr, val) = inner.split_once('=').unwrap();
            let val: i64 = val.parse().unwrap();
            assert_eq!(eval(expr), Some(val), "step `{l}` of {p:#?}");
            assert!(after.starts_with(&val.to_string()));
            assert!(val >= 0, "negative intermediate in {p:#?}");
            last = Some(val);
        }
        assert_eq!(last, Some(p.value));
        assert_eq!(*lines.last().unwrap(), format!("#### {}", p.value));
        let gsm8k = Scorer::new(&ScorerConfig::gsm8k(), "t").unwrap();
        let ex = p.to_example();
        assert!(gsm8k.check(&ex).is_none());
        assert!(gsm8k.is_correct(&format!("#### {}", p.value), &ex));
        assert!(!gsm8k.is_correct(&format!("#### {}", p.value + 1), &ex));
        assert!(p.value > 0, "{p:#?}");
        assert!(p.question.ends_with('?'));
    }

    #[test]
    fn eval_handles_precedence() {
        assert_eq!(eval("2+3*4"), Some(14));
        assert_eq!(eval("20-6/3"), Some(18));
        assert_eq!(eval("7/2"), None);
    }

    #[test]
    fn answers_recompute_at_every_level_and_template() {
        let mut seen = HashSet::new();
        for level in LEVELS {
            for i in 0..400 {
                let p = problem(3, Split::Train, &[level], i);
                check(&p);
                seen.insert((p.template, p.level));
            }
        }
        assert_eq!(
            seen.len(),
            TEMPLATES.len() * 3,
            "every template at every level"
        );
    }

    #[test]
    fn generation_is_deterministic_by_seed() {
        let a = problem(11, Split::Feedback, &[1, 2, 3], 5);
        assert_eq!(a, problem(11, Split::Feedback, &[1, 2, 3], 5));
        assert_ne!(a, problem(12, Split::Feedback, &[1, 2, 3], 5));
        let s = MathSplits::new(4, &[2], 20, 20);
        assert_eq!(s.train(17), MathSplits::new(4, &[2], 20, 20).train(17));
    }

    #[test]
    fn splits_never_share_a_problem() {
        let s = MathSplits::new(0, &[1], 200, 200);
        assert_eq!((s.feedback.len(), s.test.len()), (200, 200));
        let test: HashSet<_> = s.test.iter().map(|p| p.question.clone()).collect();
        assert!(s.feedback.iter().all(|p| !test.contains(&p.question)));
        let mut hits = 0;
        for i in 0..3000 {
            let p = s.train(i);
            assert!(!s.is_held_out(&p.question));
            hits += usize::from(p.question == s.test[0].question);
        }
        assert_eq!(hits, 0);
        // Level-1 problems repeat often enough that the dedupe is really exercised.
        let raw = (0..3000)
            .filter(|&i| s.is_held_out(&problem(0, Split::Train, &[1], i << 20).question))
            .count();
        assert!(
            raw > 0,
            "expected some raw collisions to exercise the filter"
        );
    }
}
