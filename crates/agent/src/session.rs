//! The session: a random id kept in `sessionStorage` (so it survives reloads and navigations in
//! the tab, and ends with the tab) that rolls over after 30 minutes without activity. Whether the
//! session is sampled is decided once, when it starts, and stored with it, so a session is sent
//! whole or not at all.

use alloc::borrow::ToOwned;
use alloc::string::String;

/// Idle time after which the next metric starts a new session.
pub const IDLE_MS: f64 = 30.0 * 60_000.0;
/// `sessionStorage` key.
pub const STORAGE_KEY: &str = "pulse:session";

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    /// Epoch ms of the last activity.
    pub last_active: f64,
    pub sampled: bool,
}

impl Session {
    /// A new session, sampled with probability `sample_rate` (`random` gives 0..1).
    pub fn start(id: String, now: f64, sample_rate: f64, random: f64) -> Session {
        Session { id, last_active: now, sampled: random < sample_rate }
    }

    /// The stored session if it is still live at `now`, else `None`.
    pub fn resume(stored: &str, now: f64) -> Option<Session> {
        let mut parts = pulse_protocol::text::pieces(stored, b"|");
        // Only an id of the form the agent makes (the page, or another script, may have written
        // anything there, and the collector refuses ids with spaces or quotes).
        let id = parts.next().filter(|id| !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))?;
        let last_active = digits(parts.next()?)?;
        let sampled = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        (parts.next().is_none() && now - last_active < IDLE_MS && last_active <= now + 60_000.0).then(|| Session {
            id: id.to_owned(),
            last_active,
            sampled,
        })
    }

    /// Whether the session has been idle too long at `now`.
    pub fn expired(&self, now: f64) -> bool {
        now - self.last_active >= IDLE_MS
    }

    /// The stored form: `id|last_active|sampled`.
    pub fn encode(&self) -> String {
        let mut out = self.id.clone();
        out.push('|');
        crate::json::uint(&mut out, self.last_active.max(0.0) as u64);
        out.push_str(if self.sampled { "|1" } else { "|0" });
        out
    }
}

/// A non-empty run of ASCII digits (at most 15, so exact as `f64`) as a number.
fn digits(s: &str) -> Option<f64> {
    if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0.0, |n, b| n * 10.0 + f64::from(b - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_790_000_000_000.0;

    #[test]
    fn a_stored_session_round_trips_while_live() {
        let s = Session::start("abc123".into(), T0, 0.5, 0.2);
        assert!(s.sampled);
        assert_eq!(s.encode(), "abc123|1790000000000|1");
        assert_eq!(Session::resume(&s.encode(), T0 + IDLE_MS - 1.0), Some(s.clone()));
    }

    #[test]
    fn thirty_idle_minutes_end_it() {
        let s = Session::start("abc123".into(), T0, 1.0, 0.0);
        assert_eq!(Session::resume(&s.encode(), T0 + IDLE_MS), None);
        assert!(s.expired(T0 + IDLE_MS));
        assert!(!s.expired(T0 + IDLE_MS - 1.0));
    }

    #[test]
    fn sampling_is_decided_at_the_start_and_kept() {
        assert!(!Session::start("a".into(), T0, 0.25, 0.25).sampled);
        assert!(Session::start("a".into(), T0, 0.25, 0.249).sampled);
        assert!(!Session::start("a".into(), T0, 0.0, 0.0).sampled);
        let unsampled = Session::start("a".into(), T0, 0.0, 0.0);
        assert_eq!(Session::resume(&unsampled.encode(), T0 + 1.0).map(|s| s.sampled), Some(false));
    }

    #[test]
    fn garbage_in_storage_starts_a_new_session() {
        for stored in [
            "",
            "abc",
            "abc|x|1",
            "abc|1790000000000|2",
            "|1790000000000|1",
            "a|1790000000000|1|extra",
            "a|9999999999999|1",
            "a b|1790000000000|1",
            "\"a\"|1790000000000|1",
            "é|1790000000000|1",
        ] {
            assert_eq!(Session::resume(stored, T0), None, "{stored}");
        }
    }
}
