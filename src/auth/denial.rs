//! The answer to a call jwt_auth refuses.

use std::time::Duration;

/// The realm of the 401's `WWW-Authenticate`, as the Go watchdog names it.
const REALM: &str = "Bearer realm=IAM function invoke";

/// A call that may not go on: its status (401, 403), the reason the body gives, and how long
/// the check took (for the log line). Only the `jwt` feature makes one.
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
pub(crate) struct Denial {
    pub(crate) status: u16,
    pub(crate) message: String,
    pub(crate) took: Duration,
}

impl Denial {
    #[cfg(feature = "jwt")]
    pub(super) fn unauthorized(message: String) -> Denial {
        Denial { status: 401, message, took: Duration::ZERO }
    }

    #[cfg(feature = "jwt")]
    pub(super) fn forbidden() -> Denial {
        Denial { status: 403, message: "insufficient permissions".into(), took: Duration::ZERO }
    }

    /// The answer's headers, as faas-middleware writes them.
    pub(crate) fn headers(&self) -> Vec<(&'static str, &'static str)> {
        let mut h = vec![
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Openfaas-Internal", "faas-middleware"),
        ];
        if self.status == 401 {
            h.push(("Www-Authenticate", REALM));
        }
        h
    }

    /// The answer's body.
    pub(crate) fn body(&self) -> String {
        format!("{}\n", self.message)
    }
}
