//! The order an entry's TSAs are tried in, and what the driver tells operators about each.
//!
//! Every request's outcome goes onto the TSA board ([`TsaBoard`]), which `/health` and
//! `/metrics` read, and each event below writes its log line and its board update together.
//!
//! **Order.** URLs are tried in the entry's order, except that one whose last request failed is
//! tried after the others for [`COOL_DOWN`]: with a TSA down, every anchor would otherwise wait
//! for it (up to its `timeout`) before moving on. Once the cool-down has passed it is back in
//! its place and tried first again; a success ends it at once. When every URL is cooling down
//! they are tried in the entry's order. The order is a pure function of the entry's order, the
//! cool-downs and the monotonic time ([`try_order`]).
//!
//! **Certificates.** After each token, the signer certificate's notAfter goes onto the board
//! (`vmsh_tsa_cert_expiry_seconds`). Within the entry's `certExpiryWarnDays` of it, a warning is
//! logged the first time the certificate is seen so, then at most once a day
//! ([`warning_due`]), not on every anchor.

use std::sync::Arc;
use std::time::Duration;

use slog::{Logger, warn};

use super::trust::SignerCertificate;
use crate::clock::{Clock, MonoMs, WallMs, rfc3339};
use crate::metrics::TsaBoard;
use crate::model::ErrorClass;
use crate::model::time::duration_ms;

/// How long a URL that failed is tried after the entry's other URLs.
pub const COOL_DOWN: Duration = Duration::from_secs(300);

/// How often, at most, the expiry of one certificate is warned about.
const WARN_EVERY_MS: i64 = 86_400_000;

/// Where the `rfc3161` drivers report: the board `/health` and `/metrics` read, and the log.
/// One per process, kept across reloads with the board.
#[derive(Clone)]
pub struct TsaWatch {
    board: Arc<TsaBoard>,
    log: Logger,
}

impl TsaWatch {
    /// Reports onto `board`, logging to `log`.
    pub fn new(board: Arc<TsaBoard>, log: Logger) -> Self {
        Self { board, log }
    }

    /// A watch nobody reads: its own board on `clock`, no log. For drivers built outside the
    /// service (tests, tools).
    pub fn unwatched(clock: Arc<dyn Clock>) -> Self {
        Self::new(Arc::new(TsaBoard::new(clock)), crate::telemetry::discard())
    }

    /// The board it reports onto.
    pub fn board(&self) -> &Arc<TsaBoard> {
        &self.board
    }

    pub(super) fn now_mono(&self) -> MonoMs {
        self.board.clock().mono_ms()
    }

    fn now_wall(&self) -> WallMs {
        self.board.clock().wall_ms()
    }

    /// The order to try `urls` of `entry` in now, as indexes into `urls`.
    pub(super) fn order(&self, entry: &str, urls: &[String]) -> Vec<usize> {
        try_order(&self.board.tried_last_until(entry, urls), self.now_mono())
    }

    /// `url` gave a usable token, signed by `signer` when the token showed who; warns when
    /// that certificate expires within `warn_within`.
    pub(super) fn succeeded(&self, entry: &str, url: &str, signer: Option<&SignerCertificate>, warn_within: Duration) {
        self.board.succeeded(entry, url, signer.map(|s| (s.id.as_str(), s.not_after_ms)));
        let Some(cert) = signer else { return };
        let now = self.now_wall();
        let left_ms = cert.not_after_ms.saturating_sub(now);
        if left_ms >= duration_ms(warn_within) {
            return;
        }
        if self.board.warning_due(entry, url, &cert.id, |last| warning_due(last, now)) {
            warn!(self.log, "a TSA's signing certificate expires soon; renew it, or trust its successor";
                "target" => format!("rfc3161:{entry}"), "url" => url, "signer" => &cert.subject,
                "not_after" => rfc3339(cert.not_after_ms), "days_left" => left_ms.div_euclid(86_400_000));
        }
    }

    /// `url` failed with `message` (clean of secrets); `next` is the URL tried next, if any.
    pub(super) fn failed(&self, entry: &str, url: &str, class: ErrorClass, message: &str, next: Option<&str>) {
        let until = self.now_mono().saturating_add(duration_ms(COOL_DOWN));
        self.board.failed(entry, url, class, message, until);
        if let Some(next) = next {
            warn!(self.log, "a TSA failed; trying the next one";
                "target" => format!("rfc3161:{entry}"), "url" => url, "class" => class.as_str(),
                "err" => message, "next" => next);
        }
    }
}

/// The order to try an entry's URLs in: those not cooling down in the entry's order, then
/// those cooling down, in the entry's order too. `tried_last_until[i]` is when URL `i`'s
/// cool-down ends (monotonic ms), if it has one.
pub(super) fn try_order(tried_last_until: &[Option<MonoMs>], now: MonoMs) -> Vec<usize> {
    let cooling = |i: &usize| tried_last_until[*i].is_some_and(|until| until > now);
    let all = 0..tried_last_until.len();
    all.clone().filter(|i| !cooling(i)).chain(all.filter(|i| cooling(i))).collect()
}

