//! The level table as markdown (the source of LEVELS.md).

use std::fmt::Write;

use crate::Class;

/// A markdown document listing every class with its index, id and levels (medium marked).
pub fn table() -> String {
    let total: usize = Class::ALL.iter().map(|c| c.level_count()).sum();
    let mut out = String::new();
    out.push_str("# Degradation classes and levels\n\n");
    out.push_str("Generated from `maskdcpt_degrade::table()`; the test `levels_md_is_current` fails when this file\n");
    out.push_str("is stale (regenerate with `UPDATE_LEVELS=1 cargo test -p maskdcpt-degrade --test levels`).\n\n");
    let mixed = Class::ALL.iter().filter(|c| c.is_mixed()).count();
    let _ = writeln!(out, "{} classes ({} single, {mixed} mixed), {total} levels.", Class::COUNT, Class::COUNT - mixed);
    out.push_str("A level is a chain of steps (`step key=value …`, joined by ` + `); random draws such as kernels,\n");
    out.push_str("positions and gains are not part of the level and are recorded per sample.\n\n");
    out.push_str("| index | class | kind | levels | medium level |\n|---:|---|---|---:|---|\n");
    for class in Class::ALL {
        let kind = if class.is_mixed() { "mixed" } else { "single" };
        let medium = &class.levels()[class.medium_level()];
        let _ = writeln!(
            out,
            "| {} | `{class}` | {kind} | {} | {} `{medium}` |",
            class.index(),
            class.level_count(),
            class.medium_level()
        );
    }
    for class in Class::ALL {
        let _ = writeln!(out, "\n## {} `{class}`\n\n| level | description |\n|---:|---|", class.index());
        for (i, level) in class.levels().iter().enumerate() {
            let mark = if i == class.medium_level() { " **(medium)**" } else { "" };
            let _ = writeln!(out, "| {i} | `{level}`{mark} |");
        }
    }
    out
}
