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

/// The Debian package's config, with a secrets file as its postinst writes it.
#[test]
fn packaged_config_parses_with_generated_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    std::fs::copy(
        format!("{root}/packaging/runnel.toml"),
        dir.path().join("runnel.toml"),
    )
    .unwrap();
    // The same shape postinst writes (see packaging/debian/postinst).
    let postinst = std::fs::read_to_string(format!("{root}/packaging/debian/postinst")).unwrap();
    let template = postinst
        .split("<<SECRETS\n")
        .nth(1)
        .and_then(|s| s.split("\nSECRETS").next())
        .unwrap();
    let secrets = template
        .replace("$jwt", "generated-secret-generated-secret-0123456789")
        .replace(
            "$hash",
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        );
    std::fs::write(dir.path().join("secrets.toml"), secrets).unwrap();
    let file = dir.path().join("runnel.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let (c, _) =
        runnel::config::parse_with_env_in(&text, "packaged", Some(dir.path()), &[]).unwrap();
    c.validate().unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080");
    assert_eq!(c.data_dir, std::path::PathBuf::from("/var/lib/runnel"));
    assert_eq!(c.auth.required, Some(true));
    assert!(!c.auth.is_open());
    assert!(c.auth.jwt_secret.is_some());
    assert_eq!(c.auth.api_keys.len(), 1);
    assert!(c.auth.api_keys[0].admin);
}
