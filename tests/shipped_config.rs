//! Every configuration file the project ships must parse and validate.

#[test]
fn example_config_parses_and_holds_the_defaults() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/runnel.example.toml"
    ))
    .unwrap();
    let c = runnel::config::Config::from_toml(&text).unwrap();
    let d = runnel::config::Config::default();
    assert_eq!(c.to_toml(), d.to_toml(), "the example shows the defaults");
}