/// Whether a certificate's expiry is warned about now, when it was last warned about at
/// `last` (`None`: never).
pub(super) fn warning_due(last: Option<WallMs>, now: WallMs) -> bool {
    last.is_none_or(|at| now.saturating_sub(at) >= WARN_EVERY_MS)
}

#[cfg(test)]
mod tests {
    use slog::Level;

    use super::*;
    use crate::clock::ManualClock;
    use crate::telemetry::capture::Capture;

    #[test]
    fn urls_are_tried_in_order_and_one_cooling_down_goes_last_until_its_time_is_up() {
        assert_eq!(try_order(&[None, None, None], 0), [0, 1, 2]);
        assert_eq!(try_order(&[Some(100), None, None], 50), [1, 2, 0]);
        assert_eq!(try_order(&[Some(100), None, Some(80)], 50), [1, 0, 2], "the cooling ones keep their order");
        assert_eq!(try_order(&[Some(100), Some(90)], 50), [0, 1], "all cooling: the entry's order");
        assert_eq!(try_order(&[Some(100), None], 100), [0, 1], "back in its place when the cool-down ends");
        assert_eq!(try_order(&[], 0), Vec::<usize>::new());
    }

    #[test]
    fn a_certificate_is_warned_about_when_first_seen_then_at_most_daily() {
        assert!(warning_due(None, 0));
        assert!(!warning_due(Some(1_000), 1_000 + WARN_EVERY_MS - 1));
        assert!(warning_due(Some(1_000), 1_000 + WARN_EVERY_MS));
    }

    fn watch() -> (ManualClock, TsaWatch, Capture) {
        let clock = ManualClock::new(1_800_000_000_000);
        let capture = Capture::default();
        let watch = TsaWatch::new(Arc::new(TsaBoard::new(Arc::new(clock.clone()))), capture.logger());
        let window = duration_ms(Duration::from_secs(30 * 86_400));
        watch.board().register("tsa", &["http://a".into(), "http://b".into()], window);
        (clock, watch, capture)
    }

    #[test]
    fn a_failed_url_goes_last_for_the_cool_down_on_the_injected_clock() {
        let (clock, watch, capture) = watch();
        let urls = ["http://a".to_string(), "http://b".to_string()];
        assert_eq!(watch.order("tsa", &urls), [0, 1]);
        watch.failed("tsa", "http://a", ErrorClass::Network, "cannot connect", Some("http://b"));
        assert_eq!(watch.order("tsa", &urls), [1, 0]);
        clock.advance(duration_ms(COOL_DOWN) - 1);
        assert_eq!(watch.order("tsa", &urls), [1, 0]);
        clock.advance(1);
        assert_eq!(watch.order("tsa", &urls), [0, 1], "tried first again once the cool-down is over");
        watch.failed("tsa", "http://a", ErrorClass::Network, "cannot connect", None);
        assert_eq!(watch.order("tsa", &urls), [1, 0]);
        watch.succeeded("tsa", "http://a", None, Duration::ZERO);
        assert_eq!(watch.order("tsa", &urls), [0, 1], "a success ends the cool-down");
        let line = capture.only();
        assert_eq!((line.level, line.msg.as_str()), (Level::Warning, "a TSA failed; trying the next one"));
        let fields = ["target", "url", "class", "err", "next"].map(|k| line.field(k).to_string());
        assert_eq!(fields, ["rfc3161:tsa", "http://a", "network", "cannot connect", "http://b"]);
    }

    #[test]
    fn an_expiring_certificate_is_logged_once_a_day_and_one_far_from_expiry_never() {
        let (clock, watch, capture) = watch();
        let window = Duration::from_secs(30 * 86_400);
        let now = clock.wall_ms();
        let far = SignerCertificate { subject: "CN=Far".into(), not_after_ms: now + 31 * 86_400_000, id: "far".into() };
        let near =
            SignerCertificate { subject: "CN=Near".into(), not_after_ms: now + 10 * 86_400_000 + 5, id: "near".into() };
        watch.succeeded("tsa", "http://a", Some(&far), window);
        assert!(capture.lines().is_empty());
        for _ in 0..3 {
            watch.succeeded("tsa", "http://b", Some(&near), window);
        }
        let line = capture.only();
        assert_eq!(line.level, Level::Warning);
        assert!(line.msg.contains("expires soon"), "{line:?}");
        let fields = ["target", "url", "signer", "not_after", "days_left"].map(|k| line.field(k).to_string());
        assert_eq!(fields, ["rfc3161:tsa", "http://b", "CN=Near", &rfc3339(near.not_after_ms), "10"]);
        clock.advance(WARN_EVERY_MS);
        watch.succeeded("tsa", "http://b", Some(&near), window);
        assert_eq!(capture.lines().len(), 2, "again a day later");
        assert_eq!(watch.board().snapshot()[1].cert_not_after_ms, Some(near.not_after_ms));
    }
}
