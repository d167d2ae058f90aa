//! Event ids: `<incarnation>-<seq>` in fixed-width hex. The incarnation is random per data
//! directory, so an id from a wiped store is recognised as foreign; the seq is strictly
//! increasing, and fixed width makes the ids sort as strings too.

/// How a client's `Last-Event-ID` relates to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// `earliest`, or an id of this store: replay what comes after this seq.
    After(u64),
    /// Not an id of this store (another incarnation, or garbage).
    Unknown,
}

/// The ids of one store incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub incarnation: u32,
}

impl Ids {
    /// The public id of a seq.
    pub fn format(self, seq: u64) -> String {
        format_id(self.incarnation, seq)
    }

    /// Interprets a client's `Last-Event-ID`.
    pub fn parse(self, id: &str) -> Resume {
        if id == "earliest" {
            return Resume::After(0);
        }
        match parse_id(id) {
            Some((inc, seq)) if inc == self.incarnation => Resume::After(seq),
            _ => Resume::Unknown,
        }
    }
}

/// `<incarnation>-<seq>`, fixed-width hex.
pub fn format_id(incarnation: u32, seq: u64) -> String {
    format!("{incarnation:08x}-{seq:016x}")
}

/// The inverse of [`format_id`]; `None` for anything else.
pub fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (inc, seq) = id.split_once('-')?;
    if inc.len() != 8 || seq.len() != 16 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(inc) || !hex(seq) {
        return None;
    }
    Some((
        u32::from_str_radix(inc, 16).ok()?,
        u64::from_str_radix(seq, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_and_sort() {
        let a = format_id(0xdead_beef, 9);
        let b = format_id(0xdead_beef, 10);
        assert!(a < b);
        assert_eq!(parse_id(&a), Some((0xdead_beef, 9)));
        for bad in [
            "",
            "x",
            "deadbeef-9",
            "deadbeef-000000000000000g",
            "deadbeef+0000000000000009",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        let ids = Ids {
            incarnation: 0xdead_beef,
        };
        assert_eq!(ids.parse(&a), Resume::After(9));
        assert_eq!(ids.parse("earliest"), Resume::After(0));
        assert_eq!(ids.parse(&format_id(7, 9)), Resume::Unknown);
    }
}
