//! The figures `make bench` guards: one table of floors and targets ([`FIGURES`]), the values the
//! scenarios measured for them ([`measured`]), and the summary printed at the end of a run and
//! written to `target/bench/summary.json`. A figure past its floor fails the run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// The floor is a minimum.
    Higher,
    /// The floor is a maximum.
    Lower,
}

/// How a figure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A ratio shown as a percentage.
    Percent,
    Ms,
    Mb,
    /// A ratio shown as `1.23x`.
    Times,
}

/// A guarded figure: what it is, which scenario measures it, its floor (None: printed only) and
/// its target.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub key: &'static str,
    pub scenario: &'static str,
    pub what: &'static str,
    pub better: Better,
    pub floor: Option<f64>,
    pub target: f64,
    pub unit: Unit,
}

const fn figure(
    key: &'static str,
    scenario: &'static str,
    what: &'static str,
    better: Better,
    floor: Option<f64>,
    target: f64,
    unit: Unit,
) -> Figure {
    Figure { key, scenario, what, better, floor, target, unit }
}

use Better::{Higher, Lower};
use Unit::{Mb, Ms, Percent, Times};

/// Every floor and target of `make bench` (issue 28), in one place.
pub const FIGURES: &[Figure] = &[
    figure(
        "create_ratio_c32",
        "scim",
        "create c=32 / pgbench same-shape insert c=32",
        Higher,
        Some(0.35),
        0.60,
        Percent,
    ),
    figure(
        "get_by_id_ratio_c32",
        "scim",
        "GET by id c=32 / pgbench point select c=32",
        Higher,
        Some(0.12),
        0.20,
        Percent,
    ),
    figure(
        "okta_mix_ratio_c32",
        "scim",
        "Okta mix c=32 req/s (successful) / pgbench insert c=32",
        Higher,
        Some(0.35),
        0.60,
        Percent,
    ),
    figure(
        "okta_mix_postgres_cpu_ms_c32",
        "scim",
        "PostgreSQL CPU ms per Okta-mix request (c=32)",
        Lower,
        None,
        0.30,
        Ms,
    ),
    figure(
        "get_by_id_services_cpu_ms_c32",
        "scim",
        "gateway + directory CPU ms per GET by id (c=32)",
        Lower,
        None,
        0.10,
        Ms,
    ),
    figure(
        "write_to_decision_p99_ms",
        "notifications",
        "write -> decision p99 at 500 writes/s",
        Lower,
        Some(50.0),
        20.0,
        Ms,
    ),
    figure(
        "okta_mix_peak_rss_mb",
        "scim",
        "peak RSS per service under the mix (max of the three)",
        Lower,
        Some(50.0),
        40.0,
        Mb,
    ),
    figure(
        "bigtenant_user_name_eq",
        "bigtenant",
        "userName eq: large / small tenant p50",
        Lower,
        Some(1.5),
        1.5,
        Times,
    ),
    figure(
        "bigtenant_external_id_eq",
        "bigtenant",
        "externalId eq: large / small tenant p50",
        Lower,
        Some(1.5),
        1.5,
        Times,
    ),
    figure(
        "bigtenant_work_email_eq",
        "bigtenant",
        "emails[type eq \"work\"].value eq: large / small p50",
        Lower,
        Some(1.5),
        1.5,
        Times,
    ),
    figure(
        "bigtenant_emails_value_eq",
        "bigtenant",
        "emails.value eq: large / small tenant p50",
        Lower,
        Some(1.5),
        1.5,
        Times,
    ),
    figure(
        "bigtenant_group_display_name_eq",
        "bigtenant",
        "Groups displayName eq: large / small tenant p50",
        Lower,
        Some(1.5),
        1.5,
        Times,
    ),
    figure(
        "import_neighbours_p99_ratio",
        "import",
        "100 tenants' p99 beside an Okta import / alone",
        Lower,
        Some(2.0),
        2.0,
        Times,
    ),
];

/// The values measured in this run, by figure key.
static MEASURED: Mutex<BTreeMap<&'static str, f64>> = Mutex::new(BTreeMap::new());

/// Records the value measured for a figure of [`FIGURES`].
pub fn measured(key: &'static str, value: f64) {
    assert!(FIGURES.iter().any(|f| f.key == key), "no figure {key} in FIGURES");
    MEASURED.lock().unwrap().insert(key, value);
}

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Percent => format!("{:.1}%", v * 100.0),
        Ms => format!("{v:.2} ms"),
        Mb => format!("{v:.1} MB"),
        Times => format!("{v:.2}x"),
    }
}

impl Figure {
    fn meets(&self, bound: f64, v: f64) -> bool {
        match self.better {
            Higher => v >= bound,
            Lower => v <= bound,
        }
    }

    fn bound(&self, v: Option<f64>) -> String {
        match (v, self.better) {
            (None, _) => "-".to_owned(),
            (Some(v), Higher) => format!("{} min", show(self.unit, v)),
            (Some(v), Lower) => format!("{} max", show(self.unit, v)),
        }
    }
}

/// Prints the summary of the figures of the scenarios that ran, writes it (with the server's
/// settings and the run's failures) to `path`, and returns whether every figure met its floor.
pub fn report(ran: &[&str], settings: &Value, failures: &[String], path: &std::path::Path) -> bool {
    let measured = MEASURED.lock().unwrap().clone();
    let figures: Vec<&Figure> = FIGURES.iter().filter(|f| ran.contains(&f.scenario)).collect();
    let mut rows = Vec::new();
    let mut floors_met = true;
    if !figures.is_empty() {
        println!("\nsummary (floors fail the run; targets are where we want to be)");
        println!("{:<58} {:>11} {:>13} {:>13}  {:<12} target", "figure", "measured", "floor", "target", "verdict");
    }
    for f in figures {
        let value = measured.get(f.key).copied();
        let (verdict, target_met) = match value {
            None => ("NOT MEASURED", None),
            Some(v) => {
                let verdict = match f.floor {
                    None => "print only",
                    Some(floor) if f.meets(floor, v) => "PASS",
                    Some(_) => "BELOW FLOOR",
                };
                (verdict, Some(f.meets(f.target, v)))
            }
        };
        floors_met &= verdict != "BELOW FLOOR";
        println!(
            "{:<58} {:>11} {:>13} {:>13}  {:<12} {}",
            f.what,
            value.map_or("-".to_owned(), |v| show(f.unit, v)),
            f.bound(f.floor),
            f.bound(Some(f.target)),
            verdict,
            match target_met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "-",
            }
        );
        rows.push(json!({
            "key": f.key, "figure": f.what, "scenario": f.scenario, "measured": value,
            "floor": f.floor, "target": f.target,
            "better": if f.better == Higher { "higher" } else { "lower" },
            "verdict": verdict, "target_met": target_met,
        }));
    }
    let summary = json!({
        "postgres_settings": settings,
        "scenarios": ran,
        "figures": rows,
        "failures": failures,
        "passed": floors_met && failures.is_empty(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    floors_met
}
