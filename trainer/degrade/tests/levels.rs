//! The level table: size, the levels the evaluation protocol names, and LEVELS.md drift.

use maskdcpt_degrade::{Class, table};

#[test]
fn more_than_200_levels_and_14_single_5_mixed() {
    let total: usize = Class::ALL.iter().map(|c| c.level_count()).sum();
    assert!(total > 200, "{total} levels");
    assert_eq!(Class::ALL.len(), 19);
    assert_eq!(Class::ALL.iter().filter(|c| c.is_mixed()).count(), 5);
    assert!(Class::ALL.iter().all(|c| c.level_count() > 0 && c.medium_level() < c.level_count()));
}

#[test]
fn evaluation_protocol_levels_exist() {
    for sigma in [15, 25, 50] {
        Class::Noise.level_index(&format!("gaussian_noise sigma={sigma}")).unwrap();
    }
    for quality in [20, 50] {
        Class::Jpeg.level_index(&format!("jpeg quality={quality}")).unwrap();
    }
}

#[test]
fn levels_md_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("LEVELS.md");
    let generated = table();
    if std::env::var_os("UPDATE_LEVELS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with UPDATE_LEVELS=1 cargo test -p maskdcpt-degrade --test levels",
        path.display()
    );
}
