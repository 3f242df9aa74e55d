//! Function authentication (`jwt_auth`): the gate every call passes after its admission (a
//! 429 comes first, as in the Go watchdog) and before its handler. Health and readiness do not
//! pass it. Without the `jwt` feature the gate is always open: the configuration refuses
//! `jwt_auth=true` in such a build.
//!
//! With the feature, a call must carry an OpenFaaS IAM function token (`Authorization: Bearer`):
//! `jwt` holds the authenticator (startup, key set, refetch), `token` the token's rules,
//! `keys` the key set and signatures, `verified` the tokens whose signature was checked already,
//! `fetch` the GETs of the issuer's documents.

#[cfg(feature = "jwt")]
mod b64;
mod denial;
#[cfg(feature = "jwt")]
mod fetch;
#[cfg(feature = "jwt")]
mod jwt;
#[cfg(feature = "jwt")]
mod keys;
#[cfg(feature = "jwt")]
mod token;
#[cfg(feature = "jwt")]
mod verified;

use std::sync::Arc;
#[cfg(feature = "jwt")]
use std::time::Instant;

use crate::config::Config;
use crate::deadlines::Deadlines;
use crate::http_server::Exchange;
pub(crate) use denial::Denial;

/// The gate calls pass; open unless `jwt_auth` is on.
pub(crate) struct Gate {
    #[cfg(feature = "jwt")]
    jwt: Option<jwt::Authenticator>,
}

impl Gate {
    /// Sets up what `config` asks for; the error is the cause for `error creating
    /// JWTAuthMiddleware: ...`.
    #[cfg_attr(not(feature = "jwt"), allow(clippy::unnecessary_wraps, unused_variables))]
    pub(crate) fn start(config: &Config, deadlines: &Arc<Deadlines>) -> Result<Gate, String> {
        #[cfg(feature = "jwt")]
        {
            let jwt = match &config.jwt_auth {
                Some(settings) => Some(jwt::Authenticator::start(settings, Arc::clone(deadlines))?),
                None => None,
            };
            Ok(Gate { jwt })
        }
        #[cfg(not(feature = "jwt"))]
        Ok(Gate {})
    }

    /// Whether the gate checks anything (for the startup log).
    pub(crate) fn closed(&self) -> bool {
        #[cfg(feature = "jwt")]
        return self.jwt.is_some();
        #[cfg(not(feature = "jwt"))]
        false
    }

    /// Lets the call through (the handler then sees `X-Auth-Seconds`, the check's duration, in
    /// place of any the client sent), or says why not.
    #[cfg_attr(not(feature = "jwt"), allow(clippy::unnecessary_wraps, unused_variables))]
    #[inline]
    pub(crate) fn check(&self, ex: &mut Exchange) -> Result<(), Denial> {
        #[cfg(feature = "jwt")]
        if let Some(jwt) = &self.jwt {
            let started = Instant::now();
            let verdict = jwt.check(ex.header("authorization"));
            let took = started.elapsed();
            return match verdict {
                Ok(()) => {
                    ex.set_header("X-Auth-Seconds", crate::duration::seconds_f6(took));
                    Ok(())
                }
                Err(denial) => Err(Denial { took, ..denial }),
            };
        }
        Ok(())
    }
}
