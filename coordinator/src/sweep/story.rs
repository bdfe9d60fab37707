//! The sweep in plain words, under its table and at the top of `sweep.html`: per accept rate,
//! what to set (or that no backlog tried was enough, and why), beside the queue model.

use stampede_proto::duration::human_us;

use super::{SweepReport, rate_name};

/// One paragraph: what the sweep found and what to do.
pub fn verdict(r: &SweepReport) -> String {
    let mut parts = Vec::new();
    if let Some(why) = &r.stopped {
        parts.push(format!(
            "The sweep stopped after {} steps ({why}); what follows covers those.",
            r.steps.len()
        ));
    }
    if r.recommendations.is_empty() {
        parts.push("No step finished, so there is nothing to recommend.".to_owned());
    }
    for rec in &r.recommendations {
        let rate = rate_name(rec.accept_rate);
        parts.push(match rec.backlog {
            Some(b) => {
                let wait = match rec.accept_wait_p99_us {
                    Some(_) => format!(
                        ", accept wait p99 under {}",
                        human_us(rec.criteria.accept_wait_max_us)
                    ),
                    None => String::new(),
                };
                let confirmed = match rec.confirmations {
                    0 => String::new(),
                    n => format!(" and stayed clean in {n} more runs"),
                };
                format!(
                    "At accept rate {rate}, backlog {b} was the smallest that took {} connects \
                     cleanly (no overflow, every one at once, connect p99 under {}{wait}){confirmed}: \
                     set `listen(fd, {b})` and `net.core.somaxconn` to at least {} on the server \
                     (the queue model asks for {}).",
                    r.connections,
                    human_us(r.p99_max_us),
                    rec.somaxconn.unwrap_or(b),
                    rec.model_backlog
                )
            }
            // The reason names what failed and what to do about it (sweep/diagnosis.rs).
            None => format!(
                "At accept rate {rate}, no backlog is recommended: {}.",
                rec.reason
            ),
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_to_set_or_why_nothing_was_enough() {
        let mut r = crate::sweep::html::tests::report();
        let v = verdict(&r);
        assert!(
            v.starts_with("At accept rate 100/s, backlog 64 was the smallest that took 100"),
            "{v}"
        );
        assert!(v.contains("`net.core.somaxconn` to at least 64"), "{v}");
        r.recommendations[0].backlog = None;
        r.stopped = Some("interrupted".into());
        let v = verdict(&r);
        assert!(
            v.starts_with("The sweep stopped after 3 steps (interrupted)"),
            "{v}"
        );
        assert!(v.contains("no backlog is recommended: "), "{v}");
        assert!(!v.contains("try larger backlogs"), "{v}");
    }
}
