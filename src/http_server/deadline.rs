//! What is due for a connection when its earliest deadline comes: a pure function of its phase
//! and deadlines, and when to look at it next. The timer (`timer`) wakes for it; the registry
//! acts on the answer.

use std::time::{Duration, Instant};

/// What the timer looks at: one connection's phase and deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    /// A request of it is being answered, or waits for its turn.
    pub(crate) busy: bool,
    pub(crate) upgraded: bool,
    /// The watchdog shut it down.
    pub(crate) cut: bool,
    /// Idle: the next request must have arrived by then (`read_timeout`), if there is a limit.
    pub(crate) read_deadline: Option<Instant>,
    pub(crate) body_until: Option<Instant>,
    pub(crate) respond_until: Option<Instant>,
    /// Part of a head has arrived.
    pub(crate) partial_head: bool,
    /// tiny_http has read a head whose request has not reached us yet.
    pub(crate) head_waiting: bool,
    pub(crate) read_started: bool,
    /// tiny_http should have started to read it by then.
    pub(crate) read_start_by: Instant,
    /// tiny_http closed it; its record goes then.
    pub(crate) released: Option<Instant>,
}

/// What is due for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Nothing,
    /// No request within `read_timeout` of going idle: closed, with a 408 if part of a head came
    /// (as Go's server does); a plain idle keep-alive connection is just closed.
    CloseIdle {
        partial_head: bool,
    },
    /// The body did not arrive in time: the read side is shut, and the worker answers 408.
    BodyLate,
    /// The response was not complete within `write_timeout`: the connection is cut.
    ResponseLate,
    /// No thread of tiny_http has started to read it (see `Registry::wake_pool`).
    WakePool,
    /// tiny_http is done with it and so are we: its record goes.
    Remove,
}

/// How soon to look again at an idle connection whose request tiny_http has read but we have not
/// taken yet (it is on its way).
const RECHECK: Duration = Duration::from_millis(50);

pub(crate) fn decide(v: &View, now: Instant) -> Due {
    let past = |t: Option<Instant>| t.is_some_and(|t| now >= t);
    if v.released.is_some() {
        return if past(v.released) && !v.busy { Due::Remove } else { Due::Nothing };
    }
    if !v.read_started && !v.cut && now >= v.read_start_by {
        return Due::WakePool;
    }
    if v.upgraded || v.cut {
        return Due::Nothing;
    }
    if v.busy {
        if past(v.respond_until) {
            return Due::ResponseLate;
        }
        if past(v.body_until) {
            return Due::BodyLate;
        }
        return Due::Nothing;
    }
    if past(v.read_deadline) && !v.head_waiting {
        return Due::CloseIdle { partial_head: v.partial_head };
    }
    Due::Nothing
}

/// When to look at the connection next, if ever.
pub(crate) fn next_due(v: &View, now: Instant) -> Option<Instant> {
    if v.released.is_some() {
        return v.released.map(|t| if v.busy { t.max(now + RECHECK) } else { t });
    }
    let read_start = (!v.read_started && !v.cut).then_some(v.read_start_by);
    let phase = if v.upgraded || v.cut {
        None
    } else if v.busy {
        earliest(v.respond_until, v.body_until)
    } else if v.head_waiting {
        v.read_deadline.map(|t| t.max(now + RECHECK))
    } else {
        v.read_deadline
    };
    earliest(read_start, phase)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(now: Instant) -> View {
        View {
            busy: false,
            upgraded: false,
            cut: false,
            read_deadline: Some(now + Duration::from_secs(30)),
            body_until: None,
            respond_until: None,
            partial_head: false,
            head_waiting: false,
            read_started: true,
            read_start_by: now,
            released: None,
        }
    }

    #[test]
    fn what_is_due_for_each_phase() {
        let now = Instant::now();
        let past = Some(now - Duration::from_millis(1));
        let later = Some(now + Duration::from_secs(5));
        let table: &[(&str, View, Due)] = &[
            ("idle, in time", view(now), Due::Nothing),
            ("idle, late", View { read_deadline: past, ..view(now) }, Due::CloseIdle { partial_head: false }),
            (
                "a head started, late",
                View { read_deadline: past, partial_head: true, ..view(now) },
                Due::CloseIdle { partial_head: true },
            ),
            (
                "late, but a request is on its way",
                View { read_deadline: past, head_waiting: true, ..view(now) },
                Due::Nothing,
            ),
            ("no read_timeout", View { read_deadline: None, ..view(now) }, Due::Nothing),
            (
                "busy, body late",
                View { busy: true, body_until: past, respond_until: later, ..view(now) },
                Due::BodyLate,
            ),
            (
                "busy, response late",
                View { busy: true, body_until: past, respond_until: past, ..view(now) },
                Due::ResponseLate,
            ),
            (
                "busy, in time",
                View {
                    busy: true,
                    body_until: later,
                    respond_until: later,
                    read_deadline: past,
                    ..view(now)
                },
                Due::Nothing,
            ),
            ("a websocket", View { upgraded: true, read_deadline: past, ..view(now) }, Due::Nothing),
            ("cut", View { cut: true, read_deadline: past, ..view(now) }, Due::Nothing),
            ("never read by tiny_http", View { read_started: false, ..view(now) }, Due::WakePool),
            ("released, linger over", View { released: past, ..view(now) }, Due::Remove),
            ("released, still answering", View { released: past, busy: true, ..view(now) }, Due::Nothing),
        ];
        for (what, v, want) in table {
            assert_eq!(decide(v, now), *want, "{what}");
        }
    }

    #[test]
    fn when_to_look_next() {
        let now = Instant::now();
        let at = |s: u64| Some(now + Duration::from_secs(s));
        assert_eq!(next_due(&view(now), now), at(30));
        let busy = View { busy: true, body_until: at(3), respond_until: at(9), ..view(now) };
        assert_eq!(next_due(&busy, now), at(3));
        assert_eq!(next_due(&View { upgraded: true, ..view(now) }, now), None, "websockets have no deadline");
        let unread =
            View { read_started: false, read_start_by: now + Duration::from_millis(500), ..view(now) };
        assert_eq!(next_due(&unread, now), Some(now + Duration::from_millis(500)));
        let on_its_way = View { head_waiting: true, read_deadline: Some(now), ..view(now) };
        assert_eq!(next_due(&on_its_way, now), Some(now + RECHECK));
    }
}
