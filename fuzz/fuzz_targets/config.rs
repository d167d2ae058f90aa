//! Any text as a configuration file: an error or a valid config, never a panic; and what
//! `runnel check` prints for a valid config reads back (without validation: secrets print as
//! `***`, which is no valid secret) to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel::config::{Config, parse_with_env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Config::from_toml(text) {
        let printed = c.to_toml();
        let (again, _) = parse_with_env(&printed, "printed", &[]).expect("printed config parses");
        assert_eq!(again.to_toml(), printed);
    }
});
