//! Topic and pattern rules: never a panic; a valid topic is a valid pattern that matches
//! itself; a valid topic can never name a path.
#![no_main]
use libfuzzer_sys::fuzz_target;
use runnel::topic::{Pattern, validate_pattern, validate_topic};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = s.split_once('\n').unwrap_or((s, s));
    if validate_topic(a).is_ok() {
        assert!(validate_pattern(a).is_ok());
        assert!(Pattern::new(a).unwrap().matches(a));
        assert!(!a.split('/').any(|seg| seg.is_empty() || seg == "." || seg == ".."));
        assert!(!a.contains('\0') && !a.contains('\n') && !a.contains('\\'));
    }
    if let Ok(p) = Pattern::new(a) {
        let _ = p.matches(b);
        // `*` matches everything.
        if a == "*" {
            assert!(p.matches(b));
        }
    }
});
