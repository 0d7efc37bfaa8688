//! Every example scenario under config/scenarios parses and validates, so a
//! field rename in `Scenario` cannot leave the examples broken.

use std::path::Path;

use vpr_bench::scenario::Scenario;

#[test]
fn example_scenarios_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/scenarios");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("reading {}: {error}", dir.display())) {
        let path = entry.expect("reading a directory entry failed").path();
        if path.extension().and_then(|extension| extension.to_str()) != Some("toml") {
            continue;
        }
        let scenario = Scenario::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        scenario
            .validate()
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert!(checked.contains(&"smoke.toml".to_owned()), "checked {checked:?}");
    assert!(checked.contains(&"busy-evening.toml".to_owned()), "checked {checked:?}");
}

#[test]
fn smoke_scenario_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/scenarios/smoke.toml");
    let scenario = Scenario::load(&path).unwrap();
    assert_eq!(scenario.rooms, 1);
    assert_eq!(scenario.residents_per_room, 1);
    assert_eq!(scenario.officers_per_room, 2);
    assert_eq!(scenario.total_subscribers(), 2);
    assert_eq!(scenario.thresholds.min_receive_ratio, Some(0.9));
    assert_eq!(scenario.thresholds.max_first_frame_p95_ms, Some(3000.0));
}
