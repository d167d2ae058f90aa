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

fn shipped(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// Every key the configuration has is in the README's table and in the example file, with
/// `include`, which `runnel check` does not print.
#[test]
fn the_readme_and_the_example_name_every_key() {
    let readme = shipped("README.md");
    let example = shipped("docs/runnel.example.toml");
    // The defaults, with the keys that are unset by default set (unvalidated: some exclude
    // each other).
    let unset = "[auth]\nrequired = true\njwt_secret = \"s\"\njwt_public_key_file = \"k.pem\"\n\
                 jwt_algorithm = \"RS256\"\njwt_audience = \"a\"\njwt_issuer = \"i\"\n\
                 [tls]\ncert = \"c\"\nkey = \"k\"\n";
    let all: runnel::config::Config = toml::from_str(unset).unwrap();
    let all: toml::Table = toml::from_str(&all.to_toml()).unwrap();
    let mut keys = vec![("".to_string(), "include".to_string())];
    for (k, v) in &all {
        match v.as_table() {
            Some(section) => keys.extend(section.keys().map(|f| (k.clone(), f.clone()))),
            None => keys.push((String::new(), k.clone())),
        }
    }
    assert!(keys.len() > 40, "{keys:?}");
    for (section, key) in keys {
        let dotted = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        assert!(
            readme.contains(&format!("`{dotted}`")) || readme.contains(&format!("[[{dotted}]]")),
            "the README's key table lacks {dotted}"
        );
        let in_example = example.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[[{dotted}]]"))
        });
        assert!(in_example, "docs/runnel.example.toml lacks {dotted}");
    }
}

/// The man page shows every command and every option `--help` lists.
#[test]
fn the_man_page_names_every_option() {
    let man = shipped("packaging/runnel.1");
    for command in ["serve", "check", "token", "cert", "pub", "sub", "health"] {
        assert!(
            man.contains(&format!(".B runnel {command}")) || command == "serve",
            "{command}"
        );
        let out = std::process::Command::new(crate::common::bin())
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        let options = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2 && *w != "--help");
        let mut seen = 0;
        for option in options {
            seen += 1;
            let escaped = option.replace('-', "\\-");
            assert!(
                man.contains(&escaped),
                "the man page lacks {command} {option}"
            );
        }
        assert!(seen > 0, "{help}");
    }
}
