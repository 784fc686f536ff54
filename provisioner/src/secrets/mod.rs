//! `labprov secrets`: renders what `lab_model::secrets::sync` did.

use lab_model::secrets::SyncReport;

pub fn render_report(report: &SyncReport) -> String {
    let mut s = String::new();
    let verb = if report.dry_run { " (dry run: not written)" } else { "" };
    if report.config_changed {
        s.push_str(&format!("{}: regenerated{verb}\n", report.config.display()));
    } else {
        s.push_str(&format!("{}: unchanged\n", report.config.display()));
    }
    for f in &report.files {
        if !f.changed {
            s.push_str(&format!("{}: up to date\n", f.path.display()));
            continue;
        }
        s.push_str(&format!("{}: re-encrypted{}{verb}\n", f.path.display(), if f.data_key_rotated { " with a new data key" } else { "" }));
        for r in &f.added {
            s.push_str(&format!("  + {r}\n"));
        }
        for r in &f.removed {
            s.push_str(&format!("  - {r}\n"));
        }
    }
    if report.files.is_empty() {
        s.push_str("no secrets files yet (hosts/<host>/secrets.sops.yaml, secrets/shared/<name>.sops.yaml)\n");
    }
    s
}
