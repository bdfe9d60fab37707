//! A bounded timeline of the accept queue and of accepts.
//!
//! The sampler records about 1,000 points a second, and a target may run for days, so the
//! timeline keeps at most `capacity` buckets: when full, neighbouring buckets merge and the
//! bucket width doubles. Each bucket keeps the queue's maximum (so no peak is lost to
//! downsampling), its last value and the cumulative accepted count at its end, so the
//! accept rate over time can be read from any two buckets.

use serde::{Deserialize, Serialize};

/// One bucket of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket, microseconds since the timeline's start.
    pub t_us: u64,
    /// Largest accept-queue length sampled in the bucket.
    pub queue_max: u32,
    /// Last accept-queue length sampled in the bucket.
    pub queue_last: u32,
    /// Connections accepted since the start, as of the bucket's last sample.
    pub accepted: u64,
}

/// The timeline: a bounded list of equal-width buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Width of every bucket in microseconds (doubles as the timeline fills).
    pub bucket_us: u64,
    /// The buckets, oldest first; empty buckets (no samples) are left out.
    pub points: Vec<Point>,
    #[serde(skip)]
    capacity: usize,
}

impl Timeline {
    /// A timeline starting with `bucket_us`-wide buckets, holding at most `capacity` of them.
    pub fn new(bucket_us: u64, capacity: usize) -> Timeline {
        assert!(capacity >= 2, "a timeline needs room to merge buckets");
        Timeline {
            bucket_us: bucket_us.max(1),
            points: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Records one sample taken `t_us` after the start. Samples arrive in time order.
    pub fn record(&mut self, t_us: u64, queue_len: u32, accepted: u64) {
        let start = t_us - t_us % self.bucket_us;
        match self.points.last_mut() {
            Some(last) if last.t_us == start => {
                last.queue_max = last.queue_max.max(queue_len);
                last.queue_last = queue_len;
                last.accepted = accepted;
            }
            _ => {
                if self.points.len() == self.capacity {
                    self.halve();
                    return self.record(t_us, queue_len, accepted);
                }
                self.points.push(Point {
                    t_us: start,
                    queue_max: queue_len,
                    queue_last: queue_len,
                    accepted,
                });
            }
        }
    }

    /// Doubles the bucket width, merging the points that now share a bucket.
    fn halve(&mut self) {
        self.bucket_us *= 2;
        let width = self.bucket_us;
        let mut merged: Vec<Point> = Vec::with_capacity(self.capacity);
        for p in self.points.drain(..) {
            let start = p.t_us - p.t_us % width;
            match merged.last_mut() {
                Some(m) if m.t_us == start => {
                    m.queue_max = m.queue_max.max(p.queue_max);
                    m.queue_last = p.queue_last;
                    m.accepted = p.accepted;
                }
                _ => merged.push(Point { t_us: start, ..p }),
            }
        }
        self.points = merged;
    }

    /// A timeline received from elsewhere (the wire), held to at most `capacity` buckets:
    /// points are merged as [`record`](Timeline::record) would (peaks kept) whatever the
    /// sender sent, so a peer cannot make the receiver hold more than `capacity` points.
    /// Points out of time order are dropped.
    pub fn from_points(bucket_us: u64, points: &[Point], capacity: usize) -> Timeline {
        let mut t = Timeline::new(bucket_us, capacity.max(2));
        for p in points {
            if t.points.last().is_some_and(|last| p.t_us < last.t_us) {
                continue;
            }
            t.absorb(*p);
        }
        t
    }

    /// Adds one bucket's figures (at or after the last point), merging as needed.
    fn absorb(&mut self, p: Point) {
        let start = p.t_us - p.t_us % self.bucket_us;
        if let Some(last) = self.points.last_mut()
            && last.t_us == start
        {
            last.queue_max = last.queue_max.max(p.queue_max);
            last.queue_last = p.queue_last;
            last.accepted = p.accepted;
        } else if self.points.len() == self.capacity {
            self.halve();
            self.absorb(p);
        } else {
            self.points.push(Point { t_us: start, ..p });
        }
    }

    /// Forgets every point (after a counter reset).
    pub fn clear(&mut self, bucket_us: u64) {
        self.points.clear();
        self.bucket_us = bucket_us.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_peaks_over_a_long_run() {
        let mut t = Timeline::new(1_000, 256);
        // A simulated day at 1 kHz: 86.4 M samples would be too slow for a unit test, so an
        // hour at 1 kHz (3.6 M samples), with one queue spike of 77 in the middle.
        let samples: u64 = 3_600_000;
        for i in 0..samples {
            let q = if i == 1_800_123 { 77 } else { (i % 5) as u32 };
            t.record(i * 1_000, q, i / 10);
            assert!(t.points.len() <= 256);
        }
        assert!(
            t.points.capacity() <= 512,
            "memory must not grow with the run"
        );
        assert_eq!(t.points.iter().map(|p| p.queue_max).max(), Some(77));
        assert_eq!(t.points.last().unwrap().accepted, (samples - 1) / 10);
        // Buckets are equal, ordered and cover the hour.
        let w = t.bucket_us;
        assert!(w.is_power_of_two() || (w / 1_000).is_power_of_two());
        assert!(t.points.windows(2).all(|p| p[1].t_us == p[0].t_us + w));
        assert!(t.points.last().unwrap().t_us + w >= (samples - 1) * 1_000);
    }

    /// However many points a peer sends, the receiver keeps at most its capacity, with the
    /// peak and the last accepted count intact.
    #[test]
    fn a_received_timeline_is_bounded() {
        let sent: Vec<Point> = (0..10_000u64)
            .map(|i| Point {
                t_us: i * 1_000,
                queue_max: if i == 7_777 { 900 } else { 1 },
                queue_last: 1,
                accepted: i,
            })
            .collect();
        let t = Timeline::from_points(1_000, &sent, 64);
        assert!(t.points.len() <= 64, "{}", t.points.len());
        assert_eq!(t.points.iter().map(|p| p.queue_max).max(), Some(900));
        assert_eq!(t.points.last().unwrap().accepted, 9_999);
        // Out of order points are dropped, not merged backwards.
        let t = Timeline::from_points(1_000, &[sent[5], sent[2], sent[6]], 8);
        assert_eq!(t.points.len(), 2);
    }

    #[test]
    fn samples_in_one_bucket_merge() {
        let mut t = Timeline::new(1_000, 4);
        t.record(100, 3, 1);
        t.record(900, 1, 2);
        t.record(1_000, 2, 2);
        assert_eq!(
            t.points,
            vec![
                Point {
                    t_us: 0,
                    queue_max: 3,
                    queue_last: 1,
                    accepted: 2
                },
                Point {
                    t_us: 1_000,
                    queue_max: 2,
                    queue_last: 2,
                    accepted: 2
                },
            ]
        );
    }
}
