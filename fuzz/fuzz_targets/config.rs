//! Any text as a configuration file: an error or a valid config, never a panic; and what
//! `runnel check` prints for a valid config parses back to the same config.
#![no_main]
use libfuzzer_sys::fuzz_target;
use runnel::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::from_toml(text) {
        // Secrets print as "***", which is itself a valid secret.
        let printed = c.to_toml();
        let again = Config::from_toml(&printed).expect("printed config parses");
        assert_eq!(again.to_toml(), printed);
    }
});
